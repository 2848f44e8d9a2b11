// Property-based fuzzing (fast-check) of everything a stranger can send the two
// services, against one real stack:
// - every RPC of auth.v1.AuthService and otp.v1.OtpService/GenerateOtp (with and
//   without the internal token), over Connect JSON, Connect binary and gRPC-Web, with
//   arbitrary JSON, arbitrary bytes, mutated real protobuf, broken gRPC-Web framing and
//   random Authorization headers. A reply is a success with a decodable body or a
//   proper Connect error with a code the API uses: never `internal`, never a 5xx but
//   503, never a hang;
// - poison messages published straight to the `verification` exchange: each one that
//   is certainly invalid lands in its queue's dead-letter queue on its first delivery,
//   nothing is lost, nothing loops, and the services keep serving;
// - through all of it, neither process exits and neither logs an "internal error".
// Every property has a fixed seed; fast-check prints seed and counterexample on failure.
// Four bugs this fuzzing found (now fixed) are pinned as regression properties below.
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import fc from "fast-check";
import amqp from "amqplib";
import type { ConfirmChannel, GetMessage } from "amqplib";
import { create, fromBinary, fromJson, toBinary } from "@bufbuild/protobuf";
import type { DescField, DescMessage, JsonValue } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import {
  AuthService,
  GetProfileRequestSchema,
  GetProfileResponseSchema,
  LoginWithPhoneNumberRequestSchema,
  LoginWithPhoneNumberResponseSchema,
  LogoutRequestSchema,
  LogoutResponseSchema,
  SignupWithPhoneNumberRequestSchema,
  SignupWithPhoneNumberResponseSchema,
  ValidatePhoneNumberLoginRequestSchema,
  ValidatePhoneNumberLoginResponseSchema,
  VerifyPhoneNumberRequestSchema,
  VerifyPhoneNumberResponseSchema,
} from "../shared/gen/auth/v1/auth_pb.ts";
import {
  GenerateOtpRequestSchema,
  GenerateOtpResponseSchema,
} from "../shared/gen/otp/v1/otp_pb.ts";
import { OtpIssuedSchema, OtpPurpose, OtpRequestedSchema } from "../shared/gen/bus/v1/bus_pb.ts";
import {
  AUTH_QUEUE,
  AUTH_ROUTING_KEY,
  EXCHANGE,
  OTP_QUEUE,
  OTP_ROUTING_KEY,
} from "../shared/topology.ts";
import { codeFor, eventually, randomPhone, startStack } from "../shared/testing/stack.ts";
import type { Service } from "../shared/testing/stack.ts";

const DELIVERY_LIMIT = 3;
/** serveConnect's default readMaxBytes. */
const READ_MAX_BYTES = 64 * 1024;
const REQUEST_TIMEOUT_MS = 10_000;

const stack = await startStack({
  // X-Forwarded-For spreads the fuzz over many client addresses, so per-client limits
  // (if any) do not starve the checks that follow.
  authEnv: { TRUSTED_PROXY_HOPS: "1", AMQP_DELIVERY_LIMIT: String(DELIVERY_LIMIT) },
  otpEnv: { AMQP_DELIVERY_LIMIT: String(DELIVERY_LIMIT) },
});
Deno.test.afterAll(() => stack.stop());

// ---------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------

const enc = new TextEncoder();
const dec = new TextDecoder();

function concat(...parts: (Uint8Array | number[])[]): Uint8Array {
  const arrays = parts.map((p) => (p instanceof Uint8Array ? p : Uint8Array.from(p)));
  const out = new Uint8Array(arrays.reduce((n, a) => n + a.byteLength, 0));
  let off = 0;
  for (const a of arrays) {
    out.set(a, off);
    off += a.byteLength;
  }
  return out;
}

function varint(v: bigint): number[] {
  let x = BigInt.asUintN(64, v);
  const out: number[] = [];
  do {
    let b = Number(x & 0x7fn);
    x >>= 7n;
    if (x) b |= 0x80;
    out.push(b);
  } while (x);
  return out;
}

function u32(n: number): number[] {
  return [(n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff];
}

function randomIp(): string {
  const b = crypto.getRandomValues(new Uint8Array(4));
  return `10.${b[0]}.${b[1]}.${b[2]}`;
}

/** Whether the process has exited (its `exited` promise settled). */
async function hasExited(s: Service): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const r = await Promise.race([
    s.exited.then(() => true, () => true),
    new Promise<boolean>((res) => (timer = setTimeout(() => res(false), 0))),
  ]);
  clearTimeout(timer);
  return r;
}

async function assertAlive(): Promise<void> {
  assert.equal(await hasExited(stack.auth), false, "auth-service exited");
  assert.equal(await hasExited(stack.otp), false, "otp-service exited");
}

