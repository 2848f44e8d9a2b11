// Assembles otp-service from already-built adapters (see main.ts and the dev launcher).
import type { Broker } from "../shared/bus.ts";
import { derivedHmacKey, HmacKey } from "../shared/crypto.ts";
import { LimitsEngine } from "../shared/limits/engine.ts";
import { limitsIncludes } from "../shared/limits/schema.ts";
import { sendPolicy } from "../shared/limits_config.ts";
import type { Logger } from "../shared/log.ts";
import type { Metrics } from "../shared/metrics.ts";
import type { Sql } from "../shared/postgres.ts";
import { prometheusTelemetry } from "../shared/telemetry.ts";
import type { Telemetry } from "../shared/telemetry.ts";
import { tracedHandler } from "../shared/tracing.ts";
import { prepareRuntime } from "../shared/service_runtime.ts";
import type { RunningService } from "../shared/service_runtime.ts";
import { OTP_QUEUE } from "../shared/topology.ts";
import type { OtpConfig } from "./config.ts";
import { budgetGauges, ObservedIssuer } from "./observed.ts";
import { instrumentedSms } from "./sms/instrumented.ts";
import { PgOtpStore } from "./pg_store.ts";
import { internalTokenCheck, otpRoutes } from "./routes.ts";
import { OtpService } from "../shared/gen/otp/v1/otp_pb.ts";
import type { SmsSender } from "./sms/sender.ts";

export interface OtpDeps {
  config: OtpConfig;
  sql: Sql;
  /** For the sweeps and the metrics' reads (RuntimeOptions.background). */
  background?: Sql;
  /** The outbox relay's own pool (RuntimeOptions.relay). */
  relay?: Sql;
  broker: Broker;
  sms: SmsSender;
  logger: Logger;
  /** Defaults to config.bindAddress. */
  hostname?: string;
  /** Backoff between provider calls; shorter only in tests. */
  retryBaseDelayMs?: number;
  /** Served at GET /metrics; telemetry records into it (built here when not given). */
  metrics?: Metrics;
  telemetry?: Telemetry;
}

export type RunningOtp = RunningService;

export async function startOtpService(d: OtpDeps): Promise<RunningOtp> {
  const { config, sql, broker, logger } = d;
  const runtime = await prepareRuntime({
    sql,
    background: d.background,
    relay: d.relay,
    broker,
    logger,
    schema: "otp",
    migrationsDir: new URL("./migrations/", import.meta.url),
    includes: limitsIncludes("otp"),
    metrics: d.metrics,
  });
  const telemetry = d.telemetry ?? prometheusTelemetry(runtime.metrics);
  budgetGauges(runtime.metrics, runtime.background, { perHour: config.smsHourlyBudget });
  const store = new PgOtpStore(sql, () => runtime.relay.poke());
  // Admissions commit without waiting for the WAL flush, so the rows every SMS shares
  // (the budget, a country, a prefix) are locked for a statement, not for a disk flush.
  // The budget still holds exactly: no SMS goes out before the issuer's next write for
  // that request (beginAttempt) commits synchronously, and that flush carries every
  // earlier commit, the admission's too. A crash before it loses a charge of an SMS
  // that was never sent.
  const limits = new LimitsEngine(sql, "otp", { asyncCommit: true });
  const s = config.sending;
  const issuer = ObservedIssuer.create(
    telemetry,
    store,
    limits,
    instrumentedSms(d.sms, telemetry),
    {
      mac: HmacKey.import(config.otpHmacKey),
      code: derivedHmacKey(config.otpHmacKey, "otp.v1 challenge codes"),
    },
    {
      codeLength: config.codes.length,
      ttlSeconds: config.codes.ttlSeconds,
      maxAttempts: config.smsRetryAttempts,
      sending: sendPolicy(s),
      budgetPerHour: config.smsHourlyBudget,
      destinations: {
        allowedCountries: s.allowedCountries,
        allowedNumberTypes: s.allowedNumberTypes,
      },
      retryBaseDelayMs: d.retryBaseDelayMs,
    },
    logger,
  );
  broker.consume(
    OTP_QUEUE,
    tracedHandler("otp.request.receive", OTP_QUEUE, (m) => issuer.handleRequested(m)),
    { prefetch: 16 },
  );
  const authorize = internalTokenCheck(config.internalApiToken);
  const sweeping = {
    store: new PgOtpStore(runtime.background),
    limits: new LimitsEngine(runtime.background, "otp"),
  };
  return runtime.serve({
    hostname: d.hostname ?? config.bindAddress,
    port: config.port,
    routes: otpRoutes(issuer, authorize),
    services: [OtpService],
    // A caller without the token is refused before its body is read or decoded.
    authorize: { [OtpService.typeName]: authorize },
    sweep: async () => {
      await sweeping.store.sweep(config.sending.daySeconds + 86_400);
      await sweeping.limits.sweep();
    },
    listenFields: { sms: d.sms.name },
  });
}
