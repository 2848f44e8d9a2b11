// The audit trail insert both services share: each owns an `audit_events` table of the
// same shape in its own schema. Never a code or a token.
import type { Sql, TxSql } from "./postgres.ts";

export interface AuditEvent {
  event: string;
  outcome: string;
  phone: string | null;
  clientAddress: string;
  requestId: string;
}

/** Appends one event to `<schema>.audit_events`, inside the caller's transaction if any. */
export async function insertAudit(sql: Sql | TxSql, schema: string, e: AuditEvent): Promise<void> {
  await sql`
    insert into ${sql(`${schema}.audit_events`)}
      (event, phone_number, client_address, outcome, request_id)
    values (${e.event}, ${e.phone}, ${e.clientAddress || null}, ${e.outcome},
            ${e.requestId || null})`;
}
