// PostgreSQL adapter of AuthStore.
import { enqueue } from "../shared/outbox.ts";
import type { OutgoingMessage } from "../shared/bus.ts";
import type { PurposeName } from "../shared/messages.ts";
import type { Sql, TxSql } from "../shared/postgres.ts";
import { phoneChanged, sessionCreated, userSignedUp, userVerified } from "./event_messages.ts";
import { admit, audit } from "./pg_limits.ts";
import {
  authenticate,
  deleteUserIn,
  insertSession,
  listSessions,
  refresh,
  revokeIn,
} from "./pg_session_store.ts";
import type {
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
} from "./ports.ts";

const SCHEMA = "auth";

export class PgAuthStore implements AuthStore {
  constructor(private readonly sql: Sql, private readonly onEnqueued: () => void = () => {}) {}

  async signup(
    phone: string,
    request: OutgoingMessage,
    rules: RateRule[],
    who: AuditContext,
  ): Promise<SignupOutcome> {
    const outcome = await this.sql.begin(async (tx): Promise<SignupOutcome> => {
      // The no-op update takes the row lock, so concurrent signups of one number serialise.
      const [user] = await tx<{ id: string; verified_at: Date | null; inserted: boolean }[]>`
        insert into auth.users (phone_number) values (${phone})
        on conflict (phone_number) do update set phone_number = excluded.phone_number
        returning id, verified_at, (xmax = 0) as inserted`;
      if (user!.verified_at !== null) return { kind: "already_verified" };
      const limited = await admit(tx, rules);
      // Throwing rolls back the user row too: a refused signup changes nothing.
      if (limited) throw new Refused(limited);
      // Pipelined: the statements go out together and cost one round trip.
      await Promise.all([
        enqueue(tx, SCHEMA, request),
        user!.inserted ? enqueue(tx, SCHEMA, userSignedUp(user!.id, phone, who)) : undefined,
        audit(tx, "code_requested", "signup", who),
      ]);
      return { kind: "queued" };
    }).catch((err) => {
      if (err instanceof Refused) return err.outcome;
      throw err;
    });
    if (outcome.kind === "queued") this.onEnqueued();
    else await this.auditAlone("code_requested", outcome.kind, who);
    return outcome;
  }

  async admitLoginCode(
    phone: string,
    rules: RateRule[],
    who: AuditContext,
  ): Promise<LoginCodeOutcome> {
    // Most lookups are for numbers that are not users: answer those in one round trip.
    const [user] = await this.sql<{ verified_at: Date | null; spent: string | null }[]>`
      select u.verified_at,
             (select c.request_id from auth.challenges c
               where c.phone_number = u.phone_number and c.purpose = 'login'
                 and c.consumed_at is not null) as spent
        from auth.users u where u.phone_number = ${phone}`;
    if (!user || user.verified_at === null) return { kind: "not_verified" };
    const outcome = await this.sql.begin(async (tx): Promise<LoginCodeOutcome> => {
      const limited = await admit(tx, rules);
      if (limited) return limited;
      await audit(tx, "code_requested", "login", who);
      return admitted(user.spent ?? undefined);
    });
    if (outcome.kind === "limited") await this.auditAlone("code_requested", "limited", who);
    return outcome;
  }

  async admitPhoneChangeCode(
    phone: string,
    rules: RateRule[],
    who: AuditContext,
  ): Promise<CodeAdmitted | Limited> {
    const outcome = await this.sql.begin(async (tx): Promise<CodeAdmitted | Limited> => {
      const limited = await admit(tx, rules);
      if (limited) return limited;
      const [[c]] = await Promise.all([
        tx<{ request_id: string }[]>`
          select request_id from auth.challenges
           where phone_number = ${phone} and purpose = 'phone_change'
             and consumed_at is not null`,
        audit(tx, "code_requested", "phone_change", who),
      ]);
      return admitted(c?.request_id);
    });
    if (outcome.kind === "limited") await this.auditAlone("code_requested", "limited", who);
    return outcome;
  }

  /** For refusals whose transaction rolled back or changed nothing. */
  private async auditAlone(event: string, outcome: string, who: AuditContext): Promise<void> {
    await this.sql.begin((tx) => audit(tx, event, outcome, who));
  }

