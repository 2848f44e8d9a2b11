// Bus message schemas: protobuf binary on the wire, with the AMQP `type` naming the
// message and `content_type` the encoding. Anything else is a poison message.
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import { OtpIssuedSchema, OtpPurpose, OtpRequestedSchema } from "./gen/bus/v1/bus_pb.ts";
import type { OtpIssued, OtpRequested } from "./gen/bus/v1/bus_pb.ts";
import type { IncomingMessage, OutgoingMessage } from "./bus.ts";
import { AUTH_ROUTING_KEY, EXCHANGE, OTP_ROUTING_KEY } from "./topology.ts";
import { traceHeaders } from "./tracing.ts";

export { OtpIssuedSchema, OtpPurpose, OtpRequestedSchema };
export type { OtpIssued, OtpRequested };

export const PROTOBUF_CONTENT_TYPE = "application/x-protobuf";

/** A message that can never be processed, however often it is delivered. */
export class PoisonMessage extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = "PoisonMessage";
  }
}

function encode<D extends DescMessage>(
  schema: D,
  routingKey: string,
  messageId: string,
  msg: MessageShape<D>,
  correlationId?: string,
): OutgoingMessage {
  return {
    exchange: EXCHANGE,
    routingKey,
    messageId,
    type: schema.typeName,
    contentType: PROTOBUF_CONTENT_TYPE,
    body: toBinary(schema, msg),
    timestamp: new Date(),
    correlationId,
    // The trace of whatever is encoding it; the outbox keeps it for the relay.
    headers: traceHeaders(),
  };
}

export function encodeOtpRequested(msg: OtpRequested): OutgoingMessage {
  return encode(OtpRequestedSchema, OTP_ROUTING_KEY, msg.requestId, msg, msg.traceId);
}

export function encodeOtpIssued(msg: OtpIssued): OutgoingMessage {
  return encode(OtpIssuedSchema, AUTH_ROUTING_KEY, msg.requestId, msg, msg.traceId);
}

function decode<D extends DescMessage>(schema: D, m: IncomingMessage): MessageShape<D> {
  if (m.type !== schema.typeName) {
    throw new PoisonMessage(`unexpected type ${JSON.stringify(m.type ?? null)}`);
  }
  if (m.contentType !== PROTOBUF_CONTENT_TYPE) {
    throw new PoisonMessage(`unexpected content type ${JSON.stringify(m.contentType ?? null)}`);
  }
  try {
    return fromBinary(schema, m.body);
  } catch {
    throw new PoisonMessage("body is not a valid protobuf message");
  }
}

export function decodeOtpRequested(m: IncomingMessage): OtpRequested {
  return decode(OtpRequestedSchema, m);
}

export function decodeOtpIssued(m: IncomingMessage): OtpIssued {
  return decode(OtpIssuedSchema, m);
}

export type PurposeName = "signup" | "login" | "phone_change";

const PURPOSES: Record<PurposeName, OtpPurpose> = {
  signup: OtpPurpose.SIGNUP,
  login: OtpPurpose.LOGIN,
  phone_change: OtpPurpose.PHONE_CHANGE,
};

export function purposeName(p: OtpPurpose): PurposeName | undefined {
  return (Object.keys(PURPOSES) as PurposeName[]).find((n) => PURPOSES[n] === p);
}

export function purposeFromName(name: PurposeName): OtpPurpose {
  return PURPOSES[name];
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function isUuid(s: string): boolean {
  return UUID.test(s);
}

/**
 * The fields every bus message about a code carries, validated: a UUID request id, a
 * known purpose and a number already in E.164. Anything else is poison.
 */
export function checkIdentity(
  msg: { requestId: string; phoneNumber: string; purpose: OtpPurpose },
  parse: (phone: string) => string,
): { purpose: PurposeName; phone: string } {
  const purpose = purposeName(msg.purpose);
  if (!purpose) throw new PoisonMessage("unknown purpose");
  if (!isUuid(msg.requestId)) throw new PoisonMessage("request_id is not a UUID");
  let phone: string;
  try {
    phone = parse(msg.phoneNumber);
  } catch {
    throw new PoisonMessage("bad phone_number");
  }
  if (phone !== msg.phoneNumber) throw new PoisonMessage("phone_number not in E.164");
  return { purpose, phone };
}

/** Free text from outside (trace ids, addresses): printable, at most 64 characters. */
export function cleanText(s: string): string {
  // deno-lint-ignore no-control-regex
  return s.replace(/[\u0000-\u001f\u007f]/g, "").slice(0, 64);
}
