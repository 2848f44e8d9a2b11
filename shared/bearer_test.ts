import assert from "node:assert/strict";
import { bearerCredential } from "./bearer.ts";

Deno.test("a bearer header yields its credential, whatever the scheme's case and spacing", () => {
  assert.equal(bearerCredential("Bearer abc"), "abc");
  assert.equal(bearerCredential("bearer   abc  "), "abc");
});

Deno.test("anything but exactly one bearer credential yields nothing", () => {
  for (const h of [null, "", "Bearer", "Bearer ", "Bearerabc", "Basic abc", "Bearer a b"]) {
    assert.equal(bearerCredential(h), null, String(h));
  }
});
