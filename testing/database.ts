// What the tests do to PostgreSQL: a database per stack, and killing its backends.
import { createPool } from "../shared/postgres.ts";
import { uniqueName } from "./names.ts";

export const DATABASE_URL = Deno.env.get("DATABASE_URL") ??
  "postgres://postgres@127.0.0.1:5432/postgres";

/** The application name of the harness's own connections, spared by terminateBackends. */
export const HARNESS_APPLICATION = "tests";

/** Creates an empty database; `drop` removes it even while clients are connected. */
export async function createDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  const name = uniqueName();
  const admin = createPool({ url: DATABASE_URL, applicationName: HARNESS_APPLICATION, max: 1 });
  await admin.unsafe(`create database ${name}`);
  await admin.end();
  const u = new URL(DATABASE_URL);
  u.pathname = `/${name}`;
  return {
    url: u.toString(),
    drop: async () => {
      const a = createPool({ url: DATABASE_URL, applicationName: HARNESS_APPLICATION, max: 1 });
      await a.unsafe(`drop database if exists ${name} with (force)`);
      await a.end();
    },
  };
}

/** The database name in a PostgreSQL URL. */
export function databaseName(databaseUrl: string): string {
  return decodeURIComponent(new URL(databaseUrl).pathname.slice(1));
}

/**
 * Terminates every backend of the database except the test harness's own; returns how
 * many it terminated.
 */
export async function terminateBackends(dbName: string): Promise<number> {
  const admin = createPool({ url: DATABASE_URL, applicationName: "fault-admin", max: 1 });
  try {
    const [row] = await admin<{ n: number }[]>`
      select count(pg_terminate_backend(pid))::int as n from pg_stat_activity
       where datname = ${dbName} and pid <> pg_backend_pid()
         and coalesce(application_name, '') <> ${HARNESS_APPLICATION}`;
    return row?.n ?? 0;
  } finally {
    await admin.end({ timeout: 2 });
  }
}
