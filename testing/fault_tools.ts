// Tools for the fault-injection tests (tests/faults/): stopping and starting the real
// broker, killing database backends, reading queues and dead-letter queues, and plain
// Connect RPCs that report how they ended. Every wait here is bounded.
import amqp from "amqplib";
import type { Channel, ChannelModel, GetMessage } from "amqplib";
import { Buffer } from "node:buffer";
import { createPool } from "../shared/postgres.ts";
import { QUEUES } from "../shared/topology.ts";
import { DATABASE_URL, startStack } from "./stack.ts";
import type { Service, Stack } from "./stack.ts";

const text = new TextDecoder();

/** Runs rabbitmqctl; resolves with its stdout, rejects with its stderr. */
export async function rabbitmqctl(args: string[], timeoutMs = 60_000): Promise<string> {
  const out = await new Deno.Command("rabbitmqctl", {
    args,
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(timeoutMs),
  }).output();
  if (!out.success) {
    throw new Error(`rabbitmqctl ${args.join(" ")}: ${text.decode(out.stderr).trim()}`);
  }
  return text.decode(out.stdout);
}

/** True when the RabbitMQ application accepts AMQP connections on its port. */
export async function brokerListening(): Promise<boolean> {
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: 5672 });
    conn.close();
    return true;
  } catch {
    return false;
  }
}

/** `rabbitmqctl stop_app`: every connection on the machine drops; the node stays up. */
export async function stopBroker(): Promise<void> {
  await rabbitmqctl(["stop_app"]);
}

/** `rabbitmqctl start_app`, then waits (bounded) until it accepts connections. */
export async function startBroker(timeoutMs = 60_000): Promise<void> {
  await rabbitmqctl(["start_app"], timeoutMs);
  await until(brokerListening, timeoutMs, "RabbitMQ to listen");
}

/**
 * For finally blocks: makes sure RabbitMQ runs, whatever state a test left it in
 * (app stopped, or the whole node down).
 */
export async function ensureBrokerRunning(): Promise<void> {
  if (await brokerListening()) return;
  try {
    await startBroker(60_000);
    return;
  } catch {
    // The node itself is down: start it.
  }
  await new Deno.Command("rabbitmq-server", { args: ["-detached"] }).output().catch(() => {});
  await rabbitmqctl(["await_startup", "--timeout", "120"], 130_000).catch(() => {});
  await rabbitmqctl(["start_app"]).catch(() => {});
  await until(brokerListening, 60_000, "RabbitMQ to listen");
}

export interface QueueStats {
  ready: number;
  unacked: number;
  consumers: number;
}

/** Message counts of every queue in a vhost, by name. */
export async function queueStats(vhost: string): Promise<Record<string, QueueStats>> {
  const out = await rabbitmqctl([
    "-q",
    "list_queues",
    "-p",
    vhost,
    "name",
    "messages_ready",
    "messages_unacknowledged",
    "consumers",
    "--formatter",
    "json",
  ]);
  const rows = JSON.parse(out) as {
    name: string;
    messages_ready: number;
    messages_unacknowledged: number;
    consumers: number;
  }[];
  return Object.fromEntries(rows.map((r) => [r.name, {
    ready: r.messages_ready,
    unacked: r.messages_unacknowledged,
    consumers: r.consumers,
  }]));
}

/** A plain amqplib connection (no recovery) to a stack's vhost, for publishing and reading. */
export class RawAmqp {
  private constructor(readonly conn: ChannelModel, readonly ch: Channel) {}

  static async open(url: string): Promise<RawAmqp> {
    const conn = await amqp.connect(url);
    conn.on("error", () => {});
    const ch = await conn.createConfirmChannel();
    ch.on("error", () => {});
    return new RawAmqp(conn, ch);
  }

  /** Publishes with a publisher confirm. */
  async publish(
    exchange: string,
    routingKey: string,
    body: Uint8Array,
    props: amqp.Options.Publish,
  ): Promise<void> {
    const ch = this.ch as amqp.ConfirmChannel;
    await new Promise<void>((resolve, reject) => {
      ch.publish(exchange, routingKey, Buffer.from(body), { persistent: true, ...props }, (err) => {
        if (err) reject(err);
        else resolve();
      });
    });
  }

