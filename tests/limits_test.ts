// The send and check limits through real processes: each trips with resource_exhausted and a
// retry time, nothing is sent meanwhile, and it lifts once its (short, configured)
// window has passed. Two replicas of each service share them.
import assert from "node:assert/strict";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { AuthService } from "../shared/gen/auth/v1/auth_pb.ts";
import { OtpService } from "../shared/gen/otp/v1/otp_pb.ts";
import { RetryInfoSchema } from "../shared/gen/google/rpc/error_details_pb.ts";
import { parseConsoleSmsLine } from "../otp_service/sms/console_sender.ts";
import { codeFor } from "../testing/sms_codes.ts";
import { randomPhone, startStack } from "../testing/stack.ts";
import { Service, taskArgs } from "../testing/processes.ts";
import { delay } from "../shared/async.ts";

const limits = {
  OTP_SEND_COOLDOWN_SECONDS: "2",
  OTP_SENDS_PER_HOUR: "3",
  RATE_HOUR_SECONDS: "12",
  LOCK_AFTER_FAILURES: "7",
  LOCK_SECONDS: "2",
};
// Codes live 5 s here, so a test can wait for a fresh code (a resend while one is live
// carries the same code).
const stack = await startStack({ authEnv: limits, otpEnv: { ...limits, OTP_TTL_SECONDS: "5" } });
const capped = await startStack({
  authEnv: {
    ADDRESS_SEND_LIMIT: "3",
    ADDRESS_CHECK_LIMIT: "4",
    ADDRESS_WINDOW_SECONDS: "3",
    ALLOWED_COUNTRIES: "US",
  },
  otpEnv: { SMS_HOURLY_BUDGET: "2", RATE_HOUR_SECONDS: "4", ALLOWED_COUNTRIES: "US" },
});
// Short sessions and a daily cap below the hourly one, so each trips on its own.
const daily = await startStack({
  authEnv: {
    OTP_SEND_COOLDOWN_SECONDS: "0",
    OTP_SENDS_PER_DAY: "2",
    RATE_DAY_SECONDS: "5",
    SESSION_TTL_SECONDS: "3",
    SESSION_IDLE_SECONDS: "2",
  },
  otpEnv: { OTP_SEND_COOLDOWN_SECONDS: "0", OTP_SENDS_PER_DAY: "2", RATE_DAY_SECONDS: "5" },
});
Deno.test.afterAll(async () => {
  await Promise.all([stack.stop(), capped.stop(), daily.stop()]);
});

const client = (url: string) => createClient(AuthService, createConnectTransport({ baseUrl: url }));
const auth = client(stack.authUrl);

async function exhausted(p: Promise<unknown>): Promise<number> {
  try {
    await p;
  } catch (err) {
    const e = ConnectError.from(err);
    assert.equal(Code[e.code], "ResourceExhausted", e.message);
    const retry = Number(e.findDetails(RetryInfoSchema)[0]?.retryDelay?.seconds ?? 0);
    assert.ok(retry >= 1, "a RetryInfo detail says when to retry");
    assert.match(e.rawMessage, new RegExp(`retry in ${retry}s`));
    return retry;
  }
  assert.fail("expected resource_exhausted");
}

// A limit counts an event for between one window and 61/60 of it (its counters are
// window/60 wide), so the wait it names can round up past the window itself.
const atMost = (windowSeconds: number) => Math.ceil(windowSeconds * 61 / 60);

const smsCount = (s: typeof stack, phone: string) =>
  s.otp.lines.filter((l) => parseConsoleSmsLine(l)?.to === phone).length;

Deno.test("50 concurrent submissions of the right code create exactly one session", async () => {
  const phone = randomPhone();
  const mark = stack.otp.lines.length;
  await auth.signupWithPhoneNumber({ phoneNumber: phone });
  const code = await codeFor(stack, phone, "signup", mark);
  const results = await Promise.allSettled(
    Array.from({ length: 50 }, () => auth.verifyPhoneNumber({ phoneNumber: phone, otp: code })),
  );
  assert.equal(results.filter((r) => r.status === "fulfilled").length, 1);
  for (const r of results) {
    if (r.status === "rejected") {
      assert.equal(ConnectError.from(r.reason).code, Code.Unauthenticated);
    }
  }
  const [s] = await stack.sql`select count(*)::int as n from auth.sessions s
    join auth.users u on u.id = s.user_id where u.phone_number = ${phone}`;
  assert.equal(s!.n, 1);
});

