// Test harness: starts auth-service and otp-service as real processes, with exactly
// the permission flags of their deno.json tasks, against the real PostgreSQL and
// RabbitMQ. Each stack gets its own database and RabbitMQ vhost, so test files can run
// in parallel without stealing each other's messages.
import { createPool } from "../shared/postgres.ts";
import type { Sql } from "../shared/postgres.ts";
import { constantTimeEqual, HmacKey, otpMac } from "../shared/crypto.ts";
import { parseConsoleSmsLine } from "../otp_service/sms/console_sender.ts";

export const DATABASE_URL = Deno.env.get("DATABASE_URL") ??
  "postgres://postgres@127.0.0.1:5432/postgres";
export const AMQP_URL = Deno.env.get("AMQP_URL") ?? "amqp://guest:guest@127.0.0.1:5672";

const ROOT = new URL("../", import.meta.url);

/** The argv of a deno.json task, so tests run services exactly as the task does. */
export async function taskArgs(task: "auth" | "otp" | "dev"): Promise<string[]> {
  const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", ROOT)));
  const line: string = config.tasks[task];
  const args = line.split(/\s+/);
  if (args[0] !== "deno") throw new Error(`task ${task} does not start with deno`);
  return args.slice(1);
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

  constructor(readonly name: string, args: string[], env: Record<string, string>) {
    this.child = new Deno.Command("deno", {
      args,
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
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        new Promise<void>((r) => this.waiters.push(r)),
        new Promise<void>((r) => (timer = setTimeout(r, Math.min(left, 250)))),
      ]);
      clearTimeout(timer);
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

export interface StackOptions {
  authEnv?: Record<string, string>;
  otpEnv?: Record<string, string>;
  /** Declare extra queues before the services start (e.g. a tap on the exchange). */
  beforeStart?: (amqpUrl: string) => Promise<void>;
}

export interface Stack {
  auth: Service;
  otp: Service;
  authUrl: string;
  otpUrl: string;
  databaseUrl: string;
  amqpUrl: string;
  vhost: string;
  sql: Sql;
  secrets: { OTP_HMAC_KEY: string; INTERNAL_API_TOKEN: string };
  env: { auth: Record<string, string>; otp: Record<string, string> };
  startAuth(): Promise<Service>;
  startOtp(): Promise<Service>;
  stop(): Promise<void>;
}

function hex(bytes: number): string {
  return Array.from(
    crypto.getRandomValues(new Uint8Array(bytes)),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
}

async function rabbitmqctl(...args: string[]): Promise<void> {
  const out = await new Deno.Command("rabbitmqctl", { args, stdout: "null", stderr: "piped" })
    .output();
  if (!out.success) {
    throw new Error(`rabbitmqctl ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
}

export async function createVhost(): Promise<
  { vhost: string; url: string; drop(): Promise<void> }
> {
  const vhost = `test_${hex(6)}`;
  await rabbitmqctl("add_vhost", vhost);
  await rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*");
  const u = new URL(AMQP_URL);
  u.pathname = `/${vhost}`;
  return { vhost, url: u.toString(), drop: () => rabbitmqctl("delete_vhost", vhost) };
}

export async function createDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  const name = `test_${hex(6)}`;
  const admin = createPool({ url: DATABASE_URL, applicationName: "tests", max: 1 });
  await admin.unsafe(`create database ${name}`);
  await admin.end();
  const u = new URL(DATABASE_URL);
  u.pathname = `/${name}`;
  return {
    url: u.toString(),
    drop: async () => {
      const a = createPool({ url: DATABASE_URL, applicationName: "tests", max: 1 });
      await a.unsafe(`drop database if exists ${name} with (force)`);
      await a.end();
    },
  };
}

export async function startStack(o: StackOptions = {}): Promise<Stack> {
  const db = await createDatabase();
  const vh = await createVhost();
  if (o.beforeStart) await o.beforeStart(vh.url);
  const secrets = { OTP_HMAC_KEY: hex(32), INTERNAL_API_TOKEN: hex(32) };
  const base = {
    PATH: Deno.env.get("PATH") ?? "",
    HOME: Deno.env.get("HOME") ?? "",
    DENO_DIR: Deno.env.get("DENO_DIR") ?? "",
    NO_COLOR: "1",
    DATABASE_URL: db.url,
    AMQP_URL: vh.url,
    ...secrets,
  };
  const otpEnv: Record<string, string> = { ...base, OTP_PORT: "0", ...o.otpEnv };
  // Every test client is 127.0.0.1: per-address caps are raised unless a test sets them.
  const authEnv: Record<string, string> = {
    ...base,
    AUTH_PORT: "0",
    ADDRESS_SEND_LIMIT: "1000000",
    ADDRESS_CHECK_LIMIT: "1000000",
    ...o.authEnv,
  };
  for (const env of [otpEnv, authEnv]) if (!env.DENO_DIR) delete env.DENO_DIR;
  const sql = createPool({ url: db.url, applicationName: "tests", max: 4 });

  const stack: Stack = {
    auth: undefined as unknown as Service,
    otp: undefined as unknown as Service,
    authUrl: "",
    otpUrl: "",
    databaseUrl: db.url,
    amqpUrl: vh.url,
    vhost: vh.vhost,
    sql,
    secrets,
    env: { auth: authEnv, otp: otpEnv },
    async startOtp() {
      // Keep the port across restarts so auth-service still finds it.
      if (stack.otp?.port) otpEnv.OTP_PORT = String(stack.otp.port);
      stack.otp = new Service("otp-service", await taskArgs("otp"), otpEnv);
      stack.otpUrl = `http://127.0.0.1:${await stack.otp.waitListening()}`;
      return stack.otp;
    },
    async startAuth() {
      authEnv.OTP_SERVICE_URL = stack.otpUrl;
      if (stack.auth?.port) authEnv.AUTH_PORT = String(stack.auth.port);
      stack.auth = new Service("auth-service", await taskArgs("auth"), authEnv);
      stack.authUrl = `http://127.0.0.1:${await stack.auth.waitListening()}`;
      return stack.auth;
    },
    async stop() {
      await Promise.all([stack.auth?.stop(), stack.otp?.stop()]);
      await sql.end({ timeout: 2 });
      await Promise.all([db.drop(), vh.drop()]);
    },
  };
  try {
    await stack.startOtp();
    await stack.startAuth();
  } catch (err) {
    await stack.stop().catch(() => {});
    throw err;
  }
  return stack;
}

/** A fresh, valid, unused US number. */
export function randomPhone(): string {
  const n = 2_000_000 + Math.floor(Math.random() * 7_000_000);
  return `+1415${n}`;
}

/**
 * The first code the console SMS sender printed for `phone` at or after line `from`,
 * once auth-service holds the matching challenge (so the code can be redeemed).
 */
export async function codeFor(
  stack: Stack,
  phone: string,
  purpose: "signup" | "login",
  from = 0,
  timeoutMs = 15_000,
): Promise<string> {
  const line = await stack.otp.waitForLine(
    (l) => parseConsoleSmsLine(l)?.to === phone,
    timeoutMs,
    from,
  );
  const code = /(\d{6})/.exec(parseConsoleSmsLine(line)!.body)?.[1];
  if (!code) throw new Error("no code in SMS");
  const key = await HmacKey.import(stack.secrets.OTP_HMAC_KEY);
  await eventually(
    async () => {
      const [c] = await stack.sql<{ request_id: string; code_mac: Uint8Array }[]>`
      select request_id, code_mac from auth.challenges
       where phone_number = ${phone} and purpose = ${purpose} and consumed_at is null`;
      if (!c) return false;
      const mac = await otpMac(key, c.request_id, phone, purpose, code);
      return constantTimeEqual(mac, new Uint8Array(c.code_mac));
    },
    timeoutMs,
    `challenge for ${phone}`,
  );
  return code;
}

/** Polls (bounded) until `fn` returns a truthy value. */
export async function eventually<T>(
  fn: () => Promise<T | undefined | null | false>,
  timeoutMs = 10_000,
  what = "condition",
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
