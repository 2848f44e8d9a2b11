// The fast unary path against connect-es: one router, served once with the fast path
// and once with every call through connect-es, must answer every request of the RPC
// fuzz corpus and every rejection case with the same status, the same headers (all of
// them) and the same body bytes. In-process: the bridge's handler is called directly.
import assert from "node:assert/strict";
import fc from "fast-check";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import type { ConnectRouter } from "@connectrpc/connect";
import {
  AuthService,
  ValidatePhoneNumberLoginRequestSchema,
} from "../shared/gen/auth/v1/auth_pb.ts";
import { OtpService } from "../shared/gen/otp/v1/otp_pb.ts";
import { DurationSchema } from "@bufbuild/protobuf/wkt";
import { connectHandler } from "../shared/connect_server.ts";
import type { ConnectHandler } from "../shared/connect_server.ts";
import { DomainError, resourceExhausted, unauthenticated, unavailable } from "../shared/errors.ts";
import { createLogger } from "../shared/log.ts";
import { parsePhone } from "../shared/phone.ts";
import { rpcCaseArb } from "../testing/fuzz/arbitraries.ts";
import type { Fixture } from "../testing/fuzz/services.ts";
import { ALL_TARGETS } from "../testing/fuzz/targets.ts";
import { bodyBytes } from "../testing/fuzz/wire.ts";
import type { RpcCase } from "../testing/fuzz/wire.ts";

const INTERNAL = "internal-token-for-the-differential-test";
const fx: Fixture = { phone: "+14155550123", token: "a".repeat(43) };
const ORIGIN = "https://app.example";

/**
 * Outcomes chosen by the number's last digit, so the corpus reaches every kind of reply:
 * successes with headers and trailers, domain errors, errors with details and
 * metadata, and a failure the client must only see as `internal`.
 */
function outcome(
  phoneNumber: string,
  ctx: { requestHeader: Headers; responseHeader: Headers; responseTrailer: Headers },
) {
  const e164 = parsePhone(phoneNumber).e164;
  switch (e164.at(-1)) {
    case "0":
      throw resourceExhausted("too many requests", 42.5);
    case "1":
      throw new DomainError("ALREADY_REGISTERED", "already there");
    case "2":
      throw new Error("a bug the client must not see");
    case "3":
      throw unauthenticated("wrong code");
    case "4":
      ctx.responseHeader.set("x-extra", "yes");
      ctx.responseTrailer.set("x-trail", "done");
      break;
    case "5":
      throw new ConnectError("with details", Code.FailedPrecondition, { "x-why": "because" }, [
        { desc: DurationSchema, value: { seconds: 7n, nanos: 5 } },
      ]);
    case "6":
      throw unavailable("try later");
    case "7":
      throw new DomainError("NUMBER_LOCKED", "not yet");
    case "8": {
      // The request's headers as a handler may change them: its own copy.
      const h = ctx.requestHeader;
      h.append("x-added", "1");
      h.append("x-added", "2");
      h.delete("content-type");
      ctx.responseHeader.set("x-request-view", [...h].map(([k, v]) => `${k}=${v}`).join(";"));
      break;
    }
  }
  return e164;
}

function routes(router: ConnectRouter) {
  router.service(AuthService, {
    signupWithPhoneNumber: (req, ctx) => ({ message: `signed ${outcome(req.phoneNumber, ctx)}` }),
    verifyPhoneNumber: (req, ctx) => ({
      sessionToken: `${outcome(req.phoneNumber, ctx)}${req.otp}`,
    }),
    loginWithPhoneNumber: (req, ctx) => ({ sessionToken: `${outcome(req.phoneNumber, ctx)}` }),
    validatePhoneNumberLogin: (req, ctx) => ({ isValid: outcome(req.phoneNumber, ctx) < "+15" }),
    getProfile(req, ctx) {
      if (ctx.requestHeader.get("authorization") !== `Bearer ${fx.token}`) {
        throw unauthenticated("no session");
      }
      return { phoneNumber: outcome(req.phoneNumber, ctx), verified: true };
    },
    logout: (req) => ({ revoked: req.all ? 3 : 1 }),
  });
  router.service(OtpService, {
    generateOtp: (req, ctx) => ({ message: `sent to ${outcome(req.phoneNumber, ctx)}` }),
  });
}

