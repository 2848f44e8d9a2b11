// The message bus port. Two transports implement it: RabbitMQ (shared/amqp.ts) and
// the in-process broker used by `deno task dev` (dev/memory_broker.ts).
// Everything above this interface is the same code in both.

export interface OutgoingMessage {
  exchange: string;
  routingKey: string;
  /** Unique id of the message; consumers deduplicate on it. */
  messageId: string;
  /** Fully qualified protobuf message name, e.g. "bus.v1.OtpRequested". */
  type: string;
  contentType: string;
  body: Uint8Array;
  timestamp: Date;
  /** Correlates logs across services; never a secret. */
  correlationId?: string;
  /** AMQP headers: the trace context (`traceparent`), never a secret. */
  headers?: Record<string, string>;
}

export interface IncomingMessage {
  messageId: string | undefined;
  type: string | undefined;
  contentType: string | undefined;
  correlationId: string | undefined;
  timestamp: Date | undefined;
  body: Uint8Array;
  /** 1 on first delivery; grows with each redelivery. */
  deliveryCount: number;
  /** AMQP headers as delivered (the trace context among them). */
  headers?: Record<string, unknown>;
}

/**
 * What to do with a delivered message once the handler is done:
 * - "ack": the work is durable (or was already done);
 * - "dead-letter": the message can never be processed; send it to the dead-letter queue now;
 * - "retry": a failure that may pass; deliver again (bounded by the queue's delivery limit).
 */
export type Disposition = "ack" | "dead-letter" | "retry";

export type MessageHandler = (msg: IncomingMessage) => Promise<Disposition>;

/** Raised when a publish could not be confirmed: not connected, nacked, or unroutable. */
export class PublishError extends Error {
  constructor(message: string, readonly reason: "unavailable" | "nacked" | "unroutable") {
    super(message);
    this.name = "PublishError";
  }
}

/** What a transport reports about deliveries, for metrics. */
export interface DeliveryObserver {
  /** A message arrived again after an earlier delivery of it failed. */
  redelivered(queue: string): void;
  /** A message left `queue` for its dead-letter queue. */
  deadLettered(queue: string, reason: "poison" | "retries_exhausted"): void;
}

export interface Broker {
  /** Resolves once the broker has taken responsibility for the message (publisher confirm). */
  publish(msg: OutgoingMessage): Promise<void>;
  /** Starts a competing consumer that survives reconnects. */
  consume(queue: string, handler: MessageHandler, options?: { prefetch?: number }): void;
  /** True while connected with topology declared. */
  isReady(): boolean;
  /**
   * Cancels every consumer, so no new message is delivered (not after a reconnect
   * either), and waits (bounded) for the handlers in flight. Publishing still works.
   */
  stopConsuming(): Promise<void>;
  /** Stops consuming if that is not done yet, then closes. */
  close(): Promise<void>;
}
