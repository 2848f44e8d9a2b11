// Protobuf-level fuzz generators shared by the RPC and bus fuzzing
// (tests/fuzz_rpc_test.ts, tests/fuzz_bus_test.ts): hand-encoded fields of any wire
// type (with lying lengths), byte-level mutations of real messages, and real encoded
// messages whose field values come from a caller's generator.
import fc from "fast-check";
import { create, toBinary } from "@bufbuild/protobuf";
import type { DescField, DescMessage } from "@bufbuild/protobuf";
import { concat, enc, varint } from "./bytes.ts";

/** One protobuf field as it goes on the wire, possibly malformed. */
export interface RawField {
  no: number;
  wire: number;
  varint: bigint;
  bytes: Uint8Array;
  /** Added to a length-delimited field's declared length. */
  lie: number;
}

export const rawFieldArb: fc.Arbitrary<RawField> = fc.record({
  no: fc.oneof(
    { weight: 4, arbitrary: fc.integer({ min: 1, max: 8 }) },
    { weight: 1, arbitrary: fc.integer({ min: 0, max: 2 ** 29 - 1 }) },
  ),
  wire: fc.oneof(
    { weight: 4, arbitrary: fc.constantFrom(0, 2) },
    { weight: 1, arbitrary: fc.integer({ min: 0, max: 7 }) },
  ),
  varint: fc.bigInt({ min: -(2n ** 63n), max: 2n ** 64n - 1n }),
  bytes: fc.oneof(
    fc.string({ unit: "grapheme", maxLength: 40 }).map((s) => enc.encode(s)),
    fc.uint8Array({ maxLength: 60 }),
  ),
  lie: fc.oneof(
    { weight: 6, arbitrary: fc.constant(0) },
    { weight: 1, arbitrary: fc.integer({ min: -8, max: 8 }) },
    { weight: 1, arbitrary: fc.nat() },
  ),
});

export function encodeRaw(f: RawField): Uint8Array {
  const key = varint(BigInt(f.no) * 8n + BigInt(f.wire));
  const pad = (n: number) => concat(f.bytes, new Uint8Array(n)).subarray(0, n);
  switch (f.wire) {
    case 0:
      return concat(key, varint(f.varint));
    case 1:
      return concat(key, pad(8));
    case 2:
      return concat(key, varint(BigInt(Math.max(0, f.bytes.byteLength + f.lie))), f.bytes);
    case 5:
      return concat(key, pad(4));
    default: // groups (3, 4) and the wire types that do not exist (6, 7)
      return concat(key, f.bytes.subarray(0, 4));
  }
}

export type Mutation =
  | { op: "flip"; at: number; bit: number }
  | { op: "set"; at: number; value: number }
  | { op: "insert"; at: number; bytes: Uint8Array }
  | { op: "delete"; at: number; len: number }
  | { op: "truncate"; at: number }
  | { op: "append"; bytes: Uint8Array }
  | { op: "double" };

export const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({
    op: fc.constant("flip" as const),
    at: fc.nat(),
    bit: fc.integer({ min: 0, max: 7 }),
  }),
  fc.record({
    op: fc.constant("set" as const),
    at: fc.nat(),
    value: fc.integer({ min: 0, max: 255 }),
  }),
  fc.record({
    op: fc.constant("insert" as const),
    at: fc.nat(),
    bytes: fc.oneof(fc.uint8Array({ minLength: 1, maxLength: 8 }), rawFieldArb.map(encodeRaw)),
  }),
  fc.record({
    op: fc.constant("delete" as const),
    at: fc.nat(),
    len: fc.integer({ min: 1, max: 8 }),
  }),
  fc.record({ op: fc.constant("truncate" as const), at: fc.nat() }),
  fc.record({ op: fc.constant("append" as const), bytes: rawFieldArb.map(encodeRaw) }),
  fc.record({ op: fc.constant("double" as const) }),
);

/** Applies the mutations in order; positions wrap around the current length. */
export function mutate(input: Uint8Array, muts: Mutation[]): Uint8Array {
  let b = input;
  for (const m of muts) {
    const at = (n: number) => (b.byteLength === 0 ? 0 : n % b.byteLength);
    switch (m.op) {
      case "flip":
        if (b.byteLength) (b = b.slice())[at(m.at)]! ^= 1 << m.bit;
        break;
      case "set":
        if (b.byteLength) (b = b.slice())[at(m.at)] = m.value;
        break;
      case "insert":
        b = concat(b.subarray(0, at(m.at)), m.bytes, b.subarray(at(m.at)));
        break;
      case "delete":
        b = concat(b.subarray(0, at(m.at)), b.subarray(at(m.at) + m.len));
        break;
      case "truncate":
        b = b.subarray(0, at(m.at));
        break;
      case "append":
        b = concat(b, m.bytes);
        break;
      case "double":
        b = concat(b, b);
        break;
    }
  }
  return b;
}

/** A real encoded request of `schema`, its fields chosen by `value`. */
export function encodedArb(
  schema: DescMessage,
  value: (f: DescField) => fc.Arbitrary<unknown>,
): fc.Arbitrary<Uint8Array> {
  return fc.tuple(...schema.fields.map((f) => fc.option(value(f), { nil: undefined }))).map(
    (vals) => {
      const init: Record<string, unknown> = {};
      schema.fields.forEach((f, i) => {
        if (vals[i] !== undefined) init[f.localName] = vals[i];
      });
      return toBinary(schema, create(schema, init));
    },
  );
}
