import assert from "node:assert/strict";
import { parsePrometheusText, sampleValue, sensitiveLabels } from "./prometheus_text.ts";

const VALID = `# HELP req_total Requests.
# TYPE req_total counter
req_total{method="a",code="ok"} 3
req_total{method="b\\"q\\\\",code="ok"} 1 1700000000000
# TYPE lat_seconds histogram
lat_seconds_bucket{le="0.1"} 1
lat_seconds_bucket{le="1"} 2
lat_seconds_bucket{le="+Inf"} 2
lat_seconds_sum 0.4
lat_seconds_count 2
# TYPE g gauge
g NaN
`;

Deno.test("valid exposition text parses into families and samples", () => {
  const e = parsePrometheusText(VALID);
  assert.equal(e.families.get("req_total")?.type, "counter");
  assert.equal(e.families.get("req_total")?.help, "Requests.");
  assert.equal(sampleValue(e, "req_total", { method: "a" }), 3);
  assert.equal(sampleValue(e, "req_total", { method: 'b"q\\' }), 1);
  assert.equal(sampleValue(e, "lat_seconds_count"), 2);
  assert.ok(Number.isNaN(sampleValue(e, "g")));
});

Deno.test("malformed exposition text is refused, naming the line", () => {
  const bad = [
    ["undeclared_total 1", /no declared family/],
    ['# TYPE x counter\nx{a="1" 1', /expected "," or "}"/],
    ["# TYPE x counter\nx{a=1} 1", /not quoted/],
    ["# TYPE x counter\nx one", /bad value/],
    ["# TYPE x counter\nx 1 2 3", /optional timestamp/],
    ['# TYPE x counter\nx{a="1",a="2"} 1', /repeated/],
    ["# TYPE x countr", /bad type/],
    ['# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_count 1', /cumulative/],
    ['# TYPE h histogram\nh_bucket{le="1"} 1\nh_count 1', /no \+Inf/],
    ['# TYPE h histogram\nh_bucket{le="+Inf"} 1\nh_count 2', /not the count/],
  ] as const;
  for (const [text, pattern] of bad) {
    assert.throws(() => parsePrometheusText(text), pattern, text);
  }
  assert.throws(() => parsePrometheusText("# TYPE x counter\n\nx 1\nx{"), /line 4/);
});

Deno.test("label values that look like numbers, addresses or tokens are reported", () => {
  const text = `# TYPE x counter
x{v="+14155550123"} 1
x{v="10.1.2.3"} 1
x{v="2001:db8::1"} 1
x{v="${"A".repeat(43)}"} 1
x{v="ValidatePhoneNumberLogin"} 1
x{v="US"} 1
`;
  const found = sensitiveLabels(parsePrometheusText(text));
  const values = new Set(found.map((f) => /v="([^"]*)"/.exec(f)![1]));
  assert.deepEqual([...values], ["+14155550123", "10.1.2.3", "2001:db8::1", "A".repeat(43)]);
});
