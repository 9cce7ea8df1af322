// `drsite workload <vm>`: writes a deterministic pattern through the VM's NBD export at a chosen
// rate, for demos, tests and benchmarks.
import { join } from 'node:path';
import { runWorkload } from '../demo/workload.ts';
import { TerminalError } from '../model/errors.ts';
import { formatBytes, parseDuration, parseSize } from '../model/units.ts';
import type { GlobalOptions } from './main.ts';
import { printJson, type Io } from './output.ts';

export interface WorkloadFlags {
  disk: string;
  socket?: string;
  dataDir?: string;
  pattern: 'random' | 'sequential' | 'mixed';
  rate?: string;
  bytes?: string;
  duration?: string;
  seed: string;
  compressible?: string;
}

export async function workloadCommand(vm: string, f: WorkloadFlags, g: GlobalOptions, io: Io): Promise<number> {
  const socketPath = f.socket ?? (f.dataDir ? join(f.dataDir, 'nbd', `${vm}.sock`) : undefined);
  if (!socketPath) throw new TerminalError('invalid-argument', 'give --socket <path> or --data-dir <agent data dir>');
  const size = (what: string, v?: string) => {
    if (v === undefined) return undefined;
    const n = parseSize(v);
    if (n === undefined) throw new TerminalError('invalid-argument', `${what}: "${v}" is not a size (e.g. 64MiB, 10MB)`);
    return n;
  };
  const durationMs = f.duration === undefined ? undefined : parseDuration(f.duration);
  if (f.duration !== undefined && durationMs === undefined) throw new TerminalError('invalid-argument', `--duration: "${f.duration}" is not a duration (e.g. 30s)`);
  const totalBytes = size('--bytes', f.bytes);
  const rate = size('--rate', f.rate);
  const result = await runWorkload(
    { socketPath, exportName: f.disk },
    {
      pattern: f.pattern,
      seed: Number(f.seed),
      ...(rate !== undefined && { rate }),
      ...(totalBytes !== undefined && { totalBytes }),
      ...(durationMs !== undefined && { durationMs }),
      ...(f.compressible !== undefined && { compressible: Number(f.compressible) }),
    },
  );
  if (g.output === 'json') printJson(io, result);
  else io.out(`Wrote ${formatBytes(result.bytesWritten)} in ${result.writes} writes to ${vm}/${f.disk}.`);
  return 0;
}
