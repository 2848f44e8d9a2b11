// One statement for many concurrent calls that each charge their caller first and then
// read (shared/coalesce.ts). Each call's charge is admit() of its own rules, once per
// call, so counts stay exact. The statement holds every counter row it charged until it
// ends, so its calls are charged in one order that every such statement follows
// (unshared keys first, then by key, as admit() orders the keys of one call): two of
// them never wait on each other's rows in a cycle. A call with more than one rule could
// break that order, so it gets a statement of its own, where admit() orders its keys as
// it does everywhere.
import { coalesced } from "../shared/coalesce.ts";
import type { CoalesceOptions } from "../shared/coalesce.ts";
import { SHARED_REASONS } from "../shared/limits/rules.ts";
import type { Rule } from "../shared/limits/rules.ts";
import type { Sql } from "../shared/postgres.ts";

export interface ChargedCall {
  charge: readonly Rule[];
}

/** A row of the shared statement: `i` is the call's place in the sorted batch, from 1. */
export interface BatchRow {
  i: string;
}

type Fragment = ReturnType<Sql>;

const SHARED: ReadonlySet<string> = new Set(SHARED_REASONS);

/** The order calls are charged in: a call with no rule locks nothing and goes first. */
function chargeOrder(a: ChargedCall, b: ChargedCall): number {
  const x = a.charge[0];
  const y = b.charge[0];
  if (x === undefined || y === undefined) {
    return (x === undefined ? 0 : 1) - (y === undefined ? 0 : 1);
  }
  const shared = (SHARED.has(x.reason) ? 1 : 0) - (SHARED.has(y.reason) ? 1 : 0);
  if (shared !== 0) return shared;
  return x.key < y.key ? -1 : x.key > y.key ? 1 : 0;
}

/**
 * One call's row of `statement`, run for the calls that arrive together. `statement`
 * gets the calls in the charge order and `charges`, the CTEs `r` and `a` to put after
 * its own CTE `e`, which has one row per call with its place `i` (from 1, `with
 * ordinality`). `a` is each call's admit() row (i, admitted, rule, retry_after, at).
 */
export function chargedBatches<C extends ChargedCall, R extends BatchRow>(
  sql: Sql,
  statement: (sorted: C[], charges: Fragment) => Promise<R[]>,
  o: CoalesceOptions,
): (call: C) => Promise<R> {
  const run = async (calls: C[]): Promise<R[]> => {
    // The sort is stable, so the calls of one key are charged in the order they came.
    const order = calls.map((_, i) => i).sort((a, b) => chargeOrder(calls[a]!, calls[b]!));
    const sorted = order.map((i) => calls[i]!);
    const rows = await statement(sorted, chargesCte(sql, sorted));
    if (rows.length !== calls.length) throw new Error("a charged call without its row");
    const answers: R[] = new Array(calls.length);
    for (const row of rows) answers[order[Number(row.i) - 1]!] = row;
    return answers;
  };
  const batched = coalesced(run, o);
  return async (call) => call.charge.length > 1 ? (await run([call]))[0]! : await batched(call);
}

function chargesCte(sql: Sql, sorted: readonly ChargedCall[]): Fragment {
  const rules = sorted.flatMap((c, i) => c.charge.map((r) => ({ r, owner: i + 1 })));
  return sql`
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
          array(select win from r where owner = e.i order by n)) x)`;
}
