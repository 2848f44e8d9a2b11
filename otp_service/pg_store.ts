// PostgreSQL adapter of OtpStore. No statement here waits on a lock another request
// holds for longer than one statement: limits are counted by the limits engine's
// admit(), which admitAndOpen runs inside its own statement.
import type { OutgoingMessage } from "../shared/bus.ts";
import { admissionOf, admitCall } from "../shared/limits/engine.ts";
import type { AdmitRow } from "../shared/limits/engine.ts";
import { ASYNC_COMMIT } from "../shared/postgres.ts";
import type { Sql, TxSql } from "../shared/postgres.ts";
import { traceHeaders } from "../shared/tracing.ts";
import type {
  Charge,
  CodeRequest,
  FinishDetail,
  Opened,
  OtpStore,
  RequestState,
  RequestStatus,
} from "./store.ts";

type Row = {
  status: RequestStatus;
  attempts: number;
  challenge_id: string;
  issued_at: Date;
  expires_at: Date;
};

const state = (r: Row): RequestState => ({
  status: r.status,
  attempts: r.attempts,
  challenge: { challengeId: r.challenge_id, issuedAt: r.issued_at, expiresAt: r.expires_at },
});

export class PgOtpStore implements OtpStore {
  constructor(private readonly sql: Sql, private readonly onEnqueued: () => void = () => {}) {}

  async open(r: CodeRequest, ttlSeconds: number): Promise<Opened> {
    const [row] = await this.sql<OpenRow[]>`${openStatement(this.sql, r, ttlSeconds)}`;
    return await this.opened(r, ttlSeconds, row!);
  }

  async admitAndOpen(r: CodeRequest, ttlSeconds: number, charge: Charge) {
    // The admission's rows stay locked to the statement's end, so the records written
    // after it commit without waiting for the WAL flush too; beginAttempt's synchronous
    // commit, before any provider call, makes both durable.
    const [row] = await this.sql<OpenRow[]>`
      ${openStatement(this.sql, r, ttlSeconds, charge)}`;
    const admission = admissionOf(charge.rules, row!);
    if (!admission.admitted) return { refusal: admission };
    return {
      ...(await this.opened(r, ttlSeconds, row!)),
      reservation: admission.reservation,
    };
  }

  private async opened(r: CodeRequest, ttlSeconds: number, row: OpenRow): Promise<Opened> {
    if (row.status !== null) return { created: row.created!, state: state(row as Row) };
    // A row another delivery committed after this statement's snapshot was taken: it
    // made the insert conflict yet stayed invisible to the reads. Statements of their own
    // see it.
    return await this.openStepwise(r, ttlSeconds);
  }

  private async openStepwise(r: CodeRequest, ttlSeconds: number) {
    return await this.sql.begin(async (tx): Promise<Opened> => {
      type C = { challenge_id: string; issued_at: Date; expires_at: Date };
      const [opened] = await tx<C[]>`${openChallenge(tx, r, ttlSeconds)}`;
      const c = opened ?? (await tx<C[]>`
        select challenge_id, issued_at, expires_at from otp.challenges
         where phone_number = ${r.phoneNumber} and purpose = ${r.purpose}`)[0];
      const [row] = await tx<Row[]>`
        insert into otp.requests
          (request_id, phone_number, purpose, status, client_address, trace_id, challenge_id,
           issued_at, expires_at)
        values (${r.requestId}, ${r.phoneNumber}, ${r.purpose}, 'pending', ${r.clientAddress},
                ${r.traceId}, ${c!.challenge_id}, ${c!.issued_at}, ${c!.expires_at})
        on conflict (request_id) do nothing
        returning status, attempts, challenge_id, issued_at, expires_at`;
      if (row) return { created: true, state: state(row) };
      const [known] = await tx<Row[]>`
        select status, attempts, challenge_id, issued_at, expires_at
          from otp.requests where request_id = ${r.requestId}`;
      return { created: false, state: state(known!) };
    });
  }

  async beginAttempt(
    requestId: string,
    maxAttempts: number,
    publish?: OutgoingMessage,
  ): Promise<boolean> {
    // The count and the message commit together, in one statement.
    const rows = await this.sql`
      with counted as (
        update otp.requests set attempts = attempts + 1, updated_at = now()
         where request_id = ${requestId} and status = 'pending' and attempts < ${maxAttempts}
        returning 1
      ), queued as (${queuedAfter(this.sql, "counted", publish)})
      select from counted`;
    const counted = rows.length > 0;
    if (counted && publish) this.onEnqueued();
    return counted;
  }

  async finish(
    requestId: string,
    status: Exclude<RequestStatus, "pending">,
    d: FinishDetail,
    publish?: OutgoingMessage,
  ): Promise<void> {
    // One statement: the final state, its message and its audit row commit together. A
    // concurrent delivery that ended the request first wins, except that a confirmed send
    // overrides "unconfirmed"; the audit row is written either way.
    const a = d.audit;
    const rows = await this.sql`
      with ended as (
        update otp.requests set status = ${status}, provider = ${d.provider ?? null},
          provider_id = ${d.providerId ?? null}, error = ${d.error?.slice(0, 500) ?? null},
          updated_at = now()
        where request_id = ${requestId}
          and (status = 'pending' or (status = 'unconfirmed' and ${status} = 'sent'))
        returning 1
      ), queued as (${queuedAfter(this.sql, "ended", publish)}), audited as (
        insert into otp.audit_events (event, phone_number, client_address, outcome, request_id)
        select ${a?.event ?? null}, ${a?.phoneNumber ?? null}, ${a?.clientAddress || null},
               ${a?.outcome ?? null}, ${requestId}
         where ${a !== undefined}
      )
      select from ended`;
    if (rows.length > 0 && publish) this.onEnqueued();
  }

