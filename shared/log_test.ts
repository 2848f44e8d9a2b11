// Buffered logging loses nothing a clean stop or a crash leaves behind, keeps the order,
// and builds nothing for a level below the minimum.
import assert from "node:assert/strict";
import { createLogger } from "./log.ts";

const LOG = new URL("./log.ts", import.meta.url).href;

/** Runs `code` in a fresh Deno with the logger imported; its stdout lines and exit code. */
async function run(
  code: string,
  env: Record<string, string> = {},
): Promise<{ lines: string[]; code: number }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      `import { createLogger, writeLine, writePrivateLine } from "${LOG}";\n${code}`,
    ],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1", ...env },
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  return { lines: text.split("\n").filter(Boolean), code: out.code };
}

const numbered = (lines: string[]) => lines.map((l) => JSON.parse(l).n as number);
const upTo = (n: number) => Array.from({ length: n }, (_, i) => i);

Deno.test("every line logged before Deno.exit is written, in order", async () => {
  const r = await run(`
    const log = createLogger("t", "info");
    for (let n = 0; n < 5000; n++) log.info("line", { n });
    Deno.exit(3);`);
  assert.equal(r.code, 3);
  assert.deepEqual(numbered(r.lines), upTo(5000));
});

Deno.test("lines logged just before the program ends on its own are written", async () => {
  const r = await run(`
    const log = createLogger("t", "info");
    await new Promise((ok) => setTimeout(ok, 10));
    for (let n = 0; n < 3; n++) log.info("line", { n });`);
  assert.equal(r.code, 0);
  assert.deepEqual(numbered(r.lines), upTo(3));
});

Deno.test("lines logged before an uncaught error are written", async () => {
  const r = await run(`
    const log = createLogger("t", "info");
    for (let n = 0; n < 3; n++) log.info("line", { n });
    queueMicrotask(() => { throw new Error("boom"); });`);
  assert.notEqual(r.code, 0);
  assert.deepEqual(numbered(r.lines), upTo(3));
});

Deno.test("a warning flushes what waits before it, so the order holds across plain lines", async () => {
  const r = await run(`
    const log = createLogger("t", "info");
    log.info("a", { n: 0 });
    writeLine(JSON.stringify({ n: 1 }));
    log.warn("b", { n: 2 });
    log.info("c", { n: 3 });
    Deno.exit(0);`);
  assert.deepEqual(numbered(r.lines), upTo(4));
});

Deno.test("a line is written without waiting for the process to end", async () => {
  const r = await run(`
    const log = createLogger("t", "info");
    log.info("early", { n: 0 });
    await new Promise((ok) => setTimeout(ok, 50));
    // Killed without any exit hook: only what was already written survives.
    Deno.kill(Deno.pid, "SIGKILL");`);
  assert.deepEqual(numbered(r.lines), [0]);
});

Deno.test("a level below the minimum writes nothing and reads none of its fields", () => {
  const lines: string[] = [];
  const log = createLogger("t", "warn", {}, (l) => lines.push(l)).child({ a: 1 });
  const fields = {
    get costly(): never {
      throw new Error("read a field of a discarded line");
    },
  };
  log.debug("x", fields);
  log.info("x", fields);
  log.warn("kept", { n: 1 });
  assert.equal(lines.length, 1);
  const rec = JSON.parse(lines[0]!);
  assert.equal(rec.msg, "kept");
  assert.equal(rec.level, "warn");
  assert.equal(rec.service, "t");
  assert.equal(rec.a, 1);
  assert.equal(rec.n, 1);
});

Deno.test("an error field is written as its name and message", () => {
  const lines: string[] = [];
  createLogger("t", "info", {}, (l) => lines.push(l)).info("x", { error: new TypeError("bad") });
  assert.equal(JSON.parse(lines[0]!).error, "TypeError: bad");
});

Deno.test("with OpenTelemetry on, log lines go through the console one by one and private lines never do", async () => {
  const r = await run(
    `
    const seen = [];
    const log = console.log;
    console.log = (line) => { seen.push(line); log(line); };
    createLogger("t", "info").info("a", { n: 0 });
    writePrivateLine(JSON.stringify({ n: 1 }));
    createLogger("t", "info").info("b", { n: 2 });
    console.log = log;
    writePrivateLine(JSON.stringify({ seen: seen.map((l) => JSON.parse(l).n) }));
    Deno.exit(0);`,
    // Collected nowhere: only Deno's OpenTelemetry set-up matters here.
    { OTEL_DENO: "true", OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:9" },
  );
  assert.deepEqual(r.lines.map((l) => JSON.parse(l).n ?? JSON.parse(l).seen), [0, 1, 2, [0, 2]]);
});
