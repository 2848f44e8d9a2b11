// A consumer of auth.events for tests: what another service bound to the exchange would
// receive, decoded, with the AMQP message it came in.
import assert from "node:assert/strict";
import type { ChannelModel, ConsumeMessage } from "amqplib";
import { decodeEvent } from "../shared/events.ts";
import type { AuthEvent } from "../shared/events.ts";
import { EVENTS_EXCHANGE } from "../shared/topology.ts";

export interface Received {
  event: AuthEvent;
  message: ConsumeMessage;
}

/** Binds an exclusive queue to `pattern`; the array fills as events arrive. */
export async function tapAuthEvents(conn: ChannelModel, pattern: string): Promise<Received[]> {
  const ch = await conn.createChannel();
  const { queue } = await ch.assertQueue("", { exclusive: true });
  await ch.bindQueue(queue, EVENTS_EXCHANGE, pattern);
  const got: Received[] = [];
  await ch.consume(queue, (m) => {
    if (!m) return;
    got.push({
      message: m,
      event: decodeEvent({
        messageId: m.properties.messageId,
        type: m.properties.type,
        contentType: m.properties.contentType,
        correlationId: m.properties.correlationId,
        timestamp: new Date(m.properties.timestamp * 1000),
        body: new Uint8Array(m.content),
        deliveryCount: 1,
      }),
    });
    ch.ack(m);
  });
  return got;
}

/** Waits until `cond` holds, failing with `what` after 15 s. */
export async function until(
  what: string,
  cond: () => boolean,
  options: { signal?: AbortSignal } = {},
): Promise<void> {
  const signal = options.signal ?? AbortSignal.timeout(15_000);
  while (!cond()) {
    assert.ok(!signal.aborted, `timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
