// ValidatePhoneNumberLogin's step on PostgreSQL: the caller's charge, then (only if
// admitted) the user, a lock for the caller, a spent challenge, and the audit row of a
// lookup that found no user. Concurrent calls share one statement (pg_charged_batch.ts):
// under load, a call then costs PostgreSQL and this service each under half of what a
// statement of its own does (README "Performance").
import type { CoalesceOptions } from "../shared/coalesce.ts";
import { addressKey } from "../shared/ip.ts";
import { admissionOf } from "../shared/limits/engine.ts";
import type { AdmitRow } from "../shared/limits/engine.ts";
import type { Rule } from "../shared/limits/rules.ts";
import { ASYNC_COMMIT } from "../shared/postgres.ts";
import type { Sql } from "../shared/postgres.ts";
import { chargedBatches } from "./pg_charged_batch.ts";
import type { BatchRow } from "./pg_charged_batch.ts";
import { insertAuditRows } from "./pg_audit.ts";
import { locked, lockedSecondsSql } from "./pg_locks.ts";
import type { AuditContext, LoginTarget } from "./ports.ts";

export interface LoginTargetCall {
  phone: string;
  maxAttempts: number;
  who: AuditContext;
  charge: readonly Rule[];
}

type Row = BatchRow & AdmitRow & {
  verified: boolean;
  locked: number | null;
  spent: string | null;
};

/** The step for one call, answered with the calls that arrive beside it. */
export function loginTargets(
  sql: Sql,
  o: CoalesceOptions,
): (call: LoginTargetCall) => Promise<LoginTarget> {
  const target = chargedBatches<LoginTargetCall, Row>(
    sql,
    (sorted, charges) =>
      sql<Row[]>`
      with e as materialized (
        select * from unnest(${sorted.map((c) => c.phone)}::text[],
                             ${sorted.map((c) => c.who.clientAddress || null)}::text[],
                             ${sorted.map((c) => addressKey(c.who.clientAddress))}::text[],
                             ${sorted.map((c) => c.who.requestId || null)}::text[],
                             ${sorted.map((c) => c.who.clientRequestId || null)}::text[],
                             ${sorted.map((c) => c.maxAttempts)}::int[])
          with ordinality as e(phone, address, client_key, request_id, client_request_id,
                               max_attempts, i)),
      ${charges},
      u as (
        select e.i, us.verified_at is not null as verified
          from e join a using (i) join auth.users us on us.phone_number = e.phone
         where a.admitted),
      miss as (${
        insertAuditRows(
          sql,
          sql`select 'code_requested', e.phone, e.address, 'not_verified', e.request_id,
                 e.client_request_id
            from e join a using (i)
           where a.admitted and not exists (select from u where u.i = e.i and u.verified)`,
        )
      })
      select a.i, a.admitted, a.rule, a.retry_after, a.at,
             coalesce(u.verified, false) as verified,
             case when a.admitted
               then (${lockedSecondsSql(sql, sql`e.phone`, sql`e.client_key`)}) end as locked,
             case when a.admitted then (select c.request_id from auth.challenges c
               where c.phone_number = e.phone and c.purpose = 'login'
                 and (c.consumed_at is not null or c.failed_attempts >= e.max_attempts))
             end as spent
        from a join e using (i) left join u using (i), ${sql.unsafe(ASYNC_COMMIT)} as async_commit`,
    o,
  );

  return async (call) => {
    const row = await target(call);
    const admission = admissionOf(call.charge, row);
    if (!admission.admitted) return { kind: "refused", refusal: admission };
    if (!row.verified) return { kind: "not_verified" };
    if (row.locked !== null) return locked(row.locked);
    return row.spent ? { kind: "ok", spentChallengeId: row.spent } : { kind: "ok" };
  };
}
