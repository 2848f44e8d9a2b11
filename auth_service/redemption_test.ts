// Redeeming codes (VerifyPhoneNumber, LoginWithPhoneNumber) through the Connect router
// in-process, on the in-memory store.
import assert from "node:assert/strict";
import { Code } from "@connectrpc/connect";
import { bearer, OTHER, PHONE, refused, SETTINGS, setup } from "./domain_fixture.ts";

Deno.test("verify with the right code returns a session for the now verified user", async () => {
  const { client, issue } = await setup();
  await client.signupWithPhoneNumber({ phoneNumber: PHONE });
  assert.equal(await issue(PHONE, "signup", "654321"), "ack");
  const { sessionToken } = await client.verifyPhoneNumber({ phoneNumber: PHONE, otp: "654321" });
  assert.match(sessionToken, /^[A-Za-z0-9_-]{43}$/);
  const p = await client.getProfile({ phoneNumber: PHONE }, bearer(sessionToken));
  assert.equal(p.phoneNumber, PHONE);
  assert.equal(p.verified, true);
  assert.notEqual(p.verifiedAt, "");
  // Single use: the same code again is no code.
  await refused(
    client.verifyPhoneNumber({ phoneNumber: PHONE, otp: "654321" }),
    Code.Unauthenticated,
    "CODE_INVALID",
  );
});

Deno.test("login with a login code returns a second, independent session", async () => {
  const { client, issue, verifiedUser } = await setup();
  const first = await verifiedUser();
  await issue(PHONE, "login", "111222");
  await refused(
    client.loginWithPhoneNumber({ phoneNumber: PHONE, otp: "123456" }),
    Code.Unauthenticated,
    "CODE_INVALID",
  );
  const { sessionToken } = await client.loginWithPhoneNumber({ phoneNumber: PHONE, otp: "111222" });
  assert.notEqual(sessionToken, first);
  const a = await client.getProfile({ phoneNumber: PHONE }, bearer(first));
  const b = await client.getProfile({ phoneNumber: PHONE }, bearer(sessionToken));
  assert.equal(a.userId, b.userId);
});

Deno.test("a malformed code is invalid_argument, a missing one reads like a wrong one", async () => {
  const { client, issue } = await setup();
  await refused(
    client.verifyPhoneNumber({ phoneNumber: PHONE, otp: "12345" }),
    Code.InvalidArgument,
    "CODE_MALFORMED",
  );
  const none = await refused(
    client.verifyPhoneNumber({ phoneNumber: PHONE, otp: "123456" }),
    Code.Unauthenticated,
    "CODE_INVALID",
  );
  assert.equal(none.rawMessage, "invalid or expired code");
  await client.signupWithPhoneNumber({ phoneNumber: PHONE });
  await issue(PHONE, "signup", "123456", { ageSeconds: 301 });
  const expired = await refused(
    client.verifyPhoneNumber({ phoneNumber: PHONE, otp: "123456" }),
    Code.Unauthenticated,
    "CODE_INVALID",
  );
  assert.equal(expired.rawMessage, none.rawMessage);
});

Deno.test("wrong codes say how many tries are left, then the code is dead", async () => {
  const { client, issue } = await setup();
  await client.signupWithPhoneNumber({ phoneNumber: PHONE });
  await issue(PHONE, "signup", "123456");
  const messages = [];
  for (let i = 0; i < 3; i++) {
    const err = await refused(
      client.verifyPhoneNumber({ phoneNumber: PHONE, otp: "000000" }),
      Code.Unauthenticated,
      "CODE_INVALID",
    );
    messages.push(err.rawMessage);
  }
  assert.deepEqual(messages, [
    "invalid or expired code; 2 tries left",
    "invalid or expired code; 1 try left",
    "invalid or expired code; no tries left, request a new code",
  ]);
  await refused(
    client.verifyPhoneNumber({ phoneNumber: PHONE, otp: "123456" }),
    Code.ResourceExhausted,
    "CODE_EXHAUSTED",
  );
});

Deno.test("consecutive wrong codes lock the number, right code or not, until the lock ends", async () => {
  const { client, issue, elapse } = await setup({ settings: { lockAfterFailures: 2 } });
  await client.signupWithPhoneNumber({ phoneNumber: PHONE });
  await issue(PHONE, "signup", "123456");
  await refused(
    client.verifyPhoneNumber({ phoneNumber: PHONE, otp: "000000" }),
    Code.Unauthenticated,
    "CODE_INVALID",
  );
  const locked = await refused(
    client.verifyPhoneNumber({ phoneNumber: PHONE, otp: "000000" }),
    Code.ResourceExhausted,
    "NUMBER_LOCKED",
  );
  assert.equal(locked.metadata.get("retry-after"), "900");
  elapse(100);
  const still = await refused(
    client.verifyPhoneNumber({ phoneNumber: PHONE, otp: "123456" }),
    Code.ResourceExhausted,
    "NUMBER_LOCKED",
  );
  assert.equal(still.metadata.get("retry-after"), "800");
  elapse(800);
  await issue(PHONE, "signup", "123456");
  await client.verifyPhoneNumber({ phoneNumber: PHONE, otp: "123456" });
});

Deno.test("per-address check caps refuse code checks before any lookup", async () => {
  const { client } = await setup({
    settings: { perAddress: { ...SETTINGS.perAddress, checkLimit: 1 } },
  });
  const from = { headers: { "x-test-address": "192.0.2.7" } };
  await refused(
    client.verifyPhoneNumber({ phoneNumber: PHONE, otp: "123456" }, from),
    Code.Unauthenticated,
    "CODE_INVALID",
  );
  await refused(
    client.loginWithPhoneNumber({ phoneNumber: OTHER, otp: "123456" }, from),
    Code.ResourceExhausted,
    "RATE_LIMITED",
  );
});
