// Many concurrent lookups of one kind as one statement: a call is sent at once while
// fewer than `maxInFlight` batches are out, and otherwise waits for the next batch,
// which carries every call that arrived meanwhile. Under load, one statement then
// answers several requests, and PostgreSQL and the driver pay a statement's fixed
// cost (its Bind and Execute, the executor's start, the result's framing) once for
// all of them; with no load, a call goes alone and waits for nothing. A call only
// ever joins a batch not yet sent, so it sees everything committed before it began.

export interface CoalesceOptions<K, V> {
  /** Batches out at once; calls beyond wait for the next one. */
  maxInFlight: number;
  /** Largest batch; more waiting calls go in the batches after it. */
  maxBatch: number;
  /**
   * A batch of fewer keys than this is answered key by key by `alone`, for a lookup
   * whose batched form costs more than a few lone ones (default 1: always batched).
   */
  sharedFrom?: number;
  alone?: (key: K) => Promise<V>;
}

/**
 * A function that answers one key, by running `lookup` on a batch of keys. `lookup`
 * returns one answer per key, in the keys' order; when it throws, every call of that
 * batch rejects with its error, and the calls of other batches are untouched.
 */
export function coalesced<K, V>(
  lookup: (keys: K[]) => Promise<V[]>,
  o: CoalesceOptions<K, V>,
): (key: K) => Promise<V> {
  const sharedFrom = o.sharedFrom ?? 1;
  const alone = o.alone;
  if (!(o.maxInFlight >= 1 && o.maxBatch >= 1 && sharedFrom >= 1)) {
    throw new RangeError("bad coalesce options");
  }
  if (sharedFrom > 1 && alone === undefined) throw new RangeError("sharedFrom needs alone");
  let waiting: Waiter<K, V>[] = [];
  let inFlight = 0;
  let scheduled = false;

  const send = (batch: Waiter<K, V>[]) => {
    inFlight++;
    let answers: Promise<V[]>;
    try {
      const keys = batch.map((w) => w.key);
      answers = keys.length < sharedFrom ? Promise.all(keys.map(alone!)) : lookup(keys);
    } catch (e) {
      answers = Promise.reject(e);
    }
    answers.then((values) => {
      if (values.length !== batch.length) {
        throw new Error(`lookup answered ${values.length} of ${batch.length} keys`);
      }
      for (let i = 0; i < batch.length; i++) batch[i]!.resolve(values[i]!);
    }).catch((e) => {
      for (const w of batch) w.reject(e);
    }).finally(() => {
      inFlight--;
      flush();
    });
  };

  const flush = () => {
    scheduled = false;
    while (waiting.length > 0 && inFlight < o.maxInFlight) {
      if (waiting.length <= o.maxBatch) {
        const batch = waiting;
        waiting = [];
        send(batch);
      } else {
        send(waiting.splice(0, o.maxBatch));
      }
    }
  };

  return (key: K) =>
    new Promise<V>((resolve, reject) => {
      waiting.push({ key, resolve, reject });
      // Calls made by the same task go together, sent once its synchronous code is done.
      if (!scheduled && inFlight < o.maxInFlight) {
        scheduled = true;
        queueMicrotask(flush);
      }
    });
}

interface Waiter<K, V> {
  key: K;
  resolve: (value: V) => void;
  reject: (reason: unknown) => void;
}
