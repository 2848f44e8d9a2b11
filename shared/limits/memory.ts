// The limits engine in memory, for domain tests and the conformance suite: the same
// slotted windows as the schema's admit() and refund() (61 counters of window/60 each),
// so both round the same way. One process only: nothing is shared between replicas.
import { REASONS } from "./rules.ts";
import type { Rule } from "./rules.ts";
import type { Admission, AdmitOptions, Limits, Reservation } from "./engine.ts";

interface Counter {
  slotSeconds: number;
  firstSlot: number;
  counts: number[];
}

export class MemoryLimits implements Limits {
  private readonly counters = new Map<string, Counter>();
  /** Events admitted by id, with when: admitting one again counts nothing more. */
  private readonly admitted = new Map<string, number>();

  /** `now` in milliseconds; tests move it to let windows pass. */
  constructor(private readonly now: () => number = Date.now) {}

  admit(rules: readonly Rule[], options: AdmitOptions = {}): Promise<Admission> {
    if (rules.length === 0) {
      return Promise.resolve({ admitted: true, reservation: { rules, at: 0 } });
    }
    const before = options.eventId === undefined ? undefined : this.admitted.get(options.eventId);
    if (before !== undefined) {
      return Promise.resolve({ admitted: true, reservation: { rules, at: before } });
    }
    if (new Set(rules.map((r) => r.key)).size !== rules.length) {
      return Promise.reject(new Error("admit: a key appears twice"));
    }
    const at = this.now() / 1000;
    let worst: { rule: Rule; wait: number } | null = null;
    for (const r of rules) {
      if (!(r.windowSeconds > 0) || r.limit < 0) {
        return Promise.reject(new Error(`admit: bad limit or window for ${r.key}`));
      }
      const width = r.windowSeconds / 60;
      const cur = Math.floor(at / width);
      const c = slots(this.counters.get(r.key), width, cur, 0);
      let total = c.reduce((a, b) => a + b, 0);
      if (total < r.limit) continue;
      let wait = r.windowSeconds;
      if (r.limit > 0) {
        for (let s = 0; s <= 60; s++) {
          total -= c[s]!;
          if (total < r.limit) {
            wait = (cur + 1 + s) * width - at;
            break;
          }
        }
      }
      if (!worst || wait > worst.wait) worst = { rule: r, wait: Math.max(wait, 0) };
    }
    if (worst) {
      return Promise.resolve({
        admitted: false,
        reason: worst.rule.reason,
        message: REASONS[worst.rule.reason],
        retryAfterSeconds: Math.max(1, Math.ceil(worst.wait)),
      });
    }
    for (const r of rules) {
      const width = r.windowSeconds / 60;
      const cur = Math.floor(at / width);
      this.counters.set(r.key, {
        slotSeconds: width,
        firstSlot: cur - 60,
        counts: slots(this.counters.get(r.key), width, cur, 1),
      });
    }
    if (options.eventId !== undefined) this.admitted.set(options.eventId, at);
    return Promise.resolve({ admitted: true, reservation: { rules, at } });
  }

  refund(r: Reservation): Promise<void> {
    for (const rule of r.rules) {
      const c = this.counters.get(rule.key);
      if (!c || c.slotSeconds !== rule.windowSeconds / 60) continue;
      const n = Math.floor(r.at / c.slotSeconds) - c.firstSlot;
      if (n >= 0 && n <= 60 && c.counts[n]! > 0) c.counts[n]!--;
    }
    return Promise.resolve();
  }
}

/** The 61 counts of slots cur-60 .. cur, carried over from `c`, plus `added` now. */
function slots(c: Counter | undefined, width: number, cur: number, added: number): number[] {
  if (!c) {
    const fresh = new Array(61).fill(0);
    fresh[60] = added;
    return fresh;
  }
  if (c.slotSeconds !== width) {
    const all = c.counts.reduce((a, b) => a + b, 0);
    return [...new Array(60).fill(0), all + added];
  }
  const out: number[] = [];
  for (let s = 0; s <= 60; s++) {
    let v = c.counts[cur - 60 + s - c.firstSlot] ?? 0;
    if (s === 60) {
      // Events stamped in the future (a clock that went back) count as now.
      v += added;
      c.counts.forEach((x, i) => {
        if (c.firstSlot + i > cur) v += x;
      });
    }
    out.push(v);
  }
  return out;
}
