import assert from "node:assert/strict";
import { constantTimeEqual, HmacKey, otpMac, randomCode, randomToken } from "./crypto.ts";

Deno.test("codes are six decimal digits, leading zeros kept, and spread over all digits", () => {
  const counts = new Array(10).fill(0);
  for (let i = 0; i < 20_000; i++) {
    const c = randomCode(6);
    assert.match(c, /^\d{6}$/);
    for (const d of c) counts[Number(d)]++;
  }
  // 120k digits: each digit expected 12k; a biased generator drifts far outside 10%.
  for (const n of counts) assert.ok(n > 10_800 && n < 13_200, `digit count ${n}`);
});

Deno.test("session tokens carry 256 bits in 43 base64url characters and do not repeat", () => {
  const seen = new Set<string>();
  for (let i = 0; i < 1000; i++) {
    const t = randomToken();
    assert.match(t, /^[A-Za-z0-9_-]{43}$/);
    seen.add(t);
  }
  assert.equal(seen.size, 1000);
});

Deno.test("the code MAC binds request, number, purpose and code", async () => {
  const key = await HmacKey.import("k".repeat(32));
  const base = await otpMac(key, "r1", "+14155550123", "signup", "123456");
  assert.equal(base.length, 32);
  for (
    const other of [
      await otpMac(key, "r2", "+14155550123", "signup", "123456"),
      await otpMac(key, "r1", "+14155550124", "signup", "123456"),
      await otpMac(key, "r1", "+14155550123", "login", "123456"),
      await otpMac(key, "r1", "+14155550123", "signup", "123457"),
      await otpMac(await HmacKey.import("j".repeat(32)), "r1", "+14155550123", "signup", "123456"),
    ]
  ) assert.ok(!constantTimeEqual(base, other));
  assert.ok(constantTimeEqual(base, await otpMac(key, "r1", "+14155550123", "signup", "123456")));
});

Deno.test("constant-time comparison rejects different lengths", () => {
  assert.equal(constantTimeEqual(new Uint8Array(2), new Uint8Array(3)), false);
});
