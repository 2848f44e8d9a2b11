// Every rejection path answers its Connect code and changes nothing it should not.
import assert from "node:assert/strict";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { AuthService } from "../shared/gen/auth/v1/auth_pb.ts";
import { OtpService } from "../shared/gen/otp/v1/otp_pb.ts";
import { codeFor } from "../testing/sms_codes.ts";
import { randomPhone, startStack } from "../testing/stack.ts";
import type { Stack } from "../testing/stack.ts";
import { delay } from "../shared/async.ts";

const TTL = 3;
const stack = await startStack({
  authEnv: { OTP_TTL_SECONDS: String(TTL) },
  otpEnv: { OTP_TTL_SECONDS: String(TTL) },
});
Deno.test.afterAll(() => stack.stop());

const auth = createClient(AuthService, createConnectTransport({ baseUrl: stack.authUrl }));
const authBinary = createClient(
  AuthService,
  createConnectTransport({ baseUrl: stack.authUrl, useBinaryFormat: true }),
);

async function rejects(p: Promise<unknown>, code: Code, message?: RegExp): Promise<ConnectError> {
  try {
    await p;
  } catch (err) {
    const e = ConnectError.from(err);
    assert.equal(Code[e.code], Code[code], e.message);
    if (message) assert.match(e.rawMessage, message);
    return e;
  }
  assert.fail(`expected ${Code[code]}`);
}

async function counts(s: Stack) {
  const [r] = await s.sql`
    select (select count(*) from auth.users)::int as users,
           (select count(*) from auth.users where verified_at is not null)::int as verified,
           (select count(*) from auth.sessions)::int as sessions,
           (select count(*) from auth.outbox where exchange <> 'auth.events')::int +
             (select count(*) from otp.requests)::int as requests,
           (select coalesce(sum(failed_attempts), 0) from auth.challenges)::int as failures,
           (select count(*) from auth.challenges where consumed_at is not null)::int as consumed`;
  return r!;
}

/** Signs a new number up and returns its signup code, ready to verify. */
async function signedUp(): Promise<{ phone: string; code: string }> {
  const phone = randomPhone();
  const mark = stack.otp.lines.length;
  await auth.signupWithPhoneNumber({ phoneNumber: phone });
  return { phone, code: await codeFor(stack, phone, "signup", mark) };
}

async function verifiedUser(): Promise<{ phone: string; token: string }> {
  const { phone, code } = await signedUp();
  const { sessionToken } = await auth.verifyPhoneNumber({ phoneNumber: phone, otp: code });
  return { phone, token: sessionToken };
}

const bearer = (t: string) => ({ headers: { authorization: `Bearer ${t}` } });

Deno.test("a malformed phone number is invalid_argument on every RPC and changes nothing", async () => {
  const { token } = await verifiedUser();
  const before = await counts(stack);
  for (const bad of ["", "12345", "+1", "not a phone", "+1415555012345678901234567890123"]) {
    await rejects(auth.signupWithPhoneNumber({ phoneNumber: bad }), Code.InvalidArgument);
    await rejects(
      auth.verifyPhoneNumber({ phoneNumber: bad, otp: "123456" }),
      Code.InvalidArgument,
    );
    await rejects(
      auth.loginWithPhoneNumber({ phoneNumber: bad, otp: "123456" }),
      Code.InvalidArgument,
    );
    await rejects(auth.validatePhoneNumberLogin({ phoneNumber: bad }), Code.InvalidArgument);
    await rejects(auth.getProfile({ phoneNumber: bad }, bearer(token)), Code.InvalidArgument);
  }
  assert.deepEqual(await counts(stack), before);
});

Deno.test("a code that is not six digits is invalid_argument and costs no try", async () => {
  const { phone, code } = await signedUp();
  for (const bad of ["", "12345", "1234567", "abcdef", "12 456"]) {
    await rejects(auth.verifyPhoneNumber({ phoneNumber: phone, otp: bad }), Code.InvalidArgument);
  }
  const [c] = await stack.sql`select failed_attempts from auth.challenges
    where phone_number = ${phone}`;
  assert.equal(c!.failed_attempts, 0);
  await auth.verifyPhoneNumber({ phoneNumber: phone, otp: code });
});

