// Generators of poison (and possibly valid) messages for the `verification` exchange
// (tests/fuzz_bus_test.ts): OtpRequested and OtpIssued with odd types, content types,
// ids, timestamps, MACs and purposes, mutated or foreign bodies, and near-valid
// messages with a single garbage field. certainlyInvalid says which of them the
// services must dead-letter on first delivery (proto/bus/v1).
import fc from "fast-check";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { OtpIssuedSchema, OtpPurpose, OtpRequestedSchema } from "../../shared/gen/bus/v1/bus_pb.ts";
import { AUTH_QUEUE, AUTH_ROUTING_KEY, OTP_QUEUE, OTP_ROUTING_KEY } from "../../shared/topology.ts";
import { BAD_PHONES, validPhone } from "./arbitraries.ts";
import { concat, enc } from "./bytes.ts";
import { encodeRaw, mutate, mutationArb, rawFieldArb } from "./protobuf.ts";

const PROTOBUF = "application/x-protobuf";

export interface BusCase {
  key: typeof OTP_ROUTING_KEY | typeof AUTH_ROUTING_KEY;
  type: string | undefined;
  contentType: string | undefined;
  body: Uint8Array;
  messageId: string | undefined;
  correlationId: string | undefined;
  persistent: boolean;
}

/** A case as published: with the id it is tracked by, and the verdict on it. */
export interface Sent extends BusCase {
  fuzzId: string;
  /** Why it is certainly invalid, or undefined when it may be processable. */
  invalid: string | undefined;
}

const expectedType = (key: string) =>
  key === OTP_ROUTING_KEY ? OtpRequestedSchema.typeName : OtpIssuedSchema.typeName;
export const schemaFor = (
  key: string,
) => (key === OTP_ROUTING_KEY ? OtpRequestedSchema : OtpIssuedSchema);
export const queueFor = (key: string) => (key === OTP_ROUTING_KEY ? OTP_QUEUE : AUTH_QUEUE);

const shortStr = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.string({ unit: "grapheme", maxLength: 20 }),
);

interface Ts {
  seconds: bigint;
  nanos: number;
}

const nowSeconds = () => BigInt(Math.floor(Date.now() / 1000));

const tsArb: fc.Arbitrary<Ts | undefined> = fc.oneof(
  { weight: 1, arbitrary: fc.constant(undefined) },
  {
    weight: 3,
    arbitrary: fc.integer({ min: -600, max: 600 }).map((d) => ({
      seconds: nowSeconds() + BigInt(d),
      nanos: 0,
    })),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      seconds: fc.oneof(
        fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }),
        fc.constantFrom(-62135596800n, -8640000000000n, 253402300799n, 8640000000001n, 0n),
      ),
      nanos: fc.oneof(
        fc.integer({ min: 0, max: 999_999_999 }),
        fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }),
      ),
    }),
  },
);

/** issued_at / expires_at pairs: sane, reversed, equal, missing or absurd. */
const timesArb: fc.Arbitrary<{ issued: Ts | undefined; expires: Ts | undefined }> = fc.oneof(
  {
    weight: 2,
    arbitrary: fc.integer({ min: 1, max: 600 }).map((ttl) => ({
      issued: { seconds: nowSeconds(), nanos: 0 },
      expires: { seconds: nowSeconds() + BigInt(ttl), nanos: 0 },
    })),
  },
  {
    weight: 2,
    arbitrary: fc.integer({ min: 0, max: 100_000 }).map((back) => ({
      issued: { seconds: nowSeconds(), nanos: 500 },
      expires: { seconds: nowSeconds() - BigInt(back), nanos: 0 },
    })),
  },
  { weight: 2, arbitrary: fc.record({ issued: tsArb, expires: tsArb }) },
);

const macArb = fc.oneof(
  { weight: 4, arbitrary: fc.uint8Array({ minLength: 32, maxLength: 32 }) },
  {
    weight: 2,
    arbitrary: fc.constantFrom(0, 1, 16, 31, 33, 64, 1000).chain((n) =>
      fc.uint8Array({ minLength: n, maxLength: n })
    ),
  },
);

function busPhoneArb(): fc.Arbitrary<string> {
  return fc.oneof(
    { weight: 6, arbitrary: validPhone },
    { weight: 2, arbitrary: fc.constantFrom(...BAD_PHONES) },
    {
      weight: 1,
      arbitrary: validPhone.map((p) =>
        `${p.slice(0, 2)} (${p.slice(2, 5)}) ${p.slice(5, 8)}-${p.slice(8)}`
      ),
    },
    { weight: 1, arbitrary: fc.string({ unit: "binary", maxLength: 40 }) },
    { weight: 1, arbitrary: fc.constant("+1415555\u0000123") },
  );
}

const busRequestIdArb: fc.Arbitrary<string> = fc.oneof(
  { weight: 6, arbitrary: fc.uuid() },
  { weight: 1, arbitrary: fc.constant("") },
  { weight: 1, arbitrary: fc.integer({ min: 300, max: 5000 }).map((n) => "x".repeat(n)) },
  { weight: 1, arbitrary: fc.string({ unit: "binary", maxLength: 64 }) },
  { weight: 1, arbitrary: fc.constantFrom("\u0000", "req-\u0000") },
);

