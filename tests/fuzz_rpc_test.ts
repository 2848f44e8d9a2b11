// Property-based fuzzing (fast-check) of every RPC a stranger can call, against one
// real stack: every RPC of auth.v1.AuthService and otp.v1.OtpService/GenerateOtp (with
// and without the internal token), over Connect JSON, Connect binary and gRPC-Web, with
// arbitrary JSON, arbitrary bytes, mutated real protobuf, broken gRPC-Web framing and
// random Authorization headers. A reply is a success with a decodable body or a proper
// Connect error with a code the API uses: never `internal`, never a 5xx but 503, never
// a hang; and through all of it, neither process exits and neither logs an "internal
// error". Every property has a fixed seed; fast-check prints seed and counterexample on
// failure. Four bugs this fuzzing found (now fixed) are pinned as regression properties
// below. The generators and the reply check live in testing/fuzz/; the bus is
// fuzzed in tests/fuzz_bus_test.ts, against its own stack.
import assert from "node:assert/strict";
import fc from "fast-check";
import { create, toBinary } from "@bufbuild/protobuf";
import { GenerateOtpRequestSchema } from "../shared/gen/otp/v1/otp_pb.ts";
import { OtpPurpose } from "../shared/gen/bus/v1/bus_pb.ts";
import { jsonBodyArb, objectText, rpcCaseArb, validPhone } from "../testing/fuzz/arbitraries.ts";
import type { CaseOptions } from "../testing/fuzz/arbitraries.ts";
import { bearerWord, spaces } from "../testing/fuzz/headers.ts";
import {
  assertAlive,
  assertServicesHealthy,
  internalErrorLines,
  lazyFixture,
  randomIp,
  startFuzzStack,
} from "../testing/fuzz/services.ts";
import {
  ALL_TARGETS,
  CONFIRM_PHONE_CHANGE,
  DELETE_ACCOUNT,
  GENERATE,
  GET_SESSION,
  LIST_SESSIONS,
  LOGIN,
  LOGOUT,
  PROFILE,
  REFRESH,
  REQUEST_PHONE_CHANGE,
  REVOKE_SESSION,
  SIGNUP,
  targetNamed,
  VALIDATE,
  VERIFY,
} from "../testing/fuzz/targets.ts";
import type { Target } from "../testing/fuzz/targets.ts";
import { bodyBytes, checkReply, READ_MAX_BYTES, send } from "../testing/fuzz/wire.ts";
import type { Encoding, RpcCase } from "../testing/fuzz/wire.ts";

const stack = await startFuzzStack();
Deno.test.afterAll(() => stack.stop());

const fixture = lazyFixture(stack);

// ---------------------------------------------------------------------------------
// The reply property, RPC by RPC
// ---------------------------------------------------------------------------------

/** Runs the reply property for one RPC; prints how the replies were spread. */
async function fuzzRpc(
  t: Target,
  label: string,
  seed: number,
  numRuns: number,
  o: CaseOptions = {},
): Promise<void> {
  const fx = await fixture();
  const outcomes = new Map<string, number>();
  await fc.assert(
    fc.asyncProperty(rpcCaseArb(t, fx, stack.secrets.INTERNAL_API_TOKEN, o), async (c) => {
      // Bodies over the size limit have their own property below.
      fc.pre(bodyBytes(c).byteLength <= READ_MAX_BYTES);
      const code = checkReply(t, c, await send(stack, t, c));
      const outcome = c.encoding.startsWith("grpc-web") ? `grpc-web:${code}` : code;
      outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
    }),
    { seed, numRuns },
  );
  await assertAlive(stack);
  const spread = [...outcomes].sort((a, b) => b[1] - a[1]).map(([k, n]) => `${k}=${n}`);
  console.log(`${label}: ${spread.join(" ")}`);
  assert.deepEqual(internalErrorLines(stack.auth), []);
  assert.deepEqual(internalErrorLines(stack.otp), []);
}

const RUNS = 200;

Deno.test("fuzz SignupWithPhoneNumber: only success or a proper Connect error", async () => {
  await fuzzRpc(SIGNUP, "SignupWithPhoneNumber", 0x5160_0001, RUNS);
});

Deno.test("fuzz ValidatePhoneNumberLogin: only success or a proper Connect error", async () => {
  await fuzzRpc(VALIDATE, "ValidatePhoneNumberLogin", 0x5160_0002, RUNS);
});

Deno.test("fuzz VerifyPhoneNumber: only success or a proper Connect error", async () => {
  await fuzzRpc(VERIFY, "VerifyPhoneNumber", 0x5160_0003, RUNS);
});

