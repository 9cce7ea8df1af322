// Framed messages over a byte stream (the pipe between the bench and its replica peer process):
// u32 JSON length | JSON | u64 body length | body. Counts every byte both ways: the wire figure.
import type { Readable, Writable } from 'node:stream';

export interface Frame {
  readonly head: Record<string, unknown>;
  readonly body: Buffer;
}

export class FrameChannel {
  /** Bytes written plus bytes read since the last `resetCounters`. */
  bytesOut = 0;
  bytesIn = 0;
  readonly #out: Writable;
  readonly #queue: Frame[] = [];
  readonly #waiters: ((f: Frame | undefined) => void)[] = [];
  #buf: Buffer = Buffer.alloc(0);
  #parts: Buffer[] = [];
  #partsBytes = 0;
  #ended = false;

  constructor(input: Readable, output: Writable) {
    this.#out = output;
    input.on('data', (d: Buffer) => {
      this.bytesIn += d.length;
      this.#parts.push(d);
      this.#partsBytes += d.length;
      this.#parse();
    });
    input.on('end', () => {
      this.#ended = true;
      for (const w of this.#waiters.splice(0)) w(undefined);
    });
  }

  resetCounters(): void {
    this.bytesIn = 0;
    this.bytesOut = 0;
  }

  get wireBytes(): number {
    return this.bytesIn + this.bytesOut;
  }

  async send(head: Record<string, unknown>, body: Buffer = Buffer.alloc(0)): Promise<void> {
    const json = Buffer.from(JSON.stringify(head));
    const pre = Buffer.alloc(4 + json.length + 8);
    pre.writeUInt32LE(json.length, 0);
    json.copy(pre, 4);
    pre.writeBigUInt64LE(BigInt(body.length), 4 + json.length);
    this.bytesOut += pre.length + body.length;
    this.#out.write(pre);
    const ok = body.length === 0 || this.#out.write(body);
    if (!ok) await new Promise<void>((r) => this.#out.once('drain', () => r()));
  }

  async receive(): Promise<Frame> {
    const f = this.#queue.shift() ?? (this.#ended ? undefined : await new Promise<Frame | undefined>((r) => this.#waiters.push(r)));
    if (!f) throw new Error('replica peer closed the channel');
    if (f.head.error) throw new Error(`replica peer: ${String(f.head.error)}`);
    return f;
  }

  /** Sends a request and waits for its reply. Calls may overlap: replies are matched in call order. */
  async call(head: Record<string, unknown>, body?: Buffer): Promise<Frame> {
    // Take a place among the waiters now, synchronously: a later call's send could finish first.
    const reply = this.receive();
    reply.catch(() => {});
    await this.send(head, body);
    return reply;
  }

  #parse(): void {
    for (;;) {
      if (this.#buf.length < 12 && this.#partsBytes > 0) this.#gather(12);
      if (this.#buf.length < 4) return;
      const jl = this.#buf.readUInt32LE(0);
      if (this.#buf.length < 4 + jl + 8) {
        if (!this.#gather(4 + jl + 8)) return;
      }
      const bl = Number(this.#buf.readBigUInt64LE(4 + jl));
      const total = 4 + jl + 8 + bl;
      if (this.#buf.length < total && !this.#gather(total)) return;
      const head = JSON.parse(this.#buf.toString('utf8', 4, 4 + jl)) as Record<string, unknown>;
      const body = Buffer.from(this.#buf.subarray(4 + jl + 8, total));
      this.#buf = this.#buf.subarray(total);
      const f = { head, body };
      const w = this.#waiters.shift();
      if (w) w(f);
      else this.#queue.push(f);
    }
  }

  /** Moves pending input into the parse buffer until it holds `n` bytes; false if not enough arrived. */
  #gather(n: number): boolean {
    if (this.#buf.length + this.#partsBytes < n) return false;
    this.#buf = Buffer.concat([this.#buf, ...this.#parts]);
    this.#parts = [];
    this.#partsBytes = 0;
    return true;
  }
}
