// A VM's NBD export in its own process, composed as the agent composes it (VmRuntime: every disk
// through the change tracker, served on `<nbdDir>/<vm>.sock`), so a robustness test sees a crash
// as an exit and can read the server's peak memory from /proc. Prints `{"ready": socketPath}`;
// on the stdin line `stop` it stops the runtime (which saves the trackers' state) and exits 0.
//
// argv: <nbdDir> <vm> <imageDir> <disk>:<size> ...   (images `<imageDir>/<disk>.img` must exist)
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { VmRuntime } from '../../src/agent/hypervisor/vm-runtime.ts';
import { silentLogger } from '../../src/transport/logger.ts';

const [nbdDir, vm, imageDir, ...diskArgs] = process.argv.slice(2);
const disks = diskArgs.map((a) => {
  const [name, size] = a.split(':');
  return { name, file: `${name}.img`, size: Number(size) };
});
const rt = await VmRuntime.start(
  { diskPath: (_vm, d) => join(imageDir, d.file) },
  { name: vm, disks, adapters: [], power: 'Running' },
  nbdDir,
  silentLogger,
);
process.stdout.write(`${JSON.stringify({ ready: rt.socketPath })}\n`);
for await (const line of createInterface({ input: process.stdin })) {
  if (line.trim() === 'stop') {
    await rt.stop();
    process.exit(0);
  }
}
