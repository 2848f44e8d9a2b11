// PgAuthStore against real PostgreSQL, in a database of its own: the conformance suite,
// and the sweep (rows past their use are deleted, live ones kept).
import assert from "node:assert/strict";
import { createPool } from "../shared/postgres.ts";
import type { Sql } from "../shared/postgres.ts";
import { createDatabase } from "../testing/database.ts";
import { PgAuthStore } from "./pg_store.ts";
import { migrateAuth, openPgStore } from "./pg_store_fixture.ts";
import { storeConformance } from "./store_conformance.ts";
import { adminStoreConformance } from "./admin_store_conformance.ts";
import { PgAdminStore } from "./pg_admin_store.ts";

Deno.test("the PostgreSQL store passes the store conformance suite", async (t) => {
  const db = await createDatabase();
  const sql = createPool({ url: db.url, applicationName: "test", max: 4 });
  try {
    await migrateAuth(sql);
    await storeConformance(t, () => openPgStore(sql));
  } finally {
    await sql.end();
    await db.drop();
  }
});

Deno.test("the PostgreSQL admin store passes the admin store conformance suite", async (t) => {
  const db = await createDatabase();
  const sql = createPool({ url: db.url, applicationName: "test", max: 4 });
  try {
    await migrateAuth(sql);
    await adminStoreConformance(t, async () => ({
      ...(await openPgStore(sql)),
      admin: new PgAdminStore(sql),
    }));
  } finally {
    await sql.end();
    await db.drop();
  }
});

Deno.test("the sweep deletes aged-out failure counts, expired challenges, sessions and old inbox rows only", async () => {
  const db = await createDatabase();
  const sql = createPool({ url: db.url, applicationName: "test", max: 2 });
  try {
    await migrateAuth(sql);
    const [u] = await sql`insert into auth.users (phone_number) values ('+14155550123')
      returning id`;
    await sql`insert into auth.wrong_code_locks (phone_number, client_key, last_failure_at)
      values ('+14155550123', 'old', now() - interval '3 days'),
             ('+14155550123', 'new', now())`;
    await sql`insert into auth.inbox (message_id, handled_at) values
      ('old', now() - interval '3 days'), ('new', now())`;
    await sql`insert into auth.sessions (user_id, expires_at) values
      (${u!.id}, now() - interval '3 days'), (${u!.id}, now() + interval '1 day')`;
    await sql`insert into auth.challenges
      (phone_number, purpose, request_id, code_mac, issued_at, expires_at) values
      ('+14155550123', 'signup', 'a', '\\x00', now() - interval '3 days',
       now() - interval '3 days'),
      ('+14155550123', 'login', 'b', '\\x00', now(), now() + interval '5 minutes')`;

    await new PgAuthStore(sql).sweep({
      keepSeconds: 86_400,
      auditRetentionSeconds: 90 * 86_400,
      unverifiedUserSeconds: 7 * 86_400,
    });

    const [left] = await sql`select
      (select string_agg(client_key, ',') from auth.wrong_code_locks) as events,
      (select string_agg(message_id, ',') from auth.inbox) as inbox,
      (select count(*)::int from auth.sessions) as sessions,
      (select string_agg(purpose, ',') from auth.challenges) as challenges`;
    assert.deepEqual({ ...left }, {
      events: "new",
      inbox: "new",
      sessions: 1,
      challenges: "login",
    });
  } finally {
    await sql.end();
    await db.drop();
  }
});

