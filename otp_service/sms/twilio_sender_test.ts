import assert from "node:assert/strict";
import { startFakeTwilio } from "../../testing/fake_twilio.ts";
import type { FakeTwilio } from "../../testing/fake_twilio.ts";
import { withRetries } from "./retry.ts";
import { SmsError, type SmsMessage } from "./sender.ts";
import { TwilioSmsSender, type TwilioSmsSenderOptions } from "./twilio_sender.ts";

const accountSid = "AC" + "1".repeat(32);
const authToken = "f00dfeedf00dfeedf00dfeedf00dfeed";
const from = "+15005550006";
const message: SmsMessage = {
  to: "+14155550123",
  body: "Your verification code is 123456. It expires in 5 minutes.",
};

async function withFake(
  test: (fake: FakeTwilio, options: TwilioSmsSenderOptions) => Promise<void>,
): Promise<void> {
  const fake = startFakeTwilio({ accountSid, authToken });
  try {
    await test(fake, { accountSid, authToken, from, baseUrl: fake.url, timeoutMs: 2000 });
  } finally {
    await fake.close();
  }
}

async function smsError(promise: Promise<unknown>): Promise<SmsError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof SmsError, `expected SmsError, got ${err}`);
    return err;
  }
  assert.fail("expected the send to fail");
}

function assertNoSecrets(err: SmsError): void {
  for (const secret of [authToken, message.body, "123456"]) {
    assert.ok(!err.message.includes(secret), `error message leaks a secret: ${err.message}`);
  }
}

Deno.test("twilio sender posts To, From and Body with Basic auth and returns the message SID", async () => {
  await withFake(async (fake, options) => {
    const receipt = await new TwilioSmsSender(options).send(message);

    assert.match(receipt.providerId, /^SM[0-9a-f]{32}$/);
    assert.equal(fake.requests.length, 1);
    const seen = fake.requests[0]!;
    assert.equal(seen.path, `/2010-04-01/Accounts/${accountSid}/Messages.json`);
    assert.deepEqual(
      [seen.authOk, seen.to, seen.from, seen.messagingServiceSid, seen.body],
      [true, message.to, from, undefined, message.body],
    );
  });
});

Deno.test("twilio sender can send through a Messaging Service instead of a From number", async () => {
  await withFake(async (fake, options) => {
    const messagingServiceSid = "MG" + "2".repeat(32);
    const sender = new TwilioSmsSender({ ...options, from: undefined, messagingServiceSid });
    await sender.send(message);

    const seen = fake.requests[0]!;
    assert.equal(seen.messagingServiceSid, messagingServiceSid);
    assert.equal(seen.from, undefined);
  });
});

Deno.test("twilio sender requires exactly one of from and messagingServiceSid", () => {
  const base = { accountSid, authToken };
  assert.throws(() => new TwilioSmsSender(base), /exactly one/);
  assert.throws(
    () => new TwilioSmsSender({ ...base, from, messagingServiceSid: "MG" + "2".repeat(32) }),
    /exactly one/,
  );
});

Deno.test("wrong credentials are a permanent SmsError (401, code 20003)", async () => {
  await withFake(async (fake, options) => {
    const sender = new TwilioSmsSender({ ...options, authToken: "wrong-token" });
    const err = await smsError(sender.send(message));

    assert.deepEqual([err.permanent, err.status, err.providerCode], [true, 401, 20003]);
    assert.equal(fake.requests[0]?.authOk, false);
    assertNoSecrets(err);
  });
});

Deno.test("an invalid 'To' (400, 21211) fails permanently after exactly one request", async () => {
  await withFake(async (fake, options) => {
    fake.script([{
      status: 400,
      code: 21211,
      message: "The 'To' number is not a valid phone number.",
    }]);
    const sender = withRetries(new TwilioSmsSender(options), { baseDelayMs: 1 });
    const err = await smsError(sender.send(message));

    assert.deepEqual([err.permanent, err.status, err.providerCode], [true, 400, 21211]);
    assert.equal(fake.requests.length, 1);
  });
});

Deno.test("500 then 429 then success delivers exactly one SMS after three requests", async () => {
  await withFake(async (fake, options) => {
    fake.script([{ status: 500 }, { status: 429 }, "ok"]);
    const sender = withRetries(new TwilioSmsSender(options), { baseDelayMs: 1 });
    const receipt = await sender.send(message);

    assert.match(receipt.providerId, /^SM/);
    assert.deepEqual(fake.requests.map((r) => r.replyStatus), [500, 429, 201]);
  });
});

Deno.test("5xx and 429 replies are transient SmsErrors", async () => {
  await withFake(async (fake, options) => {
    fake.script([{ status: 503 }, { status: 429 }]);
    const sender = new TwilioSmsSender(options);
    for (const status of [503, 429]) {
      const err = await smsError(sender.send(message));
      assert.deepEqual([err.permanent, err.status], [false, status]);
    }
  });
});

Deno.test("a reply slower than timeoutMs is a transient SmsError", async () => {
  await withFake(async (fake, options) => {
    fake.script([{ delayMs: 5000 }]);
    const sender = new TwilioSmsSender({ ...options, timeoutMs: 100 });
    const started = Date.now();
    const err = await smsError(sender.send(message));

    assert.equal(err.permanent, false);
    assert.match(err.message, /timed out/);
    assert.ok(Date.now() - started < 2000, "the timeout was not honoured");
  });
});

Deno.test("an aborted signal is a transient SmsError", async () => {
  await withFake(async (fake, options) => {
    fake.script([{ delayMs: 5000 }]);
    const controller = new AbortController();
    const sending = new TwilioSmsSender(options).send(message, controller.signal);
    await fake.waitForRequests(1, 2000);
    controller.abort();
    const err = await smsError(sending);
    assert.equal(err.permanent, false);
  });
});

Deno.test("a refused connection is a transient SmsError", async () => {
  const fake = startFakeTwilio({ accountSid, authToken });
  const closedUrl = fake.url;
  await fake.close();
  const sender = new TwilioSmsSender({ accountSid, authToken, from, baseUrl: closedUrl });
  const err = await smsError(sender.send(message));
  assert.equal(err.permanent, false);
  assertNoSecrets(err);
});

Deno.test("error messages never contain the auth token or the body, even if Twilio echoes them", async () => {
  await withFake(async (fake, options) => {
    const echo = `Rejected ${message.body} for ${message.to} using ${authToken}`;
    fake.script([{ status: 400, code: 21610, message: echo }, { status: 500 }, { delayMs: 5000 }]);
    const sender = new TwilioSmsSender({ ...options, timeoutMs: 100 });
    const errors = [
      await smsError(sender.send(message)),
      await smsError(sender.send(message)),
      await smsError(sender.send(message)),
    ];
    errors.forEach(assertNoSecrets);
    assert.ok(!errors[0]!.message.includes(message.to), "the destination should be masked");
  });
});

Deno.test("a request that times out after an earlier send reaches Twilio once, not again", async () => {
  await withFake(async (fake, options) => {
    const sender = new TwilioSmsSender({ ...options, timeoutMs: 300 });
    await sender.send(message); // leaves a connection a keep-alive client would reuse
    fake.script([{ delayMs: 900 }]);
    const err = await smsError(sender.send(message));
    assert.equal(err.permanent, false);
    // Anything the HTTP layer sent again would have arrived by the time the slow reply is due.
    await new Promise((r) => setTimeout(r, 900));
    assert.equal(fake.requests.length, 2);
  });
});
