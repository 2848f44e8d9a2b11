import assert from "node:assert/strict";
import { deadline, TimeoutError } from "./async.ts";
import { ConfigError } from "./config.ts";
import { closeQuietly, concatBytes, pgMessage, readInt32, writeAll } from "./conn_io.ts";
import { createPool, sslOptions } from "./postgres.ts";
// The local server the tests use (as the test harness defaults it).
const DATABASE_URL = Deno.env.get("DATABASE_URL") ?? "postgres://postgres@127.0.0.1:5432/postgres";

const base = "postgres://postgres@127.0.0.1:5432/postgres";

Deno.test("verify-full and verify-ca verify the server's certificate, and only verify-full its name", () => {
  const full = sslOptions(`${base}?sslmode=verify-full`);
  assert.deepEqual(full, { rejectUnauthorized: true });
  const ca = sslOptions(`${base}?sslmode=verify-ca&sslrootcert=system`);
  assert.ok(typeof ca === "object" && ca.rejectUnauthorized === true);
  assert.equal(typeof ca === "object" && ca.checkServerIdentity?.(), undefined);
  assert.ok(typeof ca === "object" && "checkServerIdentity" in ca);
  assert.equal(sslOptions(base), false);
  assert.equal(sslOptions(`${base}?sslmode=require`), "require");
});

Deno.test("sslrootcert is the trusted root, and one that cannot be read stops the service", () => {
  const file = Deno.makeTempFileSync();
  try {
    Deno.writeTextFileSync(file, "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n");
    const o = sslOptions(`${base}?sslmode=verify-full&sslrootcert=${encodeURIComponent(file)}`);
    assert.ok(typeof o === "object" && o.ca?.includes("BEGIN CERTIFICATE"));
  } finally {
    Deno.removeSync(file);
  }
  assert.throws(
    () => sslOptions(`${base}?sslmode=verify-ca&sslrootcert=/nonexistent/root.crt`),
    (e) => e instanceof ConfigError && e.variable === "DATABASE_URL",
  );
  assert.throws(
    () => sslOptions(`${base}?sslmode=verify-everything`),
    (e) => e instanceof ConfigError && e.variable === "DATABASE_URL",
  );
});

Deno.test("with sslmode=verify-full no connection is made to a server that cannot prove itself", async () => {
  for (const mode of ["verify-full", "verify-ca"]) {
    const u = new URL(DATABASE_URL);
    u.searchParams.set("sslmode", mode);
    const sql = createPool({ url: u.toString(), applicationName: "test", max: 1 });
    try {
      await assert.rejects(sql`select 1`, mode);
    } finally {
      await sql.end({ timeout: 1 });
    }
  }
});

Deno.test("a transaction whose connection is terminated fails, and the pool's next one runs", async () => {
  const app = `tx-drop-${crypto.randomUUID().slice(0, 8)}`;
  const sql = createPool({ url: DATABASE_URL, applicationName: app, max: 1 });
  const admin = createPool({ url: DATABASE_URL, applicationName: "test", max: 1 });
  try {
    const resume = Promise.withResolvers<void>();
    const rest = Promise.withResolvers<void>();
    const inside = Promise.withResolvers<void>();
    const first = sql.begin(async (tx) => {
      await tx`select 1`;
      inside.resolve();
      await resume.promise;
      // Runs after the connection is gone, as the rest of a transaction's callback does.
      await tx`select 2`.finally(rest.resolve);
    });
    // Only once the transaction is open: a connection still starting up is not in
    // pg_stat_activity under its name yet, and would be missed.
    await inside.promise;
    const killed = await admin`select pg_terminate_backend(pid) from pg_stat_activity
                                where application_name = ${app}`;
    assert.equal(killed.length, 1);
    await assert.rejects(deadline(first, 5_000), (e) => !(e instanceof TimeoutError));
    resume.resolve();
    // Before the next transaction asks for the connection, as a caller coming later does.
    await rest.promise;
    const next = sql.begin(async (tx) => await tx<{ n: number }[]>`select 3 as n`);
    const [row] = await deadline(next, 5_000, {
      error: () => new Error("the pool's next transaction never ran"),
    });
    assert.equal(row!.n, 3);
  } finally {
    await sql.end({ timeout: 1 });
    await admin.end();
  }
});

