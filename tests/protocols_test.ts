// Protocol coverage of the Deno.serve bridge: Connect JSON and binary, gRPC-Web, and a
// clean, immediate error for plain gRPC (which needs HTTP trailers Deno.serve lacks).
import assert from "node:assert/strict";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import { AuthService } from "../shared/gen/auth/v1/auth_pb.ts";
import { randomPhone, startStack } from "../testing/stack.ts";

const stack = await startStack();
Deno.test.afterAll(() => stack.stop());

for (
  const [name, transport] of [
    ["Connect JSON", createConnectTransport({ baseUrl: stack.authUrl })],
    ["Connect binary", createConnectTransport({ baseUrl: stack.authUrl, useBinaryFormat: true })],
    ["gRPC-Web", createGrpcWebTransport({ baseUrl: stack.authUrl })],
  ] as const
) {
  Deno.test(`${name} calls succeed and errors keep their code`, async () => {
    const client = createClient(AuthService, transport);
    const res = await client.validatePhoneNumberLogin({ phoneNumber: randomPhone() });
    assert.equal(res.isValid, false);
    await assert.rejects(
      client.signupWithPhoneNumber({ phoneNumber: "nope" }),
      (e) => ConnectError.from(e).code === Code.InvalidArgument,
    );
  });
}

Deno.test("a plain gRPC client gets UNIMPLEMENTED at once instead of a hung stream", async () => {
  // The HTTP/2 session is closed by the client before the server goes away: Deno's
  // node:http2 aborts the process on a GOAWAY for a session it still holds.
  const sessionManager = new Http2SessionManager(stack.authUrl);
  const client = createClient(
    AuthService,
    createGrpcTransport({ baseUrl: stack.authUrl, sessionManager }),
  );
  const started = Date.now();
  try {
    await assert.rejects(
      client.validatePhoneNumberLogin({ phoneNumber: randomPhone() }, { timeoutMs: 5_000 }),
      (e) => {
        const err = ConnectError.from(e);
        assert.equal(Code[err.code], Code[Code.Unimplemented], err.message);
        return true;
      },
    );
  } finally {
    sessionManager.abort();
  }
  assert.ok(Date.now() - started < 2_000, "the error was not immediate");
});

Deno.test("JSON replies use snake_case names and emit default values", async () => {
  const res = await fetch(`${stack.authUrl}/auth.v1.AuthService/ValidatePhoneNumberLogin`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ phoneNumber: randomPhone() }),
  });
  assert.equal(await res.text(), '{"is_valid":false}');
});

Deno.test("health and readiness endpoints answer", async () => {
  const live = await fetch(`${stack.authUrl}/healthz`);
  assert.equal(live.status, 200);
  await live.body?.cancel();
  for (const url of [stack.authUrl, stack.otpUrl]) {
    const ready = await fetch(`${url}/readyz`);
    assert.deepEqual(await ready.json(), {
      status: "ready",
      checks: { database: true, migrations: true, broker: true },
    });
  }
});
