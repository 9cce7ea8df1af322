// The NBD client's side of the handshake (fixed newstyle): the greeting, option replies,
// structured replies with metadata contexts, and NBD_OPT_GO (or NBD_OPT_EXPORT_NAME from an older
// server), ending with what the server told about the export.
import net from 'node:net';
import { RetryableError, TerminalError } from '../model/errors.ts';
import { decodeMetaContext, encodeMetaContextQuery } from './block-status.ts';
import {
  CLIENT_FLAG,
  encodeOption,
  FrameReader,
  HANDSHAKE_FLAG,
  IHAVEOPT,
  INFO,
  NBD_MAGIC,
  OPT,
  OPTION_REPLY_HEADER_BYTES,
  OPTION_REPLY_MAGIC_HI,
  OPTION_REPLY_MAGIC_LO,
  REP,
} from './protocol.ts';

/** What a server told us about an export during negotiation. */
export interface NbdExportInfo {
  readonly size: number;
  readonly transmissionFlags: number;
  /** Present when the server answered NBD_INFO_BLOCK_SIZE. */
  readonly blockSize?: { readonly minimum: number; readonly preferred: number; readonly maximum: number };
}

/** Connects and does the fixed newstyle greeting; `noZeroes`: the server skips the 124 zero bytes. */
export async function openConnection(socketPath: string): Promise<{ socket: net.Socket; reader: FrameReader; noZeroes: boolean }> {
  const socket = net.connect(socketPath);
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', () => resolve());
    socket.once('error', (e) => reject(new RetryableError('network', `cannot connect to NBD socket ${socketPath}: ${e.message}`, { cause: e })));
  });
  socket.on('error', () => {}); // surfaced through the reader as a closed connection
  const reader = new FrameReader(socket, `to NBD server ${socketPath}`);
  try {
    const greeting = await reader.read(18);
    if (!greeting.subarray(0, 8).equals(NBD_MAGIC) || !greeting.subarray(8, 16).equals(IHAVEOPT)) {
      throw new TerminalError('invalid-state', `${socketPath} does not speak newstyle NBD`);
    }
    const flags = greeting.readUInt16BE(16);
    if (!(flags & HANDSHAKE_FLAG.FIXED_NEWSTYLE)) {
      throw new TerminalError('invalid-state', `NBD server on ${socketPath} lacks fixed newstyle negotiation`);
    }
    const noZeroes = (flags & HANDSHAKE_FLAG.NO_ZEROES) !== 0;
    const clientFlags = Buffer.alloc(4);
    clientFlags.writeUInt32BE(CLIENT_FLAG.FIXED_NEWSTYLE | (noZeroes ? CLIENT_FLAG.NO_ZEROES : 0));
    socket.write(clientFlags);
    return { socket, reader, noZeroes };
  } catch (e) {
    socket.destroy();
    throw e;
  }
}

export async function readOptionReply(reader: FrameReader, option: number): Promise<{ type: number; data: Buffer }> {
  const head = await reader.read(OPTION_REPLY_HEADER_BYTES);
  if (head.readUInt32BE(0) !== OPTION_REPLY_MAGIC_HI || head.readUInt32BE(4) !== OPTION_REPLY_MAGIC_LO) {
    throw new TerminalError('invalid-state', 'NBD option reply with bad magic');
  }
  if (head.readUInt32BE(8) !== option) throw new TerminalError('invalid-state', 'NBD option reply for another option');
  const type = head.readUInt32BE(12);
  const data = await reader.read(head.readUInt32BE(16));
  return { type, data };
}

