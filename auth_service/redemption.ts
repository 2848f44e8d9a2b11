// Redeeming a code: VerifyPhoneNumber (a signup code) and LoginWithPhoneNumber (a login
// code). A matching code is consumed and a session created in one atomic write.
// Phone change and account deletion redeem their codes through the same rules.
import { constantTimeEqual, otpMac, randomToken, sha256 } from "../shared/crypto.ts";
import type { HmacKey } from "../shared/crypto.ts";
import {
  DomainError,
  invalidArgument,
  resourceExhausted,
  unauthenticated,
} from "../shared/errors.ts";
import type { Logger } from "../shared/log.ts";
import { maskPhone } from "../shared/log.ts";
import type { PurposeName } from "../shared/messages.ts";
import { parsePhone } from "../shared/phone.ts";
import { countryOf, NO_TELEMETRY } from "../shared/telemetry.ts";
import type { CodeCheckOutcome, Telemetry } from "../shared/telemetry.ts";
import { withSpan } from "../shared/tracing.ts";
import type {
  AuthSettings,
  AuthStore,
  CallContext,
  RedeemEffect,
  RedeemOutcome,
  TokenIssuer,
} from "./ports.ts";
import { addressCheckRule, auditContext, lockedError, refuse } from "./rules.ts";

// The same text for a wrong and an expired code, so neither can be told from the other.
const WRONG_CODE = "invalid or expired code";

export class Redemption {
  private readonly codeFormat: RegExp;

  constructor(
    private readonly store: AuthStore,
    private readonly hmac: HmacKey,
    private readonly settings: AuthSettings,
    private readonly tokens: TokenIssuer,
    private readonly log: Logger,
    private readonly telemetry: Telemetry = NO_TELEMETRY,
  ) {
    this.codeFormat = new RegExp(`^\\d{${settings.codeLength}}$`);
  }

  /** Redeems a signup code: the user becomes verified and a session opens. */
  verify(phoneInput: string, code: string, ctx: CallContext): Promise<OpenedSession> {
    return withSpan(
      "auth.verify",
      { "otp.purpose": "signup" },
      () => this.openSession(phoneInput, code, "signup", ctx),
    );
  }

  /** Redeems a login code: a session opens. */
  login(phoneInput: string, code: string, ctx: CallContext): Promise<OpenedSession> {
    return withSpan(
      "auth.login",
      { "otp.purpose": "login" },
      () => this.openSession(phoneInput, code, "login", ctx),
    );
  }

  private async openSession(
    phoneInput: string,
    code: string,
    purpose: "signup" | "login",
    ctx: CallContext,
  ): Promise<OpenedSession> {
    const phone = parsePhone(phoneInput).e164;
    const sessionToken = randomToken();
    const sessionId = crypto.randomUUID();
    const { userId } = await this.redeem(phone, code, purpose, {
      kind: "session",
      session: {
        id: sessionId,
        tokenHash: sha256(sessionToken),
        ttlSeconds: this.settings.sessionTtlSeconds,
        clientAddress: ctx.clientAddress,
        userAgent: ctx.userAgent ?? "",
      },
    }, ctx);
    const access = await this.tokens.issue({ userId, sessionId, phoneNumber: phone });
    return { sessionToken, accessToken: access.token, expiresIn: access.expiresIn };
  }

  /**
   * Checks `code` against the live challenge of `phone` and `purpose` and, if it
   * matches, applies `effect` with it. Throws the domain error of any refusal.
   */
  async redeem(
    phone: string,
    code: string,
    purpose: PurposeName,
    effect: RedeemEffect,
    ctx: CallContext,
  ): Promise<Extract<RedeemOutcome, { kind: "ok" }>> {
    if (!this.codeFormat.test(code)) {
      throw invalidArgument(`otp must be ${this.settings.codeLength} digits`, "CODE_MALFORMED");
    }
    const who = auditContext(phone, ctx);
    // Charged before the challenge is looked up, in the statement of the store's first
    // read, which holds no lock past itself (the challenge is read without one), so no
    // lock on the address's counter outlives it and one address's calls never queue.
    const charge = [addressCheckRule(this.settings, ctx)];
    const outcome = await this.store.redeem(
      phone,
      purpose,
      {
        maxAttempts: this.settings.maxAttempts,
        lockAfterFailures: this.settings.lockAfterFailures,
        numberLockAfterFailures: this.settings.numberLockAfterFailures,
        lockSeconds: this.settings.lockSeconds,
        failureWindowSeconds: this.settings.failureWindowSeconds,
      },
      (c) => {
        const mac = otpMac(this.hmac, {
          challengeId: c.requestId,
          phone,
          purpose,
          expiresAt: c.expiresAt,
          code,
        });
        return constantTimeEqual(mac, c.codeMac);
      },
      effect,
      who,
      { charge },
    );
    if (outcome.kind === "refused") {
      return await refuse(this.store, charge, outcome.refusal, "code_checked", who, {
        onRefused: () => this.telemetry.codeChecked(purpose, "address_limited"),
      });
    }
    this.count(phone, purpose, effect, outcome);
    const fields = { phone: maskPhone(phone), purpose, request_id: ctx.requestId };
    switch (outcome.kind) {
      case "ok":
        this.log.info("code accepted", { ...fields, effect: effect.kind });
        return outcome;
      case "taken":
        this.log.info("phone change refused: number taken", fields);
        throw new DomainError(
          "PHONE_TAKEN",
          "this phone number belongs to another account",
        );
      case "no_challenge":
        this.log.info("code rejected: no live challenge", fields);
        throw unauthenticated(WRONG_CODE, "CODE_INVALID");
      case "wrong":
        this.log.info("code rejected: wrong", { ...fields, remaining: outcome.remaining });
        if (outcome.locked) {
          this.log.warn("number locked after consecutive wrong codes", fields);
          throw lockedError(this.settings.lockSeconds);
        }
        throw unauthenticated(
          outcome.remaining > 0
            ? `${WRONG_CODE}; ${outcome.remaining} ${
              outcome.remaining === 1 ? "try" : "tries"
            } left`
            : `${WRONG_CODE}; no tries left, request a new code`,
          "CODE_INVALID",
        );
      case "exhausted":
        this.log.info("code rejected: too many wrong tries", fields);
        throw resourceExhausted(
          "too many wrong codes; request a new code",
          undefined,
          "CODE_EXHAUSTED",
        );
      case "locked":
        this.log.info("code rejected: number locked", fields);
        throw lockedError(outcome.retryAfterSeconds);
    }
  }

  private count(
    phone: string,
    purpose: PurposeName,
    effect: RedeemEffect,
    outcome: RedeemOutcome,
  ): void {
    this.telemetry.codeChecked(purpose, CHECK_OUTCOME[outcome.kind]);
    if (outcome.kind !== "ok") return;
    this.telemetry.codeVerified(purpose, countryOf(phone));
    if (effect.kind === "session") {
      this.telemetry.sessionCreated(purpose === "signup" ? "verify" : "login");
    }
  }
}

const CHECK_OUTCOME: Record<RedeemOutcome["kind"], CodeCheckOutcome> = {
  ok: "ok",
  // The code was right; the number it would move to is someone else's.
  taken: "ok",
  no_challenge: "no_challenge",
  wrong: "wrong",
  exhausted: "exhausted",
  locked: "locked",
};

/** What VerifyPhoneNumber and LoginWithPhoneNumber return. */
export interface OpenedSession {
  sessionToken: string;
  accessToken: string;
  expiresIn: number;
}
