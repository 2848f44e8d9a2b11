// Stopping the services the way people and orchestrators do: through `deno task`, with
// one signal to the task or to its whole process group (a terminal's Ctrl-C, or a
// container runtime signalling every process). `deno task` passes the signal on to a
// child that got it too, so the child sees two; they must count as one. A stopping
// otp-service takes no new message, even while its SMS provider hangs.
import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import { encodeOtpRequested, OtpPurpose, OtpRequestedSchema } from "../shared/messages.ts";
import { declareTopology } from "../shared/amqp.ts";
import { DEFAULT_DELIVERY_LIMIT, OTP_QUEUE } from "../shared/topology.ts";
import { startFakeTwilio, twilioEnv } from "../testing/fake_twilio.ts";
import { createVhost, RawAmqp } from "../testing/broker.ts";
import { createDatabase } from "../testing/database.ts";
import { randomPhone } from "../testing/stack.ts";
import { processEnv, Service } from "../testing/processes.ts";
import { createPool } from "../shared/postgres.ts";
import { generateDevSigningKey } from "../auth_service/access_tokens.ts";

const ROOT = new URL("../", import.meta.url);
const KEY = "k".repeat(64);
const TOKEN = "t".repeat(64);
const JWT_SIGNING_KEY = await generateDevSigningKey();

/** `deno task <task>` in a process group of its own, so a signal can go to the group. */
class Task {
  private readonly process: Service;

  constructor(task: string, env: Record<string, string>) {
    this.process = new Service(task, ["task", task], { ...processEnv(), ...env }, {
      processGroup: true,
    });
  }

  get lines(): string[] {
    return this.process.lines;
  }

  /** The first line containing `text`, waiting at most `timeoutMs`. */
  line(text: string, timeoutMs: number): Promise<string> {
    return this.process.waitForLine((l) => l.includes(text), timeoutMs);
  }

  /** Sends `signal` to `deno task` alone, or to its whole process group. */
  signal(signal: Deno.Signal, to: "task" | "group"): void {
    if (to === "group") this.process.signalGroup(signal);
    else this.process.signal(signal);
  }

  /** The exit status if the task ends within `ms`, else undefined. */
  async exitWithin(ms: number): Promise<Deno.CommandStatus | undefined> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const status = await Promise.race([
      this.process.exited,
      new Promise<undefined>((r) => (timer = setTimeout(() => r(undefined), ms))),
    ]);
    clearTimeout(timer);
    if (status) await this.process.outputDone;
    return status;
  }

  /** For finally blocks: nothing of the group outlives the test. */
  async kill(): Promise<void> {
    this.process.signalGroup("SIGKILL");
    await this.process.exited;
    await this.process.outputDone;
  }

  describe(): string {
    return this.lines.slice(-15).join("\n");
  }
}

Deno.test("deno task dev given one SIGINT on its process group (Ctrl-C) stops cleanly within 10 s", async () => {
  const dataDir = `.dev/test-${crypto.randomUUID()}`;
  const dev = new Task("dev", { AUTH_PORT: "0", OTP_PORT: "0", DEV_DATA_DIR: dataDir });
  try {
    await dev.line("auth-service  http://", 60_000);
    dev.signal("SIGINT", "group");
    const status = await dev.exitWithin(10_000);
    assert.ok(status, `still running 10 s after SIGINT:\n${dev.describe()}`);
    assert.ok([0, 130].includes(status.code), `exit ${status.code}:\n${dev.describe()}`);
    assert.ok(dev.lines.some((l) => l.includes("stopped cleanly")), dev.describe());
    assert.ok(!dev.lines.some((l) => l.includes("second signal")), dev.describe());
  } finally {
    await dev.kill();
    await Deno.remove(new URL(dataDir, ROOT), { recursive: true }).catch(() => {});
    await Deno.remove(new URL(`${dataDir}.lock`, ROOT)).catch(() => {});
  }
});

/** A database and vhost of its own, dropped after `fn`. */
async function withInfrastructure(
  fn: (env: Record<string, string>) => Promise<void>,
): Promise<void> {
  const db = await createDatabase();
  const vhost = await createVhost();
  try {
    await fn({
      DATABASE_URL: db.url,
      AMQP_URL: vhost.url,
      OTP_HMAC_KEY: KEY,
      INTERNAL_API_TOKEN: TOKEN,
    });
  } finally {
    await db.drop();
    await vhost.drop();
  }
}

const SERVICES = [
  ["auth", { AUTH_PORT: "0", OTP_SERVICE_URL: "http://127.0.0.1:9", JWT_SIGNING_KEY }],
  ["otp", { OTP_PORT: "0", SMS_PROVIDER: "console" }],
] as const;

