// The embedded host site: the site's agent started inside this process, with its data under the
// state directory, listening on loopback; the reconciler still reaches it over real mutual TLS.
import { appendFileSync, mkdirSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { Agent } from '../agent/agent.ts';
import { libvirtSettingsOf, qemuSettingsOf, type AgentConfig } from '../agent/config.ts';
import type { AllowedPrimary, Site as SiteResource } from '../model/desired.ts';
import { DEFAULT_REPLICA_PORT } from '../model/site.ts';
import type { CertBundle } from '../transport/certs.ts';
import type { Logger } from '../transport/logger.ts';
import { HostSite } from './host-site.ts';
import { OPERATOR_NAME } from './site.ts';

export interface EmbeddedSiteOptions {
  /** drsite's state directory (default `.drsite`): the default data path `.drsite/sites/<name>` moves under it. */
  stateDir: string;
  /** Where relative data paths are resolved. */
  cwd: string;
  certsDir: string;
  /** Every declared site name: default allowedPrimaries are the others. */
  siteNames: readonly string[];
  operatorTls: CertBundle;
  /** Run replication cycles on the policy schedule. @default true */
  schedule?: boolean;
  log?: Logger;
}

/** Data directory of an embedded site: the config default `.drsite/sites/<name>` follows --state-dir. */
export function embeddedDataDir(site: SiteResource, stateDir: string, cwd: string): string {
  const name = site.metadata.name;
  const p = site.spec.dataPath;
  if (p === undefined || p === `.drsite/sites/${name}`) return resolve(cwd, stateDir, 'sites', name);
  return isAbsolute(p) ? p : resolve(cwd, p);
}

export function embeddedAgentConfig(site: SiteResource, opts: Pick<EmbeddedSiteOptions, 'stateDir' | 'cwd' | 'certsDir' | 'siteNames'>): AgentConfig {
  const name = site.metadata.name;
  const dataDir = embeddedDataDir(site, opts.stateDir, opts.cwd);
  const rs = site.spec.replicaServer;
  const inData = (p: string) => (isAbsolute(p) ? p : resolve(dataDir, p));
  return {
    name,
    dataDir,
    // Without a Replica server nothing dials this site but the reconciler: any free port will do.
    listen: { host: '127.0.0.1', port: rs?.enabled ? (rs.port ?? DEFAULT_REPLICA_PORT) : 0 },
    tlsDir: resolve(opts.cwd, opts.certsDir),
    operators: [OPERATOR_NAME],
    replicaServer: {
      enabled: rs?.enabled ?? false,
      defaultStoragePath: inData(rs?.defaultStoragePath ?? 'replicas'),
      allowedPrimaries: (rs?.allowedPrimaries ?? opts.siteNames.filter((n) => n !== name).map((server): AllowedPrimary => ({ server }))).map((p) => ({
        ...p,
        ...(p.storagePath && { storagePath: inData(p.storagePath) }),
      })),
    },
    hypervisor: site.spec.hypervisor ?? 'files',
    qemu: qemuSettingsOf(site.spec.qemu),
    ...(site.spec.libvirt && { libvirt: libvirtSettingsOf(site.spec.libvirt) }),
  };
}

/** A logger appending JSON lines to a file, so embedded agents do not write over the CLI's output. */
export function fileLogger(path: string): Logger {
  mkdirSync(dirname(path), { recursive: true });
  const line = (level: string, msg: string, fields?: Readonly<Record<string, unknown>>) => {
    try {
      appendFileSync(path, `${JSON.stringify({ time: new Date().toISOString(), level, msg, ...fields })}\n`);
    } catch {
      // A log line is never worth failing replication for.
    }
  };
  return { info: (m, f) => line('info', m, f), warn: (m, f) => line('warn', m, f), error: (m, f) => line('error', m, f) };
}

export async function startEmbeddedSite(site: SiteResource, opts: EmbeddedSiteOptions): Promise<HostSite> {
  const config = embeddedAgentConfig(site, opts);
  const log = opts.log ?? fileLogger(join(resolve(opts.cwd, opts.stateDir), 'logs', `${config.name}.log`));
  const agent = await Agent.start(config, { log, schedule: opts.schedule ?? true });
  return new HostSite({
    name: config.name,
    endpoint: agent.url,
    tls: opts.operatorTls,
    embedded: true,
    dataDir: config.dataDir,
    onClose: () => agent.stop(),
  });
}
