// A first-in first-out async mutex. The tracker holds one per disk so a cut sits between two
// writes, never inside one; FIFO order means a writer is never starved by later writers. And a
// keyed one: one FIFO queue per key (a VM, an upload, a relationship), forgotten once it drains.

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

/** One FIFO lock per key, made on first use and dropped when its last holder releases it. */
export class KeyedMutex {
  readonly #tails = new Map<string, Promise<void>>();

  /** Runs `fn` once every earlier holder of `key` is done; a holder that throws does not block the next. */
  async run<T>(key: string, fn: () => Promise<T> | T): Promise<T> {
    const prev = this.#tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const tail = prev.then(() => mine);
    this.#tails.set(key, tail);
    await prev;
    try {
      return await fn();
    } finally {
      release();
      if (this.#tails.get(key) === tail) this.#tails.delete(key);
    }
  }

  /** Keys with a holder or waiters. */
  get size(): number {
    return this.#tails.size;
  }
}
