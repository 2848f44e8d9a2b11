// What otp-service sends, and refuses to send, through real processes: the global SMS
// budget (exact under concurrency and across replicas, 0 sends nothing), numbers that
// must never get a code, one code per live challenge however often it is resent, and
// per-number limits keyed by number and client address.
import assert from "node:assert/strict";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { outcomeOf } from "../testing/rpc.ts";
import { AuthService } from "../shared/gen/auth/v1/auth_pb.ts";
import { OtpService } from "../shared/gen/otp/v1/otp_pb.ts";
import { parseConsoleSmsLine } from "../otp_service/sms/console_sender.ts";
import { delay, pollUntil } from "../shared/async.ts";
import { Service, taskArgs } from "../testing/processes.ts";
import { codeFor, codeIn } from "../testing/sms_codes.ts";
import { randomPhone, startStack } from "../testing/stack.ts";
import type { Stack } from "../testing/stack.ts";

const [off, budget3, shared, resend, velocity] = await Promise.all([
  startStack({ otpEnv: { SMS_HOURLY_BUDGET: "0" } }),
  startStack({ otpEnv: { SMS_HOURLY_BUDGET: "3" } }),
  startStack({ otpEnv: { SMS_HOURLY_BUDGET: "4" } }),
  startStack({
    authEnv: { OTP_SEND_COOLDOWN_SECONDS: "1" },
    otpEnv: {
      OTP_SEND_COOLDOWN_SECONDS: "1",
      OTP_SENDS_PER_HOUR: "2",
      NUMBER_SENDS_PER_HOUR: "4",
    },
  }),
  startStack({ otpEnv: { COUNTRY_HOURLY_LIMIT: "3", PREFIX_HOURLY_LIMIT: "2" } }),
]);
Deno.test.afterAll(async () => {
  await Promise.all([off.stop(), budget3.stop(), shared.stop(), resend.stop(), velocity.stop()]);
});

const authOf = (s: Stack) =>
  createClient(AuthService, createConnectTransport({ baseUrl: s.authUrl }));
const otpAt = (url: string) => createClient(OtpService, createConnectTransport({ baseUrl: url }));
const internal = (s: Stack, address = "198.51.100.7") => ({
  headers: {
    authorization: `Bearer ${s.secrets.INTERNAL_API_TOKEN}`,
    "x-client-address": address,
  },
});
const smsLines = (lines: string[], phone?: string) =>
  lines.filter((l) => {
    const m = parseConsoleSmsLine(l);
    return m !== null && (phone === undefined || m.to === phone);
  });

/** Waits until otp-service has finished every request for these numbers. */
async function settled(s: Stack, phones: string[]) {
  await pollUntil(async () => {
    const [r] = await s.sql`select count(*)::int as n from otp.requests
      where phone_number = any(${phones}::text[]) and status <> 'pending'`;
    const [a] = await s.sql`select count(*)::int as n from otp.audit_events
      where phone_number = any(${phones}::text[]) and event = 'code_refused'
        and request_id not in (select request_id from otp.requests)`;
    return r!.n + a!.n >= phones.length;
  }, { timeoutMs: 20_000, what: "every request to be handled" });
}

/**
 * Provider calls, as otp-service counted them and as its output shows them (which may
 * trail the database by a moment), are exactly `n`.
 */
async function sentExactly(s: Stack, printed: () => number, n: number) {
  const [a] = await s.sql`select coalesce(sum(attempts), 0)::int as n from otp.requests`;
  assert.equal(a!.n, n, "provider calls counted");
  await pollUntil(() => printed() >= n, { what: `${n} SMS in the output` });
  assert.equal(printed(), n);
}

Deno.test("with SMS_HOURLY_BUDGET=0 nothing is sent, by the bus or the RPC", async () => {
  const phones = [randomPhone(), randomPhone(), randomPhone()];
  for (const phoneNumber of phones) await authOf(off).signupWithPhoneNumber({ phoneNumber });
  await settled(off, phones);
  const direct = randomPhone();
  assert.equal(
    await outcomeOf(otpAt(off.otpUrl).generateOtp({ phoneNumber: direct }, internal(off))),
    "ResourceExhausted",
  );
  assert.deepEqual(smsLines(off.otp.lines), []);
  const [r] = await off.sql`select count(*)::int as n from otp.requests
    where status = 'refused' and phone_number = any(${[...phones, direct]}::text[])`;
  assert.equal(r!.n, 4);
});