Deno.test("verify and login for a number that never signed up are unauthenticated", async () => {
  const before = await counts(stack);
  const phone = randomPhone();
  await rejects(
    auth.verifyPhoneNumber({ phoneNumber: phone, otp: "123456" }),
    Code.Unauthenticated,
  );
  await rejects(
    auth.loginWithPhoneNumber({ phoneNumber: phone, otp: "123456" }),
    Code.Unauthenticated,
  );
  assert.equal((await auth.validatePhoneNumberLogin({ phoneNumber: phone })).isValid, false);
  assert.deepEqual(await counts(stack), before);
});

Deno.test("a wrong code is unauthenticated, says how many tries remain, and creates no session", async () => {
  const { phone, code } = await signedUp();
  const wrong = code === "000000" ? "000001" : "000000";
  const before = await counts(stack);
  await rejects(
    auth.verifyPhoneNumber({ phoneNumber: phone, otp: wrong }),
    Code.Unauthenticated,
    /invalid or expired code; 4 tries left/,
  );
  const after = await counts(stack);
  assert.equal(after.sessions, before.sessions);
  assert.equal(after.verified, before.verified);
  assert.equal(after.failures, before.failures + 1);
});

Deno.test("the sixth try after five wrong codes is resource_exhausted even with the right code", async () => {
  const { phone, code } = await signedUp();
  const wrong = code === "000000" ? "000001" : "000000";
  for (let i = 0; i < 5; i++) {
    await rejects(auth.verifyPhoneNumber({ phoneNumber: phone, otp: wrong }), Code.Unauthenticated);
  }
  await rejects(auth.verifyPhoneNumber({ phoneNumber: phone, otp: code }), Code.ResourceExhausted);
  const [u] = await stack.sql`select verified_at from auth.users where phone_number = ${phone}`;
  assert.equal(u!.verified_at, null);
});

Deno.test("a used code cannot be used again", async () => {
  const { phone, code } = await signedUp();
  await auth.verifyPhoneNumber({ phoneNumber: phone, otp: code });
  const before = await counts(stack);
  await rejects(
    auth.verifyPhoneNumber({ phoneNumber: phone, otp: code }),
    Code.Unauthenticated,
    /^invalid or expired code$/,
  );
  assert.deepEqual(await counts(stack), before);
});

Deno.test("an expired code is unauthenticated with the same message as a wrong one", async () => {
  const { phone, code } = await signedUp();
  await delay(TTL * 1000 + 300);
  await rejects(
    auth.verifyPhoneNumber({ phoneNumber: phone, otp: code }),
    Code.Unauthenticated,
    /^invalid or expired code$/,
  );
  const [u] = await stack.sql`select verified_at from auth.users where phone_number = ${phone}`;
  assert.equal(u!.verified_at, null);
});

Deno.test("a code issued for signup does not log in, and one for another number does not verify", async () => {
  const a = await verifiedUser();
  const b = await signedUp();
  await rejects(
    auth.loginWithPhoneNumber({ phoneNumber: b.phone, otp: b.code }),
    Code.Unauthenticated,
  );
  await rejects(
    auth.verifyPhoneNumber({ phoneNumber: a.phone, otp: b.code }),
    Code.Unauthenticated,
  );
  // b's code is still good for b: the failed attempts above were on other challenges.
  await auth.verifyPhoneNumber({ phoneNumber: b.phone, otp: b.code });
});

Deno.test("signup of an already verified number is already_exists and queues no code", async () => {
  const { phone } = await verifiedUser();
  const before = await counts(stack);
  await rejects(auth.signupWithPhoneNumber({ phoneNumber: phone }), Code.AlreadyExists);
  assert.deepEqual(await counts(stack), before);
});

Deno.test("GetProfile without a session, with a bad token, or for another user is refused", async () => {
  const a = await verifiedUser();
  const b = await verifiedUser();
  const before = await counts(stack);
  await rejects(auth.getProfile({ phoneNumber: a.phone }), Code.Unauthenticated);
  await rejects(
    auth.getProfile({ phoneNumber: a.phone }, bearer("x".repeat(43))),
    Code.Unauthenticated,
  );
  await rejects(
    auth.getProfile({ phoneNumber: a.phone }, { headers: { authorization: "Basic abc" } }),
    Code.Unauthenticated,
  );
  await rejects(auth.getProfile({ phoneNumber: a.phone }, bearer(b.token)), Code.PermissionDenied);
  assert.deepEqual(await counts(stack), before);
});

