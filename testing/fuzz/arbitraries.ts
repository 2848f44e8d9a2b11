// Generators of the requests a stranger can send an RPC (tests/fuzz_rpc_test.ts):
// field values (phones, codes, request ids, purposes), JSON bodies (well-formed,
// near-miss keys, junk values, truncations), binary bodies (real, mutated, hand-made
// protobuf, random bytes) and gRPC-Web framing; rpcCaseArb puts them together with the
// headers of headers.ts over Connect JSON, Connect binary and gRPC-Web.
// validPhone and BAD_PHONES are shared with the bus generators (bus.ts).
import fc from "fast-check";
import type { DescField, JsonValue } from "@bufbuild/protobuf";
import { concat } from "./bytes.ts";
import { encodedArb, encodeRaw, mutate, mutationArb, rawFieldArb } from "./protobuf.ts";
import { authorizationArb, forwardedForArb, headerString } from "./headers.ts";
import type { Fixture } from "./services.ts";
import type { Target } from "./targets.ts";
import type { Framing, RpcCase } from "./wire.ts";

// --- field values --------------------------------------------------------------------

export const validPhone = fc.integer({ min: 2_000_000, max: 8_999_999 }).map((n) => `+1415${n}`);
/** Numbers that are invalid however they are read (see tests/rejections_test.ts). */
export const BAD_PHONES = [
  "",
  "12345",
  "+1",
  "+",
  "not a phone",
  "+1415555012345678901234567890123",
  "+999 123 456",
  "+0123456789",
];

export function phoneArb(fx: Fixture): fc.Arbitrary<string> {
  return fc.oneof(
    { weight: 4, arbitrary: validPhone },
    { weight: 2, arbitrary: fc.constant(fx.phone) },
    {
      weight: 1,
      arbitrary: validPhone.map((p) =>
        `${p.slice(0, 2)} (${p.slice(2, 5)}) ${p.slice(5, 8)}-${p.slice(8)}`
      ),
    },
    { weight: 1, arbitrary: fc.constant(` ${fx.phone}\t`) },
    { weight: 2, arbitrary: fc.constantFrom(...BAD_PHONES) },
    { weight: 1, arbitrary: fc.stringMatching(/^\+?[0-9 ()\-.]{0,40}$/) },
    { weight: 1, arbitrary: fc.string({ unit: "grapheme", maxLength: 40 }) },
    { weight: 1, arbitrary: fc.string({ unit: "binary", maxLength: 40 }) },
    {
      weight: 1,
      arbitrary: fc.constantFrom(
        "+١٤١٥٥٥٥٠١٢٣",
        "＋１４１５５５５０１２３",
        `${fx.phone}\u0000`,
        `\u0000${fx.phone}`,
        "+1415555\u200b0123",
        "tel:+14155550123",
        "+1415555O123",
        "+14155550123;ext=1",
        "+1".padEnd(33, "5"),
        `${fx.phone}\ud800`,
      ),
    },
  );
}

const codeArb: fc.Arbitrary<string> = fc.oneof(
  { weight: 3, arbitrary: fc.stringMatching(/^\d{6}$/) },
  { weight: 1, arbitrary: fc.stringMatching(/^\d{0,12}$/) },
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      "",
      "abcdef",
      "12 456",
      "１２３４５６",
      "123456\n",
      "٠١٢٣٤٥",
      "12345\u0000",
    ),
  },
  { weight: 1, arbitrary: fc.string({ unit: "binary", maxLength: 12 }) },
);

const requestIdArb: fc.Arbitrary<string> = fc.oneof(
  { weight: 3, arbitrary: fc.uuid() },
  { weight: 1, arbitrary: fc.constant("") },
  { weight: 1, arbitrary: fc.string({ maxLength: 64 }) },
  { weight: 1, arbitrary: fc.integer({ min: 65, max: 2000 }).map((n) => "r".repeat(n)) },
  { weight: 2, arbitrary: fc.constantFrom("\u0000", "req-\u0000-x", "\ud800", "ＩＤ") },
  { weight: 1, arbitrary: fc.string({ unit: "binary", maxLength: 70 }) },
);

const purposeNumberArb: fc.Arbitrary<number> = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(0, 1, 2, 3) },
  { weight: 1, arbitrary: fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }) },
);

const sessionIdArb: fc.Arbitrary<string> = fc.oneof(
  { weight: 3, arbitrary: fc.uuid() },
  { weight: 1, arbitrary: fc.uuid().map((u) => u.toUpperCase()) },
  { weight: 1, arbitrary: fc.string({ maxLength: 40 }) },
);

/** A value of the right type for a request field, as a protobuf-es init value. */
export function typedValue(f: DescField, fx: Fixture): fc.Arbitrary<unknown> {
  switch (f.name) {
    case "phone_number":
    case "new_phone_number":
      return phoneArb(fx);
    case "session_id":
      return sessionIdArb;
    case "otp":
      return codeArb;
    case "request_id":
      return requestIdArb;
    case "purpose":
      return purposeNumberArb;
    case "all":
      return fc.boolean();
  }
  return fc.string();
}

