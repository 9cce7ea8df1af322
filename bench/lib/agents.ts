// Two real `drsite agent` processes on loopback with mutual TLS (one CA, a config per host) and an
// operator client, for the agent-level cases; plus CPU and peak RSS of the agent processes, read
// from /proc while they run.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { initCertificates, loadCertBundle } from '../../src/transport/certs.ts';
import { createMtlsClient } from '../../src/transport/mtls.ts';
import type { MtlsClient } from '../../src/transport/mtls.ts';
import type { ProcessUsage } from './measure.ts';
import { applyDefaults } from '../../src/config/index.ts';
import type { ReplicationPolicy } from '../../src/model/desired.ts';

const DRSITE = fileURLToPath(new URL('../../bin/drsite.mjs', import.meta.url));
const OPERATOR = 'bench-operator';
const TICKS = 100; // USER_HZ on Linux

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

export interface AgentHost {
  readonly name: string;
  readonly dataDir: string;
  readonly url: string;
  readonly client: MtlsClient;
  readonly process: ChildProcess;
}

/** utime + stime and VmHWM (peak RSS) of a live process. */
async function procUsage(pid: number): Promise<ProcessUsage> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const cpuMs = ((Number(f[11]) + Number(f[12])) * 1000) / TICKS;
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const hwm = Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0) * 1024;
  return { cpuMs, maxRssBytes: hwm };
}

export class AgentPair {
  readonly primary: AgentHost;
  readonly replica: AgentHost;

  private constructor(primary: AgentHost, replica: AgentHost) {
    this.primary = primary;
    this.replica = replica;
  }

  static async start(root: string): Promise<AgentPair> {
    const certs = join(root, 'certs');
    await initCertificates(certs, ['bench-a', 'bench-b', OPERATOR]);
    const hosts: AgentHost[] = [];
    for (const [name, peer] of [['bench-a', 'bench-b'], ['bench-b', 'bench-a']]) {
      const port = await freePort();
      const dataDir = join(root, name);
      const config = join(root, `${name}.yaml`);
      await writeFile(config, [
        `name: ${name}`,
        `dataDir: ${dataDir}`,
        `listen: { host: 127.0.0.1, port: ${port} }`,
        `tlsDir: ${certs}`,
        `operators: [${OPERATOR}]`,
        'replicaServer:',
        '  enabled: true',
        `  defaultStoragePath: ${join(dataDir, 'replicas-store')}`,
        '  allowedPrimaries:',
        `    - { server: "${peer}", storagePath: ${join(dataDir, `from-${peer}`)}, trustGroup: bench }`,
      ].join('\n'));
      // BENCH_AGENT_NODE_ARGS (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof") profiles the agents.
      const nodeArgs = (process.env.BENCH_AGENT_NODE_ARGS ?? '').split(' ').filter(Boolean);
      const child = spawn(process.execPath, [...nodeArgs, DRSITE, 'agent', '--config', config], { stdio: ['ignore', 'ignore', 'pipe'] });
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
      const tls = await loadCertBundle(certs, OPERATOR);
      const url = `https://127.0.0.1:${port}`;
      hosts.push({ name, dataDir, url, process: child, client: createMtlsClient({ ca: tls.ca, cert: tls.cert, key: tls.key, baseUrl: url, timeoutMs: 600_000 }) });
    }
    return new AgentPair(hosts[0], hosts[1]);
  }

  /** Summed CPU of both agents, and the larger peak RSS. */
  async usage(): Promise<ProcessUsage> {
    const [a, b] = await Promise.all([procUsage(this.primary.process.pid!), procUsage(this.replica.process.pid!)]);
    return { cpuMs: a.cpuMs + b.cpuMs, maxRssBytes: Math.max(a.maxRssBytes, b.maxRssBytes) };
  }

  async stop(): Promise<void> {
    for (const h of [this.primary, this.replica]) {
      h.client.close();
      if (h.process.exitCode === null && h.process.signalCode === null) {
        const exited = new Promise((r) => h.process.once('exit', r));
        h.process.kill('SIGTERM');
        const t = setTimeout(() => h.process.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(t);
      }
    }
  }
}

/** A 30 s policy keeping 4 hourly points, every other field from the config layer's defaults step. */
export const POLICY_30S = applyDefaults<ReplicationPolicy>({
  apiVersion: 'drsite.dev/v1',
  kind: 'ReplicationPolicy',
  metadata: { name: 'every-30s' },
  spec: { frequency: '30s', recoveryPoints: { additional: 4 } },
}).spec;
