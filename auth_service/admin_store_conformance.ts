// One behavioural suite every AdminStore must pass beside its AuthStore (PostgreSQL,
// memory). State is built through the AuthStore port only, so both backends start from
// the same history; every admin action must leave its "admin.<action>" audit event.
import assert from "node:assert/strict";
import type { OutgoingMessage } from "../shared/bus.ts";
import type { StoreUnderTest } from "./store_conformance.ts";
import type {
  AdminStore,
  AuditContext,
  AuthStore,
  Challenge,
  RedeemEffect,
  RedeemPolicy,
} from "./ports.ts";

export interface AdminUnderTest extends StoreUnderTest {
  admin: AdminStore;
}

export async function adminStoreConformance(
  t: Deno.TestContext,
  open: () => Promise<AdminUnderTest>,
): Promise<void> {
  for (const [name, fn] of Object.entries(behaviours)) {
    await t.step(name, async () => fn(await open()));
  }
}

const PHONE = "+14155550123";
const OTHER = "+14155550124";
const who: AuditContext = { phone: PHONE, clientAddress: "192.0.2.9", requestId: "admin-1" };
const POLICY: RedeemPolicy = {
  maxAttempts: 5,
  lockAfterFailures: 1,
  numberLockAfterFailures: 100,
  lockSeconds: 600,
  failureWindowSeconds: 600,
};
const session = (n: number): RedeemEffect => ({
  kind: "session",
  session: {
    id: `00000000-0000-4000-8000-${String(n).padStart(12, "0")}`,
    tokenHash: new Uint8Array(32).fill(n),
    ttlSeconds: 3600,
    clientAddress: "",
    userAgent: "",
  },
});
/** The user of session `n`'s token, if the session is live. */
const sessionUser = async (s: { store: AuthStore }, n: number) =>
  (await s.store.authenticate(new Uint8Array(32).fill(n), { idleSeconds: 600, graceSeconds: 10 }))
    ?.user ?? null;

function request(): OutgoingMessage {
  return {
    exchange: "verification",
    routingKey: "otp_routing_key",
    messageId: crypto.randomUUID(),
    type: "bus.v1.OtpRequested",
    contentType: "application/x-protobuf",
    body: new Uint8Array([1]),
    timestamp: new Date(),
  };
}

async function withChallenge(
  s: AdminUnderTest,
  phone = PHONE,
  purpose: "signup" | "login" = "signup",
) {
  await s.store.signup(phone, request(), { ...who, phone });
  const issuedAt = s.now();
  const c: Challenge = {
    requestId: crypto.randomUUID(),
    phoneNumber: phone,
    purpose,
    codeMac: new Uint8Array(32).fill(3),
    issuedAt,
    expiresAt: new Date(issuedAt.getTime() + 300_000),
  };
  await s.store.saveChallenge(crypto.randomUUID(), c);
}

async function verifiedUser(s: AdminUnderTest, phone = PHONE, token = 1) {
  await withChallenge(s, phone);
  const r = await s.store.redeem(
    phone,
    "signup",
    POLICY,
    () => true,
    session(token),
    who,
  );
  assert.equal(r.kind, "ok");
}

async function login(s: AdminUnderTest, phone: string, token: number) {
  await s.store.saveChallenge(crypto.randomUUID(), {
    requestId: crypto.randomUUID(),
    phoneNumber: phone,
    purpose: "login",
    codeMac: new Uint8Array(32).fill(4),
    issuedAt: s.now(),
    expiresAt: new Date(s.now().getTime() + 300_000),
  });
  const r = await s.store.redeem(
    phone,
    "login",
    POLICY,
    () => true,
    session(token),
    who,
  );
  assert.equal(r.kind, "ok");
}

const adminTrail = async (s: AdminUnderTest) =>
  (await s.auditTrail()).filter((e) => e.startsWith("admin."));

