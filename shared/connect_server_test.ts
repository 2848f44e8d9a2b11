import assert from "node:assert/strict";
import { createClient, createRouterTransport } from "@connectrpc/connect";
import type { ConnectRouter } from "@connectrpc/connect";
import { create, toBinary } from "@bufbuild/protobuf";
import { AuthService, ValidatePhoneNumberLoginRequestSchema } from "./gen/auth/v1/auth_pb.ts";
import { OtpService } from "./gen/otp/v1/otp_pb.ts";
import {
  clientRequestId,
  connectHandler,
  kClientRequestId,
  kRequestId,
  receivedHeader,
  serveConnect,
} from "./connect_server.ts";
import type { ServeOptions } from "./connect_server.ts";
import { unauthenticated } from "./errors.ts";
import { createLogger } from "./log.ts";

const ORIGIN = "https://app.example";
const info = {
  remoteAddr: { transport: "tcp", hostname: "127.0.0.1", port: 40000 },
} as unknown as Deno.ServeHandlerInfo;
const seen: { requestId: string; clientRequestId: string }[] = [];

function routes(router: ConnectRouter) {
  router.service(AuthService, {
    validatePhoneNumberLogin(req, ctx) {
      seen.push({
        requestId: ctx.values.get(kRequestId),
        clientRequestId: ctx.values.get(kClientRequestId),
      });
      if (req.phoneNumber === "") throw unauthenticated("who?");
      return { isValid: true };
    },
  });
  router.service(OtpService, { generateOtp: () => ({ message: "OTP sent" }) });
}

function handler(o: Partial<ServeOptions> = {}) {
  return connectHandler({
    port: 0,
    logger: createLogger("test", "error", {}, () => {}),
    health: { ready: () => Promise.resolve({ database: false }) },
    routes,
    ...o,
  });
}

const call = (h: ReturnType<typeof handler>, path: string, init: RequestInit = {}) =>
  h(new Request(`http://127.0.0.1${path}`, init), info);
const VALIDATE = "/auth.v1.AuthService/ValidatePhoneNumberLogin";
const post = (body: string, headers: Record<string, string> = {}): RequestInit => ({
  method: "POST",
  headers: {
    "content-type": "application/json",
    "content-length": String(body.length),
    ...headers,
  },
  body,
});

Deno.test("every reply carries no-store and nosniff, errors and non-RPC paths included", async () => {
  const h = handler({ plainRoutes: { "/page": () => new Response("<p>hi</p>") } });
  const replies = [
    await call(h, VALIDATE, post('{"phone_number":"+14155550123"}')),
    await call(h, VALIDATE, post('{"phone_number":""}')),
    await call(h, VALIDATE, post("{nope")),
    await call(h, VALIDATE, { method: "POST", headers: { "content-type": "application/grpc" } }),
    await call(h, VALIDATE, { method: "POST", headers: { "content-type": "text/plain" } }),
    await call(h, "/healthz"),
    await call(h, "/readyz"),
    await call(h, "/nope"),
    await call(h, "/page"),
    // Response.redirect's headers cannot be changed in place.
    await handler({ plainRoutes: { "/r": () => Response.redirect("http://x.example/") } })(
      new Request("http://127.0.0.1/r"),
      info,
    ),
  ];
  for (const r of replies) {
    await r.body?.cancel();
    assert.equal(r.headers.get("cache-control"), "no-store", `${r.status}`);
    assert.equal(r.headers.get("x-content-type-options"), "nosniff", `${r.status}`);
  }
  assert.deepEqual(replies.map((r) => r.status), [
    200,
    401,
    400,
    200,
    415,
    200,
    503,
    404,
    200,
    302,
  ]);
});

