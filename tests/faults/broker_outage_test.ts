// Fault 1: RabbitMQ stops (`rabbitmqctl stop_app`) and starts again in the middle of
// 100 concurrent signups. Signup never needs the broker (the outbox holds the request),
// both services reconnect, redeclare and resume on their own, and in the end every
// number has exactly one live challenge, received exactly one SMS, and its code verifies.
import assert from "node:assert/strict";
import { clientHeaders, mapLimit, rpc, SIGNUP, VERIFY } from "../../testing/rpc.ts";
import { onFreshStack } from "../../testing/faults.ts";
import { codeIn } from "../../testing/sms_codes.ts";
import { queuesSettled, startBroker, stopBroker } from "../../testing/broker.ts";
import { delay, pollUntil } from "../../shared/async.ts";
import { randomPhone } from "../../testing/stack.ts";
import type { Stack } from "../../testing/stack.ts";
import { parseConsoleSmsLine } from "../../otp_service/sms/console_sender.ts";

const USERS = 100;

Deno.test({
  name:
    "100 concurrent signups across a broker stop/start: all accepted, each number gets exactly one live challenge and one SMS, and every code verifies",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: () => onFreshStack(scenario),
});

async function scenario(stack: Stack) {
  const phones = Array.from({ length: USERS }, randomPhone);
  const headers = new Map(phones.map((p) => [p, clientHeaders()]));
  const wave = (list: string[]) =>
    Promise.all(list.map(async (phone, i) => {
      await delay(i * 10);
      return await rpc(stack.authUrl, SIGNUP, { phone_number: phone }, {
        headers: headers.get(phone),
        timeoutMs: 15_000,
      });
    }));
  // 30 signups race the broker's stop, 40 run while it is down, 30 race its start.
  const [before] = await Promise.all([wave(phones.slice(0, 30)), stopBroker()]);
  const during = await wave(phones.slice(30, 70));
  // While it is down, the accepted requests wait in the outbox.
  const [held] = await stack.sql<{ n: number }[]>`select count(*)::int as n from auth.outbox`;
  assert.ok(held!.n >= 40, `only ${held!.n} requests held in the outbox during the outage`);
  const [after] = await Promise.all([wave(phones.slice(70)), startBroker()]);
  const results = [...before, ...during, ...after];
  assert.deepEqual(results.filter((r) => r.code !== "ok"), [], "every signup is accepted");

  // Every request is issued once and every challenge arrives (bounded wait).
  await pollUntil(async () => {
    const [r] = await stack.sql<{ n: number }[]>`
          select count(*)::int as n from auth.challenges
           where consumed_at is null and expires_at > now()`;
    return r!.n === USERS;
  }, { timeoutMs: 60_000, what: "every challenge to arrive", intervalMs: 250 });

  const requests = await stack.sql<{ phone_number: string; status: string }[]>`
        select phone_number, status from otp.requests`;
  assert.equal(requests.length, USERS, "one otp request per signup, no more");
  assert.ok(requests.every((r) => r.status === "sent"));
  const challenges = await stack.sql<{ phone_number: string; n: number }[]>`
        select phone_number, count(*)::int as n from auth.challenges
         where consumed_at is null and expires_at > now() group by phone_number`;
  assert.deepEqual(challenges.map((c) => c.phone_number).sort(), [...phones].sort());
  assert.ok(challenges.every((c) => c.n === 1));

  // Exactly one SMS per number: redeliveries after the reconnect sent nothing twice.
  const sms = new Map<string, string[]>();
  for (const line of stack.otp.lines) {
    const m = parseConsoleSmsLine(line);
    if (m) sms.set(m.to, [...(sms.get(m.to) ?? []), m.body]);
  }
  for (const phone of phones) {
    assert.equal(sms.get(phone)?.length, 1, `SMS count for ${phone}`);
  }

  // And every code verifies.
  const verified = await mapLimit(phones, 20, (phone) => {
    const code = codeIn(sms.get(phone)![0]!);
    return rpc(stack.authUrl, VERIFY, { phone_number: phone, otp: code }, {
      headers: headers.get(phone),
    });
  });
  assert.deepEqual(verified.filter((r) => r.code !== "ok"), []);

  // Nothing left behind: outboxes drained, queues and dead-letter queues empty.
  await pollUntil(async () => {
    const [a] = await stack.sql<{ n: number }[]>`
          select (select count(*) from auth.outbox) + (select count(*) from otp.outbox) as n`;
    return Number(a!.n) === 0;
  }, { timeoutMs: 10_000, what: "the outboxes to drain" });
  // Both services consume again after the restart, and nothing is left in a queue.
  await queuesSettled(stack.vhost);
}
