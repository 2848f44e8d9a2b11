// The PostgreSQL side of sessions and account removal, used by PgAuthStore. A session is
// a row; its tokens (current and replaced, by SHA-256) are rows of session_tokens.
import { Buffer } from "node:buffer";
import { coalesced } from "../shared/coalesce.ts";
import { isUuid } from "../shared/messages.ts";
import { enqueue } from "../shared/outbox.ts";
import { ASYNC_COMMIT } from "../shared/postgres.ts";
import type { Sql, TxSql } from "../shared/postgres.ts";
import { sessionRevoked, userDeleted } from "./event_messages.ts";
import { insertAudit } from "./pg_audit.ts";
import type {
  AuditContext,
  Caller,
  DeletionOriginName,
  NewSession,
  RefreshOutcome,
  RevocationReasonName,
  SessionInfo,
  SessionPolicy,
} from "./ports.ts";

const SCHEMA = "auth";

interface SessionRow {
  id: string;
  user_id: string;
  created_at: Date;
  expires_at: Date;
  last_seen_at: Date;
  client_address: string | null;
  user_agent: string | null;
}

interface CallerRow extends SessionRow {
  phone_number: string;
  user_created_at: Date;
  verified_at: Date | null;
}

const toSession = (r: SessionRow): SessionInfo => ({
  id: r.id,
  userId: r.user_id,
  createdAt: r.created_at,
  expiresAt: r.expires_at,
  lastSeenAt: r.last_seen_at,
  clientAddress: r.client_address ?? "",
  userAgent: r.user_agent ?? "",
});

const toCaller = (r: CallerRow): Caller => ({
  session: toSession(r),
  user: {
    id: r.user_id,
    phoneNumber: r.phone_number,
    createdAt: r.user_created_at,
    verifiedAt: r.verified_at,
  },
});

/**
 * Opens a session with its first token, in one statement, to expire at `expiresAt`
 * (chosen by the caller, so what announces the session can go out in the same round
 * trip).
 */
export async function insertSession(
  tx: TxSql,
  userId: string,
  s: NewSession,
  expiresAt: Date,
): Promise<void> {
  await tx`
    with s as (
      insert into auth.sessions (id, user_id, expires_at, client_address, user_agent)
      values (${s.id}, ${userId}, ${expiresAt}, ${s.clientAddress || null},
              ${s.userAgent || null})
      returning id)
    insert into auth.session_tokens (token_hash, session_id) select ${s.tokenHash}, id from s`;
}

/** Live sessions looked up at once in one statement, at most this many per statement. */
const LOOKUP_BATCH = 64;

/**
 * Looks sessions up by token hash for one policy. Concurrent lookups share a statement
 * (shared/coalesce.ts): under load, a GetProfile then costs PostgreSQL under half what a
 * statement of its own does, and this service about a quarter less (README
 * "Performance"). At most `maxInFlight` statements are out at once, so lookups leave
 * the pool's other connections to the other calls; fewer than `sharedFrom` lookups at
 * once go one statement each.
 */
export function sessionLookup(
  sql: Sql,
  p: SessionPolicy,
  o: { maxInFlight: number; sharedFrom: number },
): (tokenHash: Uint8Array) => Promise<Caller | null> {
  // A plain read, which costs PostgreSQL markedly less than one carrying the idle timer's
  // update in a CTE; the timer is refreshed only when it is somewhat stale (about once a
  // minute per session), by a second statement that does not wait for the WAL flush: a
  // crash can then only make a session look idle earlier than it was.
  const refresh = Math.min(60, p.idleSeconds / 4);
  type Row = CallerRow & { stale: boolean };
  const columns = sql`s.id, s.user_id, s.created_at, s.expires_at, s.last_seen_at,
             s.client_address, s.user_agent, u.phone_number,
             u.created_at as user_created_at, u.verified_at,
             s.last_seen_at < now() - make_interval(secs => ${refresh}) as stale`;
  const live = sql`(k.replaced_at is null
              or k.replaced_at > now() - make_interval(secs => ${p.graceSeconds}))
         and s.revoked_at is null and s.expires_at > now()
         and s.last_seen_at > now() - make_interval(secs => ${p.idleSeconds})`;
  const alone = async (hash: Uint8Array): Promise<Row | null> => {
    const [row] = await sql<Row[]>`
      select ${columns}
        from auth.session_tokens k join auth.sessions s on s.id = k.session_id
        join auth.users u on u.id = s.user_id
       where k.token_hash = ${hash} and ${live}`;
    return row ?? null;
  };
  const lookup = coalesced(async (hashes: Uint8Array[]) => {
    const rows = await sql<(Row & { i: string })[]>`
      select t.i, ${columns}
        from unnest(${hashes.map(hex)}::text[]) with ordinality as t(hash, i)
        join auth.session_tokens k on k.token_hash = decode(t.hash, 'hex')
        join auth.sessions s on s.id = k.session_id
        join auth.users u on u.id = s.user_id
       where ${live}`;
    const found: (Row | null)[] = hashes.map(() => null);
    for (const r of rows) found[Number(r.i) - 1] = r;
    return found;
  }, { maxInFlight: o.maxInFlight, maxBatch: LOOKUP_BATCH, sharedFrom: o.sharedFrom, alone });

  return async (tokenHash) => {
    const row = await lookup(tokenHash);
    if (!row) return null;
    if (row.stale) {
      await sql`
        update auth.sessions set last_seen_at = now() from ${sql.unsafe(ASYNC_COMMIT)} c
         where id = ${row.id} and last_seen_at < now() - make_interval(secs => ${refresh})`;
    }
    return toCaller(row);
  };
}

