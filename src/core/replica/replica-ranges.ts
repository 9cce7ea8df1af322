// A set of disjoint byte ranges [start, end) kept sorted: which parts of a disk a newer write, an
// undo file or a coalesced log already covers. Binary search keeps lookups logarithmic.

export interface Range {
  start: number;
  end: number;
}

export class RangeSet {
  private starts: number[] = [];
  private ends: number[] = [];

  get size(): number {
    return this.starts.length;
  }

  /** Index of the first range whose end is after `pos`. */
  private firstEndingAfter(pos: number): number {
    let lo = 0;
    let hi = this.ends.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.ends[mid] <= pos) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** The parts of [start, end) this set does not cover, in order. */
  gaps(start: number, end: number): Range[] {
    const out: Range[] = [];
    let pos = start;
    for (let i = this.firstEndingAfter(start); i < this.starts.length && this.starts[i] < end; i++) {
      if (this.starts[i] > pos) out.push({ start: pos, end: this.starts[i] });
      pos = Math.max(pos, this.ends[i]);
    }
    if (pos < end) out.push({ start: pos, end });
    return out;
  }

  /** Adds [start, end), merging with every range it overlaps or touches. */
  add(start: number, end: number): void {
    if (end <= start) return;
    // Ranges ending exactly at `start` (or starting at `end`) touch it and merge too.
    const i = this.firstEndingAfter(start - 1);
    let j = i;
    let s = start;
    let e = end;
    while (j < this.starts.length && this.starts[j] <= end) {
      s = Math.min(s, this.starts[j]);
      e = Math.max(e, this.ends[j]);
      j++;
    }
    this.starts.splice(i, j - i, s);
    this.ends.splice(i, j - i, e);
  }

  ranges(): Range[] {
    return this.starts.map((s, i) => ({ start: s, end: this.ends[i] }));
  }
}
