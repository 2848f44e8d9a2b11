// onShutdown in a real process: a repeated signal within the window is the same request
// to stop, a later one forces the exit, the deadline forces it too, and a forced exit
// ends the process although its server, timers and stop() are still running.
import assert from "node:assert/strict";

/**
 * A process that serves HTTP, ticks a timer and registers onShutdown with a stop() that
 * resolves after `stopMs` (never, if negative); it prints "ready" once registered.
 */
const SCRIPT = `
const { onShutdown } = await import(Deno.args[0]);
const log = (level) => (msg, fields) => console.log(JSON.stringify({ level, msg, ...fields }));
const logger = { debug: log("debug"), info: log("info"), warn: log("warn"), error: log("error") };
logger.child = () => logger;
const stopMs = Number(Deno.args[1]);
Deno.serve({ port: 0, onListen() {} }, () => new Response("ok"));
setInterval(() => {}, 50);
onShutdown(
  () => new Promise((resolve) => { if (stopMs >= 0) setTimeout(resolve, stopMs); }),
  logger,
  { deadlineMs: Number(Deno.args[2]), repeatWindowMs: 500 },
);
console.log("ready");
`;

class Child {
  readonly lines: string[] = [];
  readonly status: Promise<Deno.CommandStatus>;
  private readonly child: Deno.ChildProcess;
  private readonly read: Promise<void>;

  constructor(script: string, stopMs: number, deadlineMs: number) {
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--quiet",
        "--allow-read",
        "--allow-net=0.0.0.0",
        script,
        new URL("./lifecycle.ts", import.meta.url).href,
        String(stopMs),
        String(deadlineMs),
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    this.child = child;
    this.status = child.status;
    this.read = (async () => {
      let buf = "";
      for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
        buf += chunk;
        const parts = buf.split("\n");
        buf = parts.pop()!;
        this.lines.push(...parts);
      }
    })();
  }

  async waitFor(text: string): Promise<void> {
    for (let i = 0; i < 300 && !this.lines.some((l) => l.includes(text)); i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok(this.lines.some((l) => l.includes(text)), `no "${text}": ${this.lines}`);
  }

  kill(signal: Deno.Signal) {
    this.child.kill(signal);
  }

  /** Exit status, or undefined if still running after `ms` (then it is killed). */
  async exitWithin(ms: number): Promise<Deno.CommandStatus | undefined> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const status = await Promise.race([
      this.status,
      new Promise<undefined>((r) => (timer = setTimeout(() => r(undefined), ms))),
    ]);
    clearTimeout(timer);
    if (!status) {
      this.child.kill("SIGKILL");
      await this.status;
    }
    await this.read;
    return status;
  }

  has(msg: string): boolean {
    return this.lines.some((l) => l.includes(`"msg":"${msg}"`));
  }
}

async function withScript(fn: (script: string) => Promise<void>) {
  const script = await Deno.makeTempFile({ suffix: ".js" });
  try {
    await Deno.writeTextFile(script, SCRIPT);
    await fn(script);
  } finally {
    await Deno.remove(script);
  }
}

Deno.test("one signal and a stop that finishes: stopped cleanly, exit 0", async () => {
  await withScript(async (script) => {
    const c = new Child(script, 100, 10_000);
    await c.waitFor("ready");
    c.kill("SIGTERM");
    const status = await c.exitWithin(10_000);
    assert.equal(status?.code, 0, c.lines.join("\n"));
    assert.ok(c.has("stopped cleanly"));
  });
});

Deno.test("two signals within the window count as one: the stop goes on undisturbed", async () => {
  await withScript(async (script) => {
    const c = new Child(script, 1_000, 10_000);
    await c.waitFor("ready");
    c.kill("SIGINT");
    // Once the first is seen, so the two cannot merge into one delivery on the way.
    await c.waitFor("shutting down");
    c.kill("SIGINT");
    const status = await c.exitWithin(10_000);
    assert.equal(status?.code, 0, c.lines.join("\n"));
    assert.equal(c.lines.filter((l) => l.includes("shutting down")).length, 1);
    assert.ok(!c.has("second signal; exiting now"));
    assert.ok(c.has("stopped cleanly"));
  });
});

Deno.test("a second signal after the window ends a process whose stop never finishes", async () => {
  await withScript(async (script) => {
    const c = new Child(script, -1, 60_000);
    await c.waitFor("ready");
    c.kill("SIGTERM");
    await c.waitFor("shutting down");
    await new Promise((r) => setTimeout(r, 700));
    c.kill("SIGTERM");
    const status = await c.exitWithin(10_000);
    assert.ok(status, "still running after the second signal");
    assert.equal(status.code, 1);
    assert.ok(c.has("second signal; exiting now"));
  });
});

Deno.test("the deadline ends a process whose stop never finishes", async () => {
  await withScript(async (script) => {
    const c = new Child(script, -1, 1_000);
    await c.waitFor("ready");
    c.kill("SIGTERM");
    const status = await c.exitWithin(10_000);
    assert.ok(status, "still running after the deadline");
    assert.equal(status.code, 1);
    assert.ok(c.has("shutdown deadline passed; exiting"));
  });
});
