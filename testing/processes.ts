// The services as real processes, started exactly as their deno.json tasks start them,
// with their output kept line by line so tests can wait for and read it.
import { delay } from "../shared/async.ts";

const ROOT = new URL("../", import.meta.url);

/** The argv of a deno.json task, so tests run services exactly as the task does. */
export async function taskArgs(task: "auth" | "otp" | "dev"): Promise<string[]> {
  const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", ROOT)));
  const line: string = config.tasks[task];
  const args = line.split(/\s+/);
  if (args[0] !== "deno") throw new Error(`task ${task} does not start with deno`);
  return args.slice(1);
}

/**
 * What a process the tests start takes from the tests' own environment, and nothing
 * else: a service reads only what a test hands it on top.
 */
export function processEnv(): Record<string, string> {
  const env: Record<string, string> = {
    PATH: Deno.env.get("PATH") ?? "",
    HOME: Deno.env.get("HOME") ?? "",
    NO_COLOR: "1",
  };
  const denoDir = Deno.env.get("DENO_DIR");
  if (denoDir) env.DENO_DIR = denoDir;
  return env;
}

export class Service {
  readonly lines: string[] = [];
  private waiters: (() => void)[] = [];
  private child: Deno.ChildProcess;
  readonly exited: Promise<Deno.CommandStatus>;
  /** Resolves once standard output and error are read to their end. */
  readonly outputDone: Promise<void>;
  port = 0;
  private done = false;

  constructor(
    readonly name: string,
    args: string[],
    env: Record<string, string>,
    o: {
      /**
       * Leader of a new session and process group (setsid: pid == pgid), so a signal
       * can go to every process it starts, as a terminal or a container runtime sends it.
       */
      processGroup?: boolean;
    } = {},
  ) {
    this.child = new Deno.Command(o.processGroup ? "setsid" : "deno", {
      args: o.processGroup ? ["deno", ...args] : args,
      cwd: ROOT,
      env,
      clearEnv: true,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.exited = this.child.status;
    this.outputDone = Promise.all([this.pump(this.child.stdout), this.pump(this.child.stderr)])
      .then(() => {}, () => {});
    // Once the process is gone and its output read, no awaited line can still come.
    Promise.all([this.exited, this.outputDone]).then(() => {
      this.done = true;
      this.waiters.splice(0).forEach((w) => w());
    });
  }

  get pid(): number {
    return this.child.pid;
  }

  private async pump(stream: ReadableStream<Uint8Array>) {
    const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        this.lines.push(buf.slice(0, i));
        buf = buf.slice(i + 1);
      }
      this.waiters.splice(0).forEach((w) => w());
    }
    if (buf) this.lines.push(buf);
    this.waiters.splice(0).forEach((w) => w());
  }

  /** Waits (bounded) for a line matching `pred`, searching from line `from`. */
  async waitForLine(pred: (l: string) => boolean, timeoutMs = 15_000, from = 0): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    let seen = from;
    for (;;) {
      for (; seen < this.lines.length; seen++) {
        if (pred(this.lines[seen]!)) return this.lines[seen]!;
      }
      const left = deadline - Date.now();
      if (left <= 0 || this.done) {
        throw new Error(
          `${this.name}: no matching line in ${timeoutMs}ms; last lines:\n` +
            this.lines.slice(-15).join("\n"),
        );
      }
      const tick = new AbortController();
      await Promise.race([
        new Promise<void>((r) => this.waiters.push(r)),
        delay(Math.min(left, 250), { signal: tick.signal }).catch(() => {}),
      ]);
      tick.abort();
    }
  }

  async waitListening(): Promise<number> {
    const line = await this.waitForLine((l) => l.includes('"msg":"listening"'), 30_000);
    this.port = JSON.parse(line).port;
    return this.port;
  }

  signal(sig: Deno.Signal) {
    try {
      this.child.kill(sig);
    } catch { /* already gone */ }
  }

  /** Sends `sig` to the whole process group (a service started with `processGroup`). */
  signalGroup(sig: Deno.Signal) {
    try {
      Deno.kill(-this.child.pid, sig);
    } catch { /* already gone */ }
  }

  /**
   * Sends `sig` and waits for the exit and the last output; SIGKILL if it has not
   * exited after `timeoutMs`.
   */
  async kill(sig: Deno.Signal = "SIGKILL", timeoutMs = 15_000): Promise<Deno.CommandStatus> {
    this.signal(sig);
    const timer = setTimeout(() => this.signal("SIGKILL"), timeoutMs);
    const status = await this.exited;
    clearTimeout(timer);
    await this.outputDone;
    return status;
  }

  async stop(): Promise<Deno.CommandStatus> {
    this.signal("SIGTERM");
    const timer = setTimeout(() => this.signal("SIGKILL"), 15_000);
    const status = await this.exited;
    clearTimeout(timer);
    return status;
  }
}

/** Parsed JSON log lines of a service (non-JSON lines are skipped). */
export function jsonLogs(lines: string[]): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const l of lines) {
    if (!l.startsWith("{")) continue;
    try {
      out.push(JSON.parse(l));
    } catch { /* partial line */ }
  }
  return out;
}