Deno.test("the server generates every request id; the client's is kept beside it, cleaned", async () => {
  const h = handler();
  seen.length = 0;
  const given = "client-id-1";
  for (const id of [given, `evil "id"\t${"x".repeat(200)}`, undefined]) {
    const headers: Record<string, string> = id === undefined ? {} : { "x-request-id": id };
    const r = await call(h, VALIDATE, post('{"phone_number":"+14155550123"}', headers));
    await r.body?.cancel();
  }
  assert.equal(seen.length, 3);
  const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
  for (const s of seen) assert.match(s.requestId, uuid);
  assert.equal(new Set(seen.map((s) => s.requestId)).size, 3);
  assert.equal(seen[0]!.clientRequestId, given);
  assert.equal(seen[1]!.clientRequestId, `evilid${"x".repeat(58)}`);
  assert.equal(seen[2]!.clientRequestId, "");
  assert.equal(clientRequestId("a b\u00e9c"), "abc");
});

Deno.test("a CORS preflight from an allowed origin is answered; other origins get no CORS header", async () => {
  const h = handler({ corsAllowedOrigins: [ORIGIN] });
  const preflight = (origin: string) =>
    call(h, VALIDATE, {
      method: "OPTIONS",
      headers: {
        origin,
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type,authorization,x-request-id",
      },
    });
  const ok = await preflight(ORIGIN);
  assert.equal(ok.status, 204);
  assert.equal(ok.headers.get("access-control-allow-origin"), ORIGIN);
  assert.equal(ok.headers.get("access-control-allow-methods"), "POST, GET");
  const allowed = ok.headers.get("access-control-allow-headers")!.toLowerCase().split(", ");
  for (
    const name of [
      "content-type",
      "connect-protocol-version",
      "connect-timeout-ms",
      "authorization",
      "x-request-id",
      "x-grpc-web",
    ]
  ) assert.ok(allowed.includes(name), name);
  assert.equal(ok.headers.get("access-control-max-age"), "7200");
  assert.match(ok.headers.get("vary")!, /\bOrigin\b/);
  assert.equal(ok.headers.get("cache-control"), "no-store");

  const other = await preflight("https://evil.example");
  await other.body?.cancel();
  assert.notEqual(other.status, 204);
  assert.deepEqual([...other.headers.keys()].filter((k) => k.startsWith("access-control-")), []);

  const actual = await call(h, VALIDATE, post('{"phone_number":""}', { origin: ORIGIN }));
  await actual.body?.cancel();
  assert.equal(actual.headers.get("access-control-allow-origin"), ORIGIN);
  const exposed = actual.headers.get("access-control-expose-headers")!.toLowerCase().split(", ");
  for (const name of ["grpc-status", "grpc-message", "grpc-status-details-bin", "retry-after"]) {
    assert.ok(exposed.includes(name), name);
  }
  const foreign = await call(
    h,
    VALIDATE,
    post('{"phone_number":""}', { origin: "https://evil.example" }),
  );
  await foreign.body?.cancel();
  assert.deepEqual([...foreign.headers.keys()].filter((k) => k.startsWith("access-control-")), []);
});

Deno.test("without allowed origins nothing about CORS is sent, a preflight included", async () => {
  const h = handler();
  const r = await call(h, VALIDATE, {
    method: "OPTIONS",
    headers: { origin: ORIGIN, "access-control-request-method": "POST" },
  });
  await r.body?.cancel();
  assert.equal(r.status, 405);
  assert.deepEqual([...r.headers.keys()].filter((k) => k.startsWith("access-control-")), []);
});

Deno.test("plain routes answer GET and HEAD only; the RPCs and health are unchanged", async () => {
  const h = handler({ plainRoutes: { "/metrics": () => new Response("requests 1\n") } });
  const get = await call(h, "/metrics");
  assert.equal(await get.text(), "requests 1\n");
  const postReply = await call(h, "/metrics", { method: "POST", body: "x" });
  await postReply.body?.cancel();
  assert.equal(postReply.status, 405);
  const missing = await call(h, "/metrics2");
  await missing.body?.cancel();
  assert.equal(missing.status, 404);
});

