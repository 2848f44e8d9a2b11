// The two-statement redemption against real PostgreSQL. Another transaction holds the
// challenge row while the redemption reads it (a read takes no lock) and changes it
// once the redemption's write waits on that row: the write then finds its challenge no
// longer as read, does nothing, and the transactional path decides under the lock.
import assert from "node:assert/strict";
import { pollUntil } from "../shared/async.ts";
import { createPool } from "../shared/postgres.ts";
import { createDatabase } from "../testing/database.ts";
import { PgAuthStore } from "./pg_store.ts";
import { migrateAuth } from "./pg_store_fixture.ts";
import type { AuditContext, Challenge, RedeemEffect } from "./ports.ts";
import { POLICY } from "./store_conformance.ts";

const PHONE = "+14155550161";
const who: AuditContext = { phone: PHONE, clientAddress: "192.0.2.61", requestId: "r-race" };
const MAC = new Uint8Array(32).fill(9);
const right = (c: Challenge) => c.codeMac.every((b, i) => b === MAC[i]);
const session: RedeemEffect = {
  kind: "session",
  session: {
    id: "00000000-0000-4000-8000-000000000061",
    tokenHash: new Uint8Array(32).fill(61),
    ttlSeconds: 3600,
    clientAddress: who.clientAddress,
    userAgent: "",
  },
};

/**
 * Redeems the right signup code of PHONE while another transaction, holding the
 * challenge row, runs `change` on it and commits once the redemption waits on the row.
 */
async function redeemWhile(change: string) {
  const db = await createDatabase();
  const sql = createPool({ url: db.url, applicationName: "test", max: 4 });
  try {
    await migrateAuth(sql);
    const store = new PgAuthStore(sql);
    await store.signup(PHONE, {
      exchange: "otp",
      routingKey: "otp",
      messageId: crypto.randomUUID(),
      type: "bus.v1.OtpRequested",
      contentType: "application/x-protobuf",
      body: new Uint8Array([1]),
      timestamp: new Date(),
    }, who);
    const issuedAt = new Date();
    await store.saveChallenge(crypto.randomUUID(), {
      requestId: crypto.randomUUID(),
      phoneNumber: PHONE,
      purpose: "signup",
      codeMac: MAC,
      issuedAt,
      expiresAt: new Date(issuedAt.getTime() + 300_000),
    });
    const holder = await sql.reserve();
    try {
      await holder`begin`;
      await holder.unsafe(`${change} where phone_number = $1 and purpose = 'signup'`, [PHONE]);
      const redeemed = store.redeem(PHONE, "signup", POLICY, right, session, who);
      await pollUntil(async () => {
        const [w] = await sql<{ n: number }[]>`
          select count(*)::int as n from pg_stat_activity
           where datname = current_database() and wait_event_type = 'Lock'`;
        return w!.n > 0;
      }, { timeoutMs: 10_000, intervalMs: 5, what: "the redemption waiting on the row" });
      await holder`commit`;
      const outcome = await redeemed;
      const [n] = await sql<{ n: number }[]>`select count(*)::int as n from auth.sessions`;
      const audit = await sql<{ e: string }[]>`
        select event || ':' || outcome as e from auth.audit_events
         where event in ('code_checked', 'session_created') order by id`;
      return { kind: outcome.kind, sessions: n!.n, audit: audit.map((a) => a.e) };
    } finally {
      holder.release();
    }
  } finally {
    await sql.end();
    await db.drop();
  }
}

Deno.test("a code consumed between the redemption's read and its write opens no session", async () => {
  const r = await redeemWhile("update auth.challenges set consumed_at = now()");
  assert.deepEqual(r, { kind: "no_challenge", sessions: 0, audit: ["code_checked:no_challenge"] });
});

Deno.test("a wrong try between the redemption's read and its write sends it down the locked path, which still redeems the right code", async () => {
  const r = await redeemWhile("update auth.challenges set failed_attempts = failed_attempts + 1");
  assert.deepEqual(r, {
    kind: "ok",
    sessions: 1,
    audit: ["code_checked:ok", "session_created:signup"],
  });
});

Deno.test("a try that exhausts the code between the redemption's read and its write opens no session", async () => {
  const r = await redeemWhile(`update auth.challenges set failed_attempts = ${POLICY.maxAttempts}`);
  assert.deepEqual(r, { kind: "exhausted", sessions: 0, audit: ["code_checked:exhausted"] });
});