const garbageString = fc.oneof(
  { weight: 6, arbitrary: fc.string({ maxLength: 30 }) },
  { weight: 1, arbitrary: fc.string({ unit: "binary", maxLength: 100 }) },
  { weight: 1, arbitrary: fc.integer({ min: 100, max: 3000 }).map((n) => "t".repeat(n)) },
  { weight: 1, arbitrary: fc.constant("trace-\u0000") },
);

const busPurposeArb: fc.Arbitrary<number> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.constantFrom(OtpPurpose.SIGNUP, OtpPurpose.LOGIN, OtpPurpose.PHONE_CHANGE),
  },
  { weight: 1, arbitrary: fc.constant(OtpPurpose.UNSPECIFIED) },
  { weight: 1, arbitrary: fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }) },
);

const otpRequestedBody: fc.Arbitrary<Uint8Array> = fc.record({
  requestId: busRequestIdArb,
  phoneNumber: busPhoneArb(),
  purpose: busPurposeArb,
  requestedAt: tsArb,
  traceId: garbageString,
  clientAddress: garbageString,
}).map((v) =>
  toBinary(
    OtpRequestedSchema,
    create(OtpRequestedSchema, {
      ...v,
      purpose: v.purpose as OtpPurpose,
      requestedAt: v.requestedAt,
    }),
  )
);

const otpIssuedBody: fc.Arbitrary<Uint8Array> = fc.record({
  requestId: busRequestIdArb,
  phoneNumber: busPhoneArb(),
  purpose: busPurposeArb,
  codeMac: macArb,
  times: timesArb,
  traceId: garbageString,
}).map(({ times, ...v }) =>
  toBinary(
    OtpIssuedSchema,
    create(OtpIssuedSchema, {
      ...v,
      purpose: v.purpose as OtpPurpose,
      issuedAt: times.issued,
      expiresAt: times.expires,
    }),
  )
);

function busBodyArb(key: string): fc.Arbitrary<Uint8Array> {
  const own = key === OTP_ROUTING_KEY ? otpRequestedBody : otpIssuedBody;
  const other = key === OTP_ROUTING_KEY ? otpIssuedBody : otpRequestedBody;
  return fc.oneof(
    { weight: 6, arbitrary: own },
    {
      weight: 2,
      arbitrary: fc.tuple(own, fc.array(mutationArb, { minLength: 1, maxLength: 3 }))
        .map(([b, m]) => mutate(b, m)),
    },
    { weight: 1, arbitrary: other },
    {
      weight: 1,
      arbitrary: fc.array(rawFieldArb, { maxLength: 8 }).map((fs) => concat(...fs.map(encodeRaw))),
    },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 300 }) },
    {
      weight: 1,
      arbitrary: fc.constantFrom(
        new Uint8Array(),
        enc.encode("{}"),
        enc.encode('{"request_id":"x","phone_number":"+14155550123","purpose":1}'),
        Uint8Array.from([0xff, 0xff, 0xff, 0x07, 0x01]),
      ),
    },
  );
}

const anyBusCaseArb: fc.Arbitrary<BusCase> = fc.constantFrom(OTP_ROUTING_KEY, AUTH_ROUTING_KEY)
  .chain((key) =>
    fc.record({
      key: fc.constant(key),
      type: fc.oneof(
        { weight: 8, arbitrary: fc.constant(expectedType(key)) },
        {
          weight: 1,
          arbitrary: fc.constantFrom(
            expectedType(key === OTP_ROUTING_KEY ? AUTH_ROUTING_KEY : OTP_ROUTING_KEY),
            expectedType(key).toLowerCase(),
            `${expectedType(key)} `,
            expectedType(key).replace("bus.v1.", ""),
            "bus.v1.SomethingElse",
            "",
          ),
        },
        { weight: 1, arbitrary: fc.constant(undefined) },
        { weight: 1, arbitrary: shortStr },
      ),
      contentType: fc.oneof(
        { weight: 8, arbitrary: fc.constant(PROTOBUF) },
        {
          weight: 1,
          arbitrary: fc.constantFrom(
            "application/json",
            "application/protobuf",
            "application/x-protobuf; charset=utf-8",
            "APPLICATION/X-PROTOBUF",
            "",
          ),
        },
        { weight: 1, arbitrary: fc.constant(undefined) },
        { weight: 1, arbitrary: shortStr },
      ),
      body: busBodyArb(key),
      messageId: fc.oneof(
        { weight: 6, arbitrary: fc.uuid() },
        { weight: 1, arbitrary: fc.constant(undefined) },
        { weight: 1, arbitrary: shortStr },
      ),
      correlationId: fc.option(shortStr, { nil: undefined }),
      persistent: fc.boolean(),
    })
  );

type Init = Record<string, unknown>;

