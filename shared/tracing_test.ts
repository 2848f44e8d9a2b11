// The guard and the no-tracing path run in this process. The real path (Deno's built-in
// OpenTelemetry) needs OTEL_DENO=true at start, so this same file, run with `deno run`,
// is the traced program: the test starts it against an OTLP/HTTP receiver of its own
// and reads the spans it exports.
import assert from "node:assert/strict";
import { ROOT_CONTEXT, trace } from "@opentelemetry/api";
import {
  extractTraceContext,
  injectTraceHeaders,
  isSensitiveKey,
  messagingAttributes,
  REDACTED,
  safeAttributes,
  SpanKind,
  traceHeaders,
  withSpan,
} from "./tracing.ts";

const PHONE = "+14155550123";
const CODE = "123456";
const OTHER_CODE = "654321";
const REQUEST_ID = "5b0c3f1e-8a43-4c55-9d53-0e7e0b7f3a11";
const TOKEN = "q8Hc2V0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA";

/** The traced program: a signup span, a message across the "bus", its consumer. */
async function tracedProgram(): Promise<void> {
  let headers: Record<string, unknown> = {};
  await withSpan("auth.signup", {
    "phone_number": PHONE,
    "otp": CODE,
    "request.id": REQUEST_ID,
    "note": `sending to ${PHONE}`,
    "attempts": 3,
  }, (span) => {
    span.setAttributes({ "challenge": CODE, "detail": `code ${OTHER_CODE}`, "hint": TOKEN });
    headers = injectTraceHeaders({ "x-kept": "yes" });
  });
  // What the consumer gets: the headers after a trip through the broker, nothing active.
  const parent = extractTraceContext(JSON.parse(JSON.stringify(headers)));
  await withSpan(
    "otp.issue",
    messagingAttributes("process", {
      exchange: "verification",
      routingKey: "otp_routing_key",
      messageId: REQUEST_ID,
    }),
    () => withSpan("sms.send", { "sms.provider": "console" }, () => {}),
    { parent, kind: SpanKind.CONSUMER },
  );
  await withSpan("fails", {}, () => {
    throw new TypeError(`bad number ${PHONE}`);
  }).catch(() => {});
  console.log(JSON.stringify(headers));
}

if (import.meta.main) await tracedProgram();

Deno.test("keys that name a code, token, secret or number are dropped", () => {
  const out = safeAttributes({
    "otp": CODE,
    "otp.code": CODE,
    "session_token": "abc",
    "auth.authorization": "Bearer x",
    "phone_number": "x",
    "user.phone": "x",
    "code_mac": "x",
    "api-key": "x",
    "request.id": REQUEST_ID,
    "otp.purpose": "signup",
    "phone.country": "US",
    "rpc.grpc.status_code": 16,
  });
  assert.deepEqual(out, {
    "request.id": REQUEST_ID,
    "otp.purpose": "signup",
    "phone.country": "US",
    "rpc.grpc.status_code": 16,
  });
  assert.equal(isSensitiveKey("machine"), false);
});

Deno.test("values that look like a code, a number or a token are redacted", () => {
  const out = safeAttributes({
    a: CODE,
    b: `sent to ${PHONE}`,
    c: "+1 (415) 555-0123",
    d: TOKEN,
    e: "eyJhbGciOiJFZERTQSJ9.x.y",
    f: [PHONE, "fine"],
    g: 123456,
    h: REQUEST_ID,
    i: "0af7651916cd43dd8448eb211c80319c",
    j: "retry in 30s",
    k: 3,
    l: true,
  });
  assert.deepEqual(out, {
    a: REDACTED,
    b: REDACTED,
    c: REDACTED,
    d: REDACTED,
    e: REDACTED,
    f: [REDACTED, "fine"],
    g: REDACTED,
    h: REQUEST_ID,
    i: "0af7651916cd43dd8448eb211c80319c",
    j: "retry in 30s",
    k: 3,
    l: true,
  });
});

Deno.test("without OpenTelemetry, spans still run their work and pass on its result or error", async () => {
  assert.equal(await withSpan("op", {}, () => 42), 42);
  await assert.rejects(
    withSpan("op", {}, () => Promise.reject(new RangeError("x"))),
    RangeError,
  );
  assert.deepEqual(traceHeaders(), {});
});

