import assert from "node:assert/strict";
import { deadline, TimeoutError } from "./async.ts";
import { ConfigError } from "./config.ts";
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
