// What every use case applies the same way: which limits a call is charged against, the
// destination policy, and how a refusal becomes a domain error.
import { DomainError, permissionDenied, resourceExhausted } from "../shared/errors.ts";
import { addressKey } from "../shared/ip.ts";
import type { Admission, Limits, Refusal } from "../shared/limits/engine.ts";
import { REASONS, rule, sendRules as sharedSendRules } from "../shared/limits/rules.ts";
import type { LimitReason, Rule } from "../shared/limits/rules.ts";
import { sendPolicy } from "../shared/limits_config.ts";
import type { PurposeName } from "../shared/messages.ts";
import { parsePhone, SMS_REFUSAL_MESSAGES, smsRefusal } from "../shared/phone.ts";
import type { Phone } from "../shared/phone.ts";
import { refusalReason } from "../shared/telemetry.ts";
import type { Telemetry } from "../shared/telemetry.ts";
import type {
  AuditContext,
  AuthSettings,
  AuthStore,
  CallContext,
  CodeAdmitted,
  Locked,
  OtpGateway,
} from "./ports.ts";

/** The audit event of every code request. */
export const CODE_REQUESTED = "code_requested";

/** The per-number limits a code request is charged against: those otp-service applies. */
export function sendRules(
  settings: AuthSettings,
  phone: Phone,
  purpose: PurposeName,
  ctx: CallContext,
): Rule[] {
  return sharedSendRules(
    { phone: phone.e164, purpose, clientAddress: ctx.clientAddress, country: phone.country! },
    sendPolicy(settings.sending),
  );
}

/** The per-address cap on calls that send codes or say whether a number is registered. */
export function addressSendRule(settings: AuthSettings, ctx: CallContext): Rule {
  const a = settings.perAddress;
  return rule("address", `send|${addressKey(ctx.clientAddress)}`, a.sendLimit, a.windowSeconds);
}

/** The per-address cap on code checks. */
export function addressCheckRule(settings: AuthSettings, ctx: CallContext): Rule {
  const a = settings.perAddress;
  return rule("address", `check|${addressKey(ctx.clientAddress)}`, a.checkLimit, a.windowSeconds);
}

/**
 * Parses the number and refuses destinations no code may go to (premium-rate,
 * satellite, other types or countries not allowed), before anything is looked up or
 * queued.
 */
export function sendablePhone(settings: AuthSettings, input: string): Phone {
  const phone = parsePhone(input);
  const refusal = smsRefusal(phone, {
    allowedCountries: settings.sending.allowedCountries,
    allowedNumberTypes: settings.sending.allowedNumberTypes,
  });
  if (refusal === "country_not_allowed") {
    throw permissionDenied(SMS_REFUSAL_MESSAGES[refusal], "COUNTRY_NOT_ALLOWED");
  }
  if (refusal) throw permissionDenied(SMS_REFUSAL_MESSAGES[refusal]);
  return phone;
}

export function auditContext(phone: string | null, ctx: CallContext): AuditContext {
  return {
    phone,
    clientAddress: ctx.clientAddress,
    requestId: ctx.requestId,
    clientRequestId: ctx.clientRequestId,
  };
}

const LOCKED = "too many wrong codes for this number; it is locked for now";

export function lockedError(retryAfterSeconds: number): DomainError {
  return resourceExhausted(LOCKED, retryAfterSeconds, "NUMBER_LOCKED");
}

export interface RefusalOptions {
  /** Runs before a refusal is reported; may throw a refusal of its own instead. */
  beforeRefusal?: () => Promise<void>;
  /** Told the reason of a refusal that is reported. */
  onRefused?: (reason: LimitReason) => void;
}

/**
 * Charges `rules`; a refusal is audited (aggregated per key) and thrown. What the
 * client sees depends only on the rule that tripped, never on who the number belongs to.
 */
async function charge(
  limits: Limits,
  store: AuthStore,
  rules: readonly Rule[],
  event: string,
  who: AuditContext,
  o: RefusalOptions = {},
): Promise<Extract<Admission, { admitted: true }>> {
  const a = await limits.admit(rules);
  if (a.admitted) return a;
  return await refuse(store, rules, a, event, who, o);
}

