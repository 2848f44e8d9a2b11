// Assembles otp-service from already-built adapters (see main.ts and the dev launcher).
import type { Broker } from "../shared/bus.ts";
import { serveConnect } from "../shared/connect_server.ts";
import { HmacKey } from "../shared/crypto.ts";
import { retryUntil, withTimeout } from "../shared/lifecycle.ts";
import type { Logger } from "../shared/log.ts";
import { OutboxRelay } from "../shared/outbox.ts";
import { migrate, migrationsApplied, readMigrations } from "../shared/postgres.ts";
import type { Sql } from "../shared/postgres.ts";
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

export interface RunningOtp {
  port: number;
  stop(): Promise<void>;
}

export async function startOtpService(d: OtpDeps): Promise<RunningOtp> {
  const { config, sql, broker, logger } = d;
  const migrations = await readMigrations(new URL("./migrations/", import.meta.url));
  await retryUntil("migrations", () => migrate(sql, "otp", migrations, logger), logger);

  const relay = new OutboxRelay({ sql, schema: "otp", broker, logger });
  const store = new PgOtpStore(sql, () => relay.poke());
  const issuer = new OtpIssuer(store, d.sms, await HmacKey.import(config.otpHmacKey), {
    codeLength: config.codes.length,
    ttlSeconds: config.codes.ttlSeconds,
    limits: { ...config.sending, globalPerHour: config.smsHourlyBudget },
    allowedCountries: config.sending.allowedCountries,
  }, logger);

  broker.consume(OTP_QUEUE, (m) => issuer.handleRequested(m), { prefetch: 16 });
  relay.start();
  const keep = config.sending.daySeconds + 86_400;
  const sweeper = setInterval(() => {
    store.sweep(keep).catch((err) => logger.warn("sweep failed", { error: err.message }));
  }, 5 * 60_000);

  const server = serveConnect({
    hostname: d.hostname,
    port: config.port,
    logger,
    routes: await otpRoutes(issuer, config.internalApiToken),
    health: {
      ready: async () => {
        const db = await withTimeout(() => migrationsApplied(sql, "otp", migrations), 1_000)
          .catch(() => false);
        return { database: db, migrations: db, broker: broker.isReady() };
      },
    },
    onListen: (addr) => logger.info("listening", { port: addr.port, sms: d.sms.name }),
  });

  return {
    port: server.port,
    async stop() {
      clearInterval(sweeper);
      await server.shutdown();
      await broker.close();
      await relay.stop();
      await sql.end({ timeout: 5 });
    },
  };
}
