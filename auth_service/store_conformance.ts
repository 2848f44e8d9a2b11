// One behavioural suite every AuthStore and its Limits must pass, run against each
// backend (PostgreSQL, PGlite, memory) by its own test file. Time is let pass by `elapse`, which moves every
// stored time into the past, so nothing here waits on a clock.
import assert from "node:assert/strict";
import { constantTimeEqual } from "../shared/crypto.ts";
import type { OutgoingMessage } from "../shared/bus.ts";
import type { PurposeName } from "../shared/messages.ts";
import type { Limits } from "../shared/limits/engine.ts";
import { rule } from "../shared/limits/rules.ts";
import type { LimitReason } from "../shared/limits/rules.ts";
import type {
  AuditContext,
  AuthStore,
  Challenge,
  ChargeRefused,
  RedeemEffect,
  RedeemPolicy,
  SessionPolicy,
} from "./ports.ts";

export interface StoreUnderTest {
  store: AuthStore;
  /** The limits engine of the same backend. */
  limits: Limits;
  /** The store's idea of now. */
  now(): Date;
  /** Lets this many seconds pass for everything stored. */
  elapse(seconds: number): Promise<void>;
  /** The audit trail so far, oldest first, as "event:outcome" (" xN" when aggregated). */
  auditTrail(): Promise<string[]>;
  /** Message ids enqueued so far for otp-service (not events), oldest first. */
  enqueued(): Promise<string[]>;
  /** Routing keys of the events enqueued so far, oldest first. */
  events(): Promise<string[]>;
}

/** Registers one step per behaviour; `open` gives an empty store each time. */
export async function storeConformance(
  t: Deno.TestContext,
  open: () => Promise<StoreUnderTest>,
): Promise<void> {
  for (const [name, fn] of Object.entries(behaviours)) {
    await t.step(name, async () => fn(await open()));
  }
}

const PHONE = "+14155550123";
const OTHER = "+14155550124";
const who: AuditContext = { phone: PHONE, clientAddress: "192.0.2.1", requestId: "r1" };
const elsewhere: AuditContext = { ...who, clientAddress: "2001:db8:5::1" };
/** The redemption policy the suite runs under. */
export const POLICY: RedeemPolicy = {
  maxAttempts: 3,
  lockAfterFailures: 5,
  numberLockAfterFailures: 100,
  lockSeconds: 600,
  failureWindowSeconds: 600,
};
const MAC = new Uint8Array(32).fill(7);
const hash = (n: number) => new Uint8Array(32).fill(n);
const sid = (n: number) => `00000000-0000-4000-8000-${String(n).padStart(12, "0")}`;
const session = (n: number): RedeemEffect => ({
  kind: "session",
  session: {
    id: sid(n),
    tokenHash: hash(n),
    ttlSeconds: 3600,
    clientAddress: "192.0.2.1",
    userAgent: `agent ${n}`,
  },
});
const ACTIVE: SessionPolicy = { idleSeconds: 600, graceSeconds: 10 };
const userOf = async (s: StoreUnderTest, n: number, policy = ACTIVE) =>
  (await s.store.authenticate(hash(n), policy))?.user ?? null;
const r = (
  subject: string,
  limit: number,
  windowSeconds: number,
  reason: LimitReason = "address",
) => rule(reason, subject, limit, windowSeconds);

let ids = 0;
function request(): OutgoingMessage {
  return {
    exchange: "otp",
    routingKey: "otp",
    messageId: `m${++ids}-${crypto.randomUUID()}`,
    type: "bus.v1.OtpRequested",
    contentType: "application/x-protobuf",
    body: new Uint8Array([1, 2, 3]),
    timestamp: new Date(),
  };
}

function challenge(
  s: StoreUnderTest,
  o: { phone?: string; purpose?: PurposeName; ageSeconds?: number; ttlSeconds?: number } = {},
): Challenge {
  const issuedAt = new Date(s.now().getTime() - (o.ageSeconds ?? 0) * 1000);
  return {
    requestId: crypto.randomUUID(),
    phoneNumber: o.phone ?? PHONE,
    purpose: o.purpose ?? "signup",
    codeMac: MAC,
    issuedAt,
    expiresAt: new Date(issuedAt.getTime() + (o.ttlSeconds ?? 300) * 1000),
  };
}

const right = (c: Challenge) => constantTimeEqual(c.codeMac, MAC);
const wrong = () => false;

/** A user with a live code of `purpose` waiting. */
async function withChallenge(s: StoreUnderTest, purpose: PurposeName = "signup", phone = PHONE) {
  await s.store.signup(phone, request(), who);
  await s.store.saveChallenge(crypto.randomUUID(), challenge(s, { phone, purpose }));
}

/** Opens session `n` of PHONE with a login code. */
async function loginSession(s: StoreUnderTest, n: number) {
  await s.store.saveChallenge(`l${n}`, challenge(s, { purpose: "login", ageSeconds: -n }));
  const r = await s.store.redeem(PHONE, "login", POLICY, right, session(n), who);
  assert.equal(r.kind, "ok");
}

async function verifiedUser(s: StoreUnderTest, phone = PHONE, token = 1) {
  await withChallenge(s, "signup", phone);
  const r = await s.store.redeem(phone, "signup", POLICY, right, session(token), who);
  assert.equal(r.kind, "ok");
}

const admitted = async (s: StoreUnderTest, rules: ReturnType<typeof r>[]) =>
  (await s.limits.admit(rules)).admitted;

