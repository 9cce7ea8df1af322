// Everything a reconciling command holds open: the vault, the sites (embedded agents started here),
// and for a demo the sample VMs with their workload. One place opens and closes them in order.
import { resolve } from 'node:path';
import type { DesiredState } from '../model/desired.ts';
import { openSites, type SiteSet } from '../sites/open-sites.ts';
import { ensureSampleVms, findSampleVms, startSampleWorkload, type SampleVms } from '../sites/sample-vms.ts';
import { API } from '../transport/agent-api.ts';
import { Vault } from '../vault/vault.ts';
import { observeSites } from './observe-sites.ts';
import { recordObservation } from './record-status.ts';

export interface SessionOptions {
  desired: DesiredState;
  /** The declaration paths (a folder may hold sample-vms.json). */
  paths: readonly string[];
  vaultPath: string;
  stateDir: string;
  certsDir?: string;
  /** Create sample VMs and run their workload. @default false */
  samples?: boolean;
  report?: (line: string) => void;
}

export interface Session {
  desired: DesiredState;
  vault: Vault;
  sites: SiteSet;
  stateDir: string;
  sample?: SampleVms;
  /** Stops the sample workload, then ships one last cycle so every replica equals its primary. */
  quiesce(): Promise<void>;
  close(): Promise<void>;
}

export async function openSession(opts: SessionOptions): Promise<Session> {
  const stateDir = resolve(opts.stateDir);
  const vault = Vault.open(opts.vaultPath);
  let sites: SiteSet;
  try {
    sites = await openSites(opts.desired, { stateDir, ...(opts.certsDir && { certsDir: opts.certsDir }) });
  } catch (e) {
    vault.close();
    throw e;
  }
  const workload = new AbortController();
  let running: Promise<void> = Promise.resolve();
  let sample: SampleVms | undefined;
  try {
    sample = opts.samples ? await findSampleVms(opts.paths) : undefined;
    const site = sample && sites.sites.get(sample.site);
    if (sample && site) {
      const created = await ensureSampleVms(site, sample);
      if (created.length) opts.report?.(`created sample VM(s) ${created.join(', ')} on ${site.name} (${sample.file})`);
      running = startSampleWorkload(site, sample, workload.signal);
    }
  } catch (e) {
    await sites.close();
    vault.close();
    throw e;
  }
  const session: Session = {
    desired: opts.desired,
    vault,
    sites,
    stateDir,
    ...(sample && { sample }),
    async quiesce() {
      workload.abort();
      await running;
      const obs = await observeSites(opts.desired, sites, vault, new Date());
      for (const [name, cur] of obs.current) {
        if (cur.primaryView?.state !== 'Replicating') continue;
        await sites.get(cur.primarySite).request('POST', API.replicateNow(cur.id)).catch((e: Error) => opts.report?.(`final cycle of ${name}: ${e.message}`));
      }
      recordObservation(vault, opts.desired, await observeSites(opts.desired, sites, vault, new Date()));
    },
    async close() {
      workload.abort();
      await running;
      await sites.close();
      vault.close();
    },
  };
  return session;
}
