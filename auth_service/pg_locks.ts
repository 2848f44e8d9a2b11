// The wrong-code locks as the store's statements read them: a lock binds the number for
// one client address, or (client key "*") for every address at the per-number ceiling.
import { addressKey } from "../shared/ip.ts";
import type { Sql, TxSql } from "../shared/postgres.ts";
import type { AuditContext } from "./ports.ts";

/** The wrong-code row that counts failures from every address for a number. */
export const EVERY_ADDRESS = "*";

/** The condition on a wrong_code_locks row that binds this caller: its address's or everyone's. */
export function callerLockKeys(sql: Sql | TxSql, who: AuditContext) {
  return sql`client_key in (${addressKey(who.clientAddress)}, ${EVERY_ADDRESS})`;
}

/** Seconds left on a lock of the number for this caller or for everyone; null if none. */
export function lockedSql(sql: Sql | TxSql, phone: string, who: AuditContext) {
  return lockedSecondsSql(sql, sql`${phone}`, sql`${addressKey(who.clientAddress)}`);
}

/**
 * lockedSql over SQL expressions: the number, and the caller's client key (as
 * `addressKey` spells it), e.g. columns of a batch of callers.
 */
export function lockedSecondsSql(sql: Sql | TxSql, phone: SqlFragment, clientKey: SqlFragment) {
  return sql`select ceil(extract(epoch from max(locked_until) - now()))::int
      from auth.wrong_code_locks
     where phone_number = ${phone} and locked_until > now()
       and client_key in (${clientKey}, ${EVERY_ADDRESS})`;
}

type SqlFragment = ReturnType<Sql>;

export const locked = (seconds: number) => ({
  kind: "locked" as const,
  retryAfterSeconds: Math.max(1, seconds),
});
