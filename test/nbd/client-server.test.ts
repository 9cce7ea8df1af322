// Our client against our server on a real unix socket: pipelining, errors that keep the
// connection usable, refusals, and a raw byte-level session that arrives in fragments.

import { spawn } from 'node:child_process';
import net from 'node:net';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { nbdErrnoOf, NbdClient } from '../../src/nbd/client.ts';
import { CMD, CMD_FLAG, encodeRequest, NBD_ERRNO, TX_FLAG } from '../../src/nbd/protocol.ts';
import { NbdServer } from '../../src/nbd/server.ts';
import { createRng, randomWrites } from '../../src/demo/workload.ts';
import { RetryableError, TerminalError } from '../../src/model/errors.ts';
import { FileBlockDevice } from './file-block-device.ts';
import { sha256, tempDir } from './helpers.ts';

const MiB = 1024 * 1024;
const SIZE = 8 * MiB;

let dir: Awaited<ReturnType<typeof tempDir>>;
const devices: FileBlockDevice[] = [];

async function newDevice(name: string, size = SIZE): Promise<FileBlockDevice> {
  const d = await FileBlockDevice.create(join(dir.path, `${name}.img`), size);
  devices.push(d);
  return d;
}

beforeAll(async () => {
  dir = await tempDir('nbd-client');
});

afterAll(async () => {
  for (const d of devices) await d.close();
  await dir?.remove();
});

