// Fault 3: auth-service dies (SIGKILL) after its signup transaction committed but
// before the relay published the request. The broker is stopped first, so the request
// is provably only in the outbox when the process dies. A fresh auth-service, started
// while the broker is still down, publishes it once the broker is back; the code
// arrives and verifies. On the way, the request id given by the client is followed
// through the logs of both services and the bus messages' correlation ids.
import assert from "node:assert/strict";
import { fromBinary } from "@bufbuild/protobuf";
import { OtpRequestedSchema } from "../../shared/gen/bus/v1/bus_pb.ts";
import { AUTH_ROUTING_KEY, EXCHANGE, OTP_ROUTING_KEY } from "../../shared/topology.ts";
import { clientHeaders, rpc, SIGNUP, VERIFY } from "../../testing/rpc.ts";
import { jsonLogs } from "../../testing/processes.ts";
import type { Service } from "../../testing/processes.ts";
import { onFreshStack } from "../../testing/faults.ts";
import { RawAmqp, startBroker, stopBroker } from "../../testing/broker.ts";
import { pollUntil } from "../../shared/async.ts";
import { codeFor } from "../../testing/sms_codes.ts";
import { randomPhone } from "../../testing/stack.ts";
import type { Stack } from "../../testing/stack.ts";

const TAP = "fault_tap";

Deno.test({
  name:
    "auth-service killed between its database commit and its publish: the request is published after restart and its code verifies (request id traced end to end)",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: () =>
    onFreshStack(scenario, {
      // A durable tap on the exchange records every bus message with its properties.
      beforeStart: async (url) => {
        const bus = await RawAmqp.open(url);
        await bus.tap(TAP, EXCHANGE, [OTP_ROUTING_KEY, AUTH_ROUTING_KEY]);
        await bus.close();
      },
    }),
});

async function scenario(stack: Stack, services: Service[]) {
  const phone = randomPhone();
  const clientRequestId = `fault-trace-${crypto.randomUUID()}`;
  const headers = clientHeaders({ "x-request-id": clientRequestId });
  const firstAuth = stack.auth;

  await stopBroker();
  const signup = await rpc(stack.authUrl, SIGNUP, { phone_number: phone }, { headers });
  assert.equal(signup.code, "ok", "signup succeeds with the broker down");
  // The server names each request itself; the client's X-Request-Id never replaces it.
  // Log lines are written in batches: wait for this one rather than read too early.
  await firstAuth.waitForLine((l) => l.includes('"signup queued code"'));
  const queued = jsonLogs(firstAuth.lines).filter((l) => l.msg === "signup queued code");
  assert.equal(queued.length, 1);
  const requestId = String(queued[0]!.request_id);
  assert.notEqual(requestId, clientRequestId);

  // The commit happened: the request sits in the outbox, unpublished.
  const rows = await stack.sql<{ payload: Uint8Array; correlation_id: string }[]>`
    select payload, correlation_id from auth.outbox where type = ${"bus.v1.OtpRequested"}`;
  assert.equal(rows.length, 1);
  assert.equal(fromBinary(OtpRequestedSchema, new Uint8Array(rows[0]!.payload)).phoneNumber, phone);
  assert.equal(rows[0]!.correlation_id, requestId);
  // Readiness reports the missing dependency.
  const ready = await fetch(`${stack.authUrl}/readyz`);
  assert.equal(ready.status, 503);
  assert.equal((await ready.json()).checks.broker, false);

  const killed = await firstAuth.kill("SIGKILL");
  assert.equal(killed.signal, "SIGKILL");
  const [still] = await stack.sql<{ n: number }[]>`
    select count(*)::int as n from auth.outbox where type = ${"bus.v1.OtpRequested"}`;
  assert.equal(still!.n, 1, "the request outlives the process");

  // A new auth-service starts without the broker, then publishes once it is back.
  const mark = stack.otp.lines.length;
  services.push(await stack.startAuth());
  await startBroker();
  const code = await codeFor(stack, phone, "signup", mark, 30_000);
  const verify = await rpc(stack.authUrl, VERIFY, { phone_number: phone, otp: code }, { headers });
  assert.equal(verify.code, "ok", JSON.stringify(verify.json));
  await pollUntil(async () => {
    const [r] = await stack.sql<{ n: number }[]>`select count(*)::int as n from auth.outbox`;
    return r!.n === 0;
  }, { timeoutMs: 10_000, what: "the outbox to drain" });

  // The bus messages carry the request id and the properties the contract requires.
  const bus = await RawAmqp.open(stack.amqpUrl);
  try {
    const tapped = await bus.take(TAP, 2, 10_000);
    assert.deepEqual(tapped.map((m) => m.properties.type).sort(), [
      "bus.v1.OtpIssued",
      "bus.v1.OtpRequested",
    ]);
    for (const m of tapped) {
      assert.equal(m.properties.correlationId, requestId, `${m.properties.type} correlation id`);
      assert.equal(m.properties.deliveryMode, 2, "persistent");
      assert.equal(m.properties.contentType, "application/x-protobuf");
      assert.ok(m.properties.messageId, "message id");
      assert.ok(typeof m.properties.timestamp === "number" && m.properties.timestamp > 0);
    }
  } finally {
    await bus.close();
  }

  // And the same id runs through the logs: RPC -> otp-service -> back to auth-service.
  const said = (lines: string[], msg: string) =>
    jsonLogs(lines).some((l) => l.msg === msg && l.request_id === requestId);
  assert.ok(said(firstAuth.lines, "signup queued code"), "auth logged the signup");
  assert.ok(said(stack.otp.lines, "code sent"), "otp logged the send");
  assert.ok(said(stack.auth.lines, "challenge received"), "the new auth logged the challenge");
}
