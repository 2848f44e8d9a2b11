// PgAuthStore against PGlite, through the dev launcher's wire-protocol server: the same
// conformance suite as PostgreSQL, so `deno task dev` behaves like production.
import { createPool } from "../shared/postgres.ts";
import { PGLITE_POOL_MAX, startPglite } from "../dev/pglite_server.ts";
import { migrateAuth, openPgStore } from "./pg_store_fixture.ts";
import { storeConformance } from "./store_conformance.ts";
import { adminStoreConformance } from "./admin_store_conformance.ts";
import { PgAdminStore } from "./pg_admin_store.ts";

Deno.test("the store on PGlite passes the store and admin store conformance suites", async (t) => {
  const pg = await startPglite();
  const sql = createPool({ url: pg.url, applicationName: "test", max: PGLITE_POOL_MAX });
  try {
    await migrateAuth(sql);
    await storeConformance(t, () => openPgStore(sql));
    await adminStoreConformance(t, async () => ({
      ...(await openPgStore(sql)),
      admin: new PgAdminStore(sql),
    }));
  } finally {
    await sql.end();
    await pg.close();
  }
});