  async redeem(
    phone: string,
    purpose: PurposeName,
    policy: RedeemPolicy,
    matches: (c: Challenge) => Promise<boolean>,
    effect: RedeemEffect,
    who: AuditContext,
  ): Promise<RedeemOutcome> {
    const outcome = await this.sql.begin(async (tx): Promise<RedeemOutcome> => {
      const limited = await admit(tx, policy.rules);
      if (limited) {
        await audit(tx, "code_checked", "limited", who);
        return limited;
      }
      const [lock] = await tx<{ retry: number }[]>`
        select extract(epoch from locked_until - now())::float8 as retry
          from auth.number_locks where phone_number = ${phone} and locked_until > now()`;
      if (lock) {
        await audit(tx, "code_checked", "locked", who);
        return { kind: "locked", retryAfterSeconds: Math.max(1, Math.ceil(lock.retry)) };
      }
      const [c] = await tx<
        {
          request_id: string;
          code_mac: Uint8Array;
          issued_at: Date;
          expires_at: Date;
          failed_attempts: number;
          user_id: string | null;
          verified_at: Date | null;
        }[]
      >`
        select c.request_id, c.code_mac, c.issued_at, c.expires_at, c.failed_attempts,
               u.id as user_id, u.verified_at
          from auth.challenges c left join auth.users u on u.phone_number = c.phone_number
         where c.phone_number = ${phone} and c.purpose = ${purpose}
           and c.consumed_at is null and c.expires_at > now()
         for update of c`;
      // A code for a number with no user (or not the caller's) is no code at all, except
      // a phone-change code, whose number is by design not the caller's yet.
      const owner = c?.user_id ?? null;
      const usable = c && (effect.kind === "phone_change" ||
        (owner !== null && (effect.kind === "session" || owner === effect.userId)));
      if (!c || !usable) {
        await audit(tx, "code_checked", "no_challenge", who);
        return { kind: "no_challenge" };
      }
      if (c.failed_attempts >= policy.maxAttempts) {
        await audit(tx, "code_checked", "exhausted", who);
        return { kind: "exhausted" };
      }
      const ok = await matches({
        requestId: c.request_id,
        phoneNumber: phone,
        purpose,
        codeMac: c.code_mac,
        issuedAt: c.issued_at,
        expiresAt: c.expires_at,
      });
      if (!ok) return await this.wrongCode(tx, phone, purpose, policy, c.failed_attempts, who);
      if (effect.kind === "phone_change" && c.verified_at !== null && owner !== effect.userId) {
        await audit(tx, "code_checked", "taken", who);
        return { kind: "taken" };
      }
      // Pipelined: one round trip for the three.
      await Promise.all([
        tx`update auth.challenges set consumed_at = now()
            where phone_number = ${phone} and purpose = ${purpose}`,
        tx`delete from auth.number_locks where phone_number = ${phone}`,
        audit(tx, "code_checked", "ok", who),
      ]);
      switch (effect.kind) {
        case "session":
          return await this.openSession(tx, owner!, c.verified_at, purpose, effect, phone, who);
        case "phone_change":
          return await this.changePhone(tx, effect.userId, owner, phone, who);
        case "delete_account":
          await deleteUserIn(tx, effect.userId, "user", who);
          return { kind: "ok", userId: effect.userId };
      }
    });
    if (outcome.kind === "ok") this.onEnqueued();
    return outcome;
  }

  private async openSession(
    tx: TxSql,
    userId: string,
    verifiedAt: Date | null,
    purpose: PurposeName,
    effect: Extract<RedeemEffect, { kind: "session" }>,
    phone: string,
    who: AuditContext,
  ): Promise<RedeemOutcome> {
    const verifies = purpose === "signup" && verifiedAt === null;
    // Pipelined; only the event needs what the insert returns.
    const [expiresAt] = await Promise.all([
      insertSession(tx, userId, effect.session),
      verifies ? tx`update auth.users set verified_at = now() where id = ${userId}` : undefined,
      verifies ? enqueue(tx, SCHEMA, userVerified(userId, phone, who)) : undefined,
      audit(tx, "session_created", purpose, who),
    ]);
    const origin = purpose === "signup" ? "verify" : "login";
    await enqueue(
      tx,
      SCHEMA,
      sessionCreated({ sessionId: effect.session.id, userId, expiresAt, origin }, who),
    );
    return { kind: "ok", userId, sessionExpiresAt: expiresAt };
  }

  /**
   * Moves the user to `phone`. An unverified user holding that number never proved it,
   * while the caller just did: that row gives way.
   */
  private async changePhone(
    tx: TxSql,
    userId: string,
    holder: string | null,
    phone: string,
    who: AuditContext,
  ): Promise<RedeemOutcome> {
    if (holder !== null && holder !== userId) {
      await tx`delete from auth.users where id = ${holder} and verified_at is null`;
    }
    const [u] = await tx<{ old: string }[]>`
      update auth.users n set phone_number = ${phone}
        from (select id, phone_number from auth.users where id = ${userId} for update) o
       where n.id = o.id
      returning o.phone_number as old`;
    if (!u) return { kind: "no_challenge" };
    // Codes of either number were issued for its old owner. The consumed phone-change
    // code stays, so a later request can name it as spent.
    await tx`delete from auth.challenges
              where phone_number = ${u.old}
                 or (phone_number = ${phone} and purpose <> 'phone_change')`;
    await audit(tx, "phone_changed", "ok", { ...who, phone: u.old });
    await audit(tx, "phone_changed", "ok", who);
    await enqueue(tx, SCHEMA, phoneChanged(userId, u.old, phone, who));
    return { kind: "ok", userId, previousPhone: u.old };
  }

