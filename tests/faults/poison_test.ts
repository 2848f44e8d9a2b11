// Fault 4: poison messages. Garbage bytes and a wrong `type` go straight to the
// dead-letter queue on their first delivery; a message whose handler always throws is
// redelivered at most up to the queue's delivery limit and then dead-lettered; valid
// signups keep flowing the whole time.
import assert from "node:assert/strict";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { OtpIssuedSchema, OtpPurpose } from "../../shared/gen/bus/v1/bus_pb.ts";
import { PROTOBUF_CONTENT_TYPE } from "../../shared/messages.ts";
import {
  AUTH_QUEUE,
  AUTH_ROUTING_KEY,
  EXCHANGE,
  OTP_QUEUE,
  OTP_ROUTING_KEY,
} from "../../shared/topology.ts";
import { clientHeaders, rpc, SIGNUP, VERIFY } from "../../testing/rpc.ts";
import { jsonLogs } from "../../testing/processes.ts";
import { onFreshStack } from "../../testing/faults.ts";
import { queuesSettled, RawAmqp } from "../../testing/broker.ts";
import { codeFor } from "../../testing/sms_codes.ts";
import { randomPhone } from "../../testing/stack.ts";
import type { Stack } from "../../testing/stack.ts";

const DELIVERY_LIMIT = 3;

Deno.test({
  name:
    "poison messages (garbage bytes, wrong type, always-throwing handler) end in the DLQ within the delivery limit while valid signups keep flowing",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: () =>
    onFreshStack(async (stack) => {
      const bus = await RawAmqp.open(stack.amqpUrl);
      try {
        await scenario(stack, bus);
      } finally {
        await bus.close();
      }
    }, { env: { AMQP_DELIVERY_LIMIT: String(DELIVERY_LIMIT) } }),
});

async function scenario(stack: Stack, bus: RawAmqp) {
  const now = new Date();
  const stamp = Math.floor(now.getTime() / 1000);
  // 1. Bytes that are no protobuf at all, claiming to be an OtpRequested.
  await bus.publish(EXCHANGE, OTP_ROUTING_KEY, new Uint8Array([0xff, 0xff, 0xff, 0x07, 0x01]), {
    messageId: "poison-garbage",
    type: "bus.v1.OtpRequested",
    contentType: PROTOBUF_CONTENT_TYPE,
    timestamp: stamp,
  });
  // 2. A type nobody handles.
  await bus.publish(EXCHANGE, OTP_ROUTING_KEY, new TextEncoder().encode("{}"), {
    messageId: "poison-wrong-type",
    type: "bus.v1.SomethingElse",
    contentType: PROTOBUF_CONTENT_TYPE,
    timestamp: stamp,
  });
  // 3. A perfectly valid OtpIssued whose handler throws on every delivery: the stack's
  // database refuses any challenge for this number (an injected fault, not a
  // transient one), so no validation change can turn it into an early dead letter.
  const doomed = randomPhone();
  await stack.sql.unsafe(`
    create function public.fault_refuse_challenge() returns trigger language plpgsql as $$
    begin
      if new.phone_number = '${doomed}' then raise exception 'injected fault'; end if;
      return new;
    end $$`);
  await stack.sql.unsafe(`create trigger fault_refuse_challenge before insert on auth.challenges
    for each row execute function public.fault_refuse_challenge()`);
  const throwerId = `poison-throws-${crypto.randomUUID()}`;
  const issued = create(OtpIssuedSchema, {
    requestId: crypto.randomUUID(),
    phoneNumber: doomed,
    purpose: OtpPurpose.SIGNUP,
    codeMac: new Uint8Array(32),
    issuedAt: timestampFromDate(now),
    expiresAt: timestampFromDate(new Date(now.getTime() + 60_000)),
    traceId: "poison-trace",
  });
  await bus.publish(EXCHANGE, AUTH_ROUTING_KEY, toBinary(OtpIssuedSchema, issued), {
    messageId: throwerId,
    type: OtpIssuedSchema.typeName,
    contentType: PROTOBUF_CONTENT_TYPE,
    timestamp: stamp,
  });

  // Valid traffic meanwhile: three users sign up and verify while the thrower cycles.
  const users = [randomPhone(), randomPhone(), randomPhone()];
  await Promise.all(users.map(async (phone) => {
    const headers = clientHeaders();
    const mark = stack.otp.lines.length;
    const signup = await rpc(stack.authUrl, SIGNUP, { phone_number: phone }, { headers });
    assert.equal(signup.code, "ok", JSON.stringify(signup.json));
    const code = await codeFor(stack, phone, "signup", mark, 20_000);
    const verify = await rpc(stack.authUrl, VERIFY, { phone_number: phone, otp: code }, {
      headers,
    });
    assert.equal(verify.code, "ok", JSON.stringify(verify.json));
  }));

  const otpDlq = await bus.take(`${OTP_QUEUE}.dlq`, 2, 15_000);
  const authDlq = await bus.take(`${AUTH_QUEUE}.dlq`, 1, 30_000);
  assert.deepEqual(
    otpDlq.map((m) => m.properties.messageId).sort(),
    ["poison-garbage", "poison-wrong-type"],
  );
  for (const m of otpDlq) {
    // Rejected by the consumer on sight, not worn down by redeliveries.
    assert.equal(m.properties.headers?.["x-first-death-reason"], "rejected");
  }
  assert.equal(authDlq.length, 1, "the always-throwing message reached the auth DLQ");
  assert.equal(authDlq[0]!.properties.messageId, throwerId);
  assert.equal(authDlq[0]!.properties.headers?.["x-first-death-reason"], "delivery_limit");
  // The body is kept intact for an operator to inspect or replay.
  assert.deepEqual(new Uint8Array(authDlq[0]!.content), toBinary(OtpIssuedSchema, issued));

  // Each failed attempt rolled back completely.
  const [inbox] = await stack.sql<{ n: number }[]>`
    select count(*)::int as n from auth.inbox where message_id = ${throwerId}`;
  assert.equal(inbox!.n, 0);

  // The handler ran once per delivery, and deliveries stopped at the limit.
  const failures = jsonLogs(stack.auth.lines).filter((l) =>
    l.msg === "handler failed" && l.message_id === throwerId
  );
  assert.ok(failures.length >= 2, `handler ran ${failures.length} times; expected retries`);
  assert.ok(
    failures.length <= DELIVERY_LIMIT + 1,
    `handler ran ${failures.length} times; limit ${DELIVERY_LIMIT}`,
  );

  // Nothing is stuck: work queues empty and consumed, nothing else dead-lettered.
  await queuesSettled(stack.vhost);
}
