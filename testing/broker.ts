// What the tests do to RabbitMQ: the one place that runs `rabbitmqctl` (vhosts, queue
// counters, stopping and starting the app, closing connections) and the one plain
// amqplib client (publishing, tapping and reading queues around the services).
import amqp from "amqplib";
import type { ChannelModel, ConfirmChannel, GetMessage } from "amqplib";
import { Buffer } from "node:buffer";
import { pollUntil } from "../shared/async.ts";
import { QUEUES } from "../shared/topology.ts";
import { uniqueName } from "./names.ts";

export const AMQP_URL = Deno.env.get("AMQP_URL") ?? "amqp://guest:guest@127.0.0.1:5672";

const text = new TextDecoder();

/** Runs rabbitmqctl; resolves with its stdout, rejects with its stderr. */
export async function rabbitmqctl(
  args: string[],
  o: { timeoutMs?: number } = {},
): Promise<string> {
  const out = await new Deno.Command("rabbitmqctl", {
    args,
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(o.timeoutMs ?? 60_000),
  }).output();
  if (!out.success) {
    throw new Error(`rabbitmqctl ${args.join(" ")}: ${text.decode(out.stderr).trim()}`);
  }
  return text.decode(out.stdout);
}

/** A fresh vhost the guest user may use, so a stack's queues are its own. */
export async function createVhost(): Promise<
  { vhost: string; url: string; drop(): Promise<void> }
> {
  const vhost = uniqueName();
  await rabbitmqctl(["add_vhost", vhost]);
  await rabbitmqctl(["set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"]);
  const u = new URL(AMQP_URL);
  u.pathname = `/${vhost}`;
  const drop = async () => {
    await rabbitmqctl(["delete_vhost", vhost]);
  };
  return { vhost, url: u.toString(), drop };
}

/** True when the RabbitMQ application accepts AMQP connections on the port of AMQP_URL. */
export async function brokerListening(): Promise<boolean> {
  try {
    const u = new URL(AMQP_URL);
    const conn = await Deno.connect({ hostname: u.hostname, port: Number(u.port || 5672) });
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
  await rabbitmqctl(["start_app"], { timeoutMs });
  await pollUntil(brokerListening, { timeoutMs, intervalMs: 100, what: "RabbitMQ to listen" });
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
  await rabbitmqctl(["await_startup", "--timeout", "120"], { timeoutMs: 130_000 })
    .catch(() => {});
  await rabbitmqctl(["start_app"]).catch(() => {});
  await pollUntil(brokerListening, {
    timeoutMs: 60_000,
    intervalMs: 100,
    what: "RabbitMQ to listen",
  });
}

/** Closes every client connection to `vhost` (as a network blip or a failover would). */
export async function closeConnections(vhost: string): Promise<void> {
  await rabbitmqctl(["close_all_connections", "--vhost", vhost, "fault test"]);
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

/**
 * Waits (bounded) until the topology's work queues and dead-letter queues are empty
 * and each work queue has a consumer (taps a test added are ignored). The broker's
 * counters lag a few seconds, so this polls.
 */
export async function queuesSettled(vhost: string, timeoutMs = 15_000): Promise<void> {
  let last: Record<string, QueueStats> = {};
  const names = QUEUES.flatMap((q) => [q.name, q.deadLetterQueue]);
  try {
    await pollUntil(
      async () => {
        last = await queueStats(vhost);
        return names.every((name) => {
          const s = last[name];
          return s !== undefined && s.ready + s.unacked === 0 &&
            (name.endsWith(".dlq") || s.consumers >= 1);
        });
      },
      { timeoutMs, intervalMs: 500, what: "queues to settle" },
    );
  } catch (err) {
    throw new Error(`${(err as Error).message}: ${JSON.stringify(last)}`);
  }
}

/** A plain amqplib connection (no recovery) to a vhost, for publishing and reading. */
export class RawAmqp {
  private constructor(readonly conn: ChannelModel, readonly ch: ConfirmChannel) {}

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
    await new Promise<void>((resolve, reject) => {
      this.ch.publish(
        exchange,
        routingKey,
        Buffer.from(body),
        { persistent: true, ...props },
        (err) => (err ? reject(err) : resolve()),
      );
    });
  }

  /** Takes (acknowledges) every message ready in `queue` now. */
  async drain(queue: string): Promise<GetMessage[]> {
    const got: GetMessage[] = [];
    for (;;) {
      const m = await this.ch.get(queue, { noAck: true });
      if (!m) return got;
      got.push(m);
    }
  }

  /**
   * Takes (acknowledges) messages from a queue until `count` arrived or `timeoutMs`
   * passed; returns what it got.
   */
  async take(queue: string, count: number, timeoutMs = 10_000): Promise<GetMessage[]> {
    const got: GetMessage[] = [];
    await pollUntil(
      async () => {
        while (got.length < count) {
          const m = await this.ch.get(queue, { noAck: true });
          if (!m) return false;
          got.push(m);
        }
        return true;
      },
      { timeoutMs, intervalMs: 100, what: `${count} messages in ${queue}` },
    ).catch(() => {});
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