Deno.test("headers without a valid trace context give a fresh root context", () => {
  assert.equal(extractTraceContext(undefined), ROOT_CONTEXT);
  for (const traceparent of ["", "garbage", "00-zz-yy-01", 42]) {
    const ctx = extractTraceContext({ traceparent });
    assert.equal(trace.getSpanContext(ctx), undefined, String(traceparent));
  }
});

// ---------------------------------------------------------------------------------
// Under Deno's OpenTelemetry
// ---------------------------------------------------------------------------------

interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
  kind: number;
  attributes: { key: string; value: Record<string, unknown> }[];
  status: { code: number; message: string };
}

async function runTraced(): Promise<{ spans: OtlpSpan[]; exported: string; stdout: string }> {
  const bodies: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    if (new URL(req.url).pathname === "/v1/traces") bodies.push(await req.text());
    else await req.body?.cancel();
    return Response.json({});
  });
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--no-prompt", new URL(import.meta.url).pathname],
      cwd: new URL("..", import.meta.url).pathname,
      env: {
        OTEL_DENO: "true",
        OTEL_SERVICE_NAME: "tracing-test",
        OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${server.addr.port}`,
        OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
      },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, stderr);
    const spans = bodies.flatMap((b) =>
      JSON.parse(b).resourceSpans.flatMap((r: { scopeSpans: { spans: OtlpSpan[] }[] }) =>
        r.scopeSpans.flatMap((s) => s.spans)
      )
    );
    return { spans, exported: bodies.join("\n"), stdout: new TextDecoder().decode(out.stdout) };
  } finally {
    await server.shutdown();
  }
}

const traced = (() => {
  let run: ReturnType<typeof runTraced> | undefined;
  return () => run ??= runTraced();
})();

function span(spans: OtlpSpan[], name: string): OtlpSpan {
  const s = spans.find((s) => s.name === name);
  assert.ok(s, `no span ${name} among ${spans.map((s) => s.name).join(", ")}`);
  return s;
}

const attr = (s: OtlpSpan, key: string) => s.attributes.find((a) => a.key === key)?.value;

Deno.test("a consumer span continues the trace its message's headers carry", async () => {
  const { spans, stdout } = await traced();
  const signup = span(spans, "auth.signup");
  const issue = span(spans, "otp.issue");
  const send = span(spans, "sms.send");
  assert.equal(signup.parentSpanId, "");
  assert.equal(issue.traceId, signup.traceId);
  assert.equal(issue.parentSpanId, signup.spanId);
  assert.equal(issue.kind, 5); // CONSUMER
  assert.equal(send.traceId, signup.traceId);
  assert.equal(send.parentSpanId, issue.spanId);
  const headers = JSON.parse(stdout.trim().split("\n").at(-1)!);
  assert.equal(headers.traceparent, `00-${signup.traceId}-${signup.spanId}-01`);
  assert.equal(headers["x-kept"], "yes");
  assert.deepEqual(attr(issue, "messaging.message.id"), { stringValue: REQUEST_ID });
});

Deno.test("no exported span carries the code, the number or the token", async () => {
  const { spans, exported } = await traced();
  for (const secret of [CODE, OTHER_CODE, "4155550123", TOKEN]) {
    assert.equal(exported.includes(secret), false, `${secret} was exported`);
  }
  const signup = span(spans, "auth.signup");
  assert.deepEqual(signup.attributes.map((a) => a.key).sort(), [
    "attempts",
    "challenge",
    "detail",
    "hint",
    "note",
    "request.id",
  ]);
  assert.deepEqual(attr(signup, "challenge"), { stringValue: REDACTED });
  assert.deepEqual(attr(signup, "request.id"), { stringValue: REQUEST_ID });
});

Deno.test("a failed span is marked as an error with the error's class only", async () => {
  const { spans } = await traced();
  const failed = span(spans, "fails");
  assert.equal(failed.status.code, 2); // ERROR
  assert.equal(failed.status.message, "TypeError");
  assert.deepEqual(attr(failed, "error.type"), { stringValue: "TypeError" });
});
