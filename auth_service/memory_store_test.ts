// The in-memory store against the same suite as the PostgreSQL and PGlite stores.
import { MemoryAuthStore } from "./memory_store.ts";
import { storeConformance } from "./store_conformance.ts";

Deno.test("the in-memory store behaves like the PostgreSQL store", async (t) => {
  await storeConformance(t, () => {
    let now = Date.now();
    const store = new MemoryAuthStore({ now: () => now });
    return Promise.resolve({
      store,
      now: () => new Date(now),
      elapse: (seconds) => {
        now += seconds * 1000;
        return Promise.resolve();
      },
      auditTrail: () => Promise.resolve(store.audit.map((e) => `${e.event}:${e.outcome}`)),
      enqueued: () => Promise.resolve(store.outbox.map((m) => m.messageId)),
    });
  });
});
