// Assembles auth-service from already-built adapters. main.ts (production) and the
// dev launcher call this with their own adapters.
import type { Broker } from "../shared/bus.ts";
import { serveConnect } from "../shared/connect_server.ts";
import { HmacKey } from "../shared/crypto.ts";
import { retryUntil, withTimeout } from "../shared/lifecycle.ts";
import type { Logger } from "../shared/log.ts";
import { OutboxRelay } from "../shared/outbox.ts";
import { migrate, migrationsApplied, readMigrations } from "../shared/postgres.ts";
import type { Sql } from "../shared/postgres.ts";
import { AUTH_QUEUE } from "../shared/topology.ts";
import type { AuthConfig } from "./config.ts";
import { PgAuthStore } from "./pg_store.ts";
import { authRoutes } from "./routes.ts";
import { AuthService } from "./service.ts";
import type { OtpGateway } from "./service.ts";

export interface AuthDeps {
  config: AuthConfig;
  sql: Sql;
  broker: Broker;
  otp: OtpGateway;
  logger: Logger;
  hostname?: string;
}

export interface RunningAuth {
  port: number;
  stop(): Promise<void>;
}

export async function startAuthService(d: AuthDeps): Promise<RunningAuth> {
  const { config, sql, broker, logger } = d;
  const migrations = await readMigrations(new URL("./migrations/", import.meta.url));
  await retryUntil("migrations", () => migrate(sql, "auth", migrations, logger), logger);

  const relay = new OutboxRelay({ sql, schema: "auth", broker, logger });
  const store = new PgAuthStore(sql, () => relay.poke());
  const service = new AuthService(store, d.otp, await HmacKey.import(config.otpHmacKey), {
    codeLength: config.codes.length,
    maxAttempts: config.codes.maxAttempts,
    maxTtlSeconds: config.codes.maxTtlSeconds,
    sessionTtlSeconds: config.sessions.ttlSeconds,
    sessionIdleSeconds: config.sessions.idleSeconds,
    sending: config.sending,
    lockAfterFailures: config.checking.lockAfterFailures,
    lockSeconds: config.checking.lockSeconds,
    perAddress: config.perAddress,
  }, logger);

  broker.consume(AUTH_QUEUE, (m) => service.acceptIssued(m), { prefetch: 32 });
  relay.start();
  // Any replica may sweep; deletes are idempotent. Keep rows a day past the longest window.
  const keep = Math.max(config.sending.daySeconds, config.perAddress.windowSeconds) + 86_400;
  const sweeper = setInterval(() => {
    store.sweep(keep).catch((err) => logger.warn("sweep failed", { error: err.message }));
  }, 5 * 60_000);

  const server = serveConnect({
    hostname: d.hostname,
    port: config.port,
    logger,
    routes: authRoutes(service),
    trustedProxyHops: config.trustedProxyHops,
    health: {
      ready: async () => {
        const db = await withTimeout(() => migrationsApplied(sql, "auth", migrations), 1_000)
          .catch(() => false);
        return { database: db, migrations: db, broker: broker.isReady() };
      },
    },
    onListen: (addr) => logger.info("listening", { port: addr.port }),
  });

  return {
    port: server.port,
    async stop() {
      clearInterval(sweeper);
      await server.shutdown();
      await relay.stop();
      await broker.close();
      await sql.end({ timeout: 5 });
    },
  };
}
