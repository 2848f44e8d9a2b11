// The admin API's token gate and page tokens, without a server.
import assert from "node:assert/strict";
import { DomainError } from "../shared/errors.ts";
import { adminGate, MAX_PAGE_SIZE, pageCursor, pageSize, pageToken } from "./admin.ts";

const TOKEN = "admin-token-0123456789";

Deno.test("the gate lets only the configured bearer through, and nothing when none is set", () => {
  const gate = adminGate(TOKEN);
  gate(`Bearer ${TOKEN}`);
  for (const h of [null, "", TOKEN, `Bearer ${TOKEN}x`, `Basic ${TOKEN}`, "Bearer  "]) {
    assert.throws(
      () => gate(h),
      (e: DomainError) => e.reason === "ADMIN_TOKEN_INVALID",
      String(h),
    );
  }
  for (const token of [undefined, ""]) {
    const closed = adminGate(token);
    for (const h of [null, "Bearer ", `Bearer ${TOKEN}`, "Bearer undefined"]) {
      assert.throws(() => closed(h), (e: DomainError) => e.reason === "ADMIN_TOKEN_INVALID");
    }
  }
});

Deno.test("a page token names the last id and only tokens of that shape are accepted", () => {
  assert.equal(pageCursor(pageToken("12345")), "12345");
  assert.equal(pageCursor(""), null);
  for (const bad of ["x", "bm9wZQ", btoa("a:"), btoa("a:-1"), btoa("a:1 or 1=1"), btoa("12")]) {
    assert.throws(() => pageCursor(bad), (e: DomainError) => e.reason === "INVALID_ARGUMENT", bad);
  }
});

Deno.test("page sizes default, are capped, and may not be negative", () => {
  assert.equal(pageSize(0), 50);
  assert.equal(pageSize(7), 7);
  assert.equal(pageSize(10_000), MAX_PAGE_SIZE);
  assert.throws(() => pageSize(-1));
});
