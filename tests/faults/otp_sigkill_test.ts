// Fault 2: otp-service is killed with SIGKILL while it holds unacknowledged messages
// (each stuck in a slow Twilio call). After a restart the broker redelivers them, and
// every request is handled exactly once as far as the databases can tell: one request
// row per request id, all sent, one inbox entry and one live challenge per number, and
// the code verifies. The SMS that were in flight at the kill are the one documented
// duplicate window (sent, but the crash came before the commit); the redelivery resends
// the same code, so whichever copy arrives works.
import assert from "node:assert/strict";
import { startFakeTwilio, twilioEnv } from "../../testing/fake_twilio.ts";
import type { FakeTwilio } from "../../testing/fake_twilio.ts";
import { clientHeaders, mapLimit, rpc, SIGNUP, VERIFY } from "../../testing/rpc.ts";
import { codeIn } from "../../testing/sms_codes.ts";
import { onFreshStack } from "../../testing/faults.ts";
import { queuesSettled } from "../../testing/broker.ts";
import { delay, pollUntil } from "../../shared/async.ts";
import { randomPhone } from "../../testing/stack.ts";
import type { Stack } from "../../testing/stack.ts";
import type { Service } from "../../testing/processes.ts";

const accountSid = `AC${"7b".repeat(16)}`;
const authToken = "fault-test-auth-token-0123456789";
const USERS = 24;
/** Fewer than otp-service's prefetch, so it certainly holds at least this many. */
const AT_LEAST_HELD = 8;
/** How long the fake Twilio sits on each of the first sends. */
const TWILIO_STALL_MS = 4_000;

Deno.test({
  name:
    "otp-service killed with SIGKILL while holding messages: after restart every request is handled exactly once as far as the database can tell",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const fake = startFakeTwilio({ accountSid, authToken });
    try {
      await onFreshStack((stack, services) => scenario(stack, fake, services), {
        otpEnv: twilioEnv(fake.url, accountSid, authToken),
      });
    } finally {
      await fake.close();
    }
  },
});

async function scenario(stack: Stack, fake: FakeTwilio, services: Service[]) {
  // Twilio stalls on every first send: otp-service sits on each message it was given.
  fake.script(Array.from({ length: USERS }, () => ({ delayMs: TWILIO_STALL_MS })));
  const phones = Array.from({ length: USERS }, randomPhone);
  const headers = new Map(phones.map((p) => [p, clientHeaders()]));
  const signups = await mapLimit(
    phones,
    12,
    (phone) => rpc(stack.authUrl, SIGNUP, { phone_number: phone }, { headers: headers.get(phone) }),
  );
  assert.deepEqual(signups.filter((r) => r.code !== "ok"), []);

  await fake.waitForRequests(AT_LEAST_HELD, 15_000);
  await delay(300); // let the prefetch window fill
  const killed = await stack.otp.kill("SIGKILL");
  assert.equal(killed.signal, "SIGKILL");

  // Every message whose SMS was under way is begun but not committed, so not acknowledged.
  const inFlight = new Set(fake.requests.map((r) => r.to!));
  assert.ok(inFlight.size >= AT_LEAST_HELD, `only ${inFlight.size} sends were under way`);
  const [pending] = await stack.sql<{ n: number }[]>`
    select count(*)::int as n from otp.requests where status = 'pending'`;
  assert.ok(pending!.n >= inFlight.size, "the killed process held its messages mid-work");
  const [sent] = await stack.sql<{ n: number }[]>`
    select count(*)::int as n from otp.requests where status = 'sent'`;
  assert.equal(sent!.n, 0, "nothing was committed before the kill");

  services.push(await stack.startOtp());

  // A challenge is published before its SMS is confirmed (so a code that arrives works),
  // so wait for every challenge and for every request to be recorded as sent.
  await pollUntil(async () => {
    const [r] = await stack.sql<{ n: number }[]>`
      select count(*)::int as n from auth.challenges where consumed_at is null`;
    const [s] = await stack.sql<{ n: number }[]>`
      select count(*)::int as n from otp.requests where status = 'sent'`;
    return r!.n === USERS && s!.n === USERS;
  }, { timeoutMs: 45_000, what: "every challenge and every send", intervalMs: 250 });

  // Exactly once, as far as the databases can tell.
  const requests = await stack.sql<{ phone_number: string; status: string }[]>`
    select phone_number, status from otp.requests`;
  assert.equal(requests.length, USERS, "one request row per request");
  assert.ok(requests.every((r) => r.status === "sent"), "all sent");
  assert.deepEqual(requests.map((r) => r.phone_number).sort(), [...phones].sort());
  const [inbox] = await stack.sql<{ n: number }[]>`select count(*)::int as n from auth.inbox`;
  assert.equal(inbox!.n, USERS, "one handled OtpIssued per request");
  const [attempts] = await stack.sql<{ n: number }[]>`
    select count(*)::int as n from auth.challenges where failed_attempts > 0`;
  assert.equal(attempts!.n, 0);

  // SMS: one per number, except a second one for the sends cut off by the kill.
  for (const phone of phones) {
    const sent = fake.requests.filter((r) => r.to === phone);
    assert.equal(sent.length, inFlight.has(phone) ? 2 : 1, `SMS count for ${phone}`);
  }
  await mapLimit(phones, 8, async (phone) => {
    const sent = fake.requests.filter((r) => r.to === phone);
    // The send the crash interrupted carried the same code as the redelivery's, so
    // whichever SMS arrives, its code is the live one.
    assert.ok(sent.every((r) => codeIn(r.body) === codeIn(sent[0]!.body)), `one code for ${phone}`);
    const ok = await rpc(stack.authUrl, VERIFY, {
      phone_number: phone,
      otp: codeIn(sent[0]!.body),
    }, { headers: headers.get(phone) });
    assert.equal(ok.code, "ok", `${phone}: ${JSON.stringify(ok.json)}`);
  });

  await queuesSettled(stack.vhost);
}
