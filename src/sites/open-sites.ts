// Opens every declared host site: embedded ones start their agent here (certificates for them and
// the operator are created on first use), remote ones are reached at their endpoint. A lock file
// keeps two drsite processes from running the same embedded sites (and their disks) at once.
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { DesiredState } from '../model/desired.ts';
import { TerminalError } from '../model/errors.ts';
import { initCertificates, loadCertBundle } from '../transport/certs.ts';
import type { Logger } from '../transport/logger.ts';
import { AzureSite } from './azure-site.ts';
import { startEmbeddedSite } from './embedded-site.ts';
import { HostSite } from './host-site.ts';
import { OPERATOR_NAME, type Site } from './site.ts';

export interface OpenSitesOptions {
  /** @default '.drsite' */
  stateDir?: string;
  /** Operator and embedded-site certificates. @default `<stateDir>/certs` */
  certsDir?: string;
  /** @default process.cwd() */
  cwd?: string;
  /** Embedded agents run cycles on their schedule. @default true */
  schedule?: boolean;
  /** Logger for embedded agents. @default JSON lines in `<stateDir>/logs/<site>.log` */
  log?: Logger;
}

export interface SiteSet {
  /** Declared sites by name: host sites (their agents) and azure sites (their containers). */
  readonly sites: ReadonlyMap<string, Site>;
  get(name: string): Site;
  /** The declarations a long-running reconciler re-read: azure sites write failover Terraform from them. */
  setDesired(desired: DesiredState): void;
  close(): Promise<void>;
}

/** Is process `pid` alive on this host (EPERM: alive, someone else's)? */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function takeLock(stateDir: string): () => void {
  mkdirSync(stateDir, { recursive: true });
  const path = join(stateDir, 'embedded-sites.pid');
  let holder: number | undefined;
  try {
    holder = Number(readFileSync(path, 'utf8').trim());
  } catch {
    // no lock
  }
  if (holder && holder !== process.pid && pidAlive(holder)) {
    throw new TerminalError('invalid-state', `the embedded sites in ${stateDir} are run by drsite process ${holder} (drsite run?); stop it first, or use \`drsite continue\` / the vault-only commands while it runs`);
  }
  writeFileSync(path, `${process.pid}\n`);
  return () => {
    try {
      if (Number(readFileSync(path, 'utf8').trim()) === process.pid) rmSync(path, { force: true });
    } catch {
      // already gone
    }
  };
}

export async function openSites(desired: DesiredState, opts: OpenSitesOptions = {}): Promise<SiteSet> {
  const cwd = opts.cwd ?? process.cwd();
  const stateDir = resolve(cwd, opts.stateDir ?? '.drsite');
  const certsDir = resolve(cwd, opts.certsDir ?? join(stateDir, 'certs'));
  const hosts = desired.sites.filter((s) => s.spec.type === 'host');
  const embedded = hosts.filter((s) => s.spec.endpoint === undefined);
  const unlock = embedded.length > 0 ? takeLock(stateDir) : () => {};
  const sites = new Map<string, Site>();
  let current = desired;
  try {
    if (embedded.length > 0) await initCertificates(certsDir, [...embedded.map((s) => s.metadata.name), OPERATOR_NAME]);
    const operatorTls = await loadCertBundle(certsDir, OPERATOR_NAME);
    const siteNames = desired.sites.map((s) => s.metadata.name);
    for (const s of hosts) {
      const site = s.spec.endpoint === undefined
        ? await startEmbeddedSite(s, { stateDir, cwd, certsDir, siteNames, operatorTls, ...(opts.schedule !== undefined && { schedule: opts.schedule }), ...(opts.log && { log: opts.log }) })
        : new HostSite({ name: s.metadata.name, endpoint: s.spec.endpoint, tls: operatorTls });
      sites.set(s.metadata.name, site);
    }
    for (const s of desired.sites.filter((x) => x.spec.type === 'azure')) {
      sites.set(s.metadata.name, new AzureSite(s, { desired: () => current, stateDir }));
    }
  } catch (e) {
    for (const s of sites.values()) await s.close().catch(() => {});
    unlock();
    throw e;
  }
  return {
    sites,
    get(name: string): Site {
      const s = sites.get(name);
      if (!s) throw new TerminalError('not-found', `site ${name} is not a declared site`);
      return s;
    },
    setDesired(d: DesiredState): void {
      current = d;
    },
    async close(): Promise<void> {
      for (const s of sites.values()) await s.close().catch(() => {});
      unlock();
    },
  };
}
