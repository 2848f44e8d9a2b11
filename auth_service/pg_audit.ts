// The audit trail's insert, shared by the store, the session statements and the admin
// store so every row carries the caller's request ids the same way.
import type { Sql, TxSql } from "../shared/postgres.ts";
import type { AuditContext } from "./ports.ts";

/**
 * Appends one audit row, inside the caller's transaction if any. An `insert ... select`,
 * so a statement that writes it only on some condition can add its own `where`.
 */
export function insertAudit(sql: Sql | TxSql, event: string, outcome: string, a: AuditContext) {
  return insertAuditRows(
    sql,
    sql`select ${event}, ${a.phone}, ${a.clientAddress || null}, ${outcome},
           ${a.requestId || null}, ${a.clientRequestId || null}`,
  );
}

/**
 * Appends the rows of `rows`, a select of (event, phone number, client address, outcome,
 * request id, client request id), in that order.
 */
export function insertAuditRows(sql: Sql | TxSql, rows: ReturnType<Sql>) {
  return sql`
    insert into auth.audit_events
      (event, phone_number, client_address, outcome, request_id, client_request_id)
    ${rows}`;
}
