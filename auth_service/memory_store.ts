// AuthStore in memory, for fast domain tests and the conformance suite. It keeps the
// PostgreSQL store's semantics: wrong-code locks per number and address under a
// per-number ceiling, aggregated refusals, one live
// challenge per number and purpose, sessions with idle and absolute expiry. Calls run one
// at a time, as if every method were a serialisable transaction. Not for production:
// nothing is shared between replicas and nothing survives a restart.
import type { OutgoingMessage } from "../shared/bus.ts";
import { addressKey } from "../shared/ip.ts";
import type { PurposeName } from "../shared/messages.ts";
import { memoryAdminStore } from "./memory_admin_store.ts";
import type {
  AdminStore,
  AuditContext,
  AuthStore,
  Challenge,
  ChallengeOutcome,
  Locked,
  LoginTarget,
  NewSession,
  RedeemOutcome,
  RedeemPolicy,
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
  createdAt: number;
  userId: string;
  tokenHash: string;
  expiresAt: number;
  lastSeenAt: number;
  revokedAt: number | null;
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
}

export class MemoryAuthStore implements AuthStore {
  /** What was enqueued for the bus, in order. */
  readonly outbox: OutgoingMessage[] = [];
  /** The audit trail, in order. */
  readonly auditTrail: AuditRow[] = [];

  private readonly users = new Map<string, User>();
  private readonly challenges = new Map<string, StoredChallenge>();
  private readonly sessions = new Map<string, Session>();
  private readonly inbox = new Map<string, number>();
  /** By number, then client key (EVERY_ADDRESS for all together). */
  private readonly locks = new Map<string, Map<string, WrongCodeLock>>();
  private readonly now: () => number;
  private readonly onEnqueued: () => void;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(options: MemoryStoreOptions = {}) {
    this.now = options.now ?? Date.now;
    this.onEnqueued = options.onEnqueued ?? (() => {});
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
      if (!existing) {
        this.users.set(phone, {
          id: crypto.randomUUID(),
          phoneNumber: phone,
          createdAt: new Date(now),
          verifiedAt: null,
        });
      }
      this.outbox.push(request);
      this.record(now, "code_requested", "signup", who);
      this.onEnqueued();
      return { kind: "queued" };
    });
  }

  isVerified(phone: string): Promise<boolean> {
    return this.serially(() => Boolean(this.users.get(phone)?.verifiedAt));
  }

  loginTarget(phone: string, maxAttempts: number, who: AuditContext): Promise<LoginTarget> {
    return this.serially((now): LoginTarget => {
      if (!this.users.get(phone)?.verifiedAt) {
        this.record(now, "code_requested", "not_verified", who);
        return { kind: "not_verified" };
      }
      const locked = this.lockedFor(now, phone, who);
      if (locked) return locked;
      const c = this.challenges.get(key(phone, "login"));
      const spent = c && (c.consumedAt !== null || c.failedAttempts >= maxAttempts);
      return spent ? { kind: "ok", spentChallengeId: c.requestId } : { kind: "ok" };
    });
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

  redeem(
    phone: string,
    purpose: PurposeName,
    policy: RedeemPolicy,
    matches: (c: Challenge) => Promise<boolean>,
    session: NewSession,
    who: AuditContext,
  ): Promise<RedeemOutcome> {
    return this.serially(async (now): Promise<RedeemOutcome> => {
      const locked = this.lockedFor(now, phone, who);
      if (locked) {
        this.record(now, "code_checked", "locked", who);
        return locked;
      }
      const c = this.challenges.get(key(phone, purpose));
      const user = this.users.get(phone);
      if (
        !c || !user || c.consumedAt !== null || c.expiresAt.getTime() <= now ||
        (purpose === "login" && !user.verifiedAt)
      ) {
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
      c.consumedAt = now;
      this.locks.get(phone)?.delete(addressKey(who.clientAddress));
      this.locks.get(phone)?.delete(EVERY_ADDRESS);
      if (purpose === "signup") user.verifiedAt ??= new Date(now);
      this.sessions.set(hex(session.tokenHash), {
        id: crypto.randomUUID(),
        createdAt: now,
        userId: user.id,
        tokenHash: hex(session.tokenHash),
        expiresAt: now + session.ttlSeconds * 1000,
        lastSeenAt: now,
        revokedAt: null,
      });
      this.record(now, "code_checked", "ok", who);
      this.record(now, "session_created", purpose, who);
      return { kind: "ok", userId: user.id };
    });
  }

  saveChallenge(messageId: string, c: Challenge): Promise<ChallengeOutcome> {
    return this.serially((now): ChallengeOutcome => {
      if (this.inbox.has(messageId)) return "duplicate";
      this.inbox.set(messageId, now);
      const current = this.challenges.get(key(c.phoneNumber, c.purpose));
      if (current && current.issuedAt >= c.issuedAt) return "superseded";
      this.challenges.set(key(c.phoneNumber, c.purpose), {
        ...c,
        codeMac: c.codeMac.slice(),
        failedAttempts: 0,
        consumedAt: null,
      });
      return "stored";
    });
  }

  sessionUser(tokenHash: Uint8Array, idleSeconds: number): Promise<User | null> {
    return this.serially((now) => {
      const s = this.live(now, hex(tokenHash));
      if (!s || s.lastSeenAt <= now - idleSeconds * 1000) return null;
      // Like the PostgreSQL store, refresh only a somewhat stale timer.
      if (s.lastSeenAt < now - Math.min(60, idleSeconds / 4) * 1000) s.lastSeenAt = now;
      const user = [...this.users.values()].find((u) => u.id === s.userId);
      return user ? { ...user } : null;
    });
  }

  revoke(tokenHash: Uint8Array, all: boolean, who: AuditContext): Promise<number> {
    return this.serially((now) => {
      const s = this.live(now, hex(tokenHash));
      if (!s) return 0;
      // "All" includes the user's expired but unrevoked sessions, as in PostgreSQL.
      const targets = all
        ? [...this.sessions.values()].filter((o) => o.userId === s.userId && o.revokedAt === null)
        : [s];
      for (const t of targets) t.revokedAt = now;
      this.record(now, "session_revoked", all ? `all:${targets.length}` : "one", who);
      return targets.length;
    });
  }

  sweep(p: SweepPolicy): Promise<void> {
    return this.serially((now) => {
      const before = now - p.keepSeconds * 1000;
      for (const [k, c] of this.challenges) {
        if (c.expiresAt.getTime() < before) this.challenges.delete(k);
      }
      for (const [k, s] of this.sessions) if (s.expiresAt < before) this.sessions.delete(k);
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
      challenges: this.challenges,
      locks: this.locks,
      auditTrail: this.auditTrail,
      serially: (fn) => this.serially(fn),
    });
  }

  /** Runs one call after every earlier one has finished, with one reading of the clock. */
  private serially<T>(fn: (now: number) => T | Promise<T>): Promise<T> {
    const run = this.queue.then(() => fn(this.now()));
    this.queue = run.catch(() => {});
    return run;
  }

  private live(now: number, tokenHash: string): Session | undefined {
    const s = this.sessions.get(tokenHash);
    return s && s.revokedAt === null && s.expiresAt > now ? s : undefined;
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

const key = (phone: string, purpose: PurposeName) => `${phone}\n${purpose}`;
const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
