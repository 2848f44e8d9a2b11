// Per-address defences through real processes: lookups charged before any lookup and
// indistinguishable once limited, X-Forwarded-For honoured only from trusted proxies,
// IPv6 counted per /64, wrong-code locks that bind only the address that made them, a
// spent login code replaced by a new one, and login only for verified users.
import assert from "node:assert/strict";
import { pollUntil } from "../shared/async.ts";
import { parseConsoleSmsLine } from "../otp_service/sms/console_sender.ts";
import { codeFor } from "../testing/sms_codes.ts";
import { rpc, SIGNUP, VALIDATE_LOGIN, VERIFY } from "../testing/rpc.ts";
import type { RpcResult } from "../testing/rpc.ts";
import { randomPhone, startStack } from "../testing/stack.ts";
import type { Stack } from "../testing/stack.ts";

const LOGIN = "auth.v1.AuthService/LoginWithPhoneNumber";
const GENERATE = "otp.v1.OtpService/GenerateOtp";

const [direct, proxied] = await Promise.all([
  // No trusted proxy: every caller here is the socket peer, whatever it claims.
  startStack({ authEnv: { ADDRESS_SEND_LIMIT: "20", ADDRESS_WINDOW_SECONDS: "600" } }),
  // Behind a proxy on loopback; no cooldown, so one test can request codes back to back.
  startStack({
    authEnv: {
      TRUSTED_PROXIES: "127.0.0.1/32,::1/128",
      OTP_SEND_COOLDOWN_SECONDS: "0",
      ADDRESS_SEND_LIMIT: "20",
    },
    otpEnv: { OTP_SEND_COOLDOWN_SECONDS: "0" },
  }),
]);
Deno.test.afterAll(async () => {
  await Promise.all([direct.stop(), proxied.stop()]);
});

const from = (address: string, extra: Record<string, string> = {}) => ({
  headers: { "x-forwarded-for": address, ...extra },
});

/** A verified user of `s`, signed up from `address`. */
async function verifiedUser(s: Stack, address: string): Promise<string> {
  const phone = randomPhone();
  const mark = s.otp.lines.length;
  assert.equal((await rpc(s.authUrl, SIGNUP, { phone_number: phone }, from(address))).code, "ok");
  const otp = await codeFor(s, phone, "signup", mark);
  const r = await rpc(s.authUrl, VERIFY, { phone_number: phone, otp }, from(address));
  assert.equal(r.code, "ok", JSON.stringify(r.json));
  return phone;
}

const one = async (q: Promise<{ n: number }[]>) => (await q)[0]!.n;

const shape = (r: RpcResult) => ({ status: r.status, json: r.json });

/** The whole seconds a refusal says to wait. */
const retrySeconds = (r: RpcResult) =>
  Number(/retry in (\d+)s/.exec(String(r.json.message ?? ""))?.[1]);

/**
 * Two calls' answers, which must be alike. A refusal's wait counts down, so two answers a
 * second apart on the clock may say N and N-1: such a pair is asked again (at most three
 * times); any other difference fails at once. Returns the calls made.
 */
async function answerAlike(
  first: () => Promise<RpcResult>,
  second: () => Promise<RpcResult>,
): Promise<{ a: RpcResult; calls: number }> {
  for (let calls = 2;; calls += 2) {
    const [a, b] = [await first(), await second()];
    const ticked = Math.abs(retrySeconds(a) - retrySeconds(b)) === 1;
    if (!ticked || calls >= 6) {
      assert.deepEqual(shape(a), shape(b));
      return { a, calls };
    }
  }
}

