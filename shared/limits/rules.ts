// Every limit either service applies, with its stable machine-readable reason and the
// text the client sees, written once. The reasons are those the metrics and audit use.
import { addressKey } from "../ip.ts";
import type { SEND_REFUSAL_REASONS } from "../metric_names.ts";

export const REASONS = {
  cooldown: "a code was sent to this number moments ago",
  pair_hourly: "too many codes for this number from this address this hour",
  pair_daily: "too many codes for this number from this address today",
  number_hourly: "too many codes for this number this hour",
  number_daily: "too many codes for this number today",
  country_velocity: "too many codes to this country this hour; try again later",
  prefix_velocity: "too many codes to numbers like this one this hour; try again later",
  budget: "the hourly SMS budget is spent; try again later",
  address: "too many requests from this address; try again later",
} as const satisfies Partial<Record<typeof SEND_REFUSAL_REASONS[number], string>>;

export type LimitReason = keyof typeof REASONS;

/**
 * The reasons whose counter many events share (every SMS, a whole country, a number
 * block, a client address and all it asks about). The engine locks these rows after the
 * others (schema v4 names the same list), so each is held only for the end of a call.
 */
export const SHARED_REASONS = [
  "budget",
  "country_velocity",
  "prefix_velocity",
  "address",
] as const satisfies readonly LimitReason[];

/** At most `limit` events per `windowSeconds` for `key`; a limit of 0 allows none. */
export interface Rule {
  reason: LimitReason;
  key: string;
  limit: number;
  windowSeconds: number;
}

/** One rule: its key is the reason and the subject, so no two rules share a counter. */
export function rule(
  reason: LimitReason,
  subject: string,
  limit: number,
  windowSeconds: number,
): Rule {
  return { reason, key: `${reason}:${subject}`, limit, windowSeconds };
}

export interface SendPolicy {
  cooldownSeconds: number;
  /** Per number and client address. */
  pairPerHour: number;
  pairPerDay: number;
  /** Per number from every address together: the ceiling a third party cannot exceed. */
  numberPerHour: number;
  numberPerDay: number;
  countryPerHour: number;
  prefixPerHour: number;
  hourSeconds: number;
  daySeconds: number;
}

export interface SendSubject {
  phone: string;
  purpose: string;
  /**
   * Canonical client address, counted as shared/ip.ts's addressKey (IPv6 per /64);
   * empty when unknown (then all such requests share one).
   */
  clientAddress: string;
  /** ISO 3166 alpha-2. */
  country: string;
}

/** The E.164 number without its last 4 digits: a block numbers are rented in. */
export function numberPrefix(e164: string): string {
  return e164.slice(0, -4);
}

/**
 * The rules one code request is charged under. `grace` shortens the windows of the
 * rules the caller also applied upstream, so the two counts agree at a window's edge.
 */
export function sendRules(s: SendSubject, p: SendPolicy, grace = 0): Rule[] {
  const w = (seconds: number) => Math.max(1, seconds - grace * Math.min(5, seconds * 0.1));
  const pair = `${s.phone}|${addressKey(s.clientAddress)}`;
  const rules = [
    rule("pair_hourly", pair, p.pairPerHour, w(p.hourSeconds)),
    rule("pair_daily", pair, p.pairPerDay, w(p.daySeconds)),
    rule("number_hourly", s.phone, p.numberPerHour, w(p.hourSeconds)),
    rule("number_daily", s.phone, p.numberPerDay, w(p.daySeconds)),
    rule("country_velocity", s.country, p.countryPerHour, p.hourSeconds),
    rule("prefix_velocity", numberPrefix(s.phone), p.prefixPerHour, p.hourSeconds),
  ];
  if (p.cooldownSeconds > 0) {
    rules.unshift(rule("cooldown", `${s.phone}|${s.purpose}`, 1, w(p.cooldownSeconds)));
  }
  return rules;
}

/** The global budget: charged once per provider attempt, whatever the number. */
export function budgetRule(perHour: number, hourSeconds: number): Rule {
  return rule("budget", "all", perHour, hourSeconds);
}