  /**
   * Takes (acknowledges) messages from a queue until `count` arrived or `timeoutMs`
   * passed; returns what it got.
   */
  async take(queue: string, count: number, timeoutMs = 10_000): Promise<GetMessage[]> {
    const got: GetMessage[] = [];
    const deadline = Date.now() + timeoutMs;
    while (got.length < count && Date.now() < deadline) {
      const m = await this.ch.get(queue, { noAck: true });
      if (m) got.push(m);
      else await sleep(100);
    }
    return got;
  }

  /** Declares a durable queue bound to `exchange` with each routing key (a tap). */
  async tap(queue: string, exchange: string, routingKeys: string[]): Promise<void> {
    await this.ch.assertExchange(exchange, "direct", { durable: true });
    await this.ch.assertQueue(queue, { durable: true });
    for (const key of routingKeys) await this.ch.bindQueue(queue, exchange, key);
  }

  async close(): Promise<void> {
    await this.conn.close().catch(() => {});
  }
}

/** The database name of a stack. */
export function databaseName(stack: Stack): string {
  return decodeURIComponent(new URL(stack.databaseUrl).pathname.slice(1));
}

/**
 * Terminates every backend of the stack's database except the test harness's own
 * (application_name 'tests'); returns how many it terminated.
 */
export async function terminateBackends(dbName: string): Promise<number> {
  const admin = createPool({ url: DATABASE_URL, applicationName: "fault-admin", max: 1 });
  try {
    const [row] = await admin<{ n: number }[]>`
      select count(pg_terminate_backend(pid))::int as n from pg_stat_activity
       where datname = ${dbName} and pid <> pg_backend_pid()
         and coalesce(application_name, '') <> 'tests'`;
    return row?.n ?? 0;
  } finally {
    await admin.end({ timeout: 2 });
  }
}

export interface RpcResult {
  /** HTTP status; 0 when no HTTP answer came (refused, reset, or our timeout). */
  status: number;
  /** "ok", the Connect error code, "timeout", or "network". */
  code: string;
  json: Record<string, unknown>;
  ms: number;
}

/** One Connect unary call in JSON over fetch; never throws. */
export async function rpc(
  baseUrl: string,
  path: string,
  body: unknown,
  o: { headers?: Record<string, string>; timeoutMs?: number } = {},
): Promise<RpcResult> {
  const started = performance.now();
  const signal = AbortSignal.timeout(o.timeoutMs ?? 10_000);
  try {
    const res = await fetch(`${baseUrl}/${path}`, {
      method: "POST",
      headers: { "content-type": "application/json", ...o.headers },
      body: JSON.stringify(body),
      signal,
    });
    const raw = await res.text();
    let json: Record<string, unknown> = {};
    try {
      json = JSON.parse(raw);
    } catch { /* not JSON */ }
    const code = res.status === 200 ? "ok" : String(json.code ?? `http_${res.status}`);
    return { status: res.status, code, json, ms: performance.now() - started };
  } catch (err) {
    const timeout = signal.aborted;
    return {
      status: 0,
      code: timeout ? "timeout" : "network",
      json: { error: (err as Error).message },
      ms: performance.now() - started,
    };
  }
}

export const SIGNUP = "auth.v1.AuthService/SignupWithPhoneNumber";
export const VERIFY = "auth.v1.AuthService/VerifyPhoneNumber";
export const VALIDATE_LOGIN = "auth.v1.AuthService/ValidatePhoneNumberLogin";
export const GET_PROFILE = "auth.v1.AuthService/GetProfile";

let addressCounter = 0;
/**
 * Headers that give each simulated client its own address (honoured because the
 * fault stacks run auth-service with TRUSTED_PROXY_HOPS=1), so per-client caps do not
 * mistake a test's many users for one abusive client.
 */
export function clientHeaders(extra: Record<string, string> = {}): Record<string, string> {
  const n = ++addressCounter;
  return { "x-forwarded-for": `10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}`, ...extra };
}

/** Distinct fresh US numbers. */
export function distinctPhones(n: number, fresh: () => string): string[] {
  const set = new Set<string>();
  for (let i = 0; set.size < n && i < n * 100; i++) set.add(fresh());
  return [...set];
}

