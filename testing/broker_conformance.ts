// One suite of the behaviours the services rely on from the Broker port
// (shared/bus.ts), run against every implementation: RabbitMQ and the in-process
// broker of `deno task dev`. A behaviour that holds on one and not the other is a
// surprise waiting for whoever moves from dev to production.
import assert from "node:assert/strict";
import { delay, pollUntil } from "../shared/async.ts";
import type { Broker, Disposition, IncomingMessage, OutgoingMessage } from "../shared/bus.ts";
import { PublishError } from "../shared/bus.ts";
import {
  AUTH_QUEUE,
  AUTH_ROUTING_KEY,
  EXCHANGE,
  OTP_QUEUE,
  OTP_ROUTING_KEY,
  QUEUES,
} from "../shared/topology.ts";

export interface OpenedBroker {
  broker: Broker;
  /** Closes the broker if the test did not, and removes what open() created. */
  dispose(): Promise<void>;
}

export interface OpenOptions {
  deliveryLimit: number;
  /** Handler errors to retry in place (the services pass "the database is unreachable"). */
  isTransient: (err: unknown) => boolean;
}

/** What the suite's handlers throw to stand for a dependency that will come back. */
export class TransientTestError extends Error {}

export interface BrokerBackend {
  name: string;
  /** A broker on its own, empty copy of the topology, connected and ready. */
  open(o: OpenOptions): Promise<OpenedBroker>;
  /** Passed to Deno.test (e.g. sanitizers a driver's own timers trip). */
  testOptions?: Partial<Deno.TestDefinition>;
}

const DELIVERY_LIMIT = 2;
/** Generous: RabbitMQ's retry back-off makes a dead-lettering take about a second. */
const WAIT = { timeoutMs: 20_000, intervalMs: 20 };

let seq = 0;
function message(routingKey: string, body = new Uint8Array([1, 2, 3])): OutgoingMessage {
  return {
    exchange: EXCHANGE,
    routingKey,
    messageId: `conformance-${++seq}-${crypto.randomUUID()}`,
    type: "bus.v1.Test",
    contentType: "application/x-protobuf",
    body,
    timestamp: new Date("2030-01-01T00:00:01.999Z"),
    correlationId: "corr-1",
  };
}

function recorder(disposition: Disposition | ((m: IncomingMessage) => Promise<Disposition>)) {
  const got: IncomingMessage[] = [];
  const handler = (m: IncomingMessage) => {
    got.push(m);
    return typeof disposition === "function" ? disposition(m) : Promise.resolve(disposition);
  };
  return { got, handler };
}

function deadLetterQueue(queue: string): string {
  return QUEUES.find((q) => q.name === queue)!.deadLetterQueue;
}

type Case = (broker: Broker) => Promise<void>;

