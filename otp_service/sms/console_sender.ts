// Development and test sender: "delivers" an SMS by printing it. This is the one
// place allowed to print a message body, so end-to-end tests can read the code
// from the service's standard output.

import { writePrivateLine } from "../../shared/log.ts";
import type { SmsMessage, SmsReceipt, SmsSender } from "./sender.ts";

const LINE = /\[sms\] to=(\+\d+) body=("(?:[^"\\]|\\.)*")\s*$/;

/** `[sms] to=+14155550123 body="..."`; the body is JSON-quoted so it always stays on one line. */
export function formatConsoleSmsLine(message: SmsMessage): string {
  return `[sms] to=${message.to} body=${JSON.stringify(message.body)}`;
}

/** The inverse of formatConsoleSmsLine; null for any other line. */
export function parseConsoleSmsLine(line: string): SmsMessage | null {
  const m = LINE.exec(line);
  if (!m || m[1] === undefined || m[2] === undefined) return null;
  try {
    return { to: m[1], body: JSON.parse(m[2]) as string };
  } catch {
    return null;
  }
}

/**
 * Straight to standard output, not through the console API: with OpenTelemetry on,
 * console output can be exported as log records, and a code must never leave that way.
 * It shares the log's buffer, so SMS lines and log lines keep their order.
 */
export function writeStdout(line: string): void {
  writePrivateLine(line);
}

export class ConsoleSmsSender implements SmsSender {
  readonly name = "console";

  constructor(private readonly write: (line: string) => void = writeStdout) {}

  send(message: SmsMessage): Promise<SmsReceipt> {
    this.write(formatConsoleSmsLine(message));
    return Promise.resolve({ providerId: `console-${crypto.randomUUID()}` });
  }
}
