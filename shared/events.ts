// The events auth-service publishes on the topic exchange auth.events: one protobuf
// message per routing key, with the same message properties as every bus message. The
// AMQP message_id is the event's id, so consumers can deduplicate.
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import {
  PhoneChangedSchema,
  SessionCreatedSchema,
  SessionRevokedSchema,
  UserDeletedSchema,
  UserSignedUpSchema,
  UserVerifiedSchema,
} from "./gen/auth/events/v1/events_pb.ts";
import type { IncomingMessage, OutgoingMessage } from "./bus.ts";
import { PoisonMessage, PROTOBUF_CONTENT_TYPE } from "./messages.ts";
import { EVENT_ROUTING_KEYS, EVENTS_EXCHANGE } from "./topology.ts";
import type { EventRoutingKey } from "./topology.ts";

export const EVENT_SCHEMAS = {
  [EVENT_ROUTING_KEYS.userSignedUp]: UserSignedUpSchema,
  [EVENT_ROUTING_KEYS.userVerified]: UserVerifiedSchema,
  [EVENT_ROUTING_KEYS.sessionCreated]: SessionCreatedSchema,
  [EVENT_ROUTING_KEYS.sessionRevoked]: SessionRevokedSchema,
  [EVENT_ROUTING_KEYS.phoneChanged]: PhoneChangedSchema,
  [EVENT_ROUTING_KEYS.userDeleted]: UserDeletedSchema,
} as const satisfies Record<EventRoutingKey, DescMessage>;

export type EventSchemas = typeof EVENT_SCHEMAS;
export type EventMessage<K extends EventRoutingKey> = MessageShape<EventSchemas[K]>;

/** A decoded event: its routing key and its message, narrowed together. */
export type AuthEvent = { [K in EventRoutingKey]: { name: K; message: EventMessage<K> } }[
  EventRoutingKey
];

export function encodeEvent<K extends EventRoutingKey>(
  name: K,
  messageId: string,
  message: EventMessage<K>,
  options: { timestamp?: Date } = {},
): OutgoingMessage {
  const schema: DescMessage = EVENT_SCHEMAS[name];
  return {
    exchange: EVENTS_EXCHANGE,
    routingKey: name,
    messageId,
    type: schema.typeName,
    contentType: PROTOBUF_CONTENT_TYPE,
    body: toBinary(schema, message as MessageShape<DescMessage>),
    timestamp: options.timestamp ?? new Date(),
  };
}

const BY_TYPE = new Map<string, EventRoutingKey>(
  Object.entries(EVENT_SCHEMAS).map(([k, s]) => [s.typeName, k as EventRoutingKey]),
);

/** For consumers: the event a delivery carries, found by its AMQP type. */
export function decodeEvent(m: IncomingMessage): AuthEvent {
  const name = m.type === undefined ? undefined : BY_TYPE.get(m.type);
  if (!name) throw new PoisonMessage(`unexpected type ${JSON.stringify(m.type ?? null)}`);
  if (m.contentType !== PROTOBUF_CONTENT_TYPE) {
    throw new PoisonMessage(`unexpected content type ${JSON.stringify(m.contentType ?? null)}`);
  }
  try {
    return { name, message: fromBinary(EVENT_SCHEMAS[name], m.body) } as AuthEvent;
  } catch {
    throw new PoisonMessage("body is not a valid protobuf message");
  }
}
