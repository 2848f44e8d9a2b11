// What otp-service's tests against PostgreSQL share: a scratch database migrated as the
// service migrates its own, and what a limit counter holds.
import { createLogger } from "../shared/log.ts";
import { migrateFromDir } from "../shared/migrations.ts";
import { limitsIncludes } from "../shared/limits/schema.ts";
import { createPool } from "../shared/postgres.ts";
import type { Sql } from "../shared/postgres.ts";
import { createDatabase } from "../testing/database.ts";

/** A fresh database with otp-service's schema, and a pool of `max` connections to it. */
export async function migratedOtpDatabase(o: { max: number }) {
  const db = await createDatabase();
  const sql = createPool({ url: db.url, applicationName: "tests", max: o.max });
  await migrateFromDir(
    sql,
    "otp",
    new URL("./migrations/", import.meta.url),
    limitsIncludes("otp"),
    createLogger("test", "error"),
  );
  return {
    sql,
    async drop() {
      await sql.end({ timeout: 2 });
      await db.drop();
    },
  };
}

/** The events the counter `key` holds now, 0 without one. */
export async function countedUnder(sql: Sql, key: string): Promise<number> {
  const [r] = await sql<{ n: number }[]>`
    select coalesce((select sum(c) from unnest(counts) c), 0)::int as n
      from otp.limit_counters where key = ${key}`;
  return r?.n ?? 0;
}
