// One bit per 4 KiB block of a disk: set when the block changed since the last cut. Keeps its
// population count current so pending-size checks cost nothing per write.

const POPCOUNT = new Uint8Array(256);
for (let i = 1; i < 256; i++) POPCOUNT[i] = (i & 1) + POPCOUNT[i >> 1];

export class DirtyBitmap {
  readonly blocks: number;
  readonly bits: Uint8Array;
  private dirty = 0;

  constructor(blocks: number, bits?: Uint8Array) {
    this.blocks = blocks;
    const bytes = Math.ceil(blocks / 8);
    if (bits && bits.length !== bytes) throw new RangeError(`bitmap of ${blocks} blocks needs ${bytes} bytes, got ${bits.length}`);
    this.bits = bits ? new Uint8Array(bits) : new Uint8Array(bytes);
    if (bits) {
      this.trimTail();
      for (const b of this.bits) this.dirty += POPCOUNT[b];
    }
  }

  static full(blocks: number): DirtyBitmap {
    const m = new DirtyBitmap(blocks);
    m.setRange(0, blocks);
    return m;
  }

  /** Number of dirty blocks. */
  get count(): number {
    return this.dirty;
  }

  has(block: number): boolean {
    return (this.bits[block >> 3] & (1 << (block & 7))) !== 0;
  }

  set(block: number): void {
    const mask = 1 << (block & 7);
    const i = block >> 3;
    if ((this.bits[i] & mask) === 0) {
      this.bits[i] |= mask;
      this.dirty++;
    }
  }

  clear(block: number): void {
    const mask = 1 << (block & 7);
    const i = block >> 3;
    if ((this.bits[i] & mask) !== 0) {
      this.bits[i] &= ~mask;
      this.dirty--;
    }
  }

  /** Sets blocks [start, end); whole bytes in the middle are filled at once. */
  setRange(start: number, end: number): void {
    end = Math.min(end, this.blocks);
    let b = start;
    while (b < end && (b & 7) !== 0) this.set(b++);
    while (b + 8 <= end) {
      const i = b >> 3;
      this.dirty += 8 - POPCOUNT[this.bits[i]];
      this.bits[i] = 0xff;
      b += 8;
    }
    while (b < end) this.set(b++);
  }

  clearAll(): void {
    this.bits.fill(0);
    this.dirty = 0;
  }

  /** Adds every block dirty in `other` (same geometry) to this map. */
  orWith(other: DirtyBitmap): void {
    let n = 0;
    for (let i = 0; i < this.bits.length; i++) {
      this.bits[i] |= other.bits[i];
      n += POPCOUNT[this.bits[i]];
    }
    this.dirty = n;
  }

  /** Count of blocks dirty here or in `other`, without changing either. */
  unionCount(other: DirtyBitmap): number {
    let n = 0;
    for (let i = 0; i < this.bits.length; i++) n += POPCOUNT[this.bits[i] | other.bits[i]];
    return n;
  }

  clone(): DirtyBitmap {
    return new DirtyBitmap(this.blocks, this.bits);
  }

  /** Runs of consecutive dirty blocks in ascending order, each at most `maxBlocks` long. */
  *runs(maxBlocks: number): Generator<{ start: number; count: number }> {
    let start = -1;
    let count = 0;
    for (let i = 0; i < this.bits.length; i++) {
      const byte = this.bits[i];
      if (byte === 0 && start < 0) continue;
      for (let bit = 0; bit < 8; bit++) {
        const block = (i << 3) + bit;
        if (block >= this.blocks) break;
        if (byte & (1 << bit)) {
          if (start < 0) start = block;
          count++;
          if (count === maxBlocks) {
            yield { start, count };
            start = -1;
            count = 0;
          }
        } else if (start >= 0) {
          yield { start, count };
          start = -1;
          count = 0;
        }
      }
    }
    if (start >= 0) yield { start, count };
  }

  /** Bits past the last block are never set, so counts and unions stay exact. */
  private trimTail(): void {
    const extra = this.bits.length * 8 - this.blocks;
    if (extra > 0) this.bits[this.bits.length - 1] &= 0xff >> extra;
  }
}
