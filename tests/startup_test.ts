// A service with a missing or malformed required variable stops at once with one line
// naming it (and never the value of a secret).
import assert from "node:assert/strict";
import { generateDevSigningKey } from "../auth_service/access_tokens.ts";
import { processEnv, taskArgs } from "../testing/processes.ts";

const ROOT = new URL("../", import.meta.url);
const KEY = "k".repeat(64);

async function start(task: "auth" | "otp", env: Record<string, string>) {
  const out = await new Deno.Command("deno", {
    args: await taskArgs(task),
    cwd: ROOT,
    clearEnv: true,
    env: { ...processEnv(), ...env },
    stdin: "null",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr).trim();
  // Deno itself may print a boxed notice while it first sets up npm packages on a cold
  // cache; only the service's own lines count.
  const lines = stderr.split("\n").filter((l) => l && !/^[╭│╰]/.test(l));
  return { code: out.code, stderr, lines };
}

const cases: [string, "auth" | "otp", Record<string, string>, string][] = [
  ["auth without OTP_HMAC_KEY", "auth", { INTERNAL_API_TOKEN: KEY }, "OTP_HMAC_KEY"],
  ["auth without INTERNAL_API_TOKEN", "auth", { OTP_HMAC_KEY: KEY }, "INTERNAL_API_TOKEN"],
  ["auth without JWT_SIGNING_KEY", "auth", {
    OTP_HMAC_KEY: KEY,
    INTERNAL_API_TOKEN: KEY,
  }, "JWT_SIGNING_KEY"],
  ["auth with a symmetric JWT_SIGNING_KEY", "auth", {
    OTP_HMAC_KEY: KEY,
    INTERNAL_API_TOKEN: KEY,
    JWT_SIGNING_KEY: JSON.stringify({ kty: "oct", k: "short-secret" }),
  }, "JWT_SIGNING_KEY"],
  ["otp without OTP_HMAC_KEY", "otp", { INTERNAL_API_TOKEN: KEY }, "OTP_HMAC_KEY"],
  ["auth with a port that is not a number", "auth", {
    OTP_HMAC_KEY: KEY,
    INTERNAL_API_TOKEN: KEY,
    AUTH_PORT: "eighty",
  }, "AUTH_PORT"],
  ["auth with a malformed DATABASE_URL", "auth", {
    OTP_HMAC_KEY: KEY,
    INTERNAL_API_TOKEN: KEY,
    DATABASE_URL: "not a url",
  }, "DATABASE_URL"],
  ["auth with a short ADMIN_API_TOKEN", "auth", {
    OTP_HMAC_KEY: KEY,
    INTERNAL_API_TOKEN: KEY,
    JWT_SIGNING_KEY: await generateDevSigningKey(),
    ADMIN_API_TOKEN: "short-secret",
  }, "ADMIN_API_TOKEN"],
  ["otp with a short OTP_HMAC_KEY", "otp", {
    OTP_HMAC_KEY: "short-secret",
    INTERNAL_API_TOKEN: KEY,
  }, "OTP_HMAC_KEY"],
  ["otp with SMS_PROVIDER=twilio and no account", "otp", {
    OTP_HMAC_KEY: KEY,
    INTERNAL_API_TOKEN: KEY,
    SMS_PROVIDER: "twilio",
  }, "TWILIO_ACCOUNT_SID"],
  ["otp with no SMS provider chosen and no Twilio account", "otp", {
    OTP_HMAC_KEY: KEY,
    INTERNAL_API_TOKEN: KEY,
  }, "SMS_PROVIDER"],
  ["otp with a DATABASE_POOL_MAX of 0", "otp", {
    OTP_HMAC_KEY: KEY,
    INTERNAL_API_TOKEN: KEY,
    SMS_PROVIDER: "console",
    DATABASE_POOL_MAX: "0",
  }, "DATABASE_POOL_MAX"],
  ["otp with an OTP validity over ten minutes", "otp", {
    OTP_HMAC_KEY: KEY,
    INTERNAL_API_TOKEN: KEY,
    OTP_TTL_SECONDS: "3600",
  }, "OTP_TTL_SECONDS"],
];

for (const [name, task, env, variable] of cases) {
  Deno.test(`${name}: exits non-zero with one line naming ${variable}`, async () => {
    const r = await start(task, env);
    assert.equal(r.code, 78, "the configuration-error exit status");
    assert.equal(r.lines.length, 1, r.stderr);
    assert.match(r.lines[0]!, new RegExp(`^config: ${variable} `));
    assert.ok(!r.stderr.includes("short-secret"), "a secret value was printed");
  });
}
