// What otp-service reports of each issue and provider call through the telemetry port:
// codes sent and refused by reason and country, provider calls by outcome. The store,
// limits and provider are in-memory doubles.
import assert from "node:assert/strict";
import { HmacKey } from "../shared/crypto.ts";
import type { Admission, Limits } from "../shared/limits/engine.ts";
import { REASONS } from "../shared/limits/rules.ts";
import type { Rule } from "../shared/limits/rules.ts";
import { createLogger } from "../shared/log.ts";
import { SMS_NUMBER_TYPES } from "../shared/phone.ts";
import type { SmsDestinationPolicy } from "../shared/phone.ts";
import { RecordingTelemetry } from "../shared/telemetry.ts";
import { testIssuerSettings } from "./issuer_fixture.ts";
import { ObservedIssuer } from "./observed.ts";
import { instrumentedSms, providerOutcome } from "./sms/instrumented.ts";
import { SmsError } from "./sms/sender.ts";
import type { SmsSender } from "./sms/sender.ts";
import type { CodeRequest, OtpStore, RequestState } from "./store.ts";

function store(): OtpStore {
  const requests = new Map<string, RequestState>();
  return {
    find: (id) => Promise.resolve(requests.get(id) ?? null),
    open(r, ttl) {
      const now = new Date();
      const state: RequestState = {
        status: "pending",
        attempts: 0,
        challenge: {
          challengeId: r.requestId,
          issuedAt: now,
          expiresAt: new Date(now.getTime() + ttl * 1000),
        },
      };
      requests.set(r.requestId, state);
      return Promise.resolve({ created: true, state });
    },
    beginAttempt(id, max) {
      const s = requests.get(id)!;
      if (s.attempts >= max) return Promise.resolve(false);
      s.attempts++;
      return Promise.resolve(true);
    },
    finish(id, status) {
      requests.get(id)!.status = status;
      return Promise.resolve();
    },
    audit: () => Promise.resolve(),
    sweep: () => Promise.resolve(),
  };
}

/** Admits everything while the budget lasts. */
function budget(places: number): Limits {
  return {
    admit(rules: readonly Rule[]): Promise<Admission> {
      if (rules.some((r) => r.reason === "budget") && places-- <= 0) {
        return Promise.resolve({
          admitted: false,
          reason: "budget",
          message: REASONS.budget,
          retryAfterSeconds: 60,
        });
      }
      return Promise.resolve({ admitted: true, reservation: { rules, at: 1 } });
    },
    refund: () => Promise.resolve(),
  };
}

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
    store(),
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
    budget(10),
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
  const spent = await observed(t, budget(0), provider([]));
  assert.equal((await spent.issue(request())).kind, "limited");
  // A UK number outside the allowed types: only mobiles here, and this one is fixed-line.
  const mobilesOnly = await observed(t, budget(10), provider([]), ["MOBILE"]);
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
