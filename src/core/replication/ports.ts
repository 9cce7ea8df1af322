// What the primary engine talks to: the link to its Replica server (HTTPS with mutual TLS, or an
// Azure container), and the source of its cuts (a VM's tracked disks, a group's shared cut, or a
// replica forwarding its applied points to an extended replica).
import type { BlockDigests, CompareRequest } from './block-checksums.ts';
import { cutVm, type FrozenCut } from '../tracking/cut.ts';
import type { TrackedDisk } from '../tracking/tracker.ts';
import type { Consistency, Extent, RelationshipKeys } from '../types.ts';
import type { BlockDevice } from '../../model/block-device.ts';
import { TerminalError } from '../../model/errors.ts';
import type { CreateReplicaRequest, ReplicaStatus } from '../../model/replication-api.ts';

/** How the primary reaches the Replica server (HTTPS with mutual TLS in the agent). */
export interface ReplicaLink {
  createReplica(req: CreateReplicaRequest): Promise<ReplicaStatus>;
  status(id: string): Promise<ReplicaStatus>;
  /** Resolves once the Replica server holds the log durably (its acknowledgement). */
  upload(id: string, sequence: number, diskId: string, path: string, onProgress?: (done: number, total: number) => void, opts?: UploadOptions): Promise<void>;
  apply(id: string): Promise<ReplicaStatus>;
  /** Drops logs received but not applied: a resync restarts the chain from the applied point. */
  discardPending(id: string): Promise<ReplicaStatus>;
  /**
   * The replica's checksums of a disk at its latest point: without `compare`, keyed 4 KiB digests
   * of every block; with it, the multi-level compare's digests (compareChecksums) of the requested
   * blocks. A replica that cannot compare may answer a compare request with the whole-disk 4 KiB
   * digests (the primary then compares those).
   */
  checksums(id: string, diskId: string, compare?: CompareRequest): Promise<BlockDigests>;
  settings(id: string, retention: CreateReplicaRequest['retention']): Promise<void>;
  remove(id: string): Promise<void>;
  /**
   * Sends one segment of a streamed initial copy (core/replication/initial-stream.ts) as `body` produces it;
   * resolves with the replica's status once the segment is durable there. Absent: the link only
   * ships whole logs, and the initial copy goes through the outbox.
   */
  initialSegment?(id: string, diskId: string, index: number, body: AsyncIterable<Buffer>): Promise<ReplicaStatus>;
  /**
   * Sends one sealed log as `body` produces it (a streamed delta), replacing any partial upload of
   * it; resolves once the replica holds it durably and verified, as `upload` does. A torn stream
   * leaves the replica's durable bytes, from which `upload` of the same bytes resumes. Absent: the
   * link only ships logs sealed in the outbox first.
   */
  uploadStream?(id: string, sequence: number, diskId: string, body: AsyncIterable<Buffer>): Promise<void>;
  /**
   * Failback from a replica a VM ran on (Azure: the page blobs the failed-over VM wrote): brings
   * one disk's current content there onto `target`, downloading only the blocks that differ
   * (minimize-downtime) or every written page (full-download). Absent: the replica is a Replica
   * server, failed back from by reversing the relationship.
   */
  failback?(id: string, diskId: string, target: BlockDevice | string, opts: FailbackOptions): Promise<FailbackResult>;
}

export interface FailbackOptions {
  readonly method: 'minimize-downtime' | 'full-download';
  /** The relationship's keys (digests are keyed). */
  readonly keys: RelationshipKeys;
}

export interface FailbackResult {
  /** Every byte downloaded: disk data plus digests. */
  readonly bytesDownloaded: number;
  /** 4 KiB blocks written on the target. */
  readonly blocksChanged: number;
  readonly diskSize: number;
  /** How the remote side was digested: from kept digests, or by downloading its written data. */
  readonly compare: 'sums' | 'data' | 'none';
}

export interface UploadOptions {
  /**
   * Called with the size of each slice of the file before it is sent; the slice waits for it (a
   * bandwidth cap). A link that cannot pace its stream ignores it (throttle.ts then charges the
   * whole file afterwards).
   */
  readonly pace?: (bytes: number) => Promise<void>;
  /**
   * Bytes per request, for a paced transfer: small enough that one request at the cap ends well
   * inside the server's request timeout (Node's is 5 minutes). @default the link's own
   */
  readonly chunkSize?: number;
}

