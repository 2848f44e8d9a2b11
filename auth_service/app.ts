// Assembles auth-service from already-built adapters. main.ts (production) and the
// dev launcher call this with their own adapters.
import type { Broker } from "../shared/bus.ts";
import type { PlainRoute } from "../shared/connect_server.ts";
import { HmacKey } from "../shared/crypto.ts";
import { LimitsEngine } from "../shared/limits/engine.ts";
import { limitsIncludes } from "../shared/limits/schema.ts";
import type { Logger } from "../shared/log.ts";
import type { Metrics } from "../shared/metrics.ts";
import type { Sql } from "../shared/postgres.ts";
import { prometheusTelemetry } from "../shared/telemetry.ts";
import type { Telemetry } from "../shared/telemetry.ts";
import { tracedHandler } from "../shared/tracing.ts";
import { AdminService } from "../shared/gen/admin/v1/admin_pb.ts";
import { AuthService } from "../shared/gen/auth/v1/auth_pb.ts";
import { prepareRuntime } from "../shared/service_runtime.ts";
import type { RunningService } from "../shared/service_runtime.ts";
import { AUTH_QUEUE } from "../shared/topology.ts";
import { AccessTokens } from "./access_tokens.ts";
import type { AuthConfig } from "./config.ts";
import { adminGate, adminRoutes } from "./admin.ts";
import { PgAdminStore } from "./pg_admin_store.ts";
import { PgAuthStore } from "./pg_store.ts";
import type { AuthSettings, OtpGateway } from "./ports.ts";
import { authRoutes } from "./routes.ts";
import { createUseCases } from "./use_cases.ts";

export interface AuthDeps {
  config: AuthConfig;
  sql: Sql;
  /** For the sweeps, the metrics' reads and the admin API (RuntimeOptions.background). */
  background?: Sql;
  /** The outbox relay's own pool (RuntimeOptions.relay). */
  relay?: Sql;
  broker: Broker;
  otp: OtpGateway;
  logger: Logger;
  hostname?: string;
  /** Served at GET /metrics; telemetry records into it (built here when not given). */
  metrics?: Metrics;
  telemetry?: Telemetry;
  /** Extra GET routes by exact path; only the dev launcher passes any (the try-it page). */
  plainRoutes?: Record<string, PlainRoute>;
}

export type RunningAuth = RunningService;

export async function startAuthService(d: AuthDeps): Promise<RunningAuth> {
  const { config, sql, broker, logger } = d;
  const runtime = await prepareRuntime({
    sql,
    background: d.background,
    relay: d.relay,
    broker,
    logger,
    schema: "auth",
    migrationsDir: new URL("./migrations/", import.meta.url),
    metrics: d.metrics,
    includes: limitsIncludes("auth"),
  });
  const telemetry = d.telemetry ?? prometheusTelemetry(runtime.metrics);
  const store = new PgAuthStore(sql, () => runtime.relay.poke());
  // auth-service's caps are per address and per number; otp-service keeps the exact budget.
  const limits = new LimitsEngine(sql, "auth", { asyncCommit: true });
  const hmac = HmacKey.import(config.otpHmacKey);
  const tokens = await AccessTokens.create(config.jwt);
  const useCases = createUseCases(
    { store, limits, otp: d.otp, hmac, tokens, log: logger, telemetry },
    authSettings(config),
  );
  const admin = adminRoutes(
    new PgAdminStore(runtime.background, () => runtime.relay.poke()),
    config.adminApiToken,
    telemetry,
  );
  const adminAuthorized = adminGate(config.adminApiToken);
  if (!config.adminApiToken) logger.info("ADMIN_API_TOKEN unset: the admin API refuses every call");

  broker.consume(
    AUTH_QUEUE,
    tracedHandler("auth.challenge.store", AUTH_QUEUE, (m) => useCases.challenges.handle(m)),
    { prefetch: 32 },
  );
  // Keep rows a day past the longest window any limit looks back over.
  const keep = Math.max(config.sending.daySeconds, config.perAddress.windowSeconds) + 86_400;
  const sweeping = {
    limits: new LimitsEngine(runtime.background, "auth"),
    store: new PgAuthStore(runtime.background, () => runtime.relay.poke()),
  };
  return runtime.serve({
    hostname: d.hostname,
    port: config.port,
    routes: (router) => {
      authRoutes(useCases)(router);
      admin(router);
    },
    services: [AuthService, AdminService],
    // The key set is always served; the launcher's routes cannot replace it.
    plainRoutes: { ...d.plainRoutes, [JWKS_PATH]: () => jwksResponse(tokens.jwksJson) },
    trustedProxies: config.trustedProxies,
    corsAllowedOrigins: config.corsAllowedOrigins,
    // Checked before the body is read too: an unauthenticated caller gets nothing parsed.
    authorize: { [AdminService.typeName]: (h) => adminAuthorized(h.get("authorization")) },
    sweep: async () => {
      await sweeping.limits.sweep();
      await sweeping.store.sweep({
        keepSeconds: keep,
        auditRetentionSeconds: config.retention.auditDays * 86_400,
        unverifiedUserSeconds: config.retention.unverifiedUserDays * 86_400,
      });
    },
  });
}

export const JWKS_PATH = "/.well-known/jwks.json";

/** Public keys only. Verifiers cache it themselves (jose does), so no-store as everywhere. */
function jwksResponse(body: string): Response {
  return new Response(body, {
    headers: {
      "content-type": "application/jwk-set+json",
      "cache-control": "no-store",
      "x-content-type-options": "nosniff",
    },
  });
}

export function authSettings(config: AuthConfig): AuthSettings {
  return {
    codeLength: config.codes.length,
    maxAttempts: config.codes.maxAttempts,
    maxTtlSeconds: config.codes.maxTtlSeconds,
    sessionTtlSeconds: config.sessions.ttlSeconds,
    sessionIdleSeconds: config.sessions.idleSeconds,
    sessionRotationGraceSeconds: config.sessions.rotationGraceSeconds,
    sending: config.sending,
    lockAfterFailures: config.checking.lockAfterFailures,
    numberLockAfterFailures: config.checking.numberLockAfterFailures,
    lockSeconds: config.checking.lockSeconds,
    failureWindowSeconds: config.checking.failureWindowSeconds,
    perAddress: config.perAddress,
  };
}
