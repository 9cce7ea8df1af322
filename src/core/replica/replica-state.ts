// The replica's journal: one small JSON document replaced atomically (temp file, fsync, rename,
// directory fsync). Every step of an apply or a prune is one replacement, so after a crash the
// file names exactly one consistent situation to resume from.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../atomic-file.ts';
import { TerminalError } from '../../model/errors.ts';
import type { RecoveryPoint, RetentionPolicy } from './recovery-points.ts';
import type { AtRestInfo } from '../disk/at-rest.ts';

export const STATE_FILE = 'state.json';

export interface StoredPoint extends RecoveryPoint {
  /** Size of each disk at this point. */
  readonly sizes: Record<string, number>;
  /**
   * Undo segment file names per disk, oldest first: the content, at the previous retained point,
   * of every range changed up to this point. `null` when it was not captured (no older point could
   * need it); then no older point is readable.
   */
  readonly undo: Record<string, string[]> | null;
}

export interface ReplicaJournal {
  readonly format: 1;
  readonly relationshipId: string;
  /** Current disk sizes (the latest point's). */
  readonly disks: { readonly id: string; readonly size: number }[];
  /** Latest complete point; 0 before the initial replication. */
  readonly applied: number;
  /** Set between "undo sealed" and "applied": on open, the point is rolled forward. */
  readonly applying: StoredPoint | null;
  /** Retained points, ascending by sequence; the last is the latest. */
  readonly points: readonly StoredPoint[];
  readonly retention: RetentionPolicy;
  /** Counter making every undo segment name unique, so a crash never leaves two meanings for one name. */
  readonly nextSegment: number;
  /** Set when images and undo are encrypted at rest (from creation, for the replica's life). */
  readonly encryption?: AtRestInfo;
}

export async function readState(dir: string): Promise<ReplicaJournal | undefined> {
  let text: string;
  try {
    text = await readFile(join(dir, STATE_FILE), 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  try {
    const s = JSON.parse(text) as ReplicaJournal;
    if (s.format !== 1) throw new Error(`format ${s.format}`);
    return s;
  } catch (e) {
    throw new TerminalError('invalid-state', `replica state ${join(dir, STATE_FILE)} is unreadable: ${(e as Error).message}`);
  }
}

/** Replaces the state durably; returns the bytes written (for write-amplification figures). */
export async function writeState(dir: string, s: ReplicaJournal): Promise<number> {
  const data = Buffer.from(`${JSON.stringify(s)}\n`);
  await writeFileAtomic(join(dir, STATE_FILE), data, 0o600);
  return data.length;
}
