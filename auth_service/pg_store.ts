// PostgreSQL adapter of AuthStore.
import { enqueue } from "../shared/outbox.ts";
import type { OutgoingMessage } from "../shared/bus.ts";
import type { PurposeName } from "../shared/messages.ts";
import type { Sql, TxSql } from "../shared/postgres.ts";
import { admit, audit } from "./pg_limits.ts";
import type {
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

const SCHEMA = "auth";

interface UserRow {
  id: string;
  phone_number: string;
  created_at: Date;
  verified_at: Date | null;
}

const toUser = (r: UserRow): User => ({
  id: r.id,
  phoneNumber: r.phone_number,
  createdAt: r.created_at,
  verifiedAt: r.verified_at,
});

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
      const [user] = await tx<UserRow[]>`
        insert into auth.users (phone_number) values (${phone})
        on conflict (phone_number) do update set phone_number = excluded.phone_number
        returning id, phone_number, created_at, verified_at`;
      if (user!.verified_at !== null) return { kind: "already_verified" };
      const limited = await admit(tx, rules);
      // Throwing rolls back the user row too: a refused signup changes nothing.
      if (limited) throw new Refused(limited);
      // Pipelined: both statements go out together and cost one round trip.
      await Promise.all([
        enqueue(tx, SCHEMA, request),
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
    const [user] = await this.sql<{ verified_at: Date | null }[]>`
      select verified_at from auth.users where phone_number = ${phone}`;
    if (!user || user.verified_at === null) return { kind: "not_verified" };
    const outcome = await this.sql.begin(async (tx): Promise<LoginCodeOutcome> => {
      const limited = await admit(tx, rules);
      if (limited) return limited;
      await audit(tx, "code_requested", "login", who);
      return { kind: "ok" };
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
    session: NewSession,
    who: AuditContext,
  ): Promise<RedeemOutcome> {
    return await this.sql.begin(async (tx): Promise<RedeemOutcome> => {
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
          user_id: string;
        }[]
      >`
        select c.request_id, c.code_mac, c.issued_at, c.expires_at, c.failed_attempts,
               u.id as user_id
          from auth.challenges c join auth.users u on u.phone_number = c.phone_number
         where c.phone_number = ${phone} and c.purpose = ${purpose}
           and c.consumed_at is null and c.expires_at > now()
         for update of c`;
      if (!c) {
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
      await tx`
        update auth.challenges set consumed_at = now()
         where phone_number = ${phone} and purpose = ${purpose}`;
      await tx`delete from auth.number_locks where phone_number = ${phone}`;
      if (purpose === "signup") {
        await tx`
          update auth.users set verified_at = coalesce(verified_at, now())
           where id = ${c.user_id}`;
      }
      await tx`
        insert into auth.sessions (user_id, token_hash, expires_at)
        values (${c.user_id}, ${session.tokenHash},
                now() + make_interval(secs => ${session.ttlSeconds}))`;
      await audit(tx, "code_checked", "ok", who);
      await audit(tx, "session_created", purpose, who);
      return { kind: "ok", userId: c.user_id };
    });
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
        returning phone_number)
      select exists (select from fresh) as fresh, exists (select from stored) as stored`;
    if (!r!.fresh) return "duplicate";
    return r!.stored ? "stored" : "superseded";
  }

  async sessionUser(tokenHash: Uint8Array, idleSeconds: number): Promise<User | null> {
    // The idle timer is refreshed only when it is somewhat stale, so most profile reads
    // stay read-only (no WAL flush at commit).
    const refresh = Math.min(60, idleSeconds / 4);
    const [row] = await this.sql<UserRow[]>`
      with s as (
        select id, user_id, last_seen_at from auth.sessions
         where token_hash = ${tokenHash} and revoked_at is null and expires_at > now()
           and last_seen_at > now() - make_interval(secs => ${idleSeconds})),
      touch as (
        update auth.sessions set last_seen_at = now()
         where id in (select id from s
                       where last_seen_at < now() - make_interval(secs => ${refresh})))
      select u.id, u.phone_number, u.created_at, u.verified_at
        from s join auth.users u on u.id = s.user_id`;
    return row ? toUser(row) : null;
  }

  async revoke(tokenHash: Uint8Array, all: boolean, who: AuditContext): Promise<number> {
    return await this.sql.begin(async (tx) => {
      const rows = all
        ? await tx`
          update auth.sessions set revoked_at = now()
           where revoked_at is null and user_id = (
             select user_id from auth.sessions where token_hash = ${tokenHash}
                and revoked_at is null and expires_at > now())
          returning id`
        : await tx`
          update auth.sessions set revoked_at = now()
           where token_hash = ${tokenHash} and revoked_at is null and expires_at > now()
          returning id`;
      if (rows.length > 0) {
        await audit(tx, "session_revoked", all ? `all:${rows.length}` : "one", who);
      }
      return rows.length;
    });
  }

  async sweep(keepSeconds: number): Promise<void> {
    await this.sql`delete from auth.rate_events
      where at < now() - make_interval(secs => ${keepSeconds})`;
    await this.sql`delete from auth.challenges
      where expires_at < now() - make_interval(secs => ${keepSeconds})`;
    await this.sql`delete from auth.sessions
      where expires_at < now() - make_interval(secs => ${keepSeconds})`;
    await this.sql`delete from auth.inbox
      where handled_at < now() - make_interval(secs => ${keepSeconds})`;
    await this.sql`delete from auth.number_locks
      where locked_until < now() and consecutive_failures = 0`;
  }
}

class Refused extends Error {
  constructor(readonly outcome: Limited) {
    super("refused");
  }
}
