// auth-service domain logic: signup, verification, login, sessions. It speaks to the
// database, the bus and otp-service only through ports, and imports no driver.
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Disposition, IncomingMessage } from "../shared/bus.ts";
import { constantTimeEqual, HmacKey, otpMac, randomToken, sha256 } from "../shared/crypto.ts";
import {
  alreadyExists,
  invalidArgument,
  permissionDenied,
  resourceExhausted,
  unauthenticated,
} from "../shared/errors.ts";
import type { Logger } from "../shared/log.ts";
import { maskPhone } from "../shared/log.ts";
import {
  checkIdentity,
  cleanText,
  decodeOtpIssued,
  encodeOtpRequested,
  OtpPurpose,
  OtpRequestedSchema,
  PoisonMessage,
} from "../shared/messages.ts";
import type { PurposeName } from "../shared/messages.ts";
import { parsePhone } from "../shared/phone.ts";
import { countryAllowed } from "../shared/limits_config.ts";
import type { SendLimits } from "../shared/limits_config.ts";
import type { AuditContext, AuthStore, Challenge, Limited, RateRule, User } from "./store.ts";

/** Asks otp-service for a login code (GenerateOtp). Throws DomainError on refusal. */
export interface OtpGateway {
  requestCode(phone: string, purpose: PurposeName, ctx: CallContext): Promise<void>;
}

export interface CallContext {
  requestId: string;
  clientAddress: string;
}

export interface AuthSettings {
  codeLength: number;
  maxAttempts: number;
  maxTtlSeconds: number;
  sessionTtlSeconds: number;
  sessionIdleSeconds: number;
  sending: SendLimits;
  lockAfterFailures: number;
  lockSeconds: number;
  perAddress: { sendLimit: number; checkLimit: number; windowSeconds: number };
}

const WRONG_CODE = "invalid or expired code";
const TOKEN = /^[A-Za-z0-9_-]{43}$/;

export class AuthService {
  private readonly codeFormat: RegExp;

  constructor(
    private readonly store: AuthStore,
    private readonly otp: OtpGateway,
    private readonly hmac: HmacKey,
    private readonly settings: AuthSettings,
    private readonly log: Logger,
  ) {
    this.codeFormat = new RegExp(`^\\d{${settings.codeLength}}$`);
  }