function internalErrorLines(s: Service): string[] {
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

function clip(s: string, n = 300): string {
  return s.length > n ? `${s.slice(0, n)}…(${s.length} chars)` : s;
}

// ---------------------------------------------------------------------------------
// Fixture: a verified user with a live session, so fuzzed calls can hit success paths.
// ---------------------------------------------------------------------------------

interface Fixture {
  phone: string;
  token: string;
}

async function signupAndVerify(): Promise<Fixture> {
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

let fixturePromise: Promise<Fixture> | undefined;
const fixture = () => (fixturePromise ??= signupAndVerify());

// ---------------------------------------------------------------------------------
// RPC targets and the reply property
// ---------------------------------------------------------------------------------

interface Target {
  name: string;
  base: () => string;
  path: string;
  req: DescMessage;
  res: DescMessage;
}

const auth = (method: string, req: DescMessage, res: DescMessage): Target => ({
  name: method,
  base: () => stack.authUrl,
  path: `/auth.v1.AuthService/${method}`,
  req,
  res,
});

const SIGNUP = auth(
  "SignupWithPhoneNumber",
  SignupWithPhoneNumberRequestSchema,
  SignupWithPhoneNumberResponseSchema,
);
const VERIFY = auth(
  "VerifyPhoneNumber",
  VerifyPhoneNumberRequestSchema,
  VerifyPhoneNumberResponseSchema,
);
const LOGIN = auth(
  "LoginWithPhoneNumber",
  LoginWithPhoneNumberRequestSchema,
  LoginWithPhoneNumberResponseSchema,
);
const VALIDATE = auth(
  "ValidatePhoneNumberLogin",
  ValidatePhoneNumberLoginRequestSchema,
  ValidatePhoneNumberLoginResponseSchema,
);
const PROFILE = auth("GetProfile", GetProfileRequestSchema, GetProfileResponseSchema);
const LOGOUT = auth("Logout", LogoutRequestSchema, LogoutResponseSchema);
const GENERATE: Target = {
  name: "GenerateOtp",
  base: () => stack.otpUrl,
  path: "/otp.v1.OtpService/GenerateOtp",
  req: GenerateOtpRequestSchema,
  res: GenerateOtpResponseSchema,
};

/** Connect codes the API uses, with the HTTP status the Connect protocol gives each. */
const CONNECT_CODES: Record<string, number> = {
  invalid_argument: 400,
  unauthenticated: 401,
  permission_denied: 403,
  already_exists: 409,
  resource_exhausted: 429,
  not_found: 404,
  unavailable: 503,
  unimplemented: 501,
};
/** The same codes as gRPC status numbers, for gRPC-Web. */
const GRPC_CODES: Record<number, string> = {
  3: "invalid_argument",
  16: "unauthenticated",
  7: "permission_denied",
  6: "already_exists",
  8: "resource_exhausted",
  5: "not_found",
  14: "unavailable",
  12: "unimplemented",
};

type Encoding = "json" | "proto" | "grpc-web+proto" | "grpc-web+json";

interface RpcCase {
  encoding: Encoding;
  contentType: string;
  /** Text is sent UTF-8 encoded; kept as text so counterexamples read well. */
  body: string | Uint8Array;
  /** gRPC-Web only: how the body is framed. */
  framing?: Framing;
  authorization: string | undefined;
  forwardedFor: string;
  requestId: string | undefined;
  clientAddress: string | undefined;
  /** Send the body as a stream (no content-length). */
  chunked?: boolean;
}

interface Reply {
  status: number;
  headers: Headers;
  body: Uint8Array;
}

function bodyBytes(c: RpcCase): Uint8Array {
  const raw = typeof c.body === "string" ? enc.encode(c.body) : c.body;
  if (!c.encoding.startsWith("grpc-web")) return raw;
  return frame(raw, c.framing ?? { kind: "ok" });
}

async function send(t: Target, c: RpcCase): Promise<Reply> {
  const headers = new Headers({ "content-type": c.contentType });
  if (c.authorization !== undefined) headers.set("authorization", c.authorization);
  headers.set("x-forwarded-for", c.forwardedFor);
  if (c.requestId !== undefined) headers.set("x-request-id", c.requestId);
  if (c.clientAddress !== undefined) headers.set("x-client-address", c.clientAddress);
  if (c.encoding.startsWith("grpc-web")) headers.set("x-grpc-web", "1");
  const bytes = bodyBytes(c).slice();
  const body: BodyInit = c.chunked
    ? new ReadableStream<Uint8Array>({
      start(ctl) {
        for (let i = 0; i < bytes.byteLength; i += 16 * 1024) {
          ctl.enqueue(bytes.slice(i, i + 16 * 1024));
        }
        ctl.close();
      },
    })
    : bytes;
  // Bounds the whole exchange, body included: a hang fails the property.
  const res = await fetch(`${t.base()}${t.path}`, {
    method: "POST",
    headers,
    body,
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
  return {
    status: res.status,
    headers: res.headers,
    body: new Uint8Array(await res.arrayBuffer()),
  };
}

/** Decodes a success body with the response schema; proto3 JSON must use proto names. */
function checkSuccessBody(t: Target, payload: Uint8Array, json: boolean, what: string): void {
  if (json) {
    let value: JsonValue;
    try {
      value = JSON.parse(dec.decode(payload));
      fromJson(t.res, value);
    } catch (err) {
      assert.fail(`${what}: success body is not a ${t.res.typeName}: ${(err as Error).message}`);
    }
    assert.ok(value && typeof value === "object" && !Array.isArray(value), what);
    // SPEC §5: proto field names, and defaults always emitted.
    assert.deepEqual(
      Object.keys(value).sort(),
      t.res.fields.map((f) => f.name).sort(),
      `${what}: JSON reply fields`,
    );
  } else {
    try {
      fromBinary(t.res, payload);
    } catch (err) {
      assert.fail(`${what}: success body is not a ${t.res.typeName}: ${(err as Error).message}`);
    }
  }
}

function checkErrorMessage(message: unknown, what: string): void {
  if (message === undefined) return;
  assert.equal(typeof message, "string", what);
  const m = message as string;
  assert.ok(!/internal error/i.test(m), `${what}: ${m}`);
  assert.ok(!/file:\/\/|\n\s+at /.test(m), `${what}: the error leaks a stack trace: ${m}`);
}

/**
 * The property every reply must have. Returns the outcome ("ok" or the error code) for
 * the statistics; throws with the reply in the message otherwise.
 */
function checkReply(t: Target, c: RpcCase, r: Reply): string {
  const text = dec.decode(r.body);
  const what = `${t.name} ${c.contentType} → HTTP ${r.status} ${
    r.headers.get("content-type") ?? "-"
  } ${clip(text)}`;
  assert.ok(r.status < 500 || r.status === 503, `a 5xx reply: ${what}`);
  if (c.encoding.startsWith("grpc-web")) return checkGrpcWebReply(t, r, what);

  const type = r.headers.get("content-type") ?? "";
  if (r.status === 200) {
    const json = c.encoding === "json";
    assert.equal(type.split(";")[0], json ? "application/json" : "application/proto", what);
    checkSuccessBody(t, r.body, json, what);
    return "ok";
  }
  assert.equal(type.split(";")[0], "application/json", `not a Connect error: ${what}`);
  let err: { code?: unknown; message?: unknown };
  try {
    err = JSON.parse(text);
  } catch {
    assert.fail(`not a Connect error body: ${what}`);
  }
  assert.equal(typeof err.code, "string", `Connect error without a code: ${what}`);
  const code = err.code as string;
  assert.ok(code in CONNECT_CODES, `unexpected Connect code "${code}": ${what}`);
  assert.equal(r.status, CONNECT_CODES[code], `HTTP status does not match "${code}": ${what}`);
  checkErrorMessage(err.message, what);
  return code;
}

function checkGrpcWebReply(t: Target, r: Reply, what: string): string {
  assert.equal(r.status, 200, `gRPC-Web replies are HTTP 200: ${what}`);
  const type = r.headers.get("content-type") ?? "";
  assert.ok(type.startsWith("application/grpc-web"), `not a gRPC-Web reply: ${what}`);
  let status = r.headers.get("grpc-status");
  let message = r.headers.get("grpc-message");
  const data: Uint8Array[] = [];
  if (status === null) {
    // Length-prefixed frames: data frames, then exactly one trailer frame, last.
    let off = 0;
    let trailer: string | undefined;
    while (off < r.body.byteLength) {
      assert.ok(off + 5 <= r.body.byteLength, `truncated gRPC-Web frame: ${what}`);
      assert.equal(trailer, undefined, `data after the trailer frame: ${what}`);
      const flags = r.body[off]!;
      const len = new DataView(r.body.buffer, r.body.byteOffset + off + 1, 4).getUint32(0);
      const payload = r.body.subarray(off + 5, off + 5 + len);
      assert.equal(payload.byteLength, len, `truncated gRPC-Web frame: ${what}`);
      if (flags & 0x80) trailer = dec.decode(payload);
      else data.push(payload);
      off += 5 + len;
    }
    assert.ok(trailer !== undefined, `gRPC-Web reply without trailers: ${what}`);
    const fields = new Map(
      trailer.split("\r\n").filter(Boolean).map((l) => {
        const i = l.indexOf(":");
        return [l.slice(0, i).trim().toLowerCase(), l.slice(i + 1).trim()] as const;
      }),
    );
    status = fields.get("grpc-status") ?? null;
    message = fields.get("grpc-message") ?? null;
  }
  assert.ok(status !== null && /^\d+$/.test(status), `no grpc-status: ${what}`);
  const n = Number(status);
  if (n === 0) {
    assert.equal(data.length, 1, `a unary success carries one message: ${what}`);
    checkSuccessBody(t, data[0]!, type.startsWith("application/grpc-web+json"), what);
    return "ok";
  }
  assert.ok(n in GRPC_CODES, `unexpected grpc-status ${n}: ${what}`);
  checkErrorMessage(message === null ? undefined : decodeURIComponent(message), what);
  return GRPC_CODES[n]!;
}

// ---------------------------------------------------------------------------------
// Arbitraries: field values, JSON bodies, binary bodies, framing, headers
// ---------------------------------------------------------------------------------

const validPhone = fc.integer({ min: 2_000_000, max: 8_999_999 }).map((n) => `+1415${n}`);
/** Numbers that are invalid however they are read (see tests/rejections_test.ts). */
const BAD_PHONES = [
  "",
  "12345",
  "+1",
  "+",
  "not a phone",
  "+1415555012345678901234567890123",
  "+999 123 456",
  "+0123456789",
];

function phoneArb(fx: Fixture): fc.Arbitrary<string> {
  return fc.oneof(
    { weight: 4, arbitrary: validPhone },
    { weight: 2, arbitrary: fc.constant(fx.phone) },
    {
      weight: 1,
      arbitrary: validPhone.map((p) =>
        `${p.slice(0, 2)} (${p.slice(2, 5)}) ${p.slice(5, 8)}-${p.slice(8)}`
      ),
    },
    { weight: 1, arbitrary: fc.constant(` ${fx.phone}\t`) },
    { weight: 2, arbitrary: fc.constantFrom(...BAD_PHONES) },
    { weight: 1, arbitrary: fc.stringMatching(/^\+?[0-9 ()\-.]{0,40}$/) },
    { weight: 1, arbitrary: fc.string({ unit: "grapheme", maxLength: 40 }) },
    { weight: 1, arbitrary: fc.string({ unit: "binary", maxLength: 40 }) },
    {
      weight: 1,
      arbitrary: fc.constantFrom(
        "+١٤١٥٥٥٥٠١٢٣",
        "＋１４１５５５５０１２３",
        `${fx.phone}\u0000`,
        `\u0000${fx.phone}`,
        "+1415555\u200b0123",
        "tel:+14155550123",
        "+1415555O123",
        "+14155550123;ext=1",
        "+1".padEnd(33, "5"),
        `${fx.phone}\ud800`,
      ),
    },
  );
}

const codeArb: fc.Arbitrary<string> = fc.oneof(
  { weight: 3, arbitrary: fc.stringMatching(/^\d{6}$/) },
  { weight: 1, arbitrary: fc.stringMatching(/^\d{0,12}$/) },
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      "",
      "abcdef",
      "12 456",
      "１２３４５６",
      "123456\n",
      "٠١٢٣٤٥",
      "12345\u0000",
    ),
  },
  { weight: 1, arbitrary: fc.string({ unit: "binary", maxLength: 12 }) },
);

const requestIdArb: fc.Arbitrary<string> = fc.oneof(
  { weight: 3, arbitrary: fc.uuid() },
  { weight: 1, arbitrary: fc.constant("") },
  { weight: 1, arbitrary: fc.string({ maxLength: 64 }) },
  { weight: 1, arbitrary: fc.integer({ min: 65, max: 2000 }).map((n) => "r".repeat(n)) },
  { weight: 2, arbitrary: fc.constantFrom("\u0000", "req-\u0000-x", "\ud800", "ＩＤ") },
  { weight: 1, arbitrary: fc.string({ unit: "binary", maxLength: 70 }) },
);

const purposeNumberArb: fc.Arbitrary<number> = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(0, 1, 2) },
  { weight: 1, arbitrary: fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }) },
);

