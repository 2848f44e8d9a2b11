// ValidatePhoneNumberLogin's step on PostgreSQL: the caller's charge, then (only if
// admitted) the user, a lock for the caller, a spent challenge, and the audit row of a
// lookup that found no user. Concurrent calls share one statement (shared/coalesce.ts):
// under load, a call then costs PostgreSQL and this service each under half of what a
// statement of its own does (README "Performance").
//
// Each call's charge is admit() of its own rules, once per call, so counts stay exact.
// The statement holds every counter row it charged until it ends, so its calls are
// charged in one order that every such statement follows (unshared keys first, then by
// key, as admit() orders the keys of one call): two of them never wait on each other's
// rows in a cycle. A call with more than one rule could break that order, so it gets a
// statement of its own, where admit() orders its keys as it does everywhere.
import { coalesced } from "../shared/coalesce.ts";
import { addressKey } from "../shared/ip.ts";
import { admissionOf, admitCall } from "../shared/limits/engine.ts";
import type { AdmitRow } from "../shared/limits/engine.ts";
import { SHARED_REASONS } from "../shared/limits/rules.ts";
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

const SHARED: ReadonlySet<string> = new Set(SHARED_REASONS);

/** The order calls are charged in: a call with no rule locks nothing and goes first. */
function chargeOrder(a: LoginTargetCall, b: LoginTargetCall): number {
  const x = a.charge[0];
  const y = b.charge[0];
  if (x === undefined || y === undefined) {
    return (x === undefined ? 0 : 1) - (y === undefined ? 0 : 1);
  }
  const shared = (SHARED.has(x.reason) ? 1 : 0) - (SHARED.has(y.reason) ? 1 : 0);
  if (shared !== 0) return shared;
  return x.key < y.key ? -1 : x.key > y.key ? 1 : 0;
}

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
    // Sorted into the charge order; the sort is stable, so one key's calls keep theirs.
    const order = calls.map((_, i) => i).sort((a, b) => chargeOrder(calls[a]!, calls[b]!));
    const sorted = order.map((i) => calls[i]!);
    const rules = sorted.flatMap((c, i) => c.charge.map((r) => ({ r, owner: i + 1 })));
    const rows = await sql<(Row & { i: string })[]>`
      with e as materialized (
        select * from unnest(${sorted.map((c) => c.phone)}::text[],
                             ${sorted.map((c) => c.who.clientAddress || null)}::text[],
                             ${sorted.map((c) => addressKey(c.who.clientAddress))}::text[],
                             ${sorted.map((c) => c.who.requestId || null)}::text[],
                             ${sorted.map((c) => c.who.clientRequestId || null)}::text[],
                             ${sorted.map((c) => c.maxAttempts)}::int[])
          with ordinality as e(phone, address, client_key, request_id, client_request_id,
                               max_attempts, i)),
      r as materialized (
        select * from unnest(${rules.map((x) => x.r.key)}::text[],
                             ${rules.map((x) => x.r.limit)}::int[],
                             ${rules.map((x) => x.r.windowSeconds)}::float8[],
                             ${rules.map((x) => x.owner)}::int[])
          with ordinality as r(key, lim, win, owner, n)),
      a as materialized (
        select e.i, x.admitted, x.rule, x.retry_after, x.at
          from (select i from e order by i) e
          cross join lateral auth.admit(
            array(select key from r where owner = e.i order by n),
            array(select lim from r where owner = e.i order by n),
            array(select win from r where owner = e.i order by n)) x),
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
    for (const row of rows) answers[order[Number(row.i) - 1]!] = row;
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
