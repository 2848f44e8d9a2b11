// The RabbitMQ topology both services declare at start (SPEC §6). Names are part of
// the external contract; the dead-letter side is ours.

export const EXCHANGE = "verification";
export const DEAD_LETTER_EXCHANGE = "verification.dlx";

export const OTP_ROUTING_KEY = "otp_routing_key";
export const OTP_QUEUE = "otp_queue";
export const AUTH_ROUTING_KEY = "otp_to_auth";
export const AUTH_QUEUE = "auth_service_queue";

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
