// RabbitMQ transport for the Broker port, on amqplib's opt-in recovery: it reconnects
// with backoff and jitter, and our setup hook redeclares the topology, reopens the
// confirm channel and restarts every consumer after each (re)connect. Channels that
// die while the connection lives (a channel error) are reopened here, since amqplib's
// recovery only covers the connection.
//
// Guarantees:
// - publish resolves only once the broker confirmed the message and did not return
//   it as unroutable (`mandatory`, except for events, which may have no consumer); it rejects with PublishError otherwise, including
//   when the confirm does not come within ten seconds or the connection drops
//   first. Callers (the outbox relay) keep the message and publish it again.
// - back-pressure: when amqplib's publish returns false, later publishes wait for
//   'drain' (or for the channel to die), bounded by the confirm timeout.
// - consumers acknowledge after the handler is done (acks due together go as one
//   frame, see amqp_acks.ts); a handler failing on a transient
//   dependency error (database unreachable) is retried in place, holding the message,
//   so an outage does not burn the queue's delivery limit; other failures are
//   requeued and the delivery limit moves them to the dead-letter queue.
import amqp from "amqplib";
import type { Channel, ChannelModel, ConfirmChannel, ConsumeMessage } from "amqplib";
import { Buffer } from "node:buffer";
import type {
  Broker,
  DeliveryObserver,
  IncomingMessage,
  MessageHandler,
  OutgoingMessage,
} from "./bus.ts";
import { PublishError } from "./bus.ts";
import { AckBatcher } from "./amqp_acks.ts";
import { handleInPlace } from "./handle_in_place.ts";
import { backoff, delay, settlesWithin } from "./async.ts";
import type { Logger } from "./log.ts";
import {
  DEAD_LETTER_EXCHANGE,
  deadLetterQueueArguments,
  EXCHANGE,
  EXCHANGES,
  publishesMandatory,
  queueArguments,
  QUEUES,
} from "./topology.ts";

export interface AmqpOptions {
  url: string;
  logger: Logger;
  deliveryLimit: number;
  /**
   * Errors for which a handler is retried in place (the message stays unacknowledged
   * and its delivery count does not grow): the database is unreachable, typically.
   */
  isTransient: (err: unknown) => boolean;
  /** Told of redeliveries and dead letters. */
  observer?: DeliveryObserver;
}

/** How long a publish may wait for its confirm before it counts as failed. */
const CONFIRM_TIMEOUT_MS = 10_000;
/** How long a message may be retried in place before it is requeued. */
/** How long stopConsuming() waits for handlers in flight (within the stop deadline). */
const DRAIN_TIMEOUT_MS = 8_000;

interface Consumer {
  queue: string;
  handler: MessageHandler;
  prefetch: number;
  channel?: Channel;
  tag?: string;
}

type RecoveringConnection = Awaited<ReturnType<typeof connectRecovering>>;

export async function connectAmqp(options: AmqpOptions): Promise<AmqpBroker> {
  const broker = new AmqpBroker(options);
  await broker.start();
  return broker;
}

