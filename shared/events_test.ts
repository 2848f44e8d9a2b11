import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import type { DescMessage } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { IncomingMessage, OutgoingMessage } from "./bus.ts";
import { decodeEvent, encodeEvent, EVENT_SCHEMAS } from "./events.ts";
import { SessionRevokedSchema, UserSignedUpSchema } from "./gen/auth/events/v1/events_pb.ts";
import { RevocationReason } from "./gen/auth/events/v1/events_pb.ts";
import { PoisonMessage, PROTOBUF_CONTENT_TYPE } from "./messages.ts";
import { EVENT_ROUTING_KEYS, EVENTS_EXCHANGE, publishesMandatory } from "./topology.ts";

const USER_ID = "5b0c3f1e-8a43-4c55-9d53-0e7e0b7f3a11";
const EVENT_ID = "0d7c8a3b-2f1e-4e9a-bb8c-7a6d5e4f3c21";

function delivered(m: OutgoingMessage): IncomingMessage {
  return { ...m, correlationId: m.correlationId, deliveryCount: 1 };
}

Deno.test("an event goes to auth.events under its name with the bus message properties", () => {
  const at = new Date("2026-12-01T08:00:00Z");
  const m = encodeEvent(
    "user.signed_up",
    EVENT_ID,
    create(UserSignedUpSchema, {
      userId: USER_ID,
      phoneNumber: "+14155550123",
      occurredAt: timestampFromDate(at),
    }),
    { timestamp: at },
  );
  assert.equal(m.exchange, EVENTS_EXCHANGE);
  assert.equal(m.routingKey, "user.signed_up");
  assert.equal(m.messageId, EVENT_ID);
  assert.equal(m.type, "auth.events.v1.UserSignedUp");
  assert.equal(m.contentType, PROTOBUF_CONTENT_TYPE);
  assert.equal(m.timestamp, at);
  const e = decodeEvent(delivered(m));
  assert.equal(e.name, "user.signed_up");
  if (e.name !== "user.signed_up") return;
  assert.equal(e.message.userId, USER_ID);
  assert.equal(e.message.phoneNumber, "+14155550123");
});

Deno.test("every event name has its own message type and decodes back to itself", () => {
  const types = new Set<string>();
  for (const name of Object.values(EVENT_ROUTING_KEYS)) {
    const schema: DescMessage = EVENT_SCHEMAS[name];
    types.add(schema.typeName);
    const m = encodeEvent(name, EVENT_ID, create(schema) as never);
    assert.equal(decodeEvent(delivered(m)).name, name);
  }
  assert.equal(types.size, Object.keys(EVENT_ROUTING_KEYS).length);
});

Deno.test("a repeated field survives the trip (one revocation, several sessions)", () => {
  const m = encodeEvent(
    "session.revoked",
    EVENT_ID,
    create(SessionRevokedSchema, {
      sessionIds: ["a", "b"],
      userId: USER_ID,
      reason: RevocationReason.LOGOUT,
    }),
  );
  const e = decodeEvent(delivered(m));
  assert.ok(e.name === "session.revoked");
  assert.deepEqual(e.message.sessionIds, ["a", "b"]);
  assert.equal(e.message.reason, RevocationReason.LOGOUT);
});

Deno.test("an event of unknown type, content type or body is poison", () => {
  const good = delivered(
    encodeEvent("user.deleted", EVENT_ID, create(EVENT_SCHEMAS["user.deleted"])),
  );
  for (
    const bad of [
      { ...good, type: "bus.v1.OtpIssued" },
      { ...good, type: undefined },
      { ...good, contentType: "application/json" },
      { ...good, body: new Uint8Array([0xff, 0xff, 0xff]) },
    ]
  ) {
    assert.throws(() => decodeEvent(bad), PoisonMessage);
  }
});

Deno.test("no event carries a code or a token, and only number events carry a number", () => {
  const aboutTheNumber = new Set(["user.signed_up", "user.verified", "phone.changed"]);
  for (const [name, schema] of Object.entries(EVENT_SCHEMAS)) {
    const fields = (schema as DescMessage).fields.map((f) => f.name);
    for (const f of fields) assert.doesNotMatch(f, /otp|code|token|secret|mac/i, `${name}.${f}`);
    const phoneFields = fields.filter((f) => /phone/i.test(f));
    assert.equal(phoneFields.length > 0, aboutTheNumber.has(name), `${name}: ${phoneFields}`);
  }
});

Deno.test("only service-to-service publishes must reach a queue", () => {
  assert.equal(publishesMandatory("verification"), true);
  assert.equal(publishesMandatory(EVENTS_EXCHANGE), false);
});
