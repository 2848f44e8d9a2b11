// auth-service entry point in production: reads the configuration from the environment,
// builds the real adapters (PostgreSQL, RabbitMQ, the otp-service client) and starts the
// service. `deno task dev` starts the same service from its own configuration and adapters.
import { connectAmqp } from "../shared/amqp.ts";
import { processEnv, runMain } from "../shared/config.ts";
import { onShutdown } from "../shared/lifecycle.ts";
import { createLogger } from "../shared/log.ts";
import { Metrics } from "../shared/metrics.ts";
import { servicePools } from "../shared/postgres.ts";
import { prometheusTelemetry } from "../shared/telemetry.ts";
import { isDatabaseUnavailable } from "../shared/postgres_errors.ts";
import { startAuthService } from "./app.ts";
import type { RunningAuth } from "./app.ts";
import { loadAuthConfig } from "./config.ts";
import { createOtpGateway } from "./otp_client.ts";

await runMain(async () => {
  const config = loadAuthConfig(processEnv);
  const logger = createLogger("auth-service", config.logLevel);
  // Registered before anything starts: a signal while starting ends the process at once
  // (nothing is served yet) instead of killing it with no log line.
  let app: RunningAuth | undefined = undefined;
  onShutdown(() => app?.stop() ?? Promise.resolve(), logger);
  const { sql, background, relay } = servicePools({
    url: config.databaseUrl,
    applicationName: "auth-service",
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
  const otp = createOtpGateway(config.otpServiceUrl, config.internalApiToken, logger);
  app = await startAuthService({
    config,
    sql,
    background,
    relay,
    broker,
    otp,
    logger,
    metrics,
    telemetry,
  });
});