/** A refusal of the suite's 600-second address charge, with about its window to wait. */
function assertAddressRefused(o: { kind: string }): asserts o is ChargeRefused {
  assert.equal(o.kind, "refused");
  const { refusal } = o as ChargeRefused;
  assert.equal(refusal.reason, "address");
  assert.ok(
    refusal.retryAfterSeconds >= 599 && refusal.retryAfterSeconds <= 611,
    `${refusal.retryAfterSeconds}`,
  );
}

const behaviours: Record<string, (s: StoreUnderTest) => Promise<void>> = {
  async "signup keeps one unverified user and enqueues each request"(s) {
    const a = request(), b = request();
    assert.deepEqual(await s.store.signup(PHONE, a, who), { kind: "queued" });
    assert.deepEqual(await s.store.signup(PHONE, b, who), { kind: "queued" });
    assert.deepEqual(await s.enqueued(), [a.messageId, b.messageId]);
    assert.deepEqual(await s.auditTrail(), ["code_requested:signup", "code_requested:signup"]);
    assert.deepEqual(await s.store.loginTarget(PHONE, 3, who), { kind: "not_verified" });
  },

  async "signup of a verified number enqueues nothing and is audited"(s) {
    await verifiedUser(s);
    const before = (await s.enqueued()).length;
    assert.deepEqual(await s.store.signup(PHONE, request(), who), { kind: "already_verified" });
    assert.equal((await s.enqueued()).length, before);
    assert.equal((await s.auditTrail()).at(-1), "code_requested:already_verified");
  },

  async "a charged lookup counts under the limits; once refused it looks up and records nothing"(
    s,
  ) {
    await verifiedUser(s);
    const charge = [r("lookup", 2, 600)];
    const other = { ...who, phone: OTHER };
    assert.deepEqual(await s.store.loginTarget(OTHER, 3, other, { charge }), {
      kind: "not_verified",
    });
    assert.deepEqual(await s.store.loginTarget(PHONE, 3, who, { charge }), { kind: "ok" });
    const trail = await s.auditTrail();
    assert.equal(trail.at(-1), "code_requested:not_verified");
    for (const [phone, w] of [[OTHER, other], [PHONE, who]] as const) {
      assertAddressRefused(await s.store.loginTarget(phone, 3, w, { charge }));
    }
    assert.deepEqual(await s.auditTrail(), trail, "a refused lookup records nothing");
    // The same counter the limits keep for everyone else.
    assert.equal(await admitted(s, charge), false);
    await s.elapse(620);
    assert.deepEqual(await s.store.loginTarget(OTHER, 3, other, { charge }), {
      kind: "not_verified",
    });
  },

  async "concurrent charged lookups count each address exactly, and each gets its own answer"(
    s,
  ) {
    // 10 addresses with 6 lookups allowed each, 160 lookups at once, three rounds (each
    // on counters of its own, the later ones on a warm pool). The first 64 of a round
    // name the addresses in ascending order, the rest in descending, so a store that
    // charged concurrent lookups in their arrival order could deadlock.
    await verifiedUser(s);
    const addresses = Array.from({ length: 10 }, (_, i) => `192.0.2.${i + 10}`);
    const calls = Array.from({ length: 160 }, (_, i) => {
      const a = i < 64 ? i % 10 : 9 - (i % 10);
      return { phone: i % 3 === 0 ? PHONE : OTHER, address: addresses[a]! };
    });
    let misses = 0;
    for (let round = 0; round < 3; round++) {
      const answers = await Promise.all(
        calls.map(({ phone, address }) =>
          s.store.loginTarget(phone, 3, { ...who, phone, clientAddress: address }, {
            charge: [r(`${address}|${round}`, 6, 600)],
          })
        ),
      );
      for (const address of addresses) {
        const mine = answers.filter((_, i) => calls[i]!.address === address);
        assert.equal(mine.filter((a) => a.kind !== "refused").length, 6, address);
      }
      answers.forEach((a, i) => {
        if (a.kind === "refused") return;
        assert.equal(a.kind, calls[i]!.phone === PHONE ? "ok" : "not_verified");
      });
      misses += answers.filter((a) => a.kind === "not_verified").length;
    }
    assert.equal(
      (await s.auditTrail()).filter((e) => e === "code_requested:not_verified").length,
      misses,
    );
  },

  async "a lookup charged under several rules is refused by the full one and counts under none"(
    s,
  ) {
    await verifiedUser(s);
    const wide = r("wide", 3, 600);
    const charge = [wide, r("narrow", 1, 3600, "number_hourly")];
    assert.deepEqual(await s.store.loginTarget(PHONE, 3, who, { charge }), { kind: "ok" });
    const refused = await s.store.loginTarget(PHONE, 3, who, { charge });
    assert.equal(refused.kind, "refused");
    if (refused.kind === "refused") assert.equal(refused.refusal.reason, "number_hourly");
    // The wide rule counted the first lookup only: two more fit, then it is full.
    assert.equal(await admitted(s, [wide]), true);
    assert.equal(await admitted(s, [wide]), true);
    assert.equal(await admitted(s, [wide]), false);
  },

  async "concurrent charged redemptions count each address exactly, and each reads its own code"(
    s,
  ) {
    // 16 numbers, each with a signup code, redeemed at once, 4 from each of 4 addresses
    // allowed 1, 2, 3 and 4; every fifth number is given a wrong code.
    const phones = Array.from({ length: 16 }, (_, k) => `+1415555${1000 + k}`);
    for (const phone of phones) await withChallenge(s, "signup", phone);
    const addresses = ["192.0.2.50", "192.0.2.51", "192.0.2.52", "192.0.2.53"];
    const outcomes = await Promise.all(phones.map((phone, k) => {
      const address = addresses[(k * 3) % 4]!;
      const w = { ...who, phone, clientAddress: address };
      const code = k % 5 === 4 ? wrong : right;
      return s.store.redeem(phone, "signup", POLICY, code, session(100 + k), w, {
        charge: [r(`${address}|check`, (k * 3) % 4 + 1, 600)],
      });
    }));
    addresses.forEach((address, a) => {
      const mine = outcomes.filter((_, k) => (k * 3) % 4 === a);
      assert.equal(mine.filter((o) => o.kind === "refused").length, 3 - a, address);
    });
    for (const [k, o] of outcomes.entries()) {
      if (o.kind === "refused") {
        assert.equal(await userOf(s, 100 + k), null);
        continue;
      }
      if (k % 5 === 4) {
        assert.deepEqual(o, { kind: "wrong", remaining: 2, locked: false });
        continue;
      }
      assert.equal(o.kind, "ok");
      assert.equal((await userOf(s, 100 + k))?.phoneNumber, phones[k], `number ${k}`);
    }
  },

  async "a charged redemption counts under the limits; once refused it reads, tries and records nothing"(
    s,
  ) {
    await withChallenge(s);
    const charge = [r("check", 1, 600)];
    const tried = await s.store.redeem(PHONE, "signup", POLICY, wrong, session(1), who, {
      charge,
    });
    assert.deepEqual(tried, { kind: "wrong", remaining: 2, locked: false });
    const trail = await s.auditTrail();
    let asked = false;
    const asking = (c: Challenge) => {
      asked = true;
      return right(c);
    };
    assertAddressRefused(
      await s.store.redeem(PHONE, "signup", POLICY, asking, session(1), who, { charge }),
    );
    assert.equal(asked, false, "no code is checked");
    assert.deepEqual(await s.auditTrail(), trail, "a refused redemption records nothing");
    assert.equal(await userOf(s, 1), null, "no session opened");
    // Refused on the other path too (an effect that is not a session).
    const moving = await s.store.redeem(
      PHONE,
      "signup",
      POLICY,
      asking,
      { kind: "phone_change", userId: "00000000-0000-4000-8000-000000000000" },
      who,
      { charge },
    );
    assert.equal(moving.kind, "refused");
    assert.equal(asked, false);
    // The same counter the limits keep for everyone else; the code is still live, with
    // the one try the refused calls did not spend.
    assert.equal(await admitted(s, charge), false);
    const fresh = [r("check-again", 1, 600)];
    assert.deepEqual(
      await s.store.redeem(PHONE, "signup", POLICY, wrong, session(1), who, { charge: fresh }),
      { kind: "wrong", remaining: 1, locked: false },
    );
    const ok = await s.store.redeem(PHONE, "signup", POLICY, right, session(1), who, {
      charge: [r("check-third", 1, 600)],
    });
    assert.equal(ok.kind, "ok");
    assert.equal((await userOf(s, 1))?.phoneNumber, PHONE);
  },

  async "a limit admits its count per window, then refuses until the window passes"(s) {
    const rules = [r("k", 2, 120)];
    assert.ok(await admitted(s, rules));
    assert.ok(await admitted(s, rules));
    const refused = await s.limits.admit(rules);
    assert.equal(refused.admitted, false);
    if (refused.admitted) return;
    assert.equal(refused.reason, "address");
    assert.ok(refused.retryAfterSeconds >= 119 && refused.retryAfterSeconds <= 122);
    await s.elapse(60);
    const later = await s.limits.admit(rules);
    assert.equal(later.admitted, false);
    if (!later.admitted) assert.ok(later.retryAfterSeconds <= 62, `${later.retryAfterSeconds}`);
    await s.elapse(63);
    assert.ok(await admitted(s, rules));
  },

  async "a limit of 0 admits nothing"(s) {
    assert.equal(await admitted(s, [r("zero", 0, 60)]), false);
  },

  async "an event is admitted under every rule or under none, and the longest wait wins"(s) {
    assert.ok(await admitted(s, [r("short", 1, 60)]));
    assert.ok(await admitted(s, [r("long", 1, 600, "number_hourly")]));
    const both = await s.limits.admit([
      r("short", 1, 60),
      r("long", 1, 600, "number_hourly"),
      r("free", 5, 60),
    ]);
    assert.equal(both.admitted, false);
    if (!both.admitted) {
      assert.equal(both.reason, "number_hourly");
      assert.ok(both.retryAfterSeconds > 60);
    }
    // The refused call charged nothing: "free" still has all 5.
    for (let i = 0; i < 5; i++) assert.ok(await admitted(s, [r("free", 5, 60)]));
    assert.equal(await admitted(s, [r("free", 5, 60)]), false);
  },

  async "a refund gives back what was admitted"(s) {
    const a = await s.limits.admit([r("once", 1, 60)]);
    assert.ok(a.admitted);
    if (a.admitted) await s.limits.refund(a.reservation);
    assert.ok(await admitted(s, [r("once", 1, 60)]));
    assert.equal(await admitted(s, [r("once", 1, 60)]), false);
  },

  async "a count is exact under concurrent admissions"(s) {
    const results = await Promise.all(
      Array.from({ length: 20 }, () => admitted(s, [r("race", 3, 60), r("other", 100, 60)])),
    );
    assert.equal(results.filter(Boolean).length, 3);
  },

  async "repeated refusals of one key are one audit row with a count"(s) {
    for (let i = 0; i < 4; i++) await s.store.auditRefusal("code_checked", "address", who, 600);
    await s.store.auditRefusal("code_checked", "address", elsewhere, 600);
    await s.store.auditRefusal("code_checked", "cooldown", who, 600);
    assert.deepEqual(await s.auditTrail(), [
      "code_checked:address x4",
      "code_checked:address",
      "code_checked:cooldown",
    ]);
  },

  async "a login code is for a verified user only, and names a spent challenge"(s) {
    await s.store.signup(PHONE, request(), who);
    assert.deepEqual(await s.store.loginTarget(OTHER, 3, who), { kind: "not_verified" });
    assert.deepEqual(await s.store.loginTarget(PHONE, 3, who), { kind: "not_verified" });
    assert.deepEqual((await s.auditTrail()).slice(-2), [
      "code_requested:not_verified",
      "code_requested:not_verified",
    ]);
    await verifiedUser(s);
    assert.deepEqual(await s.store.loginTarget(PHONE, 3, who), { kind: "ok" });
    const c = challenge(s, { purpose: "login" });
    await s.store.saveChallenge("l1", c);
    assert.deepEqual(await s.store.loginTarget(PHONE, 3, who), { kind: "ok" });
    await s.store.redeem(PHONE, "login", POLICY, right, session(2), who);
    assert.deepEqual(await s.store.loginTarget(PHONE, 3, who), {
      kind: "ok",
      spentChallengeId: c.requestId,
    });
    // The new challenge otp-service opens (always later than the spent one) replaces it.
    const next = { ...challenge(s, { purpose: "login", ageSeconds: -1 }) };
    assert.equal(await s.store.saveChallenge("l2", next), "stored");
    assert.equal((await s.store.redeem(PHONE, "login", POLICY, right, session(3), who)).kind, "ok");
  },

  async "a login code does not log in a user who never verified"(s) {
    await s.store.signup(PHONE, request(), who);
    await s.store.saveChallenge("l", challenge(s, { purpose: "login" }));
    const r = await s.store.redeem(PHONE, "login", POLICY, right, session(1), who);
    assert.equal(r.kind, "no_challenge");
    assert.equal(await userOf(s, 1), null);
  },

  async "a code request names the number's consumed challenge, so a used code is not resent"(s) {
    await verifiedUser(s);
    assert.deepEqual(await s.store.loginTarget(PHONE, 3, who), { kind: "ok" });
    const c = challenge(s, { purpose: "login" });
    await s.store.saveChallenge("l", c);
    assert.deepEqual(await s.store.loginTarget(PHONE, 3, who), { kind: "ok" }, "still live");
    await s.store.redeem(PHONE, "login", POLICY, right, session(2), who);
    assert.deepEqual(await s.store.loginTarget(PHONE, 3, who), {
      kind: "ok",
      spentChallengeId: c.requestId,
    });
    const p = challenge(s, { phone: OTHER, purpose: "phone_change" });
    await s.store.saveChallenge("p", p);
    const me = (await userOf(s, 1))!.id;
    await s.store.redeem(
      OTHER,
      "phone_change",
      POLICY,
      right,
      { kind: "phone_change", userId: me },
      who,
    );
    assert.deepEqual(await s.store.admitPhoneChangeCode(OTHER, 3, who), {
      kind: "ok",
      spentChallengeId: p.requestId,
    });
    assert.deepEqual(await s.store.admitPhoneChangeCode(PHONE, 3, who), { kind: "ok" });
  },

  async "the right code verifies the user, consumes the code and opens a session"(s) {
    await withChallenge(s);
    const r = await s.store.redeem(PHONE, "signup", POLICY, right, session(1), who);
    assert.equal(r.kind, "ok");
    const user = await userOf(s, 1);
    assert.equal(user?.phoneNumber, PHONE);
    assert.ok(user?.verifiedAt instanceof Date);
    if (r.kind === "ok") assert.equal(user?.id, r.userId);
    const again = await s.store.redeem(PHONE, "signup", POLICY, right, session(2), who);
    assert.equal(again.kind, "no_challenge");
    assert.deepEqual((await s.auditTrail()).slice(1, 3), [
      "code_checked:ok",
      "session_created:signup",
    ]);
  },

  async "a login code opens a session without touching verification"(s) {
    await verifiedUser(s);
    const first = await userOf(s, 1);
    await s.store.saveChallenge("login-1", challenge(s, { purpose: "login" }));
    const r = await s.store.redeem(PHONE, "login", POLICY, right, session(2), who);
    assert.equal(r.kind, "ok");
    const user = await userOf(s, 2);
    assert.equal(user?.verifiedAt?.getTime(), first?.verifiedAt?.getTime());
  },

  async "codes are per purpose, and an expired code is no code"(s) {
    await withChallenge(s, "signup");
    const other = await s.store.redeem(PHONE, "login", POLICY, right, session(1), who);
    assert.equal(other.kind, "no_challenge");
    await s.elapse(301);
    const late = await s.store.redeem(PHONE, "signup", POLICY, right, session(1), who);
    assert.equal(late.kind, "no_challenge");
  },

  async "wrong codes count down the tries, then the code is dead"(s) {
    await withChallenge(s);
    const remaining = [];
    for (let i = 0; i < 3; i++) {
      const r = await s.store.redeem(PHONE, "signup", POLICY, wrong, session(1), who);
      assert.equal(r.kind, "wrong");
      if (r.kind === "wrong") remaining.push(r.remaining, r.locked);
    }
    assert.deepEqual(remaining, [2, false, 1, false, 0, false]);
    let asked = false;
    const dead = await s.store.redeem(
      PHONE,
      "signup",
      POLICY,
      (c) => {
        asked = true;
        return right(c);
      },
      session(1),
      who,
    );
    assert.equal(dead.kind, "exhausted");
    assert.equal(asked, false);
  },

  async "consecutive wrong codes across challenges lock the number for that address only"(s) {
    const policy = { ...POLICY, lockAfterFailures: 4 };
    await withChallenge(s);
    for (let i = 0; i < 3; i++) {
      await s.store.redeem(PHONE, "signup", policy, wrong, session(1), who);
    }
    await s.store.saveChallenge("fresh", challenge(s, { ageSeconds: -1 }));
    const fourth = await s.store.redeem(PHONE, "signup", policy, wrong, session(1), who);
    assert.deepEqual(fourth, { kind: "wrong", remaining: 2, locked: true });
    assert.ok((await s.auditTrail()).includes("number_locked:600s"));
    const locked = await s.store.redeem(PHONE, "signup", policy, right, session(1), who);
    assert.equal(locked.kind, "locked");
    if (locked.kind === "locked") {
      assert.ok(locked.retryAfterSeconds >= 599 && locked.retryAfterSeconds <= 600);
    }
    // A locked pair gets no new code either.
    assert.equal((await s.store.signup(PHONE, request(), who)).kind, "locked");
    // The user, from another address, is not locked out by those mistakes.
    const ok = await s.store.redeem(PHONE, "signup", policy, right, session(2), elsewhere);
    assert.equal(ok.kind, "ok");
    await s.store.saveChallenge("login", challenge(s, { purpose: "login", ageSeconds: -2 }));
    assert.equal((await s.store.loginTarget(PHONE, 3, who)).kind, "locked");
    assert.equal((await s.store.loginTarget(PHONE, 3, elsewhere)).kind, "ok");
    await s.elapse(601);
    assert.equal((await s.store.loginTarget(PHONE, 3, who)).kind, "ok");
  },

  async "a signup locked for the caller writes nothing but its refusal"(s) {
    const policy = { ...POLICY, lockAfterFailures: 2 };
    await withChallenge(s);
    for (let i = 0; i < 2; i++) {
      await s.store.redeem(PHONE, "signup", policy, wrong, session(1), who);
    }
    const [enqueued, events] = [await s.enqueued(), await s.events()];
    const refused = await s.store.signup(PHONE, request(), who);
    assert.equal(refused.kind, "locked");
    if (refused.kind === "locked") assert.ok(refused.retryAfterSeconds >= 599);
    assert.deepEqual(await s.enqueued(), enqueued);
    assert.deepEqual(await s.events(), events);
    assert.equal((await s.auditTrail()).at(-1), "code_requested:locked");
    // From another address the same number signs up as before.
    assert.deepEqual(await s.store.signup(PHONE, request(), elsewhere), { kind: "queued" });
  },

  async "concurrent signups of one new number make one user and one signed-up event"(s) {
    const requests = Array.from({ length: 8 }, () => request());
    const outcomes = await Promise.all(requests.map((m) => s.store.signup(PHONE, m, who)));
    assert.deepEqual(outcomes, requests.map(() => ({ kind: "queued" })));
    assert.deepEqual((await s.enqueued()).sort(), requests.map((m) => m.messageId).sort());
    assert.deepEqual(await s.events(), ["user.signed_up"]);
    assert.deepEqual(await s.store.loginTarget(PHONE, 3, who), { kind: "not_verified" });
  },

  async "IPv6 callers are one address per /64 for the lock"(s) {
    const policy = { ...POLICY, maxAttempts: 10, lockAfterFailures: 2 };
    await withChallenge(s);
    const a = { ...who, clientAddress: "2001:db8:1:2::1" };
    const b = { ...who, clientAddress: "2001:db8:1:2:ffff::9" };
    await s.store.redeem(PHONE, "signup", policy, wrong, session(1), a);
    const second = await s.store.redeem(PHONE, "signup", policy, wrong, session(1), b);
    assert.deepEqual(second, { kind: "wrong", remaining: 8, locked: true });
    assert.equal(
      (await s.store.redeem(PHONE, "signup", policy, right, session(1), a)).kind,
      "locked",
    );
  },

  async "wrong codes from every address together lock the number at the per-number ceiling"(s) {
    const policy = {
      ...POLICY,
      maxAttempts: 100,
      lockAfterFailures: 3,
      numberLockAfterFailures: 5,
    };
    await withChallenge(s);
    for (let i = 0; i < 4; i++) {
      const from = { ...who, clientAddress: `198.51.100.${i + 1}` };
      const r = await s.store.redeem(PHONE, "signup", policy, wrong, session(1), from);
      assert.deepEqual(r, { kind: "wrong", remaining: 99 - i, locked: false });
    }
    const fifth = await s.store.redeem(PHONE, "signup", policy, wrong, session(1), elsewhere);
    assert.deepEqual(fifth, { kind: "wrong", remaining: 95, locked: true });
    assert.ok((await s.auditTrail()).includes("number_locked:600s:all"));
    const r = await s.store.redeem(PHONE, "signup", policy, right, session(1), {
      ...who,
      clientAddress: "203.0.113.1",
    });
    assert.equal(r.kind, "locked");
  },

  async "failures age out after the failure window without any"(s) {
    const policy = { ...POLICY, maxAttempts: 10, lockAfterFailures: 3 };
    await withChallenge(s);
    await s.store.redeem(PHONE, "signup", policy, wrong, session(1), who);
    await s.store.redeem(PHONE, "signup", policy, wrong, session(1), who);
    await s.elapse(610);
    await s.store.saveChallenge("aged", challenge(s));
    const r = await s.store.redeem(PHONE, "signup", policy, wrong, session(1), who);
    assert.deepEqual(r, { kind: "wrong", remaining: 9, locked: false });
  },

  async "a right code resets the count of consecutive wrong ones"(s) {
    const policy = { ...POLICY, maxAttempts: 10, lockAfterFailures: 2 };
    await verifiedUser(s);
    await s.store.saveChallenge("l1", challenge(s, { purpose: "login" }));
    await s.store.redeem(PHONE, "login", policy, wrong, session(2), who);
    await s.store.redeem(PHONE, "login", policy, right, session(2), who);
    await s.store.saveChallenge("l2", challenge(s, { purpose: "login", ageSeconds: -1 }));
    const r = await s.store.redeem(PHONE, "login", policy, wrong, session(3), who);
    assert.deepEqual(r, { kind: "wrong", remaining: 9, locked: false });
  },

  async "one code redeemed by concurrent callers opens exactly one session"(s) {
    await withChallenge(s);
    const results = await Promise.all(
      [1, 2, 3, 4].map((n) => s.store.redeem(PHONE, "signup", POLICY, right, session(n), who)),
    );
    assert.deepEqual(results.map((r) => r.kind).sort(), [
      "no_challenge",
      "no_challenge",
      "no_challenge",
      "ok",
    ]);
  },

  async "a challenge is stored once per message, and only a newer one replaces it"(s) {
    await s.store.signup(PHONE, request(), who);
    const current = challenge(s);
    assert.equal(await s.store.saveChallenge("a", current), "stored");
    assert.equal(await s.store.saveChallenge("a", challenge(s, { ageSeconds: -5 })), "duplicate");
    assert.equal(await s.store.saveChallenge("b", challenge(s, { ageSeconds: 5 })), "superseded");
    const sameTime = { ...current, requestId: crypto.randomUUID() };
    assert.equal(await s.store.saveChallenge("b2", sameTime), "superseded");
    await s.store.redeem(PHONE, "signup", POLICY, wrong, session(1), who);
    const newer = { ...challenge(s, { ageSeconds: -5 }), codeMac: new Uint8Array(32).fill(9) };
    assert.equal(await s.store.saveChallenge("c", newer), "stored");
    // The newer code is the live one, with its tries reset.
    const old = await s.store.redeem(PHONE, "signup", POLICY, right, session(1), who);
    assert.deepEqual(old, { kind: "wrong", remaining: 2, locked: false });
    const matchesNewer = (c: Challenge) => c.codeMac[0] === 9;
    const ok = await s.store.redeem(PHONE, "signup", POLICY, matchesNewer, session(1), who);
    assert.equal(ok.kind, "ok");
  },

  async "a code issued in the same second as a consumed one replaces it; a live one stays"(s) {
    await verifiedUser(s);
    const first = challenge(s, { purpose: "login" });
    await s.store.saveChallenge("l1", first);
    const twin = { ...first, requestId: crypto.randomUUID() };
    assert.equal(await s.store.saveChallenge("l2", twin), "superseded", "the first is live");
    await s.store.redeem(PHONE, "login", POLICY, right, session(2), who);
    assert.equal(await s.store.saveChallenge("l3", { ...twin }), "stored");
    const r = await s.store.redeem(PHONE, "login", POLICY, right, session(3), who);
    assert.equal(r.kind, "ok");
    // A resend of the first arrives under its own message id: it never comes back.
    assert.equal(await s.store.saveChallenge("l1", { ...first }), "duplicate");
  },

  async "a session ends when it expires or sits idle, and use keeps it alive"(s) {
    await verifiedUser(s, PHONE, 1);
    await s.elapse(75);
    assert.ok(await userOf(s, 1, { idleSeconds: 100, graceSeconds: 10 }));
    await s.elapse(75);
    assert.ok(await userOf(s, 1, { idleSeconds: 100, graceSeconds: 10 }), "refreshed by use");
    await s.elapse(101);
    assert.equal(await userOf(s, 1, { idleSeconds: 100, graceSeconds: 10 }), null, "idle");
    await s.store.saveChallenge("l", challenge(s, { purpose: "login" }));
    await s.store.redeem(PHONE, "login", POLICY, right, session(2), who);
    await s.elapse(3601);
    assert.equal(await userOf(s, 2, { idleSeconds: 86_400, graceSeconds: 10 }), null, "expired");
    assert.equal(await userOf(s, 3, { idleSeconds: 86_400, graceSeconds: 10 }), null, "unknown");
  },

  async "concurrent lookups each get their own session, or none"(s) {
    // Two users with sessions 1-6 and 9, 4 revoked, 7 and 8 never opened; a store may
    // answer concurrent lookups together, and each must still get its own answer.
    await verifiedUser(s, PHONE, 1);
    await verifiedUser(s, OTHER, 9);
    for (const n of [2, 3, 4, 5, 6]) await loginSession(s, n);
    const me = (await userOf(s, 1))!.id;
    await s.store.revokeSessions(me, [sid(4)], "logout", who);
    const asked = [9, 1, 7, 2, 4, 3, 9, 8, 5, 6, 1, 4];
    for (let round = 0; round < 3; round++) {
      const found = await Promise.all(asked.map((n) => s.store.authenticate(hash(n), ACTIVE)));
      assert.deepEqual(
        found.map((c) => c === null ? null : [c.session.id, c.user.phoneNumber]),
        asked.map((n) => n === 4 || n === 7 || n === 8 ? null : [sid(n), n === 9 ? OTHER : PHONE]),
      );
    }
  },

  async "sessions are revoked by id or all at once, only the user's own"(s) {
    await verifiedUser(s, PHONE, 1);
    await verifiedUser(s, OTHER, 9);
    for (const n of [2, 3]) await loginSession(s, n);
    const me = (await userOf(s, 1))!.id;
    assert.deepEqual(await s.store.revokeSessions(me, [sid(1), sid(9)], "logout", who), [sid(1)]);
    assert.equal(await userOf(s, 1), null);
    assert.deepEqual(await s.store.revokeSessions(me, [sid(1)], "logout", who), []);
    assert.deepEqual(await s.store.revokeSessions(me, ["not-a-uuid"], "admin", who), []);
    assert.deepEqual((await s.store.revokeSessions(me, "all", "logout", who)).sort(), [
      sid(2),
      sid(3),
    ]);
    assert.equal(await userOf(s, 3), null);
    assert.ok(await userOf(s, 9), "another user's stays");
    assert.deepEqual((await s.auditTrail()).filter((e) => e.startsWith("session_revoked")), [
      "session_revoked:logout",
      "session_revoked:logout:all:2",
    ]);
    assert.deepEqual((await s.events()).filter((e) => e === "session.revoked").length, 2);
  },

  async "the live sessions of a user are listed with where they were opened"(s) {
    await verifiedUser(s, PHONE, 1);
    await verifiedUser(s, OTHER, 9);
    await loginSession(s, 2);
    await loginSession(s, 3);
    const me = (await userOf(s, 1))!.id;
    await s.store.revokeSessions(me, [sid(3)], "revoked_by_user", who);
    const list = await s.store.listSessions(me, 600);
    assert.deepEqual(list.map((x) => x.id).sort(), [sid(1), sid(2)]);
    assert.deepEqual(list.map((x) => [x.clientAddress, x.userAgent]).sort(), [
      ["192.0.2.1", "agent 1"],
      ["192.0.2.1", "agent 2"],
    ]);
    assert.ok(list.every((x) => x.userId === me && x.expiresAt > x.createdAt));
    await s.elapse(601);
    assert.deepEqual(await s.store.listSessions(me, 600), [], "idle sessions are not live");
  },

  async "a refresh rotates the token; the replaced one works only within the grace"(s) {
    await verifiedUser(s, PHONE, 1);
    const r = await s.store.refresh(hash(1), hash(2), ACTIVE, who);
    assert.equal(r.kind, "rotated");
    if (r.kind === "rotated") assert.equal(r.caller.session.id, sid(1));
    assert.ok(await userOf(s, 2), "the new token works");
    assert.ok(await userOf(s, 1), "the replaced one still works within the grace");
    // A second tab refreshing with the replaced token gets a token of the same session.
    const tab = await s.store.refresh(hash(1), hash(3), ACTIVE, who);
    assert.equal(tab.kind, "rotated");
    if (tab.kind === "rotated") assert.equal(tab.caller.session.id, sid(1));
    assert.ok(await userOf(s, 2), "the first tab's token was not replaced by it");
    await s.elapse(11);
    assert.equal(await userOf(s, 1), null, "replaced and past the grace");
    assert.ok(await userOf(s, 3));
    assert.deepEqual(await s.store.refresh(hash(1), hash(4), ACTIVE, who), { kind: "reused" });
    assert.equal(await userOf(s, 2), null, "reuse revoked the whole session");
    assert.equal(await userOf(s, 3), null);
    assert.equal((await s.auditTrail()).at(-1), "session_revoked:token_reuse");
    assert.equal((await s.events()).at(-1), "session.revoked");
    assert.deepEqual(await s.store.refresh(hash(4), hash(5), ACTIVE, who), { kind: "invalid" });
    assert.deepEqual(await s.store.refresh(hash(2), hash(5), ACTIVE, who), { kind: "invalid" });
  },

  async "each action enqueues its event once"(s) {
    await s.store.signup(PHONE, request(), who);
    await s.store.signup(PHONE, request(), who);
    assert.deepEqual(await s.events(), ["user.signed_up"]);
    await s.store.saveChallenge("c", challenge(s));
    await s.store.redeem(PHONE, "signup", POLICY, right, session(1), who);
    await loginSession(s, 2);
    assert.deepEqual(await s.events(), [
      "user.signed_up",
      "user.verified",
      "session.created",
      "session.created",
    ]);
  },

  async "a phone-change code moves the user to the new number, keeping sessions"(s) {
    await verifiedUser(s, PHONE, 1);
    const me = (await userOf(s, 1))!.id;
    assert.deepEqual(await s.store.admitPhoneChangeCode(OTHER, 3, who), { kind: "ok" });
    await s.store.saveChallenge("p", challenge(s, { phone: OTHER, purpose: "phone_change" }));
    // Not a login code, and not a code anyone else can log in with.
    const login = await s.store.redeem(OTHER, "login", POLICY, right, session(5), who);
    assert.equal(login.kind, "no_challenge");
    const r = await s.store.redeem(
      OTHER,
      "phone_change",
      POLICY,
      right,
      { kind: "phone_change", userId: me },
      who,
    );
    assert.deepEqual(r, { kind: "ok", userId: me, previousPhone: PHONE });
    assert.equal((await userOf(s, 1))?.phoneNumber, OTHER, "the session stays, on the new number");
    assert.deepEqual(await s.store.loginTarget(PHONE, 3, who), { kind: "not_verified" });
    assert.deepEqual(await s.store.loginTarget(OTHER, 3, who), { kind: "ok" });
    assert.ok((await s.auditTrail()).includes("phone_changed:ok"));
    assert.equal((await s.events()).at(-1), "phone.changed");
  },

  async "a number held by another verified user cannot be taken; an unverified one gives way"(s) {
    await verifiedUser(s, PHONE, 1);
    await verifiedUser(s, OTHER, 9);
    const me = (await userOf(s, 1))!.id;
    const change = { kind: "phone_change", userId: me } as const;
    await s.store.saveChallenge("p", challenge(s, { phone: OTHER, purpose: "phone_change" }));
    assert.deepEqual(
      await s.store.redeem(OTHER, "phone_change", POLICY, right, change, who),
      { kind: "taken" },
    );
    assert.equal((await userOf(s, 9))?.phoneNumber, OTHER);
    const THIRD = "+14155550125";
    await s.store.signup(THIRD, request(), who);
    await s.store.saveChallenge("q", challenge(s, { phone: THIRD, purpose: "phone_change" }));
    const r = await s.store.redeem(THIRD, "phone_change", POLICY, right, change, who);
    assert.equal(r.kind, "ok");
    assert.equal((await userOf(s, 1))?.phoneNumber, THIRD);
  },

  async "phone-change codes follow the redemption rules"(s) {
    await verifiedUser(s, PHONE, 1);
    const me = (await userOf(s, 1))!.id;
    const change = { kind: "phone_change", userId: me } as const;
    await s.store.saveChallenge("p", challenge(s, { phone: OTHER, purpose: "phone_change" }));
    for (let i = 0; i < 3; i++) {
      assert.equal(
        (await s.store.redeem(OTHER, "phone_change", POLICY, wrong, change, who)).kind,
        "wrong",
      );
    }
    assert.deepEqual(
      await s.store.redeem(OTHER, "phone_change", POLICY, right, change, who),
      { kind: "exhausted" },
    );
  },

  async "a login code of the account's number deletes it; the number can sign up anew"(s) {
    await s.store.signup(PHONE, request(), who);
    const signupId = crypto.randomUUID();
    const signupChallenge = { ...challenge(s), requestId: signupId };
    await s.store.saveChallenge(signupId, signupChallenge);
    await s.store.redeem(PHONE, "signup", POLICY, right, session(1), who);
    await verifiedUser(s, OTHER, 9);
    const me = (await userOf(s, 1))!.id;
    const other = (await userOf(s, 9))!.id;
    await loginSession(s, 2);
    await s.store.saveChallenge("d", challenge(s, { purpose: "login", ageSeconds: -5 }));
    // Another user's login code deletes nothing.
    const theirs = await s.store.redeem(
      PHONE,
      "login",
      POLICY,
      right,
      { kind: "delete_account", userId: other },
      who,
    );
    assert.equal(theirs.kind, "no_challenge");
    const r = await s.store.redeem(
      PHONE,
      "login",
      POLICY,
      right,
      { kind: "delete_account", userId: me },
      who,
    );
    assert.deepEqual(r, { kind: "ok", userId: me });
    assert.equal(await userOf(s, 1), null);
    assert.equal(await userOf(s, 2), null);
    assert.ok(await userOf(s, 9));
    assert.deepEqual(await s.store.listSessions(me, 600), []);
    assert.deepEqual(await s.store.loginTarget(PHONE, 3, who), { kind: "not_verified" });
    assert.equal(await s.store.deleteUser(me, "user", who), false);
    const trail = await s.auditTrail();
    assert.ok(trail.includes("user_deleted:user") && trail.includes("code_requested:signup"));
    assert.equal((await s.events()).at(-1), "user.deleted");
    assert.deepEqual(await s.store.signup(PHONE, request(), who), { kind: "queued" });
    assert.equal((await s.events()).at(-1), "user.signed_up");
    // otp-service may resend the old signup challenge, still live on its side.
    assert.equal(await s.store.saveChallenge(signupId, signupChallenge), "stored");
    const again = await s.store.redeem(PHONE, "signup", POLICY, right, session(7), who);
    assert.equal(again.kind, "ok");
    assert.notEqual((await userOf(s, 7))?.id, me);
  },

  async "the sweep forgets handled messages past their keep time only"(s) {
    await s.store.saveChallenge("old", challenge(s));
    await s.elapse(1000);
    await s.store.saveChallenge("new", challenge(s, { phone: OTHER }));
    await s.store.sweep(SWEEP);
    assert.equal(await s.store.saveChallenge("old", challenge(s)), "stored");
    assert.equal(await s.store.saveChallenge("new", challenge(s, { phone: OTHER })), "duplicate");
  },

  async "the sweep removes old audit rows and stale unverified users only"(s) {
    await s.store.signup(PHONE, request(), who); // unverified, no challenge
    await withChallenge(s, "signup", OTHER); // unverified, live challenge
    await verifiedUser(s, "+14155550125", 3);
    await s.elapse(2000);
    await s.store.saveChallenge("live", challenge(s, { phone: OTHER, ageSeconds: -1 }));
    await s.store.audit("code_requested", "recent", who);
    await s.store.sweep(SWEEP);
    assert.deepEqual(await s.auditTrail(), ["code_requested:recent"]);
    // The stale user is gone: a code saved for it now has no one to verify.
    await s.store.saveChallenge("stale", challenge(s, { ageSeconds: -2 }));
    assert.equal(
      (await s.store.redeem(PHONE, "signup", POLICY, right, session(8), who)).kind,
      "no_challenge",
    );
    assert.equal(
      (await s.store.redeem(OTHER, "signup", POLICY, right, session(9), who)).kind,
      "ok",
    );
    assert.ok(await userOf(s, 3, { idleSeconds: 86_400, graceSeconds: 10 }), "verified users stay");
  },
};

const SWEEP = { keepSeconds: 500, auditRetentionSeconds: 1500, unverifiedUserSeconds: 1500 };
