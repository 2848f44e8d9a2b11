// Graceful shutdown: on SIGTERM or SIGINT stop taking work, drain what is in flight,
// close connections, and exit; a second signal or the deadline forces the exit.
import type { Logger } from "./log.ts";

export function onShutdown(stop: () => Promise<void>, log: Logger, deadlineMs = 20_000): void {
  let stopping = false;
  const handler = (signal: Deno.Signal) => {
    if (stopping) {
      log.warn("second signal; exiting now", { signal });
      Deno.exit(1);
    }
    stopping = true;
    log.info("shutting down", { signal });
    const timer = setTimeout(() => {
      log.error("shutdown deadline passed; exiting", { deadline_ms: deadlineMs });
      Deno.exit(1);
    }, deadlineMs);
    stop().then(
      () => {
        clearTimeout(timer);
        log.info("stopped cleanly");
        Deno.exit(0);
      },
      (err) => {
        log.error("shutdown failed", { error: (err as Error).message });
        Deno.exit(1);
      },
    );
  };
  Deno.addSignalListener("SIGTERM", () => handler("SIGTERM"));
  Deno.addSignalListener("SIGINT", () => handler("SIGINT"));
}

/** Retries `fn` with backoff until it succeeds or `deadlineMs` passes (e.g. DB at start). */
export async function retryUntil<T>(
  what: string,
  fn: () => Promise<T>,
  log: Logger,
  deadlineMs = 30_000,
): Promise<T> {
  const end = Date.now() + deadlineMs;
  for (let attempt = 1;; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (Date.now() > end) throw err;
      const wait = Math.min(200 * 2 ** attempt, 3_000);
      log.warn(`${what} failed; retrying`, { attempt, error: (err as Error).message });
      await new Promise((r) => setTimeout(r, wait));
    }
  }
}

/** Resolves `fn()` or rejects after `ms`, for health probes that must answer promptly. */
export function withTimeout<T>(fn: () => Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error("timed out")), ms);
    fn().then((v) => {
      clearTimeout(t);
      resolve(v);
    }, (e) => {
      clearTimeout(t);
      reject(e);
    });
  });
}
