// Prometheus metrics: one registry per service, metrics defined from the catalogue in
// metric_names.ts, and every label value forced into its declared set before it is
// recorded. Values read from the database (outbox depth, budget used) are read when
// Prometheus scrapes, never on a request path.
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Interceptor } from "@connectrpc/connect";
import { codeToString } from "@connectrpc/connect/protocol-connect";
import type { DescService } from "@bufbuild/protobuf";
import { COUNTRY, RPC_METRICS } from "./metric_names.ts";
import type { HistogramSpec, LabelDomain, MetricSpec } from "./metric_names.ts";

/** What a label value outside its declared set is recorded as. */
export const OTHER = "other";
export const UNKNOWN_COUNTRY = "unknown";

const REGION = /^[A-Z]{2}$/;

/** The value recorded for `value` under `domain`: itself when allowed, else a fixed word. */
export function boundedLabelValue(domain: LabelDomain, value: string | undefined): string {
  if (domain === COUNTRY) {
    return value !== undefined && REGION.test(value) ? value : UNKNOWN_COUNTRY;
  }
  return value !== undefined && domain.includes(value) ? value : OTHER;
}

export type LabelValues<L extends string> = { readonly [K in L]: string | undefined };

export interface BoundedCounter<L extends string> {
  inc(labels: LabelValues<L>, value?: number): void;
}

export interface BoundedHistogram<L extends string> {
  observe(labels: LabelValues<L>, seconds: number): void;
}

/** Series with every label from a small closed set start at 0, so rates exist from the start. */
const MAX_ZERO_SERIES = 200;

function bound<L extends string>(spec: MetricSpec<L>, labels: LabelValues<L>) {
  const out: Record<string, string> = {};
  for (const name of Object.keys(spec.labels) as L[]) {
    out[name] = boundedLabelValue(spec.labels[name], labels[name]);
  }
  return out;
}

function allCombinations(spec: MetricSpec): Record<string, string>[] | undefined {
  let combos: Record<string, string>[] = [{}];
  for (const [name, domain] of Object.entries<LabelDomain>(spec.labels)) {
    if (domain === COUNTRY) return undefined;
    combos = combos.flatMap((c) => domain.map((v) => ({ ...c, [name]: v })));
    if (combos.length > MAX_ZERO_SERIES) return undefined;
  }
  return combos;
}

export class Metrics {
  readonly registry = new Registry();

  get contentType(): string {
    return this.registry.contentType;
  }

  counter<L extends string>(spec: MetricSpec<L> & { kind: "counter" }): BoundedCounter<L> {
    const c = new Counter({
      name: spec.name,
      help: spec.help,
      labelNames: Object.keys(spec.labels),
      registers: [this.registry],
    });
    for (const labels of allCombinations(spec) ?? []) c.inc(labels, 0);
    return { inc: (labels, value = 1) => c.inc(bound(spec, labels), value) };
  }

  histogram<L extends string>(spec: HistogramSpec<L>): BoundedHistogram<L> {
    const h = new Histogram({
      name: spec.name,
      help: spec.help,
      labelNames: Object.keys(spec.labels),
      buckets: [...spec.buckets],
      registers: [this.registry],
    });
    for (const labels of allCombinations(spec) ?? []) h.zero(labels);
    return { observe: (labels, seconds) => h.observe(bound(spec, labels), seconds) };
  }

  /**
   * A gauge without labels whose value `read` supplies at each scrape. A failed read is
   * reported as NaN for that scrape rather than failing the whole exposition.
   */
  gauge(spec: MetricSpec<never> & { kind: "gauge" }, read: () => number | Promise<number>): void {
    new Gauge({
      name: spec.name,
      help: spec.help,
      registers: [this.registry],
      async collect() {
        let v: number;
        try {
          v = await read();
        } catch {
          v = Number.NaN;
        }
        this.set(v);
      },
    });
  }

  /** The Prometheus text exposition of every metric. */
  exposition(): Promise<string> {
    return this.registry.metrics();
  }

  /** The reply to GET /metrics. */
  async response(): Promise<Response> {
    return new Response(await this.exposition(), {
      headers: { "content-type": this.contentType },
    });
  }
}

const CODE_NAMES = [
  "ok",
  ...Object.values(Code).filter((c): c is Code => typeof c === "number").map(codeToString),
];

/**
 * Counts and times every RPC of `services` by service, method and Connect code. Put it
 * first among the router's interceptors, so it sees the code the client sees.
 */
export function rpcMetricsInterceptor(
  metrics: Metrics,
  services: readonly DescService[],
): Interceptor {
  return rpcMetrics(metrics, services).interceptor;
}

export interface RpcMetrics {
  interceptor: Interceptor;
  /** Counts a call refused before it reached the interceptors (a header check). */
  refused(service: string, method: string, code: Code): void;
}

export function rpcMetrics(metrics: Metrics, services: readonly DescService[]): RpcMetrics {
  const labels = {
    rpc_service: services.map((s) => s.typeName),
    rpc_method: [...new Set(services.flatMap((s) => s.methods.map((m) => m.name)))],
    code: CODE_NAMES,
  };
  const requests = metrics.counter({ ...RPC_METRICS.requests, labels });
  const duration = metrics.histogram({ ...RPC_METRICS.duration, labels });
  return {
    interceptor: (next) => async (req) => {
      const started = performance.now();
      let code = "ok";
      try {
        return await next(req);
      } catch (err) {
        code = codeToString(ConnectError.from(err).code);
        throw err;
      } finally {
        const l = { rpc_service: req.service.typeName, rpc_method: req.method.name, code };
        requests.inc(l);
        duration.observe(l, (performance.now() - started) / 1000);
      }
    },
    refused(service, method, code) {
      requests.inc({ rpc_service: service, rpc_method: method, code: codeToString(code) });
    },
  };
}