Deno.test("120 lookups of unknown numbers from one address are throttled, audited, and then registered and unknown numbers answer alike", async () => {
  const registered = await verifiedUser(direct, "198.51.100.1");
  const before = await one(direct.sql<{ n: number }[]>`
    select coalesce(sum(count), 0)::int as n from auth.audit_events
     where event = 'code_requested'`);
  const codes: string[] = [];
  for (let i = 0; i < 120; i++) {
    // A forged X-Forwarded-For from an untrusted peer changes nothing.
    const r = await rpc(direct.authUrl, VALIDATE_LOGIN, { phone_number: randomPhone() }, {
      headers: { "x-forwarded-for": `203.0.113.${i}` },
    });
    codes.push(r.code);
  }
  // The signup above spent one of the 20.
  assert.equal(codes.filter((c) => c === "ok").length, 19);
  assert.ok(codes.slice(19).every((c) => c === "resource_exhausted"), codes.join(","));
  const lookups = await answerAlike(
    () => rpc(direct.authUrl, VALIDATE_LOGIN, { phone_number: randomPhone() }),
    () => rpc(direct.authUrl, VALIDATE_LOGIN, { phone_number: registered }),
  );
  const signups = await answerAlike(
    () => rpc(direct.authUrl, SIGNUP, { phone_number: registered }),
    () => rpc(direct.authUrl, SIGNUP, { phone_number: randomPhone() }),
  );
  assert.equal(signups.a.code, "resource_exhausted");
  // Every call is in the audit trail; the refusals of one key share a row with a count.
  const after = await one(direct.sql<{ n: number }[]>`
    select coalesce(sum(count), 0)::int as n from auth.audit_events
     where event = 'code_requested'`);
  assert.equal(after - before, 120 + lookups.calls + signups.calls);
  const rows = await one(direct.sql<{ n: number }[]>`
    select count(*)::int as n from auth.audit_events
     where event = 'code_requested' and outcome = 'address'`);
  assert.ok(rows < 10, `${rows} rows for 105 refusals`);
});

Deno.test("lookups made at once from four addresses are counted exactly per address, each answered its own", async () => {
  const registered = await verifiedUser(proxied, "198.51.100.200");
  const addresses = ["198.51.100.101", "198.51.100.102", "198.51.100.103", "198.51.100.104"];
  const calls = Array.from({ length: 120 }, (_, i) => ({
    address: addresses[i % 4]!,
    phone: randomPhone(),
  }));
  const [answers, known] = await Promise.all([
    Promise.all(
      calls.map((c) =>
        rpc(proxied.authUrl, VALIDATE_LOGIN, { phone_number: c.phone }, from(c.address))
      ),
    ),
    rpc(proxied.authUrl, VALIDATE_LOGIN, { phone_number: registered }, from("198.51.100.201")),
  ]);
  assert.deepEqual(known.json, { is_valid: true });
  for (const address of addresses) {
    const mine = answers.filter((_, i) => calls[i]!.address === address);
    assert.equal(mine.filter((r) => r.code === "ok").length, 20, address);
    assert.equal(mine.filter((r) => r.code === "resource_exhausted").length, 10, address);
  }
  assert.ok(answers.filter((r) => r.code === "ok").every((r) => r.json.is_valid === false));
  const misses = await one(proxied.sql<{ n: number }[]>`
    select count(*)::int as n from auth.audit_events
     where event = 'code_requested' and outcome = 'not_verified'
       and client_address in ${proxied.sql(addresses)}`);
  assert.equal(misses, 80);
});

Deno.test("signups made at once from four addresses are counted exactly per address, each answered its own", async () => {
  const addresses = ["198.51.100.111", "198.51.100.112", "198.51.100.113", "198.51.100.114"];
  const calls = Array.from({ length: 120 }, (_, i) => ({
    address: addresses[i % 4]!,
    phone: randomPhone(),
  }));
  const answers = await Promise.all(
    calls.map((c) => rpc(proxied.authUrl, SIGNUP, { phone_number: c.phone }, from(c.address))),
  );
  for (const address of addresses) {
    const mine = answers.filter((_, i) => calls[i]!.address === address);
    assert.equal(mine.filter((r) => r.code === "ok").length, 20, address);
    assert.equal(mine.filter((r) => r.code === "resource_exhausted").length, 10, address);
  }
  // Exactly the admitted numbers were queued; a refused one has no user row either.
  const queued = await proxied.sql<{ phone_number: string }[]>`
    select phone_number from auth.audit_events
     where event = 'code_requested' and outcome = 'signup'
       and client_address in ${proxied.sql(addresses)}`;
  assert.deepEqual(
    queued.map((r) => r.phone_number).sort(),
    calls.filter((_, i) => answers[i]!.code === "ok").map((c) => c.phone).sort(),
  );
  const users = await one(proxied.sql<{ n: number }[]>`
    select count(*)::int as n from auth.users
     where phone_number in ${proxied.sql(calls.map((c) => c.phone))}`);
  assert.equal(users, 80);
});

