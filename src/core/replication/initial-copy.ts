// Initial replication from the primary: a full cut (every block frozen, so writes during the copy
// go to the tracker for the next delta and copy-before-write keeps the copy point-in-time),
// streamed as extents or exported to a folder for shipping on external media.
import { mkdir, open, stat, access } from 'node:fs/promises';
import { readFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { TerminalError } from '../../model/errors.ts';
import type { Extent } from '../types.ts';
import { writeFileAtomic } from '../atomic-file.ts';
import { cutVm } from '../tracking/cut.ts';
import { sha256File } from '../disk/disk.ts';
import type { TrackedDisk } from '../tracking/tracker.ts';

export type Progress = (done: number, total: number) => void;

export interface InitialCopyOptions {
  /** @default `initial-<time>` */
  readonly cutId?: string;
  /** Time of the point-in-time copy. @default Date.now() at the cut */
  readonly time?: number;
  /** Bytes read so far of the disk's size. */
  readonly onProgress?: Progress;
}

/**
 * Every block of the disk as of the cut, taken when the first extent is requested: data extents
 * for non-zero blocks, zero extents for zero runs. Writes continue meanwhile and are tracked for
 * the next delta. Reading to the end releases the cut; stopping early abandons it (every block is
 * then pending again, as the replica did not get a whole copy).
 */
export async function* initialCopyExtents(disk: TrackedDisk, opts: InitialCopyOptions = {}): AsyncGenerator<Extent> {
  const time = opts.time ?? Date.now();
  const cut = await cutVm([disk], { cutId: opts.cutId ?? `initial-${time}`, time, full: true });
  let complete = false;
  try {
    yield* cut.disks[0].extents(opts.onProgress);
    complete = true;
  } finally {
    if (complete) await cut.release();
    else await cut.abandon();
  }
}

export const MEDIA_FORMAT = 'drsite-media/1';
export const MEDIA_MANIFEST = 'manifest.json';

export interface MediaDiskEntry {
  readonly id: string;
  /** File name inside the media folder. */
  readonly file: string;
  readonly size: number;
  /** Hex SHA-256 of the whole image. */
  readonly sha256: string;
}

export interface MediaManifest {
  readonly format: typeof MEDIA_FORMAT;
  readonly relationshipId?: string;
  readonly cutId: string;
  readonly cutTime: number;
  readonly disks: readonly MediaDiskEntry[];
  /** Hex HMAC-SHA-256 of the manifest without this field, when exported with a MAC key. */
  readonly mac?: string;
}

export interface ExportOptions {
  readonly cutId: string;
  readonly time: number;
  readonly relationshipId?: string;
  /** Authenticates the manifest (the relationship's MAC key): import then rejects a forged one. */
  readonly macKey?: Buffer;
  /** Bytes exported across all disks, of their total size. */
  readonly onProgress?: Progress;
}

/**
 * Writes each disk's point-in-time image (one atomic full cut across the disks) as a sparse raw
 * file `<id>.raw`, then `manifest.json` with sizes and SHA-256, written last so that a manifest
 * only exists for a complete export. Writes after the cut stay tracked for the first delta.
 */
export async function exportToMedia(disks: readonly TrackedDisk[], folder: string, opts: ExportOptions): Promise<MediaManifest> {
  await mkdir(folder, { recursive: true });
  if (await exists(join(folder, MEDIA_MANIFEST))) {
    throw new TerminalError('invalid-argument', `media folder ${folder} already holds an export (${MEDIA_MANIFEST}); use an empty folder`);
  }
  const ids = new Set<string>();
  for (const d of disks) {
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(d.id) || ids.has(d.id)) {
      throw new TerminalError('invalid-argument', `disk id ${JSON.stringify(d.id)} cannot name a media file (must be unique, letters, digits, . _ -)`);
    }
    ids.add(d.id);
  }
  const total = disks.reduce((n, d) => n + d.size, 0);
  let before = 0;
  const cut = await cutVm(disks, { cutId: opts.cutId, time: opts.time, full: true });
  const entries: MediaDiskEntry[] = [];
  try {
    for (const frozen of cut.disks) {
      const file = `${frozen.diskId}.raw`;
      const sha256 = await writeImage(join(folder, file), frozen.size, frozen.extents((done) => opts.onProgress?.(before + done, total)));
      before += frozen.size;
      entries.push({ id: frozen.diskId, file, size: frozen.size, sha256 });
    }
  } catch (e) {
    await cut.abandon();
    throw e;
  }
  await cut.release();
  const body: MediaManifest = {
    format: MEDIA_FORMAT,
    ...(opts.relationshipId ? { relationshipId: opts.relationshipId } : {}),
    cutId: opts.cutId,
    cutTime: opts.time,
    disks: entries,
  };
  const manifest = opts.macKey ? { ...body, mac: manifestMac(body, opts.macKey) } : body;
  await writeFileAtomic(join(folder, MEDIA_MANIFEST), `${JSON.stringify(manifest, null, 2)}\n`);
  return manifest;
}

