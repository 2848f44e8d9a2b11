// AuthStore in memory, for fast domain tests and the conformance suite. It keeps the
// PostgreSQL store's semantics: sliding-window limits, per-number locks, one live
// challenge per number and purpose, sessions with idle and absolute expiry. Calls run one
// at a time, as if every method were a serialisable transaction. Not for production:
// nothing is shared between replicas and nothing survives a restart.
import type { OutgoingMessage } from "../shared/bus.ts";
import { EVENTS_EXCHANGE } from "../shared/topology.ts";
import type { AuditEvent } from "../shared/audit.ts";
import type { PurposeName } from "../shared/messages.ts";
import { memoryAdminStore } from "./memory_admin_store.ts";
import {
  phoneChanged,
  sessionCreated,
  sessionRevoked,
  userDeleted,
  userSignedUp,
  userVerified,
} from "./event_messages.ts";
import type {
  AdminStore,
  AuditContext,
  AuthStore,
  Caller,
  Challenge,
  ChallengeOutcome,
  CodeAdmitted,
  DeletionOriginName,
  Limited,
  LoginCodeOutcome,
  RateRule,
  RedeemEffect,
  RedeemOutcome,
  RedeemPolicy,
  RefreshOutcome,
  RevocationReasonName,
  SessionInfo,
  SessionPolicy,
  SignupOutcome,
  User,
} from "./ports.ts";

export interface StoredChallenge extends Challenge {
  failedAttempts: number;
  consumedAt: number | null;
}

export interface Session {
  id: string;
  userId: string;
  createdAt: number;
  expiresAt: number;
  lastSeenAt: number;
  revokedAt: number | null;
  clientAddress: string;
  userAgent: string;
}

interface Token {
  sessionId: string;
  replacedAt: number | null;
}

export interface NumberLock {
  consecutiveFailures: number;
  lockedUntil: number | null;
}

export interface MemoryStoreOptions {
  /** The clock, in milliseconds; tests move it to let windows and timers pass. */
  now?: () => number;
  onEnqueued?: () => void;
}

export class MemoryAuthStore implements AuthStore {
  /** What was enqueued for the bus, in order: code requests and events. */
  readonly outbox: OutgoingMessage[] = [];

  /** The code requests enqueued for otp-service, in order. */
  get otpRequests(): OutgoingMessage[] {
    return this.outbox.filter((m) => m.exchange !== EVENTS_EXCHANGE);
  }

  /** The events enqueued for auth.events, in order. */
  get events(): OutgoingMessage[] {
    return this.outbox.filter((m) => m.exchange === EVENTS_EXCHANGE);
  }
  /** The audit trail, in order. */
  readonly audit: (AuditEvent & { at: Date })[] = [];

  private readonly users = new Map<string, User>();
  private readonly challenges = new Map<string, StoredChallenge>();
  /** By session id. */
  private readonly sessions = new Map<string, Session>();
  /** By hex SHA-256 of the token. */
  private readonly tokens = new Map<string, Token>();
  private readonly inbox = new Map<string, number>();
  private readonly rateEvents: { key: string; at: number }[] = [];
  private readonly locks = new Map<string, NumberLock>();
  private readonly now: () => number;
  private readonly onEnqueued: () => void;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(options: MemoryStoreOptions = {}) {
    this.now = options.now ?? Date.now;
    this.onEnqueued = options.onEnqueued ?? (() => {});
  }

