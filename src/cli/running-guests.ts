// Which real guests (QEMU) of the embedded sites are still running, found by their pidfiles, and
// the line `drsite run` prints about them when it exits: guests outlive drsite by design (the next
// run adopts them), so the operator learns which ones and the command that stops them.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { DesiredState } from '../model/desired.ts';
import { pidAlive } from '../sites/open-sites.ts';
import { embeddedDataDir } from '../sites/embedded-site.ts';

export interface RunningGuest {
  site: string;
  vm: string;
  pid: number;
}

/** Live QEMUs under `<site data>/vms/<vm>/qemu.pid` of every embedded qemu site. */
export function runningGuests(desired: DesiredState, stateDir: string, cwd = process.cwd()): RunningGuest[] {
  const found: RunningGuest[] = [];
  for (const site of desired.sites) {
    if (site.spec.type !== 'host' || site.spec.endpoint !== undefined || site.spec.hypervisor !== 'qemu') continue;
    const vms = join(embeddedDataDir(site, stateDir, cwd), 'vms');
    if (!existsSync(vms)) continue;
    for (const vm of readdirSync(vms)) {
      const dir = join(vms, vm);
      let pid: number;
      try {
        pid = Number.parseInt(readFileSync(join(dir, 'qemu.pid'), 'utf8'), 10);
      } catch {
        continue;
      }
      if (!(pid > 0) || !pidAlive(pid)) continue;
      // A stale pidfile's number may belong to another process by now: only a QEMU started on this folder.
      let cmdline = '';
      try {
        cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      } catch {
        // No /proc (or the process just ended): trust the pidfile.
        cmdline = dir;
      }
      if (cmdline.includes(dir)) found.push({ site: site.metadata.name, vm, pid });
    }
  }
  return found;
}

/**
 * What to tell the operator on exit. SIGKILL, not SIGTERM: QEMU answers SIGTERM by draining the
 * guest's disk I/O first, and with drsite gone that waits out the NBD reconnect-delay (60 s).
 * Nothing is lost by SIGKILL that SIGTERM would save: the disks are drsite's exports, already gone.
 */
export function guestsLine(guests: readonly RunningGuest[]): string | undefined {
  if (guests.length === 0) return undefined;
  const list = guests.map((g) => `${g.vm} on ${g.site} (pid ${g.pid})`).join(', ');
  return `guests keep running after drsite exits (by design: the next drsite run adopts them): ${list}\n`
    + `to stop them: kill -KILL ${guests.map((g) => g.pid).join(' ')}`;
}
