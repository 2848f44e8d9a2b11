// The load generators and anchors of bench/main.ts: wrk (one thread, 32 keep-alive
// connections, a fixed duration) for HTTP figures, pgbench for PostgreSQL's own rates,
// and a CPU account of each so a figure bound by its load generator is flagged.
import { delay } from "../shared/async.ts";
import type { Sql } from "../shared/postgres.ts";

export const CONNECTIONS = 32;

export interface Measured {
  perSecond: number;
  /** Share of one core the load generator used (1 = a whole core). */
  loaderCpu: number;
  /** Share of one core the measured server process used, when known. */
  serverCpu?: number;
  /** The server's CPU time per request in microseconds, when known. */
  serverMicros?: number;
  /** PostgreSQL's CPU time per request in microseconds (the server's backends), when asked. */
  dbMicros?: number;
  /** The whole machine's CPU time per request (every process and the kernel), when asked. */
  machineMicros?: number;
  errors: number;
}

export interface WrkCall {
  url: string;
  headers: Record<string, string>;
  body: Uint8Array;
  /** Sent in X-Forwarded-For in turn, one address per request, when given. */
  forwardedFor?: readonly string[];
}

/** A Lua string literal of arbitrary bytes. */
function luaBytes(b: Uint8Array): string {
  return `"${Array.from(b, (x) => `\\${x}`).join("")}"`;
}

/** Reads /proc files with `cat` (Deno reads /proc of other processes only with -A). */
export async function readProc(paths: string[]): Promise<string> {
  const out = await new Deno.Command("cat", { args: paths, stdout: "piped", stderr: "null" })
    .output();
  return new TextDecoder().decode(out.stdout);
}

/** Clock ticks per second of /proc/<pid>/stat (USER_HZ, 100 on Linux). */
export const HZ = 100;

/** User + system clock ticks of the processes, summed (gone ones count nothing). */
export async function cpuTicks(pids: number[]): Promise<number> {
  if (pids.length === 0) return 0;
  const text = await readProc(pids.map((p) => `/proc/${p}/stat`));
  let sum = 0;
  for (const line of text.split("\n")) {
    if (!line) continue;
    const f = line.slice(line.lastIndexOf(")") + 2).split(" ");
    sum += Number(f[11]) + Number(f[12]);
  }
  return sum;
}

/**
 * Clock ticks the whole machine spent busy since boot, every process and the kernel
 * (user, nice, system, irq, softirq of /proc/stat), and those the hypervisor gave to
 * other guests (steal): what bounds a figure that keeps every core busy.
 */
export async function machineTicks(): Promise<{ busy: number; steal: number }> {
  const first = (await readProc(["/proc/stat"])).split("\n")[0]!;
  const [user, nice, system, _idle, _iowait, irq, softirq, steal] = first.trim().split(/\s+/)
    .slice(1).map(Number);
  return { busy: user! + nice! + system! + irq! + softirq!, steal: steal ?? 0 };
}

/** The local RabbitMQ node's process, when the broker runs on this machine. */
export async function brokerPids(): Promise<number[]> {
  const out = await new Deno.Command("pgrep", { args: ["-x", "beam.smp"], stdout: "piped" })
    .output().catch(() => undefined);
  if (!out?.success) return [];
  return new TextDecoder().decode(out.stdout).split("\n").filter(Boolean).map(Number);
}

/** The PostgreSQL backends a service's pool holds open, by its application name. */
export async function backendPids(sql: Sql, app: string): Promise<number[]> {
  const rows = await sql<{ pid: number }[]>`
    select pid from pg_stat_activity
     where datname = current_database() and application_name = ${app}`;
  return rows.map((r) => r.pid);
}

export interface WrkOptions {
  /** The server process, sampled for its CPU share. */
  serverPid?: number;
  /** The server's PostgreSQL backends, sampled for their CPU per request. */
  dbPids?: number[];
}

