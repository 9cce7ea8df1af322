// `--wait-lock <duration>`: how long apply, run and the verbs wait for another drsite that holds
// the vault's reconcile lease. Absent: refuse at once, saying who holds it.
import { TerminalError } from '../model/errors.ts';
import { parseDuration } from '../model/units.ts';
import type { GlobalOptions } from './main.ts';

export function waitLockMs(g: GlobalOptions): number {
  if (g.waitLock === undefined) return 0;
  const ms = parseDuration(g.waitLock);
  if (ms === undefined) throw new TerminalError('invalid-argument', `--wait-lock ${JSON.stringify(g.waitLock)} is not a duration such as 30s or 10m`);
  return ms;
}
