// A QEMU VM that drsite did not start: plain qemu-system-x86_64 with raw disks on virtio-blk
// devices and no guest OS (nothing boots: the CPUs stay stopped with -S). Guest-like writes go
// through the devices with HMP `qemu-io -d`, the path a guest's writes take.
import { spawn, type ChildProcess } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { QmpClient } from '../../../../src/agent/hypervisor/qemu/qmp.ts';
import { untilListening } from '../../../support/sockets.ts';

export interface TestVm {
  /** The monitor the test drives. */
  qmp: QmpClient;
  /** The monitor left for drsite. */
  readonly drsiteSocket: string;
  /** Writes `pattern` (a byte) at offset+length through disk `i`'s device. */
  write(i: number, pattern: number, offset: number, length: number): Promise<void>;
  /** SIGKILL, then wait for exit. */
  kill(): Promise<void>;
}

export async function startVm(dir: string, disks: readonly string[]): Promise<TestVm> {
  const testSocket = join(dir, 'qmp-test.sock');
  const drsiteSocket = join(dir, 'qmp-drsite.sock');
  await rm(testSocket, { force: true });
  await rm(drsiteSocket, { force: true });
  const args = ['-accel', 'tcg', '-nographic', '-nodefaults', '-S', '-m', '32', '-machine', 'pc',
    '-qmp', `unix:${testSocket},server=on,wait=off`, '-qmp', `unix:${drsiteSocket},server=on,wait=off`];
  disks.forEach((path, i) => {
    args.push('-blockdev', `driver=file,filename=${path},node-name=file${i}`, '-blockdev', `driver=raw,file=file${i},node-name=disk${i}`);
    args.push('-device', `virtio-blk-pci,drive=disk${i},id=vd${i}`);
  });
  const proc: ChildProcess = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  proc.stderr!.on('data', (d) => (stderr += d));
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  for (const socket of [testSocket, drsiteSocket]) {
    await untilListening(socket, { proc, what: 'qemu-system-x86_64' }).catch((e: Error) => {
      throw new Error(`${e.message}: ${stderr}`);
    });
  }
  const qmp = await QmpClient.connect(testSocket);
  return {
    qmp,
    drsiteSocket,
    async write(i, pattern, offset, length) {
      const out = await qmp.execute<string>('human-monitor-command', { 'command-line': `qemu-io -d /machine/peripheral/vd${i}/virtio-backend "write -P 0x${pattern.toString(16)} ${offset} ${length}"` });
      // qemu-io prints its report on QEMU's stdout; the monitor returns only errors.
      if (/error/i.test(out)) throw new Error(`qemu-io write on vd${i}: ${out}`);
    },
    async kill() {
      qmp.close();
      proc.kill('SIGKILL');
      await exited;
    },
  };
}
