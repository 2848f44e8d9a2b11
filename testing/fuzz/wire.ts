// Sending one fuzz case to an RPC and judging the reply (tests/fuzz_rpc_test.ts). An
// RpcCase is what goes on the wire (encoding, content type, body, gRPC-Web framing,
// headers); checkReply is the property every reply must have: a success with a body
// that decodes as the response, or a proper Connect / gRPC-Web error with a code the
// API uses. Never `internal`, never a 5xx but 503, never a leaked stack trace, and
// (through send's timeout) never a hang.
import assert from "node:assert/strict";
import { fromBinary, fromJson } from "@bufbuild/protobuf";
import type { JsonValue } from "@bufbuild/protobuf";
import type { Stack } from "../stack.ts";
import { concat, dec, enc, u32 } from "./bytes.ts";
import { baseUrl } from "./targets.ts";
import type { Target } from "./targets.ts";

/** serveConnect's default readMaxBytes. */
export const READ_MAX_BYTES = 64 * 1024;
const REQUEST_TIMEOUT_MS = 10_000;

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

export type Encoding = "json" | "proto" | "grpc-web+proto" | "grpc-web+json";

/** How a gRPC-Web body is framed: properly, or broken in one of these ways. */
export type Framing =
  | { kind: "ok" }
  | { kind: "flags"; flags: number }
  | { kind: "length"; delta: number }
  | { kind: "bare" }
  | { kind: "twice" }
  | { kind: "trailing"; bytes: Uint8Array }
  | { kind: "with-trailer" }
  | { kind: "empty" };

export interface RpcCase {
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

/** The bytes sent for a case: its body, framed when it is gRPC-Web. */
export function bodyBytes(c: RpcCase): Uint8Array {
  const raw = typeof c.body === "string" ? enc.encode(c.body) : c.body;
  if (!c.encoding.startsWith("grpc-web")) return raw;
  return frame(raw, c.framing ?? { kind: "ok" });
}

export async function send(stack: Stack, t: Target, c: RpcCase): Promise<Reply> {
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
  const res = await fetch(`${baseUrl(stack, t)}${t.path}`, {
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

function clip(s: string, n = 300): string {
  return s.length > n ? `${s.slice(0, n)}…(${s.length} chars)` : s;
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
    // The JSON wire format: proto field names, and defaults always emitted.
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
export function checkReply(t: Target, c: RpcCase, r: Reply): string {
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
