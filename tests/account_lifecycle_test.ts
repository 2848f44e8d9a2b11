// Phone change and account deletion through real processes: codes arrive by SMS from
// otp-service, purposes never mix, and the old number, the tokens and the account are
// really gone afterwards.
import assert from "node:assert/strict";
import { createLocalJWKSet, jwtVerify } from "jose";
import { authClient, bearer, loginCode, signUp } from "../testing/accounts.ts";
import { outcomeOf } from "../testing/rpc.ts";
import { codeFor } from "../testing/sms_codes.ts";
import { randomPhone, startStack } from "../testing/stack.ts";

const stack = await startStack({
  authEnv: { OTP_SEND_COOLDOWN_SECONDS: "0" },
  otpEnv: { OTP_SEND_COOLDOWN_SECONDS: "0" },
});
Deno.test.afterAll?.(() => stack.stop());

Deno.test("a phone change moves the account: the new number logs in, the old one and the code cannot", async () => {
  const client = authClient(stack);
  const me = await signUp(stack, client);
  const newPhone = randomPhone();
  const mark = stack.otp.lines.length;
  const r = await client.requestPhoneChange({ newPhoneNumber: newPhone }, bearer(me.sessionToken));
  assert.ok(r.message);
  const otp = await codeFor(stack, newPhone, "phone_change", mark);
  // A phone_change code logs no one in.
  assert.equal(
    await outcomeOf(client.loginWithPhoneNumber({ phoneNumber: newPhone, otp })),
    "Unauthenticated",
  );
  const done = await client.confirmPhoneChange(
    { newPhoneNumber: newPhone, otp },
    bearer(me.sessionToken),
  );
  assert.equal(done.phoneNumber, newPhone);
  assert.equal((await client.getSession({}, bearer(me.sessionToken))).phoneNumber, newPhone);
  assert.equal((await client.validatePhoneNumberLogin({ phoneNumber: me.phone })).isValid, false);
  const login = await client.loginWithPhoneNumber({
    phoneNumber: newPhone,
    otp: await loginCode(stack, client, newPhone),
  });
  assert.ok(login.sessionToken);
  const [audit] = await stack.sql<{ n: number }[]>`select count(*)::int as n
    from auth.audit_events where event = 'phone_changed' and phone_number = ${me.phone}`;
  assert.equal(audit!.n, 1);
});

Deno.test("a number that belongs to another account gets already_exists once its code is proved", async () => {
  const client = authClient(stack);
  const me = await signUp(stack, client);
  const other = await signUp(stack, client);
  const mark = stack.otp.lines.length;
  await client.requestPhoneChange({ newPhoneNumber: other.phone }, bearer(me.sessionToken));
  const otp = await codeFor(stack, other.phone, "phone_change", mark);
  assert.equal(
    await outcomeOf(client.confirmPhoneChange(
      { newPhoneNumber: other.phone, otp },
      bearer(me.sessionToken),
    )),
    "AlreadyExists",
  );
  assert.equal((await client.getSession({}, bearer(me.sessionToken))).phoneNumber, me.phone);
  assert.equal((await client.getSession({}, bearer(other.sessionToken))).phoneNumber, other.phone);
});

Deno.test("deleting the account needs a fresh login code; then every session is dead and the number signs up anew", async () => {
  const client = authClient(stack);
  const me = await signUp(stack, client);
  const { userId } = await client.getSession({}, bearer(me.sessionToken));
  assert.equal(
    await outcomeOf(client.deleteAccount({ otp: "000000" }, bearer(me.sessionToken))),
    "Unauthenticated",
  );
  const otp = await loginCode(stack, client, me.phone);
  assert.equal(
    await outcomeOf(client.deleteAccount({ otp })),
    "Unauthenticated",
    "needs a session",
  );
  assert.equal((await client.deleteAccount({ otp }, bearer(me.sessionToken))).deleted, true);

  assert.equal(await outcomeOf(client.getSession({}, bearer(me.sessionToken))), "Unauthenticated");
  assert.equal(
    await outcomeOf(client.refreshSession({}, bearer(me.sessionToken))),
    "Unauthenticated",
  );
  assert.equal(
    await outcomeOf(client.loginWithPhoneNumber({ phoneNumber: me.phone, otp })),
    "Unauthenticated",
  );
  // An access token is not looked up: it verifies until it expires, minutes at most.
  const jwks = createLocalJWKSet(
    await (await fetch(new URL("/.well-known/jwks.json", stack.authUrl))).json(),
  );
  const { payload } = await jwtVerify(me.accessToken, jwks);
  assert.ok(payload.exp! - Date.now() / 1000 <= 600);

  const [left] = await stack.sql<
    { users: number; sessions: number; challenges: number; audit: number }[]
  >`
    select (select count(*)::int from auth.users where id = ${userId}) as users,
           (select count(*)::int from auth.sessions where user_id = ${userId}) as sessions,
           (select count(*)::int from auth.challenges where phone_number = ${me.phone}) as challenges,
           (select count(*)::int from auth.audit_events where phone_number = ${me.phone}) as audit`;
  assert.deepEqual({ ...left }, { users: 0, sessions: 0, challenges: 0, audit: left!.audit });
  assert.ok(left!.audit > 0, "the audit trail stays");

  const again = await signUp(stack, client, me.phone);
  assert.notEqual((await client.getSession({}, bearer(again.sessionToken))).userId, userId);
});
