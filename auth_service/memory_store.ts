// AuthStore in memory, for fast domain tests and the conformance suite. It keeps the
// PostgreSQL store's semantics: wrong-code locks per number and address under a
// per-number ceiling, aggregated refusals, one live
// challenge per number and purpose, sessions with idle and absolute expiry. Calls run one
// at a time, as if every method were a serialisable transaction. Not for production:
// nothing is shared between replicas and nothing survives a restart.
import type { OutgoingMessage } from "../shared/bus.ts";
import { EVENTS_EXCHANGE } from "../shared/topology.ts";
import { addressKey } from "../shared/ip.ts";
import type { PurposeName } from "../shared/messages.ts";
import type { Limits } from "../shared/limits/engine.ts";
import type { Rule } from "../shared/limits/rules.ts";
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
  ChargeOptions,
  ChargeRefused,
  CodeAdmitted,
  DeletionOriginName,
  Locked,
  LoginTarget,
  RedeemEffect,
  RedeemOutcome,
  RedeemPolicy,
  RefreshOutcome,
  RevocationReasonName,
  SessionInfo,
  SessionPolicy,
  SignupOutcome,
  SweepPolicy,
  User,
} from "./ports.ts";

export interface AuditRow extends AuditContext {
  at: Date;
  event: string;
  outcome: string;
  count: number;
  /** Set on aggregated refusals: the start of the window they are counted in. */
  windowStart?: number;
}

const EVERY_ADDRESS = "*";

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

export interface WrongCodeLock {
  consecutiveFailures: number;
  lastFailureAt: number;
  lockedUntil: number | null;
}

export interface MemoryStoreOptions {
  /** The clock, in milliseconds; tests move it to let windows and timers pass. */
  now?: () => number;
  onEnqueued?: () => void;
  /** The limits a charged lookup is charged to (the same the use cases use). */
  limits?: Limits;
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
  readonly auditTrail: AuditRow[] = [];

  private readonly users = new Map<string, User>();
  private readonly challenges = new Map<string, StoredChallenge>();
  /** By session id. */
  private readonly sessions = new Map<string, Session>();
  /** By hex SHA-256 of the token. */
  private readonly tokens = new Map<string, Token>();
  private readonly inbox = new Map<string, number>();
  /** By number, then client key (EVERY_ADDRESS for all together). */
  private readonly locks = new Map<string, Map<string, WrongCodeLock>>();
  private readonly now: () => number;
  private readonly onEnqueued: () => void;
  private readonly limits: Limits | undefined;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(options: MemoryStoreOptions = {}) {
    this.now = options.now ?? Date.now;
    this.onEnqueued = options.onEnqueued ?? (() => {});
    this.limits = options.limits;
  }