Deno.test("a signup of a registered number is charged to the address like any other", async () => {
  const phone = await verifiedUser(proxied, "198.51.100.2");
  // On the proxied stack each address has its own allowance of 20 a window.
  const addr = "198.51.100.77";
  const codes: string[] = [];
  for (let i = 0; i < 25; i++) {
    codes.push((await rpc(proxied.authUrl, SIGNUP, { phone_number: phone }, from(addr))).code);
  }
  assert.deepEqual(
    [...new Set(codes)],
    ["already_exists", "resource_exhausted"],
    codes.join(","),
  );
  assert.equal(codes.filter((c) => c === "already_exists").length, 20);
});

Deno.test("IPv6 callers are counted per /64 and X-Forwarded-For is read right to left", async () => {
  const a = "2001:db8:aa:1::1";
  for (let i = 0; i < 20; i++) {
    const addr = `2001:db8:aa:1:${i.toString(16)}::${i + 2}`;
    const r = await rpc(
      proxied.authUrl,
      VALIDATE_LOGIN,
      { phone_number: randomPhone() },
      from(addr),
    );
    assert.equal(r.code, "ok");
  }
  const same = await rpc(proxied.authUrl, VALIDATE_LOGIN, { phone_number: randomPhone() }, from(a));
  assert.equal(same.code, "resource_exhausted");
  // A left-most entry the client wrote is not its address: the right-most untrusted one is.
  const spoofed = await rpc(proxied.authUrl, VALIDATE_LOGIN, { phone_number: randomPhone() }, {
    headers: { "x-forwarded-for": `198.51.100.200, [${a}]:443` },
  });
  assert.equal(spoofed.code, "resource_exhausted");
  const other = await rpc(proxied.authUrl, VALIDATE_LOGIN, { phone_number: randomPhone() }, {
    headers: { "x-forwarded-for": `${a}, 2001:db8:aa:2::1` },
  });
  assert.equal(other.code, "ok");
});

Deno.test("after 6 code requests and 25 wrong codes from one address, the user logs in from another", async () => {
  const s = proxied;
  const phone = await verifiedUser(s, "192.0.2.50");
  const attacker = "203.0.113.66";
  let wrongs = 0;
  const outcomes: string[] = [];
  for (let i = 0; i < 6; i++) {
    const mark = s.otp.lines.length;
    const asked = await rpc(s.authUrl, VALIDATE_LOGIN, { phone_number: phone }, from(attacker));
    outcomes.push(asked.code);
    if (asked.code !== "ok") continue;
    const real = await codeFor(s, phone, "login", mark);
    const bad = real === "000000" ? "000001" : "000000";
    for (let j = 0; j < 5 && wrongs < 25; j++, wrongs++) {
      await rpc(s.authUrl, LOGIN, { phone_number: phone, otp: bad }, from(attacker));
    }
  }
  while (wrongs++ < 25) {
    await rpc(s.authUrl, LOGIN, { phone_number: phone, otp: "000000" }, from(attacker));
  }
  // The attacker's pair is locked: no code, no check, even with the right code.
  const mark = s.otp.lines.length;
  const more = await rpc(s.authUrl, VALIDATE_LOGIN, { phone_number: phone }, from(attacker));
  assert.equal(more.code, "resource_exhausted", JSON.stringify(outcomes));
  const locks = await one(s.sql<{ n: number }[]>`
    select count(*)::int as n from auth.audit_events
     where phone_number = ${phone} and event = 'number_locked'`);
  assert.equal(locks, 1);
  // The user, elsewhere, asks for a code and logs in.
  const user = "192.0.2.50";
  const asked = await rpc(s.authUrl, VALIDATE_LOGIN, { phone_number: phone }, from(user));
  assert.deepEqual(asked.json, { is_valid: true });
  const otp = await codeFor(s, phone, "login", mark);
  const login = await rpc(s.authUrl, LOGIN, { phone_number: phone, otp }, from(user));
  assert.equal(login.code, "ok", JSON.stringify(login.json));
  assert.ok(login.json.session_token);
  const stolen = await rpc(s.authUrl, LOGIN, { phone_number: phone, otp }, from(attacker));
  assert.equal(stolen.code, "resource_exhausted");
});