function handler(fastPath: boolean): ConnectHandler {
  return connectHandler({
    port: 0,
    logger: createLogger("differential", "error", {}, () => {}),
    health: { ready: () => Promise.resolve({ database: true }) },
    routes,
    fastPath,
    corsAllowedOrigins: [ORIGIN],
    authorize: {
      "otp.v1.OtpService": (h) => {
        if (h.get("authorization") !== `Bearer ${INTERNAL}`) throw unauthenticated("bad token");
      },
    },
  });
}

const fast = handler(true);
const slow = handler(false);
const info = {
  remoteAddr: { transport: "tcp", hostname: "127.0.0.1", port: 40000 },
  completed: Promise.resolve(),
} as unknown as Deno.ServeHandlerInfo;

interface Wire {
  method?: string;
  path: string;
  headers: Record<string, string>;
  body?: Uint8Array;
  /** Sent as a stream, with no length. */
  chunked?: boolean;
}

function request(w: Wire): Request {
  const headers = new Headers(w.headers);
  let body: BodyInit | undefined;
  if (w.body !== undefined) {
    const bytes = w.body.slice();
    if (w.chunked) {
      body = new ReadableStream<Uint8Array>({
        start(c) {
          for (let i = 0; i < bytes.byteLength; i += 1024) c.enqueue(bytes.slice(i, i + 1024));
          c.close();
        },
      });
    } else {
      body = bytes;
      // What an HTTP client sends with a body of known size.
      if (!headers.has("content-length")) headers.set("content-length", String(bytes.byteLength));
    }
  }
  return new Request(`http://127.0.0.1:8080${w.path}`, {
    method: w.method ?? "POST",
    headers,
    body,
  });
}

async function reply(h: ConnectHandler, w: Wire) {
  const res = await h(request(w), info);
  return {
    status: res.status,
    headers: [...res.headers].sort(),
    body: new TextDecoder().decode(await res.arrayBuffer()),
  };
}

/** Both paths, same request; returns the (common) reply and whether it went fast. */
async function same(w: Wire) {
  const before = fast.served.fast;
  const [a, b] = [await reply(fast, w), await reply(slow, w)];
  assert.deepEqual(a, b, `fast path and connect-es differ for ${JSON.stringify(w)}`);
  assert.equal(slow.served.fast, 0, "the reference handler took the fast path");
  return { ...a, fast: fast.served.fast > before };
}

function wireOf(path: string, c: RpcCase, origin: boolean): Wire {
  const headers: Record<string, string> = { "content-type": c.contentType };
  if (c.authorization !== undefined) headers["authorization"] = c.authorization;
  headers["x-forwarded-for"] = c.forwardedFor;
  if (c.requestId !== undefined) headers["x-request-id"] = c.requestId;
  if (c.clientAddress !== undefined) headers["x-client-address"] = c.clientAddress;
  if (c.encoding.startsWith("grpc-web")) headers["x-grpc-web"] = "1";
  if (origin) headers["origin"] = ORIGIN;
  return { path, headers, body: bodyBytes(c), chunked: c.chunked };
}

Deno.test("every request of the RPC fuzz corpus gets the same reply from both paths", async () => {
  const seen = new Map<string, number>();
  for (const [i, t] of ALL_TARGETS.entries()) {
    const cases = fc.sample(
      fc.tuple(rpcCaseArb(t, fx, INTERNAL), fc.boolean()),
      { seed: 9100 + i, numRuns: 250 },
    );
    for (const [c, origin] of cases) {
      const r = await same(wireOf(t.path, c, origin));
      const key = `${r.fast ? "fast" : "connect-es"}:${r.status}`;
      seen.set(key, (seen.get(key) ?? 0) + 1);
    }
  }
  // The corpus must reach successes and errors through the fast path.
  for (const status of [200, 400, 401, 409, 429, 500, 503]) {
    assert.ok((seen.get(`fast:${status}`) ?? 0) > 0, `no fast-path reply with HTTP ${status}`);
  }
  assert.ok((seen.get("connect-es:200") ?? 0) > 0, "no connect-es success (gRPC-Web, chunked)");
});

