// The telemetry port the use cases record what happened through, in domain words: a
// code requested, refused, sent or verified; a session opened or ended. The Prometheus
// adapter turns each call into a bounded metric; domain tests pass NO_TELEMETRY or a
// RecordingTelemetry. Callers hand over a country (ISO 3166 alpha-2), never a number.
import type { DeliveryObserver } from "./bus.ts";
import type { Metrics } from "./metrics.ts";
import { METRICS, SEND_REFUSAL_REASONS } from "./metric_names.ts";
import type {
  CODE_CHECK_OUTCOMES,
  PROVIDER_OUTCOMES,
  SESSION_ORIGINS,
  SESSION_REVOCATION_REASONS,
} from "./metric_names.ts";
import { parsePhone } from "./phone.ts";

export type RefusalReason = (typeof SEND_REFUSAL_REASONS)[number];
export type CodeCheckOutcome = (typeof CODE_CHECK_OUTCOMES)[number];
export type ProviderOutcome = (typeof PROVIDER_OUTCOMES)[number];
export type SessionOrigin = (typeof SESSION_ORIGINS)[number];
export type RevocationReason = (typeof SESSION_REVOCATION_REASONS)[number];
export type Country = string | undefined;

export interface Telemetry extends DeliveryObserver {
  codeRequested(purpose: string, country: Country): void;
  codeRefused(reason: RefusalReason | "other", country: Country): void;
  codeSent(purpose: string, country: Country): void;
  codeVerified(purpose: string, country: Country): void;
  codeChecked(purpose: string, outcome: CodeCheckOutcome): void;
  providerResult(provider: string, outcome: ProviderOutcome, seconds: number): void;
  sessionCreated(origin: SessionOrigin): void;
  sessionsRevoked(reason: RevocationReason, count: number): void;
}

/** The region of an E.164 number, for a country label; undefined when it has none. */
export function countryOf(e164: string): Country {
  try {
    return parsePhone(e164).country;
  } catch {
    return undefined;
  }
}

/**
 * The metric reason of a refusal: a reason of the catalogue as it is, a destination
 * refusal or a limit's client-facing text mapped to one, anything else "other".
 */
export function refusalReason(reason: string): RefusalReason | "other" {
  if ((SEND_REFUSAL_REASONS as readonly string[]).includes(reason)) return reason as RefusalReason;
  return REFUSALS[reason] ?? "other";
}

const REFUSALS: Record<string, RefusalReason> = {
  no_country: "invalid_number",
  "a code was sent to this number moments ago": "cooldown",
  "too many codes for this number this hour": "number_hourly",
  "too many codes for this number today": "number_daily",
  "too many code requests from this address": "address",
  "too many code checks from this address": "address",
};

const noop = () => {};

export const NO_TELEMETRY: Telemetry = {
  codeRequested: noop,
  codeRefused: noop,
  codeSent: noop,
  codeVerified: noop,
  codeChecked: noop,
  providerResult: noop,
  sessionCreated: noop,
  sessionsRevoked: noop,
  redelivered: noop,
  deadLettered: noop,
};

/** Every call, in order, for domain tests: [method, ...arguments]. */
export class RecordingTelemetry implements Telemetry {
  readonly calls: [keyof Telemetry, ...unknown[]][] = [];
  codeRequested = (...a: unknown[]) => void this.calls.push(["codeRequested", ...a]);
  codeRefused = (...a: unknown[]) => void this.calls.push(["codeRefused", ...a]);
  codeSent = (...a: unknown[]) => void this.calls.push(["codeSent", ...a]);
  codeVerified = (...a: unknown[]) => void this.calls.push(["codeVerified", ...a]);
  codeChecked = (...a: unknown[]) => void this.calls.push(["codeChecked", ...a]);
  providerResult = (...a: unknown[]) => void this.calls.push(["providerResult", ...a]);
  sessionCreated = (...a: unknown[]) => void this.calls.push(["sessionCreated", ...a]);
  sessionsRevoked = (...a: unknown[]) => void this.calls.push(["sessionsRevoked", ...a]);
  redelivered = (...a: unknown[]) => void this.calls.push(["redelivered", ...a]);
  deadLettered = (...a: unknown[]) => void this.calls.push(["deadLettered", ...a]);

  /** The calls of one method, without its name. */
  of(method: keyof Telemetry): unknown[][] {
    return this.calls.filter((c) => c[0] === method).map((c) => c.slice(1));
  }
}

/** The Prometheus adapter: each call moves the catalogue's metric of the same meaning. */
export function prometheusTelemetry(metrics: Metrics): Telemetry {
  const requested = metrics.counter(METRICS.codesRequested);
  const refused = metrics.counter(METRICS.codesRefused);
  const sent = metrics.counter(METRICS.codesSent);
  const verified = metrics.counter(METRICS.codesVerified);
  const checks = metrics.counter(METRICS.codeChecks);
  const provider = metrics.counter(METRICS.providerResults);
  const providerTime = metrics.histogram(METRICS.providerDuration);
  const created = metrics.counter(METRICS.sessionsCreated);
  const revoked = metrics.counter(METRICS.sessionsRevoked);
  const redeliveries = metrics.counter(METRICS.redeliveries);
  const deadLetters = metrics.counter(METRICS.deadLetters);
  return {
    codeRequested: (purpose, country) => requested.inc({ purpose, country }),
    codeRefused: (reason, country) => refused.inc({ reason, country }),
    codeSent: (purpose, country) => sent.inc({ purpose, country }),
    codeVerified: (purpose, country) => verified.inc({ purpose, country }),
    codeChecked: (purpose, outcome) => checks.inc({ purpose, outcome }),
    providerResult(name, outcome, seconds) {
      provider.inc({ provider: name, outcome });
      providerTime.observe({ provider: name, outcome }, seconds);
    },
    sessionCreated: (origin) => created.inc({ origin }),
    sessionsRevoked: (reason, count) => {
      if (count > 0) revoked.inc({ reason }, count);
    },
    redelivered: (queue) => redeliveries.inc({ queue }),
    deadLettered: (queue, reason) => deadLetters.inc({ queue, reason }),
  };
}
