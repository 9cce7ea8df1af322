// The kubeconfig the controller uses, found the way kubectl finds it: KUBECONFIG, then
// ~/.kube/config, then the pod's service account. The client library's last resort
// (http://localhost:8080) is refused with a clear message instead.
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { TerminalError } from '../model/errors.ts';

const SERVICE_ACCOUNT_TOKEN = '/var/run/secrets/kubernetes.io/serviceaccount/token';

export interface LoadedKubeConfig {
  kubeConfig: KubeConfig;
  /** The current context's namespace, if it names one (in a pod: the service account's). */
  namespace?: string;
  server: string;
}

export function loadDefaultKubeConfig(): LoadedKubeConfig {
  const home = process.env.HOME ?? homedir();
  if (!process.env.KUBECONFIG && !existsSync(join(home, '.kube', 'config')) && !existsSync(SERVICE_ACCOUNT_TOKEN)) {
    throw new TerminalError('not-found', 'no kubeconfig found: set KUBECONFIG, create ~/.kube/config, or run the controller in a pod with a service account');
  }
  const kc = new KubeConfig();
  try {
    kc.loadFromDefault();
  } catch (e) {
    throw new TerminalError('invalid-argument', `cannot load the kubeconfig: ${(e as Error).message}`);
  }
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new TerminalError('invalid-argument', `the kubeconfig has no cluster for its current context ${JSON.stringify(kc.getCurrentContext())}`);
  const namespace = kc.getContextObject(kc.getCurrentContext())?.namespace;
  return { kubeConfig: kc, server: cluster.server, ...(namespace && { namespace }) };
}
