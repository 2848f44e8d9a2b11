/**
 * In-process Broker for `deno task dev` ONLY: nothing is durable, a restart loses every
 * queued message, and only consumers in this process see them. It keeps the RabbitMQ
 * behaviour the services rely on (shared/topology.ts, shared/amqp.ts), so code that
 * works here meets no surprise there:
 * - direct exchange `verification`, exact routing key to bound queues; an unroutable
 *   publish is rejected (amqp.ts publishes with `mandatory` and fails on basic.return);
 * - topic exchange `auth.events`: binding patterns of dot-separated words where `*` is
 *   one word and `#` zero or more; a publish nobody is bound to is confirmed and dropped,
 *   as RabbitMQ does without `mandatory` (publishesMandatory);
 * - a quorum queue's delivery limit: a message returned ("retry") more than
 *   `deliveryLimit` times, i.e. on delivery `deliveryLimit + 1`, is dead-lettered;
 * - "dead-letter" and the limit route through `verification.dlx` to `<queue>.dlq`;
 * - competing consumers take turns, each holding at most `prefetch` unsettled messages;
 * - a retried message waits out the same back-off as amqp.ts, then goes back to the
 *   head of its queue; a handler failing on a transient error (`isTransient`) is
 *   retried in place, holding the message, so an outage uses up no delivery;
 * - timestamps keep whole seconds, as AMQP's do.
 */
import type {
  Broker,
  DeliveryObserver,
  IncomingMessage,
  MessageHandler,
  OutgoingMessage,
} from "../shared/bus.ts";
import { backoff, delay } from "../shared/async.ts";
import { PublishError } from "../shared/bus.ts";
import { handleInPlace } from "../shared/handle_in_place.ts";
import type { Logger } from "../shared/log.ts";
import {
  DEAD_LETTER_EXCHANGE,
  DEFAULT_DELIVERY_LIMIT,
  EXCHANGE,
  EXCHANGES,
  publishesMandatory,
  QUEUES,
} from "../shared/topology.ts";
import type { ExchangeSpec } from "../shared/topology.ts";

export interface MemoryBrokerOptions {
  /** Returns after which a retried message is dead-lettered (x-delivery-limit). */
  deliveryLimit?: number;
  /** Pause before a retried message is requeued; amqp.ts's back-off by default. */
  retryDelayMs?: (deliveryCount: number) => number;
  /**
   * Errors for which a handler is retried in place, holding the message without using
   * up its delivery limit, as amqp.ts does (there: the database is unreachable).
   */
  isTransient?: (err: unknown) => boolean;
  /** Told of redeliveries and dead letters. */
  observer?: DeliveryObserver;
}

/** How long a message may be retried in place before it is requeued (as in amqp.ts). */

type Stored = Omit<IncomingMessage, "deliveryCount"> & {
  /** Deliveries from the queue it is in now. */
  deliveries: number;
};

interface Queue {
  name: string;
  /** Ready messages, head first. */
  ready: Stored[];
  consumers: Consumer[];
  turn: number;
  deadLetterQueue?: string;
  deliveryLimit: number;
  /** Dead-lettered messages as last delivered, for deadLetters(). */
  history: IncomingMessage[];
  scheduled: boolean;
}

interface Consumer {
  handler: MessageHandler;
  prefetch: number;
  unsettled: number;
}

export class MemoryBroker implements Broker {
  private readonly log: Logger;
  private readonly queues = new Map<string, Queue>();
  private readonly exchanges = new Map<string, ExchangeSpec["type"]>();
  /** exchange -> routing key (a pattern on a topic exchange) -> queue names */
  private readonly bindings = new Map<string, Map<string, string[]>>();
  private readonly inFlight = new Set<Promise<void>>();
  private readonly retryDelayMs: (deliveryCount: number) => number;
  private readonly isTransient: (err: unknown) => boolean;
  private readonly observer: DeliveryObserver | undefined;
  private closing = false;
  private consuming = true;

