// Encryption at rest of a replica (AES-256-XTS per 4 KiB unit): the cipher itself, a store applying
// points with partial-unit writes and older points kept in undo, the plain seed an existing
// replica starts from, and the key a reopened replica must be given.
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { copyFile, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { TerminalError } from '../../../src/model/errors.ts';
import { ImageCipher, newAtRestKey } from '../../../src/core/disk/at-rest.ts';
import { ReplicaStore } from '../../../src/core/replica/replica-store.ts';
import type { BlockReader } from '../../../src/core/replica/replica-store.ts';
import type { Extent } from '../../../src/core/types.ts';
import { MiB, applyToReference, buildLog, header, newKeys, randomWrites, sha, tempDir } from '../replica/helpers.ts';

const REL = 'rel-at-rest';
const DISKS = [
  { id: 'os', size: 4 * MiB },
  // Not a multiple of 4 KiB: the last unit is partial.
  { id: 'data', size: 6 * MiB + 1536 },
];
const T0 = Date.UTC(2026, 0, 1);
/** What the guest wrote, to be looked for in the replica's files. */
const MARKER = Buffer.from('drsite-plaintext-marker:');

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

async function scratch(name: string): Promise<string> {
  const t = await tempDir(name);
  cleanups.push(t.cleanup);
  return t.dir;
}

async function readerSha(r: BlockReader): Promise<string> {
  const h = createHash('sha256');
  for (let o = 0; o < r.size; o += MiB) h.update(await r.read(o, Math.min(MiB, r.size - o)));
  await r.close();
  return h.digest('hex');
}

/** Every file under `dir` that contains `needle`. */
async function filesContaining(dir: string, needle: Buffer): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (!e.isFile()) continue;
    const path = join(e.parentPath, e.name);
    if ((await readFile(path)).includes(needle)) out.push(path);
  }
  return out;
}

const markerBlock = (n: number) => Buffer.from(Buffer.concat(Array.from({ length: Math.ceil(n / MARKER.length) }, () => MARKER)).subarray(0, n));

describe('the at-rest cipher', () => {
  it('round-trips whole units, keeps zero units zero, ties ciphertext to the offset and refuses partial units', () => {
    const c = new ImageCipher(newAtRestKey());
    const plain = Buffer.concat([markerBlock(4096), Buffer.alloc(4096), markerBlock(4096)]);
    const buf = Buffer.from(plain);
    c.encrypt(buf, 8192);
    expect(buf.includes(MARKER)).toBe(false);
    expect(buf.subarray(4096, 8192).equals(Buffer.alloc(4096))).toBe(true);
    // The same plaintext at two offsets: two different ciphertexts.
    expect(buf.subarray(0, 4096).equals(buf.subarray(8192))).toBe(false);
    c.decrypt(buf, 8192);
    expect(buf.equals(plain)).toBe(true);
    expect(() => c.encrypt(Buffer.alloc(512), 0)).toThrow(/whole 4096-byte units/);
    expect(() => c.encrypt(Buffer.alloc(4096), 512)).toThrow(/whole 4096-byte units/);
    expect(() => new ImageCipher(Buffer.alloc(32))).toThrow(/64 bytes/);
    expect(() => new ImageCipher(Buffer.concat([Buffer.alloc(32, 7), Buffer.alloc(32, 7)]))).toThrow(/two different halves/);
  });
});

/** The format replicas on disk have: one OpenSSL aes-256-xts cipher per 4 KiB unit, tweak = unit number (LE). */
function perUnitXts(key: Buffer, plain: Buffer, offset: number, encrypt: boolean): Buffer {
  const out = Buffer.from(plain);
  for (let at = 0; at < out.length; at += 4096) {
    const unit = out.subarray(at, at + 4096);
    if (unit.equals(Buffer.alloc(4096))) continue;
    const tweak = Buffer.alloc(16);
    tweak.writeBigUInt64LE(BigInt((offset + at) / 4096));
    const c = encrypt ? createCipheriv('aes-256-xts', key, tweak) : createDecipheriv('aes-256-xts', key, tweak);
    c.update(unit).copy(unit);
    c.final();
  }
  return out;
}

