// Requesting a code: signup (queued to otp-service over the bus, with the user row, in
// one transaction) and ValidatePhoneNumberLogin (asked of otp-service over RPC). Both
// charge the caller's address before looking anything up, so finding out whether a
// number is registered costs the same whatever the answer, and once the address is
// limited every number gets the same reply.
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { DomainError } from "../shared/errors.ts";
import type { Limits } from "../shared/limits/engine.ts";
import { countryOf, NO_TELEMETRY } from "../shared/telemetry.ts";
import type { Telemetry } from "../shared/telemetry.ts";
import { withSpan } from "../shared/tracing.ts";
import type { Logger } from "../shared/log.ts";
import { maskPhone } from "../shared/log.ts";
import { encodeOtpRequested, OtpPurpose, OtpRequestedSchema } from "../shared/messages.ts";
import type { Phone } from "../shared/phone.ts";
import type { AuthSettings, AuthStore, CallContext, OtpGateway } from "./ports.ts";
import {
  addressSendRule,
  auditContext,
  chargeCodeRequest,
  lockedError,
  refuseCodeRequest,
  sendablePhone,
  sendCode,
  sendRules,
} from "./rules.ts";
import type { CodeSending } from "./rules.ts";

const alreadyRegistered = () =>
  new DomainError("ALREADY_REGISTERED", "phone number is already registered; log in instead");

export class CodeRequests {
  private readonly sending: CodeSending;

  constructor(
    private readonly store: AuthStore,
    private readonly limits: Limits,
    otp: OtpGateway,
    private readonly settings: AuthSettings,
    private readonly log: Logger,
    private readonly telemetry: Telemetry = NO_TELEMETRY,
  ) {
    this.sending = { store, limits, otp, settings, telemetry };
  }

  signup(phoneInput: string, ctx: CallContext): Promise<void> {
    return withSpan(
      "auth.signup",
      { "otp.purpose": "signup" },
      () => this.doSignup(phoneInput, ctx),
    );
  }

  /** The number, once parsed and allowed; a refusal is counted. */
  private admissible(phoneInput: string): Phone {
    try {
      return sendablePhone(this.settings, phoneInput);
    } catch (err) {
      const allowList = err instanceof DomainError && err.reason === "COUNTRY_NOT_ALLOWED";
      this.telemetry.codeRefused(
        allowList ? "country_not_allowed" : "invalid_number",
        allowList ? countryOf(phoneInput) : undefined,
      );
      throw err;
    }
  }

  private async doSignup(phoneInput: string, ctx: CallContext): Promise<void> {
    const phone = this.admissible(phoneInput);
    const who = auditContext(phone.e164, ctx);
    const address = addressSendRule(this.settings, ctx);
    const send = sendRules(this.settings, phone, "signup", ctx);
    // The address and the number's limits in one admission. A refusal counts nothing:
    // the address then pays for the call on its own, as every call does, unless it was
    // the address that was full; so the address is charged before any lookup, as always.
    const both = await this.limits.admit([...send, address]);
    if (!both.admitted) {
      if (both.reason === address.reason) {
        return await refuseCodeRequest(this.sending, [address], both, phone, who);
      }
      await chargeCodeRequest(this.sending, [address], phone, who);
      // A verified number is told so, whatever its sending limits say.
      return await refuseCodeRequest(this.sending, send, both, phone, who, async () => {
        if (await this.store.isVerified(phone.e164)) throw alreadyRegistered();
      });
    }
    // What a signup that sends nothing gives back: the number's allowance, not the address's.
    const sending = { reservation: { rules: send, at: both.reservation.at } };
    const requestId = crypto.randomUUID();
    const request = encodeOtpRequested(create(OtpRequestedSchema, {
      requestId,
      phoneNumber: phone.e164,
      purpose: OtpPurpose.SIGNUP,
      requestedAt: timestampFromDate(new Date()),
      traceId: ctx.requestId,
      clientAddress: ctx.clientAddress,
    }));
    const outcome = await this.store.signup(phone.e164, request, who);
    if (outcome.kind !== "queued") {
      // Nothing was sent: the number's allowance is given back.
      await this.limits.refund(sending.reservation);
      if (outcome.kind === "locked") {
        this.telemetry.codeRefused("locked", phone.country);
        throw lockedError(outcome.retryAfterSeconds);
      }
      throw alreadyRegistered();
    }
    this.telemetry.codeRequested("signup", phone.country);
    this.log.info("signup queued code", {
      phone: maskPhone(phone.e164),
      otp_request_id: requestId,
      request_id: ctx.requestId,
    });
  }

  /** Whether the number is a verified user; if so, a login code is on its way. */
  validateLogin(phoneInput: string, ctx: CallContext): Promise<boolean> {
    return withSpan(
      "auth.validate_login",
      { "otp.purpose": "login" },
      () => this.doValidateLogin(phoneInput, ctx),
    );
  }

  private async doValidateLogin(phoneInput: string, ctx: CallContext): Promise<boolean> {
    const phone = this.admissible(phoneInput);
    const who = auditContext(phone.e164, ctx);
    // The address charge and the lookup it guards go to the store as one step.
    const charge = [addressSendRule(this.settings, ctx)];
    const target = await this.store.loginTarget(phone.e164, this.settings.maxAttempts, who, {
      charge,
    });
    if (target.kind === "refused") {
      return await refuseCodeRequest(this.sending, charge, target.refusal, phone, who);
    }
    if (target.kind === "not_verified") return false;
    await sendCode(this.sending, target, { phone, purpose: "login", ctx, who });
    return true;
  }
}
