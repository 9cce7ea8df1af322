// The contract between the primary side of the engine (tracker, cut, initial copy) and the
// replica side (log format, apply, recovery points). Both halves build on these shapes.

/** Change tracking and shipping granularity (4 KiB), also the checksum block for resync. */
export const BLOCK_SIZE = 4096;

/** A changed range of a disk at a cut: data, or a run of zeroes sent as metadata only. */
export type Extent =
  | { readonly offset: number; readonly data: Buffer }
  | { readonly offset: number; readonly length: number; readonly zero: true };

export type Consistency = 'crash' | 'app';

/** What a log carries in its header: which disk, where it sits in the chain, what it is. */
export interface LogHeader {
  /** Deterministic id of the replication relationship (same on both sides). */
  readonly relationshipId: string;
  readonly diskId: string;
  /** Size of the disk in bytes at this cut (a disk never shrinks). */
  readonly diskSize: number;
  /** 1, 2, 3… per relationship; the initial replication is sequence 1 (kind `full`). */
  readonly sequence: number;
  /** Sequence of the point this log applies on top of (sequence - 1; 0 for the initial copy). */
  readonly basePoint: number;
  readonly blockSize: number;
  /** Milliseconds since the epoch of the cut: the recovery point's time. */
  readonly cutTime: number;
  readonly consistency: Consistency;
  /** `delta`: changed extents only; `full`: the whole disk (zeroes as metadata); `resync`: only differing blocks after a checksum compare. */
  readonly kind: 'delta' | 'full' | 'resync';
  /** Id shared by every disk's log of one cut (all disks of a VM, all VMs of a consistency group). */
  readonly cutId: string;
}

/** Key material of one relationship: 32-byte AES-256-GCM key and 32-byte MAC key. */
export interface RelationshipKeys {
  readonly encryptionKey: Buffer;
  readonly macKey: Buffer;
}