describe('the batched XTS (src/core/disk/xts.ts)', () => {
  it('writes and reads exactly what one OpenSSL aes-256-xts cipher per unit does: across batches, zero runs and unit numbers past 2^32', () => {
    const key = newAtRestKey();
    const c = new ImageCipher(key);
    for (const units of [1, 2, 31, 32, 33, 65, 200]) {
      const plain = randomBytes(units * 4096);
      if (units > 3) plain.fill(0, 4096, 3 * 4096); // a run of zero units inside
      if (units > 40) plain.fill(0, 40 * 4096, 41 * 4096);
      for (const offset of [0, 4096 * 31, 4096 * (2 ** 33 + 7)]) {
        const buf = Buffer.from(plain);
        c.encrypt(buf, offset);
        expect(sha(buf)).toBe(sha(perUnitXts(key, plain, offset, true)));
        // What an earlier drsite wrote (OpenSSL per unit) reads back through the batch.
        const old = perUnitXts(key, plain, offset, true);
        c.decrypt(old, offset);
        expect(old.equals(plain)).toBe(true);
      }
    }
  });

  it('the compiled module in src/core/disk/xts-wasm.ts is the build of src/core/disk/xts.wat', async () => {
    const { compileXtsWasm } = await import('../../../scripts/build-xts-wasm.ts');
    expect(await compileXtsWasm()).toBe(await readFile(new URL('../../../src/core/disk/xts-wasm.ts', import.meta.url), 'utf8'));
  });
});

