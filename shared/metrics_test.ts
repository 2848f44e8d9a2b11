import assert from "node:assert/strict";
import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { AuthService } from "./gen/auth/v1/auth_pb.ts";
import { METRICS, RPC_METRICS } from "./metric_names.ts";
import type { HistogramSpec, MetricSpec } from "./metric_names.ts";
import { boundedLabelValue, Metrics, OTHER, rpcMetricsInterceptor } from "./metrics.ts";
import { parsePrometheusText, sampleValue, sensitiveLabels } from "./prometheus_text.ts";

const PHONE = "+14155550123";

/** Defines every metric of the catalogue, gauges reading `gauge`. */
function defineAll(m: Metrics, gauge: () => number | Promise<number> = () => 0) {
  const defined = new Map<string, { inc?: (l: never, v?: number) => void }>();
  for (const [key, spec] of Object.entries(METRICS) as [string, MetricSpec | HistogramSpec][]) {
    if (spec.kind === "counter") defined.set(key, m.counter({ ...spec, kind: "counter" }));
    else if (spec.kind === "histogram") m.histogram(spec as HistogramSpec);
    else m.gauge({ ...spec, kind: "gauge", labels: {} }, gauge);
  }
  return defined;
}

Deno.test("every catalogued metric is exposed in valid Prometheus text with its type", async () => {
  const m = new Metrics();
  defineAll(m);
  const e = parsePrometheusText(await m.exposition());
  for (const spec of Object.values(METRICS)) {
    assert.equal(e.families.get(spec.name)?.type, spec.kind, spec.name);
    assert.ok(e.families.get(spec.name)!.help.length > 0, spec.name);
  }
  assert.match(m.contentType, /^text\/plain; version=0\.0\.4/);
});

Deno.test("counters move by one or by the amount given", async () => {
  const m = new Metrics();
  const sent = m.counter(METRICS.codesSent);
  sent.inc({ purpose: "signup", country: "US" });
  sent.inc({ purpose: "signup", country: "US" }, 2);
  sent.inc({ purpose: "login", country: "GB" });
  const e = parsePrometheusText(await m.exposition());
  assert.equal(sampleValue(e, "otp_codes_sent_total", { purpose: "signup", country: "US" }), 3);
  assert.equal(sampleValue(e, "otp_codes_sent_total", { purpose: "login", country: "GB" }), 1);
  assert.equal(sampleValue(e, "otp_codes_sent_total", { purpose: "login", country: "US" }), 0);
});

Deno.test("series whose labels all come from small closed sets start at zero", async () => {
  const m = new Metrics();
  m.counter(METRICS.codeChecks);
  m.counter(METRICS.codesSent); // has a country: nothing until used
  const e = parsePrometheusText(await m.exposition());
  const checks = e.samples.filter((s) => s.name === "otp_code_checks_total");
  assert.equal(
    checks.length,
    METRICS.codeChecks.labels.purpose.length * METRICS.codeChecks.labels.outcome.length,
  );
  assert.ok(checks.every((s) => s.value === 0));
  assert.equal(e.samples.filter((s) => s.name === "otp_codes_sent_total").length, 0);
});

Deno.test("a label value outside its set is recorded as other or unknown, never as given", async () => {
  const m = new Metrics();
  const refused = m.counter(METRICS.codesRefused);
  refused.inc({ reason: PHONE, country: PHONE });
  refused.inc({ reason: "budget", country: "us" });
  refused.inc({ reason: "cooldown", country: undefined });
  m.counter(METRICS.deadLetters).inc({ queue: "192.168.1.7", reason: "poison" });
  const text = await m.exposition();
  assert.equal(text.includes("4155550123"), false);
  assert.equal(text.includes("192.168"), false);
  const e = parsePrometheusText(text);
  assert.deepEqual(sensitiveLabels(e), []);
  assert.equal(sampleValue(e, "otp_codes_refused_total", { reason: OTHER, country: "unknown" }), 1);
  assert.equal(
    sampleValue(e, "otp_codes_refused_total", { reason: "budget", country: "unknown" }),
    1,
  );
  assert.equal(
    sampleValue(e, "otp_codes_refused_total", { reason: "cooldown", country: "unknown" }),
    1,
  );
  assert.equal(sampleValue(e, "bus_dead_letters_total", { queue: OTHER, reason: "poison" }), 1);
});

