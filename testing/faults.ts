// Fault scenarios: each runs on a fresh stack and, when it fails, explains itself with
// the services' last warnings; the broker is always left running.
import { ensureBrokerRunning } from "./broker.ts";
import type { Service } from "./processes.ts";
import { startStack } from "./stack.ts";
import type { Stack } from "./stack.ts";

/**
 * Runs `fn`; if it throws, prints the services' last warnings and errors (and any
 * non-JSON output) so a CI failure explains itself, then rethrows.
 */
export async function explainFailure<T>(
  services: { name: string; lines: string[] }[],
  fn: () => Promise<T>,
): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    for (const s of services) {
      const notable = s.lines.filter((l) =>
        !l.startsWith("{") ? !l.startsWith("[sms]") : /"level":"(warn|error)"/.test(l)
      );
      console.error(
        `--- ${s.name}: last warnings and errors ---\n${notable.slice(-40).join("\n")}`,
      );
    }
    throw err;
  }
}

export interface FreshStackOptions {
  /** Added to both services' environment. */
  env?: Record<string, string>;
  /** Added to otp-service's environment only (e.g. twilioEnv). */
  otpEnv?: Record<string, string>;
  beforeStart?: (amqpUrl: string) => Promise<void>;
}

/**
 * Runs a fault scenario on a fresh stack (client addresses taken from
 * X-Forwarded-For), explaining a failure with the last warnings of every service the
 * scenario ran (it pushes restarted ones onto `services`), and always leaves the
 * broker running and the stack stopped.
 */
export async function onFreshStack(
  scenario: (stack: Stack, services: Service[]) => Promise<void>,
  o: FreshStackOptions = {},
): Promise<void> {
  const env = { TRUSTED_PROXIES: "127.0.0.1/32,::1/128", ...o.env };
  const stack = await startStack({
    authEnv: env,
    otpEnv: { ...env, ...o.otpEnv },
    beforeStart: o.beforeStart,
  });
  const services: Service[] = [stack.auth, stack.otp];
  try {
    await explainFailure(services, () => scenario(stack, services));
  } finally {
    await ensureBrokerRunning();
    await stack.stop();
  }
}
