import { COMMON_ENV, ConfigError, ConfigReader, readCommon } from "../shared/config.ts";
import type { CommonConfig, Env } from "../shared/config.ts";
import { readSendLimits, SEND_LIMIT_ENV } from "../shared/limits_config.ts";
import type { SendLimits } from "../shared/limits_config.ts";

export type TwilioConfig = {
  accountSid: string;
  authToken: string;
  from?: string;
  messagingServiceSid?: string;
  /** Only for tests and proxies: where the Twilio REST API is reached. */
  apiBaseUrl?: string;
};

export interface OtpConfig extends CommonConfig {
  port: number;
  /** The RPC is internal: loopback unless the deployment says otherwise. */
  bindAddress: string;
  sms: { provider: "console" } | { provider: "twilio"; twilio: TwilioConfig };
  smsRetryAttempts: number;
  /** How long one provider request may take before it counts as a transient failure. */
  smsTimeoutMs: number;
  codes: { length: number; ttlSeconds: number };
  sending: SendLimits;
  smsHourlyBudget: number;
}

/** Every variable otp-service reads; the "otp" permission set in deno.json allows exactly these. */
export const OTP_ENV = [
  "OTP_PORT",
  "OTP_BIND_ADDRESS",
  ...COMMON_ENV,
  "OTP_LENGTH",
  "OTP_TTL_SECONDS",
  "SMS_PROVIDER",
  "SMS_RETRY_ATTEMPTS",
  "SMS_TIMEOUT_MS",
  "TWILIO_ACCOUNT_SID",
  "TWILIO_AUTH_TOKEN",
  "TWILIO_FROM_NUMBER",
  "TWILIO_MESSAGING_SERVICE_SID",
  "TWILIO_API_BASE_URL",
  ...SEND_LIMIT_ENV,
  "SMS_HOURLY_BUDGET",
] as const;

export function loadOtpConfig(env: Env): OtpConfig {
  const c = new ConfigReader(env);
  const common = readCommon(c);
  const bindAddress = c.string("OTP_BIND_ADDRESS", "127.0.0.1");
  if (!/^[A-Za-z0-9.:-]+$/.test(bindAddress)) {
    throw new ConfigError("OTP_BIND_ADDRESS", "must be an IP address or host name");
  }
  const rest = {
    port: c.port("OTP_PORT", 8081),
    bindAddress,
    smsRetryAttempts: c.int("SMS_RETRY_ATTEMPTS", 4, 1, 10),
    smsTimeoutMs: c.int("SMS_TIMEOUT_MS", 10_000, 100, 60_000),
    codes: {
      length: c.int("OTP_LENGTH", 6, 6, 9),
      // A code is never valid for more than 10 minutes.
      ttlSeconds: c.int("OTP_TTL_SECONDS", 300, 1, 600),
    },
    sending: readSendLimits(c),
    smsHourlyBudget: c.int("SMS_HOURLY_BUDGET", 1_000, 0, 10_000_000),
  };
  const twilioSet = c.optional("TWILIO_ACCOUNT_SID") !== undefined;
  if (!twilioSet && c.optional("SMS_PROVIDER") === undefined) {
    // Printing codes is never a fallback: it must be chosen.
    throw new ConfigError(
      "SMS_PROVIDER",
      "is required: twilio (with the TWILIO_* variables), or console to print codes in development",
    );
  }
  const provider = c.oneOf("SMS_PROVIDER", ["console", "twilio"] as const, "twilio");
  return {
    ...common,
    ...rest,
    sms: provider === "console" ? { provider } : { provider, twilio: twilioConfig(c) },
  };
}

function twilioConfig(c: ConfigReader): TwilioConfig {
  const accountSid = c.string("TWILIO_ACCOUNT_SID");
  if (!/^AC[0-9a-fA-F]{32}$/.test(accountSid)) {
    throw new ConfigError("TWILIO_ACCOUNT_SID", "must look like AC followed by 32 hex digits");
  }
  const authToken = c.secret("TWILIO_AUTH_TOKEN", 16);
  const from = c.optional("TWILIO_FROM_NUMBER");
  const messagingServiceSid = c.optional("TWILIO_MESSAGING_SERVICE_SID");
  if (!from && !messagingServiceSid) {
    throw new ConfigError(
      "TWILIO_FROM_NUMBER",
      "or TWILIO_MESSAGING_SERVICE_SID is required when SMS_PROVIDER=twilio",
    );
  }
  const apiBaseUrl = c.optional("TWILIO_API_BASE_URL");
  if (apiBaseUrl !== undefined) c.url("TWILIO_API_BASE_URL", apiBaseUrl, ["http:", "https:"]);
  return { accountSid, authToken, from, messagingServiceSid, apiBaseUrl };
}
