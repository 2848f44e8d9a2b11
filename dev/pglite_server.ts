/**
 * Embedded PostgreSQL for `deno task dev` ONLY: PGlite (PostgreSQL compiled to WASM)
 * served over the Postgres wire protocol on 127.0.0.1, so the production postgres.js
 * code and SQL migrations run unchanged against it.
 *
 * PGlite is a single backend session. We serve it ourselves instead of through
 * pglite-socket's PGLiteSocketServer because that one interleaves clients between
 * Parse/Describe/Flush and the following Bind/Execute/Sync; postgres.js sends exactly
 * that for every new parameterised query, so concurrent clients got each other's
 * results, "portal does not exist" errors and hangs. Here a client holds the backend
 * from its first message until the backend reports ReadyForQuery "idle": extended-
 * protocol units and whole transactions run alone, like a database that serialises
 * every transaction. Consequences worth knowing:
 * - a transaction that waits for another connection (another service, or a query on
 *   the pool outside the transaction) blocks everyone until the idle-in-transaction
 *   timeout rolls it back with deadlock_detected; real PostgreSQL would not block there;
 * - startup parameters are ignored: no statement_timeout, application_name or
 *   idle_in_transaction_session_timeout from postgres.js takes effect;
 * - session state is shared by all clients: SET, session advisory locks
 *   (pg_advisory_lock always succeeds) and named prepared statements (postgres.js
 *   names them uniquely per connection, so those do not collide);
 * - queries run on the calling thread, so a slow query stalls the whole process.
 */
import { PGlite } from "@electric-sql/pglite";
import { closeQuietly, concatBytes, pgMessage, readInt32, writeAll } from "../shared/conn_io.ts";
import type { Logger } from "../shared/log.ts";

/**
 * Pool size for each service in dev. The backend runs one statement at a time whatever
 * the size; a few connections keep one slow client from queueing the rest client-side.
 */
export const PGLITE_POOL_MAX = 4;

export interface PgliteServerOptions {
  /** Persist here (created if missing); in memory when omitted. */
  dataDir?: string;
  /** 0 (the default) picks a free port. */
  port?: number;
  /** A transaction idle this long while holding the backend is rolled back (default 10 s). */
  idleInTransactionTimeoutMs?: number;
  logger?: Logger;
}

export interface PgliteServer {
  /** postgres:// URL for shared/postgres.ts createPool. */
  url: string;
  close(): Promise<void>;
}

const SSL_REQUEST = 80877103;
const GSSENC_REQUEST = 80877104;
const PROTOCOL_3 = 196608;
const SYNC = new Uint8Array([0x53, 0, 0, 0, 4]);
const ROLLBACK = pgMessage(0x51, "rollback\0");
/** Puts the backend in a failed transaction: only ROLLBACK gets it out. */
const ENTER_FAILED_TRANSACTION = pgMessage(0x51, "begin; select 1/0\0");

export async function startPglite(options: PgliteServerOptions = {}): Promise<PgliteServer> {
  const log = options.logger?.child({ component: "pglite" });
  // PGlite has no postmaster.pid: two processes on one data directory would corrupt it.
  const lock = options.dataDir ? await lockDataDir(options.dataDir) : undefined;
  let db: PGlite | undefined;
  let listener: Deno.TcpListener | undefined;
  try {
    listener = Deno.listen({ hostname: "127.0.0.1", port: options.port ?? 0 });
    db = await PGlite.create({ dataDir: options.dataDir, database: "postgres" });
  } catch (err) {
    listener?.close();
    lock?.close();
    throw err;
  }
  const server = new WireServer(db, options.idleInTransactionTimeoutMs ?? 10_000, log);
  const accepting = server.serve(listener);
  const port = listener.addr.port;
  log?.warn("embedded PGlite database: development only", {
    port,
    data_dir: options.dataDir ?? "memory",
  });
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    close: async () => {
      listener.close();
      await accepting;
      await server.closeSessions();
      await db.close();
      lock?.close();
    },
  };
}

async function lockDataDir(dataDir: string): Promise<Deno.FsFile> {
  await Deno.mkdir(dataDir, { recursive: true });
  const file = await Deno.open(`${dataDir}.lock`, { create: true, write: true });
  if (!(await file.tryLock(true))) {
    file.close();
    throw new Error(`${dataDir} is in use by another process`);
  }
  return file;
}

/** A FIFO lock on the one PGlite backend. */
class BackendLock {
  private tail: Promise<void> = Promise.resolve();

