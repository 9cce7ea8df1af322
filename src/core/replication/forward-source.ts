// Extended replication's source: a replica forwards what it applied to a third site. Blocks that
// logs touch are marked when each log is received (marking more than was applied is harmless:
// the block's current content ships), and a cut reads them from the newest applied point through
// a pinned point-in-time view, so the extended replica only ever holds points the replica held.
import { join } from 'node:path';
import { readJsonIfExists, writeJsonAtomic } from '../atomic-file.ts';
import { DirtyBitmap } from '../tracking/dirty-bitmap.ts';
import type { BlockReader, ReplicaStore } from '../replica/replica-store.ts';
import { BLOCK_SIZE, type Extent } from '../types.ts';
import { TerminalError } from '../../model/errors.ts';
import type { CutSource, FrozenSource } from './ports.ts';

const MAX_EXTENT = 1 << 20;

interface ForwardDisk {
  readonly id: string;
  readonly size: number;
  map: DirtyBitmap;
  frozen: DirtyBitmap | undefined;
  pendingBytes(): number;
}

export class ForwardSource implements CutSource {
  readonly disks: ForwardDisk[];
  readonly #store: ReplicaStore;
  readonly #path: string;

  private constructor(store: ReplicaStore, disks: ForwardDisk[], path: string) {
    this.#store = store;
    this.disks = disks;
    this.#path = path;
  }

  /**
   * Opens the forwarding state kept in `dir`. Without a saved map (first start, or a crash before
   * it was saved) every block counts as changed: the extended hop then compares everything.
   */
  static async open(store: ReplicaStore, disks: readonly { id: string; size: number }[], dir: string): Promise<ForwardSource> {
    const path = join(dir, 'forward.json');
    const saved = await readJsonIfExists<Record<string, string>>(path);
    const list: ForwardDisk[] = disks.map((d) => {
      const blocks = Math.ceil(d.size / BLOCK_SIZE);
      const bits = saved?.[d.id];
      const disk: ForwardDisk = {
        id: d.id,
        size: d.size,
        map: bits ? new DirtyBitmap(blocks, Buffer.from(bits, 'base64')) : DirtyBitmap.full(blocks),
        frozen: undefined,
        pendingBytes: () => Math.min(d.size, (disk.frozen ? disk.map.unionCount(disk.frozen) : disk.map.count) * BLOCK_SIZE),
      };
      return disk;
    });
    return new ForwardSource(store, list, path);
  }

  /** Marks the blocks a received log will change (called before it is acknowledged). */
  async mark(diskId: string, ranges: readonly { offset: number; length: number }[]): Promise<void> {
    const d = this.disks.find((x) => x.id === diskId);
    if (!d) return;
    for (const r of ranges) {
      if (r.length > 0) d.map.setRange(Math.floor(r.offset / BLOCK_SIZE), Math.ceil((r.offset + r.length) / BLOCK_SIZE));
    }
    await this.save();
  }

  async save(): Promise<void> {
    const out: Record<string, string> = {};
    for (const d of this.disks) {
      const m = d.frozen ? d.map.clone() : d.map;
      if (d.frozen) m.orWith(d.frozen);
      out[d.id] = Buffer.from(m.bits).toString('base64');
    }
    await writeJsonAtomic(this.#path, out);
  }

  async cut(opts: { cutId: string; time: number; full?: boolean }) {
    if (this.disks.some((d) => d.frozen)) throw new TerminalError('invalid-state', 'a forwarding cut is already open');
    const points = this.#store.points();
    const point = points.at(-1);
    if (!point) throw new TerminalError('invalid-state', 'the replica has no applied point to forward yet');
    const views: BlockReader[] = [];
    try {
      for (const d of this.disks) views.push(await this.#store.openView(point.sequence, d.id));
    } catch (e) {
      for (const v of views) await v.close();
      throw e;
    }
    for (const d of this.disks) {
      d.frozen = opts.full ? DirtyBitmap.full(d.map.blocks) : d.map;
      d.map = new DirtyBitmap(d.map.blocks);
    }
    const frozen: FrozenSource[] = this.disks.map((d, i) => ({
      diskId: d.id,
      size: d.size,
      extents: (onProgress?: (done: number, total: number) => void) => readDirty(views[i], d.frozen!, d.size, onProgress),
    }));
    const finish = async (abandon: boolean) => {
      for (const d of this.disks) {
        if (abandon && d.frozen) d.map.orWith(d.frozen);
        d.frozen = undefined;
      }
      for (const v of views) await v.close();
      await this.save();
    };
    return { cutId: point.cutId, time: point.time, disks: frozen, release: () => finish(false), abandon: () => finish(true) };
  }
}

async function* readDirty(
  view: { read(offset: number, length: number): Promise<Buffer> },
  map: DirtyBitmap,
  size: number,
  onProgress?: (done: number, total: number) => void,
): AsyncGenerator<Extent> {
  const total = map.count * BLOCK_SIZE;
  const zero = Buffer.alloc(MAX_EXTENT);
  let done = 0;
  for (const run of map.runs(MAX_EXTENT / BLOCK_SIZE)) {
    const offset = run.start * BLOCK_SIZE;
    const length = Math.min(size, (run.start + run.count) * BLOCK_SIZE) - offset;
    const data = await view.read(offset, length);
    yield data.equals(zero.subarray(0, data.length)) ? { offset, length, zero: true } : { offset, data };
    done += length;
    onProgress?.(done, total);
  }
}
