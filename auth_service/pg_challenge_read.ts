// What every redemption reads first, in one round trip: the caller's lock on the number
// and the number's live challenge of the purpose with its user (on the session path
// after the caller's charge, in the same statement), and the refusals that read alone
// decides (a lock, no usable code, a code out of tries).
import { admissionOf, admitCall } from "../shared/limits/engine.ts";
import type { AdmitRow, Refusal } from "../shared/limits/engine.ts";
import type { Rule } from "../shared/limits/rules.ts";
import type { PurposeName } from "../shared/messages.ts";
import { ASYNC_COMMIT } from "../shared/postgres.ts";
import type { Sql, TxSql } from "../shared/postgres.ts";
import { insertAudit } from "./pg_audit.ts";
import { locked, lockedSql } from "./pg_locks.ts";
import type {
  AuditContext,
  Challenge,
  RedeemEffect,
  RedeemOutcome,
  RedeemPolicy,
} from "./ports.ts";

export interface ChallengeRead {
  locked: number | null;
  request_id: string | null;
  code_mac: Uint8Array;
  issued_at: Date;
  expires_at: Date;
  failed_attempts: number;
  user_id: string | null;
  verified_at: Date | null;
}

/** The lock and the challenge; with `lock`, the challenge row stays locked for `sql`'s transaction. */
export async function readChallenge(
  sql: Sql | TxSql,
  phone: string,
  purpose: PurposeName,
  who: AuditContext,
  o: { lock: boolean },
): Promise<ChallengeRead> {
  const [c] = await sql<ChallengeRead[]>`
    select l.locked, c.request_id, c.code_mac, c.issued_at, c.expires_at,
           c.failed_attempts, c.user_id, c.verified_at
      from (select (${lockedSql(sql, phone, who)}) as locked) l
      left join lateral (${liveChallenge(sql, phone, purpose, false)}
         ${o.lock ? sql`for update of c` : sql``}) c on true`;
  return c!;
}

/**
 * The caller's charge under `charge` and, only if it was admitted, what readChallenge
 * reads (without a lock), in one statement. It commits without waiting for the WAL
 * flush, as every admission does (a crash may forget the last moment's charges).
 */
export async function readChargedChallenge(
  sql: Sql,
  phone: string,
  purpose: PurposeName,
  who: AuditContext,
  charge: readonly Rule[],
): Promise<{ refusal: Refusal } | { refusal?: undefined; read: ChallengeRead }> {
  const [r] = await sql<(ChallengeRead & AdmitRow)[]>`
    with a as (select admitted, rule, retry_after, at from ${admitCall(sql, "auth", charge)} a)
    select a.admitted, a.rule, a.retry_after, a.at, l.locked, c.request_id, c.code_mac,
           c.issued_at, c.expires_at, c.failed_attempts, c.user_id, c.verified_at
      from a cross join ${sql.unsafe(ASYNC_COMMIT)} as async_commit
      left join lateral (select (${lockedSql(sql, phone, who)}) as locked
                          where a.admitted) l on true
      left join lateral (${liveChallenge(sql, phone, purpose, true)}) c on true`;
  const admission = admissionOf(charge, r!);
  return admission.admitted ? { read: r! } : { refusal: admission };
}

/**
 * The request id of the number's spent challenge of the purpose (consumed, or out of
 * tries), as a scalar subquery over SQL expressions; null if there is none.
 */
export function spentChallengeSql(
  sql: Sql | TxSql,
  phone: Fragment,
  purpose: PurposeName,
  maxAttempts: Fragment,
) {
  return sql`select c.request_id from auth.challenges c
     where c.phone_number = ${phone} and c.purpose = ${purpose}
       and (c.consumed_at is not null or c.failed_attempts >= ${maxAttempts})`;
}

type Fragment = ReturnType<Sql>;

/** The number's live challenge of the purpose with its user; if `charged`, only once admitted. */
function liveChallenge(sql: Sql | TxSql, phone: string, purpose: PurposeName, charged: boolean) {
  return sql`select c.request_id, c.code_mac, c.issued_at, c.expires_at, c.failed_attempts,
           u.id as user_id, u.verified_at
      from auth.challenges c left join auth.users u on u.phone_number = c.phone_number
     where c.phone_number = ${phone} and c.purpose = ${purpose}
       and c.consumed_at is null and c.expires_at > now()
       ${charged ? sql`and a.admitted` : sql``}`;
}

/** The challenge `c` read, as the code matcher checks it; only for a usable one (refusalOf). */
export function challengeOf(c: ChallengeRead, phone: string, purpose: PurposeName): Challenge {
  return {
    requestId: c.request_id!,
    phoneNumber: phone,
    purpose,
    codeMac: c.code_mac,
    issuedAt: c.issued_at,
    expiresAt: c.expires_at,
  };
}

/**
 * The refusal `c` decides before any code is checked, audited through `sql`; undefined
 * when the code is to be checked.
 */
export async function refusalOf(
  sql: Sql | TxSql,
  c: ChallengeRead,
  r: { purpose: PurposeName; effect: RedeemEffect; policy: RedeemPolicy; who: AuditContext },
): Promise<RedeemOutcome | undefined> {
  const { purpose, effect, who } = r;
  if (c.locked !== null) {
    await insertAudit(sql, "code_checked", "locked", who);
    return locked(c.locked);
  }
  // A code for a number with no user (or not the caller's) is no code at all, except
  // a phone-change code, whose number is by design not the caller's yet. A login code
  // needs a verified user.
  const owner = c.user_id;
  const usable = c.request_id !== null && (effect.kind === "phone_change" ||
    (owner !== null && (purpose !== "login" || c.verified_at !== null) &&
      (effect.kind === "session" || owner === effect.userId)));
  if (!usable) {
    await insertAudit(sql, "code_checked", "no_challenge", who);
    return { kind: "no_challenge" };
  }
  if (c.failed_attempts >= r.policy.maxAttempts) {
    await insertAudit(sql, "code_checked", "exhausted", who);
    return { kind: "exhausted" };
  }
  return undefined;
}
