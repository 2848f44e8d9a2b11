// The system under test: auth-service and otp-service as real processes, with exactly
// the permission flags of their deno.json tasks, against the real PostgreSQL and
// RabbitMQ. Each stack gets its own database and RabbitMQ vhost, so test files can run
// in parallel without stealing each other's messages.
import { generateDevSigningKey } from "../auth_service/access_tokens.ts";
import { createPool } from "../shared/postgres.ts";
import type { Sql } from "../shared/postgres.ts";
import { createVhost } from "./broker.ts";
import { createDatabase, HARNESS_APPLICATION } from "./database.ts";
import { randomHex } from "./names.ts";
import { processEnv, Service, taskArgs } from "./processes.ts";

export interface StackOptions {
  authEnv?: Record<string, string>;
  otpEnv?: Record<string, string>;
  /** Declare extra queues before the services start (e.g. a tap on the exchange). */
  beforeStart?: (amqpUrl: string) => Promise<void>;
}

export interface Stack {
  auth: Service;
  otp: Service;
  authUrl: string;
  otpUrl: string;
  databaseUrl: string;
  amqpUrl: string;
  vhost: string;
  sql: Sql;
  secrets: { OTP_HMAC_KEY: string; INTERNAL_API_TOKEN: string };
  env: { auth: Record<string, string>; otp: Record<string, string> };
  startAuth(): Promise<Service>;
  startOtp(): Promise<Service>;
  stop(): Promise<void>;
}

export async function startStack(o: StackOptions = {}): Promise<Stack> {
  const db = await createDatabase();
  const vh = await createVhost();
  if (o.beforeStart) await o.beforeStart(vh.url);
  const secrets = { OTP_HMAC_KEY: randomHex(32), INTERNAL_API_TOKEN: randomHex(32) };
  const base = {
    ...processEnv(),
    DATABASE_URL: db.url,
    AMQP_URL: vh.url,
    ...secrets,
  };
  // The console sender is chosen explicitly, as otp-service requires; Twilio tests override
  // it. Every test number is in the US, so the per-country cap is raised unless a test sets it.
  const otpEnv: Record<string, string> = {
    ...base,
    OTP_PORT: "0",
    SMS_PROVIDER: "console",
    COUNTRY_HOURLY_LIMIT: "1000000",
    ...o.otpEnv,
  };
  // Every test client is 127.0.0.1: per-address caps are raised unless a test sets them.
  // auth-service applies the same per-country cap, so it is raised here too.
  const authEnv: Record<string, string> = {
    ...base,
    AUTH_PORT: "0",
    JWT_SIGNING_KEY: await generateDevSigningKey(),
    ADDRESS_SEND_LIMIT: "1000000",
    ADDRESS_CHECK_LIMIT: "1000000",
    COUNTRY_HOURLY_LIMIT: "1000000",
    ...o.authEnv,
  };
  const sql = createPool({ url: db.url, applicationName: HARNESS_APPLICATION, max: 4 });

  const stack: Stack = {
    auth: undefined as unknown as Service,
    otp: undefined as unknown as Service,
    authUrl: "",
    otpUrl: "",
    databaseUrl: db.url,
    amqpUrl: vh.url,
    vhost: vh.vhost,
    sql,
    secrets,
    env: { auth: authEnv, otp: otpEnv },
    async startOtp() {
      // Keep the port across restarts so auth-service still finds it.
      if (stack.otp?.port) otpEnv.OTP_PORT = String(stack.otp.port);
      stack.otp = new Service("otp-service", await taskArgs("otp"), otpEnv);
      stack.otpUrl = `http://127.0.0.1:${await stack.otp.waitListening()}`;
      return stack.otp;
    },
    async startAuth() {
      authEnv.OTP_SERVICE_URL = stack.otpUrl;
      if (stack.auth?.port) authEnv.AUTH_PORT = String(stack.auth.port);
      stack.auth = new Service("auth-service", await taskArgs("auth"), authEnv);
      stack.authUrl = `http://127.0.0.1:${await stack.auth.waitListening()}`;
      return stack.auth;
    },
    async stop() {
      await Promise.all([stack.auth?.stop(), stack.otp?.stop()]);
      await sql.end({ timeout: 2 });
      await Promise.all([db.drop(), vh.drop()]);
    },
  };
  try {
    await stack.startOtp();
    await stack.startAuth();
  } catch (err) {
    await stack.stop().catch(() => {});
    throw err;
  }
  return stack;
}

const drawn = new Set<string>();

/**
 * A fresh, valid, unused US number: never one this process drew before (a repeat would
 * be a resend inside its cooldown, or a signup of a number already taken).
 */
export function randomPhone(): string {
  for (;;) {
    const phone = `+1415${2_000_000 + Math.floor(Math.random() * 7_000_000)}`;
    if (!drawn.has(phone)) {
      drawn.add(phone);
      return phone;
    }
  }
}
