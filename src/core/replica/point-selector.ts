// Which retained recovery point a failover's selector names, for any replica that keeps points
// (a Replica server's store, an Azure container's snapshots): `latest`, `latest-app-consistent`, a
// sequence, or an RFC 3339 time meaning the newest point at or before it.
import { TerminalError } from '../../model/errors.ts';

export interface SelectablePoint {
  sequence: number;
  /** Cut time, ms since the epoch. */
  time: number;
  consistency: string;
}

/** `points` oldest first; `what` names the replica in errors (e.g. "replica of web-01"). */
export function selectPoint<P extends SelectablePoint>(points: readonly P[], selector: string | number, what: string): P {
  if (points.length === 0) throw new TerminalError('invalid-state', `${what} has no recovery point yet`);
  let p: P | undefined;
  if (selector === 'latest') p = points.at(-1);
  else if (selector === 'latest-app-consistent') p = points.filter((x) => x.consistency === 'app').at(-1);
  else if (typeof selector === 'number' || /^\d+$/.test(selector)) p = points.find((x) => x.sequence === Number(selector));
  else {
    const t = Date.parse(selector);
    if (Number.isNaN(t)) throw new TerminalError('invalid-argument', `recovery point "${selector}" is not latest, latest-app-consistent, a sequence or an RFC 3339 time`);
    p = points.filter((x) => x.time <= t).at(-1);
  }
  if (!p) throw new TerminalError('not-found', `${what} has no recovery point matching "${selector}" (retained: ${points.map((x) => x.sequence).join(', ')})`);
  return p;
}
