// The pipeline figures: signups to stored challenges through both services and
// RabbitMQ, each service's time to ready and its idle memory. The stack is the real
// one (services as processes with their task permissions, the console SMS sender);
// limits that would throttle one client firing thousands of distinct numbers are
// raised, nothing else. Run alone: `deno run -A bench/pipeline.ts`.
import { delay, pollUntil } from "../shared/async.ts";
import { jsonLogs, Service, taskArgs } from "../testing/processes.ts";
import { clientHeaders, mapLimit, rpc, SIGNUP } from "../testing/rpc.ts";
import { randomPhone, startStack } from "../testing/stack.ts";
import type { Stack } from "../testing/stack.ts";
import { backendPids, brokerPids, cpuTicks, HZ, machineTicks, readProc } from "./load.ts";

export interface FigureRow {
  figure: string;
  value: string;
  anchor?: string;
  ratio?: string;
}

export interface PipelineOptions {
  /** Distinct numbers signed up in the measured run. */
  numbers?: number;
  /** Signups in flight at once. */
  concurrency?: number;
  /** Bound on the whole measured run. */
  timeoutMs?: number;
  log?: (line: string) => void;
}

/**
 * Resident memory, and the part of it that is the process's own: RSS also counts the
 * pages of the deno executable, which every Deno process on the host shares.
 */
async function memoryMb(pid: number): Promise<{ rss: number; own: number }> {
  const rollup = await readProc([`/proc/${pid}/smaps_rollup`]);
  const kb = (field: string) =>
    Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(rollup)?.[1]);
  return {
    rss: kb("Rss") / 1024,
    own: (kb("Private_Clean") + kb("Private_Dirty")) / 1024,
  };
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
}

/** Spawns one more replica of a service, as its task starts it; ms to /readyz 200. */
async function timeToReady(
  name: "auth" | "otp",
  env: Record<string, string>,
): Promise<{ readyMs: number; memory: { rss: number; own: number } }> {
  const port = name === "auth" ? "AUTH_PORT" : "OTP_PORT";
  const started = performance.now();
  const svc = new Service(`${name}-replica`, await taskArgs(name), { ...env, [port]: "0" });
  try {
    const listening = await svc.waitListening();
    await pollUntil(async () => {
      const res = await fetch(`http://127.0.0.1:${listening}/readyz`).catch(() => undefined);
      await res?.body?.cancel();
      return res?.status === 200;
    }, { timeoutMs: 30_000, intervalMs: 5, what: `${name} ready` });
    const readyMs = performance.now() - started;
    // Idle: after start-up garbage has had a moment to be collected.
    await delay(2_000);
    return { readyMs, memory: await memoryMb(svc.pid) };
  } finally {
    await svc.stop();
  }
}

async function storedCount(stack: Stack): Promise<number> {
  const [row] = await stack.sql<{ n: number }[]>`select count(*)::int as n from auth.challenges`;
  return row!.n;
}

interface LoadResult {
  perSecond: number;
  p50: number;
  p99: number;
  /** CPU milliseconds per number, by process. */
  cpuMs: {
    loader: number;
    auth: number;
    otp: number;
    authDb: number;
    otpDb: number;
    /** The local RabbitMQ node; NaN when the broker is not on this machine. */
    broker: number;
    /** Every process and the kernel together, and the time the hypervisor took. */
    machine: number;
    steal: number;
  };
}

