// The RabbitMQ topology both services declare at start. Names are part of
// the external contract; the dead-letter side is ours.

export const EXCHANGE = "verification";
export const DEAD_LETTER_EXCHANGE = "verification.dlx";

export const OTP_ROUTING_KEY = "otp_routing_key";
export const OTP_QUEUE = "otp_queue";
export const AUTH_ROUTING_KEY = "otp_to_auth";
export const AUTH_QUEUE = "auth_service_queue";

/**
 * Topic exchange where auth-service tells other services what happened; the routing key
 * is the event name. We bind no queue of ours: each consumer binds its own, and an event
 * nobody has bound to is not an error (see publishesMandatory).
 */
export const EVENTS_EXCHANGE = "auth.events";

export const EVENT_ROUTING_KEYS = {
  userSignedUp: "user.signed_up",
  userVerified: "user.verified",
  sessionCreated: "session.created",
  sessionRevoked: "session.revoked",
  phoneChanged: "phone.changed",
  userDeleted: "user.deleted",
} as const;

export type EventRoutingKey = typeof EVENT_ROUTING_KEYS[keyof typeof EVENT_ROUTING_KEYS];

export interface ExchangeSpec {
  name: string;
  type: "direct" | "topic";
}

/** Every exchange both services declare. */
export const EXCHANGES: readonly ExchangeSpec[] = [
  { name: EXCHANGE, type: "direct" },
  { name: DEAD_LETTER_EXCHANGE, type: "direct" },
  { name: EVENTS_EXCHANGE, type: "topic" },
];

/**
 * Whether a publish to `exchange` must reach a queue. On the service-to-service exchange
 * an unroutable message is lost work and fails the publish; an event is delivered to
 * whoever has bound, possibly no one.
 */
export function publishesMandatory(exchange: string): boolean {
  return exchange !== EVENTS_EXCHANGE;
}

/**
 * Returns after which a message that keeps failing is dead-lettered (RabbitMQ counts
 * returns, so its handler sees it at most this many times plus one).
 */
export const DEFAULT_DELIVERY_LIMIT = 5;

export interface QueueSpec {
  name: string;
  routingKey: string;
  /** Where its dead letters land, bound to DEAD_LETTER_EXCHANGE with key = queue name. */
  deadLetterQueue: string;
}

export const QUEUES: readonly QueueSpec[] = [
  { name: OTP_QUEUE, routingKey: OTP_ROUTING_KEY, deadLetterQueue: `${OTP_QUEUE}.dlq` },
  { name: AUTH_QUEUE, routingKey: AUTH_ROUTING_KEY, deadLetterQueue: `${AUTH_QUEUE}.dlq` },
];

/**
 * Quorum queues survive a broker restart, count deliveries (x-delivery-limit) and
 * dead-letter at least once when paired with reject-publish overflow.
 */
export function queueArguments(spec: QueueSpec, deliveryLimit: number): Record<string, unknown> {
  return {
    "x-queue-type": "quorum",
    "x-delivery-limit": deliveryLimit,
    "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
    "x-dead-letter-routing-key": spec.name,
    "x-dead-letter-strategy": "at-least-once",
    "x-overflow": "reject-publish",
  };
}

export function deadLetterQueueArguments(): Record<string, unknown> {
  return { "x-queue-type": "quorum" };
}