/** Reports a refused charge of `rules` as `charge` does: audited, then thrown. */
export async function refuse(
  store: AuthStore,
  rules: readonly Rule[],
  a: Refusal,
  event: string,
  who: AuditContext,
  o: RefusalOptions = {},
): Promise<never> {
  await o.beforeRefusal?.();
  o.onRefused?.(a.reason);
  const tripped = rules.find((r) => r.reason === a.reason)!;
  // Aggregated per the tripped rule's key: an address's refusals are one row whatever
  // numbers it asked about.
  const keyed = tripped.reason === "address" ? { ...who, phone: null } : who;
  await store.auditRefusal(event, a.reason, keyed, tripped.windowSeconds);
  throw resourceExhausted(REASONS[a.reason], a.retryAfterSeconds, "RATE_LIMITED");
}

/**
 * Asks otp-service for a code the caller was charged for. A refusal there sent nothing,
 * so the charge is given back; a dependency down may still have sent, so it stays.
 */
async function requestChargedCode(
  otp: OtpGateway,
  limits: Limits,
  charged: Extract<Admission, { admitted: true }>,
  req: { phone: string; purpose: PurposeName; ctx: CallContext; spentChallengeId?: string },
): Promise<void> {
  try {
    await otp.requestCode(req.phone, req.purpose, req.ctx, {
      spentChallengeId: req.spentChallengeId,
    });
  } catch (err) {
    if (err instanceof DomainError && err.reason !== "UNAVAILABLE") {
      await limits.refund(charged.reservation);
    }
    throw err;
  }
}

/** What the common end of a code request works with. */
export interface CodeSending {
  store: AuthStore;
  limits: Limits;
  otp: OtpGateway;
  settings: AuthSettings;
  telemetry: Telemetry;
}

/**
 * Charges a code request under `rules`; a refusal is audited, counted by its reason and
 * the number's country, and thrown. `beforeRefusal` may throw a refusal of its own first.
 */
export function chargeCodeRequest(
  d: Pick<CodeSending, "limits" | "store" | "telemetry">,
  rules: readonly Rule[],
  phone: Phone,
  who: AuditContext,
  beforeRefusal?: () => Promise<void>,
): Promise<Extract<Admission, { admitted: true }>> {
  return charge(d.limits, d.store, rules, CODE_REQUESTED, who, {
    beforeRefusal,
    onRefused: countRefusal(d, phone),
  });
}

/** Reports a refused charge of a code request as chargeCodeRequest does, `beforeRefusal` too. */
export function refuseCodeRequest(
  d: Pick<CodeSending, "store" | "telemetry">,
  rules: readonly Rule[],
  refusal: Refusal,
  phone: Phone,
  who: AuditContext,
  beforeRefusal?: () => Promise<void>,
): Promise<never> {
  return refuse(d.store, rules, refusal, CODE_REQUESTED, who, {
    beforeRefusal,
    onRefused: countRefusal(d, phone),
  });
}

/** A refused code request counted by its reason and the number's country. */
function countRefusal(d: Pick<CodeSending, "telemetry">, phone: Phone) {
  return (reason: LimitReason) => d.telemetry.codeRefused(refusalReason(reason), phone.country);
}

/**
 * The common end of a login or phone-change code request, once the number was looked
 * up: a locked pair is refused (audited and counted, nothing charged); otherwise the
 * number's send limits are charged, otp-service is asked for the code and the request
 * is audited.
 */
export async function sendCode(
  d: CodeSending,
  target: CodeAdmitted | Locked,
  req: { phone: Phone; purpose: "login" | "phone_change"; ctx: CallContext; who: AuditContext },
): Promise<void> {
  const { phone, purpose, ctx, who } = req;
  if (target.kind === "locked") {
    await d.store.auditRefusal(CODE_REQUESTED, "locked", who, d.settings.lockSeconds);
    d.telemetry.codeRefused("locked", phone.country);
    throw lockedError(target.retryAfterSeconds);
  }
  const sending = await chargeCodeRequest(
    d,
    sendRules(d.settings, phone, purpose, ctx),
    phone,
    who,
  );
  d.telemetry.codeRequested(purpose, phone.country);
  await requestChargedCode(d.otp, d.limits, sending, {
    phone: phone.e164,
    purpose,
    ctx,
    spentChallengeId: target.spentChallengeId,
  });
  await d.store.audit(CODE_REQUESTED, purpose, who);
}
