// The outbox relay against real PostgreSQL, with a broker double that confirms or
// refuses each publish: batches, kept failures with backoff, replicas sharing rows, a
// peer woken by NOTIFY rather than by its poll, a batch waiting on its confirms
// without holding a connection requests are served from, and the relay's own vacuum of
// its table (when due, not while a backlog drains, not by a role that may not).
import assert from "node:assert/strict";
import { deadline, delay, pollUntil } from "../shared/async.ts";
import type { Broker, OutgoingMessage } from "../shared/bus.ts";
import { PublishError } from "../shared/bus.ts";
import { createLogger } from "../shared/log.ts";
import { BATCH, enqueue, outboxChannel, OutboxRelay } from "../shared/outbox.ts";
import { migrate, readMigrations } from "../shared/migrations.ts";
import { createPool, servicePools } from "../shared/postgres.ts";
import { limitsIncludes } from "../shared/limits/schema.ts";
import { prepareRuntime } from "../shared/service_runtime.ts";
import type { Sql } from "../shared/postgres.ts";
import { createDatabase, DATABASE_URL } from "../testing/database.ts";

const logger = createLogger("test", "error");

class BrokerDouble implements Broker {
  readonly published: string[] = [];
  /** When set, confirms wait for it. */
  confirms: Promise<void> | undefined;
  constructor(private readonly refuse: (id: string) => boolean = () => false) {}
  async publish(m: OutgoingMessage): Promise<void> {
    await this.confirms;
    if (this.refuse(m.messageId)) throw new PublishError("broker refused the message", "nacked");
    this.published.push(m.messageId);
  }
  consume(): void {}
  stopConsuming(): Promise<void> {
    return Promise.resolve();
  }
  isReady(): boolean {
    return true;
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

function message(id: string): OutgoingMessage {
  return {
    exchange: "verification",
    routingKey: "otp_routing_key",
    messageId: id,
    type: "bus.v1.OtpRequested",
    contentType: "application/x-protobuf",
    body: new Uint8Array([1, 2, 3]),
    timestamp: new Date(),
  };
}

async function withOutbox(fn: (sql: Sql) => Promise<void>): Promise<void> {
  const db = await createDatabase();
  const sql = createPool({ url: db.url, applicationName: "test", max: 6 });
  try {
    const migrations = await readMigrations(
      new URL("../auth_service/migrations/", import.meta.url),
    );
    await migrate(sql, "auth", migrations, logger);
    await fn(sql);
  } finally {
    await sql.end();
    await db.drop();
  }
}

async function fill(sql: Sql, n: number, prefix = "m"): Promise<string[]> {
  const ids = Array.from({ length: n }, (_, i) => `${prefix}${String(i).padStart(4, "0")}`);
  await sql.begin(async (tx) => {
    for (const id of ids) await enqueue(tx, "auth", message(id));
  });
  return ids;
}

/** How often the outbox was vacuumed, and the dead rows it holds, by PostgreSQL's statistics. */
async function outboxVacuums(sql: Sql): Promise<{ vacuums: number; dead: number }> {
  const [r] = await sql<{ vacuums: number; dead: number }[]>`
    select vacuum_count::int as vacuums, n_dead_tup::int as dead from pg_stat_user_tables
     where relid = 'auth.outbox'::regclass`;
  return r!;
}

Deno.test("the relay publishes a batch at a time and deletes exactly what was confirmed", async () => {
  await withOutbox(async (sql) => {
    const ids = await fill(sql, BATCH + 50);
    const broker = new BrokerDouble();
    const relay = new OutboxRelay({ sql, schema: "auth", broker, logger });
    assert.equal(await relay.relayOnce(), BATCH);
    assert.deepEqual(broker.published, ids.slice(0, BATCH), "oldest first, in order");
    const [left] = await sql`select count(*)::int as n from auth.outbox`;
    assert.equal(left!.n, 50);
    assert.equal(await relay.relayOnce(), 50);
    assert.equal(await relay.relayOnce(), 0);
    assert.deepEqual(broker.published, ids);
  });
});

Deno.test("rows whose publish failed stay, with their error and a backoff; the others are deleted", async () => {
  await withOutbox(async (sql) => {
    await fill(sql, 10);
    const broker = new BrokerDouble((id) => id === "m0003" || id === "m0007");
    const relay = new OutboxRelay({ sql, schema: "auth", broker, logger });
    assert.equal(await relay.relayOnce(), 10);
    const rows = await sql<
      { message_id: string; attempts: number; last_error: string; later: boolean }[]
    >`
      select message_id, attempts, last_error, available_at > now() as later
        from auth.outbox order by id`;
    assert.deepEqual(rows.map((r) => ({ ...r })), [
      { message_id: "m0003", attempts: 1, last_error: "broker refused the message", later: true },
      { message_id: "m0007", attempts: 1, last_error: "broker refused the message", later: true },
    ]);
    assert.equal(await relay.relayOnce(), 0, "not retried before its backoff is over");
    assert.equal(broker.published.length, 8);
  });
});

Deno.test("two relays at once share the rows: each message is published once", async () => {
  await withOutbox(async (sql) => {
    const ids = await fill(sql, BATCH * 4);
    const a = new BrokerDouble();
    const b = new BrokerDouble();
    const ra = new OutboxRelay({ sql, schema: "auth", broker: a, logger });
    const rb = new OutboxRelay({ sql, schema: "auth", broker: b, logger });
    const drain = async (r: OutboxRelay) => {
      while (await r.relayOnce() > 0) { /* next batch */ }
    };
    await Promise.all([drain(ra), drain(rb)]);
    const all = [...a.published, ...b.published].sort();
    assert.deepEqual(all, ids);
  });
});

Deno.test("a running relay vacuums its outbox once it has relayed vacuumEvery rows, and not before", async () => {
  await withOutbox(async (sql) => {
    const broker = new BrokerDouble();
    const relay = new OutboxRelay({
      sql,
      schema: "auth",
      broker,
      logger,
      pollMs: 20,
      vacuumEvery: 40,
    });
    await fill(sql, 30);
    relay.start();
    try {
      await pollUntil(() => broker.published.length === 30, { what: "the first rows relayed" });
      await delay(100);
      assert.equal((await outboxVacuums(sql)).vacuums, 0, "30 rows relayed: no vacuum yet");
      await fill(sql, 10, "more");
      await pollUntil(async () => (await outboxVacuums(sql)).vacuums === 1, {
        what: "the relay's vacuum",
      });
      assert.equal((await outboxVacuums(sql)).dead, 0, "the deleted rows are gone from the table");
    } finally {
      await relay.stop();
    }
  });
});

Deno.test("a relay draining a backlog vacuums once it has caught up, not every vacuumEvery rows", async () => {
  await withOutbox(async (sql) => {
    await fill(sql, BATCH * 3);
    const broker = new BrokerDouble();
    const relay = new OutboxRelay({ sql, schema: "auth", broker, logger, vacuumEvery: 100 });
    relay.start();
    try {
      await pollUntil(async () => (await outboxVacuums(sql)).vacuums > 0, {
        what: "the relay's vacuum",
      });
      assert.equal(broker.published.length, BATCH * 3, "the whole backlog went out first");
      await delay(200);
      assert.equal(
        (await outboxVacuums(sql)).vacuums,
        1,
        "three full batches of 200, one vacuum after them",
      );
    } finally {
      await relay.stop();
    }
  });
});

Deno.test("a relay whose role does not own the outbox leaves it to autovacuum, said once, and relays on", async () => {
  await withOutbox(async (sql) => {
    const role = `test_relay_${crypto.randomUUID().slice(0, 8)}`;
    await sql.unsafe(`create role ${role} login`);
    await sql.unsafe(`grant usage on schema auth to ${role}`);
    await sql.unsafe(`grant select, update, delete on auth.outbox to ${role}`);
    const [db] = await sql<{ name: string }[]>`select current_database() as name`;
    const url = new URL(DATABASE_URL);
    url.username = role;
    url.pathname = `/${db!.name}`;
    const asRole = createPool({ url: url.toString(), applicationName: "test", max: 1 });
    const lines: { msg: string }[] = [];
    const log = createLogger("test", "info", {}, (l) => lines.push(JSON.parse(l)));
    const broker = new BrokerDouble();
    const relay = new OutboxRelay({
      sql: asRole,
      schema: "auth",
      broker,
      logger: log,
      pollMs: 20,
      vacuumEvery: 10,
    });
    try {
      relay.start();
      // Three passes past vacuumEvery, each after the relay caught up.
      for (const [i, batch] of ["a", "b", "c"].entries()) {
        await fill(sql, 15, batch);
        await pollUntil(() => broker.published.length === 15 * (i + 1), {
          what: "the rows relayed",
        });
      }
      const said = lines.filter((l) => l.msg.includes("left to autovacuum"));
      assert.equal(said.length, 1, "asked once, said once");
      assert.equal((await outboxVacuums(sql)).vacuums, 0);
    } finally {
      await relay.stop();
      await asRole.end();
      await sql.unsafe(`drop owned by ${role}`);
      await sql.unsafe(`drop role ${role}`);
    }
  });
});

Deno.test("a running relay is woken by a notification on its channel, long before its poll", async () => {
  await withOutbox(async (sql) => {
    const broker = new BrokerDouble();
    const relay = new OutboxRelay({ sql, schema: "auth", broker, logger, pollMs: 600_000 });
    relay.start();
    try {
      // The first pass has run and found nothing; the relay now sleeps on its poll.
      await pollUntil(async () => {
        const [r] = await sql<{ n: number }[]>`
          select count(*)::int as n from pg_stat_activity
           where datname = current_database() and query like 'listen%'`;
        return r!.n > 0;
      }, { what: "the relay to listen" });
      const ids = await fill(sql, 3, "late");
      await sql`select pg_notify(${outboxChannel("auth")}, '')`;
      await pollUntil(() => broker.published.length === 3, { what: "the woken relay" });
      assert.deepEqual(broker.published, ids);
    } finally {
      await relay.stop();
    }
  });
});

Deno.test("while a batch waits for the broker's confirms, every serving connection still answers", async () => {
  const db = await createDatabase();
  // As the services' main.ts builds them, with a serving pool of one connection.
  const pools = servicePools({ url: db.url, applicationName: "test", max: 1 });
  // Released in finally too: a batch left waiting would keep its pool from ending.
  const confirmed = Promise.withResolvers<void>();
  try {
    const broker = new BrokerDouble();
    const runtime = await prepareRuntime({
      ...pools,
      broker,
      logger,
      schema: "auth",
      migrationsDir: new URL("../auth_service/migrations/", import.meta.url),
      includes: limitsIncludes("auth"),
    });
    const ids = await fill(pools.sql, 3);
    broker.confirms = confirmed.promise;
    const pass = runtime.relay.relayOnce();
    await pollUntil(async () => {
      const [r] = await pools.background<{ n: number }[]>`
        select count(*)::int as n from pg_stat_activity
         where datname = current_database() and state = 'idle in transaction'`;
      return r!.n === 1;
    }, { what: "the batch to wait for its confirms" });
    const [answer] = await deadline(pools.sql<{ one: number }[]>`select 1 as one`, 2_000, {
      error: () => new Error("the serving connection is taken"),
    });
    assert.equal(answer!.one, 1);
    confirmed.resolve();
    assert.equal(await pass, 3);
    assert.deepEqual(broker.published, ids);
  } finally {
    confirmed.resolve();
    await Promise.all(Object.values(pools).map((p) => p.end()));
    await db.drop();
  }
});
