// Retries transient SMS failures (5xx, 429, timeouts) with capped exponential
// backoff and full jitter, so that many instances retrying together spread out.
// Permanent failures and anything that is not an SmsError fail at once.

import { backoff, delay } from "../../shared/async.ts";
import { type Logger, maskPhone } from "../../shared/log.ts";
import { SmsError, type SmsMessage, type SmsReceipt, type SmsSender } from "./sender.ts";

export interface RetryOptions {
  /** Total tries, including the first. */
  attempts?: number;
  baseDelayMs?: number;
  maxDelayMs?: number;
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  /** Returns a number in [0, 1); injectable so tests can pin the jitter. */
  random?: () => number;
  logger?: Logger;
  /**
   * Runs before every try, the first included; throwing stops the sending with that
   * error. Where each try is counted against limits that outlive this process.
   */
  beforeAttempt?: (attempt: number) => Promise<void>;
}

export function withRetries(sender: SmsSender, opts: RetryOptions = {}): SmsSender {
  const attempts = Math.max(1, opts.attempts ?? 4);
  const baseDelayMs = opts.baseDelayMs ?? 200;
  const maxDelayMs = opts.maxDelayMs ?? 5000;
  const sleep = opts.sleep ?? ((ms: number, signal?: AbortSignal) => delay(ms, { signal }));
  const random = opts.random ?? Math.random;

  return {
    name: sender.name,
    async send(message: SmsMessage, signal?: AbortSignal): Promise<SmsReceipt> {
      for (let attempt = 1;; attempt++) {
        await opts.beforeAttempt?.(attempt);
        try {
          return await sender.send(message, signal);
        } catch (err) {
          const retryable = err instanceof SmsError && !err.permanent;
          if (!retryable || attempt >= attempts || signal?.aborted) throw err;
          const delayMs = backoff(attempt, {
            baseMs: baseDelayMs,
            maxMs: maxDelayMs,
            jitter: "full",
            random,
          });
          opts.logger?.warn("sms send failed, retrying", {
            sender: sender.name,
            to: maskPhone(message.to),
            attempt,
            of: attempts,
            delayMs,
            status: err.status,
            providerCode: err.providerCode,
            error: err.message,
          });
          try {
            await sleep(delayMs, signal);
          } catch {
            throw err; // aborted while waiting: the send's failure is the useful error
          }
        }
      }
    },
  };
}
