// deno task bench: each figure beside its anchor, measured in the same run, on this
// machine. The servers are real processes (the services with their task permission
// sets, against the local PostgreSQL and RabbitMQ); HTTP load is wrk with one thread
// and 32 keep-alive connections for BENCH_SECONDS (default 5) per figure; PostgreSQL's
// anchors are pgbench with 32 clients on a scratch database. The load generator's CPU
// share is printed beside each figure: near 1.0 it, not the server, is the bound; the
// server's CPU per call and, for calls that reach PostgreSQL, its backends' CPU per call
// show which of the two bounds the rest.
import { create, toBinary } from "@bufbuild/protobuf";
import { ValidatePhoneNumberLoginRequestSchema } from "../shared/gen/auth/v1/auth_pb.ts";
import { DATABASE_URL } from "../testing/database.ts";
import { processEnv, Service } from "../testing/processes.ts";
import { codeFor } from "../testing/sms_codes.ts";
import { randomPhone, startStack } from "../testing/stack.ts";
import type { Stack } from "../testing/stack.ts";
import { signupAndVerify } from "../testing/fuzz/services.ts";
import { delay, pollUntil } from "../shared/async.ts";
import {
  backendPids,
  brokerPids,
  CONNECTIONS,
  cpuTicks,
  HZ,
  machineTicks,
  pgbench,
  pgbenchInit,
  pgClients,
  scratchDatabase,
  serverSettings,
  wrk,
} from "./load.ts";
import type { Measured, WrkCall } from "./load.ts";
import { verifyLikeSchema, verifyLikeScript } from "./verify_like.ts";
import { pipelineFigures } from "./pipeline.ts";
import type { FigureRow } from "./pipeline.ts";

const SECONDS = Number(Deno.env.get("BENCH_SECONDS") ?? "5");
const VERIFY_NUMBERS = Number(Deno.env.get("BENCH_VERIFY_NUMBERS") ?? "2000");
const PIPELINE_NUMBERS = Number(Deno.env.get("BENCH_PIPELINE_NUMBERS") ?? "5000");

interface Row {
  figure: string;
  value: Measured;
  anchor: string;
  anchorValue: Measured;
  note?: string;
}
const rows: Row[] = [];
const enc = new TextEncoder();
const VALIDATE = "/auth.v1.AuthService/ValidatePhoneNumberLogin";

async function tinyServer(kind: string): Promise<{ url: string; service: Service }> {
  const service = new Service(kind, [
    "run",
    "--allow-net=127.0.0.1",
    "bench/tiny_server.ts",
    kind,
    "0",
  ], processEnv());
  const line = await service.waitForLine((l) => l.startsWith("listening "), 30_000);
  return { url: `http://127.0.0.1:${line.split(" ")[1]}${VALIDATE}`, service };
}

/**
 * A short warm-up so the JIT has seen the path before the measured run (pgbench, the
 * anchor, measures a server that is warm already).
 */
async function warmWrk(
  call: WrkCall,
  serverPid: number,
  o: { db?: () => Promise<number[]> } = {},
): Promise<Measured> {
  await wrk(call, 1);
  // The pool's connections, as the warm-up left them open.
  const dbPids = await o.db?.();
  return await wrk(call, SECONDS, { serverPid, dbPids });
}

async function measureTiny(kind: string, call: Omit<WrkCall, "url">): Promise<Measured> {
  const { url, service } = await tinyServer(kind);
  try {
    return await warmWrk({ ...call, url }, service.pid);
  } finally {
    await service.stop();
  }
}

async function tinyCalls(): Promise<void> {
  const json = {
    headers: { "content-type": "application/json" },
    body: enc.encode('{"phone_number":"+14155550123"}'),
  };
  const binary = {
    headers: { "content-type": "application/proto" },
    body: toBinary(
      ValidatePhoneNumberLoginRequestSchema,
      create(ValidatePhoneNumberLoginRequestSchema, { phoneNumber: "+14155550123" }),
    ),
  };
  const raw = await measureTiny("raw", json);
  const anchor = "raw Deno.serve JSON echo";
  for (
    const [figure, kind, call] of [
      ["tiny Connect call, JSON, our bridge (fast path)", "fast", json],
      ["tiny Connect call, binary, our bridge (fast path)", "fast", binary],
      ["tiny Connect call, JSON, connect-es universal handler", "connect-es", json],
      ["tiny Connect call, binary, connect-es universal handler", "connect-es", binary],
    ] as const
  ) {
    rows.push({ figure, value: await measureTiny(kind, call), anchor, anchorValue: raw });
  }
}

