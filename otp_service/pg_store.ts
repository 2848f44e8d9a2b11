// PostgreSQL adapter of OtpStore. No statement here waits on a lock another request
// holds for longer than one statement: limits are counted by the limits engine.
import type { OutgoingMessage } from "../shared/bus.ts";
import { enqueue } from "../shared/outbox.ts";
import type { Sql, TxSql } from "../shared/postgres.ts";
import type { CodeRequest, OtpStore, RequestState, RequestStatus } from "./store.ts";

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

  async find(requestId: string): Promise<RequestState | null> {
    const [row] = await this.sql<Row[]>`
      select status, attempts, challenge_id, issued_at, expires_at
        from otp.requests where request_id = ${requestId}`;
    return row ? state(row) : null;
  }

  async open(r: CodeRequest, ttlSeconds: number) {
    return await this.sql.begin(async (tx) => {
      // Opens a challenge unless a live one (other than the requester's spent one)
      // exists; its row is locked for this short transaction only.
      type C = { challenge_id: string; issued_at: Date; expires_at: Date };
      const [opened] = await tx<C[]>`
        insert into otp.challenges (phone_number, purpose, challenge_id, issued_at, expires_at)
        values (${r.phoneNumber}, ${r.purpose}, ${r.requestId}, date_trunc('second', now()),
                date_trunc('second', now()) + make_interval(secs => ${ttlSeconds}))
        on conflict (phone_number, purpose) do update set challenge_id = excluded.challenge_id,
          -- Strictly later than the challenge it replaces, even within one second, as
          -- auth-service keeps only a newer challenge than the one it holds.
          issued_at = greatest(excluded.issued_at, otp.challenges.issued_at + interval '1 second'),
          expires_at = greatest(excluded.issued_at, otp.challenges.issued_at + interval '1 second')
            + make_interval(secs => ${ttlSeconds})
        where otp.challenges.expires_at <= now()
           or otp.challenges.challenge_id = ${r.spentChallengeId ?? ""}
        returning challenge_id, issued_at, expires_at`;
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
    const counted = await this.sql.begin(async (tx) => {
      const [row] = await tx`
        update otp.requests set attempts = attempts + 1, updated_at = now()
         where request_id = ${requestId} and status = 'pending' and attempts < ${maxAttempts}
        returning attempts`;
      if (row && publish) await enqueue(tx, "otp", publish);
      return row !== undefined;
    });
    if (counted && publish) this.onEnqueued();
    return counted;
  }

  async finish(
    requestId: string,
    status: Exclude<RequestStatus, "pending">,
    d: { provider?: string; providerId?: string; error?: string },
    publish?: OutgoingMessage,
  ): Promise<void> {
    // A concurrent delivery that ended the request first wins, except that a confirmed
    // send overrides "unconfirmed".
    const ended = await this.sql.begin(async (tx: TxSql) => {
      const rows = await tx`
        update otp.requests set status = ${status}, provider = ${d.provider ?? null},
          provider_id = ${d.providerId ?? null}, error = ${d.error?.slice(0, 500) ?? null},
          updated_at = now()
        where request_id = ${requestId}
          and (status = 'pending' or (status = 'unconfirmed' and ${status} = 'sent'))
        returning 1`;
      if (rows.length > 0 && publish) await enqueue(tx, "otp", publish);
      return rows.length > 0;
    });
    if (ended && publish) this.onEnqueued();
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