Deno.test("50 concurrent signups of one new number make one user and at most one SMS", async () => {
  const phone = randomPhone();
  const results = await Promise.allSettled(
    Array.from({ length: 50 }, () => auth.signupWithPhoneNumber({ phoneNumber: phone })),
  );
  assert.equal(results.filter((r) => r.status === "fulfilled").length, 1);
  await codeFor(stack, phone, "signup");
  await delay(300);
  assert.equal(smsCount(stack, phone), 1);
  const [u] = await stack
    .sql`select count(*)::int as n from auth.users where phone_number = ${phone}`;
  assert.equal(u!.n, 1);
});

Deno.test("a second code within the cooldown is refused, sends nothing, and works after it", async () => {
  const phone = randomPhone();
  await auth.signupWithPhoneNumber({ phoneNumber: phone });
  await codeFor(stack, phone, "signup");
  const retry = await exhausted(auth.signupWithPhoneNumber({ phoneNumber: phone }));
  assert.ok(retry <= atMost(2), `retry in ${retry}s`);
  await delay(2_200);
  await auth.signupWithPhoneNumber({ phoneNumber: phone });
  await stack.otp.waitForLine((l) =>
    parseConsoleSmsLine(l)?.to === phone && smsCount(stack, phone) === 2
  );
});

Deno.test("the per-number hourly cap trips after 3 codes and lifts when the window passes", async () => {
  const phone = randomPhone();
  for (let i = 0; i < 3; i++) {
    await auth.signupWithPhoneNumber({ phoneNumber: phone });
    await delay(2_100); // past the cooldown
  }
  const retry = await exhausted(auth.signupWithPhoneNumber({ phoneNumber: phone }));
  assert.ok(retry <= atMost(12), `retry in ${retry}s`);
  const [r] = await stack
    .sql`select count(*)::int as n from otp.requests where phone_number = ${phone}`;
  assert.ok(r!.n <= 3);
  await delay(retry * 1000 + 200);
  await auth.signupWithPhoneNumber({ phoneNumber: phone });
});

Deno.test("a number is locked after consecutive wrong codes across codes, then unlocks", async () => {
  const phone = randomPhone();
  let mark = stack.otp.lines.length;
  await auth.signupWithPhoneNumber({ phoneNumber: phone });
  let code = await codeFor(stack, phone, "signup", mark);
  const wrong = (c: string) => (c === "000000" ? "000001" : "000000");
  for (let i = 0; i < 5; i++) {
    await assert.rejects(auth.verifyPhoneNumber({ phoneNumber: phone, otp: wrong(code) }));
  }
  await delay(5_100); // past the code's expiry, so the next request opens a new one
  mark = stack.otp.lines.length;
  await auth.signupWithPhoneNumber({ phoneNumber: phone });
  code = await codeFor(stack, phone, "signup", mark);
  await assert.rejects(auth.verifyPhoneNumber({ phoneNumber: phone, otp: wrong(code) }));
  // The 7th consecutive failure locks the number: even the right code is refused.
  await exhausted(auth.verifyPhoneNumber({ phoneNumber: phone, otp: wrong(code) }));
  await exhausted(auth.verifyPhoneNumber({ phoneNumber: phone, otp: code }));
  const [a] = await stack.sql`select count(*)::int as n from auth.audit_events
    where phone_number = ${phone} and event = 'number_locked'`;
  assert.equal(a!.n, 1);
  await delay(2_100);
  assert.ok((await auth.verifyPhoneNumber({ phoneNumber: phone, otp: code })).sessionToken);
});

Deno.test("two replicas of each service share the limits", async () => {
  const env = { ...stack.env.auth, AUTH_PORT: "0" };
  const auth2 = new Service("auth-2", await taskArgs("auth"), env);
  const otp2 = new Service("otp-2", await taskArgs("otp"), { ...stack.env.otp, OTP_PORT: "0" });
  try {
    const a2 = client(`http://127.0.0.1:${await auth2.waitListening()}`);
    const o2 = `http://127.0.0.1:${await otp2.waitListening()}`;
    const phone = randomPhone();
    await auth.signupWithPhoneNumber({ phoneNumber: phone });
    await exhausted(a2.signupWithPhoneNumber({ phoneNumber: phone }));
    await codeFor(stack, phone, "signup");
    // otp-service's own check holds on its other replica too, even when called directly.
    const otp = createClient(OtpService, createConnectTransport({ baseUrl: o2 }));
    const bearer = { headers: { authorization: `Bearer ${stack.secrets.INTERNAL_API_TOKEN}` } };
    await otp.generateOtp({ phoneNumber: phone }, bearer);
    await exhausted(otp.generateOtp({ phoneNumber: phone }, bearer));
  } finally {
    await Promise.all([auth2.stop(), otp2.stop()]);
  }
});