export interface ImportedDisk extends MediaDiskEntry {
  /** Absolute path of the verified image. */
  readonly path: string;
}

export interface ImportOptions {
  /** Required when the export was authenticated; a manifest without a valid MAC is then rejected. */
  readonly macKey?: Buffer;
  /** Disks the replica expects (id and size); a missing or resized one is rejected. */
  readonly expect?: readonly { readonly id: string; readonly size: number }[];
}

/**
 * Verifies an exported folder before the replica uses it: manifest format (and MAC), every file
 * present with the recorded size and SHA-256. Errors name the file at fault.
 */
export async function importFromMedia(folder: string, opts: ImportOptions = {}): Promise<{ manifest: MediaManifest; disks: ImportedDisk[] }> {
  const manifestPath = join(folder, MEDIA_MANIFEST);
  let manifest: MediaManifest;
  try {
    manifest = JSON.parse(await readFile(manifestPath, 'utf8')) as MediaManifest;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new TerminalError('not-found', `media ${folder}: no ${MEDIA_MANIFEST} (incomplete export?)`, { cause: e });
    throw new TerminalError('integrity', `media manifest ${manifestPath} is not valid JSON`, { cause: e });
  }
  if (manifest?.format !== MEDIA_FORMAT || !Array.isArray(manifest.disks)) {
    throw new TerminalError('integrity', `media manifest ${manifestPath}: format is ${JSON.stringify(manifest?.format)}, expected ${MEDIA_FORMAT}`);
  }
  if (opts.macKey) {
    const { mac, ...body } = manifest;
    const want = Buffer.from(manifestMac(body, opts.macKey), 'hex');
    const got = Buffer.from(typeof mac === 'string' ? mac : '', 'hex');
    if (got.length !== want.length || !timingSafeEqual(got, want)) {
      throw new TerminalError('authentication', `media manifest ${manifestPath}: MAC does not verify with this relationship's key`);
    }
  }
  const out: ImportedDisk[] = [];
  for (const d of manifest.disks) {
    if (typeof d.file !== 'string' || basename(d.file) !== d.file || d.file === MEDIA_MANIFEST) {
      throw new TerminalError('integrity', `media manifest ${manifestPath}: disk ${d.id} names file ${JSON.stringify(d.file)} outside the folder`);
    }
    const path = join(folder, d.file);
    const st = await stat(path).catch(() => undefined);
    if (!st) throw new TerminalError('integrity', `media file ${path} (disk ${d.id}) is missing`);
    if (st.size !== d.size) throw new TerminalError('integrity', `media file ${path} (disk ${d.id}) has ${st.size} bytes, the manifest says ${d.size}`);
    const sha256 = await sha256File(path);
    if (sha256 !== d.sha256) {
      throw new TerminalError('integrity', `media file ${path} (disk ${d.id}) is damaged or tampered: SHA-256 ${sha256}, the manifest says ${d.sha256}`);
    }
    out.push({ ...d, path });
  }
  for (const e of opts.expect ?? []) {
    const d = manifest.disks.find((x) => x.id === e.id);
    if (!d) throw new TerminalError('not-found', `media ${folder} has no disk ${e.id}`);
    if (d.size !== e.size) throw new TerminalError('invalid-argument', `media ${folder}: disk ${e.id} is ${d.size} bytes, the replica expects ${e.size}`);
  }
  return { manifest, disks: out };
}

/** Writes a full cut's extents to a new sparse file and returns the image's SHA-256. */
async function writeImage(path: string, size: number, extents: AsyncIterable<Extent>): Promise<string> {
  const fh = await open(path, 'wx', 0o600);
  try {
    await fh.truncate(size);
    const h = createHash('sha256');
    const zeroes = Buffer.alloc(1 << 20);
    let hashed = 0;
    for await (const e of extents) {
      if (e.offset !== hashed) throw new Error(`export of ${path}: extents skip from ${hashed} to ${e.offset}`);
      if ('zero' in e) {
        // Left as a hole; hashed as the zeroes it reads back as.
        for (let n = 0; n < e.length; n += zeroes.length) h.update(zeroes.subarray(0, Math.min(zeroes.length, e.length - n)));
        hashed += e.length;
      } else {
        let done = 0;
        while (done < e.data.length) done += (await fh.write(e.data, done, e.data.length - done, e.offset + done)).bytesWritten;
        h.update(e.data);
        hashed += e.data.length;
      }
    }
    if (hashed !== size) throw new Error(`export of ${path}: extents cover ${hashed} of ${size} bytes`);
    await fh.sync();
    return h.digest('hex');
  } finally {
    await fh.close();
  }
}

function manifestMac(body: Omit<MediaManifest, 'mac'>, key: Buffer): string {
  // Fixed field order, so the MAC does not depend on how the JSON was formatted.
  const canonical = JSON.stringify([
    body.format,
    body.relationshipId ?? null,
    body.cutId,
    body.cutTime,
    body.disks.map((d) => [d.id, d.file, d.size, d.sha256]),
  ]);
  return createHmac('sha256', key).update(canonical).digest('hex');
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}
