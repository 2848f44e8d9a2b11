// Small waiting helpers, written once: every pause, deadline, backoff and poll in the
// services and their tests goes through these, so each one is bounded and abortable in
// the same way.
import type { Logger } from "./log.ts";

/**
 * Resolves after `ms` (a real timer even for 0, so a tight loop cannot starve the event
 * loop); rejects with the signal's reason if it aborts first.
 */
export function delay(ms: number, o: { signal?: AbortSignal } = {}): Promise<void> {
  const { signal } = o;
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, Math.max(0, ms));
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

export class TimeoutError extends Error {
  constructor(message = "timed out") {
    super(message);
    this.name = "TimeoutError";
  }
}

export interface DeadlineOptions {
  signal?: AbortSignal;
  /** The error to reject with; a TimeoutError (or the signal's reason) by default. */
  error?: (cause: "timeout" | "abort") => unknown;
}

/** Settles with `work`, or rejects once `ms` passed or the signal aborted, whichever is first. */
export function deadline<T>(work: Promise<T>, ms: number, o: DeadlineOptions = {}): Promise<T> {
  const { signal } = o;
  const fail = (cause: "timeout" | "abort") =>
    o.error ? o.error(cause) : cause === "abort" ? signal?.reason : new TimeoutError();
  return new Promise<T>((resolve, reject) => {
    if (signal?.aborted) return reject(fail("abort"));
    const finish = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    };
    const onAbort = () => {
      finish();
      reject(fail("abort"));
    };
    const timer = setTimeout(() => {
      finish();
      reject(fail("timeout"));
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
    work.then(
      (value) => (finish(), resolve(value)),
      (err) => (finish(), reject(err)),
    );
  });
}

/** Resolves `fn()` or rejects with a TimeoutError after `ms`. */
export function withTimeout<T>(fn: () => Promise<T>, ms: number): Promise<T> {
  return deadline(fn(), ms);
}

/** True when `p` settles (either way) within `ms`, false otherwise; never rejects. */
export function settlesWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  return deadline(p.then(() => true, () => true), ms).catch(() => false);
}

export interface BackoffOptions {
  /** The wait before the second try (attempt 1). */
  baseMs: number;
  maxMs: number;
  /**
   * "full": a uniform pick in [0, wait) (spreads many clients retrying together best);
   * a fraction f: wait × (1 ± f); 0 or absent: the wait itself.
   */
  jitter?: "full" | number;
  /** A number in [0, 1); injectable so tests can pin the jitter. */
  random?: () => number;
}

/** Capped exponential backoff: baseMs × 2^(attempt − 1), at most maxMs, then jittered. */
export function backoff(attempt: number, o: BackoffOptions): number {
  const wait = Math.min(o.maxMs, o.baseMs * 2 ** Math.max(0, attempt - 1));
  const random = o.random ?? Math.random;
  if (o.jitter === "full") return Math.floor(random() * wait);
  if (o.jitter) return Math.round(wait * (1 - o.jitter + random() * 2 * o.jitter));
  return wait;
}

export interface PollOptions {
  /** Give up after this long (default 10 s). */
  timeoutMs?: number;
  /** Pause between tries (default 50 ms). */
  intervalMs?: number;
  /** Named in the timeout error. */
  what?: string;
  signal?: AbortSignal;
}

/**
 * Calls `fn` until it returns a truthy value and returns that value; rejects once
 * `timeoutMs` passed without one (the last try starts before the deadline).
 */
export async function pollUntil<T>(
  fn: () => T | undefined | null | false | Promise<T | undefined | null | false>,
  o: PollOptions = {},
): Promise<T> {
  const timeoutMs = o.timeoutMs ?? 10_000;
  const end = Date.now() + timeoutMs;
  for (;;) {
    o.signal?.throwIfAborted();
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) {
      throw new TimeoutError(
        `timed out after ${timeoutMs} ms waiting for ${o.what ?? "condition"}`,
      );
    }
    await delay(o.intervalMs ?? 50, { signal: o.signal });
  }
}

export interface RetryUntilOptions {
  log?: Logger;
  /** Stop retrying once this long has passed (default 30 s). */
  deadlineMs?: number;
}

/** Retries `fn` with backoff until it succeeds or the deadline passes (e.g. the DB at start). */
export async function retryUntil<T>(
  what: string,
  fn: () => Promise<T>,
  o: RetryUntilOptions = {},
): Promise<T> {
  const end = Date.now() + (o.deadlineMs ?? 30_000);
  for (let attempt = 1;; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (Date.now() > end) throw err;
      o.log?.warn(`${what} failed; retrying`, { attempt, error: (err as Error).message });
      await delay(backoff(attempt, { baseMs: 400, maxMs: 3_000 }));
    }
  }
}
