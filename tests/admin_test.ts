// admin.v1.AdminService on the real auth-service: every RPC works with ADMIN_API_TOKEN,
// answers unauthenticated without it (and whatever is presented while the variable is
// unset), and every action leaves an audit row.
import assert from "node:assert/strict";
import amqp from "amqplib";
import { DeletionOrigin, RevocationReason } from "../shared/gen/auth/events/v1/events_pb.ts";
import { tapAuthEvents, until } from "../testing/auth_events.ts";
import { parsePrometheusText, sampleValue } from "../shared/prometheus_text.ts";
import { GET_PROFILE, rpc, SIGNUP, VALIDATE_LOGIN, VERIFY } from "../testing/rpc.ts";
import type { RpcResult } from "../testing/rpc.ts";
import { codeFor } from "../testing/sms_codes.ts";
import { randomPhone, startStack } from "../testing/stack.ts";

const TOKEN = "admin-token-for-tests-0123456789abcdef";
// No send cooldown: a number deleted by an operator signs up again straight away.
const stack = await startStack({
  authEnv: { ADMIN_API_TOKEN: TOKEN, LOCK_AFTER_FAILURES: "2", OTP_SEND_COOLDOWN_SECONDS: "0" },
  otpEnv: { OTP_SEND_COOLDOWN_SECONDS: "0" },
});

Deno.test.afterAll?.(() => stack.stop());

const ADMIN = "admin.v1.AdminService";
const METHODS = [
  "GetUser",
  "ListUserSessions",
  "RevokeUserSessions",
  "UnlockPhoneNumber",
  "DeleteUser",
  "ListAuditEvents",
] as const;

function admin(method: string, body: Record<string, unknown>, token: string | null = TOKEN) {
  return rpc(stack.authUrl, `${ADMIN}/${method}`, body, {
    headers: token === null ? {} : { authorization: `Bearer ${token}` },
  });
}

function ok(r: RpcResult): Record<string, unknown> {
  assert.equal(r.code, "ok", JSON.stringify(r.json));
  return r.json;
}

async function adminAudit(phone: string): Promise<string[]> {
  const rows = await stack.sql<{ event: string; outcome: string }[]>`
    select event, outcome from auth.audit_events
     where phone_number = ${phone} and event like 'admin.%' order by id`;
  return rows.map((r) => `${r.event}:${r.outcome}`);
}

async function verifiedUser(phone = randomPhone()): Promise<{ phone: string; session: string }> {
  const mark = stack.otp.lines.length;
  assert.equal((await rpc(stack.authUrl, SIGNUP, { phone_number: phone })).code, "ok");
  const code = await codeFor(stack, phone, "signup", mark);
  const r = ok(await rpc(stack.authUrl, VERIFY, { phone_number: phone, otp: code }));
  return { phone, session: String(r.session_token) };
}

Deno.test("without the admin token, or with a wrong one, every admin RPC is unauthenticated", async () => {
  const { phone } = await verifiedUser();
  for (const method of METHODS) {
    for (const token of [null, "wrong-token-wrong-token-wrong", `${TOKEN}x`]) {
      const r = await admin(method, { phone_number: phone }, token);
      assert.equal(r.code, "unauthenticated", `${method} with ${token}`);
    }
  }
  // Counted like any refused RPC, so guessing at the token shows in the metrics.
  const exposition = parsePrometheusText(await (await fetch(`${stack.authUrl}/metrics`)).text());
  for (const method of METHODS) {
    const labels = { rpc_service: ADMIN, rpc_method: method, code: "unauthenticated" };
    assert.ok(sampleValue(exposition, "rpc_server_requests_total", labels) >= 3, method);
  }
  // Nothing was done: the user is still there and nothing was audited as admin.
  assert.deepEqual(await adminAudit(phone), []);
  assert.equal(ok(await admin("GetUser", { phone_number: phone })).verified, true);
});

