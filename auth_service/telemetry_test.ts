// What the use cases report through the telemetry port, in domain words, on the
// in-memory store: requests, refusals with their reason, checks by outcome, codes
// verified by country, sessions opened and revoked. Never a number.
import assert from "node:assert/strict";
import { Code } from "@connectrpc/connect";
import { bearer, PHONE, refused, SETTINGS, setup } from "./domain_fixture.ts";

Deno.test("signup, a refused resend, a wrong and a right code, login and logout are reported", async () => {
  const { client, issue, telemetry } = await setup();
  await client.signupWithPhoneNumber({ phoneNumber: PHONE });
  await refused(
    client.signupWithPhoneNumber({ phoneNumber: PHONE }),
    Code.ResourceExhausted,
    "RATE_LIMITED",
  );
  await issue(PHONE, "signup", "123456");
  await refused(
    client.verifyPhoneNumber({ phoneNumber: PHONE, otp: "000000" }),
    Code.Unauthenticated,
    "CODE_INVALID",
  );
  const { sessionToken } = await client.verifyPhoneNumber({ phoneNumber: PHONE, otp: "123456" });
  assert.equal((await client.validatePhoneNumberLogin({ phoneNumber: PHONE })).isValid, true);
  await client.logout({ all: false }, bearer(sessionToken));

  assert.deepEqual(telemetry.of("codeRequested"), [["signup", "US"], ["login", "US"]]);
  assert.deepEqual(telemetry.of("codeRefused"), [["cooldown", "US"]]);
  assert.deepEqual(telemetry.of("codeChecked"), [["signup", "wrong"], ["signup", "ok"]]);
  assert.deepEqual(telemetry.of("codeVerified"), [["signup", "US"]]);
  assert.deepEqual(telemetry.of("sessionCreated"), [["verify"]]);
  assert.deepEqual(telemetry.of("sessionsRevoked"), [["logout", 1]]);
  assert.equal(JSON.stringify(telemetry.calls).includes(PHONE.slice(1)), false);
});

Deno.test("an invalid number and a country outside the allow-list are refusals with their reason", async () => {
  const { client, telemetry } = await setup({
    settings: { sending: { ...SETTINGS.sending, allowedCountries: ["GB"] } },
  });
  await refused(
    client.signupWithPhoneNumber({ phoneNumber: "12" }),
    Code.InvalidArgument,
    "PHONE_INVALID",
  );
  await refused(
    client.signupWithPhoneNumber({ phoneNumber: PHONE }),
    Code.PermissionDenied,
    "COUNTRY_NOT_ALLOWED",
  );
  assert.deepEqual(telemetry.of("codeRefused"), [
    ["invalid_number", undefined],
    ["country_not_allowed", "US"],
  ]);
  assert.deepEqual(telemetry.of("codeRequested"), []);
});
