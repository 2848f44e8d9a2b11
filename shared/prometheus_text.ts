// A strict reader of the Prometheus text exposition format (version 0.0.4), for tests:
// every line must be a HELP, a TYPE or a sample of a declared family, and histograms
// must be cumulative and end in +Inf. It throws on the first thing a scraper would
// reject, naming the line.

export type MetricType = "counter" | "gauge" | "histogram" | "summary" | "untyped";

export interface Sample {
  /** The series name as written, e.g. "rpc_server_duration_seconds_bucket". */
  name: string;
  /** The family it belongs to, e.g. "rpc_server_duration_seconds". */
  family: string;
  labels: Record<string, string>;
  value: number;
}

export interface Family {
  name: string;
  type: MetricType;
  help: string;
}

export interface Exposition {
  families: Map<string, Family>;
  samples: Sample[];
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES: readonly MetricType[] = ["counter", "gauge", "histogram", "summary", "untyped"];

// Prometheus reads values with Go's ParseFloat, which ignores the case of NaN and Inf
// (prom-client writes "Nan").
function parseValue(raw: string, where: string): number {
  const word = raw.toLowerCase();
  if (word === "+inf" || word === "inf") return Infinity;
  if (word === "-inf") return -Infinity;
  if (word === "nan") return NaN;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(raw)) {
    throw new Error(`${where}: bad value ${JSON.stringify(raw)}`);
  }
  return Number(raw);
}

/** Reads `{a="x",b="y"}` starting at `i`; returns the labels and the index after `}`. */
function parseLabels(line: string, i: number, where: string): [Record<string, string>, number] {
  const labels: Record<string, string> = {};
  i++; // "{"
  while (line[i] !== "}") {
    const eq = line.indexOf("=", i);
    if (eq < 0) throw new Error(`${where}: label without "="`);
    const name = line.slice(i, eq).trim();
    if (!LABEL_NAME.test(name)) throw new Error(`${where}: bad label name ${JSON.stringify(name)}`);
    if (name in labels) throw new Error(`${where}: label ${name} repeated`);
    if (line[eq + 1] !== '"') throw new Error(`${where}: label value not quoted`);
    let value = "";
    let j = eq + 2;
    for (;; j++) {
      const ch = line[j];
      if (ch === undefined) throw new Error(`${where}: unterminated label value`);
      if (ch === '"') break;
      if (ch === "\\") {
        const esc = line[++j];
        if (esc === "n") value += "\n";
        else if (esc === "\\" || esc === '"') value += esc;
        else throw new Error(`${where}: bad escape \\${esc}`);
      } else value += ch;
    }
    labels[name] = value;
    i = j + 1;
    if (line[i] === ",") i++;
    else if (line[i] !== "}") throw new Error(`${where}: expected "," or "}" after a label`);
  }
  return [labels, i + 1];
}

function familyOf(name: string, families: Map<string, Family>): Family | undefined {
  const exact = families.get(name);
  if (exact) return exact;
  for (const suffix of ["_bucket", "_sum", "_count"]) {
    if (!name.endsWith(suffix)) continue;
    const f = families.get(name.slice(0, -suffix.length));
    if (f && (f.type === "histogram" || (f.type === "summary" && suffix !== "_bucket"))) return f;
  }
  return undefined;
}

