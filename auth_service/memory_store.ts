// AuthStore in memory, for fast domain tests and the conformance suite. It keeps the
// PostgreSQL store's semantics: sliding-window limits, per-number locks, one live
// challenge per number and purpose, sessions with idle and absolute expiry. Calls run one
// at a time, as if every method were a serialisable transaction. Not for production:
// nothing is shared between replicas and nothing survives a restart.
import type { OutgoingMessage } from "../shared/bus.ts";
import type { AuditEvent } from "../shared/audit.ts";
import type { PurposeName } from "../shared/messages.ts";
import { memoryAdminStore } from "./memory_admin_store.ts";
import type {
  AdminStore,
  AuditContext,
  AuthStore,
  Challenge,
  ChallengeOutcome,
  Limited,
  LoginCodeOutcome,
  NewSession,
  RateRule,
  RedeemOutcome,
  RedeemPolicy,
  SignupOutcome,
  User,
} from "./ports.ts";

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
  /** What was enqueued for the bus, in order. */
  readonly outbox: OutgoingMessage[] = [];
  /** The audit trail, in order. */
  readonly audit: (AuditEvent & { at: Date })[] = [];

  private readonly users = new Map<string, User>();
  private readonly challenges = new Map<string, StoredChallenge>();
  private readonly sessions = new Map<string, Session>();
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

  admitLoginCode(phone: string, rules: RateRule[], who: AuditContext): Promise<LoginCodeOutcome> {
    return this.serially((now) => {
      if (!this.users.get(phone)?.verifiedAt) return { kind: "not_verified" };
      const limited = this.admit(now, rules);
      this.record(now, "code_requested", limited ? "limited" : "login", who);
      return limited ?? { kind: "ok" };
    });
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
      if (!c || !user || c.consumedAt !== null || c.expiresAt.getTime() <= now) {
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
      c.consumedAt = now;
      this.locks.delete(phone);
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

  sweep(keepSeconds: number): Promise<void> {
    return this.serially((now) => {
      const before = now - keepSeconds * 1000;
      const kept = this.rateEvents.filter((e) => e.at >= before);
      this.rateEvents.splice(0, this.rateEvents.length, ...kept);
      for (const [k, c] of this.challenges) {
        if (c.expiresAt.getTime() < before) this.challenges.delete(k);
      }
      for (const [k, s] of this.sessions) if (s.expiresAt < before) this.sessions.delete(k);
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
      challenges: this.challenges,
      locks: this.locks,
      audit: this.audit,
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

const key = (phone: string, purpose: PurposeName) => `${phone}\n${purpose}`;
const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