  acquire(): Promise<() => void> {
    let release!: () => void;
    const next = new Promise<void>((r) => (release = r));
    const ready = this.tail.then(() => release);
    this.tail = this.tail.then(() => next);
    return ready;
  }
}

class WireServer {
  private readonly lock = new BackendLock();
  private readonly sessions = new Map<Deno.TcpConn, Promise<void>>();

  constructor(
    readonly db: PGlite,
    readonly idleInTxMs: number,
    readonly log: Logger | undefined,
  ) {}

  async serve(listener: Deno.TcpListener): Promise<void> {
    try {
      for await (const conn of listener) {
        // Without it Nagle's algorithm meets delayed ACKs: ~40 ms per round trip.
        conn.setNoDelay(true);
        const done = new Session(this, conn).run().finally(() => this.sessions.delete(conn));
        this.sessions.set(conn, done);
      }
    } catch (err) {
      if (!(err instanceof Deno.errors.BadResource)) throw err;
    }
  }

  acquire(): Promise<() => void> {
    return this.lock.acquire();
  }

  /** Leaves the backend as the next client expects it: no half-sent unit, no open transaction. */
  async resetBackend(): Promise<void> {
    await this.db.execProtocolRaw(SYNC).catch(() => {});
    if (this.db.isInTransaction()) await this.db.execProtocolRaw(ROLLBACK).catch(() => {});
  }

  async closeSessions(): Promise<void> {
    for (const conn of this.sessions.keys()) closeQuietly(conn);
    await Promise.allSettled([...this.sessions.values()]);
  }
}

class Session {
  private started = false;
  /** Set while this client holds the backend. */
  private release: (() => void) | undefined;
  private idleTimer: ReturnType<typeof setTimeout> | undefined;
  /** Its transaction was rolled back under it: fail its next statement, as PostgreSQL would. */
  private failNext = false;
  /** Report that failure as deadlock_detected rather than "transaction is aborted". */
  private rewriteError = false;
  /** Statement texts by name, so a COMMIT sent by name can be recognised. */
  private readonly statements = new Map<string, string>();
  private boundText = "";

  constructor(private readonly server: WireServer, private readonly conn: Deno.TcpConn) {}

  async run(): Promise<void> {
    let pending: Uint8Array = new Uint8Array(0);
    try {
      for await (const chunk of this.conn.readable) {
        clearTimeout(this.idleTimer);
        pending = concatBytes(pending, chunk);
        for (;;) {
          const msg = this.started ? typedMessage(pending) : untypedMessage(pending);
          if (!msg) break;
          pending = pending.subarray(msg.length);
          if (!(await this.handle(msg))) return;
        }
        if (this.release) {
          this.idleTimer = setTimeout(() => this.breakIdleTransaction(), this.server.idleInTxMs);
        }
      }
    } catch (err) {
      if (!isDisconnect(err)) this.server.log?.warn("pglite client dropped", { error: err });
    } finally {
      clearTimeout(this.idleTimer);
      const release = this.release;
      this.release = undefined;
      if (release) await this.server.resetBackend().finally(release);
      closeQuietly(this.conn);
    }
  }

  /** False when the client is done. */
  private async handle(msg: Uint8Array): Promise<boolean> {
    if (!this.started) return await this.startup(msg);
    if (msg[0] === 0x58) return false; // Terminate
    this.release ??= await this.server.acquire();
    if (this.failNext) {
      await this.server.db.execProtocolRaw(ENTER_FAILED_TRANSACTION);
      this.failNext = false;
      this.rewriteError = true;
    }
    const text = this.track(msg);
    let out = await this.server.db.execProtocolRaw(msg);
    if (this.rewriteError) {
      // A COMMIT of a failed transaction "succeeds" with tag ROLLBACK: make it fail.
      const replace = [0x45, ...(/^\s*(commit|end)\b/i.test(text ?? "") ? [0x43] : [])];
      const rewritten = replaceFirst(out, replace, deadlockError(this.server.idleInTxMs));
      if (rewritten) [out, this.rewriteError] = [rewritten, false];
    }
    await writeAll(this.conn, out);
    if (readyStatus(out) === "I") {
      this.release();
      this.release = undefined;
      this.rewriteError = false;
    }
    return true;
  }

  /** The SQL a Query or Execute message runs; records Parse and Bind on the way. */
  private track(msg: Uint8Array): string | undefined {
    switch (msg[0]) {
      case 0x51: // Query: text
        return cStrings(msg, 1)[0];
      case 0x50: { // Parse: statement name, text
        const [name = "", text = ""] = cStrings(msg, 2);
        this.statements.set(name, text);
        return undefined;
      }
      case 0x42: // Bind: portal name, statement name
        this.boundText = this.statements.get(cStrings(msg, 2)[1] ?? "") ?? "";
        return undefined;
      case 0x45: // Execute
        return this.boundText;
      default:
        return undefined;
    }
  }

