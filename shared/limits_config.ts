// Sending limits both services enforce (auth where the request enters, otp again
// where the SMS leaves), read from the same variables so they agree.
import { ConfigError } from "./config.ts";
import type { ConfigReader } from "./config.ts";

export interface SendLimits {
  /** One code per number and purpose per this many seconds. */
  cooldownSeconds: number;
  perHour: number;
  perDay: number;
  /** Lengths of the "hour" and "day" windows; shorter only in tests. */
  hourSeconds: number;
  daySeconds: number;
  /** ISO 3166 alpha-2 codes; empty means every country. */
  allowedCountries: string[];
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
  "RATE_HOUR_SECONDS",
  "RATE_DAY_SECONDS",
  "ALLOWED_COUNTRIES",
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
  return {
    cooldownSeconds: c.int("OTP_SEND_COOLDOWN_SECONDS", 60, 0, 86_400),
    perHour: c.int("OTP_SENDS_PER_HOUR", 5, 1, 1_000),
    perDay: c.int("OTP_SENDS_PER_DAY", 10, 1, 10_000),
    hourSeconds: c.int("RATE_HOUR_SECONDS", 3_600, 1, 3_600),
    daySeconds: c.int("RATE_DAY_SECONDS", 86_400, 1, 86_400),
    allowedCountries,
  };
}

/** Whether an SMS may go to `country` under the allow-list (an empty list allows all). */
export function countryAllowed(allowed: readonly string[], country: string | undefined): boolean {
  return allowed.length === 0 || (country !== undefined && allowed.includes(country));
}