Deno.test("the label guard keeps values of the set and countries as two capitals", () => {
  assert.equal(boundedLabelValue(["a", "b"], "b"), "b");
  assert.equal(boundedLabelValue(["a", "b"], "c"), OTHER);
  assert.equal(boundedLabelValue("country", "DE"), "DE");
  assert.equal(boundedLabelValue("country", "DEU"), "unknown");
  assert.equal(boundedLabelValue("country", "+49"), "unknown");
});

Deno.test("no catalogued label set admits anything that looks like a number or address", async () => {
  const m = new Metrics();
  const counters = defineAll(m);
  const hostile = [PHONE, "14155550123", "10.0.0.1", "2001:db8::1", "x".repeat(40), 'a"b\nc'];
  for (const [key, c] of counters) {
    const spec = METRICS[key as keyof typeof METRICS];
    for (const v of hostile) {
      const labels = Object.fromEntries(Object.keys(spec.labels).map((l) => [l, v]));
      c.inc!(labels as never);
    }
  }
  const e = parsePrometheusText(await m.exposition());
  assert.deepEqual(sensitiveLabels(e), []);
  assert.ok(e.samples.some((s) => Object.values(s.labels).includes(OTHER)));
});

Deno.test("a gauge is read at each scrape, and a failed read shows as NaN", async () => {
  const m = new Metrics();
  let depth = 3;
  let reads = 0;
  m.gauge(METRICS.outboxDepth, () => {
    reads++;
    return depth;
  });
  m.gauge(METRICS.outboxOldestAge, () => Promise.reject(new Error("database down")));
  assert.equal(reads, 0);
  let e = parsePrometheusText(await m.exposition());
  assert.equal(sampleValue(e, "outbox_messages"), 3);
  assert.ok(Number.isNaN(sampleValue(e, "outbox_oldest_age_seconds")));
  depth = 0;
  e = parsePrometheusText(await m.exposition());
  assert.equal(sampleValue(e, "outbox_messages"), 0);
  assert.equal(reads, 2);
});

Deno.test("the RPC interceptor counts and times calls by service, method and code", async () => {
  const m = new Metrics();
  const transport = createRouterTransport(({ service }) =>
    service(AuthService, {
      validatePhoneNumberLogin: (req) => {
        if (req.phoneNumber === "") throw new ConnectError("no number", Code.InvalidArgument);
        return { isValid: true };
      },
    }), { router: { interceptors: [rpcMetricsInterceptor(m, [AuthService])] } });
  const client = createClient(AuthService, transport);
  await client.validatePhoneNumberLogin({ phoneNumber: PHONE });
  await client.validatePhoneNumberLogin({ phoneNumber: PHONE });
  await assert.rejects(client.validatePhoneNumberLogin({ phoneNumber: "" }));
  await assert.rejects(client.getSession({}), (err) => {
    return ConnectError.from(err).code === Code.Unimplemented;
  });
  const e = parsePrometheusText(await m.exposition());
  const of = (method: string, code: string) => ({
    rpc_service: "auth.v1.AuthService",
    rpc_method: method,
    code,
  });
  const requests = RPC_METRICS.requests.name;
  assert.equal(sampleValue(e, requests, of("ValidatePhoneNumberLogin", "ok")), 2);
  assert.equal(sampleValue(e, requests, of("ValidatePhoneNumberLogin", "invalid_argument")), 1);
  assert.equal(sampleValue(e, requests, of("GetSession", "unimplemented")), 1);
  const count = `${RPC_METRICS.duration.name}_count`;
  assert.equal(sampleValue(e, count, of("ValidatePhoneNumberLogin", "ok")), 2);
  assert.deepEqual(sensitiveLabels(e), []);
});

Deno.test("GET /metrics replies with the exposition and its content type", async () => {
  const m = new Metrics();
  m.counter(METRICS.sessionsCreated).inc({ origin: "login" });
  const res = await m.response();
  assert.equal(res.headers.get("content-type"), m.contentType);
  const e = parsePrometheusText(await res.text());
  assert.equal(sampleValue(e, "auth_sessions_created_total", { origin: "login" }), 1);
});
