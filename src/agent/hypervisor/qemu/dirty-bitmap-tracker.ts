// Change tracking for a running QEMU VM that drsite did not start (the role of Site Recovery's
// Mobility service / VMware CBT): QEMU's own dirty bitmaps on the VM's block nodes, and per cut a
// point-in-time view (blockdev-backup sync=none fleecing) exported by QEMU over NBD, whose dirty
// extents are read with NBD_CMD_BLOCK_STATUS. It is a CutSource for the primary replication engine.
import { randomBytes } from 'node:crypto';
import { execFile } from 'node:child_process';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { CutSource, FrozenSource } from '../../../core/replication/ports.ts';
import type { Extent } from '../../../core/types.ts';
import { BLOCK_SIZE } from '../../../core/types.ts';
import { RetryableError, TerminalError } from '../../../model/errors.ts';
import { rangesWith, STATE, STATE_DIRTY } from '../../../nbd/block-status.ts';
import { NbdClient } from '../../../nbd/client.ts';
import { QmpClient, QmpError, type QmpEvent } from './qmp.ts';

const run = promisify(execFile);
/** Largest read from the point-in-time view in one request. */
const READ_CHUNK = 4 * 1024 * 1024;

export interface AdoptedDisk {
  /** The disk's id in the relationship (its log's diskId). */
  readonly id: string;
  /** The QEMU block node the guest's device writes through (`query-named-block-nodes`). */
  readonly node: string;
}

/** The QMP calls the tracker makes: a QmpClient's, or a monitor reached another way (libvirt's passthrough). */
export interface QmpConnection {
  readonly isClosed: boolean;
  execute<T = unknown>(command: string, args?: Record<string, unknown>, opts?: { timeoutMs?: number }): Promise<T>;
  waitForEvent(name: string, opts: { timeoutMs: number; filter?: (e: QmpEvent) => boolean }): Promise<QmpEvent>;
  close(): void;
}

export interface AdoptOptions {
  /** The VM's QMP socket (a monitor drsite may use; QEMU allows one client per monitor); with `connect`, only a label for messages. */
  readonly qmpSocket: string;
  /** How the monitor is reached. @default a QmpClient on qmpSocket */
  readonly connect?: () => Promise<QmpConnection>;
  /** Called on each fleecing image once created (before QEMU opens it): a QEMU running as another user must be able to write it. */
  readonly onScratchFile?: (path: string) => Promise<void>;
  readonly disks: readonly AdoptedDisk[];
  /** Scratch space: fleecing images (sparse, only old data of blocks written during a cut) and the NBD socket. */
  readonly workDir: string;
  /**
   * Called once when the bitmaps can no longer be trusted (QEMU restarted, a bitmap was removed):
   * wire it to PrimaryReplication.markContinuityLost so the relationship resynchronises.
   */
  readonly onContinuityLost?: (why: string) => Promise<void>;
}

export type Continuity = { readonly continuity: 'intact' } | { readonly continuity: 'lost'; readonly why: string };

interface NodeInfo {
  'node-name'?: string;
  image?: { 'virtual-size'?: number };
  'dirty-bitmaps'?: { name: string; recording?: boolean; count?: number }[];
}

interface OpenCut {
  readonly disks: { readonly disk: AdoptedDisk & { size: number }; readonly fleece: string; readonly file: string; readonly job: string; readonly exportId: string; client?: NbdClient }[];
  readonly previous: string | undefined;
  readonly next: string;
}

export class QemuDirtyBitmapSource implements CutSource {
  readonly disks: readonly { readonly id: string; readonly size: number; pendingBytes(): number }[];
  readonly #opts: AdoptOptions;
  readonly #sized: readonly (AdoptedDisk & { size: number })[];
  readonly #token = randomBytes(4).toString('hex');
  readonly #pending = new Map<string, number>();
  #qmp: QmpConnection;
  #generation = 0;
  /** The bitmap that records writes since the last released cut; undefined once untrusted. */
  #current: string | undefined;
  /** Why the bitmaps cannot be trusted; cleared only when a full cut has shipped. */
  #lost: string | undefined;
  #open: OpenCut | undefined;

