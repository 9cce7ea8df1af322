// Case 12, controller takeover: `drsite run --state etcd://...` controllers share one vault in a
// 3-member etcd cluster on loopback, reconciling two real agents with one protected VM. The leader
// is killed -9 at a random moment of its lease renewal period; timed from the kill until the
// follower holds the vault's reconcile lease and until it prints that it leads. A new follower
// then starts, and the next run kills the new leader. Peer: etcd's own lock recipe with the same
// TTL (`etcdctl lock --ttl`: a session lease kept alive by the holder), its holder killed the same way.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { cpSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { RECONCILE_LEASE } from '../../src/reconciler/reconcile-lease.ts';
import { Vault } from '../../src/vault/vault.ts';
import { Cluster } from '../../test/agent/cluster.ts';
import { DRSITE } from '../../test/cli/run-cli.ts';
import { ETCD, startEtcd, type EtcdCluster } from '../../test/support/etcd-cluster.ts';
import { procUsage } from '../lib/agents.ts';
import { spread } from '../lib/measure.ts';
import { MiB } from '../lib/report-helpers.ts';
import type { BenchCase, BenchContext, CaseResult, Sample, Scenario, Subject } from '../lib/types.ts';
import { CorrectnessError } from '../lib/types.ts';
import { ROUTES, send } from '../../test/support/agent-client.ts';

const TTL_S = 3;
const ETCDCTL = '/usr/bin/etcdctl';
const LOCK = 'bench-takeover';
const VM = 'vm-t';
/** drsite renews the leader's lease every third of the TTL, at least every second (reconcile-lease.ts). */
const RENEW_MS = Math.max(1000, (TTL_S * 1000) / 3);

/** A process whose output lines are kept with their arrival time. */
class Watched {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly lines: { at: number; text: string }[] = [];
  readonly #waiters: { re: RegExp; resolve: (at: number) => void }[] = [];
  #partial = '';

