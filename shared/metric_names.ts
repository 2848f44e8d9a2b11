// Every metric both services expose, in one place: name, help, and the closed set of
// values each label may take. A value outside its set is recorded as "other" (or
// "unknown" for countries), so no label can ever carry a number, an address or any other
// unbounded text. Send-to-verify conversion per country, where SMS pumping shows, is
//   sum by (country) (rate(otp_codes_verified_total[1h]))
//     / sum by (country) (rate(otp_codes_sent_total[1h]))
import { QUEUES } from "./topology.ts";

/** ISO 3166-1 alpha-2 region of a number ("unknown" when it has none). */
export const COUNTRY = "country" as const;
export type LabelDomain = readonly string[] | typeof COUNTRY;

export interface MetricSpec<L extends string = string> {
  kind: "counter" | "gauge" | "histogram";
  name: string;
  help: string;
  labels: { readonly [K in L]: LabelDomain };
}

export interface HistogramSpec<L extends string = string> extends MetricSpec<L> {
  kind: "histogram";
  /** Upper bounds in seconds. */
  buckets: readonly number[];
}

export const PURPOSES = ["signup", "login", "phone_change"] as const;

/** Why a code was not sent; each limit and policy has its own reason. */
export const SEND_REFUSAL_REASONS = [
  "invalid_number",
  "country_not_allowed",
  "number_type_not_allowed",
  "cooldown",
  "number_hourly",
  "number_daily",
  "pair_hourly",
  "pair_daily",
  "address",
  "locked",
  "country_velocity",
  "prefix_velocity",
  "budget",
] as const;

export const PROVIDER_OUTCOMES = ["accepted", "rejected", "failed", "timeout"] as const;

export const CODE_CHECK_OUTCOMES = [
  "ok",
  "wrong",
  "expired",
  "no_challenge",
  "exhausted",
  "locked",
  "address_limited",
] as const;

export const SESSION_ORIGINS = ["verify", "login"] as const;

export const SESSION_REVOCATION_REASONS = [
  "logout",
  "revoked_by_user",
  "token_reuse",
  "admin",
  "account_deleted",
] as const;

export const DEAD_LETTER_REASONS = ["poison", "retries_exhausted"] as const;

export const SMS_PROVIDERS = ["twilio", "console"] as const;

const QUEUE_NAMES = QUEUES.map((q) => q.name);

/** Latency buckets for RPCs and the SMS provider, in seconds. */
export const LATENCY_BUCKETS = [
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
] as const;

export const RPC_METRICS = {
  requests: {
    kind: "counter",
    name: "rpc_server_requests_total",
    help: "RPCs handled, by service, method and Connect code (ok on success).",
  },
  duration: {
    kind: "histogram",
    name: "rpc_server_duration_seconds",
    help: "Time to handle an RPC, by service, method and Connect code.",
    buckets: LATENCY_BUCKETS,
  },
} as const;

export const METRICS = {
  codesRequested: {
    kind: "counter",
    name: "otp_codes_requested_total",
    help: "Code requests taken up (signup, login and phone-change), by purpose and country.",
    labels: { purpose: PURPOSES, country: COUNTRY },
  },
  codesSent: {
    kind: "counter",
    name: "otp_codes_sent_total",
    help: "Codes the SMS provider accepted, by purpose and country.",
    labels: { purpose: PURPOSES, country: COUNTRY },
  },
  codesRefused: {
    kind: "counter",
    name: "otp_codes_refused_total",
    help: "Code requests refused before any SMS, by reason and country.",
    labels: { reason: SEND_REFUSAL_REASONS, country: COUNTRY },
  },
  codesVerified: {
    kind: "counter",
    name: "otp_codes_verified_total",
    help: "Codes entered correctly, by purpose and country (divide by sent for conversion).",
    labels: { purpose: PURPOSES, country: COUNTRY },
  },
  codeChecks: {
    kind: "counter",
    name: "otp_code_checks_total",
    help: "Codes checked, by purpose and outcome.",
    labels: { purpose: PURPOSES, outcome: CODE_CHECK_OUTCOMES },
  },
  providerResults: {
    kind: "counter",
    name: "sms_provider_results_total",
    help: "SMS provider attempts, by provider and outcome.",
    labels: { provider: SMS_PROVIDERS, outcome: PROVIDER_OUTCOMES },
  },
  providerDuration: {
    kind: "histogram",
    name: "sms_provider_duration_seconds",
    help: "Time of one SMS provider attempt, by provider and outcome.",
    labels: { provider: SMS_PROVIDERS, outcome: PROVIDER_OUTCOMES },
    buckets: LATENCY_BUCKETS,
  },
  smsBudgetUsed: {
    kind: "gauge",
    name: "sms_budget_used",
    help: "SMS provider attempts counted against the global budget in the current hour.",
    labels: {},
  },
  smsBudgetLimit: {
    kind: "gauge",
    name: "sms_budget_limit",
    help: "The global hourly SMS budget (SMS_HOURLY_BUDGET).",
    labels: {},
  },
  sessionsCreated: {
    kind: "counter",
    name: "auth_sessions_created_total",
    help: "Sessions opened, by how they began.",
    labels: { origin: SESSION_ORIGINS },
  },
  sessionsRevoked: {
    kind: "counter",
    name: "auth_sessions_revoked_total",
    help: "Sessions ended before expiry, by reason.",
    labels: { reason: SESSION_REVOCATION_REASONS },
  },
  outboxDepth: {
    kind: "gauge",
    name: "outbox_messages",
    help: "Messages in the outbox not yet confirmed by the broker.",
    labels: {},
  },
  outboxOldestAge: {
    kind: "gauge",
    name: "outbox_oldest_age_seconds",
    help: "Age of the oldest message in the outbox (0 when empty).",
    labels: {},
  },
  redeliveries: {
    kind: "counter",
    name: "bus_redeliveries_total",
    help: "Messages delivered again after a failed attempt, by queue.",
    labels: { queue: QUEUE_NAMES },
  },
  deadLetters: {
    kind: "counter",
    name: "bus_dead_letters_total",
    help: "Messages sent to a dead-letter queue, by queue and reason.",
    labels: { queue: QUEUE_NAMES, reason: DEAD_LETTER_REASONS },
  },
} as const satisfies Record<string, MetricSpec | HistogramSpec>;
