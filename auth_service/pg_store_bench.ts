// The database cost of the hot RPCs against PostgreSQL's own floor (one `select 1`
// round trip on the same pool): `deno task bench`. Needs DATABASE_URL's server.
import { createPool } from "../shared/postgres.ts";
import { DATABASE_URL } from "../testing/database.ts";
import { sha256 } from "../shared/crypto.ts";
import { PgAuthStore } from "./pg_store.ts";
import { migrateAuth } from "./pg_store_fixture.ts";

// One fixed scratch database, recreated each run.
const admin = createPool({ url: DATABASE_URL, applicationName: "bench", max: 1 });
await admin.unsafe("drop database if exists auth_bench with (force)");
await admin.unsafe("create database auth_bench");
await admin.end();
const url = new URL(DATABASE_URL);
url.pathname = "/auth_bench";
const sql = createPool({ url: url.toString(), applicationName: "bench", max: 4 });
await migrateAuth(sql);
const store = new PgAuthStore(sql);
const [user] = await sql`insert into auth.users (phone_number, verified_at)
  values ('+14155550123', now()) returning id`;
const tokenHash = sha256("bench-token");
await sql`with s as (insert into auth.sessions (user_id, expires_at)
  values (${user!.id}, now() + interval '1 day') returning id)
  insert into auth.session_tokens (token_hash, session_id) select ${tokenHash}, id from s`;

Deno.bench("select 1 (PostgreSQL round-trip floor)", { group: "db", baseline: true }, async () => {
  await sql`select 1`;
});
Deno.bench("GetProfile: session lookup with idle refresh", { group: "db" }, async () => {
  await store.authenticate(tokenHash, { idleSeconds: 86_400, graceSeconds: 10 });
});
Deno.bench("ValidatePhoneNumberLogin: unknown number", { group: "db" }, async () => {
  await store.loginTarget("+14155550199", 5, { phone: null, clientAddress: "", requestId: "" });
});

globalThis.addEventListener("unload", () => {
  sql.end();
});
