// Kill moments for the kill tests: how many (DRSITE_KILLS; 8 in `npm test`, 50 in `npm run soak`)
// and when, from a seeded generator. The seed is printed, and DRSITE_SEED=<it> replays the same
// moments, so a failure found by a random run can be run again.
import { basename } from 'node:path';

export interface KillPlan {
  readonly kills: number;
  readonly seed: number;
  /** Uniform in [0, 1), from the seed. */
  random(): number;
  /** A whole number of milliseconds in [min, min + span). */
  delayMs(span: number, min?: number): number;
}

/** mulberry32: small, fast and good enough to spread kill moments. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function envInt(name: string): number | undefined {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return undefined;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`${name}=${JSON.stringify(raw)}: a whole number >= 0`);
  return n;
}

/**
 * The plan for one kill test. `max` caps the count where each kill is slow (a whole copy); the
 * default is what CI runs.
 */
export function killPlan(file: string, opts: { default?: number; max?: number } = {}): KillPlan {
  const kills = Math.min(opts.max ?? Infinity, envInt('DRSITE_KILLS') ?? opts.default ?? 8);
  const seed = envInt('DRSITE_SEED') ?? Math.floor(Math.random() * 2 ** 31);
  const random = mulberry32(seed);
  console.log(`${basename(file)}: ${kills} kills, DRSITE_SEED=${seed} (DRSITE_SEED=${seed} DRSITE_KILLS=${kills} npx vitest run ${basename(file)} replays them)`);
  return { kills, seed, random, delayMs: (span, min = 0) => min + Math.floor(random() * span) };
}
