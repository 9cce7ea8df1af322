// The 512-byte footer of a fixed VHD (Microsoft's Virtual Hard Disk Image Format Specification):
// a page blob holding the raw disk followed by this footer is a disk Azure turns into a managed disk
// and that `qemu-img -f vpc` reads.
import { randomBytes } from 'node:crypto';
import { TerminalError } from '../../model/errors.ts';

export const VHD_FOOTER_BYTES = 512;
const COOKIE = 'conectix';
const FEATURES_RESERVED = 2;
const FORMAT_VERSION = 0x0001_0000;
const FIXED_DATA_OFFSET = 0xffff_ffff_ffff_ffffn;
const DISK_TYPE_FIXED = 2;
/** VHD timestamps count seconds from 2000-01-01T00:00:00Z. */
const VHD_EPOCH_MS = Date.UTC(2000, 0, 1);
/** 65535 cylinders x 16 heads x 255 sectors: the largest geometry the footer can express. */
const MAX_CHS_SECTORS = 65535 * 16 * 255;

/**
 * Creator application "win ": readers (QEMU's vpc driver among them) take the disk's size from
 * `currentSize` for Hyper-V-made images and from the CHS geometry otherwise, and CHS rounds most
 * sizes down. Azure itself writes "win " footers too.
 */
const DEFAULT_CREATOR_APP = 'win ';
const CREATOR_VERSION = 0x000a_0000;
/** "Wi2k": the host OS field Hyper-V and Azure write. */
const CREATOR_HOST_OS = 0x5769_326b;

export interface ChsGeometry {
  readonly cylinders: number;
  readonly heads: number;
  readonly sectorsPerTrack: number;
}

export interface VhdFooter {
  readonly features: number;
  readonly version: number;
  readonly dataOffset: bigint;
  /** Seconds since 2000-01-01T00:00:00Z. */
  readonly timestamp: number;
  readonly creatorApp: string;
  readonly creatorVersion: number;
  readonly creatorHostOs: number;
  readonly originalSize: number;
  readonly currentSize: number;
  readonly geometry: ChsGeometry;
  readonly diskType: number;
  readonly checksum: number;
  /** 16 bytes, hex. */
  readonly uuid: string;
  readonly savedState: number;
}

export interface VhdFooterOptions {
  /** 16 bytes as 32 hex digits (dashes allowed). @default random */
  readonly uuid?: string;
  /** Milliseconds since the epoch. @default Date.now() */
  readonly timestamp?: number;
  /** Four characters. @default "win " */
  readonly creatorApp?: string;
}

/** CHS geometry per the VHD specification's algorithm (appendix "CHS Calculation"). */
export function vhdGeometry(size: number): ChsGeometry {
  let total = Math.floor(size / 512);
  if (total > MAX_CHS_SECTORS) total = MAX_CHS_SECTORS;
  let sectorsPerTrack: number;
  let heads: number;
  let cylTimesHeads: number;
  if (total >= 65535 * 16 * 63) {
    sectorsPerTrack = 255;
    heads = 16;
    cylTimesHeads = Math.floor(total / sectorsPerTrack);
  } else {
    sectorsPerTrack = 17;
    cylTimesHeads = Math.floor(total / sectorsPerTrack);
    heads = Math.floor((cylTimesHeads + 1023) / 1024);
    if (heads < 4) heads = 4;
    if (cylTimesHeads >= heads * 1024 || heads > 16) {
      sectorsPerTrack = 31;
      heads = 16;
      cylTimesHeads = Math.floor(total / sectorsPerTrack);
    }
    if (cylTimesHeads >= heads * 1024) {
      sectorsPerTrack = 63;
      heads = 16;
      cylTimesHeads = Math.floor(total / sectorsPerTrack);
    }
  }
  return { cylinders: Math.floor(cylTimesHeads / heads), heads, sectorsPerTrack };
}

/** One's complement of the byte sum, taken with the checksum field counted as zero. */
export function vhdChecksum(footer: Buffer): number {
  let sum = 0;
  for (let i = 0; i < VHD_FOOTER_BYTES; i++) if (i < 64 || i >= 68) sum += footer[i];
  return ~sum >>> 0;
}

