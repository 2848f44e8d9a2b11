// What otp-service reports of each issue and provider call through the telemetry port:
// codes sent and refused by reason and country, provider calls by outcome. The store,
// limits and provider are in-memory doubles.
import assert from "node:assert/strict";
import { HmacKey } from "../shared/crypto.ts";
import type { Limits } from "../shared/limits/engine.ts";
import { createLogger } from "../shared/log.ts";
import { SMS_NUMBER_TYPES } from "../shared/phone.ts";
import type { SmsDestinationPolicy } from "../shared/phone.ts";
import { RecordingTelemetry } from "../shared/telemetry.ts";
import { BudgetOnlyLimits, MemoryOtpStore, testIssuerSettings } from "./issuer_fixture.ts";
import { ObservedIssuer } from "./observed.ts";
import { instrumentedSms, providerOutcome } from "./sms/instrumented.ts";
import { SmsError } from "./sms/sender.ts";
import type { SmsSender } from "./sms/sender.ts";
import type { CodeRequest } from "./store.ts";

function provider(replies: (Error | "ok")[]): SmsSender {
  return {
    name: "twilio",
    send: () => {
      const r = replies.shift() ?? "ok";
      return r === "ok" ? Promise.resolve({ providerId: "p" }) : Promise.reject(r);
    },
  };
}

function observed(
  t: RecordingTelemetry,
  limits: Limits,
  sms: SmsSender,
  types: SmsDestinationPolicy["allowedNumberTypes"] = SMS_NUMBER_TYPES,
) {
  const key = HmacKey.import("k".repeat(32));
  return ObservedIssuer.create(
    t,
    new MemoryOtpStore(limits),
    limits,
    instrumentedSms(sms, t),
    {
      mac: key,
      code: key,
    },
    testIssuerSettings(types),
    createLogger("test", "error"),
  );
}

const request = (phoneNumber = "+14155550123"): CodeRequest => ({
  requestId: crypto.randomUUID(),
  phoneNumber,
  purpose: "signup",
  clientAddress: "198.51.100.1",
  traceId: "",
});

Deno.test("a sent code is counted by purpose and country, each provider call by outcome", async () => {
  const t = new RecordingTelemetry();
  const issuer = await observed(
    t,
    new BudgetOnlyLimits(10),
    provider([new SmsError("twilio: timed out", false)]),
  );
  assert.equal((await issuer.issue(request())).kind, "sent");
  assert.deepEqual(t.of("codeSent"), [["signup", "US"]]);
  assert.deepEqual(t.of("providerResult").map(([p, o]) => [p, o]), [
    ["twilio", "timeout"],
    ["twilio", "accepted"],
  ]);
  assert.deepEqual(t.of("codeRefused"), []);
});

Deno.test("a spent budget and a refused destination are refusals with their reason", async () => {
  const t = new RecordingTelemetry();
  const spent = await observed(t, new BudgetOnlyLimits(0), provider([]));
  assert.equal((await spent.issue(request())).kind, "limited");
  // A UK number outside the allowed types: only mobiles here, and this one is fixed-line.
  const mobilesOnly = await observed(t, new BudgetOnlyLimits(10), provider([]), ["MOBILE"]);
  assert.equal((await mobilesOnly.issue(request("+442079460000"))).kind, "destination");
  assert.deepEqual(t.of("codeRefused"), [["budget", "US"], ["number_type_not_allowed", "GB"]]);
  assert.deepEqual(t.of("codeSent"), []);
  assert.deepEqual(t.of("providerResult"), []);
});

Deno.test("provider errors are told apart: permanent, timed out, other", () => {
  assert.equal(providerOutcome(new SmsError("twilio: HTTP 400", true, 21211, 400)), "rejected");
  assert.equal(providerOutcome(new SmsError("twilio: timed out after 10000 ms", false)), "timeout");
  assert.equal(providerOutcome(new SmsError("twilio: HTTP 503", false, 20503, 503)), "failed");
  assert.equal(providerOutcome(new TypeError("x")), "failed");
});
