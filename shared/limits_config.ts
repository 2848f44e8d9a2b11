// Sending limits both services enforce (auth where the request enters, otp again
// where the SMS leaves), read from the same variables so they agree.
import { ConfigError } from "./config.ts";
import type { ConfigReader } from "./config.ts";
import { NUMBER_TYPES, SMS_NUMBER_TYPES } from "./phone.ts";
import type { PhoneType } from "./phone.ts";
import type { SendPolicy } from "./limits/rules.ts";

export interface SendLimits {
  /** One code per number and purpose per this many seconds. */
  cooldownSeconds: number;
  /** Per number and client address. */
  perHour: number;
  perDay: number;
  /** Per number from all addresses together, so no third party can use up a user's share. */
  numberPerHour: number;
  numberPerDay: number;
  /** SMS per destination country, and per number prefix, per hour: against pumping. */
  countryPerHour: number;
  prefixPerHour: number;
  /** Lengths of the "hour" and "day" windows; shorter only in tests. */
  hourSeconds: number;
  daySeconds: number;
  /** ISO 3166 alpha-2 codes; empty means every country. */
  allowedCountries: string[];
  allowedNumberTypes: PhoneType[];
}

/** What the client is told when a sending limit trips; both services say the same. */
export const SEND_LIMIT_REASONS = {
  cooldown: "a code was sent to this number moments ago",
  hour: "too many codes for this number this hour",
  day: "too many codes for this number today",
} as const;

export const SEND_LIMIT_ENV = [
  "OTP_SEND_COOLDOWN_SECONDS",
  "OTP_SENDS_PER_HOUR",
  "OTP_SENDS_PER_DAY",
  "NUMBER_SENDS_PER_HOUR",
  "NUMBER_SENDS_PER_DAY",
  "COUNTRY_HOURLY_LIMIT",
  "PREFIX_HOURLY_LIMIT",
  "RATE_HOUR_SECONDS",
  "RATE_DAY_SECONDS",
  "ALLOWED_COUNTRIES",
  "ALLOWED_NUMBER_TYPES",
] as const;

export function readSendLimits(c: ConfigReader): SendLimits {
  const allowedCountries = c.list("ALLOWED_COUNTRIES").map((s) => s.toUpperCase());
  for (const cc of allowedCountries) {
    if (!/^[A-Z]{2}$/.test(cc)) {
      throw new ConfigError(
        "ALLOWED_COUNTRIES",
        `must be ISO country codes like US,GB; got "${cc}"`,
      );
    }
  }
  const types = c.list("ALLOWED_NUMBER_TYPES").map((s) => s.toUpperCase());
  for (const t of types) {
    if (!(NUMBER_TYPES as readonly string[]).includes(t)) {
      throw new ConfigError(
        "ALLOWED_NUMBER_TYPES",
        `must be libphonenumber types like MOBILE,FIXED_LINE_OR_MOBILE; got "${t}"`,
      );
    }
  }
  return {
    cooldownSeconds: c.int("OTP_SEND_COOLDOWN_SECONDS", 60, 0, 86_400),
    perHour: c.int("OTP_SENDS_PER_HOUR", 5, 0, 1_000),
    perDay: c.int("OTP_SENDS_PER_DAY", 10, 0, 10_000),
    numberPerHour: c.int("NUMBER_SENDS_PER_HOUR", 20, 0, 1_000),
    numberPerDay: c.int("NUMBER_SENDS_PER_DAY", 50, 0, 10_000),
    countryPerHour: c.int("COUNTRY_HOURLY_LIMIT", 500, 0, 10_000_000),
    prefixPerHour: c.int("PREFIX_HOURLY_LIMIT", 50, 0, 10_000_000),
    hourSeconds: c.int("RATE_HOUR_SECONDS", 3_600, 1, 3_600),
    daySeconds: c.int("RATE_DAY_SECONDS", 86_400, 1, 86_400),
    allowedCountries,
    allowedNumberTypes: types.length > 0 ? types as PhoneType[] : [...SMS_NUMBER_TYPES],
  };
}

/** Whether an SMS may go to `country` under the allow-list (an empty list allows all). */
export function countryAllowed(allowed: readonly string[], country: string | undefined): boolean {
  return allowed.length === 0 || (country !== undefined && allowed.includes(country));
}

/** The per-number rules both services apply, from the same variables. */
export function sendPolicy(s: SendLimits): SendPolicy {
  return {
    cooldownSeconds: s.cooldownSeconds,
    pairPerHour: s.perHour,
    pairPerDay: s.perDay,
    numberPerHour: s.numberPerHour,
    numberPerDay: s.numberPerDay,
    countryPerHour: s.countryPerHour,
    prefixPerHour: s.prefixPerHour,
    hourSeconds: s.hourSeconds,
    daySeconds: s.daySeconds,
  };
}
