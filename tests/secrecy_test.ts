// Codes and session tokens never appear in plaintext in the database, on the bus or
// in the logs; the console SMS line is the one place a code is printed.
import assert from "node:assert/strict";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { AuthService } from "../shared/gen/auth/v1/auth_pb.ts";
import { RawAmqp } from "../testing/broker.ts";
import { parseConsoleSmsLine } from "../otp_service/sms/console_sender.ts";
import { AUTH_ROUTING_KEY, EXCHANGE, OTP_ROUTING_KEY } from "../shared/topology.ts";
import { codeFor } from "../testing/sms_codes.ts";
import { pollUntil } from "../shared/async.ts";
import { randomPhone, startStack } from "../testing/stack.ts";

const TAP = "secrecy_tap";
const stack = await startStack({
  beforeStart: async (url) => {
    const raw = await RawAmqp.open(url);
    await raw.tap(TAP, EXCHANGE, [OTP_ROUTING_KEY, AUTH_ROUTING_KEY]);
    await raw.close();
  },
});
Deno.test.afterAll(() => stack.stop());

async function drainTap(): Promise<{ type: string; body: Uint8Array }[]> {
  const raw = await RawAmqp.open(stack.amqpUrl);
  const out: { type: string; body: Uint8Array }[] = [];
  try {
    for (const m of await raw.drain(TAP)) {
      assert.equal(m.properties.deliveryMode, 2, "messages are persistent");
      assert.ok(m.properties.messageId, "message_id is set");
      assert.ok(m.properties.timestamp, "timestamp is set");
      assert.equal(m.properties.contentType, "application/x-protobuf");
      out.push({ type: m.properties.type, body: new Uint8Array(m.content) });
    }
  } finally {
    await raw.close();
  }
  return out;
}

async function databaseText(): Promise<string> {
  const rows = await stack.sql.unsafe(`
    select string_agg(t, E'\\n') as all from (
      select row_to_json(x)::text as t from auth.users x union all
      select row_to_json(x)::text from auth.challenges x union all
      select row_to_json(x)::text from auth.sessions x union all
      select row_to_json(x)::text from auth.session_tokens x union all
      select row_to_json(x)::text from auth.outbox x union all
      select row_to_json(x)::text from auth.inbox x union all
      select row_to_json(x)::text from otp.requests x union all
      select row_to_json(x)::text from otp.outbox x) q`);
  return String(rows[0]!.all);
}

Deno.test("no code or session token is stored, published or logged in plaintext", async () => {
  const client = createClient(AuthService, createConnectTransport({ baseUrl: stack.authUrl }));
  const phone = randomPhone();
  const mark = stack.otp.lines.length;
  await client.signupWithPhoneNumber({ phoneNumber: phone });
  const code = await codeFor(stack, phone, "signup", mark);
  const { sessionToken } = await client.verifyPhoneNumber({ phoneNumber: phone, otp: code });
  const mark2 = stack.otp.lines.length;
  await client.validatePhoneNumberLogin({ phoneNumber: phone });
  const code2 = await codeFor(stack, phone, "login", mark2);
  const login = await client.loginWithPhoneNumber({ phoneNumber: phone, otp: code2 });
  await client.getProfile({ phoneNumber: phone }, {
    headers: { authorization: `Bearer ${login.sessionToken}` },
  });
  const refreshed = await client.refreshSession({}, {
    headers: { authorization: `Bearer ${login.sessionToken}` },
  });
  const secrets = [code, code2, sessionToken, login.sessionToken, refreshed.sessionToken];

  const messages = await pollUntil(async () => {
    const m = await drainTap();
    return m.length >= 3 ? m : undefined;
  }, { timeoutMs: 10_000, what: "bus messages on the tap" });
  assert.ok(messages.some((m) => m.type === "bus.v1.OtpRequested"));
  assert.ok(messages.some((m) => m.type === "bus.v1.OtpIssued"));
  const decoder = new TextDecoder("latin1");
  for (const m of messages) {
    const raw = decoder.decode(m.body);
    for (const s of secrets) assert.ok(!raw.includes(s), `${m.type} carries a secret`);
  }

  const db = await databaseText();
  assert.ok(db.includes(phone), "the dump does contain the data");
  for (const s of secrets) assert.ok(!db.includes(s), "a secret is stored in plaintext");
  // Sessions are stored as the SHA-256 of the token.
  const digest = new Uint8Array(
    await crypto.subtle.digest("SHA-256", new TextEncoder().encode(sessionToken)),
  );
  const [row] = await stack.sql`select count(*)::int as n from auth.session_tokens
    where token_hash = ${digest}`;
  assert.equal(row!.n, 1);

  const smsLines = stack.otp.lines.filter((l) => parseConsoleSmsLine(l) !== null);
  assert.equal(smsLines.length, 2);
  const otherLogs = [...stack.auth.lines, ...stack.otp.lines.filter((l) => !smsLines.includes(l))];
  for (const s of [...secrets, stack.secrets.OTP_HMAC_KEY, stack.secrets.INTERNAL_API_TOKEN]) {
    assert.ok(!otherLogs.some((l) => l.includes(s)), "a secret reached the logs");
  }
  // The logs are structured JSON with request ids.
  for (const l of stack.auth.lines) {
    try {
      JSON.parse(l);
    } catch {
      assert.fail(`not JSON: ${l}`);
    }
  }
});
