// GET /metrics on both real services: the exposition parses as Prometheus text, the
// catalogue's counters move with a signup, a verify, a refused send and a wrong code,
// and no label value carries a number, an address or a token.
import assert from "node:assert/strict";
import { pollUntil } from "../shared/async.ts";
import { parsePrometheusText, sampleValue, sensitiveLabels } from "../shared/prometheus_text.ts";
import type { Exposition } from "../shared/prometheus_text.ts";
import { EXCHANGE, OTP_ROUTING_KEY } from "../shared/topology.ts";
import { RawAmqp } from "../testing/broker.ts";
import { rpc, SIGNUP, VERIFY } from "../testing/rpc.ts";
import { codeFor } from "../testing/sms_codes.ts";
import { randomPhone, startStack } from "../testing/stack.ts";

const stack = await startStack();

Deno.test.afterAll?.(() => stack.stop());

async function scrape(baseUrl: string): Promise<Exposition> {
  const res = await fetch(`${baseUrl}/metrics`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
  return parsePrometheusText(await res.text());
}

function wrongCodeFor(code: string): string {
  return code.split("").map((d) => String((Number(d) + 1) % 10)).join("");
}

Deno.test("metrics move with a signup, a verify, a refused send and a wrong code", async () => {
  const auth0 = await scrape(stack.authUrl);
  const otp0 = await scrape(stack.otpUrl);
  const alice = randomPhone();
  let bob = randomPhone();
  while (bob === alice) bob = randomPhone();

  // Alice signs up and verifies.
  let mark = stack.otp.lines.length;
  assert.equal((await rpc(stack.authUrl, SIGNUP, { phone_number: alice })).code, "ok");
  const code = await codeFor(stack, alice, "signup", mark);
  assert.equal((await rpc(stack.authUrl, VERIFY, { phone_number: alice, otp: code })).code, "ok");

  // Bob signs up, asks again at once (refused: cooldown) and enters a wrong code.
  mark = stack.otp.lines.length;
  assert.equal((await rpc(stack.authUrl, SIGNUP, { phone_number: bob })).code, "ok");
  assert.equal(
    (await rpc(stack.authUrl, SIGNUP, { phone_number: bob })).code,
    "resource_exhausted",
  );
  const bobCode = await codeFor(stack, bob, "signup", mark);
  const wrong = await rpc(stack.authUrl, VERIFY, { phone_number: bob, otp: wrongCodeFor(bobCode) });
  assert.equal(wrong.code, "unauthenticated");

  const auth1 = await scrape(stack.authUrl);
  const grew = (before: Exposition, after: Exposition, name: string, l: Record<string, string>) =>
    sampleValue(after, name, l) - sampleValue(before, name, l);
  const rpcs = { rpc_service: "auth.v1.AuthService", rpc_method: "SignupWithPhoneNumber" };
  assert.equal(grew(auth0, auth1, "rpc_server_requests_total", { ...rpcs, code: "ok" }), 2);
  assert.equal(
    grew(auth0, auth1, "rpc_server_requests_total", { ...rpcs, code: "resource_exhausted" }),
    1,
  );
  assert.equal(
    grew(auth0, auth1, "rpc_server_duration_seconds_count", { ...rpcs, code: "ok" }),
    2,
  );
  const us = { purpose: "signup", country: "US" };
  assert.equal(grew(auth0, auth1, "otp_codes_requested_total", us), 2);
  assert.equal(
    grew(auth0, auth1, "otp_codes_refused_total", { reason: "cooldown", country: "US" }),
    1,
  );
  assert.equal(grew(auth0, auth1, "otp_codes_verified_total", us), 1);
  assert.equal(
    grew(auth0, auth1, "otp_code_checks_total", { purpose: "signup", outcome: "ok" }),
    1,
  );
  assert.equal(
    grew(auth0, auth1, "otp_code_checks_total", { purpose: "signup", outcome: "wrong" }),
    1,
  );
  assert.equal(grew(auth0, auth1, "auth_sessions_created_total", { origin: "verify" }), 1);

  // otp-service counted both codes it sent and both provider calls.
  const otp1 = await scrape(stack.otpUrl);
  assert.equal(grew(otp0, otp1, "otp_codes_sent_total", us), 2);
  assert.equal(
    grew(otp0, otp1, "sms_provider_results_total", { provider: "console", outcome: "accepted" }),
    2,
  );
  assert.ok(sampleValue(otp1, "sms_budget_used") >= 2);
  assert.ok(sampleValue(otp1, "sms_budget_limit") > 0);

  // The outboxes drain: depth and oldest age fall back to 0.
  for (const url of [stack.authUrl, stack.otpUrl]) {
    await pollUntil(async () => sampleValue(await scrape(url), "outbox_messages") === 0, {
      timeoutMs: 10_000,
      what: "outbox drained",
    });
    const e = await scrape(url);
    assert.ok(e.families.has("outbox_oldest_age_seconds"));
    assert.equal(sampleValue(e, "outbox_oldest_age_seconds"), 0);
    assert.ok(e.families.has("bus_redeliveries_total"));
    assert.ok(e.families.has("bus_dead_letters_total"));
  }

  for (const e of [auth1, otp1]) {
    assert.deepEqual(sensitiveLabels(e), []);
    const text = e.samples.map((s) => JSON.stringify(s.labels)).join("\n");
    for (const phone of [alice, bob]) assert.ok(!text.includes(phone.slice(1)));
    assert.ok(!text.includes("127.0.0.1"));
  }
});

Deno.test("a poison message on otp_queue counts as a dead letter on otp-service", async () => {
  const before = await scrape(stack.otpUrl);
  const labels = { queue: "otp_queue", reason: "poison" };
  const raw = await RawAmqp.open(stack.amqpUrl);
  try {
    await raw.publish(EXCHANGE, OTP_ROUTING_KEY, new Uint8Array([0xff, 0x01, 0x02]), {
      messageId: crypto.randomUUID(),
      type: "bus.v1.OtpRequested",
      contentType: "application/x-protobuf",
    });
  } finally {
    await raw.close();
  }
  await pollUntil(
    async () =>
      sampleValue(await scrape(stack.otpUrl), "bus_dead_letters_total", labels) >
        sampleValue(before, "bus_dead_letters_total", labels),
    { timeoutMs: 10_000, what: "dead letter counted" },
  );
});

Deno.test("a call refused by a header check before its body is read is counted too", async () => {
  const labels = {
    rpc_service: "otp.v1.OtpService",
    rpc_method: "GenerateOtp",
    code: "unauthenticated",
  };
  const before = sampleValue(await scrape(stack.otpUrl), "rpc_server_requests_total", labels);
  const r = await rpc(stack.otpUrl, "otp.v1.OtpService/GenerateOtp", {
    phone_number: randomPhone(),
  });
  assert.equal(r.code, "unauthenticated");
  const after = sampleValue(await scrape(stack.otpUrl), "rpc_server_requests_total", labels);
  assert.equal(after - before, 1);
});