  signup(
    phone: string,
    request: OutgoingMessage,
    rules: RateRule[],
    who: AuditContext,
  ): Promise<SignupOutcome> {
    return this.serially((now) => {
      const existing = this.users.get(phone);
      if (existing?.verifiedAt) {
        this.record(now, "code_requested", "already_verified", who);
        return { kind: "already_verified" };
      }
      // A refused signup changes nothing: no user row, no event.
      const limited = this.admit(now, rules);
      if (limited) {
        this.record(now, "code_requested", "limited", who);
        return limited;
      }
      this.outbox.push(request);
      if (!existing) {
        const id = crypto.randomUUID();
        this.users.set(phone, {
          id,
          phoneNumber: phone,
          createdAt: new Date(now),
          verifiedAt: null,
        });
        this.outbox.push(userSignedUp(id, phone, who, new Date(now)));
      }
      this.record(now, "code_requested", "signup", who);
      this.onEnqueued();
      return { kind: "queued" };
    });
  }

  admitLoginCode(phone: string, rules: RateRule[], who: AuditContext): Promise<LoginCodeOutcome> {
    return this.serially((now) => {
      if (!this.users.get(phone)?.verifiedAt) return { kind: "not_verified" };
      const limited = this.admit(now, rules);
      this.record(now, "code_requested", limited ? "limited" : "login", who);
      return limited ?? this.admitted(phone, "login");
    });
  }

  admitPhoneChangeCode(
    phone: string,
    rules: RateRule[],
    who: AuditContext,
  ): Promise<CodeAdmitted | Limited> {
    return this.serially((now) => {
      const limited = this.admit(now, rules);
      this.record(now, "code_requested", limited ? "limited" : "phone_change", who);
      return limited ?? this.admitted(phone, "phone_change");
    });
  }

  /** Admitted, naming the number's consumed challenge of this purpose if there is one. */
  private admitted(phone: string, purpose: PurposeName): CodeAdmitted {
    const c = this.challenges.get(key(phone, purpose));
    return c && c.consumedAt !== null
      ? { kind: "ok", spentChallengeId: c.requestId }
      : { kind: "ok" };
  }

  redeem(
    phone: string,
    purpose: PurposeName,
    policy: RedeemPolicy,
    matches: (c: Challenge) => Promise<boolean>,
    effect: RedeemEffect,
    who: AuditContext,
  ): Promise<RedeemOutcome> {
    return this.serially(async (now): Promise<RedeemOutcome> => {
      const limited = this.admit(now, policy.rules);
      if (limited) {
        this.record(now, "code_checked", "limited", who);
        return limited;
      }
      const lock = this.locks.get(phone);
      if (lock?.lockedUntil != null && lock.lockedUntil > now) {
        this.record(now, "code_checked", "locked", who);
        const retry = (lock.lockedUntil - now) / 1000;
        return { kind: "locked", retryAfterSeconds: Math.max(1, Math.ceil(retry)) };
      }
      const c = this.challenges.get(key(phone, purpose));
      const user = this.users.get(phone);
      const usable = effect.kind === "phone_change" ||
        (user !== undefined && (effect.kind === "session" || user.id === effect.userId));
      if (!c || !usable || c.consumedAt !== null || c.expiresAt.getTime() <= now) {
        this.record(now, "code_checked", "no_challenge", who);
        return { kind: "no_challenge" };
      }
      if (c.failedAttempts >= policy.maxAttempts) {
        this.record(now, "code_checked", "exhausted", who);
        return { kind: "exhausted" };
      }
      const { failedAttempts, consumedAt: _, ...challenge } = c;
      if (!await matches(challenge)) {
        c.failedAttempts++;
        const l = this.locks.get(phone) ?? { consecutiveFailures: 0, lockedUntil: null };
        this.locks.set(phone, l);
        l.consecutiveFailures++;
        const locked = l.consecutiveFailures >= policy.lockAfterFailures;
        if (locked) {
          l.consecutiveFailures = 0;
          l.lockedUntil = now + policy.lockSeconds * 1000;
          this.record(now, "number_locked", `${policy.lockSeconds}s`, who);
        }
        this.record(now, "code_checked", "wrong", who);
        return {
          kind: "wrong",
          remaining: Math.max(0, policy.maxAttempts - failedAttempts - 1),
          locked,
        };
      }
      if (effect.kind === "phone_change" && user?.verifiedAt && user.id !== effect.userId) {
        this.record(now, "code_checked", "taken", who);
        return { kind: "taken" };
      }
      c.consumedAt = now;
      this.locks.delete(phone);
      this.record(now, "code_checked", "ok", who);
      if (effect.kind === "phone_change") return this.changePhone(now, effect.userId, phone, who);
      if (effect.kind === "delete_account") {
        this.removeUser(now, effect.userId, "user", who);
        this.onEnqueued();
        return { kind: "ok", userId: effect.userId };
      }
      const u = user!;
      if (purpose === "signup" && !u.verifiedAt) {
        u.verifiedAt = new Date(now);
        this.outbox.push(userVerified(u.id, phone, who, new Date(now)));
      }
      const s = effect.session;
      const expiresAt = now + s.ttlSeconds * 1000;
      this.sessions.set(s.id, {
        id: s.id,
        userId: u.id,
        createdAt: now,
        expiresAt,
        lastSeenAt: now,
        revokedAt: null,
        clientAddress: s.clientAddress,
        userAgent: s.userAgent,
      });
      this.tokens.set(hex(s.tokenHash), { sessionId: s.id, replacedAt: null });
      this.record(now, "session_created", purpose, who);
      const origin = purpose === "signup" ? "verify" : "login";
      this.outbox.push(sessionCreated(
        { sessionId: s.id, userId: u.id, expiresAt: new Date(expiresAt), origin },
        who,
        new Date(now),
      ));
      this.onEnqueued();
      return { kind: "ok", userId: u.id, sessionExpiresAt: new Date(expiresAt) };
    });
  }

