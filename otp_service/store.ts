// The persistence port of otp-service.
import type { OutgoingMessage } from "../shared/bus.ts";
import type { PurposeName } from "../shared/messages.ts";

export interface CodeRequest {
  requestId: string;
  phoneNumber: string;
  purpose: PurposeName;
  clientAddress: string;
  traceId: string;
}

export type RequestStatus = "pending" | "sent" | "failed" | "refused";

export interface SentCode {
  codeMac: Uint8Array;
  issuedAt: Date;
  expiresAt: Date;
  provider: string;
  providerId: string;
}

/** Limits re-checked where the SMS leaves, so no path can bypass them. */
export interface SendPolicy {
  cooldownSeconds: number;
  perHour: number;
  perDay: number;
  hourSeconds: number;
  daySeconds: number;
  /** SMS budget for all numbers together per hour window: the kill switch. */
  globalPerHour: number;
}

export type BeginOutcome =
  | { status: RequestStatus }
  | { status: "limited"; retryAfterSeconds: number; reason: string };

export interface OtpStore {
  /**
   * Records the request (idempotent on request_id) under the sending limits and
   * returns its status: "pending" for a new one or one whose earlier handling did not
   * finish, "limited" (nothing recorded) when a limit trips.
   */
  begin(req: CodeRequest, policy: SendPolicy): Promise<BeginOutcome>;
  /** Marks the request sent and enqueues the issued-challenge message, atomically. */
  markSent(requestId: string, sent: SentCode, issued: OutgoingMessage): Promise<void>;
  /** Records a permanent failure: nothing is published, so no code can be accepted. */
  markFailed(requestId: string, error: string): Promise<void>;
  audit(
    event: string,
    outcome: string,
    r: { phoneNumber: string; clientAddress: string; requestId: string },
  ): Promise<void>;
  /** Deletes request records older than the longest window. */
  sweep(keepSeconds: number): Promise<void>;
}
