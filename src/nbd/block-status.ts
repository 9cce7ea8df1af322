// Structured replies and metadata contexts (NBD doc/proto.md, "Structured reply chunk message" and
// "Metadata querying"): the option payloads the client negotiates with, and the parsing of the
// chunks a structured reply is made of, READ data and NBD_CMD_BLOCK_STATUS extents.
import { TerminalError } from '../model/errors.ts';

export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;
/** Structured chunk header: magic u32, flags u16, type u16, handle u64, length u32. */
export const STRUCTURED_HEADER_BYTES = 20;
export const REPLY_FLAG_DONE = 1 << 0;

export const REPLY_TYPE = {
  NONE: 0,
  OFFSET_DATA: 1,
  OFFSET_HOLE: 2,
  BLOCK_STATUS: 5,
  ERROR: (1 << 15) + 1,
  ERROR_OFFSET: (1 << 15) + 2,
} as const;

/** Flags of `base:allocation` extents. */
export const STATE = { HOLE: 1 << 0, ZERO: 1 << 1 } as const;
/** The one flag of QEMU's `qemu:dirty-bitmap:NAME` extents (QEMU docs/interop/nbd.txt). */
export const STATE_DIRTY = 1 << 0;

/** One block status descriptor: `length` bytes from `offset` carry `flags` in that context. */
export interface StatusExtent {
  readonly offset: number;
  readonly length: number;
  readonly flags: number;
}

/** NBD_OPT_SET_META_CONTEXT data: export name, then the queries, each length-prefixed. */
export function encodeMetaContextQuery(exportName: string, queries: readonly string[]): Buffer {
  const parts: Buffer[] = [];
  const str = (s: string) => {
    const b = Buffer.from(s, 'utf8');
    const len = Buffer.alloc(4);
    len.writeUInt32BE(b.length);
    parts.push(len, b);
  };
  str(exportName);
  const count = Buffer.alloc(4);
  count.writeUInt32BE(queries.length);
  parts.push(count);
  for (const q of queries) str(q);
  return Buffer.concat(parts);
}

/** NBD_REP_META_CONTEXT data: the context's id, then its name. */
export function decodeMetaContext(data: Buffer): { id: number; name: string } {
  if (data.length < 5) throw new TerminalError('invalid-state', `NBD meta context reply of ${data.length} bytes is too short`);
  return { id: data.readUInt32BE(0), name: data.toString('utf8', 4) };
}

/** An NBD_REPLY_TYPE_BLOCK_STATUS payload: context id, then (length u32, flags u32) descriptors from `offset`. */
export function decodeBlockStatus(payload: Buffer, offset: number): { contextId: number; extents: StatusExtent[] } {
  if (payload.length < 12 || (payload.length - 4) % 8 !== 0) {
    throw new TerminalError('invalid-state', `NBD block status chunk of ${payload.length} bytes is malformed`);
  }
  const extents: StatusExtent[] = [];
  let at = offset;
  for (let i = 4; i < payload.length; i += 8) {
    const length = payload.readUInt32BE(i);
    if (length === 0) throw new TerminalError('invalid-state', 'NBD block status descriptor of length 0');
    extents.push({ offset: at, length, flags: payload.readUInt32BE(i + 4) });
    at += length;
  }
  return { contextId: payload.readUInt32BE(0), extents };
}

/** An error chunk's errno and message (every error type starts with the same fields). */
export function decodeErrorChunk(payload: Buffer): { errno: number; message: string } {
  if (payload.length < 6) throw new TerminalError('invalid-state', `NBD error chunk of ${payload.length} bytes is too short`);
  const n = Math.min(payload.readUInt16BE(4), payload.length - 6);
  return { errno: payload.readUInt32BE(0), message: payload.toString('utf8', 6, 6 + n) };
}

/**
 * Merges the extents whose flags contain `flag` into ranges clipped to [offset, offset+length):
 * the dirty ranges of a bitmap context, the zero ranges of `base:allocation`.
 */
export function rangesWith(extents: readonly StatusExtent[], flag: number, offset: number, length: number): { offset: number; length: number }[] {
  const end = offset + length;
  const out: { offset: number; length: number }[] = [];
  for (const e of extents) {
    if (!(e.flags & flag)) continue;
    const from = Math.max(e.offset, offset);
    const to = Math.min(e.offset + e.length, end);
    if (to <= from) continue;
    const last = out.at(-1);
    if (last && last.offset + last.length === from) last.length += to - from;
    else out.push({ offset: from, length: to - from });
  }
  return out;
}