for (const [task, extra] of SERVICES) {
  for (const to of ["task", "group"] as const) {
    const how = to === "task" ? "to deno task" : "to its whole process group";
    Deno.test(`${task}-service given one SIGTERM ${how} exits 0 within 20 s`, async () => {
      await withInfrastructure(async (env) => {
        const service = new Task(task, { ...env, ...extra });
        try {
          await service.line('"msg":"listening"', 30_000);
          service.signal("SIGTERM", to);
          const status = await service.exitWithin(20_000);
          assert.ok(status, `still running 20 s after SIGTERM:\n${service.describe()}`);
          assert.equal(status.code, 0, service.describe());
          assert.ok(service.lines.some((l) => l.includes('"msg":"stopped cleanly"')));
          assert.ok(!service.lines.some((l) => l.includes("second signal")), service.describe());
        } finally {
          await service.kill();
        }
      });
    });
  }
}

function otpRequested(phone: string) {
  return encodeOtpRequested(create(OtpRequestedSchema, {
    requestId: crypto.randomUUID(),
    phoneNumber: phone,
    purpose: OtpPurpose.SIGNUP,
    traceId: crypto.randomUUID(),
  }));
}

Deno.test({
  name:
    "otp-service stopped through its task while its SMS provider hangs exits within the deadline and takes no message after it logged that it is stopping",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: () =>
    withInfrastructure(async (env) => {
      const sid = `AC${"0".repeat(32)}`;
      const twilio = startFakeTwilio({ accountSid: sid, authToken: TOKEN });
      // Every send hangs for longer than the test runs (close() releases them).
      twilio.script(Array.from({ length: 100 }, () => ({ delayMs: 600_000 })));
      const otp = new Task("otp", {
        ...env,
        ...twilioEnv(twilio.url, sid, TOKEN),
        OTP_PORT: "0",
        SMS_TIMEOUT_MS: "60000",
        SMS_RETRY_ATTEMPTS: "1",
      });
      const bus = await RawAmqp.open(env.AMQP_URL!);
      // Declared here too (the same arguments), so nothing published races the service's
      // own declaration and goes unrouted.
      await declareTopology(bus.ch, DEFAULT_DELIVERY_LIMIT);
      const sql = createPool({ url: env.DATABASE_URL!, applicationName: "tests", max: 1 });
      const publish = async (phones: string[]) => {
        const ids: string[] = [];
        for (const phone of phones) {
          const m = otpRequested(phone);
          await bus.publish(m.exchange, m.routingKey, m.body, {
            messageId: m.messageId,
            type: m.type,
            contentType: m.contentType,
          });
          ids.push(m.messageId);
        }
        return ids;
      };
      try {
        const port = Number(JSON.parse(await otp.line('"msg":"listening"', 30_000)).port);
        // Two sends hang in consumer handlers, far below the prefetch of 16, so the
        // consumer would still take more; one hangs inside an RPC, holding the HTTP drain.
        const before = [randomPhone(), randomPhone()];
        await publish(before);
        const rpcPhone = randomPhone();
        const rpc = fetch(`http://127.0.0.1:${port}/otp.v1.OtpService/GenerateOtp`, {
          method: "POST",
          headers: { "content-type": "application/json", authorization: `Bearer ${TOKEN}` },
          body: JSON.stringify({ phone_number: rpcPhone, purpose: "OTP_PURPOSE_SIGNUP" }),
        }).then((r) => r.body?.cancel(), () => {});
        await twilio.waitForRequests(3, 15_000);

        otp.signal("SIGTERM", "task");
        await otp.line('"msg":"shutting down"', 5_000);
        const after = [randomPhone(), randomPhone(), randomPhone()];
        const afterIds = await publish(after);

        // The deadline is 20 s; past it the process must be gone whatever it was doing.
        const status = await otp.exitWithin(25_000);
        assert.ok(status, `still running 25 s after SIGTERM:\n${otp.describe()}`);
        await rpc;

        // Nothing published after "shutting down" reached the handler: no send, no
        // record, no log line, and every one of them is still in otp_queue.
        const sentTo = new Set(twilio.requests.map((r) => r.to));
        assert.deepEqual(after.filter((p) => sentTo.has(p)), [], "sent after stopping");
        const rows = await sql<{ request_id: string }[]>`
          select request_id from otp.requests where request_id in ${sql(afterIds)}`;
        assert.deepEqual([...rows], [], "handled after stopping");
        assert.ok(!otp.lines.some((l) => afterIds.some((id) => l.includes(id))), otp.describe());
        const queued = (await bus.take(OTP_QUEUE, before.length + after.length, 10_000))
          .map((m) => m.properties.messageId as string);
        assert.deepEqual(afterIds.filter((id) => !queued.includes(id)), [], "left the queue");
        // It stopped by itself before the deadline had to force the exit.
        assert.ok(!otp.lines.some((l) => l.includes("deadline passed")), otp.describe());
        assert.ok(otp.lines.some((l) => l.includes('"msg":"stopped cleanly"')), otp.describe());
        assert.equal(status.code, 0, otp.describe());
        assert.ok(!otp.lines.some((l) => l.includes("second signal")), otp.describe());
      } finally {
        await otp.kill();
        await bus.close();
        await sql.end({ timeout: 2 });
        await twilio.close();
      }
    }),
});
