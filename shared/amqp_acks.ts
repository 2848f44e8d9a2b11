// Batched acknowledgements for one consumer channel. Handlers finish in any order;
// acks that become due in the same turn of the event loop go out together: the run of
// settled deliveries at the head of the channel's window as one `multiple` ack (a
// single frame, and a single settle command in a quorum queue's log), any finished
// delivery behind a still-running one on its own, so a slow message never holds back
// the others or the prefetch window.

/** What the batcher needs of an amqplib channel. */
export interface AckChannel {
  ack(message: { fields: { deliveryTag: number } }, allUpTo?: boolean): void;
}

interface Delivery {
  fields: { deliveryTag: number };
}

interface Pending {
  delivery: Delivery;
  /** Set once the handler is done: "ack" to send, "settled" if nacked already. */
  state?: "ack" | "settled";
  sent?: () => void;
}

export class AckBatcher {
  /** Unsettled deliveries in delivery order (ascending tags). */
  private readonly window: Pending[] = [];
  private readonly byTag = new Map<number, Pending>();
  private timer: ReturnType<typeof setTimeout> | undefined;
  private closed = false;

  constructor(
    private readonly channel: AckChannel,
    private readonly onError: (err: Error) => void,
  ) {}

  /** Call for every delivery, in the order the channel delivered them. */
  received(d: Delivery): void {
    const p: Pending = { delivery: d };
    this.window.push(p);
    this.byTag.set(d.fields.deliveryTag, p);
  }

  /** Queues the ack; resolves once it was written to the channel (or the channel died). */
  ack(d: Delivery): Promise<void> {
    const p = this.byTag.get(d.fields.deliveryTag);
    if (!p || this.closed) return Promise.resolve();
    p.state = "ack";
    const sent = new Promise<void>((resolve) => (p.sent = resolve));
    this.schedule();
    return sent;
  }

  /** The delivery was nacked by the caller: it no longer blocks the head. */
  settled(d: Delivery): void {
    const p = this.byTag.get(d.fields.deliveryTag);
    if (!p) return;
    p.state = "settled";
    this.schedule();
  }

  /** The channel closed: the broker has taken back whatever was not acked. */
  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    for (const p of this.window) p.sent?.();
    this.window.length = 0;
    this.byTag.clear();
  }

  private schedule(): void {
    if (this.timer === undefined && !this.closed) this.timer = setTimeout(() => this.flush(), 0);
  }

  private flush(): void {
    this.timer = undefined;
    const done: Pending[] = [];
    let head: Pending | undefined;
    while (this.window[0]?.state) {
      const p = this.window.shift()!;
      this.byTag.delete(p.delivery.fields.deliveryTag);
      done.push(p);
      if (p.state === "ack") head = p;
    }
    const behind = this.window.filter((p) => p.state === "ack");
    try {
      if (head) this.channel.ack(head.delivery, true);
      for (const p of behind) {
        this.channel.ack(p.delivery, false);
        this.byTag.delete(p.delivery.fields.deliveryTag);
        this.window.splice(this.window.indexOf(p), 1);
        done.push(p);
      }
    } catch (err) {
      // The channel closed under us: the broker redelivers, and handlers are idempotent.
      this.onError(err as Error);
    }
    for (const p of done) p.sent?.();
  }
}
