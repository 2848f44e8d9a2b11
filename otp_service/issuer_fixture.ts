// The issuer settings the otp-service unit tests share: today's defaults, three
// provider calls per request, a budget of 10 and no wait between retries.
import { SMS_NUMBER_TYPES } from "../shared/phone.ts";
import type { PhoneType } from "../shared/phone.ts";
import type { IssuerSettings } from "./issuer.ts";

export function testIssuerSettings(
  allowedNumberTypes: readonly PhoneType[] = SMS_NUMBER_TYPES,
): IssuerSettings {
  return {
    codeLength: 6,
    ttlSeconds: 300,
    maxAttempts: 3,
    sending: {
      cooldownSeconds: 60,
      pairPerHour: 5,
      pairPerDay: 10,
      numberPerHour: 20,
      numberPerDay: 50,
      countryPerHour: 500,
      prefixPerHour: 50,
      hourSeconds: 3600,
      daySeconds: 86400,
    },
    budgetPerHour: 10,
    destinations: { allowedCountries: [], allowedNumberTypes: [...allowedNumberTypes] },
    retryBaseDelayMs: 1,
  };
}
