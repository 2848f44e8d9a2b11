// Generators of the request headers a stranger controls (tests/fuzz_rpc_test.ts):
// Authorization (none, the fixture's session, the internal API token, near misses with
// odd case and spacing, truncated or extended tokens, other schemes, junk) and
// X-Forwarded-For, plus the header-safe strings other header fields are fuzzed with.
import fc from "fast-check";
import type { Fixture } from "./services.ts";

/** Printable ASCII and Latin-1: what a header value can carry. */
const headerChar = fc.oneof(
  { weight: 9, arbitrary: fc.integer({ min: 0x20, max: 0x7e }) },
  { weight: 1, arbitrary: fc.integer({ min: 0x80, max: 0xff }) },
  { weight: 1, arbitrary: fc.constant(0x09) },
).map((c) => String.fromCharCode(c));
export const headerString = (maxLength: number) => fc.string({ unit: headerChar, maxLength });
const token43 = fc.stringMatching(/^[A-Za-z0-9_-]{43}$/);
export const bearerWord = fc.mixedCase(fc.constant("bearer"));
export const spaces = fc.constantFrom(" ", "  ", "\t", " \t ");

/** Authorization values: none, the fixture's session, the internal token, near misses. */
export function authorizationArb(fx: Fixture, internal: string): fc.Arbitrary<string | undefined> {
  return fc.oneof(
    { weight: 2, arbitrary: fc.constant(undefined) },
    { weight: 2, arbitrary: fc.constant(`Bearer ${fx.token}`) },
    { weight: 1, arbitrary: fc.constant(`Bearer ${internal}`) },
    {
      weight: 1,
      arbitrary: fc.tuple(bearerWord, spaces, fc.constantFrom(fx.token, internal), spaces)
        .map((p) => p.join("")),
    },
    { weight: 2, arbitrary: fc.tuple(bearerWord, spaces, token43).map((p) => p.join("")) },
    {
      weight: 1,
      arbitrary: fc.constantFrom(
        `Bearer ${fx.token.slice(0, 42)}`,
        `Bearer ${fx.token}x`,
        `Bearer ${fx.token} ${fx.token}`,
        `Bearer${fx.token}`,
        `Basic ${btoa("user:pass")}`,
        `Bearer ${internal.slice(0, -1)}`,
        `Bearer ${internal.toUpperCase()}`,
        "Bearer",
        "Bearer ",
        "",
        `Bearer ${"A".repeat(4000)}`,
      ),
    },
    { weight: 2, arbitrary: fc.tuple(bearerWord, spaces, headerString(80)).map((p) => p.join("")) },
    { weight: 1, arbitrary: headerString(200) },
  );
}

export const forwardedForArb: fc.Arbitrary<string> = fc.oneof(
  { weight: 6, arbitrary: fc.ipV4() },
  { weight: 1, arbitrary: fc.ipV6() },
  { weight: 1, arbitrary: fc.tuple(headerString(30), fc.ipV4()).map(([a, b]) => `${a}, ${b}`) },
  { weight: 1, arbitrary: headerString(80) },
);