async function databaseFigures(): Promise<void> {
  const db = await scratchDatabase(DATABASE_URL);
  let stack: Stack | undefined;
  try {
    await pgbenchInit(db.url, 10);
    const clients = await pgClients(db.url);
    const pgNote = clients < CONNECTIONS ? `; pgbench with ${clients} clients (server full)` : "";
    const selectOnly = await pgbench(db.url, SECONDS, { builtin: "select-only" }, clients);
    await verifyLikeSchema(db.url);
    const script = await verifyLikeScript();
    const verifyLike = await pgbench(db.url, SECONDS, { file: script.file }, clients);
    await script.remove();

    stack = await startStack({
      authEnv: {
        ADDRESS_SEND_LIMIT: "1000000",
        ADDRESS_CHECK_LIMIT: "1000000",
        // The bench's clients name their address in X-Forwarded-For.
        TRUSTED_PROXIES: "127.0.0.1/32",
      },
      otpEnv: { SMS_HOURLY_BUDGET: "10000000", SMS_PROVIDER: "console" },
    });
    const authPid = stack.auth.pid;
    const backends = { db: () => backendPids(stack!.sql, "auth-service") };
    const fx = await signupAndVerify(stack);
    const profile = await warmWrk(
      {
        url: `${stack.authUrl}/auth.v1.AuthService/GetProfile`,
        headers: { "content-type": "application/json", authorization: `Bearer ${fx.token}` },
        body: enc.encode(JSON.stringify({ phone_number: fx.phone })),
      },
      authPid,
      backends,
    );
    rows.push({
      figure: "GetProfile with a session (auth-service)",
      value: profile,
      anchor: "pgbench -S (select-only)",
      anchorValue: selectOnly,
      note: pgNote.slice(2) || undefined,
    });
    const validate = await warmWrk(
      {
        url: `${stack.authUrl}${VALIDATE}`,
        headers: { "content-type": "application/json" },
        body: enc.encode(JSON.stringify({ phone_number: randomPhone() })),
      },
      authPid,
      backends,
    );
    // Every call is charged to its address's counter first: from one address those
    // admissions queue on one row; from many, they do not.
    const validateSpread = await warmWrk(
      {
        url: `${stack.authUrl}${VALIDATE}`,
        headers: { "content-type": "application/json" },
        body: enc.encode(JSON.stringify({ phone_number: randomPhone() })),
        forwardedFor: Array.from({ length: CONNECTIONS }, (_, i) => `198.18.1.${i + 1}`),
      },
      authPid,
      backends,
    );
    rows.push({
      figure: "ValidatePhoneNumberLogin, unknown number, 1 address (auth-service)",
      value: validate,
      anchor: "pgbench -S (select-only)",
      anchorValue: selectOnly,
    }, {
      figure: `ValidatePhoneNumberLogin, unknown number, ${CONNECTIONS} addresses (auth-service)`,
      value: validateSpread,
      anchor: "pgbench -S (select-only)",
      anchorValue: selectOnly,
    });
    // From one address (a NAT, a backend-for-frontend) and from one address per client:
    // per-address limits must not make one address's calls wait for each other.
    // One unmeasured round first, as the wrk figures get their warm-up: the first
    // verifications run before the JIT has compiled the redemption's path.
    await verifyFigure(stack, CONNECTIONS);
    const spread = await verifyFigure(stack, CONNECTIONS);
    const one = await verifyFigure(stack, 1);
    const half = await verifyFigure(stack, CONNECTIONS, {
      perSecond: spread.measured.perSecond / 2,
    });
    for (const [v, from] of [[spread, `${CONNECTIONS} addresses`], [one, "1 address"]] as const) {
      rows.push({
        figure:
          `VerifyPhoneNumber, ${VERIFY_NUMBERS} fresh numbers, ${CONNECTIONS} clients from ${from}`,
        value: v.measured,
        anchor: "pgbench verify-like write (UPDATE … RETURNING + INSERT)",
        anchorValue: verifyLike,
        note: `p50 ${v.p50.toFixed(0)} ms, p99 ${v.p99.toFixed(0)} ms; load from Deno fetch${
          cpuNote(v, verifyLike)
        }${
          v === one
            ? `; ${
              (one.measured.perSecond / spread.measured.perSecond).toFixed(2)
            } of the ${CONNECTIONS}-address figure`
            : ""
        }`,
      });
    }
    // The numbers the 32-address round verified, each logging in with a fresh code.
    const login = await redeemFigure(stack, spread.phones, LOGIN, CONNECTIONS);
    rows.push({
      figure:
        `LoginWithPhoneNumber, ${VERIFY_NUMBERS} verified numbers, ${CONNECTIONS} clients from ${CONNECTIONS} addresses`,
      value: login.measured,
      anchor: "pgbench verify-like write (UPDATE … RETURNING + INSERT)",
      anchorValue: verifyLike,
      note: `p50 ${login.p50.toFixed(0)} ms, p99 ${login.p99.toFixed(0)} ms; load from Deno fetch${
        cpuNote(login, verifyLike)
      }`,
    });
    rows.push({
      figure: `VerifyPhoneNumber at half the ${CONNECTIONS}-address rate (${
        Math.round(spread.measured.perSecond / 2)
      }/s, sent on schedule)`,
      value: half.measured,
      anchor: "pgbench verify-like write (UPDATE … RETURNING + INSERT)",
      anchorValue: verifyLike,
      note: `p50 ${half.p50.toFixed(0)} ms, p99 ${half.p99.toFixed(0)} ms; load from Deno fetch${
        cpuNote(half, verifyLike)
      }`,
    });
  } finally {
    await stack?.stop().catch(() => {});
    await db.drop();
  }
}