/** Runs `fn` over `items` with at most `limit` at once. */
export async function mapLimit<T, R>(
  items: T[],
  limit: number,
  fn: (item: T, index: number) => Promise<R>,
): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!, i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

/** Polls (bounded) until `fn` is truthy. */
export async function until(
  fn: () => Promise<boolean> | boolean,
  timeoutMs: number,
  what: string,
  everyMs = 100,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await fn()) return;
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await sleep(everyMs);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
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

/** Env for otp-service to send through a (fake) Twilio at `baseUrl`. */
export function twilioEnv(
  baseUrl: string,
  accountSid: string,
  authToken: string,
): Record<string, string> {
  return {
    SMS_PROVIDER: "twilio",
    TWILIO_ACCOUNT_SID: accountSid,
    TWILIO_AUTH_TOKEN: authToken,
    TWILIO_FROM_NUMBER: "+15005550006",
    TWILIO_API_BASE_URL: baseUrl,
  };
}

/** The six-digit code in an SMS body. */
export function codeIn(body: string | undefined): string {
  const code = /(?<!\d)(\d{6})(?!\d)/.exec(body ?? "")?.[1];
  if (!code) throw new Error("no code in SMS body");
  return code;
}

/**
 * Runs `fn`; if it throws, prints the services' last warnings and errors (and any
 * non-JSON output) so a CI failure explains itself, then rethrows.
 */
export async function explainFailure<T>(
  services: { name: string; lines: string[] }[],
  fn: () => Promise<T>,
): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    for (const s of services) {
      const notable = s.lines.filter((l) =>
        !l.startsWith("{") ? !l.startsWith("[sms]") : /"level":"(warn|error)"/.test(l)
      );
      console.error(
        `--- ${s.name}: last warnings and errors ---\n${notable.slice(-40).join("\n")}`,
      );
    }
    throw err;
  }
}

/**
 * Waits (bounded) until the topology's work queues and dead-letter queues are empty
 * and each work queue has a consumer (taps a test added are ignored). The broker's
 * counters lag a few seconds, so this polls.
 */
export async function queuesSettled(vhost: string, timeoutMs = 15_000): Promise<void> {
  let last: Record<string, QueueStats> = {};
  const names = QUEUES.flatMap((q) => [q.name, q.deadLetterQueue]);
  try {
    await until(
      async () => {
        last = await queueStats(vhost);
        return names.every((name) => {
          const s = last[name];
          return s !== undefined && s.ready + s.unacked === 0 &&
            (name.endsWith(".dlq") || s.consumers >= 1);
        });
      },
      timeoutMs,
      "queues to settle",
      500,
    );
  } catch (err) {
    throw new Error(`${(err as Error).message}: ${JSON.stringify(last)}`);
  }
}

/** Closes every client connection to `vhost` (as a network blip or a failover would). */
export async function closeConnections(vhost: string): Promise<void> {
  await rabbitmqctl(["close_all_connections", "--vhost", vhost, "fault test"]);
}

export interface FreshStackOptions {
  /** Added to both services' environment. */
  env?: Record<string, string>;
  /** Added to otp-service's environment only (e.g. twilioEnv). */
  otpEnv?: Record<string, string>;
  beforeStart?: (amqpUrl: string) => Promise<void>;
}

/**
 * Runs a fault scenario on a fresh stack (client addresses taken from
 * X-Forwarded-For), explaining a failure with the last warnings of every service the
 * scenario ran (it pushes restarted ones onto `services`), and always leaves the
 * broker running and the stack stopped.
 */
export async function onFreshStack(
  scenario: (stack: Stack, services: Service[]) => Promise<void>,
  o: FreshStackOptions = {},
): Promise<void> {
  const env = { TRUSTED_PROXY_HOPS: "1", ...o.env };
  const stack = await startStack({
    authEnv: env,
    otpEnv: { ...env, ...o.otpEnv },
    beforeStart: o.beforeStart,
  });
  const services: Service[] = [stack.auth, stack.otp];
  try {
    await explainFailure(services, () => scenario(stack, services));
  } finally {
    await ensureBrokerRunning();
    await stack.stop();
  }
}
