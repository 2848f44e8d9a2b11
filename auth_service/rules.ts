// What every use case applies the same way: which limits a call is charged against, the
// destination-country allow-list, and how a refusal becomes a domain error.
import { permissionDenied, resourceExhausted } from "../shared/errors.ts";
import { countryAllowed, SEND_LIMIT_REASONS } from "../shared/limits_config.ts";
import type { PurposeName } from "../shared/messages.ts";
import { parsePhone } from "../shared/phone.ts";
import type { AuditContext, AuthSettings, CallContext, Limited, RateRule } from "./ports.ts";

/** The limits a request for a code is charged against. */
export function sendRules(
  settings: AuthSettings,
  phone: string,
  purpose: PurposeName,
  ctx: CallContext,
): RateRule[] {
  const s = settings.sending;
  const rules: RateRule[] = [
    {
      key: `send:${phone}`,
      limit: s.perHour,
      windowSeconds: s.hourSeconds,
      reason: SEND_LIMIT_REASONS.hour,
    },
    {
      key: `send:${phone}`,
      limit: s.perDay,
      windowSeconds: s.daySeconds,
      reason: SEND_LIMIT_REASONS.day,
    },
  ];
  if (s.cooldownSeconds > 0) {
    rules.push({
      key: `send:${phone}:${purpose}`,
      limit: 1,
      windowSeconds: s.cooldownSeconds,
      reason: SEND_LIMIT_REASONS.cooldown,
    });
  }
  if (ctx.clientAddress) {
    rules.push({
      key: `send-addr:${ctx.clientAddress}`,
      limit: settings.perAddress.sendLimit,
      windowSeconds: settings.perAddress.windowSeconds,
      reason: "too many code requests from this address",
    });
  }
  return rules;
}

/** The limits a code check is charged against. */
export function checkRules(settings: AuthSettings, ctx: CallContext): RateRule[] {
  return ctx.clientAddress
    ? [{
      key: `check-addr:${ctx.clientAddress}`,
      limit: settings.perAddress.checkLimit,
      windowSeconds: settings.perAddress.windowSeconds,
      reason: "too many code checks from this address",
    }]
    : [];
}

/** Parses the number and applies the destination-country allow-list. */
export function sendablePhone(settings: AuthSettings, input: string): string {
  const { e164, country } = parsePhone(input);
  if (!countryAllowed(settings.sending.allowedCountries, country)) {
    throw permissionDenied(
      `SMS to ${country ?? "this region"} is not enabled`,
      "COUNTRY_NOT_ALLOWED",
    );
  }
  return e164;
}

export function auditContext(phone: string | null, ctx: CallContext): AuditContext {
  return { phone, clientAddress: ctx.clientAddress, requestId: ctx.requestId };
}

export function limitedError(l: Limited) {
  return resourceExhausted(l.reason, l.retryAfterSeconds, "RATE_LIMITED");
}
