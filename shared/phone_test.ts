import assert from "node:assert/strict";
import { InvalidPhoneNumber, parsePhone } from "./phone.ts";

Deno.test("formatted and bare forms of one number normalise to the same E.164", () => {
  for (const n of ["+1 (415) 555-0123", "+14155550123", " +1.415.555.0123 "]) {
    assert.deepEqual(parsePhone(n), { e164: "+14155550123", country: "US" });
  }
  assert.equal(parsePhone("+44 20 7183 8750").country, "GB");
});

Deno.test("numbers without a country code, too short or not numbers are refused", () => {
  for (const bad of ["", "4155550123", "+1415555012", "+999", "hello", "+1".padEnd(40, "5")]) {
    assert.throws(() => parsePhone(bad), InvalidPhoneNumber, bad);
  }
});
