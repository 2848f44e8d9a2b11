// PgOtpStore against real PostgreSQL: a request and its challenge recorded in one
// statement, resends of the live challenge, and the final state, its message and its
// audit row written together.
import assert from "node:assert/strict";
import { rule } from "../shared/limits/rules.ts";
import { countedUnder, migratedOtpDatabase } from "./pg_fixture.ts";
import { PgOtpStore } from "./pg_store.ts";
import type { CodeRequest } from "./store.ts";

const db = await migratedOtpDatabase({ max: 4 });
const sql = db.sql;
let enqueued = 0;
const store = new PgOtpStore(sql, () => enqueued++);
Deno.test.afterAll(() => db.drop());

let n = 0;
const request = (phoneNumber: string, o: Partial<CodeRequest> = {}): CodeRequest => ({
  requestId: `req-${++n}-${crypto.randomUUID()}`,
  phoneNumber,
  purpose: "signup",
  clientAddress: "10.0.0.7",
  traceId: "trace",
  ...o,
});
const phone = () => `+1415${String(1_000_000 + ++n).slice(-7)}`;
const message = (id: string) => ({
  exchange: "otp.events",
  routingKey: "otp.issued",
  messageId: id,
  type: "bus.v1.OtpIssued",
  contentType: "application/protobuf",
  body: new Uint8Array([1, 2, 3]),
  timestamp: new Date(),
  correlationId: "trace",
  headers: { traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" },
});

Deno.test("a first request opens a challenge named after it; a second one resends it", async () => {
  const p = phone();
  const first = request(p);
  const a = await store.open(first, 300);
  assert.equal(a.created, true);
  assert.equal(a.state.status, "pending");
  assert.equal(a.state.attempts, 0);
  assert.equal(a.state.challenge.challengeId, first.requestId);
  const ttl = a.state.challenge.expiresAt.getTime() - a.state.challenge.issuedAt.getTime();
  assert.equal(ttl, 300_000);
  const b = await store.open(request(p), 300);
  assert.equal(b.created, true);
  assert.deepEqual(b.state.challenge, a.state.challenge);
});

Deno.test("the same request opened again is not created twice and keeps its state", async () => {
  const r = request(phone());
  const a = await store.open(r, 300);
  assert.equal(await store.beginAttempt(r.requestId, 3), true);
  const again = await store.open(r, 300);
  assert.equal(again.created, false);
  assert.equal(again.state.attempts, 1);
  assert.deepEqual(again.state.challenge, a.state.challenge);
  const [row] = await sql<{ n: number }[]>`
    select count(*)::int as n from otp.requests where request_id = ${r.requestId}`;
  assert.equal(row!.n, 1);
});

Deno.test("concurrent deliveries of one request record it once, on one challenge", async () => {
  const r = request(phone());
  const results = await Promise.all(Array.from({ length: 8 }, () => store.open(r, 300)));
  assert.equal(results.filter((x) => x.created).length, 1);
  for (const x of results) assert.equal(x.state.challenge.challengeId, r.requestId);
});

Deno.test("an admitted open counts its rules once and records the request; again, it replays", async () => {
  const r = request(phone());
  const rules = [rule("number_hourly", r.phoneNumber, 1, 3600)];
  const charge = { rules, eventId: `send:${r.requestId}` };
  const a = await store.admitAndOpen(r, 300, charge);
  assert.equal(a.refusal, undefined);
  assert.equal(a.refusal === undefined && a.created, true);
  assert.equal(a.refusal === undefined && a.state.challenge.challengeId, r.requestId);
  assert.equal(await countedUnder(sql, rules[0]!.key), 1);
  // The same event again, as a redelivery brings it: admitted without a count, not created.
  const again = await store.admitAndOpen(r, 300, charge);
  assert.equal(again.refusal === undefined && again.created, false);
  assert.equal(await countedUnder(sql, rules[0]!.key), 1);
  // Another request for the number is over the limit of one.
  const next = await store.admitAndOpen(request(r.phoneNumber), 300, {
    rules,
    eventId: `send:other-${r.requestId}`,
  });
  assert.equal(next.refusal?.reason, "number_hourly");
});

Deno.test("a refused open records nothing: no challenge, no request, no count", async () => {
  const fresh = request(phone());
  const live = request(phone());
  await store.open(live, 300); // a live challenge the refused request must not join
  for (const r of [fresh, request(live.phoneNumber)]) await refusedOpenRecordsNothing(r);
});

async function refusedOpenRecordsNothing(r: CodeRequest) {
  const before = await recordsOf(r.phoneNumber);
  const rules = [
    rule("number_hourly", r.phoneNumber, 5, 3600),
    rule("budget", `none-${r.requestId}`, 0, 3600),
  ];
  const out = await store.admitAndOpen(r, 300, { rules, eventId: `send:${r.requestId}` });
  assert.equal(out.refusal?.reason, "budget");
  assert.equal(await countedUnder(sql, rules[0]!.key), 0);
  assert.deepEqual(await recordsOf(r.phoneNumber), before);
  // Refused, the event is not remembered: admitted later, it counts.
  const later = await store.admitAndOpen(r, 300, {
    rules: [rules[0]!],
    eventId: `send:${r.requestId}`,
  });
  assert.equal(later.refusal === undefined && later.created, true);
  assert.equal(await countedUnder(sql, rules[0]!.key), 1);
}

async function recordsOf(phoneNumber: string) {
  const [c] = await sql<{ challenges: number; requests: number }[]>`
    select (select count(*)::int from otp.challenges where phone_number = ${phoneNumber})
             as challenges,
           (select count(*)::int from otp.requests where phone_number = ${phoneNumber})
             as requests`;
  return { ...c };
}

Deno.test("a requester's spent challenge is replaced by a new one", async () => {
  const p = phone();
  const first = request(p);
  await store.open(first, 300);
  const next = request(p, { spentChallengeId: first.requestId });
  const b = await store.open(next, 300);
  assert.equal(b.state.challenge.challengeId, next.requestId);
});

Deno.test("attempts stop at the maximum, and only a counted attempt enqueues its message", async () => {
  const r = request(phone());
  await store.open(r, 300);
  const before = enqueued;
  assert.equal(await store.beginAttempt(r.requestId, 2, message(`m-${r.requestId}-1`)), true);
  assert.equal(await store.beginAttempt(r.requestId, 2), true);
  assert.equal(await store.beginAttempt(r.requestId, 2, message(`m-${r.requestId}-3`)), false);
  assert.equal(enqueued, before + 1);
  const rows = await sql<{ message_id: string }[]>`
    select message_id from otp.outbox where message_id like ${`m-${r.requestId}-%`}`;
  assert.deepEqual(rows.map((x) => x.message_id), [`m-${r.requestId}-1`]);
});

Deno.test("finish writes the state, the message and the audit row; a later finish only audits", async () => {
  const r = request(phone());
  await store.open(r, 300);
  const audit = (event: string, outcome: string) => ({
    event,
    outcome,
    phoneNumber: r.phoneNumber,
    clientAddress: r.clientAddress,
  });
  await store.finish(r.requestId, "sent", {
    provider: "console",
    providerId: "p-1",
    audit: audit("code_sent", "console"),
  }, message(`f-${r.requestId}-1`));
  await store.finish(r.requestId, "failed", {
    error: "late",
    audit: audit("code_failed", "permanent"),
  }, message(`f-${r.requestId}-2`));
  const [req] = await sql<{ status: string; provider_id: string }[]>`
    select status, provider_id from otp.requests where request_id = ${r.requestId}`;
  assert.deepEqual({ ...req }, { status: "sent", provider_id: "p-1" });
  const out = await sql<
    { message_id: string; payload: Uint8Array; correlation_id: string; headers: unknown }[]
  >`
    select message_id, payload, correlation_id, headers from otp.outbox
     where message_id like ${`f-${r.requestId}-%`}`;
  assert.equal(out.length, 1);
  assert.equal(out[0]!.message_id, `f-${r.requestId}-1`);
  assert.deepEqual([...out[0]!.payload], [1, 2, 3]);
  assert.equal(out[0]!.correlation_id, "trace");
  assert.deepEqual(out[0]!.headers, {
    traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
  });
  const audits = await sql<{ event: string; outcome: string; client_address: string }[]>`
    select event, outcome, client_address from otp.audit_events
     where request_id = ${r.requestId} order by id`;
  assert.deepEqual(audits.map((a) => ({ ...a })), [
    { event: "code_sent", outcome: "console", client_address: "10.0.0.7" },
    { event: "code_failed", outcome: "permanent", client_address: "10.0.0.7" },
  ]);
});

Deno.test("a confirmed send overrides unconfirmed, and finish without an audit writes none", async () => {
  const r = request(phone());
  await store.open(r, 300);
  await store.finish(r.requestId, "unconfirmed", { error: "timeout" });
  await store.finish(r.requestId, "sent", { provider: "console", providerId: "p-2" });
  const [req] = await sql<{ status: string }[]>`
    select status from otp.requests where request_id = ${r.requestId}`;
  assert.equal(req!.status, "sent");
  const [a] = await sql<{ n: number }[]>`
    select count(*)::int as n from otp.audit_events where request_id = ${r.requestId}`;
  assert.equal(a!.n, 0);
});
