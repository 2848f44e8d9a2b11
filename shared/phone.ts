import { parsePhoneNumberWithError } from "libphonenumber-js/max";
import type { NumberType } from "libphonenumber-js/max";
import { remembered } from "./remembered.ts";

export class InvalidPhoneNumber extends Error {
  constructor(reason: string) {
    super(`invalid phone number: ${reason}`);
    this.name = "InvalidPhoneNumber";
  }
}

/** libphonenumber's number types ("max" metadata), as `ALLOWED_NUMBER_TYPES` names them. */
export const NUMBER_TYPES = [
  "MOBILE",
  "FIXED_LINE_OR_MOBILE",
  "FIXED_LINE",
  "PREMIUM_RATE",
  "TOLL_FREE",
  "SHARED_COST",
  "VOIP",
  "PERSONAL_NUMBER",
  "PAGER",
  "UAN",
  "VOICEMAIL",
] as const satisfies readonly NonNullable<NumberType>[];

export type PhoneType = typeof NUMBER_TYPES[number];

/** Types that can receive an SMS: the default of `ALLOWED_NUMBER_TYPES`. */
export const SMS_NUMBER_TYPES: readonly PhoneType[] = ["MOBILE", "FIXED_LINE_OR_MOBILE"];

export interface Phone {
  e164: string;
  /** ISO 3166-1 alpha-2, when the number maps to one country (not satellite, not +800). */
  country: string | undefined;
  /** Undefined when the metadata cannot tell. */
  type: PhoneType | undefined;
}

/**
 * Parses an international number (it must start with +) and normalises it to E.164,
 * so "+1 (415) 555-0123" and "+14155550123" are the same user.
 */
export function parsePhone(input: string): Phone {
  return recentPhones(input);
}

/**
 * Numbers parsed lately, by their input. Parsing with full metadata costs about as much
 * as the rest of a tiny call, and the same few numbers arrive again and again (a user's
 * code request, its check, every profile read). Only valid numbers are kept; random
 * numbers only churn the oldest out.
 */
const recentPhones = remembered(10_000, (input) => Object.freeze(parseUncached(input)));

function parseUncached(input: string): Phone {
  const trimmed = input.trim();
  if (trimmed.length === 0) throw new InvalidPhoneNumber("phone_number is required");
  if (trimmed.length > 32) throw new InvalidPhoneNumber("too long");
  if (!trimmed.startsWith("+")) {
    throw new InvalidPhoneNumber("use international format starting with +");
  }
  let parsed;
  try {
    parsed = parsePhoneNumberWithError(trimmed);
  } catch {
    throw new InvalidPhoneNumber("not a phone number");
  }
  if (!parsed.isValid()) throw new InvalidPhoneNumber("not a valid number");
  return { e164: parsed.number, country: parsed.country, type: parsed.getType() };
}

export interface SmsDestinationPolicy {
  /** Empty means every known country. */
  allowedCountries: readonly string[];
  allowedNumberTypes: readonly PhoneType[];
}

/** Why no SMS may go to this number, as a stable reason; null when one may. */
export type SmsRefusal = "no_country" | "country_not_allowed" | "number_type_not_allowed";

/** What a client is told for each refusal; both services say the same. */
export const SMS_REFUSAL_MESSAGES: Record<SmsRefusal, string> = {
  no_country: "codes are not sent to numbers outside any country",
  country_not_allowed: "SMS to this country is not enabled",
  number_type_not_allowed: "codes are only sent to mobile numbers",
};

/**
 * Checked before anything is sent: premium-rate, shared-cost, satellite and other
 * numbers that bill the sender or belong to no country never get a code.
 */
export function smsRefusal(p: Phone, policy: SmsDestinationPolicy): SmsRefusal | null {
  if (p.country === undefined) return "no_country";
  if (policy.allowedCountries.length > 0 && !policy.allowedCountries.includes(p.country)) {
    return "country_not_allowed";
  }
  if (p.type === undefined || !policy.allowedNumberTypes.includes(p.type)) {
    return "number_type_not_allowed";
  }
  return null;
}
