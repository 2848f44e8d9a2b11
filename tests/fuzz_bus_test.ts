// Property-based fuzzing (fast-check) of the bus, against one real stack: poison
// messages published straight to the `verification` exchange. Each one that is
// certainly invalid lands in its queue's dead-letter queue on its first delivery,
// nothing is lost, nothing loops, and the services keep serving; through all of it,
// neither process exits and neither logs an "internal error". The property has a fixed
// seed; fast-check prints seed and counterexample on failure. The generators and the
// dead-letter accounting live in testing/fuzz/; the RPCs are fuzzed in
// tests/fuzz_rpc_test.ts, against its own stack.
import assert from "node:assert/strict";
import fc from "fast-check";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { AuthService } from "../shared/gen/auth/v1/auth_pb.ts";
import { delay, pollUntil } from "../shared/async.ts";
import { randomPhone } from "../testing/stack.ts";
import { busCaseArb, certainlyInvalid, queueFor } from "../testing/fuzz/bus.ts";
import type { Sent } from "../testing/fuzz/bus.ts";
import {
  DeadLetterLedger,
  describeSent,
  logsAbout,
  processed,
  queueDepths,
} from "../testing/fuzz/dead_letters.ts";
import {
  assertAlive,
  assertServicesHealthy,
  DELIVERY_LIMIT,
  lazyFixture,
  randomIp,
  signupAndVerify,
  startFuzzStack,
} from "../testing/fuzz/services.ts";

const stack = await startFuzzStack();
Deno.test.afterAll(() => stack.stop());

const fixture = lazyFixture(stack);

Deno.test({
  name:
    "fuzzed bus messages: every certainly invalid one is dead-lettered on first delivery, none is lost, and both services keep serving",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await fixture();
    const ledger = await DeadLetterLedger.open(stack);
    const { allSent, dead, strays } = ledger;
    let seq = 0;
    let processedCount = 0;
    try {
      await fc.assert(
        fc.asyncProperty(fc.array(busCaseArb, { minLength: 40, maxLength: 80 }), async (cases) => {
          const run = ++seq;
          const sent: Sent[] = cases.map((c, i) => ({
            ...c,
            fuzzId: `fuzz-${run}-${i}`,
            invalid: certainlyInvalid(c),
          }));
          await ledger.publish(sent);

          // Every message is accounted for, eventually (bounded): dead-lettered, or (when
          // it may be valid) processed; a failing handler takes a few redeliveries first.
          const settled = new Set<string>();
          await pollUntil(async () => {
            await ledger.take();
            for (const m of sent) {
              if (settled.has(m.fuzzId)) continue;
              if (dead.has(m.fuzzId) || (!m.invalid && await processed(stack, m))) {
                settled.add(m.fuzzId);
              }
            }
            return settled.size === sent.length && await ledger.workQueuesEmpty();
          }, {
            timeoutMs: 30_000,
            what: "every message dead-lettered or processed, and empty work queues",
          }).catch(async (err) => {
            const queues = JSON.stringify(await queueDepths(stack).catch(() => ({})));
            const missing = sent.filter((m) => !settled.has(m.fuzzId))
              .map((m) => `${describeSent(m)}\n  logs: ${logsAbout(stack, m).join("\n  ")}`);
            throw new Error(
              `${(err as Error).message}; queues: ${queues}; neither dead-lettered nor ` +
                `processed:\n${missing.join("\n")}`,
            );
          });

          assert.deepEqual(
            strays.map((m) => ({ id: m.properties.messageId, type: m.properties.type })),
            [],
            "a message the services produced themselves was dead-lettered",
          );
          for (const m of sent.filter((m) => m.invalid)) {
            const got = dead.get(m.fuzzId)!;
            assert.equal(got.length, 1, `dead-lettered ${got.length} times: ${describeSent(m)}`);
            const dl = got[0]!;
            const queue = String(dl.properties.headers?.["x-first-death-queue"] ?? "");
            assert.equal(queue, queueFor(m.key), `dead-lettered from ${queue}`);
            // Poison goes straight to the DLQ: no redelivery loop.
            const count = Number(dl.properties.headers?.["x-delivery-count"] ?? 0);
            assert.equal(count, 0, `requeued ${count} times: ${describeSent(m)}`);
            assert.deepEqual(new Uint8Array(dl.content), m.body, "the body is kept intact");
          }
          for (const m of sent.filter((m) => !m.invalid && !dead.has(m.fuzzId))) {
            assert.ok(
              await processed(stack, m),
              `neither dead-lettered nor processed: ${describeSent(m)}`,
            );
            processedCount++;
          }
          await assertAlive(stack);
        }),
        { seed: 0x5160_000a, numRuns: 4, endOnFailure: true },
      );

      // Both services still serve: a normal login check, and a full signup + verify.
      await assertAlive(stack);
      const client = createClient(
        AuthService,
        createConnectTransport({ baseUrl: stack.authUrl }),
      );
      const headers = { "x-forwarded-for": randomIp() };
      const fresh = await client.validatePhoneNumberLogin({ phoneNumber: randomPhone() }, {
        headers,
      });
      assert.equal(fresh.isValid, false);
      const user = await signupAndVerify(stack);
      const profile = await client.getProfile({ phoneNumber: user.phone }, {
        headers: { ...headers, authorization: `Bearer ${user.token}` },
      });
      assert.equal(profile.phoneNumber, user.phone);

      // Everything settles: work queues empty, dead-letter queues read to the end.
      await pollUntil(async () => {
        await ledger.take();
        if (!await ledger.workQueuesEmpty()) return false;
        return await ledger.deadLetterQueuesEmpty();
      }, { timeoutMs: 15_000, what: "all queues empty at the end" });
      await delay(500); // a last, late dead letter
      await ledger.take();

      // The dead-letter count is exactly: every certainly invalid message once, plus the
      // possibly valid ones whose handler failed up to the delivery limit, once each.
      assert.deepEqual(strays.map((m) => m.properties.messageId), [], "stray dead letters");
      const invalid = [...allSent.values()].filter((m) => m.invalid);
      const failed = [...allSent.values()].filter((m) => !m.invalid && dead.has(m.fuzzId));
      for (const m of failed) {
        const got = dead.get(m.fuzzId)!;
        assert.equal(got.length, 1, `dead-lettered ${got.length} times: ${describeSent(m)}`);
        const count = Number(got[0]!.properties.headers?.["x-delivery-count"] ?? 0);
        assert.ok(count <= DELIVERY_LIMIT, `delivered ${count} times: ${describeSent(m)}`);
      }
      const total = [...dead.values()].reduce((n, l) => n + l.length, 0);
      assert.equal(total, invalid.length + failed.length, "dead letters");
      console.log(
        `bus: sent=${allSent.size} certainly-invalid=${invalid.length} (each dead-lettered ` +
          `once, first delivery) other-dead-lettered=${failed.length} processed=${processedCount}`,
      );
    } finally {
      await ledger.close();
    }
  },
});

Deno.test("after all the fuzzing neither service crashed nor logged an internal error", async () => {
  await assertServicesHealthy(stack);
});
