import { parsePhoneNumberWithError } from "libphonenumber-js/max";

export class InvalidPhoneNumber extends Error {
  constructor(reason: string) {
    super(`invalid phone number: ${reason}`);
    this.name = "InvalidPhoneNumber";
  }
}

export interface Phone {
  e164: string;
  /** ISO 3166-1 alpha-2, when the number maps to one country. */
  country: string | undefined;
}

/**
 * Parses an international number (it must start with +) and normalises it to E.164,
 * so "+1 (415) 555-0123" and "+14155550123" are the same user.
 */
export function parsePhone(input: string): Phone {
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
  return { e164: parsed.number, country: parsed.country };
}
