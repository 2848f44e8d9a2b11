// Docker does not run in CI, so compose.yaml and the Dockerfile are checked for shape.
import assert from "node:assert/strict";
import { parse } from "yaml";
import { METRICS, RPC_METRICS } from "./shared/metric_names.ts";
import { DEAD_LETTER_EXCHANGE, EVENTS_EXCHANGE, EXCHANGE, QUEUES } from "./shared/topology.ts";

/** A word that names one of our series: our prefixes, then snake_case. */
const METRIC_LIKE = /\b(?:rpc_server|otp|sms|auth_sessions|outbox|bus)_[a-z_]+\b/g;

interface Service {
  profiles?: string[];
  image?: string;
  volumes?: string[];
  build?: { context?: string; target?: string };
  environment?: Record<string, string | number | null> | string[];
  ports?: (string | { published?: string | number; target?: number })[];
  depends_on?: Record<string, { condition?: string }> | string[];
  healthcheck?: { test?: string | string[] };
  configs?: { source: string; target: string }[];
}

const compose = parse(
  await Deno.readTextFile(new URL("./compose.yaml", import.meta.url)),
  // Compose applies YAML merge keys (`<<: *otel`).
  { merge: true },
) as { services: Record<string, Service>; configs?: Record<string, { content?: string }> };
const dockerfile = await Deno.readTextFile(new URL("./Dockerfile", import.meta.url));
const denoJson = JSON.parse(await Deno.readTextFile(new URL("./deno.json", import.meta.url))) as {
  permissions: Record<string, { env: string[] | { allow: string[] } }>;
  workspace?: string[];
};

/** The variables a service's permission set in deno.json lets it read. */
function readable(set: string): string[] {
  const env = denoJson.permissions[set]?.env;
  assert.ok(env, `deno.json has no permission set ${set}`);
  return Array.isArray(env) ? env : env.allow;
}

function service(name: string): Service {
  const s = compose.services[name];
  assert.ok(s, `service ${name} is missing`);
  return s;
}

function env(s: Service): Record<string, string> {
  const e = s.environment ?? {};
  if (Array.isArray(e)) {
    return Object.fromEntries(e.map((kv) => [kv.split("=")[0]!, kv.split("=").slice(1).join("=")]));
  }
  return Object.fromEntries(Object.entries(e).map(([k, v]) => [k, String(v ?? "")]));
}

function publishedPorts(s: Service): string[] {
  return (s.ports ?? []).map((p) =>
    typeof p === "string" ? p.split(":").at(-2)! : `${p.published}`
  );
}

/** The script of a `deno eval` health check (the image has no curl). */
function healthScript(s: Service): string {
  const test = s.healthcheck?.test;
  assert.ok(Array.isArray(test), "health check is in exec form");
  assert.deepEqual(test.slice(0, 3), ["CMD", "deno", "eval"]);
  assert.equal(test.length, 4);
  return test[3]!;
}

const OTEL_ENV = [
  "OTEL_DENO",
  "OTEL_EXPORTER_OTLP_ENDPOINT",
  "OTEL_EXPORTER_OTLP_PROTOCOL",
  "OTEL_SERVICE_NAME",
];
const AUTH_ENV = [
  "AUTH_PORT",
  "DATABASE_URL",
  "AMQP_URL",
  "OTP_HMAC_KEY",
  "INTERNAL_API_TOKEN",
  "OTP_SERVICE_URL",
  "ADMIN_API_TOKEN",
  "JWT_SIGNING_KEY",
  "JWT_VERIFY_KEYS",
  "JWT_AUDIENCE",
  ...OTEL_ENV,
];
const OTP_ENV = [
  "OTP_PORT",
  "OTP_BIND_ADDRESS",
  "DATABASE_URL",
  "AMQP_URL",
  "OTP_HMAC_KEY",
  "INTERNAL_API_TOKEN",
  "SMS_PROVIDER",
  "TWILIO_ACCOUNT_SID",
  "TWILIO_AUTH_TOKEN",
  "TWILIO_FROM_NUMBER",
  "TWILIO_MESSAGING_SERVICE_SID",
  ...OTEL_ENV,
];
const APPS = { "auth-service": 8080, "otp-service": 8081 } as const;

const OBSERVABILITY = ["grafana", "jaeger", "prometheus"];

Deno.test("compose runs postgres, rabbitmq, auth-service and otp-service", () => {
  const always = Object.entries(compose.services).filter(([, s]) => !s.profiles);
  assert.deepEqual(
    always.map(([name]) => name).sort(),
    ["auth-service", "otp-service", "postgres", "rabbitmq"],
  );
});

