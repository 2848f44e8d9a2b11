// The declared topology on a real RabbitMQ (a vhost of its own): the events exchange is
// a durable topic exchange, routed by event name, and redeclaring after a reconnect is
// accepted.
import assert from "node:assert/strict";
import amqp from "amqplib";
import type { Message } from "amqplib";
import { Buffer } from "node:buffer";
import { create } from "@bufbuild/protobuf";
import { connectAmqp, declareTopology } from "../shared/amqp.ts";
import { pollUntil } from "../shared/async.ts";
import { PublishError } from "../shared/bus.ts";
import { createLogger } from "../shared/log.ts";
import { decodeEvent, encodeEvent, EVENT_SCHEMAS } from "../shared/events.ts";
import { EVENT_ROUTING_KEYS, EVENTS_EXCHANGE, publishesMandatory } from "../shared/topology.ts";
import { createVhost } from "../testing/broker.ts";

Deno.test("events reach the consumers bound to their names on the auth.events topic exchange", async () => {
  const vhost = await createVhost();
  const conn = await amqp.connect(vhost.url);
  try {
    const setup = await conn.createChannel();
    await declareTopology(setup, 5);
    await declareTopology(setup, 5); // as after a reconnect
    await setup.checkExchange(EVENTS_EXCHANGE);
    const users = (await setup.assertQueue("", { exclusive: true })).queue;
    const all = (await setup.assertQueue("", { exclusive: true })).queue;
    await setup.bindQueue(users, EVENTS_EXCHANGE, "user.*");
    await setup.bindQueue(all, EVENTS_EXCHANGE, "#");

    const pub = await conn.createConfirmChannel();
    const names = Object.values(EVENT_ROUTING_KEYS);
    for (const name of names) {
      const m = encodeEvent(name, crypto.randomUUID(), create(EVENT_SCHEMAS[name]) as never);
      await new Promise<void>((resolve, reject) => {
        pub.publish(m.exchange, m.routingKey, Buffer.from(m.body), {
          persistent: true,
          messageId: m.messageId,
          type: m.type,
          contentType: m.contentType,
          timestamp: Math.floor(m.timestamp.getTime() / 1000),
          mandatory: publishesMandatory(m.exchange),
        }, (err) => err ? reject(err) : resolve());
      });
    }

    const drain = async (queue: string, expected: number) => {
      const got: Message[] = [];
      const signal = AbortSignal.timeout(10_000);
      while (got.length < expected) {
        assert.ok(!signal.aborted, `${queue}: ${got.length} of ${expected} events arrived`);
        const m = await setup.get(queue, { noAck: true });
        if (m) got.push(m);
        else await new Promise((r) => setTimeout(r, 20));
      }
      assert.equal(await setup.get(queue, { noAck: true }), false, `${queue} has more`);
      return got;
    };
    const toEvent = (m: Message) =>
      decodeEvent({
        messageId: m.properties.messageId,
        type: m.properties.type,
        contentType: m.properties.contentType,
        correlationId: undefined,
        timestamp: undefined,
        body: new Uint8Array(m.content),
        deliveryCount: 1,
      }).name;
    const userNames = names.filter((n) => n.startsWith("user."));
    assert.deepEqual((await drain(users, userNames.length)).map(toEvent), userNames);
    const everything = await drain(all, names.length);
    assert.deepEqual(everything.map(toEvent), names);
    for (const m of everything) {
      assert.equal(m.properties.deliveryMode, 2);
      assert.ok(m.properties.messageId);
      assert.ok(m.properties.timestamp);
    }
    await pub.close();
    await setup.close();
  } finally {
    await conn.close();
    await vhost.drop();
  }
});

Deno.test("an event nobody has bound to is confirmed, while an unroutable service message still fails", async () => {
  const vhost = await createVhost();
  const broker = await connectAmqp({
    url: vhost.url,
    logger: createLogger("topology-test", "error"),
    deliveryLimit: 5,
    isTransient: () => false,
  });
  try {
    await pollUntil(() => broker.isReady(), { what: "the broker to be ready" });
    const name = EVENT_ROUTING_KEYS.userDeleted;
    await broker.publish(encodeEvent(name, crypto.randomUUID(), create(EVENT_SCHEMAS[name])));
    await assert.rejects(
      broker.publish({
        ...encodeEvent(name, crypto.randomUUID(), create(EVENT_SCHEMAS[name])),
        exchange: "verification",
        routingKey: "no_such_key",
      }),
      (err) => err instanceof PublishError && err.reason === "unroutable",
    );
  } finally {
    await broker.close();
    await vhost.drop();
  }
});