Deno.test("fuzz LoginWithPhoneNumber: only success or a proper Connect error", async () => {
  await fuzzRpc(LOGIN, "LoginWithPhoneNumber", 0x5160_0004, RUNS);
});

Deno.test("fuzz GetProfile: only success or a proper Connect error", async () => {
  await fuzzRpc(PROFILE, "GetProfile", 0x5160_0005, RUNS);
});

// The session RPCs take the fixture's token among random ones; those that may end or
// rotate its session (DeleteAccount, RefreshSession, Logout) come last.
for (
  const [t, seed] of [
    [GET_SESSION, 0x5160_0009],
    [LIST_SESSIONS, 0x5160_000a],
    [REVOKE_SESSION, 0x5160_000b],
    [REQUEST_PHONE_CHANGE, 0x5160_000c],
    [CONFIRM_PHONE_CHANGE, 0x5160_000d],
    [DELETE_ACCOUNT, 0x5160_000e],
    [REFRESH, 0x5160_000f],
  ] as const
) {
  Deno.test(`fuzz ${t.name}: only success or a proper Connect error`, async () => {
    await fuzzRpc(t, t.name, seed, 100);
  });
}

// After GetProfile: a fuzzed Logout may revoke the fixture's session.
Deno.test("fuzz Logout: only success or a proper Connect error", async () => {
  await fuzzRpc(LOGOUT, "Logout", 0x5160_0006, RUNS);
});

Deno.test("fuzz GenerateOtp without the internal token: only a proper Connect error", async () => {
  await fuzzRpc(GENERATE, "GenerateOtp (random Authorization)", 0x5160_0007, 150);
});

Deno.test("fuzz GenerateOtp with the internal token: only success or a proper Connect error", async () => {
  const internal = stack.secrets.INTERNAL_API_TOKEN;
  await fuzzRpc(GENERATE, "GenerateOtp (internal token)", 0x5160_0008, 150, {
    authorization: fc.tuple(bearerWord, spaces, fc.constant(internal), fc.constantFrom("", " "))
      .map((p) => p.join("")),
    clientAddress: true,
  });
});

// ---------------------------------------------------------------------------------
// Regressions: inputs that once reached `internal` or a bare HTTP error, each aimed at
// directly so it cannot come back unnoticed.
// ---------------------------------------------------------------------------------

const targetArb = fc.constantFrom(...ALL_TARGETS.map((t) => t.name));

// Regression 1 (fixed): connect-es answers a gRPC-Web envelope with the compressed flag set (and no
// grpc-encoding) with INTERNAL ("received compressed envelope, but do not know how to
// decompress"); shared/connect_server.ts only remaps "parse binary" errors.
Deno.test({
  name: "regression: a gRPC-Web frame flagged compressed is invalid_argument, not internal",
  async fn() {
    const fx = await fixture();
    const arb = fc.record({
      target: targetArb,
      json: fc.boolean(),
      flags: fc.integer({ min: 0, max: 127 }).map((f) => f | 0x01),
      payload: fc.uint8Array({ maxLength: 40 }),
    });
    await fc.assert(
      fc.asyncProperty(arb, async ({ target, json, flags, payload }) => {
        const t = targetNamed(target);
        const c: RpcCase = {
          encoding: json ? "grpc-web+json" : "grpc-web+proto",
          contentType: json ? "application/grpc-web+json" : "application/grpc-web+proto",
          body: payload,
          framing: { kind: "flags", flags },
          authorization: `Bearer ${fx.token}`,
          forwardedFor: randomIp(),
          requestId: undefined,
          clientAddress: undefined,
        };
        checkReply(t, c, await send(stack, t, c));
      }),
      { seed: 0x5160_0101, numRuns: 30 },
    );
  },
});

// Regression 2 (fixed): a gRPC-Web JSON body whose JSON.parse error quotes half of a surrogate pair
// (e.g. the body "\u{10000}") makes connect-es's setTrailerStatus call
// encodeURIComponent on a lone surrogate; the URIError escapes the handler and
// Deno.serve answers a bare HTTP 500 (and prints an uncaught stack trace).
Deno.test({
  name:
    "regression: gRPC-Web JSON with characters outside the BMP gets a gRPC-Web error, not HTTP 500",
  async fn() {
    const fx = await fixture();
    const astral = fc.string({ unit: "grapheme", maxLength: 20 }).filter((s) =>
      /[\ud800-\udfff]/.test(s)
    );
    const arb = fc.record({
      target: targetArb,
      body: fc.oneof(astral, jsonBodyArb(SIGNUP, fx).filter((s) => /[\ud800-\udfff]/.test(s))),
    });
    await fc.assert(
      fc.asyncProperty(arb, async ({ target, body }) => {
        const t = targetNamed(target);
        const c: RpcCase = {
          encoding: "grpc-web+json",
          contentType: "application/grpc-web+json",
          body,
          framing: { kind: "ok" },
          authorization: undefined,
          forwardedFor: randomIp(),
          requestId: undefined,
          clientAddress: undefined,
        };
        checkReply(t, c, await send(stack, t, c));
      }),
      { seed: 0x5160_0102, numRuns: 30 },
    );
  },
});

