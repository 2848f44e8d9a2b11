import { COMMON_ENV, ConfigReader, readCommon } from "../shared/config.ts";
import type { CommonConfig, Env } from "../shared/config.ts";
import { readSendLimits, SEND_LIMIT_ENV } from "../shared/limits_config.ts";
import type { SendLimits } from "../shared/limits_config.ts";
import { JWT_ENV, readJwtConfig } from "./access_tokens.ts";
import type { JwtConfig } from "./access_tokens.ts";
import { ConfigError } from "../shared/config.ts";
import { parseCidr } from "../shared/ip.ts";
import type { Cidr } from "../shared/ip.ts";

export interface AuthConfig extends CommonConfig {
  port: number;
  otpServiceUrl: string;
  /** Proxies whose X-Forwarded-For entries name the client. */
  trustedProxies: Cidr[];
  /** Exact origins browsers may call from; empty sends no CORS headers. */
  corsAllowedOrigins: string[];
  codes: {
    length: number;
    maxAttempts: number;
    /** Longest validity accepted from otp-service, whatever it claims. */
    maxTtlSeconds: number;
  };
  sessions: {
    ttlSeconds: number;
    idleSeconds: number;
    rotationGraceSeconds: number;
  };
  jwt: JwtConfig;
  sending: SendLimits;
  checking: {
    /** Consecutive wrong codes from one address that lock the number for that address. */
    lockAfterFailures: number;
    /** Consecutive wrong codes from all addresses that lock the number for everyone. */
    numberLockAfterFailures: number;
    lockSeconds: number;
    /** A count of consecutive wrong codes starts again after this long without one. */
    failureWindowSeconds: number;
  };
  retention: {
    auditDays: number;
    unverifiedUserDays: number;
  };
  perAddress: {
    sendLimit: number;
    checkLimit: number;
    windowSeconds: number;
  };
  /** The admin API's bearer; unset, every admin call is refused. */
  adminApiToken: string | undefined;
}

/** Every variable auth-service reads; the "auth" permission set in deno.json allows exactly these. */
export const AUTH_ENV = [
  "AUTH_PORT",
  ...COMMON_ENV,
  "OTP_SERVICE_URL",
  "TRUSTED_PROXIES",
  "CORS_ALLOWED_ORIGINS",
  "OTP_LENGTH",
  "OTP_MAX_ATTEMPTS",
  "OTP_TTL_SECONDS",
  "SESSION_TTL_SECONDS",
  "SESSION_IDLE_SECONDS",
  "SESSION_ROTATION_GRACE_SECONDS",
  ...JWT_ENV,
  ...SEND_LIMIT_ENV,
  "LOCK_AFTER_FAILURES",
  "NUMBER_LOCK_AFTER_FAILURES",
  "LOCK_SECONDS",
  "LOCK_FAILURE_WINDOW_SECONDS",
  "AUDIT_RETENTION_DAYS",
  "UNVERIFIED_USER_DAYS",
  "ADDRESS_SEND_LIMIT",
  "ADDRESS_CHECK_LIMIT",
  "ADDRESS_WINDOW_SECONDS",
  "ADMIN_API_TOKEN",
] as const;

export function loadAuthConfig(env: Env): AuthConfig {
  const c = new ConfigReader(env);
  return {
    ...readCommon(c),
    port: c.port("AUTH_PORT", 8080),
    otpServiceUrl: c.url("OTP_SERVICE_URL", "http://127.0.0.1:8081", ["http:", "https:"]),
    trustedProxies: c.list("TRUSTED_PROXIES").map((raw) => {
      const cidr = parseCidr(raw);
      if (!cidr) {
        throw new ConfigError(
          "TRUSTED_PROXIES",
          `must be CIDRs like 10.0.0.0/8,::1/128; got "${raw}"`,
        );
      }
      return cidr;
    }),
    corsAllowedOrigins: c.list("CORS_ALLOWED_ORIGINS"),
    codes: {
      length: c.int("OTP_LENGTH", 6, 6, 9),
      maxAttempts: c.int("OTP_MAX_ATTEMPTS", 5, 1, 20),
      maxTtlSeconds: c.int("OTP_TTL_SECONDS", 300, 1, 600),
    },
    sessions: {
      ttlSeconds: c.int("SESSION_TTL_SECONDS", 7 * 24 * 3600, 1, 90 * 24 * 3600),
      idleSeconds: c.int("SESSION_IDLE_SECONDS", 24 * 3600, 1, 90 * 24 * 3600),
      rotationGraceSeconds: c.int("SESSION_ROTATION_GRACE_SECONDS", 10, 0, 300),
    },
    jwt: readJwtConfig(c),
    sending: readSendLimits(c),
    checking: {
      lockAfterFailures: c.int("LOCK_AFTER_FAILURES", 20, 1, 1_000),
      numberLockAfterFailures: c.int("NUMBER_LOCK_AFTER_FAILURES", 100, 1, 100_000),
      lockSeconds: c.int("LOCK_SECONDS", 900, 1, 7 * 86_400),
      failureWindowSeconds: c.int("LOCK_FAILURE_WINDOW_SECONDS", 900, 1, 7 * 86_400),
    },
    retention: {
      auditDays: c.int("AUDIT_RETENTION_DAYS", 90, 1, 3_650),
      unverifiedUserDays: c.int("UNVERIFIED_USER_DAYS", 7, 1, 365),
    },
    perAddress: {
      sendLimit: c.int("ADDRESS_SEND_LIMIT", 20, 1, 1_000_000),
      checkLimit: c.int("ADDRESS_CHECK_LIMIT", 60, 1, 1_000_000),
      windowSeconds: c.int("ADDRESS_WINDOW_SECONDS", 600, 1, 86_400),
    },
    adminApiToken: c.optional("ADMIN_API_TOKEN") === undefined
      ? undefined
      : c.secret("ADMIN_API_TOKEN", 16),
  };
}