const cases: Record<string, Case> = {
  "a confirmed publish waits in its queue for a consumer that starts later": async (broker) => {
    const body = new Uint8Array([7, 8, 9]);
    const sent = message(OTP_ROUTING_KEY, body);
    await broker.publish(sent);
    body.fill(0); // the caller may reuse its buffer once publish resolved
    const otp = recorder("ack");
    broker.consume(OTP_QUEUE, otp.handler);
    await pollUntil(() => otp.got.length === 1, { ...WAIT, what: "the delivery" });
    const [m] = otp.got;
    assert.deepEqual(m?.body, new Uint8Array([7, 8, 9]));
    assert.equal(m?.messageId, sent.messageId);
    assert.equal(m?.type, "bus.v1.Test");
    assert.equal(m?.contentType, "application/x-protobuf");
    assert.equal(m?.correlationId, "corr-1");
    assert.equal(m?.timestamp?.toISOString(), "2030-01-01T00:00:01.000Z");
    assert.equal(m?.deliveryCount, 1);
  },

  "each routing key reaches its own queue and no other": async (broker) => {
    const otp = recorder("ack");
    const auth = recorder("ack");
    broker.consume(OTP_QUEUE, otp.handler);
    broker.consume(AUTH_QUEUE, auth.handler);
    const toOtp = message(OTP_ROUTING_KEY);
    const toAuth = message(AUTH_ROUTING_KEY);
    await broker.publish(toOtp);
    await broker.publish(toAuth);
    await pollUntil(() => otp.got.length + auth.got.length >= 2, { ...WAIT, what: "deliveries" });
    assert.deepEqual(otp.got.map((m) => m.messageId), [toOtp.messageId]);
    assert.deepEqual(auth.got.map((m) => m.messageId), [toAuth.messageId]);
  },

  "a publish no queue is bound for is rejected as unroutable": async (broker) => {
    await assert.rejects(
      broker.publish(message("no_such_routing_key")),
      (e) => e instanceof PublishError && e.reason === "unroutable",
    );
    // The broker stays usable.
    const otp = recorder("ack");
    broker.consume(OTP_QUEUE, otp.handler);
    await broker.publish(message(OTP_ROUTING_KEY));
    await pollUntil(() => otp.got.length === 1, { ...WAIT, what: "the next delivery" });
  },

  "an acknowledged message is not delivered again": async (broker) => {
    const otp = recorder("ack");
    broker.consume(OTP_QUEUE, otp.handler);
    const first = message(OTP_ROUTING_KEY);
    const second = message(OTP_ROUTING_KEY);
    await broker.publish(first);
    await pollUntil(() => otp.got.length === 1, { ...WAIT, what: "the first delivery" });
    await broker.publish(second);
    // Queues are FIFO: once the second arrived, a redelivery of the first would have too.
    await pollUntil(() => otp.got.some((m) => m.messageId === second.messageId), WAIT);
    assert.deepEqual(otp.got.map((m) => m.messageId), [first.messageId, second.messageId]);
  },

  "the dead-letter disposition sends the message to its dead-letter queue at once": async (
    broker,
  ) => {
    const auth = recorder("dead-letter");
    const dlq = recorder("ack");
    broker.consume(AUTH_QUEUE, auth.handler);
    broker.consume(deadLetterQueue(AUTH_QUEUE), dlq.handler);
    const sent = message(AUTH_ROUTING_KEY, new Uint8Array([4, 2]));
    await broker.publish(sent);
    await pollUntil(() => dlq.got.length === 1, { ...WAIT, what: "the dead letter" });
    assert.equal(auth.got.length, 1, "handled once, never retried");
    assert.equal(dlq.got[0]?.messageId, sent.messageId);
    assert.equal(dlq.got[0]?.deliveryCount, 1, "a dead letter starts its count afresh");
    assert.equal(dlq.got[0]?.type, sent.type);
    assert.deepEqual(dlq.got[0]?.body, new Uint8Array([4, 2]));
  },

  "a retried message comes back with a growing delivery count, then is dead-lettered": async (
    broker,
  ) => {
    const otp = recorder("retry");
    const dlq = recorder("ack");
    broker.consume(OTP_QUEUE, otp.handler);
    broker.consume(deadLetterQueue(OTP_QUEUE), dlq.handler);
    const sent = message(OTP_ROUTING_KEY);
    await broker.publish(sent);
    await pollUntil(() => dlq.got.length === 1, { ...WAIT, what: "the dead letter" });
    // Returned more than the limit times: seen the limit plus one times.
    assert.deepEqual(
      otp.got.map((m) => m.deliveryCount),
      Array.from({ length: DELIVERY_LIMIT + 1 }, (_, i) => i + 1),
    );
    assert.ok(otp.got.every((m) => m.messageId === sent.messageId));
    assert.equal(dlq.got[0]?.messageId, sent.messageId);
    assert.equal(dlq.got[0]?.deliveryCount, 1, "a dead letter starts its count afresh");
  },

  "a handler that throws counts as a retry": async (broker) => {
    const otp = recorder(() => Promise.reject(new Error("handler bug")));
    const dlq = recorder("ack");
    broker.consume(OTP_QUEUE, otp.handler);
    broker.consume(deadLetterQueue(OTP_QUEUE), dlq.handler);
    await broker.publish(message(OTP_ROUTING_KEY));
    await pollUntil(() => dlq.got.length === 1, { ...WAIT, what: "the dead letter" });
    assert.equal(otp.got.length, DELIVERY_LIMIT + 1);
  },

  "a transient handler failure is retried in place and uses up no delivery": async (broker) => {
    let failures = 0;
    const otp = recorder(() => {
      if (failures++ < DELIVERY_LIMIT + 1) {
        return Promise.reject(new TransientTestError("database unreachable"));
      }
      return Promise.resolve("ack");
    });
    const dlq = recorder("ack");
    broker.consume(OTP_QUEUE, otp.handler);
    broker.consume(deadLetterQueue(OTP_QUEUE), dlq.handler);
    const sent = message(OTP_ROUTING_KEY);
    await broker.publish(sent);
    await pollUntil(() => otp.got.length === DELIVERY_LIMIT + 2, { ...WAIT, what: "the ack" });
    // More failures than the delivery limit allows, yet one delivery and no dead letter.
    assert.ok(otp.got.every((m) => m.deliveryCount === 1 && m.messageId === sent.messageId));
    const after = message(OTP_ROUTING_KEY);
    await broker.publish(after);
    await pollUntil(() => otp.got.some((m) => m.messageId === after.messageId), WAIT);
    assert.equal(dlq.got.length, 0);
  },

  "a consumer holds at most its prefetch of unsettled messages": async (broker) => {
    let held = 0;
    let maxHeld = 0;
    const release: (() => void)[] = [];
    const seen: string[] = [];
    broker.consume(OTP_QUEUE, async (m) => {
      seen.push(m.messageId!);
      maxHeld = Math.max(maxHeld, ++held);
      await new Promise<void>((r) => release.push(r));
      held--;
      return "ack";
    }, { prefetch: 2 });
    for (let i = 0; i < 5; i++) await broker.publish(message(OTP_ROUTING_KEY));
    await pollUntil(() => held === 2, { ...WAIT, what: "two held messages" });
    await delay(200); // room for a third delivery, were the prefetch ignored
    assert.equal(held, 2);
    while (seen.length < 5 || release.length > 0) {
      release.shift()?.();
      await delay(5);
    }
    assert.equal(new Set(seen).size, 5);
    assert.equal(maxHeld, 2);
  },

  "stopConsuming delivers nothing more, waits for the handler in flight, and publishing still works":
    async (broker) => {
      let finish!: () => void;
      const seen: string[] = [];
      broker.consume(OTP_QUEUE, async (m) => {
        seen.push(m.messageId!);
        if (seen.length === 1) await new Promise<void>((r) => (finish = r));
        return "ack";
      }, { prefetch: 8 });
      await broker.publish(message(OTP_ROUTING_KEY));
      await pollUntil(() => finish !== undefined, { ...WAIT, what: "the first delivery" });
      let stopped = false;
      const stopping = broker.stopConsuming().then(() => (stopped = true));
      // Room under the prefetch, so only the cancelled consumer keeps these queued.
      for (let i = 0; i < 3; i++) await broker.publish(message(OTP_ROUTING_KEY));
      await delay(200);
      assert.equal(stopped, false, "stopConsuming waits for the handler in flight");
      assert.deepEqual(seen.length, 1, "no delivery after stopConsuming");
      finish();
      await stopping;
      await delay(100);
      assert.equal(seen.length, 1, "no delivery after stopConsuming");
    },

  "close waits for the handler in flight and then takes no new message": async (broker) => {
    let finish!: () => void;
    const seen: string[] = [];
    let finished = false;
    broker.consume(OTP_QUEUE, async (m) => {
      seen.push(m.messageId!);
      if (seen.length === 1) await new Promise<void>((r) => (finish = r));
      finished = true;
      return "ack";
    }, { prefetch: 1 });
    for (let i = 0; i < 3; i++) await broker.publish(message(OTP_ROUTING_KEY));
    await pollUntil(() => finish !== undefined, { ...WAIT, what: "the first delivery" });
    let closed = false;
    const closing = broker.close().then(() => (closed = true));
    await delay(100);
    assert.equal(closed, false, "close waits for the handler in flight");
    assert.equal(broker.isReady(), false);
    finish();
    await closing;
    assert.equal(finished, true);
    assert.equal(seen.length, 1, "no message after close began");
    await assert.rejects(
      broker.publish(message(OTP_ROUTING_KEY)),
      (e) => e instanceof PublishError && e.reason === "unavailable",
    );
  },
};

/** Registers one Deno test per behaviour for `backend`. */
export function brokerConformance(backend: BrokerBackend): void {
  for (const [name, run] of Object.entries(cases)) {
    Deno.test({
      name: `${backend.name}: ${name}`,
      ...backend.testOptions,
      fn: async () => {
        const { broker, dispose } = await backend.open({
          deliveryLimit: DELIVERY_LIMIT,
          isTransient: (err) => err instanceof TransientTestError,
        });
        try {
          assert.equal(broker.isReady(), true, "ready once opened");
          await run(broker);
        } finally {
          await dispose();
        }
      },
    });
  }
}