Deno.test("the observability profile adds Jaeger, Prometheus and Grafana, on loopback only", () => {
  const optional = Object.entries(compose.services).filter(([, s]) => s.profiles);
  assert.deepEqual(optional.map(([name]) => name).sort(), OBSERVABILITY);
  for (const [name, s] of optional) {
    assert.deepEqual(s.profiles, ["observability"], name);
    for (const p of s.ports ?? []) assert.match(String(p), /^127\.0\.0\.1:/, name);
  }
  assert.equal(env(service("jaeger")).COLLECTOR_OTLP_ENABLED, "true");
});

Deno.test("Prometheus scrapes both services' /metrics and loads the example alerts", async () => {
  const mounts = service("prometheus").volumes ?? [];
  const file = (name: string) => {
    const m = mounts.find((v) => v.endsWith(`:/etc/prometheus/${name}:ro`));
    assert.ok(m, `${name} is mounted`);
    return new URL(m.split(":")[0]!, new URL("./", import.meta.url));
  };
  const config = parse(await Deno.readTextFile(file("prometheus.yml"))) as {
    rule_files: string[];
    scrape_configs: {
      job_name: string;
      metrics_path: string;
      static_configs: { targets: string[] }[];
    }[];
  };
  assert.deepEqual(config.rule_files, ["/etc/prometheus/alerts.yml"]);
  const jobs = Object.fromEntries(
    config.scrape_configs.map((c) => [c.job_name, [c.metrics_path, c.static_configs[0]!.targets]]),
  );
  assert.deepEqual(jobs, {
    "auth-service": ["/metrics", ["auth-service:8080"]],
    "otp-service": ["/metrics", ["otp-service:8081"]],
  });
  const alerts = parse(await Deno.readTextFile(file("alerts.yml"))) as {
    groups: { rules: { alert: string; expr: string }[] }[];
  };
  const rules = alerts.groups.flatMap((g) => g.rules);
  for (
    const metric of [
      "otp_codes_sent_total",
      "otp_codes_verified_total",
      "sms_provider_results_total",
      "outbox_oldest_age_seconds",
      "bus_dead_letters_total",
    ]
  ) {
    assert.ok(rules.some((r) => r.expr.includes(metric)), `an alert uses ${metric}`);
  }
});

Deno.test("both services export traces to Jaeger only when OTEL_DENO is set to true", () => {
  for (const name of Object.keys(APPS)) {
    const e = env(service(name));
    assert.equal(e.OTEL_DENO, "${OTEL_DENO:-false}");
    assert.equal(
      e.OTEL_EXPORTER_OTLP_ENDPOINT,
      "${OTEL_EXPORTER_OTLP_ENDPOINT:-http://jaeger:4318}",
    );
    assert.equal(e.OTEL_SERVICE_NAME, name);
  }
});

Deno.test("auth-service publishes 8080; otp-service, internal, publishes nothing", () => {
  assert.deepEqual(publishedPorts(service("auth-service")), ["8080"]);
  assert.deepEqual(publishedPorts(service("otp-service")), []);
});

Deno.test("each app service checks its /healthz and waits for healthy postgres and rabbitmq", () => {
  for (const [name, port] of Object.entries(APPS)) {
    const s = service(name);
    assert.match(healthScript(s), new RegExp(`http://127\\.0\\.0\\.1:${port}/healthz`));
    assert.deepEqual(s.depends_on, {
      postgres: { condition: "service_healthy" },
      rabbitmq: { condition: "service_healthy" },
    });
  }
});

Deno.test("the app health check exits 0 when /healthz answers and non-zero otherwise", async () => {
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    (req) =>
      new URL(req.url).pathname === "/healthz"
        ? Response.json({ status: "ok" })
        : new Response(null, { status: 404 }),
  );
  const run = async (script: string) => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["eval", script],
      stdout: "null",
      stderr: "null",
    }).output();
    return out.code;
  };
  const script = healthScript(service("auth-service")).replace(":8080", `:${server.addr.port}`);
  try {
    assert.equal(await run(script), 0);
    assert.notEqual(await run(script.replace("/healthz", "/missing")), 0);
  } finally {
    await server.shutdown();
  }
  assert.notEqual(await run(script), 0);
});

Deno.test("each app service gets only variables its permission set lets it read", () => {
  for (const [name, set] of [["auth-service", "auth"], ["otp-service", "otp"]] as const) {
    // OTEL_* are read by Deno itself at start, outside the permission system (the traces
    // test runs both services with their permission sets and these variables).
    const unreadable = Object.keys(env(service(name)))
      .filter((k) => !readable(set).includes(k) && !OTEL_ENV.includes(k));
    assert.deepEqual(unreadable, [], `${name} is given variables it may not read`);
  }
});

