import assert from "node:assert/strict";
import { ConfigError, ConfigReader } from "./config.ts";

const reader = (env: Record<string, string>) => new ConfigReader((n) => env[n]);

Deno.test("a missing secret names the variable", () => {
  assert.throws(() => reader({}).secret("OTP_HMAC_KEY", 32), (e) => {
    assert.ok(e instanceof ConfigError);
    assert.equal(e.message, "config: OTP_HMAC_KEY is required but not set");
    return true;
  });
});

Deno.test("a short secret is refused without echoing its value", () => {
  assert.throws(
    () => reader({ K: "hunter2" }).secret("K", 32),
    (e) => e instanceof Error && !e.message.includes("hunter2") && e.message.includes("K"),
  );
});

Deno.test("numbers, ranges, URLs and choices are validated", () => {
  assert.equal(reader({ P: "8080" }).port("P", 1), 8080);
  assert.equal(reader({}).port("P", 1), 1);
  assert.throws(() => reader({ P: "80a" }).port("P", 1), /P must be a whole number/);
  assert.throws(() => reader({ P: "70000" }).port("P", 1), /P must be between/);
  assert.throws(() => reader({ U: "x" }).url("U", "", ["http:"]), /U is not a valid URL/);
  assert.throws(() => reader({ U: "ftp://x" }).url("U", "", ["http:"]), /U must use/);
  assert.throws(
    () => reader({ C: "sms" }).oneOf("C", ["a", "b"] as const, "a"),
    /C must be one of/,
  );
});