/** A JSON value for a request field: the right type or one a lenient parser might take. */
function jsonFieldValue(f: DescField, fx: Fixture): fc.Arbitrary<JsonValue> {
  const typed = typedValue(f, fx) as fc.Arbitrary<JsonValue>;
  if (f.name === "purpose") {
    return fc.oneof(
      typed,
      fc.constantFrom(
        "OTP_PURPOSE_SIGNUP",
        "OTP_PURPOSE_LOGIN",
        "OTP_PURPOSE_UNSPECIFIED",
        "otp_purpose_login",
        "LOGIN",
        "1",
        1.5,
        2 ** 40,
      ),
    );
  }
  if (f.name === "all") return fc.oneof(typed, fc.constantFrom("true", 1, 0, "false", "yes"));
  return typed;
}

// --- JSON bodies ---------------------------------------------------------------------

/** Any JSON value, including huge strings, deep nesting and unicode. */
export const junkJson: fc.Arbitrary<JsonValue> = fc.oneof(
  { weight: 3, arbitrary: fc.jsonValue({ maxDepth: 3 }) as fc.Arbitrary<JsonValue> },
  { weight: 1, arbitrary: fc.string({ unit: "binary", maxLength: 64 }) },
  { weight: 1, arbitrary: fc.string({ unit: "grapheme", maxLength: 64 }) },
  {
    weight: 1,
    arbitrary: fc.tuple(
      fc.string({ unit: "grapheme", minLength: 1, maxLength: 3 }),
      fc.integer({ min: 500, max: 12_000 }),
    ).map(([s, n]) => s.repeat(Math.ceil(n / s.length)).slice(0, n)),
  },
  {
    weight: 1,
    arbitrary: fc.constantFrom<JsonValue>(
      null,
      0,
      -0,
      1e308,
      -1e-308,
      Number.MAX_SAFE_INTEGER + 2,
      true,
      [],
      {},
      [[[[[[[[[[[]]]]]]]]]]],
      { "": "" },
      "\u0000",
      "\ud83d",
      "\u202e",
    ),
  },
  {
    weight: 1,
    arbitrary: fc.integer({ min: 10, max: 200 }).map((d) =>
      JSON.parse("[".repeat(d) + "]".repeat(d)) as JsonValue
    ),
  },
);

/** A right, near-right or wrong key for a request object. */
function keyArb(t: Target): fc.Arbitrary<string> {
  const names = t.req.fields.flatMap((f) => [f.name, f.jsonName]);
  // A request with no fields (RefreshSession) has no right key, only wrong ones.
  return fc.oneof(
    { weight: 6, arbitrary: names.length > 0 ? fc.constantFrom(...names) : fc.constant("x") },
    {
      weight: 2,
      arbitrary: fc.constantFrom(
        "phone",
        "PhoneNumber",
        "PHONE_NUMBER",
        "phone_number ",
        "phone-number",
        "phoneNumber\u0000",
        "Otp",
        "code",
        "requestID",
        "all ",
        "__proto__",
        "constructor",
        "prototype",
        "toString",
        "@type",
        "",
      ),
    },
    { weight: 1, arbitrary: fc.string({ maxLength: 20 }) },
  );
}

