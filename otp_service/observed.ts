// otp-service's metrics and spans around the issuer: each issue runs in an "otp.issue"
// span and its outcome is counted (sent, or refused with its reason) by country; the
// SMS budget is read from the database when Prometheus scrapes.
import type { Metrics } from "../shared/metrics.ts";
import { METRICS } from "../shared/metric_names.ts";
import type { Sql } from "../shared/postgres.ts";
import { countryOf, refusalReason } from "../shared/telemetry.ts";
import type { Telemetry } from "../shared/telemetry.ts";
import { withSpan } from "../shared/tracing.ts";
import { budgetRule } from "../shared/limits/rules.ts";
import { OtpIssuer } from "./issuer.ts";
import type { IssueOutcome } from "./issuer.ts";
import type { CodeRequest } from "./store.ts";

export class ObservedIssuer extends OtpIssuer {
  private telemetry: Telemetry | undefined;

  /** The issuer built from `args`, reporting to `telemetry`. */
  static create(
    telemetry: Telemetry,
    ...args: ConstructorParameters<typeof OtpIssuer>
  ): ObservedIssuer {
    const issuer = new ObservedIssuer(...args);
    issuer.telemetry = telemetry;
    return issuer;
  }

  override issue(req: CodeRequest): Promise<IssueOutcome> {
    return withSpan("otp.issue", { "otp.purpose": req.purpose }, async (span) => {
      const outcome = await super.issue(req);
      span.setAttributes({ "otp.outcome": outcome.kind });
      this.count(req, outcome);
      return outcome;
    });
  }

  private count(req: CodeRequest, outcome: IssueOutcome): void {
    const t = this.telemetry;
    if (!t) return;
    const country = countryOf(req.phoneNumber);
    switch (outcome.kind) {
      case "sent":
        return t.codeSent(req.purpose, country);
      case "destination":
      case "limited":
        return t.codeRefused(refusalReason(outcome.reason), country);
    }
  }
}

/**
 * The SMS budget gauges: provider attempts the limits engine counted against the budget
 * in its current window (the slots of the last hour), and the budget itself.
 */
export function budgetGauges(metrics: Metrics, sql: Sql, o: { perHour: number }): void {
  metrics.gauge(METRICS.smsBudgetLimit, () => o.perHour);
  metrics.gauge(METRICS.smsBudgetUsed, async () => {
    const [r] = await sql<{ n: number }[]>`
      select coalesce(sum(u.c), 0)::float8 as n
        from otp.limit_counters l, unnest(l.counts) with ordinality as u(c, i)
       where l.key = ${budgetRule(o.perHour, 3600).key}
         and l.first_slot + u.i - 1
             >= floor(extract(epoch from now()) / l.slot_seconds)::bigint - 60`;
    return r?.n ?? 0;
  });
}