  constructor(logger: Logger, options: MemoryBrokerOptions = {}) {
    this.log = logger.child({ component: "memory-broker" });
    this.retryDelayMs = options.retryDelayMs ??
      ((n) => backoff(n, { baseMs: 100, maxMs: 2_000 }));
    this.isTransient = options.isTransient ?? (() => false);
    this.observer = options.observer;
    const limit = options.deliveryLimit ?? DEFAULT_DELIVERY_LIMIT;
    for (const x of EXCHANGES) {
      this.exchanges.set(x.name, x.type);
      this.bindings.set(x.name, new Map());
    }
    for (const spec of QUEUES) {
      this.declare(spec.deadLetterQueue, Infinity);
      this.bind(DEAD_LETTER_EXCHANGE, spec.name, spec.deadLetterQueue);
      this.declare(spec.name, limit, spec.deadLetterQueue);
      this.bind(EXCHANGE, spec.routingKey, spec.name);
    }
    this.log.warn("in-process broker: development only, messages are not durable");
  }

  publish(msg: OutgoingMessage): Promise<void> {
    if (this.closing) {
      return Promise.reject(new PublishError("broker closed", "unavailable"));
    }
    const exchange = this.bindings.get(msg.exchange);
    if (!exchange) {
      this.log.error("publish to an undeclared exchange", { exchange: msg.exchange });
      return Promise.reject(new PublishError(`no exchange ${msg.exchange}`, "nacked"));
    }
    const targets = this.exchanges.get(msg.exchange) === "topic"
      ? [...new Set([...exchange].flatMap(([p, qs]) => topicMatches(p, msg.routingKey) ? qs : []))]
      : exchange.get(msg.routingKey) ?? [];
    if (targets.length === 0 && !publishesMandatory(msg.exchange)) return Promise.resolve();
    if (targets.length === 0) {
      this.log.warn("unroutable message returned", {
        exchange: msg.exchange,
        routing_key: msg.routingKey,
        message_id: msg.messageId,
        type: msg.type,
      });
      return Promise.reject(
        new PublishError(`no queue bound for ${msg.routingKey}`, "unroutable"),
      );
    }
    for (const name of targets) {
      this.enqueue(this.queue(name), {
        messageId: msg.messageId,
        type: msg.type,
        contentType: msg.contentType,
        correlationId: msg.correlationId,
        headers: msg.headers ? { ...msg.headers } : undefined,
        timestamp: new Date(Math.floor(msg.timestamp.getTime() / 1000) * 1000),
        // The caller may reuse its buffer once publish returns.
        body: msg.body.slice(),
        deliveries: 0,
      });
    }
    return Promise.resolve();
  }

  consume(queue: string, handler: MessageHandler, options?: { prefetch?: number }): void {
    if (!this.consuming) {
      this.log.warn("consume after stopConsuming ignored", { queue });
      return;
    }
    const q = this.queue(queue);
    q.consumers.push({ handler, prefetch: Math.max(1, options?.prefetch ?? 16), unsettled: 0 });
    this.schedule(q);
  }

  isReady(): boolean {
    return !this.closing;
  }

  async stopConsuming(): Promise<void> {
    this.consuming = false;
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
  }

  async close(): Promise<void> {
    this.closing = true;
    await this.stopConsuming();
  }

  /**
   * Declares a queue of a consumer outside the services (another team's, a test's) and
   * binds it, e.g. to auth.events with "user.*". Such a queue has no delivery limit.
   */
  bindQueue(queue: string, exchange: string, routingKey: string): void {
    if (!this.exchanges.has(exchange)) throw new Error(`no exchange ${exchange} in the topology`);
    if (!this.queues.has(queue)) this.declare(queue, Infinity);
    this.bind(exchange, routingKey, queue);
  }

  /** Ready messages in a queue (not those a consumer holds). */
  queueDepth(name: string): number {
    return this.queue(name).ready.length;
  }

  /** Messages dead-lettered from `queue`, as they were last delivered, oldest first. */
  deadLetters(queue: string): IncomingMessage[] {
    return this.queue(queue).history.map((m) => ({ ...m, body: m.body.slice() }));
  }

