// The in-memory store (and its admin view) against the same suites as the PostgreSQL stores.
import { MemoryLimits } from "../shared/limits/memory.ts";
import { MemoryAuthStore } from "./memory_store.ts";
import type { StoreUnderTest } from "./store_conformance.ts";
import { storeConformance } from "./store_conformance.ts";
import { adminStoreConformance } from "./admin_store_conformance.ts";

function open(): StoreUnderTest & { store: MemoryAuthStore } {
  let now = Date.now();
  const limits = new MemoryLimits(() => now);
  const store = new MemoryAuthStore({ now: () => now, limits });
  return {
    store,
    limits,
    now: () => new Date(now),
    elapse: (seconds) => {
      now += seconds * 1000;
      return Promise.resolve();
    },
    auditTrail: () =>
      Promise.resolve(
        store.auditTrail.map((e) => `${e.event}:${e.outcome}${e.count > 1 ? ` x${e.count}` : ""}`),
      ),
    enqueued: () => Promise.resolve(store.otpRequests.map((m) => m.messageId)),
    events: () => Promise.resolve(store.events.map((m) => m.routingKey)),
  };
}

Deno.test("the in-memory store behaves like the PostgreSQL store", async (t) => {
  await storeConformance(t, () => Promise.resolve(open()));
});

Deno.test("the in-memory admin store behaves like the PostgreSQL one", async (t) => {
  await adminStoreConformance(t, () => {
    const s = open();
    return Promise.resolve({ ...s, admin: s.store.admin() });
  });
});
