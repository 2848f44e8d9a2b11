import assert from "node:assert/strict";
import type { Disposition, IncomingMessage, OutgoingMessage } from "../shared/bus.ts";
import { delay, pollUntil } from "../shared/async.ts";
import { PublishError } from "../shared/bus.ts";
import { createLogger } from "../shared/log.ts";
import {
  AUTH_QUEUE,
  AUTH_ROUTING_KEY,
  EVENTS_EXCHANGE,
  EXCHANGE,
  OTP_QUEUE,
  OTP_ROUTING_KEY,
} from "../shared/topology.ts";
import { MemoryBroker, topicMatches } from "./memory_broker.ts";

function setup(deliveryLimit = 3) {
  const lines: Record<string, unknown>[] = [];
  const logger = createLogger("test", "debug", {}, (l) => lines.push(JSON.parse(l)));
  const broker = new MemoryBroker(logger, { deliveryLimit, retryDelayMs: () => 0 });
  return { broker, lines };
}

let seq = 0;
function message(routingKey: string, body = new Uint8Array([1, 2, 3])): OutgoingMessage {
  return {
    exchange: EXCHANGE,
    routingKey,
    messageId: `m-${++seq}`,
    type: "bus.v1.Test",
    contentType: "application/x-protobuf",
    body,
    timestamp: new Date("2030-01-01T00:00:01.999Z"),
    correlationId: "c-1",
  };
}

function until(cond: () => boolean, what: string): Promise<true> {
  return pollUntil(() => cond(), { timeoutMs: 2_000, intervalMs: 5, what });
}

function recorder(disposition: Disposition | (() => Promise<Disposition>) = "ack") {
  const got: IncomingMessage[] = [];
  const handler = (m: IncomingMessage) => {
    got.push(m);
    return typeof disposition === "function" ? disposition() : Promise.resolve(disposition);
  };
  return { got, handler };
}

Deno.test("warns at creation that it is for development only", async () => {
  const { broker, lines } = setup();
  assert.ok(lines.some((l) =>
    l.level === "warn" &&
    l.msg === "in-process broker: development only, messages are not durable"
  ));
  await broker.close();
});

Deno.test("routes by exact routing key, later and with the AMQP properties", async () => {
  const { broker } = setup();
  const otp = recorder();
  const auth = recorder();
  broker.consume(OTP_QUEUE, otp.handler);
  broker.consume(AUTH_QUEUE, auth.handler);
  const body = new Uint8Array([7, 8, 9]);
  await broker.publish(message(OTP_ROUTING_KEY, body));
  await broker.publish(message(AUTH_ROUTING_KEY));
  body.fill(0); // the caller reuses its buffer
  await until(() => otp.got.length === 1 && auth.got.length === 1, "deliveries");
  const [m] = otp.got;
  assert.deepEqual(m?.body, new Uint8Array([7, 8, 9]));
  assert.equal(m?.deliveryCount, 1);
  assert.equal(m?.type, "bus.v1.Test");
  assert.equal(m?.correlationId, "c-1");
  assert.equal(m?.timestamp?.toISOString(), "2030-01-01T00:00:01.000Z");
  assert.notEqual(m?.messageId, auth.got[0]?.messageId);
  await broker.close();
});

Deno.test("delivers asynchronously, never inside publish", async () => {
  const { broker } = setup();
  const otp = recorder();
  broker.consume(OTP_QUEUE, otp.handler);
  const published = broker.publish(message(OTP_ROUTING_KEY));
  assert.equal(otp.got.length, 0);
  await published;
  await until(() => otp.got.length === 1, "delivery");
  await broker.close();
});

Deno.test("rejects an unroutable publish as unroutable, logs it and delivers nothing", async () => {
  const { broker, lines } = setup();
  const otp = recorder();
  broker.consume(OTP_QUEUE, otp.handler);
  await assert.rejects(
    broker.publish(message("no_such_key")),
    (e) => e instanceof PublishError && e.reason === "unroutable",
  );
  await delay(20);
  assert.equal(otp.got.length, 0);
  assert.equal(broker.queueDepth(OTP_QUEUE) + broker.queueDepth(AUTH_QUEUE), 0);
  assert.ok(lines.some((l) => l.msg === "unroutable message returned"));
  await broker.close();
});

Deno.test("a retried message is redelivered until the delivery limit, then dead-lettered", async () => {
  const { broker } = setup(2);
  const otp = recorder("retry");
  broker.consume(OTP_QUEUE, otp.handler);
  await broker.publish(message(OTP_ROUTING_KEY));
  // Like a quorum queue: dead-lettered once returned more than the limit times.
  await until(() => broker.deadLetters(OTP_QUEUE).length === 1, "dead letter");
  assert.deepEqual(otp.got.map((m) => m.deliveryCount), [1, 2, 3]);
  assert.equal(broker.queueDepth(OTP_QUEUE), 0);
  assert.equal(broker.queueDepth(`${OTP_QUEUE}.dlq`), 1);
  assert.equal(broker.deadLetters(OTP_QUEUE)[0]?.messageId, otp.got[0]?.messageId);
  await broker.close();
});

