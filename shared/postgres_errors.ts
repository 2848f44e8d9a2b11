// Which driver errors mean the database is unreachable or busy right now, as opposed to
// a bug or a bad statement. Passed to the broker adapter (retry the handler in place) and
// the error mapper (answer unavailable), so neither depends on the driver.

const UNAVAILABLE_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EPIPE",
  "CONNECT_TIMEOUT",
  "CONNECTION_CLOSED",
  "CONNECTION_ENDED",
  "CONNECTION_DESTROYED",
  "57P01", // admin_shutdown (pg_terminate_backend)
  "57P02",
  "57P03", // cannot_connect_now
  "57014", // query_canceled (statement_timeout)
  "53300", // too_many_connections
  "40001", // serialization_failure
  "40P01", // deadlock_detected
]);

/** True for errors that mean "the database is not reachable or busy right now". */
export function isDatabaseUnavailable(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const code = (err as { code?: unknown }).code;
  if (typeof code === "string") {
    if (UNAVAILABLE_CODES.has(code) || code.startsWith("08")) return true;
  }
  return err.name === "ConnectionRefused" || err.name === "NotConnected" ||
    /connection|socket|ECONNREFUSED/i.test(err.message) && !("severity" in err);
}