/** The URL without its password, for logs. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return "<invalid url>";
  }
}

export class AmqpBroker implements Broker {
  private connection: RecoveringConnection | undefined;
  /** The live connection, set by setup and cleared on disconnect. */
  private model: ChannelModel | undefined;
  private publisher: ConfirmChannel | undefined;
  private ready = false;
  private closing = false;
  /** Cleared by stopConsuming(); nothing attaches a consumer afterwards. */
  private consuming = true;
  private stopped: Promise<void> | undefined;
  private readonly consumers: Consumer[] = [];
  private readonly inFlight = new Set<Promise<void>>();
  private readonly returned = new Set<string>();
  /** Set while the publish channel's buffer is full; resolved by 'drain' or its death. */
  private drain: { promise: Promise<void>; release: () => void } | undefined;
  private readonly closedChannels = new WeakSet<Channel>();
  private readonly log: Logger;
  private readonly isTransient: (err: unknown) => boolean;

  constructor(private readonly options: AmqpOptions) {
    this.log = options.logger.child({ component: "amqp" });
    this.isTransient = options.isTransient;
  }

  async start(): Promise<void> {
    const conn = await connectRecovering(this.options.url, (model) => this.setup(model));
    this.connection = conn;
    conn.on("connect", () => this.log.info("broker connected"));
    conn.on("disconnect", (err: Error) => {
      this.ready = false;
      this.model = undefined;
      this.publisher = undefined;
      this.releaseDrain();
      for (const c of this.consumers) c.channel = undefined;
      if (!this.closing) this.log.warn("broker disconnected", { error: err?.message });
    });
    conn.on("connect-failed", (err: Error) => {
      this.log.warn("broker connect failed", { error: err?.message });
    });
    conn.on("reconnect-failed", (err: Error) => {
      this.log.error("broker recovery gave up", { error: err?.message });
    });
    conn.on("error", (err: Error) => this.log.warn("broker error", { error: err?.message }));
    conn.on("blocked", (reason: string) => this.log.warn("broker blocked us", { reason }));
    conn.on("unblocked", () => this.log.info("broker unblocked us"));
    this.log.info("connecting to broker", { url: redactUrl(this.options.url) });
  }

  isReady(): boolean {
    return this.ready && !this.closing && this.publisher !== undefined;
  }

  private async setup(model: ChannelModel): Promise<void> {
    const ch = await model.createChannel();
    await declareTopology(ch, this.options.deliveryLimit);
    await ch.close();
    this.model = model;
    try {
      await this.openPublisher(model);
      for (const c of this.consumers) await this.attach(model, c);
    } catch (err) {
      // amqplib closes this connection and reconnects; nothing may reuse it meanwhile.
      this.model = undefined;
      throw err;
    }
    this.ready = true;
  }

  private async openPublisher(model: ChannelModel): Promise<void> {
    const pub = await model.createConfirmChannel();
    pub.on("error", (err: Error) => this.log.warn("publish channel error", { error: err.message }));
    // With `mandatory`, an unroutable message comes back before its confirm.
    pub.on("return", (msg: { properties: { messageId?: string } }) => {
      if (msg.properties.messageId) this.returned.add(msg.properties.messageId);
    });
    pub.on("drain", () => this.releaseDrain());
    pub.on("close", () => {
      this.closedChannels.add(pub);
      if (this.publisher !== pub) return;
      this.publisher = undefined;
      this.releaseDrain();
      // A channel-level error closed it while the connection may live on: reopen it.
      this.reopenLater(model, "publish channel", () => this.openPublisher(model));
    });
    this.releaseDrain();
    this.publisher = pub;
  }

  /** Retries `open` with backoff while `model` is still the live connection. */
  private reopenLater(model: ChannelModel, what: string, open: () => Promise<void>): void {
    const attempt = (n: number) => {
      setTimeout(() => {
        if (this.closing || this.model !== model) return; // reconnect's setup takes over
        open().then(
          () => this.log.info(`${what} reopened`),
          (err: Error) => {
            this.log.warn(`could not reopen ${what}`, { error: err.message, attempt: n });
            attempt(n + 1);
          },
        );
      }, backoff(n + 1, { baseMs: 250, maxMs: 5_000, jitter: 0.3 }));
    };
    attempt(0);
  }

  private releaseDrain(): void {
    const d = this.drain;
    this.drain = undefined;
    d?.release();
  }

  async publish(msg: OutgoingMessage): Promise<void> {
    const timeoutMs = CONFIRM_TIMEOUT_MS;
    const started = Date.now();
    if (this.drain) {
      const waited = await settlesWithin(this.drain.promise, timeoutMs);
      if (!waited) throw new PublishError("broker back-pressure did not clear", "unavailable");
    }
    const ch = this.publisher;
    if (!ch || !this.ready || this.closing) {
      throw new PublishError("broker not connected", "unavailable");
    }
    const left = Math.max(1, timeoutMs - (Date.now() - started));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.returned.delete(msg.messageId);
        reject(new PublishError("publish confirm timed out", "unavailable"));
      }, left);
      let ok: boolean;
      try {
        ok = ch.publish(msg.exchange, msg.routingKey, Buffer.from(msg.body), {
          persistent: true,
          mandatory: publishesMandatory(msg.exchange),
          messageId: msg.messageId,
          type: msg.type,
          contentType: msg.contentType,
          timestamp: Math.floor(msg.timestamp.getTime() / 1000),
          correlationId: msg.correlationId,
          headers: msg.headers,
        }, (err: unknown) => {
          clearTimeout(timer);
          const wasReturned = this.returned.delete(msg.messageId);
          if (err) {
            // A nack, or the channel closed before the confirm: either way not taken.
            const closed = this.closedChannels.has(ch);
            reject(
              new PublishError(
                closed ? "channel closed before the confirm" : "broker refused the message",
                closed ? "unavailable" : "nacked",
              ),
            );
          } else if (wasReturned) {
            reject(new PublishError(`no queue bound for ${msg.routingKey}`, "unroutable"));
          } else resolve();
        });
      } catch (err) {
        clearTimeout(timer);
        reject(new PublishError(`publish failed: ${(err as Error).message}`, "unavailable"));
        return;
      }
      // Back-pressure: the socket buffer is full; later publishes wait for 'drain'.
      if (!ok && !this.drain && this.publisher === ch) {
        let release = () => {};
        const promise = new Promise<void>((r) => (release = r));
        this.drain = { promise, release };
      }
    });
  }

  consume(queue: string, handler: MessageHandler, options?: { prefetch?: number }): void {
    if (!this.consuming) {
      this.log.warn("consume after stopConsuming ignored", { queue });
      return;
    }
    const consumer: Consumer = { queue, handler, prefetch: options?.prefetch ?? 16 };
    this.consumers.push(consumer);
    // Started by setup on (re)connect; if already connected, start it now.
    const model = this.model;
    if (this.ready && model) {
      this.attach(model, consumer).catch((err: Error) => {
        this.log.warn("could not start consumer", { queue, error: err.message });
        this.reopenLater(model, `consumer on ${queue}`, () => this.reattach(model, consumer));
      });
    }
  }

  /** Redeclares the topology (the queue may have been deleted), then consumes again. */
  private async reattach(model: ChannelModel, c: Consumer): Promise<void> {
    if (!this.consuming) return;
    const ch = await model.createChannel();
    try {
      await declareTopology(ch, this.options.deliveryLimit);
    } finally {
      await ch.close().catch(() => {});
    }
    await this.attach(model, c);
  }

  private async attach(model: ChannelModel, c: Consumer): Promise<void> {
    if (!this.consuming) return;
    const ch = await model.createChannel();
    const acks = new AckBatcher(ch, (err) => {
      this.log.warn("could not acknowledge", { queue: c.queue, error: err.message });
    });
    ch.on("error", (err: Error) => {
      this.log.warn("consumer channel error", { queue: c.queue, error: err.message });
    });
    ch.on("close", () => {
      this.closedChannels.add(ch);
      acks.close();
      if (c.channel !== ch) return;
      c.channel = undefined;
      c.tag = undefined;
      this.reopenLater(model, `consumer on ${c.queue}`, () => this.reattach(model, c));
    });
    let consumerTag: string;
    try {
      await ch.prefetch(c.prefetch);
      ({ consumerTag } = await ch.consume(c.queue, (m: ConsumeMessage | null) => {
        if (m === null) {
          // The broker cancelled us (queue deleted, leader moved): closing the channel
          // lets its 'close' handler above consume again.
          this.log.warn("consumer cancelled by broker", { queue: c.queue });
          ch.close().catch(() => {});
          return;
        }
        if (!this.consuming) {
          // Sent before the broker saw our cancel: hand it back untouched.
          try {
            ch.nack(m, false, true);
          } catch { /* the channel is closing; the broker requeues it anyway */ }
          return;
        }
        acks.received(m);
        const p = this.dispatch(ch, acks, m, c).finally(() => this.inFlight.delete(p));
        this.inFlight.add(p);
      }, { noAck: false }));
    } catch (err) {
      ch.close().catch(() => {});
      throw err;
    }
    c.channel = ch;
    c.tag = consumerTag;
    // stopConsuming() ran while this consumer was starting and could not cancel it.
    if (!this.consuming) await settlesWithin(ch.cancel(consumerTag).catch(() => {}), 2_000);
  }

  private async dispatch(
    ch: Channel,
    acks: AckBatcher,
    m: ConsumeMessage,
    c: Consumer,
  ): Promise<void> {
    const incoming = toIncoming(m);
    const observer = this.options.observer;
    if (incoming.deliveryCount > 1) observer?.redelivered(c.queue);
    const disposition = await handleInPlace(c.handler, incoming, {
      queue: c.queue,
      isTransient: this.isTransient,
      keepHolding: () => this.consuming && !this.closedChannels.has(ch),
      log: this.log,
    });
    if (this.closedChannels.has(ch)) {
      // The broker has already put the message back; its redelivery is deduplicated.
      this.log.warn("channel closed before settling; the message will be redelivered", {
        queue: c.queue,
        message_id: incoming.messageId,
      });
      return;
    }
    try {
      if (disposition === "ack") await acks.ack(m);
      else if (disposition === "dead-letter") {
        ch.nack(m, false, false);
        acks.settled(m);
        observer?.deadLettered(c.queue, "poison");
      } else {
        // The queue's delivery limit dead-letters a message returned once too often.
        if (incoming.deliveryCount > this.options.deliveryLimit) {
          observer?.deadLettered(c.queue, "retries_exhausted");
        }
        // A short pause keeps a failing message from spinning; the queue's delivery
        // limit bounds how often it comes back.
        if (this.consuming) {
          await delay(backoff(incoming.deliveryCount, { baseMs: 100, maxMs: 2_000 }));
        }
        ch.nack(m, false, true);
        acks.settled(m);
      }
    } catch (err) {
      // The channel closed under us: the broker redelivers, and handlers are idempotent.
      this.log.warn("could not settle message", { error: (err as Error).message });
    }
  }

  stopConsuming(): Promise<void> {
    this.stopped ??= this.cancelConsumers();
    return this.stopped;
  }

  private async cancelConsumers(): Promise<void> {
    this.consuming = false;
    await Promise.allSettled(this.consumers.map(async (c) => {
      if (c.channel && c.tag) await settlesWithin(c.channel.cancel(c.tag).catch(() => {}), 2_000);
    }));
    const drained = await settlesWithin(
      Promise.allSettled([...this.inFlight]),
      DRAIN_TIMEOUT_MS,
    );
    if (!drained) {
      this.log.warn("handlers still running at close; their messages will be redelivered", {
        in_flight: this.inFlight.size,
      });
    }
  }

  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    this.releaseDrain();
    await this.stopConsuming();
    await settlesWithin(this.connection?.close().catch(() => {}) ?? Promise.resolve(), 3_000);
    this.ready = false;
  }
}

