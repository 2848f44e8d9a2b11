// The ports of auth-service and the domain types they speak: the store (each method is
// one database transaction, so every RPC costs exactly one) and the otp-service gateway.
// Use cases depend on these only, never on a driver.
import type { OutgoingMessage } from "../shared/bus.ts";
import type { PurposeName } from "../shared/messages.ts";
import type { SendLimits } from "../shared/limits_config.ts";

/** Who is calling, as the transport saw it. */
export interface CallContext {
  requestId: string;
  /** Canonical; "" when unknown. */
  clientAddress: string;
  /** The caller's own X-Request-Id, sanitised; "" when none. */
  clientRequestId?: string;
}

/** Asks otp-service for a login code (GenerateOtp). Throws DomainError on refusal. */
export interface OtpGateway {
  /**
   * `spentChallengeId` names the challenge this service already consumed (or whose
   * tries are used up), so otp-service opens a new one instead of resending its code.
   */
  requestCode(
    phone: string,
    purpose: PurposeName,
    ctx: CallContext,
    o?: { spentChallengeId?: string },
  ): Promise<void>;
}

export interface AuthSettings {
  codeLength: number;
  maxAttempts: number;
  maxTtlSeconds: number;
  sessionTtlSeconds: number;
  sessionIdleSeconds: number;
  sending: SendLimits;
  lockAfterFailures: number;
  numberLockAfterFailures: number;
  lockSeconds: number;
  failureWindowSeconds: number;
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

/** Who did what, for the audit trail; never a code or token. */
export interface AuditContext {
  phone: string | null;
  /** Canonical client address; "" when unknown. */
  clientAddress: string;
  requestId: string;
  clientRequestId?: string;
}

/** A number locked for the caller's address (or for everyone) after wrong codes. */
export interface Locked {
  kind: "locked";
  retryAfterSeconds: number;
}

export type SignupOutcome = { kind: "queued" } | { kind: "already_verified" } | Locked;

/** Whether a login code may be requested, looked up once the address was charged. */
export type LoginTarget =
  | { kind: "not_verified" }
  | Locked
  | { kind: "ok"; spentChallengeId?: string };

export interface RedeemPolicy {
  maxAttempts: number;
  /** Consecutive wrong codes from one address (counted per /64) that lock that pair. */
  lockAfterFailures: number;
  /** Consecutive wrong codes from every address together that lock the number. */
  numberLockAfterFailures: number;
  lockSeconds: number;
  /** A count of wrong codes starts again after this long without one. */
  failureWindowSeconds: number;
}

export type RedeemOutcome =
  | { kind: "ok"; userId: string }
  | { kind: "no_challenge" }
  | { kind: "wrong"; remaining: number; locked: boolean }
  | { kind: "exhausted" }
  | Locked;

export interface SweepPolicy {
  /** Rows past their use are kept this long (the longest limit window and a margin). */
  keepSeconds: number;
  auditRetentionSeconds: number;
  /** Unverified users with no live challenge are removed after this long. */
  unverifiedUserSeconds: number;
}

export type ChallengeOutcome = "stored" | "duplicate" | "superseded";

export interface AuthStore {
  /**
   * Creates or keeps an unverified user and enqueues the OTP request, atomically; a
   * verified number, or one locked for this address, changes nothing.
   */
  signup(phone: string, request: OutgoingMessage, audit: AuditContext): Promise<SignupOutcome>;
  /** Whether the number belongs to a verified user. */
  isVerified(phone: string): Promise<boolean>;
  /**
   * Whether a login code may go to the number for this caller: a verified user whose
   * number is not locked for the caller's address. Audits an unknown number.
   */
  loginTarget(phone: string, maxAttempts: number, audit: AuditContext): Promise<LoginTarget>;
  /** Appends one audit row. */
  audit(event: string, outcome: string, audit: AuditContext): Promise<void>;
  /**
   * Records a refusal: repeated refusals of one key with one outcome within
   * `windowSeconds` are one row with a count, so an attack cannot flood the trail.
   */
  auditRefusal(
    event: string,
    outcome: string,
    audit: AuditContext,
    windowSeconds: number,
  ): Promise<void>;
  /**
   * Checks a code against the number's live challenge under a row lock: at most one
   * concurrent caller can consume it. A login code needs a verified user. On success
   * marks the user verified (for signup) and creates the session. Wrong codes count
   * per number and caller address (and for the number from every address).
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
  /**
   * Deletes expired challenges, sessions, old inbox rows, aged-out failure counts, audit
   * rows past retention and unverified users with no live challenge.
   */
  sweep(p: SweepPolicy): Promise<void>;
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
