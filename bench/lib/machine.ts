// What the numbers were measured on: CPU, cores, memory, kernel, file system, tool versions.
import { cpus, release, totalmem } from 'node:os';
import { spawnSync } from 'node:child_process';
import { PEER_PACKAGES, toolVersion } from './tools.ts';

export interface MachineInfo {
  readonly cpu: string;
  readonly cores: number;
  readonly memoryBytes: number;
  readonly kernel: string;
  readonly filesystem: string;
  readonly versions: Readonly<Record<string, string>>;
}

export function machineInfo(workDir: string): MachineInfo {
  const fs = spawnSync('df', ['-T', workDir], { encoding: 'utf8' }).stdout?.trim().split('\n')[1]?.split(/\s+/)[1] ?? 'unknown';
  const versions: Record<string, string> = { node: process.version };
  for (const t of Object.keys(PEER_PACKAGES)) versions[t] = toolVersion(t);
  return {
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: cpus().length,
    memoryBytes: totalmem(),
    kernel: release(),
    filesystem: fs,
    versions,
  };
}