export async function declareTopology(ch: Channel, deliveryLimit: number): Promise<void> {
  for (const x of EXCHANGES) await ch.assertExchange(x.name, x.type, { durable: true });
  for (const q of QUEUES) {
    await ch.assertQueue(q.deadLetterQueue, {
      durable: true,
      arguments: deadLetterQueueArguments(),
    });
    await ch.bindQueue(q.deadLetterQueue, DEAD_LETTER_EXCHANGE, q.name);
    await ch.assertQueue(q.name, { durable: true, arguments: queueArguments(q, deliveryLimit) });
    await ch.bindQueue(q.name, EXCHANGE, q.routingKey);
  }
}

function connectRecovering(url: string, setup: (model: ChannelModel) => Promise<void>) {
  const u = new URL(url);
  // Heartbeats notice a dead peer in seconds rather than at the next TCP timeout.
  if (!u.searchParams.has("heartbeat")) u.searchParams.set("heartbeat", "10");
  return amqp.connect(u.toString(), {
    // Each publish (a small one's frames copied into one buffer) and each ack is a write
    // of its own: with Nagle's algorithm a write that followed another waited for the
    // broker's delayed ACK (about 40 ms).
    noDelay: true,
    recovery: {
      initialDelay: 200,
      maxDelay: 5_000,
      factor: 2,
      jitter: 0.3,
      maxRetries: Infinity,
      waitForConnect: false,
      setup,
    },
  });
}

function toIncoming(m: ConsumeMessage): IncomingMessage {
  const p = m.properties;
  // Quorum queues count earlier deliveries in x-delivery-count.
  const header = Number(p.headers?.["x-delivery-count"]);
  const prior = Number.isFinite(header) ? header : m.fields.redelivered ? 1 : 0;
  return {
    messageId: p.messageId ?? undefined,
    type: p.type ?? undefined,
    contentType: p.contentType ?? undefined,
    correlationId: p.correlationId ?? undefined,
    timestamp: typeof p.timestamp === "number" ? new Date(p.timestamp * 1000) : undefined,
    body: new Uint8Array(m.content.buffer, m.content.byteOffset, m.content.byteLength),
    deliveryCount: prior + 1,
    headers: p.headers ?? undefined,
  };
}