/** The footer of a fixed VHD whose data part is `size` bytes (a multiple of 512). */
export function vhdFooter(size: number, opts: VhdFooterOptions = {}): Buffer {
  if (!Number.isSafeInteger(size) || size <= 0 || size % 512 !== 0) {
    throw new TerminalError('invalid-argument', `VHD size must be a positive multiple of 512 bytes, got ${size}`);
  }
  const creator = opts.creatorApp ?? DEFAULT_CREATOR_APP;
  if (Buffer.byteLength(creator, 'latin1') !== 4) throw new TerminalError('invalid-argument', `VHD creator application must be 4 characters, got ${JSON.stringify(creator)}`);
  const ms = opts.timestamp ?? Date.now();
  const seconds = Math.max(0, Math.floor((ms - VHD_EPOCH_MS) / 1000)) >>> 0;
  const uuid = opts.uuid !== undefined ? parseUuid(opts.uuid) : randomBytes(16);
  const g = vhdGeometry(size);
  const b = Buffer.alloc(VHD_FOOTER_BYTES);
  b.write(COOKIE, 0, 'latin1');
  b.writeUInt32BE(FEATURES_RESERVED, 8);
  b.writeUInt32BE(FORMAT_VERSION, 12);
  b.writeBigUInt64BE(FIXED_DATA_OFFSET, 16);
  b.writeUInt32BE(seconds, 24);
  b.write(creator, 28, 'latin1');
  b.writeUInt32BE(CREATOR_VERSION, 32);
  b.writeUInt32BE(CREATOR_HOST_OS, 36);
  b.writeBigUInt64BE(BigInt(size), 40);
  b.writeBigUInt64BE(BigInt(size), 48);
  b.writeUInt16BE(g.cylinders, 56);
  b.writeUInt8(g.heads, 58);
  b.writeUInt8(g.sectorsPerTrack, 59);
  b.writeUInt32BE(DISK_TYPE_FIXED, 60);
  uuid.copy(b, 68);
  b.writeUInt32BE(vhdChecksum(b), 64);
  return b;
}

/** Parses and checks a footer: cookie, checksum, fixed disk type. Throws TerminalError('invalid-argument') naming what is wrong. */
export function parseVhdFooter(buf: Buffer): VhdFooter {
  const bad = (what: string) => new TerminalError('invalid-argument', `not a valid fixed VHD footer: ${what}`);
  if (buf.length !== VHD_FOOTER_BYTES) throw bad(`${buf.length} bytes, expected ${VHD_FOOTER_BYTES}`);
  if (buf.toString('latin1', 0, 8) !== COOKIE) throw bad(`cookie ${JSON.stringify(buf.toString('latin1', 0, 8))}`);
  const checksum = buf.readUInt32BE(64);
  const expected = vhdChecksum(buf);
  if (checksum !== expected) throw bad(`checksum 0x${checksum.toString(16)} where the bytes sum to 0x${expected.toString(16)}`);
  const diskType = buf.readUInt32BE(60);
  if (diskType !== DISK_TYPE_FIXED) throw bad(`disk type ${diskType}, only fixed (2) is supported`);
  const currentSize = buf.readBigUInt64BE(48);
  const originalSize = buf.readBigUInt64BE(40);
  if (currentSize > BigInt(Number.MAX_SAFE_INTEGER) || originalSize > BigInt(Number.MAX_SAFE_INTEGER)) throw bad('size out of range');
  return {
    features: buf.readUInt32BE(8),
    version: buf.readUInt32BE(12),
    dataOffset: buf.readBigUInt64BE(16),
    timestamp: buf.readUInt32BE(24),
    creatorApp: buf.toString('latin1', 28, 32),
    creatorVersion: buf.readUInt32BE(32),
    creatorHostOs: buf.readUInt32BE(36),
    originalSize: Number(originalSize),
    currentSize: Number(currentSize),
    geometry: { cylinders: buf.readUInt16BE(56), heads: buf.readUInt8(58), sectorsPerTrack: buf.readUInt8(59) },
    diskType,
    checksum,
    uuid: buf.subarray(68, 84).toString('hex'),
    savedState: buf.readUInt8(84),
  };
}

/** VHD timestamp (seconds since 2000) to milliseconds since the epoch. */
export function vhdTimeToMs(seconds: number): number {
  return VHD_EPOCH_MS + seconds * 1000;
}

function parseUuid(s: string): Buffer {
  const hex = s.replace(/-/g, '');
  if (!/^[0-9a-fA-F]{32}$/.test(hex)) throw new TerminalError('invalid-argument', `VHD unique id must be 16 bytes of hex, got ${JSON.stringify(s)}`);
  return Buffer.from(hex, 'hex');
}
