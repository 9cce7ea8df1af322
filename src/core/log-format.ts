// The replication log file (`.hrl`), version 1: a framed, sealed, encrypted list of extents of one
// disk at one cut. A reader verifies the sealing MAC over the whole file before it yields a single
// extent, so a damaged or truncated log is rejected whole and nothing of it is ever applied.
//
// Layout (integers little-endian):
//   preamble  "DRSHRL01" | version u16 | reserved u16 | salt[32] | headerLen u32 | header JSON
//   record*   offset u64 | length u32 | flags u8 | reserved[3] | stored u32 | tag[16] | ciphertext[stored]
//             flags: 1 = zero extent (no payload), 2 = payload zstd-compressed
//   footer    "DRSHRLFT" | records u64 | dataBytes u64 | zeroBytes u64 | bodyBytes u64 | mac[32]
// mac = HMAC-SHA-256(macKey) over every byte before it (preamble, header, records, footer fields).
import { open, stat } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { constants as zc, zstdCompress, zstdCompressSync, zstdDecompressSync } from 'node:zlib';
import { RetryableError, TerminalError } from '../model/errors.ts';
import type { Extent, LogHeader, RelationshipKeys } from './types.ts';
import { MAX_RECORD_BYTES } from './log-coalesce.ts';
import {
  SALT_BYTES, TAG_BYTES, aadPrefix, checkKeys, deriveLogKey, logMac, newSalt, openRecord, sealRecord,
} from './log-crypto.ts';
import { ChunkReader, SealedFileWriter, readU64, writeU64 } from './log-io.ts';

export { coalesce, MAX_RECORD_BYTES } from './log-coalesce.ts';

export const LOG_MAGIC = 'DRSHRL01';
export const LOG_VERSION = 1;
const FOOTER_MAGIC = 'DRSHRLFT';
export const PREAMBLE_BYTES = 8 + 2 + 2 + SALT_BYTES + 4;
export const RECORD_HEADER_BYTES = 8 + 4 + 1 + 3 + 4 + TAG_BYTES;
export const FOOTER_BYTES = 8 + 8 * 4 + 32;
const MAC_BYTES = 32;
const FLAG_ZERO = 1;
const FLAG_COMPRESSED = 2;
/** Zero extents are metadata; one record covers at most this much so lengths fit in u32. */
const MAX_ZERO_RECORD = 1 << 30;
const MAX_HEADER_BYTES = 64 << 10;
/** Payloads below this size compress inline; larger ones go to the thread pool, in a window. */
const INLINE_COMPRESS = 64 << 10;
const COMPRESS_WINDOW = 4;
/**
 * zstd-1 parameters for one record: the window and hash table sized to the record (zstd's own
 * level-1 defaults are sized for large inputs), because each one-shot call allocates and clears
 * its context, which costs more than compressing a 4 KiB record.
 */
const zstdParams = new Map<number, { params: Record<number, number> }>();
function zstdFor(length: number): { params: Record<number, number> } {
  const windowLog = Math.min(19, Math.max(10, Math.ceil(Math.log2(length))));
  let p = zstdParams.get(windowLog);
  if (!p) {
    p = { params: { [zc.ZSTD_c_compressionLevel]: 1, [zc.ZSTD_c_windowLog]: windowLog, [zc.ZSTD_c_hashLog]: Math.min(13, windowLog) } };
    zstdParams.set(windowLog, p);
  }
  return p;
}

export interface LogSummary {
  readonly path: string;
  /** Size of the sealed file. */
  readonly bytes: number;
  /** Payload bytes of data extents (before compression). */
  readonly dataBytes: number;
  /** Bytes of the disk covered by zero extents (sent as metadata). */
  readonly zeroBytes: number;
  readonly records: number;
  /** Hex of the sealing MAC: identifies this exact file. */
  readonly digest: string;
}

export interface LogRecordInfo {
  readonly offset: number;
  readonly length: number;
  readonly zero: boolean;
}

/** A log whose seal was verified; `records()` decrypts and decompresses it. */
export interface VerifiedLog {
  readonly path: string;
  readonly header: LogHeader;
  readonly summary: Omit<LogSummary, 'path'>;
  /** Every record's place, in file order, known from the verification pass without decrypting. */
  readonly index: readonly LogRecordInfo[];
  records(): AsyncIterable<Extent>;
}