describe('NbdClient with NbdServer', () => {
  test('pipelined random writes and reads match a reference buffer, on the wire and in the file', async () => {
    const device = await newDevice('pipeline');
    const server = await NbdServer.listen(join(dir.path, 'p.sock'), new Map([['d', device]]));
    const client = await NbdClient.connect(server.socketPath, 'd');
    try {
      expect(client.size).toBe(SIZE);
      expect(client.info.transmissionFlags & TX_FLAG.SEND_WRITE_ZEROES).toBeTruthy();
      expect(client.info.blockSize).toEqual({ minimum: 1, preferred: 4096, maximum: 32 * MiB });

      const reference = Buffer.alloc(SIZE);
      const rng = createRng(42);
      const checks: Promise<void>[] = [];
      let maxInFlight = 0;
      for (const w of randomWrites(300, SIZE, 42, { blockSize: 512, maxBlocks: 64 })) {
        checks.push(client.write(w.offset, w.data));
        w.data.copy(reference, w.offset);
        if (rng.next() < 0.5) {
          // The server runs requests in order, so this read sees every write issued before it.
          const off = rng.int(SIZE - 65536);
          const len = 1 + rng.int(65536);
          const expected = Buffer.from(reference.subarray(off, off + len));
          checks.push(client.read(off, len).then((got) => expect(sha256(got)).toBe(sha256(expected))));
        }
        maxInFlight = Math.max(maxInFlight, client.inFlight);
      }
      await Promise.all(checks);
      expect(maxInFlight).toBeGreaterThan(100);
      expect(sha256(await client.read(0, SIZE))).toBe(sha256(reference));
      await client.flush();
      expect(sha256(await readFile(join(dir.path, 'pipeline.img')))).toBe(sha256(reference));
    } finally {
      await client.close();
      await server.close();
    }
  });

  test('a 32 MiB write and read go through as single requests', async () => {
    const device = await newDevice('big', 48 * MiB);
    const server = await NbdServer.listen(join(dir.path, 'big.sock'), new Map([['big', device]]));
    const client = await NbdClient.connect(server.socketPath, 'big');
    try {
      const data = randomWrites(1, 32 * MiB, 5, { blockSize: 32 * MiB, maxBlocks: 1 })[0].data;
      await client.write(8 * MiB, data);
      expect(sha256(await client.read(8 * MiB, 32 * MiB))).toBe(sha256(data));
      expect(device.calls.filter((c) => c.length === 32 * MiB).map((c) => c.op)).toEqual(['write', 'read']);
    } finally {
      await client.close();
      await server.close();
    }
  });

  test('out-of-range requests get EINVAL and the connection stays usable', async () => {
    const device = await newDevice('range');
    const server = await NbdServer.listen(join(dir.path, 'r.sock'), new Map([['d', device]]));
    const client = await NbdClient.connect(server.socketPath, 'd');
    try {
      const good = client.write(0, Buffer.alloc(4096, 1));
      const badRead = client.read(SIZE - 512, 1024).catch((e: unknown) => e);
      const badWrite = client.write(SIZE, Buffer.alloc(512, 2)).catch((e: unknown) => e);
      const badZero = client.writeZeroes(SIZE - 4096, 8192).catch((e: unknown) => e);
      const after = client.read(0, 4096);
      await good;
      for (const e of [await badRead, await badWrite, await badZero]) {
        expect(TerminalError.is(e) && e.code).toBe('invalid-argument');
        expect(nbdErrnoOf(e)).toBe(NBD_ERRNO.EINVAL);
      }
      expect(await after).toEqual(Buffer.alloc(4096, 1));
      expect(device.calls.some((c) => c.offset >= SIZE - 4096 && c.op !== 'read')).toBe(false);
    } finally {
      await client.close();
      await server.close();
    }
  });

  test('FUA flushes after the write; TRIM and WRITE_ZEROES both zero the range on the device', async () => {
    const device = await newDevice('fua');
    const server = await NbdServer.listen(join(dir.path, 'f.sock'), new Map([['d', device]]));
    const client = await NbdClient.connect(server.socketPath, 'd');
    try {
      await client.write(0, Buffer.alloc(65536, 0xee));
      device.calls.length = 0;
      await client.write(4096, Buffer.alloc(4096, 0xaa), { fua: true });
      await client.trim(8192, 8192);
      await client.writeZeroes(32768, 4096);
      expect(device.calls).toEqual([
        { op: 'write', offset: 4096, length: 4096 },
        { op: 'flush', offset: 0, length: 0 },
        { op: 'writeZeroes', offset: 8192, length: 8192 },
        { op: 'writeZeroes', offset: 32768, length: 4096 },
      ]);
      const expected = Buffer.alloc(65536, 0xee);
      expected.fill(0xaa, 4096, 8192).fill(0, 8192, 16384).fill(0, 32768, 36864);
      expect(await client.read(0, 65536)).toEqual(expected);
    } finally {
      await client.close();
      await server.close();
    }
  });

  test('device failures map to errnos: ENOSPC retries as low-disk, anything else is EIO', async () => {
    // Fault injection at the edge: a real file device whose writes fail on demand.
    const device = await newDevice('faulty');
    let fault: Error | null = null;
    const faulty = {
      get size() {
        return device.size;
      },
      read: (o: number, l: number) => device.read(o, l),
      write: (o: number, d: Buffer) => (fault ? Promise.reject(fault) : device.write(o, d)),
      writeZeroes: (o: number, l: number) => device.writeZeroes(o, l),
      flush: () => device.flush(),
    };
    const seen: string[] = [];
    const server = await NbdServer.listen(join(dir.path, 'x.sock'), new Map([['d', faulty]]), {
      onError: (_e, where) => seen.push(where),
    });
    const client = await NbdClient.connect(server.socketPath, 'd');
    try {
      fault = Object.assign(new Error('disk full'), { code: 'ENOSPC' });
      const full = await client.write(0, Buffer.alloc(512)).catch((e: unknown) => e);
      expect(RetryableError.is(full) && full.code).toBe('low-disk');
      expect(nbdErrnoOf(full)).toBe(NBD_ERRNO.ENOSPC);
      fault = new Error('medium error');
      const broken = await client.write(0, Buffer.alloc(512)).catch((e: unknown) => e);
      expect(nbdErrnoOf(broken)).toBe(NBD_ERRNO.EIO);
      fault = null;
      await client.write(0, Buffer.alloc(512, 3));
      expect(await client.read(0, 512)).toEqual(Buffer.alloc(512, 3));
      expect(seen).toEqual(['export "d" WRITE at 0+512', 'export "d" WRITE at 0+512']);
    } finally {
      await client.close();
      await server.close();
    }
  });

  test('an unknown export is refused with not-found; LIST names the exports', async () => {
    const a = await newDevice('a');
    const b = await newDevice('b');
    const server = await NbdServer.listen(join(dir.path, 'l.sock'), new Map([['alpha', a], ['beta', b]]));
    try {
      const e = await NbdClient.connect(server.socketPath, 'gamma').catch((err: unknown) => err);
      expect(TerminalError.is(e) && e.code).toBe('not-found');
      expect(await NbdClient.list(server.socketPath)).toEqual(['alpha', 'beta']);
    } finally {
      await server.close();
    }
  });

  test('a read-only server refuses writes with EPERM and still serves reads', async () => {
    const device = await newDevice('ro');
    await device.write(0, Buffer.alloc(4096, 9));
    const server = await NbdServer.listen(join(dir.path, 'ro.sock'), new Map([['d', device]]), { readOnly: true });
    const client = await NbdClient.connect(server.socketPath, 'd');
    try {
      expect(client.info.transmissionFlags & TX_FLAG.READ_ONLY).toBeTruthy();
      const e = await client.write(0, Buffer.alloc(512)).catch((err: unknown) => err);
      expect(nbdErrnoOf(e)).toBe(NBD_ERRNO.EPERM);
      expect(await client.read(0, 4096)).toEqual(Buffer.alloc(4096, 9));
    } finally {
      await client.close();
      await server.close();
    }
  });

  test('setReadOnly(true): writes in flight land, their connection is dropped, later writes are refused; false writes again', async () => {
    const device = await newDevice('toggle');
    const server = await NbdServer.listen(join(dir.path, 't.sock'), new Map([['d', device]]));
    const writer = await NbdClient.connect(server.socketPath, 'd');
    const inFlight = Promise.all(Array.from({ length: 16 }, (_, i) => writer.write(i * 65536, Buffer.alloc(65536, i + 1)).then(() => i, () => -1)));
    await server.setReadOnly(true);
    // Every write the server accepted is on the device once setReadOnly returns.
    const landed = (await inFlight).filter((i) => i >= 0);
    for (const i of landed) expect(sha256(await device.read(i * 65536, 65536))).toBe(sha256(Buffer.alloc(65536, i + 1)));
    expect(server.connections).toBe(0);
    await writer.close();
    const late = await NbdClient.connect(server.socketPath, 'd');
    try {
      expect(late.info.transmissionFlags & TX_FLAG.READ_ONLY).toBeTruthy();
      expect(nbdErrnoOf(await late.write(0, Buffer.alloc(512)).catch((err: unknown) => err))).toBe(NBD_ERRNO.EPERM);
      await server.setReadOnly(false);
      await late.write(0, Buffer.alloc(512, 7));
      expect(await late.read(0, 512)).toEqual(Buffer.alloc(512, 7));
    } finally {
      await late.close();
      await server.close();
    }
  });

  test('close() drops live connections, fails their requests as network errors and removes the socket', async () => {
    const device = await newDevice('close');
    const socketPath = join(dir.path, 'c.sock');
    const server = await NbdServer.listen(socketPath, new Map([['d', device]]));
    const client = await NbdClient.connect(socketPath, 'd');
    await client.write(0, Buffer.alloc(512, 1));
    expect(server.connections).toBe(1);
    await server.close();
    await expect(stat(socketPath)).rejects.toMatchObject({ code: 'ENOENT' });
    const e = await client.read(0, 512).catch((err: unknown) => err);
    expect(RetryableError.is(e) && e.code).toBe('network');
    await client.close();
    const refused = await NbdClient.connect(socketPath, 'd').catch((err: unknown) => err);
    expect(RetryableError.is(refused) && refused.code).toBe('network');
  });

  test('listen replaces a stale socket file but not a live server or a regular file', async () => {
    const device = await newDevice('stale');
    const socketPath = join(dir.path, 's.sock');
    // A socket file whose server died: a child process listens there, then is killed.
    const child = spawn(process.execPath, [
      '-e',
      `require('net').createServer().listen(${JSON.stringify(socketPath)}, () => console.log('up'))`,
    ]);
    await new Promise((r) => child.stdout.once('data', r));
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    await stat(socketPath);
    const server = await NbdServer.listen(socketPath, new Map([['d', device]]));
    try {
      const second = await NbdServer.listen(socketPath, new Map([['d', device]])).catch((e: unknown) => e);
      expect(TerminalError.is(second) && second.code).toBe('invalid-state');
      const client = await NbdClient.connect(socketPath, 'd');
      await client.close();
    } finally {
      await server.close();
    }
    const plain = join(dir.path, 'plain');
    await writeFile(plain, 'x');
    const e = await NbdServer.listen(plain, new Map()).catch((err: unknown) => err);
    expect(TerminalError.is(e) && e.code).toBe('invalid-argument');
  });
});

