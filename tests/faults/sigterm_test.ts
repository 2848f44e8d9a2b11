// Fault 7: SIGTERM under load. Both services get SIGTERM while clients keep signing up
// and otp-service is working through the queue. Each drains what it holds and exits 0
// within a bound; every signup that got a 200 is either still in the outbox or was
// published, and after a restart each of those numbers gets its challenge and exactly
// one SMS (a graceful stop causes no duplicate).
import assert from "node:assert/strict";
import { fromBinary } from "@bufbuild/protobuf";
import { OtpRequestedSchema } from "../../shared/gen/bus/v1/bus_pb.ts";
import { EXCHANGE, OTP_ROUTING_KEY } from "../../shared/topology.ts";
import { parseConsoleSmsLine } from "../../otp_service/sms/console_sender.ts";
import { clientHeaders, rpc, SIGNUP } from "../../testing/rpc.ts";
import type { RpcResult } from "../../testing/rpc.ts";
import { onFreshStack } from "../../testing/faults.ts";
import { queuesSettled, RawAmqp } from "../../testing/broker.ts";
import { delay, pollUntil } from "../../shared/async.ts";
import { randomPhone } from "../../testing/stack.ts";
import type { Stack } from "../../testing/stack.ts";
import type { Service } from "../../testing/processes.ts";

const WORKERS = 16;
const LOAD_BEFORE_MS = 1_500;
/** Both services must be gone this long after SIGTERM. */
const EXIT_BOUND_MS = 10_000;
const TAP = "fault_tap";

Deno.test({
  name:
    "SIGTERM under load: both services drain and exit 0 within a bound, and no accepted signup is lost (each later gets one challenge and one SMS)",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: () =>
    onFreshStack(scenario, {
      beforeStart: async (url) => {
        const bus = await RawAmqp.open(url);
        await bus.tap(TAP, EXCHANGE, [OTP_ROUTING_KEY]);
        await bus.close();
      },
    }),
});

async function scenario(stack: Stack, services: Service[]) {
  const accepted = new Set<string>();
  const outcomes: (RpcResult & { started: number; ended: number })[] = [];
  let loading = true;
  const worker = async () => {
    while (loading) {
      const phone = randomPhone();
      const started = performance.now();
      const r = await rpc(stack.authUrl, SIGNUP, { phone_number: phone }, {
        headers: clientHeaders(),
        timeoutMs: EXIT_BOUND_MS,
      });
      outcomes.push({ ...r, started, ended: performance.now() });
      if (r.code === "ok") accepted.add(phone);
      else await delay(20); // refused once the listener is gone; do not spin
    }
  };
  const workers = Promise.all(Array.from({ length: WORKERS }, worker));
  await delay(LOAD_BEFORE_MS);

  const [auth, otp] = [stack.auth, stack.otp];
  const signalled = performance.now();
  const [authExit, otpExit] = await Promise.all([
    auth.kill("SIGTERM", 30_000).then((s) => ({ s, ms: performance.now() - signalled })),
    otp.kill("SIGTERM", 30_000).then((s) => ({ s, ms: performance.now() - signalled })),
  ]);
  loading = false;
  await workers;

  assert.equal(authExit.s.code, 0, "auth-service stopped cleanly");
  assert.equal(otpExit.s.code, 0, "otp-service stopped cleanly");
  assert.ok(authExit.ms < EXIT_BOUND_MS, `auth-service took ${Math.round(authExit.ms)} ms`);
  assert.ok(otpExit.ms < EXIT_BOUND_MS, `otp-service took ${Math.round(otpExit.ms)} ms`);
  assert.ok(auth.lines.some((l) => l.includes('"msg":"stopped cleanly"')));
  assert.ok(otp.lines.some((l) => l.includes('"msg":"stopped cleanly"')));

  // Requests in flight at the signal were answered, not dropped; none failed inside.
  const drained = outcomes.filter((o) => o.started < signalled && o.ended > signalled);
  assert.ok(drained.length > 0, "some requests were in flight at SIGTERM");
  assert.ok(
    drained.every((o) => o.code === "ok" || o.code === "network"),
    JSON.stringify(drained.filter((o) => o.code !== "ok").slice(0, 3)),
  );
  assert.deepEqual(
    outcomes.filter((o) => !["ok", "network"].includes(o.code)).slice(0, 3),
    [],
    "only successes, or refusals once the listener closed",
  );
  assert.ok(accepted.size >= WORKERS, `only ${accepted.size} signups accepted`);

  // Before anything restarts: each accepted request is in auth's outbox or was published.
  const pending = new Set(
    (await stack.sql<{ payload: Uint8Array }[]>`
      select payload from auth.outbox where type = ${"bus.v1.OtpRequested"}`).map((r) =>
      fromBinary(OtpRequestedSchema, new Uint8Array(r.payload)).phoneNumber
    ),
  );
  const bus = await RawAmqp.open(stack.amqpUrl);
  const published = new Set<string>();
  try {
    for (const m of await bus.take(TAP, accepted.size, 5_000)) {
      published.add(fromBinary(OtpRequestedSchema, new Uint8Array(m.content)).phoneNumber);
    }
  } finally {
    await bus.close();
  }
  console.log(JSON.stringify({
    accepted: accepted.size,
    in_flight_at_sigterm: drained.length,
    auth_exit_ms: Math.round(authExit.ms),
    otp_exit_ms: Math.round(otpExit.ms),
    left_in_outbox: pending.size,
  }));
  const lost = [...accepted].filter((p) => !pending.has(p) && !published.has(p));
  assert.deepEqual(lost, [], "accepted but neither in the outbox nor published");

  // After a restart every accepted number gets its challenge, and exactly one SMS.
  services.push(await stack.startOtp());
  services.push(await stack.startAuth());
  await pollUntil(async () => {
    const [r] = await stack.sql<{ n: number }[]>`
      select count(*)::int as n from auth.challenges where phone_number in ${
      stack.sql([...accepted])
    }`;
    return r!.n === accepted.size;
  }, {
    timeoutMs: 30_000,
    what: `challenges for all ${accepted.size} accepted signups`,
    intervalMs: 250,
  });
  const sms = new Map<string, number>();
  for (const line of [...otp.lines, ...stack.otp.lines]) {
    const m = parseConsoleSmsLine(line);
    if (m) sms.set(m.to, (sms.get(m.to) ?? 0) + 1);
  }
  const wrongCount = [...accepted].filter((p) => sms.get(p) !== 1);
  assert.deepEqual(wrongCount.map((p) => [p, sms.get(p) ?? 0]), [], "one SMS per accepted signup");
  await queuesSettled(stack.vhost);
}
