// PgAuthStore against PGlite, through the dev launcher's wire-protocol server: the same
// conformance suite as PostgreSQL, so `deno task dev` behaves like production.
import { createPool } from "../shared/postgres.ts";
import { PGLITE_POOL_MAX, startPglite } from "../dev/pglite_server.ts";
import { migrateAuth, openPgStore } from "./pg_store_fixture.ts";
import { storeConformance } from "./store_conformance.ts";

Deno.test("the store on PGlite passes the store conformance suite", async (t) => {
  const pg = await startPglite();
  const sql = createPool({ url: pg.url, applicationName: "test", max: PGLITE_POOL_MAX });
  try {
    await migrateAuth(sql);
    await storeConformance(t, () => openPgStore(sql));
  } finally {
    await sql.end();
    await pg.close();
  }
});
