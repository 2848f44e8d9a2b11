// Requesting a code: signup (queued to otp-service over the bus, with the user row, in
// one transaction) and ValidatePhoneNumberLogin (asked of otp-service over RPC).
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { DomainError } from "../shared/errors.ts";
import { countryOf, NO_TELEMETRY, refusalReason } from "../shared/telemetry.ts";
import type { Telemetry } from "../shared/telemetry.ts";
import { withSpan } from "../shared/tracing.ts";
import type { Logger } from "../shared/log.ts";
import { maskPhone } from "../shared/log.ts";
import { encodeOtpRequested, OtpPurpose, OtpRequestedSchema } from "../shared/messages.ts";
import type { AuthSettings, AuthStore, CallContext, OtpGateway } from "./ports.ts";
import { auditContext, limitedError, sendablePhone, sendRules } from "./rules.ts";

export class CodeRequests {
  constructor(
    private readonly store: AuthStore,
    private readonly otp: OtpGateway,
    private readonly settings: AuthSettings,
    private readonly log: Logger,
    private readonly telemetry: Telemetry = NO_TELEMETRY,
  ) {}

  signup(phoneInput: string, ctx: CallContext): Promise<void> {
    return withSpan(
      "auth.signup",
      { "otp.purpose": "signup" },
      () => this.doSignup(phoneInput, ctx),
    );
  }

  /** The number, once parsed and allowed; a refusal is counted. */
  private admissible(phoneInput: string): string {
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
    const requestId = crypto.randomUUID();
    const request = encodeOtpRequested(create(OtpRequestedSchema, {
      requestId,
      phoneNumber: phone,
      purpose: OtpPurpose.SIGNUP,
      requestedAt: timestampFromDate(new Date()),
      traceId: ctx.requestId,
      clientAddress: ctx.clientAddress,
    }));
    const outcome = await this.store.signup(
      phone,
      request,
      sendRules(this.settings, phone, "signup", ctx),
      auditContext(phone, ctx),
    );
    if (outcome.kind === "already_verified") {
      throw new DomainError(
        "ALREADY_REGISTERED",
        "phone number is already registered; log in instead",
      );
    }
    if (outcome.kind === "limited") {
      this.telemetry.codeRefused(refusalReason(outcome.reason), countryOf(phone));
      throw limitedError(outcome);
    }
    this.telemetry.codeRequested("signup", countryOf(phone));
    this.log.info("signup queued code", {
      phone: maskPhone(phone),
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
    const outcome = await this.store.admitLoginCode(
      phone,
      sendRules(this.settings, phone, "login", ctx),
      auditContext(phone, ctx),
    );
    if (outcome.kind === "not_verified") return false;
    if (outcome.kind === "limited") {
      this.telemetry.codeRefused(refusalReason(outcome.reason), countryOf(phone));
      throw limitedError(outcome);
    }
    this.telemetry.codeRequested("login", countryOf(phone));
    await this.otp.requestCode(phone, "login", ctx, { spentChallengeId: outcome.spentChallengeId });
    return true;
  }
}