const behaviours: Record<string, (s: AdminUnderTest) => Promise<void>> = {
  async "a user is read with its lock-out, an unknown number is none"(s) {
    assert.equal(await s.admin.user(PHONE, who), null);
    await withChallenge(s);
    const fresh = await s.admin.user(PHONE, who);
    assert.equal(fresh?.phoneNumber, PHONE);
    assert.equal(fresh?.verifiedAt, null);
    assert.equal(fresh?.lockedUntil, null);
    const wrong = await s.store.redeem(
      PHONE,
      "signup",
      POLICY,
      () => false,
      session(1),
      who,
    );
    assert.equal(wrong.kind, "wrong");
    const locked = await s.admin.user(PHONE, who);
    assert.ok(locked?.lockedUntil && locked.lockedUntil > s.now());
    assert.deepEqual(await adminTrail(s), [
      "admin.get_user:not_found",
      "admin.get_user:ok",
      "admin.get_user:ok",
    ]);
  },

  async "unlocking lifts the number's lock-out so its code works again"(s) {
    await withChallenge(s);
    await s.store.redeem(PHONE, "signup", POLICY, () => false, session(1), who);
    const refused = await s.store.redeem(
      PHONE,
      "signup",
      POLICY,
      () => true,
      session(1),
      who,
    );
    assert.equal(refused.kind, "locked");
    assert.equal(await s.admin.unlock(PHONE, who), 1);
    assert.equal((await s.admin.user(PHONE, who))?.lockedUntil, null);
    const ok = await s.store.redeem(
      PHONE,
      "signup",
      POLICY,
      () => true,
      session(1),
      who,
    );
    assert.equal(ok.kind, "ok");
    assert.equal(await s.admin.unlock(PHONE, who), 0);
    assert.deepEqual((await adminTrail(s)).filter((e) => e.includes("unlock")), [
      "admin.unlock_phone_number:ok:1",
      "admin.unlock_phone_number:ok:0",
    ]);
  },

  async "sessions are listed newest first, and revoking ends every live one"(s) {
    assert.equal(await s.admin.sessions(PHONE, who), null);
    await verifiedUser(s, PHONE, 1);
    await s.elapse(5);
    await login(s, PHONE, 2);
    await verifiedUser(s, OTHER, 3);
    const listed = await s.admin.sessions(PHONE, who);
    assert.equal(listed?.length, 2);
    assert.ok(listed![0]!.createdAt > listed![1]!.createdAt);
    assert.equal(await s.admin.revokeSessions(PHONE, who), 2);
    assert.deepEqual(await s.admin.sessions(PHONE, who), []);
    assert.equal(await sessionUser(s, 1), null);
    assert.equal(await sessionUser(s, 2), null);
    assert.equal((await sessionUser(s, 3))?.phoneNumber, OTHER);
    assert.equal(await s.admin.revokeSessions(PHONE, who), 0);
    assert.ok((await adminTrail(s)).includes("admin.revoke_user_sessions:ok:2"));
    // The same revocation as the user's own: its audit row and one event, none for nothing.
    const trail = await s.auditTrail();
    assert.deepEqual(trail.filter((e) => e.startsWith("session_revoked")), [
      "session_revoked:admin:all:2",
    ]);
    assert.deepEqual((await s.events()).filter((k) => k === "session.revoked"), [
      "session.revoked",
    ]);
  },

  async "deleting a user removes its sessions and keeps the audit trail"(s) {
    await verifiedUser(s);
    const before = (await s.auditTrail()).length;
    assert.equal(await s.admin.deleteUser(PHONE, who), true);
    assert.equal(await s.admin.user(PHONE, who), null);
    assert.equal(await sessionUser(s, 1), null);
    assert.equal(await s.admin.deleteUser(PHONE, who), false);
    const trail = await s.auditTrail();
    assert.ok(trail.length > before);
    assert.deepEqual(trail.slice(-3), [
      "admin.delete_user:ok",
      "admin.get_user:not_found",
      "admin.delete_user:not_found",
    ]);
    assert.ok(trail.includes("user_deleted:admin"));
    assert.deepEqual((await s.events()).filter((k) => k === "user.deleted"), ["user.deleted"]);
    // The number can sign up again as a new user.
    await verifiedUser(s, PHONE, 2);
  },

  async "after an operator's deletion a resent challenge of the number is stored again"(s) {
    await s.store.signup(PHONE, request(), who);
    // otp-service sends a challenge under its request's id, and resends it under the same.
    const messageId = crypto.randomUUID();
    const c: Challenge = {
      requestId: messageId,
      phoneNumber: PHONE,
      purpose: "signup",
      codeMac: new Uint8Array(32).fill(3),
      issuedAt: s.now(),
      expiresAt: new Date(s.now().getTime() + 300_000),
    };
    assert.equal(await s.store.saveChallenge(messageId, c), "stored");
    assert.equal(await s.store.saveChallenge(messageId, c), "duplicate");
    assert.equal(await s.admin.deleteUser(PHONE, who), true);
    await s.store.signup(PHONE, request(), who);
    assert.equal(await s.store.saveChallenge(messageId, c), "stored");
  },

  async "audit events are paged newest first by id, for that number only"(s) {
    await verifiedUser(s, PHONE);
    await verifiedUser(s, OTHER, 2);
    const all = await s.admin.auditEvents(PHONE, null, 1000, who);
    assert.ok(all.length >= 3);
    assert.ok(all.every((e) => e.phoneNumber === PHONE));
    const ids = all.map((e) => Number(e.id));
    assert.deepEqual(ids, [...ids].sort((a, b) => b - a));
    // A page from a cursor holds the next older events, exactly.
    const cursor = all[1]!.id;
    const next = await s.admin.auditEvents(PHONE, cursor, 2, who);
    assert.deepEqual(next.map((e) => e.id), all.slice(2, 4).map((e) => e.id));
    const first = await s.admin.auditEvents(PHONE, null, 2, who);
    assert.equal(first.length, 2);
    assert.ok(Number(first[1]!.id) > Number(all[0]!.id), "the listings came after");
    assert.equal(all.at(-1)!.event, "code_requested");
    // The listings themselves were audited, after what they listed.
    const again = await s.admin.auditEvents(PHONE, null, 3, who);
    assert.deepEqual(again.map((e) => e.event), [
      "admin.list_audit_events",
      "admin.list_audit_events",
      "admin.list_audit_events",
    ]);
    assert.equal(again[0]!.clientAddress, who.clientAddress);
    assert.equal(again[0]!.requestId, who.requestId);
  },
};
