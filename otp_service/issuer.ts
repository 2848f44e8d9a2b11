// otp-service domain logic: generate a code, send it by SMS, and hand auth-service a
// keyed MAC of it (never the code) through the outbox. Imports no driver.
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Disposition, IncomingMessage } from "../shared/bus.ts";
import { HmacKey, otpMac, randomCode } from "../shared/crypto.ts";
import type { Logger } from "../shared/log.ts";
import { maskPhone } from "../shared/log.ts";
import {
  decodeOtpRequested,
  encodeOtpIssued,
  OtpIssuedSchema,
  PoisonMessage,
  purposeFromName,
  purposeName,
} from "../shared/messages.ts";
import { parsePhone } from "../shared/phone.ts";
import { SmsError } from "./sms/sender.ts";
import type { SmsSender } from "./sms/sender.ts";
import type { CodeRequest, OtpStore } from "./store.ts";

export interface IssuerSettings {
  codeLength: number;
  ttlSeconds: number;
}

/** "sent": a code went out now or earlier; "undeliverable": the provider refused for good. */
export type IssueOutcome = "sent" | "undeliverable";

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
    const status = await this.store.begin(req);
    if (status === "sent") {
      log.info("request already handled");
      return "sent";
    }
    if (status === "failed" || status === "refused") {
      log.info("request already failed; not retrying");
      return "undeliverable";
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
        log.warn("sms refused permanently; code discarded", { error: err.message });
        return "undeliverable";
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
    log.info("code sent", { provider: this.sms.name, provider_id: providerId });
    return "sent";
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
  const purpose = purposeName(msg.purpose);
  if (!purpose) throw new PoisonMessage("unknown purpose");
  if (msg.requestId.length === 0 || msg.requestId.length > 64) {
    throw new PoisonMessage("bad request_id");
  }
  let phone: string;
  try {
    phone = parsePhone(msg.phoneNumber).e164;
  } catch {
    throw new PoisonMessage("bad phone_number");
  }
  return {
    requestId: msg.requestId,
    phoneNumber: phone,
    purpose,
    clientAddress: msg.clientAddress.slice(0, 64),
    traceId: (msg.traceId || m.correlationId || "").slice(0, 64),
  };
}

export function messageText(code: string, ttlSeconds: number): string {
  const validity = ttlSeconds % 60 === 0
    ? `${ttlSeconds / 60} minute${ttlSeconds === 60 ? "" : "s"}`
    : `${ttlSeconds} seconds`;
  return `Your verification code is ${code}. It expires in ${validity}. Never share it.`;
}