  private changePhone(now: number, userId: string, phone: string, who: AuditContext) {
    const holder = this.users.get(phone);
    if (holder && holder.id !== userId && !holder.verifiedAt) this.users.delete(phone);
    const user = this.userById(userId);
    if (!user) return { kind: "no_challenge" } as const;
    const old = user.phoneNumber;
    this.users.delete(old);
    user.phoneNumber = phone;
    this.users.set(phone, user);
    for (const [k, c] of this.challenges) {
      const gone = c.phoneNumber === old ||
        (c.phoneNumber === phone && c.purpose !== "phone_change");
      if (gone) this.challenges.delete(k);
    }
    this.record(now, "phone_changed", "ok", { ...who, phone: old });
    this.record(now, "phone_changed", "ok", who);
    this.outbox.push(phoneChanged(userId, old, phone, who, new Date(now)));
    this.onEnqueued();
    return { kind: "ok", userId, previousPhone: old } as const;
  }

  private userById(id: string): User | undefined {
    return [...this.users.values()].find((u) => u.id === id);
  }

  saveChallenge(messageId: string, c: Challenge): Promise<ChallengeOutcome> {
    return this.serially((now): ChallengeOutcome => {
      if (this.inbox.has(messageId)) return "duplicate";
      this.inbox.set(messageId, now);
      const current = this.challenges.get(key(c.phoneNumber, c.purpose));
      const sameSecondSuccessor = current !== undefined && current.consumedAt !== null &&
        current.issuedAt.getTime() === c.issuedAt.getTime() && current.requestId !== c.requestId;
      if (current && current.issuedAt >= c.issuedAt && !sameSecondSuccessor) return "superseded";
      this.challenges.set(key(c.phoneNumber, c.purpose), {
        ...c,
        codeMac: c.codeMac.slice(),
        failedAttempts: 0,
        consumedAt: null,
      });
      return "stored";
    });
  }

  authenticate(tokenHash: Uint8Array, policy: SessionPolicy): Promise<Caller | null> {
    return this.serially((now) => {
      const t = this.tokens.get(hex(tokenHash));
      if (!t || !usableToken(now, t, policy)) return null;
      const s = this.live(now, t.sessionId, policy.idleSeconds);
      if (!s) return null;
      // Like the PostgreSQL store, refresh only a somewhat stale timer.
      if (s.lastSeenAt < now - Math.min(60, policy.idleSeconds / 4) * 1000) s.lastSeenAt = now;
      return this.caller(s);
    });
  }