  constructor(argv: readonly string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}) {
    this.child = spawn(argv[0], argv.slice(1), { cwd: opts.cwd, env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    this.pid = this.child.pid!;
    const onData = (d: Buffer) => {
      const at = performance.now();
      const parts = (this.#partial + d.toString()).split('\n');
      this.#partial = parts.pop()!;
      for (const text of parts) {
        this.lines.push({ at, text });
        for (const w of this.#waiters.filter((x) => x.re.test(text))) {
          this.#waiters.splice(this.#waiters.indexOf(w), 1);
          w.resolve(at);
        }
      }
    };
    this.child.stdout!.on('data', onData);
    this.child.stderr!.on('data', onData);
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** The arrival time of the first line matching `re` (one already seen, or the next). */
  line(re: RegExp, what: string, timeoutMs = 60_000): Promise<number> {
    const seen = this.lines.find((l) => re.test(l.text));
    if (seen) return Promise.resolve(seen.at);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}; output:\n${this.output().slice(-3000)}`)), timeoutMs);
      this.#waiters.push({ re, resolve: (at) => (clearTimeout(timer), resolve(at)) });
      this.child.once('exit', (code, signal) => reject(new Error(`exited (${code ?? signal}) while waiting for ${what}; output:\n${this.output().slice(-3000)}`)));
    });
  }

  output(): string {
    return this.lines.map((l) => l.text).join('\n');
  }

  async kill(): Promise<void> {
    if (!this.alive) return;
    const exited = new Promise((r) => this.child.once('exit', r));
    this.child.kill('SIGKILL');
    await exited;
  }
}

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Two remote host sites (the agents of `hosts`) and one protected VM, as manifests in `dir`. */
function writeManifests(dir: string, hosts: Cluster): void {
  mkdirSync(dir, { recursive: true });
  const site = (name: string, other: string) => `apiVersion: drsite.dev/v1
kind: Site
metadata: {name: ${name}}
spec:
  type: host
  endpoint: ${hosts.host(name).url}
  hypervisor: files
  replicaServer: {enabled: true, allowedPrimaries: [{server: ${other}}]}
`;
  writeFileSync(join(dir, 'sites.yaml'), `${site('bench-a', 'bench-b')}---\n${site('bench-b', 'bench-a')}`);
  writeFileSync(join(dir, 'protection.yaml'), `apiVersion: drsite.dev/v1
kind: ReplicationPolicy
metadata: {name: every-30s}
spec: {frequency: 30s}
---
apiVersion: drsite.dev/v1
kind: ProtectedVM
metadata: {name: ${VM}}
spec: {vm: ${VM}, primary: bench-a, replica: bench-b, policy: every-30s}
`);
}

async function drsiteTakeovers(ctx: BenchContext, etcd: EtcdCluster, runs: number): Promise<Sample[]> {
  const root = join(ctx.workDir, 'drsite');
  const hosts = await Cluster.create([{ name: 'bench-a' }, { name: 'bench-b' }], [], { root: join(root, 'hosts') });
  const vault = Vault.open(etcd.url);
  const controllers: Watched[] = [];
  let n = 0;
  const start = () => {
    const dir = join(root, `controller-${++n}`);
    cpSync(hosts.certs, join(dir, 'certs'), { recursive: true });
    const c = new Watched([process.execPath, DRSITE, 'run', join(root, 'manifests'), '--state', etcd.url, '--state-dir', dir, '--no-samples', '--leader-ttl', `${TTL_S}s`]);
    controllers.push(c);
    return c;
  };
  try {
    for (const name of ['bench-a', 'bench-b']) await hosts.startProcess(name);
    const a = await hosts.client('bench-a');
    await send(a, ROUTES.createVm, {}, { name: VM, disks: [{ name: 'os', size: 16 * MiB }] });
    writeManifests(join(root, 'manifests'), hosts);

    let leader = start();
    await leader.line(/^leading etcd:\/\//, 'the first controller to lead');
    await leader.line(new RegExp(`^${VM}: bench-a -> bench-b Replicating`), `${VM} to replicate`);
    const samples: Sample[] = [];
    for (let r = 0; r < runs; r++) {
      const follower = start();
      await follower.line(/^standing by: /, 'a follower to stand by');
      if (vault.getLease(RECONCILE_LEASE)?.pid !== leader.pid) throw new CorrectnessError(`takeover run ${r + 1}: the reconcile lease is not the leader's (pid ${leader.pid})`);
      await pause(Math.random() * RENEW_MS);
      const before = await procUsage(follower.pid);
      const t0 = performance.now();
      await leader.kill();
      let leaseAt: number | undefined;
      const polling = (async () => {
        while (leaseAt === undefined && follower.alive) {
          if (vault.getLease(RECONCILE_LEASE)?.pid === follower.pid) leaseAt = performance.now();
          else await pause(10);
        }
      })();
      const leadingAt = await follower.line(/^leading etcd:\/\//, 'the follower to lead');
      await polling;
      const after = await procUsage(follower.pid);
      if (leaseAt === undefined) throw new CorrectnessError(`takeover run ${r + 1}: the follower printed that it leads but never held the reconcile lease`);
      if (!new RegExp(`took over the reconcile lease of \\S+ from pid ${leader.pid},`).test(follower.output())) {
        throw new CorrectnessError(`takeover run ${r + 1}: the follower does not say it took over from pid ${leader.pid}`);
      }
      if (follower.lines.some((l) => /^leading /.test(l.text) && l.at < t0)) throw new CorrectnessError(`takeover run ${r + 1}: the follower led before the leader died`);
      samples.push({
        wallMs: leadingAt - t0,
        cpuMs: after.cpuMs - before.cpuMs,
        peakRssBytes: after.maxRssBytes,
        extra: { leaseMs: Math.round(leaseAt - t0), afterTtlMs: Math.round(leadingAt - t0 - TTL_S * 1000) },
      });
      ctx.log(`drsite takeover ${r + 1}/${runs}: lease after ${(leaseAt - t0).toFixed(0)} ms, leading after ${(leadingAt - t0).toFixed(0)} ms`);
      leader = follower;
    }
    return samples;
  } finally {
    for (const c of controllers) await c.kill();
    vault.close();
    await hosts.destroy();
  }
}

async function lockTakeovers(ctx: BenchContext, etcd: EtcdCluster, runs: number): Promise<Sample[]> {
  const lock = () => new Watched([ETCDCTL, '--endpoints', etcd.endpoints.join(','), 'lock', LOCK, '--ttl', String(TTL_S)], { env: { ETCDCTL_API: '3' } });
  /** Keys of the lock's holder and waiters (etcd's lock recipe keeps one key per candidate). */
  const candidates = () => spawnSync(ETCDCTL, ['--endpoints', etcd.endpoints.join(','), 'get', '--prefix', '--keys-only', `${LOCK}/`], { encoding: 'utf8', env: { ...process.env, ETCDCTL_API: '3' } })
    .stdout.split('\n').filter(Boolean).length;
  const all: Watched[] = [];
  try {
    let holder = lock();
    all.push(holder);
    await holder.line(new RegExp(`^${LOCK}/`), 'etcdctl lock to acquire');
    const samples: Sample[] = [];
    for (let r = 0; r < runs; r++) {
      const waiter = lock();
      all.push(waiter);
      while (candidates() < 2) await pause(20);
      if (waiter.lines.length > 0) throw new CorrectnessError(`etcdctl lock run ${r + 1}: the waiter acquired while the holder lives`);
      await pause(Math.random() * (TTL_S * 1000) / 3);
      const before = await procUsage(waiter.pid);
      const t0 = performance.now();
      await holder.kill();
      const at = await waiter.line(new RegExp(`^${LOCK}/`), 'the waiting etcdctl lock to acquire');
      const after = await procUsage(waiter.pid);
      samples.push({ wallMs: at - t0, cpuMs: after.cpuMs - before.cpuMs, peakRssBytes: after.maxRssBytes, extra: { afterTtlMs: Math.round(at - t0 - TTL_S * 1000) } });
      ctx.log(`etcdctl lock takeover ${r + 1}/${runs}: ${(at - t0).toFixed(0)} ms`);
      holder = waiter;
    }
    return samples;
  } finally {
    for (const w of all) await w.kill();
  }
}

export const takeover: BenchCase = {
  name: 'takeover',
  title: '12. Controller takeover after the leader dies (vault in etcd)',
  goal: `a follower leads within the leader TTL + 1 s (--leader-ttl ${TTL_S}s, median)`,
  async run(ctx: BenchContext): Promise<CaseResult> {
    const runs = ctx.quick ? 2 : Math.max(10, ctx.runs);
    const etcd = await startEtcd({ members: 3 });
    const subjects: Subject[] = [];
    const notes: string[] = [];
    try {
      const ours = await drsiteTakeovers(ctx, etcd, runs);
      subjects.push({ name: `drsite run follower (--leader-ttl ${TTL_S}s)`, ours: true, samples: ours });
      if (spawnSync(ETCDCTL, ['version'], { stdio: 'ignore' }).status === 0) {
        subjects.push({ name: `etcdctl lock --ttl ${TTL_S}`, ours: false, samples: await lockTakeovers(ctx, etcd, runs) });
      } else {
        notes.push(`${ETCDCTL} is missing (Debian package etcd-client): measured without the peer.`);
      }
    } finally {
      await etcd.stop();
    }
    const leading = spread(subjects[0].samples.map((s) => s.wallMs));
    const limitMs = (TTL_S + 1) * 1000;
    const version = spawnSync(ETCD, ['--version'], { encoding: 'utf8' }).stdout?.split('\n')[0] ?? 'etcd';
    const scenario: Scenario = {
      name: `leader killed -9, ${runs} times, 3-member etcd on loopback`,
      subjects,
      goals: [{ text: `<= TTL + 1 s = ${TTL_S + 1} s (median)`, measured: `${(leading.median / 1000).toFixed(2)} s (slowest ${(leading.max / 1000).toFixed(2)} s)`, met: leading.median <= limitMs }],
      verified: `every run: the reconcile lease was the leader's before the kill and the follower's after; the follower said it took over from the killed pid and had not led before (${runs}/${runs})`,
    };
    return {
      status: 'ok',
      scenarios: [scenario],
      notes: [
        `Wall: from the kill -9 until the follower prints \`leading\` (its session is open: vault, lease, sites). leaseMs: until the bench, polling etcd every 10 ms, sees the follower hold the reconcile lease. afterTtlMs: wall minus the TTL. The leader renews every ${RENEW_MS / 1000} s, so its lease has TTL minus up to ${RENEW_MS / 1000} s left at the kill, drawn at random; a follower asks for the lease every 200 ms.`,
        `${runs} takeovers per subject (at least 10 whatever --runs says; 2 with --quick). CPU and peak RSS are the follower's own during the takeover. ${version}, election timeout 1 s, heartbeat 100 ms. The peer's holder keeps its session alive every TTL/3, as drsite does.`,
        ...notes,
      ],
    };
  },
};