Deno.test("auth-service gets exactly the variables compose sets for it, and no Twilio ones", () => {
  const e = env(service("auth-service"));
  assert.deepEqual(Object.keys(e).sort(), [...AUTH_ENV].sort());
  assert.equal(e.AUTH_PORT, "8080");
  assert.equal(e.OTP_SERVICE_URL, "http://otp-service:8081");
  assert.match(e.JWT_SIGNING_KEY!, /^\$\{JWT_SIGNING_KEY:\?[^}]+\}$/, "required: no default key");
});

Deno.test("otp-service gets exactly the variables compose sets for it, SMS_PROVIDER required, Twilio ones optional", () => {
  const e = env(service("otp-service"));
  assert.deepEqual(Object.keys(e).sort(), [...OTP_ENV].sort());
  assert.equal(e.OTP_PORT, "8081");
  assert.equal(e.OTP_BIND_ADDRESS, "0.0.0.0", "reachable by auth-service on the compose network");
  assert.match(e.SMS_PROVIDER!, /^\$\{SMS_PROVIDER:\?[^}]+\}$/);
  for (const k of OTP_ENV.filter((k) => k.startsWith("TWILIO_"))) {
    assert.equal(e[k], `\${${k}:-}`);
  }
});

Deno.test("no secret is committed: every secret is a reference to the environment", () => {
  const reference = /^\$\{[A-Z_]+(:[?-][^}]*)?\}$/;
  for (const [name, s] of Object.entries(compose.services)) {
    for (const [k, v] of Object.entries(env(s))) {
      if (/KEY|TOKEN|SECRET|PASS/.test(k)) assert.match(v, reference, `${name} ${k}`);
      // Passwords inside URLs too.
      const password = /^[a-z]+:\/\/[^:/@]+:([^@]*)@/.exec(v)?.[1];
      if (password !== undefined) assert.match(password, reference, `${name} ${k}`);
    }
  }
  const e = env(service("auth-service"));
  assert.equal(e.OTP_HMAC_KEY, "${OTP_HMAC_KEY:?set OTP_HMAC_KEY}");
  assert.equal(e.INTERNAL_API_TOKEN, "${INTERNAL_API_TOKEN:?set INTERNAL_API_TOKEN}");
});

Deno.test("infrastructure: postgres 15 and rabbitmq management, both health-checked", () => {
  const pg = service("postgres");
  assert.equal(pg.image, "postgres:15");
  assert.match(JSON.stringify(pg.healthcheck?.test), /pg_isready/);
  const mq = service("rabbitmq");
  assert.match(mq.image ?? "", /^rabbitmq:3\.13-management(-alpine)?$/);
  assert.deepEqual(mq.healthcheck?.test, ["CMD", "rabbitmq-diagnostics", "-q", "ping"]);
  assert.deepEqual(publishedPorts(mq).sort(), ["15672", "5672"]);
});

Deno.test("app images build from the pinned denoland/deno image and run their tasks", () => {
  assert.match(dockerfile, /^FROM denoland\/deno:2\.9\.6 AS base$/m);
  assert.doesNotMatch(dockerfile, /^FROM (?!denoland\/deno:2\.9\.6 |base )/m);
  assert.match(dockerfile, /RUN deno install --frozen/);
  for (const [name, task] of [["auth-service", "auth"], ["otp-service", "otp"]] as const) {
    assert.deepEqual(service(name).build, { context: ".", target: name });
    assert.match(dockerfile, new RegExp(`^FROM base AS ${name}$`, "m"));
    assert.match(dockerfile, new RegExp(`CMD \\["deno", "task", "${task}"\\]`));
  }
});

