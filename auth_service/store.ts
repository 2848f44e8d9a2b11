// The persistence port of auth-service. Each method is one database transaction, so
// every RPC costs exactly one.
import type { OutgoingMessage } from "../shared/bus.ts";
import type { PurposeName } from "../shared/messages.ts";

export interface User {
  id: string;
  phoneNumber: string;
  createdAt: Date;
  verifiedAt: Date | null;
}

export interface Challenge {
  requestId: string;
  phoneNumber: string;
  purpose: PurposeName;
  codeMac: Uint8Array;
  issuedAt: Date;
  expiresAt: Date;
}

export interface NewSession {
  tokenHash: Uint8Array;
  ttlSeconds: number;
}

export type SignupOutcome = "queued" | "already_verified";

export type RedeemOutcome =
  | { kind: "ok"; userId: string }
  | { kind: "no_challenge" }
  | { kind: "wrong"; remaining: number }
  | { kind: "exhausted" };

export type ChallengeOutcome = "stored" | "duplicate" | "superseded";

export interface AuthStore {
  /** Creates or keeps an unverified user and enqueues the OTP request, atomically. */
  signup(phone: string, request: OutgoingMessage): Promise<SignupOutcome>;
  findUser(phone: string): Promise<User | null>;
  /**
   * Checks a code against the number's live challenge under a row lock: at most one
   * concurrent caller can consume it. On success marks the user verified (for signup)
   * and creates the session.
   */
  redeem(
    phone: string,
    purpose: PurposeName,
    maxAttempts: number,
    matches: (challenge: Challenge) => Promise<boolean>,
    session: NewSession,
  ): Promise<RedeemOutcome>;
  /** Stores an issued challenge unless this message was handled or a newer one exists. */
  saveChallenge(messageId: string, challenge: Challenge): Promise<ChallengeOutcome>;
  /** The user of a live session, refreshing its idle timer; null if none. */
  sessionUser(tokenHash: Uint8Array, idleSeconds: number): Promise<User | null>;
  /** Revokes one session (or all of its user's); returns how many were revoked. */
  revoke(tokenHash: Uint8Array, all: boolean): Promise<number>;
  ping(): Promise<void>;
}