describe('an encrypted replica', () => {
  it('applies points with partial-unit writes; every retained point reads back exactly, and no file holds the plaintext', async () => {
    const dir = join(await scratch('at-rest'), 'replica');
    const logs = await scratch('at-rest-logs');
    const keys = newKeys();
    const atRestKey = newAtRestKey();
    const store = await ReplicaStore.open(dir, keys, { relationshipId: REL, disks: DISKS, retention: { additional: 8 }, atRestKey });
    expect(store.atRest).toBe('aes-256-xts');
    const refs = new Map(DISKS.map((d) => [d.id, Buffer.alloc(d.size)]));
    const hashes = new Map<number, Record<string, string>>();
    for (let seq = 1; seq <= 8; seq++) {
      for (const d of DISKS) {
        // Random writes (a fifth of them unaligned, byte-granular), the marker at odd places, and
        // a zeroed range; point 5 overwrites the marker, so only undo keeps it.
        const writes: Extent[] = randomWrites(seq * 31 + d.size, d.size, 30, { maxLength: 20_000 });
        if (seq < 5) writes.push({ offset: 1000 + seq * 4096, data: markerBlock(9000) }, { offset: d.size - 700, data: markerBlock(700) });
        if (seq === 5) writes.push({ offset: 0, data: Buffer.alloc(64 * 1024, 1) }, { offset: d.size - 700, data: Buffer.alloc(700, 2) });
        if (seq === 6) writes.push({ offset: 2 * MiB + 100, length: 30_000, zero: true });
        applyToReference(refs.get(d.id)!, writes);
        const path = join(logs, `${seq}.${d.id}.hrl`);
        await buildLog(path, header({ relationshipId: REL, diskId: d.id, sequence: seq, diskSize: d.size, cutTime: T0 + seq * 3_600_000, kind: seq === 1 ? 'full' : 'delta' }), writes, keys);
        expect(await store.receive(d.id, seq, path)).toBe(true);
      }
      hashes.set(seq, Object.fromEntries(DISKS.map((d) => [d.id, sha(refs.get(d.id)!)])));
      await store.applyPending();
    }
    expect(store.points().map((p) => p.sequence)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    for (const p of store.points()) {
      for (const d of DISKS) expect(await readerSha(await store.openView(p.sequence, d.id)), `point ${p.sequence} disk ${d.id}`).toBe(hashes.get(p.sequence)![d.id]);
    }
    // A read inside a unit, across units and up to the disk's end.
    const v = await store.openView(3, 'data');
    expect((await v.read(1000 + 3 * 4096, MARKER.length)).equals(MARKER)).toBe(true);
    await v.close();
    const exported = await store.exportView(2, 'data', join(dir, '..', 'export.img'));
    expect(exported.sha256).toBe(hashes.get(2)!.data);
    // Points 1-4 hold the marker (in the undo now); the replica's own files do not.
    expect(await filesContaining(dir, MARKER)).toEqual([]);
    expect((await readdir(join(dir, 'undo'))).length).toBeGreaterThan(0);
    // The images are ciphertext, and as long as the disk rounded up to a whole unit.
    for (const d of DISKS) {
      expect(sha(await readFile(store.diskPath(d.id)))).not.toBe(hashes.get(8)![d.id]);
      expect((await stat(store.diskPath(d.id))).size).toBe(Math.ceil(d.size / 4096) * 4096);
    }
    await store.close();

    // Reopened with the site's key: the same points. With another key or none: refused, untouched.
    const again = await ReplicaStore.open(dir, keys, { relationshipId: REL, disks: DISKS, atRestKey });
    expect(await readerSha(await again.openView(4, 'os'))).toBe(hashes.get(4)!.os);
    await again.close();
    const before = sha(await readFile(store.diskPath('os')));
    const other = ReplicaStore.open(dir, keys, { relationshipId: REL, disks: DISKS, atRestKey: newAtRestKey() });
    await expect(other).rejects.toThrow(TerminalError);
    await expect(other).rejects.toThrow(/encrypted at rest under another key/);
    await expect(ReplicaStore.open(dir, keys, { relationshipId: REL, disks: DISKS })).rejects.toThrow(/its key is missing/);
    expect(sha(await readFile(store.diskPath('os')))).toBe(before);
  });

  it('encrypts a plain seed placed before it existed, and again from the seed after a crash part way', async () => {
    const root = await scratch('at-rest-seed');
    const dir = join(root, 'replica');
    const seed = markerBlock(DISKS[0].size);
    seed.fill(0, MiB, 2 * MiB); // a hole stays a hole
    const { mkdir } = await import('node:fs/promises');
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'os.img'), seed);
    const keys = newKeys();
    const atRestKey = newAtRestKey();
    const disks = [DISKS[0]];
    let store = await ReplicaStore.open(dir, keys, { relationshipId: REL, disks, atRestKey });
    expect(store.applied).toBe(0);
    expect(await readerSha(await store.openImage('os'))).toBe(sha(seed));
    expect(await filesContaining(dir, MARKER)).toEqual([]);
    await store.close();
    // A crash after the encrypted image was renamed into place but before the seed was removed:
    // the seed is still there, so it is encrypted again, never the ciphertext a second time.
    await writeFile(join(dir, 'os.img.seed'), seed);
    await copyFile(join(dir, 'os.img'), join(dir, 'os.img.xts.tmp'));
    store = await ReplicaStore.open(dir, keys, { relationshipId: REL, disks, atRestKey });
    expect(await readerSha(await store.openImage('os'))).toBe(sha(seed));
    expect((await readdir(dir)).sort()).toEqual(['incoming', 'os.img', 'state.json', 'undo']);
    await store.close();
  });

  it('stays plain when it was created before encryption at rest, whatever key it is given later', async () => {
    const dir = join(await scratch('at-rest-plain'), 'replica');
    const keys = newKeys();
    const plain = await ReplicaStore.open(dir, keys, { relationshipId: REL, disks: DISKS });
    expect(plain.atRest).toBe('none');
    await plain.close();
    const later = await ReplicaStore.open(dir, keys, { relationshipId: REL, disks: DISKS, atRestKey: newAtRestKey() });
    expect(later.atRest).toBe('none');
    await later.close();
  });
});
