// Every auth-service use case through the Connect router in-process (createRouterTransport:
// no socket, no process), on the in-memory store, with a clock the tests move.
import assert from "node:assert/strict";
import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import type { Interceptor } from "@connectrpc/connect";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { AuthService } from "../shared/gen/auth/v1/auth_pb.ts";
import { RetryInfoSchema } from "../shared/gen/google/rpc/error_details_pb.ts";
import type { IncomingMessage, OutgoingMessage } from "../shared/bus.ts";
import { errorInterceptor, reasonOf } from "../shared/connect_errors.ts";
import { kClientAddress } from "../shared/connect_server.ts";
import { HmacKey, otpMac } from "../shared/crypto.ts";
import { resourceExhausted } from "../shared/errors.ts";
import type { Reason } from "../shared/errors.ts";
import { createLogger } from "../shared/log.ts";
import {
  decodeOtpRequested,
  encodeOtpIssued,
  OtpIssuedSchema,
  OtpPurpose,
  purposeFromName,
} from "../shared/messages.ts";
import type { PurposeName } from "../shared/messages.ts";
import { MemoryAuthStore } from "./memory_store.ts";
import type { AuthSettings, OtpGateway } from "./ports.ts";
import { authRoutes } from "./routes.ts";
import { createUseCases } from "./use_cases.ts";

const PHONE = "+14155550123";
const OTHER = "+14155550124";
const log = createLogger("test", "error");

const SETTINGS: AuthSettings = {
  codeLength: 6,
  maxAttempts: 3,
  maxTtlSeconds: 300,
  sessionTtlSeconds: 3600,
  sessionIdleSeconds: 600,
  sending: {
    cooldownSeconds: 60,
    perHour: 5,
    perDay: 10,
    hourSeconds: 3600,
    daySeconds: 86_400,
    allowedCountries: ["US", "GB"],
  },
  lockAfterFailures: 5,
  lockSeconds: 900,
  perAddress: { sendLimit: 100, checkLimit: 100, windowSeconds: 3600 },
};

// The transport sees no client address; tests that need one name it in a header.
const clientAddress: Interceptor = (next) => (req) => {
  req.contextValues.set(kClientAddress, req.header.get("x-test-address") ?? "");
  return next(req);
};

async function setup(o: { settings?: Partial<AuthSettings>; otp?: OtpGateway } = {}) {
  let now = Date.now();
  const store = new MemoryAuthStore({ now: () => now });
  const hmac = await HmacKey.import("k".repeat(32));
  const asked: { phone: string; purpose: PurposeName }[] = [];
  const otp: OtpGateway = o.otp ?? {
    requestCode: (phone, purpose) => {
      asked.push({ phone, purpose });
      return Promise.resolve();
    },
  };
  const settings = { ...SETTINGS, ...o.settings };
  const useCases = createUseCases({ store, otp, hmac, log }, settings);
  const transport = createRouterTransport(authRoutes(useCases), {
    router: { interceptors: [errorInterceptor(log), clientAddress] },
  });
  const client = createClient(AuthService, transport);

  /** Delivers the challenge otp-service would issue for `code`; returns the disposition. */
  const issue = async (
    phone: string,
    purpose: PurposeName,
    code: string,
    m: { messageId?: string; ageSeconds?: number; ttlSeconds?: number } = {},
  ) => {
    const requestId = crypto.randomUUID();
    const issuedAt = new Date(now - (m.ageSeconds ?? 0) * 1000);
    const msg = encodeOtpIssued(create(OtpIssuedSchema, {
      requestId,
      phoneNumber: phone,
      purpose: purposeFromName(purpose),
      codeMac: await otpMac(hmac, requestId, phone, purpose, code),
      issuedAt: timestampFromDate(issuedAt),
      expiresAt: timestampFromDate(new Date(issuedAt.getTime() + (m.ttlSeconds ?? 300) * 1000)),
      traceId: "t",
    }));
    return await useCases.challenges.handle(
      incoming({ ...msg, messageId: m.messageId ?? requestId }),
    );
  };

  /** Signs the number up and redeems the code: returns a session token. */
  const verifiedUser = async (phone = PHONE) => {
    await client.signupWithPhoneNumber({ phoneNumber: phone });
    await issue(phone, "signup", "123456");
    return (await client.verifyPhoneNumber({ phoneNumber: phone, otp: "123456" })).sessionToken;
  };

  const elapse = (seconds: number) => {
    now += seconds * 1000;
  };
  return { store, client, asked, issue, verifiedUser, elapse, useCases };
}