async function fire(
  stack: Stack,
  phones: string[],
  concurrency: number,
  timeoutMs: number,
): Promise<LoadResult> {
  const before = await storedCount(stack);
  const sentAt = new Map<string, number>();
  const authDb = await backendPids(stack.sql, "auth-service");
  const otpDb = await backendPids(stack.sql, "otp-service");
  const broker = await brokerPids();
  const sample = async () => ({
    machine: await machineTicks(),
    broker: await cpuTicks(broker),
    self: await cpuTicks([Deno.pid]),
    auth: await cpuTicks([stack.auth.pid]),
    otp: await cpuTicks([stack.otp.pid]),
    authDb: await cpuTicks(authDb),
    otpDb: await cpuTicks(otpDb),
  });
  const ticks = await sample();
  const started = Date.now();
  const deadline = started + timeoutMs;
  const failures: string[] = [];
  const load = mapLimit(phones, concurrency, async (phone) => {
    sentAt.set(phone, Date.now());
    const r = await rpc(stack.authUrl, SIGNUP, { phone_number: phone }, {
      headers: clientHeaders(),
      timeoutMs: 30_000,
    });
    if (r.code !== "ok") failures.push(`${r.code} ${JSON.stringify(r.json)}`);
  });
  // The count scans a growing table: asked rarely, so the loader's own queries take little
  // from the services' database; the end of the run is read from the stored times below.
  let stored = before;
  while (stored < before + phones.length && Date.now() < deadline && failures.length === 0) {
    await delay(250);
    stored = await storedCount(stack);
  }
  await load;
  const perNumber = (t: number) => (t * 1000) / HZ / phones.length;
  const after = await sample();
  const cpuMs = {
    loader: perNumber(after.self - ticks.self),
    auth: perNumber(after.auth - ticks.auth),
    otp: perNumber(after.otp - ticks.otp),
    authDb: perNumber(after.authDb - ticks.authDb),
    otpDb: perNumber(after.otpDb - ticks.otpDb),
    broker: broker.length > 0 ? perNumber(after.broker - ticks.broker) : NaN,
    machine: perNumber(after.machine.busy - ticks.machine.busy),
    steal: perNumber(after.machine.steal - ticks.machine.steal),
  };

  if (failures.length > 0) throw new Error(`signups failed: ${failures.slice(0, 3).join("; ")}`);
  if (stored < before + phones.length) {
    throw new Error(`only ${stored - before} of ${phones.length} challenges stored in time`);
  }
  const storedTimes = await storedAt(stack, phones);
  // From the first signup sent to the last challenge stored.
  const wall = (Math.max(...storedTimes.map((r) => r.at)) - started) / 1000;
  const latencies = storedTimes.map((r) => r.at - sentAt.get(r.phone_number)!)
    .sort((a, b) => a - b);
  return {
    perSecond: phones.length / wall,
    p50: percentile(latencies, 0.5),
    p99: percentile(latencies, 0.99),
    cpuMs,
  };
}

/** Latency with no backlog: each signup waits until the previous challenge is stored. */
async function oneAtATime(stack: Stack, phones: string[]): Promise<{ p50: number; p99: number }> {
  const sentAt = new Map<string, number>();
  for (const phone of phones) {
    sentAt.set(phone, Date.now());
    const r = await rpc(stack.authUrl, SIGNUP, { phone_number: phone }, {
      headers: clientHeaders(),
    });
    if (r.code !== "ok") throw new Error(`signup failed: ${r.code} ${JSON.stringify(r.json)}`);
    await pollUntil(async () => {
      const rows = await stack.sql`select from auth.challenges where phone_number = ${phone}`;
      return rows.length > 0;
    }, { timeoutMs: 30_000, intervalMs: 2, what: "the challenge" });
  }
  const latencies = (await storedAt(stack, phones))
    .map((r) => r.at - sentAt.get(r.phone_number)!).sort((a, b) => a - b);
  return { p50: percentile(latencies, 0.5), p99: percentile(latencies, 0.99) };
}

/** When each number's challenge was stored: its inbox row is written in the same statement. */
async function storedAt(stack: Stack, phones: string[]) {
  return await stack.sql<{ phone_number: string; at: number }[]>`
    select c.phone_number, (extract(epoch from i.handled_at) * 1000)::float8 as at
      from auth.challenges c join auth.inbox i on i.message_id = c.request_id
     where c.phone_number = any(${phones}::text[])`;
}

/** Every number got exactly one SMS and one stored challenge; nothing dead-lettered. */
async function checkNothingLost(stack: Stack, phones: string[]): Promise<void> {
  const texted = new Map<string, number>();
  for (const l of stack.otp.lines) {
    const m = /^\[sms\] to=(\+\d+) /.exec(l);
    if (m) texted.set(m[1]!, (texted.get(m[1]!) ?? 0) + 1);
  }
  const missing = phones.filter((p) => texted.get(p) !== 1);
  if (missing.length > 0) {
    throw new Error(`${missing.length} numbers without exactly one SMS, e.g. ${missing[0]}`);
  }
  const [r] = await stack.sql<{ challenges: number; sent: number }[]>`
    select (select count(*)::int from auth.challenges
             where phone_number = any(${phones}::text[])) as challenges,
           (select count(*)::int from otp.requests
             where status = 'sent' and phone_number = any(${phones}::text[])) as sent`;
  if (r!.challenges !== phones.length || r!.sent !== phones.length) {
    throw new Error(`challenges ${r!.challenges}, sent ${r!.sent}, numbers ${phones.length}`);
  }
  const errors = [...jsonLogs(stack.auth.lines), ...jsonLogs(stack.otp.lines)]
    .filter((l) => l.level === "error" || String(l.msg).includes("dead-letter"));
  if (errors.length > 0) throw new Error(`service errors: ${JSON.stringify(errors[0])}`);
}