/** A value of the right type for a request field, as a protobuf-es init value. */
function typedValue(f: DescField, fx: Fixture): fc.Arbitrary<unknown> {
  switch (f.name) {
    case "phone_number":
      return phoneArb(fx);
    case "otp":
      return codeArb;
    case "request_id":
      return requestIdArb;
    case "purpose":
      return purposeNumberArb;
    case "all":
      return fc.boolean();
  }
  return fc.string();
}

/** A JSON value for a request field: the right type or one a lenient parser might take. */
function jsonFieldValue(f: DescField, fx: Fixture): fc.Arbitrary<JsonValue> {
  const typed = typedValue(f, fx) as fc.Arbitrary<JsonValue>;
  if (f.name === "purpose") {
    return fc.oneof(
      typed,
      fc.constantFrom(
        "OTP_PURPOSE_SIGNUP",
        "OTP_PURPOSE_LOGIN",
        "OTP_PURPOSE_UNSPECIFIED",
        "otp_purpose_login",
        "LOGIN",
        "1",
        1.5,
        2 ** 40,
      ),
    );
  }
  if (f.name === "all") return fc.oneof(typed, fc.constantFrom("true", 1, 0, "false", "yes"));
  return typed;
}

/** Any JSON value, including huge strings, deep nesting and unicode. */
const junkJson: fc.Arbitrary<JsonValue> = fc.oneof(
  { weight: 3, arbitrary: fc.jsonValue({ maxDepth: 3 }) as fc.Arbitrary<JsonValue> },
  { weight: 1, arbitrary: fc.string({ unit: "binary", maxLength: 64 }) },
  { weight: 1, arbitrary: fc.string({ unit: "grapheme", maxLength: 64 }) },
  {
    weight: 1,
    arbitrary: fc.tuple(
      fc.string({ unit: "grapheme", minLength: 1, maxLength: 3 }),
      fc.integer({ min: 500, max: 12_000 }),
    ).map(([s, n]) => s.repeat(Math.ceil(n / s.length)).slice(0, n)),
  },
  {
    weight: 1,
    arbitrary: fc.constantFrom<JsonValue>(
      null,
      0,
      -0,
      1e308,
      -1e-308,
      Number.MAX_SAFE_INTEGER + 2,
      true,
      [],
      {},
      [[[[[[[[[[[]]]]]]]]]]],
      { "": "" },
      "\u0000",
      "\ud83d",
      "\u202e",
    ),
  },
  {
    weight: 1,
    arbitrary: fc.integer({ min: 10, max: 200 }).map((d) =>
      JSON.parse("[".repeat(d) + "]".repeat(d)) as JsonValue
    ),
  },
);

/** A right, near-right or wrong key for a request object. */
function keyArb(t: Target): fc.Arbitrary<string> {
  const names = t.req.fields.flatMap((f) => [f.name, f.jsonName]);
  return fc.oneof(
    { weight: 6, arbitrary: fc.constantFrom(...names) },
    {
      weight: 2,
      arbitrary: fc.constantFrom(
        "phone",
        "PhoneNumber",
        "PHONE_NUMBER",
        "phone_number ",
        "phone-number",
        "phoneNumber\u0000",
        "Otp",
        "code",
        "requestID",
        "all ",
        "__proto__",
        "constructor",
        "prototype",
        "toString",
        "@type",
        "",
      ),
    },
    { weight: 1, arbitrary: fc.string({ maxLength: 20 }) },
  );
}

