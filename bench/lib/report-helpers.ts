// Small helpers cases share: ratio and size formatting, comparing medians, wall/byte goals.
import { spread } from './measure.ts';
import type { Sample, Subject } from './types.ts';

export const MiB = 1 << 20;
export const GiB = 1 << 30;

export function median(samples: readonly Sample[], pick: (s: Sample) => number | undefined): number {
  return spread(samples.map(pick).filter((v): v is number => v !== undefined && Number.isFinite(v))).median;
}

export function wallMedian(s: Subject): number {
  return median(s.samples, (x) => x.wallMs);
}

export function wireMedian(s: Subject): number {
  return median(s.samples, (x) => x.wireBytes);
}

export function fmtRatio(r: number): string {
  return Number.isFinite(r) ? `${r.toFixed(r < 10 ? 2 : 1)}x` : 'n/a';
}

export function fmtBytes(n: number | undefined): string {
  if (n === undefined || !Number.isFinite(n)) return '-';
  if (n >= GiB) return `${(n / GiB).toFixed(2)} GiB`;
  if (n >= MiB) return `${(n / MiB).toFixed(1)} MiB`;
  if (n >= 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${Math.round(n)} B`;
}

export function fmtSize(n: number): string {
  return n >= GiB && n % GiB === 0 ? `${n / GiB} GiB` : `${n / MiB} MiB`;
}
