// AdminStore over the in-memory store's state, with the PostgreSQL adapter's semantics:
// each call is one serialised step that does the action and appends its audit event.
// Revocation and deletion are the memory store's own, with their events.
import type { AuditRow, Session, WrongCodeLock } from "./memory_store.ts";
import type { AdminStore, AuditContext, AuditEntry, SessionSummary, User } from "./ports.ts";

export interface MemoryState {
  users: Map<string, User>;
  sessions: Map<string, Session>;
  /** By number, then client key. */
  locks: Map<string, Map<string, WrongCodeLock>>;
  auditTrail: AuditRow[];
  serially<T>(fn: (now: number) => T | Promise<T>): Promise<T>;
  /** Revokes every live session of the user for an operator; returns how many. */
  revokeAll(now: number, userId: string, who: AuditContext): number;
  /** Deletes the user for an operator; false when there was none. */
  removeUser(now: number, userId: string, who: AuditContext): boolean;
}

export function memoryAdminStore(m: MemoryState): AdminStore {
  const act = <T>(
    action: string,
    who: AuditContext,
    fn: (now: number) => T,
    outcome: (t: T) => string,
  ) =>
    m.serially((now) => {
      const result = fn(now);
      m.auditTrail.push({
        ...who,
        at: new Date(now),
        event: `admin.${action}`,
        outcome: outcome(result),
        count: 1,
      });
      return result;
    });
  const liveSessions = (userId: string, now: number) =>
    [...m.sessions.values()].filter((s) =>
      s.userId === userId && s.revokedAt === null && s.expiresAt > now
    );
  return {
    user: (phone, who) =>
      act("get_user", who, (now) => {
        const u = m.users.get(phone);
        if (!u) return null;
        const until = lockedUntil(m, phone, now);
        return { ...u, lockedUntil: until !== null && until > now ? new Date(until) : null };
      }, (u) => u === null ? "not_found" : "ok"),

    sessions: (phone, who) =>
      act("list_user_sessions", who, (now): SessionSummary[] | null => {
        const u = m.users.get(phone);
        if (!u) return null;
        return liveSessions(u.id, now)
          .sort((a, b) => b.createdAt - a.createdAt || a.id.localeCompare(b.id))
          .map((s) => ({
            id: s.id,
            createdAt: new Date(s.createdAt),
            lastSeenAt: new Date(s.lastSeenAt),
            expiresAt: new Date(s.expiresAt),
          }));
      }, (s) => s === null ? "not_found" : `ok:${s.length}`),

    revokeSessions: (phone, who) =>
      act("revoke_user_sessions", who, (now) => {
        const u = m.users.get(phone);
        return u ? m.revokeAll(now, u.id, who) : 0;
      }, (n) => `ok:${n}`),

    unlock: (phone, who) =>
      act("unlock_phone_number", who, (now) => {
        // Every row of the number goes; the count is of the locks that were in force.
        const lifted = [...(m.locks.get(phone)?.values() ?? [])]
          .filter((l) => (l.lockedUntil ?? 0) > now).length;
        m.locks.delete(phone);
        return lifted;
      }, (n) => `ok:${n}`),

    deleteUser: (phone, who) =>
      act("delete_user", who, (now) => {
        const u = m.users.get(phone);
        return u !== undefined && m.removeUser(now, u.id, who);
      }, (d) => d ? "ok" : "not_found"),

    auditEvents: (phone, beforeId, limit, who) =>
      act("list_audit_events", who, (): AuditEntry[] => {
        const before = beforeId === null ? Infinity : Number(beforeId);
        const out: AuditEntry[] = [];
        // An event's id is its position in the trail, from 1, as a bigserial would be.
        for (let i = m.auditTrail.length - 1; i >= 0 && out.length < limit; i--) {
          const e = m.auditTrail[i]!;
          if (i + 1 >= before || e.phone !== phone) continue;
          out.push({
            id: String(i + 1),
            at: e.at,
            event: e.event,
            outcome: e.outcome,
            phoneNumber: e.phone,
            clientAddress: e.clientAddress || null,
            requestId: e.requestId || null,
          });
        }
        return out;
      }, (e) => `ok:${e.length}`),
  };
}

function lockedUntil(m: MemoryState, phone: string, now: number): number | null {
  let until: number | null = null;
  for (const l of m.locks.get(phone)?.values() ?? []) {
    if (
      l.lockedUntil !== null && l.lockedUntil > now && (until === null || l.lockedUntil > until)
    ) {
      until = l.lockedUntil;
    }
  }
  return until;
}
