// otp-service as a process with SMS_PROVIDER=twilio: the real npm:twilio client talks
// to a local imitation of Twilio's Messages API, and the code it carries verifies.
import assert from "node:assert/strict";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { AuthService } from "../shared/gen/auth/v1/auth_pb.ts";
import { startFakeTwilio } from "../testing/fake_twilio.ts";
import { codeIn, findCode } from "../testing/sms_codes.ts";
import { delay, pollUntil } from "../shared/async.ts";
import { randomPhone, startStack } from "../testing/stack.ts";

const accountSid = `AC${"0123456789abcdef".repeat(2)}`;
const authToken = "test-auth-token-0123456789";
const fake = startFakeTwilio({ accountSid, authToken });
const stack = await startStack({
  otpEnv: {
    SMS_PROVIDER: "twilio",
    TWILIO_ACCOUNT_SID: accountSid,
    TWILIO_AUTH_TOKEN: authToken,
    TWILIO_FROM_NUMBER: "+15005550006",
    TWILIO_API_BASE_URL: fake.url,
    SMS_TIMEOUT_MS: "400",
    SMS_RETRY_ATTEMPTS: "3",
  },
});
Deno.test.afterAll(async () => {
  await stack.stop();
  await fake.close();
});
const auth = createClient(AuthService, createConnectTransport({ baseUrl: stack.authUrl }));

Deno.test("with Twilio configured, the code goes out through the Messages API and verifies", async () => {
  const phone = randomPhone();
  const before = fake.requests.length;
  await auth.signupWithPhoneNumber({ phoneNumber: phone });
  const [req] = (await fake.waitForRequests(before + 1, 10_000)).slice(before);
  assert.ok(req!.authOk, "Basic auth with the account SID and token");
  assert.equal(req!.to, phone);
  assert.equal(req!.from, "+15005550006");
  const code = findCode(req!.body);
  assert.ok(code);
  const { sessionToken } = await pollUntil(
    () => auth.verifyPhoneNumber({ phoneNumber: phone, otp: code }).catch(() => undefined),
    { timeoutMs: 10_000, what: "the challenge to arrive" },
  );
  assert.ok(sessionToken);
  // Production never prints codes.
  assert.ok(!stack.otp.lines.some((l) => l.includes(code)));
  assert.ok(!stack.otp.lines.some((l) => l.includes(authToken)));
});

Deno.test("a permanent Twilio error sends nothing twice and the code is never accepted", async () => {
  const phone = randomPhone();
  fake.script([{
    status: 400,
    code: 21211,
    message: "The 'To' number is not a valid phone number.",
  }]);
  const before = fake.requests.length;
  await auth.signupWithPhoneNumber({ phoneNumber: phone });
  await pollUntil(async () => {
    const [r] = await stack.sql`select status from otp.requests where phone_number = ${phone}`;
    return r?.status === "failed";
  }, { timeoutMs: 10_000, what: "the request to be marked failed" });
  assert.equal(fake.requests.length, before + 1, "no retry of a permanent error");
  const [c] = await stack.sql`select count(*)::int as n from auth.challenges
    where phone_number = ${phone}`;
  assert.equal(c!.n, 0);
  const body = fake.requests.at(-1)!.body ?? "";
  const code = codeIn(body);
  await assert.rejects(
    auth.verifyPhoneNumber({ phoneNumber: phone, otp: code }),
    (e) => ConnectError.from(e).code === Code.Unauthenticated,
  );
});

Deno.test("a Twilio request that times out is retried and the code still arrives", async () => {
  const phone = randomPhone();
  fake.script([{ delayMs: 1_500 }, "ok"]);
  const before = fake.requests.length;
  await auth.signupWithPhoneNumber({ phoneNumber: phone });
  await pollUntil(async () => {
    const [r] = await stack.sql`select status from otp.requests where phone_number = ${phone}`;
    return r?.status === "sent";
  }, { timeoutMs: 10_000, what: "the request to be sent after a retry" });
  // The fake records the slow request when it finally answers.
  const mine = await pollUntil(() => {
    const m = fake.requests.slice(before).filter((r) => r.to === phone);
    return Promise.resolve(m.length >= 2 ? m : undefined);
  }, { timeoutMs: 5_000, what: "both requests to reach the fake" });
  // Retries resend the same code: whichever copy arrives, it verifies.
  assert.ok(mine.every((r) => r.body === mine[0]!.body));
  const code = codeIn(mine.at(-1)!.body);
  const { sessionToken } = await pollUntil(
    () => auth.verifyPhoneNumber({ phoneNumber: phone, otp: code }).catch(() => undefined),
    { timeoutMs: 10_000, what: "the challenge to arrive" },
  );
  assert.ok(sessionToken);
});

Deno.test("a provider slower than SMS_TIMEOUT_MS gets at most SMS_RETRY_ATTEMPTS sends of one code, and it verifies", async () => {
  const phone = randomPhone();
  // Every answer comes after the 400 ms timeout: each call may or may not deliver.
  fake.script(Array.from({ length: 12 }, () => ({ delayMs: 1_000 })));
  await auth.signupWithPhoneNumber({ phoneNumber: phone });
  await pollUntil(async () => {
    const [r] = await stack.sql`select status from otp.requests where phone_number = ${phone}`;
    return r?.status === "unconfirmed";
  }, { timeoutMs: 20_000, what: "the request to end unconfirmed" });
  // Anything sent again by the HTTP layer would have arrived by the time the last slow reply is due.
  await delay(1_200);
  const mine = fake.requests.filter((r) => r.to === phone);
  assert.ok(mine.length >= 1 && mine.length <= 3, `${mine.length} provider calls`);
  assert.ok(mine.every((r) => r.body === mine[0]!.body), "one code in every call");
  const [a] = await stack.sql`select attempts from otp.requests where phone_number = ${phone}`;
  assert.equal(a!.attempts, 3);
  // Any of those SMS may have arrived: its code works.
  const code = codeIn(mine[0]!.body);
  const { sessionToken } = await pollUntil(
    () => auth.verifyPhoneNumber({ phoneNumber: phone, otp: code }).catch(() => undefined),
    { timeoutMs: 10_000, what: "the challenge to arrive" },
  );
  assert.ok(sessionToken);
});
