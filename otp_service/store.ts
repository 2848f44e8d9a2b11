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

export interface OtpStore {
  /**
   * Records the request (idempotent on request_id) and returns its status:
   * "pending" for a new one or one whose earlier handling did not finish.
   */
  begin(req: CodeRequest): Promise<RequestStatus>;
  /** Marks the request sent and enqueues the issued-challenge message, atomically. */
  markSent(requestId: string, sent: SentCode, issued: OutgoingMessage): Promise<void>;
  /** Records a permanent failure: nothing is published, so no code can be accepted. */
  markFailed(requestId: string, error: string): Promise<void>;
  ping(): Promise<void>;
}
