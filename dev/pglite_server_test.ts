import assert from "node:assert/strict";
import { createPool } from "../shared/postgres.ts";
import { PGLITE_POOL_MAX, startPglite } from "./pglite_server.ts";

Deno.test("postgres.js runs production SQL against the embedded database", async (t) => {
  const server = await startPglite({ idleInTransactionTimeoutMs: 1_000 });
  const sql = createPool({ url: server.url, max: PGLITE_POOL_MAX, applicationName: "test" });
  const other = createPool({ url: server.url, max: PGLITE_POOL_MAX, applicationName: "other" });
  try {
    await sql`create table jobs (id uuid primary key default gen_random_uuid(),
      payload bytea not null, due timestamptz not null, done boolean not null default false)`;

    await t.step("bytea, gen_random_uuid, timestamptz and make_interval round-trip", async () => {
      const payload = new Uint8Array([0, 1, 127, 128, 255]);
      const due = new Date("2030-01-02T03:04:05.678Z");
      const [row] = await sql`insert into jobs (payload, due)
        values (${payload}, ${due} + make_interval(secs => ${60}))
        returning id, payload, due`;
      assert.match(String(row?.id), /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-/);
      assert.deepEqual(new Uint8Array(row?.payload), payload);
      assert.equal((row?.due as Date).getTime(), due.getTime() + 60_000);
    });

    await t.step(
      "concurrent transactions with skip locked and advisory locks each claim one row",
      async () => {
        await sql`insert into jobs (payload, due) select '\\x00', now() from generate_series(1, 19)`;
        const claimed = await Promise.all(
          Array.from({ length: 20 }, (_, i) =>
            (i % 2 ? sql : other).begin(async (tx) => {
              await tx`select pg_advisory_xact_lock(hashtext(${"jobs"}))`;
              const [job] = await tx`select id from jobs where not done
            order by id limit 1 for update skip locked`;
              await tx`update jobs set done = true where id = ${job?.id}`;
              return String(job?.id);
            })),
        );
        assert.equal(new Set(claimed).size, 20);
      },
    );

    await t.step("concurrent clients get their own results, errors included", async () => {
      const results = await Promise.allSettled(Array.from({ length: 300 }, (_, i) => {
        const pool = i % 2 ? sql : other;
        // A fresh text per query makes postgres.js Parse/Describe/Flush, then Bind/Execute/Sync.
        if (i % 10 === 3) return pool.unsafe(`select * from missing_${i} where a = $1`, [i]);
        return pool.unsafe(`select $1::int as v /* ${i} */`, [i]);
      }));
      results.forEach((r, i) => {
        if (i % 10 === 3) assert.equal(r.status, "rejected");
        else assert.deepEqual(r.status === "fulfilled" ? r.value[0]?.v : r.reason, i);
      });
    });

    await t.step("a transaction idle while others wait is rolled back as a deadlock", async () => {
      const stuck = sql.begin(async (tx) => {
        await tx`insert into jobs (payload, due) values ('\\x01', now())`;
        await other`select 1`; // waits for the backend this transaction holds
      });
      await assert.rejects(stuck, (err: Error & { code?: string }) => err.code === "40P01");
      const [row] = await other`select count(*)::int as n from jobs where payload = '\\x01'`;
      assert.equal(row?.n, 0);
    });

    await t.step("a client that disconnects mid-transaction leaves nothing behind", async () => {
      const gone = createPool({ url: server.url, max: 1, applicationName: "gone" });
      const reserved = await gone.reserve();
      await reserved`begin`;
      await reserved`insert into jobs (payload, due) values ('\\x02', now())`;
      reserved.release();
      await gone.end({ timeout: 0 });
      const [row] = await sql`select count(*)::int as n from jobs where payload = '\\x02'`;
      assert.equal(row?.n, 0);
    });
  } finally {
    await Promise.all([sql.end(), other.end()]);
    await server.close();
  }
});

Deno.test("data in dataDir survives a restart and the directory is locked while open", async () => {
  const dir = await Deno.makeTempDir();
  const dataDir = `${dir}/pgdata`;
  try {
    const first = await startPglite({ dataDir });
    const sql = createPool({ url: first.url, max: 1, applicationName: "test" });
    await sql`create table kept (v text)`;
    await sql`insert into kept values ('hello')`;
    await sql.end();
    await assert.rejects(startPglite({ dataDir }), /in use/);
    await first.close();

    const second = await startPglite({ dataDir });
    const again = createPool({ url: second.url, max: 1, applicationName: "test" });
    try {
      assert.deepEqual([...await again`select v from kept`], [{ v: "hello" }]);
    } finally {
      await again.end();
      await second.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
