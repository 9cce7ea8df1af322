// A plain BlockDevice over a real file, so these tests do not depend on src/core's disks (built
// in parallel). It records every call, which lets tests check what reached the device and when.

import { open, type FileHandle } from 'node:fs/promises';
import type { BlockDevice } from '../../src/model/block-device.ts';

export interface DeviceCall {
  readonly op: 'read' | 'write' | 'writeZeroes' | 'flush';
  readonly offset: number;
  readonly length: number;
}

export class FileBlockDevice implements BlockDevice {
  readonly size: number;
  readonly calls: DeviceCall[] = [];
  private readonly fh: FileHandle;

  private constructor(fh: FileHandle, size: number) {
    this.fh = fh;
    this.size = size;
  }

  /** Creates (or truncates) `path` to `size` bytes of zeroes. */
  static async create(path: string, size: number): Promise<FileBlockDevice> {
    const fh = await open(path, 'w+');
    await fh.truncate(size);
    return new FileBlockDevice(fh, size);
  }

  async read(offset: number, length: number): Promise<Buffer> {
    this.calls.push({ op: 'read', offset, length });
    const buf = Buffer.alloc(length);
    let at = 0;
    while (at < length) {
      const { bytesRead } = await this.fh.read(buf, at, length - at, offset + at);
      if (bytesRead === 0) break;
      at += bytesRead;
    }
    return buf;
  }

  async write(offset: number, data: Buffer): Promise<void> {
    this.calls.push({ op: 'write', offset, length: data.length });
    let at = 0;
    while (at < data.length) {
      const { bytesWritten } = await this.fh.write(data, at, data.length - at, offset + at);
      at += bytesWritten;
    }
  }

  async writeZeroes(offset: number, length: number): Promise<void> {
    this.calls.push({ op: 'writeZeroes', offset, length });
    const zero = Buffer.alloc(Math.min(length, 1 << 20));
    for (let at = 0; at < length; at += zero.length) {
      const n = Math.min(zero.length, length - at);
      await this.fh.write(zero, 0, n, offset + at);
    }
  }

  async flush(): Promise<void> {
    this.calls.push({ op: 'flush', offset: 0, length: 0 });
    await this.fh.datasync();
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}
