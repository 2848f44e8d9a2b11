// otp-service domain logic: admit a code request under every sending limit, (re)send
// the code of the number's live challenge, and hand auth-service a keyed MAC of it
// (never the code) through the outbox. Imports no driver.
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Disposition, IncomingMessage, OutgoingMessage } from "../shared/bus.ts";
import { challengeCode, HmacKey, otpMac } from "../shared/crypto.ts";
import type { Limits, Reservation } from "../shared/limits/engine.ts";
import { budgetRule, sendRules } from "../shared/limits/rules.ts";
import type { LimitReason, SendPolicy } from "../shared/limits/rules.ts";
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
import { parsePhone, smsRefusal } from "../shared/phone.ts";
import type { SmsDestinationPolicy, SmsRefusal } from "../shared/phone.ts";
import { withRetries } from "./sms/retry.ts";
import { SmsError } from "./sms/sender.ts";
import type { SmsSender } from "./sms/sender.ts";
import type { Challenge, CodeRequest, OtpStore, RequestState } from "./store.ts";

export interface IssuerSettings {
  codeLength: number;
  ttlSeconds: number;
  /** Provider calls per request in all, redeliveries included. */
  maxAttempts: number;
  sending: SendPolicy;
  /** SMS per hour window for all numbers together, each provider call counted; 0 sends none. */
  budgetPerHour: number;
  destinations: SmsDestinationPolicy;
  /** Backoff between provider calls; shorter only in tests. */
  retryBaseDelayMs?: number;
}

/**
 * "sent": the provider accepted the code, now or earlier; "unconfirmed": a call timed
 * out or failed in a way that may still deliver, so the challenge is live and nothing
 * new is sent; "undeliverable": the provider refused for good; "destination": no SMS
 * may go to this number; "limited": a limit tripped, nothing was sent.
 */
export type IssueOutcome =
  | { kind: "sent" }
  | { kind: "unconfirmed" }
  | { kind: "undeliverable" }
  | { kind: "destination"; reason: SmsRefusal }
  | { kind: "limited"; reason: LimitReason; message: string; retryAfterSeconds: number };

class Stop extends Error {
  constructor(readonly outcome: IssueOutcome) {
    super("stop sending");
  }
}

export class OtpIssuer {
  constructor(
    private readonly store: OtpStore,
    private readonly limits: Limits,
    private readonly sms: SmsSender,
    private readonly keys: { mac: HmacKey; code: HmacKey },
    private readonly settings: IssuerSettings,
    private readonly log: Logger,
  ) {}

  /**
   * Issues the code for one request. However often the request is delivered, its
   * provider calls stay within maxAttempts, each one charged to the SMS budget.
   */
  async issue(req: CodeRequest): Promise<IssueOutcome> {
    const log = this.log.child({
      otp_request_id: req.requestId,
      request_id: req.traceId,
      phone: maskPhone(req.phoneNumber),
      purpose: req.purpose,
    });
    const phone = parsePhone(req.phoneNumber);
    const refusal = smsRefusal(phone, this.settings.destinations);
    if (refusal) {
      log.warn("no SMS to this destination", { reason: refusal, country: phone.country });
      await this.store.audit("code_refused", refusal, req);
      return { kind: "destination", reason: refusal };
    }
    // No read first: the admission is keyed by the request (a redelivery's replays the
    // first one's answer and counts nothing, for the two days admissions are kept), and
    // the same step records the request or returns it as an earlier delivery left it.
    // The admission charges the budget for the request's first provider call too, so a
    // request sent at the first try is charged once; the attempt's synchronous commit
    // before that call makes the charge durable, as for every later call's.
    const budget = this.budget();
    const rules = [
      ...sendRules(
        {
          phone: phone.e164,
          purpose: req.purpose,
          clientAddress: req.clientAddress,
          country: phone.country!,
        },
        this.settings.sending,
        1,
      ),
      budget,
    ];
    const opened = await this.store.admitAndOpen(req, this.settings.ttlSeconds, {
      rules,
      eventId: `send:${req.requestId}`,
    });
    if (opened.refusal) {
      const refusal = opened.refusal;
      log.warn("send limit reached; no code sent", { reason: refusal.reason });
      if (refusal.reason === "budget") {
        // Recorded as refused, so a redelivery of it sends nothing later either.
        await this.store.open(req, this.settings.ttlSeconds);
        await this.store.finish(req.requestId, "refused", {
          error: refusal.reason,
          audit: auditOf(req, "code_refused", refusal.reason),
        });
      } else {
        await this.store.audit("code_refused", refusal.reason, req);
      }
      return { kind: "limited", ...refusal_(refusal) };
    }
    // A delivery that recorded the request first holds its one admission (the event id
    // made this one a replay of it): nothing here is given back, and its first call, if
    // it makes one, pays the budget again (only after a crash between the two).
    if (!opened.created) return await this.resume(req, opened.state, log);
    return await this.deliver(req, opened.state, log, {
      rules: [budget],
      at: opened.reservation.at,
    });
  }

  private budget() {
    return budgetRule(this.settings.budgetPerHour, this.settings.sending.hourSeconds);
  }

  /** A request an earlier delivery recorded: carried on only while it is pending. */
  private async resume(req: CodeRequest, state: RequestState, log: Logger) {
    switch (state.status) {
      case "sent":
      case "unconfirmed":
        log.info("request already handled");
        return { kind: state.status };
      case "failed":
      case "refused":
        log.info("request already ended; not retrying");
        return { kind: "undeliverable" } as const;
    }
    return await this.deliver(req, state, log);
  }