Deno.test("each admin RPC does its work with the token and is audited", async () => {
  const { phone, session } = await verifiedUser();
  const pretty = `+1 (${phone.slice(2, 5)}) ${phone.slice(5, 8)}-${phone.slice(8)}`;

  const user = ok(await admin("GetUser", { phone_number: pretty }));
  assert.equal(user.phone_number, phone);
  assert.equal(user.verified, true);
  assert.equal(user.locked_until, "");

  const listed = ok(await admin("ListUserSessions", { phone_number: phone }));
  assert.equal((listed.sessions as unknown[]).length, 1);

  // Two wrong login codes lock the number (LOCK_AFTER_FAILURES=2); unlocking lifts it.
  const mark = stack.otp.lines.length;
  assert.equal((await rpc(stack.authUrl, VALIDATE_LOGIN, { phone_number: phone })).code, "ok");
  const code = await codeFor(stack, phone, "login", mark);
  const wrong = code.split("").map((d) => String((Number(d) + 1) % 10)).join("");
  const login = "auth.v1.AuthService/LoginWithPhoneNumber";
  await rpc(stack.authUrl, login, { phone_number: phone, otp: wrong });
  const locked = await rpc(stack.authUrl, login, { phone_number: phone, otp: wrong });
  assert.equal(locked.code, "resource_exhausted");
  assert.notEqual(ok(await admin("GetUser", { phone_number: phone })).locked_until, "");
  const unlocked = ok(await admin("UnlockPhoneNumber", { phone_number: phone }));
  assert.ok(Number(unlocked.unlocked) >= 1);
  assert.equal(ok(await admin("GetUser", { phone_number: phone })).locked_until, "");
  assert.equal(
    (await rpc(stack.authUrl, login, { phone_number: phone, otp: code })).code,
    "ok",
    "the right code works again once unlocked",
  );

  const revoked = ok(await admin("RevokeUserSessions", { phone_number: phone }));
  assert.equal(revoked.revoked, 2);
  const profile = await rpc(stack.authUrl, GET_PROFILE, { phone_number: phone }, {
    headers: { authorization: `Bearer ${session}` },
  });
  assert.equal(profile.code, "unauthenticated");
  assert.deepEqual(ok(await admin("ListUserSessions", { phone_number: phone })).sessions, []);

  // The audit trail, newest first, two at a time, every event exactly once.
  const [before] = await stack.sql<{ n: number }[]>`
    select count(*)::int as n from auth.audit_events where phone_number = ${phone}`;
  const seen: Record<string, unknown>[] = [];
  let pageToken = "";
  for (let pages = 0; pages < 100; pages++) {
    const page = ok(
      await admin("ListAuditEvents", { phone_number: phone, page_token: pageToken, page_size: 2 }),
    );
    const events = page.events as Record<string, unknown>[];
    assert.ok(events.length <= 2);
    seen.push(...events);
    pageToken = String(page.next_page_token);
    if (pageToken === "") break;
  }
  const ids = seen.map((e) => Number(e.event_id));
  assert.deepEqual(ids, [...ids].sort((a, b) => b - a), "newest first");
  assert.equal(new Set(ids).size, ids.length, "no event twice");
  // Exactly the events there were when the listing began: later pages only go back.
  assert.equal(seen.length, before!.n);
  assert.ok(seen.some((e) => e.event === "admin.unlock_phone_number"));
  assert.ok(seen.every((e) => e.phone_number === phone));

  const bad = await admin("ListAuditEvents", { phone_number: phone, page_token: "bm9wZQ" });
  assert.equal(bad.code, "invalid_argument");

  assert.equal(ok(await admin("DeleteUser", { phone_number: phone })).deleted, true);
  assert.equal((await admin("GetUser", { phone_number: phone })).code, "not_found");
  assert.equal((await admin("DeleteUser", { phone_number: phone })).code, "not_found");

  const trail = await adminAudit(phone);
  for (
    const event of [
      "admin.get_user:ok",
      "admin.list_user_sessions:ok:1",
      "admin.unlock_phone_number:ok:1",
      "admin.revoke_user_sessions:ok:2",
      "admin.list_audit_events",
      "admin.delete_user:ok",
      "admin.get_user:not_found",
      "admin.delete_user:not_found",
    ]
  ) {
    assert.ok(trail.some((t) => t.startsWith(event)), `${event} in ${trail.join(", ")}`);
  }
  const [row] = await stack.sql<{ client_address: string; request_id: string }[]>`
    select client_address, request_id from auth.audit_events
     where phone_number = ${phone} and event = 'admin.delete_user' limit 1`;
  assert.equal(row!.client_address, "127.0.0.1");
  assert.match(row!.request_id, /^[0-9a-f-]{36}$/);
});

