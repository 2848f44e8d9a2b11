import assert from "node:assert/strict";
import { createLogger } from "../../shared/log.ts";
import { withRetries } from "./retry.ts";
import { SmsError, type SmsMessage, type SmsReceipt, type SmsSender } from "./sender.ts";
import { delay } from "../../shared/async.ts";

const message: SmsMessage = { to: "+14155550123", body: "Your verification code is 123456." };

/** Fails with the given errors in order, then succeeds. */
function scripted(failures: unknown[]): SmsSender & { calls: number } {
  const sender = {
    name: "stub",
    calls: 0,
    send(): Promise<SmsReceipt> {
      const failure = failures[sender.calls++];
      return failure === undefined
        ? Promise.resolve({ providerId: `stub-${sender.calls}` })
        : Promise.reject(failure);
    },
  };
  return sender;
}

const transient = () => new SmsError("twilio: HTTP 503", false, 20503, 503);
const noSleep = () => Promise.resolve();

Deno.test("transient failures are retried until the send succeeds", async () => {
  const inner = scripted([transient(), transient()]);
  const receipt = await withRetries(inner, { sleep: noSleep }).send(message);
  assert.equal(receipt.providerId, "stub-3");
  assert.equal(inner.calls, 3);
});

Deno.test("a permanent failure is thrown at once without retrying", async () => {
  const permanent = new SmsError("twilio: HTTP 400, error 21211", true, 21211, 400);
  const inner = scripted([permanent]);
  await assert.rejects(
    withRetries(inner, { sleep: noSleep }).send(message),
    (e) => e === permanent,
  );
  assert.equal(inner.calls, 1);
});

Deno.test("an error that is not an SmsError is not retried", async () => {
  const inner = scripted([new TypeError("bug")]);
  await assert.rejects(withRetries(inner, { sleep: noSleep }).send(message), TypeError);
  assert.equal(inner.calls, 1);
});

Deno.test("after the last attempt the last error is rethrown", async () => {
  const errors = [transient(), transient(), transient()];
  const inner = scripted([...errors, transient()]);
  const sender = withRetries(inner, { attempts: 3, sleep: noSleep });
  await assert.rejects(sender.send(message), (e) => e === errors[2]);
  assert.equal(inner.calls, 3);
});

Deno.test("delays grow exponentially up to maxDelayMs with full jitter", async () => {
  const slept: number[] = [];
  const inner = scripted([transient(), transient(), transient(), transient()]);
  await withRetries(inner, {
    attempts: 5,
    baseDelayMs: 100,
    maxDelayMs: 300,
    random: () => 0.5,
    sleep: (ms) => (slept.push(ms), Promise.resolve()),
  }).send(message);
  assert.deepEqual(slept, [50, 100, 150, 150]);
});

Deno.test("retry logs mask the number and never contain the body", async () => {
  const lines: string[] = [];
  const logger = createLogger("test", "debug", {}, (l) => lines.push(l));
  await withRetries(scripted([transient()]), { sleep: noSleep, logger }).send(message);
  assert.equal(lines.length, 1);
  assert.ok(!lines[0]!.includes(message.body) && !lines[0]!.includes("123456"));
  assert.ok(!lines[0]!.includes(message.to));
});

Deno.test("an abort during the backoff stops retrying and rethrows the send's error", async () => {
  const controller = new AbortController();
  const first = transient();
  const inner = scripted([first, transient()]);
  const sender = withRetries(inner, { baseDelayMs: 60_000, random: () => 0.99 });
  const sending = sender.send(message, controller.signal);
  await delay(5); // let it reach the backoff
  controller.abort();
  await assert.rejects(sending, (e) => e === first);
  assert.equal(inner.calls, 1);
});

Deno.test("beforeAttempt runs before every try and can stop the sending", async () => {
  const inner = scripted([transient(), transient(), transient()]);
  const seen: number[] = [];
  const stop = new Error("no attempt left");
  await assert.rejects(
    withRetries(inner, {
      sleep: noSleep,
      beforeAttempt: (n) => {
        seen.push(n);
        return n === 3 ? Promise.reject(stop) : Promise.resolve();
      },
    }).send(message),
    (e) => e === stop,
  );
  assert.deepEqual(seen, [1, 2, 3]);
  assert.equal(inner.calls, 2, "the stopped try never reached the provider");
});