Deno.test("with SMS_HOURLY_BUDGET=3, 20 concurrent signups send exactly 3 SMS", async () => {
  const phones = Array.from({ length: 20 }, randomPhone);
  await Promise.all(
    phones.map((phoneNumber) => authOf(budget3).signupWithPhoneNumber({ phoneNumber })),
  );
  await settled(budget3, phones);
  await sentExactly(budget3, () => smsLines(budget3.otp.lines).length, 3);
  const [r] = await budget3.sql`select status, count(*)::int as n from otp.requests
    group by status order by status`.then((
    rows,
  ) => [Object.fromEntries(rows.map((x) => [x.status, x.n]))]);
  assert.deepEqual(r, { refused: 17, sent: 3 });
});

Deno.test("two otp-service replicas share one budget of 4 across the bus and the RPC", async () => {
  const otp2 = new Service("otp-2", await taskArgs("otp"), { ...shared.env.otp, OTP_PORT: "0" });
  try {
    const url2 = `http://127.0.0.1:${await otp2.waitListening()}`;
    const viaBus = Array.from({ length: 12 }, randomPhone);
    const viaRpc = Array.from({ length: 12 }, randomPhone);
    const outcomes = await Promise.all([
      ...viaBus.map((phoneNumber) => authOf(shared).signupWithPhoneNumber({ phoneNumber })),
      ...viaRpc.map((phoneNumber, i) =>
        outcomeOf(
          otpAt(i % 2 ? url2 : shared.otpUrl).generateOtp({ phoneNumber }, internal(shared)),
        )
      ),
    ]);
    await settled(shared, [...viaBus, ...viaRpc]);
    await sentExactly(shared, () => smsLines([...shared.otp.lines, ...otp2.lines]).length, 4);
    assert.ok(outcomes.slice(12).every((c) => c === "ok" || c === "ResourceExhausted"));
  } finally {
    await otp2.stop();
  }
});

Deno.test("premium-rate and country-less (satellite) numbers never get an SMS", async () => {
  const numbers = [
    "+19005550123",
    "+449090901234",
    "+33899123456",
    "+881612345678",
    "+870773123456",
  ];
  const auth = authOf(resend);
  for (const phoneNumber of numbers) {
    const signup = await outcomeOf(auth.signupWithPhoneNumber({ phoneNumber }));
    assert.ok(["ok", "InvalidArgument", "PermissionDenied"].includes(signup), signup);
    assert.equal(
      await outcomeOf(otpAt(resend.otpUrl).generateOtp({ phoneNumber }, internal(resend))),
      "PermissionDenied",
      phoneNumber,
    );
  }
  await pollUntil(async () => {
    const [a] = await resend.sql`select count(distinct phone_number)::int as n
      from otp.audit_events where event = 'code_refused'
       and outcome in ('number_type_not_allowed', 'no_country') and phone_number = any(${numbers}::text[])`;
    return a!.n === numbers.length;
  }, { what: "each refusal to be audited" });
  for (const n of numbers) assert.deepEqual(smsLines(resend.otp.lines, n), [], n);
});

Deno.test("a resend while the code is live carries the same code, and wrong tries carry over", async () => {
  const auth = authOf(resend);
  const phone = randomPhone();
  let mark = resend.otp.lines.length;
  await auth.signupWithPhoneNumber({ phoneNumber: phone });
  const first = await codeFor(resend, phone, "signup", mark);
  const wrong = first === "000000" ? "000001" : "000000";
  for (let i = 0; i < 4; i++) {
    assert.equal(
      await outcomeOf(auth.verifyPhoneNumber({ phoneNumber: phone, otp: wrong })),
      "Unauthenticated",
    );
  }
  await delay(1_100); // past the 1 s cooldown
  mark = resend.otp.lines.length;
  await auth.signupWithPhoneNumber({ phoneNumber: phone });
  assert.equal(await codeFor(resend, phone, "signup", mark), first, "the same code again");
  // The fifth wrong try, counted across the resend, kills the code.
  await assert.rejects(auth.verifyPhoneNumber({ phoneNumber: phone, otp: wrong }));
  await assert.rejects(auth.verifyPhoneNumber({ phoneNumber: phone, otp: first }));
  const [c] = await resend.sql`select count(distinct challenge_id)::int as n from otp.requests
    where phone_number = ${phone}`;
  assert.equal(c!.n, 1);
});