  /**
   * Makes the provider calls; `prepaid` is the budget charge the delivery that recorded
   * the request already holds for its first call.
   */
  private async deliver(
    req: CodeRequest,
    state: RequestState,
    log: Logger,
    prepaid?: Reservation,
  ): Promise<IssueOutcome> {
    const c = state.challenge;
    const code = challengeCode(this.keys.code, c.challengeId, this.settings.codeLength);
    const issued = this.issuedMessage(req, c, code);
    let made = state.attempts;
    const budget = this.budget();
    const sender = withRetries(this.sms, {
      attempts: this.settings.maxAttempts - state.attempts,
      baseDelayMs: this.settings.retryBaseDelayMs,
      logger: log,
      beforeAttempt: async () => {
        let b: Reservation;
        if (prepaid) {
          b = prepaid;
          prepaid = undefined;
        } else {
          const a = await this.limits.admit([budget]);
          if (!a.admitted) throw new Stop({ kind: "limited", ...refusal_(a) });
          b = a.reservation;
        }
        // A call before this one failed in a way that may still deliver: from now on the
        // code must work if that SMS arrives.
        if (
          !(await this.store.beginAttempt(
            req.requestId,
            this.settings.maxAttempts,
            made > 0 ? issued : undefined,
          ))
        ) {
          // Other deliveries used the attempts up: this charge pays for no call.
          await this.limits.refund(b);
          throw new Stop({ kind: "unconfirmed" });
        }
        made++;
      },
    });
    const remaining = Math.ceil((c.expiresAt.getTime() - Date.now()) / 1000);
    if (remaining <= 0 || state.attempts >= this.settings.maxAttempts) {
      // No call is made: the budget charge held for one is given back.
      if (prepaid) await this.limits.refund(prepaid);
      return await this.end(req, made, issued, log, "no time or attempt left");
    }
    try {
      const { providerId } = await sender.send({
        to: req.phoneNumber,
        body: messageText(code, remaining),
      });
      await this.store.finish(
        req.requestId,
        "sent",
        { provider: this.sms.name, providerId, audit: auditOf(req, "code_sent", this.sms.name) },
        issued,
      );
      log.info("code sent", {
        provider: this.sms.name,
        provider_id: providerId,
        resend: c.challengeId !== req.requestId,
      });
      return { kind: "sent" };
    } catch (err) {
      if (err instanceof Stop && err.outcome.kind === "limited") {
        if (made === 0) {
          log.warn("SMS budget spent; no code sent", { reason: err.outcome.reason });
          await this.store.finish(req.requestId, "refused", {
            error: err.outcome.reason,
            audit: auditOf(req, "code_refused", err.outcome.reason),
          });
          return err.outcome;
        }
        return await this.end(req, made, issued, log, "SMS budget spent");
      }
      if (err instanceof Stop) return await this.end(req, made, issued, log, "no attempt left");
      if (err instanceof SmsError && err.permanent && made <= 1) {
        await this.store.finish(req.requestId, "failed", {
          error: err.message,
          audit: auditOf(req, "code_failed", "permanent"),
        });
        log.warn("sms refused permanently; nothing published", { error: err.message });
        return { kind: "undeliverable" };
      }
      if (err instanceof SmsError) return await this.end(req, made, issued, log, err.message);
      throw err;
    }
  }

  /** Ends a request whose code may have gone out: the challenge is published, nothing more sent. */
  private async end(
    req: CodeRequest,
    made: number,
    issued: OutgoingMessage,
    log: Logger,
    why: string,
  ): Promise<IssueOutcome> {
    await this.store.finish(
      req.requestId,
      "unconfirmed",
      { error: why, audit: auditOf(req, "code_unconfirmed", made > 0 ? "maybe_sent" : "not_sent") },
      made > 0 ? issued : undefined,
    );
    log.warn("no confirmed send; the challenge stays live", { attempts: made, error: why });
    return { kind: "unconfirmed" };
  }

  private issuedMessage(req: CodeRequest, c: Challenge, code: string) {
    const codeMac = otpMac(this.keys.mac, {
      challengeId: c.challengeId,
      phone: req.phoneNumber,
      purpose: req.purpose,
      expiresAt: c.expiresAt,
      code,
    });
    return encodeOtpIssued(create(OtpIssuedSchema, {
      requestId: c.challengeId,
      phoneNumber: req.phoneNumber,
      purpose: purposeFromName(req.purpose),
      codeMac,
      issuedAt: timestampFromDate(c.issuedAt),
      expiresAt: timestampFromDate(c.expiresAt),
      traceId: req.traceId,
    }));
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
    await this.issue(req);
    return "ack";
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
    spentChallengeId: cleanText(msg.spentChallengeId) || undefined,
  };
}

const auditOf = (req: CodeRequest, event: string, outcome: string) => ({
  event,
  outcome,
  phoneNumber: req.phoneNumber,
  clientAddress: req.clientAddress,
});

const refusal_ = (a: { reason: LimitReason; message: string; retryAfterSeconds: number }) => ({
  reason: a.reason,
  message: a.message,
  retryAfterSeconds: a.retryAfterSeconds,
});

/** The SMS text; a resend states the time its (unchanged) code has left, rounded down. */
export function messageText(code: string, validSeconds: number): string {
  const minutes = Math.floor(validSeconds / 60);
  const validity = minutes >= 1
    ? `${minutes} minute${minutes === 1 ? "" : "s"}`
    : `${validSeconds} seconds`;
  return `Your verification code is ${code}. It expires in ${validity}. Never share it.`;
}
