// `drsite jobs [id]`: jobs newest first, or one job with its steps and child jobs (a recovery
// plan's job holds its per-VM jobs).
import { TerminalError } from '../model/errors.ts';
import { Vault, type Job } from '../vault/vault.ts';
import type { GlobalOptions } from './main.ts';
import { printJson, renderTable, type Io } from './output.ts';

const time = (iso: string | undefined) => (iso ? iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z') : '-');

function describe(job: Job, indent: string, lines: string[]): void {
  lines.push(`${indent}${job.type} ${job.target}  ${job.state}  ${time(job.startedAt)} -> ${time(job.endedAt)}  (${job.id})`);
  if (job.error) lines.push(`${indent}  error: ${job.error.message}`);
  for (const s of job.steps) {
    lines.push(`${indent}  - ${s.name}: ${s.state}${s.attempt > 1 ? ` (attempt ${s.attempt})` : ''}  ${time(s.startedAt)} -> ${time(s.endedAt)}${s.error ? `  error: ${s.error.message}` : ''}`);
  }
  for (const c of job.children) describe(c, `${indent}    `, lines);
}

export async function jobsCommand(id: string | undefined, opts: { limit: string }, g: GlobalOptions, io: Io): Promise<number> {
  const vault = Vault.open(g.vault);
  try {
    if (id) {
      const job = vault.getJob(id);
      if (!job) throw new TerminalError('not-found', `job ${id} not found in ${g.vault}`);
      if (g.output === 'json') printJson(io, job);
      else {
        const lines: string[] = [];
        describe(job, '', lines);
        io.out(lines.join('\n'));
      }
      return 0;
    }
    const jobs = vault.listJobs({ limit: Number(opts.limit) || 30, parentId: null });
    if (g.output === 'json') printJson(io, jobs);
    else io.out(jobs.length ? renderTable(['Job', 'Type', 'Target', 'State', 'Started', 'Ended', 'Error'], jobs.map((j) => [j.id, j.type, j.target, j.state, time(j.startedAt), time(j.endedAt), j.error?.message ?? ''])) : 'No jobs yet.');
    return 0;
  } finally {
    vault.close();
  }
}