const VALIDATE = "/auth.v1.AuthService/ValidatePhoneNumberLogin";
const json = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));
const JSON_TYPE = { "content-type": "application/json" };

Deno.test("rejections and edge cases get the same reply from both paths", async () => {
  const binary = toBinary(
    ValidatePhoneNumberLoginRequestSchema,
    create(ValidatePhoneNumberLoginRequestSchema, { phoneNumber: "+14155550129" }),
  );
  // name, request, expected status, whether the fast path serves it
  const cases: [string, Wire, number, boolean][] = [
    [
      "snake_case",
      { path: VALIDATE, headers: JSON_TYPE, body: json({ phone_number: "+14155550129" }) },
      200,
      true,
    ],
    [
      "lowerCamelCase",
      { path: VALIDATE, headers: JSON_TYPE, body: json({ phoneNumber: "+14155550129" }) },
      200,
      true,
    ],
    [
      "unknown fields are ignored",
      { path: VALIDATE, headers: JSON_TYPE, body: json({ phone_number: "+14155550129", x: 1 }) },
      200,
      true,
    ],
    [
      "charset",
      {
        path: VALIDATE,
        headers: { "content-type": "application/json; charset=utf-8" },
        body: json({ phone_number: "+14155550129" }),
      },
      200,
      true,
    ],
    [
      "upper-case type",
      {
        path: VALIDATE,
        headers: { "content-type": "APPLICATION/JSON" },
        body: json({ phone_number: "+14155550129" }),
      },
      200,
      true,
    ],
    [
      "binary",
      { path: VALIDATE, headers: { "content-type": "application/proto" }, body: binary },
      200,
      true,
    ],
    ["binary sent as JSON", { path: VALIDATE, headers: JSON_TYPE, body: binary }, 400, true],
    [
      "JSON sent as binary",
      {
        path: VALIDATE,
        headers: { "content-type": "application/proto" },
        body: json({ phone_number: "+1" }),
      },
      400,
      true,
    ],
    [
      "bad JSON",
      { path: VALIDATE, headers: JSON_TYPE, body: new TextEncoder().encode("{nope") },
      400,
      true,
    ],
    [
      "wrong field type",
      { path: VALIDATE, headers: JSON_TYPE, body: json({ phone_number: 5 }) },
      400,
      true,
    ],
    ["a JSON array", { path: VALIDATE, headers: JSON_TYPE, body: json([]) }, 400, true],
    [
      "invalid UTF-8",
      { path: VALIDATE, headers: JSON_TYPE, body: new Uint8Array([0x7b, 0xff, 0x7d]) },
      400,
      true,
    ],
    ["empty body", { path: VALIDATE, headers: JSON_TYPE, body: new Uint8Array() }, 400, true],
    [
      "wrong content type",
      { path: VALIDATE, headers: { "content-type": "text/plain" }, body: json({}) },
      415,
      false,
    ],
    ["no content type", { path: VALIDATE, headers: {}, body: json({}) }, 415, false],
    [
      "oversize, declared",
      {
        path: VALIDATE,
        headers: JSON_TYPE,
        body: json({ phone_number: "+1".padEnd(70_000, "5") }),
      },
      429,
      true,
    ],
    [
      "oversize, chunked",
      {
        path: VALIDATE,
        headers: JSON_TYPE,
        body: json({ phone_number: "+1".padEnd(70_000, "5") }),
        chunked: true,
      },
      429,
      false,
    ],
    [
      "a small chunked body",
      {
        path: VALIDATE,
        headers: JSON_TYPE,
        body: json({ phone_number: "+14155550129" }),
        chunked: true,
      },
      200,
      false,
    ],
    [
      "length shorter than the body",
      {
        path: VALIDATE,
        headers: { ...JSON_TYPE, "content-length": "3" },
        body: json({ phone_number: "+14155550129" }),
      },
      400,
      true,
    ],
    [
      "a handler changes its copy of the request headers",
      { path: VALIDATE, headers: JSON_TYPE, body: json({ phone_number: "+14155550128" }) },
      200,
      true,
    ],
    [
      "RetryInfo details and Retry-After",
      { path: VALIDATE, headers: JSON_TYPE, body: json({ phone_number: "+14155550120" }) },
      429,
      true,
    ],
    [
      "other details and metadata",
      { path: VALIDATE, headers: JSON_TYPE, body: json({ phone_number: "+14155550125" }) },
      400,
      true,
    ],
    [
      "headers and trailers",
      { path: VALIDATE, headers: JSON_TYPE, body: json({ phone_number: "+14155550124" }) },
      200,
      true,
    ],
    [
      "internal error",
      { path: VALIDATE, headers: JSON_TYPE, body: json({ phone_number: "+14155550122" }) },
      500,
      true,
    ],
    [
      "gzip",
      { path: VALIDATE, headers: { ...JSON_TYPE, "content-encoding": "gzip" }, body: json({}) },
      501,
      false,
    ],
    [
      "identity encoding",
      {
        path: VALIDATE,
        headers: { ...JSON_TYPE, "content-encoding": "identity" },
        body: json({ phone_number: "+14155550129" }),
      },
      200,
      true,
    ],
    [
      "a deadline",
      {
        path: VALIDATE,
        headers: { ...JSON_TYPE, "connect-timeout-ms": "5000" },
        body: json({ phone_number: "+14155550129" }),
      },
      200,
      false,
    ],
    [
      "a bad deadline",
      { path: VALIDATE, headers: { ...JSON_TYPE, "connect-timeout-ms": "soon" }, body: json({}) },
      400,
      false,
    ],
    [
      "protocol version 1",
      {
        path: VALIDATE,
        headers: { ...JSON_TYPE, "connect-protocol-version": "1" },
        body: json({ phone_number: "+14155550129" }),
      },
      200,
      true,
    ],
    [
      "protocol version 2",
      {
        path: VALIDATE,
        headers: { ...JSON_TYPE, "connect-protocol-version": "2" },
        body: json({ phone_number: "+14155550129" }),
      },
      200,
      true,
    ],
    [
      "GET of a method with side effects",
      { method: "GET", path: VALIDATE, headers: {} },
      405,
      false,
    ],
    ["PUT", { method: "PUT", path: VALIDATE, headers: JSON_TYPE, body: json({}) }, 405, false],
    [
      "streaming content type",
      { path: VALIDATE, headers: { "content-type": "application/connect+json" }, body: json({}) },
      415,
      false,
    ],
    [
      "internal token missing: refused before decoding",
      {
        path: "/otp.v1.OtpService/GenerateOtp",
        headers: JSON_TYPE,
        body: new TextEncoder().encode("{nope"),
      },
      401,
      true,
    ],
    [
      "internal token given",
      {
        path: "/otp.v1.OtpService/GenerateOtp",
        headers: { ...JSON_TYPE, authorization: `Bearer ${INTERNAL}` },
        body: json({ phone_number: "+14155550129" }),
      },
      200,
      true,
    ],
    [
      "CORS preflight",
      {
        method: "OPTIONS",
        path: VALIDATE,
        headers: { origin: ORIGIN, "access-control-request-method": "POST" },
      },
      204,
      false,
    ],
    ["unknown path", { path: "/nope", headers: JSON_TYPE, body: json({}) }, 404, false],
    ["health", { method: "GET", path: "/healthz", headers: {} }, 200, false],
  ];
  for (const [name, w, status, viaFast] of cases) {
    const r = await same(w);
    assert.equal(r.status, status, `${name}: ${r.body}`);
    assert.equal(r.fast, viaFast, `${name}: fast path taken`);
  }
});

Deno.test("a limit error carries RetryInfo, its debug form and Retry-After on the fast path", async () => {
  const r = await same({
    path: VALIDATE,
    headers: JSON_TYPE,
    body: json({ phone_number: "+14155550120" }),
  });
  assert.ok(r.fast);
  const body = JSON.parse(r.body);
  assert.equal(body.code, "resource_exhausted");
  assert.equal(body.details[0].type, "google.rpc.RetryInfo");
  assert.match(body.details[0].value, /^[A-Za-z0-9+/]+$/);
  assert.deepEqual(body.details[0].debug, { retry_delay: "43s" });
  assert.ok(r.headers.some(([k, v]) => k === "retry-after" && v === "43"));
});
