// The wrong-code locks as the store's statements read them: a lock binds the number for
// one client address, or (client key "*") for every address at the per-number ceiling.
import { addressKey } from "../shared/ip.ts";
import type { Sql, TxSql } from "../shared/postgres.ts";
import type { AuditContext } from "./ports.ts";

/** The wrong-code row that counts failures from every address for a number. */
export const EVERY_ADDRESS = "*";

/** Seconds left on a lock of the number for this caller or for everyone; null if none. */
export function lockedSql(sql: Sql | TxSql, phone: string, who: AuditContext) {
  return sql`select ceil(extract(epoch from max(locked_until) - now()))::int
      from auth.wrong_code_locks
     where phone_number = ${phone} and locked_until > now()
       and client_key in (${addressKey(who.clientAddress)}, ${EVERY_ADDRESS})`;
}

export const locked = (seconds: number) => ({
  kind: "locked" as const,
  retryAfterSeconds: Math.max(1, seconds),
});