  refresh(
    tokenHash: Uint8Array,
    next: Uint8Array,
    policy: SessionPolicy,
    who: AuditContext,
  ): Promise<RefreshOutcome> {
    return this.serially((now): RefreshOutcome => {
      const t = this.tokens.get(hex(tokenHash));
      const s = t && this.live(now, t.sessionId, policy.idleSeconds);
      if (!t || !s) return { kind: "invalid" };
      if (!usableToken(now, t, policy)) {
        this.revokeNow(now, s.userId, [s.id], "token_reuse", who);
        return { kind: "reused" };
      }
      const state = t.replacedAt === null ? "rotated" : "grace";
      t.replacedAt ??= now;
      this.tokens.set(hex(next), { sessionId: s.id, replacedAt: null });
      s.lastSeenAt = now;
      this.record(now, "session_refreshed", state, who);
      return { kind: "rotated", caller: this.caller(s)! };
    });
  }

  listSessions(userId: string, idleSeconds: number): Promise<SessionInfo[]> {
    return this.serially((now) =>
      [...this.sessions.values()]
        .filter((s) => s.userId === userId && this.live(now, s.id, idleSeconds))
        .sort((a, b) => a.createdAt - b.createdAt || (a.id < b.id ? -1 : 1))
        .map(info)
    );
  }

  revokeSessions(
    userId: string,
    sessionIds: readonly string[] | "all",
    reason: RevocationReasonName,
    who: AuditContext,
  ): Promise<string[]> {
    return this.serially((now) => this.revokeNow(now, userId, sessionIds, reason, who));
  }

  deleteUser(userId: string, origin: DeletionOriginName, who: AuditContext): Promise<boolean> {
    return this.serially((now) => this.removeUserNotifying(now, userId, origin, who));
  }

  private removeUserNotifying(
    now: number,
    userId: string,
    origin: DeletionOriginName,
    who: AuditContext,
  ): boolean {
    const deleted = this.removeUser(now, userId, origin, who);
    if (deleted) this.onEnqueued();
    return deleted;
  }

  private revokeNow(
    now: number,
    userId: string,
    sessionIds: readonly string[] | "all",
    reason: RevocationReasonName,
    who: AuditContext,
  ): string[] {
    const ids = [...this.sessions.values()]
      .filter((s) =>
        s.userId === userId && s.revokedAt === null && s.expiresAt > now &&
        (sessionIds === "all" || sessionIds.includes(s.id))
      )
      .map((s) => {
        s.revokedAt = now;
        return s.id;
      });
    if (ids.length > 0) {
      const outcome = sessionIds === "all" ? `${reason}:all:${ids.length}` : reason;
      this.record(now, "session_revoked", outcome, who);
      this.outbox.push(sessionRevoked(ids, userId, reason, who, new Date(now)));
      this.onEnqueued();
    }
    return ids;
  }

  private removeUser(
    now: number,
    userId: string,
    origin: DeletionOriginName,
    who: AuditContext,
  ): boolean {
    const user = this.userById(userId);
    if (!user) return false;
    this.users.delete(user.phoneNumber);
    for (const [id, s] of this.sessions) if (s.userId === userId) this.sessions.delete(id);
    for (const [k, t] of this.tokens) if (!this.sessions.has(t.sessionId)) this.tokens.delete(k);
    for (const [k, c] of this.challenges) {
      if (c.phoneNumber !== user.phoneNumber) continue;
      this.challenges.delete(k);
      // As in PostgreSQL: a resend of a challenge still live at otp-service is new here.
      this.inbox.delete(c.requestId);
    }
    this.locks.delete(user.phoneNumber);
    this.record(now, "user_deleted", origin, { ...who, phone: user.phoneNumber });
    this.outbox.push(userDeleted(userId, origin, who, new Date(now)));
    return true;
  }

