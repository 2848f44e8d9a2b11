// Fault 6: Twilio misbehaves. A 500 and then a 429 are retried with backoff and the
// third try goes through: one SMS sent, one challenge, and that code verifies. A
// permanent error (invalid number) is not retried, the failure is recorded, the
// message is settled (not redelivered or dead-lettered), and the code that was in the
// refused SMS is never accepted.
import assert from "node:assert/strict";
import { startFakeTwilio, twilioEnv } from "../../testing/fake_twilio.ts";
import type { FakeTwilio } from "../../testing/fake_twilio.ts";
import { clientHeaders, rpc, SIGNUP, VERIFY } from "../../testing/rpc.ts";
import { codeIn } from "../../testing/sms_codes.ts";
import { onFreshStack } from "../../testing/faults.ts";
import { queueStats } from "../../testing/broker.ts";
import { delay, pollUntil } from "../../shared/async.ts";
import { randomPhone } from "../../testing/stack.ts";
import type { Stack } from "../../testing/stack.ts";

const accountSid = `AC${"5a".repeat(16)}`;
const authToken = "fault-test-auth-token-0123456789";

async function withTwilioStack(fn: (stack: Stack, fake: FakeTwilio) => Promise<void>) {
  const fake = startFakeTwilio({ accountSid, authToken });
  try {
    await onFreshStack((stack) => fn(stack, fake), {
      otpEnv: { ...twilioEnv(fake.url, accountSid, authToken), SMS_RETRY_ATTEMPTS: "4" },
    });
  } finally {
    await fake.close();
  }
}

const forPhone = (fake: FakeTwilio, phone: string) => fake.requests.filter((r) => r.to === phone);

Deno.test({
  name:
    "Twilio answering 500, then 429, then success: retried with backoff, exactly one SMS sent, one challenge, and its code verifies; a permanent error is not retried and its code is never accepted",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: () =>
    withTwilioStack(async (stack, fake) => {
      // Transient failures, then success.
      const phone = randomPhone();
      const headers = clientHeaders();
      fake.script([{ status: 500 }, { status: 429 }]);
      const signup = await rpc(stack.authUrl, SIGNUP, { phone_number: phone }, { headers });
      assert.equal(signup.code, "ok");
      // A 5xx may have sent the SMS, so the challenge can be stored before the retry
      // that Twilio finally accepts: wait for both.
      await pollUntil(async () => {
        const [c] = await stack.sql`select 1 from auth.challenges where phone_number = ${phone}`;
        const sent = forPhone(fake, phone).some((r) => r.replyStatus === 201);
        const [done] = await stack.sql`
          select 1 from otp.requests where phone_number = ${phone} and status = 'sent'`;
        return c !== undefined && sent && done !== undefined;
      }, { timeoutMs: 15_000, what: "the challenge and the accepted SMS" });
      const tries = forPhone(fake, phone);
      assert.deepEqual(tries.map((r) => r.replyStatus), [500, 429, 201]);
      assert.equal(tries.filter((r) => r.replyStatus === 201).length, 1, "one SMS sent");
      const [req] = await stack.sql<{ status: string; provider_id: string }[]>`
        select status, provider_id from otp.requests where phone_number = ${phone}`;
      assert.equal(req!.status, "sent");
      assert.match(req!.provider_id, /^SM[0-9a-f]{32}$/, "Twilio's message SID is recorded");
      const [n] = await stack.sql<{ n: number }[]>`
        select count(*)::int as n from auth.challenges where phone_number = ${phone}`;
      assert.equal(n!.n, 1, "one challenge");
      const ok = await rpc(stack.authUrl, VERIFY, {
        phone_number: phone,
        otp: codeIn(tries[2]!.body),
      }, { headers });
      assert.equal(ok.code, "ok", JSON.stringify(ok.json));

      // A permanent error.
      const bad = randomPhone();
      const badHeaders = clientHeaders();
      fake.script([{ status: 400, code: 21211, message: "The 'To' number is not valid." }]);
      const signup2 = await rpc(stack.authUrl, SIGNUP, { phone_number: bad }, {
        headers: badHeaders,
      });
      assert.equal(signup2.code, "ok");
      await pollUntil(async () => {
        const [r] = await stack.sql`select status from otp.requests where phone_number = ${bad}`;
        return r?.status === "failed";
      }, { timeoutMs: 15_000, what: "the permanent failure to be recorded" });
      const [failed] = await stack.sql<{ error: string }[]>`
        select error from otp.requests where phone_number = ${bad}`;
      assert.match(failed!.error, /400/, "the provider's answer is recorded");
      // Give a retry every chance to happen, then check none did.
      await delay(1_500);
      assert.equal(forPhone(fake, bad).length, 1, "a permanent error is not retried");
      const q = await queueStats(stack.vhost);
      assert.equal(q["otp_queue"]!.ready + q["otp_queue"]!.unacked, 0, "settled, not requeued");
      assert.equal(q["otp_queue.dlq"]!.ready, 0, "a recorded outcome is not a dead letter");
      const [none] = await stack.sql<{ n: number }[]>`
        select count(*)::int as n from auth.challenges where phone_number = ${bad}`;
      assert.equal(none!.n, 0, "no challenge exists for a code that was never delivered");
      const refused = await rpc(stack.authUrl, VERIFY, {
        phone_number: bad,
        otp: codeIn(forPhone(fake, bad)[0]!.body),
      }, { headers: badHeaders });
      assert.equal(refused.code, "unauthenticated", "the undelivered code is never accepted");
    }),
});
