// Byte-level building blocks shared by the fuzz generators (tests/fuzz_*_test.ts):
// protobuf varints, gRPC-Web length prefixes and concatenation. Kept apart so the
// protobuf, gRPC-Web and bus generators can all use them without importing each other.

export const enc = new TextEncoder();
export const dec = new TextDecoder();

/** Concatenates byte arrays and plain byte lists into one array. */
export function concat(...parts: (Uint8Array | number[])[]): Uint8Array {
  const arrays = parts.map((p) => (p instanceof Uint8Array ? p : Uint8Array.from(p)));
  const out = new Uint8Array(arrays.reduce((n, a) => n + a.byteLength, 0));
  let off = 0;
  for (const a of arrays) {
    out.set(a, off);
    off += a.byteLength;
  }
  return out;
}

/** The protobuf varint encoding of `v` taken as an unsigned 64-bit integer. */
export function varint(v: bigint): number[] {
  let x = BigInt.asUintN(64, v);
  const out: number[] = [];
  do {
    let b = Number(x & 0x7fn);
    x >>= 7n;
    if (x) b |= 0x80;
    out.push(b);
  } while (x);
  return out;
}

/** Big-endian unsigned 32-bit integer, as in a gRPC-Web frame's length prefix. */
export function u32(n: number): number[] {
  return [(n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff];
}
