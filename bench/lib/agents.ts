// Two real `drsite agent` processes on loopback with mutual TLS for the agent-level cases: the
// same cluster the agent tests use (test/agent/cluster.ts), plus CPU and peak RSS of the agent
// processes, read from /proc while they run.
import type { ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import type { MtlsClient } from '../../src/transport/mtls.ts';
import { Cluster, policy30s } from '../../test/agent/cluster.ts';
import type { ProcessUsage } from './measure.ts';

const TICKS = 100; // USER_HZ on Linux

export interface AgentHost {
  readonly name: string;
  readonly dataDir: string;
  readonly url: string;
  readonly client: MtlsClient;
  readonly process: ChildProcess;
}

/** utime + stime and VmHWM (peak RSS) of a live process. */
export async function procUsage(pid: number): Promise<ProcessUsage> {
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
  readonly #cluster: Cluster;

  private constructor(cluster: Cluster, primary: AgentHost, replica: AgentHost) {
    this.#cluster = cluster;
    this.primary = primary;
    this.replica = replica;
  }

  /** bench-a replicates to bench-b (each allows the other), everything under `root`. */
  static async start(root: string): Promise<AgentPair> {
    const cluster = await Cluster.create([{ name: 'bench-a' }, { name: 'bench-b' }], [], { root });
    // BENCH_AGENT_NODE_ARGS (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof") profiles the agents.
    const nodeArgs = (process.env.BENCH_AGENT_NODE_ARGS ?? '').split(' ').filter(Boolean);
    const hosts: AgentHost[] = [];
    try {
      for (const name of ['bench-a', 'bench-b']) {
        const child = await cluster.startProcess(name, { nodeArgs });
        const h = cluster.host(name);
        hosts.push({ name, dataDir: h.dataDir, url: h.url, process: child, client: await cluster.client(name, undefined, 600_000) });
      }
    } catch (e) {
      await cluster.destroy();
      throw e;
    }
    return new AgentPair(cluster, hosts[0], hosts[1]);
  }

  /** Summed CPU of both agents, and the larger peak RSS. */
  async usage(): Promise<ProcessUsage> {
    const [a, b] = await Promise.all([procUsage(this.primary.process.pid!), procUsage(this.replica.process.pid!)]);
    return { cpuMs: a.cpuMs + b.cpuMs, maxRssBytes: Math.max(a.maxRssBytes, b.maxRssBytes) };
  }

  /** Stops both agents and removes their certificates, configs and data. */
  stop(): Promise<void> {
    return this.#cluster.destroy();
  }
}

/** A 30 s policy keeping 4 hourly points, every other field from the config layer's defaults step. */
export const POLICY_30S = policy30s;