/** JSON text of an object with chosen keys (duplicates and __proto__ included). */
export function objectText(pairs: [string, JsonValue][]): string {
  return `{${pairs.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`).join(",")}}`;
}

export function jsonBodyArb(t: Target, fx: Fixture): fc.Arbitrary<string> {
  // Well-formed requests, each field under its proto or JSON name.
  const wellFormed = fc.tuple(
    ...t.req.fields.map((f) =>
      fc.tuple(
        fc.constantFrom(f.name, f.jsonName),
        jsonFieldValue(f, fx),
        fc.oneof({ weight: 4, arbitrary: fc.constant(true) }, fc.constant(false)),
      )
    ),
  ).map((fields) =>
    objectText(fields.filter(([, , keep]) => keep).map(([k, v]) => [k, v] as [string, JsonValue]))
  );
  const anyValue = fc.oneof(
    ...t.req.fields.map((f) => jsonFieldValue(f, fx)),
    junkJson,
  );
  const junkObject = fc.array(fc.tuple(keyArb(t), anyValue), { maxLength: 6 }).map(objectText);
  const fieldNames = t.req.fields.map((f) => f.name);
  const nested = fc.tuple(
    fc.constantFrom(...(fieldNames.length > 0 ? fieldNames : ["x"])),
    junkJson,
  )
    .map(([k, v]) => objectText([[k, { [k]: v, nested: [v, { v }] }]]));
  return fc.oneof(
    { weight: 6, arbitrary: wellFormed },
    { weight: 4, arbitrary: junkObject },
    { weight: 1, arbitrary: nested },
    { weight: 1, arbitrary: junkJson.map((v) => JSON.stringify(v)) },
    {
      weight: 1,
      arbitrary: fc.tuple(wellFormed, fc.nat()).map(([s, n]) => s.slice(0, n % (s.length + 1))),
    },
    { weight: 1, arbitrary: fc.string({ unit: "grapheme", maxLength: 200 }) },
    {
      weight: 1,
      arbitrary: fc.constantFrom(
        "",
        " ",
        "null",
        "{}",
        "[]",
        '{"phone_number":',
        "\ufeff{}",
        "{'phone_number': '+14155550123'}",
        '{"phone_number": "+14155550123",}',
        "phone_number=+14155550123",
        "NaN",
        '{"a":1}{"b":2}',
      ),
    },
  );
}

// --- binary bodies -------------------------------------------------------------------

export function binaryBodyArb(t: Target, fx: Fixture): fc.Arbitrary<Uint8Array> {
  const real = encodedArb(t.req, (f) => typedValue(f, fx));
  return fc.oneof(
    { weight: 4, arbitrary: real },
    {
      weight: 4,
      arbitrary: fc.tuple(real, fc.array(mutationArb, { minLength: 1, maxLength: 4 }))
        .map(([b, m]) => mutate(b, m)),
    },
    {
      weight: 2,
      arbitrary: fc.array(rawFieldArb, { maxLength: 8 }).map((fs) => concat(...fs.map(encodeRaw))),
    },
    { weight: 2, arbitrary: fc.uint8Array({ maxLength: 600 }) },
    {
      weight: 1,
      arbitrary: fc.constantFrom(
        new Uint8Array(),
        Uint8Array.from([0xff, 0xff, 0xff, 0xff]),
        Uint8Array.from([0x0a, 0x10, 0x41]),
        Uint8Array.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]),
        Uint8Array.from([0x0b]),
        Uint8Array.from([0x0c]),
        Uint8Array.from([0x0a, 0x02, 0xc3, 0x28]),
        Uint8Array.from([0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
      ),
    },
  );
}

// --- gRPC-Web framing ----------------------------------------------------------------

export const framingArb: fc.Arbitrary<Framing> = fc.oneof(
  { weight: 8, arbitrary: fc.constant({ kind: "ok" } as const) },
  {
    weight: 1,
    arbitrary: fc.integer({ min: 1, max: 255 }).map((flags) => ({ kind: "flags", flags }) as const),
  },
  {
    weight: 1,
    arbitrary: fc.oneof(fc.integer({ min: -5, max: 5 }), fc.integer({ min: 1, max: 2 ** 31 }))
      .map((delta) => ({ kind: "length", delta }) as const),
  },
  { weight: 1, arbitrary: fc.constant({ kind: "bare" } as const) },
  { weight: 1, arbitrary: fc.constant({ kind: "twice" } as const) },
  {
    weight: 1,
    arbitrary: fc.uint8Array({ minLength: 1, maxLength: 9 })
      .map((bytes) => ({ kind: "trailing", bytes }) as const),
  },
  { weight: 1, arbitrary: fc.constant({ kind: "with-trailer" } as const) },
  { weight: 1, arbitrary: fc.constant({ kind: "empty" } as const) },
);

// --- whole requests ------------------------------------------------------------------

export interface CaseOptions {
  /** Fixed Authorization instead of the random one. */
  authorization?: fc.Arbitrary<string | undefined>;
  /** Fuzz X-Client-Address (GenerateOtp's trusted header). */
  clientAddress?: boolean;
}

/** One request to `t`; `internal` is the stack's internal API token. */
export function rpcCaseArb(
  t: Target,
  fx: Fixture,
  internal: string,
  o: CaseOptions = {},
): fc.Arbitrary<RpcCase> {
  const json = jsonBodyArb(t, fx);
  const bin = binaryBodyArb(t, fx);
  const common = {
    authorization: o.authorization ?? authorizationArb(fx, internal),
    forwardedFor: forwardedForArb,
    requestId: fc.option(headerString(100), { nil: undefined }),
    clientAddress: o.clientAddress
      ? fc.option(headerString(100), { nil: undefined })
      : fc.constant(undefined),
  };
  const connectJson = fc.record({
    encoding: fc.constant("json" as const),
    contentType: fc.constantFrom("application/json", "application/json; charset=utf-8"),
    body: fc.oneof({ weight: 8, arbitrary: json }, { weight: 1, arbitrary: bin }),
    ...common,
  });
  const connectProto = fc.record({
    encoding: fc.constant("proto" as const),
    contentType: fc.constant("application/proto"),
    body: fc.oneof({ weight: 8, arbitrary: bin }, { weight: 1, arbitrary: json }),
    ...common,
  });
  const grpcWebProto = fc.record({
    encoding: fc.constant("grpc-web+proto" as const),
    contentType: fc.constantFrom("application/grpc-web+proto", "application/grpc-web"),
    body: bin,
    framing: framingArb,
    ...common,
  });
  const grpcWebJson = fc.record({
    encoding: fc.constant("grpc-web+json" as const),
    contentType: fc.constant("application/grpc-web+json"),
    body: json,
    framing: framingArb,
    ...common,
  });
  return fc.oneof(
    { weight: 4, arbitrary: connectJson },
    { weight: 4, arbitrary: connectProto },
    { weight: 2, arbitrary: grpcWebProto },
    { weight: 1, arbitrary: grpcWebJson },
  );
}
