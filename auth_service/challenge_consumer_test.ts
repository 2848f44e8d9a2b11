// The auth_service_queue consumer, its effect checked through the Connect router
// in-process, on the in-memory store.
import assert from "node:assert/strict";
import { Code } from "@connectrpc/connect";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { IncomingMessage } from "../shared/bus.ts";
import { HmacKey, otpMac } from "../shared/crypto.ts";
import { encodeOtpIssued, OtpIssuedSchema, OtpPurpose } from "../shared/messages.ts";
import { incoming, PHONE, refused, setup } from "./domain_fixture.ts";

Deno.test("the challenge consumer stores a code once; a redelivery or an older code changes nothing", async () => {
  const { client, issue } = await setup();
  await client.signupWithPhoneNumber({ phoneNumber: PHONE });
  assert.equal(await issue(PHONE, "signup", "111111", { messageId: "m1" }), "ack");
  // The same message again (duplicate) and an older one (superseded) are acknowledged...
  assert.equal(await issue(PHONE, "signup", "222222", { messageId: "m1" }), "ack");
  assert.equal(await issue(PHONE, "signup", "333333", { messageId: "m2", ageSeconds: 10 }), "ack");
  // ...and the stored code is still the first one.
  for (const otp of ["222222", "333333"]) {
    await refused(
      client.verifyPhoneNumber({ phoneNumber: PHONE, otp }),
      Code.Unauthenticated,
      "CODE_INVALID",
    );
  }
  await client.verifyPhoneNumber({ phoneNumber: PHONE, otp: "111111" });
});

Deno.test("a newer code replaces the live one", async () => {
  const { client, issue } = await setup();
  await client.signupWithPhoneNumber({ phoneNumber: PHONE });
  await issue(PHONE, "signup", "111111");
  await issue(PHONE, "signup", "222222", { ageSeconds: -1 });
  await refused(
    client.verifyPhoneNumber({ phoneNumber: PHONE, otp: "111111" }),
    Code.Unauthenticated,
    "CODE_INVALID",
  );
  await client.verifyPhoneNumber({ phoneNumber: PHONE, otp: "222222" });
});

Deno.test("a claimed validity longer than ours is cut to ours", async () => {
  const { client, issue, elapse } = await setup();
  await client.signupWithPhoneNumber({ phoneNumber: PHONE });
  await issue(PHONE, "signup", "111111", { ttlSeconds: 3600 });
  elapse(301);
  await refused(
    client.verifyPhoneNumber({ phoneNumber: PHONE, otp: "111111" }),
    Code.Unauthenticated,
    "CODE_INVALID",
  );
});

Deno.test("messages that can never be processed are dead-lettered and store nothing", async () => {
  const { issue, useCases } = await setup();
  const hmac = HmacKey.import("k".repeat(32));
  const good = {
    requestId: crypto.randomUUID(),
    phoneNumber: PHONE,
    purpose: OtpPurpose.SIGNUP,
    codeMac: otpMac(hmac, {
      challengeId: "x",
      phone: PHONE,
      purpose: "signup",
      expiresAt: new Date(),
      code: "123456",
    }),
    issuedAt: timestampFromDate(new Date()),
    expiresAt: timestampFromDate(new Date(Date.now() + 60_000)),
    traceId: "",
  };
  const bad: [string, IncomingMessage][] = [
    ["wrong type", { ...incoming(encodeOtpIssued(create(OtpIssuedSchema, good))), type: "x.Y" }],
    ["not protobuf", {
      ...incoming(encodeOtpIssued(create(OtpIssuedSchema, good))),
      body: new Uint8Array([255, 255]),
    }],
    [
      "short mac",
      incoming(encodeOtpIssued(create(OtpIssuedSchema, { ...good, codeMac: new Uint8Array(5) }))),
    ],
    [
      "not E.164",
      incoming(encodeOtpIssued(create(OtpIssuedSchema, { ...good, phoneNumber: "4155550123" }))),
    ],
    [
      "no purpose",
      incoming(
        encodeOtpIssued(create(OtpIssuedSchema, { ...good, purpose: OtpPurpose.UNSPECIFIED })),
      ),
    ],
    [
      "no expiry",
      incoming(encodeOtpIssued(create(OtpIssuedSchema, { ...good, expiresAt: undefined }))),
    ],
    [
      "expires before issued",
      incoming(encodeOtpIssued(create(OtpIssuedSchema, { ...good, expiresAt: good.issuedAt }))),
    ],
  ];
  for (const [name, m] of bad) {
    assert.equal(await useCases.challenges.handle(m), "dead-letter", name);
  }
  // Nothing was recorded as handled: the first good message with one of those ids is stored.
  assert.equal(await issue(PHONE, "signup", "123456", { messageId: good.requestId }), "ack");
});
