// The issuer's decisions with the store, limits and provider replaced by in-memory
// doubles: what a budget refusal, a permanent or an unsure provider failure and a
// redelivery do. The limits themselves are tested against PostgreSQL.
import assert from "node:assert/strict";
import { HmacKey } from "../shared/crypto.ts";
import { REASONS } from "../shared/limits/rules.ts";
import { createLogger } from "../shared/log.ts";
import { OtpIssuer } from "./issuer.ts";
import type { IssuerSettings } from "./issuer.ts";
import { BudgetOnlyLimits, MemoryOtpStore, testIssuerSettings } from "./issuer_fixture.ts";
import { SmsError } from "./sms/sender.ts";
import type { SmsMessage, SmsSender } from "./sms/sender.ts";
import type { CodeRequest } from "./store.ts";

function provider(replies: (Error | "ok")[]): SmsSender & { sent: SmsMessage[] } {
  const sent: SmsMessage[] = [];
  return {
    name: "stub",
    sent,
    send(m) {
      sent.push(m);
      const r = replies.shift() ?? "ok";
      return r === "ok" ? Promise.resolve({ providerId: "p" }) : Promise.reject(r);
    },
  };
}

/** The issuer over `store`, with the limits `store` charges its admissions to. */
function issuer(store: MemoryOtpStore, sms: SmsSender, settings: Partial<IssuerSettings> = {}) {
  const key = HmacKey.import("k".repeat(32));
  return new OtpIssuer(
    store,
    store.limits,
    sms,
    { mac: key, code: key },
    { ...testIssuerSettings(), ...settings },
    createLogger("test", "error"),
  );
}

const request = (): CodeRequest => ({
  requestId: crypto.randomUUID(),
  phoneNumber: "+14155550123",
  purpose: "signup",
  clientAddress: "198.51.100.1",
  traceId: "",
});
const timeout = () => new SmsError("twilio: timed out", false);
const invalid = () => new SmsError("twilio: HTTP 400", true, 21211, 400);

Deno.test("a spent budget refuses the request in its admission: no call, nothing to give back, recorded as refused", async () => {
  const limits = new BudgetOnlyLimits(0);
  const store = new MemoryOtpStore(limits);
  const sms = provider([]);
  const r = request();
  const out = await issuer(store, sms).issue(r);
  assert.deepEqual(out, {
    kind: "limited",
    reason: "budget",
    message: REASONS.budget,
    retryAfterSeconds: 60,
  });
  assert.equal(sms.sent.length, 0);
  assert.equal(limits.refunds, 0);
  assert.equal(store.requests.get(r.requestId)!.status, "refused");
  assert.equal(store.published.length, 0);
});

Deno.test("a request with no time left makes no call and gives back the budget charge held for its first call", async () => {
  const limits = new BudgetOnlyLimits(10);
  const store = new MemoryOtpStore(limits);
  const sms = provider([]);
  const r = request();
  const out = await issuer(store, sms, { ttlSeconds: 0 }).issue(r);
  assert.deepEqual(out, { kind: "unconfirmed" });
  assert.equal(sms.sent.length, 0);
  assert.equal(limits.refunds, 1);
  assert.equal(store.published.length, 0);
});

Deno.test("a permanent refusal on the first call publishes nothing", async () => {
  const store = new MemoryOtpStore();
  const sms = provider([invalid()]);
  const out = await issuer(store, sms).issue(request());
  assert.deepEqual(out, { kind: "undeliverable" });
  assert.equal(store.published.length, 0);
});

Deno.test("a permanent refusal after a timeout is unconfirmed, and the challenge is published", async () => {
  const store = new MemoryOtpStore();
  const sms = provider([timeout(), invalid()]);
  const out = await issuer(store, sms).issue(request());
  assert.deepEqual(out, { kind: "unconfirmed" });
  assert.equal(sms.sent.length, 2);
  assert.ok(store.published.length >= 1, "the code may have arrived: it must verify");
});

Deno.test("calls stop at maxAttempts and at the budget, and every call carries one code", async () => {
  for (const [budget, calls] of [[10, 3], [2, 2]] as const) {
    const store = new MemoryOtpStore(new BudgetOnlyLimits(budget));
    const sms = provider([timeout(), timeout(), timeout(), timeout()]);
    const out = await issuer(store, sms).issue(request());
    assert.deepEqual(out, { kind: "unconfirmed" });
    assert.equal(sms.sent.length, calls);
    assert.ok(sms.sent.every((m) => m.body === sms.sent[0]!.body));
  }
});

Deno.test("a redelivery continues the persisted count and never exceeds maxAttempts", async () => {
  const store = new MemoryOtpStore();
  const r = request();
  const first = provider([timeout(), timeout(), timeout()]);
  await issuer(store, first).issue(r);
  store.requests.get(r.requestId)!.status = "pending"; // as if the process died before finishing
  const again = provider([]);
  const out = await issuer(store, again).issue(r);
  assert.deepEqual(out, { kind: "unconfirmed" });
  assert.equal(again.sent.length, 0);
});

Deno.test("every provider call comes after its budget charge and then its recorded attempt", async () => {
  // The order the budget's exactness rests on: admissions commit without waiting for the
  // disk, and the attempt's synchronous commit, before the call, makes them durable.
  const events: string[] = [];
  const limits = new BudgetOnlyLimits();
  const store = new MemoryOtpStore(limits);
  const begin = store.beginAttempt.bind(store);
  store.beginAttempt = async (...args) => {
    const counted = await begin(...args);
    events.push(counted ? "attempt" : "no attempt");
    return counted;
  };
  const admit = limits.admit.bind(limits);
  limits.admit = (rules) => {
    const budget = rules.some((r) => r.reason === "budget");
    events.push(rules.length === 1 ? "budget" : budget ? "send limits and budget" : "send limits");
    return admit(rules);
  };
  const sms = provider([timeout(), timeout(), "ok"]);
  const send = sms.send.bind(sms);
  sms.send = (m) => {
    events.push("call");
    return send(m);
  };
  assert.deepEqual(await issuer(store, sms).issue(request()), { kind: "sent" });
  // The first call's budget is charged with the send limits, in one admission.
  assert.deepEqual(events, [
    "send limits and budget",
    "attempt",
    "call",
    ...Array.from({ length: 2 }, () => ["budget", "attempt", "call"]).flat(),
  ]);
});
