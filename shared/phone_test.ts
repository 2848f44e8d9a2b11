import assert from "node:assert/strict";
import { InvalidPhoneNumber, parsePhone, SMS_NUMBER_TYPES, smsRefusal } from "./phone.ts";

Deno.test("formatted and bare forms of one number normalise to the same E.164", () => {
  for (const n of ["+1 (415) 555-0123", "+14155550123", " +1.415.555.0123 "]) {
    assert.deepEqual(parsePhone(n), {
      e164: "+14155550123",
      country: "US",
      type: "FIXED_LINE_OR_MOBILE",
    });
  }
  assert.equal(parsePhone("+44 20 7183 8750").country, "GB");
});

Deno.test("numbers without a country code, too short or not numbers are refused", () => {
  for (const bad of ["", "4155550123", "+1415555012", "+999", "hello", "+1".padEnd(40, "5")]) {
    assert.throws(() => parsePhone(bad), InvalidPhoneNumber, bad);
  }
});

const defaults = { allowedCountries: [], allowedNumberTypes: SMS_NUMBER_TYPES };

Deno.test("premium-rate, toll-free and country-less numbers may not receive an SMS", () => {
  const cases: [string, string][] = [
    ["+1 900 555 0123", "number_type_not_allowed"],
    ["+44 909 090 1234", "number_type_not_allowed"],
    ["+33 8 99 12 34 56", "number_type_not_allowed"],
    ["+1 800 555 0123", "number_type_not_allowed"],
    ["+881 6 1234 5678", "no_country"],
    ["+870 773 123 456", "no_country"],
  ];
  for (const [n, reason] of cases) assert.equal(smsRefusal(parsePhone(n), defaults), reason, n);
});

Deno.test("mobile and fixed-line-or-mobile numbers may, within the allowed countries", () => {
  assert.equal(smsRefusal(parsePhone("+33 6 12 34 56 78"), defaults), null);
  assert.equal(smsRefusal(parsePhone("+1 415 234 5678"), defaults), null);
  const usOnly = { ...defaults, allowedCountries: ["US"] };
  assert.equal(smsRefusal(parsePhone("+33 6 12 34 56 78"), usOnly), "country_not_allowed");
  assert.equal(
    smsRefusal(parsePhone("+44 20 7183 8750"), { ...defaults, allowedNumberTypes: ["MOBILE"] }),
    "number_type_not_allowed",
  );
});

Deno.test("a number parsed again gives the same answer, and a refused one is refused again", () => {
  const first = parsePhone("+1 415 555 0199");
  assert.equal(parsePhone("+1 415 555 0199"), first);
  assert.ok(Object.isFrozen(first));
  for (let i = 0; i < 2; i++) assert.throws(() => parsePhone("+1415555012"), InvalidPhoneNumber);
  // Far more distinct numbers than are kept: every one still parses to itself.
  for (let i = 0; i < 12_000; i++) {
    const n = `+1415${String(2_000_000 + i)}`;
    assert.equal(parsePhone(n).e164, n);
  }
  assert.deepEqual(parsePhone("+1 415 555 0199"), first);
});
