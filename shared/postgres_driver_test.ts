// The vendored driver's own patches to its connection queue and query results (see
// shared/vendor/postgres/PATCHED.md), without a database.
import assert from "node:assert/strict";
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
