// The stack the fuzz tests run against and the checks made on it between and after
// properties: each fuzz test file (tests/fuzz_*_test.ts) starts its own stack with
// startFuzzStack, so both files fuzz the same configuration, and ends with
// assertServicesHealthy: neither process exited, neither logged an internal error,
// neither printed anything that is not a log line. Also the fixture (a verified user
// with a live session) that lets fuzzed calls reach success paths.
import assert from "node:assert/strict";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { AuthService } from "../../shared/gen/auth/v1/auth_pb.ts";
import { settlesWithin } from "../../shared/async.ts";
import type { Service } from "../processes.ts";
import { codeFor } from "../sms_codes.ts";
import { randomPhone, startStack } from "../stack.ts";
import type { Stack } from "../stack.ts";

export const DELIVERY_LIMIT = 3;

export function startFuzzStack(): Promise<Stack> {
  return startStack({
    // X-Forwarded-For spreads the fuzz over many client addresses, so per-client limits
    // (if any) do not starve the checks that follow.
    authEnv: {
      TRUSTED_PROXIES: "127.0.0.1/32,::1/128",
      AMQP_DELIVERY_LIMIT: String(DELIVERY_LIMIT),
    },
    otpEnv: { AMQP_DELIVERY_LIMIT: String(DELIVERY_LIMIT) },
  });
}

export function randomIp(): string {
  const b = crypto.getRandomValues(new Uint8Array(4));
  return `10.${b[0]}.${b[1]}.${b[2]}`;
}

/** Whether the process has exited (its `exited` promise settled). */
function hasExited(s: Service): Promise<boolean> {
  return settlesWithin(s.exited, 0);
}

export async function assertAlive(stack: Stack): Promise<void> {
  assert.equal(await hasExited(stack.auth), false, "auth-service exited");
  assert.equal(await hasExited(stack.otp), false, "otp-service exited");
}

export function internalErrorLines(s: Service): string[] {
  return s.lines.filter((l) => {
    try {
      const j = JSON.parse(l);
      return j.level === "error" && j.msg === "internal error";
    } catch {
      return false;
    }
  });
}

/** Output that is neither a JSON log line nor a console SMS: uncaught errors, traces. */
function strayOutput(s: Service): string[] {
  return s.lines.filter((l) => l.trim() !== "" && !l.startsWith("{") && !l.startsWith("[sms] "));
}

/** The final check of each fuzz file, on its own stack. */
export async function assertServicesHealthy(stack: Stack): Promise<void> {
  await assertAlive(stack);
  assert.deepEqual(internalErrorLines(stack.auth), [], "auth-service logged an internal error");
  assert.deepEqual(internalErrorLines(stack.otp), [], "otp-service logged an internal error");
  assert.deepEqual(strayOutput(stack.auth), [], "auth-service printed something not a log line");
  assert.deepEqual(strayOutput(stack.otp), [], "otp-service printed something not a log line");
}

/** A verified user with a live session, so fuzzed calls can hit success paths. */
export interface Fixture {
  phone: string;
  token: string;
}

export async function signupAndVerify(stack: Stack): Promise<Fixture> {
  const xff = randomIp();
  const client = createClient(AuthService, createConnectTransport({ baseUrl: stack.authUrl }));
  const headers = { "x-forwarded-for": xff };
  const phone = randomPhone();
  const mark = stack.otp.lines.length;
  await client.signupWithPhoneNumber({ phoneNumber: phone }, { headers });
  const code = await codeFor(stack, phone, "signup", mark);
  const { sessionToken } = await client.verifyPhoneNumber({ phoneNumber: phone, otp: code }, {
    headers,
  });
  assert.match(sessionToken, /^[A-Za-z0-9_-]{43}$/);
  return { phone, token: sessionToken };
}

/** One fixture per stack, created on first use and shared by the tests that follow. */
export function lazyFixture(stack: Stack): () => Promise<Fixture> {
  let fixturePromise: Promise<Fixture> | undefined;
  return () => (fixturePromise ??= signupAndVerify(stack));
}
