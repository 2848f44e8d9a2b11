import assert from "node:assert/strict";
import {
  backoff,
  deadline,
  delay,
  pollUntil,
  retryUntil,
  settlesWithin,
  TimeoutError,
  withTimeout,
} from "./async.ts";

Deno.test("delay rejects with the signal's reason when aborted, before or during the wait", async () => {
  const early = new AbortController();
  early.abort(new Error("already"));
  await assert.rejects(delay(10, { signal: early.signal }), /already/);
  const late = new AbortController();
  const waiting = delay(60_000, { signal: late.signal });
  late.abort(new Error("stop"));
  await assert.rejects(waiting, /stop/);
  await delay(0);
});

Deno.test("deadline passes the work's outcome through, or rejects on timeout or abort", async () => {
  assert.equal(await deadline(Promise.resolve(7), 1_000), 7);
  await assert.rejects(deadline(Promise.reject(new Error("work")), 1_000), /work/);
  await assert.rejects(deadline(new Promise(() => {}), 1), (e) => e instanceof TimeoutError);
  const ac = new AbortController();
  const pending = deadline(new Promise(() => {}), 60_000, {
    signal: ac.signal,
    error: (cause) => new Error(`ended by ${cause}`),
  });
  ac.abort();
  await assert.rejects(pending, /ended by abort/);
  await assert.rejects(withTimeout(() => new Promise(() => {}), 1), /timed out/);
});

Deno.test("settlesWithin says whether a promise settled in time and never rejects", async () => {
  assert.equal(await settlesWithin(Promise.reject(new Error("x")), 1_000), true);
  assert.equal(await settlesWithin(new Promise(() => {}), 1), false);
});

Deno.test("backoff doubles from the base up to the cap, with the chosen jitter", () => {
  const o = { baseMs: 100, maxMs: 1_000 };
  assert.deepEqual([1, 2, 3, 4, 5, 9].map((a) => backoff(a, o)), [
    100,
    200,
    400,
    800,
    1_000,
    1_000,
  ]);
  assert.equal(backoff(3, { ...o, jitter: "full", random: () => 0.5 }), 200);
  assert.equal(backoff(3, { ...o, jitter: "full", random: () => 0 }), 0);
  assert.equal(backoff(1, { ...o, jitter: 0.3, random: () => 0 }), 70);
  assert.equal(backoff(1, { ...o, jitter: 0.3, random: () => 0.999999 }), 130);
});

Deno.test("pollUntil returns the first truthy value, or names what it waited for", async () => {
  let n = 0;
  assert.equal(await pollUntil(() => (++n >= 3 ? `got ${n}` : false), { intervalMs: 1 }), "got 3");
  await assert.rejects(
    pollUntil(() => false, { timeoutMs: 20, intervalMs: 5, what: "the moon" }),
    /timed out after 20 ms waiting for the moon/,
  );
});

Deno.test("retryUntil retries a failing call and rethrows once the deadline passed", async () => {
  let calls = 0;
  assert.equal(
    await retryUntil(
      "flaky",
      () => (++calls < 2 ? Promise.reject(new Error("no")) : Promise.resolve("yes")),
    ),
    "yes",
  );
  assert.equal(calls, 2);
  await assert.rejects(
    retryUntil("dead", () => Promise.reject(new Error("down")), { deadlineMs: 0 }),
    /down/,
  );
});
