import assert from "node:assert/strict";
import { remembered } from "./remembered.ts";

Deno.test("a remembered result is computed once, and the oldest goes when it is full", () => {
  const calls: string[] = [];
  const length = remembered(2, (s) => {
    calls.push(s);
    return s.length;
  });
  assert.equal(length("a"), 1);
  assert.equal(length("a"), 1);
  assert.equal(length("bb"), 2);
  assert.equal(length("ccc"), 3); // "a" goes
  assert.equal(length("bb"), 2);
  assert.equal(length("a"), 1);
  assert.deepEqual(calls, ["a", "bb", "ccc", "a"]);
});

Deno.test("a throw is passed on and nothing is kept for it; null is an answer", () => {
  let calls = 0;
  const check = remembered(10, (s) => {
    calls++;
    if (s === "bad") throw new RangeError("bad");
    return s === "none" ? null : s;
  });
  assert.throws(() => check("bad"), RangeError);
  assert.throws(() => check("bad"), RangeError);
  assert.equal(check("none"), null);
  assert.equal(check("none"), null);
  assert.equal(calls, 3);
});
