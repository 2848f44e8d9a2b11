// Structured JSON logs, one object per line. Callers pass fields, never secrets:
// codes, tokens and keys have no place here.
import { propagation } from "@opentelemetry/api";

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
  write: (line: string, urgent: boolean) => void = writeLine,
): Logger {
  const min = order[minLevel];
  const emit = (level: Level, msg: string, fields?: Fields) => {
    const rec: Fields = { time: new Date().toISOString(), level, service, msg, ...base };
    if (fields) {
      for (const k in fields) {
        const v = fields[k];
        rec[k] = v instanceof Error ? describe(v) : v;
      }
    }
    write(JSON.stringify(rec), order[level] >= URGENT);
  };
  // A level below the minimum is a no-op, decided once here rather than on every call.
  const noop = () => {};
  return {
    debug: order.debug >= min ? (m, f) => emit("debug", m, f) : noop,
    info: order.info >= min ? (m, f) => emit("info", m, f) : noop,
    warn: order.warn >= min ? (m, f) => emit("warn", m, f) : noop,
    error: order.error >= min ? (m, f) => emit("error", m, f) : noop,
    child: (fields) => createLogger(service, minLevel, { ...base, ...fields }, write),
  };
}

/** Warnings and errors are written at once: they are rare, and the last words of a crash. */
const URGENT = order.warn;
/** Flushed at once when this much is waiting, so a burst cannot grow without bound. */
const FLUSH_CHARS = 64 * 1024;

let pending: string[] = [];
let pendingChars = 0;
let scheduled = false;
let hooked = false;
const encoder = new TextEncoder();

/**
 * Standard output, one line per call, written in batches (not through the console API,
 * unless OpenTelemetry exports it, see below): a synchronous write per line
 * was a tenth of a busy service's CPU. Lines wait at most until the event loop's next
 * turn, and are flushed by flushLogs(), on exit (Deno.exit or the end of the program),
 * on an uncaught error, and at once for an urgent line, keeping their order.
 */
export function writeLine(line: string, urgent = false): void {
  if (!hooked) hook();
  if (exported) console.log(line);
  else buffer(line, urgent);
}

/**
 * A line that must never become an exported log record (it may hold a secret meant for
 * a developer's eyes): standard output without the console API, in the same order.
 */
export function writePrivateLine(line: string): void {
  if (!hooked) hook();
  if (!exported) return buffer(line, false);
  flushLogs();
  writeAll(encoder.encode(`${line}\n`));
}

function buffer(line: string, urgent: boolean): void {
  pending.push(line);
  pendingChars += line.length;
  if (urgent || pendingChars >= FLUSH_CHARS) {
    flushLogs();
  } else if (!scheduled) {
    scheduled = true;
    setTimeout(flushLogs, 0);
  }
}

/** Writes every waiting line now. */
export function flushLogs(): void {
  scheduled = false;
  if (pending.length === 0) return;
  const bytes = encoder.encode(pending.join("\n") + "\n");
  pending = [];
  pendingChars = 0;
  writeAll(bytes);
}

function writeAll(bytes: Uint8Array): void {
  try {
    for (let off = 0; off < bytes.length;) off += Deno.stdout.writeSync(bytes.subarray(off));
  } catch {
    // Standard output is gone (a closed pipe): there is nowhere left to write to.
  }
}

/**
 * With Deno's OpenTelemetry on (it registers a propagator), console output is exported,
 * one OTLP log record per call: lines then go through console.log one at a time.
 */
let exported = false;

function hook(): void {
  hooked = true;
  exported = propagation.fields().length > 0;
  // "unload" runs on Deno.exit() and when the program ends; the error events run before
  // an uncaught error ends the process. None of them changes how the event is handled.
  globalThis.addEventListener("unload", flushLogs);
  globalThis.addEventListener("error", flushLogs);
  globalThis.addEventListener("unhandledrejection", flushLogs);
}

function describe(err: Error): string {
  return `${err.name}: ${err.message}`;
}

/** Keeps the country code and the last two digits: enough to correlate, not to identify. */
export function maskPhone(e164: string): string {
  if (e164.length <= 6) return "***";
  return `${e164.slice(0, 3)}***${e164.slice(-2)}`;
}
