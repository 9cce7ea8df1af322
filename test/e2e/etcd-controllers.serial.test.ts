// Controllers at several sites sharing one vault in etcd, through the real `drsite` CLI: a
// 3-member etcd cluster on loopback, two host sites whose agents are separate `drsite agent`
// processes, and three `drsite run --state etcd://...` controllers (one at each site, paired with
// that site's agent and etcd member, and a witness). Exactly one controller leads at a time and only
// it applies. A test failover and a planned failover (commit, reverse replication) declared in the
// manifests complete. Then, while a test failover at the replica site has a call in flight (its
// pending mark written), the leading controller, its site's agent and its etcd member are killed
// -9: a follower takes over once the leader's lease lapses, finishes that plan with every step done
// once (the interrupted call resolved against the site, not repeated), and an unplanned failover to
// the surviving site, declared after, completes with the data of the last acknowledged recovery
// point while the dead site stays down.
import type { ChildProcess } from 'node:child_process';
import { chmodSync, cpSync, existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { randomWrites } from '../../src/demo/workload.ts';
import { NbdClient } from '../../src/nbd/client.ts';
import { RECONCILE_LEASE } from '../../src/reconciler/reconcile-lease.ts';
import type { RelationshipView } from '../../src/transport/agent-api.ts';
import type { MtlsClient } from '../../src/transport/mtls.ts';
import { Vault, type Job } from '../../src/vault/vault.ts';
import { Cluster, sha256File } from '../agent/cluster.ts';
import { planJob, quickstart, startRun, vmStatus, waitFor, type Quickstart, type Running } from './helpers.ts';
import { startEtcd, type EtcdCluster } from '../support/etcd-cluster.ts';
import { ROUTES, send } from '../support/agent-client.ts';

const MiB = 1 << 20;
const VMS = ['db-01', 'web-01'] as const;
const DISKS = [{ name: 'os', size: 8 * MiB }, { name: 'data', size: 4 * MiB }] as const;
const LEADER_TTL = '3s';
/** Where each controller runs: beside a site's agent and an etcd member, or as the witness with the third member. */
const PLACES = { a: { site: 'site-a', member: 0 }, b: { site: 'site-b', member: 1 }, witness: { member: 2 } } as const;

type Place = keyof typeof PLACES;

/** A `drsite run` controller, with its own state directory as on its own host. */
interface Controller {
  name: Place;
  run: Running;
  pid: number;
}

// Holds the plan in group 2's before-action until the test opens the gate, so the test can freeze
// site-a's agent right before the next call to it.
const GATE_SCRIPT = `#!/bin/sh
set -eu
touch "$GATE.waiting"
while [ ! -e "$GATE.open" ]; do sleep 0.1; done
exec "$(dirname "$0")/notify.sh" "$@"
`;
const gate = () => join(q.root, 'gate');

/** The quickstart plan with group 2's before-action behind the gate. */
const gatedPlan = () => `apiVersion: drsite.dev/v1
kind: RecoveryPlan
metadata:
  name: quickstart
spec:
  groups:
    - name: database
      vms: [db-01]
      after:
        - name: record-database-up
          script: {path: scripts/notify.sh, args: [database-up]}
    - name: web
      vms: [web-01]
      before:
        - name: record-web-starting
          script: {path: scripts/gate.sh, args: [web-starting], env: {GATE: ${gate()}}}
      after:
        - name: record-web-up
          script: {path: scripts/notify.sh, args: [web-up]}
`;

let etcd: EtcdCluster;
let hosts: Cluster;
let q: Quickstart;
let vault: Vault;
const agents = new Map<string, ChildProcess>();
const controllers = new Map<Place, Controller>();
const clients = new Map<string, MtlsClient>();

beforeAll(async () => {
  q = await quickstart();
  etcd = await startEtcd({ members: 3 });
  hosts = await Cluster.create([{ name: 'site-a' }, { name: 'site-b' }], [], { root: join(q.root, 'hosts') });
  for (const site of ['site-a', 'site-b']) {
    agents.set(site, await hosts.startProcess(site));
    clients.set(site, await hosts.client(site));
  }
  // The quickstart's declarations, with its two sites as remote agents instead of embedded ones.
  writeFileSync(join(q.qs, 'sites.yaml'), ['site-a', 'site-b'].map((s) => [
    'apiVersion: drsite.dev/v1',
    'kind: Site',
    `metadata: {name: ${s}}`,
    'spec:',
    '  type: host',
    `  endpoint: ${hosts.host(s).url}`,
    '  hypervisor: files',
    `  replicaServer: {enabled: true, allowedPrimaries: [{server: ${s === 'site-a' ? 'site-b' : 'site-a'}}]}`,
  ].join('\n')).join('\n---\n'));
  writeFileSync(join(q.qs, 'scripts', 'gate.sh'), GATE_SCRIPT);
  chmodSync(join(q.qs, 'scripts', 'gate.sh'), 0o755);
  for (const [i, vm] of VMS.entries()) {
    await send(clients.get('site-a')!, ROUTES.createVm, {}, { name: vm, disks: [...DISKS], adapters: [{ name: 'eth0', network: 'lan' }] });
    await write('site-a', vm, 1 + i);
  }
  vault = Vault.open(etcd.url);
}, 90_000);

afterAll(async () => {
  for (const c of controllers.values()) await c.run.stop('SIGKILL');
  vault?.close();
  await hosts?.destroy();
  await etcd?.stop();
  q?.cleanup();
});

function startController(name: Place): Controller {
  // startRun passes the quickstart's --state-dir first; the later one wins, so each controller
  // keeps its own state directory (certificates, script journals) as it would on its own host.
  const dir = join(q.root, `controller-${name}`);
  cpSync(hosts.certs, join(dir, 'certs'), { recursive: true });
  const run = startRun(q, ['--state', etcd.url, '--state-dir', dir, '--no-samples', '--leader-ttl', LEADER_TTL]);
  const c: Controller = { name, run, pid: run.child.pid! };
  controllers.set(name, c);
  return c;
}

const controller = (name: Place) => controllers.get(name)!;
const allOutput = () => [...controllers.values()].map((c) => `--- ${c.name} (pid ${c.pid}):\n${c.run.output().slice(-2500)}`).join('\n');
const leads = (c: Controller) => /^leading etcd:\/\//m.test(c.run.output());
const leaders = () => [...controllers.values()].filter((c) => c.run.child.exitCode === null && c.run.child.signalCode === null && leads(c)).map((c) => c.name);
const leaseHolder = () => vault.getLease(RECONCILE_LEASE)?.pid;

async function write(site: string, vm: string, seed: number): Promise<void> {
  for (const d of DISKS) {
    const c = await NbdClient.connect(join(hosts.host(site).dataDir, 'nbd', `${vm}.sock`), d.name);
    for (const w of randomWrites(64, c.size, seed)) await c.write(w.offset, w.data);
    await c.flush();
    await c.close();
  }
}

/** sha256 of each disk image of a VM that runs on `site` on its own (not failed over uncommitted). */
async function diskShas(site: string, vm: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const d of DISKS) out[d.name] = await sha256File(join(hosts.host(site).dataDir, 'vms', vm, `${d.name}.img`));
  return out;
}

