// PostgreSQL adapter of AuthStore. Limits are the limits engine's (charged by the use
// cases before they call here, or, for a login lookup, by its own statement through the
// engine's admit() call); nothing here holds a lock past its own transaction, and the
// only rows a redemption locks are the number's own.
import { enqueue, outboxInsert } from "../shared/outbox.ts";
import type { OutgoingMessage } from "../shared/bus.ts";
import { addressKey } from "../shared/ip.ts";
import type { PurposeName } from "../shared/messages.ts";
import { LimitsEngine } from "../shared/limits/engine.ts";
import type { Sql, TxSql } from "../shared/postgres.ts";
import { phoneChanged, sessionCreated, userSignedUp, userVerified } from "./event_messages.ts";
import { insertAudit } from "./pg_audit.ts";
import { callerLockKeys, EVERY_ADDRESS, locked, lockedSql } from "./pg_locks.ts";
import { challengeOf, readChallenge, refusalOf, spentChallengeSql } from "./pg_challenge_read.ts";
import { loginTargets } from "./pg_login_target.ts";
import type { LoginTargetCall } from "./pg_login_target.ts";
import { redeemForSession } from "./pg_session_redemption.ts";
import {
  deleteUserIn,
  insertSession,
  listSessions,
  refresh,
  revokeIn,
  sessionLookup,
} from "./pg_session_store.ts";
import type {
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
} from "./ports.ts";

const SCHEMA = "auth";
/**
 * How concurrent calls share statements. Fewer than three calls at once go one
 * statement each, since with one caller a shared statement cost PostgreSQL about three
 * lone ones. Session lookups are plain reads: two may be out at once (the pool is
 * small). Login targets write the counter rows of the addresses they charge and hold
 * them to the end: a second statement out would mostly wait on the first, and one at a
 * time measured faster (README "Performance").
 */
const LOOKUP_SHARING = { maxInFlight: 2, sharedFrom: 3 };
const LOGIN_TARGET_SHARING = { maxInFlight: 1, sharedFrom: 3 };

export class PgAuthStore implements AuthStore {
  /** For a charge that is a statement of its own, committed as every admission is. */
  private readonly limits: LimitsEngine;
  /** Session lookups by policy (a service has one), each coalescing its calls. */
  private readonly lookups = new Map<string, (hash: Uint8Array) => Promise<Caller | null>>();
  /** ValidatePhoneNumberLogin's charge and lookup, coalescing its calls. */
  private readonly loginTargets: (call: LoginTargetCall) => Promise<LoginTarget>;

  constructor(private readonly sql: Sql, private readonly onEnqueued: () => void = () => {}) {
    this.limits = new LimitsEngine(sql, SCHEMA, { asyncCommit: true });
    this.loginTargets = loginTargets(sql, LOGIN_TARGET_SHARING);
  }

  async signup(phone: string, request: OutgoingMessage, who: AuditContext): Promise<SignupOutcome> {
    // One statement, so one round trip and one commit. A number locked for this caller
    // and not verified writes nothing; otherwise the user row is upserted (the no-op
    // update takes the row lock, so concurrent signups of one number serialise) and,
    // unless it is verified, the code request, the signed-up event of a new user and
    // the audit row go with it. The id is ours only if the row is new.
    const id = crypto.randomUUID();
    const [r] = await this.sql<
      { locked: number | null; verified: boolean | null; inserted: boolean | null }[]
    >`
      with l as (select (${lockedSql(this.sql, phone, who)}) as locked),
      u as (
        insert into auth.users (id, phone_number)
        select ${id}, ${phone}
         where (select locked from l) is null
            or exists (select from auth.users
                        where phone_number = ${phone} and verified_at is not null)
        on conflict (phone_number) do update set phone_number = excluded.phone_number
        returning verified_at is not null as verified, (xmax = 0) as inserted),
      ok as (select inserted from u where not verified),
      req as (${outboxInsert(this.sql, SCHEMA, request)} where exists (select from ok)),
      ev as (${outboxInsert(this.sql, SCHEMA, userSignedUp(id, phone, who))}
              where (select inserted from ok)),
      queued as (${insertAudit(this.sql, "code_requested", "signup", who)}
                  where exists (select from ok)),
      known as (${insertAudit(this.sql, "code_requested", "already_verified", who)}
                 where (select verified from u))
      select (select locked from l) as locked, (select verified from u) as verified,
             (select inserted from u) as inserted`;
    if (r!.verified) return { kind: "already_verified" };
    if (r!.verified === null) {
      const outcome = locked(r!.locked!);
      await this.auditRefusal("code_requested", "locked", who, outcome.retryAfterSeconds);
      return outcome;
    }
    this.onEnqueued();
    return { kind: "queued" };
  }

