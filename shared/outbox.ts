// Transactional outbox: a message is written in the same transaction as the work that
// causes it, and a relay publishes it with publisher confirms afterwards. Rows are
// claimed with FOR UPDATE SKIP LOCKED, so any number of replicas can relay at once.
// Delivery is at least once; consumers deduplicate on message_id.
import { delay } from "./async.ts";
import type { Broker, OutgoingMessage } from "./bus.ts";
import type { Logger } from "./log.ts";
import { schemaName } from "./postgres.ts";
import type { Sql, TxSql } from "./postgres.ts";
import {
  extractTraceContext,
  messagingAttributes,
  SpanKind,
  traceHeaders,
  withSpan,
} from "./tracing.ts";

/**
 * The statements name the service's schema, so they go through unsafe(), which does
 * not prepare by default; unprepared, a query with parameters costs the driver a
 * describe round trip and the server a parse and plan every time.
 */
const PREPARED = { prepare: true } as const;

/**
 * The outbox row of `m` as an `insert ... select` fragment, for a statement that writes
 * it together with the work that causes it (the caller may add a `where`).
 */
export function outboxInsert(sql: Sql | TxSql, schema: string, m: OutgoingMessage) {
  // An object: the driver serialises it for the jsonb parameter (a string would be
  // stored as a JSON string).
  const headers = (m.headers ?? traceHeaders()) as never;
  return sql`
    insert into ${sql.unsafe(schemaName(schema))}.outbox
      (message_id, exchange, routing_key, type, content_type, payload, correlation_id,
       created_at, headers)
    select ${m.messageId}, ${m.exchange}, ${m.routingKey}, ${m.type}, ${m.contentType},
           ${m.body}, ${m.correlationId ?? null}, ${m.timestamp},
           ${headers}::jsonb`;
}

/** Writes `m` to the outbox inside the caller's transaction. */
export async function enqueue(tx: TxSql, schema: string, m: OutgoingMessage): Promise<void> {
  await outboxInsert(tx, schema, m);
}

export interface RelayOptions {
  sql: Sql;
  schema: string;
  broker: Broker;
  logger: Logger;
  /**
   * The safety net: how often to look for rows no wake-up announced (a replica that
   * died after its commit, a retry whose backoff ran out, the broker coming back).
   */
  pollMs?: number;
  /** Rows relayed between two vacuums of the outbox (see VACUUM_EVERY). */
  vacuumEvery?: number;
}

/** Rows claimed, published and deleted together (one confirm wait, one delete). */
export const BATCH = 200;
const POLL_MS = 1_000;
/**
 * Every row of the outbox is deleted moments after it is written, and a deleted row
 * stays in the table until a vacuum: between autovacuum's visits (a minute apart at
 * best, never where it is switched off) the dead rows pile up by the thousand, and the
 * relay's claim and delete slow down with them. So the relay vacuums the table itself
 * after this many rows, at the first pass that finds no backlog, on its own
 * connection; the vacuum takes no lock the claim, the delete or an enqueue waits for,
 * and skips the table if another vacuum has it. A role that does not own the table
 * leaves it to autovacuum.
 */
export const VACUUM_EVERY = 2_000;

interface Row {
  id: string;
  /** Where the row is stored: stable while this transaction holds its lock. */
  ctid: string;
  message_id: string;
  exchange: string;
  routing_key: string;
  type: string;
  content_type: string;
  payload: Uint8Array;
  correlation_id: string | null;
  created_at: Date;
  /** JSON text of the AMQP headers. */
  headers: string | null;
}

/** The notification channel on which relays of one schema wake each other. */
export function outboxChannel(schema: string): string {
  return `${schema}_outbox`;
}

/**
 * The enqueuing process pokes its own relay after each commit, so a message goes out
 * without waiting for any poll. Peers are woken over NOTIFY only when a pass found a
 * full batch (a backlog worth sharing): a NOTIFY per enqueue would take PostgreSQL's
 * global notification lock in every signup's commit and serialise them.
 */
export class OutboxRelay {
  private running = false;
  private wake: (() => void) | undefined;
  /** A poke that came while a pass was running: the next sleep is skipped. */
  private poked = false;
  private loop: Promise<void> | undefined;
  private unlisten: (() => Promise<void>) | undefined;
  private readonly pollMs: number;
  private readonly channel: string;
  private readonly log: Logger;
  private readonly vacuumEvery: number;
  private sinceVacuum = 0;
  /** Whether this role may vacuum the outbox; asked before the first vacuum. */
  private mayVacuum: boolean | undefined;

  constructor(private readonly o: RelayOptions) {
    this.pollMs = o.pollMs ?? POLL_MS;
    this.vacuumEvery = o.vacuumEvery ?? VACUUM_EVERY;
    this.channel = outboxChannel(o.schema);
    this.log = o.logger.child({ component: "outbox-relay" });
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.listen();
    this.loop = this.run();
  }

  private listen(): void {
    // onlisten runs again after every reconnect of the listening connection: a pass
    // then picks up whatever was announced while it was away.
    this.o.sql.listen(this.channel, () => this.poke(), () => this.poke()).then(
      (l) => {
        if (this.running) this.unlisten = l.unlisten;
        else l.unlisten().catch(() => {});
      },
      (err: Error) => this.log.warn("cannot listen; polling only", { error: err.message }),
    );
  }

  /** Called after a commit that enqueued something, so it goes out without waiting a poll. */
  poke(): void {
    this.poked = true;
    this.wake?.();
  }

