// Answers a caller chose not to wait for (a device backend's row statistics), applied in order and awaited once.

/** Results a hook chose not to wait for, applied in the order they were asked for. */
export class PendingResults {
  private readonly pending: Promise<void>[] = [];

  /** Runs `apply` on the value when it arrives; calls arrive in order since a backend answers in order. */
  add<T>(value: Promise<T>, apply: (v: T) => void): void {
    const done = value.then(apply);
    done.catch(() => undefined); // reported by settle(); not an unhandled rejection if the run stops first
    this.pending.push(done);
  }

  async settle(): Promise<void> {
    const all = this.pending.splice(0);
    await Promise.all(all);
  }
}