  async signup(phoneInput: string, ctx: CallContext): Promise<void> {
    const phone = this.sendablePhone(phoneInput);
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
      this.sendRules(phone, "signup", ctx),
      audit(phone, ctx),
    );
    if (outcome.kind === "already_verified") {
      throw alreadyExists("phone number is already registered; log in instead");
    }
    if (outcome.kind === "limited") throw limitedError(outcome);
    this.log.info("signup queued code", {
      phone: maskPhone(phone),
      otp_request_id: requestId,
      request_id: ctx.requestId,
    });
  }

  verify(phoneInput: string, code: string, ctx: CallContext): Promise<string> {
    return this.redeem(phoneInput, code, "signup", ctx);
  }

  login(phoneInput: string, code: string, ctx: CallContext): Promise<string> {
    return this.redeem(phoneInput, code, "login", ctx);
  }

  /** Whether the number is a verified user; if so, a login code is on its way. */
  async validateLogin(phoneInput: string, ctx: CallContext): Promise<boolean> {
    const phone = this.sendablePhone(phoneInput);
    const outcome = await this.store.admitLoginCode(
      phone,
      this.sendRules(phone, "login", ctx),
      audit(phone, ctx),
    );
    if (outcome.kind === "not_verified") return false;
    if (outcome.kind === "limited") throw limitedError(outcome);
    await this.otp.requestCode(phone, "login", ctx);
    return true;
  }

  async profile(authorization: string | null, phoneInput: string): Promise<User> {
    const user = await this.authenticate(authorization);
    const phone = parsePhone(phoneInput).e164;
    if (user.phoneNumber !== phone) {
      throw permissionDenied("this session may only read its own profile");
    }
    return user;
  }

  async logout(authorization: string | null, all: boolean, ctx: CallContext): Promise<number> {
    const hash = await sha256(bearer(authorization));
    const n = await this.store.revoke(hash, all, audit(null, ctx));
    if (n === 0) throw unauthenticated("session is missing, expired or revoked");
    return n;
  }

  /** Consumer of auth_service_queue: stores the challenge otp-service issued. */
  async acceptIssued(m: IncomingMessage): Promise<Disposition> {
    let challenge: Challenge;
    try {
      challenge = this.challengeFrom(m);
    } catch (err) {
      if (!(err instanceof PoisonMessage)) throw err;
      this.log.warn("dead-lettering message", { message_id: m.messageId, reason: err.message });
      return "dead-letter";
    }
    const outcome = await this.store.saveChallenge(
      cleanText(m.messageId ?? "") || challenge.requestId,
      challenge,
    );
    this.log.info("challenge received", {
      outcome,
      phone: maskPhone(challenge.phoneNumber),
      otp_request_id: challenge.requestId,
      request_id: cleanText(m.correlationId ?? ""),
    });
    return "ack";
  }

  private challengeFrom(m: IncomingMessage): Challenge {
    const msg = decodeOtpIssued(m);
    const { purpose, phone } = checkIdentity(msg, (p) => parsePhone(p).e164);
    if (msg.codeMac.length !== 32) throw new PoisonMessage("bad code_mac");
    if (!msg.issuedAt || !msg.expiresAt) throw new PoisonMessage("missing issued_at/expires_at");
    const issuedAt = new Date(Number(msg.issuedAt.seconds) * 1000 + msg.issuedAt.nanos / 1e6);
    const claimed = new Date(Number(msg.expiresAt.seconds) * 1000 + msg.expiresAt.nanos / 1e6);
    if (!(claimed > issuedAt)) throw new PoisonMessage("expires_at not after issued_at");
    // Never trust a validity longer than ours, whatever the message says.
    const cap = new Date(issuedAt.getTime() + this.settings.maxTtlSeconds * 1000);
    return {
      requestId: msg.requestId,
      phoneNumber: phone,
      purpose,
      codeMac: msg.codeMac,
      issuedAt,
      expiresAt: claimed < cap ? claimed : cap,
    };
  }

  private async redeem(
    phoneInput: string,
    code: string,
    purpose: PurposeName,
    ctx: CallContext,
  ): Promise<string> {
    const phone = parsePhone(phoneInput).e164;
    if (!this.codeFormat.test(code)) {
      throw invalidArgument(`otp must be ${this.settings.codeLength} digits`);
    }
    const token = randomToken();
    const outcome = await this.store.redeem(
      phone,
      purpose,
      {
        maxAttempts: this.settings.maxAttempts,
        lockAfterFailures: this.settings.lockAfterFailures,
        lockSeconds: this.settings.lockSeconds,
        rules: ctx.clientAddress
          ? [{
            key: `check-addr:${ctx.clientAddress}`,
            limit: this.settings.perAddress.checkLimit,
            windowSeconds: this.settings.perAddress.windowSeconds,
            reason: "too many code checks from this address",
          }]
          : [],
      },
      async (c) => {
        const mac = await otpMac(this.hmac, c.requestId, phone, purpose, code);
        return constantTimeEqual(mac, c.codeMac);
      },
      { tokenHash: await sha256(token), ttlSeconds: this.settings.sessionTtlSeconds },
      audit(phone, ctx),
    );
    const fields = { phone: maskPhone(phone), purpose, request_id: ctx.requestId };
    switch (outcome.kind) {
      case "ok":
        this.log.info("code accepted; session created", fields);
        return token;
      case "no_challenge":
        this.log.info("code rejected: no live challenge", fields);
        throw unauthenticated(WRONG_CODE);
      case "wrong":
        this.log.info("code rejected: wrong", { ...fields, remaining: outcome.remaining });
        if (outcome.locked) {
          this.log.warn("number locked after consecutive wrong codes", fields);
          throw resourceExhausted(
            "too many wrong codes for this number; it is locked for now",
            this.settings.lockSeconds,
          );
        }
        throw unauthenticated(
          outcome.remaining > 0
            ? `${WRONG_CODE}; ${outcome.remaining} ${
              outcome.remaining === 1 ? "try" : "tries"
            } left`
            : `${WRONG_CODE}; no tries left, request a new code`,
        );
      case "exhausted":
        this.log.info("code rejected: too many wrong tries", fields);
        throw resourceExhausted("too many wrong codes; request a new code");
      case "locked":
        this.log.info("code rejected: number locked", fields);
        throw resourceExhausted(
          "too many wrong codes for this number; it is locked for now",
          outcome.retryAfterSeconds,
        );
      case "limited":
        this.log.info("code check refused: limit", fields);
        throw limitedError(outcome);
    }
  }

  /** Parses the number and applies the destination-country allow-list. */
  private sendablePhone(input: string): string {
    const { e164, country } = parsePhone(input);
    if (!countryAllowed(this.settings.sending.allowedCountries, country)) {
      throw permissionDenied(`SMS to ${country ?? "this region"} is not enabled`);
    }
    return e164;
  }

  private sendRules(phone: string, purpose: PurposeName, ctx: CallContext): RateRule[] {
    const s = this.settings.sending;
    const rules: RateRule[] = [
      {
        key: `send:${phone}`,
        limit: s.perHour,
        windowSeconds: s.hourSeconds,
        reason: "too many codes for this number this hour",
      },
      {
        key: `send:${phone}`,
        limit: s.perDay,
        windowSeconds: s.daySeconds,
        reason: "too many codes for this number today",
      },
    ];
    if (s.cooldownSeconds > 0) {
      rules.push({
        key: `send:${phone}:${purpose}`,
        limit: 1,
        windowSeconds: s.cooldownSeconds,
        reason: "a code was sent to this number moments ago",
      });
    }
    if (ctx.clientAddress) {
      rules.push({
        key: `send-addr:${ctx.clientAddress}`,
        limit: this.settings.perAddress.sendLimit,
        windowSeconds: this.settings.perAddress.windowSeconds,
        reason: "too many code requests from this address",
      });
    }
    return rules;
  }

  private async authenticate(authorization: string | null): Promise<User> {
    const user = await this.store.sessionUser(
      await sha256(bearer(authorization)),
      this.settings.sessionIdleSeconds,
    );
    if (!user) throw unauthenticated("session is missing, expired or revoked");
    return user;
  }
}

function audit(phone: string | null, ctx: CallContext): AuditContext {
  return { phone, clientAddress: ctx.clientAddress, requestId: ctx.requestId };
}

function limitedError(l: Limited) {
  return resourceExhausted(l.reason, l.retryAfterSeconds);
}

function bearer(authorization: string | null): string {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? "");
  if (!m || !TOKEN.test(m[1]!)) throw unauthenticated("missing or malformed bearer token");
  return m[1]!;
}
