// The auth-service domain for tests: every use case behind the Connect router in-process
// (createRouterTransport: no socket, no process), on the in-memory store, with a clock
// the tests move.
import assert from "node:assert/strict";
import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import type { Interceptor } from "@connectrpc/connect";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { AuthService } from "../shared/gen/auth/v1/auth_pb.ts";
import type { IncomingMessage, OutgoingMessage } from "../shared/bus.ts";
import { errorInterceptor, reasonOf } from "../shared/connect_errors.ts";
import { kClientAddress, kRequestId } from "../shared/connect_server.ts";
import { HmacKey, otpMac } from "../shared/crypto.ts";
import type { Reason } from "../shared/errors.ts";
import { createLogger } from "../shared/log.ts";
import { encodeOtpIssued, OtpIssuedSchema, purposeFromName } from "../shared/messages.ts";
import type { PurposeName } from "../shared/messages.ts";
import { RecordingTelemetry } from "../shared/telemetry.ts";
import { AccessTokens, generateDevSigningKey } from "./access_tokens.ts";
import { MemoryLimits } from "../shared/limits/memory.ts";
import { MemoryAuthStore } from "./memory_store.ts";
import type { AuthSettings, OtpGateway } from "./ports.ts";
import { authRoutes } from "./routes.ts";
import { createUseCases } from "./use_cases.ts";

export const PHONE = "+14155550123";
export const OTHER = "+14155550124";
const log = createLogger("test", "error");

export const SETTINGS: AuthSettings = {
  codeLength: 6,
  maxAttempts: 3,
  maxTtlSeconds: 300,
  sessionTtlSeconds: 3600,
  sessionIdleSeconds: 600,
  sessionRotationGraceSeconds: 10,
  sending: {
    cooldownSeconds: 60,
    perHour: 5,
    perDay: 10,
    numberPerHour: 20,
    numberPerDay: 50,
    countryPerHour: 500,
    prefixPerHour: 50,
    hourSeconds: 3600,
    daySeconds: 86_400,
    allowedCountries: ["US", "GB"],
    allowedNumberTypes: ["MOBILE", "FIXED_LINE_OR_MOBILE"],
  },
  lockAfterFailures: 5,
  numberLockAfterFailures: 100,
  lockSeconds: 900,
  failureWindowSeconds: 900,
  perAddress: { sendLimit: 100, checkLimit: 100, windowSeconds: 3600 },
};

// The transport sees no client address; tests that need one name it in a header.
const clientAddress: Interceptor = (next) => (req) => {
  req.contextValues.set(kClientAddress, req.header.get("x-test-address") ?? "");
  req.contextValues.set(kRequestId, req.header.get("x-request-id") ?? crypto.randomUUID());
  return next(req);
};

export async function setup(o: { settings?: Partial<AuthSettings>; otp?: OtpGateway } = {}) {
  let now = Date.now();
  const limits = new MemoryLimits(() => now);
  const store = new MemoryAuthStore({ now: () => now, limits });
  const hmac = HmacKey.import("k".repeat(32));
  const asked: { phone: string; purpose: PurposeName }[] = [];
  /** The spent challenge each request to otp-service named, in order. */
  const spent: (string | undefined)[] = [];
  const otp: OtpGateway = o.otp ?? {
    requestCode: (phone, purpose, _ctx, options) => {
      asked.push({ phone, purpose });
      spent.push(options?.spentChallengeId);
      return Promise.resolve();
    },
  };
  const settings = { ...SETTINGS, ...o.settings };
  const telemetry = new RecordingTelemetry();
  const tokens = await AccessTokens.create({
    signingKey: JSON.parse(await generateDevSigningKey()),
    verifyKeys: [],
    issuer: "phone-auth",
    audience: undefined,
    ttlSeconds: 600,
  });
  const useCases = createUseCases({ store, limits, otp, hmac, tokens, log, telemetry }, settings);
  const transport = createRouterTransport(authRoutes(useCases), {
    router: { interceptors: [errorInterceptor(log), clientAddress] },
  });
  const client = createClient(AuthService, transport);

  /** Delivers the challenge otp-service would issue for `code`; returns the disposition. */
  const issue = async (
    phone: string,
    purpose: PurposeName,
    code: string,
    m: { messageId?: string; requestId?: string; ageSeconds?: number; ttlSeconds?: number } = {},
  ) => {
    const requestId = m.requestId ?? crypto.randomUUID();
    const issuedAt = new Date(now - (m.ageSeconds ?? 0) * 1000);
    const expiresAt = new Date(issuedAt.getTime() + (m.ttlSeconds ?? 300) * 1000);
    const msg = encodeOtpIssued(create(OtpIssuedSchema, {
      requestId,
      phoneNumber: phone,
      purpose: purposeFromName(purpose),
      codeMac: otpMac(hmac, { challengeId: requestId, phone, purpose, expiresAt, code }),
      issuedAt: timestampFromDate(issuedAt),
      expiresAt: timestampFromDate(expiresAt),
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
  /** Logs the verified number in again with a login code: returns the session token. */
  const loginSession = async (phone = PHONE, code = "654321") => {
    await issue(phone, "login", code, { ageSeconds: -1 });
    return (await client.loginWithPhoneNumber({ phoneNumber: phone, otp: code })).sessionToken;
  };

  return {
    store,
    client,
    asked,
    spent,
    issue,
    verifiedUser,
    loginSession,
    elapse,
    useCases,
    tokens,
    telemetry,
  };
}

export function incoming(m: OutgoingMessage): IncomingMessage {
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

export const bearer = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });

/** Asserts the call fails with this code and reason; returns the error. */
export async function refused(
  call: Promise<unknown>,
  code: Code,
  reason: Reason,
): Promise<ConnectError> {
  const err = await call.then(() => undefined, (e) => ConnectError.from(e));
  assert.ok(err, "the call succeeded");
  assert.equal(Code[err.code], Code[code], err.rawMessage);
  assert.equal(reasonOf(err), reason);
  return err;
}