  private declare(name: string, deliveryLimit: number, deadLetterQueue?: string): void {
    this.queues.set(name, {
      name,
      ready: [],
      consumers: [],
      turn: 0,
      deadLetterQueue,
      deliveryLimit,
      history: [],
      scheduled: false,
    });
  }

  private bind(exchange: string, routingKey: string, queue: string): void {
    const keys = this.bindings.get(exchange) ?? new Map<string, string[]>();
    keys.set(routingKey, [...(keys.get(routingKey) ?? []), queue]);
    this.bindings.set(exchange, keys);
  }

  private queue(name: string): Queue {
    const q = this.queues.get(name);
    if (!q) throw new Error(`no queue ${name} in the topology`);
    return q;
  }

  private enqueue(q: Queue, m: Stored, atHead = false): void {
    if (atHead) q.ready.unshift(m);
    else q.ready.push(m);
    this.schedule(q);
  }

  /** Delivery always starts from a fresh task, never inside publish or a settle. */
  private schedule(q: Queue): void {
    if (q.scheduled) return;
    q.scheduled = true;
    queueMicrotask(() => {
      q.scheduled = false;
      this.dispatch(q);
    });
  }

  private dispatch(q: Queue): void {
    while (this.consuming && q.ready.length > 0) {
      const consumer = this.nextConsumer(q);
      if (!consumer) return;
      const m = q.ready.shift()!;
      m.deliveries++;
      consumer.unsettled++;
      const p = this.deliver(q, consumer, m).finally(() => {
        consumer.unsettled--;
        this.inFlight.delete(p);
        this.schedule(q);
      });
      this.inFlight.add(p);
    }
  }

  /** Round robin over consumers with room under their prefetch. */
  private nextConsumer(q: Queue): Consumer | undefined {
    for (let i = 0; i < q.consumers.length; i++) {
      const index = (q.turn + i) % q.consumers.length;
      const c = q.consumers[index]!;
      if (c.unsettled < c.prefetch) {
        q.turn = index + 1;
        return c;
      }
    }
    return undefined;
  }

  private async deliver(q: Queue, c: Consumer, m: Stored): Promise<void> {
    if (m.deliveries > 1) this.observer?.redelivered(q.name);
    const disposition = await handleInPlace(c.handler, toIncoming(m), {
      queue: q.name,
      isTransient: this.isTransient,
      keepHolding: () => this.consuming,
      log: this.log,
    });
    if (disposition === "ack") return;
    if (disposition === "dead-letter") {
      this.observer?.deadLettered(q.name, "poison");
      return this.deadLetter(q, m, "rejected");
    }
    if (m.deliveries > q.deliveryLimit) {
      this.observer?.deadLettered(q.name, "retries_exhausted");
      return this.deadLetter(q, m, "delivery_limit");
    }
    await delay(this.retryDelayMs(m.deliveries));
    this.enqueue(q, m, true);
  }

  private deadLetter(q: Queue, m: Stored, reason: string): void {
    const fields = { queue: q.name, message_id: m.messageId, type: m.type, reason };
    if (!q.deadLetterQueue) {
      this.log.warn("message dropped: queue has no dead-letter queue", fields);
      return;
    }
    this.log.warn("message dead-lettered", { ...fields, deliveries: m.deliveries });
    q.history.push(toIncoming(m));
    this.enqueue(this.queue(q.deadLetterQueue), { ...m, body: m.body.slice(), deliveries: 0 });
  }
}

/** AMQP topic matching: `*` is exactly one word, `#` zero or more. */
export function topicMatches(pattern: string, key: string): boolean {
  const p = pattern.split(".");
  const k = key.split(".");
  const match = (i: number, j: number): boolean => {
    if (i === p.length) return j === k.length;
    if (p[i] === "#") return match(i + 1, j) || (j < k.length && match(i, j + 1));
    if (j === k.length) return false;
    return (p[i] === "*" || p[i] === k[j]) && match(i + 1, j + 1);
  };
  return match(0, 0);
}

/** Each delivery gets its own copy: a handler that mutates the body spoils no redelivery. */
function toIncoming(m: Stored): IncomingMessage {
  const { deliveries, ...props } = m;
  return { ...props, body: m.body.slice(), deliveryCount: deliveries };
}