const ended = (id: string, timeoutMs = 60_000) =>
  waitFor(`failover ${id} to end`, () => {
    const j = planJob(vault, id);
    return j && j.state !== 'Running' && j.state !== 'Waiting' ? j : undefined;
  }, timeoutMs, allOutput);

const direction = (primary: string, replica: string) => () => {
  const st = vmStatus(vault);
  return st.length === VMS.length && st.every((s) => s.state === 'Replicating' && s.direction?.primary === primary && s.direction.replica === replica);
};

/** Each declared failover id ran as exactly one RecoveryPlan job. */
function expectOnePlanJobEach(ids: string[]): void {
  const plans = vault.listJobs({ type: 'RecoveryPlan', limit: 500 });
  for (const id of ids) expect(plans.filter((j) => (j.input as { failoverId?: string }).failoverId === id), id).toHaveLength(1);
}

const childSummary = (j: Job) => j.children.map((c) => [c.type, c.target, c.state]);
/** The scripts a failover id ran, in order (notify.sh logs one line each). */
const scriptsOf = (id: string) => q.actions().filter((l) => l.split(' ').includes(`DRSITE_FAILOVER_ID=${id}`)).map((l) => /args=\[([^\]]*)\]/.exec(l)?.[1]);

test('one leader at a time; a test and a planned failover declared in the manifests complete', async () => {
  // The controller at site-b leads: it is the one killed later, while the VMs run on site-b.
  const b = startController('b');
  await waitFor('controller b to lead', () => leads(b), 30_000, allOutput);
  const a = startController('a');
  const w = startController('witness');
  for (const c of [a, w]) await waitFor(`controller ${c.name} to stand by`, () => /standing by: pid \d+.* leads etcd:\/\//.test(c.run.output()), 30_000, allOutput);
  expect(leaseHolder()).toBe(b.pid);
  expect(leaders()).toEqual(['b']);

  await waitFor('both VMs Replicating site-a -> site-b', direction('site-a', 'site-b'), 60_000, allOutput);
  q.setFailover(['id: drill-1', 'type: test']);
  const drill = await ended('drill-1');
  expect(drill.state, JSON.stringify(drill.error)).toBe('Succeeded');
  expect(childSummary(drill)).toEqual([
    ['TestFailover', 'ProtectedVM/db-01', 'Succeeded'],
    ['TestFailover', 'ProtectedVM/web-01', 'Succeeded'],
  ]);
  const onB = (await send(clients.get('site-b')!, ROUTES.listVms, {})).json<{ name: string }[]>().map((v) => v.name);
  expect(onB.filter((n) => n.endsWith('-Test')).sort()).toEqual(['db-01-Test', 'web-01-Test']);
  q.setFailover(['id: drill-1-cleanup', 'type: test', 'cleanupTest: true']);
  expect((await ended('drill-1-cleanup')).state).toBe('Succeeded');

  // Planned failover: nothing writes now, so site-b must start the VMs with these exact disks.
  const before = Object.fromEntries(await Promise.all(VMS.map(async (vm) => [vm, await diskShas('site-a', vm)] as const)));
  q.setFailover(['id: move-1', 'type: planned', 'commit: true']);
  const move = await ended('move-1');
  expect(move.state, JSON.stringify(move.error)).toBe('Succeeded');
  expect(childSummary(move)).toEqual(VMS.flatMap((vm) => ['PlannedFailover', 'CommitFailover', 'ReverseReplication'].map((t) => [t, `ProtectedVM/${vm}`, 'Succeeded'])));
  for (const vm of VMS) expect(await diskShas('site-b', vm), vm).toEqual(before[vm]);
  await waitFor('both VMs Replicating site-b -> site-a', direction('site-b', 'site-a'), 60_000, allOutput);

  // Only the leader applied: the followers never started or resumed a job.
  for (const c of [a, w]) expect(c.run.output(), c.name).not.toMatch(/started as job|resuming job|: started \(/);
  expect(b.run.output()).toMatch(/failover move-1 \(planned\) started as job/);
  expect(leaseHolder()).toBe(b.pid);
  expect(leaders()).toEqual(['b']);
  expectOnePlanJobEach(['drill-1', 'drill-1-cleanup', 'move-1']);
}, 120_000);

test('leader, its agent and its etcd member killed -9 mid-plan: a follower takes over, the plan finishes once, an unplanned failover to the surviving site completes', async () => {
  const b = controller('b');
  // New writes on site-b (the VMs' primary now), acknowledged by site-a: the unplanned failover
  // must bring up exactly these disks.
  const acknowledged: Record<string, Record<string, string>> = {};
  for (const [i, vm] of VMS.entries()) {
    await write('site-b', vm, 100 + i);
    const id = `rel-${vm}.r1`;
    const r = (await send(clients.get('site-b')!, ROUTES.replicateNow, { id })).json<{ sequence: number; applied: number }>();
    expect(r.applied).toBe(r.sequence);
    acknowledged[vm] = await diskShas('site-b', vm);
    for (const d of DISKS) {
      const onA = (await send(clients.get('site-a')!, ROUTES.pointDigest, { id, seq: r.sequence, disk: d.name })).json<{ sha256: string }>();
      expect(onA.sha256, `${vm}/${d.name}`).toBe(acknowledged[vm][d.name]);
    }
  }

  // A test failover at site-a (the replica site). Group 1 (db-01) completes; group 2's gate holds
  // the plan; site-a's agent is frozen; the gate opens, and the leader's call for web-01's test VM
  // hangs with its pending mark written.
  q.setFailover(['id: drill-2', 'type: test'], gatedPlan());
  await waitFor('the plan to reach the gate', () => existsSync(`${gate()}.waiting`), 60_000, allOutput);
  const job = planJob(vault, 'drill-2')!;
  expect(job.steps.map((s) => [s.name, s.state])).toEqual([
    ['group-1/db-01/1-test-failover', 'Succeeded'],
    ['group-1/after/record-database-up', 'Succeeded'],
    ['group-2/before/record-web-starting', 'Running'],
  ]);
  agents.get('site-a')!.kill('SIGSTOP');
  writeFileSync(`${gate()}.open`, '');
  const mark = await waitFor('the pending mark of web-01\'s test failover', () => vault.listPending().find((m) => m.key.endsWith(':test-failover')), 30_000, allOutput);
  expect(mark.payload).toMatchObject({ step: 'test-failover', site: 'site-a' });

  await b.run.stop('SIGKILL');
  await hosts.kill(PLACES.b.site);
  await etcd.kill(PLACES.b.member);
  agents.get('site-a')!.kill('SIGCONT');

  const next = await waitFor('a follower to take over', () => [controller('a'), controller('witness')].find((c) => /took over the reconcile lease/.test(c.run.output())), 60_000, allOutput);
  const other = next.name === 'a' ? controller('witness') : controller('a');
  expect(next.run.output()).toMatch(new RegExp(`took over the reconcile lease of etcd://\\S+ from pid ${b.pid}, \`drsite run --poll \\S+\`, since \\S+: its lease expired`));
  await waitFor(`controller ${next.name} to lead`, () => leads(next), 30_000, allOutput);
  expect(leaseHolder()).toBe(next.pid);
  expect(leaders()).toEqual([next.name]);
  expect(other.run.output()).not.toMatch(/took over|^leading|resuming job|started as job/m);

  const drill = await ended('drill-2');
  expect(drill.state, `${JSON.stringify(drill.error)}\n${allOutput()}`).toBe('Succeeded');
  expect(drill.id).toBe(job.id);
  expect(next.run.output()).toContain(`resuming job ${job.id}`);
  // Every step of the plan once, each VM's test failover in one job, each script once.
  expect(drill.steps.map((s) => [s.name, s.state])).toEqual([
    ['group-1/db-01/1-test-failover', 'Succeeded'],
    ['group-1/after/record-database-up', 'Succeeded'],
    ['group-2/before/record-web-starting', 'Succeeded'],
    ['group-2/web-01/1-test-failover', 'Succeeded'],
    ['group-2/after/record-web-up', 'Succeeded'],
  ]);
  expect(childSummary(drill)).toEqual([
    ['TestFailover', 'ProtectedVM/db-01', 'Succeeded'],
    ['TestFailover', 'ProtectedVM/web-01', 'Succeeded'],
  ]);
  // web-01's call: one step, started by the dead leader and resumed (attempt 2) by the new one,
  // which looked at site-a before acting. The request usually reached site-a on a kept-alive
  // connection before it froze, so the test VM is found made and the call is not repeated; had
  // it not arrived, the call is made once. Either way site-a holds one web-01-Test (below).
  const web = drill.children[1];
  expect(web.steps.map((s) => [s.name, s.state, s.attempt])).toEqual([['test-failover', 'Succeeded', 2]]);
  const resolved = (web.steps[0].output as { resolved?: string } | null)?.resolved;
  expect([undefined, 'found already done after a restart']).toContain(resolved);
  expect(scriptsOf('drill-2')).toEqual(['database-up', 'web-starting', 'web-up']);
  const onA = (await send(clients.get('site-a')!, ROUTES.listVms, {})).json<{ name: string }[]>().map((v) => v.name);
  expect(onA.filter((n) => n.endsWith('-Test')).sort()).toEqual(['db-01-Test', 'web-01-Test']);
  expect(vault.listPending()).toEqual([]);
  // The CLI reads the same job from etcd.
  const cli = await q.cli(['jobs', job.id, '--output', 'json', '--state', etcd.url]);
  expect(cli.code, cli.stderr).toBe(0);
  expect(JSON.parse(cli.stdout)).toMatchObject({ id: job.id, state: 'Succeeded', steps: drill.steps.map((s) => ({ name: s.name, state: s.state })) });

  // site-b stays down. Clean up the test VMs, then fail over to site-a from the last point.
  q.setFailover(['id: drill-2-cleanup', 'type: test', 'cleanupTest: true'], gatedPlan());
  expect((await ended('drill-2-cleanup')).state).toBe('Succeeded');
  q.setFailover(['id: dr-1', 'type: unplanned', 'commit: true'], gatedPlan());
  const dr = await ended('dr-1');
  expect(dr.state, `${JSON.stringify(dr.error)}\n${allOutput()}`).toBe('Succeeded');
  expect(childSummary(dr)).toEqual(VMS.flatMap((vm) => ['UnplannedFailover', 'CommitFailover'].map((t) => [t, `ProtectedVM/${vm}`, 'Succeeded'])));
  for (const vm of VMS) expect(await diskShas('site-a', vm), vm).toEqual(acknowledged[vm]);
  const views = (await send(clients.get('site-a')!, ROUTES.listRelationships, {})).json<RelationshipView[]>();
  for (const vm of VMS) expect(views.find((v) => v.id === `rel-${vm}.r1`), vm).toMatchObject({ role: 'Replica', state: 'FailedOver' });
  expect(scriptsOf('dr-1')).toEqual(['database-up', 'web-starting', 'web-up']);

  expect(agents.get('site-b')!.exitCode !== null || agents.get('site-b')!.signalCode !== null).toBe(true);
  expect(leaseHolder()).toBe(next.pid);
  expect(leaders()).toEqual([next.name]);
  expect(other.run.output()).not.toMatch(/took over|^leading|resuming job|started as job/m);
  expectOnePlanJobEach(['drill-1', 'drill-1-cleanup', 'move-1', 'drill-2', 'drill-2-cleanup', 'dr-1']);
  const failovers = vault.listJobs({ limit: 500 }).filter((j) => j.type === 'UnplannedFailover' || j.type === 'PlannedFailover').map((j) => `${j.type} ${j.target}`).sort();
  expect(failovers).toEqual(VMS.flatMap((vm) => [`PlannedFailover ProtectedVM/${vm}`, `UnplannedFailover ProtectedVM/${vm}`]).sort());
}, 120_000);
