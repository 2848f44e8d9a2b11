// `deno task dev`: both services in one process with zero infrastructure: embedded
// PostgreSQL (PGlite, same migrations), an in-process broker with the same topology,
// the console SMS sender, generated secrets, and a page at / to try the whole journey in
// a browser. DATABASE_URL / AMQP_URL, when set, switch to the real ones. Development only.
import { connectAmqp } from "../shared/amqp.ts";
import type { Broker } from "../shared/bus.ts";
import { ConfigReader, processEnv, runMain } from "../shared/config.ts";
import type { Env } from "../shared/config.ts";
import { randomToken } from "../shared/crypto.ts";
import { onShutdown } from "../shared/lifecycle.ts";
import { createLogger } from "../shared/log.ts";
import { createPool } from "../shared/postgres.ts";
import { isDatabaseUnavailable } from "../shared/postgres_errors.ts";
import { startAuthService } from "../auth_service/app.ts";
import { generateDevSigningKey } from "../auth_service/access_tokens.ts";
import { loadAuthConfig } from "../auth_service/config.ts";
import { createOtpGateway } from "../auth_service/otp_client.ts";
import { startOtpService } from "../otp_service/app.ts";
import { loadOtpConfig } from "../otp_service/config.ts";
import { ConsoleSmsSender, writeStdout } from "../otp_service/sms/console_sender.ts";
import type { DeliveryObserver } from "../shared/bus.ts";
import { Metrics } from "../shared/metrics.ts";
import { prometheusTelemetry } from "../shared/telemetry.ts";
import { OTP_QUEUE } from "../shared/topology.ts";
import { MemoryBroker } from "./memory_broker.ts";
import { PGLITE_POOL_MAX, startPglite } from "./pglite_server.ts";
import { webRoutes } from "./web/assets.ts";

const bold = (s: string) => Deno.noColor ? s : `\x1b[1m${s}\x1b[0m`;

await runMain(async () => {
  const log = createLogger("dev", "info");
  // Registered before anything starts, so a Ctrl-C while starting is handled too.
  // Both services stop together (each cancels its consumers first); the database last.
  const services: { stop(): Promise<void> }[] = [];
  let database: { close(): Promise<void> } | undefined = undefined;
  onShutdown(async () => {
    await Promise.all(services.map((s) => s.stop()));
    await database?.close();
  }, log);
  const generated: Record<string, string> = {
    OTP_HMAC_KEY: randomToken(),
    INTERNAL_API_TOKEN: randomToken(),
    // Dev mode is the one place that picks the console sender by itself.
    SMS_PROVIDER: "console",
    JWT_SIGNING_KEY: await generateDevSigningKey(),
  };
  // Dev defaults: real values win, secrets are generated for this run only.
  const env: Env = (name) => processEnv(name) ?? generated[name];
  const reader = new ConfigReader(processEnv);

  if (!processEnv("JWT_SIGNING_KEY")) {
    // Tokens signed with it stop verifying when dev restarts: a new key each run.
    log.warn("JWT_SIGNING_KEY not set: generated an Ed25519 key for this run only");
  }

  const realDb = reader.optional("DATABASE_URL");
  const dataDir = reader.optional("DEV_DATA_DIR") ?? ".dev/pgdata";
  const pg = realDb ? undefined : await startPglite({ dataDir, logger: log });
  database = pg;
  const databaseUrl = realDb ?? pg!.url;
  // PGlite runs one statement at a time; more connections would only queue.
  const poolSize = pg ? PGLITE_POOL_MAX : 10;

  const realAmqp = reader.optional("AMQP_URL");
  const otpConfig = loadOtpConfig(env);
  const authConfig = loadAuthConfig(env);
  const makeBroker = async (): Promise<Broker> =>
    realAmqp
      ? await connectAmqp({
        url: realAmqp,
        logger: log,
        deliveryLimit: otpConfig.deliveryLimit,
        isTransient: isDatabaseUnavailable,
        observer,
      })
      : shared;
  const otpMetrics = new Metrics();
  const authMetrics = new Metrics();
  const otpTelemetry = prometheusTelemetry(otpMetrics);
  const authTelemetry = prometheusTelemetry(authMetrics);
  // One broker serves both: a queue's deliveries count for the service consuming it.
  const of = (queue: string) => queue === OTP_QUEUE ? otpTelemetry : authTelemetry;
  const observer: DeliveryObserver = {
    redelivered: (queue) => of(queue).redelivered(queue),
    deadLettered: (queue, reason) => of(queue).deadLettered(queue, reason),
  };
  const shared: Broker = new MemoryBroker(log, {
    deliveryLimit: otpConfig.deliveryLimit,
    isTransient: isDatabaseUnavailable,
    observer,
  });

  const otp = await startOtpService({
    config: { ...otpConfig, sms: { provider: "console" } },
    sql: createPool({ url: databaseUrl, applicationName: "otp-service", max: poolSize }),
    broker: await makeBroker(),
    // The code is the point of dev mode: make it impossible to miss.
    // The line itself stays as the console sender wrote it, so tools can parse it.
    // Straight to standard output like the console sender: never an OpenTelemetry log.
    sms: new ConsoleSmsSender((line) => writeStdout(`\n${bold("📱 SMS")} ${line}\n`)),
    logger: createLogger("otp-service", otpConfig.logLevel),
    metrics: otpMetrics,
    telemetry: otpTelemetry,
    hostname: "127.0.0.1",
  });
  services.push(otp);
  const authLog = createLogger("auth-service", authConfig.logLevel);
  const auth = await startAuthService({
    config: authConfig,
    sql: createPool({ url: databaseUrl, applicationName: "auth-service", max: poolSize }),
    broker: await makeBroker(),
    otp: createOtpGateway(
      `http://127.0.0.1:${otp.port}`,
      env("INTERNAL_API_TOKEN")!,
      authLog,
    ),
    logger: authLog,
    metrics: authMetrics,
    telemetry: authTelemetry,
    hostname: "127.0.0.1",
    plainRoutes: webRoutes(),
  });
  services.push(auth);

  const a = `http://127.0.0.1:${auth.port}`;
  console.log([
    "",
    bold("phone auth is running (development mode)"),
    `  auth-service  ${a}`,
    `  try it        ${bold(`${a}/`)}  (open it in a browser)`,
    `  otp-service   http://127.0.0.1:${otp.port}`,
    `  database      ${pg ? `embedded PGlite in ${dataDir}` : "DATABASE_URL"}`,
    `  broker        ${realAmqp ? "AMQP_URL" : "in-process (not durable; dev only)"}`,
    `  key set       ${a}/.well-known/jwks.json`,
    "",
    "Or with curl:",
    `  curl -s ${a}/auth.v1.AuthService/SignupWithPhoneNumber \\`,
    `    -H 'content-type: application/json' -d '{"phone_number": "+14155550123"}'`,
    "",
    "The code appears below on a 📱 SMS line. Ctrl-C stops everything.",
    "",
  ].join("\n"));
});
