// Transactional outbox: a message is written in the same transaction as the work that
// causes it, and a relay publishes it with publisher confirms afterwards. Rows are
// claimed with FOR UPDATE SKIP LOCKED, so any number of replicas can relay at once.
// Delivery is at least once; consumers deduplicate on message_id.
import { delay } from "./async.ts";
import type { Broker, OutgoingMessage } from "./bus.ts";
import type { Logger } from "./log.ts";
import type { Sql, TxSql } from "./postgres.ts";

export async function enqueue(tx: TxSql, schema: string, m: OutgoingMessage): Promise<void> {
  await tx.unsafe(
    `insert into ${schema}.outbox
       (message_id, exchange, routing_key, type, content_type, payload, correlation_id, created_at)
     values ($1, $2, $3, $4, $5, $6, $7, $8)`,
    [
      m.messageId,
      m.exchange,
      m.routingKey,
      m.type,
      m.contentType,
      m.body,
      m.correlationId ?? null,
      m.timestamp,
    ],
  );
}

export interface RelayOptions {
  sql: Sql;
  schema: string;
  broker: Broker;
  logger: Logger;
}

/** Rows claimed per pass. */
const BATCH = 100;
/** How often to look for rows written by other replicas or left by failures. */
const POLL_MS = 500;

interface Row {
  id: string;
  message_id: string;
  exchange: string;
  routing_key: string;
  type: string;
  content_type: string;
  payload: Uint8Array;
  correlation_id: string | null;
  created_at: Date;
  attempts: number;
}

export class OutboxRelay {
  private running = false;
  private wake: (() => void) | undefined;
  /** A poke that came while a pass was running: the next sleep is skipped. */
  private poked = false;
  private loop: Promise<void> | undefined;
  private readonly log: Logger;

  constructor(private readonly o: RelayOptions) {
    this.log = o.logger.child({ component: "outbox-relay" });
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.loop = this.run();
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
  }

  private async run(): Promise<void> {
    while (this.running) {
      let handled = 0;
      this.poked = false;
      try {
        handled = await this.relayOnce();
      } catch (err) {
        this.log.warn("relay pass failed", { error: (err as Error).message });
      }
      if (handled < BATCH && this.running) await this.sleep();
    }
  }

  private async sleep(): Promise<void> {
    if (this.poked) return;
    const wake = new AbortController();
    this.wake = () => wake.abort();
    await delay(POLL_MS, { signal: wake.signal }).catch(() => {});
    this.wake = undefined;
  }

  /** Publishes one batch; returns how many rows it claimed. */
  async relayOnce(): Promise<number> {
    if (!this.o.broker.isReady()) return 0;
    const s = this.o.schema;
    return await this.o.sql.begin(async (tx) => {
      const rows = await tx.unsafe<Row[]>(
        `select id, message_id, exchange, routing_key, type, content_type, payload,
                correlation_id, created_at, attempts
           from ${s}.outbox where available_at <= now()
          order by id limit $1 for update skip locked`,
        [BATCH],
      );
      if (rows.length === 0) return 0;
      const results = await Promise.allSettled(rows.map((r) =>
        this.o.broker.publish({
          exchange: r.exchange,
          routingKey: r.routing_key,
          messageId: r.message_id,
          type: r.type,
          contentType: r.content_type,
          body: r.payload,
          timestamp: r.created_at,
          correlationId: r.correlation_id ?? undefined,
        })
      ));
      const sent: string[] = [];
      for (const [i, res] of results.entries()) {
        const row = rows[i]!;
        if (res.status === "fulfilled") {
          sent.push(row.id);
          continue;
        }
        const reason = (res.reason as Error).message;
        this.log.warn("publish failed; will retry", { message_id: row.message_id, error: reason });
        await tx.unsafe(
          `update ${s}.outbox set attempts = attempts + 1, last_error = $2,
             available_at = now() + make_interval(secs => least(30, 0.2 * power(2, attempts)))
           where id = $1`,
          [row.id, reason],
        );
      }
      if (sent.length > 0) {
        await tx.unsafe(`delete from ${s}.outbox where id = any($1::bigint[])`, [sent]);
      }
      return rows.length;
    });
  }
}