// ---------------------------------------------------------------------------------------- writing

function checkHeader(h: LogHeader): void {
  const bad = (what: string) => new TerminalError('invalid-argument', `log header: ${what}`);
  for (const k of ['relationshipId', 'diskId', 'cutId'] as const) {
    if (typeof h[k] !== 'string' || !h[k]) throw bad(`${k} must be a non-empty string`);
  }
  for (const k of ['diskSize', 'sequence', 'basePoint', 'blockSize', 'cutTime'] as const) {
    if (!Number.isSafeInteger(h[k]) || h[k] < 0) throw bad(`${k} must be a non-negative integer, got ${h[k]}`);
  }
  if (h.sequence < 1) throw bad(`sequence must be >= 1, got ${h.sequence}`);
  if (h.consistency !== 'crash' && h.consistency !== 'app') throw bad(`consistency ${String(h.consistency)}`);
  if (!['delta', 'full', 'resync'].includes(h.kind)) throw bad(`kind ${String(h.kind)}`);
}

function headerJson(h: LogHeader): Buffer {
  const { relationshipId, diskId, diskSize, sequence, basePoint, blockSize, cutTime, consistency, kind, cutId } = h;
  return Buffer.from(
    JSON.stringify({ relationshipId, diskId, diskSize, sequence, basePoint, blockSize, cutTime, consistency, kind, cutId }),
  );
}

function compressAsync(data: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    zstdCompress(data, zstdFor(data.length), (err, out) => (err ? reject(err) : resolve(out))),
  );
}

interface Pending {
  readonly offset: number;
  readonly length: number;
  readonly flags: number;
  readonly payload: Promise<Buffer> | Buffer;
  readonly raw: Buffer;
}

/** Splits extents into records: data at most MAX_RECORD_BYTES, zero runs at most MAX_ZERO_RECORD. */
async function* records(
  extents: AsyncIterable<Extent> | Iterable<Extent>,
  diskSize: number,
): AsyncGenerator<{ offset: number; data?: Buffer; length: number }> {
  for await (const e of extents) {
    const length = 'data' in e ? e.data.length : e.length;
    if (!Number.isSafeInteger(e.offset) || e.offset < 0 || !Number.isSafeInteger(length) || e.offset + length > diskSize) {
      throw new TerminalError('invalid-argument', `extent at ${e.offset} length ${length} lies outside the disk (${diskSize} bytes)`);
    }
    const step = 'data' in e ? MAX_RECORD_BYTES : MAX_ZERO_RECORD;
    for (let at = 0; at < length; at += step) {
      const n = Math.min(step, length - at);
      if ('data' in e) yield { offset: e.offset + at, data: e.data.subarray(at, at + n), length: n };
      else yield { offset: e.offset + at, length: n };
    }
  }
}

