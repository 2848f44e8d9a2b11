// The common redemption, a right code that opens a session, in two autocommit statements
// instead of a transaction's four round trips (begin, the locked read, the writes,
// commit). The challenge is read without a lock, in the same statement as the caller's
// charge when there is one (refused, nothing is read); a refusal that read decides (a
// lock, no usable code, a code out of tries) is answered and audited from it, as the
// locked read would; otherwise the write consumes the challenge only if it is still the
// very challenge read (same request, not consumed, not expired, no try spent since, no
// lock for the caller), and everything a redeemed code writes goes with that one update
// or not at all. A wrong code, or a write that found its challenge changed, answers
// undefined: the caller's transactional path then decides and audits it under the row
// lock, where wrong tries are counted.
import { outboxInsert } from "../shared/outbox.ts";
import type { PurposeName } from "../shared/messages.ts";
import type { Sql } from "../shared/postgres.ts";
import { sessionCreated, userVerified } from "./event_messages.ts";
import { insertAudit } from "./pg_audit.ts";
import { callerLockKeys, lockedSql } from "./pg_locks.ts";
import {
  challengeOf,
  readChallenge,
  readChargedChallenge,
  refusalOf,
} from "./pg_challenge_read.ts";
import type { Rule } from "../shared/limits/rules.ts";
import type {
  AuditContext,
  Challenge,
  ChargeRefused,
  NewSession,
  RedeemOutcome,
  RedeemPolicy,
} from "./ports.ts";

const SCHEMA = "auth";

export interface SessionRedemption {
  phone: string;
  purpose: PurposeName;
  policy: RedeemPolicy;
  matches: (c: Challenge) => boolean;
  session: NewSession;
  who: AuditContext;
  /** Charged in the first read's statement; refused, nothing else happens. */
  charge?: readonly Rule[];
}

export async function redeemForSession(
  sql: Sql,
  r: SessionRedemption,
): Promise<RedeemOutcome | ChargeRefused | undefined> {
  const { phone, purpose, who, session } = r;
  let c;
  if (r.charge?.length) {
    const charged = await readChargedChallenge(sql, phone, purpose, who, r.charge);
    if (charged.refusal) return { kind: "refused", refusal: charged.refusal };
    c = charged.read;
  } else {
    c = await readChallenge(sql, phone, purpose, who, { lock: false });
  }
  const effect = { kind: "session", session } as const;
  const refused = await refusalOf(sql, c, { purpose, effect, policy: r.policy, who });
  if (refused) return refused;
  const right = r.matches(challengeOf(c, phone, purpose));
  if (!right) return undefined;

  const userId = c.user_id!;
  const verifies = purpose === "signup" && c.verified_at === null;
  const expiresAt = new Date(Date.now() + session.ttlSeconds * 1000);
  const origin = purpose === "signup" ? "verify" : "login";
  // Each event and audit row names the one before it, so they are written (and numbered)
  // in the order the transactional path writes them.
  const [w] = await sql<{ consumed: boolean }[]>`
    with consumed as (
      update auth.challenges set consumed_at = now()
       where phone_number = ${phone} and purpose = ${purpose}
         and request_id = ${c.request_id} and consumed_at is null and expires_at > now()
         and failed_attempts = ${c.failed_attempts}
         and (${lockedSql(sql, phone, who)}) is null
      returning request_id),
    cleared as (
      delete from auth.wrong_code_locks
       where phone_number = ${phone}
         and ${callerLockKeys(sql, who)}
         and exists (select from consumed)),
    checked as (${insertAudit(sql, "code_checked", "ok", who)}
                 where exists (select from consumed) returning id),
    s as (
      insert into auth.sessions (id, user_id, expires_at, client_address, user_agent)
      select ${session.id}, ${userId}, ${expiresAt}, ${session.clientAddress || null},
             ${session.userAgent || null}
        from consumed
      returning id),
    t as (insert into auth.session_tokens (token_hash, session_id)
          select ${session.tokenHash}, id from s),
    verified as (update auth.users set verified_at = now()
                  where id = ${userId} and ${verifies} and exists (select from consumed)),
    ev_verified as (${outboxInsert(sql, SCHEMA, userVerified(userId, phone, who))}
                     where ${verifies} and exists (select from consumed) returning id),
    created as (${insertAudit(sql, "session_created", purpose, who)}
                 where exists (select from checked) returning id),
    ev_created as (${
    outboxInsert(
      sql,
      SCHEMA,
      sessionCreated({ sessionId: session.id, userId, expiresAt, origin }, who),
    )
  }
                    where exists (select from s)
                      and (select count(*) from ev_verified) >= 0
                      and (select count(*) from created) >= 0)
    select exists (select from consumed) as consumed`;
  if (!w!.consumed) return undefined;
  return { kind: "ok", userId, sessionExpiresAt: expiresAt };
}