  private caller(s: Session): Caller | null {
    const user = this.userById(s.userId);
    return user ? { session: info(s), user: { ...user } } : null;
  }

  sweep(keepSeconds: number): Promise<void> {
    return this.serially((now) => {
      const before = now - keepSeconds * 1000;
      const kept = this.rateEvents.filter((e) => e.at >= before);
      this.rateEvents.splice(0, this.rateEvents.length, ...kept);
      for (const [k, c] of this.challenges) {
        if (c.expiresAt.getTime() < before) this.challenges.delete(k);
      }
      for (const [k, s] of this.sessions) if (s.expiresAt < before) this.sessions.delete(k);
      for (const [k, t] of this.tokens) if (!this.sessions.has(t.sessionId)) this.tokens.delete(k);
      for (const [k, at] of this.inbox) if (at < before) this.inbox.delete(k);
      for (const [k, l] of this.locks) {
        if (l.lockedUntil !== null && l.lockedUntil < now && l.consecutiveFailures === 0) {
          this.locks.delete(k);
        }
      }
    });
  }

  /** The admin API's view of this same state. */
  admin(): AdminStore {
    return memoryAdminStore({
      users: this.users,
      sessions: this.sessions,
      locks: this.locks,
      audit: this.audit,
      serially: (fn) => this.serially(fn),
      revokeAll: (now, userId, who) => this.revokeNow(now, userId, "all", "admin", who).length,
      removeUser: (now, userId, who) => this.removeUserNotifying(now, userId, "admin", who),
    });
  }

  /** Runs one call after every earlier one has finished, with one reading of the clock. */
  private serially<T>(fn: (now: number) => T | Promise<T>): Promise<T> {
    const run = this.queue.then(() => fn(this.now()));
    this.queue = run.catch(() => {});
    return run;
  }

  private live(now: number, sessionId: string, idleSeconds: number): Session | undefined {
    const s = this.sessions.get(sessionId);
    return s && s.revokedAt === null && s.expiresAt > now &&
        s.lastSeenAt > now - idleSeconds * 1000
      ? s
      : undefined;
  }

  /** The worst tripping rule, or records one event per distinct key. */
  private admit(now: number, rules: RateRule[]): Limited | null {
    let worst: Limited | null = null;
    for (const r of rules) {
      const since = now - r.windowSeconds * 1000;
      const inWindow = this.rateEvents
        .filter((e) => e.key === r.key && e.at > since)
        .map((e) => e.at)
        .sort((a, b) => b - a);
      const nth = inWindow[r.limit - 1];
      if (nth === undefined) continue;
      const retry = Math.max(1, Math.ceil((nth + r.windowSeconds * 1000 - now) / 1000));
      if (!worst || retry > worst.retryAfterSeconds) {
        worst = { kind: "limited", retryAfterSeconds: retry, reason: r.reason };
      }
    }
    if (worst) return worst;
    for (const k of new Set(rules.map((r) => r.key))) this.rateEvents.push({ key: k, at: now });
    return null;
  }

  private record(now: number, event: string, outcome: string, who: AuditContext): void {
    this.audit.push({ at: new Date(now), event, outcome, ...who });
  }
}

function usableToken(now: number, t: Token, policy: SessionPolicy): boolean {
  return t.replacedAt === null || t.replacedAt > now - policy.graceSeconds * 1000;
}

function info(s: Session): SessionInfo {
  return {
    id: s.id,
    userId: s.userId,
    createdAt: new Date(s.createdAt),
    expiresAt: new Date(s.expiresAt),
    lastSeenAt: new Date(s.lastSeenAt),
    clientAddress: s.clientAddress,
    userAgent: s.userAgent,
  };
}

const key = (phone: string, purpose: PurposeName) => `${phone}\n${purpose}`;
const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
