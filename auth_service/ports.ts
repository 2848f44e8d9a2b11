// The ports of auth-service and the domain types they speak: the store (each method is
// one database transaction, so every RPC costs exactly one) and the otp-service gateway.
// Use cases depend on these only, never on a driver.
import type { OutgoingMessage } from "../shared/bus.ts";
import type { PurposeName } from "../shared/messages.ts";
import type { SendLimits } from "../shared/limits_config.ts";
import type { Refusal } from "../shared/limits/engine.ts";
import type { Rule } from "../shared/limits/rules.ts";

/** Who is calling, as the transport saw it. */
export interface CallContext {
  requestId: string;
  /** Canonical; "" when unknown. */
  clientAddress: string;
  /** The User-Agent header, cleaned; recorded with a new session. */
  userAgent?: string;
  /** The caller's own X-Request-Id, sanitised; "" when none. */
  clientRequestId?: string;
}

/** Signs access tokens (auth_service/access_tokens.ts). */
export interface TokenIssuer {
  issue(subject: { userId: string; sessionId: string; phoneNumber: string }): Promise<
    { token: string; expiresIn: number }
  >;
}

/** Asks otp-service for a code (GenerateOtp). Throws DomainError on refusal. */
export interface OtpGateway {
  /**
   * `spentChallengeId` names the challenge this service already consumed (or whose
   * tries are used up), so otp-service opens a new one instead of resending its code.
   */
  requestCode(
    phone: string,
    purpose: PurposeName,
    ctx: CallContext,
    options?: { spentChallengeId?: string },
  ): Promise<void>;
}

export interface AuthSettings {
  codeLength: number;
  maxAttempts: number;
  maxTtlSeconds: number;
  sessionTtlSeconds: number;
  sessionIdleSeconds: number;
  /** How long a token replaced by RefreshSession still works. */
  sessionRotationGraceSeconds: number;
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
  /** A UUID chosen by the caller: the access token's `sid`. */
  id: string;
  tokenHash: Uint8Array;
  ttlSeconds: number;
  /** As the transport saw them when the session was created; "" when unknown. */
  clientAddress: string;
  userAgent: string;
}

export interface SessionInfo {
  id: string;
  userId: string;
  createdAt: Date;
  expiresAt: Date;
  lastSeenAt: Date;
  clientAddress: string;
  userAgent: string;
}

/** A live session and its user, as a token authenticated them. */
export interface Caller {
  session: SessionInfo;
  user: User;
}

export interface SessionPolicy {
  /** A session unused for this long is dead. */
  idleSeconds: number;
  /** How long a token replaced by a refresh still works (concurrent tabs). */
  graceSeconds: number;
}

export type RevocationReasonName = "logout" | "revoked_by_user" | "token_reuse" | "admin";
export type DeletionOriginName = "user" | "admin";

export type RefreshOutcome =
  /** `caller.session` now also answers to the new token. */
  | { kind: "rotated"; caller: Caller }
  /** A replaced token came back after the grace: the whole session was revoked. */
  | { kind: "reused" }
  | { kind: "invalid" };
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
/**
 * `spentChallengeId`: the number's last challenge of that purpose, already consumed
 * here, so otp-service opens a new one rather than resending a used code.
 */
export type CodeAdmitted = { kind: "ok"; spentChallengeId?: string };

/** The caller's charge was refused: nothing was looked up or recorded. */
export interface ChargeRefused {
  kind: "refused";
  refusal: Refusal;
}

/** Whether a login code may be requested, looked up once the address was charged. */
export type LoginTarget = { kind: "not_verified" } | Locked | CodeAdmitted | ChargeRefused;

/** The options of a store step that can charge its caller first (loginTarget, redeem). */
export interface ChargeOptions {
  /** Rules charged first, in the same step; refused, nothing is looked up or recorded. */
  charge?: readonly Rule[];
}

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

/** What a matching code does, in the transaction that consumes it. */
export type RedeemEffect =
  /** Signup or login: open this session (a signup code also verifies the user). */
  | { kind: "session"; session: NewSession }
  /** The code went to a new number: move this user to it. */
  | { kind: "phone_change"; userId: string }
  /** A fresh login code of this user's number: delete the account. */
  | { kind: "delete_account"; userId: string };

export type RedeemOutcome =
  | {
    kind: "ok";
    userId: string;
    /** For "session": when it expires. */
    sessionExpiresAt?: Date;
    /** For "phone_change": the number the user had before. */
    previousPhone?: string;
  }
  /** For "phone_change": the new number belongs to another verified user. */
  | { kind: "taken" }
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
   * number is not locked for the caller's address. Audits an unknown number. With
   * `charge`, those rules are charged first, in the same step (one statement on
   * PostgreSQL), and a refusal looks nothing up and records nothing.
   */
  loginTarget(
    phone: string,
    maxAttempts: number,
    audit: AuditContext,
    options?: ChargeOptions,
  ): Promise<LoginTarget>;
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
   * Whether a phone-change code may go to `phone` for this caller (not locked for the
   * caller's address). It answers the same whether or not the number is taken; that is
   * checked once the code proves possession.
   */
  admitPhoneChangeCode(
    phone: string,
    maxAttempts: number,
    audit: AuditContext,
  ): Promise<CodeAdmitted | Locked>;
  /**
   * Checks a code against the number's live challenge under a row lock: at most one
   * concurrent caller can consume it. A login code needs a verified user. On success
   * applies `effect` in the same transaction, with its events. Wrong codes count per
   * number and caller address (and for the number from every address). With `charge`,
   * those rules are charged first, in the same step (on PostgreSQL the charge and the
   * first read are one statement), and a refusal looks nothing up and records nothing.
   */
  redeem(
    phone: string,
    purpose: PurposeName,
    policy: RedeemPolicy,
    matches: (challenge: Challenge) => boolean,
    effect: RedeemEffect,
    audit: AuditContext,
    options?: ChargeOptions,
  ): Promise<RedeemOutcome | ChargeRefused>;
  /** Stores an issued challenge unless this message was handled or a newer one exists. */
  saveChallenge(messageId: string, challenge: Challenge): Promise<ChallengeOutcome>;
  /**
   * The live session a token names (a current token, or one replaced within the grace)
   * and its user, refreshing the idle timer; null if none.
   */
  authenticate(tokenHash: Uint8Array, policy: SessionPolicy): Promise<Caller | null>;
  /**
   * Gives the session of `tokenHash` the token `next`. A current token is marked
   * replaced; a token replaced within the grace keeps its state and `next` becomes a
   * further current token (another tab); one replaced longer ago revokes the session.
   */
  refresh(
    tokenHash: Uint8Array,
    next: Uint8Array,
    policy: SessionPolicy,
    audit: AuditContext,
  ): Promise<RefreshOutcome>;
  /** The user's sessions that are neither revoked nor expired nor idle, oldest first. */
  listSessions(userId: string, idleSeconds: number): Promise<SessionInfo[]>;
  /**
   * Revokes the user's unrevoked, unexpired sessions among `sessionIds` (or all of
   * them); ids of other users' sessions are ignored. Returns the ids revoked.
   */
  revokeSessions(
    userId: string,
    sessionIds: readonly string[] | "all",
    reason: RevocationReasonName,
    audit: AuditContext,
  ): Promise<string[]>;
  /**
   * Deletes the user, their sessions and the challenges and locks of their number; the
   * audit trail stays. Returns false when there was no such user.
   */
  deleteUser(userId: string, origin: DeletionOriginName, audit: AuditContext): Promise<boolean>;
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
