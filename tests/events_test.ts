// Auth events through real processes: a consumer bound to auth.events receives one
// event per action (signup, verify, login, reuse, logout, phone change, deletion), as
// protobuf with the message properties every bus message has.
import assert from "node:assert/strict";
import amqp from "amqplib";
import { Code, ConnectError } from "@connectrpc/connect";
import type { AuthEvent } from "../shared/events.ts";
import { tapAuthEvents, until } from "../testing/auth_events.ts";
import { authClient, bearer, logIn, loginCode, signUp } from "../testing/accounts.ts";
import { codeFor } from "../testing/sms_codes.ts";
import { randomPhone, startStack } from "../testing/stack.ts";

const stack = await startStack({
  authEnv: { OTP_SEND_COOLDOWN_SECONDS: "0" },
  otpEnv: { OTP_SEND_COOLDOWN_SECONDS: "0" },
});
const conn = await amqp.connect(stack.amqpUrl);
Deno.test.afterAll?.(async () => {
  await conn.close();
  await stack.stop();
});

const userOf = (e: AuthEvent): string =>
  e.name === "session.created" || e.name === "session.revoked" ||
    e.name === "user.signed_up" || e.name === "user.verified" || e.name === "phone.changed" ||
    e.name === "user.deleted"
    ? e.message.userId
    : "";

Deno.test("a consumer bound to auth.events receives each event once per action, with message properties", async () => {
  const all = await tapAuthEvents(conn, "#");
  const users = await tapAuthEvents(conn, "user.*");
  const client = authClient(stack);

  const me = await signUp(stack, client);
  const { userId, sessionId } = await client.getSession({}, bearer(me.sessionToken));
  const second = await logIn(stack, client, me.phone);
  // Reuse of a replaced token after the grace revokes the first session.
  await client.refreshSession({}, bearer(me.sessionToken));
  await stack.sql`update auth.session_tokens set replaced_at = now() - interval '1 minute'
    where replaced_at is not null`;
  await client.refreshSession({}, bearer(me.sessionToken)).catch((e) =>
    assert.equal(ConnectError.from(e).code, Code.Unauthenticated)
  );
  const third = await logIn(stack, client, me.phone);
  assert.equal((await client.logout({}, bearer(second.sessionToken))).revoked, 1);
  const newPhone = randomPhone();
  const mark = stack.otp.lines.length;
  await client.requestPhoneChange({ newPhoneNumber: newPhone }, bearer(third.sessionToken));
  const otp = await codeFor(stack, newPhone, "phone_change", mark);
  await client.confirmPhoneChange({ newPhoneNumber: newPhone, otp }, bearer(third.sessionToken));
  await client.deleteAccount(
    { otp: await loginCode(stack, client, newPhone) },
    bearer(third.sessionToken),
  );

  const expected = [
    "user.signed_up",
    "user.verified",
    "session.created",
    "session.created",
    "session.revoked",
    "session.created",
    "session.revoked",
    "phone.changed",
    "user.deleted",
  ];
  const mine = () => all.filter((r) => userOf(r.event) === userId);
  await until("every event", () => mine().length >= expected.length);
  await until("the user events", () => users.length >= 3);
  // Anything late would be a duplicate: give it a moment to show up.
  await new Promise((r) => setTimeout(r, 500));
  const got = mine();
  assert.deepEqual(got.map((r) => r.event.name).sort(), [...expected].sort());
  assert.deepEqual(users.map((r) => r.event.name).sort(), [
    "user.deleted",
    "user.signed_up",
    "user.verified",
  ]);
  assert.equal(new Set(got.map((r) => r.message.properties.messageId)).size, got.length);

  for (const { event, message } of got) {
    const p = message.properties;
    assert.equal(message.fields.routingKey, event.name);
    assert.equal(p.deliveryMode, 2, "persistent");
    assert.match(p.messageId, /^[0-9a-f-]{36}$/);
    assert.equal(p.contentType, "application/x-protobuf");
    assert.ok(p.type.startsWith("auth.events.v1."));
    assert.ok(Math.abs(p.timestamp - Date.now() / 1000) < 120);
  }
  const byName = (n: string) => got.filter((r) => r.event.name === n).map((r) => r.event);
  const [signedUp] = byName("user.signed_up");
  assert.ok(signedUp?.name === "user.signed_up" && signedUp.message.phoneNumber === me.phone);
  const reasons = byName("session.revoked").map((e) =>
    e.name === "session.revoked" ? [e.message.reason, e.message.sessionIds.length] : []
  );
  assert.deepEqual(reasons.sort(), [[1, 1], [3, 1]], "one logout, one token reuse");
  const reuse = byName("session.revoked").find((e) =>
    e.name === "session.revoked" && e.message.reason === 3
  );
  assert.ok(reuse?.name === "session.revoked" && reuse.message.sessionIds[0] === sessionId);
  const [changed] = byName("phone.changed");
  assert.ok(
    changed?.name === "phone.changed" && changed.message.oldPhoneNumber === me.phone &&
      changed.message.newPhoneNumber === newPhone,
  );
});
