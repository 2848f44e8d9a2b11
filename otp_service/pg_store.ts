// PostgreSQL adapter of OtpStore.
import type { OutgoingMessage } from "../shared/bus.ts";
import { enqueue } from "../shared/outbox.ts";
import type { Sql } from "../shared/postgres.ts";
import type {
  BeginOutcome,
  CodeRequest,
  OtpStore,
  RequestStatus,
  SendPolicy,
  SentCode,
} from "./store.ts";

/**
 * auth-service admitted the request moments before it reached us; a small grace keeps
 * that delay from turning its "yes" into our "no" at a window's edge.
 */
function window(seconds: number): number {
  return Math.max(0, seconds - Math.min(5, seconds * 0.1));
}

export class PgOtpStore implements OtpStore {
  constructor(private readonly sql: Sql, private readonly onEnqueued: () => void = () => {}) {}

  async begin(r: CodeRequest, p: SendPolicy): Promise<BeginOutcome> {
    return await this.sql.begin(async (tx): Promise<BeginOutcome> => {
      const [known] = await tx<{ status: RequestStatus }[]>`
        select status from otp.requests where request_id = ${r.requestId}`;
      if (known) return { status: known.status };
      // One number's requests are serialised across replicas, so its counts are exact.
      await tx`select pg_advisory_xact_lock(hashtext(${"otp:" + r.phoneNumber}))`;
      const [c] = await tx<
        {
          cooldown: number | null;
          hour: number | null;
          day: number | null;
          global: number | null;
        }[]
      >`
        with mine as (
          select purpose, created_at from otp.requests
           where phone_number = ${r.phoneNumber} and status in ('pending', 'sent')
             and created_at > now() - make_interval(secs => ${window(p.daySeconds)}))
        select
          (select extract(epoch from max(created_at) + make_interval(secs => ${
        window(p.cooldownSeconds)
      }) - now())
             from mine where purpose = ${r.purpose}
              and created_at > now() - make_interval(secs => ${window(p.cooldownSeconds)}))::float8
            as cooldown,
          (select extract(epoch from min(created_at) + make_interval(secs => ${
        window(p.hourSeconds)
      }) - now())
             from mine where created_at > now() - make_interval(secs => ${window(p.hourSeconds)})
           having count(*) >= ${p.perHour})::float8 as hour,
          (select extract(epoch from min(created_at) + make_interval(secs => ${
        window(p.daySeconds)
      }) - now())
             from mine having count(*) >= ${p.perDay})::float8 as day,
          (select extract(epoch from min(created_at) + make_interval(secs => ${p.hourSeconds}) - now())
             from (select created_at from otp.requests
                    where status = 'sent' and created_at > now() - make_interval(secs => ${p.hourSeconds})
                    order by created_at desc limit ${p.globalPerHour}) g
           having count(*) >= ${p.globalPerHour})::float8 as global`;
      const trips: [number | null, string][] = [
        [p.cooldownSeconds > 0 ? c!.cooldown : null, "a code was sent to this number moments ago"],
        [c!.hour, "too many codes for this number this hour"],
        [c!.day, "too many codes for this number today"],
        [c!.global, "the hourly SMS budget is spent; try again later"],
      ];
      for (const [retry, reason] of trips) {
        if (retry !== null) {
          return { status: "limited", retryAfterSeconds: Math.max(1, Math.ceil(retry)), reason };
        }
      }
      // A concurrent delivery of the same request may have inserted it meanwhile.
      const [row] = await tx<{ status: RequestStatus }[]>`
        insert into otp.requests
          (request_id, phone_number, purpose, status, client_address, trace_id)
        values (${r.requestId}, ${r.phoneNumber}, ${r.purpose}, 'pending',
                ${r.clientAddress}, ${r.traceId})
        on conflict (request_id) do update set updated_at = otp.requests.updated_at
        returning status`;
      return { status: row!.status };
    });
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
  }

  async markSent(requestId: string, s: SentCode, issued: OutgoingMessage): Promise<void> {
    await this.sql.begin(async (tx) => {
      await tx`
        update otp.requests set status = 'sent', code_mac = ${s.codeMac},
          issued_at = ${s.issuedAt}, expires_at = ${s.expiresAt}, provider = ${s.provider},
          provider_id = ${s.providerId}, error = null, updated_at = now()
        where request_id = ${requestId}`;
      await enqueue(tx, "otp", issued);
    });
    this.onEnqueued();
  }

  async markFailed(requestId: string, error: string): Promise<void> {
    await this.sql`
      update otp.requests set status = 'failed', error = ${error.slice(0, 500)}, updated_at = now()
      where request_id = ${requestId}`;
  }
}
