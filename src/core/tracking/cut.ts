// The atomic cut: every disk of a VM (or of several VMs in a multi-VM consistency group) freezes at
// one instant under one cutId, which makes the set one crash-consistent recovery point.
import { TerminalError } from '../../model/errors.ts';
import { TrackedDisk } from './tracker.ts';
import type { FrozenDisk } from './frozen-disk.ts';

export interface CutOptions {
  /** Shared by every disk's log of this cut (LogHeader.cutId). */
  readonly cutId: string;
  /** Milliseconds since the epoch: the recovery point's time. */
  readonly time: number;
  /** Freeze every block (initial copy / export), not only the dirty ones. @default false */
  readonly full?: boolean;
}

/** One VM's disks frozen together. */
export interface FrozenCut {
  readonly cutId: string;
  readonly time: number;
  /** In the order the disks were given. */
  readonly disks: readonly FrozenDisk[];
  /** Total bytes across the disks' cuts. */
  readonly bytes: number;
  /** Shipped: drop every disk's copy-before-write data. */
  release(): Promise<void>;
  /** Not shipped: every disk's frozen blocks return to its dirty set. */
  abandon(): Promise<void>;
}

export interface GroupMember {
  readonly vm: string;
  readonly disks: readonly TrackedDisk[];
}

/** Several VMs frozen at the same instant with the same cutId. */
export interface GroupCut {
  readonly cutId: string;
  readonly time: number;
  readonly vms: ReadonlyMap<string, FrozenCut>;
  release(): Promise<void>;
  abandon(): Promise<void>;
}

/** Freezes all disks of one VM atomically. Refuses (changing nothing) if a disk still has an open cut. */
export async function cutVm(disks: readonly TrackedDisk[], opts: CutOptions): Promise<FrozenCut> {
  checkOptions(opts);
  if (disks.length === 0) throw new TerminalError('invalid-argument', `cut ${opts.cutId}: no disks to cut`);
  const frozen = await TrackedDisk.freezeTogether(disks, opts);
  return frozenCut(opts, frozen);
}

/** Freezes every disk of every VM in the group at one instant (multi-VM consistency). */
export async function cutGroup(members: readonly GroupMember[], opts: CutOptions): Promise<GroupCut> {
  checkOptions(opts);
  const names = new Set<string>();
  for (const m of members) {
    if (names.has(m.vm)) throw new TerminalError('invalid-argument', `cut ${opts.cutId}: VM ${m.vm} is listed twice`);
    names.add(m.vm);
    if (m.disks.length === 0) throw new TerminalError('invalid-argument', `cut ${opts.cutId}: VM ${m.vm} has no disks`);
  }
  const all = await TrackedDisk.freezeTogether(members.flatMap((m) => m.disks), opts);
  const vms = new Map<string, FrozenCut>();
  let i = 0;
  for (const m of members) {
    vms.set(m.vm, frozenCut(opts, all.slice(i, i + m.disks.length)));
    i += m.disks.length;
  }
  return {
    cutId: opts.cutId,
    time: opts.time,
    vms,
    release: async () => void (await Promise.all([...vms.values()].map((c) => c.release()))),
    abandon: async () => void (await Promise.all([...vms.values()].map((c) => c.abandon()))),
  };
}

function frozenCut(opts: CutOptions, disks: FrozenDisk[]): FrozenCut {
  return {
    cutId: opts.cutId,
    time: opts.time,
    disks,
    bytes: disks.reduce((n, d) => n + d.bytes, 0),
    release: async () => void (await Promise.all(disks.map((d) => d.release()))),
    abandon: async () => void (await Promise.all(disks.map((d) => d.abandon()))),
  };
}

function checkOptions(opts: CutOptions): void {
  if (!opts.cutId) throw new TerminalError('invalid-argument', 'a cut needs a non-empty cutId');
  if (!Number.isFinite(opts.time)) throw new TerminalError('invalid-argument', `cut ${opts.cutId}: time ${opts.time} is not a timestamp`);
}
