import assert from "node:assert/strict";
import {
  challengeCode,
  constantTimeEqual,
  derivedHmacKey,
  HmacKey,
  otpMac,
  randomCode,
  randomToken,
  sha256,
  toBase64Url,
} from "./crypto.ts";

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

Deno.test("the code MAC binds challenge, number, purpose, expiry and code", () => {
  const key = HmacKey.import("k".repeat(32));
  const m = {
    challengeId: "c1",
    phone: "+14155550123",
    purpose: "signup",
    expiresAt: new Date("2026-01-01T00:05:00Z"),
    code: "123456",
  };
  const base = otpMac(key, m);
  assert.equal(base.length, 32);
  for (
    const other of [
      otpMac(key, { ...m, challengeId: "c2" }),
      otpMac(key, { ...m, phone: "+14155550124" }),
      otpMac(key, { ...m, purpose: "login" }),
      otpMac(key, { ...m, expiresAt: new Date("2026-01-01T00:05:01Z") }),
      otpMac(key, { ...m, code: "123457" }),
      otpMac(HmacKey.import("j".repeat(32)), m),
    ]
  ) assert.ok(!constantTimeEqual(base, other));
  assert.ok(constantTimeEqual(base, otpMac(key, { ...m })));
});

Deno.test("a challenge's code is the same every time, differs between challenges and keys", () => {
  const key = derivedHmacKey("k".repeat(32), "code");
  const code = challengeCode(key, "c1");
  assert.match(code, /^\d{6}$/);
  assert.equal(challengeCode(derivedHmacKey("k".repeat(32), "code"), "c1"), code);
  const others = new Set<string>();
  for (let i = 0; i < 200; i++) others.add(challengeCode(key, `c-${i}`));
  assert.ok(others.size > 190, "codes of different challenges look independent");
  assert.notEqual(challengeCode(derivedHmacKey("j".repeat(32), "code"), "c1"), code);
  assert.match(challengeCode(key, "c1", 9), /^\d{9}$/);
});

Deno.test("challenge codes are uniform over the digits", () => {
  const key = derivedHmacKey("k".repeat(32), "code");
  const firstDigit = new Array(10).fill(0);
  for (let i = 0; i < 2000; i++) firstDigit[Number((challengeCode(key, `u-${i}`))[0])]++;
  // 200 expected per digit; 5 standard deviations either side.
  for (const n of firstDigit) assert.ok(n > 130 && n < 270, `${firstDigit}`);
});

Deno.test("constant-time comparison rejects different lengths", () => {
  assert.equal(constantTimeEqual(new Uint8Array(2), new Uint8Array(3)), false);
});

Deno.test("SHA-256 and HMAC-SHA256 give the standard answers (FIPS 180-2, RFC 4231 case 2)", () => {
  const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  assert.equal(
    hex(sha256("abc")),
    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
  );
  assert.equal(
    hex(HmacKey.import("Jefe").sign(["what do ya want for nothing?"])),
    "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
  );
});

Deno.test("base64url has no padding and the URL-safe alphabet, for bytes, views and text", () => {
  assert.equal(toBase64Url(new Uint8Array([0xfb, 0xff, 0xbf])), "-_-_");
  assert.equal(toBase64Url(new Uint8Array([1, 0xfb, 0xff, 9]).subarray(1, 3)), "-_8");
  assert.equal(toBase64Url('{"alg":"EdDSA"}'), "eyJhbGciOiJFZERTQSJ9");
  assert.equal(toBase64Url(""), "");
});
