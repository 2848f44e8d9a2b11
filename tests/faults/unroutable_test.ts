// Publishing with `mandatory`: when no queue is bound for a routing key, the broker
// returns the message, the relay counts that as a failed publish and keeps the row, and
// once a reconnect has redeclared the topology the request goes out and its code works.
import assert from "node:assert/strict";
import { EXCHANGE, OTP_QUEUE, OTP_ROUTING_KEY } from "../../shared/topology.ts";
import { clientHeaders, rpc, SIGNUP, VERIFY } from "../../testing/rpc.ts";
import { closeConnections, queuesSettled, RawAmqp } from "../../testing/broker.ts";
import { onFreshStack } from "../../testing/faults.ts";
import { pollUntil } from "../../shared/async.ts";
import { codeFor } from "../../testing/sms_codes.ts";
import { randomPhone } from "../../testing/stack.ts";
import type { Stack } from "../../testing/stack.ts";

Deno.test({
  name:
    "an unroutable publish is returned and kept in the outbox, then delivered once a reconnect redeclares the topology",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: () => onFreshStack(scenario),
});

async function scenario(stack: Stack) {
  // Someone removes the binding: requests for otp-service now route nowhere.
  const bus = await RawAmqp.open(stack.amqpUrl);
  try {
    await bus.ch.unbindQueue(OTP_QUEUE, EXCHANGE, OTP_ROUTING_KEY);
  } finally {
    await bus.close();
  }
  const phone = randomPhone();
  const headers = clientHeaders();
  const mark = stack.otp.lines.length;
  assert.equal((await rpc(stack.authUrl, SIGNUP, { phone_number: phone }, { headers })).code, "ok");

  // The broker hands it back; the relay keeps the row and says why.
  await pollUntil(async () => {
    const [r] = await stack.sql<{ attempts: number; last_error: string | null }[]>`
      select attempts, last_error from auth.outbox`;
    return r !== undefined && r.attempts >= 1 && /no queue bound/.test(r.last_error ?? "");
  }, { timeoutMs: 10_000, what: "the relay to record the returned message" });

  // A connection loss makes both services reconnect and redeclare the binding.
  await closeConnections(stack.vhost);
  const code = await codeFor(stack, phone, "signup", mark, 20_000);
  const verify = await rpc(stack.authUrl, VERIFY, { phone_number: phone, otp: code }, { headers });
  assert.equal(verify.code, "ok", JSON.stringify(verify.json));
  // The returned row went out; the events the verify itself enqueued follow it.
  await pollUntil(async () => {
    const [left] = await stack.sql<{ n: number }[]>`select count(*)::int as n from auth.outbox`;
    return left!.n === 0;
  }, { timeoutMs: 10_000, what: "the outbox to drain" });
  await queuesSettled(stack.vhost);
}
