// PostgreSQL adapter of AuthStore.
import { enqueue } from "../shared/outbox.ts";
import type { OutgoingMessage } from "../shared/bus.ts";
import type { PurposeName } from "../shared/messages.ts";
import type { Sql } from "../shared/postgres.ts";
import type {
  AuthStore,
  Challenge,
  ChallengeOutcome,
  NewSession,
  RedeemOutcome,
  SignupOutcome,
  User,
} from "./store.ts";

const SCHEMA = "auth";

interface UserRow {
  id: string;
  phone_number: string;
  created_at: Date;
  verified_at: Date | null;
}

const toUser = (r: UserRow): User => ({
  id: r.id,
  phoneNumber: r.phone_number,
  createdAt: r.created_at,
  verifiedAt: r.verified_at,
});

export class PgAuthStore implements AuthStore {
  constructor(private readonly sql: Sql, private readonly onEnqueued: () => void = () => {}) {}

  async signup(phone: string, request: OutgoingMessage): Promise<SignupOutcome> {
    const outcome = await this.sql.begin(async (tx) => {
      // The no-op update takes the row lock, so concurrent signups of one number serialise.
      const [user] = await tx<UserRow[]>`
        insert into auth.users (phone_number) values (${phone})
        on conflict (phone_number) do update set phone_number = excluded.phone_number
        returning id, phone_number, created_at, verified_at`;
      if (user!.verified_at !== null) return "already_verified" as const;
      await enqueue(tx, SCHEMA, request);
      return "queued" as const;
    });
    if (outcome === "queued") this.onEnqueued();
    return outcome;
  }

  async findUser(phone: string): Promise<User | null> {
    const [row] = await this.sql<UserRow[]>`
      select id, phone_number, created_at, verified_at from auth.users
      where phone_number = ${phone}`;
    return row ? toUser(row) : null;
  }

  async redeem(
    phone: string,
    purpose: PurposeName,
    maxAttempts: number,
    matches: (c: Challenge) => Promise<boolean>,
    session: NewSession,
  ): Promise<RedeemOutcome> {
    return await this.sql.begin(async (tx): Promise<RedeemOutcome> => {
      const [c] = await tx<
        {
          request_id: string;
          code_mac: Uint8Array;
          issued_at: Date;
          expires_at: Date;
          failed_attempts: number;
          user_id: string;
        }[]
      >`
        select c.request_id, c.code_mac, c.issued_at, c.expires_at, c.failed_attempts,
               u.id as user_id
          from auth.challenges c join auth.users u on u.phone_number = c.phone_number
         where c.phone_number = ${phone} and c.purpose = ${purpose}
           and c.consumed_at is null and c.expires_at > now()
         for update of c`;
      if (!c) return { kind: "no_challenge" };
      if (c.failed_attempts >= maxAttempts) return { kind: "exhausted" };
      const ok = await matches({
        requestId: c.request_id,
        phoneNumber: phone,
        purpose,
        codeMac: c.code_mac,
        issuedAt: c.issued_at,
        expiresAt: c.expires_at,
      });
      if (!ok) {
        await tx`
          update auth.challenges set failed_attempts = failed_attempts + 1
           where phone_number = ${phone} and purpose = ${purpose}`;
        return { kind: "wrong", remaining: Math.max(0, maxAttempts - c.failed_attempts - 1) };
      }
      await tx`
        update auth.challenges set consumed_at = now()
         where phone_number = ${phone} and purpose = ${purpose}`;
      if (purpose === "signup") {
        await tx`
          update auth.users set verified_at = coalesce(verified_at, now())
           where id = ${c.user_id}`;
      }
      await tx`
        insert into auth.sessions (user_id, token_hash, expires_at)
        values (${c.user_id}, ${session.tokenHash},
                now() + make_interval(secs => ${session.ttlSeconds}))`;
      return { kind: "ok", userId: c.user_id };
    });
  }

  async saveChallenge(messageId: string, c: Challenge): Promise<ChallengeOutcome> {
    return await this.sql.begin(async (tx): Promise<ChallengeOutcome> => {
      const fresh = await tx`
        insert into auth.inbox (message_id) values (${messageId})
        on conflict do nothing returning message_id`;
      if (fresh.length === 0) return "duplicate";
      // Only a newer code replaces the current one, whatever order messages arrive in.
      const stored = await tx`
        insert into auth.challenges
          (phone_number, purpose, request_id, code_mac, issued_at, expires_at)
        values (${c.phoneNumber}, ${c.purpose}, ${c.requestId}, ${c.codeMac},
                ${c.issuedAt}, ${c.expiresAt})
        on conflict (phone_number, purpose) do update set
          request_id = excluded.request_id, code_mac = excluded.code_mac,
          issued_at = excluded.issued_at, expires_at = excluded.expires_at,
          failed_attempts = 0, consumed_at = null
        where auth.challenges.issued_at < excluded.issued_at
        returning phone_number`;
      return stored.length > 0 ? "stored" : "superseded";
    });
  }

  async sessionUser(tokenHash: Uint8Array, idleSeconds: number): Promise<User | null> {
    const [row] = await this.sql<UserRow[]>`
      with s as (
        update auth.sessions set last_seen_at = now()
         where token_hash = ${tokenHash} and revoked_at is null and expires_at > now()
           and last_seen_at > now() - make_interval(secs => ${idleSeconds})
        returning user_id)
      select u.id, u.phone_number, u.created_at, u.verified_at
        from s join auth.users u on u.id = s.user_id`;
    return row ? toUser(row) : null;
  }

  async revoke(tokenHash: Uint8Array, all: boolean): Promise<number> {
    const rows = all
      ? await this.sql`
        update auth.sessions set revoked_at = now()
         where revoked_at is null and user_id = (
           select user_id from auth.sessions where token_hash = ${tokenHash}
              and revoked_at is null and expires_at > now())
        returning id`
      : await this.sql`
        update auth.sessions set revoked_at = now()
         where token_hash = ${tokenHash} and revoked_at is null and expires_at > now()
        returning id`;
    return rows.length;
  }

  async ping(): Promise<void> {
    await this.sql`select 1`;
  }
}