Deno.test("a query that fails after sending some rows leaves the next result on its connection whole", async () => {
  const sql = createPool({ url: DATABASE_URL, applicationName: "test", max: 1 });
  // Rows 1 and 2 reach the client before row 3 divides by zero.
  const failing = () => sql`select 1 / (3 - x) as v from generate_series(1, 5) x`;
  try {
    await assert.rejects(failing(), /division by zero/);
    const after = await sql<{ v: number }[]>`select 42 as v`;
    assert.deepEqual([...after], [{ v: 42 }]);
    // Pipelined behind the failure on the one connection, as a busy pool sends them.
    const [failed, next] = await Promise.allSettled([
      failing(),
      sql<{ v: number }[]>`select 7 as v`,
    ]);
    assert.equal(failed.status, "rejected");
    assert.equal(next.status, "fulfilled");
    assert.deepEqual([...next.value], [{ v: 7 }]);
  } finally {
    await sql.end();
  }
});

Deno.test("a connection ended while it fetches its array types starts again clean: the waiting query runs, arrays work", async () => {
  // The first query on a new connection is the driver's own fetch of the array types,
  // with the caller's query waiting behind it. A backend terminated while sending those
  // rows used to fail the caller's query, open the connection without its array types
  // (array parameters refused, array results read as text) and count its next result's
  // rows from where the cut-off ones stopped.
  const proxy = endFirstConnectionAfterRows(3);
  const u = new URL(DATABASE_URL);
  u.port = String(proxy.port);
  const sql = createPool({ url: u.toString(), applicationName: "test", max: 1 });
  try {
    const first = await sql<{ v: number }[]>`select 1 as v`;
    assert.equal(proxy.cut(), true, "the first connection was ended mid-rows");
    assert.deepEqual([...first], [{ v: 1 }]);
    const ids = ["a", "b"];
    const unnested = await sql<{ x: string }[]>`select x from unnest(${ids}::text[]) x`;
    assert.deepEqual([...unnested], [{ x: "a" }, { x: "b" }]);
    const [arrays] = await sql<{ a: number[] }[]>`select array[1, 2]::int[] as a`;
    assert.deepEqual(arrays, { a: [1, 2] });
    const after = await sql<{ v: number }[]>`select 42 as v`;
    assert.deepEqual([...after], [{ v: 42 }]);
  } finally {
    await sql.end({ timeout: 1 });
    proxy.close();
  }
});

/**
 * A proxy to the test server that forwards everything, except that on its first
 * connection it replaces what follows the `rows`-th row by the FATAL error and close a
 * terminated backend sends.
 */
function endFirstConnectionAfterRows(rows: number): {
  port: number;
  cut(): boolean;
  close(): void;
} {
  const target = new URL(DATABASE_URL);
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const open = new Set<Deno.Conn>();
  let connections = 0;
  let cut = false;
  // An ErrorResponse ("E"): severity, code and message fields, then a terminating NUL.
  const fatal = pgMessage(
    0x45,
    "SFATAL\0VFATAL\0C57P01\0Mterminating connection due to administrator command\0\0",
  );
  const serve = async (client: Deno.Conn, first: boolean) => {
    const server = await Deno.connect({
      hostname: target.hostname,
      port: Number(target.port || 5432),
    });
    open.add(client).add(server);
    const end = () => [client, server].forEach((c) => (open.delete(c), closeQuietly(c)));
    const upstream = client.readable.pipeTo(server.writable).catch(() => {}).finally(end);
    let pending: Uint8Array = new Uint8Array(0);
    let seen = 0;
    try {
      for await (const chunk of server.readable) {
        if (!first) {
          await writeAll(client, chunk);
          continue;
        }
        pending = concatBytes(pending, chunk);
        let at = 0;
        // Whole messages only: a type byte, then a length that counts itself.
        while (pending.length - at >= 5) {
          const size = 1 + readInt32(pending, at + 1);
          if (pending.length - at < size) break;
          const type = String.fromCharCode(pending[at]!);
          await writeAll(client, pending.subarray(at, at + size));
          at += size;
          if (type === "D" && ++seen === rows) {
            await writeAll(client, fatal);
            cut = true;
            return;
          }
        }
        pending = pending.slice(at);
      }
    } catch {
      // either side gone
    } finally {
      end();
      await upstream;
    }
  };
  (async () => {
    for await (const client of listener) serve(client, connections++ === 0);
  })().catch(() => {});
  return {
    port: (listener.addr as Deno.NetAddr).port,
    cut: () => cut,
    close: () => {
      closeQuietly(listener);
      open.forEach(closeQuietly);
    },
  };
}
