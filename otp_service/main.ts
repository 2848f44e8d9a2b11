// otp-service entry point in production: reads the configuration from the environment,
// builds the real adapters (PostgreSQL, RabbitMQ, the SMS provider) and starts the service.
// `deno task dev` starts the same service from its own configuration and adapters.
import { connectAmqp } from "../shared/amqp.ts";
import { processEnv, runMain } from "../shared/config.ts";
import { onShutdown } from "../shared/lifecycle.ts";
import { createLogger } from "../shared/log.ts";
import type { Logger } from "../shared/log.ts";
import { Metrics } from "../shared/metrics.ts";
import { servicePools } from "../shared/postgres.ts";
import { prometheusTelemetry } from "../shared/telemetry.ts";
import { isDatabaseUnavailable } from "../shared/postgres_errors.ts";
import { startOtpService } from "./app.ts";
import type { RunningOtp } from "./app.ts";
import { loadOtpConfig } from "./config.ts";
import type { OtpConfig } from "./config.ts";
import { ConsoleSmsSender } from "./sms/console_sender.ts";
import type { SmsSender } from "./sms/sender.ts";

async function buildSms(config: OtpConfig, logger: Logger): Promise<SmsSender> {
  if (config.sms.provider === "console") {
    logger.warn("SMS_PROVIDER=console: codes are printed to standard output, not sent");
    return new ConsoleSmsSender();
  }
  // Loaded only when used: the Twilio client and its dependencies are large.
  const { TwilioSmsSender } = await import("./sms/twilio_sender.ts");
  const t = config.sms.twilio;
  // One call per try: the issuer retries, counting each call against the limits.
  return new TwilioSmsSender({
    accountSid: t.accountSid,
    authToken: t.authToken,
    from: t.messagingServiceSid ? undefined : t.from,
    messagingServiceSid: t.messagingServiceSid,
    baseUrl: t.apiBaseUrl,
    timeoutMs: config.smsTimeoutMs,
  });
}

await runMain(async () => {
  const config = loadOtpConfig(processEnv);
  const logger = createLogger("otp-service", config.logLevel);
  // Registered before anything starts: a signal while starting ends the process at once
  // (nothing is served yet) instead of killing it with no log line.
  let app: RunningOtp | undefined = undefined;
  onShutdown(() => app?.stop() ?? Promise.resolve(), logger);
  const { sql, background, relay } = servicePools({
    url: config.databaseUrl,
    applicationName: "otp-service",
    max: config.databasePoolMax,
  });
  const metrics = new Metrics();
  const telemetry = prometheusTelemetry(metrics);
  const broker = await connectAmqp({
    observer: telemetry,
    url: config.amqpUrl,
    logger,
    deliveryLimit: config.deliveryLimit,
    isTransient: isDatabaseUnavailable,
  });
  app = await startOtpService({
    config,
    sql,
    background,
    relay,
    broker,
    sms: await buildSms(config, logger),
    logger,
    metrics,
    telemetry,
  });
});
