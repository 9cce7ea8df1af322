// An external-media import on the Replica server's side: each verified raw image of the primary's
// export becomes a full log of sequence 1, which then goes through the ordinary receive-and-apply
// path (so an import is verified, acknowledged and applied like any other initial copy).
import { open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { importFromMedia } from './initial-copy.ts';
import { writeLog } from '../log/log-format.ts';
import { BLOCK_SIZE, type Extent, type RelationshipKeys } from '../types.ts';

export interface MediaLogOptions {
  readonly relationshipId: string;
  readonly keys: RelationshipKeys;
  /** The replica's disks: a missing or resized one on the media is refused. */
  readonly expect: readonly { readonly id: string; readonly size: number }[];
  /** Where each disk's log is written before it is received. */
  readonly dir: string;
}

/** The export in `folder` as one full log a disk, each written only once the previous one was taken. */
export async function* mediaLogs(folder: string, opts: MediaLogOptions): AsyncGenerator<{ diskId: string; path: string }> {
  const { manifest, disks } = await importFromMedia(folder, { macKey: opts.keys.macKey, expect: opts.expect });
  for (const d of disks) {
    const fh = await open(d.path, 'r');
    const path = join(opts.dir, `import-${d.id}.hrl`);
    try {
      await writeLog(
        {
          relationshipId: opts.relationshipId,
          diskId: d.id,
          diskSize: d.size,
          sequence: 1,
          basePoint: 0,
          blockSize: BLOCK_SIZE,
          cutTime: manifest.cutTime,
          consistency: 'crash',
          kind: 'full',
          cutId: manifest.cutId ?? randomUUID(),
        },
        readImage(fh, d.size),
        opts.keys,
        path,
      );
    } finally {
      await fh.close();
    }
    yield { diskId: d.id, path };
  }
}

async function readAt(fh: FileHandle, offset: number, length: number): Promise<Buffer> {
  const buf = Buffer.allocUnsafe(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(buf, done, length - done, offset + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return buf.fill(0, done); // past the end of a short file reads as zeroes
}

/** A raw image as extents: data in 1 MiB pieces, all-zero pieces as zero extents. */
async function* readImage(fh: FileHandle, size: number): AsyncGenerator<Extent> {
  const CHUNK = 1 << 20;
  const zero = Buffer.alloc(CHUNK);
  for (let at = 0; at < size; at += CHUNK) {
    const data = await readAt(fh, at, Math.min(CHUNK, size - at));
    if (data.equals(zero.subarray(0, data.length))) yield { offset: at, length: data.length, zero: true };
    else yield { offset: at, data };
  }
}
