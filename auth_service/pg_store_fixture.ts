// PgAuthStore as a StoreUnderTest, for the conformance suite on PostgreSQL and PGlite.
import { EVENTS_EXCHANGE } from "../shared/topology.ts";
import { createLogger } from "../shared/log.ts";
import { LimitsEngine } from "../shared/limits/engine.ts";
import { limitsIncludes } from "../shared/limits/schema.ts";
import { migrateFromDir } from "../shared/migrations.ts";
import type { Sql } from "../shared/postgres.ts";
import { PgAuthStore } from "./pg_store.ts";
import type { StoreUnderTest } from "./store_conformance.ts";

const TABLES = "users, challenges, sessions, session_tokens, inbox, outbox, limit_counters, " +
  "limit_admissions, wrong_code_locks, audit_events";

export async function migrateAuth(sql: Sql): Promise<void> {
  await migrateFromDir(
    sql,
    "auth",
    new URL("./migrations/", import.meta.url),
    limitsIncludes("auth"),
    createLogger("test", "error"),
  );
}

/** An emptied auth schema behind a PgAuthStore; the schema must be migrated. */
export async function openPgStore(sql: Sql): Promise<StoreUnderTest> {
  await sql.unsafe(`truncate ${TABLES.split(", ").map((t) => `auth.${t}`).join(", ")}`);
  return {
    store: new PgAuthStore(sql),
    limits: new LimitsEngine(sql, "auth"),
    now: () => new Date(),
    elapse: async (seconds) => {
      await sql.begin(async (tx) => {
        const back = (cols: string[]) =>
          cols.map((c) => `${c} = ${c} - make_interval(secs => $1)`).join(", ");
        const shift = (table: string, cols: string[]) =>
          tx.unsafe(`update auth.${table} set ${back(cols)}`, [seconds]);
        await shift("users", ["created_at", "verified_at"]);
        await shift("challenges", ["issued_at", "expires_at", "consumed_at"]);
        await shift("sessions", ["created_at", "expires_at", "last_seen_at", "revoked_at"]);
        await shift("session_tokens", ["issued_at", "replaced_at"]);
        await shift("inbox", ["handled_at"]);
        await shift("outbox", ["created_at", "available_at"]);
        await shift("wrong_code_locks", ["last_failure_at", "locked_until"]);
        // Whole slots only: the tests' windows are multiples of 60 s, so slots are seconds.
        await tx.unsafe(
          `update auth.limit_counters
              set first_slot = first_slot - floor($1 / slot_seconds)::bigint`,
          [seconds],
        );
        await shift("audit_events", ["at"]);
      });
    },
    auditTrail: async () =>
      (await sql<{ e: string }[]>`
        select event || ':' || outcome || case when count > 1 then ' x' || count else '' end
          as e from auth.audit_events order by id`).map((r) => r.e),
    enqueued: async () =>
      (await sql<{ message_id: string }[]>`
        select message_id from auth.outbox where exchange <> ${EVENTS_EXCHANGE}
         order by id`).map((r) => r.message_id),
    events: async () =>
      (await sql<{ routing_key: string }[]>`
        select routing_key from auth.outbox where exchange = ${EVENTS_EXCHANGE}
         order by id`).map((r) => r.routing_key),
  };
}
