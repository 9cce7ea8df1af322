// What the parts of one replica share (replica-store.ts and the files it hands work to): its
// folder and keys, the images' cipher, the journal as last written, the I/O counters, the undo
// segments open for reading and the points that open views pin.
import { open } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { TerminalError } from '../../model/errors.ts';
import type { RelationshipKeys } from '../types.ts';
import type { ImageCipher } from '../disk/at-rest.ts';
import type { RecoveryPoint } from './recovery-points.ts';
import { writeState, type ReplicaJournal } from './replica-state.ts';
import { UndoFile } from './replica-undo.ts';

const DISK_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

export interface AppliedPoint extends RecoveryPoint {
  /** Bytes of disk changed by the point: data plus zero extents, over all disks. */
  readonly bytes: number;
  readonly records: number;
}

export interface ReplicaStats {
  readonly pointsApplied: number;
  readonly logsApplied: number;
  /** Disk bytes the applied logs changed (data + zero extents). */
  readonly bytesApplied: number;
  /** Bytes of sealed logs written into `incoming/` by `receive`. */
  readonly bytesReceived: number;
  readonly imageBytesWritten: number;
  readonly undoBytesWritten: number;
  readonly journalBytesWritten: number;
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

export class ReplicaCore {
  readonly dir: string;
  readonly keys: RelationshipKeys;
  readonly cipher: ImageCipher | undefined;
  readonly counters: Mutable<ReplicaStats> = {
    pointsApplied: 0, logsApplied: 0, bytesApplied: 0, bytesReceived: 0,
    imageBytesWritten: 0, undoBytesWritten: 0, journalBytesWritten: 0,
  };
  /** Points open views read, with how many views each: retained whatever the policy says. */
  readonly pins = new Map<number, number>();
  readonly #undoFiles = new Map<string, UndoFile>();
  #state: ReplicaJournal;

  constructor(dir: string, keys: RelationshipKeys, state: ReplicaJournal, cipher: ImageCipher | undefined) {
    this.dir = dir;
    this.keys = keys;
    this.#state = state;
    this.cipher = cipher;
  }

  /** The journal as last written. */
  get state(): ReplicaJournal {
    return this.#state;
  }

  async saveState(s: ReplicaJournal): Promise<void> {
    this.counters.journalBytesWritten += await writeState(this.dir, s);
    this.#state = s;
  }

  /** Path of a disk's image at the latest point. */
  diskPath(diskId: string): string {
    checkDiskId(diskId);
    return join(this.dir, `${diskId}.img`);
  }

  diskSize(diskId: string): number {
    return this.#state.disks.find((d) => d.id === diskId)?.size ?? 0;
  }

  hasDisk(diskId: string): boolean {
    return this.#state.disks.some((d) => d.id === diskId);
  }

  /** An undo segment, opened once and kept open for later reads. */
  async undoFile(name: string): Promise<UndoFile> {
    let f = this.#undoFiles.get(name);
    if (!f) {
      f = await UndoFile.open(join(this.dir, 'undo', name));
      this.#undoFiles.set(name, f);
    }
    return f;
  }

  /** Closes an undo segment about to be deleted. */
  async forgetUndo(name: string): Promise<void> {
    await this.#undoFiles.get(name)?.close();
    this.#undoFiles.delete(name);
  }

  async closeUndoFiles(): Promise<void> {
    for (const f of this.#undoFiles.values()) await f.close();
    this.#undoFiles.clear();
  }
}

export function checkDiskId(id: string): void {
  if (!DISK_ID.test(id)) throw new TerminalError('invalid-argument', `disk id ${JSON.stringify(id)} is not a valid file name`);
}

export async function writeAll(fh: FileHandle, data: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await fh.write(data, done, data.length - done, position + done);
    done += bytesWritten;
  }
}

export async function exists(path: string): Promise<boolean> {
  try {
    const h = await open(path, 'r');
    await h.close();
    return true;
  } catch {
    return false;
  }
}
