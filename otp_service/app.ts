// Assembles otp-service from already-built adapters (see main.ts and the dev launcher).
import type { Broker } from "../shared/bus.ts";
import { HmacKey } from "../shared/crypto.ts";
import type { Logger } from "../shared/log.ts";
import type { Sql } from "../shared/postgres.ts";
import { prepareRuntime } from "../shared/service_runtime.ts";
import type { RunningService } from "../shared/service_runtime.ts";
import { OTP_QUEUE } from "../shared/topology.ts";
import type { OtpConfig } from "./config.ts";
import { OtpIssuer } from "./issuer.ts";
import { PgOtpStore } from "./pg_store.ts";
import { otpRoutes } from "./routes.ts";
import type { SmsSender } from "./sms/sender.ts";

export interface OtpDeps {
  config: OtpConfig;
  sql: Sql;
  broker: Broker;
  sms: SmsSender;
  logger: Logger;
  hostname?: string;
}

export type RunningOtp = RunningService;

export async function startOtpService(d: OtpDeps): Promise<RunningOtp> {
  const { config, sql, broker, logger } = d;
  const runtime = await prepareRuntime({
    sql,
    broker,
    logger,
    schema: "otp",
    migrationsDir: new URL("./migrations/", import.meta.url),
  });
  const store = new PgOtpStore(sql, () => runtime.relay.poke());
  const issuer = new OtpIssuer(store, d.sms, await HmacKey.import(config.otpHmacKey), {
    codeLength: config.codes.length,
    ttlSeconds: config.codes.ttlSeconds,
    limits: { ...config.sending, globalPerHour: config.smsHourlyBudget },
    allowedCountries: config.sending.allowedCountries,
  }, logger);
  broker.consume(OTP_QUEUE, (m) => issuer.handleRequested(m), { prefetch: 16 });
  return runtime.serve({
    hostname: d.hostname,
    port: config.port,
    routes: await otpRoutes(issuer, config.internalApiToken),
    sweep: () => store.sweep(config.sending.daySeconds + 86_400),
    listenFields: { sms: d.sms.name },
  });
}