/**
 * A redemption round's CPU beyond the table's columns: the broker's (its events) and the
 * whole machine's, every process and the kernel, which is what bounds the round when
 * every core is busy.
 */
function cpuNote(r: { brokerMicros: number; machineMicros: number }, anchor: Measured): string {
  return `; RabbitMQ ${r.brokerMicros.toFixed(0)} µs, every process and the kernel ${
    r.machineMicros.toFixed(0)
  } µs a call (the anchor's ${anchor.machineMicros?.toFixed(0) ?? "-"} a transaction)`;
}

// The verify rounds (a warm-up and three figures) take their numbers from one set,
// drawn before any is used.
const VERIFY_PHONES = Array.from({ length: 4 * VERIFY_NUMBERS }, randomPhone);

/** How a redemption figure gets its codes and redeems them. */
interface Redeeming {
  /** Asks for a code for the number. */
  request: "SignupWithPhoneNumber" | "ValidatePhoneNumberLogin";
  purpose: "signup" | "login";
  redeem: "VerifyPhoneNumber" | "LoginWithPhoneNumber";
}

const VERIFY: Redeeming = {
  request: "SignupWithPhoneNumber",
  purpose: "signup",
  redeem: "VerifyPhoneNumber",
};
const LOGIN: Redeeming = {
  request: "ValidatePhoneNumberLogin",
  purpose: "login",
  redeem: "LoginWithPhoneNumber",
};

/** Signs up fresh numbers, then verifies them (see redeemFigure). */
function verifyFigure(stack: Stack, addresses: number, o: { perSecond?: number } = {}) {
  return redeemFigure(stack, VERIFY_PHONES.splice(0, VERIFY_NUMBERS), VERIFY, addresses, o);
}

/**
 * Waits until both services have relayed everything queued: the signed-up events of the
 * code requests, the issued codes, and the events of the round before, which are still
 * going out when it ends. Measured on top of that backlog, a round's figures (its p99
 * above all) would be partly the pipeline's.
 */
async function settled(stack: Stack): Promise<void> {
  await pollUntil(async () => {
    const [r] = await stack.sql<{ queued: number }[]>`
      select (select count(*)::int from auth.outbox) + (select count(*)::int from otp.outbox)
               as queued`;
    return r!.queued === 0;
  }, { timeoutMs: 60_000, intervalMs: 20, what: "both outboxes to empty" });
}

/**
 * Asks for a code for each number, then redeems them all at once from 32 concurrent
 * clients spread over `addresses` client addresses: each code is single use, so wrk's
 * repeated request cannot drive this figure.
 */
