// Changing the account: RequestPhoneChange / ConfirmPhoneChange and DeleteAccount. Both
// need a live session and a fresh code: to the new number for a change (proving the
// caller holds it), to the account's number for a deletion.
import { invalidArgument } from "../shared/errors.ts";
import type { Limits } from "../shared/limits/engine.ts";
import type { Logger } from "../shared/log.ts";
import { maskPhone } from "../shared/log.ts";
import { parsePhone } from "../shared/phone.ts";
import { NO_TELEMETRY } from "../shared/telemetry.ts";
import type { Telemetry } from "../shared/telemetry.ts";
import type { AuthSettings, AuthStore, CallContext, OtpGateway } from "./ports.ts";
import type { Redemption } from "./redemption.ts";
import {
  addressSendRule,
  auditContext,
  chargeCodeRequest,
  sendablePhone,
  sendCode,
} from "./rules.ts";
import type { CodeSending } from "./rules.ts";
import type { Sessions } from "./sessions.ts";

export class Account {
  private readonly sending: CodeSending;

  constructor(
    private readonly store: AuthStore,
    limits: Limits,
    otp: OtpGateway,
    private readonly sessions: Sessions,
    private readonly redemption: Redemption,
    private readonly settings: AuthSettings,
    private readonly log: Logger,
    telemetry: Telemetry = NO_TELEMETRY,
  ) {
    this.sending = { store, limits, otp, settings, telemetry };
  }

  /**
   * Sends a phone_change code to the new number. Whether the number belongs to someone
   * else is not said here: the reply is the same either way, so a signed-in caller
   * cannot probe numbers without holding them. ConfirmPhoneChange tells, once the code
   * has proved the caller holds the number.
   */
  async requestPhoneChange(
    authorization: string | null,
    newPhoneInput: string,
    ctx: CallContext,
  ): Promise<void> {
    const phone = sendablePhone(this.settings, newPhoneInput);
    const { user } = await this.sessions.authenticate(authorization);
    if (phone.e164 === user.phoneNumber) {
      throw invalidArgument("new_phone_number is already this account's number");
    }
    const who = auditContext(phone.e164, ctx);
    await chargeCodeRequest(this.sending, [addressSendRule(this.settings, ctx)], phone, who);
    const target = await this.store.admitPhoneChangeCode(
      phone.e164,
      this.settings.maxAttempts,
      who,
    );
    await sendCode(this.sending, target, { phone, purpose: "phone_change", ctx, who });
    this.log.info("phone change code requested", {
      phone: maskPhone(phone.e164),
      request_id: ctx.requestId,
    });
  }

  /** Checks the code sent to the new number and moves the user to it. Returns it. */
  async confirmPhoneChange(
    authorization: string | null,
    newPhoneInput: string,
    code: string,
    ctx: CallContext,
  ): Promise<string> {
    const phone = parsePhone(newPhoneInput).e164;
    const { user } = await this.sessions.authenticate(authorization);
    if (phone === user.phoneNumber) {
      throw invalidArgument("new_phone_number is already this account's number");
    }
    await this.redemption.redeem(phone, code, "phone_change", {
      kind: "phone_change",
      userId: user.id,
    }, ctx);
    return phone;
  }

  /** Deletes the caller's account, given a fresh login code of its number. */
  async deleteAccount(authorization: string | null, code: string, ctx: CallContext) {
    const { user } = await this.sessions.authenticate(authorization);
    await this.redemption.redeem(user.phoneNumber, code, "login", {
      kind: "delete_account",
      userId: user.id,
    }, ctx);
  }
}
