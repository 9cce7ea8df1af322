// The NBD server's side of the handshake (fixed newstyle): the greeting, then option haggling
// (LIST, INFO, GO, EXPORT_NAME, ABORT; anything else refused as unsupported, so clients fall back
// to simple replies) until a client picks an export to transmit against.
import type net from 'node:net';
import type { BlockDevice } from '../model/block-device.ts';
import {
  CLIENT_FLAG,
  encodeOptionReply,
  type FrameReader,
  HANDSHAKE_FLAG,
  IHAVEOPT,
  INFO,
  NBD_MAGIC,
  OPT,
  REP,
  send,
  TX_FLAG,
} from './protocol.ts';
import type { NbdExports } from './server.ts';

/** The server's settings, as both phases of a connection read them. */
export interface Settings {
  readonly maxRequestBytes: number;
  readonly minBlockSize: number;
  readonly preferredBlockSize: number;
  /** Changed by `setReadOnly`; checked on every request. */
  readOnly: boolean;
  readonly onError: (error: unknown, where: string) => void;
}

/** An export chosen by a client: what it transmits against. */
export interface Chosen {
  readonly name: string;
  readonly device: BlockDevice;
  /** Size as told to the client; requests are checked against this, not a later size. */
  readonly size: number;
}

/** A client broke the protocol: the connection is dropped (a "hard disconnect"). */
export class ProtocolViolation extends Error {}

const MAX_OPTION_BYTES = 64 * 1024;

function lookup(exports: NbdExports, name: string): BlockDevice | undefined {
  return typeof exports === 'function' ? exports(name) : exports.get(name);
}

function transmissionFlags(s: Settings): number {
  let flags =
    TX_FLAG.HAS_FLAGS | TX_FLAG.SEND_FLUSH | TX_FLAG.SEND_FUA | TX_FLAG.SEND_TRIM | TX_FLAG.SEND_WRITE_ZEROES;
  // A flush reaches the shared device, which makes every acknowledged write durable whichever
  // connection carried it: exactly what CAN_MULTI_CONN promises.
  flags |= TX_FLAG.CAN_MULTI_CONN;
  if (s.readOnly) flags |= TX_FLAG.READ_ONLY;
  return flags;
}

/** Option haggling; returns the export to transmit against, or null when the client aborted. */
export async function negotiate(socket: net.Socket, r: FrameReader, exports: NbdExports, s: Settings): Promise<Chosen | null> {
  const greeting = Buffer.alloc(18);
  NBD_MAGIC.copy(greeting, 0);
  IHAVEOPT.copy(greeting, 8);
  greeting.writeUInt16BE(HANDSHAKE_FLAG.FIXED_NEWSTYLE | HANDSHAKE_FLAG.NO_ZEROES, 16);
  await send(socket, greeting);

  const clientFlags = (await r.read(4)).readUInt32BE(0);
  if (clientFlags & ~(CLIENT_FLAG.FIXED_NEWSTYLE | CLIENT_FLAG.NO_ZEROES)) {
    throw new ProtocolViolation(`unknown NBD client flags 0x${clientFlags.toString(16)}`);
  }
  const noZeroes = (clientFlags & CLIENT_FLAG.NO_ZEROES) !== 0;

  for (;;) {
    const head = await r.read(16);
    if (!head.subarray(0, 8).equals(IHAVEOPT)) throw new ProtocolViolation('NBD option without IHAVEOPT magic');
    const option = head.readUInt32BE(8);
    const length = head.readUInt32BE(12);
    if (length > MAX_OPTION_BYTES) throw new ProtocolViolation(`NBD option ${option} of ${length} bytes`);
    const data = await r.read(length);
    const reply = (type: number, payload?: Buffer) => send(socket, encodeOptionReply(option, type, payload));
    const refuse = (type: number, message: string) => reply(type, Buffer.from(message, 'utf8'));

    switch (option) {
      case OPT.EXPORT_NAME: {
        const name = data.toString('utf8');
        const device = lookup(exports, name);
        // This option cannot answer with an error: the protocol says to drop the connection.
        if (!device) return null;
        const size = device.size;
        const out = Buffer.alloc(10 + (noZeroes ? 0 : 124));
        out.writeBigUInt64BE(BigInt(size), 0);
        out.writeUInt16BE(transmissionFlags(s), 8);
        await send(socket, out);
        return { name, device, size };
      }
      case OPT.ABORT:
        await reply(REP.ACK).catch(() => {});
        return null;
      case OPT.LIST: {
        if (length !== 0) {
          await refuse(REP.ERR_INVALID, 'NBD_OPT_LIST takes no data');
          break;
        }
        const names = typeof exports === 'function' ? [] : [...exports.keys()];
        for (const name of names) {
          const n = Buffer.from(name, 'utf8');
          const payload = Buffer.alloc(4 + n.length);
          payload.writeUInt32BE(n.length, 0);
          n.copy(payload, 4);
          await reply(REP.SERVER, payload);
        }
        await reply(REP.ACK);
        break;
      }
      case OPT.INFO:
      case OPT.GO: {
        const request = parseInfoRequest(data);
        if (!request) {
          await refuse(REP.ERR_INVALID, 'malformed NBD_OPT_INFO/GO request');
          break;
        }
        const device = lookup(exports, request.name);
        if (!device) {
          await refuse(REP.ERR_UNKNOWN, `no export named "${request.name}"`);
          break;
        }
        const size = device.size;
        const exportInfo = Buffer.alloc(12);
        exportInfo.writeUInt16BE(INFO.EXPORT, 0);
        exportInfo.writeBigUInt64BE(BigInt(size), 2);
        exportInfo.writeUInt16BE(transmissionFlags(s), 10);
        await reply(REP.INFO, exportInfo);
        if (request.wants.includes(INFO.NAME)) {
          const n = Buffer.from(request.name, 'utf8');
          const info = Buffer.alloc(2 + n.length);
          info.writeUInt16BE(INFO.NAME, 0);
          n.copy(info, 2);
          await reply(REP.INFO, info);
        }
        if (request.wants.includes(INFO.BLOCK_SIZE)) {
          const info = Buffer.alloc(14);
          info.writeUInt16BE(INFO.BLOCK_SIZE, 0);
          info.writeUInt32BE(s.minBlockSize, 2);
          info.writeUInt32BE(Math.max(s.minBlockSize, s.preferredBlockSize), 6);
          info.writeUInt32BE(s.maxRequestBytes, 10);
          await reply(REP.INFO, info);
        }
        await reply(REP.ACK);
        if (option === OPT.GO) return { name: request.name, device, size };
        break;
      }
      default:
        // STARTTLS, STRUCTURED_REPLY, (LIST_/SET_)META_CONTEXT, EXTENDED_HEADERS and anything newer:
        // we speak plain simple replies only, which every client must accept.
        await refuse(REP.ERR_UNSUP, `NBD option ${option} is not supported`);
    }
  }
}

function parseInfoRequest(data: Buffer): { name: string; wants: number[] } | null {
  if (data.length < 6) return null;
  const nameLength = data.readUInt32BE(0);
  if (4 + nameLength + 2 > data.length) return null;
  const name = data.toString('utf8', 4, 4 + nameLength);
  const count = data.readUInt16BE(4 + nameLength);
  const at = 6 + nameLength;
  if (data.length !== at + 2 * count) return null;
  const wants: number[] = [];
  for (let i = 0; i < count; i++) wants.push(data.readUInt16BE(at + 2 * i));
  return { name, wants };
}