Deno.test("the image copies every workspace member's deno.json before deno install", () => {
  const members = (denoJson.workspace ?? []).map((m) => m.replace(/^\.\//, "").replace(/\/$/, ""));
  const install = dockerfile.indexOf("RUN deno install");
  for (const member of members) {
    const copy = dockerfile.indexOf(`COPY ${member}/deno.json ${member}/`);
    assert.ok(copy >= 0 && copy < install, `${member}/deno.json is copied before deno install`);
  }
});

Deno.test("the alerts and the dashboard use only metrics the services expose", async () => {
  const names = new Set(
    [...Object.values(METRICS), ...Object.values(RPC_METRICS)].flatMap((m) =>
      m.kind === "histogram" ? ["_bucket", "_count", "_sum"].map((s) => m.name + s) : [m.name]
    ),
  );
  const dir = new URL("./observability/", import.meta.url);
  const texts = [
    await Deno.readTextFile(new URL("alerts.yml", dir)),
    await Deno.readTextFile(new URL("grafana/dashboards/phone-auth.json", dir)),
  ];
  const used = new Set(texts.flatMap((t) => [...t.matchAll(METRIC_LIKE)].map((m) => m[0])));
  assert.ok(used.size >= 10);
  for (const name of used) assert.ok(names.has(name), `${name} is not a metric of ours`);
});

Deno.test("each app service connects with its own database role and broker user", () => {
  const apps = [["auth-service", "auth_service"], ["otp-service", "otp_service"]] as const;
  for (const [name, user] of apps) {
    const e = env(service(name));
    assert.match(
      e.DATABASE_URL!,
      new RegExp(`^postgres://${user}:\\$\\{[A-Z_]+:\\?[^}]+\\}@postgres:`),
    );
    assert.match(e.AMQP_URL!, new RegExp(`^amqp://${user}:\\$\\{[A-Z_]+:\\?[^}]+\\}@rabbitmq:`));
  }
  assert.notEqual(
    env(service("auth-service")).DATABASE_URL,
    env(service("otp-service")).DATABASE_URL!.replaceAll("otp_service", "auth_service"),
    "different passwords",
  );
});

Deno.test("postgres creates one role per service owning only its schema", async () => {
  assert.ok(
    service("postgres").volumes?.includes(
      "./compose/postgres/roles.sql:/docker-entrypoint-initdb.d/10-roles.sql:ro",
    ),
  );
  const roles = await Deno.readTextFile(new URL("./compose/postgres/roles.sql", import.meta.url));
  assert.match(roles, /^create role auth_service login password :'auth_password';$/m);
  assert.match(roles, /^create role otp_service login password :'otp_password';$/m);
  assert.match(roles, /^create schema auth authorization auth_service;$/m);
  assert.match(roles, /^create schema otp authorization otp_service;$/m);
  assert.match(roles, /^revoke create on schema public from public;$/m);
  assert.doesNotMatch(roles, /superuser|createdb|createrole|grant all/i);
  const pg = env(service("postgres"));
  assert.equal(pg.AUTH_DB_PASSWORD, "${AUTH_DB_PASSWORD:?set AUTH_DB_PASSWORD}");
  assert.equal(pg.OTP_DB_PASSWORD, "${OTP_DB_PASSWORD:?set OTP_DB_PASSWORD}");
});

interface Permission {
  user: string;
  configure: string;
  write: string;
  read: string;
}

Deno.test("the broker's users may touch only the topology, and each consumes only its queue", () => {
  const mq = service("rabbitmq");
  assert.deepEqual(mq.configs?.map((c) => c.target).sort(), [
    "/etc/rabbitmq/conf.d/20-definitions.conf",
    "/etc/rabbitmq/definitions.json",
  ]);
  assert.equal(env(mq).RABBITMQ_DEFAULT_USER, undefined);
  // Compose writes `$$` for a literal `$`.
  const raw = compose.configs?.["rabbitmq-definitions"]?.content ?? "";
  const defs = JSON.parse(raw.replaceAll("$$", "$")) as {
    users: { name: string; password: string; tags: string[] }[];
    permissions: Permission[];
  };
  for (const u of defs.users) assert.match(u.password, /^\$\{[A-Z_]+:\?[^}]+\}$/, u.name);
  const perm = (user: string) => {
    const p = defs.permissions.find((x) => x.user === user)!;
    return {
      configure: new RegExp(p.configure),
      write: new RegExp(p.write),
      read: new RegExp(p.read),
    };
  };
  const queues = QUEUES.flatMap((q) => [q.name, q.deadLetterQueue]);
  const exchanges = [EXCHANGE, DEAD_LETTER_EXCHANGE, EVENTS_EXCHANGE];
  for (const user of ["auth_service", "otp_service"]) {
    const p = perm(user);
    for (const name of [...queues, ...exchanges]) {
      assert.ok(p.configure.test(name), `${user} ${name}`);
    }
    for (const q of queues) assert.ok(p.write.test(q), `${user} binds ${q}`);
    for (const x of [EXCHANGE, DEAD_LETTER_EXCHANGE]) {
      assert.ok(p.read.test(x), `${user} binds to ${x}`);
    }
    for (const other of ["amq.default", "other_queue", "verification.x"]) {
      assert.ok(!p.configure.test(other) && !p.write.test(other) && !p.read.test(other), other);
    }
  }
  const auth = perm("auth_service"), otp = perm("otp_service");
  assert.ok(auth.write.test(EVENTS_EXCHANGE) && !otp.write.test(EVENTS_EXCHANGE));
  assert.ok(auth.read.test("auth_service_queue") && !auth.read.test("otp_queue"));
  assert.ok(otp.read.test("otp_queue") && !otp.read.test("auth_service_queue"));
  assert.equal(
    compose.configs?.["rabbitmq-conf"]?.content?.trim(),
    "load_definitions = /etc/rabbitmq/definitions.json",
  );
});
