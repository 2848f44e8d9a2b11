import assert from "node:assert/strict";
import { addressKey, canonicalAddress, parseCidr, resolveClientAddress } from "./ip.ts";
import type { Cidr } from "./ip.ts";

Deno.test("every spelling of an address has one canonical form", () => {
  const cases: [string, string][] = [
    ["192.0.2.1", "192.0.2.1"],
    ["192.0.2.1:5678", "192.0.2.1"],
    ["::ffff:192.0.2.1", "192.0.2.1"],
    ["::FFFF:c000:0201", "192.0.2.1"],
    ["[::ffff:192.0.2.1]:443", "192.0.2.1"],
    ["2001:DB8:0:0:0:0:0:1", "2001:db8::1"],
    ["2001:0db8::0001", "2001:db8::1"],
    ["[2001:db8::1]:8080", "2001:db8::1"],
    ["fe80::1%eth0", "fe80::1"],
    ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"],
    ["::", "::"],
    ["::1", "::1"],
  ];
  for (const [raw, want] of cases) assert.equal(canonicalAddress(raw), want, raw);
});

Deno.test("what is not an address has no canonical form", () => {
  for (
    const raw of ["", "unknown", "1.2.3", "1.2.3.256", "01.2.3.4", "1::2::3", "12345::", "a.b"]
  ) {
    assert.equal(canonicalAddress(raw), "", raw);
  }
});

Deno.test("IPv6 addresses are counted per /64 and IPv4 per address", () => {
  assert.equal(addressKey("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
  assert.equal(addressKey("2001:db8:1:2:ffff:ffff:ffff:ffff"), "2001:db8:1:2::/64");
  assert.notEqual(addressKey("2001:db8:1:3::1"), addressKey("2001:db8:1:2::1"));
  assert.equal(addressKey("::ffff:198.51.100.7"), "198.51.100.7");
  assert.equal(addressKey(""), "-");
});

Deno.test("CIDRs parse for IPv4 and IPv6, and bare addresses are single hosts", () => {
  assert.deepEqual(parseCidr("10.0.0.0/8")?.prefix, 8);
  assert.deepEqual(parseCidr("2001:db8::/32")?.prefix, 32);
  assert.deepEqual(parseCidr("127.0.0.1")?.prefix, 32);
  assert.deepEqual(parseCidr("::1")?.prefix, 128);
  assert.deepEqual(parseCidr("::ffff:10.0.0.0/104")?.prefix, 8);
  for (const bad of ["10.0.0.0/33", "::/129", "10.0.0.0/8/8", "x/8", "10.0.0.0/-1", ""]) {
    assert.equal(parseCidr(bad), null, bad);
  }
});

const proxies = (...s: string[]): Cidr[] => s.map((x) => parseCidr(x)!);

Deno.test("X-Forwarded-For is ignored unless the socket peer is a trusted proxy", () => {
  assert.equal(resolveClientAddress("203.0.113.9", "198.51.100.1", []), "203.0.113.9");
  assert.equal(
    resolveClientAddress("203.0.113.9", "198.51.100.1", proxies("10.0.0.0/8")),
    "203.0.113.9",
  );
  assert.equal(resolveClientAddress("::ffff:10.1.1.1", null, proxies("10.0.0.0/8")), "10.1.1.1");
});

Deno.test("behind trusted proxies the right-most untrusted entry is the client", () => {
  const t = proxies("10.0.0.0/8", "2001:db8:ffff::/48");
  // The client wrote the left-most entry itself; our proxies appended the rest.
  assert.equal(
    resolveClientAddress("10.0.0.2", "6.6.6.6, 198.51.100.1, 10.0.0.1", t),
    "198.51.100.1",
  );
  assert.equal(
    resolveClientAddress("2001:db8:ffff::1", "2001:DB8:1::5, 2001:db8:ffff::2", t),
    "2001:db8:1::5",
  );
  assert.equal(resolveClientAddress("10.0.0.2", "198.51.100.1:4444", t), "198.51.100.1");
  // Garbage where a proxy of ours should have written an address: the proxy is the caller.
  assert.equal(resolveClientAddress("10.0.0.2", "198.51.100.1, junk", t), "10.0.0.2");
  assert.equal(resolveClientAddress("10.0.0.2", "10.0.0.7, 10.0.0.1", t), "10.0.0.7");
});

Deno.test("addresses resolve the same the first time, again, and past the ones kept", () => {
  const proxies = [parseCidr("10.0.0.0/8")!];
  for (let round = 0; round < 2; round++) {
    for (let i = 0; i < 5_000; i++) {
      const client = `198.51.${i >> 8}.${i & 255}`;
      assert.equal(resolveClientAddress(`::ffff:${client}`, null, []), client);
      assert.equal(resolveClientAddress("10.0.0.1", `${client}, 10.1.2.3`, proxies), client);
      assert.equal(resolveClientAddress("10.0.0.1", `${client}:1, junk`, proxies), "10.0.0.1");
    }
  }
});