const hex = (bytes: Uint8Array) =>
  Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length)
    .toString("hex");

export async function refresh(
  sql: Sql,
  tokenHash: Uint8Array,
  next: Uint8Array,
  p: SessionPolicy,
  who: AuditContext,
): Promise<RefreshOutcome> {
  return await sql.begin(async (tx): Promise<RefreshOutcome> => {
    // The session row lock orders concurrent refreshes of one session.
    const [t] = await tx<{ session_id: string; user_id: string; state: string }[]>`
      select s.id as session_id, s.user_id,
             case when t.replaced_at is null then 'current'
                  when t.replaced_at > now() - make_interval(secs => ${p.graceSeconds})
                    then 'grace'
                  else 'reused' end as state
        from auth.session_tokens t join auth.sessions s on s.id = t.session_id
       where t.token_hash = ${tokenHash}
         and s.revoked_at is null and s.expires_at > now()
         and s.last_seen_at > now() - make_interval(secs => ${p.idleSeconds})
         for update of s`;
    if (!t) return { kind: "invalid" };
    if (t.state === "reused") {
      await revokeIn(tx, t.user_id, [t.session_id], "token_reuse", who);
      return { kind: "reused" };
    }
    if (t.state === "current") {
      await tx`update auth.session_tokens set replaced_at = now()
                where token_hash = ${tokenHash}`;
    }
    const [row] = await tx<CallerRow[]>`
      with t as (insert into auth.session_tokens (token_hash, session_id)
                 values (${next}, ${t.session_id})),
      s as (update auth.sessions set last_seen_at = now() where id = ${t.session_id}
            returning *)
      select s.id, s.user_id, s.created_at, s.expires_at, s.last_seen_at, s.client_address,
             s.user_agent, u.phone_number, u.created_at as user_created_at, u.verified_at
        from s join auth.users u on u.id = s.user_id`;
    await insertAudit(tx, "session_refreshed", t.state === "current" ? "rotated" : "grace", who);
    return { kind: "rotated", caller: toCaller(row!) };
  });
}

export async function listSessions(
  sql: Sql,
  userId: string,
  idleSeconds: number,
): Promise<SessionInfo[]> {
  const rows = await sql<SessionRow[]>`
    select id, user_id, created_at, expires_at, last_seen_at, client_address, user_agent
      from auth.sessions
     where user_id = ${userId} and revoked_at is null and expires_at > now()
       and last_seen_at > now() - make_interval(secs => ${idleSeconds})
     order by created_at, id`;
  return rows.map(toSession);
}

/** Revokes within a transaction, with its audit row and event; returns the ids. */
export async function revokeIn(
  tx: TxSql,
  userId: string,
  sessionIds: readonly string[] | "all",
  reason: RevocationReasonName,
  who: AuditContext,
): Promise<string[]> {
  const all = sessionIds === "all";
  // A string that is no UUID names no session (and must not fail the uuid cast).
  const ids = all ? [] : sessionIds.filter(isUuid).map((id) => id.toLowerCase());
  if (!all && ids.length === 0) return [];
  const rows = await tx<{ id: string }[]>`
    update auth.sessions set revoked_at = now()
     where user_id = ${userId} and revoked_at is null and expires_at > now()
       and (${all} or id = any(${ids}::uuid[]))
    returning id`;
  const revoked = rows.map((r) => r.id);
  if (revoked.length > 0) {
    await insertAudit(tx, "session_revoked", all ? `${reason}:all:${revoked.length}` : reason, who);
    await enqueue(tx, SCHEMA, sessionRevoked(revoked, userId, reason, who));
  }
  return revoked;
}

/** Deletes the user within a transaction; false when there was none. */
export async function deleteUserIn(
  tx: TxSql,
  userId: string,
  origin: DeletionOriginName,
  who: AuditContext,
): Promise<boolean> {
  // Sessions and their tokens go with the user (on delete cascade).
  const [u] = await tx<{ phone_number: string }[]>`
    delete from auth.users where id = ${userId} returning phone_number`;
  if (!u) return false;
  // The inbox forgets their messages too: otp-service resends a challenge that is still
  // live on its side under the same message id, and a new signup of the number must
  // be able to store it again.
  await tx`
    with gone as (delete from auth.challenges where phone_number = ${u.phone_number}
                  returning request_id)
    delete from auth.inbox where message_id in (select request_id from gone)`;
  await tx`delete from auth.wrong_code_locks where phone_number = ${u.phone_number}`;
  await insertAudit(tx, "user_deleted", origin, { ...who, phone: u.phone_number });
  await enqueue(tx, SCHEMA, userDeleted(userId, origin, who));
  return true;
}
