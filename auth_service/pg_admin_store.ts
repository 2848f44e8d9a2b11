// PostgreSQL adapter of AdminStore: one transaction per call, the action and its audit
// row together. Revocation and deletion are the account's own (with their events), so an
// operator's action reaches other services exactly as the user's would.
import type { Sql, TxSql } from "../shared/postgres.ts";
import { insertAudit } from "./pg_audit.ts";
import { deleteUserIn, revokeIn } from "./pg_session_store.ts";
import type { AdminStore, AdminUser, AuditContext, AuditEntry, SessionSummary } from "./ports.ts";

const ACTOR = "admin";

export class PgAdminStore implements AdminStore {
  /** `onEnqueued` is told when an action enqueued events, after its commit. */
  constructor(private readonly sql: Sql, private readonly onEnqueued: () => void = () => {}) {}

  private act<T>(
    action: string,
    who: AuditContext,
    fn: (tx: TxSql) => Promise<T>,
    outcome: (t: T) => string,
  ): Promise<T> {
    return this.sql.begin(async (tx) => {
      const result = await fn(tx);
      await insertAudit(tx, `${ACTOR}.${action}`, outcome(result), who);
      return result;
    }) as Promise<T>;
  }

  user(phone: string, who: AuditContext): Promise<AdminUser | null> {
    return this.act("get_user", who, async (tx) => {
      const [r] = await tx<
        {
          id: string;
          phone_number: string;
          created_at: Date;
          verified_at: Date | null;
          locked_until: Date | null;
        }[]
      >`
        select u.id, u.phone_number, u.created_at, u.verified_at,
               (select max(l.locked_until) from auth.wrong_code_locks l
                 where l.phone_number = u.phone_number and l.locked_until > now())
                 as locked_until
          from auth.users u where u.phone_number = ${phone}`;
      return r
        ? {
          id: r.id,
          phoneNumber: r.phone_number,
          createdAt: r.created_at,
          verifiedAt: r.verified_at,
          lockedUntil: r.locked_until,
        }
        : null;
    }, found);
  }

  sessions(phone: string, who: AuditContext): Promise<SessionSummary[] | null> {
    return this.act("list_user_sessions", who, async (tx) => {
      const id = await userId(tx, phone);
      if (id === null) return null;
      const rows = await tx<
        { id: string; created_at: Date; last_seen_at: Date; expires_at: Date }[]
      >`
        select id, created_at, last_seen_at, expires_at from auth.sessions
         where user_id = ${id} and revoked_at is null and expires_at > now()
         order by created_at desc, id limit 1000`;
      return rows.map((r) => ({
        id: r.id,
        createdAt: r.created_at,
        lastSeenAt: r.last_seen_at,
        expiresAt: r.expires_at,
      }));
    }, (s) => s === null ? "not_found" : `ok:${s.length}`);
  }

  async revokeSessions(phone: string, who: AuditContext): Promise<number> {
    const revoked = await this.act("revoke_user_sessions", who, async (tx) => {
      const id = await userId(tx, phone);
      return id === null ? 0 : (await revokeIn(tx, id, "all", "admin", who)).length;
    }, (n) => `ok:${n}`);
    if (revoked > 0) this.onEnqueued();
    return revoked;
  }

  unlock(phone: string, who: AuditContext): Promise<number> {
    return this.act("unlock_phone_number", who, async (tx) => {
      // Every row of the number, whatever address it counts; the count is of the locks
      // that were in force.
      const rows = await tx`
        delete from auth.wrong_code_locks where phone_number = ${phone}
        returning locked_until > now() as locked`;
      return rows.filter((r) => r.locked === true).length;
    }, (n) => `ok:${n}`);
  }

  async deleteUser(phone: string, who: AuditContext): Promise<boolean> {
    const deleted = await this.act("delete_user", who, async (tx) => {
      const id = await userId(tx, phone);
      return id !== null && await deleteUserIn(tx, id, "admin", who);
    }, (d) => d ? "ok" : "not_found");
    if (deleted) this.onEnqueued();
    return deleted;
  }

  auditEvents(
    phone: string,
    beforeId: string | null,
    limit: number,
    who: AuditContext,
  ): Promise<AuditEntry[]> {
    return this.act("list_audit_events", who, async (tx) => {
      const rows = await tx<
        {
          id: string;
          at: Date;
          event: string;
          outcome: string;
          phone_number: string | null;
          client_address: string | null;
          request_id: string | null;
        }[]
      >`
        select e.id::text as id, e.at, e.event, e.outcome, e.phone_number, e.client_address,
               e.request_id
          from auth.audit_events e
         where e.phone_number = ${phone}
           and (${beforeId}::bigint is null or e.id < ${beforeId}::bigint)
         order by e.id desc limit ${limit}`;
      return rows.map((r) => ({
        id: r.id,
        at: r.at,
        event: r.event,
        outcome: r.outcome,
        phoneNumber: r.phone_number,
        clientAddress: r.client_address,
        requestId: r.request_id,
      }));
    }, (e) => `ok:${e.length}`);
  }
}

async function userId(tx: TxSql, phone: string): Promise<string | null> {
  const [u] = await tx<{ id: string }[]>`select id from auth.users where phone_number = ${phone}`;
  return u?.id ?? null;
}

const found = (u: unknown) => u === null ? "not_found" : "ok";
