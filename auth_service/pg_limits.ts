// Sliding-window limits in PostgreSQL, so they hold across replicas. Each key is
// serialised with a transaction-scoped advisory lock taken in a fixed (sorted) order,
// so two replicas cannot both admit the last allowed event, and cannot deadlock.
import { insertAudit } from "../shared/audit.ts";
import type { TxSql } from "../shared/postgres.ts";
import type { AuditContext, Limited, RateRule } from "./ports.ts";

/** Returns the rule that trips (with when to retry), or records one event per rule. */
export async function admit(tx: TxSql, rules: RateRule[]): Promise<Limited | null> {
  if (rules.length === 0) return null;
  const keys = [...new Set(rules.map((r) => r.key))].sort();
  // Sent together (one round trip): the count runs once the locks are held.
  const [, rows] = await Promise.all([
    tx`select pg_advisory_xact_lock(hashtext(k)) from unnest(${keys}::text[]) as k order by k`,
    tx<{ i: number; retry: number | null }[]>`
    select r.i, extract(epoch from (
      (select e.at from auth.rate_events e
        where e.key = r.key and e.at > now() - make_interval(secs => r.win)
        order by e.at desc offset r.lim - 1 limit 1)
      + make_interval(secs => r.win) - now()))::float8 as retry
    from unnest(${rules.map((r) => r.key)}::text[], ${rules.map((r) => r.limit)}::int[],
                ${rules.map((r) => r.windowSeconds)}::float8[])
         with ordinality as r(key, lim, win, i)`,
  ]);
  let worst: Limited | null = null;
  for (const row of rows) {
    if (row.retry === null) continue;
    const rule = rules[Number(row.i) - 1]!;
    const retry = Math.max(1, Math.ceil(row.retry));
    if (!worst || retry > worst.retryAfterSeconds) {
      worst = { kind: "limited", retryAfterSeconds: retry, reason: rule.reason };
    }
  }
  if (worst) return worst;
  await tx`insert into auth.rate_events (key) select unnest(${keys}::text[])`;
  return null;
}

export async function audit(
  tx: TxSql,
  event: string,
  outcome: string,
  a: AuditContext,
): Promise<void> {
  await insertAudit(tx, "auth", { event, outcome, ...a });
}