/** Runs wrk against one call for `seconds`. */
export async function wrk(call: WrkCall, seconds: number, o: WrkOptions = {}): Promise<Measured> {
  const { serverPid, dbPids } = o;
  const dir = await Deno.makeTempDir({ prefix: "bench-" });
  const script = `${dir}/call.lua`;
  const headers = Object.entries(call.headers)
    .map(([k, v]) => `wrk.headers[${JSON.stringify(k)}] = ${JSON.stringify(v)}`).join("\n");
  // Requests are formatted once per address in init, so the loader only picks one.
  const spread = call.forwardedFor === undefined ? "" : `
local addresses = { ${call.forwardedFor.map((a) => JSON.stringify(a)).join(", ")} }
local requests, n = {}, 0
init = function(args)
  for i, a in ipairs(addresses) do
    wrk.headers["x-forwarded-for"] = a
    requests[i] = wrk.format()
  end
end
request = function()
  n = n % #requests + 1
  return requests[n]
end
`;
  await Deno.writeTextFile(
    script,
    `wrk.method = "POST"\nwrk.body = ${luaBytes(call.body)}\n${headers}\n${spread}`,
  );
  const before = serverPid === undefined ? undefined : await cpuTicks([serverPid]);
  const dbBefore = dbPids === undefined ? undefined : await cpuTicks(dbPids);
  const started = performance.now();
  // bash's `time` accounts for wrk's own CPU (user + system) after it exits.
  const out = await new Deno.Command("bash", {
    args: [
      "-c",
      `TIMEFORMAT='cpu %U %S'; time wrk -t1 -c${CONNECTIONS} -d${seconds}s --latency -s "$1" "$2"`,
      "bench",
      script,
      call.url,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const wall = (performance.now() - started) / 1000;
  const after = serverPid === undefined ? undefined : await cpuTicks([serverPid]);
  const dbAfter = dbPids === undefined ? undefined : await cpuTicks(dbPids);
  await Deno.remove(dir, { recursive: true });
  const text = new TextDecoder().decode(out.stdout);
  const err = new TextDecoder().decode(out.stderr);
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(text);
  if (!out.success || !rps) throw new Error(`wrk failed: ${text}\n${err}`);
  const cpu = /cpu ([\d.]+) ([\d.]+)/.exec(err);
  const non2xx = /Non-2xx or 3xx responses:\s+(\d+)/.exec(text);
  const socketErrors = /Socket errors:.*?(\d+).*?(\d+).*?(\d+).*?(\d+)/.exec(text);
  return {
    perSecond: Number(rps[1]),
    loaderCpu: cpu ? (Number(cpu[1]) + Number(cpu[2])) / wall : NaN,
    serverCpu: before !== undefined && after !== undefined
      ? (after - before) / HZ / wall
      : undefined,
    serverMicros: before !== undefined && after !== undefined
      ? ((after - before) / HZ) * 1e6 / (Number(rps[1]) * wall)
      : undefined,
    dbMicros: dbBefore !== undefined && dbAfter !== undefined
      ? ((dbAfter - dbBefore) / HZ) * 1e6 / (Number(rps[1]) * wall)
      : undefined,
    errors: Number(non2xx?.[1] ?? 0) +
      (socketErrors ? socketErrors.slice(1).reduce((a, b) => a + Number(b), 0) : 0),
  };
}

/** A scratch database for pgbench, dropped by the returned function. */
export async function scratchDatabase(
  adminUrl: string,
): Promise<{ url: string; drop(): Promise<void> }> {
  const name = `bench_${crypto.randomUUID().slice(0, 8)}`;
  await psql(adminUrl, `create database ${name}`);
  const u = new URL(adminUrl);
  u.pathname = `/${name}`;
  return {
    url: u.toString(),
    drop: () => psql(adminUrl, `drop database if exists ${name} with (force)`),
  };
}

export async function psql(url: string, command: string): Promise<void> {
  const out = await new Deno.Command("psql", {
    args: [url, "-v", "ON_ERROR_STOP=1", "-q", "-c", command],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!out.success) throw new Error(`psql: ${new TextDecoder().decode(out.stderr)}`);
}

/**
 * The server settings that move the figures most, for the table's header: a server
 * without autovacuum lets the tables every request churns (the outboxes, counters,
 * challenges) keep their dead rows for the whole run.
 */
export async function serverSettings(url: string): Promise<string> {
  const text = await run("psql", [
    url,
    "-Atc",
    `select 'PostgreSQL ' || current_setting('server_version') || '; autovacuum ' ||
            current_setting('autovacuum') || ', fsync ' || current_setting('fsync') ||
            ', synchronous_commit ' || current_setting('synchronous_commit') ||
            ', shared_buffers ' || current_setting('shared_buffers')`,
  ]);
  return text.trim();
}

async function run(cmd: string, args: string[]): Promise<string> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) throw new Error(`${cmd}: ${text}${new TextDecoder().decode(out.stderr)}`);
  return text;
}

/** `pgbench -i` at the given scale. */
export async function pgbenchInit(url: string, scale: number): Promise<void> {
  await run("pgbench", ["-i", "-q", "-s", String(scale), url]);
}

/**
 * How many pgbench clients the server has room for, at most 32: PostgreSQL is shared,
 * and a run that cannot connect all its clients measures nothing.
 */
export async function pgClients(url: string): Promise<number> {
  const free = Number(
    (await run("psql", [
      url,
      "-tA",
      "-c",
      "select current_setting('max_connections')::int - count(*) - 10 from pg_stat_activity",
    ])).trim(),
  );
  return Math.max(1, Math.min(CONNECTIONS, free));
}

const PGBENCH_BACKENDS = "select pid from pg_stat_activity " +
  "where application_name = 'pgbench' and datname = current_database()";

/** pgbench's tps over `seconds` with `clients` clients, prepared statements. */
export async function pgbench(
  url: string,
  seconds: number,
  script: { builtin: "select-only" } | { file: string },
  clients = CONNECTIONS,
): Promise<Measured> {
  const mode = "builtin" in script ? ["-S"] : ["-f", script.file];
  const started = performance.now();
  const running = run("bash", [
    "-c",
    `TIMEFORMAT='cpu %U %S'; { time pgbench -n -M prepared -c ${clients} -j 1 -T ${seconds} "$@" ; } 2>&1`,
    "bench",
    ...mode,
    url,
  ]);
  running.catch(() => {});
  // Its backends' CPU, sampled while they run (they exit with it), from 1 s in to 1 s
  // before the end, for the same column the services' figures fill.
  let db: { ticks: number; machine: number; seconds: number } | undefined;
  if (seconds >= 3) {
    await delay(1_000);
    const pids = (await run("psql", [url, "-tAc", PGBENCH_BACKENDS]))
      .split("\n").filter((l) => l.trim() !== "").map(Number);
    const t0 = performance.now();
    const before = await cpuTicks(pids);
    const machine = (await machineTicks()).busy;
    await delay((seconds - 2) * 1_000);
    db = {
      ticks: (await cpuTicks(pids)) - before,
      machine: (await machineTicks()).busy - machine,
      seconds: (performance.now() - t0) / 1000,
    };
  }
  const text = await running;
  const wall = (performance.now() - started) / 1000;
  const tps = /tps = ([\d.]+) \(without initial connection time\)/.exec(text);
  if (!tps) throw new Error(`pgbench: ${text}`);
  const cpu = /cpu ([\d.]+) ([\d.]+)/.exec(text);
  const failed = /number of failed transactions: (\d+)/.exec(text);
  return {
    perSecond: Number(tps[1]),
    loaderCpu: cpu ? (Number(cpu[1]) + Number(cpu[2])) / wall : NaN,
    dbMicros: db && ((db.ticks / HZ) * 1e6) / (Number(tps[1]) * db.seconds),
    machineMicros: db && ((db.machine / HZ) * 1e6) / (Number(tps[1]) * db.seconds),
    errors: Number(failed?.[1] ?? 0),
  };
}