export function parsePrometheusText(text: string): Exposition {
  const families = new Map<string, Family>();
  const samples: Sample[] = [];
  text.split("\n").forEach((line, n) => {
    const where = `line ${n + 1}`;
    if (line.trim() === "") return;
    if (line.startsWith("#")) {
      const m = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
      if (!m) return; // a plain comment
      const [, kind, name, rest] = m as unknown as [string, string, string, string];
      if (!METRIC_NAME.test(name)) throw new Error(`${where}: bad metric name ${name}`);
      const f = families.get(name) ?? { name, type: "untyped" as MetricType, help: "" };
      if (kind === "TYPE") {
        if (!TYPES.includes(rest as MetricType)) throw new Error(`${where}: bad type ${rest}`);
        if (samples.some((s) => s.family === name)) {
          throw new Error(`${where}: TYPE of ${name} after its samples`);
        }
        f.type = rest as MetricType;
      } else f.help = rest;
      families.set(name, f);
      return;
    }
    const nameEnd = line.search(/[{ ]/);
    if (nameEnd <= 0) throw new Error(`${where}: not a sample`);
    const name = line.slice(0, nameEnd);
    if (!METRIC_NAME.test(name)) throw new Error(`${where}: bad metric name ${name}`);
    let labels: Record<string, string> = {};
    let i = nameEnd;
    if (line[i] === "{") [labels, i] = parseLabels(line, i, where);
    const parts = line.slice(i).trim().split(/\s+/);
    if (parts.length < 1 || parts.length > 2 || parts[0] === "") {
      throw new Error(`${where}: expected a value and an optional timestamp`);
    }
    const family = familyOf(name, families);
    if (!family) throw new Error(`${where}: sample ${name} of no declared family`);
    samples.push({ name, family: family.name, labels, value: parseValue(parts[0]!, where) });
  });
  checkHistograms(families, samples);
  return { families, samples };
}

/** Buckets never decrease, the last is +Inf, and it equals the count. */
function checkHistograms(families: Map<string, Family>, samples: Sample[]): void {
  for (const f of families.values()) {
    if (f.type !== "histogram") continue;
    const series = new Map<string, Sample[]>();
    for (const s of samples) {
      if (s.name !== `${f.name}_bucket`) continue;
      const { le: _le, ...rest } = s.labels;
      const key = JSON.stringify(Object.entries(rest).sort());
      series.set(key, [...(series.get(key) ?? []), s]);
    }
    for (const [key, buckets] of series) {
      let last = -Infinity;
      let prev = 0;
      for (const b of buckets) {
        if (b.labels.le === undefined) throw new Error(`${f.name}: bucket without le`);
        const le = parseValue(b.labels.le, f.name);
        if (le <= last) throw new Error(`${f.name}${key}: buckets out of order`);
        if (b.value < prev) throw new Error(`${f.name}${key}: buckets not cumulative`);
        last = le;
        prev = b.value;
      }
      if (last !== Infinity) throw new Error(`${f.name}${key}: no +Inf bucket`);
      const count = samples.find((s) =>
        s.name === `${f.name}_count` &&
        JSON.stringify(Object.entries(s.labels).sort()) === key
      );
      if (count?.value !== prev) throw new Error(`${f.name}${key}: +Inf bucket is not the count`);
    }
  }
}

/** The value of one series, 0 when absent (a counter not yet touched). */
export function sampleValue(
  e: Exposition,
  name: string,
  labels: Record<string, string> = {},
): number {
  const s = e.samples.find((s) =>
    s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)
  );
  return s?.value ?? 0;
}

const LOOKS_SENSITIVE: [string, RegExp][] = [
  ["a phone number", /\+?\d[\d\s().-]{5,}\d/],
  ["an IPv4 address", /\b\d{1,3}(\.\d{1,3}){3}\b/],
  ["an IPv6 address", /[0-9a-f]{0,4}:[0-9a-f]{0,4}:[0-9a-f:]*/i],
  ["a token or key", /[A-Za-z0-9_-]{32,}/],
];

/** Label values that look like a number, an address or a secret: none should exist. */
export function sensitiveLabels(e: Exposition): string[] {
  const found: string[] = [];
  for (const s of e.samples) {
    for (const [label, value] of Object.entries(s.labels)) {
      if (label === "le") continue;
      for (const [what, re] of LOOKS_SENSITIVE) {
        if (re.test(value)) found.push(`${s.name}{${label}="${value}"} looks like ${what}`);
      }
    }
  }
  return found;
}