  signup(phone: string, request: OutgoingMessage, who: AuditContext): Promise<SignupOutcome> {
    return this.serially((now): SignupOutcome => {
      const existing = this.users.get(phone);
      if (existing?.verifiedAt) {
        this.record(now, "code_requested", "already_verified", who);
        return { kind: "already_verified" };
      }
      // A refused signup changes nothing: no user row, no event.
      const locked = this.lockedFor(now, phone, who);
      if (locked) {
        this.refusal(now, "code_requested", "locked", who, locked.retryAfterSeconds);
        return locked;
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

  isVerified(phone: string): Promise<boolean> {
    return this.serially(() => Boolean(this.users.get(phone)?.verifiedAt));
  }

  async loginTarget(
    phone: string,
    maxAttempts: number,
    who: AuditContext,
    o: ChargeOptions = {},
  ): Promise<LoginTarget> {
    const refused = await this.charged(o.charge);
    if (refused) return refused;
    return await this.serially((now): LoginTarget => {
      if (!this.users.get(phone)?.verifiedAt) {
        this.record(now, "code_requested", "not_verified", who);
        return { kind: "not_verified" };
      }
      return this.lockedFor(now, phone, who) ?? this.admitted(phone, "login", maxAttempts);
    });
  }

  /** A step's charge (loginTarget's, redeem's), made first; its refusal if refused. */
  private async charged(rules: readonly Rule[] = []): Promise<ChargeRefused | undefined> {
    if (rules.length === 0) return undefined;
    if (!this.limits) throw new Error("a charged step needs the store's limits");
    const a = await this.limits.admit(rules);
    return a.admitted ? undefined : { kind: "refused", refusal: a };
  }

  admitPhoneChangeCode(
    phone: string,
    maxAttempts: number,
    who: AuditContext,
  ): Promise<CodeAdmitted | Locked> {
    return this.serially((now) =>
      this.lockedFor(now, phone, who) ?? this.admitted(phone, "phone_change", maxAttempts)
    );
  }

  /** Admitted, naming the number's spent challenge of this purpose if there is one. */
  private admitted(phone: string, purpose: PurposeName, maxAttempts: number): CodeAdmitted {
    const c = this.challenges.get(key(phone, purpose));
    return c && (c.consumedAt !== null || c.failedAttempts >= maxAttempts)
      ? { kind: "ok", spentChallengeId: c.requestId }
      : { kind: "ok" };
  }

  audit(event: string, outcome: string, who: AuditContext): Promise<void> {
    return this.serially((now) => this.record(now, event, outcome, who));
  }

  auditRefusal(
    event: string,
    outcome: string,
    who: AuditContext,
    windowSeconds: number,
  ): Promise<void> {
    return this.serially((now) => this.refusal(now, event, outcome, who, windowSeconds));
  }

  async redeem(
    phone: string,
    purpose: PurposeName,
    policy: RedeemPolicy,
    matches: (c: Challenge) => boolean,
    effect: RedeemEffect,
    who: AuditContext,
    o: ChargeOptions = {},
  ): Promise<RedeemOutcome | ChargeRefused> {
    const refused = await this.charged(o.charge);
    if (refused) return refused;
    return await this.serially((now): RedeemOutcome => {
      const locked = this.lockedFor(now, phone, who);
      if (locked) {
        this.record(now, "code_checked", "locked", who);
        return locked;
      }
      const c = this.challenges.get(key(phone, purpose));
      const user = this.users.get(phone);
      const usable = effect.kind === "phone_change" ||
        (user !== undefined && (purpose !== "login" || Boolean(user.verifiedAt)) &&
          (effect.kind === "session" || user.id === effect.userId));
      if (!c || !usable || c.consumedAt !== null || c.expiresAt.getTime() <= now) {
        this.record(now, "code_checked", "no_challenge", who);
        return { kind: "no_challenge" };
      }
      if (c.failedAttempts >= policy.maxAttempts) {
        this.record(now, "code_checked", "exhausted", who);
        return { kind: "exhausted" };
      }
      const { failedAttempts, consumedAt: _, ...challenge } = c;
      if (!matches(challenge)) {
        c.failedAttempts++;
        const mine = this.locks.get(phone) ?? new Map<string, WrongCodeLock>();
        this.locks.set(phone, mine);
        const tripped: string[] = [];
        for (const k of [addressKey(who.clientAddress), EVERY_ADDRESS]) {
          const l = mine.get(k) ??
            { consecutiveFailures: 0, lastFailureAt: now, lockedUntil: null };
          mine.set(k, l);
          // Failures age out once the failure window has passed without any.
          if (l.lastFailureAt < now - policy.failureWindowSeconds * 1000) {
            l.consecutiveFailures = 0;
          }
          l.consecutiveFailures++;
          l.lastFailureAt = now;
          const limit = k === EVERY_ADDRESS
            ? policy.numberLockAfterFailures
            : policy.lockAfterFailures;
          if (l.consecutiveFailures >= limit) {
            l.consecutiveFailures = 0;
            l.lockedUntil = now + policy.lockSeconds * 1000;
            tripped.push(k);
          }
        }
        if (tripped.length > 0) {
          const all = tripped.includes(EVERY_ADDRESS) ? ":all" : "";
          this.record(now, "number_locked", `${policy.lockSeconds}s${all}`, who);
        }
        this.record(now, "code_checked", "wrong", who);
        return {
          kind: "wrong",
          remaining: Math.max(0, policy.maxAttempts - failedAttempts - 1),
          locked: tripped.length > 0,
        };
      }
      if (effect.kind === "phone_change" && user?.verifiedAt && user.id !== effect.userId) {
        this.record(now, "code_checked", "taken", who);
        return { kind: "taken" };
      }
      c.consumedAt = now;
      this.locks.get(phone)?.delete(addressKey(who.clientAddress));
      this.locks.get(phone)?.delete(EVERY_ADDRESS);
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

  sweep(p: SweepPolicy): Promise<void> {
    return this.serially((now) => {
      const before = now - p.keepSeconds * 1000;
      for (const [k, c] of this.challenges) {
        if (c.expiresAt.getTime() < before) this.challenges.delete(k);
      }
      for (const [k, s] of this.sessions) if (s.expiresAt < before) this.sessions.delete(k);
      for (const [k, t] of this.tokens) if (!this.sessions.has(t.sessionId)) this.tokens.delete(k);
      for (const [k, at] of this.inbox) if (at < before) this.inbox.delete(k);
      for (const mine of this.locks.values()) {
        for (const [k, l] of mine) {
          if ((l.lockedUntil ?? 0) < now && l.lastFailureAt < before) mine.delete(k);
        }
      }
      const kept = this.auditTrail.filter((e) =>
        e.at.getTime() >= now - p.auditRetentionSeconds * 1000
      );
      this.auditTrail.splice(0, this.auditTrail.length, ...kept);
      for (const [phone, u] of this.users) {
        if (u.verifiedAt || u.createdAt.getTime() >= now - p.unverifiedUserSeconds * 1000) continue;
        const live = (["signup", "login"] as const).some((purpose) => {
          const c = this.challenges.get(key(phone, purpose));
          return c && c.consumedAt === null && c.expiresAt.getTime() > now;
        });
        if (!live) this.users.delete(phone);
      }
    });
  }

  /** The admin API's view of this same state. */
  admin(): AdminStore {
    return memoryAdminStore({
      users: this.users,
      sessions: this.sessions,
      locks: this.locks,
      auditTrail: this.auditTrail,
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

  private lockedFor(now: number, phone: string, who: AuditContext): Locked | null {
    const mine = this.locks.get(phone);
    let until = 0;
    for (const k of [addressKey(who.clientAddress), EVERY_ADDRESS]) {
      until = Math.max(until, mine?.get(k)?.lockedUntil ?? 0);
    }
    if (until <= now) return null;
    return { kind: "locked", retryAfterSeconds: Math.max(1, Math.ceil((until - now) / 1000)) };
  }

  private refusal(
    now: number,
    event: string,
    outcome: string,
    who: AuditContext,
    windowSeconds: number,
  ): void {
    const w = Math.max(1, Math.round(windowSeconds)) * 1000;
    const windowStart = Math.floor(now / w) * w;
    const same = this.auditTrail.find((e) =>
      e.windowStart === windowStart && e.event === event && e.outcome === outcome &&
      (e.phone ?? "") === (who.phone ?? "") && e.clientAddress === who.clientAddress
    );
    if (same) {
      same.count++;
      same.at = new Date(now);
      return;
    }
    this.auditTrail.push({ ...who, at: new Date(now), event, outcome, count: 1, windowStart });
  }

  private record(now: number, event: string, outcome: string, who: AuditContext): void {
    this.auditTrail.push({ ...who, at: new Date(now), event, outcome, count: 1 });
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
