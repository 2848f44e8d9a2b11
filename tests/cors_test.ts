// CORS and the headers every reply carries, against auth-service started as a process
// with its permission set and CORS_ALLOWED_ORIGINS: a browser on an allowed origin can
// call, and any other origin gets no CORS header.
import assert from "node:assert/strict";
import { randomPhone, startStack } from "../testing/stack.ts";

const ORIGIN = "https://app.example";
const stack = await startStack({
  authEnv: { CORS_ALLOWED_ORIGINS: `${ORIGIN}, https://other.example` },
});
Deno.test.afterAll(() => stack.stop());

const VALIDATE = "/auth.v1.AuthService/ValidatePhoneNumberLogin";
const corsHeaders = (h: Headers) => [...h.keys()].filter((k) => k.startsWith("access-control-"));

Deno.test("a preflight from an allowed origin lists the Connect headers, Authorization and X-Request-Id", async () => {
  const res = await fetch(`${stack.authUrl}${VALIDATE}`, {
    method: "OPTIONS",
    headers: {
      origin: ORIGIN,
      "access-control-request-method": "POST",
      "access-control-request-headers": "content-type, connect-protocol-version, authorization",
    },
  });
  await res.body?.cancel();
  assert.equal(res.status, 204);
  assert.equal(res.headers.get("access-control-allow-origin"), ORIGIN);
  const allowed = res.headers.get("access-control-allow-headers")!.toLowerCase().split(", ");
  for (
    const h of [
      "content-type",
      "connect-protocol-version",
      "connect-timeout-ms",
      "authorization",
      "x-request-id",
    ]
  ) {
    assert.ok(allowed.includes(h), h);
  }
  assert.ok(Number(res.headers.get("access-control-max-age")) > 0);
  assert.match(res.headers.get("vary") ?? "", /Origin/);
});

Deno.test("an actual call from an allowed origin exposes the status and retry headers", async () => {
  const res = await fetch(`${stack.authUrl}${VALIDATE}`, {
    method: "POST",
    headers: { origin: ORIGIN, "content-type": "application/json" },
    body: JSON.stringify({ phone_number: randomPhone() }),
  });
  await res.body?.cancel();
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("access-control-allow-origin"), ORIGIN);
  const exposed = res.headers.get("access-control-expose-headers")!.toLowerCase().split(", ");
  for (const h of ["grpc-status", "grpc-message", "grpc-status-details-bin", "retry-after"]) {
    assert.ok(exposed.includes(h), h);
  }
  assert.equal(res.headers.get("cache-control"), "no-store");
  assert.equal(res.headers.get("x-content-type-options"), "nosniff");
});

Deno.test("another origin gets no CORS header on a preflight or a call", async () => {
  const pre = await fetch(`${stack.authUrl}${VALIDATE}`, {
    method: "OPTIONS",
    headers: { origin: "https://evil.example", "access-control-request-method": "POST" },
  });
  await pre.body?.cancel();
  assert.notEqual(pre.status, 204);
  assert.deepEqual(corsHeaders(pre.headers), []);
  const call = await fetch(`${stack.authUrl}${VALIDATE}`, {
    method: "POST",
    headers: { origin: "https://evil.example", "content-type": "application/json" },
    body: JSON.stringify({ phone_number: randomPhone() }),
  });
  await call.body?.cancel();
  assert.deepEqual(corsHeaders(call.headers), []);
});

Deno.test("errors, health and unknown paths carry no-store and nosniff too", async () => {
  for (
    const [path, init] of [
      [VALIDATE, { method: "POST", headers: { "content-type": "application/json" }, body: "{" }],
      ["/healthz", {}],
      ["/readyz", {}],
      ["/nope", {}],
    ] as const
  ) {
    const res = await fetch(`${stack.authUrl}${path}`, init);
    await res.body?.cancel();
    assert.equal(res.headers.get("cache-control"), "no-store", path);
    assert.equal(res.headers.get("x-content-type-options"), "nosniff", path);
  }
});