/** A valid message of the key's schema with one field replaced by garbage. */
function nearValidBody(key: string): fc.Arbitrary<Uint8Array> {
  const now = nowSeconds();
  if (key === OTP_ROUTING_KEY) {
    const valid = fc.record({
      requestId: fc.uuid(),
      phoneNumber: validPhone,
      purpose: fc.constantFrom(OtpPurpose.SIGNUP, OtpPurpose.LOGIN),
      requestedAt: fc.constant({ seconds: now, nanos: 0 }),
      traceId: fc.string({ maxLength: 20 }),
      clientAddress: fc.ipV4(),
    });
    const garbage: fc.Arbitrary<Init> = fc.oneof(
      busRequestIdArb.map((requestId) => ({ requestId })),
      busPhoneArb().map((phoneNumber) => ({ phoneNumber })),
      busPurposeArb.map((purpose) => ({ purpose })),
      tsArb.map((requestedAt) => ({ requestedAt })),
      garbageString.map((traceId) => ({ traceId })),
      garbageString.map((clientAddress) => ({ clientAddress })),
    );
    return fc.tuple(valid, garbage).map(([v, g]) =>
      toBinary(OtpRequestedSchema, create(OtpRequestedSchema, { ...v, ...g } as Init))
    );
  }
  const valid = fc.record({
    requestId: fc.uuid(),
    phoneNumber: validPhone,
    purpose: fc.constantFrom(OtpPurpose.SIGNUP, OtpPurpose.LOGIN),
    codeMac: fc.uint8Array({ minLength: 32, maxLength: 32 }),
    issuedAt: fc.constant({ seconds: now, nanos: 0 }),
    expiresAt: fc.constant({ seconds: now + 300n, nanos: 0 }),
    traceId: fc.string({ maxLength: 20 }),
  });
  const garbage: fc.Arbitrary<Init> = fc.oneof(
    busRequestIdArb.map((requestId) => ({ requestId })),
    busPhoneArb().map((phoneNumber) => ({ phoneNumber })),
    busPurposeArb.map((purpose) => ({ purpose })),
    macArb.map((codeMac) => ({ codeMac })),
    timesArb.map((t) => ({ issuedAt: t.issued, expiresAt: t.expires })),
    garbageString.map((traceId) => ({ traceId })),
  );
  return fc.tuple(valid, garbage).map(([v, g]) =>
    toBinary(OtpIssuedSchema, create(OtpIssuedSchema, { ...v, ...g } as Init))
  );
}

/** Right type and content type, valid protobuf, one garbage field. */
const nearValidCaseArb: fc.Arbitrary<BusCase> = fc.constantFrom(OTP_ROUTING_KEY, AUTH_ROUTING_KEY)
  .chain((key) =>
    fc.record({
      key: fc.constant(key),
      type: fc.constant(expectedType(key)),
      contentType: fc.constant(PROTOBUF),
      body: nearValidBody(key),
      messageId: fc.oneof({ weight: 4, arbitrary: fc.uuid() }, shortStr),
      correlationId: fc.option(shortStr, { nil: undefined }),
      persistent: fc.boolean(),
    })
  );

export const busCaseArb: fc.Arbitrary<BusCase> = fc.oneof(
  { weight: 3, arbitrary: anyBusCaseArb },
  { weight: 2, arbitrary: nearValidCaseArb },
);

/** Why a message is certainly unprocessable (proto/bus/v1), or undefined. */
export function certainlyInvalid(m: BusCase): string | undefined {
  if (m.type !== expectedType(m.key)) return "wrong type";
  if (m.contentType !== PROTOBUF) return "wrong content type";
  const schema = schemaFor(m.key);
  let msg;
  try {
    msg = fromBinary(schema, m.body);
  } catch {
    return "undecodable body";
  }
  const known = [OtpPurpose.SIGNUP, OtpPurpose.LOGIN, OtpPurpose.PHONE_CHANGE];
  if (!known.includes(msg.purpose)) return "unspecified or unknown purpose";
  if (msg.requestId.length === 0) return "empty request_id";
  if (msg.requestId.length >= 300) return "huge request_id";
  if (BAD_PHONES.includes(msg.phoneNumber)) return "invalid phone_number";
  if (msg.$typeName === "bus.v1.OtpIssued") {
    if (!/^\+[1-9]\d{1,14}$/.test(msg.phoneNumber)) return "phone_number not E.164";
    if (msg.codeMac.byteLength !== 32) return "code_mac is not an HMAC-SHA256";
    if (!msg.issuedAt || !msg.expiresAt) return "no issued_at or expires_at";
    const sane = (t: Ts) =>
      t.nanos >= 0 && t.nanos < 1e9 && t.seconds > -1_000_000_000_000n &&
      t.seconds < 1_000_000_000_000n;
    const ns = (t: Ts) => t.seconds * 1_000_000_000n + BigInt(t.nanos);
    if (sane(msg.issuedAt) && sane(msg.expiresAt) && ns(msg.expiresAt) <= ns(msg.issuedAt)) {
      return "expires_at not after issued_at";
    }
  }
  return undefined;
}
