// otp-service domain logic: generate a code, send it by SMS, and hand auth-service a
// keyed MAC of it (never the code) through the outbox. Imports no driver.
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Disposition, IncomingMessage } from "../shared/bus.ts";
import { HmacKey, otpMac, randomCode } from "../shared/crypto.ts";
import type { Logger } from "../shared/log.ts";
import { maskPhone } from "../shared/log.ts";
import {
  checkIdentity,
  cleanText,
  decodeOtpRequested,
  encodeOtpIssued,
  OtpIssuedSchema,
  PoisonMessage,
  purposeFromName,
} from "../shared/messages.ts";
import { countryAllowed } from "../shared/limits_config.ts";
import { parsePhone } from "../shared/phone.ts";
import { SmsError } from "./sms/sender.ts";
import type { SmsSender } from "./sms/sender.ts";
import type { CodeRequest, OtpStore, SendPolicy } from "./store.ts";

export interface IssuerSettings {
  codeLength: number;
  ttlSeconds: number;
  limits: SendPolicy;
  /** ISO 3166 alpha-2; empty means every country. */
  allowedCountries: string[];
}

/**
 * "sent": a code went out now or earlier; "undeliverable": the provider refused for
 * good; "country": the destination is not allowed; or a tripped limit.
 */
export type IssueOutcome =
  | { kind: "sent" }
  | { kind: "undeliverable" }
  | { kind: "country" }
  | { kind: "limited"; retryAfterSeconds: number; reason: string };

export class OtpIssuer {
  constructor(
    private readonly store: OtpStore,
    private readonly sms: SmsSender,
    private readonly hmac: HmacKey,
    private readonly settings: IssuerSettings,
    private readonly log: Logger,
  ) {}

  /**
   * Issues the code for one request, at most once per request id as far as the
   * database can tell. A transient SMS failure throws, so the caller retries.
   */
  async issue(req: CodeRequest): Promise<IssueOutcome> {
    const log = this.log.child({
      otp_request_id: req.requestId,
      request_id: req.traceId,
      phone: maskPhone(req.phoneNumber),
      purpose: req.purpose,
    });
    const allowed = this.settings.allowedCountries;
    if (allowed.length > 0 && !countryAllowed(allowed, parsePhone(req.phoneNumber).country)) {
      log.warn("destination country not allowed");
      await this.store.audit("code_refused", "country", req);
      return { kind: "country" };
    }
    const begun = await this.store.begin(req, this.settings.limits);
    if (begun.status === "limited") {
      log.warn("send limit reached; no code sent", { reason: begun.reason });
      await this.store.audit("code_refused", "limited", req);
      return { kind: "limited", retryAfterSeconds: begun.retryAfterSeconds, reason: begun.reason };
    }
    if (begun.status === "sent") {
      log.info("request already handled");
      return { kind: "sent" };
    }
    if (begun.status === "failed" || begun.status === "refused") {
      log.info("request already failed; not retrying");
      return { kind: "undeliverable" };
    }
    const code = randomCode(this.settings.codeLength);
    const issuedAt = new Date();
    const expiresAt = new Date(issuedAt.getTime() + this.settings.ttlSeconds * 1000);
    const codeMac = await otpMac(this.hmac, req.requestId, req.phoneNumber, req.purpose, code);
    let providerId: string;
    try {
      ({ providerId } = await this.sms.send({
        to: req.phoneNumber,
        body: messageText(code, this.settings.ttlSeconds),
      }));
    } catch (err) {
      if (err instanceof SmsError && err.permanent) {
        await this.store.markFailed(req.requestId, err.message);
        await this.store.audit("code_failed", "permanent", req);
        log.warn("sms refused permanently; code discarded", { error: err.message });
        return { kind: "undeliverable" };
      }
      log.warn("sms failed; will retry", { error: (err as Error).message });
      throw err;
    }
    // The one window for a duplicate SMS: a crash between the send above and this commit.
    await this.store.markSent(
      req.requestId,
      { codeMac, issuedAt, expiresAt, provider: this.sms.name, providerId },
      encodeOtpIssued(create(OtpIssuedSchema, {
        requestId: req.requestId,
        phoneNumber: req.phoneNumber,
        purpose: purposeFromName(req.purpose),
        codeMac,
        issuedAt: timestampFromDate(issuedAt),
        expiresAt: timestampFromDate(expiresAt),
        traceId: req.traceId,
      })),
    );
    await this.store.audit("code_sent", this.sms.name, req);
    log.info("code sent", { provider: this.sms.name, provider_id: providerId });
    return { kind: "sent" };
  }

  /** Consumer of otp_queue. */
  async handleRequested(m: IncomingMessage): Promise<Disposition> {
    let req: CodeRequest;
    try {
      req = requestFrom(m);
    } catch (err) {
      if (!(err instanceof PoisonMessage)) throw err;
      this.log.warn("dead-lettering message", { message_id: m.messageId, reason: err.message });
      return "dead-letter";
    }
    try {
      await this.issue(req);
      return "ack";
    } catch (err) {
      if (err instanceof SmsError) return "retry";
      throw err;
    }
  }
}

function requestFrom(m: IncomingMessage): CodeRequest {
  const msg = decodeOtpRequested(m);
  const { purpose, phone } = checkIdentity(msg, (p) => parsePhone(p).e164);
  return {
    requestId: msg.requestId,
    phoneNumber: phone,
    purpose,
    clientAddress: cleanText(msg.clientAddress),
    traceId: cleanText(msg.traceId || m.correlationId || ""),
  };
}

export function messageText(code: string, ttlSeconds: number): string {
  const validity = ttlSeconds % 60 === 0
    ? `${ttlSeconds / 60} minute${ttlSeconds === 60 ? "" : "s"}`
    : `${ttlSeconds} seconds`;
  return `Your verification code is ${code}. It expires in ${validity}. Never share it.`;
}
