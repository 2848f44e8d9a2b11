// The limits engine against real PostgreSQL: exact under concurrency, all or none,
// 0 allows nothing, refunds, and a busy key never holds up another.
import assert from "node:assert/strict";
import { createPool } from "../shared/postgres.ts";
import { LimitsEngine } from "../shared/limits/engine.ts";
import { rule, SHARED_REASONS } from "../shared/limits/rules.ts";
import { limitsIncludes } from "../shared/limits/schema.ts";
import { createDatabase } from "../testing/database.ts";
import fc from "fast-check";

const db = await createDatabase();
const sql = createPool({ url: db.url, applicationName: "tests", max: 20 });
await sql.unsafe("create schema lt");
await sql.unsafe(limitsIncludes("lt").limits_v1!);
await sql.unsafe(limitsIncludes("lt").limits_v2!);
await sql.unsafe(limitsIncludes("lt").limits_v3!);
await sql.unsafe(limitsIncludes("lt").limits_v4!);
await sql.unsafe(limitsIncludes("lt").limits_v5!);
// The fourth version, to check that admit_each answers and counts as its admit() does.
await sql.unsafe("create schema lt_fourth");
for (const v of ["limits_v1", "limits_v2", "limits_v3", "limits_v4"]) {
  await sql.unsafe(limitsIncludes("lt_fourth")[v]!);
}
// The second version, to check that the third admits and counts the same.
await sql.unsafe("create schema lt_second");
await sql.unsafe(limitsIncludes("lt_second").limits_v1!);
await sql.unsafe(limitsIncludes("lt_second").limits_v2!);
// The first version alone, to check that the second computes the same counters.
await sql.unsafe("create schema lt_first");
await sql.unsafe(limitsIncludes("lt_first").limits_v1!);
const engine = new LimitsEngine(sql, "lt");
Deno.test.afterAll(async () => {
  await sql.end({ timeout: 2 });
  await db.drop();
});