  private constructor(opts: AdoptOptions, qmp: QmpConnection, sized: (AdoptedDisk & { size: number })[]) {
    this.#opts = opts;
    this.#qmp = qmp;
    this.#sized = sized;
    this.disks = sized.map((d) => ({ id: d.id, size: d.size, pendingBytes: () => this.#pending.get(d.id) ?? 0 }));
  }

  /**
   * Adopts the VM: checks its nodes, then adds one non-persistent bitmap per disk in one QMP
   * transaction, so every disk starts tracking at the same instant.
   */
  static async adopt(opts: AdoptOptions): Promise<QemuDirtyBitmapSource> {
    if (!opts.disks.length) throw new TerminalError('invalid-argument', `adopting the VM on ${opts.qmpSocket}: no disks given`);
    const qmp = await (opts.connect ? opts.connect() : connect(opts.qmpSocket));
    try {
      const nodes = await namedNodes(qmp);
      const sized = opts.disks.map((d) => {
        const n = nodes.get(d.node);
        if (!n) throw new TerminalError('not-found', `QEMU on ${opts.qmpSocket} has no block node "${d.node}" (disk ${d.id}); known nodes: ${[...nodes.keys()].join(', ')}`);
        const size = n.image?.['virtual-size'];
        if (!size || size % BLOCK_SIZE) throw new TerminalError('invalid-argument', `block node "${d.node}" (disk ${d.id}) has size ${size}, not a multiple of ${BLOCK_SIZE}`);
        return { ...d, size };
      });
      await mkdir(opts.workDir, { recursive: true });
      const source = new QemuDirtyBitmapSource(opts, qmp, sized);
      const first = source.#bitmap(0);
      await qmp.execute('transaction', { actions: sized.map((d) => addBitmap(d.node, first)) });
      source.#current = first;
      return source;
    } catch (e) {
      qmp.close();
      throw e;
    }
  }

  /** Are the bitmaps still the ones added at adoption, recording in the same QEMU process? Refreshes pendingBytes. */
  async verify(): Promise<Continuity> {
    if (this.#lost) return { continuity: 'lost', why: this.#lost };
    const qmp = await this.#connection();
    const nodes = await namedNodes(qmp);
    for (const d of this.#sized) {
      const bm = nodes.get(d.node)?.['dirty-bitmaps']?.find((b) => b.name === this.#current);
      if (!nodes.has(d.node)) return this.#loseTrust(`block node "${d.node}" of disk ${d.id} is gone from QEMU`);
      // Bitmaps are not persistent: one missing means QEMU restarted (or someone removed it), and writes in between are unknown.
      if (!bm) return this.#loseTrust(`dirty bitmap ${this.#current} on block node "${d.node}" (disk ${d.id}) is gone: QEMU restarted or the bitmap was removed`);
      if (bm.recording === false) return this.#loseTrust(`dirty bitmap ${this.#current} on block node "${d.node}" (disk ${d.id}) stopped recording`);
      this.#pending.set(d.id, bm.count ?? 0);
    }
    return { continuity: 'intact' };
  }

  async cut(opts: { cutId: string; time: number; full?: boolean }): Promise<{
    readonly time: number;
    readonly disks: readonly FrozenSource[];
    release(): Promise<void>;
    abandon(): Promise<void>;
  }> {
    if (this.#open) throw new TerminalError('invalid-state', `cut ${opts.cutId}: the previous cut of the VM on ${this.#opts.qmpSocket} is still open`);
    const full = opts.full ?? false;
    const state = await this.verify();
    if (state.continuity === 'lost' && !full) {
      throw new RetryableError('integrity', `changes of the VM on ${this.#opts.qmpSocket} cannot be trusted (${state.why}): resynchronization required`);
    }
    const qmp = await this.#connection();
    const previous = state.continuity === 'intact' ? this.#current : undefined;
    const next = this.#bitmap(++this.#generation);
    const open: OpenCut = {
      previous,
      next,
      disks: this.#sized.map((disk, i) => ({
        disk,
        fleece: `drsite-${this.#token}-fleece${i}`,
        file: join(this.#opts.workDir, `fleece-${this.#token}-${this.#generation}-${i}.qcow2`),
        job: `drsite-${this.#token}-backup${i}`,
        exportId: `drsite-${this.#token}-export${i}`,
      })),
    };
    this.#open = open;
    try {
      for (const d of open.disks) {
        await run('qemu-img', ['create', '-q', '-f', 'qcow2', d.file, String(d.disk.size)]);
        await this.#opts.onScratchFile?.(d.file);
        // Reads of the view fall through to the disk for blocks not overwritten since the cut.
        await qmp.execute('blockdev-add', { driver: 'qcow2', 'node-name': d.fleece, file: { driver: 'file', filename: d.file }, backing: d.disk.node });
      }
      // The cut: in one transaction, a new bitmap starts recording, the old one stops, and
      // copy-before-write keeps each disk's content of this instant in its fleecing image.
      await qmp.execute('transaction', {
        actions: open.disks.flatMap((d) => [
          addBitmap(d.disk.node, next),
          ...(previous ? [{ type: 'block-dirty-bitmap-disable', data: { node: d.disk.node, name: previous } }] : []),
          { type: 'blockdev-backup', data: { 'job-id': d.job, device: d.disk.node, target: d.fleece, sync: 'none' } },
        ]),
      });
      const socket = join(this.#opts.workDir, `nbd-${this.#token}.sock`);
      await qmp.execute('nbd-server-start', { addr: { type: 'unix', data: { path: socket } } });
      for (const d of open.disks) {
        await qmp.execute('block-export-add', {
          type: 'nbd', id: d.exportId, 'node-name': d.fleece, name: d.disk.id, writable: false, ...(previous && !full && { bitmaps: [previous] }),
        });
        d.client = await NbdClient.connect(socket, d.disk.id, { metaContexts: [full ? 'base:allocation' : `qemu:dirty-bitmap:${previous}`] });
      }
    } catch (e) {
      await this.#teardown(open).catch(() => {});
      this.#open = undefined;
      throw e instanceof QmpError ? qmpFailure(e, `cut of the VM on ${this.#opts.qmpSocket}`) : e;
    }
    return {
      time: opts.time,
      disks: open.disks.map((d) => ({
        diskId: d.disk.id,
        size: d.disk.size,
        extents: (onProgress) => (full ? allExtents(d.client!, onProgress) : dirtyExtents(d.client!, `qemu:dirty-bitmap:${previous}`, onProgress)),
      })),
      release: () => this.#finish(open, 'release', full),
      abandon: () => this.#finish(open, 'abandon', full),
    };
  }

  /** Stops tracking: removes drsite's bitmaps and closes the QMP connection (QEMU keeps running). */
  async close(): Promise<void> {
    if (this.#open) await this.#finish(this.#open, 'abandon', false).catch(() => {});
    if (!this.#qmp.isClosed && this.#current) {
      await Promise.allSettled(this.#sized.map((d) => this.#qmp.execute('block-dirty-bitmap-remove', { node: d.node, name: this.#current })));
    }
    this.#qmp.close();
  }

  /** Released: the old bitmap's blocks shipped and it goes. Abandoned: they merge into the new one, to ship next time. */
  async #finish(open: OpenCut, how: 'release' | 'abandon', full: boolean): Promise<void> {
    if (this.#open !== open) return;
    this.#open = undefined;
    await this.#teardown(open);
    const qmp = await this.#connection();
    if (open.previous) {
      const actions = open.disks.flatMap((d) => [
        ...(how === 'abandon' ? [{ type: 'block-dirty-bitmap-merge', data: { node: d.disk.node, target: open.next, bitmaps: [open.previous] } }] : []),
        { type: 'block-dirty-bitmap-remove', data: { node: d.disk.node, name: open.previous } },
      ]);
      await qmp.execute('transaction', { actions });
    }
    this.#current = open.next;
    if (how === 'release' && full) this.#lost = undefined;
  }

  async #teardown(open: OpenCut): Promise<void> {
    const qmp = await this.#connection();
    const quietly = (p: Promise<unknown>) => p.catch(() => {});
    for (const d of open.disks) {
      await quietly(d.client?.close() ?? Promise.resolve());
      const deleted = qmp.waitForEvent('BLOCK_EXPORT_DELETED', { timeoutMs: 10_000, filter: (e) => e.data.id === d.exportId }).catch(() => {});
      if (await qmp.execute('block-export-del', { id: d.exportId }).then(() => true, () => false)) await deleted;
      const cancelled = qmp.waitForEvent('BLOCK_JOB_CANCELLED', { timeoutMs: 10_000, filter: (e) => e.data.device === d.job }).catch(() => {});
      if (await qmp.execute('block-job-cancel', { device: d.job, force: true }).then(() => true, () => false)) await cancelled;
      await quietly(qmp.execute('blockdev-del', { 'node-name': d.fleece }));
      await rm(d.file, { force: true });
    }
    await quietly(qmp.execute('nbd-server-stop'));
  }

  /** Reported once, and awaited: the engine has recorded ResynchronizationRequired before the cut fails. */
  async #loseTrust(why: string): Promise<Continuity> {
    if (!this.#lost) {
      this.#lost = why;
      await this.#opts.onContinuityLost?.(why);
    }
    return { continuity: 'lost', why };
  }

  #bitmap(generation: number): string {
    return `drsite-${this.#token}-${generation}`;
  }

  /** The QMP connection, opened again if it closed (QEMU may have restarted behind the same socket). */
  async #connection(): Promise<QmpConnection> {
    if (this.#qmp.isClosed) this.#qmp = await (this.#opts.connect ? this.#opts.connect() : connect(this.#opts.qmpSocket));
    return this.#qmp;
  }
}

function addBitmap(node: string, name: string): { type: string; data: Record<string, unknown> } {
  return { type: 'block-dirty-bitmap-add', data: { node, name, granularity: BLOCK_SIZE, persistent: false } };
}

async function connect(socket: string): Promise<QmpClient> {
  try {
    return await QmpClient.connect(socket);
  } catch (e) {
    throw new RetryableError('network', `cannot reach the QMP socket ${socket} of the adopted VM: ${(e as Error).message}`, { cause: e });
  }
}

async function namedNodes(qmp: QmpConnection): Promise<Map<string, NodeInfo>> {
  const list = await qmp.execute<NodeInfo[]>('query-named-block-nodes', { flat: true });
  return new Map(list.filter((n) => n['node-name']).map((n) => [n['node-name']!, n]));
}

function qmpFailure(e: QmpError, what: string): Error {
  return e.kind === 'command' ? new TerminalError('invalid-state', `${what}: ${e.message}`, { cause: e }) : new RetryableError('network', `${what}: ${e.message}`, { cause: e });
}

/** The blocks the bitmap marks dirty, read from the point-in-time view. */
export async function* dirtyExtents(client: NbdClient, context: string, onProgress?: (done: number, total: number) => void): AsyncGenerator<Extent> {
  const ranges = rangesWith(await client.blockStatusRange(context, 0, client.size), STATE_DIRTY, 0, client.size);
  const total = ranges.reduce((n, r) => n + r.length, 0);
  let done = 0;
  for (const r of ranges) {
    for (let at = r.offset; at < r.offset + r.length; at += READ_CHUNK) {
      const n = Math.min(READ_CHUNK, r.offset + r.length - at);
      yield { offset: at, data: await client.read(at, n) };
      done += n;
      onProgress?.(done, total);
    }
  }
}

/** Every block of the view; what QEMU reports as reading zero goes as metadata only. */
export async function* allExtents(client: NbdClient, onProgress?: (done: number, total: number) => void): AsyncGenerator<Extent> {
  for (let at = 0; at < client.size; at += READ_CHUNK) {
    const n = Math.min(READ_CHUNK, client.size - at);
    const status = await client.blockStatusRange('base:allocation', at, n);
    let pos = at;
    for (const r of rangesWith(status, STATE.ZERO, at, n)) {
      // Zero runs go as whole blocks; a partial block at either end is read as data.
      const from = Math.ceil(r.offset / BLOCK_SIZE) * BLOCK_SIZE;
      const to = Math.floor((r.offset + r.length) / BLOCK_SIZE) * BLOCK_SIZE;
      if (to <= from) continue;
      const z = { offset: from, length: to - from };
      if (z.offset > pos) yield { offset: pos, data: await client.read(pos, z.offset - pos) };
      yield { offset: z.offset, length: z.length, zero: true };
      pos = z.offset + z.length;
    }
    if (pos < at + n) yield { offset: pos, data: await client.read(pos, at + n - pos) };
    onProgress?.(at + n, client.size);
  }
}
