// The fixed-VHD footer: build/parse round trip, checksum, CHS geometry, and QEMU's reading of it.
import { execFile } from 'node:child_process';
import { mkdtemp, rm, truncate, writeFile, appendFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TerminalError } from '../../src/model/errors.ts';
import { VHD_FOOTER_BYTES, parseVhdFooter, vhdChecksum, vhdFooter, vhdGeometry, vhdTimeToMs } from '../../src/core/disk/vhd.ts';

const run = promisify(execFile);

describe('fixed VHD footer', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'drsite-vhd-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('parse(build(x)) gives back every field, with a valid checksum', () => {
    const size = 24 << 20;
    const timestamp = Date.UTC(2026, 10, 23, 12, 0, 0);
    const uuid = '0123456789abcdef0123456789abcdef';
    const buf = vhdFooter(size, { uuid, timestamp });
    expect(buf.length).toBe(VHD_FOOTER_BYTES);
    const f = parseVhdFooter(buf);
    expect(f).toMatchObject({
      features: 2,
      version: 0x00010000,
      dataOffset: 0xffffffffffffffffn,
      creatorApp: 'win ',
      originalSize: size,
      currentSize: size,
      diskType: 2,
      uuid,
      savedState: 0,
    });
    expect(vhdTimeToMs(f.timestamp)).toBe(timestamp);
    expect(f.checksum).toBe(vhdChecksum(buf));
    expect(buf.toString('latin1', 0, 8)).toBe('conectix');
    expect(vhdFooter(size, { uuid, timestamp }).equals(buf)).toBe(true);
  });

  it('computes CHS geometry with the specification algorithm', () => {
    // Values worked by hand from the VHD specification's appendix.
    expect(vhdGeometry(64 << 20)).toEqual({ cylinders: 963, heads: 8, sectorsPerTrack: 17 });
    expect(vhdGeometry(1 << 30)).toEqual({ cylinders: 2080, heads: 16, sectorsPerTrack: 63 });
    expect(vhdGeometry(127 * 2 ** 30)).toEqual({ cylinders: 65278, heads: 16, sectorsPerTrack: 255 });
    // Past 65535 x 16 x 255 sectors the geometry saturates.
    expect(vhdGeometry(200 * 2 ** 30)).toEqual({ cylinders: 65535, heads: 16, sectorsPerTrack: 255 });
    expect(vhdGeometry(4 << 20)).toEqual({ cylinders: 120, heads: 4, sectorsPerTrack: 17 });
  });

  it('rejects a damaged footer: checksum, cookie, disk type, length', () => {
    const good = vhdFooter(1 << 20, { uuid: '00'.repeat(16), timestamp: Date.UTC(2026, 0, 1) });
    const flipped = Buffer.from(good);
    flipped[50] ^= 1;
    expect(() => parseVhdFooter(flipped)).toThrow(/checksum/);
    const cookie = Buffer.from(good);
    cookie.write('conectiy', 0, 'latin1');
    expect(() => parseVhdFooter(cookie)).toThrow(/cookie/);
    const dynamic = Buffer.from(good);
    dynamic.writeUInt32BE(3, 60);
    dynamic.writeUInt32BE(vhdChecksum(dynamic), 64);
    expect(() => parseVhdFooter(dynamic)).toThrow(/disk type 3/);
    expect(() => parseVhdFooter(good.subarray(0, 511))).toThrow(TerminalError);
    expect(() => vhdFooter(1000)).toThrow(/multiple of 512/);
  });

  it('qemu-img reads data + footer as a fixed VPC image of the exact size, CHS-unfriendly sizes included', async () => {
    for (const size of [8 * (1 << 20) + 1536, 3 * (1 << 20), 5000 * 512]) {
      const path = join(dir, `d${size}.vhd`);
      await writeFile(path, Buffer.alloc(0));
      await truncate(path, size);
      await appendFile(path, vhdFooter(size));
      const { stdout } = await run('qemu-img', ['info', '--output', 'json', '-f', 'vpc', path]);
      const info = JSON.parse(stdout) as { 'virtual-size': number; format: string };
      expect(info.format).toBe('vpc');
      expect(info['virtual-size']).toBe(size);
    }
  });
});
