// Graceful shutdown: on SIGTERM or SIGINT stop taking work, drain what is in flight,
// close connections, and exit. Signals within a short window of the first count as
// one: `deno task` forwards the SIGINT or SIGTERM its process group got to a child that
// got it too. A later signal, or the deadline, forces the exit.
import type { Logger } from "./log.ts";

export interface ShutdownOptions {
  /** How long stop() may take before the exit is forced. */
  deadlineMs?: number;
  /** Signals this soon after the first are the same request to stop. */
  repeatWindowMs?: number;
}

const SIGNALS = ["SIGTERM", "SIGINT"] as const;

export function onShutdown(
  stop: () => Promise<void>,
  log: Logger,
  o: ShutdownOptions = {},
): void {
  const deadlineMs = o.deadlineMs ?? 20_000;
  const repeatWindowMs = o.repeatWindowMs ?? 500;
  let firstAt: number | undefined;
  const exit = (code: number): never => {
    // Without a listener a signal takes its default action and ends the process, so
    // nothing that happens during the exit can leave it running and deaf to signals.
    for (const [signal, listener] of listeners) Deno.removeSignalListener(signal, listener);
    Deno.exit(code);
  };
  const handler = (signal: Deno.Signal) => {
    if (firstAt !== undefined) {
      if (performance.now() - firstAt < repeatWindowMs) return;
      log.warn("second signal; exiting now", { signal });
      exit(1);
    }
    firstAt = performance.now();
    log.info("shutting down", { signal });
    const timer = setTimeout(() => {
      log.error("shutdown deadline passed; exiting", { deadline_ms: deadlineMs });
      exit(1);
    }, deadlineMs);
    stop().then(
      () => {
        clearTimeout(timer);
        log.info("stopped cleanly");
        exit(0);
      },
      (err) => {
        log.error("shutdown failed", { error: (err as Error).message });
        exit(1);
      },
    );
  };
  const listeners = SIGNALS.map((signal) => [signal, () => handler(signal)] as const);
  for (const [signal, listener] of listeners) Deno.addSignalListener(signal, listener);
}
