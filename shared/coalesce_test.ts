import assert from "node:assert/strict";
import { coalesced } from "./coalesce.ts";

/** A lookup whose batches are recorded and answered when the test says so. */
function gatedLookup() {
  const batches: { keys: number[]; answer: () => void; fail: (e: Error) => void }[] = [];
  const lookup = (keys: number[]) =>
    new Promise<string[]>((resolve, reject) => {
      batches.push({
        keys,
        answer: () => resolve(keys.map((k) => `v${k}`)),
        fail: reject,
      });
    });
  return { batches, lookup };
}

const settle = () => new Promise((r) => setTimeout(r, 0));

Deno.test("a lone call is sent at once and gets its own answer", async () => {
  const { batches, lookup } = gatedLookup();
  const get = coalesced(lookup, { maxInFlight: 2, maxBatch: 10 });
  const v = get(5);
  await settle();
  assert.deepEqual(batches.map((b) => b.keys), [[5]]);
  batches[0]!.answer();
  assert.equal(await v, "v5");
});

Deno.test("calls made while every batch is out go together in the next, each answered its own", async () => {
  const { batches, lookup } = gatedLookup();
  const get = coalesced(lookup, { maxInFlight: 1, maxBatch: 10 });
  const first = get(1);
  await settle();
  const later = [get(2), get(3), get(2)];
  await settle();
  assert.deepEqual(batches.map((b) => b.keys), [[1]], "nothing joins a batch already sent");
  batches[0]!.answer();
  assert.equal(await first, "v1");
  await settle();
  assert.deepEqual(batches.map((b) => b.keys), [[1], [2, 3, 2]]);
  batches[1]!.answer();
  assert.deepEqual(await Promise.all(later), ["v2", "v3", "v2"]);
});

Deno.test("no more batches than maxInFlight are out, and none larger than maxBatch", async () => {
  const { batches, lookup } = gatedLookup();
  const get = coalesced(lookup, { maxInFlight: 2, maxBatch: 3 });
  const calls = Array.from({ length: 8 }, (_, i) => get(i));
  await settle();
  assert.deepEqual(batches.map((b) => b.keys), [[0, 1, 2], [3, 4, 5]]);
  batches[1]!.answer();
  await settle();
  assert.deepEqual(batches.map((b) => b.keys).slice(2), [[6, 7]]);
  batches[0]!.answer();
  batches[2]!.answer();
  assert.deepEqual(await Promise.all(calls), [0, 1, 2, 3, 4, 5, 6, 7].map((k) => `v${k}`));
});

Deno.test("a failed batch rejects its own calls only, and later calls go on", async () => {
  const { batches, lookup } = gatedLookup();
  const get = coalesced(lookup, { maxInFlight: 2, maxBatch: 2 });
  const calls = [1, 2, 3, 4].map((k) => get(k).catch((e: Error) => e.message));
  await settle();
  batches[0]!.fail(new Error("down"));
  batches[1]!.answer();
  assert.deepEqual(await Promise.all(calls), ["down", "down", "v3", "v4"]);
  const next = get(9);
  await settle();
  batches[2]!.answer();
  assert.equal(await next, "v9");
});

Deno.test("a lookup that throws, or answers the wrong count, rejects its batch", async () => {
  const throwing = coalesced((_: number[]): Promise<number[]> => {
    throw new Error("sync");
  }, { maxInFlight: 1, maxBatch: 4 });
  await assert.rejects(throwing(1), /sync/);
  const short = coalesced((keys: number[]) => Promise.resolve(keys.slice(1)), {
    maxInFlight: 1,
    maxBatch: 4,
  });
  const both = [short(1), short(2)].map((p) => p.catch((e: Error) => e.message));
  assert.deepEqual(await Promise.all(both), [
    "lookup answered 1 of 2 keys",
    "lookup answered 1 of 2 keys",
  ]);
  assert.equal(await short(3).catch((e: Error) => e.message), "lookup answered 0 of 1 keys");
  assert.throws(() => coalesced(() => Promise.resolve([]), { maxInFlight: 0, maxBatch: 1 }));
});

Deno.test("a batch smaller than sharedFrom is answered key by key by alone", async () => {
  const { batches, lookup } = gatedLookup();
  const lone: number[] = [];
  const get = coalesced(lookup, {
    maxInFlight: 1,
    maxBatch: 10,
    sharedFrom: 3,
    alone: (k) => {
      lone.push(k);
      return Promise.resolve(`alone${k}`);
    },
  });
  assert.deepEqual(await Promise.all([get(1), get(2)]), ["alone1", "alone2"]);
  assert.equal(batches.length, 0, "no batched lookup for two keys");
  const three = Promise.all([get(3), get(4), get(5)]);
  await settle();
  assert.deepEqual(batches.map((b) => b.keys), [[3, 4, 5]]);
  batches[0]!.answer();
  assert.deepEqual(await three, ["v3", "v4", "v5"]);
  assert.deepEqual(lone, [1, 2]);
  assert.throws(() => coalesced(lookup, { maxInFlight: 1, maxBatch: 4, sharedFrom: 2 }));
});