describe('raw protocol session', () => {
  /** Sends bytes in slices of 1 to 7 bytes with a turn of the event loop between, to split every frame. */
  async function dribble(socket: net.Socket, bytes: Buffer): Promise<void> {
    const rng = createRng(bytes.length);
    for (let at = 0; at < bytes.length; ) {
      const n = 1 + rng.int(7);
      socket.write(bytes.subarray(at, at + n));
      at += n;
      await new Promise((r) => setImmediate(r));
    }
  }

  function collector(socket: net.Socket) {
    let buf = Buffer.alloc(0);
    let ended = false;
    socket.on('data', (c: Buffer) => (buf = Buffer.concat([buf, c])));
    socket.on('close', () => (ended = true));
    return {
      async take(n: number): Promise<Buffer> {
        while (buf.length < n) {
          if (ended) throw new Error(`connection closed with ${buf.length} of ${n} bytes`);
          await new Promise((r) => setTimeout(r, 2));
        }
        const out = buf.subarray(0, n);
        buf = buf.subarray(n);
        return out;
      },
      closed: () => new Promise<void>((r) => (ended ? r() : socket.once('close', () => r()))),
    };
  }

  test('EXPORT_NAME without NO_ZEROES, fragmented frames, an oversized write stepped over, then DISC', async () => {
    const device = await newDevice('raw');
    const server = await NbdServer.listen(join(dir.path, 'raw.sock'), new Map([['raw', device]]), {
      maxRequestBytes: 65536,
    });
    const socket = net.connect(server.socketPath);
    const rx = collector(socket);
    try {
      const greeting = await rx.take(18);
      expect(greeting.subarray(0, 16).toString('latin1')).toBe('NBDMAGICIHAVEOPT');
      expect(greeting.readUInt16BE(16)).toBe(3);

      const clientFlags = Buffer.alloc(4);
      clientFlags.writeUInt32BE(1); // fixed newstyle, but zeroes wanted
      const name = Buffer.from('raw');
      const opt = Buffer.alloc(16);
      opt.write('IHAVEOPT', 'latin1');
      opt.writeUInt32BE(1, 8);
      opt.writeUInt32BE(name.length, 12);
      await dribble(socket, Buffer.concat([clientFlags, opt, name]));
      const exportReply = await rx.take(8 + 2 + 124);
      expect(Number(exportReply.readBigUInt64BE(0))).toBe(SIZE);
      expect(exportReply.subarray(10).equals(Buffer.alloc(124))).toBe(true);

      const data = Buffer.alloc(4096, 0x5a);
      const oversized = Buffer.alloc(65537, 0x01);
      const frames = Buffer.concat([
        encodeRequest(CMD.WRITE, CMD_FLAG.FUA, 1, 8192, data.length),
        data,
        encodeRequest(CMD.WRITE, 0, 2, 0, oversized.length),
        oversized,
        encodeRequest(CMD.READ, 0, 3, 8192, 4096),
        encodeRequest(CMD.BLOCK_STATUS, 0, 4, 0, 4096),
        encodeRequest(CMD.DISC, 0, 5, 0, 0),
      ]);
      await dribble(socket, frames.subarray(0, 4200));
      socket.write(frames.subarray(4200)); // the rest in one go: several frames in one chunk
      const replies: { error: number; handle: number; data?: Buffer }[] = [];
      for (let i = 0; i < 4; i++) {
        const head = await rx.take(16);
        expect(head.readUInt32BE(0)).toBe(0x67446698);
        const r = { error: head.readUInt32BE(4), handle: head.readUInt32BE(12) } as (typeof replies)[number];
        if (r.handle === 3 && r.error === 0) r.data = await rx.take(4096);
        replies.push(r);
      }
      expect(replies.map((r) => [r.handle, r.error])).toEqual([
        [1, 0],
        [2, NBD_ERRNO.EINVAL],
        [3, 0],
        [4, NBD_ERRNO.EINVAL],
      ]);
      expect(replies[2].data).toEqual(data);
      await rx.closed();
      expect(device.calls.map((c) => c.op)).toEqual(['write', 'flush', 'read']);
    } finally {
      socket.destroy();
      await server.close();
    }
  });

  test('unknown options get ERR_UNSUP (structured replies refused), ABORT gets ACK', async () => {
    const device = await newDevice('opts');
    const server = await NbdServer.listen(join(dir.path, 'o.sock'), new Map([['o', device]]));
    const socket = net.connect(server.socketPath);
    const rx = collector(socket);
    try {
      await rx.take(18);
      const option = (code: number) => {
        const b = Buffer.alloc(16);
        b.write('IHAVEOPT', 'latin1');
        b.writeUInt32BE(code, 8);
        return b;
      };
      const flags = Buffer.alloc(4);
      flags.writeUInt32BE(3);
      socket.write(Buffer.concat([flags, option(8), option(99), option(2)]));
      for (const [opt, type] of [
        [8, 0x80000001],
        [99, 0x80000001],
        [2, 1],
      ]) {
        const head = await rx.take(20);
        expect(head.readUInt32BE(0)).toBe(0x3e889);
        expect(head.readUInt32BE(4)).toBe(0x045565a9);
        expect([head.readUInt32BE(8), head.readUInt32BE(12)]).toEqual([opt, type]);
        await rx.take(head.readUInt32BE(16));
      }
      await rx.closed();
    } finally {
      socket.destroy();
      await server.close();
    }
  });
});