Deno.test("one address cannot use up a number's allowance: limits are keyed by number and address", async () => {
  const otp = otpAt(resend.otpUrl);
  const phone = randomPhone();
  const ask = (address: string) => {
    // Each request waits out the 1 s cooldown first.
    return delay(1_100).then(() =>
      outcomeOf(otp.generateOtp({ phoneNumber: phone }, internal(resend, address)))
    );
  };
  assert.deepEqual(
    [await ask("203.0.113.1"), await ask("203.0.113.1"), await ask("203.0.113.1")],
    ["ok", "ok", "ResourceExhausted"],
    "2 per number and address",
  );
  assert.deepEqual([await ask("203.0.113.2"), await ask("203.0.113.2")], ["ok", "ok"]);
  assert.equal(await ask("203.0.113.3"), "ResourceExhausted", "4 per number from all addresses");
  await pollUntil(() => smsLines(resend.otp.lines, phone).length >= 4, { what: "4 SMS" });
  assert.equal(smsLines(resend.otp.lines, phone).length, 4);
  const reasons = await resend.sql`select outcome from otp.audit_events
    where phone_number = ${phone} and event = 'code_refused' order by id`;
  assert.deepEqual(reasons.map((r) => r.outcome), ["pair_hourly", "number_hourly"]);
});

Deno.test("a budget refusal gives back the number's allowance: the next try is refused by the budget again, not the cooldown", async () => {
  const otp = otpAt(off.otpUrl);
  const phone = randomPhone();
  for (let i = 0; i < 3; i++) {
    assert.equal(
      await outcomeOf(otp.generateOtp({ phoneNumber: phone }, internal(off))),
      "ResourceExhausted",
    );
  }
  const reasons = await off.sql`select outcome from otp.audit_events
    where phone_number = ${phone} and event = 'code_refused' order by id`;
  assert.deepEqual(reasons.map((r) => r.outcome), ["budget", "budget", "budget"]);
});

Deno.test("a request naming the live challenge as spent opens a new one with a new code", async () => {
  const otp = otpAt(resend.otpUrl);
  const phone = randomPhone();
  await otp.generateOtp({ phoneNumber: phone }, internal(resend, "203.0.113.9"));
  const [live] = await resend.sql`select challenge_id from otp.challenges
    where phone_number = ${phone} and purpose = 'login'`;
  await delay(1_100); // past the cooldown
  await otp.generateOtp(
    { phoneNumber: phone, spentChallengeId: live!.challenge_id },
    internal(resend, "203.0.113.9"),
  );
  const rows = await resend.sql`select challenge_id from otp.requests
    where phone_number = ${phone} order by created_at`;
  assert.equal(rows.length, 2);
  assert.notEqual(rows[1]!.challenge_id, rows[0]!.challenge_id);
  await pollUntil(() => smsLines(resend.otp.lines, phone).length >= 2, { what: "2 SMS" });
  const bodies = smsLines(resend.otp.lines, phone).map((l) => parseConsoleSmsLine(l)!.body);
  assert.equal(bodies.length, 2);
  assert.notEqual(codeIn(bodies[0]), codeIn(bodies[1]));
});

Deno.test("otp-service refuses a call without the internal token before decoding its body", async () => {
  for (const authorization of [undefined, "Bearer wrong"]) {
    const res = await fetch(`${off.otpUrl}/otp.v1.OtpService/GenerateOtp`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        ...(authorization ? { authorization } : {}),
      },
      body: "{not json",
    });
    const body = await res.json();
    assert.equal(res.status, 401);
    assert.equal(body.code, "unauthenticated", "not invalid_argument: the body was never read");
  }
});

Deno.test("per-prefix and per-country hourly caps stop pumping through a block of numbers", async () => {
  const otp = otpAt(velocity.otpUrl);
  const ask = (phoneNumber: string) =>
    outcomeOf(otp.generateOtp({ phoneNumber }, internal(velocity)));
  // One block: the numbers differ only in their last 4 digits.
  assert.deepEqual(
    [await ask("+14155550101"), await ask("+14155550102"), await ask("+14155550103")],
    ["ok", "ok", "ResourceExhausted"],
  );
  assert.deepEqual([await ask("+14152340101"), await ask("+14153450101")], [
    "ok",
    "ResourceExhausted",
  ]);
  const reasons = await velocity.sql`select outcome from otp.audit_events
    where event = 'code_refused' order by id`;
  assert.deepEqual(reasons.map((r) => r.outcome), ["prefix_velocity", "country_velocity"]);
});