  async admitPhoneChangeCode(
    phone: string,
    maxAttempts: number,
    who: AuditContext,
  ): Promise<CodeAdmitted | Locked> {
    const sql = this.sql;
    const spent = spentChallengeSql(sql, sql`${phone}`, "phone_change", sql`${maxAttempts}`);
    const [r] = await sql<{ locked: number | null; spent: string | null }[]>`
      select (${lockedSql(sql, phone, who)}) as locked, (${spent}) as spent`;
    if (r!.locked !== null) return locked(r!.locked);
    return admitted(r!.spent ?? undefined);
  }

  async isVerified(phone: string): Promise<boolean> {
    const [u] = await this.sql<{ verified_at: Date | null }[]>`
      select verified_at from auth.users where phone_number = ${phone}`;
    return u !== undefined && u.verified_at !== null;
  }

  loginTarget(
    phone: string,
    maxAttempts: number,
    who: AuditContext,
    o: ChargeOptions = {},
  ): Promise<LoginTarget> {
    // One statement, shared with the calls beside it (pg_login_target.ts). It commits
    // without waiting for the WAL flush, as every admission does: a database crash may
    // forget the last fraction of a second of charges and such rows, and the callers of
    // an unknown number, one after another, do not wait on a disk flush each (about 1.4
    // times the rate, measured).
    return this.loginTargets({ phone, maxAttempts, who, charge: o.charge ?? [] });
  }

  async audit(event: string, outcome: string, who: AuditContext): Promise<void> {
    await insertAudit(this.sql, event, outcome, who);
  }

