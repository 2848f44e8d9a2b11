// Requesting codes (signup, ValidatePhoneNumberLogin) through the Connect router
// in-process, on the in-memory store.
import assert from "node:assert/strict";
import { Code } from "@connectrpc/connect";
import { RetryInfoSchema } from "../shared/gen/google/rpc/error_details_pb.ts";
import { resourceExhausted } from "../shared/errors.ts";
import { decodeOtpRequested, OtpPurpose } from "../shared/messages.ts";
import type { OtpGateway } from "./ports.ts";
import { incoming, OTHER, PHONE, refused, SETTINGS, setup } from "./domain_fixture.ts";

Deno.test("signup creates an unverified user and queues one signup code request", async () => {
  const { client, store } = await setup();
  const res = await client.signupWithPhoneNumber({ phoneNumber: "+1 (415) 555-0123" });
  assert.equal(res.message, "Signup successful, OTP will be sent soon");
  assert.equal(store.otpRequests.length, 1);
  const req = decodeOtpRequested(incoming(store.otpRequests[0]!));
  assert.equal(req.phoneNumber, PHONE);
  assert.equal(req.purpose, OtpPurpose.SIGNUP);
  const check = await client.validatePhoneNumberLogin({ phoneNumber: PHONE });
  assert.equal(check.isValid, false, "not verified yet");
});

Deno.test("signup refuses bad numbers, countries not enabled and verified numbers", async () => {
  const { client, verifiedUser } = await setup();
  await refused(
    client.signupWithPhoneNumber({ phoneNumber: "12" }),
    Code.InvalidArgument,
    "PHONE_INVALID",
  );
  await refused(
    client.signupWithPhoneNumber({ phoneNumber: "+33612345678" }),
    Code.PermissionDenied,
    "COUNTRY_NOT_ALLOWED",
  );
  await verifiedUser();
  await refused(
    client.signupWithPhoneNumber({ phoneNumber: PHONE }),
    Code.AlreadyExists,
    "ALREADY_REGISTERED",
  );
});

Deno.test("a second code within the cooldown is refused with when to retry", async () => {
  const { client, store, elapse } = await setup();
  await client.signupWithPhoneNumber({ phoneNumber: PHONE });
  elapse(20);
  const err = await refused(
    client.signupWithPhoneNumber({ phoneNumber: PHONE }),
    Code.ResourceExhausted,
    "RATE_LIMITED",
  );
  // The limits engine counts an event for up to 61/60 of its window (whole slots of
  // window/60), never less: 60 s after the first code, plus one slot.
  assert.equal(err.findDetails(RetryInfoSchema)[0]?.retryDelay?.seconds, 41n);
  assert.match(err.rawMessage, /a code was sent to this number moments ago/);
  elapse(41);
  await client.signupWithPhoneNumber({ phoneNumber: PHONE });
  assert.equal(store.otpRequests.length, 2);
});

Deno.test("per-address send caps hold across numbers", async () => {
  const { client } = await setup({
    settings: { perAddress: { ...SETTINGS.perAddress, sendLimit: 1 } },
  });
  const from = { headers: { "x-test-address": "192.0.2.7" } };
  await client.signupWithPhoneNumber({ phoneNumber: PHONE }, from);
  const err = await refused(
    client.signupWithPhoneNumber({ phoneNumber: OTHER }, from),
    Code.ResourceExhausted,
    "RATE_LIMITED",
  );
  assert.match(err.rawMessage, /from this address/);
  await client.signupWithPhoneNumber({ phoneNumber: OTHER }, {
    headers: { "x-test-address": "192.0.2.8" },
  });
});

Deno.test("a signup the number's limits refuse still costs its address the call", async () => {
  const { client } = await setup({
    settings: { perAddress: { ...SETTINGS.perAddress, sendLimit: 2 } },
  });
  const from = { headers: { "x-test-address": "192.0.2.9" } };
  await client.signupWithPhoneNumber({ phoneNumber: PHONE }, from);
  const cooldown = await refused(
    client.signupWithPhoneNumber({ phoneNumber: PHONE }, from),
    Code.ResourceExhausted,
    "RATE_LIMITED",
  );
  assert.match(cooldown.rawMessage, /moments ago/);
  const full = await refused(
    client.signupWithPhoneNumber({ phoneNumber: OTHER }, from),
    Code.ResourceExhausted,
    "RATE_LIMITED",
  );
  assert.match(full.rawMessage, /from this address/);
});

Deno.test("validate login asks otp-service for a login code only for a verified user", async () => {
  const { client, asked, verifiedUser } = await setup();
  assert.equal((await client.validatePhoneNumberLogin({ phoneNumber: PHONE })).isValid, false);
  assert.deepEqual(asked, []);
  await verifiedUser();
  assert.equal((await client.validatePhoneNumberLogin({ phoneNumber: PHONE })).isValid, true);
  assert.deepEqual(asked, [{ phone: PHONE, purpose: "login" }]);
  await refused(
    client.validatePhoneNumberLogin({ phoneNumber: PHONE }),
    Code.ResourceExhausted,
    "RATE_LIMITED",
  );
  assert.equal(asked.length, 1, "a refused request asks for nothing");
});

Deno.test("validate login passes otp-service's refusal on with its retry time", async () => {
  const otp: OtpGateway = { requestCode: () => Promise.reject(resourceExhausted("busy", 30)) };
  const { client, verifiedUser } = await setup({ otp });
  await verifiedUser();
  const err = await refused(
    client.validatePhoneNumberLogin({ phoneNumber: PHONE }),
    Code.ResourceExhausted,
    "RATE_LIMITED",
  );
  assert.equal(err.metadata.get("retry-after"), "30");
});