/** NBD_OPT_STRUCTURED_REPLY, then NBD_OPT_SET_META_CONTEXT: every asked context must be selected. */
export async function selectContexts(socket: net.Socket, reader: FrameReader, name: string, queries: readonly string[]): Promise<Map<number, string>> {
  socket.write(encodeOption(OPT.STRUCTURED_REPLY));
  const sr = await readOptionReply(reader, OPT.STRUCTURED_REPLY);
  if (sr.type !== REP.ACK) throw new TerminalError('invalid-state', `NBD server refused structured replies (reply 0x${sr.type.toString(16)}), needed for ${queries.join(', ')}`);
  socket.write(encodeOption(OPT.SET_META_CONTEXT, encodeMetaContextQuery(name, queries)));
  const contexts = new Map<number, string>();
  for (;;) {
    const { type, data } = await readOptionReply(reader, OPT.SET_META_CONTEXT);
    if (type === REP.ACK) break;
    if (type === REP.META_CONTEXT) {
      const c = decodeMetaContext(data);
      contexts.set(c.id, c.name);
    } else {
      throw new TerminalError('invalid-state', `NBD export "${name}": selecting ${queries.join(', ')} refused (reply 0x${type.toString(16)}): ${data.toString('utf8')}`);
    }
  }
  const missing = queries.filter((q) => ![...contexts.values()].includes(q));
  if (missing.length) throw new TerminalError('not-found', `NBD export "${name}" offers no metadata context ${missing.join(', ')}`);
  return contexts;
}

/** NBD_OPT_GO (asking for block sizes), or NBD_OPT_EXPORT_NAME from a server too old for it. */
export async function go(socket: net.Socket, reader: FrameReader, name: string, noZeroes: boolean): Promise<NbdExportInfo> {
  const n = Buffer.from(name, 'utf8');
  const data = Buffer.alloc(4 + n.length + 2 + 2);
  data.writeUInt32BE(n.length, 0);
  n.copy(data, 4);
  data.writeUInt16BE(1, 4 + n.length);
  data.writeUInt16BE(INFO.BLOCK_SIZE, 6 + n.length);
  socket.write(encodeOption(OPT.GO, data));

  let size = -1;
  let transmissionFlags = 0;
  let blockSize: NbdExportInfo['blockSize'];
  for (;;) {
    const { type, data: reply } = await readOptionReply(reader, OPT.GO);
    if (type === REP.INFO && reply.length >= 2) {
      const infoType = reply.readUInt16BE(0);
      if (infoType === INFO.EXPORT && reply.length >= 12) {
        size = Number(reply.readBigUInt64BE(2));
        transmissionFlags = reply.readUInt16BE(10);
      } else if (infoType === INFO.BLOCK_SIZE && reply.length >= 14) {
        blockSize = { minimum: reply.readUInt32BE(2), preferred: reply.readUInt32BE(6), maximum: reply.readUInt32BE(10) };
      }
    } else if (type === REP.ACK) {
      if (size < 0) throw new TerminalError('invalid-state', `NBD server sent no size for export "${name}"`);
      return { size, transmissionFlags, blockSize };
    } else if (type === REP.ERR_UNSUP) {
      return exportName(socket, reader, name, noZeroes);
    } else if (type === REP.ERR_UNKNOWN) {
      throw new TerminalError('not-found', `NBD export "${name}" not found: ${reply.toString('utf8')}`);
    } else if (type & 0x80000000) {
      throw new TerminalError('invalid-state', `NBD export "${name}" refused (reply 0x${type.toString(16)}): ${reply.toString('utf8')}`);
    }
  }
}

/** The old way in: no error reply exists, an unknown export just closes the connection. */
async function exportName(socket: net.Socket, reader: FrameReader, name: string, noZeroes: boolean): Promise<NbdExportInfo> {
  socket.write(encodeOption(OPT.EXPORT_NAME, Buffer.from(name, 'utf8')));
  try {
    const reply = await reader.read(10 + (noZeroes ? 0 : 124));
    return { size: Number(reply.readBigUInt64BE(0)), transmissionFlags: reply.readUInt16BE(8) };
  } catch (e) {
    throw new TerminalError('not-found', `NBD export "${name}" refused by the server`, { cause: e });
  }
}