  async audit(
    event: string,
    outcome: string,
    r: { phoneNumber: string; clientAddress: string; requestId: string },
  ): Promise<void> {
    await this.sql`
      insert into otp.audit_events (event, phone_number, client_address, outcome, request_id)
      values (${event}, ${r.phoneNumber}, ${r.clientAddress || null}, ${outcome}, ${r.requestId})`;
  }

  async sweep(keepSeconds: number): Promise<void> {
    await this.sql`delete from otp.requests
      where created_at < now() - make_interval(secs => ${keepSeconds})`;
    await this.sql`delete from otp.challenges where expires_at < now() - interval '1 hour'`;
  }
}

/**
 * The insert that opens a challenge named after the request unless a live one (other
 * than the requester's spent one) exists, returning the one it opened; its row comes
 * `from` the given clause (a gate), or unconditionally without one.
 */
function openChallenge(
  sql: Sql | TxSql,
  r: CodeRequest,
  ttlSeconds: number,
  from = sql``,
) {
  return sql`
    insert into otp.challenges (phone_number, purpose, challenge_id, issued_at, expires_at)
    select ${r.phoneNumber}, ${r.purpose}, ${r.requestId}, date_trunc('second', now()),
           date_trunc('second', now()) + make_interval(secs => ${ttlSeconds})
      ${from}
    on conflict (phone_number, purpose) do update set challenge_id = excluded.challenge_id,
      -- Strictly later than the challenge it replaces, even within one second: a spent
      -- challenge may be unconsumed (its tries used up), and auth-service keeps only a
      -- newer challenge than an unconsumed one it holds.
      issued_at = greatest(excluded.issued_at, otp.challenges.issued_at + interval '1 second'),
      expires_at = greatest(excluded.issued_at, otp.challenges.issued_at + interval '1 second')
        + make_interval(secs => ${ttlSeconds})
    where otp.challenges.expires_at <= now()
       or otp.challenges.challenge_id = ${r.spentChallengeId ?? ""}
    returning challenge_id, issued_at, expires_at`;
}

type OpenRow = AdmitRow & { [K in keyof Row]: Row[K] | null } & { created: boolean | null };

/**
 * One statement: admitted under `charge` if there is one (else always), open a challenge
 * unless a live one (other than the requester's spent one) exists, and record the
 * request against whichever is live. Its rows are locked for this statement only. The
 * request's columns are null when it was refused, or when another delivery's row stayed
 * out of the statement's snapshot.
 */
function openStatement(sql: Sql, r: CodeRequest, ttlSeconds: number, charge?: Charge) {
  const admission = charge
    ? sql`${admitCall(sql, "otp", charge.rules, { eventId: charge.eventId })} as a
        cross join ${sql.unsafe(ASYNC_COMMIT)} as async_commit`
    : sql`${admitCall(sql, "otp", [])} as a`;
  return sql`
    with a as (select admitted, rule, retry_after, at from ${admission}),
    opened as (${openChallenge(sql, r, ttlSeconds, sql`from a where a.admitted`)}),
    live as (
      select challenge_id, issued_at, expires_at from opened
      union all
      select challenge_id, issued_at, expires_at from otp.challenges
       where phone_number = ${r.phoneNumber} and purpose = ${r.purpose}
         and not exists (select from opened) and exists (select from a where a.admitted)
    ), recorded as (
      insert into otp.requests
        (request_id, phone_number, purpose, status, client_address, trace_id, challenge_id,
         issued_at, expires_at)
      select ${r.requestId}, ${r.phoneNumber}, ${r.purpose}, 'pending', ${r.clientAddress},
             ${r.traceId}, challenge_id, issued_at, expires_at
        from live limit 1
      on conflict (request_id) do nothing
      returning status, attempts, challenge_id, issued_at, expires_at
    )
    select a.admitted, a.rule, a.retry_after, a.at, o.status, o.attempts, o.challenge_id,
           o.issued_at, o.expires_at, o.created
      from a left join (
        select status, attempts, challenge_id, issued_at, expires_at, true as created
          from recorded
        union all
        select status, attempts, challenge_id, issued_at, expires_at, false from otp.requests
         where request_id = ${r.requestId} and not exists (select from recorded)
      ) o on a.admitted`;
}

/**
 * An insert of `m` into otp.outbox (the row shared/outbox.ts enqueue() writes) for each
 * row the CTE `after` returned, for a data-modifying CTE beside it; nothing without a
 * message.
 */
function queuedAfter(sql: Sql, after: "counted" | "ended", m: OutgoingMessage | undefined) {
  // An object: the driver serialises it for the jsonb parameter, as enqueue() does.
  const headers = m === undefined ? null : (m.headers ?? traceHeaders());
  return sql`
    insert into otp.outbox (message_id, exchange, routing_key, type, content_type, payload,
                            correlation_id, created_at, headers)
    select ${m?.messageId ?? null}, ${m?.exchange ?? null}, ${m?.routingKey ?? null},
           ${m?.type ?? null}, ${m?.contentType ?? null}, ${m?.body ?? null}::bytea,
           ${m?.correlationId ?? null}, ${m?.timestamp ?? null}::timestamptz,
           ${headers as never}::jsonb
      from ${sql(after)} where ${m !== undefined}`;
}