// Regression 3 (fixed): shared/connect_server.ts answers a declared content-length over readMaxBytes
// with a bare `413 text/plain` ("request body too large"): not a Connect error (a
// Connect client sees `unknown`), and not gRPC-Web either. A streamed body of the same
// size gets connect-es's proper resource_exhausted.
Deno.test({
  name: "regression: a body over the size limit is a proper Connect error (resource_exhausted)",
  async fn() {
    const fx = await fixture();
    const oversized = fc.record({
      // The requests with a phone_number field to inflate.
      target: fc.constantFrom(
        ...ALL_TARGETS.filter((t) => t.req.fields.some((f) => f.name === "phone_number"))
          .map((t) => t.name),
      ),
      size: fc.integer({ min: READ_MAX_BYTES + 1, max: 4 * READ_MAX_BYTES }),
      chunked: fc.boolean(),
      encoding: fc.constantFrom<Encoding>("json", "proto", "grpc-web+proto", "grpc-web+json"),
    });
    const contentTypes: Record<Encoding, string> = {
      "json": "application/json",
      "proto": "application/proto",
      "grpc-web+proto": "application/grpc-web+proto",
      "grpc-web+json": "application/grpc-web+json",
    };
    await fc.assert(
      fc.asyncProperty(oversized, async ({ target, size, chunked, encoding }) => {
        const t = targetNamed(target);
        const filler = "9".repeat(size);
        const c: RpcCase = {
          encoding,
          contentType: contentTypes[encoding],
          body: encoding.endsWith("json")
            ? objectText([["phone_number", filler]])
            : toBinary(t.req, create(t.req, { phoneNumber: filler } as Record<string, unknown>)),
          framing: { kind: "ok" },
          // GenerateOtp checks its caller before it reads a body: give it the right one.
          authorization: `Bearer ${t === GENERATE ? stack.secrets.INTERNAL_API_TOKEN : fx.token}`,
          forwardedFor: randomIp(),
          requestId: undefined,
          clientAddress: undefined,
          chunked,
        };
        const code = checkReply(t, c, await send(stack, t, c));
        assert.equal(code, "resource_exhausted", `${t.name}: an oversized body got ${code}`);
      }),
      { seed: 0x5160_0103, numRuns: 30 },
    );
    await assertAlive(stack);
  },
});

// Regression 4 (fixed): GenerateOtp passes request_id to PostgreSQL unchecked; a NUL character in it
// ("invalid byte sequence for encoding UTF8: 0x00") surfaces as `internal`, logged as
// "internal error" (otp_service/routes.ts generateOtp, otp_service/pg_store.ts begin).
Deno.test({
  name: "regression: GenerateOtp with a NUL in request_id is invalid_argument, not internal",
  async fn() {
    const arb = fc.record({
      phone: validPhone,
      requestId: fc.tuple(fc.string({ maxLength: 20 }), fc.string({ maxLength: 20 }))
        .map(([a, b]) => `${a}\u0000${b}`),
      json: fc.boolean(),
    });
    await fc.assert(
      fc.asyncProperty(arb, async ({ phone, requestId, json }) => {
        const init = { phoneNumber: phone, requestId, purpose: OtpPurpose.LOGIN };
        const c: RpcCase = {
          encoding: json ? "json" : "proto",
          contentType: json ? "application/json" : "application/proto",
          body: json
            ? objectText([["phone_number", phone], ["request_id", requestId]])
            : toBinary(GenerateOtpRequestSchema, create(GenerateOtpRequestSchema, init)),
          authorization: `Bearer ${stack.secrets.INTERNAL_API_TOKEN}`,
          forwardedFor: randomIp(),
          requestId: undefined,
          clientAddress: undefined,
        };
        checkReply(GENERATE, c, await send(stack, GENERATE, c));
      }),
      { seed: 0x5160_0104, numRuns: 10 },
    );
  },
});

// ---------------------------------------------------------------------------------
// Bus: poison messages

Deno.test("after all the fuzzing neither service crashed nor logged an internal error", async () => {
  await assertServicesHealthy(stack);
});
