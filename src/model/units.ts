// Durations and sizes as users write them in YAML ("30s", "5m", "4h", "64MiB").

const DURATION = /^(\d+)(ms|s|m|h|d)$/;
const FACTOR: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Milliseconds of a duration string such as `30s`; undefined when it is not one. */
export function parseDuration(text: string): number | undefined {
  const m = DURATION.exec(text.trim());
  if (!m) return text.trim() === '0' ? 0 : undefined;
  return Number(m[1]) * FACTOR[m[2]];
}

export function formatDuration(ms: number): string {
  if (ms === 0) return '0s';
  for (const unit of ['d', 'h', 'm', 's'] as const) {
    if (ms % FACTOR[unit] === 0) return `${ms / FACTOR[unit]}${unit}`;
  }
  return `${ms}ms`;
}

/** Whole seconds for a message: `45 s`. */
export function formatSeconds(ms: number): string {
  return `${Math.round(ms / 1000)} s`;
}

const SIZE = /^(\d+)\s*(B|KiB|MiB|GiB|TiB|KB|MB|GB|TB)?$/;
const SIZE_FACTOR: Record<string, number> = {
  B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3, TiB: 1024 ** 4,
  KB: 1e3, MB: 1e6, GB: 1e9, TB: 1e12,
};

export function parseSize(text: string): number | undefined {
  const m = SIZE.exec(text.trim());
  return m ? Number(m[1]) * SIZE_FACTOR[m[2] ?? 'B'] : undefined;
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}
