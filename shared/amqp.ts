// RabbitMQ transport for the Broker port, on amqplib's opt-in recovery: it reconnects
// with backoff and jitter, and our setup hook redeclares the topology, reopens the
// confirm channel and restarts every consumer after each (re)connect.
import amqp from "amqplib";
import type { Channel, ChannelModel, ConfirmChannel, ConsumeMessage } from "amqplib";
import { Buffer } from "node:buffer";
import type {
  Broker,
  Disposition,
  IncomingMessage,
  MessageHandler,
  OutgoingMessage,
} from "./bus.ts";
import { PublishError } from "./bus.ts";
import type { Logger } from "./log.ts";
import {
  DEAD_LETTER_EXCHANGE,
  deadLetterQueueArguments,
  EXCHANGE,
  queueArguments,
  QUEUES,
} from "./topology.ts";

export interface AmqpOptions {
  url: string;
  logger: Logger;
  deliveryLimit: number;
  /** How long a publish may wait for its confirm before it counts as failed. */
  confirmTimeoutMs?: number;
}

interface Consumer {
  queue: string;
  handler: MessageHandler;
  prefetch: number;
  channel?: Channel;
  tag?: string;
}

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
  private connection: Awaited<ReturnType<typeof connectRecovering>> | undefined;
  private publisher: ConfirmChannel | undefined;
  private ready = false;
  private closing = false;
  private readonly consumers: Consumer[] = [];
  private readonly inFlight = new Set<Promise<void>>();
  private readonly returned = new Set<string>();
  private drain: Promise<void> | undefined;
  private readonly log: Logger;

  constructor(private readonly options: AmqpOptions) {
    this.log = options.logger.child({ component: "amqp" });
  }

  async start(): Promise<void> {
    const conn = await connectRecovering(this.options.url, (model) => this.setup(model));
    this.connection = conn;
    conn.on("connect", () => this.log.info("broker connected"));
    conn.on("disconnect", (err: Error) => {
      this.ready = false;
      this.publisher = undefined;
      for (const c of this.consumers) c.channel = undefined;
      if (!this.closing) this.log.warn("broker disconnected", { error: err?.message });
    });
    conn.on("connect-failed", (err: Error) => {
      this.log.warn("broker connect failed", { error: err?.message });
    });
    conn.on("error", (err: Error) => this.log.warn("broker error", { error: err?.message }));
    conn.on("blocked", (reason: string) => this.log.warn("broker blocked us", { reason }));
    this.log.info("connecting to broker", { url: redactUrl(this.options.url) });
  }

  /** Resolves once the first connection and its setup are done. */
  async waitUntilReady(): Promise<void> {
    await this.connection?.waitForConnect();
  }

  isReady(): boolean {
    return this.ready && !this.closing;
  }

  private async setup(model: ChannelModel): Promise<void> {
    const ch = await model.createChannel();
    await declareTopology(ch, this.options.deliveryLimit);
    await ch.close();

    const pub = await model.createConfirmChannel();
    pub.on("error", (err: Error) => this.log.warn("publish channel error", { error: err.message }));
    // With `mandatory`, an unroutable message comes back before its confirm.
    pub.on("return", (msg: { properties: { messageId?: string } }) => {
      if (msg.properties.messageId) this.returned.add(msg.properties.messageId);
    });
    pub.on("drain", () => (this.drain = undefined));
    this.publisher = pub;
    this.drain = undefined;

    for (const c of this.consumers) await this.startConsumer(model, c);
    this.ready = true;
  }

  async publish(msg: OutgoingMessage): Promise<void> {
    if (this.drain) await this.drain;
    const ch = this.publisher;
    if (!ch || !this.ready) throw new PublishError("broker not connected", "unavailable");
    const timeoutMs = this.options.confirmTimeoutMs ?? 10_000;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new PublishError("publish confirm timed out", "unavailable")),
        timeoutMs,
      );
      let ok: boolean;
      try {
        ok = ch.publish(msg.exchange, msg.routingKey, Buffer.from(msg.body), {
          persistent: true,
          mandatory: true,
          messageId: msg.messageId,
          type: msg.type,
          contentType: msg.contentType,
          timestamp: Math.floor(msg.timestamp.getTime() / 1000),
          correlationId: msg.correlationId,
        }, (err: unknown) => {
          clearTimeout(timer);
          const wasReturned = this.returned.delete(msg.messageId);
          if (err) reject(new PublishError("broker refused the message", "nacked"));
          else if (wasReturned) {
            reject(new PublishError(`no queue bound for ${msg.routingKey}`, "unroutable"));
          } else resolve();
        });
      } catch (err) {
        clearTimeout(timer);
        reject(new PublishError(`publish failed: ${(err as Error).message}`, "unavailable"));
        return;
      }
      // Back-pressure: the socket buffer is full; later publishes wait for 'drain'.
      if (!ok && !this.drain) {
        this.drain = new Promise((r) => ch.once("drain", () => r()));
      }
    });
  }

  consume(queue: string, handler: MessageHandler, options?: { prefetch?: number }): void {
    const consumer: Consumer = { queue, handler, prefetch: options?.prefetch ?? 16 };
    this.consumers.push(consumer);
    // Started by setup on (re)connect; if already connected, start it now.
    if (this.ready && this.connection) {
      this.connection.createChannel().then((ch: Channel) => this.attach(ch, consumer)).catch(
        (err: Error) => this.log.warn("could not start consumer", { queue, error: err.message }),
      );
    }
  }

  private async startConsumer(model: ChannelModel, c: Consumer): Promise<void> {
    await this.attach(await model.createChannel(), c);
  }

  private async attach(ch: Channel, c: Consumer): Promise<void> {
    ch.on("error", (err: Error) => this.log.warn("consumer channel error", { error: err.message }));
    await ch.prefetch(c.prefetch);
    const { consumerTag } = await ch.consume(c.queue, (m: ConsumeMessage | null) => {
      if (m === null) {
        this.log.warn("consumer cancelled by broker", { queue: c.queue });
        return;
      }
      const p = this.dispatch(ch, m, c).finally(() => this.inFlight.delete(p));
      this.inFlight.add(p);
    }, { noAck: false });
    c.channel = ch;
    c.tag = consumerTag;
  }

  private async dispatch(ch: Channel, m: ConsumeMessage, c: Consumer): Promise<void> {
    const incoming = toIncoming(m);
    let disposition: Disposition;
    try {
      disposition = await c.handler(incoming);
    } catch (err) {
      this.log.error("handler failed", {
        queue: c.queue,
        message_id: incoming.messageId,
        error: (err as Error).message,
      });
      disposition = "retry";
    }
    try {
      if (disposition === "ack") ch.ack(m);
      else if (disposition === "dead-letter") ch.nack(m, false, false);
      else {
        // A short pause keeps a failing message from spinning; the queue's delivery
        // limit bounds how often it comes back.
        await delay(Math.min(100 * 2 ** (incoming.deliveryCount - 1), 2_000));
        ch.nack(m, false, true);
      }
    } catch (err) {
      // The channel closed under us: the broker redelivers, and handlers are idempotent.
      this.log.warn("could not settle message", { error: (err as Error).message });
    }
  }

  async close(): Promise<void> {
    this.closing = true;
    for (const c of this.consumers) {
      if (c.channel && c.tag) await c.channel.cancel(c.tag).catch(() => {});
    }
    await Promise.allSettled([...this.inFlight]);
    await this.connection?.close().catch(() => {});
    this.ready = false;
  }
}

export async function declareTopology(ch: Channel, deliveryLimit: number): Promise<void> {
  await ch.assertExchange(EXCHANGE, "direct", { durable: true });
  await ch.assertExchange(DEAD_LETTER_EXCHANGE, "direct", { durable: true });
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
  };
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