async function encode(
  header: LogHeader,
  extents: AsyncIterable<Extent> | Iterable<Extent>,
  keys: RelationshipKeys,
  sink: (chunk: Buffer) => Promise<void>,
): Promise<Omit<LogSummary, 'path'>> {
  checkHeader(header);
  checkKeys(keys);
  const mac = logMac(keys);
  let bytes = 0;
  const put = async (chunk: Buffer) => {
    mac.update(chunk);
    bytes += chunk.length;
    await sink(chunk);
  };
  const salt = newSalt();
  const json = headerJson(header);
  const pre = Buffer.alloc(PREAMBLE_BYTES);
  pre.write(LOG_MAGIC, 0, 'latin1');
  pre.writeUInt16LE(LOG_VERSION, 8);
  salt.copy(pre, 12);
  pre.writeUInt32LE(json.length, 12 + SALT_BYTES);
  await put(pre);
  await put(json);

  const key = deriveLogKey(keys, salt, header);
  const prefix = aadPrefix(header);
  let index = 0;
  let dataBytes = 0;
  let zeroBytes = 0;
  const window: Pending[] = [];

  const emit = async (p: Pending) => {
    let payload = await p.payload;
    let flags = p.flags;
    if (flags & FLAG_COMPRESSED && payload.length >= p.raw.length) {
      payload = p.raw; // compression did not pay: store as is
      flags &= ~FLAG_COMPRESSED;
    }
    const sealed = sealRecord(key, prefix, index++, { offset: p.offset, length: p.length, flags }, payload);
    const rh = Buffer.alloc(RECORD_HEADER_BYTES);
    writeU64(rh, p.offset, 0);
    rh.writeUInt32LE(p.length, 8);
    rh.writeUInt8(flags, 12);
    rh.writeUInt32LE(sealed.ciphertext.length, 16);
    sealed.tag.copy(rh, 20);
    await put(rh);
    await put(sealed.ciphertext);
  };

  for await (const r of records(extents, header.diskSize)) {
    if (r.data) {
      dataBytes += r.length;
      const payload = r.length < INLINE_COMPRESS ? zstdCompressSync(r.data, zstdFor(r.length)) : compressAsync(r.data);
      window.push({ offset: r.offset, length: r.length, flags: FLAG_COMPRESSED, payload, raw: r.data });
    } else {
      zeroBytes += r.length;
      window.push({ offset: r.offset, length: r.length, flags: FLAG_ZERO, payload: Buffer.alloc(0), raw: Buffer.alloc(0) });
    }
    if (window.length >= COMPRESS_WINDOW) await emit(window.shift()!);
  }
  while (window.length) await emit(window.shift()!);

  const foot = Buffer.alloc(FOOTER_BYTES);
  foot.write(FOOTER_MAGIC, 0, 'latin1');
  writeU64(foot, index, 8);
  writeU64(foot, dataBytes, 16);
  writeU64(foot, zeroBytes, 24);
  writeU64(foot, bytes, 32);
  mac.update(foot.subarray(0, FOOTER_BYTES - MAC_BYTES));
  const digest = mac.digest();
  digest.copy(foot, FOOTER_BYTES - MAC_BYTES);
  bytes += foot.length;
  await sink(foot);
  return { bytes, dataBytes, zeroBytes, records: index, digest: digest.toString('hex') };
}

/**
 * Writes a sealed log to `out` (through `out.tmp`, fsync, rename, directory fsync), so `out`
 * never names a partial log. Extents are encoded as given: call `coalesce` first for a cycle's writes.
 */
export async function writeLog(
  header: LogHeader,
  extents: AsyncIterable<Extent> | Iterable<Extent>,
  keys: RelationshipKeys,
  out: string,
): Promise<LogSummary> {
  const w = await SealedFileWriter.create(out);
  try {
    const s = await encode(header, extents, keys, (c) => w.append(c));
    await w.seal();
    return { path: out, ...s };
  } catch (e) {
    await w.abort();
    throw e;
  }
}

/** The same bytes as `writeLog`, in memory (tests, benchmarks, small logs). */
export async function encodeLog(
  header: LogHeader,
  extents: AsyncIterable<Extent> | Iterable<Extent>,
  keys: RelationshipKeys,
): Promise<Buffer> {
  const parts: Buffer[] = [];
  await encode(header, extents, keys, async (c) => {
    parts.push(c);
  });
  return Buffer.concat(parts);
}

// ---------------------------------------------------------------------------------------- reading

function integrity(path: string, what: string): RetryableError {
  return new RetryableError('integrity', `replication log ${path}: ${what}`);
}

function parseHeader(json: Buffer): LogHeader | undefined {
  let h: unknown;
  try {
    h = JSON.parse(json.toString('utf8'));
  } catch {
    return undefined;
  }
  try {
    checkHeader(h as LogHeader);
  } catch {
    return undefined;
  }
  return h as LogHeader;
}

function parsePreamble(path: string, pre: Buffer): { salt: Buffer; headerLen: number } {
  if (pre.toString('latin1', 0, 8) !== LOG_MAGIC) throw integrity(path, 'bad magic (not a drsite replication log)');
  const version = pre.readUInt16LE(8);
  if (version !== LOG_VERSION) throw integrity(path, `unsupported format version ${version}`);
  const headerLen = pre.readUInt32LE(12 + SALT_BYTES);
  if (headerLen === 0 || headerLen > MAX_HEADER_BYTES) throw integrity(path, `header length ${headerLen} out of range`);
  return { salt: Buffer.from(pre.subarray(12, 12 + SALT_BYTES)), headerLen };
}

