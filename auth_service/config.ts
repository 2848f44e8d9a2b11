import { ConfigReader } from "../shared/config.ts";
import type { Env } from "../shared/config.ts";
import type { Level } from "../shared/log.ts";

export interface AuthConfig {
  port: number;
  databaseUrl: string;
  amqpUrl: string;
  otpHmacKey: string;
  internalApiToken: string;
  otpServiceUrl: string;
  logLevel: Level;
  trustedProxyHops: number;
  deliveryLimit: number;
  codes: {
    length: number;
    maxAttempts: number;
    /** Longest validity accepted from otp-service, whatever it claims. */
    maxTtlSeconds: number;
  };
  sessions: {
    ttlSeconds: number;
    idleSeconds: number;
  };
}

/** Every variable auth-service reads; its task's --allow-env lists exactly these. */
export const AUTH_ENV = [
  "AUTH_PORT",
  "DATABASE_URL",
  "AMQP_URL",
  "OTP_HMAC_KEY",
  "INTERNAL_API_TOKEN",
  "OTP_SERVICE_URL",
  "LOG_LEVEL",
  "TRUSTED_PROXY_HOPS",
  "AMQP_DELIVERY_LIMIT",
  "OTP_LENGTH",
  "OTP_MAX_ATTEMPTS",
  "OTP_TTL_SECONDS",
  "SESSION_TTL_SECONDS",
  "SESSION_IDLE_SECONDS",
] as const;

export function loadAuthConfig(env: Env): AuthConfig {
  const c = new ConfigReader(env);
  return {
    port: c.port("AUTH_PORT", 8080),
    databaseUrl: c.url(
      "DATABASE_URL",
      "postgres://postgres@127.0.0.1:5432/postgres",
      ["postgres:", "postgresql:"],
    ),
    amqpUrl: c.url("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672", ["amqp:", "amqps:"]),
    otpHmacKey: c.secret("OTP_HMAC_KEY", 32),
    internalApiToken: c.secret("INTERNAL_API_TOKEN", 32),
    otpServiceUrl: c.url("OTP_SERVICE_URL", "http://127.0.0.1:8081", ["http:", "https:"]),
    logLevel: c.oneOf("LOG_LEVEL", ["debug", "info", "warn", "error"] as const, "info"),
    trustedProxyHops: c.int("TRUSTED_PROXY_HOPS", 0, 0, 10),
    deliveryLimit: c.int("AMQP_DELIVERY_LIMIT", 5, 1, 100),
    codes: {
      length: c.int("OTP_LENGTH", 6, 6, 9),
      maxAttempts: c.int("OTP_MAX_ATTEMPTS", 5, 1, 20),
      maxTtlSeconds: c.int("OTP_TTL_SECONDS", 300, 1, 600),
    },
    sessions: {
      ttlSeconds: c.int("SESSION_TTL_SECONDS", 7 * 24 * 3600, 60, 90 * 24 * 3600),
      idleSeconds: c.int("SESSION_IDLE_SECONDS", 24 * 3600, 60, 90 * 24 * 3600),
    },
  };
}
