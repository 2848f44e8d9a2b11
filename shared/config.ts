// Reads and validates configuration once, at start. Every failure names the
// variable in one line and never echoes a secret's value.

export class ConfigError extends Error {
  constructor(readonly variable: string, problem: string) {
    super(`config: ${variable} ${problem}`);
    this.name = "ConfigError";
  }
}

export type Env = (name: string) => string | undefined;

/** Reads from the process environment; a variable we may not read counts as unset. */
export const processEnv: Env = (name) => {
  try {
    const v = Deno.env.get(name);
    return v === "" ? undefined : v;
  } catch {
    return undefined;
  }
};

export class ConfigReader {
  constructor(private readonly env: Env) {}

  string(name: string, fallback?: string): string {
    const v = this.env(name) ?? fallback;
    if (v === undefined) throw new ConfigError(name, "is required but not set");
    return v;
  }

  optional(name: string): string | undefined {
    return this.env(name);
  }

  /** A secret: required, at least `minLength` characters; the value is never printed. */
  secret(name: string, minLength = 16, fallback?: string): string {
    const v = this.env(name) ?? fallback;
    if (v === undefined) throw new ConfigError(name, "is required but not set");
    if (v.length < minLength) {
      throw new ConfigError(name, `must be at least ${minLength} characters`);
    }
    return v;
  }

  int(name: string, fallback: number, min = 0, max = Number.MAX_SAFE_INTEGER): number {
    const raw = this.env(name);
    if (raw === undefined) return fallback;
    if (!/^\d+$/.test(raw)) throw new ConfigError(name, `must be a whole number, got "${raw}"`);
    const n = Number(raw);
    if (n < min || n > max) throw new ConfigError(name, `must be between ${min} and ${max}`);
    return n;
  }

  port(name: string, fallback: number): number {
    return this.int(name, fallback, 0, 65535);
  }

  url(name: string, fallback: string, protocols: string[]): string {
    const raw = this.env(name) ?? fallback;
    let u: URL;
    try {
      u = new URL(raw);
    } catch {
      throw new ConfigError(name, "is not a valid URL");
    }
    if (!protocols.includes(u.protocol)) {
      throw new ConfigError(name, `must use one of ${protocols.join(", ")}`);
    }
    return raw;
  }

  oneOf<T extends string>(name: string, choices: readonly T[], fallback: T): T {
    const raw = this.env(name) ?? fallback;
    if (!(choices as readonly string[]).includes(raw)) {
      throw new ConfigError(name, `must be one of ${choices.join(", ")}, got "${raw}"`);
    }
    return raw as T;
  }

  list(name: string): string[] {
    const raw = this.env(name);
    if (raw === undefined) return [];
    return raw.split(",").map((s) => s.trim()).filter((s) => s.length > 0);
  }
}

/** Runs a service's start function; a config error ends the process with one line. */
export async function runMain(start: () => Promise<void>): Promise<void> {
  try {
    await start();
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(err.message);
      Deno.exit(78);
    }
    throw err;
  }
}

/** What both services read the same way. */
export interface CommonConfig {
  databaseUrl: string;
  amqpUrl: string;
  otpHmacKey: string;
  internalApiToken: string;
  logLevel: "debug" | "info" | "warn" | "error";
  deliveryLimit: number;
  /** PostgreSQL connections the service's pool opens at most (see README "Performance"). */
  databasePoolMax: number;
}

export const COMMON_ENV = [
  "DATABASE_URL",
  "AMQP_URL",
  "OTP_HMAC_KEY",
  "INTERNAL_API_TOKEN",
  "LOG_LEVEL",
  "AMQP_DELIVERY_LIMIT",
  "DATABASE_POOL_MAX",
] as const;

export function readCommon(c: ConfigReader): CommonConfig {
  return {
    databaseUrl: c.url(
      "DATABASE_URL",
      "postgres://postgres@127.0.0.1:5432/postgres",
      ["postgres:", "postgresql:"],
    ),
    amqpUrl: c.url("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672", ["amqp:", "amqps:"]),
    otpHmacKey: c.secret("OTP_HMAC_KEY", 32),
    internalApiToken: c.secret("INTERNAL_API_TOKEN", 32),
    logLevel: c.oneOf("LOG_LEVEL", ["debug", "info", "warn", "error"] as const, "info"),
    deliveryLimit: c.int("AMQP_DELIVERY_LIMIT", 5, 1, 100),
    databasePoolMax: c.int("DATABASE_POOL_MAX", 4, 1, 100),
  };
}
