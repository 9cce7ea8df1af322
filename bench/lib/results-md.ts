// Renders a bench run as RESULTS.md: machine and versions, a goals table (met or missed, by how
// much), then per case one row per subject with min / median / max and the ratio to ours.
import { spread } from './measure.ts';
import type { MachineInfo } from './machine.ts';
import { fmtBytes, fmtRatio, MiB } from './report-helpers.ts';
import type { CaseResult, Sample, Subject } from './types.ts';

export interface CaseRecord {
  readonly name: string;
  readonly title: string;
  readonly goal: string;
  /** Wall time of the whole case including setup, seconds. */
  readonly seconds: number;
  readonly result?: CaseResult;
  readonly error?: string;
}

export interface RunRecord {
  readonly date: string;
  readonly quick: boolean;
  readonly runs: number;
  readonly machine: MachineInfo;
  readonly seconds: number;
  readonly cases: readonly CaseRecord[];
}

const ms = (v: number) => (v >= 10_000 ? `${(v / 1000).toFixed(1)} s` : v >= 1000 ? `${(v / 1000).toFixed(2)} s` : `${v.toFixed(v < 10 ? 2 : 0)} ms`);

function trio(samples: readonly Sample[], pick: (s: Sample) => number | undefined, fmt: (v: number) => string): string {
  const v = samples.map(pick).filter((x): x is number => x !== undefined && Number.isFinite(x));
  if (!v.length) return '-';
  const s = spread(v);
  return `${fmt(s.min)} / ${fmt(s.median)} / ${fmt(s.max)}`;
}

function med(samples: readonly Sample[], pick: (s: Sample) => number | undefined): number | undefined {
  const v = samples.map(pick).filter((x): x is number => x !== undefined && Number.isFinite(x));
  return v.length ? spread(v).median : undefined;
}

function extras(s: Subject): string {
  const keys = [...new Set(s.samples.flatMap((x) => Object.keys(x.extra ?? {})))];
  return keys
    .map((k) => {
      const v = med(s.samples, (x) => x.extra?.[k]);
      if (v === undefined) return '';
      const shown = /bytes$/i.test(k) ? fmtBytes(v) : Number.isInteger(v) ? String(v) : v.toFixed(v < 10 ? 3 : 1);
      return `${k} ${shown}`;
    })
    .filter(Boolean)
    .join(', ');
}

export function renderResults(r: RunRecord): string {
  const m = r.machine;
  const out: string[] = [];
  out.push('# drsite benchmark results', '');
  out.push(`Written by \`npm run bench\`${r.quick ? ' --quick (smoke sizes: not the reference numbers)' : ''} on ${r.date}; total ${r.seconds.toFixed(0)} s. Each subject runs ${r.runs} times; figures are min / median / max, ratios compare medians measured in the same run.`, '');
  out.push('## Machine', '');
  out.push(`- CPU: ${m.cpu}, ${m.cores} cores; memory ${fmtBytes(m.memoryBytes)}; kernel ${m.kernel}; work files on ${m.filesystem}`);
  out.push(`- Versions: ${Object.entries(m.versions).map(([k, v]) => `${k}: ${v}`).join('; ')}`, '');
  out.push('## Goals', '', '| Case | Scenario | Goal | Measured | Met |', '|---|---|---|---|---|');
  for (const c of r.cases) {
    if (c.error) {
      out.push(`| ${c.title} | - | ${c.goal} | failed: ${c.error.split('\n')[0].replace(/\|/g, '/')} | no |`);
      continue;
    }
    const res = c.result!;
    if (res.status !== 'ok') {
      out.push(`| ${c.title} | - | ${c.goal} | ${res.status === 'not-built' ? 'not built yet' : 'skipped'}: ${res.notes[0] ?? ''} | - |`);
      continue;
    }
    for (const s of res.scenarios) {
      for (const g of s.goals) out.push(`| ${c.title} | ${s.name} | ${cell(g.text)} | ${g.measured} | ${g.met === null ? '-' : g.met ? 'yes' : '**no**'} |`);
    }
  }
  out.push('');
  for (const c of r.cases) {
    out.push(`## ${c.title}`, '', `Goal: ${c.goal}. Case time ${c.seconds.toFixed(0)} s.`, '');
    if (c.error) {
      out.push('```', c.error, '```', '');
      continue;
    }
    const res = c.result!;
    if (res.status === 'ok') {
      out.push('| Scenario | Subject | Wall min / median / max | Ours vs this | Throughput (median) | CPU (median) | Peak RSS (median) | Wire (median) | Other (median) |');
      out.push('|---|---|---|---|---|---|---|---|---|');
      for (const s of res.scenarios) {
        const ours = s.subjects.find((x) => x.ours);
        const oursWall = ours ? med(ours.samples, (x) => x.wallMs) : undefined;
        for (const sub of s.subjects) {
          const wall = med(sub.samples, (x) => x.wallMs);
          const ratio = !sub.ours && oursWall !== undefined && wall ? fmtRatio(oursWall / wall) : '';
          const tp = s.inputBytes && wall ? `${(s.inputBytes / MiB / (wall / 1000)).toFixed(0)} MiB/s` : '-';
          out.push(`| ${cell(s.name)} | ${sub.ours ? `**${cell(sub.name)}**` : cell(sub.name)} | ${trio(sub.samples, (x) => x.wallMs, ms)} | ${ratio} | ${tp} | ${ms(med(sub.samples, (x) => x.cpuMs) ?? NaN)} | ${fmtBytes(med(sub.samples, (x) => x.peakRssBytes))} | ${fmtBytes(med(sub.samples, (x) => x.wireBytes))} | ${extras(sub) || '-'} |`);
        }
      }
      out.push('');
      for (const s of res.scenarios) out.push(`- Correctness, ${s.name}: ${s.verified}`);
    }
    for (const n of res.notes) out.push(`- ${n}`);
    out.push('');
  }
  return out.join('\n');
}

/** Table cells cannot hold a bare `|` (shell pipelines in peer names). */
function cell(s: string): string {
  return s.replace(/\|/g, '\\|');
}
