// The streamed initial copy. A full cut of each disk travels as segments: each segment is one
// complete sealed log (format 2, kind `full`, sequence 1) covering one SEGMENT_BYTES range of the
// disk, sent as it is encoded. The replica reads it as it arrives: every frame is authenticated
// (AES-GCM) before its extents are written at their offsets, the whole segment's MAC is checked at
// its footer, and only then does its durable checkpoint advance. Nothing in an initial copy is a
// recovery point until every segment of every disk is in, so frames written before a segment's
// MAC verified are harmless: a segment that fails is sent again whole, and covers its whole range.
//
// Compared with shipping one log file: no outbox copy on the primary, no inbox copy on the
// replica, no second verification pass, and the two sides work at the same time.
import { aadPrefix, deriveLogKey, logMac } from '../log/log-crypto.ts';
import {
  ENTRY_BYTES, FOOTER_BYTES, FOOTER_MAGIC, FRAME_BOUND_BYTES, FRAME_HEADER_BYTES, MAC_BYTES, PREAMBLE_BYTES,
  decodeFrame, integrity, parseFrameHeader, parseHeader, parsePreamble, parseTable,
  type Decoder, type FrameInfo,
} from '../log/log-format.ts';
import { readU64 } from '../log/log-io.ts';
import type { Extent, LogHeader, RelationshipKeys } from '../types.ts';

/** Disk bytes one segment covers: the checkpoint interval of a resumable initial copy. */
export const SEGMENT_BYTES = 32 << 20;

/** Frames decoded (decompressed in the thread pool) ahead of the one being written. */
const DECODE_AHEAD = 4;

export function segmentCount(diskSize: number): number {
  return Math.max(1, Math.ceil(diskSize / SEGMENT_BYTES));
}

export function segmentRange(index: number, diskSize: number): { start: number; end: number } {
  return { start: index * SEGMENT_BYTES, end: Math.min(diskSize, (index + 1) * SEGMENT_BYTES) };
}

/**
 * Splits a disk's ascending extents into segment ranges: `take(end)` yields the extents up to
 * `end`, cutting one that crosses it; the rest waits for the next call.
 */
export class ExtentCursor {
  readonly #it: AsyncIterator<Extent>;
  #held: Extent | undefined;
  #done = false;

  constructor(extents: AsyncIterable<Extent>) {
    this.#it = extents[Symbol.asyncIterator]();
  }

  async *take(end: number): AsyncGenerator<Extent> {
    for (;;) {
      let e = this.#held;
      this.#held = undefined;
      if (!e) {
        if (this.#done) return;
        const r = await this.#it.next();
        if (r.done) {
          this.#done = true;
          return;
        }
        e = r.value;
      }
      if (e.offset >= end) {
        this.#held = e;
        return;
      }
      const length = 'data' in e ? e.data.length : e.length;
      if (e.offset + length <= end) {
        yield e;
        continue;
      }
      const head = end - e.offset;
      if ('data' in e) {
        yield { offset: e.offset, data: e.data.subarray(0, head) };
        this.#held = { offset: end, data: e.data.subarray(head) };
      } else {
        yield { offset: e.offset, length: head, zero: true };
        this.#held = { offset: end, length: length - head, zero: true };
      }
      return;
    }
  }

  /** Ends the underlying iteration (the cut's reader) early. */
  async close(): Promise<void> {
    await this.#it.return?.();
  }
}

/** Exact reads from a stream of chunks (a request body): chunks are joined once per read, not per arrival. */
class StreamReader {
  readonly #it: AsyncIterator<Buffer>;
  /** Unread chunks; the first one from #at. */
  #chunks: Buffer[] = [];
  #at = 0;
  #buffered = 0;
  /** Bytes consumed so far. */
  offset = 0;

  constructor(body: AsyncIterable<Buffer | Uint8Array>) {
    this.#it = (body as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
  }

  async #fill(n: number): Promise<boolean> {
    while (this.#buffered < n) {
      const r = await this.#it.next();
      if (r.done) return false;
      const chunk = Buffer.isBuffer(r.value) ? r.value : Buffer.from(r.value);
      this.#chunks.push(chunk);
      this.#buffered += chunk.length;
    }
    return true;
  }

