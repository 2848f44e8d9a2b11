import assert from "node:assert/strict";
import { codeIn, codeInConsoleLine, codeLength, codePattern, findCode } from "./sms_codes.ts";

const body = "Your verification code is 123456. It expires in 5 minutes.";

Deno.test("findCode finds a standalone six-digit code and nothing longer", () => {
  assert.equal(findCode(body), "123456");
  assert.equal(findCode("Your code: 000042"), "000042");
  assert.equal(findCode("order 12345678 shipped"), null);
  assert.equal(findCode("no digits here"), null);
});

Deno.test("the pattern follows the code length", () => {
  assert.equal(findCode("Your code is 12345678.", { length: 8 }), "12345678");
  assert.equal(findCode(body, { length: 8 }), null);
  assert.equal(codePattern(9).source, "(?<!\\d)(\\d{9})(?!\\d)");
  assert.equal(codeLength({ env: { auth: {}, otp: { OTP_LENGTH: "7" } } }), 7);
  assert.equal(codeLength({ env: { auth: {}, otp: {} } }), 6);
});

Deno.test("codeIn throws when the body holds no code", () => {
  assert.equal(codeIn(body), "123456");
  assert.throws(() => codeIn("no digits here"), /no code in SMS body/);
  assert.throws(() => codeIn(undefined), /no code in SMS body/);
});

Deno.test("codeInConsoleLine reads the console sender's line", () => {
  assert.equal(codeInConsoleLine(`[sms] to=+14155550123 body=${JSON.stringify(body)}`), "123456");
  assert.throws(() => codeInConsoleLine("not an sms line"), /no code/);
});