Deno.test("two deliveries of one message at once store it once, and a newer code resets the failed tries", async () => {
  const db = await createDatabase();
  const sql = createPool({ url: db.url, applicationName: "test", max: 4 });
  try {
    await migrateAuth(sql);
    const store = new PgAuthStore(sql);
    const at = (s: number) => new Date(Date.UTC(2030, 0, 1, 0, 0, s));
    const challenge = (requestId: string, issued: number) => ({
      requestId,
      phoneNumber: "+14155550123",
      purpose: "signup" as const,
      codeMac: new Uint8Array(32).fill(issued),
      issuedAt: at(issued),
      expiresAt: at(issued + 300),
    });

    // The same message delivered twice at once: one stores, the other is a duplicate.
    const both = await Promise.all([
      store.saveChallenge("m1", challenge("r1", 10)),
      store.saveChallenge("m1", challenge("r1", 10)),
    ]);
    assert.deepEqual(both.sort(), ["duplicate", "stored"]);
    await sql`update auth.challenges set failed_attempts = 2`;

    assert.equal(await store.saveChallenge("m0", challenge("r0", 5)), "superseded");
    assert.equal(await store.saveChallenge("m2", challenge("r2", 20)), "stored");
    assert.equal(await store.saveChallenge("m2", challenge("r2", 20)), "duplicate");

    const rows = await sql`select request_id, failed_attempts, issued_at, code_mac
      from auth.challenges`;
    assert.equal(rows.length, 1);
    assert.equal(rows[0]!.request_id, "r2");
    assert.equal(rows[0]!.failed_attempts, 0, "a new code starts with no failed attempts");
    assert.equal((rows[0]!.issued_at as Date).getTime(), at(20).getTime());
    assert.deepEqual(new Uint8Array(rows[0]!.code_mac), new Uint8Array(32).fill(20));
    const inbox = await sql`select message_id from auth.inbox order by message_id`;
    assert.deepEqual(inbox.map((r) => r.message_id), ["m0", "m1", "m2"]);
  } finally {
    await sql.end();
    await db.drop();
  }
});

/** A fresh migrated database, and a store on one reserved connection of its pool. */
async function withReservedStore(
  fn: (store: PgAuthStore, sql: Sql, one: Awaited<ReturnType<Sql["reserve"]>>) => Promise<void>,
): Promise<void> {
  const db = await createDatabase();
  const sql = createPool({ url: db.url, applicationName: "test", max: 2 });
  const one = await sql.reserve();
  try {
    await migrateAuth(sql);
    await fn(new PgAuthStore(one as unknown as typeof sql), sql, one);
  } finally {
    one.release();
    await sql.end();
    await db.drop();
  }
}

Deno.test("a lookup of an unknown number still records its audit row, and its commit setting ends with the statement", async () => {
  await withReservedStore(async (store, sql, one) => {
    const who = { phone: "+14155550142", clientAddress: "192.0.2.9", requestId: "r-async" };
    assert.deepEqual(await store.loginTarget(who.phone, 3, who), { kind: "not_verified" });
    const rows = await sql`select outcome, client_address from auth.audit_events
                            where request_id = 'r-async'`;
    assert.deepEqual(rows.map((r) => ({ ...r })), [
      { outcome: "not_verified", client_address: "192.0.2.9" },
    ]);
    // The next statement on the same connection commits as configured again.
    const [c] = await one`select current_setting('synchronous_commit') as v`;
    assert.equal(c!.v, "on");
  });
});

Deno.test("a session's idle timer is written only when stale, and that write's commit setting ends with it", async () => {
  await withReservedStore(async (store, sql, one) => {
    const hash = new Uint8Array(32).fill(7);
    await sql`
      with u as (insert into auth.users (phone_number, verified_at)
                 values ('+14155550143', now()) returning id),
      s as (insert into auth.sessions (user_id, expires_at, last_seen_at)
            select id, now() + interval '1 day', now() - interval '5 minutes' from u
            returning id)
      insert into auth.session_tokens (token_hash, session_id) select ${hash}, id from s`;
    const seen = async () => {
      const [r] = await sql<{ at: Date; version: string }[]>`
        select last_seen_at as at, xmin::text as version from auth.sessions`;
      return r!;
    };
    const policy = { idleSeconds: 600, graceSeconds: 10 };
    const stale = await seen();

    const first = await store.authenticate(hash, policy);
    assert.equal(first?.session.lastSeenAt.getTime(), stale.at.getTime(), "read before the write");
    const touched = await seen();
    assert.ok(touched.at.getTime() > stale.at.getTime() + 4 * 60_000, "a stale timer moves on");
    const [c] = await one`select current_setting('synchronous_commit') as v`;
    assert.equal(c!.v, "on", "the next statement commits as configured again");

    assert.ok(await store.authenticate(hash, policy));
    assert.deepEqual(await seen(), touched, "a fresh timer is read, not written");
  });
});