function incoming(m: OutgoingMessage): IncomingMessage {
  return {
    messageId: m.messageId,
    type: m.type,
    contentType: m.contentType,
    correlationId: m.correlationId,
    timestamp: m.timestamp,
    body: m.body,
    deliveryCount: 1,
  };
}

const bearer = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });

async function refused(call: Promise<unknown>, code: Code, reason: Reason): Promise<ConnectError> {
  const err = await call.then(() => undefined, (e) => ConnectError.from(e));
  assert.ok(err, "the call succeeded");
  assert.equal(Code[err.code], Code[code], err.rawMessage);
  assert.equal(reasonOf(err), reason);
  return err;
}

Deno.test("signup creates an unverified user and queues one signup code request", async () => {
  const { client, store } = await setup();
  const res = await client.signupWithPhoneNumber({ phoneNumber: "+1 (415) 555-0123" });
  assert.equal(res.message, "Signup successful, OTP will be sent soon");
  assert.equal(store.outbox.length, 1);
  const req = decodeOtpRequested(incoming(store.outbox[0]!));
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
  assert.equal(err.findDetails(RetryInfoSchema)[0]?.retryDelay?.seconds, 40n);
  assert.match(err.rawMessage, /a code was sent to this number moments ago/);
  elapse(40);
  await client.signupWithPhoneNumber({ phoneNumber: PHONE });
  assert.equal(store.outbox.length, 2);
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

Deno.test("a session reads its own profile only, and needs a well-formed bearer token", async () => {
  const { client, verifiedUser } = await setup();
  const token = await verifiedUser();
  await verifiedUser(OTHER);
  const p = await client.getProfile({ phoneNumber: "+1 415 555 0123" }, bearer(token));
  assert.equal(p.phoneNumber, PHONE);
  await refused(
    client.getProfile({ phoneNumber: OTHER }, bearer(token)),
    Code.PermissionDenied,
    "NOT_OWN_PROFILE",
  );
  await refused(client.getProfile({ phoneNumber: PHONE }), Code.Unauthenticated, "SESSION_INVALID");
  await refused(
    client.getProfile({ phoneNumber: PHONE }, bearer(token.slice(1))),
    Code.Unauthenticated,
    "SESSION_INVALID",
  );
  await refused(
    client.getProfile({ phoneNumber: PHONE }, bearer("A".repeat(43))),
    Code.Unauthenticated,
    "SESSION_INVALID",
  );
});

Deno.test("a session left idle past the idle timeout is gone; one in use lives on", async () => {
  const { client, verifiedUser, elapse } = await setup();
  const token = await verifiedUser();
  elapse(500);
  await client.getProfile({ phoneNumber: PHONE }, bearer(token));
  elapse(500);
  await client.getProfile({ phoneNumber: PHONE }, bearer(token));
  elapse(601);
  await refused(
    client.getProfile({ phoneNumber: PHONE }, bearer(token)),
    Code.Unauthenticated,
    "SESSION_INVALID",
  );
});

Deno.test("logout revokes this session, or with all every session of the user", async () => {
  const { client, issue, verifiedUser } = await setup();
  const first = await verifiedUser();
  const sessions = [];
  for (const code of ["111111", "222222"]) {
    await issue(PHONE, "login", code, { ageSeconds: -sessions.length - 1 });
    sessions.push(
      (await client.loginWithPhoneNumber({ phoneNumber: PHONE, otp: code })).sessionToken,
    );
  }
  assert.equal((await client.logout({}, bearer(first))).revoked, 1);
  await refused(
    client.getProfile({ phoneNumber: PHONE }, bearer(first)),
    Code.Unauthenticated,
    "SESSION_INVALID",
  );
  await refused(client.logout({}, bearer(first)), Code.Unauthenticated, "SESSION_INVALID");
  await client.getProfile({ phoneNumber: PHONE }, bearer(sessions[1]!));
  assert.equal((await client.logout({ all: true }, bearer(sessions[0]!))).revoked, 2);
  await refused(
    client.getProfile({ phoneNumber: PHONE }, bearer(sessions[1]!)),
    Code.Unauthenticated,
    "SESSION_INVALID",
  );
});

Deno.test("the challenge consumer stores a code once; a redelivery or an older code changes nothing", async () => {
  const { client, issue } = await setup();
  await client.signupWithPhoneNumber({ phoneNumber: PHONE });
  assert.equal(await issue(PHONE, "signup", "111111", { messageId: "m1" }), "ack");
  // The same message again (duplicate) and an older one (superseded) are acknowledged...
  assert.equal(await issue(PHONE, "signup", "222222", { messageId: "m1" }), "ack");
  assert.equal(await issue(PHONE, "signup", "333333", { messageId: "m2", ageSeconds: 10 }), "ack");
  // ...and the stored code is still the first one.
  for (const otp of ["222222", "333333"]) {
    await refused(
      client.verifyPhoneNumber({ phoneNumber: PHONE, otp }),
      Code.Unauthenticated,
      "CODE_INVALID",
    );
  }
  await client.verifyPhoneNumber({ phoneNumber: PHONE, otp: "111111" });
});

Deno.test("a newer code replaces the live one", async () => {
  const { client, issue } = await setup();
  await client.signupWithPhoneNumber({ phoneNumber: PHONE });
  await issue(PHONE, "signup", "111111");
  await issue(PHONE, "signup", "222222", { ageSeconds: -1 });
  await refused(
    client.verifyPhoneNumber({ phoneNumber: PHONE, otp: "111111" }),
    Code.Unauthenticated,
    "CODE_INVALID",
  );
  await client.verifyPhoneNumber({ phoneNumber: PHONE, otp: "222222" });
});

Deno.test("a claimed validity longer than ours is cut to ours", async () => {
  const { client, issue, elapse } = await setup();
  await client.signupWithPhoneNumber({ phoneNumber: PHONE });
  await issue(PHONE, "signup", "111111", { ttlSeconds: 3600 });
  elapse(301);
  await refused(
    client.verifyPhoneNumber({ phoneNumber: PHONE, otp: "111111" }),
    Code.Unauthenticated,
    "CODE_INVALID",
  );
});

Deno.test("messages that can never be processed are dead-lettered and store nothing", async () => {
  const { issue, useCases } = await setup();
  const hmac = await HmacKey.import("k".repeat(32));
  const good = {
    requestId: crypto.randomUUID(),
    phoneNumber: PHONE,
    purpose: OtpPurpose.SIGNUP,
    codeMac: await otpMac(hmac, "x", PHONE, "signup", "123456"),
    issuedAt: timestampFromDate(new Date()),
    expiresAt: timestampFromDate(new Date(Date.now() + 60_000)),
    traceId: "",
  };
  const bad: [string, IncomingMessage][] = [
    ["wrong type", { ...incoming(encodeOtpIssued(create(OtpIssuedSchema, good))), type: "x.Y" }],
    ["not protobuf", {
      ...incoming(encodeOtpIssued(create(OtpIssuedSchema, good))),
      body: new Uint8Array([255, 255]),
    }],
    [
      "short mac",
      incoming(encodeOtpIssued(create(OtpIssuedSchema, { ...good, codeMac: new Uint8Array(5) }))),
    ],
    [
      "not E.164",
      incoming(encodeOtpIssued(create(OtpIssuedSchema, { ...good, phoneNumber: "4155550123" }))),
    ],
    [
      "no purpose",
      incoming(
        encodeOtpIssued(create(OtpIssuedSchema, { ...good, purpose: OtpPurpose.UNSPECIFIED })),
      ),
    ],
    [
      "no expiry",
      incoming(encodeOtpIssued(create(OtpIssuedSchema, { ...good, expiresAt: undefined }))),
    ],
    [
      "expires before issued",
      incoming(encodeOtpIssued(create(OtpIssuedSchema, { ...good, expiresAt: good.issuedAt }))),
    ],
  ];
  for (const [name, m] of bad) {
    assert.equal(await useCases.challenges.handle(m), "dead-letter", name);
  }
  // Nothing was recorded as handled: the first good message with one of those ids is stored.
  assert.equal(await issue(PHONE, "signup", "123456", { messageId: good.requestId }), "ack");
});
