// PostgreSQL adapter of OtpStore.
import type { OutgoingMessage } from "../shared/bus.ts";
import { enqueue } from "../shared/outbox.ts";
import type { Sql } from "../shared/postgres.ts";
import type { CodeRequest, OtpStore, RequestStatus, SentCode } from "./store.ts";

export class PgOtpStore implements OtpStore {
  constructor(private readonly sql: Sql, private readonly onEnqueued: () => void = () => {}) {}

  async begin(r: CodeRequest): Promise<RequestStatus> {
    const [row] = await this.sql<{ status: RequestStatus }[]>`
      with ins as (
        insert into otp.requests
          (request_id, phone_number, purpose, status, client_address, trace_id)
        values (${r.requestId}, ${r.phoneNumber}, ${r.purpose}, 'pending',
                ${r.clientAddress}, ${r.traceId})
        on conflict (request_id) do nothing
        returning status)
      select status from ins
      union all
      select status from otp.requests where request_id = ${r.requestId}
      limit 1`;
    return row!.status;
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

  async ping(): Promise<void> {
    await this.sql`select 1`;
  }
}