Deno.test("per-address caps on sending and checking trip and lift with the window", async () => {
  const c = client(capped.authUrl);
  for (let i = 0; i < 3; i++) await c.signupWithPhoneNumber({ phoneNumber: randomPhone() });
  await exhausted(c.signupWithPhoneNumber({ phoneNumber: randomPhone() }));
  for (let i = 0; i < 4; i++) {
    await assert.rejects(c.verifyPhoneNumber({ phoneNumber: randomPhone(), otp: "123456" }));
  }
  await exhausted(c.verifyPhoneNumber({ phoneNumber: randomPhone(), otp: "123456" }));
  await delay(3_100);
  await c.signupWithPhoneNumber({ phoneNumber: randomPhone() });
});

Deno.test("numbers outside the allowed countries are permission_denied and sent nothing", async () => {
  const c = client(capped.authUrl);
  await assert.rejects(
    c.signupWithPhoneNumber({ phoneNumber: "+442071838750" }),
    (e) => ConnectError.from(e).code === Code.PermissionDenied,
  );
  const otp = createClient(OtpService, createConnectTransport({ baseUrl: capped.otpUrl }));
  await assert.rejects(
    otp.generateOtp({ phoneNumber: "+442071838750" }, {
      headers: { authorization: `Bearer ${capped.secrets.INTERNAL_API_TOKEN}` },
    }),
    (e) => ConnectError.from(e).code === Code.PermissionDenied,
  );
  assert.ok(!capped.otp.lines.some((l) => l.includes("+442071838750")));
});

Deno.test("the global hourly SMS budget stops all sending until the window passes", async () => {
  await delay(4_100); // let earlier sends in this stack age out of the window
  const otp = createClient(OtpService, createConnectTransport({ baseUrl: capped.otpUrl }));
  const bearer = { headers: { authorization: `Bearer ${capped.secrets.INTERNAL_API_TOKEN}` } };
  await otp.generateOtp({ phoneNumber: randomPhone() }, bearer);
  await otp.generateOtp({ phoneNumber: randomPhone() }, bearer);
  const phone = randomPhone();
  await exhausted(otp.generateOtp({ phoneNumber: phone }, bearer));
  assert.ok(!capped.otp.lines.some((l) => parseConsoleSmsLine(l)?.to === phone));
  await delay(4_100);
  await otp.generateOtp({ phoneNumber: phone }, bearer);
});

async function sessionFor(s: typeof stack): Promise<{ phone: string; bearer: object }> {
  const c = client(s.authUrl);
  const phone = randomPhone();
  const mark = s.otp.lines.length;
  await c.signupWithPhoneNumber({ phoneNumber: phone });
  const code = await codeFor(s, phone, "signup", mark);
  const { sessionToken } = await c.verifyPhoneNumber({ phoneNumber: phone, otp: code });
  return { phone, bearer: { headers: { authorization: `Bearer ${sessionToken}` } } };
}

const unauthenticated = (e: unknown) => ConnectError.from(e).code === Code.Unauthenticated;

Deno.test("the per-number daily cap trips and lifts when its window passes", async () => {
  const c = client(daily.authUrl);
  const phone = randomPhone();
  await c.signupWithPhoneNumber({ phoneNumber: phone });
  await c.signupWithPhoneNumber({ phoneNumber: phone });
  const retry = await exhausted(c.signupWithPhoneNumber({ phoneNumber: phone }));
  assert.ok(retry <= atMost(5), `retry in ${retry}s`);
  await delay(retry * 1000 + 200);
  await c.signupWithPhoneNumber({ phoneNumber: phone });
});

Deno.test("a session unused for longer than the idle timeout stops working", async () => {
  const c = client(daily.authUrl);
  const { phone, bearer } = await sessionFor(daily);
  await c.getProfile({ phoneNumber: phone }, bearer);
  await delay(2_300); // idle timeout: 2 s
  await assert.rejects(c.getProfile({ phoneNumber: phone }, bearer), unauthenticated);
});

Deno.test("a session kept busy still ends at its absolute lifetime", async () => {
  const c = client(daily.authUrl);
  const { phone, bearer } = await sessionFor(daily);
  // Used every 0.7 s, so the 2 s idle timeout never passes; the 3 s lifetime does.
  for (let i = 0; i < 3; i++) {
    await delay(700);
    await c.getProfile({ phoneNumber: phone }, bearer);
  }
  await delay(1_300);
  await assert.rejects(c.getProfile({ phoneNumber: phone }, bearer), unauthenticated);
});
