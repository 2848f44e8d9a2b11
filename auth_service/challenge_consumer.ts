// The consumer of auth_service_queue: stores each challenge otp-service issued, once,
// and only if it is newer than the number's current one. Undecodable messages are
// dead-lettered; store failures are thrown, so the broker retries them.
import type { Disposition, IncomingMessage } from "../shared/bus.ts";
import type { Logger } from "../shared/log.ts";
import { maskPhone } from "../shared/log.ts";
import { checkIdentity, cleanText, decodeOtpIssued, PoisonMessage } from "../shared/messages.ts";
import { parsePhone } from "../shared/phone.ts";
import type { AuthStore, Challenge } from "./ports.ts";

export class ChallengeConsumer {
  constructor(
    private readonly store: AuthStore,
    /** Never trust a validity longer than this, whatever the message says. */
    private readonly maxTtlSeconds: number,
    private readonly log: Logger,
  ) {}

  async handle(m: IncomingMessage): Promise<Disposition> {
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
    const cap = new Date(issuedAt.getTime() + this.maxTtlSeconds * 1000);
    return {
      requestId: msg.requestId,
      phoneNumber: phone,
      purpose,
      codeMac: msg.codeMac,
      issuedAt,
      expiresAt: claimed < cap ? claimed : cap,
    };
  }
}
