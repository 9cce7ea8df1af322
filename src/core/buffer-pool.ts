// Fixed-size scratch buffers reused across frames and logs. On this machine (a microVM) a page
// touched for the first time costs about 20 µs, so a fresh megabyte costs ~5 ms, far more than
// compressing or encrypting it; memory handed back here is warm the next time.

export class BufferPool {
  private readonly free: Buffer[] = [];
  readonly size: number;
  private readonly max: number;

  /** @param size bytes of every buffer; @param max buffers kept when given back (more are dropped to the GC). */
  constructor(size: number, max: number) {
    this.size = size;
    this.max = max;
  }

  /** A buffer of `size` bytes with arbitrary contents, owned by the caller until `put`. */
  get(): Buffer {
    // allocUnsafeSlow: never a slice of Node's shared pool, so reusing it cannot clobber anyone else.
    return this.free.pop() ?? Buffer.allocUnsafeSlow(this.size);
  }

  /** Gives a buffer from `get` back; nothing may read or write it afterwards. */
  put(b: Buffer): void {
    if (b.length === this.size && this.free.length < this.max) this.free.push(b);
  }
}
