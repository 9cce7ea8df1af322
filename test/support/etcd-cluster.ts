// A real etcd cluster for tests and benchmarks: Debian's etcd (3.4) on loopback, one process per
// member on free client and peer ports, data under one temporary directory. Election settings are
// etcd's own defaults, written out (100 ms heartbeat, 1 s election timeout): faster ones make a
// loaded 2-core machine change leaders for nothing.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, openSync, closeSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePorts } from '../agent/cluster.ts';

export const ETCD = process.env.DRSITE_ETCD ?? '/usr/bin/etcd';

export interface EtcdMember {
  name: string;
  /** `127.0.0.1:port`, as an `etcd://` URL lists it. */
  endpoint: string;
  clientUrl: string;
  peerUrl: string;
  dataDir: string;
  /** The member's etcd log (zap JSON lines). */
  log: string;
  process: ChildProcess;
  /** False once killed. */
  alive: boolean;
}

export interface EtcdCluster {
  /** `etcd://h:p,h:p,h:p`: the vault's `--state` for this cluster (append `/prefix` for a key prefix). */
  url: string;
  /** Every member's `127.0.0.1:port`, in member order. */
  endpoints: string[];
  members: EtcdMember[];
  /** SIGKILL member `i` and wait for it to exit. */
  kill(i: number): Promise<void>;
  /** Kill every member and remove the data. */
  stop(): Promise<void>;
}

export interface EtcdOptions {
  /** @default 3 */
  members?: number;
  /** How long to wait for every member to report healthy. @default 30000 */
  timeoutMs?: number;
}

export async function startEtcd(opts: EtcdOptions = {}): Promise<EtcdCluster> {
  const count = opts.members ?? 3;
  const root = mkdtempSync(join(tmpdir(), 'drsite-etcd-'));
  const free = await freePorts(2 * count);
  const ports = Array.from({ length: count }, (_, i) => ({ client: free[2 * i], peer: free[2 * i + 1] }));
  const names = ports.map((_, i) => `m${i}`);
  const token = `drsite-test-${process.pid}-${ports[0].peer}`;
  const initialCluster = ports.map((p, i) => `${names[i]}=http://127.0.0.1:${p.peer}`).join(',');
  const members: EtcdMember[] = ports.map((p, i) => {
    const name = names[i];
    const dataDir = join(root, name);
    mkdirSync(dataDir);
    const log = join(root, `${name}.log`);
    const fd = openSync(log, 'a');
    const clientUrl = `http://127.0.0.1:${p.client}`;
    const peerUrl = `http://127.0.0.1:${p.peer}`;
    const child = spawn(ETCD, [
      '--name', name,
      '--data-dir', dataDir,
      '--listen-client-urls', clientUrl,
      '--advertise-client-urls', clientUrl,
      '--listen-peer-urls', peerUrl,
      '--initial-advertise-peer-urls', peerUrl,
      '--initial-cluster', initialCluster,
      '--initial-cluster-state', 'new',
      '--initial-cluster-token', token,
      '--heartbeat-interval', '100',
      '--election-timeout', '1000',
      '--logger', 'zap',
      '--log-outputs', 'stderr',
      '--log-level', 'warn',
    ], { stdio: ['ignore', fd, fd] });
    closeSync(fd);
    const member: EtcdMember = { name, endpoint: `127.0.0.1:${p.client}`, clientUrl, peerUrl, dataDir, log, process: child, alive: true };
    child.once('exit', () => (member.alive = false));
    return member;
  });

  const killAll = () => {
    for (const m of members) if (m.alive) m.process.kill('SIGKILL');
  };
  // A test process that dies leaves no etcd behind.
  process.once('exit', killAll);

  const kill = async (i: number): Promise<void> => {
    const m = members[i];
    if (!m) throw new Error(`no etcd member ${i}`);
    if (m.process.exitCode !== null || m.process.signalCode !== null) return;
    const exited = new Promise((r) => m.process.once('exit', r));
    m.process.kill('SIGKILL');
    await exited;
  };
  const stop = async (): Promise<void> => {
    process.off('exit', killAll);
    for (let i = 0; i < members.length; i++) await kill(i);
    rmSync(root, { recursive: true, force: true });
  };

  try {
    await waitHealthy(members, opts.timeoutMs ?? 30_000);
  } catch (e) {
    await stop();
    throw e;
  }
  const endpoints = members.map((m) => m.endpoint);
  return { url: `etcd://${endpoints.join(',')}`, endpoints, members, kill, stop };
}

/** Every member answers /health with health "true" (it has a leader and serves reads). */
async function waitHealthy(members: EtcdMember[], timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const healthy = async (m: EtcdMember): Promise<boolean> => {
    try {
      const r = await fetch(`${m.clientUrl}/health`, { signal: AbortSignal.timeout(2000) });
      return r.ok && ((await r.json()) as { health?: string }).health === 'true';
    } catch {
      return false;
    }
  };
  for (;;) {
    const dead = members.find((m) => !m.alive);
    if (dead) throw new Error(`etcd member ${dead.name} exited while starting:\n${tail(dead.log)}`);
    if ((await Promise.all(members.map(healthy))).every(Boolean)) return;
    if (Date.now() > deadline) throw new Error(`etcd not healthy after ${timeoutMs} ms:\n${members.map((m) => `${m.name}: ${tail(m.log)}`).join('\n')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function tail(path: string): string {
  try {
    return readFileSync(path, 'utf8').split('\n').slice(-10).join('\n');
  } catch {
    return '(no log)';
  }
}
