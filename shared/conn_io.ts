// Helpers for code that speaks PostgreSQL's wire protocol over a Deno.Conn: the
// development PostgreSQL server and the driver tests' fault-injecting proxy.

/** The big-endian 32-bit integer at `at`, as PostgreSQL's messages carry lengths. */
export function readInt32(buf: Uint8Array, at: number): number {
  return new DataView(buf.buffer, buf.byteOffset, buf.byteLength).getInt32(at);
}

/** A typed PostgreSQL protocol message: its type byte, its length, then `body`. */
export function pgMessage(type: number, body: string): Uint8Array {
  const bytes = new TextEncoder().encode(body);
  const msg = new Uint8Array(5 + bytes.length);
  msg[0] = type;
  new DataView(msg.buffer).setInt32(1, 4 + bytes.length);
  msg.set(bytes, 5);
  return msg;
}

/** `a` then `b` in one array (`b` itself when `a` is empty). */
export function concatBytes(a: Uint8Array, b: Uint8Array): Uint8Array {
  if (a.length === 0) return b;
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** Writes all of `data`; a single write may take only part of it. */
export async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  for (let off = 0; off < data.length;) off += await conn.write(data.subarray(off));
}

/** Closes `c` unless it is closed already. */
export function closeQuietly(c: { close(): void }): void {
  try {
    c.close();
  } catch {
    // already closed
  }
}