Deno.test("authorize runs before the body is read and refuses with the domain error's code", async () => {
  const h = handler({
    authorize: {
      "otp.v1.OtpService": (headers) => {
        if (headers.get("authorization") !== "Bearer right") throw unauthenticated("bad token");
      },
    },
  });
  let pulled = false;
  const body = new ReadableStream<Uint8Array>({
    pull(c) {
      pulled = true;
      c.enqueue(new TextEncoder().encode("{}"));
      c.close();
    },
  }, { highWaterMark: 0 });
  const path = "/otp.v1.OtpService/GenerateOtp";
  const refused = await call(h, path, {
    method: "POST",
    headers: { "content-type": "application/json", "content-length": "2" },
    body,
  });
  assert.equal(refused.status, 401);
  const error = await refused.json();
  assert.equal(error.code, "unauthenticated");
  assert.equal(error.message, "bad token");
  assert.equal(pulled, false, "the body was read before authorize refused");
  const ok = await call(
    h,
    path,
    post('{"phone_number":"+14155550123"}', { authorization: "Bearer right" }),
  );
  assert.equal(ok.status, 200);
  await ok.body?.cancel();
  // Other services are not guarded by it.
  const other = await call(h, VALIDATE, post('{"phone_number":"+14155550123"}'));
  await other.body?.cancel();
  assert.equal(other.status, 200);
});

Deno.test("on the wire every reply states its exact length, on both paths", async () => {
  const server = serveConnect({
    hostname: "127.0.0.1",
    port: 0,
    logger: createLogger("test", "error", {}, () => {}),
    health: { ready: () => Promise.resolve({}) },
    routes,
  });
  try {
    const url = `http://127.0.0.1:${server.port}${VALIDATE}`;
    const binary = toBinary(
      ValidatePhoneNumberLoginRequestSchema,
      create(ValidatePhoneNumberLoginRequestSchema, { phoneNumber: "+14155550123" }),
    );
    const calls: [string, RequestInit][] = [
      ["fast JSON", post('{"phone_number":"+14155550123"}')],
      ["fast JSON error", post('{"phone_number":""}')],
      ["fast binary", {
        method: "POST",
        headers: { "content-type": "application/proto" },
        body: binary,
      }],
      [
        "connect-es (compressed request)",
        post('{"phone_number":"+14155550123"}', { "content-encoding": "br" }),
      ],
    ];
    for (const [what, init] of calls) {
      const res = await fetch(url, init);
      const body = new Uint8Array(await res.arrayBuffer());
      assert.ok(body.byteLength > 0, what);
      assert.equal(res.headers.get("content-length"), String(body.byteLength), what);
      assert.equal(res.headers.get("cache-control"), "no-store", what);
    }
    const get = await fetch(`${url}?connect=v1&encoding=json&message=${encodeURIComponent("{}")}`);
    const body = new Uint8Array(await get.arrayBuffer());
    assert.equal(get.headers.get("content-length"), String(body.byteLength), "connect-es GET");
  } finally {
    await server.shutdown();
  }
});

Deno.test("a handler reads the call's headers alike on both paths and through any transport", async () => {
  const agents: (string | null)[] = [];
  const readAgent = (r: ConnectRouter) =>
    r.rpc(AuthService.method.validatePhoneNumberLogin, (_req, ctx) => {
      agents.push(receivedHeader(ctx, "user-agent"));
      return { isValid: true };
    });
  const body = '{"phone_number":"+14155550123"}';
  for (const fastPath of [true, false]) {
    const h = handler({ routes: readAgent, fastPath });
    const res = await call(h, VALIDATE, post(body, { "user-agent": `agent-${fastPath}` }));
    await res.body?.cancel();
    assert.equal(h.served.fast, fastPath ? 1 : 0);
  }
  const client = createClient(
    AuthService,
    createRouterTransport(readAgent, {
      transport: {
        interceptors: [(next) => (req) => {
          req.header.set("user-agent", "in-memory");
          return next(req);
        }],
      },
    }),
  );
  await client.validatePhoneNumberLogin({ phoneNumber: "+14155550123" });
  assert.deepEqual(agents, ["agent-true", "agent-false", "in-memory"]);
});