Deno.test("the dead-letter disposition goes straight to the dead-letter queue", async () => {
  const { broker } = setup();
  const auth = recorder("dead-letter");
  broker.consume(AUTH_QUEUE, auth.handler);
  await broker.publish(message(AUTH_ROUTING_KEY));
  await until(() => broker.deadLetters(AUTH_QUEUE).length === 1, "dead letter");
  assert.equal(auth.got.length, 1);
  assert.equal(broker.deadLetters(OTP_QUEUE).length, 0);
  await broker.close();
});

Deno.test("a handler that throws counts as a retry", async () => {
  const { broker, lines } = setup(1);
  const otp = recorder(() => Promise.reject(new Error("boom")));
  broker.consume(OTP_QUEUE, otp.handler);
  await broker.publish(message(OTP_ROUTING_KEY));
  await until(() => broker.deadLetters(OTP_QUEUE).length === 1, "dead letter");
  assert.deepEqual(otp.got.map((m) => m.deliveryCount), [1, 2]);
  assert.ok(lines.some((l) => l.msg === "handler failed" && l.error === "boom"));
  await broker.close();
});

Deno.test("competing consumers share a queue in turn, each within its prefetch", async () => {
  const { broker } = setup();
  const release: (() => void)[] = [];
  const seen = { a: 0, b: 0 };
  const busy = { a: 0, b: 0, maxA: 0, maxB: 0 };
  const consumer = (name: "a" | "b") => async () => {
    seen[name]++;
    busy[name]++;
    busy.maxA = Math.max(busy.maxA, busy.a);
    busy.maxB = Math.max(busy.maxB, busy.b);
    await new Promise<void>((r) => release.push(r));
    busy[name]--;
    return "ack" as const;
  };
  broker.consume(OTP_QUEUE, consumer("a"), { prefetch: 1 });
  broker.consume(OTP_QUEUE, consumer("b"), { prefetch: 1 });
  for (let i = 0; i < 6; i++) await broker.publish(message(OTP_ROUTING_KEY));
  await until(() => seen.a + seen.b === 2, "first two deliveries");
  assert.deepEqual(seen, { a: 1, b: 1 });
  assert.equal(broker.queueDepth(OTP_QUEUE), 4);
  while (seen.a + seen.b < 6 || release.length > 0) {
    release.shift()?.();
    await delay(1);
  }
  assert.deepEqual(seen, { a: 3, b: 3 });
  assert.deepEqual([busy.maxA, busy.maxB], [1, 1]);
  await broker.close();
});

Deno.test("close waits for handlers in flight and then refuses publishes", async () => {
  const { broker } = setup();
  let finish!: () => void;
  let finished = false;
  broker.consume(OTP_QUEUE, async () => {
    await new Promise<void>((r) => (finish = r));
    finished = true;
    return "ack";
  });
  await broker.publish(message(OTP_ROUTING_KEY));
  await until(() => finish !== undefined, "delivery");
  let closed = false;
  const closing = broker.close().then(() => (closed = true));
  await delay(20);
  assert.equal(closed, false);
  assert.equal(broker.isReady(), false);
  finish();
  await closing;
  assert.equal(finished, true);
  await assert.rejects(
    broker.publish(message(OTP_ROUTING_KEY)),
    (e) => e instanceof PublishError && e.reason === "unavailable",
  );
});

Deno.test("topic patterns match as RabbitMQ's: * is one word, # zero or more", () => {
  const cases: [string, string, boolean][] = [
    ["user.*", "user.deleted", true],
    ["user.*", "user.signed_up", true],
    ["user.*", "session.created", false],
    ["user.*", "user", false],
    ["user.*", "user.a.b", false],
    ["#", "phone.changed", true],
    ["#.created", "session.created", true],
    ["session.#", "session", true],
    ["*.revoked", "session.revoked", true],
    ["session.created", "session.created", true],
    ["session.created", "session.revoked", false],
  ];
  for (const [pattern, key, expected] of cases) {
    assert.equal(topicMatches(pattern, key), expected, `${pattern} ~ ${key}`);
  }
});

Deno.test("auth.events routes each event to every matching queue once and confirms unbound ones", async () => {
  const { broker } = setup();
  broker.bindQueue("users", EVENTS_EXCHANGE, "user.*");
  broker.bindQueue("everything", EVENTS_EXCHANGE, "#");
  broker.bindQueue("everything", EVENTS_EXCHANGE, "user.deleted");
  const users = recorder(), everything = recorder();
  broker.consume("users", users.handler);
  broker.consume("everything", everything.handler);
  const event = (key: string) => ({ ...message(key), exchange: EVENTS_EXCHANGE });
  await broker.publish(event("user.deleted"));
  await broker.publish(event("session.created"));
  await until(() => users.got.length === 1 && everything.got.length === 2, "deliveries");
  await delay(20);
  assert.deepEqual(users.got.map((m) => m.type), ["bus.v1.Test"]);
  assert.equal(everything.got.length, 2, "a queue bound twice still gets one copy");
  const lonely = new MemoryBroker(createLogger("test", "error", {}, () => {}));
  await lonely.publish(event("phone.changed"));
  await lonely.close();
  await broker.close();
});
