// `deno task dev` as a newcomer runs it: one process, no infrastructure. The whole
// journey works with the codes read from its output, and Ctrl-C stops it cleanly.
import assert from "node:assert/strict";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { createRemoteJWKSet, jwtVerify } from "jose";
import { AuthService } from "../shared/gen/auth/v1/auth_pb.ts";
import { parseConsoleSmsLine } from "../otp_service/sms/console_sender.ts";
import { createPool } from "../shared/postgres.ts";
import { createDatabase } from "../testing/database.ts";
import { codeInConsoleLine } from "../testing/sms_codes.ts";
import { retryUntil } from "../shared/async.ts";
import { createVhost } from "../testing/broker.ts";
import { randomPhone } from "../testing/stack.ts";
import { processEnv, Service, taskArgs } from "../testing/processes.ts";

const ROOT = new URL("../", import.meta.url);

Deno.test("deno task dev serves the whole journey with embedded infrastructure and stops on SIGINT", async () => {
  await journey({}, "in-process (not durable; dev only)");
});

Deno.test("deno task dev switches to the real PostgreSQL and RabbitMQ when their URLs are set", async () => {
  const db = await createDatabase();
  const vhost = await createVhost();
  try {
    await journey({ DATABASE_URL: db.url, AMQP_URL: vhost.url }, "broker        AMQP_URL");
    const sql = createPool({ url: db.url, applicationName: "test", max: 1 });
    const [row] = await sql`select count(*)::int as n from auth.users`;
    await sql.end();
    assert.equal(row!.n, 1, "the user landed in the real database");
  } finally {
    await db.drop();
    await vhost.drop();
  }
});

async function journey(extra: Record<string, string>, brokerLine: string) {
  const dataDir = `.dev/test-${crypto.randomUUID()}`;
  const env: Record<string, string> = {
    ...extra,
    ...processEnv(),
    AUTH_PORT: "0",
    OTP_PORT: "0",
    DEV_DATA_DIR: dataDir,
  };
  const dev = new Service("dev", await taskArgs("dev"), env);
  try {
    const banner = await dev.waitForLine((l) => l.includes("auth-service  http://"), 60_000);
    const authUrl = /(http:\/\/127\.0\.0\.1:\d+)/.exec(banner)![1]!;
    assert.ok(dev.lines.some((l) => l.includes(brokerLine)));
    assert.ok(dev.lines.some((l) => l.includes("curl -s")), "a ready-to-paste curl command");
    const auth = createClient(AuthService, createConnectTransport({ baseUrl: authUrl }));
    const phone = randomPhone();

    const codeAfter = async (from: number) => {
      const line = await dev.waitForLine((l) => parseConsoleSmsLine(l)?.to === phone, 20_000, from);
      return codeInConsoleLine(line);
    };
    // The code can be printed a moment before auth-service holds its challenge.
    const retry = <T>(f: () => Promise<T>): Promise<T> =>
      retryUntil("the call", f, { deadlineMs: 4_000 });

    let mark = dev.lines.length;
    await auth.signupWithPhoneNumber({ phoneNumber: phone });
    const code = await codeAfter(mark);
    const { sessionToken } = await retry(() =>
      auth.verifyPhoneNumber({ phoneNumber: phone, otp: code })
    );
    const bearer = { headers: { authorization: `Bearer ${sessionToken}` } };
    assert.equal((await auth.getProfile({ phoneNumber: phone }, bearer)).phoneNumber, phone);
    mark = dev.lines.length;
    assert.equal((await auth.validatePhoneNumberLogin({ phoneNumber: phone })).isValid, true);
    const code2 = await codeAfter(mark);
    const login = await retry(() => auth.loginWithPhoneNumber({ phoneNumber: phone, otp: code2 }));
    assert.ok(login.sessionToken);
    // A signing key generated for the run, said so, and its key set served.
    assert.ok(dev.lines.some((l) => l.includes("JWT_SIGNING_KEY not set: generated")));
    const jwks = createRemoteJWKSet(new URL("/.well-known/jwks.json", authUrl));
    const { payload } = await jwtVerify(login.accessToken, jwks, { issuer: "phone-auth" });
    assert.equal(payload.phone_number, phone);
    const refreshed = await auth.refreshSession({}, {
      headers: { authorization: `Bearer ${login.sessionToken}` },
    });
    await jwtVerify(refreshed.accessToken, jwks);
    // The events of signup, verify and login were taken by the broker, not refused.
    assert.ok(!dev.lines.some((l) => l.includes("publish failed")), "an event was refused");

    dev.signal("SIGINT");
    const status = await dev.exited;
    assert.equal(status.code, 0, dev.lines.slice(-10).join("\n"));
    assert.ok(dev.lines.some((l) => l.includes("stopped cleanly")));
  } finally {
    dev.signal("SIGKILL");
    await dev.exited;
    await Deno.remove(new URL(dataDir, ROOT), { recursive: true }).catch(() => {});
    await Deno.remove(new URL(`${dataDir}.lock`, ROOT)).catch(() => {});
  }
}
