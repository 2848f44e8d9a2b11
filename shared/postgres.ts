// The PostgreSQL pool. Options are passed explicitly so postgres.js does
// not go looking through PG* environment variables the service is not allowed to read
// (it still reads PGAPPNAME, which the service tasks therefore allow).
// Runtime: shared/vendor/postgres (postgres.js 3.4.9 with fixes, see its PATCHED.md);
// types: the published package.
// @ts-types="npm:postgres@3.4.9"
import postgres from "postgres";
import { backoff } from "./async.ts";
import { ConfigError } from "./config.ts";
import { isDatabaseUnavailable } from "./postgres_errors.ts";

export type Sql = postgres.Sql;
export type TxSql = postgres.TransactionSql;

/**
 * A FROM item that makes its statement's own transaction commit without waiting for the
 * WAL flush (set_config(..., true) lasts for that transaction only): for writes that may
 * be forgotten by a database crash, so a row lock is held for the statement alone.
 */
export const ASYNC_COMMIT = "(select set_config('synchronous_commit', 'off', true))";

/** `name` if it is a plain lower-case identifier, safe to write into SQL as a schema. */
export function schemaName(name: string): string {
  if (!/^[a-z_][a-z0-9_]*$/.test(name)) throw new RangeError(`bad schema name ${name}`);
  return name;
}

export interface PoolOptions {
  url: string;
  max?: number;
  applicationName: string;
  /** Upper bound for any one statement, so a stuck database cannot hang an RPC. */
  statementTimeoutMs?: number;
  connectTimeoutSeconds?: number;
}

/**
 * A service's pools: `sql` for requests and consumers, at most `max` connections;
 * `background` (one connection) for work no request waits on; `relay` (one connection)
 * for the outbox relay, whose batch is a transaction that waits for the broker's
 * confirms. postgres.js pipelines statements onto busy connections once all `max` are
 * open: a few connections, each carrying several statements per round trip, cost
 * PostgreSQL and the service much less per statement than many carrying one each (README
 * "Performance"); `background` keeps a long sweep from being one of the statements a
 * request queues behind, and `relay` keeps a slow broker from holding a serving
 * connection.
 */
export function servicePools(
  o: { url: string; applicationName: string; max: number },
): { sql: Sql; background: Sql; relay: Sql } {
  return {
    sql: createPool(o),
    background: createPool({ ...o, max: 1 }),
    relay: createPool({ ...o, max: 1 }),
  };
}

export function createPool(o: PoolOptions): Sql {
  guardStrayDriverRejections();
  const u = new URL(o.url);
  return postgres({
    host: u.hostname || "127.0.0.1",
    port: Number(u.port || 5432),
    user: decodeURIComponent(u.username || "postgres"),
    // A function, so an empty password does not fall through to PGPASSWORD.
    pass: () => decodeURIComponent(u.password),
    database: decodeURIComponent(u.pathname.slice(1) || "postgres"),
    max: o.max ?? 10,
    ssl: sslOptions(o.url),
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

type Ssl = false | "prefer" | "require" | {
  rejectUnauthorized: true;
  ca?: string;
  checkServerIdentity?: () => undefined;
};

/**
 * The TLS settings of a DATABASE_URL's sslmode, as libpq means them: verify-ca checks
 * the server's certificate chain (against sslrootcert, or the system's roots), and
 * verify-full its host name too. Anything it cannot honour stops the service.
 */
export function sslOptions(url: string): Ssl {
  const params = new URL(url).searchParams;
  const mode = params.get("sslmode");
  switch (mode) {
    case null:
    case "disable":
      return false;
    case "allow":
    case "prefer":
      return "prefer";
    case "require":
      return "require";
    case "verify-ca":
    case "verify-full": {
      const root = params.get("sslrootcert");
      let ca: string | undefined;
      if (root !== null && root !== "system") {
        try {
          ca = Deno.readTextFileSync(root);
        } catch (err) {
          throw new ConfigError(
            "DATABASE_URL",
            `sslrootcert ${root} cannot be read (${(err as Error).name})`,
          );
        }
      }
      return {
        rejectUnauthorized: true,
        ...(ca === undefined ? {} : { ca }),
        // verify-ca trusts any name on a certificate the root signed.
        ...(mode === "verify-ca" ? { checkServerIdentity: () => undefined } : {}),
      };
    }
    default:
      throw new ConfigError(
        "DATABASE_URL",
        `sslmode must be disable, allow, prefer, require, verify-ca or verify-full; got "${mode}"`,
      );
  }
}
