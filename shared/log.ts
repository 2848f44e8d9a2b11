// Structured JSON logs, one object per line. Callers pass fields, never secrets:
// codes, tokens and keys have no place here.

export type Level = "debug" | "info" | "warn" | "error";
const order: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export type Fields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: Fields): void;
  info(msg: string, fields?: Fields): void;
  warn(msg: string, fields?: Fields): void;
  error(msg: string, fields?: Fields): void;
  child(fields: Fields): Logger;
}

export function createLogger(
  service: string,
  minLevel: Level = "info",
  base: Fields = {},
  write: (line: string) => void = (line) => console.log(line),
): Logger {
  const emit = (level: Level, msg: string, fields?: Fields) => {
    if (order[level] < order[minLevel]) return;
    const rec: Fields = { time: new Date().toISOString(), level, service, msg, ...base };
    if (fields) {
      for (const [k, v] of Object.entries(fields)) rec[k] = v instanceof Error ? describe(v) : v;
    }
    write(JSON.stringify(rec));
  };
  return {
    debug: (m, f) => emit("debug", m, f),
    info: (m, f) => emit("info", m, f),
    warn: (m, f) => emit("warn", m, f),
    error: (m, f) => emit("error", m, f),
    child: (fields) => createLogger(service, minLevel, { ...base, ...fields }, write),
  };
}

function describe(err: Error): string {
  return `${err.name}: ${err.message}`;
}

/** Keeps the country code and the last two digits: enough to correlate, not to identify. */
export function maskPhone(e164: string): string {
  if (e164.length <= 6) return "***";
  return `${e164.slice(0, 3)}***${e164.slice(-2)}`;
}