/** One disk's point-in-time content at a cut, read once. */
export interface FrozenSource {
  readonly diskId: string;
  readonly size: number;
  extents(onProgress?: (done: number, total: number) => void): AsyncIterable<Extent>;
}

/**
 * Where a relationship's cuts come from: a VM's tracked disks (the primary), or a replica's
 * applied points (the replica site forwarding to an extended replica).
 */
export interface CutSource {
  readonly disks: readonly { readonly id: string; readonly size: number; pendingBytes(): number }[];
  cut(opts: { cutId: string; time: number; full?: boolean; /** Ask for an application-consistent cut (the guest quiesced). */ quiesce?: boolean }): Promise<{
    /** The cut's id when the source chose it (a group cut, a forwarded point). */
    readonly cutId?: string;
    readonly time: number;
    /** `app` when the guest was quiesced for the cut; absent = crash-consistent. */
    readonly consistency?: Consistency;
    /** Why a requested quiesce did not happen (the cut is crash-consistent then). */
    readonly quiesceError?: string;
    readonly disks: readonly FrozenSource[];
    release(): Promise<void>;
    abandon(): Promise<void>;
  }>;
  /** The VM's tracked disks, for an external-media export; absent for a forwarding replica. */
  readonly tracked?: readonly TrackedDisk[];
}

/** A guest's filesystems frozen around a cut (qemu-guest-agent's fsfreeze, Hyper-V's VSS). */
export interface Quiescer {
  /** Resolves once the guest's filesystems are frozen; rejects within `timeoutMs` when they cannot be. */
  freeze(timeoutMs: number): Promise<void>;
  /** Thaws them; safe to call after a failed or timed-out freeze. */
  thaw(timeoutMs: number): Promise<void>;
}

/** How long a guest may take to freeze, and to thaw, before the cut goes on crash-consistent. */
export const QUIESCE_TIMEOUT_MS = 10_000;

/**
 * A source whose cuts, when asked, are application-consistent: freeze → cut → thaw, with the thaw
 * always run (also when the freeze failed or timed out, since it may have half happened). A guest
 * that cannot be frozen gets a crash-consistent cut and the reason; it never holds the cut up
 * past the timeout.
 */
export function quiescedSource(inner: CutSource, quiescer: Quiescer, timeoutMs = QUIESCE_TIMEOUT_MS): CutSource {
  return {
    disks: inner.disks,
    ...(inner.tracked && { tracked: inner.tracked }),
    async cut(opts) {
      if (!opts.quiesce) return inner.cut(opts);
      let frozen = false;
      let quiesceError: string | undefined;
      try {
        await quiescer.freeze(timeoutMs);
        frozen = true;
      } catch (e) {
        quiesceError = (e as Error).message;
      }
      try {
        const cut = await inner.cut(opts);
        return { ...cut, ...(frozen ? { consistency: 'app' as const } : { quiesceError: quiesceError ?? 'the guest could not be quiesced' }) };
      } finally {
        await quiescer.thaw(timeoutMs).catch(() => {});
      }
    },
  };
}

/** The cut source of a VM: its tracked disks, cut atomically. */
export function vmSource(disks: TrackedDisk[]): CutSource {
  return { disks, tracked: disks, cut: (opts) => cutVm(disks, opts) };
}

/** A VM in a multi-VM consistency group: deltas come from a cut taken across the whole group. */
export interface GroupMemberSource extends CutSource {
  stage(cut: FrozenCut): void;
  /** Gives back a staged cut nobody used (its blocks return to the dirty sets). */
  unstage(): Promise<void>;
}

export function groupMemberSource(disks: TrackedDisk[]): GroupMemberSource {
  let staged: FrozenCut | undefined;
  return {
    disks,
    tracked: disks,
    stage: (cut) => {
      staged = cut;
    },
    unstage: async () => {
      const c = staged;
      staged = undefined;
      await c?.abandon();
    },
    cut: async (opts) => {
      if (staged) {
        const c = staged;
        staged = undefined;
        return c;
      }
      // Full copies (initial replication, resync) compare everything anyway; deltas must share the group's instant.
      if (opts.full) return cutVm(disks, opts);
      throw new TerminalError('invalid-state', 'a member of a replication group is only cut together with its group');
    },
  };
}
