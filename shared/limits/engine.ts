// Admits or refuses an event under several limits in one autocommit statement (the
// schema's admit() function), so no lock outlives the statement and unrelated keys
// never wait for each other; the counts live in PostgreSQL, so replicas share them.
import { ASYNC_COMMIT, schemaName } from "../postgres.ts";
import type { Sql } from "../postgres.ts";
import { REASONS } from "./rules.ts";
import type { LimitReason, Rule } from "./rules.ts";

/** What admit() recorded, so an event that did not happen after all can be given back. */
export interface Reservation {
  rules: readonly Rule[];
  at: number;
}

export type Admission =
  | { admitted: true; reservation: Reservation }
  | {
    admitted: false;
    reason: LimitReason;
    /** The text the client sees. */
    message: string;
    retryAfterSeconds: number;
  };

/** The port domain code depends on; LimitsEngine is its PostgreSQL implementation. */
export interface AdmitOptions {
  /**
   * The event's own id (e.g. a request id): admitting it again, as a retry after a
   * failure does, counts nothing more and answers as the first admission did.
   */
  eventId?: string;
}

export interface Limits {
  admit(rules: readonly Rule[], options?: AdmitOptions): Promise<Admission>;
  refund(r: Reservation): Promise<void>;
}

export type Refusal = Extract<Admission, { admitted: false }>;

/** A row of the schema's admit() function. */
export interface AdmitRow {
  admitted: boolean;
  rule: number | null;
  retry_after: number | null;
  at: number;
}

/** What admit() answers for no rules (as LimitsEngine.admit does without asking). */
const NO_RULES =
  "(select true as admitted, null::int as rule, null::float8 as retry_after, 0::float8 as at)";

/**
 * The admit() call of `rules` in `schema`, as a fragment a store puts in its own
 * statement (`from <fragment> as a`) so a charge and what it guards are one round trip;
 * `admissionOf` reads the row. The statement decides how it commits.
 */
export function admitCall(
  sql: Sql,
  schema: string,
  rules: readonly Rule[],
  options: AdmitOptions = {},
) {
  if (rules.length === 0) return sql.unsafe(NO_RULES);
  return sql`${sql.unsafe(schemaName(schema))}.admit(${rules.map((r) => r.key)}::text[],
    ${rules.map((r) => r.limit)}::int[], ${rules.map((r) => r.windowSeconds)}::float8[],
    ${options.eventId ?? null}::text)`;
}

/** What a row of admit() over `rules` means. */
export function admissionOf(rules: readonly Rule[], row: AdmitRow): Admission {
  if (row.admitted) return { admitted: true, reservation: { rules, at: row.at } };
  const tripped = rules[row.rule! - 1]!;
  return {
    admitted: false,
    reason: tripped.reason,
    message: REASONS[tripped.reason],
    retryAfterSeconds: Math.max(1, Math.ceil(row.retry_after ?? tripped.windowSeconds)),
  };
}

export class LimitsEngine implements Limits {
  private readonly admitSql: string;
  private readonly refundSql: string;
  private readonly sweepSql: string;

  constructor(
    private readonly sql: Sql,
    schema: string,
    o: {
      /**
       * Commit admissions without waiting for the WAL flush, so a hot key's row lock is
       * held only while the statement runs. A crash may then forget the last fraction of
       * a second of counted events: fine for per-address and per-number caps; a budget
       * that must hold exactly may use it only if a synchronous commit always follows
       * before the counted event happens (that flush carries the admission's commit).
       */
      asyncCommit?: boolean;
    } = {},
  ) {
    schemaName(schema);
    const from = o.asyncCommit ? `${ASYNC_COMMIT} s, ` : "";
    this.admitSql = `select admitted, rule, retry_after, at
      from ${from}${schema}.admit($1::text[], $2::int[], $3::float8[], $4::text)`;
    this.refundSql = `select ${schema}.refund($1::text[], $2::float8[], $3::float8)`;
    // A row an admission holds is left for the next sweep: waiting on it while holding
    // rows that admission locks next would deadlock the two.
    this.sweepSql = `with c as (delete from ${schema}.limit_counters where key in (
        select key from ${schema}.limit_counters
         where updated_at < now() - make_interval(secs => slot_seconds * 62)
         for update skip locked))
      delete from ${schema}.limit_admissions where created_at < now() - interval '2 days'`;
  }

  /** Records one event under every rule, or under none when any of them is full. */
  async admit(rules: readonly Rule[], options: AdmitOptions = {}): Promise<Admission> {
    if (rules.length === 0) return { admitted: true, reservation: { rules, at: 0 } };
    const [row] = await this.sql.unsafe<AdmitRow[]>(this.admitSql, [
      rules.map((r) => r.key),
      rules.map((r) => r.limit),
      rules.map((r) => r.windowSeconds),
      options.eventId ?? null,
    ], { prepare: true });
    return admissionOf(rules, row!);
  }

  /** Gives back a reservation whose event definitely did not happen. */
  async refund(r: Reservation): Promise<void> {
    if (r.rules.length === 0) return;
    await this.sql.unsafe(this.refundSql, [
      r.rules.map((x) => x.key),
      r.rules.map((x) => x.windowSeconds),
      r.at,
    ], { prepare: true });
  }

  /** Deletes counters with nothing left in their window. */
  async sweep(): Promise<void> {
    await this.sql.unsafe(this.sweepSql);
  }
}
