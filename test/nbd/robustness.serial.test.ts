// The agent's NBD export against a hostile or broken client (issue 13, part 5): the export runs in
// its own process as the agent composes it (VmRuntime: two disks through the change tracker on
// `<nbdDir>/<vm>.sock`), and a raw client (nbd-wire.ts) sends malformed handshakes, unknown options
// and commands, out-of-range, zero-length and oversized requests, and half a WRITE. After each the
// server still serves, the images hold exactly the original bytes plus the completed writes, and
// the trackers' saved dirty state covers exactly the blocks of those writes.
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { TrackedDisk } from '../../src/core/tracking/tracker.ts';
import { tempDir } from './helpers.ts';
import { CMD, ERRNO, IHAVEOPT, OPT, RawNbd, REP, u32, WireClosed } from './nbd-wire.ts';

const KiB = 1024;
const MiB = 1024 * KiB;
const SIZE = 8 * MiB;
const DISKS = ['os', 'data'] as const;
const CHILD = join(import.meta.dirname, 'nbd-server-child.ts');

type DiskName = (typeof DISKS)[number];

interface Served {
  readonly child: ChildProcess;
  readonly socket: string;
  readonly images: Record<DiskName, string>;
  /** What each image must hold: its original bytes with every completed write applied. */
  readonly expected: Record<DiskName, Buffer>;
  /** Completed writes per disk, as [offset, length]. */
  readonly writes: Record<DiskName, [number, number][]>;
  stderr: string;
}

let dir: Awaited<ReturnType<typeof tempDir>>;
let served: Served | undefined;
let n = 0;

beforeAll(async () => {
  dir = await tempDir('nbd-robust');
});

afterEach(() => {
  // Only the child this test started, by its own handle (stop() already ended it on success).
  if (served && served.child.exitCode === null && served.child.signalCode === null) served.child.kill('SIGKILL');
  served = undefined;
});

afterAll(async () => {
  await dir?.remove();
});

