// Two (or more) real agents for end-to-end tests and the agent-level benchmarks: certificates from
// one CA, a config file per host, agents as separate `drsite agent` processes (or in-process), and
// an operator client.
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent } from '../../src/agent/agent.ts';
import { loadAgentConfig } from '../../src/agent/config.ts';
import { silentLogger } from '../../src/transport/logger.ts';
import type { Clock } from '../../src/model/clock.ts';
import { initCertificates, loadCertBundle } from '../../src/transport/certs.ts';
import { createMtlsClient, type MtlsClient } from '../../src/transport/mtls.ts';
import { DRSITE } from '../cli/run-cli.ts';
import { applyDefaults } from '../../src/config/index.ts';
import type { ReplicationPolicy } from '../../src/model/desired.ts';

export const OPERATOR = 'drsite-operator';

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

/**
 * `n` distinct free ports: every listener stays open until all are taken, so the kernel cannot
 * hand the same port out twice (calling freePort() n times can, and did: an etcd cluster whose
 * initial-cluster listed one peer URL for two members).
 */
export async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from({ length: n }, () =>
      new Promise<ReturnType<typeof createServer>>((resolve, reject) => {
        const s = createServer();
        s.once('error', reject);
        s.listen(0, '127.0.0.1', () => resolve(s));
      }),
    ),
  );
  const ports = servers.map((s) => (s.address() as { port: number }).port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

export interface HostSpec {
  name: string;
  replicaServer?: boolean;
  allowedPrimaries?: string[];
  /** Further lines of the agent's configuration file (e.g. `hypervisor: qemu`). */
  config?: string[];
}

export interface Host {
  name: string;
  config: string;
  dataDir: string;
  url: string;
  port: number;
}

export class Cluster {
  readonly root: string;
  readonly certs: string;
  readonly hosts = new Map<string, Host>();
  readonly #procs = new Map<string, ChildProcess>();
  readonly #agents = new Map<string, Agent>();
  readonly #clients: MtlsClient[] = [];

  private constructor(root: string) {
    this.root = root;
    this.certs = join(root, 'certs');
  }

  /** `opts.root`: where certificates, configs and data go. @default a new temporary directory */
  static async create(specs: HostSpec[], extraCerts: string[] = [], opts: { root?: string } = {}): Promise<Cluster> {
    const c = new Cluster(opts.root ?? mkdtempSync(join(tmpdir(), 'drsite-cluster-')));
    mkdirSync(c.root, { recursive: true });
    await initCertificates(c.certs, [...specs.map((s) => s.name), OPERATOR, ...extraCerts]);
    const ports = await freePorts(specs.length);
    for (const [i, s] of specs.entries()) {
      const port = ports[i];
      const dataDir = join(c.root, s.name);
      const config = join(c.root, `${s.name}.yaml`);
      const primaries = s.allowedPrimaries ?? specs.filter((x) => x.name !== s.name).map((x) => x.name);
      writeFileSync(
        config,
        [
          `name: ${s.name}`,
          `dataDir: ${dataDir}`,
          `listen: { host: 127.0.0.1, port: ${port} }`,
          `tlsDir: ${c.certs}`,
          `operators: [${OPERATOR}]`,
          'replicaServer:',
          `  enabled: ${s.replicaServer ?? true}`,
          `  defaultStoragePath: ${join(dataDir, 'replicas-store')}`,
          '  allowedPrimaries:',
          ...primaries.map((p) => `    - { server: "${p}", storagePath: ${join(dataDir, 'from-' + p.replace(/\*/g, 'any'))}, trustGroup: test }`),
          ...(primaries.length ? [] : ['    []']),
          ...(s.config ?? []),
        ].join('\n'),
      );
      c.hosts.set(s.name, { name: s.name, config, dataDir, url: `https://127.0.0.1:${port}`, port });
    }
    return c;
  }

  host(name: string): Host {
    const h = this.hosts.get(name);
    if (!h) throw new Error(`no host ${name}`);
    return h;
  }

  /** Starts `drsite agent` as a separate process (`nodeArgs`, e.g. --cpu-prof, go to Node) and waits until it listens. */
  async startProcess(name: string, opts: { nodeArgs?: readonly string[] } = {}): Promise<ChildProcess> {
    const h = this.host(name);
    const child = spawn(process.execPath, [...(opts.nodeArgs ?? []), DRSITE, 'agent', '--config', h.config], { stdio: ['ignore', 'ignore', 'pipe'] });
    let log = '';
    await new Promise<void>((resolve, reject) => {
      const onData = (d: Buffer) => {
        log += d;
        if (log.includes('"agent listening"')) {
          child.stderr!.off('data', onData);
          resolve();
        }
      };
      child.stderr!.on('data', onData);
      child.once('exit', (code) => reject(new Error(`agent ${name} exited (${code}) before listening:\n${log}`)));
    });
    child.stderr!.resume();
    this.#procs.set(name, child);
    return child;
  }

  /** Kills an agent process with `signal` and waits for it to exit. */
  async kill(name: string, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const child = this.#procs.get(name);
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill(signal);
    await exited;
    this.#procs.delete(name);
  }

  /** Starts an agent inside this process (schedule off: the test drives cycles). */
  async startInProcess(name: string, opts: { schedule?: boolean; clock?: Clock } = {}): Promise<Agent> {
    const config = await loadAgentConfig(this.host(name).config);
    const agent = await Agent.start(config, { log: silentLogger, schedule: opts.schedule ?? false, ...(opts.clock && { clock: opts.clock }) });
    this.#agents.set(name, agent);
    return agent;
  }

  async stopInProcess(name: string): Promise<void> {
    await this.#agents.get(name)?.stop();
    this.#agents.delete(name);
  }

  /** A client presenting the certificate `as` (default: the operator's). */
  async client(host: string, as = OPERATOR, timeoutMs = 120_000): Promise<MtlsClient> {
    const tls = await loadCertBundle(this.certs, as);
    const c = createMtlsClient({ ca: tls.ca, cert: tls.cert, key: tls.key, baseUrl: this.host(host).url, timeoutMs });
    this.#clients.push(c);
    return c;
  }

  async destroy(): Promise<void> {
    for (const c of this.#clients) c.close();
    for (const name of [...this.#procs.keys()]) await this.kill(name, 'SIGKILL');
    for (const name of [...this.#agents.keys()]) await this.stopInProcess(name);
    killGuestsUnder(this.root);
    rmSync(this.root, { recursive: true, force: true });
  }
}

/**
 * Real guests outlive their agent (the next one adopts them): a test stops the QEMUs it left under
 * `root`, found by their pidfiles (`<site>/vms/<vm>/qemu.pid`, any depth).
 */
export function killGuestsUnder(root: string): void {
  if (!existsSync(root)) return;
  for (const rel of readdirSync(root, { recursive: true, encoding: 'utf8' })) {
    if (!rel.endsWith('qemu.pid')) continue;
    const pid = Number.parseInt(readFileSync(join(root, rel), 'utf8'), 10);
    // Only a QEMU started for this root: a stale pidfile's number may belong to another process by now.
    const cmd = pid > 0 && existsSync(`/proc/${pid}/cmdline`) ? readFileSync(`/proc/${pid}/cmdline`, 'utf8') : '';
    if (!cmd.includes(root)) continue;
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

export async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(8 << 20);
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      if (!bytesRead) break;
      h.update(buf.subarray(0, bytesRead));
    }
  } finally {
    await fh.close();
  }
  return h.digest('hex');
}

/** A 30 s policy keeping 4 hourly points, every other field from the config layer's defaults step. */
export const policy30s = applyDefaults<ReplicationPolicy>({
  apiVersion: 'drsite.dev/v1',
  kind: 'ReplicationPolicy',
  metadata: { name: 'every-30s' },
  spec: { frequency: '30s', recoveryPoints: { additional: 4 } },
}).spec;

/** host-a (primary) and host-b (its Replica server) with operator clients: the setup most agent tests share. */
export async function twoHosts(opts: { processes?: boolean } = {}): Promise<{ cluster: Cluster; a: MtlsClient; b: MtlsClient }> {
  const cluster = await Cluster.create([{ name: 'host-a' }, { name: 'host-b' }]);
  for (const h of ['host-a', 'host-b']) {
    if (opts.processes) await cluster.startProcess(h);
    else await cluster.startInProcess(h);
  }
  return { cluster, a: await cluster.client('host-a'), b: await cluster.client('host-b') };
}
