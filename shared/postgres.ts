// PostgreSQL pool and migrations. Options are passed explicitly so postgres.js does
// not go looking through PG* environment variables the service is not allowed to read
// (it still reads PGAPPNAME, which the service tasks therefore allow).
// Runtime: shared/vendor/postgres (postgres.js 3.4.9 with the nextWrite fix, see its PATCHED.md);
// types: the published package.
// @ts-types="npm:postgres@3.4.9"
import postgres from "postgres";
import { backoff } from "./async.ts";
import type { Logger } from "./log.ts";

export type Sql = postgres.Sql;
export type TxSql = postgres.TransactionSql;

export interface PoolOptions {
  url: string;
  max?: number;
  applicationName: string;
  /** Upper bound for any one statement, so a stuck database cannot hang an RPC. */
  statementTimeoutMs?: number;
  connectTimeoutSeconds?: number;
}

export function createPool(o: PoolOptions): Sql {
  guardStrayDriverRejections();
  const u = new URL(o.url);
  const params = Object.fromEntries(u.searchParams);
  return postgres({
    host: u.hostname || "127.0.0.1",
    port: Number(u.port || 5432),
    user: decodeURIComponent(u.username || "postgres"),
    // A function, so an empty password does not fall through to PGPASSWORD.
    pass: () => decodeURIComponent(u.password),
    database: decodeURIComponent(u.pathname.slice(1) || "postgres"),
    max: o.max ?? 10,
    ssl: sslFrom(params["sslmode"]),
    sslnegotiation: null,
    idle_timeout: 60,
    connect_timeout: o.connectTimeoutSeconds ?? 5,
    max_lifetime: 30 * 60,
    max_pipeline: 100,
    backoff: (n: number) => backoff(n + 1, { baseMs: 50, maxMs: 2_000 }) / 1_000,
    keep_alive: 30,
    prepare: true,
    debug: false,
    // Array parameters (outbox ids, rate-limit keys) need the array types fetched.
    fetch_types: true,
    publications: "alltables",
    target_session_attrs: "read-write",
    onnotice: () => {},
    connection: {
      application_name: o.applicationName,
      statement_timeout: o.statementTimeoutMs ?? 5_000,
      idle_in_transaction_session_timeout: 30_000,
    },
  } as postgres.Options<Record<string, never>>);
}

let guarded = false;

/**
 * When the server drops connections (restart, failover, pg_terminate_backend),
 * postgres.js can reject internal promises nobody awaits with the connection error;
 * every caller has already received its own error. Deno ends the process on an
 * unhandled rejection, so those, and only those, are logged and absorbed here.
 */
function guardStrayDriverRejections(): void {
  if (guarded) return;
  guarded = true;
  globalThis.addEventListener("unhandledrejection", (e) => {
    if (!isDatabaseUnavailable(e.reason)) return;
    e.preventDefault();
    console.log(JSON.stringify({
      time: new Date().toISOString(),
      level: "warn",
      msg: "database connection error with no awaiting caller; ignored",
      error: (e.reason as Error).message,
    }));
  });
}

function sslFrom(mode: string | undefined): boolean | "require" | "prefer" | "verify-full" {
  switch (mode) {
    case undefined:
    case "disable":
      return false;
    case "require":
    case "prefer":
    case "verify-full":
      return mode;
    default:
      return "require";
  }
}

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

/** Reads `NNNN_name.sql` files from a directory, in version order. */
export async function readMigrations(dir: URL): Promise<Migration[]> {
  const out: Migration[] = [];
  for await (const entry of Deno.readDir(dir)) {
    const m = /^(\d{4})_([a-z0-9_]+)\.sql$/.exec(entry.name);
    if (!entry.isFile || !m) continue;
    out.push({
      version: Number(m[1]),
      name: m[2]!,
      sql: await Deno.readTextFile(new URL(entry.name, dir)),
    });
  }
  return out.sort((a, b) => a.version - b.version);
}

/**
 * Applies pending migrations in one transaction under an advisory lock, so replicas
 * starting together apply each migration exactly once.
 */
export async function migrate(
  sql: Sql,
  schema: string,
  migrations: Migration[],
  log: Logger,
): Promise<void> {
  await sql.begin(async (tx) => {
    await tx`select pg_advisory_xact_lock(hashtext(${"migrations:" + schema}))`;
    await tx.unsafe(`create schema if not exists ${schema}`);
    await tx.unsafe(`create table if not exists ${schema}.schema_migrations (
      version integer primary key,
      name text not null,
      applied_at timestamptz not null default now())`);
    const done = new Set(
      (await tx.unsafe(`select version from ${schema}.schema_migrations`)).map((r) =>
        Number(r.version)
      ),
    );
    for (const m of migrations) {
      if (done.has(m.version)) continue;
      await tx.unsafe(m.sql);
      await tx.unsafe(`insert into ${schema}.schema_migrations (version, name) values ($1, $2)`, [
        m.version,
        m.name,
      ]);
      log.info("migration applied", { schema, version: m.version, name: m.name });
    }
  });
}

export async function migrationsApplied(
  sql: Sql,
  schema: string,
  migrations: Migration[],
): Promise<boolean> {
  const last = migrations.at(-1)?.version ?? 0;
  const rows = await sql.unsafe(
    `select coalesce(max(version), 0) as v from ${schema}.schema_migrations`,
  );
  return Number(rows[0]?.v ?? 0) >= last;
}

const UNAVAILABLE_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EPIPE",
  "CONNECT_TIMEOUT",
  "CONNECTION_CLOSED",
  "CONNECTION_ENDED",
  "CONNECTION_DESTROYED",
  "57P01", // admin_shutdown (pg_terminate_backend)
  "57P02",
  "57P03", // cannot_connect_now
  "57014", // query_canceled (statement_timeout)
  "53300", // too_many_connections
  "40001", // serialization_failure
  "40P01", // deadlock_detected
]);

/** True for errors that mean "the database is not reachable or busy right now". */
export function isDatabaseUnavailable(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const code = (err as { code?: unknown }).code;
  if (typeof code === "string") {
    if (UNAVAILABLE_CODES.has(code) || code.startsWith("08")) return true;
  }
  return err.name === "ConnectionRefused" || err.name === "NotConnected" ||
    /connection|socket|ECONNREFUSED/i.test(err.message) && !("severity" in err);
}