/** Two 8 MiB disks of random bytes with clean, empty tracking state, exported by a child process. */
async function serve(): Promise<Served> {
  const root = join(dir.path, `vm${n++}`);
  const imageDir = join(root, 'vms');
  await mkdir(imageDir, { recursive: true });
  const images = {} as Record<DiskName, string>;
  const expected = {} as Record<DiskName, Buffer>;
  for (const d of DISKS) {
    images[d] = join(imageDir, `${d}.img`);
    await (await TrackedDisk.create(images[d], SIZE, { id: d })).close();
    expected[d] = randomBytes(SIZE);
    await writeFile(images[d], expected[d]);
  }
  const child = spawn(process.execPath, [CHILD, join(root, 'nbd'), 'vm1', imageDir, ...DISKS.map((d) => `${d}:${SIZE}`)], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const s: Served = { child, socket: '', images, expected, writes: { os: [], data: [] }, stderr: '' };
  child.stderr!.on('data', (c: Buffer) => (s.stderr += c));
  served = s;
  const socket = await new Promise<string>((resolve, reject) => {
    const lines = createInterface({ input: child.stdout! });
    lines.once('line', (l) => resolve((JSON.parse(l) as { ready: string }).ready));
    child.once('exit', (code) => reject(new Error(`NBD server child exited (${code}) before serving:\n${s.stderr}`)));
  });
  expect(socket).toBe(join(root, 'nbd', 'vm1.sock'));
  return Object.assign(s, { socket });
}

/** Writes through `nbd` and records the write as completed once the server acknowledged it. */
async function write(s: Served, nbd: RawNbd, disk: DiskName, offset: number, data: Buffer): Promise<void> {
  const r = await nbd.request(CMD.WRITE, offset, data.length, data);
  expect(r.error).toBe(0);
  data.copy(s.expected[disk], offset);
  s.writes[disk].push([offset, data.length]);
}

/** The server process is alive and a fresh client can negotiate each disk and read it correctly. */
async function stillServes(s: Served): Promise<void> {
  expect(s.child.exitCode, s.stderr).toBeNull();
  for (const d of DISKS) {
    const { nbd, size } = await RawNbd.transmitting(s.socket, d);
    expect(size).toBe(SIZE);
    const r = await nbd.request(CMD.READ, SIZE - 64 * KiB, 64 * KiB);
    expect(r.error).toBe(0);
    expect(r.data.equals(s.expected[d].subarray(SIZE - 64 * KiB))).toBe(true);
    nbd.sendRequest(CMD.DISC, 0, 0);
    expect(await nbd.closedWithin()).toBe(true);
  }
}

/** Dirty 4 KiB blocks of a disk's saved tracking state, merged into [offset, length] ranges. */
async function dirtyRanges(path: string, id: string): Promise<[number, number][]> {
  const disk = await TrackedDisk.open(path, { id });
  try {
    expect(disk.continuity).toBe('intact');
    const [cut] = await TrackedDisk.freezeTogether([disk], { cutId: 'probe', time: 0 });
    const out: [number, number][] = [];
    for await (const e of cut.extents()) {
      const length = 'data' in e ? e.data.length : e.length;
      const last = out.at(-1);
      if (last && last[0] + last[1] === e.offset) last[1] += length;
      else out.push([e.offset, length]);
    }
    await cut.abandon();
    return out;
  } finally {
    await disk.close();
  }
}

/** Blocks a set of writes touches, merged, as the tracker should record them. */
function blocksOf(writes: [number, number][]): [number, number][] {
  const blocks = new Set<number>();
  for (const [o, l] of writes) for (let b = Math.floor(o / (4 * KiB)); b < Math.ceil((o + l) / (4 * KiB)); b++) blocks.add(b);
  const out: [number, number][] = [];
  for (const b of [...blocks].sort((x, y) => x - y)) {
    const last = out.at(-1);
    if (last && last[0] + last[1] === b * 4 * KiB) last[1] += 4 * KiB;
    else out.push([b * 4 * KiB, 4 * KiB]);
  }
  return out;
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/**
 * Stops the server (a clean exit, which saves the trackers' state), then: every image has its
 * size and exactly the expected bytes, and its dirty blocks are exactly those of the completed writes.
 */
async function stopAndCheck(s: Served): Promise<void> {
  expect(s.child.exitCode, s.stderr).toBeNull();
  const exited = new Promise<number | null>((resolve) => s.child.once('exit', (code) => resolve(code)));
  s.child.stdin!.write('stop\n');
  expect(await exited, s.stderr).toBe(0);
  for (const d of DISKS) {
    expect((await stat(s.images[d])).size).toBe(SIZE);
    expect(sha(await readFile(s.images[d])), `content of ${d}`).toBe(sha(s.expected[d]));
    expect(await dirtyRanges(s.images[d], d), `dirty blocks of ${d}`).toEqual(blocksOf(s.writes[d]));
  }
}

describe('NBD export: malformed handshakes', () => {
  test('bad client flags, bad option magic, an oversized option, garbage and a truncated handshake each get the connection dropped; others are served meanwhile', async () => {
    const s = await serve();
    // A client that stalls in the middle of its handshake must not hold up anyone else.
    const stalled = await RawNbd.connect(s.socket);
    await stalled.greeting();
    stalled.send(Buffer.from([0, 0]));

    // Unknown client flags: the spec says the server MUST close.
    const badFlags = await RawNbd.connect(s.socket);
    await badFlags.greeting();
    badFlags.send(u32(0xffffffff));
    expect(await badFlags.closedWithin()).toBe(true);

    // An option that does not start with IHAVEOPT.
    const badMagic = await RawNbd.negotiating(s.socket);
    badMagic.send(Buffer.from('IHAVEOPX', 'latin1'), u32(OPT.GO), u32(0));
    expect(await badMagic.closedWithin()).toBe(true);

    // An option claiming 4 GiB of data: dropped, not buffered.
    const huge = await RawNbd.negotiating(s.socket);
    huge.send(IHAVEOPT, u32(OPT.GO), u32(0xffffffff), Buffer.alloc(64 * KiB, 0x41));
    expect(await huge.closedWithin()).toBe(true);

    // Random bytes instead of a handshake.
    const garbage = await RawNbd.connect(s.socket);
    await garbage.greeting();
    garbage.send(randomBytes(4 * KiB));
    expect(await garbage.closedWithin()).toBe(true);

    // Half an option header, then the client half-closes its side.
    const truncated = await RawNbd.negotiating(s.socket);
    truncated.send(IHAVEOPT.subarray(0, 5));
    truncated.socket.end();
    expect(await truncated.closedWithin()).toBe(true);

    // A request magic that is wrong once transmission started: a hard disconnect too.
    const { nbd: badRequest } = await RawNbd.transmitting(s.socket, 'os');
    badRequest.send(Buffer.alloc(28, 0xee));
    expect(await badRequest.closedWithin()).toBe(true);

    expect(await stalled.closedWithin(100)).toBe(false);
    await stillServes(s);
    stalled.destroy();
    await stopAndCheck(s);
  });

  test('a malformed NBD_OPT_GO gets NBD_REP_ERR_INVALID and the same connection then negotiates', async () => {
    const s = await serve();
    const nbd = await RawNbd.negotiating(s.socket);
    // Name length 100 in 10 bytes of data.
    nbd.sendOption(OPT.GO, Buffer.concat([u32(100), Buffer.from('os'), Buffer.alloc(4)]));
    const r = await nbd.optionReply();
    expect(r).toMatchObject({ option: OPT.GO, type: REP.ERR_INVALID });
    expect(r.data.toString()).toMatch(/malformed/);
    const go = await nbd.go('os');
    expect(go).toEqual({ size: SIZE, flags: expect.any(Number) });
    await write(s, nbd, 'os', 0, Buffer.alloc(4 * KiB, 1));
    nbd.destroy();
    await stillServes(s);
    await stopAndCheck(s);
  });
});

describe('NBD export: options', () => {
  test('unknown options get NBD_REP_ERR_UNSUP naming the option, and the connection stays usable', async () => {
    const s = await serve();
    const nbd = await RawNbd.negotiating(s.socket);
    for (const option of [0x7777, 0xffffffff, 5 /* STARTTLS */]) {
      nbd.sendOption(option, Buffer.from('whatever'));
      const r = await nbd.optionReply();
      expect(r.option).toBe(option);
      expect(r.type).toBe(REP.ERR_UNSUP);
      expect(r.data.toString()).toContain(String(option));
    }
    expect((await nbd.list()).sort()).toEqual(['data', 'os']);
    expect(await nbd.go('data')).toMatchObject({ size: SIZE });
    const read = await nbd.request(CMD.READ, 4 * KiB, 4 * KiB);
    expect(read.data.equals(s.expected.data.subarray(4 * KiB, 8 * KiB))).toBe(true);
    nbd.destroy();
    await stopAndCheck(s);
  });

  test('NBD_OPT_GO of a missing export: NBD_REP_ERR_UNKNOWN naming it, then GO of a real one works on the same connection', async () => {
    const s = await serve();
    const nbd = await RawNbd.negotiating(s.socket);
    for (const name of ['nope', '../data', 'os\0', '', 'x'.repeat(4000)]) {
      const r = await nbd.go(name);
      expect(r, JSON.stringify(name.slice(0, 20))).toEqual({ type: REP.ERR_UNKNOWN, message: `no export named "${name}"` });
    }
    expect(await nbd.go('os')).toMatchObject({ size: SIZE });
    await write(s, nbd, 'os', 12 * KiB, Buffer.alloc(8 * KiB, 7));
    nbd.destroy();
    await stopAndCheck(s);
  });

  test('NBD_OPT_EXPORT_NAME of a missing export closes the connection (it has no error reply); the server goes on', async () => {
    const s = await serve();
    const nbd = await RawNbd.negotiating(s.socket);
    nbd.sendOption(OPT.EXPORT_NAME, Buffer.from('missing'));
    await expect(nbd.read(1)).rejects.toBeInstanceOf(WireClosed);
    // And EXPORT_NAME of a real export goes straight to transmission: size, flags, no zeroes.
    const ok = await RawNbd.negotiating(s.socket);
    ok.sendOption(OPT.EXPORT_NAME, Buffer.from('data'));
    expect(Number((await ok.read(10)).readBigUInt64BE(0))).toBe(SIZE);
    await write(s, ok, 'data', SIZE - 4 * KiB, Buffer.alloc(4 * KiB, 9));
    ok.destroy();
    await stillServes(s);
    await stopAndCheck(s);
  });
});

describe('NBD export: requests out of range, empty, oversized, unknown', () => {
  test('READ, WRITE, WRITE_ZEROES and TRIM beyond the end or straddling it get EINVAL and change nothing', async () => {
    const s = await serve();
    const { nbd } = await RawNbd.transmitting(s.socket, 'os');
    const cases: [string, number, number | bigint, number][] = [
      ['read past the end', CMD.READ, SIZE, 4 * KiB],
      ['read straddling the end', CMD.READ, SIZE - 2 * KiB, 4 * KiB],
      ['write zeroes straddling the end', CMD.WRITE_ZEROES, SIZE - 4 * KiB, 8 * KiB],
      ['trim past the end', CMD.TRIM, SIZE + 4 * KiB, 4 * KiB],
      ['trim of 4 GiB', CMD.TRIM, 0, 0xffffffff],
      ['read whose offset + length wraps 2^64', CMD.READ, 2n ** 64n - 512n, 1024],
    ];
    for (const [what, type, offset, length] of cases) {
      expect((await nbd.request(type, offset, length)).error, what).toBe(ERRNO.EINVAL);
    }
    // A refused WRITE's payload is read and discarded, so the next request is still in frame.
    // The spec suggests ENOSPC for writes past the end but also EINVAL for any request exceeding
    // the export size; this server answers EINVAL, keeping ENOSPC for a full backing store.
    const writes: [string, number | bigint, number][] = [
      ['write past the end', SIZE, 4 * KiB],
      ['write straddling the end', SIZE - 4 * KiB, 8 * KiB],
      ['write at 2^63', 2n ** 63n, 4 * KiB],
      ['write whose offset + length wraps 2^64', 2n ** 64n - 2048n, 4 * KiB],
    ];
    for (const [what, offset, length] of writes) {
      expect((await nbd.request(CMD.WRITE, offset, length, Buffer.alloc(length, 0xab))).error, what).toBe(ERRNO.EINVAL);
    }
    const tail = await nbd.request(CMD.READ, SIZE - 8 * KiB, 8 * KiB);
    expect(tail.error).toBe(0);
    expect(tail.data.equals(s.expected.os.subarray(SIZE - 8 * KiB))).toBe(true);
    // The very last bytes are writable.
    await write(s, nbd, 'os', SIZE - 512, Buffer.alloc(512, 0xcd));
    nbd.destroy();
    await stopAndCheck(s);
  });

  test('zero-length READ, WRITE, TRIM and WRITE_ZEROES succeed inside the disk and at its end, are EINVAL past it, and mark nothing dirty', async () => {
    const s = await serve();
    const { nbd } = await RawNbd.transmitting(s.socket, 'data');
    for (const type of [CMD.READ, CMD.WRITE, CMD.TRIM, CMD.WRITE_ZEROES]) {
      for (const offset of [0, 4 * KiB + 1, SIZE]) {
        const r = await nbd.request(type, offset, 0, type === CMD.WRITE ? Buffer.alloc(0) : undefined);
        expect(r.error, `type ${type} at ${offset}`).toBe(0);
        expect(r.data.length).toBe(0);
      }
      expect((await nbd.request(type, SIZE + 4 * KiB, 0)).error, `type ${type} past the end`).toBe(ERRNO.EINVAL);
    }
    expect((await nbd.request(CMD.FLUSH, 0, 0)).error).toBe(0);
    nbd.destroy();
    await stopAndCheck(s);
  });

  test('unknown commands get EINVAL and the connection goes on', async () => {
    const s = await serve();
    const { nbd } = await RawNbd.transmitting(s.socket, 'os');
    for (const type of [0x55, 0xffff, 5 /* CACHE, not advertised */, 7 /* BLOCK_STATUS without a meta context */]) {
      expect((await nbd.request(type, 0, 4 * KiB)).error, `command ${type}`).toBe(ERRNO.EINVAL);
    }
    await write(s, nbd, 'os', 40 * KiB, Buffer.alloc(4 * KiB, 3));
    nbd.destroy();
    await stopAndCheck(s);
  });

  test('64 MiB READ and WRITE requests get EINVAL (above the 32 MiB maximum); the WRITE payload is stepped over, not applied', async () => {
    const s = await serve();
    const { nbd } = await RawNbd.transmitting(s.socket, 'os');
    expect((await nbd.request(CMD.READ, 0, 64 * MiB)).error).toBe(ERRNO.EINVAL);
    expect((await nbd.request(CMD.WRITE, 0, 64 * MiB, Buffer.alloc(64 * MiB, 0x5a))).error).toBe(ERRNO.EINVAL);
    // Still in frame: the next request's reply carries its own handle and the original data.
    const r = await nbd.request(CMD.READ, 0, 64 * KiB);
    expect(r.data.equals(s.expected.os.subarray(0, 64 * KiB))).toBe(true);
    await write(s, nbd, 'os', 1 * MiB, Buffer.alloc(32 * KiB, 0x11));
    nbd.destroy();
    await stopAndCheck(s);
  });

  test('a WRITE declaring 4 GiB: the server discards the payload as it streams, its peak memory stays bounded, and it goes on serving', async () => {
    const s = await serve();
    const hwm = () => readFile(`/proc/${s.child.pid}/status`, 'utf8').then((t) => Number(/VmHWM:\s+(\d+) kB/.exec(t)![1]) * KiB);
    await stillServes(s);
    const before = await hwm();
    const { nbd } = await RawNbd.transmitting(s.socket, 'data');
    nbd.sendRequest(CMD.WRITE, 0, 0xffffffff);
    const chunk = Buffer.alloc(8 * MiB, 0x77);
    const streamed = 1024 * MiB;
    for (let sent = 0; sent < streamed; sent += chunk.length) {
      if (!nbd.socket.write(chunk)) await new Promise((resolve) => nbd.socket.once('drain', resolve));
    }
    // Everything we sent was taken off the socket by the server (it stays in frame, discarding).
    const other = await RawNbd.transmitting(s.socket, 'os');
    await write(s, other.nbd, 'os', 0, Buffer.alloc(4 * KiB, 0x42));
    other.nbd.destroy();
    nbd.destroy();
    const grew = (await hwm()) - before;
    // The reader buffers at most 64 MiB and discards in 32 MiB steps; buffering the payload would be 1 GiB.
    expect(grew, `peak RSS grew ${grew >> 20} MiB`).toBeLessThan(384 * MiB);
    await stillServes(s);
    await stopAndCheck(s);
  });
});

describe('NBD export: a client that disconnects mid-write', () => {
  test('half a WRITE payload is never applied nor marked dirty; completed writes on other connections are, and the server goes on', async () => {
    const s = await serve();
    const a = (await RawNbd.transmitting(s.socket, 'os')).nbd;
    const b = (await RawNbd.transmitting(s.socket, 'data')).nbd;
    await write(s, a, 'os', 64 * KiB, randomBytes(4 * KiB));
    await write(s, b, 'data', 3 * MiB + 512, randomBytes(10 * KiB));

    for (const [disk, offset, length] of [['os', 1 * MiB, 1 * MiB], ['data', 0, 32 * MiB], ['os', SIZE - 4 * KiB, 4 * KiB]] as const) {
      const half = (await RawNbd.transmitting(s.socket, disk)).nbd;
      half.sendRequest(CMD.WRITE, offset, length, randomBytes(Math.min(length, 8 * MiB) / 2));
      // Let the server take the first half off the socket before the client vanishes.
      const probe = await a.request(CMD.READ, 0, 4 * KiB);
      expect(probe.error).toBe(0);
      half.destroy();
    }
    // The other connections are unaffected and go on writing.
    await write(s, a, 'os', 2 * MiB + 4 * KiB, randomBytes(64 * KiB));
    await write(s, b, 'data', SIZE - 8 * KiB, randomBytes(8 * KiB));
    expect((await b.request(CMD.FLUSH, 0, 0)).error).toBe(0);
    a.destroy();
    b.destroy();
    await stillServes(s);
    await stopAndCheck(s);
  });
});