/** The header of a log without verifying anything: for listing and routing only, never for applying. */
export async function readLogHeader(path: string): Promise<LogHeader> {
  const fh = await open(path, 'r');
  try {
    const pre = Buffer.alloc(PREAMBLE_BYTES);
    const { bytesRead } = await fh.read(pre, 0, PREAMBLE_BYTES, 0);
    if (bytesRead < PREAMBLE_BYTES) throw integrity(path, 'truncated before the header');
    const { headerLen } = parsePreamble(path, pre);
    const json = Buffer.alloc(headerLen);
    const r = await fh.read(json, 0, headerLen, PREAMBLE_BYTES);
    if (r.bytesRead < headerLen) throw integrity(path, 'truncated inside the header');
    const h = parseHeader(json);
    if (!h) throw integrity(path, 'malformed header');
    return h;
  } finally {
    await fh.close();
  }
}

function parseRecordHeader(rh: Buffer): { offset: number; length: number; flags: number; stored: number; tag: Buffer } | undefined {
  const offset = readU64(rh, 0);
  if (offset === undefined) return undefined;
  const length = rh.readUInt32LE(8);
  const flags = rh.readUInt8(12);
  const stored = rh.readUInt32LE(16);
  if (flags & ~(FLAG_ZERO | FLAG_COMPRESSED)) return undefined;
  if (flags & FLAG_ZERO) {
    if (stored !== 0 || flags & FLAG_COMPRESSED || length === 0 || length > MAX_ZERO_RECORD) return undefined;
  } else {
    if (length === 0 || length > MAX_RECORD_BYTES) return undefined;
    if (flags & FLAG_COMPRESSED ? stored === 0 || stored > length + 1024 : stored !== length) return undefined;
  }
  return { offset, length, flags, stored, tag: rh.subarray(20, 20 + TAG_BYTES) };
}

/**
 * Opens a log and verifies its seal over the whole file before returning; rejects with
 * RetryableError('integrity') on bad magic, truncation, MAC mismatch, a malformed structure or a
 * log for another relationship, disk or sequence than `expect`.
 */
