// Assembles auth-service from already-built adapters. main.ts (production) and the
// dev launcher call this with their own adapters.
import type { Broker } from "../shared/bus.ts";
import { HmacKey } from "../shared/crypto.ts";
import type { Logger } from "../shared/log.ts";
import type { Sql } from "../shared/postgres.ts";
import { prepareRuntime } from "../shared/service_runtime.ts";
import type { RunningService } from "../shared/service_runtime.ts";
import { AUTH_QUEUE } from "../shared/topology.ts";
import type { AuthConfig } from "./config.ts";
import { PgAuthStore } from "./pg_store.ts";
import type { AuthSettings, OtpGateway } from "./ports.ts";
import { authRoutes } from "./routes.ts";
import { createUseCases } from "./use_cases.ts";

export interface AuthDeps {
  config: AuthConfig;
  sql: Sql;
  broker: Broker;
  otp: OtpGateway;
  logger: Logger;
  hostname?: string;
}

export type RunningAuth = RunningService;

export async function startAuthService(d: AuthDeps): Promise<RunningAuth> {
  const { config, sql, broker, logger } = d;
  const runtime = await prepareRuntime({
    sql,
    broker,
    logger,
    schema: "auth",
    migrationsDir: new URL("./migrations/", import.meta.url),
  });
  const store = new PgAuthStore(sql, () => runtime.relay.poke());
  const hmac = await HmacKey.import(config.otpHmacKey);
  const useCases = createUseCases({ store, otp: d.otp, hmac, log: logger }, authSettings(config));

  broker.consume(AUTH_QUEUE, (m) => useCases.challenges.handle(m), { prefetch: 32 });
  // Keep rows a day past the longest window any limit looks back over.
  const keep = Math.max(config.sending.daySeconds, config.perAddress.windowSeconds) + 86_400;
  return runtime.serve({
    hostname: d.hostname,
    port: config.port,
    routes: authRoutes(useCases),
    trustedProxyHops: config.trustedProxyHops,
    corsAllowedOrigins: config.corsAllowedOrigins,
    sweep: () => store.sweep(keep),
  });
}

export function authSettings(config: AuthConfig): AuthSettings {
  return {
    codeLength: config.codes.length,
    maxAttempts: config.codes.maxAttempts,
    maxTtlSeconds: config.codes.maxTtlSeconds,
    sessionTtlSeconds: config.sessions.ttlSeconds,
    sessionIdleSeconds: config.sessions.idleSeconds,
    sending: config.sending,
    lockAfterFailures: config.checking.lockAfterFailures,
    lockSeconds: config.checking.lockSeconds,
    perAddress: config.perAddress,
  };
}
