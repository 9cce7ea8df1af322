// A first-in first-out async mutex. The tracker holds one per disk so a cut sits between two
// writes, never inside one; FIFO order means a writer is never starved by later writers.

export class AsyncMutex {
  private tail: Promise<void> = Promise.resolve();

  /** Resolves with the function that releases the lock once every earlier holder released it. */
  lock(): Promise<() => void> {
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const prev = this.tail;
    this.tail = prev.then(() => held);
    return prev.then(() => release);
  }

  async run<T>(fn: () => Promise<T> | T): Promise<T> {
    const release = await this.lock();
    try {
      return await fn();
    } finally {
      release();
    }
  }
}
