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