  /** The next `n` bytes, or undefined when the stream ends first. The view is valid until the next call. */
  async take(n: number): Promise<Buffer | undefined> {
    if (n === 0) return Buffer.alloc(0); // a frame of zero extents only stores no payload
    if (!(await this.#fill(n))) return undefined;
    const first = this.#chunks[0];
    let out: Buffer;
    if (first.length - this.#at >= n) {
      out = first.subarray(this.#at, this.#at + n);
      this.#at += n;
    } else {
      out = Buffer.allocUnsafe(n);
      let got = 0;
      while (got < n) {
        const c = this.#chunks[0];
        const k = Math.min(n - got, c.length - this.#at);
        c.copy(out, got, this.#at, this.#at + k);
        got += k;
        this.#at += k;
        if (this.#at === c.length) {
          this.#chunks.shift();
          this.#at = 0;
        }
      }
    }
    if (this.#chunks.length && this.#at === this.#chunks[0].length) {
      this.#chunks.shift();
      this.#at = 0;
    }
    this.#buffered -= n;
    this.offset += n;
    return out;
  }

  /** True when nothing follows (reads ahead if needed). */
  async atEnd(): Promise<boolean> {
    return !(await this.#fill(1));
  }
}

export interface SegmentExpectation {
  readonly relationshipId: string;
  readonly diskId: string;
  readonly diskSize: number;
  /** The disk range the segment must cover, exactly and in order. */
  readonly start: number;
  readonly end: number;
  /** Checked against the header before any frame is written (e.g. the copy's cutId). */
  readonly checkHeader?: (h: LogHeader) => void | Promise<void>;
}

export interface SegmentSummary {
  readonly header: LogHeader;
  readonly bytes: number;
  readonly dataBytes: number;
  readonly zeroBytes: number;
  readonly records: number;
}

/**
 * Reads one segment from `body` and hands its extents to `write` as their frames authenticate.
 * Resolves once the footer's MAC over the whole segment verified; rejects with
 * RetryableError('integrity') on a forged, damaged, truncated or misplaced segment (extents
 * outside the range, gaps, overlaps), possibly after `write` saw some of its frames.
 */
export async function receiveSegment(
  body: AsyncIterable<Buffer | Uint8Array>,
  keys: RelationshipKeys,
  expect: SegmentExpectation,
  write: (e: Extent) => Promise<void> | void,
  label = `initial copy of ${expect.diskId} at ${expect.start}`,
): Promise<SegmentSummary> {
  const r = new StreamReader(body);
  const mac = logMac(keys);
  const take = async (n: number, what: string): Promise<Buffer> => {
    const b = await r.take(n);
    if (!b) throw integrity(label, `truncated (${what})`);
    mac.update(b);
    return b;
  };
  const pre = await take(PREAMBLE_BYTES, 'preamble');
  const { salt, headerLen } = parsePreamble(label, pre);
  const header = parseHeader(await take(headerLen, 'header'));
  if (!header) throw integrity(label, 'malformed header');
  const wrong = (k: string, got: unknown, want: unknown) => integrity(label, `segment is for ${k} ${JSON.stringify(got)}, expected ${JSON.stringify(want)}`);
  if (header.relationshipId !== expect.relationshipId) throw wrong('relationship', header.relationshipId, expect.relationshipId);
  if (header.diskId !== expect.diskId) throw wrong('disk', header.diskId, expect.diskId);
  if (header.sequence !== 1 || header.basePoint !== 0 || header.kind !== 'full') throw integrity(label, `not an initial copy (sequence ${header.sequence}, kind ${header.kind})`);
  if (header.diskSize !== expect.diskSize) throw wrong('disk size', header.diskSize, expect.diskSize);
  await expect.checkHeader?.(header);

  const d: Decoder = { path: label, key: deriveLogKey(keys, salt, header), prefix: aadPrefix(header) };
  let next = expect.start;
  let frames = 0;
  let records = 0;
  let dataBytes = 0;
  let zeroBytes = 0;
  const ahead: { f: FrameInfo; data: Promise<Buffer> }[] = [];
  const drain = async (keep: number) => {
    while (ahead.length > keep) {
      const { f, data } = ahead.shift()!;
      const plain = await data;
      let at = 0;
      for (const e of f.entries) {
        if (e.zero) await write({ offset: e.offset, length: e.length, zero: true });
        else {
          await write({ offset: e.offset, data: plain.subarray(at, at + e.length) });
          at += e.length;
        }
      }
    }
  };
  try {
    for (;;) {
      const probe = await take(8, 'frame or footer');
      if (probe.toString('latin1') === FOOTER_MAGIC) break;
      const rest = await take(FRAME_HEADER_BYTES - 8, 'frame header');
      const hb = Buffer.concat([probe, rest]);
      const head = parseFrameHeader(hb);
      if (!head) throw integrity(label, `malformed frame ${frames}`);
      const table = Buffer.from(await take(head.entries * ENTRY_BYTES, `frame ${frames} table`));
      const entries = parseTable(table, head.rawLength);
      if (!entries) throw integrity(label, `malformed table in frame ${frames}`);
      for (const e of entries) {
        // Contiguous from the range's start: a segment can only ever fill its own range, whole.
        if (e.offset !== next || e.offset + e.length > expect.end) {
          throw integrity(label, `frame ${frames} holds an extent at ${e.offset} (+${e.length}); expected one at ${next} inside [${expect.start}, ${expect.end})`);
        }
        next += e.length;
        records++;
        if (e.zero) zeroBytes += e.length;
        else dataBytes += e.length;
      }
      // decodeFrame decrypts it before returning (the decompression that may follow reads its own
      // output), so the reader's view serves: no copy of the payload.
      const ct = await take(head.stored, `frame ${frames} payload`);
      const f: FrameInfo = { at: r.offset, head, bound: Buffer.concat([hb.subarray(0, FRAME_BOUND_BYTES), table]), entries };
      ahead.push({ f, data: decodeFrame(d, frames++, f, ct) });
      await drain(DECODE_AHEAD);
    }
    await drain(0);
  } catch (e) {
    for (const a of ahead) a.data.catch(() => undefined);
    throw e;
  }
  const foot = await r.take(FOOTER_BYTES - 8);
  if (!foot) throw integrity(label, 'truncated (footer)');
  const footer = Buffer.concat([Buffer.from(FOOTER_MAGIC, 'latin1'), foot]);
  mac.update(footer.subarray(8, FOOTER_BYTES - MAC_BYTES));
  if (!mac.digest().equals(footer.subarray(FOOTER_BYTES - MAC_BYTES))) {
    throw integrity(label, "MAC mismatch (damaged, truncated or not sealed with this relationship's key)");
  }
  if (!(await r.atEnd())) throw integrity(label, 'bytes follow the sealed footer');
  if (readU64(footer, 8) !== records) throw integrity(label, `footer counts ${readU64(footer, 8)} extents, the segment holds ${records}`);
  if (next !== expect.end) throw integrity(label, `segment ends at ${next}, its range ends at ${expect.end}`);
  return { header, bytes: r.offset, dataBytes, zeroBytes, records };
}

/** The replica's durable record of a streamed initial copy in progress (`initial.json`). */
export interface InitialCheckpoint {
  readonly cutId: string;
  readonly cutTime: number;
  readonly consistency: LogHeader['consistency'];
  /** Per disk: segments whose MAC verified and whose writes are durable, in order. */
  readonly done: Record<string, number>;
  /** Per disk: a segment whose writes began and did not complete (its retry writes its zeroes too). */
  readonly started: Record<string, number>;
}

/** What the primary needs to resume: the copy's cut and each disk's segments done. */
export interface InitialProgress {
  readonly cutId: string;
  readonly segments: Record<string, number>;
}

/**
 * One encoded segment, kept whole on the primary until the replica acknowledges it: the encoder
 * appends as it goes (never waiting for the network, so a failed send still leaves the complete
 * segment to send again, the cut's blocks having been read once), and each send reads it from the
 * start, waiting for what the encoder has not produced yet.
 */
export class SegmentBuffer {
  readonly chunks: Buffer[] = [];
  bytes = 0;
  #done = false;
  #error: unknown;
  #wake: (() => void) | undefined;
  readonly finished: Promise<void>;
  #finish!: () => void;

  constructor() {
    this.finished = new Promise((resolve) => (this.#finish = resolve));
  }

  get complete(): boolean {
    return this.#done && this.#error === undefined;
  }

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.bytes += chunk.length;
    this.#notify();
  }

  end(error?: unknown): void {
    this.#done = true;
    this.#error = error;
    this.#notify();
    this.#finish();
  }

  #notify(): void {
    const w = this.#wake;
    this.#wake = undefined;
    w?.();
  }

  async *read(): AsyncGenerator<Buffer> {
    let i = 0;
    for (;;) {
      if (i < this.chunks.length) {
        yield this.chunks[i++];
        continue;
      }
      if (this.#done) {
        if (this.#error !== undefined) throw this.#error;
        return;
      }
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
  }
}