  private async startup(msg: Uint8Array): Promise<boolean> {
    const code = readInt32(msg, 4);
    if (code === SSL_REQUEST || code === GSSENC_REQUEST) {
      await writeAll(this.conn, new Uint8Array([0x4e])); // "N": no encryption
      return true;
    }
    // PGlite has no other backend to cancel, nor can it speak protocol 2.
    if (code !== PROTOCOL_3) return false;
    const release = await this.server.acquire();
    try {
      // The startup reply is a view into PGlite's receive buffer: copy it.
      await writeAll(this.conn, (await this.server.db.execProtocolRaw(msg)).slice());
    } finally {
      release();
    }
    this.started = true;
    return true;
  }

  /**
   * Everyone else waits while one client sits in a transaction, so a client that waits
   * on another connection would hang the lot. Roll it back and let the others go; the
   * client then finds its transaction failed, with deadlock_detected (retryable), and
   * nothing it sends runs until it rolls back, exactly as after a real deadlock.
   */
  private breakIdleTransaction(): void {
    const release = this.release;
    // Mid-way through a Parse/Describe/Flush outside a transaction postgres.js answers at once.
    if (!release || !this.server.db.isInTransaction()) return;
    this.release = undefined;
    this.failNext = true;
    this.server.log?.warn("rolled back a transaction idle while other clients waited", {
      after_ms: this.server.idleInTxMs,
    });
    this.server.resetBackend().finally(release);
  }
}

/** Startup-phase messages: int32 length (including itself), int32 code, payload. */
function untypedMessage(buf: Uint8Array): Uint8Array | undefined {
  if (buf.length < 8) return undefined;
  const len = readInt32(buf, 0);
  // PostgreSQL's own bound; anything else is not a Postgres client (an HTTP probe, say).
  if (len < 8 || len > 10_000) throw new Error("malformed startup message");
  return buf.length >= len ? buf.subarray(0, len) : undefined;
}

/** Regular messages: type byte, int32 length (including itself), payload. */
function typedMessage(buf: Uint8Array): Uint8Array | undefined {
  if (buf.length < 5) return undefined;
  const len = readInt32(buf, 1);
  if (len < 4) throw new Error("malformed message");
  return buf.length >= 1 + len ? buf.subarray(0, 1 + len) : undefined;
}

/** The reply with its first message of one of `types` swapped for `by`, if it has one. */
function replaceFirst(out: Uint8Array, types: number[], by: Uint8Array): Uint8Array | undefined {
  for (let i = 0; i + 5 <= out.length;) {
    const end = i + 1 + Math.max(4, readInt32(out, i + 1));
    if (types.includes(out[i]!)) {
      return concatBytes(concatBytes(out.subarray(0, i), by), out.subarray(end));
    }
    i = end;
  }
  return undefined;
}

/** The first `n` NUL-terminated strings after a typed message's header. */
function cStrings(msg: Uint8Array, n: number): string[] {
  const out: string[] = [];
  for (let i = 5; out.length < n && i < msg.length;) {
    const end = msg.indexOf(0, i);
    if (end < 0) break;
    out.push(new TextDecoder().decode(msg.subarray(i, end)));
    i = end + 1;
  }
  return out;
}

/** Transaction status of the last ReadyForQuery in a backend reply, if any. */
function readyStatus(out: Uint8Array): string | undefined {
  let status: string | undefined;
  for (let i = 0; i + 5 <= out.length;) {
    const len = Math.max(4, readInt32(out, i + 1));
    if (out[i] === 0x5a && len === 5 && i + 5 < out.length) {
      status = String.fromCharCode(out[i + 5]!);
    }
    i += 1 + len;
  }
  return status;
}

function deadlockError(afterMs: number): Uint8Array {
  return pgMessage(
    0x45,
    "SERROR\0VERROR\0C40P01\0Mdeadlock detected: transaction idle for " +
      `${afterMs} ms while other clients of the embedded database waited; rolled back\0\0`,
  );
}

function isDisconnect(err: unknown): boolean {
  return err instanceof Deno.errors.BadResource || err instanceof Deno.errors.ConnectionReset ||
    err instanceof Deno.errors.BrokenPipe || err instanceof Deno.errors.Interrupted;
}