  async stop(): Promise<void> {
    this.running = false;
    this.poke();
    await this.loop;
    await this.unlisten?.().catch(() => {});
  }

  private async run(): Promise<void> {
    while (this.running) {
      let handled = 0;
      this.poked = false;
      try {
        handled = await this.relayOnce();
        if (handled === BATCH) await this.announceBacklog();
        this.sinceVacuum += handled;
        // Not while a backlog drains: the vacuum of a table that large takes seconds,
        // every few batches. Once the relay has caught up, it runs.
        if (this.sinceVacuum >= this.vacuumEvery && handled < BATCH) {
          this.sinceVacuum = 0;
          await this.vacuum();
        }
      } catch (err) {
        this.log.warn("relay pass failed", { error: (err as Error).message });
      }
      if (handled < BATCH && this.running) await this.sleep();
    }
  }

  /**
   * PostgreSQL lets only the table's owner (or the database's, or a superuser) vacuum
   * it, and answers anyone else with a warning in its own log: so whether this role
   * may is asked once, and a role that may not leaves the table to autovacuum.
   */
  private async vacuum(): Promise<void> {
    const table = `${schemaName(this.o.schema)}.outbox`;
    if (this.mayVacuum === undefined) {
      const [r] = await this.o.sql.unsafe<{ may: boolean }[]>(
        // A superuser has the privileges of every role, so it passes either test.
        `select pg_has_role(c.relowner, 'USAGE') or pg_has_role(d.datdba, 'USAGE') as may
           from pg_class c, pg_database d
          where c.oid = $1::regclass and d.datname = current_database()`,
        [table],
      );
      this.mayVacuum = r?.may === true;
      if (!this.mayVacuum) {
        this.log.info("the outbox is left to autovacuum: this role does not own it", {
          table,
        });
      }
    }
    // Without truncating the table's empty tail: that takes an exclusive lock, which an
    // enqueue, a claim and a delete would wait behind. A queue reuses the pages anyway.
    if (this.mayVacuum) await this.o.sql.unsafe(`vacuum (skip_locked, truncate false) ${table}`);
  }

  private async announceBacklog(): Promise<void> {
    await this.o.sql`select pg_notify(${this.channel}, '')`;
  }

  private async sleep(): Promise<void> {
    if (this.poked) return;
    const wake = new AbortController();
    this.wake = () => wake.abort();
    await delay(this.pollMs, { signal: wake.signal }).catch(() => {});
    this.wake = undefined;
  }

  /**
   * Publishes one batch: claims up to `batchSize` rows (skipping rows other relays
   * hold), publishes them all and waits for their confirms together, then deletes the
   * confirmed ones in one statement; rows whose publish failed stay, with backoff.
   * Returns how many rows it claimed.
   */
  async relayOnce(): Promise<number> {
    if (!this.o.broker.isReady()) return 0;
    const s = this.o.schema;
    return await this.o.sql.begin(async (tx) => {
      const rows = await tx.unsafe<Row[]>(
        `select id, ctid::text as ctid, message_id, exchange, routing_key, type,
                content_type, payload, correlation_id, created_at, headers::text as headers
           from ${s}.outbox where available_at <= now()
          order by id limit $1 for update skip locked`,
        [BATCH],
        PREPARED,
      );
      if (rows.length === 0) return 0;
      const results = await Promise.allSettled(rows.map((r) =>
        // Published in the trace of whoever enqueued it, as a child of this span.
        withSpan(
          "outbox.relay publish",
          messagingAttributes("publish", {
            exchange: r.exchange,
            routingKey: r.routing_key,
            messageId: r.message_id,
          }),
          () =>
            this.o.broker.publish({
              exchange: r.exchange,
              routingKey: r.routing_key,
              messageId: r.message_id,
              type: r.type,
              contentType: r.content_type,
              body: r.payload,
              timestamp: r.created_at,
              correlationId: r.correlation_id ?? undefined,
              headers: traceHeaders(),
            }),
          { kind: SpanKind.PRODUCER, parent: extractTraceContext(storedHeaders(r.headers)) },
        )
      ));
      const sent: string[] = [];
      const failed: string[] = [];
      const reasons: string[] = [];
      for (const [i, res] of results.entries()) {
        const row = rows[i]!;
        if (res.status === "fulfilled") {
          sent.push(row.ctid);
          continue;
        }
        const reason = (res.reason as Error).message;
        failed.push(row.id);
        reasons.push(reason);
        this.log.warn("publish failed; will retry", { message_id: row.message_id, error: reason });
      }
      if (sent.length > 0) {
        // By the rows' places rather than their ids: a plan cached while the table was
        // small scans the whole heap for ids, and a backlog leaves the heap large.
        await tx.unsafe(
          `delete from ${s}.outbox where ctid = any($1::text[]::tid[])`,
          [sent],
          PREPARED,
        );
      }
      if (failed.length > 0) {
        await tx.unsafe(
          `update ${s}.outbox o set attempts = o.attempts + 1, last_error = f.reason,
             available_at = now() + make_interval(secs => least(30, 0.2 * power(2, o.attempts)))
             from unnest($1::bigint[], $2::text[]) as f(id, reason)
            where o.id = f.id`,
          [failed, reasons],
          PREPARED,
        );
      }
      return rows.length;
    });
  }
}

function storedHeaders(text: string | null): Record<string, unknown> | undefined {
  try {
    const h = JSON.parse(text ?? "null");
    return h !== null && typeof h === "object" && !Array.isArray(h) ? h : undefined;
  } catch {
    return undefined;
  }
}