  async auditRefusal(
    event: string,
    outcome: string,
    who: AuditContext,
    windowSeconds: number,
  ): Promise<void> {
    const w = Math.max(1, Math.round(windowSeconds));
    await this.sql`
      insert into auth.audit_events
        (event, phone_number, client_address, outcome, request_id, client_request_id,
         window_start)
      values (${event}, ${who.phone}, ${who.clientAddress || null}, ${outcome},
              ${who.requestId || null}, ${who.clientRequestId || null},
              to_timestamp(floor(extract(epoch from now()) / ${w}) * ${w}))
      on conflict (event, outcome, coalesce(phone_number, ''), coalesce(client_address, ''),
                   window_start) where window_start is not null
      do update set count = auth.audit_events.count + 1, at = now(),
        request_id = excluded.request_id, client_request_id = excluded.client_request_id`;
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
    const charge = o.charge ?? [];
    if (effect.kind === "session") {
      const decided = await redeemForSession(this.sql, {
        phone,
        purpose,
        policy,
        matches,
        session: effect.session,
        who,
        charge,
      });
      if (decided) {
        if (decided.kind === "ok") this.onEnqueued();
        return decided;
      }
    } else if (charge.length > 0) {
      // Phone changes and deletions are rare: their charge is a statement of its own.
      const admission = await this.limits.admit(charge);
      if (!admission.admitted) return { kind: "refused", refusal: admission };
    }
    const outcome = await this.sql.begin(async (tx): Promise<RedeemOutcome> => {
      const c = await readChallenge(tx, phone, purpose, who, { lock: true });
      const refused = await refusalOf(tx, c, { purpose, effect, policy, who });
      if (refused) return refused;
      const owner = c.user_id;
      const ok = matches(challengeOf(c, phone, purpose));
      if (!ok) return await this.wrongCode(tx, phone, purpose, policy, c.failed_attempts, who);
      if (effect.kind === "phone_change" && c.verified_at !== null && owner !== effect.userId) {
        await insertAudit(tx, "code_checked", "taken", who);
        return { kind: "taken" };
      }
      // The caller's own failures and the number's count from every address start
      // again; other addresses' locks stay. Sent with what the effect writes next.
      const consumed = [
        tx`update auth.challenges set consumed_at = now()
            where phone_number = ${phone} and purpose = ${purpose}`,
        tx`delete from auth.wrong_code_locks
            where phone_number = ${phone}
              and ${callerLockKeys(tx, who)}`,
        insertAudit(tx, "code_checked", "ok", who),
      ];
      switch (effect.kind) {
        case "session":
          return await this.openSession(tx, owner!, c.verified_at, purpose, effect, phone, who, {
            consumed,
          });
        case "phone_change":
          await Promise.all(consumed);
          return await this.changePhone(tx, effect.userId, owner, phone, who);
        case "delete_account":
          await Promise.all(consumed);
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
    o: { consumed: readonly PromiseLike<unknown>[] },
  ): Promise<RedeemOutcome> {
    const verifies = purpose === "signup" && verifiedAt === null;
    const expiresAt = new Date(Date.now() + effect.session.ttlSeconds * 1000);
    const origin = purpose === "signup" ? "verify" : "login";
    // Everything a redeemed code writes, in one round trip.
    await Promise.all([
      ...o.consumed,
      insertSession(tx, userId, effect.session, expiresAt),
      verifies ? tx`update auth.users set verified_at = now() where id = ${userId}` : undefined,
      verifies ? enqueue(tx, SCHEMA, userVerified(userId, phone, who)) : undefined,
      insertAudit(tx, "session_created", purpose, who),
      enqueue(
        tx,
        SCHEMA,
        sessionCreated({ sessionId: effect.session.id, userId, expiresAt, origin }, who),
      ),
    ]);
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
    await insertAudit(tx, "phone_changed", "ok", { ...who, phone: u.old });
    await insertAudit(tx, "phone_changed", "ok", who);
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
    // A count whose last failure is older than the failure window starts again.
    const [, rows] = await Promise.all([
      tx`update auth.challenges set failed_attempts = failed_attempts + 1
          where phone_number = ${phone} and purpose = ${purpose}`,
      tx<{ client_key: string; consecutive_failures: number }[]>`
        insert into auth.wrong_code_locks as l (phone_number, client_key, consecutive_failures)
        select ${phone}, k, 1 from unnest(${[
        addressKey(who.clientAddress),
        EVERY_ADDRESS,
      ]}::text[]) k
        on conflict (phone_number, client_key) do update set
          consecutive_failures = case
            when l.last_failure_at < now() - make_interval(secs => ${policy.failureWindowSeconds})
            then 1
            else l.consecutive_failures + 1 end,
          last_failure_at = now()
        returning client_key, consecutive_failures`,
    ]);
    const limitOf = (k: string) =>
      k === EVERY_ADDRESS ? policy.numberLockAfterFailures : policy.lockAfterFailures;
    const tripped = rows.filter((r) => r.consecutive_failures >= limitOf(r.client_key))
      .map((r) => r.client_key);
    if (tripped.length > 0) {
      await Promise.all([
        tx`update auth.wrong_code_locks set consecutive_failures = 0,
             locked_until = now() + make_interval(secs => ${policy.lockSeconds})
           where phone_number = ${phone} and client_key = any(${tripped}::text[])`,
        insertAudit(
          tx,
          "number_locked",
          `${policy.lockSeconds}s${tripped.includes(EVERY_ADDRESS) ? ":all" : ""}`,
          who,
        ),
      ]);
    }
    await insertAudit(tx, "code_checked", "wrong", who);
    return {
      kind: "wrong",
      remaining: Math.max(0, policy.maxAttempts - failedBefore - 1),
      locked: tripped.length > 0,
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
    const key = `${policy.idleSeconds}/${policy.graceSeconds}`;
    let lookup = this.lookups.get(key);
    if (lookup === undefined) {
      lookup = sessionLookup(this.sql, policy, LOOKUP_SHARING);
      this.lookups.set(key, lookup);
    }
    return lookup(tokenHash);
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

  async sweep(p: SweepPolicy): Promise<void> {
    const keep = p.keepSeconds;
    await this.sql`delete from auth.challenges
      where expires_at < now() - make_interval(secs => ${keep})`;
    await this.sql`delete from auth.sessions
      where expires_at < now() - make_interval(secs => ${keep})`;
    await this.sql`delete from auth.inbox
      where handled_at < now() - make_interval(secs => ${keep})`;
    await this.sql`delete from auth.wrong_code_locks
      where coalesce(locked_until, '-infinity') < now()
        and last_failure_at < now() - make_interval(secs => ${keep})`;
    await this.sql`delete from auth.audit_events
      where at < now() - make_interval(secs => ${p.auditRetentionSeconds})`;
    await this.sql`delete from auth.users u
      where u.verified_at is null
        and u.created_at < now() - make_interval(secs => ${p.unverifiedUserSeconds})
        and not exists (select from auth.challenges c
                         where c.phone_number = u.phone_number
                           and c.consumed_at is null and c.expires_at > now())`;
  }
}

function admitted(spentChallengeId: string | undefined): CodeAdmitted {
  return spentChallengeId ? { kind: "ok", spentChallengeId } : { kind: "ok" };
}