Deno.test("a revoked session stops working at once, and logout-all ends every session", async () => {
  const { phone, token } = await verifiedUser();
  assert.equal((await auth.logout({}, bearer(token))).revoked, 1);
  await rejects(auth.getProfile({ phoneNumber: phone }, bearer(token)), Code.Unauthenticated);
  await rejects(auth.logout({}, bearer(token)), Code.Unauthenticated);
});

Deno.test("GenerateOtp without or with a wrong internal token is unauthenticated and sends nothing", async () => {
  const phone = randomPhone();
  const mark = stack.otp.lines.length;
  const otpNoToken = createClient(OtpService, createConnectTransport({ baseUrl: stack.otpUrl }));
  await rejects(otpNoToken.generateOtp({ phoneNumber: phone }), Code.Unauthenticated);
  await rejects(
    otpNoToken.generateOtp({ phoneNumber: phone }, bearer("wrong")),
    Code.Unauthenticated,
  );
  const [r] = await stack
    .sql`select count(*)::int as n from otp.requests where phone_number = ${phone}`;
  assert.equal(r!.n, 0);
  assert.ok(!stack.otp.lines.slice(mark).some((l) => l.includes(phone)));
});

Deno.test("GenerateOtp with the internal token sends a login code", async () => {
  const phone = randomPhone();
  const otp = createClient(OtpService, createConnectTransport({ baseUrl: stack.otpUrl }));
  const res = await otp.generateOtp(
    { phoneNumber: phone },
    bearer(stack.secrets.INTERNAL_API_TOKEN),
  );
  assert.equal(res.message, "OTP sent");
});

Deno.test("malformed JSON and protobuf bodies are invalid_argument and change nothing", async () => {
  const before = await counts(stack);
  const url = `${stack.authUrl}/auth.v1.AuthService/SignupWithPhoneNumber`;
  const cases: [string, BodyInit][] = [
    ["application/json", "{not json"],
    ["application/json", '{"phone_number": 42}'],
    ["application/json", '{"unknown_field": "x"}'],
    ["application/json", "[]"],
    ["application/proto", new Uint8Array([0xff, 0xff, 0xff, 0xff])],
    ["application/proto", new Uint8Array([0x0a, 0x10, 0x41])],
  ];
  for (const [contentType, body] of cases) {
    const res = await fetch(url, {
      method: "POST",
      headers: { "content-type": contentType },
      body,
    });
    const text = await res.text();
    assert.equal(res.status, 400, `${contentType} ${String(body)}: ${text}`);
    assert.equal(JSON.parse(text).code, "invalid_argument");
  }
  assert.deepEqual(await counts(stack), before);
});

Deno.test("the binary protocol works and unknown paths are 404", async () => {
  await rejects(authBinary.validatePhoneNumberLogin({ phoneNumber: "nope" }), Code.InvalidArgument);
  const res = await fetch(`${stack.authUrl}/auth.v1.AuthService/Nope`, { method: "POST" });
  assert.equal(res.status, 404);
  await res.body?.cancel();
});

Deno.test("an undecodable protobuf body over gRPC-Web is INVALID_ARGUMENT, not INTERNAL", async () => {
  const { createGrpcWebTransport } = await import("@connectrpc/connect-web");
  const url = `${stack.authUrl}/auth.v1.AuthService/SignupWithPhoneNumber`;
  const garbage = new Uint8Array([0, 0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff]);
  const res = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/grpc-web+proto" },
    body: garbage,
  });
  const text = new TextDecoder().decode(new Uint8Array(await res.arrayBuffer()));
  assert.equal(res.headers.get("grpc-status") ?? /grpc-status: (\d+)/.exec(text)?.[1], "3");
  // And a well-formed gRPC-Web call works end to end.
  const web = createClient(AuthService, createGrpcWebTransport({ baseUrl: stack.authUrl }));
  assert.equal((await web.validatePhoneNumberLogin({ phoneNumber: randomPhone() })).isValid, false);
});
