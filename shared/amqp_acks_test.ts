import assert from "node:assert/strict";
import { AckBatcher } from "./amqp_acks.ts";

function recorder() {
  const sent: string[] = [];
  const channel = {
    ack(m: { fields: { deliveryTag: number } }, allUpTo?: boolean) {
      sent.push(`${m.fields.deliveryTag}${allUpTo ? "+" : ""}`);
    },
  };
  return { sent, channel };
}
const d = (tag: number) => ({ fields: { deliveryTag: tag } });

Deno.test("acks due together at the head of the window go out as one multiple ack", async () => {
  const { sent, channel } = recorder();
  const acks = new AckBatcher(channel, (e) => assert.fail(e.message));
  for (const t of [1, 2, 3]) acks.received(d(t));
  await Promise.all([acks.ack(d(2)), acks.ack(d(1)), acks.ack(d(3))]);
  assert.deepEqual(sent, ["3+"]);
});

Deno.test("a finished delivery behind a running one is acked alone, and the head later covers only what is left", async () => {
  const { sent, channel } = recorder();
  const acks = new AckBatcher(channel, (e) => assert.fail(e.message));
  for (const t of [1, 2, 3, 4]) acks.received(d(t));
  await acks.ack(d(2));
  assert.deepEqual(sent, ["2"], "delivery 1 still runs: 2 is acked on its own");
  acks.settled(d(3)); // nacked by the caller
  await Promise.all([acks.ack(d(1)), acks.ack(d(4))]);
  assert.deepEqual(sent, ["2", "4+"]);
});

Deno.test("after the channel closed, pending and later acks resolve without writing", async () => {
  const { sent, channel } = recorder();
  const acks = new AckBatcher(channel, (e) => assert.fail(e.message));
  acks.received(d(1));
  const pending = acks.ack(d(1));
  acks.close();
  await pending;
  await acks.ack(d(1));
  assert.deepEqual(sent, []);
});

Deno.test("an ack the channel refuses is reported and still resolves", async () => {
  const errors: string[] = [];
  const acks = new AckBatcher({
    ack() {
      throw new Error("channel closed");
    },
  }, (e) => errors.push(e.message));
  acks.received(d(1));
  await acks.ack(d(1));
  assert.deepEqual(errors, ["channel closed"]);
});
