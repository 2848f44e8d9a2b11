import assert from "node:assert/strict";
import { parsePhone } from "../shared/phone.ts";
import { randomPhone } from "./stack.ts";

Deno.test("randomPhone never gives one process the same number twice, and each is a valid US number", () => {
  const drawn = Array.from({ length: 50_000 }, randomPhone);
  assert.equal(new Set(drawn).size, drawn.length);
  for (const phone of drawn.slice(0, 200)) assert.equal(parsePhone(phone).country, "US");
});
