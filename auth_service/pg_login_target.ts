// ValidatePhoneNumberLogin's step on PostgreSQL: the caller's charge, then (only if
// admitted) the user, a lock for the caller, a spent challenge, and the audit row of a
// lookup that found no user. Concurrent calls share one statement (shared/coalesce.ts):
// under load, a call then costs PostgreSQL and this service each under half of what a
// statement of its own does (README "Performance").
//
// The shared statement charges its calls with one admit_each(): each call's event is
// counted as admit() of it alone would count it, in arrival order, and each key's row
// is written once for all the calls charged to it. admit_each() takes the keys in
// admit()'s order, so two statements never wait on each other's rows in a cycle. A call
// with more than one rule must be counted under all of them or none, which admit_each()
// does not do: it gets a statement of its own.
import { coalesced } from "../shared/coalesce.ts";
import { addressKey } from "../shared/ip.ts";
import { admissionOf, admitCall } from "../shared/limits/engine.ts";
import type { AdmitRow } from "../shared/limits/engine.ts";
import type { Rule } from "../shared/limits/rules.ts";
import { ASYNC_COMMIT } from "../shared/postgres.ts";
import type { Sql } from "../shared/postgres.ts";
import { insertAudit, insertAuditRows } from "./pg_audit.ts";
import { spentChallengeSql } from "./pg_challenge_read.ts";
import { locked, lockedSecondsSql, lockedSql } from "./pg_locks.ts";
import type { AuditContext, LoginTarget } from "./ports.ts";

export interface LoginTargetCall {
  phone: string;
  maxAttempts: number;
  who: AuditContext;
  charge: readonly Rule[];
}

type Row = AdmitRow & { verified: boolean; locked: number | null; spent: string | null };

/** Calls charged at once in one statement, at most this many per statement. */
const LOGIN_TARGET_BATCH = 64;

/** One call's statement of its own, where admit() orders the call's keys. */
async function alone(sql: Sql, c: LoginTargetCall): Promise<Row> {
  const { phone, who } = c;
  const [r] = await sql<Row[]>`
    with a as (
      select admitted, rule, retry_after, at from ${admitCall(sql, "auth", c.charge)} a),
    u as (
      select verified_at is not null as verified from auth.users
       where phone_number = ${phone} and (select admitted from a)),
    miss as (${insertAudit(sql, "code_requested", "not_verified", { ...who, phone })}
       where (select admitted from a) and not coalesce((select verified from u), false))
    select a.admitted, a.rule, a.retry_after, a.at,
           coalesce((select verified from u), false) as verified,
           case when a.admitted then (${lockedSql(sql, phone, who)}) end as locked,
           case when a.admitted
             then (${spentChallengeSql(sql, sql`${phone}`, "login", sql`${c.maxAttempts}`)}) end
             as spent
      from a, ${sql.unsafe(ASYNC_COMMIT)} as async_commit`;
  return r!;
}

/**
 * The step for one call, answered with the calls that arrive beside it. At most
 * `maxInFlight` statements are out at once; fewer than `sharedFrom` calls at once go one
 * statement each.
 */
export function loginTargets(
  sql: Sql,
  o: { maxInFlight: number; sharedFrom: number },
): (call: LoginTargetCall) => Promise<LoginTarget> {
  const run = async (calls: LoginTargetCall[]): Promise<Row[]> => {
    // Each call has at most one rule here; rule_n is its place in the rules' arrays.
    const rules = calls.flatMap((c) => c.charge);
    let n = 0;
    const ruleN = calls.map((c) => c.charge.length === 0 ? null : ++n);
    const rows = await sql<(Row & { i: string })[]>`
      with e as materialized (
        select * from unnest(${calls.map((c) => c.phone)}::text[],
                             ${calls.map((c) => c.who.clientAddress || null)}::text[],
                             ${calls.map((c) => addressKey(c.who.clientAddress))}::text[],
                             ${calls.map((c) => c.who.requestId || null)}::text[],
                             ${calls.map((c) => c.who.clientRequestId || null)}::text[],
                             ${calls.map((c) => c.maxAttempts)}::int[],
                             ${ruleN}::int[])
          with ordinality as e(phone, address, client_key, request_id, client_request_id,
                               max_attempts, rule_n, i)),
      x as materialized (
        select * from auth.admit_each(${rules.map((r) => r.key)}::text[],
                                      ${rules.map((r) => r.limit)}::int[],
                                      ${rules.map((r) => r.windowSeconds)}::float8[])),
      a as materialized (
        select e.i, coalesce(x.admitted, true) as admitted, x.rule, x.retry_after,
               coalesce(x.at, 0) as at
          from e left join x on x.i = e.rule_n),
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
             case when a.admitted
               then (${spentChallengeSql(sql, sql`e.phone`, "login", sql`e.max_attempts`)}) end
               as spent
        from a join e using (i) left join u using (i), ${sql.unsafe(ASYNC_COMMIT)} as async_commit`;
    if (rows.length !== calls.length) throw new Error("a login target without its row");
    const answers: Row[] = new Array(calls.length);
    for (const row of rows) answers[Number(row.i) - 1] = row;
    return answers;
  };
  const batched = coalesced(run, {
    maxInFlight: o.maxInFlight,
    maxBatch: LOGIN_TARGET_BATCH,
    sharedFrom: o.sharedFrom,
    alone: (c) => alone(sql, c),
  });

  return async (call) => {
    const row = call.charge.length > 1 ? await alone(sql, call) : await batched(call);
    const admission = admissionOf(call.charge, row);
    if (!admission.admitted) return { kind: "refused", refusal: admission };
    if (!row.verified) return { kind: "not_verified" };
    if (row.locked !== null) return locked(row.locked);
    return row.spent ? { kind: "ok", spentChallengeId: row.spent } : { kind: "ok" };
  };
}
