// What both services do around their domain: migrate their schema, relay their outbox,
// sweep old rows, serve Connect with health checks, and stop in the right order.
import type { ConnectRouter } from "@connectrpc/connect";
import type { DescService } from "@bufbuild/protobuf";
import type { Broker } from "./bus.ts";
import { serveConnect } from "./connect_server.ts";
import type { Authorize, PlainRoute } from "./connect_server.ts";
import type { Cidr } from "./ip.ts";
import { retryUntil, withTimeout } from "./async.ts";
import type { Logger } from "./log.ts";
import { OutboxRelay } from "./outbox.ts";
import { expandIncludes, migrate, migrationsApplied, readMigrations } from "./migrations.ts";
import type { Sql } from "./postgres.ts";
import { isDatabaseUnavailable } from "./postgres_errors.ts";
import { Metrics, rpcMetrics } from "./metrics.ts";
import { METRICS } from "./metric_names.ts";

export interface RuntimeOptions {
  /** The pool requests and consumers use. */
  sql: Sql;
  /**
   * A pool of its own for work no request waits on (the sweeps, the metrics' reads, the
   * admin API); `sql` when not given. The serving pool is small and puts statements
   * behind one another on its busy connections, so a long one there would hold up the
   * requests queued after it.
   */
  background?: Sql;
  /**
   * The outbox relay's pool (`sql` when not given): its batch is a transaction that
   * waits for the broker's confirms, which must not hold a serving connection meanwhile.
   */
  relay?: Sql;
  broker: Broker;
  logger: Logger;
  /** The schema the service owns, and where its numbered migrations live. */
  schema: string;
  migrationsDir: URL;
  /** SQL a migration pulls in with a line `-- include: NAME` (code both services install). */
  includes?: Record<string, string>;
  /** Where the service's metrics go; served at GET /metrics. */
  metrics?: Metrics;
}

export interface Runtime {
  relay: OutboxRelay;
  metrics: Metrics;
  /** RuntimeOptions.background, or the serving pool. */
  background: Sql;
  /** Starts the relay, the periodic sweep and the server; resolves once listening. */
  serve(o: ServeParts): RunningService;
}

export interface ServeParts {
  hostname?: string;
  port: number;
  trustedProxies?: readonly Cidr[];
  routes: (router: ConnectRouter) => void;
  /** Exact origins browsers may call from (none: no CORS headers). */
  corsAllowedOrigins?: readonly string[];
  /** Plain GET routes beside the RPCs, by exact path. */
  plainRoutes?: Record<string, PlainRoute>;
  /** Header checks run before a call's body is read, by service type name. */
  authorize?: Record<string, Authorize>;
  /** The services `routes` serves, for the RPC metrics' label sets. */
  services: readonly DescService[];
  /** Deletes rows no limit or lookup needs any more; run every few minutes. */
  sweep: () => Promise<void>;
  listenFields?: Record<string, unknown>;
}

export interface RunningService {
  port: number;
  /**
   * Stops consuming first, so a stopping replica takes no new message; then stops
   * taking requests and drains them, stops relaying, closes the broker and the pool.
   */
  stop(): Promise<void>;
}

const SWEEP_EVERY_MS = 5 * 60_000;
/** Bounds the HTTP drain; with the broker's own bounds the stop stays under 20 s. */
const HTTP_DRAIN_MS = 8_000;

export async function prepareRuntime(o: RuntimeOptions): Promise<Runtime> {
  const { sql, broker, logger, schema } = o;
  const background = o.background ?? sql;
  const migrations = expandIncludes(await readMigrations(o.migrationsDir), o.includes);
  await retryUntil("migrations", () => migrate(sql, schema, migrations, logger), { log: logger });
  const relaySql = o.relay ?? sql;
  const relay = new OutboxRelay({ sql: relaySql, schema, broker, logger });
  const metrics = o.metrics ?? new Metrics();
  outboxGauges(metrics, background, schema);
  return {
    relay,
    metrics,
    background,
    serve(p: ServeParts): RunningService {
      relay.start();
      // Any replica may sweep: the deletes are idempotent.
      const sweeper = setInterval(() => {
        p.sweep().catch((err) => logger.warn("sweep failed", { error: err.message }));
      }, SWEEP_EVERY_MS);
      const rpc = rpcMetrics(metrics, p.services);
      const server = serveConnect({
        hostname: p.hostname,
        port: p.port,
        logger,
        routes: p.routes,
        trustedProxies: p.trustedProxies,
        errors: { isDatabaseUnavailable },
        corsAllowedOrigins: p.corsAllowedOrigins,
        plainRoutes: { ...p.plainRoutes, "/metrics": () => metrics.response() },
        authorize: p.authorize,
        interceptors: [rpc.interceptor],
        onRefusedByAuthorize: (service, method, err) => rpc.refused(service, method, err.code),
        health: {
          ready: async () => {
            const db = await withTimeout(() => migrationsApplied(sql, schema, migrations), 1_000)
              .catch(() => false);
            return { database: db, migrations: db, broker: broker.isReady() };
          },
        },
        onListen: (addr) => logger.info("listening", { port: addr.port, ...p.listenFields }),
      });
      return {
        port: server.port,
        async stop() {
          clearInterval(sweeper);
          // Cancelling the consumers comes first (stopConsuming sends basic.cancel before
          // it awaits anything); the handlers in flight and the requests in flight then
          // drain together, each bounded, so the whole stop fits in the exit deadline.
          const consumersDrained = broker.stopConsuming();
          const requestsDrained = withTimeout(() => server.shutdown(), HTTP_DRAIN_MS).catch(() =>
            logger.warn("requests still running at shutdown; their connections will drop")
          );
          await Promise.all([consumersDrained, requestsDrained]);
          await relay.stop();
          await broker.close();
          await sql.end({ timeout: 5 });
          if (background !== sql) await background.end({ timeout: 5 });
          if (relaySql !== sql) await relaySql.end({ timeout: 5 });
        },
      };
    },
  };
}

/** Outbox depth and oldest age, read in one query per scrape. */
function outboxGauges(metrics: Metrics, sql: Sql, schema: string): void {
  let pending: Promise<{ depth: number; age: number }> | undefined;
  const read = () =>
    pending ??= sql.unsafe<{ depth: number; age: number }[]>(
      `select count(*)::float8 as depth,
              coalesce(extract(epoch from now() - min(created_at)), 0)::float8 as age
         from ${schema}.outbox`,
    ).then((rows) => rows[0]!).finally(() => (pending = undefined));
  metrics.gauge(METRICS.outboxDepth, async () => (await read()).depth);
  metrics.gauge(METRICS.outboxOldestAge, async () => Math.max(0, (await read()).age));
}