const revokedByAdmin = async () =>
  sampleValue(
    parsePrometheusText(await (await fetch(`${stack.authUrl}/metrics`)).text()),
    "auth_sessions_revoked_total",
    { reason: "admin" },
  );

Deno.test("an operator's revocation and deletion publish their events once, and the number can sign up again", async () => {
  const conn = await amqp.connect(stack.amqpUrl);
  try {
    const received = await tapAuthEvents(conn, "#");
    const { phone } = await verifiedUser();
    const userId = String(ok(await admin("GetUser", { phone_number: phone })).user_id);
    const counted = await revokedByAdmin();

    assert.equal(ok(await admin("RevokeUserSessions", { phone_number: phone })).revoked, 1);
    assert.equal(await revokedByAdmin(), counted + 1);
    assert.equal(ok(await admin("RevokeUserSessions", { phone_number: phone })).revoked, 0);
    assert.equal(await revokedByAdmin(), counted + 1, "nothing revoked, nothing counted");
    assert.equal(ok(await admin("DeleteUser", { phone_number: phone })).deleted, true);

    await verifiedUser(phone);
    const anew = String(ok(await admin("GetUser", { phone_number: phone })).user_id);
    assert.notEqual(anew, userId, "signed up anew as another user");

    const of = (id: string) =>
      received.map((r) => r.event).filter((e) => "userId" in e.message && e.message.userId === id);
    await until(
      "the new user's verification",
      () => of(anew).some((e) => e.name === "user.verified"),
    );
    // Anything late would be a duplicate: give it a moment to show up.
    await new Promise((r) => setTimeout(r, 500));
    const revoked = of(userId).filter((e) => e.name === "session.revoked");
    const deleted = of(userId).filter((e) => e.name === "user.deleted");
    assert.equal(revoked.length, 1, "one session.revoked for the revocation");
    assert.ok(revoked[0]!.name === "session.revoked");
    assert.equal(revoked[0]!.message.reason, RevocationReason.ADMIN);
    assert.equal(revoked[0]!.message.sessionIds.length, 1);
    assert.equal(deleted.length, 1, "one user.deleted for the deletion");
    assert.ok(deleted[0]!.name === "user.deleted");
    assert.equal(deleted[0]!.message.origin, DeletionOrigin.ADMIN);
    assert.deepEqual((await adminAudit(phone)).filter((e) => !e.startsWith("admin.get_user")), [
      "admin.revoke_user_sessions:ok:1",
      "admin.revoke_user_sessions:ok:0",
      "admin.delete_user:ok",
    ]);
    const [trail] = await stack.sql<{ n: number }[]>`
      select count(*)::int as n from auth.audit_events
       where phone_number = ${phone}
         and ((event = 'session_revoked' and outcome = 'admin:all:1')
           or (event = 'user_deleted' and outcome = 'admin'))`;
    assert.equal(trail!.n, 2, "the account's own audit rows, with the operator as the cause");
  } finally {
    await conn.close();
  }
});

Deno.test("with ADMIN_API_TOKEN unset the service starts and refuses every admin call", async () => {
  const { phone } = await verifiedUser();
  delete stack.env.auth.ADMIN_API_TOKEN;
  await stack.auth.stop();
  await stack.startAuth();
  for (const method of METHODS) {
    for (const token of [null, TOKEN, ""]) {
      const r = await admin(method, { phone_number: phone }, token);
      assert.equal(r.code, "unauthenticated", `${method} with ${token}`);
    }
  }
  assert.deepEqual(await adminAudit(phone), []);
});
