// The in-memory store (and its admin view) against the same suites as the PostgreSQL stores.
import { MemoryAuthStore } from "./memory_store.ts";
import { storeConformance } from "./store_conformance.ts";
import { adminStoreConformance } from "./admin_store_conformance.ts";

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
      enqueued: () => Promise.resolve(store.otpRequests.map((m) => m.messageId)),
      events: () => Promise.resolve(store.events.map((m) => m.routingKey)),
    });
  });
});

Deno.test("the in-memory admin store behaves like the PostgreSQL one", async (t) => {
  await adminStoreConformance(t, () => {
    let now = Date.now();
    const store = new MemoryAuthStore({ now: () => now });
    return Promise.resolve({
      store,
      admin: store.admin(),
      now: () => new Date(now),
      elapse: (seconds) => {
        now += seconds * 1000;
        return Promise.resolve();
      },
      auditTrail: () => Promise.resolve(store.audit.map((e) => `${e.event}:${e.outcome}`)),
      enqueued: () => Promise.resolve(store.otpRequests.map((m) => m.messageId)),
      events: () => Promise.resolve(store.events.map((m) => m.routingKey)),
    });
  });
});
