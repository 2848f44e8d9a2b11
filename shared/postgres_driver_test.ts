// The vendored driver's own patches to its connection queue, query results and message
// building (see shared/vendor/postgres/PATCHED.md), without a database.
import assert from "node:assert/strict";
import bytes from "./vendor/postgres/src/bytes.js";
import Queue from "./vendor/postgres/src/queue.js";
import Result from "./vendor/postgres/src/result.js";

interface Conn {
  id: number;
  queue: ReturnType<typeof Queue>;
}

Deno.test("a pool queue that never empties stays as small as what it holds", () => {
  // Two queries at a time on ten connections, as the pool moves them: the open queue
  // always keeps idle connections, so it never drains.
  const open = Queue(), busy = Queue();
  const conns: Conn[] = Array.from({ length: 10 }, (_, id) => ({ id, queue: open }));
  for (const c of conns) open.push(c);
  const move = (c: Conn, to: ReturnType<typeof Queue>) => {
    c.queue.remove(c);
    to.push(c);
    c.queue = to;
  };
  for (let n = 0; n < 50_000; n++) {
    const a = open.shift() as Conn, b = open.shift() as Conn;
    move(a, busy);
    move(b, busy);
    move(b, open);
    move(a, open);
  }
  assert.equal(open.length, 10);
  assert.equal(busy.length, 0);
  assert.ok(open.capacity <= 200, `capacity ${open.capacity}`);
  // Still first in, first out, and remove() finds only what is queued.
  const order = Array.from({ length: 10 }, () => (open.shift() as Conn).id);
  assert.deepEqual([...order].sort((x, y) => x - y), conns.map((c) => c.id));
  assert.equal(open.remove(conns[0]), null);
});

Deno.test("a result's fields start empty, keep what is set, and are not among its keys", () => {
  const r = new Result() as Result & Record<string, unknown>;
  r.push({ a: 1 });
  for (const f of ["count", "state", "command", "columns", "statement"]) assert.equal(r[f], null);
  r.count = 3;
  r.command = "SELECT";
  assert.equal(r.count, 3);
  assert.equal(r.command, "SELECT");
  assert.equal((new Result() as Result & { count: unknown }).count, null);
  assert.deepEqual(Object.keys(r), ["0"]);
  assert.equal(JSON.stringify(r), '[{"a":1}]');
  assert.deepEqual([...r], [{ a: 1 }]);
  assert.ok(!(r.map((x) => x) instanceof Result));
});

/** The part of the driver's message builder used here (its message methods are made at run time). */
interface Builder {
  (): Builder;
  Q(): Builder;
  str(x: string): Builder;
  readonly N: string;
  end(): Uint8Array;
  endWith(tail: Uint8Array): Uint8Array;
}
const b = bytes as unknown as Builder;

Deno.test("messages cut from one slab keep their own bytes while later ones are built", () => {
  const tail = new Uint8Array([69, 0, 0, 0, 9, 0, 0, 0, 0, 0, 83, 0, 0, 0, 4]);
  const built: { m: Uint8Array; text: string; withTail: boolean }[] = [];
  for (let n = 0; n < 3000; n++) {
    // Small and large ones, a few longer than a whole slab.
    const text = n % 997 === 0 ? "y".repeat(40_000) + n : "x".repeat(n % 300) + n;
    const withTail = n % 3 === 0;
    const msg = b().Q().str(text + b.N);
    built.push({ m: withTail ? msg.endWith(tail) : msg.end(), text, withTail });
  }
  const dec = new TextDecoder();
  for (const { m, text, withTail } of built) {
    const v = new DataView(m.buffer, m.byteOffset, m.byteLength);
    const length = 4 + text.length + 1;
    assert.equal(m[0], 81);
    assert.equal(v.getUint32(1), length);
    assert.equal(dec.decode(m.subarray(5, length)), text);
    assert.equal(m[length], 0);
    assert.equal(m.byteLength, 1 + length + (withTail ? tail.length : 0));
    if (withTail) assert.deepEqual([...m.subarray(1 + length)], [...tail]);
  }
});

Deno.test("a string with characters outside ASCII is written as its UTF-8, short or long", () => {
  const dec = new TextDecoder();
  const enc = new TextEncoder();
  for (const n of [0, 1, 5, 63, 126, 127, 128, 129, 300]) {
    for (const odd of ["é", "€", "😀", "\u0080"]) {
      // The odd character first, in the middle and last: the fast copy has written the
      // ASCII before it when it finds it.
      for (const at of [0, Math.floor(n / 2), n]) {
        const text = "a".repeat(at) + odd + "b".repeat(n - at);
        const m = b().Q().str(text + b.N).end();
        const bytes = enc.encode(text).byteLength;
        assert.equal(new DataView(m.buffer, m.byteOffset).getUint32(1), 4 + bytes + 1);
        assert.equal(dec.decode(m.subarray(5, 5 + bytes)), text);
        assert.equal(m[5 + bytes], 0);
      }
    }
  }
});