export async function openLog(
  path: string,
  keys: RelationshipKeys,
  expect?: { relationshipId?: string; diskId?: string; sequence?: number },
): Promise<VerifiedLog> {
  checkKeys(keys);
  const size = (await stat(path)).size;
  if (size < PREAMBLE_BYTES + FOOTER_BYTES) throw integrity(path, `truncated (${size} bytes)`);
  const fh = await open(path, 'r');
  let header: LogHeader | undefined;
  let salt: Buffer;
  let bodyStart: number;
  const index: LogRecordInfo[] = [];
  let foot: Buffer;
  try {
    foot = Buffer.alloc(FOOTER_BYTES);
    await readExactly(fh, foot, size - FOOTER_BYTES);
    if (foot.toString('latin1', 0, 8) !== FOOTER_MAGIC) throw integrity(path, 'truncated (no sealed footer)');
    const bodyBytes = readU64(foot, 32);
    if (bodyBytes !== size - FOOTER_BYTES) {
      throw integrity(path, `truncated or extended: footer says ${bodyBytes} body bytes, file holds ${size - FOOTER_BYTES}`);
    }
    // One sequential pass hashes every byte and, on the way, indexes the records.
    const mac = logMac(keys);
    const reader = new ChunkReader(fh, 0, bodyBytes);
    const take = async (n: number) => {
      const b = await reader.take(n);
      if (b) mac.update(b);
      return b;
    };
    const pre = (await take(PREAMBLE_BYTES))!;
    ({ salt } = parsePreamble(path, pre));
    const headerLen = pre.readUInt32LE(12 + SALT_BYTES);
    const json = await take(headerLen);
    let malformed = json ? undefined : 'header runs past the end';
    header = json ? parseHeader(json) : undefined;
    if (json && !header) malformed = 'malformed header';
    bodyStart = PREAMBLE_BYTES + headerLen;
    while (!malformed && reader.offset < bodyBytes) {
      const rh = await take(RECORD_HEADER_BYTES);
      const r = rh && parseRecordHeader(rh);
      if (!r) {
        malformed = `malformed record ${index.length} at byte ${reader.offset}`;
        break;
      }
      if (!(await take(r.stored))) {
        malformed = `record ${index.length} runs past the end`;
        break;
      }
      index.push({ offset: r.offset, length: r.length, zero: (r.flags & FLAG_ZERO) !== 0 });
    }
    // Whatever went wrong above, hash the rest so a damaged file reports as a MAC mismatch.
    while (reader.offset < bodyBytes) {
      const b = await take(Math.min(4 << 20, bodyBytes - reader.offset));
      if (!b) break;
    }
    mac.update(foot.subarray(0, FOOTER_BYTES - MAC_BYTES));
    if (!mac.digest().equals(foot.subarray(FOOTER_BYTES - MAC_BYTES))) {
      throw integrity(path, `MAC mismatch (damaged, truncated or not sealed with this relationship's key)${malformed ? `; ${malformed}` : ''}`);
    }
    if (malformed || !header) throw integrity(path, malformed ?? 'malformed header');
    if (readU64(foot, 8) !== index.length) throw integrity(path, `footer counts ${readU64(foot, 8)} records, file holds ${index.length}`);
  } finally {
    await fh.close();
  }
  const h = header;
  for (const k of ['relationshipId', 'diskId', 'sequence'] as const) {
    if (expect?.[k] !== undefined && expect[k] !== h[k]) {
      throw integrity(path, `log is for ${k} ${JSON.stringify(h[k])}, expected ${JSON.stringify(expect[k])}`);
    }
  }
  if (index.some((r) => r.offset + r.length > h.diskSize)) throw integrity(path, 'a record lies outside the disk');
  const summary = {
    bytes: size,
    dataBytes: readU64(foot, 16)!,
    zeroBytes: readU64(foot, 24)!,
    records: index.length,
    digest: foot.subarray(FOOTER_BYTES - MAC_BYTES).toString('hex'),
  };
  return {
    path,
    header: h,
    summary,
    index,
    records: () => decodeRecords(path, keys, h, salt, bodyStart, size - FOOTER_BYTES, index),
  };
}

async function readExactly(fh: FileHandle, buf: Buffer, position: number): Promise<void> {
  let got = 0;
  while (got < buf.length) {
    const { bytesRead } = await fh.read(buf, got, buf.length - got, position + got);
    if (bytesRead === 0) throw new RetryableError('integrity', 'unexpected end of file');
    got += bytesRead;
  }
}

async function* decodeRecords(
  path: string,
  keys: RelationshipKeys,
  header: LogHeader,
  salt: Buffer,
  start: number,
  end: number,
  index: readonly LogRecordInfo[],
): AsyncGenerator<Extent> {
  const key = deriveLogKey(keys, salt, header);
  const prefix = aadPrefix(header);
  const fh = await open(path, 'r');
  try {
    const reader = new ChunkReader(fh, start, end);
    for (let i = 0; i < index.length; i++) {
      const rh = await reader.take(RECORD_HEADER_BYTES);
      const r = rh && parseRecordHeader(rh);
      const info = index[i];
      // The file was verified moments ago; anything different now means it changed underneath us.
      if (!r || r.offset !== info.offset || r.length !== info.length) throw integrity(path, `record ${i} changed since verification`);
      const ct = await reader.take(r.stored);
      if (!ct) throw integrity(path, `record ${i} truncated since verification`);
      const plain = openRecord(key, prefix, i, r, ct, r.tag);
      if (!plain) throw integrity(path, `record ${i} (offset ${r.offset}) fails authentication`);
      if (r.flags & FLAG_ZERO) {
        yield { offset: r.offset, length: r.length, zero: true };
        continue;
      }
      let data = plain;
      if (r.flags & FLAG_COMPRESSED) {
        try {
          data = zstdDecompressSync(plain, { maxOutputLength: r.length });
        } catch (e) {
          throw integrity(path, `record ${i} does not decompress: ${(e as Error).message}`);
        }
      }
      if (data.length !== r.length) throw integrity(path, `record ${i} holds ${data.length} bytes, header says ${r.length}`);
      yield { offset: r.offset, data };
    }
  } finally {
    await fh.close();
  }
}