Deno.test("two logins in a row within the code's lifetime both work", async () => {
  const s = proxied;
  const phone = await verifiedUser(s, "192.0.2.60");
  for (let i = 0; i < 2; i++) {
    const mark = s.otp.lines.length;
    const asked = await rpc(s.authUrl, VALIDATE_LOGIN, { phone_number: phone }, from("192.0.2.60"));
    assert.equal(asked.code, "ok");
    const otp = await codeFor(s, phone, "login", mark);
    const r = await rpc(s.authUrl, LOGIN, { phone_number: phone, otp }, from("192.0.2.60"));
    assert.equal(r.code, "ok", `login ${i + 1}: ${JSON.stringify(r.json)}`);
  }
});

Deno.test("a login code obtained for a number that never verified does not log in", async () => {
  const s = proxied;
  const phone = randomPhone();
  assert.equal(
    (await rpc(s.authUrl, SIGNUP, { phone_number: phone }, from("192.0.2.70"))).code,
    "ok",
  );
  const mark = s.otp.lines.length;
  const gen = await rpc(s.otpUrl, GENERATE, { phone_number: phone, purpose: "OTP_PURPOSE_LOGIN" }, {
    headers: { authorization: `Bearer ${s.secrets.INTERNAL_API_TOKEN}` },
  });
  assert.equal(gen.code, "ok", JSON.stringify(gen.json));
  const line = await s.otp.waitForLine((l) => parseConsoleSmsLine(l)?.to === phone, 15_000, mark);
  const otp = /\b(\d{6})\b/.exec(line)![1]!;
  await pollUntil(async () => {
    const [c] = await s.sql`select 1 from auth.challenges
      where phone_number = ${phone} and purpose = 'login'`;
    return c !== undefined;
  }, { what: "the login challenge to reach auth-service" });
  const r = await rpc(s.authUrl, LOGIN, { phone_number: phone, otp }, from("192.0.2.70"));
  assert.equal(r.code, "unauthenticated");
  const n = await one(s.sql<{ n: number }[]>`
    select count(*)::int as n from auth.sessions s join auth.users u on u.id = s.user_id
     where u.phone_number = ${phone}`);
  assert.equal(n, 0);
});

Deno.test("the client's X-Request-Id is recorded beside the server's own request id", async () => {
  const s = proxied;
  const phone = randomPhone();
  const r = await rpc(
    s.authUrl,
    SIGNUP,
    { phone_number: phone },
    from("192.0.2.80", {
      "x-request-id": "client-chosen-1",
    }),
  );
  assert.equal(r.code, "ok");
  const [row] = await s.sql<{ request_id: string; client_request_id: string }[]>`
    select request_id, client_request_id from auth.audit_events where phone_number = ${phone}`;
  assert.equal(row!.client_request_id, "client-chosen-1");
  assert.match(row!.request_id, /^[0-9a-f-]{36}$/);
});

Deno.test("numbers no SMS may go to are refused before anything is queued", async () => {
  const s = proxied;
  for (const phone of ["+19005550123", "+881612345678"]) {
    const r = await rpc(s.authUrl, SIGNUP, { phone_number: phone }, from("192.0.2.90"));
    assert.equal(r.code, "permission_denied", phone);
  }
  const [row] = await s.sql<{ users: number; audited: number }[]>`
    select (select count(*)::int from auth.users
             where phone_number in ('+19005550123', '+881612345678')) as users,
           (select count(*)::int from auth.audit_events
             where phone_number in ('+19005550123', '+881612345678')) as audited`;
  assert.deepEqual({ ...row }, { users: 0, audited: 0 });
});