  private async wrongCode(
    tx: TxSql,
    phone: string,
    purpose: PurposeName,
    policy: RedeemPolicy,
    failedBefore: number,
    who: AuditContext,
  ): Promise<RedeemOutcome> {
    await tx`
      update auth.challenges set failed_attempts = failed_attempts + 1
       where phone_number = ${phone} and purpose = ${purpose}`;
    const [l] = await tx<{ consecutive_failures: number }[]>`
      insert into auth.number_locks (phone_number, consecutive_failures) values (${phone}, 1)
      on conflict (phone_number) do update
        set consecutive_failures = auth.number_locks.consecutive_failures + 1
      returning consecutive_failures`;
    const locked = l!.consecutive_failures >= policy.lockAfterFailures;
    if (locked) {
      await tx`
        update auth.number_locks set consecutive_failures = 0,
          locked_until = now() + make_interval(secs => ${policy.lockSeconds})
        where phone_number = ${phone}`;
      await audit(tx, "number_locked", `${policy.lockSeconds}s`, who);
    }
    await audit(tx, "code_checked", "wrong", who);
    return {
      kind: "wrong",
      remaining: Math.max(0, policy.maxAttempts - failedBefore - 1),
      locked,
    };
  }

  async saveChallenge(messageId: string, c: Challenge): Promise<ChallengeOutcome> {
    // One statement, so one round trip and one commit: the inbox row and the challenge
    // are written together or not at all. Only a newer code replaces the current one,
    // whatever order messages arrive in.
    const [r] = await this.sql<{ fresh: boolean; stored: boolean }[]>`
      with fresh as (
        insert into auth.inbox (message_id) values (${messageId})
        on conflict do nothing returning message_id),
      stored as (
        insert into auth.challenges
          (phone_number, purpose, request_id, code_mac, issued_at, expires_at)
        select ${c.phoneNumber}::text, ${c.purpose}::text, ${c.requestId}::text,
               ${c.codeMac}::bytea, ${c.issuedAt}::timestamptz, ${c.expiresAt}::timestamptz
         where exists (select from fresh)
        on conflict (phone_number, purpose) do update set
          request_id = excluded.request_id, code_mac = excluded.code_mac,
          issued_at = excluded.issued_at, expires_at = excluded.expires_at,
          failed_attempts = 0, consumed_at = null
        where auth.challenges.issued_at < excluded.issued_at
           -- Issue times have whole seconds: a code opened in the second its consumed
           -- predecessor was issued is still the newer one.
           or (auth.challenges.consumed_at is not null
               and auth.challenges.issued_at = excluded.issued_at
               and auth.challenges.request_id <> excluded.request_id)
        returning phone_number)
      select exists (select from fresh) as fresh, exists (select from stored) as stored`;
    if (!r!.fresh) return "duplicate";
    return r!.stored ? "stored" : "superseded";
  }

  authenticate(tokenHash: Uint8Array, policy: SessionPolicy): Promise<Caller | null> {
    return authenticate(this.sql, tokenHash, policy);
  }

  async refresh(
    tokenHash: Uint8Array,
    next: Uint8Array,
    policy: SessionPolicy,
    who: AuditContext,
  ): Promise<RefreshOutcome> {
    const outcome = await refresh(this.sql, tokenHash, next, policy, who);
    if (outcome.kind === "reused") this.onEnqueued();
    return outcome;
  }

  listSessions(userId: string, idleSeconds: number): Promise<SessionInfo[]> {
    return listSessions(this.sql, userId, idleSeconds);
  }

  async revokeSessions(
    userId: string,
    sessionIds: readonly string[] | "all",
    reason: RevocationReasonName,
    who: AuditContext,
  ): Promise<string[]> {
    const ids = await this.sql.begin((tx) => revokeIn(tx, userId, sessionIds, reason, who));
    if (ids.length > 0) this.onEnqueued();
    return ids;
  }

  async deleteUser(
    userId: string,
    origin: DeletionOriginName,
    who: AuditContext,
  ): Promise<boolean> {
    const deleted = await this.sql.begin((tx) => deleteUserIn(tx, userId, origin, who));
    if (deleted) this.onEnqueued();
    return deleted;
  }

  async sweep(keepSeconds: number): Promise<void> {
    await this.sql`delete from auth.rate_events
      where at < now() - make_interval(secs => ${keepSeconds})`;
    await this.sql`delete from auth.challenges
      where expires_at < now() - make_interval(secs => ${keepSeconds})`;
    // Replaced tokens go with their session: reuse is detected for the session's life.
    await this.sql`delete from auth.sessions
      where expires_at < now() - make_interval(secs => ${keepSeconds})`;
    await this.sql`delete from auth.inbox
      where handled_at < now() - make_interval(secs => ${keepSeconds})`;
    await this.sql`delete from auth.number_locks
      where locked_until < now() and consecutive_failures = 0`;
  }
}

function admitted(spentChallengeId: string | undefined): CodeAdmitted {
  return spentChallengeId ? { kind: "ok", spentChallengeId } : { kind: "ok" };
}

class Refused extends Error {
  constructor(readonly outcome: Limited) {
    super("refused");
  }
}
