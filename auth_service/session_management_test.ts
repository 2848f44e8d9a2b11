// RefreshSession, GetSession, ListSessions, RevokeSession and the live-session rule
// through the Connect router in-process, on the in-memory store.
import assert from "node:assert/strict";
import { Code } from "@connectrpc/connect";
import { decodeJwt } from "jose";
import { bearer, OTHER, PHONE, refused, setup } from "./domain_fixture.ts";

Deno.test("verify and login return an access token naming the user and the session", async () => {
  const { client, issue } = await setup();
  await client.signupWithPhoneNumber({ phoneNumber: PHONE });
  await issue(PHONE, "signup", "123456");
  const v = await client.verifyPhoneNumber({ phoneNumber: PHONE, otp: "123456" });
  assert.equal(v.expiresIn, 600);
  const claims = decodeJwt(v.accessToken);
  const s = await client.getSession({}, bearer(v.sessionToken));
  assert.equal(claims.sub, s.userId);
  assert.equal(claims.sid, s.sessionId);
  assert.equal(claims.phone_number, PHONE);
  await issue(PHONE, "login", "654321", { ageSeconds: -1 });
  const l = await client.loginWithPhoneNumber({ phoneNumber: PHONE, otp: "654321" });
  assert.notEqual(decodeJwt(l.accessToken).sid, claims.sid);
  assert.equal(decodeJwt(l.accessToken).sub, claims.sub);
});

Deno.test("refresh rotates the token; within the grace the old one still works, after it reuse revokes", async () => {
  const { client, verifiedUser, elapse, store } = await setup();
  const first = await verifiedUser();
  const { sessionId } = await client.getSession({}, bearer(first));
  const r = await client.refreshSession({}, bearer(first));
  assert.notEqual(r.sessionToken, first);
  assert.equal(decodeJwt(r.accessToken).sid, sessionId);
  assert.equal((await client.getSession({}, bearer(r.sessionToken))).sessionId, sessionId);
  // A second tab still holding the old token, within the grace.
  const tab = await client.refreshSession({}, bearer(first));
  assert.equal((await client.getSession({}, bearer(tab.sessionToken))).sessionId, sessionId);
  await client.getProfile({ phoneNumber: PHONE }, bearer(r.sessionToken));
  elapse(11);
  await refused(client.getSession({}, bearer(first)), Code.Unauthenticated, "SESSION_INVALID");
  await refused(client.refreshSession({}, bearer(first)), Code.Unauthenticated, "SESSION_INVALID");
  for (const t of [r.sessionToken, tab.sessionToken]) {
    await refused(client.getSession({}, bearer(t)), Code.Unauthenticated, "SESSION_INVALID");
  }
  assert.equal(store.events.at(-1)?.routingKey, "session.revoked");
});

Deno.test("sessions list the caller's user's live sessions only, with the current one marked", async () => {
  const { client, verifiedUser, loginSession } = await setup();
  const a = await verifiedUser();
  const b = await loginSession();
  await verifiedUser(OTHER);
  const { sessions } = await client.listSessions({}, bearer(b));
  assert.equal(sessions.length, 2);
  const current = sessions.filter((s) => s.current);
  assert.equal(current.length, 1);
  assert.equal(current[0]!.sessionId, (await client.getSession({}, bearer(b))).sessionId);
  assert.notEqual(sessions[0]!.sessionId, sessions[1]!.sessionId);
  assert.ok(sessions.every((s) => Date.parse(s.expiresAt) > Date.parse(s.createdAt)));
  await client.logout({}, bearer(a));
  const after = await client.listSessions({}, bearer(b));
  assert.deepEqual(after.sessions.map((s) => s.current), [true]);
});

Deno.test("a session is recorded with the address and user agent that opened it", async () => {
  const { client, issue } = await setup();
  await client.signupWithPhoneNumber({ phoneNumber: PHONE });
  await issue(PHONE, "signup", "123456");
  const { sessionToken } = await client.verifyPhoneNumber({ phoneNumber: PHONE, otp: "123456" }, {
    headers: { "x-test-address": "198.51.100.7", "user-agent": "Browser\t/1" },
  });
  const [s] = (await client.listSessions({}, bearer(sessionToken))).sessions;
  assert.equal(s?.clientAddress, "198.51.100.7");
  assert.equal(s?.userAgent, "Browser/1");
});

Deno.test("revoke ends one of the caller's sessions; another user's id answers as an unknown one", async () => {
  const { client, verifiedUser, loginSession } = await setup();
  const a = await verifiedUser();
  const b = await loginSession();
  const theirs = await verifiedUser(OTHER);
  const other = (await client.getSession({}, bearer(theirs))).sessionId;
  const bId = (await client.getSession({}, bearer(b))).sessionId;
  assert.equal((await client.revokeSession({ sessionId: other }, bearer(a))).revoked, 0);
  assert.equal(
    (await client.revokeSession({ sessionId: crypto.randomUUID() }, bearer(a))).revoked,
    0,
  );
  await client.getSession({}, bearer(theirs));
  assert.equal((await client.revokeSession({ sessionId: bId }, bearer(a))).revoked, 1);
  await refused(client.getSession({}, bearer(b)), Code.Unauthenticated, "SESSION_INVALID");
  assert.equal((await client.revokeSession({ sessionId: bId }, bearer(a))).revoked, 0);
  await refused(
    client.revokeSession({ sessionId: "not-a-uuid" }, bearer(a)),
    Code.InvalidArgument,
    "INVALID_ARGUMENT",
  );
});

Deno.test("only a live session may act: an idle one cannot log out all the others", async () => {
  const { client, verifiedUser, loginSession, elapse } = await setup();
  const idle = await verifiedUser();
  elapse(400);
  const busy = await loginSession();
  elapse(300);
  await client.getProfile({ phoneNumber: PHONE }, bearer(busy));
  await refused(
    client.logout({ all: true }, bearer(idle)),
    Code.Unauthenticated,
    "SESSION_INVALID",
  );
  await refused(client.getSession({}, bearer(idle)), Code.Unauthenticated, "SESSION_INVALID");
  await refused(client.listSessions({}, bearer(idle)), Code.Unauthenticated, "SESSION_INVALID");
  await refused(client.refreshSession({}, bearer(idle)), Code.Unauthenticated, "SESSION_INVALID");
  await client.getSession({}, bearer(busy));
});