let n = 0;
const fresh = () => `k${++n}-${crypto.randomUUID()}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

type Reserved = Awaited<ReturnType<typeof sql.reserve>>;

/**
 * Runs `fn` while another transaction holds `key`'s counter row; `release` (also run
 * afterwards) ends that transaction.
 */
async function whileHeld<T>(key: string, fn: (release: () => Promise<void>) => Promise<T>) {
  const holder = await sql.reserve();
  const release = async () => void await holder`rollback`;
  try {
    await holder`begin`;
    await holder`select 1 from lt.limit_counters where key = ${key} for update`;
    return await fn(release);
  } finally {
    await release();
    holder.release();
  }
}

/** Runs `fn` on a connection that gives up waiting for a lock after `ms`. */
async function withLockTimeout<T>(ms: number, fn: (c: Reserved) => Promise<T>): Promise<T> {
  const probe = await sql.reserve();
  try {
    await probe.unsafe(`set lock_timeout = '${ms}ms'`);
    return await fn(probe);
  } finally {
    // The setting stays with the pooled connection; the next test must not inherit it.
    await probe`reset lock_timeout`;
    probe.release();
  }
}

Deno.test("200 concurrent admits under a limit of 7 admit exactly 7", async () => {
  const r = rule("budget", fresh(), 7, 3600);
  const results = await Promise.all(Array.from({ length: 200 }, () => engine.admit([r])));
  assert.equal(results.filter((a) => a.admitted).length, 7);
  for (const a of results) {
    if (!a.admitted) {
      assert.equal(a.reason, "budget");
      assert.equal(a.message, "the hourly SMS budget is spent; try again later");
      assert.ok(
        a.retryAfterSeconds >= 3599 && a.retryAfterSeconds <= 3661,
        `${a.retryAfterSeconds}`,
      );
    }
  }
});

Deno.test("concurrent admits over overlapping keys in any order neither deadlock nor overshoot", async () => {
  const [a, b, c] = [fresh(), fresh(), fresh()];
  const sets = [[a, b], [b, c], [c, a], [a, b, c]].map((keys) =>
    keys.map((k) => rule("number_hourly", k, 10, 3600))
  );
  const results = await Promise.all(
    Array.from({ length: 120 }, (_, i) => engine.admit([...sets[i % 4]!].reverse())),
  );
  const admitted = results.flatMap((r, i) => r.admitted ? sets[i % 4]!.map((x) => x.key) : []);
  for (const k of [a, b, c]) {
    assert.ok(admitted.filter((x) => x === k).length <= 10, `${k} admitted at most 10 times`);
  }
});

Deno.test("a limit of 0 admits nothing", async () => {
  const r = rule("budget", fresh(), 0, 60);
  for (let i = 0; i < 3; i++) {
    const a = await engine.admit([r]);
    assert.equal(a.admitted, false);
    if (!a.admitted) assert.equal(a.retryAfterSeconds, 60);
  }
});

Deno.test("an event is recorded under every rule or none, and the longest wait is reported", async () => {
  const wide = rule("number_daily", fresh(), 5, 86_400);
  const narrow = rule("cooldown", fresh(), 1, 60);
  assert.equal((await engine.admit([wide, narrow])).admitted, true);
  const refused = await engine.admit([wide, narrow]);
  assert.ok(!refused.admitted && refused.reason === "cooldown");
  // The refused attempt left wide's count at 1: four more fit, the fifth does not.
  for (let i = 0; i < 4; i++) assert.equal((await engine.admit([wide])).admitted, true);
  const full = await engine.admit([narrow, wide]);
  assert.ok(!full.admitted && full.reason === "number_daily", "the day limit waits longest");
  assert.ok(full.retryAfterSeconds > 86_000);
});

Deno.test("a refunded reservation gives its place back, once", async () => {
  const r = rule("pair_hourly", fresh(), 1, 3600);
  const first = await engine.admit([r]);
  assert.ok(first.admitted);
  assert.equal((await engine.admit([r])).admitted, false);
  await engine.refund(first.reservation);
  await engine.refund(first.reservation);
  assert.equal((await engine.admit([r])).admitted, true);
  assert.equal((await engine.admit([r])).admitted, false);
});

Deno.test("a limit lifts once its window has passed", async () => {
  const r = rule("cooldown", fresh(), 1, 1);
  assert.equal((await engine.admit([r])).admitted, true);
  const refused = await engine.admit([r]);
  assert.ok(!refused.admitted && refused.retryAfterSeconds <= 2);
  await sleep(refused.retryAfterSeconds * 1000);
  assert.equal((await engine.admit([r])).admitted, true);
});

Deno.test("a key locked by another transaction does not hold up a different key", async () => {
  const busy = rule("number_hourly", fresh(), 5, 3600);
  const other = rule("number_hourly", fresh(), 5, 3600);
  assert.ok((await engine.admit([busy])).admitted);
  await whileHeld(busy.key, async () => {
    // Would wait on the held row; admit on another key must not.
    assert.equal((await engine.admit([other])).admitted, true);
    await withLockTimeout(200, (probe) =>
      assert.rejects(
        probe.unsafe("select * from lt.admit($1::text[], '{5}', '{3600}')", [[busy.key]]),
        /lock timeout/,
      ));
  });
});

Deno.test("a shared counter is locked after the others, so a call waiting on a number does not hold its country", async () => {
  const number = rule("number_hourly", fresh(), 5, 3600);
  const country = rule("country_velocity", fresh(), 1000, 3600);
  assert.ok((await engine.admit([number, country])).admitted);
  await whileHeld(number.key, async (release) => {
    // Waits on the held number row; in plain key order it would hold the country first.
    const waiting = engine.admit([country, number]);
    await sleep(100);
    const [r] = await withLockTimeout(300, (probe) =>
      probe.unsafe<{ admitted: boolean }[]>(
        "select admitted from lt.admit($1::text[], '{1000}', '{3600}')",
        [[country.key]],
      ));
    assert.equal(r!.admitted, true);
    await release();
    assert.equal((await waiting).admitted, true);
  });
});

Deno.test("concurrent admits and refunds mixing shared and per-number counters neither deadlock nor overshoot", async () => {
  const [a, b] = [fresh(), fresh()];
  const [x, y] = [fresh(), fresh()];
  const sets = [
    [rule("number_hourly", a, 10, 3600), rule("country_velocity", x, 30, 3600)],
    [rule("country_velocity", x, 30, 3600), rule("number_daily", b, 10, 3600)],
    [rule("budget", y, 30, 3600), rule("number_hourly", a, 10, 3600)],
    [
      rule("number_daily", b, 10, 3600),
      rule("budget", y, 30, 3600),
      rule("country_velocity", x, 30, 3600),
    ],
  ];
  // Every third admitted event is refunded straight away, while the others still run.
  const results = await Promise.all(
    Array.from({ length: 160 }, async (_, i) => {
      const s = sets[i % 4]!;
      const a = await engine.admit(i % 2 ? [...s].reverse() : s);
      if (a.admitted && i % 3 === 0) {
        await engine.refund(a.reservation);
        return { admitted: false };
      }
      return a;
    }),
  );
  const admitted = results.flatMap((r, i) => r.admitted ? sets[i % 4]!.map((q) => q.key) : []);
  for (const r of sets.flat()) {
    assert.ok(admitted.filter((k) => k === r.key).length <= r.limit, `${r.key} within its limit`);
  }
  assert.ok(admitted.length > 0);
});

Deno.test("the schema locks last exactly the reasons the rules call shared, in admit, refund and admit_each", () => {
  const sql4 = limitsIncludes("lt").limits_v4! + limitsIncludes("lt").limits_v5!;
  const lists = [...sql4.matchAll(/split_part\(k, ':', 1\) in \(([^)]*)\)/g)].map((m) =>
    [...m[1]!.matchAll(/'([a-z_]+)'/g)].map((r) => r[1]).sort()
  );
  assert.equal(lists.length, 3);
  for (const l of lists) assert.deepEqual(l, [...SHARED_REASONS].sort());
});

Deno.test("the sweep deletes stale counters but never waits on one an admission holds", async () => {
  const [held, idle] = [fresh(), fresh()];
  for (const k of [held, idle]) {
    await sql`insert into lt.limit_counters (key, slot_seconds, first_slot, counts, updated_at)
              values (${k}, 1, 0, array_fill(0, array[61]), now() - interval '1 day')`;
  }
  await whileHeld(held, () =>
    withLockTimeout(
      500,
      (probe) => new LimitsEngine(probe as unknown as typeof sql, "lt").sweep(),
    ));
  const left = await sql`select key from lt.limit_counters where key in (${held}, ${idle})`;
  assert.deepEqual(left.map((r) => r.key), [held]);
  await engine.sweep();
  assert.equal((await sql`select 1 from lt.limit_counters where key = ${held}`).length, 0);
});

Deno.test("an event admitted once is admitted again without being counted again, even concurrently", async () => {
  const r = rule("cooldown", fresh(), 1, 3600);
  const event = `send:${crypto.randomUUID()}`;
  const first = await engine.admit([r], { eventId: event });
  assert.equal(first.admitted, true);
  // A retry of the same event (its handling failed after the admission) is let through
  // with the first admission's time, and charges nothing.
  const again = await Promise.all(
    Array.from({ length: 10 }, () => engine.admit([r], { eventId: event })),
  );
  for (const a of again) {
    assert.equal(a.admitted, true);
    if (a.admitted && first.admitted) assert.equal(a.reservation.at, first.reservation.at);
  }
  // Another event under the same rule is refused: the one slot is still taken once.
  const other = await engine.admit([r], { eventId: `send:${crypto.randomUUID()}` });
  assert.equal(other.admitted, false);
  // A refused event is not remembered as admitted: once the slot is free it is counted.
  const refused = `send:${crypto.randomUUID()}`;
  assert.equal((await engine.admit([r], { eventId: refused })).admitted, false);
  if (first.admitted) await engine.refund(first.reservation);
  assert.equal((await engine.admit([r], { eventId: refused })).admitted, true);
  assert.equal(
    (await engine.admit([r], { eventId: `send:${crypto.randomUUID()}` })).admitted,
    false,
  );
  // The sweep keeps recent admissions: the first event is still recognised afterwards.
  await engine.sweep();
  assert.equal((await engine.admit([r], { eventId: event })).admitted, true);
});

Deno.test("the PL/pgSQL limit_slots returns exactly what the first version returned", async () => {
  const input = fc.record({
    counts: fc.array(fc.integer({ min: 0, max: 9 }), { minLength: 0, maxLength: 70 }),
    firstOffset: fc.integer({ min: -200, max: 80 }),
    sameWidth: fc.boolean(),
    added: fc.integer({ min: 0, max: 2 }),
  });
  const cur = 29_000_000;
  await fc.assert(
    fc.asyncProperty(input, async ({ counts, firstOffset, sameWidth, added }) => {
      const args = [counts, cur + firstOffset, sameWidth ? 60 : 30, 60, cur, added];
      const q = (schema: string) =>
        sql.unsafe<{ slots: number[] }[]>(
          `select ${schema}.limit_slots($1::int[], $2::bigint, $3::float8, $4::float8,
             $5::bigint, $6::int) as slots`,
          args as never,
        );
      const [[first], [second]] = await Promise.all([q("lt_first"), q("lt")]);
      assert.deepEqual(second!.slots, first!.slots);
      assert.equal(second!.slots.length, 61);
    }),
    { numRuns: 300 },
  );
});

/** A generated key's row as it was last written, if it has one. */
interface StoredKey {
  counts: number[];
  /** Its first slot, relative to the current one. */
  firstOffset: number;
  /** Written with the window it is charged with now, or with half of it. */
  sameWidth: boolean;
  window: number;
  stored: boolean;
}

/** Writes each stored key's row, named `names[i]`, into every schema given. */
async function storeRows(schemas: string[], names: string[], keys: StoredKey[]) {
  for (const schema of schemas) {
    for (const [i, k] of keys.entries()) {
      if (!k.stored) continue;
      const width = k.window / 60;
      const cur = Math.floor(Date.now() / 1000 / width);
      await sql.unsafe(
        `insert into ${schema}.limit_counters (key, slot_seconds, first_slot, counts)
         values ($1, $2, $3, $4::int[])`,
        [names[i]!, k.sameWidth ? width : width / 2, cur + k.firstOffset, k.counts] as never,
      );
    }
  }
}

/** The named keys' rows in `schema`, by key. */
function storedRows(schema: string, names: string[]) {
  return sql.unsafe(
    `select key, slot_seconds, first_slot, counts from ${schema}.limit_counters
      where key = any($1::text[]) order by key`,
    [names] as never,
  );
}

Deno.test("the upsert admit admits, waits and counts exactly as the second version did", async () => {
  const key = fc.record({
    counts: fc.oneof(
      fc.array(fc.integer({ min: 0, max: 4 }), { minLength: 61, maxLength: 61 }),
      fc.array(fc.integer({ min: 0, max: 4 }), { minLength: 0, maxLength: 70 }),
    ),
    // Slots relative to the current one: old rows, a row of this slot, a clock gone back.
    firstOffset: fc.constantFrom(-60, -60, -59, -30, -61, -200, -55, 3),
    sameWidth: fc.boolean(),
    limit: fc.integer({ min: 0, max: 40 }),
    window: fc.constantFrom(60_000, 120_000),
    stored: fc.boolean(),
  });
  await fc.assert(
    fc.asyncProperty(fc.array(key, { minLength: 1, maxLength: 3 }), async (keys) => {
      const names = keys.map(() => fresh());
      await storeRows(["lt", "lt_second"], names, keys);
      const admit = (schema: string) =>
        sql.unsafe<{ admitted: boolean; rule: number | null; retry_after: number; at: number }[]>(
          `select * from ${schema}.admit($1::text[], $2::int[], $3::float8[])`,
          [names, keys.map((k) => k.limit), keys.map((k) => k.window)] as never,
        );
      const [[lean], [second]] = [await admit("lt"), await admit("lt_second")];
      // What each key counts in its window now: a refusal may leave a row moved to the
      // current slot that the second version left where it was.
      const counted = (schema: string) =>
        sql.unsafe(
          `select l.key, lt.limit_slots(l.counts, l.first_slot, l.slot_seconds, u.w,
                    floor($3::float8 / u.w)::bigint, 0) as slots
             from ${schema}.limit_counters l
             join unnest($1::text[], $2::float8[]) u(k, w) on u.k = l.key
            order by l.key`,
          [names, keys.map((k) => k.window / 60), lean!.at] as never,
        );
      // Both calls in one slot of every window, or the comparison says nothing.
      fc.pre(keys.every((k) => {
        const w = k.window / 60;
        return Math.floor(lean!.at / w) === Math.floor(second!.at / w);
      }));
      assert.equal(lean!.admitted, second!.admitted);
      assert.equal(lean!.rule, second!.rule);
      if (lean!.admitted) {
        assert.deepEqual(await storedRows("lt", names), await storedRows("lt_second", names));
      } else {
        assert.ok(Math.abs(lean!.retry_after - second!.retry_after) < 1);
        assert.deepEqual(await counted("lt"), await counted("lt_second"));
      }
    }),
    { numRuns: 300 },
  );
});

Deno.test("with asynchronous commits a count stays exact under concurrency", async () => {
  const fast = new LimitsEngine(sql, "lt", { asyncCommit: true });
  const r = rule("address", fresh(), 5, 600);
  const results = await Promise.all(Array.from({ length: 50 }, () => fast.admit([r])));
  assert.equal(results.filter((a) => a.admitted).length, 5);
  // On one connection: the setting ends with the admitting statement.
  const one = await sql.reserve();
  try {
    await new LimitsEngine(one as unknown as typeof sql, "lt", { asyncCommit: true })
      .admit([rule("address", fresh(), 5, 600)]);
    const [c] = await one`select current_setting('synchronous_commit') as v`;
    assert.equal(c!.v, "on");
  } finally {
    one.release();
  }
});

Deno.test("admit_each answers and counts as admit() of each event alone, in input order", async () => {
  const key = fc.record({
    counts: fc.oneof(
      fc.array(fc.integer({ min: 0, max: 3 }), { minLength: 61, maxLength: 61 }),
      fc.array(fc.integer({ min: 0, max: 3 }), { minLength: 0, maxLength: 70 }),
    ),
    firstOffset: fc.constantFrom(-60, -60, -59, -30, -61, -200, 3),
    sameWidth: fc.boolean(),
    window: fc.constantFrom(60_000, 120_000),
    stored: fc.boolean(),
    shared: fc.boolean(),
  });
  const event = fc.record({ key: fc.nat(2), limit: fc.integer({ min: 0, max: 12 }) });
  await fc.assert(
    fc.asyncProperty(
      fc.array(key, { minLength: 3, maxLength: 3 }),
      fc.array(event, { minLength: 1, maxLength: 12 }),
      async (keys, events) => {
        // Shared and per-number keys, so the order admit_each takes them in varies.
        const names = keys.map((k) => `${k.shared ? "address" : "number_hourly"}:${fresh()}`);
        await storeRows(["lt", "lt_fourth"], names, keys);
        type Row = {
          admitted: boolean;
          rule: number | null;
          retry_after: number | null;
          at: number;
        };
        const each = await sql.unsafe<(Row & { i: number })[]>(
          `select * from lt.admit_each($1::text[], $2::int[], $3::float8[])`,
          [
            events.map((e) => names[e.key]!),
            events.map((e) => e.limit),
            events.map((e) => keys[e.key]!.window),
          ] as never,
        );
        const alone: Row[] = [];
        for (const e of events) {
          const [r] = await sql.unsafe<Row[]>(
            `select * from lt_fourth.admit($1::text[], $2::int[], $3::float8[])`,
            [[names[e.key]!], [e.limit], [keys[e.key]!.window]] as never,
          );
          alone.push(r!);
        }
        // Every call in one slot of every window, or the comparison says nothing.
        fc.pre(keys.every((k) => {
          const w = k.window / 60;
          return alone.every((r) => Math.floor(r.at / w) === Math.floor(each[0]!.at / w));
        }));
        assert.deepEqual(each.map((r) => r.i).sort((a, b) => a - b), events.map((_, i) => i + 1));
        for (const r of each) {
          const a = alone[r.i - 1]!;
          assert.equal(r.admitted, a.admitted, `event ${r.i}`);
          assert.equal(r.rule, a.rule, `event ${r.i}`);
          if (!a.admitted) assert.ok(Math.abs(r.retry_after! - a.retry_after!) < 1, `event ${r.i}`);
        }
        assert.deepEqual(await storedRows("lt", names), await storedRows("lt_fourth", names));
      },
    ),
    { numRuns: 200 },
  );
});

Deno.test("concurrent admit_each and admit over the same keys neither deadlock nor overshoot", async () => {
  const rules = [rule("number_hourly", fresh(), 9, 3600), rule("address", fresh(), 13, 3600)];
  const batch = () =>
    sql.unsafe<{ admitted: boolean }[]>(
      `select admitted from lt.admit_each($1::text[], $2::int[], $3::float8[])`,
      [
        [...rules, ...rules].map((r) => r.key),
        [...rules, ...rules].map((r) => r.limit),
        [...rules, ...rules].map((r) => r.windowSeconds),
      ] as never,
    );
  const results = await Promise.all(
    Array.from({ length: 30 }, (_, i) => i % 2 ? batch() : engine.admit(rules)),
  );
  const counted = await sql<{ key: string; n: number }[]>`
    select key, (select sum(c)::int from unnest(counts) c) as n from lt.limit_counters
     where key = any(${rules.map((r) => r.key)}::text[]) order by key`;
  assert.deepEqual(
    Object.fromEntries(counted.map((r) => [r.key, r.n])),
    { [rules[0]!.key]: 9, [rules[1]!.key]: 13 },
  );
  const admittedBatches = results.filter((r) => Array.isArray(r)).flat()
    .filter((r) => (r as { admitted: boolean }).admitted).length;
  const admittedCalls = results.filter((r) => !Array.isArray(r) && r.admitted).length;
  assert.equal(admittedBatches + 2 * admittedCalls, 22, "each admitted call counted under both");
});
