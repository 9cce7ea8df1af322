// Shared set-up of the controller tests: the fake API server (see fake-api-server.ts: it stands
// in for a real API server) with the generated CRDs installed, a kubeconfig file pointing
// @kubernetes/client-node at it, a temp state directory, two embedded sites on free ports and a
// small VM created on site-a (production VMs exist already; embedded sites start without any).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CustomObjectsApi, KubeConfig, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { loadDesiredStateFromSources } from '../../src/config/index.ts';
import { generateCrds } from '../../src/k8s/crds.ts';
import { openSites } from '../../src/sites/open-sites.ts';
import { freePorts, killGuestsUnder } from '../agent/cluster.ts';
import { FakeApiServer } from './fake-api-server.ts';

export const NS = 'dr';
export const CR = 'apis/drsite.dev/v1';

export interface Env {
  fake: FakeApiServer;
  root: string;
  stateDir: string;
  kubeconfigFile: string;
  kubeConfig(): KubeConfig;
  /** What a user does with kubectl: create / merge-patch / delete custom objects. */
  user: CustomObjectsApi;
  sites: Record<string, unknown>[];
  cleanup(): Promise<void>;
}

export const MERGE = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

export async function setUp(): Promise<Env> {
  const fake = new FakeApiServer();
  fake.installCrds(generateCrds());
  await fake.start();
  const root = mkdtempSync(join(tmpdir(), 'drsite-k8s-'));
  const stateDir = join(root, 'state');
  const kubeconfigFile = join(root, 'kubeconfig');
  writeFileSync(kubeconfigFile, fake.kubeconfig(NS));
  const kubeConfig = () => {
    const kc = new KubeConfig();
    kc.loadFromFile(kubeconfigFile);
    return kc;
  };
  const [pa, pb] = await freePorts(2);
  const sites = [
    { apiVersion: 'drsite.dev/v1', kind: 'Site', metadata: { name: 'site-a' }, spec: { type: 'host', hypervisor: 'files', replicaServer: { enabled: true, port: pa, allowedPrimaries: [{ server: 'site-b' }] } } },
    { apiVersion: 'drsite.dev/v1', kind: 'Site', metadata: { name: 'site-b' }, spec: { type: 'host', hypervisor: 'files', replicaServer: { enabled: true, port: pb, allowedPrimaries: [{ server: 'site-a' }] } } },
  ];
  // The VM to protect, created on the embedded site-a before the controller runs its sites.
  const loaded = loadDesiredStateFromSources(sites.map((s, i) => ({ file: `site-${i}.yaml`, text: JSON.stringify(s) })));
  if (!loaded.ok) throw new Error(`test sites do not load: ${JSON.stringify(loaded.diagnostics)}`);
  const opened = await openSites(loaded.state, { stateDir, schedule: false });
  try {
    await opened.get('site-a').createVm({ name: 'app-01', disks: [{ name: 'os', size: 1 << 20 }], adapters: [], power: 'Running' });
  } finally {
    await opened.close();
  }
  return {
    fake, root, stateDir, kubeconfigFile, kubeConfig, user: kubeConfig().makeApiClient(CustomObjectsApi), sites,
    async cleanup() {
      await fake.stop();
      killGuestsUnder(root);
      rmSync(root, { recursive: true, force: true });
    },
  };
}

export const ref = (plural: string) => ({ group: 'drsite.dev', version: 'v1', namespace: NS, plural });

export async function waitFor<T>(what: string, fn: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 30_000, logs?: () => string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${logs ? `\n--- controller log:\n${logs().slice(-4000)}` : ''}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export interface Cond {
  type: string;
  status: string;
  reason: string;
  message: string;
  observedGeneration?: number;
}

export const condition = (o: object | undefined, type: string): Cond | undefined =>
  (statusOf(o)?.conditions as Cond[] | undefined)?.find((c) => c.type === type);

/** An object's status as the test reads it. */
export const statusOf = (o: object | undefined): Record<string, unknown> | undefined => (o as { status?: Record<string, unknown> } | undefined)?.status;
