// The common redemption, a right code that opens a session, in two autocommit statements
// instead of a transaction's four round trips (begin, the locked read, the writes,
// commit). The challenge is read without a lock; the write consumes it only if it is
// still the very challenge read (same request, not consumed, not expired, no try spent
// since, no lock for the caller), and everything a redeemed code writes goes with that
// one update or not at all. Whatever else happens (a wrong code, a lock, a redemption or
// a wrong try that came in between) answers undefined, and the caller's transactional
// path decides and audits it under the row lock, as for every other redemption.
import { outboxInsert } from "../shared/outbox.ts";
import { addressKey } from "../shared/ip.ts";
import type { PurposeName } from "../shared/messages.ts";
import type { Sql } from "../shared/postgres.ts";
import { sessionCreated, userVerified } from "./event_messages.ts";
import { insertAudit } from "./pg_audit.ts";
import { EVERY_ADDRESS, lockedSql } from "./pg_locks.ts";
import type { AuditContext, Challenge, NewSession, RedeemOutcome, RedeemPolicy } from "./ports.ts";

const SCHEMA = "auth";

interface LiveChallenge {
  request_id: string;
  code_mac: Uint8Array;
  issued_at: Date;
  expires_at: Date;
  failed_attempts: number;
  user_id: string;
  verified_at: Date | null;
  locked: number | null;
}

export interface SessionRedemption {
  phone: string;
  purpose: PurposeName;
  policy: RedeemPolicy;
  matches: (c: Challenge) => boolean;
  session: NewSession;
  who: AuditContext;
}

export async function redeemForSession(
  sql: Sql,
  r: SessionRedemption,
): Promise<Extract<RedeemOutcome, { kind: "ok" }> | undefined> {
  const { phone, purpose, who, session } = r;
  const [c] = await sql<LiveChallenge[]>`
    select c.request_id, c.code_mac, c.issued_at, c.expires_at, c.failed_attempts,
           u.id as user_id, u.verified_at, (${lockedSql(sql, phone, who)}) as locked
      from auth.challenges c join auth.users u on u.phone_number = c.phone_number
     where c.phone_number = ${phone} and c.purpose = ${purpose}
       and c.consumed_at is null and c.expires_at > now()`;
  if (c === undefined || c.locked !== null) return undefined;
  // A login code needs a verified user; an exhausted code is no code.
  if (purpose === "login" && c.verified_at === null) return undefined;
  if (c.failed_attempts >= r.policy.maxAttempts) return undefined;
  const right = r.matches({
    requestId: c.request_id,
    phoneNumber: phone,
    purpose,
    codeMac: c.code_mac,
    issuedAt: c.issued_at,
    expiresAt: c.expires_at,
  });
  if (!right) return undefined;

  const userId = c.user_id;
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
         and client_key in (${addressKey(who.clientAddress)}, ${EVERY_ADDRESS})
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
