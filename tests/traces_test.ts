// One signup traced across both real services: with OTEL_DENO=true and an OTLP/HTTP
// receiver of the test's own, the spans of auth-service (the RPC, the relay, the
// challenge stored back) and otp-service (the consumer, the issue, the SMS) share one
// trace id, and nothing exported carries the code or the full number.
import assert from "node:assert/strict";
import { pollUntil } from "../shared/async.ts";
import { AUTH_ROUTING_KEY, OTP_ROUTING_KEY } from "../shared/topology.ts";
import { rpc, SIGNUP, VERIFY } from "../testing/rpc.ts";
import { codeFor } from "../testing/sms_codes.ts";
import { randomPhone, startStack } from "../testing/stack.ts";

interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
  kind: number;
  attributes: { key: string; value: Record<string, unknown> }[];
  service: string;
}

const CONSUMER = 5;
const PRODUCER = 4;

const exported: { path: string; body: string }[] = [];
const receiver = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
  exported.push({ path: new URL(req.url).pathname, body: await req.text() });
  return Response.json({});
});

const otel = (service: string) => ({
  OTEL_DENO: "true",
  OTEL_SERVICE_NAME: service,
  OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${receiver.addr.port}`,
  OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
});

const stack = await startStack({ authEnv: otel("auth-service"), otpEnv: otel("otp-service") });

Deno.test.afterAll?.(async () => {
  await stack.stop();
  await receiver.shutdown();
});

function spans(): OtlpSpan[] {
  return exported.filter((e) => e.path === "/v1/traces").flatMap((e) =>
    JSON.parse(e.body).resourceSpans.flatMap((
      r: {
        resource: { attributes: { key: string; value: { stringValue?: string } }[] };
        scopeSpans: { spans: Omit<OtlpSpan, "service">[] }[];
      },
    ) => {
      const service = r.resource.attributes.find((a) => a.key === "service.name")?.value
        .stringValue ?? "";
      return r.scopeSpans.flatMap((s) => s.spans.map((sp) => ({ ...sp, service })));
    })
  );
}

Deno.test("one signup is one trace through auth-service, the bus, otp-service and back", async () => {
  const phone = randomPhone();
  const mark = stack.otp.lines.length;
  assert.equal((await rpc(stack.authUrl, SIGNUP, { phone_number: phone })).code, "ok");
  const code = await codeFor(stack, phone, "signup", mark);
  assert.equal((await rpc(stack.authUrl, VERIFY, { phone_number: phone, otp: code })).code, "ok");

  // A signup publishes two messages in its trace (the code request and the signed-up
  // event): a relay span is told apart by its routing key.
  const find = (
    all: OtlpSpan[],
    service: string,
    name: string,
    traceId?: string,
    routingKey?: string,
  ) =>
    all.find((s) =>
      s.service === service && s.name === name &&
      (traceId === undefined || s.traceId === traceId) &&
      (routingKey === undefined ||
        s.attributes.some((a) =>
          a.key === "messaging.rabbitmq.destination.routing_key" &&
          a.value.stringValue === routingKey
        ))
    );
  // Spans are exported in batches: wait until the last hop (the challenge stored) is in.
  const trace = await pollUntil(() => {
    const all = spans();
    const signup = find(all, "auth-service", "auth.signup");
    if (!signup) return false;
    const id = signup.traceId;
    const names = [
      ["auth-service", "outbox.relay publish", OTP_ROUTING_KEY],
      ["otp-service", "otp.request.receive"],
      ["otp-service", "otp.issue"],
      ["otp-service", "sms.send"],
      ["otp-service", "outbox.relay publish", AUTH_ROUTING_KEY],
      ["auth-service", "auth.challenge.store"],
    ] as const;
    const found = names.map(([service, name, key]) => find(all, service, name, id, key));
    return found.every(Boolean) ? { signup, id, all, found: found as OtlpSpan[] } : false;
  }, { timeoutMs: 20_000, what: "the spans of one signup in both services" }).catch((err) => {
    const seen = spans().map((s) => `${s.service} ${s.name} ${s.traceId} ${s.parentSpanId}`);
    throw new Error(
      `${err.message}; exported: ${exported.map((e) => e.path)}; spans:\n${seen.join("\n")}`,
    );
  });

  const [authRelay, otpConsume, issue, send, otpRelay, store] = trace.found;
  assert.equal(authRelay!.kind, PRODUCER);
  assert.equal(otpConsume!.kind, CONSUMER);
  assert.equal(otpConsume!.parentSpanId, authRelay!.spanId);
  assert.equal(issue!.parentSpanId, otpConsume!.spanId);
  assert.equal(send!.parentSpanId, issue!.spanId);
  assert.equal(store!.kind, CONSUMER);
  assert.equal(store!.parentSpanId, otpRelay!.spanId);
  const services = new Set(trace.all.filter((s) => s.traceId === trace.id).map((s) => s.service));
  assert.deepEqual([...services].sort(), ["auth-service", "otp-service"]);

  // Nothing exported (spans, logs, metrics) holds the code or the full number. The log
  // lines are exported too: wait for otp-service's own line about this send, written
  // after the SMS, so the SMS line would be in by then if it went through the console.
  await pollUntil(
    () =>
      exported.some((e) =>
        e.path === "/v1/logs" && e.body.includes("code sent") && e.body.includes("otp-service")
      ),
    { timeoutMs: 20_000, what: "otp-service's log lines exported" },
  );
  const everything = exported.map((e) => e.body).join("\n");
  assert.equal(everything.includes(phone.slice(1)), false, "the number was exported");
  const codeRun = new RegExp(`(?<!\\d)${code}(?!\\d)`);
  for (const s of trace.all) {
    for (const a of s.attributes) {
      const v = JSON.stringify(a.value);
      assert.equal(codeRun.test(v), false, `${s.name} ${a.key} holds the code`);
      assert.equal(v.includes(phone.slice(2)), false, `${s.name} ${a.key} holds the number`);
    }
  }
  assert.equal(codeRun.test(everything), false, "the code was exported");
});
