// The issuer against real PostgreSQL (store and limits engine), where deliveries of one
// request can really race: what they charge and what they send.
import assert from "node:assert/strict";
import { HmacKey } from "../shared/crypto.ts";
import { LimitsEngine } from "../shared/limits/engine.ts";
import { createLogger } from "../shared/log.ts";
import { OtpIssuer } from "./issuer.ts";
import { testIssuerSettings } from "./issuer_fixture.ts";
import { countedUnder, migratedOtpDatabase } from "./pg_fixture.ts";
import { PgOtpStore } from "./pg_store.ts";
import type { SmsMessage, SmsSender } from "./sms/sender.ts";

const db = await migratedOtpDatabase({ max: 8 });
const sql = db.sql;
Deno.test.afterAll(() => db.drop());

const sent: SmsMessage[] = [];
const sms: SmsSender = {
  name: "stub",
  send(m) {
    sent.push(m);
    return Promise.resolve({ providerId: `p${sent.length}` });
  },
};
const key = HmacKey.import("k".repeat(32));
const issuer = new OtpIssuer(
  new PgOtpStore(sql, () => {}),
  new LimitsEngine(sql, "otp", { asyncCommit: true }),
  sms,
  { mac: key, code: key },
  testIssuerSettings(),
  createLogger("test", "error"),
);

/** What the number's per-number counters hold in their windows. */
async function counted(phone: string): Promise<Record<string, number>> {
  const rows = await sql<{ key: string; n: number }[]>`
    select key, (select sum(c) from unnest(counts) c)::int as n from otp.limit_counters
     where key like ${`%${phone}%`} order by key`;
  return Object.fromEntries(rows.map((r) => [r.key.split(":")[0]!, r.n]));
}

const budgetSpent = () => countedUnder(sql, "budget:all");

Deno.test("concurrent deliveries of one request charge its send limits once, and each SMS its budget", async () => {
  const phone = "+14155550188";
  const req = {
    requestId: crypto.randomUUID(),
    phoneNumber: phone,
    purpose: "signup" as const,
    clientAddress: "198.51.100.9",
    traceId: "",
  };
  const outcomes = await Promise.all(Array.from({ length: 6 }, () => issuer.issue(req)));
  assert.ok(outcomes.some((o) => o.kind === "sent"));
  // Deliveries that race may each make a provider call, never more than the request's
  // attempts, and every call is charged to the budget.
  const calls = sent.filter((m) => m.to === phone).length;
  assert.ok(calls >= 1 && calls <= testIssuerSettings().maxAttempts, `${calls} calls`);
  assert.equal(await budgetSpent(), calls);
  assert.deepEqual(await counted(phone), {
    cooldown: 1,
    number_daily: 1,
    number_hourly: 1,
    pair_daily: 1,
    pair_hourly: 1,
  });
  // And again, one after another, as a redelivery comes: nothing more is charged.
  await issuer.issue(req);
  assert.equal(sent.filter((m) => m.to === phone).length, calls);
  assert.equal((await counted(phone)).pair_hourly, 1);
  assert.equal(await budgetSpent(), calls);
});