export async function pipelineFigures(o: PipelineOptions = {}): Promise<FigureRow[]> {
  const numbers = o.numbers ?? 5_000;
  const concurrency = o.concurrency ?? 64;
  const log = o.log ?? (() => {});
  // Each signup comes from its own address, as from many users behind one proxy hop.
  const stack = await startStack({
    authEnv: { TRUSTED_PROXIES: "127.0.0.1/32,::1/128" },
    otpEnv: { SMS_PROVIDER: "console", SMS_HOURLY_BUDGET: "10000000" },
  });
  try {
    const auth = await timeToReady("auth", stack.env.auth);
    const otp = await timeToReady("otp", stack.env.otp);
    const all = Array.from({ length: numbers + 600 }, randomPhone);
    const warm = all.slice(0, 500);
    const single = all.slice(500, 600);
    const measured = all.slice(600);
    await fire(stack, warm, concurrency, 120_000);
    const r = await fire(stack, measured, concurrency, o.timeoutMs ?? 120_000);
    const l = await oneAtATime(stack, single);
    await checkNothingLost(stack, all);
    const c = r.cpuMs;
    log(
      `pipeline: ${numbers} numbers, ${concurrency} in flight; CPU ms per number: loader ${
        c.loader.toFixed(2)
      }, auth ${c.auth.toFixed(2)}, otp ${c.otp.toFixed(2)}, PostgreSQL for auth ${
        c.authDb.toFixed(2)
      }, for otp ${c.otpDb.toFixed(2)}, RabbitMQ ${c.broker.toFixed(2)}; the whole machine ${
        c.machine.toFixed(2)
      } (stolen ${c.steal.toFixed(2)})`,
    );
    const cores = navigator.hardwareConcurrency;
    return [
      {
        figure: `signup to stored challenge, ${numbers} numbers, ${concurrency} in flight`,
        // Under this load signups are accepted faster than they drain: the latency is
        // mostly the backlog's queueing.
        value: `${r.perSecond.toFixed(0)} numbers/s (p50 ${r.p50.toFixed(0)} ms, p99 ${
          r.p99.toFixed(0)
        } ms)`,
        anchor: "target 1,000 numbers/s",
        ratio: (r.perSecond / 1_000).toFixed(2),
      },
      {
        figure: `signup to stored challenge latency, ${single.length} numbers one at a time`,
        value: `p50 ${l.p50.toFixed(0)} ms, p99 ${l.p99.toFixed(0)} ms`,
      },
      {
        figure: "CPU per number: auth, otp, PostgreSQL for auth, for otp",
        value: `${c.auth.toFixed(2)}, ${c.otp.toFixed(2)}, ${c.authDb.toFixed(2)}, ${
          c.otpDb.toFixed(2)
        } ms`,
      },
      {
        figure: "CPU per number: RabbitMQ; every process and the kernel together",
        value: `${c.broker.toFixed(2)}; ${c.machine.toFixed(2)} ms`,
        anchor: `${cores} cores allow ${
          (cores * 1000 / c.machine).toFixed(0)
        } numbers/s at that cost`,
      },
      { figure: "auth-service ready after spawn", value: `${auth.readyMs.toFixed(0)} ms` },
      { figure: "otp-service ready after spawn", value: `${otp.readyMs.toFixed(0)} ms` },
      ...([["auth", auth], ["otp", otp]] as const).map(([name, r]) => ({
        figure: `${name}-service idle memory: RSS (own, not shared with other processes)`,
        value: `${r.memory.rss.toFixed(0)} MB (${r.memory.own.toFixed(0)} MB)`,
      })),
    ];
  } finally {
    await stack.stop();
  }
}

if (import.meta.main) {
  const numbers = Number(Deno.env.get("BENCH_PIPELINE_NUMBERS") ?? "5000");
  const rows = await pipelineFigures({ numbers, log: (l) => console.log(l) });
  for (const r of rows) {
    console.log(
      [r.figure, r.value, r.anchor ?? "", r.ratio ?? ""].join(" | "),
    );
  }
}
