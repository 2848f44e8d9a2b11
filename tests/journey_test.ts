// The full journey through real processes, real PostgreSQL and real RabbitMQ:
// signup, the code arriving over the bus, verify, profile, validate, login with a
// second code, profile again; once with a Connect client and once with plain fetch.
import assert from "node:assert/strict";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { AuthService } from "../shared/gen/auth/v1/auth_pb.ts";
import { codeFor } from "../testing/sms_codes.ts";
import { randomPhone, startStack } from "../testing/stack.ts";

const stack = await startStack();

Deno.test.afterAll?.(() => stack.stop());

Deno.test("a new user signs up, verifies, reads the profile and logs in again over Connect", async () => {
  const client = createClient(AuthService, createConnectTransport({ baseUrl: stack.authUrl }));
  const phone = randomPhone();
  const pretty = `+1 (${phone.slice(2, 5)}) ${phone.slice(5, 8)}-${phone.slice(8)}`;
  const mark = stack.otp.lines.length;

  const signup = await client.signupWithPhoneNumber({ phoneNumber: pretty });
  assert.equal(signup.message, "Signup successful, OTP will be sent soon");

  const code = await codeFor(stack, phone, "signup", mark);
  const { sessionToken, accessToken, expiresIn } = await client.verifyPhoneNumber({
    phoneNumber: phone,
    otp: code,
  });
  assert.match(sessionToken, /^[A-Za-z0-9_-]{43}$/);
  assert.equal(accessToken.split(".").length, 3, "a JWT");
  assert.equal(expiresIn, 600);

  const auth = { headers: { authorization: `Bearer ${sessionToken}` } };
  const profile = await client.getProfile({ phoneNumber: pretty }, auth);
  assert.equal(profile.phoneNumber, phone);
  assert.equal(profile.verified, true);

  const mark2 = stack.otp.lines.length;
  assert.equal((await client.validatePhoneNumberLogin({ phoneNumber: phone })).isValid, true);
  const code2 = await codeFor(stack, phone, "login", mark2);
  assert.notEqual(code2, code);
  const login = await client.loginWithPhoneNumber({ phoneNumber: phone, otp: code2 });
  assert.notEqual(login.sessionToken, sessionToken);

  const again = await client.getProfile({ phoneNumber: phone }, {
    headers: { authorization: `Bearer ${login.sessionToken}` },
  });
  assert.equal(again.userId, profile.userId);
});

async function post(method: string, body: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(`${stack.authUrl}/auth.v1.AuthService/${method}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify(body),
  });
  return { status: res.status, json: await res.json() };
}

Deno.test("the same journey works with plain JSON over fetch, snake_case in and out", async () => {
  const phone = randomPhone();
  const mark = stack.otp.lines.length;
  const signup = await post("SignupWithPhoneNumber", { phone_number: phone });
  assert.deepEqual(signup, {
    status: 200,
    json: { message: "Signup successful, OTP will be sent soon" },
  });
  const code = await codeFor(stack, phone, "signup", mark);
  // lowerCamelCase is accepted too.
  const verify = await post("VerifyPhoneNumber", { phoneNumber: phone, otp: code });
  assert.equal(verify.status, 200);
  const token = verify.json.session_token as string;
  assert.ok(token);

  const profile = await post("GetProfile", { phone_number: phone }, {
    authorization: `Bearer ${token}`,
  });
  assert.equal(profile.status, 200);
  assert.equal(profile.json.phone_number, phone);
  assert.equal(profile.json.verified, true);

  const mark2 = stack.otp.lines.length;
  assert.deepEqual(await post("ValidatePhoneNumberLogin", { phone_number: phone }), {
    status: 200,
    json: { is_valid: true },
  });
  const code2 = await codeFor(stack, phone, "login", mark2);
  const login = await post("LoginWithPhoneNumber", { phone_number: phone, otp: code2 });
  assert.equal(login.status, 200);
  const again = await post("GetProfile", { phone_number: phone }, {
    authorization: `Bearer ${login.json.session_token}`,
  });
  assert.equal(again.json.user_id, profile.json.user_id);
});

Deno.test("an unknown number is not valid for login, and the reply still carries the field", async () => {
  assert.deepEqual(await post("ValidatePhoneNumberLogin", { phone_number: randomPhone() }), {
    status: 200,
    json: { is_valid: false },
  });
});
