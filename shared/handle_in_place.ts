// How both brokers run a consumer's handler: a failure that says a dependency is briefly
// down (the database) is retried in place, holding the message, so an outage does not
// spend the queue's delivery limit; any other failure, or one that outlasts the budget,
// is a "retry" for the broker to count.
import { backoff, delay } from "./async.ts";
import type { Disposition, IncomingMessage, MessageHandler } from "./bus.ts";
import type { Logger } from "./log.ts";

/** How long one delivery may be held while a dependency is down. */
export const TRANSIENT_RETRY_MS = 30_000;

export interface InPlaceOptions {
  queue: string;
  isTransient: (err: unknown) => boolean;
  /** False once the consumer is stopping or its channel is gone: stop holding then. */
  keepHolding: () => boolean;
  log: Logger;
}

export async function handleInPlace(
  handler: MessageHandler,
  msg: IncomingMessage,
  o: InPlaceOptions,
): Promise<Disposition> {
  const started = Date.now();
  for (let attempt = 1;; attempt++) {
    try {
      return await handler(msg);
    } catch (err) {
      const fields = {
        queue: o.queue,
        message_id: msg.messageId,
        delivery: msg.deliveryCount,
        attempt,
        error: (err as Error)?.message ?? String(err),
      };
      const wait = backoff(attempt, { baseMs: 100, maxMs: 3_000, jitter: 0.3 });
      if (
        o.isTransient(err) && o.keepHolding() && Date.now() - started + wait < TRANSIENT_RETRY_MS
      ) {
        o.log.warn("handler hit a transient failure; retrying in place", fields);
        await delay(wait);
        continue;
      }
      o.log.error("handler failed", fields);
      return "retry";
    }
  }
}