/** JSON text of an object with chosen keys (duplicates and __proto__ included). */
function objectText(pairs: [string, JsonValue][]): string {
  return `{${pairs.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`).join(",")}}`;
}

function jsonBodyArb(t: Target, fx: Fixture): fc.Arbitrary<string> {
  // Well-formed requests, each field under its proto or JSON name.
  const wellFormed = fc.tuple(
    ...t.req.fields.map((f) =>
      fc.tuple(
        fc.constantFrom(f.name, f.jsonName),
        jsonFieldValue(f, fx),
        fc.oneof({ weight: 4, arbitrary: fc.constant(true) }, fc.constant(false)),
      )
    ),
  ).map((fields) =>
    objectText(fields.filter(([, , keep]) => keep).map(([k, v]) => [k, v] as [string, JsonValue]))
  );
  const anyValue = fc.oneof(
    ...t.req.fields.map((f) => jsonFieldValue(f, fx)),
    junkJson,
  );
  const junkObject = fc.array(fc.tuple(keyArb(t), anyValue), { maxLength: 6 }).map(objectText);
  const nested = fc.tuple(fc.constantFrom(...t.req.fields.map((f) => f.name)), junkJson)
    .map(([k, v]) => objectText([[k, { [k]: v, nested: [v, { v }] }]]));
  return fc.oneof(
    { weight: 6, arbitrary: wellFormed },
    { weight: 4, arbitrary: junkObject },
    { weight: 1, arbitrary: nested },
    { weight: 1, arbitrary: junkJson.map((v) => JSON.stringify(v)) },
    {
      weight: 1,
      arbitrary: fc.tuple(wellFormed, fc.nat()).map(([s, n]) => s.slice(0, n % (s.length + 1))),
    },
    { weight: 1, arbitrary: fc.string({ unit: "grapheme", maxLength: 200 }) },
    {
      weight: 1,
      arbitrary: fc.constantFrom(
        "",
        " ",
        "null",
        "{}",
        "[]",
        '{"phone_number":',
        "\ufeff{}",
        "{'phone_number': '+14155550123'}",
        '{"phone_number": "+14155550123",}',
        "phone_number=+14155550123",
        "NaN",
        '{"a":1}{"b":2}',
      ),
    },
  );
}

// --- protobuf ----------------------------------------------------------------------

interface RawField {
  no: number;
  wire: number;
  varint: bigint;
  bytes: Uint8Array;
  lie: number;
}

const rawFieldArb: fc.Arbitrary<RawField> = fc.record({
  no: fc.oneof(
    { weight: 4, arbitrary: fc.integer({ min: 1, max: 8 }) },
    { weight: 1, arbitrary: fc.integer({ min: 0, max: 2 ** 29 - 1 }) },
  ),
  wire: fc.oneof(
    { weight: 4, arbitrary: fc.constantFrom(0, 2) },
    { weight: 1, arbitrary: fc.integer({ min: 0, max: 7 }) },
  ),
  varint: fc.bigInt({ min: -(2n ** 63n), max: 2n ** 64n - 1n }),
  bytes: fc.oneof(
    fc.string({ unit: "grapheme", maxLength: 40 }).map((s) => enc.encode(s)),
    fc.uint8Array({ maxLength: 60 }),
  ),
  lie: fc.oneof(
    { weight: 6, arbitrary: fc.constant(0) },
    { weight: 1, arbitrary: fc.integer({ min: -8, max: 8 }) },
    { weight: 1, arbitrary: fc.nat() },
  ),
});

function encodeRaw(f: RawField): Uint8Array {
  const key = varint(BigInt(f.no) * 8n + BigInt(f.wire));
  const pad = (n: number) => concat(f.bytes, new Uint8Array(n)).subarray(0, n);
  switch (f.wire) {
    case 0:
      return concat(key, varint(f.varint));
    case 1:
      return concat(key, pad(8));
    case 2:
      return concat(key, varint(BigInt(Math.max(0, f.bytes.byteLength + f.lie))), f.bytes);
    case 5:
      return concat(key, pad(4));
    default: // groups (3, 4) and the wire types that do not exist (6, 7)
      return concat(key, f.bytes.subarray(0, 4));
  }
}

type Mutation =
  | { op: "flip"; at: number; bit: number }
  | { op: "set"; at: number; value: number }
  | { op: "insert"; at: number; bytes: Uint8Array }
  | { op: "delete"; at: number; len: number }
  | { op: "truncate"; at: number }
  | { op: "append"; bytes: Uint8Array }
  | { op: "double" };

const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({
    op: fc.constant("flip" as const),
    at: fc.nat(),
    bit: fc.integer({ min: 0, max: 7 }),
  }),
  fc.record({
    op: fc.constant("set" as const),
    at: fc.nat(),
    value: fc.integer({ min: 0, max: 255 }),
  }),
  fc.record({
    op: fc.constant("insert" as const),
    at: fc.nat(),
    bytes: fc.oneof(fc.uint8Array({ minLength: 1, maxLength: 8 }), rawFieldArb.map(encodeRaw)),
  }),
  fc.record({
    op: fc.constant("delete" as const),
    at: fc.nat(),
    len: fc.integer({ min: 1, max: 8 }),
  }),
  fc.record({ op: fc.constant("truncate" as const), at: fc.nat() }),
  fc.record({ op: fc.constant("append" as const), bytes: rawFieldArb.map(encodeRaw) }),
  fc.record({ op: fc.constant("double" as const) }),
);

function mutate(input: Uint8Array, muts: Mutation[]): Uint8Array {
  let b = input;
  for (const m of muts) {
    const at = (n: number) => (b.byteLength === 0 ? 0 : n % b.byteLength);
    switch (m.op) {
      case "flip":
        if (b.byteLength) (b = b.slice())[at(m.at)]! ^= 1 << m.bit;
        break;
      case "set":
        if (b.byteLength) (b = b.slice())[at(m.at)] = m.value;
        break;
      case "insert":
        b = concat(b.subarray(0, at(m.at)), m.bytes, b.subarray(at(m.at)));
        break;
      case "delete":
        b = concat(b.subarray(0, at(m.at)), b.subarray(at(m.at) + m.len));
        break;
      case "truncate":
        b = b.subarray(0, at(m.at));
        break;
      case "append":
        b = concat(b, m.bytes);
        break;
      case "double":
        b = concat(b, b);
        break;
    }
  }
  return b;
}

/** A real encoded request of `schema`, its fields chosen by `value`. */
function encodedArb(
  schema: DescMessage,
  value: (f: DescField) => fc.Arbitrary<unknown>,
): fc.Arbitrary<Uint8Array> {
  return fc.tuple(...schema.fields.map((f) => fc.option(value(f), { nil: undefined }))).map(
    (vals) => {
      const init: Record<string, unknown> = {};
      schema.fields.forEach((f, i) => {
        if (vals[i] !== undefined) init[f.localName] = vals[i];
      });
      return toBinary(schema, create(schema, init));
    },
  );
}

function binaryBodyArb(t: Target, fx: Fixture): fc.Arbitrary<Uint8Array> {
  const real = encodedArb(t.req, (f) => typedValue(f, fx));
  return fc.oneof(
    { weight: 4, arbitrary: real },
    {
      weight: 4,
      arbitrary: fc.tuple(real, fc.array(mutationArb, { minLength: 1, maxLength: 4 }))
        .map(([b, m]) => mutate(b, m)),
    },
    {
      weight: 2,
      arbitrary: fc.array(rawFieldArb, { maxLength: 8 }).map((fs) => concat(...fs.map(encodeRaw))),
    },
    { weight: 2, arbitrary: fc.uint8Array({ maxLength: 600 }) },
    {
      weight: 1,
      arbitrary: fc.constantFrom(
        new Uint8Array(),
        Uint8Array.from([0xff, 0xff, 0xff, 0xff]),
        Uint8Array.from([0x0a, 0x10, 0x41]),
        Uint8Array.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]),
        Uint8Array.from([0x0b]),
        Uint8Array.from([0x0c]),
        Uint8Array.from([0x0a, 0x02, 0xc3, 0x28]),
        Uint8Array.from([0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
      ),
    },
  );
}

// --- gRPC-Web framing ---------------------------------------------------------------

type Framing =
  | { kind: "ok" }
  | { kind: "flags"; flags: number }
  | { kind: "length"; delta: number }
  | { kind: "bare" }
  | { kind: "twice" }
  | { kind: "trailing"; bytes: Uint8Array }
  | { kind: "with-trailer" }
  | { kind: "empty" };

const framingArb: fc.Arbitrary<Framing> = fc.oneof(
  { weight: 8, arbitrary: fc.constant({ kind: "ok" } as const) },
  {
    weight: 1,
    arbitrary: fc.integer({ min: 1, max: 255 }).map((flags) => ({ kind: "flags", flags }) as const),
  },
  {
    weight: 1,
    arbitrary: fc.oneof(fc.integer({ min: -5, max: 5 }), fc.integer({ min: 1, max: 2 ** 31 }))
      .map((delta) => ({ kind: "length", delta }) as const),
  },
  { weight: 1, arbitrary: fc.constant({ kind: "bare" } as const) },
  { weight: 1, arbitrary: fc.constant({ kind: "twice" } as const) },
  {
    weight: 1,
    arbitrary: fc.uint8Array({ minLength: 1, maxLength: 9 })
      .map((bytes) => ({ kind: "trailing", bytes }) as const),
  },
  { weight: 1, arbitrary: fc.constant({ kind: "with-trailer" } as const) },
  { weight: 1, arbitrary: fc.constant({ kind: "empty" } as const) },
);

function frame(payload: Uint8Array, f: Framing): Uint8Array {
  const env = (flags: number, p: Uint8Array, len = p.byteLength) =>
    concat([flags & 0xff, ...u32(len >>> 0)], p);
  switch (f.kind) {
    case "ok":
      return env(0, payload);
    case "flags":
      return env(f.flags, payload);
    case "length":
      return env(0, payload, Math.max(0, payload.byteLength + f.delta));
    case "bare":
      return payload;
    case "twice":
      return concat(env(0, payload), env(0, payload));
    case "trailing":
      return concat(env(0, payload), f.bytes);
    case "with-trailer":
      return concat(env(0, payload), env(0x80, enc.encode("grpc-status: 0\r\n")));
    case "empty":
      return new Uint8Array();
  }
}

// --- headers ---------------------------------------------------------------------

/** Printable ASCII and Latin-1: what a header value can carry. */
const headerChar = fc.oneof(
  { weight: 9, arbitrary: fc.integer({ min: 0x20, max: 0x7e }) },
  { weight: 1, arbitrary: fc.integer({ min: 0x80, max: 0xff }) },
  { weight: 1, arbitrary: fc.constant(0x09) },
).map((c) => String.fromCharCode(c));
const headerString = (maxLength: number) => fc.string({ unit: headerChar, maxLength });
const token43 = fc.stringMatching(/^[A-Za-z0-9_-]{43}$/);
const bearerWord = fc.mixedCase(fc.constant("bearer"));
const spaces = fc.constantFrom(" ", "  ", "\t", " \t ");

function authorizationArb(fx: Fixture): fc.Arbitrary<string | undefined> {
  const internal = stack.secrets.INTERNAL_API_TOKEN;
  return fc.oneof(
    { weight: 2, arbitrary: fc.constant(undefined) },
    { weight: 2, arbitrary: fc.constant(`Bearer ${fx.token}`) },
    { weight: 1, arbitrary: fc.constant(`Bearer ${internal}`) },
    {
      weight: 1,
      arbitrary: fc.tuple(bearerWord, spaces, fc.constantFrom(fx.token, internal), spaces)
        .map((p) => p.join("")),
    },
    { weight: 2, arbitrary: fc.tuple(bearerWord, spaces, token43).map((p) => p.join("")) },
    {
      weight: 1,
      arbitrary: fc.constantFrom(
        `Bearer ${fx.token.slice(0, 42)}`,
        `Bearer ${fx.token}x`,
        `Bearer ${fx.token} ${fx.token}`,
        `Bearer${fx.token}`,
        `Basic ${btoa("user:pass")}`,
        `Bearer ${internal.slice(0, -1)}`,
        `Bearer ${internal.toUpperCase()}`,
        "Bearer",
        "Bearer ",
        "",
        `Bearer ${"A".repeat(4000)}`,
      ),
    },
    { weight: 2, arbitrary: fc.tuple(bearerWord, spaces, headerString(80)).map((p) => p.join("")) },
    { weight: 1, arbitrary: headerString(200) },
  );
}

const forwardedForArb: fc.Arbitrary<string> = fc.oneof(
  { weight: 6, arbitrary: fc.ipV4() },
  { weight: 1, arbitrary: fc.ipV6() },
  { weight: 1, arbitrary: fc.tuple(headerString(30), fc.ipV4()).map(([a, b]) => `${a}, ${b}`) },
  { weight: 1, arbitrary: headerString(80) },
);

interface CaseOptions {
  /** Fixed Authorization instead of the random one. */
  authorization?: fc.Arbitrary<string | undefined>;
  /** Fuzz X-Client-Address (GenerateOtp's trusted header). */
  clientAddress?: boolean;
}

function rpcCaseArb(t: Target, fx: Fixture, o: CaseOptions = {}): fc.Arbitrary<RpcCase> {
  const json = jsonBodyArb(t, fx);
  const bin = binaryBodyArb(t, fx);
  const common = {
    authorization: o.authorization ?? authorizationArb(fx),
    forwardedFor: forwardedForArb,
    requestId: fc.option(headerString(100), { nil: undefined }),
    clientAddress: o.clientAddress
      ? fc.option(headerString(100), { nil: undefined })
      : fc.constant(undefined),
  };
  const connectJson = fc.record({
    encoding: fc.constant("json" as const),
    contentType: fc.constantFrom("application/json", "application/json; charset=utf-8"),
    body: fc.oneof({ weight: 8, arbitrary: json }, { weight: 1, arbitrary: bin }),
    ...common,
  });
  const connectProto = fc.record({
    encoding: fc.constant("proto" as const),
    contentType: fc.constant("application/proto"),
    body: fc.oneof({ weight: 8, arbitrary: bin }, { weight: 1, arbitrary: json }),
    ...common,
  });
  const grpcWebProto = fc.record({
    encoding: fc.constant("grpc-web+proto" as const),
    contentType: fc.constantFrom("application/grpc-web+proto", "application/grpc-web"),
    body: bin,
    framing: framingArb,
    ...common,
  });
  const grpcWebJson = fc.record({
    encoding: fc.constant("grpc-web+json" as const),
    contentType: fc.constant("application/grpc-web+json"),
    body: json,
    framing: framingArb,
    ...common,
  });
  return fc.oneof(
    { weight: 4, arbitrary: connectJson },
    { weight: 4, arbitrary: connectProto },
    { weight: 2, arbitrary: grpcWebProto },
    { weight: 1, arbitrary: grpcWebJson },
  );
}

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
    fc.asyncProperty(rpcCaseArb(t, fx, o), async (c) => {
      // Bodies over the size limit have their own property below.
      fc.pre(bodyBytes(c).byteLength <= READ_MAX_BYTES);
      const code = checkReply(t, c, await send(t, c));
      const outcome = c.encoding.startsWith("grpc-web") ? `grpc-web:${code}` : code;
      outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
    }),
    { seed, numRuns },
  );
  await assertAlive();
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

const ALL_TARGETS = [SIGNUP, VERIFY, LOGIN, VALIDATE, PROFILE, LOGOUT, GENERATE];
const targetArb = fc.constantFrom(...ALL_TARGETS.map((t) => t.name));
const targetNamed = (name: string) => ALL_TARGETS.find((t) => t.name === name)!;

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
        checkReply(t, c, await send(t, c));
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
        checkReply(t, c, await send(t, c));
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
      // Every request but Logout's has a string field to inflate.
      target: targetArb.filter((name) => name !== LOGOUT.name),
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
          authorization: `Bearer ${fx.token}`,
          forwardedFor: randomIp(),
          requestId: undefined,
          clientAddress: undefined,
          chunked,
        };
        const code = checkReply(t, c, await send(t, c));
        assert.equal(code, "resource_exhausted", `${t.name}: an oversized body got ${code}`);
      }),
      { seed: 0x5160_0103, numRuns: 30 },
    );
    await assertAlive();
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
        checkReply(GENERATE, c, await send(GENERATE, c));
      }),
      { seed: 0x5160_0104, numRuns: 10 },
    );
  },
});

// ---------------------------------------------------------------------------------
// Bus: poison messages
// ---------------------------------------------------------------------------------

const PROTOBUF = "application/x-protobuf";

interface BusCase {
  key: typeof OTP_ROUTING_KEY | typeof AUTH_ROUTING_KEY;
  type: string | undefined;
  contentType: string | undefined;
  body: Uint8Array;
  messageId: string | undefined;
  correlationId: string | undefined;
  persistent: boolean;
}

interface Sent extends BusCase {
  fuzzId: string;
  /** Why it is certainly invalid, or undefined when it may be processable. */
  invalid: string | undefined;
}

const expectedType = (key: string) =>
  key === OTP_ROUTING_KEY ? OtpRequestedSchema.typeName : OtpIssuedSchema.typeName;
const schemaFor = (key: string) => (key === OTP_ROUTING_KEY ? OtpRequestedSchema : OtpIssuedSchema);
const queueFor = (key: string) => (key === OTP_ROUTING_KEY ? OTP_QUEUE : AUTH_QUEUE);

const shortStr = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.string({ unit: "grapheme", maxLength: 20 }),
);

interface Ts {
  seconds: bigint;
  nanos: number;
}

const nowSeconds = () => BigInt(Math.floor(Date.now() / 1000));

const tsArb: fc.Arbitrary<Ts | undefined> = fc.oneof(
  { weight: 1, arbitrary: fc.constant(undefined) },
  {
    weight: 3,
    arbitrary: fc.integer({ min: -600, max: 600 }).map((d) => ({
      seconds: nowSeconds() + BigInt(d),
      nanos: 0,
    })),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      seconds: fc.oneof(
        fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }),
        fc.constantFrom(-62135596800n, -8640000000000n, 253402300799n, 8640000000001n, 0n),
      ),
      nanos: fc.oneof(
        fc.integer({ min: 0, max: 999_999_999 }),
        fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }),
      ),
    }),
  },
);

/** issued_at / expires_at pairs: sane, reversed, equal, missing or absurd. */
const timesArb: fc.Arbitrary<{ issued: Ts | undefined; expires: Ts | undefined }> = fc.oneof(
  {
    weight: 2,
    arbitrary: fc.integer({ min: 1, max: 600 }).map((ttl) => ({
      issued: { seconds: nowSeconds(), nanos: 0 },
      expires: { seconds: nowSeconds() + BigInt(ttl), nanos: 0 },
    })),
  },
  {
    weight: 2,
    arbitrary: fc.integer({ min: 0, max: 100_000 }).map((back) => ({
      issued: { seconds: nowSeconds(), nanos: 500 },
      expires: { seconds: nowSeconds() - BigInt(back), nanos: 0 },
    })),
  },
  { weight: 2, arbitrary: fc.record({ issued: tsArb, expires: tsArb }) },
);

const macArb = fc.oneof(
  { weight: 4, arbitrary: fc.uint8Array({ minLength: 32, maxLength: 32 }) },
  {
    weight: 2,
    arbitrary: fc.constantFrom(0, 1, 16, 31, 33, 64, 1000).chain((n) =>
      fc.uint8Array({ minLength: n, maxLength: n })
    ),
  },
);

function busPhoneArb(): fc.Arbitrary<string> {
  return fc.oneof(
    { weight: 6, arbitrary: validPhone },
    { weight: 2, arbitrary: fc.constantFrom(...BAD_PHONES) },
    {
      weight: 1,
      arbitrary: validPhone.map((p) =>
        `${p.slice(0, 2)} (${p.slice(2, 5)}) ${p.slice(5, 8)}-${p.slice(8)}`
      ),
    },
    { weight: 1, arbitrary: fc.string({ unit: "binary", maxLength: 40 }) },
    { weight: 1, arbitrary: fc.constant("+1415555\u0000123") },
  );
}

const busRequestIdArb: fc.Arbitrary<string> = fc.oneof(
  { weight: 6, arbitrary: fc.uuid() },
  { weight: 1, arbitrary: fc.constant("") },
  { weight: 1, arbitrary: fc.integer({ min: 300, max: 5000 }).map((n) => "x".repeat(n)) },
  { weight: 1, arbitrary: fc.string({ unit: "binary", maxLength: 64 }) },
  { weight: 1, arbitrary: fc.constantFrom("\u0000", "req-\u0000") },
);

const garbageString = fc.oneof(
  { weight: 6, arbitrary: fc.string({ maxLength: 30 }) },
  { weight: 1, arbitrary: fc.string({ unit: "binary", maxLength: 100 }) },
  { weight: 1, arbitrary: fc.integer({ min: 100, max: 3000 }).map((n) => "t".repeat(n)) },
  { weight: 1, arbitrary: fc.constant("trace-\u0000") },
);

const busPurposeArb: fc.Arbitrary<number> = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom(OtpPurpose.SIGNUP, OtpPurpose.LOGIN) },
  { weight: 1, arbitrary: fc.constant(OtpPurpose.UNSPECIFIED) },
  { weight: 1, arbitrary: fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }) },
);

const otpRequestedBody: fc.Arbitrary<Uint8Array> = fc.record({
  requestId: busRequestIdArb,
  phoneNumber: busPhoneArb(),
  purpose: busPurposeArb,
  requestedAt: tsArb,
  traceId: garbageString,
  clientAddress: garbageString,
}).map((v) =>
  toBinary(
    OtpRequestedSchema,
    create(OtpRequestedSchema, {
      ...v,
      purpose: v.purpose as OtpPurpose,
      requestedAt: v.requestedAt,
    }),
  )
);

const otpIssuedBody: fc.Arbitrary<Uint8Array> = fc.record({
  requestId: busRequestIdArb,
  phoneNumber: busPhoneArb(),
  purpose: busPurposeArb,
  codeMac: macArb,
  times: timesArb,
  traceId: garbageString,
}).map(({ times, ...v }) =>
  toBinary(
    OtpIssuedSchema,
    create(OtpIssuedSchema, {
      ...v,
      purpose: v.purpose as OtpPurpose,
      issuedAt: times.issued,
      expiresAt: times.expires,
    }),
  )
);

function busBodyArb(key: string): fc.Arbitrary<Uint8Array> {
  const own = key === OTP_ROUTING_KEY ? otpRequestedBody : otpIssuedBody;
  const other = key === OTP_ROUTING_KEY ? otpIssuedBody : otpRequestedBody;
  return fc.oneof(
    { weight: 6, arbitrary: own },
    {
      weight: 2,
      arbitrary: fc.tuple(own, fc.array(mutationArb, { minLength: 1, maxLength: 3 }))
        .map(([b, m]) => mutate(b, m)),
    },
    { weight: 1, arbitrary: other },
    {
      weight: 1,
      arbitrary: fc.array(rawFieldArb, { maxLength: 8 }).map((fs) => concat(...fs.map(encodeRaw))),
    },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 300 }) },
    {
      weight: 1,
      arbitrary: fc.constantFrom(
        new Uint8Array(),
        enc.encode("{}"),
        enc.encode('{"request_id":"x","phone_number":"+14155550123","purpose":1}'),
        Uint8Array.from([0xff, 0xff, 0xff, 0x07, 0x01]),
      ),
    },
  );
}

const anyBusCaseArb: fc.Arbitrary<BusCase> = fc.constantFrom(OTP_ROUTING_KEY, AUTH_ROUTING_KEY)
  .chain((key) =>
    fc.record({
      key: fc.constant(key),
      type: fc.oneof(
        { weight: 8, arbitrary: fc.constant(expectedType(key)) },
        {
          weight: 1,
          arbitrary: fc.constantFrom(
            expectedType(key === OTP_ROUTING_KEY ? AUTH_ROUTING_KEY : OTP_ROUTING_KEY),
            expectedType(key).toLowerCase(),
            `${expectedType(key)} `,
            expectedType(key).replace("bus.v1.", ""),
            "bus.v1.SomethingElse",
            "",
          ),
        },
        { weight: 1, arbitrary: fc.constant(undefined) },
        { weight: 1, arbitrary: shortStr },
      ),
      contentType: fc.oneof(
        { weight: 8, arbitrary: fc.constant(PROTOBUF) },
        {
          weight: 1,
          arbitrary: fc.constantFrom(
            "application/json",
            "application/protobuf",
            "application/x-protobuf; charset=utf-8",
            "APPLICATION/X-PROTOBUF",
            "",
          ),
        },
        { weight: 1, arbitrary: fc.constant(undefined) },
        { weight: 1, arbitrary: shortStr },
      ),
      body: busBodyArb(key),
      messageId: fc.oneof(
        { weight: 6, arbitrary: fc.uuid() },
        { weight: 1, arbitrary: fc.constant(undefined) },
        { weight: 1, arbitrary: shortStr },
      ),
      correlationId: fc.option(shortStr, { nil: undefined }),
      persistent: fc.boolean(),
    })
  );

type Init = Record<string, unknown>;

/** A valid message of the key's schema with one field replaced by garbage. */
function nearValidBody(key: string): fc.Arbitrary<Uint8Array> {
  const now = nowSeconds();
  if (key === OTP_ROUTING_KEY) {
    const valid = fc.record({
      requestId: fc.uuid(),
      phoneNumber: validPhone,
      purpose: fc.constantFrom(OtpPurpose.SIGNUP, OtpPurpose.LOGIN),
      requestedAt: fc.constant({ seconds: now, nanos: 0 }),
      traceId: fc.string({ maxLength: 20 }),
      clientAddress: fc.ipV4(),
    });
    const garbage: fc.Arbitrary<Init> = fc.oneof(
      busRequestIdArb.map((requestId) => ({ requestId })),
      busPhoneArb().map((phoneNumber) => ({ phoneNumber })),
      busPurposeArb.map((purpose) => ({ purpose })),
      tsArb.map((requestedAt) => ({ requestedAt })),
      garbageString.map((traceId) => ({ traceId })),
      garbageString.map((clientAddress) => ({ clientAddress })),
    );
    return fc.tuple(valid, garbage).map(([v, g]) =>
      toBinary(OtpRequestedSchema, create(OtpRequestedSchema, { ...v, ...g } as Init))
    );
  }
  const valid = fc.record({
    requestId: fc.uuid(),
    phoneNumber: validPhone,
    purpose: fc.constantFrom(OtpPurpose.SIGNUP, OtpPurpose.LOGIN),
    codeMac: fc.uint8Array({ minLength: 32, maxLength: 32 }),
    issuedAt: fc.constant({ seconds: now, nanos: 0 }),
    expiresAt: fc.constant({ seconds: now + 300n, nanos: 0 }),
    traceId: fc.string({ maxLength: 20 }),
  });
  const garbage: fc.Arbitrary<Init> = fc.oneof(
    busRequestIdArb.map((requestId) => ({ requestId })),
    busPhoneArb().map((phoneNumber) => ({ phoneNumber })),
    busPurposeArb.map((purpose) => ({ purpose })),
    macArb.map((codeMac) => ({ codeMac })),
    timesArb.map((t) => ({ issuedAt: t.issued, expiresAt: t.expires })),
    garbageString.map((traceId) => ({ traceId })),
  );
  return fc.tuple(valid, garbage).map(([v, g]) =>
    toBinary(OtpIssuedSchema, create(OtpIssuedSchema, { ...v, ...g } as Init))
  );
}

/** Right type and content type, valid protobuf, one garbage field. */
const nearValidCaseArb: fc.Arbitrary<BusCase> = fc.constantFrom(OTP_ROUTING_KEY, AUTH_ROUTING_KEY)
  .chain((key) =>
    fc.record({
      key: fc.constant(key),
      type: fc.constant(expectedType(key)),
      contentType: fc.constant(PROTOBUF),
      body: nearValidBody(key),
      messageId: fc.oneof({ weight: 4, arbitrary: fc.uuid() }, shortStr),
      correlationId: fc.option(shortStr, { nil: undefined }),
      persistent: fc.boolean(),
    })
  );

const busCaseArb: fc.Arbitrary<BusCase> = fc.oneof(
  { weight: 3, arbitrary: anyBusCaseArb },
  { weight: 2, arbitrary: nearValidCaseArb },
);

/** Why a message is certainly unprocessable (SPEC §6, proto/bus/v1), or undefined. */
function certainlyInvalid(m: BusCase): string | undefined {
  if (m.type !== expectedType(m.key)) return "wrong type";
  if (m.contentType !== PROTOBUF) return "wrong content type";
  const schema = schemaFor(m.key);
  let msg;
  try {
    msg = fromBinary(schema, m.body);
  } catch {
    return "undecodable body";
  }
  if (msg.purpose !== OtpPurpose.SIGNUP && msg.purpose !== OtpPurpose.LOGIN) {
    return "unspecified or unknown purpose";
  }
  if (msg.requestId.length === 0) return "empty request_id";
  if (msg.requestId.length >= 300) return "huge request_id";
  if (BAD_PHONES.includes(msg.phoneNumber)) return "invalid phone_number";
  if (msg.$typeName === "bus.v1.OtpIssued") {
    if (!/^\+[1-9]\d{1,14}$/.test(msg.phoneNumber)) return "phone_number not E.164";
    if (msg.codeMac.byteLength !== 32) return "code_mac is not an HMAC-SHA256";
    if (!msg.issuedAt || !msg.expiresAt) return "no issued_at or expires_at";
    const sane = (t: Ts) =>
      t.nanos >= 0 && t.nanos < 1e9 && t.seconds > -1_000_000_000_000n &&
      t.seconds < 1_000_000_000_000n;
    const ns = (t: Ts) => t.seconds * 1_000_000_000n + BigInt(t.nanos);
    if (sane(msg.issuedAt) && sane(msg.expiresAt) && ns(msg.expiresAt) <= ns(msg.issuedAt)) {
      return "expires_at not after issued_at";
    }
  }
  return undefined;
}

async function publishAll(ch: ConfirmChannel, sent: Sent[]): Promise<void> {
  await Promise.all(sent.map((m) =>
    new Promise<void>((resolve, reject) => {
      ch.publish(EXCHANGE, m.key, Buffer.from(m.body), {
        persistent: m.persistent,
        messageId: m.messageId,
        type: m.type,
        contentType: m.contentType,
        correlationId: m.correlationId,
        timestamp: Math.floor(Date.now() / 1000),
        headers: { "x-fuzz-id": m.fuzzId },
      }, (err: unknown) => (err ? reject(err) : resolve()));
    })
  ));
}

/** Messages ready + unacknowledged per queue of the stack's vhost (rabbitmqctl). */
async function queueDepths(): Promise<Record<string, number>> {
  const out = await new Deno.Command("rabbitmqctl", {
    args: [
      "-q",
      "list_queues",
      "-p",
      stack.vhost,
      "name",
      "messages_ready",
      "messages_unacknowledged",
      "--formatter",
      "json",
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) throw new Error(`rabbitmqctl: ${dec.decode(out.stderr)}`);
  const rows = JSON.parse(dec.decode(out.stdout)) as {
    name: string;
    messages_ready: number;
    messages_unacknowledged: number;
  }[];
  return Object.fromEntries(
    rows.map((r) => [r.name, r.messages_ready + r.messages_unacknowledged]),
  );
}

function describeSent(m: Sent): string {
  const body = Array.from(m.body.subarray(0, 48), (b) => b.toString(16).padStart(2, "0")).join("");
  return `${m.fuzzId} key=${m.key} type=${JSON.stringify(m.type)} content_type=${
    JSON.stringify(m.contentType)
  } message_id=${JSON.stringify(m.messageId)} body(${m.body.byteLength})=${body}${
    m.body.byteLength > 48 ? "…" : ""
  } invalid=${m.invalid ?? "-"}`;
}

/** Service log lines that mention the message (by message id or request id). */
function logsAbout(m: Sent): string[] {
  let requestId = "";
  try {
    requestId = fromBinary(schemaFor(m.key), m.body).requestId;
  } catch { /* undecodable */ }
  const needles = [m.messageId, requestId].filter((n): n is string => !!n && n.length >= 8);
  return [...stack.otp.lines, ...stack.auth.lines]
    .filter((l) => needles.some((n) => l.includes(JSON.stringify(n).slice(1, -1))))
    .slice(0, 12);
}

/**
 * Whether a message that may be valid was handled: its request is in the database
 * (otp.requests / auth.inbox), or the consumer logged an outcome for its request id
 * (e.g. otp-service refusing it under a send limit, which stores no request).
 */
async function processed(m: Sent): Promise<boolean> {
  let msg;
  try {
    msg = fromBinary(schemaFor(m.key), m.body);
  } catch {
    return false;
  }
  const requestId = msg.requestId;
  const service = m.key === OTP_ROUTING_KEY ? stack.otp : stack.auth;
  const logged = service.lines.some((l) => {
    if (!l.startsWith("{")) return false;
    try {
      const j = JSON.parse(l);
      return j.otp_request_id === requestId && j.level !== "error";
    } catch {
      return false;
    }
  });
  if (logged) return true;
  // PostgreSQL text cannot hold NUL: such an id can never have been stored.
  const storable = (v: string) => !v.includes("\u0000");
  if (m.key === OTP_ROUTING_KEY) {
    if (!storable(requestId)) return false;
    const rows = await stack.sql`select 1 from otp.requests where request_id = ${requestId}`;
    return rows.length > 0;
  }
  const id = m.messageId ?? requestId;
  if (!storable(id)) return false;
  const rows = await stack.sql`select 1 from auth.inbox where message_id = ${id}`;
  return rows.length > 0;
}

Deno.test({
  name:
    "fuzzed bus messages: every certainly invalid one is dead-lettered on first delivery, none is lost, and both services keep serving",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await fixture();
    const conn = await amqp.connect(stack.amqpUrl);
    conn.on("error", () => {});
    const ch = await conn.createConfirmChannel();
    ch.on("error", () => {});
    const dlqs = [`${OTP_QUEUE}.dlq`, `${AUTH_QUEUE}.dlq`];
    // Across runs: a message whose handler keeps failing may be dead-lettered after its
    // run was checked; it is still counted, exactly once.
    const allSent = new Map<string, Sent>();
    const dead = new Map<string, GetMessage[]>();
    const strays: GetMessage[] = [];
    /** Reads (and removes) everything in both dead-letter queues. */
    const take = async () => {
      for (const q of dlqs) {
        for (;;) {
          const m = await ch.get(q, { noAck: true });
          if (!m) break;
          const id = String(m.properties.headers?.["x-fuzz-id"] ?? "");
          if (!allSent.has(id)) strays.push(m);
          else dead.set(id, [...(dead.get(id) ?? []), m]);
        }
      }
    };
    const workQueuesEmpty = async () => {
      for (const q of [OTP_QUEUE, AUTH_QUEUE]) {
        if ((await ch.checkQueue(q)).messageCount !== 0) return false;
      }
      const depth = await queueDepths();
      return depth[OTP_QUEUE] === 0 && depth[AUTH_QUEUE] === 0;
    };
    let seq = 0;
    let processedCount = 0;
    try {
      await fc.assert(
        fc.asyncProperty(fc.array(busCaseArb, { minLength: 40, maxLength: 80 }), async (cases) => {
          const run = ++seq;
          const sent: Sent[] = cases.map((c, i) => ({
            ...c,
            fuzzId: `fuzz-${run}-${i}`,
            invalid: certainlyInvalid(c),
          }));
          for (const m of sent) allSent.set(m.fuzzId, m);
          await publishAll(ch, sent);

          // Every message is accounted for, eventually (bounded): dead-lettered, or (when
          // it may be valid) processed; a failing handler takes a few redeliveries first.
          const settled = new Set<string>();
          await eventually(
            async () => {
              await take();
              for (const m of sent) {
                if (settled.has(m.fuzzId)) continue;
                if (dead.has(m.fuzzId) || (!m.invalid && await processed(m))) {
                  settled.add(m.fuzzId);
                }
              }
              return settled.size === sent.length && await workQueuesEmpty();
            },
            30_000,
            "every message dead-lettered or processed, and empty work queues",
          ).catch(async (err) => {
            const missing = sent.filter((m) => !settled.has(m.fuzzId));
            throw new Error(
              `${(err as Error).message}; queues: ${
                JSON.stringify(await queueDepths().catch(() => ({})))
              }; neither dead-lettered nor processed:\n${
                missing.map((m) => `${describeSent(m)}\n  logs: ${logsAbout(m).join("\n  ")}`)
                  .join("\n")
              }`,
            );
          });

          assert.deepEqual(
            strays.map((m) => ({ id: m.properties.messageId, type: m.properties.type })),
            [],
            "a message the services produced themselves was dead-lettered",
          );
          for (const m of sent.filter((m) => m.invalid)) {
            const got = dead.get(m.fuzzId)!;
            assert.equal(got.length, 1, `dead-lettered ${got.length} times: ${describeSent(m)}`);
            const dl = got[0]!;
            const queue = String(dl.properties.headers?.["x-first-death-queue"] ?? "");
            assert.equal(queue, queueFor(m.key), `dead-lettered from ${queue}`);
            // Poison goes straight to the DLQ: no redelivery loop.
            const count = Number(dl.properties.headers?.["x-delivery-count"] ?? 0);
            assert.equal(count, 0, `requeued ${count} times: ${describeSent(m)}`);
            assert.deepEqual(new Uint8Array(dl.content), m.body, "the body is kept intact");
          }
          for (const m of sent.filter((m) => !m.invalid && !dead.has(m.fuzzId))) {
            assert.ok(
              await processed(m),
              `neither dead-lettered nor processed: ${describeSent(m)}`,
            );
            processedCount++;
          }
          await assertAlive();
        }),
        { seed: 0x5160_000a, numRuns: 4, endOnFailure: true },
      );

      // Both services still serve: a normal login check, and a full signup + verify.
      await assertAlive();
      const client = createClient(
        AuthService,
        createConnectTransport({ baseUrl: stack.authUrl }),
      );
      const headers = { "x-forwarded-for": randomIp() };
      const fresh = await client.validatePhoneNumberLogin({ phoneNumber: randomPhone() }, {
        headers,
      });
      assert.equal(fresh.isValid, false);
      const user = await signupAndVerify();
      const profile = await client.getProfile({ phoneNumber: user.phone }, {
        headers: { ...headers, authorization: `Bearer ${user.token}` },
      });
      assert.equal(profile.phoneNumber, user.phone);

      // Everything settles: work queues empty, dead-letter queues read to the end.
      await eventually(
        async () => {
          await take();
          if (!await workQueuesEmpty()) return false;
          for (const q of dlqs) if ((await ch.checkQueue(q)).messageCount !== 0) return false;
          return true;
        },
        15_000,
        "all queues empty at the end",
      );
      await new Promise((r) => setTimeout(r, 500)); // a last, late dead letter
      await take();

      // The dead-letter count is exactly: every certainly invalid message once, plus the
      // possibly valid ones whose handler failed up to the delivery limit, once each.
      assert.deepEqual(strays.map((m) => m.properties.messageId), [], "stray dead letters");
      const invalid = [...allSent.values()].filter((m) => m.invalid);
      const failed = [...allSent.values()].filter((m) => !m.invalid && dead.has(m.fuzzId));
      for (const m of failed) {
        const got = dead.get(m.fuzzId)!;
        assert.equal(got.length, 1, `dead-lettered ${got.length} times: ${describeSent(m)}`);
        const count = Number(got[0]!.properties.headers?.["x-delivery-count"] ?? 0);
        assert.ok(count <= DELIVERY_LIMIT, `delivered ${count} times: ${describeSent(m)}`);
      }
      const total = [...dead.values()].reduce((n, l) => n + l.length, 0);
      assert.equal(total, invalid.length + failed.length, "dead letters");
      console.log(
        `bus: sent=${allSent.size} certainly-invalid=${invalid.length} (each dead-lettered ` +
          `once, first delivery) other-dead-lettered=${failed.length} processed=${processedCount}`,
      );
    } finally {
      await conn.close().catch(() => {});
    }
  },
});

Deno.test("after all the fuzzing neither service crashed nor logged an internal error", async () => {
  await assertAlive();
  assert.deepEqual(internalErrorLines(stack.auth), [], "auth-service logged an internal error");
  assert.deepEqual(internalErrorLines(stack.otp), [], "otp-service logged an internal error");
  assert.deepEqual(strayOutput(stack.auth), [], "auth-service printed something not a log line");
  assert.deepEqual(strayOutput(stack.otp), [], "otp-service printed something not a log line");
});
