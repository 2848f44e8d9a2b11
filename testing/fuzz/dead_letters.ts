// Publishing fuzzed messages and accounting for them (tests/fuzz_bus_test.ts): every
// message is either dead-lettered (read back from the dead-letter queues by its
// x-fuzz-id header, the rest counted as strays) or, when it may be valid, processed
// (its request stored or its outcome logged). Also how to describe a message that is
// neither, with the service log lines about it, for a readable failure.
import { Buffer } from "node:buffer";
import type { ConfirmChannel, GetMessage } from "amqplib";
import { fromBinary } from "@bufbuild/protobuf";
import { AUTH_QUEUE, EXCHANGE, OTP_QUEUE, OTP_ROUTING_KEY } from "../../shared/topology.ts";
import { queueStats, RawAmqp } from "../broker.ts";
import type { Stack } from "../stack.ts";
import { schemaFor } from "./bus.ts";
import type { Sent } from "./bus.ts";

const WORK_QUEUES = [OTP_QUEUE, AUTH_QUEUE];
const DEAD_LETTER_QUEUES = [`${OTP_QUEUE}.dlq`, `${AUTH_QUEUE}.dlq`];

/**
 * The dead letters of one bus fuzz test. Across runs: a message whose handler keeps
 * failing may be dead-lettered after its run was checked; it is still counted, exactly
 * once.
 */
export class DeadLetterLedger {
  /** Every message published, by fuzz id. */
  readonly allSent = new Map<string, Sent>();
  /** The dead letters read so far, by fuzz id. */
  readonly dead = new Map<string, GetMessage[]>();
  /** Dead letters that are none of ours: messages the services produced themselves. */
  readonly strays: GetMessage[] = [];

  private constructor(
    private readonly stack: Stack,
    private readonly raw: RawAmqp,
  ) {}

  static async open(stack: Stack): Promise<DeadLetterLedger> {
    return new DeadLetterLedger(stack, await RawAmqp.open(stack.amqpUrl));
  }

  private get ch(): ConfirmChannel {
    return this.raw.ch;
  }

  /** Records the messages, then publishes them all (with publisher confirms). */
  async publish(sent: Sent[]): Promise<void> {
    for (const m of sent) this.allSent.set(m.fuzzId, m);
    await publishAll(this.ch, sent);
  }

  /** Reads (and removes) everything in both dead-letter queues. */
  async take(): Promise<void> {
    for (const q of DEAD_LETTER_QUEUES) {
      for (;;) {
        const m = await this.ch.get(q, { noAck: true });
        if (!m) break;
        const id = String(m.properties.headers?.["x-fuzz-id"] ?? "");
        if (!this.allSent.has(id)) this.strays.push(m);
        else this.dead.set(id, [...(this.dead.get(id) ?? []), m]);
      }
    }
  }

  async workQueuesEmpty(): Promise<boolean> {
    for (const q of WORK_QUEUES) {
      if ((await this.ch.checkQueue(q)).messageCount !== 0) return false;
    }
    const depth = await queueDepths(this.stack);
    return depth[OTP_QUEUE] === 0 && depth[AUTH_QUEUE] === 0;
  }

  async deadLetterQueuesEmpty(): Promise<boolean> {
    for (const q of DEAD_LETTER_QUEUES) {
      if ((await this.ch.checkQueue(q)).messageCount !== 0) return false;
    }
    return true;
  }

  async close(): Promise<void> {
    await this.raw.close();
  }
}

async function publishAll(ch: ConfirmChannel, sent: Sent[]): Promise<void> {
  await Promise.all(sent.map((m) =>
    new Promise<void>((resolve, reject) => {
      ch.publish(EXCHANGE, m.key, Buffer.from(m.body), {
        persistent: m.persistent,
        messageId: m.messageId,
        type: m.type,
        contentType: m.contentType,
        correlationId: m.correlationId,
        timestamp: Math.floor(Date.now() / 1000),
        headers: { "x-fuzz-id": m.fuzzId },
      }, (err: unknown) => (err ? reject(err) : resolve()));
    })
  ));
}

/** Messages ready + unacknowledged per queue of the stack's vhost. */
export async function queueDepths(stack: Stack): Promise<Record<string, number>> {
  const stats = await queueStats(stack.vhost);
  return Object.fromEntries(
    Object.entries(stats).map(([name, s]) => [name, s.ready + s.unacked]),
  );
}

export function describeSent(m: Sent): string {
  const body = Array.from(m.body.subarray(0, 48), (b) => b.toString(16).padStart(2, "0")).join("");
  return `${m.fuzzId} key=${m.key} type=${JSON.stringify(m.type)} content_type=${
    JSON.stringify(m.contentType)
  } message_id=${JSON.stringify(m.messageId)} body(${m.body.byteLength})=${body}${
    m.body.byteLength > 48 ? "…" : ""
  } invalid=${m.invalid ?? "-"}`;
}

/** Service log lines that mention the message (by message id or request id). */
export function logsAbout(stack: Stack, m: Sent): string[] {
  let requestId = "";
  try {
    requestId = fromBinary(schemaFor(m.key), m.body).requestId;
  } catch { /* undecodable */ }
  const needles = [m.messageId, requestId].filter((n): n is string => !!n && n.length >= 8);
  return [...stack.otp.lines, ...stack.auth.lines]
    .filter((l) => needles.some((n) => l.includes(JSON.stringify(n).slice(1, -1))))
    .slice(0, 12);
}

/**
 * Whether a message that may be valid was handled: its request is in the database
 * (otp.requests / auth.inbox), or the consumer logged an outcome for its request id
 * (e.g. otp-service refusing it under a send limit, which stores no request).
 */
export async function processed(stack: Stack, m: Sent): Promise<boolean> {
  let msg;
  try {
    msg = fromBinary(schemaFor(m.key), m.body);
  } catch {
    return false;
  }
  const requestId = msg.requestId;
  const service = m.key === OTP_ROUTING_KEY ? stack.otp : stack.auth;
  const logged = service.lines.some((l) => {
    if (!l.startsWith("{")) return false;
    try {
      const j = JSON.parse(l);
      return j.otp_request_id === requestId && j.level !== "error";
    } catch {
      return false;
    }
  });
  if (logged) return true;
  // PostgreSQL text cannot hold NUL: such an id can never have been stored.
  const storable = (v: string) => !v.includes("\u0000");
  if (m.key === OTP_ROUTING_KEY) {
    if (!storable(requestId)) return false;
    const rows = await stack.sql`select 1 from otp.requests where request_id = ${requestId}`;
    return rows.length > 0;
  }
  const id = m.messageId ?? requestId;
  if (!storable(id)) return false;
  const rows = await stack.sql`select 1 from auth.inbox where message_id = ${id}`;
  return rows.length > 0;
}
