// The ports of auth-service and the domain types they speak: the store (each method is
// one database transaction, so every RPC costs exactly one) and the otp-service gateway.
// Use cases depend on these only, never on a driver.
import type { OutgoingMessage } from "../shared/bus.ts";
import type { PurposeName } from "../shared/messages.ts";
import type { SendLimits } from "../shared/limits_config.ts";

/** Who is calling, as the transport saw it. */
export interface CallContext {
  requestId: string;
  clientAddress: string;
}

/** Asks otp-service for a login code (GenerateOtp). Throws DomainError on refusal. */
export interface OtpGateway {
  requestCode(phone: string, purpose: PurposeName, ctx: CallContext): Promise<void>;
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

/** At most `limit` events with this key in any `windowSeconds`-long window. */
export interface RateRule {
  key: string;
  limit: number;
  windowSeconds: number;
  /** Shown to the client when this rule trips. */
  reason: string;
}

/** Who did what, for the audit trail; never a code or token. */
export interface AuditContext {
  phone: string | null;
  clientAddress: string;
  requestId: string;
}

export interface Limited {
  kind: "limited";
  retryAfterSeconds: number;
  reason: string;
}

export type SignupOutcome = { kind: "queued" } | { kind: "already_verified" } | Limited;
export type LoginCodeOutcome = { kind: "ok" } | { kind: "not_verified" } | Limited;

export interface RedeemPolicy {
  maxAttempts: number;
  lockAfterFailures: number;
  lockSeconds: number;
  /** Caps code-checking calls per client address. */
  rules: RateRule[];
}

export type RedeemOutcome =
  | { kind: "ok"; userId: string }
  | { kind: "no_challenge" }
  | { kind: "wrong"; remaining: number; locked: boolean }
  | { kind: "exhausted" }
  | { kind: "locked"; retryAfterSeconds: number }
  | Limited;

export type ChallengeOutcome = "stored" | "duplicate" | "superseded";

export interface AuthStore {
  /** Creates or keeps an unverified user and enqueues the OTP request, atomically. */
  signup(
    phone: string,
    request: OutgoingMessage,
    rules: RateRule[],
    audit: AuditContext,
  ): Promise<SignupOutcome>;
  /** Admits a login-code request for a verified user under the sending limits. */
  admitLoginCode(phone: string, rules: RateRule[], audit: AuditContext): Promise<LoginCodeOutcome>;
  /**
   * Checks a code against the number's live challenge under a row lock: at most one
   * concurrent caller can consume it. On success marks the user verified (for signup)
   * and creates the session.
   */
  redeem(
    phone: string,
    purpose: PurposeName,
    policy: RedeemPolicy,
    matches: (challenge: Challenge) => Promise<boolean>,
    session: NewSession,
    audit: AuditContext,
  ): Promise<RedeemOutcome>;
  /** Stores an issued challenge unless this message was handled or a newer one exists. */
  saveChallenge(messageId: string, challenge: Challenge): Promise<ChallengeOutcome>;
  /** The user of a live session, refreshing its idle timer; null if none. */
  sessionUser(tokenHash: Uint8Array, idleSeconds: number): Promise<User | null>;
  /** Revokes one session (or all of its user's); returns how many were revoked. */
  revoke(tokenHash: Uint8Array, all: boolean, audit: AuditContext): Promise<number>;
  /** Deletes expired counters, challenges, sessions and old inbox rows. */
  sweep(keepSeconds: number): Promise<void>;
}

/** A user as an operator sees it. */
export interface AdminUser extends User {
  /** Until when wrong codes lock the number out; null when not locked. */
  lockedUntil: Date | null;
}

export interface SessionSummary {
  id: string;
  createdAt: Date;
  lastSeenAt: Date;
  expiresAt: Date;
}

export interface AuditEntry {
  id: string;
  at: Date;
  event: string;
  outcome: string;
  phoneNumber: string | null;
  clientAddress: string | null;
  requestId: string | null;
}

/**
 * What the admin API reads and changes. Every method audits the action it carries out
 * (event "admin.<action>") in the same transaction as the action.
 */
export interface AdminStore {
  user(phone: string, who: AuditContext): Promise<AdminUser | null>;
  /** Live sessions of the number's user, newest first; null when there is no such user. */
  sessions(phone: string, who: AuditContext): Promise<SessionSummary[] | null>;
  /** Revokes every live session of the number's user; returns how many. */
  revokeSessions(phone: string, who: AuditContext): Promise<number>;
  /** Lifts every wrong-code lock of the number; returns how many rows were lifted. */
  unlock(phone: string, who: AuditContext): Promise<number>;
  /** Deletes the user with their sessions and challenges; false when there was none. */
  deleteUser(phone: string, who: AuditContext): Promise<boolean>;
  /** Audit events of the number with id below `beforeId` (all when null), newest first. */
  auditEvents(
    phone: string,
    beforeId: string | null,
    limit: number,
    who: AuditContext,
  ): Promise<AuditEntry[]>;
}
