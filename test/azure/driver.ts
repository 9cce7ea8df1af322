// A direct core-level primary for the Azure tests: real tracked disks, atomic cuts across the
// VM's disks, sealed logs, shipped through an AzureBlobLink exactly as the primary ships them.
import { randomBytes, randomUUID } from 'node:crypto';
import { copyFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cutVm } from '../../src/core/tracking/cut.ts';
import { sha256File } from '../../src/core/disk/disk.ts';
import { writeLog } from '../../src/core/log/log-format.ts';
import { TrackedDisk } from '../../src/core/tracking/tracker.ts';
import { BLOCK_SIZE, type RelationshipKeys } from '../../src/core/types.ts';
import type { AzureBlobLink } from '../../src/azure/blob-link.ts';
import type { CreateReplicaRequest, ReplicaStatus } from '../../src/transport/agent-api.ts';

export interface PointCopy {
  sequence: number;
  /** SHA-256 of each primary disk image at the cut, by disk id. */
  sha: Record<string, string>;
  /** Copies of the primary images at the cut (only when asked for). */
  images: Record<string, string>;
}

export function newKeys(): RelationshipKeys {
  return { encryptionKey: randomBytes(32), macKey: randomBytes(32) };
}

export function createRequest(id: string, vm: string, disks: { id: string; size: number }[], keys: RelationshipKeys, additional = 0): CreateReplicaRequest {
  return {
    id,
    vm,
    disks,
    keys: { encryptionKey: keys.encryptionKey.toString('base64'), macKey: keys.macKey.toString('base64') },
    retention: { additional },
  };
}

export class TestVm {
  readonly dir: string;
  readonly disks: TrackedDisk[];
  readonly keys: RelationshipKeys;
  readonly id: string;
  sequence = 0;

  private constructor(dir: string, disks: TrackedDisk[], keys: RelationshipKeys, id: string) {
    this.dir = dir;
    this.disks = disks;
    this.keys = keys;
    this.id = id;
  }

  static async create(id: string, sizes: Record<string, number>): Promise<TestVm> {
    const dir = await mkdtemp(join(tmpdir(), 'drsite-azure-vm-'));
    const disks: TrackedDisk[] = [];
    for (const [diskId, size] of Object.entries(sizes)) disks.push(await TrackedDisk.create(join(dir, `${diskId}.img`), size, { id: diskId }));
    return new TestVm(dir, disks, newKeys(), id);
  }

  path(diskId: string): string {
    return join(this.dir, `${diskId}.img`);
  }

  /** Writes `count` random 4 KiB blocks (and fills whole disks when `fill`), like a guest would. */
  async scribble(count: number, rand: () => number, fill = false): Promise<void> {
    for (const d of this.disks) {
      if (fill) {
        for (let at = 0; at < d.size; at += 1 << 20) {
          const n = Math.min(1 << 20, d.size - at);
          // A quarter of each MiB left zero: zero extents travel as metadata (clear pages).
          const buf = randomBytes(n);
          buf.fill(0, 0, Math.min(n, 256 << 10));
          await d.write(at, buf);
        }
      }
      const blocks = Math.floor(d.size / BLOCK_SIZE);
      for (let i = 0; i < count; i++) {
        const b = Math.floor(rand() * blocks);
        if (rand() < 0.1) await d.writeZeroes(b * BLOCK_SIZE, BLOCK_SIZE);
        else await d.write(b * BLOCK_SIZE, randomBytes(BLOCK_SIZE));
      }
    }
  }

  /** One cycle: cut every disk at once, seal, upload each disk's log, apply. */
  async cycle(link: AzureBlobLink, opts: { full?: boolean; time: number; keepImages?: boolean; applyToo?: boolean }): Promise<{ status: ReplicaStatus; point: PointCopy; logs: string[] }> {
    const seq = ++this.sequence;
    const cutId = randomUUID();
    const cut = await cutVm(this.disks, { cutId, time: opts.time, full: opts.full ?? false });
    const point: PointCopy = { sequence: seq, sha: {}, images: {} };
    // Nothing writes between here and the next scribble, so the image files are the cut's content.
    for (const d of this.disks) {
      point.sha[d.id] = await sha256File(this.path(d.id));
      if (opts.keepImages) {
        point.images[d.id] = join(this.dir, `${d.id}.point${seq}.img`);
        await copyFile(this.path(d.id), point.images[d.id]);
      }
    }
    const logs: string[] = [];
    for (const frozen of cut.disks) {
      const path = join(this.dir, `${frozen.diskId}.${seq}.hrl`);
      await writeLog(
        { relationshipId: this.id, diskId: frozen.diskId, diskSize: frozen.size, sequence: seq, basePoint: seq - 1, blockSize: BLOCK_SIZE, cutTime: opts.time, consistency: 'crash', kind: opts.full ? 'full' : 'delta', cutId },
        frozen.extents(),
        this.keys,
        path,
      );
      logs.push(path);
    }
    await cut.release();
    for (let i = 0; i < logs.length; i++) await link.upload(this.id, seq, this.disks[i].id, logs[i]);
    const status = opts.applyToo === false ? await link.status(this.id) : await link.apply(this.id);
    return { status, point, logs };
  }

  async close(): Promise<void> {
    for (const d of this.disks) await d.close();
    await rm(this.dir, { recursive: true, force: true });
  }
}