async function redeemFigure(
  stack: Stack,
  phones: string[],
  how: Redeeming,
  addresses: number,
  o: { perSecond?: number } = {},
) {
  const codes = new Map<string, string>();
  const post = (method: string, body: unknown, client = 0) =>
    fetch(`${stack.authUrl}/auth.v1.AuthService/${method}`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "x-forwarded-for": `198.18.0.${(client % addresses) + 1}`,
      },
      body: JSON.stringify(body),
    });
  let next = 0;
  await Promise.all(Array.from({ length: 16 }, async () => {
    while (next < phones.length) {
      const phone = phones[next++]!;
      const mark = stack.otp.lines.length;
      const r = await post(how.request, { phone_number: phone });
      const reply = await r.text();
      if (r.status !== 200) {
        throw new Error(`${how.request} of ${phone}: HTTP ${r.status} ${reply}`);
      }
      codes.set(phone, await codeFor(stack, phone, how.purpose, Math.max(0, mark - 50)));
    }
  }));
  // codeFor has seen each challenge stored in auth-service.
  await settled(stack);
  const latencies: number[] = [];
  let errors = 0;
  const redeem = async (phone: string, client: number) => {
    const t = performance.now();
    const r = await post(how.redeem, { phone_number: phone, otp: codes.get(phone) }, client);
    await r.arrayBuffer();
    latencies.push(performance.now() - t);
    if (r.status !== 200) errors++;
  };
  next = 0;
  // Where the CPU goes: the loader (this process), auth-service, its PostgreSQL backends,
  // the broker, and the whole machine, which is the bound once every core is busy.
  const db = await backendPids(stack.sql, "auth-service");
  const broker = await brokerPids();
  const sample = async () => [
    await cpuTicks([Deno.pid]),
    await cpuTicks([stack.auth.pid]),
    await cpuTicks(db),
    await cpuTicks(broker),
    (await machineTicks()).busy,
  ];
  const ticks = await sample();
  const started = performance.now();
  if (o.perSecond === undefined) {
    // As fast as 32 clients go, each waiting for its reply.
    await Promise.all(Array.from({ length: CONNECTIONS }, async (_, client) => {
      while (next < phones.length) await redeem(phones[next++]!, client);
    }));
  } else {
    // At a fixed rate, each call sent on schedule whether or not earlier ones returned,
    // so a slow reply cannot hold the load back.
    const calls: Promise<void>[] = [];
    for (const [i, phone] of phones.entries()) {
      const due = started + (i * 1000) / o.perSecond;
      const wait = due - performance.now();
      if (wait > 1) await delay(wait);
      calls.push(redeem(phone, i));
    }
    await Promise.all(calls);
  }
  const wall = (performance.now() - started) / 1000;
  // CPU seconds of each process over the run.
  const [loader, auth, pg, rabbit, machine] = (await sample()).map((t, i) => (t - ticks[i]!) / HZ);
  latencies.sort((a, b) => a - b);
  const at = (q: number) =>
    latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))]!;
  const perSecond = phones.length / wall;
  const micros = (cpu: number) => (cpu * 1e6) / phones.length;
  return {
    measured: {
      perSecond,
      loaderCpu: loader! / wall,
      serverCpu: auth! / wall,
      serverMicros: micros(auth!),
      dbMicros: micros(pg!),
      errors,
    },
    p50: at(0.5),
    p99: at(0.99),
    /** CPU µs per call of the local broker (NaN if it is elsewhere) and of the whole machine. */
    brokerMicros: broker.length > 0 ? micros(rabbit!) : NaN,
    machineMicros: micros(machine!),
    phones,
  };
}

function printTable(settings?: string): void {
  const fmt = (n: number) => Math.round(n).toLocaleString("en-US");
  const share = (m: Measured) => Number.isNaN(m.loaderCpu) ? "-" : m.loaderCpu.toFixed(2);
  const micros = (m: Measured) => m.serverMicros === undefined ? "-" : m.serverMicros.toFixed(0);
  const db = (m: Measured) => m.dbMicros === undefined ? "-" : m.dbMicros.toFixed(0);
  console.log(
    `\nwrk: 1 thread, ${CONNECTIONS} connections, keep-alive, ${SECONDS} s per figure; ${navigator.hardwareConcurrency} cores`,
  );
  if (settings) console.log(settings);
  console.log(
    "| figure | req/s | anchor (same run) | anchor /s | ratio | loader CPU (anchor's) | server CPU | server µs/req (anchor's) | PostgreSQL µs/req (anchor's) | errors |",
  );
  console.log("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|");
  for (const r of rows) {
    const server = r.value.serverCpu === undefined ? "-" : r.value.serverCpu.toFixed(2);
    const ratio = (r.value.perSecond / r.anchorValue.perSecond).toFixed(2);
    console.log(
      `| ${r.figure} | ${fmt(r.value.perSecond)} | ${r.anchor} | ${
        fmt(r.anchorValue.perSecond)
      } | ${ratio} | ${share(r.value)} (${share(r.anchorValue)}) | ${server} | ${
        micros(r.value)
      } (${micros(r.anchorValue)}) | ${db(r.value)} (${db(r.anchorValue)}) | ${r.value.errors} |${
        r.note ? ` ${r.note}` : ""
      }`,
    );
  }
  if (pipeline.length === 0) return;
  console.log("\n| pipeline figure | value | anchor | ratio |\n|---|---|---|---:|");
  for (const r of pipeline) {
    console.log(`| ${r.figure} | ${r.value} | ${r.anchor ?? ""} | ${r.ratio ?? ""} |`);
  }
}

const only = Deno.args[0];
if (only === undefined || only === "tiny") await tinyCalls();
if (only === undefined || only === "db") await databaseFigures();
let pipeline: FigureRow[] = [];
if (only === undefined || only === "pipeline") {
  pipeline = await pipelineFigures({ numbers: PIPELINE_NUMBERS, log: (l) => console.log(l) });
}
printTable(only === "tiny" ? undefined : await serverSettings(DATABASE_URL));
