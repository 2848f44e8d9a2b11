// auth-service's PostgreSQL pools, as its task starts it: the serving pool opens at most
// DATABASE_POOL_MAX connections however many calls run at once, and the work no request
// waits on (here the metrics' outbox read) has a connection of its own, so it answers
// while every serving connection is stuck behind a lock.
import assert from "node:assert/strict";
import { pollUntil } from "../shared/async.ts";
import { signupAndVerify } from "../testing/fuzz/services.ts";
import { GET_PROFILE, rpc } from "../testing/rpc.ts";
import { startStack } from "../testing/stack.ts";

const POOL_MAX = 2;
const stack = await startStack({ authEnv: { DATABASE_POOL_MAX: String(POOL_MAX) } });
Deno.test.afterAll?.(() => stack.stop());
const fixture = await signupAndVerify(stack);

const profile = () =>
  rpc(stack.authUrl, GET_PROFILE, { phone_number: fixture.phone }, {
    headers: { authorization: `Bearer ${fixture.token}` },
  });

async function authBackends(): Promise<{ all: number; waitingOnLock: number }> {
  const [r] = await stack.sql<{ all: number; waiting: number }[]>`
    select count(*)::int as all,
           (count(*) filter (where wait_event_type = 'Lock'))::int as waiting
      from pg_stat_activity
     where datname = current_database() and application_name = 'auth-service'`;
  return { all: r!.all, waitingOnLock: r!.waiting };
}

Deno.test("64 concurrent calls open no more serving connections than DATABASE_POOL_MAX", async () => {
  const results = await Promise.all(Array.from({ length: 64 }, profile));
  assert.deepEqual([...new Set(results.map((r) => r.code))], ["ok"]);
  // The serving pool, the background connection, the outbox relay's and its LISTEN.
  const { all } = await authBackends();
  assert.ok(all <= POOL_MAX + 3, `${all} auth-service connections`);
});

Deno.test("metrics answer while every serving connection waits on a lock", async () => {
  const calls: Promise<{ code: string }>[] = [];
  await stack.sql.begin(async (tx) => {
    await tx`lock table auth.sessions in access exclusive mode`;
    // More calls than connections: postgres.js queues the rest behind those waiting.
    for (let i = 0; i < 4 * POOL_MAX; i++) calls.push(profile());
    await pollUntil(async () => (await authBackends()).waitingOnLock >= POOL_MAX, {
      timeoutMs: 3_000,
      what: "every serving connection waiting on the lock",
    });
    const res = await fetch(`${stack.authUrl}/metrics`, { signal: AbortSignal.timeout(1_500) });
    const text = await res.text();
    assert.equal(res.status, 200);
    assert.match(text, /^outbox_messages\b/m);
  });
  const results = await Promise.all(calls);
  assert.deepEqual([...new Set(results.map((r) => r.code))], ["ok"], "the lock was released");
});
