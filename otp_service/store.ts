// The persistence port of otp-service.
import type { OutgoingMessage } from "../shared/bus.ts";
import type { Refusal, Reservation } from "../shared/limits/engine.ts";
import type { Rule } from "../shared/limits/rules.ts";
import type { PurposeName } from "../shared/messages.ts";

export interface CodeRequest {
  requestId: string;
  phoneNumber: string;
  purpose: PurposeName;
  clientAddress: string;
  traceId: string;
  /** A challenge the requester already consumed; it is not resent. */
  spentChallengeId?: string;
}

export type RequestStatus = "pending" | "sent" | "unconfirmed" | "failed" | "refused";

export interface Challenge {
  challengeId: string;
  issuedAt: Date;
  expiresAt: Date;
}

/** A request and the challenge it (re)sends. */
export interface RequestState {
  status: RequestStatus;
  challenge: Challenge;
  /** Provider calls made so far, by every delivery of the request. */
  attempts: number;
}

/** How a request ended, and the audit row recorded with it. */
export interface FinishDetail {
  provider?: string;
  providerId?: string;
  error?: string;
  audit?: { event: string; outcome: string; phoneNumber: string; clientAddress: string };
}

/** A request recorded, as open() answers. */
export interface Opened {
  /** False when a concurrent delivery of the same request recorded it first. */
  created: boolean;
  state: RequestState;
}

/** The rules a request is admitted under, keyed by its event id as Limits.admit keys them. */
export interface Charge {
  rules: readonly Rule[];
  eventId: string;
}

export interface OtpStore {
  /**
   * Records a new request against the live challenge for its number and purpose, opening
   * one (valid `ttlSeconds`) when there is none.
   */
  open(req: CodeRequest, ttlSeconds: number): Promise<Opened>;
  /**
   * open() after admitting the request under `charge`, in one step; refused, nothing is
   * recorded. The admission, like every one, may be forgotten by a crash until the next
   * synchronous commit, so a provider call must follow one (beginAttempt's).
   */
  admitAndOpen(
    req: CodeRequest,
    ttlSeconds: number,
    charge: Charge,
  ): Promise<{ refusal: Refusal } | (Opened & { refusal?: undefined; reservation: Reservation })>;
  /**
   * Counts one provider call before it is made, at most `maxAttempts` in all; with
   * `publish`, also enqueues the challenge in the same transaction. False when the
   * request has no attempt left.
   */
  beginAttempt(requestId: string, maxAttempts: number, publish?: OutgoingMessage): Promise<boolean>;
  /**
   * Final state; with `publish`, the challenge is enqueued, and with `detail.audit` the
   * audit row written, in the same transaction.
   */
  finish(
    requestId: string,
    status: Exclude<RequestStatus, "pending">,
    detail: FinishDetail,
    publish?: OutgoingMessage,
  ): Promise<void>;
  audit(
    event: string,
    outcome: string,
    r: { phoneNumber: string; clientAddress: string; requestId: string },
  ): Promise<void>;
  /** Deletes request records, expired challenges and idle counters older than the windows. */
  sweep(keepSeconds: number): Promise<void>;
}
