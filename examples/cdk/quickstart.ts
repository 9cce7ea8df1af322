// The quickstart of examples/quickstart, written with the drsite constructs instead of YAML: the
// two front ends produce the same documents (test/constructs/manifests.test.ts proves it).
import type { Construct } from 'constructs';
import { NetworkMapping, ProtectedVm, RecoveryPlan, ReplicationPolicy, Site } from '../../constructs/index.ts';

/** Declares the quickstart's sites, policy, network mappings, VMs and recovery plan under `scope`. */
export function quickstart(scope: Construct): void {
  // Both sites are embedded; site-a is a Replica server too so that VMs can replicate back.
  const siteA = new Site(scope, 'site-a', {
    type: 'host',
    labels: { role: 'primary' },
    hypervisor: 'files',
    replicaServer: { enabled: true, port: 8444, allowedPrimaries: [{ server: 'site-b', trustGroup: 'quickstart' }] },
  });
  const siteB = new Site(scope, 'site-b', {
    type: 'host',
    labels: { role: 'recovery' },
    hypervisor: 'files',
    replicaServer: {
      enabled: true,
      authentication: 'certificate',
      port: 8443,
      allowedPrimaries: [{ server: 'site-a', storagePath: 'replicas/site-a', trustGroup: 'quickstart' }],
    },
  });

  const policy = new ReplicationPolicy(scope, 'every-30s', {
    frequency: '30s',
    recoveryPoints: { additional: 4 },
    compression: true,
    initialReplication: { method: 'network', startAt: 'immediately' },
  });

  new NetworkMapping(scope, 'lan-a-to-b', {
    source: { site: siteA, network: 'lan' },
    target: { site: siteB, network: 'lan-dr' },
    testNetwork: 'lan-test',
  });
  new NetworkMapping(scope, 'lan-b-to-a', {
    source: { site: siteB, network: 'lan-dr' },
    target: { site: siteA, network: 'lan' },
  });

  const vm = (name: string, address: string) => new ProtectedVm(scope, name, {
    primary: siteA,
    replica: siteB,
    policy,
    failoverNetwork: { adapters: [{ name: 'eth0', ipv4: { address, gateway: '10.20.0.1', dns: ['10.20.0.2'] } }] },
  });
  const web = vm('web-01', '10.20.0.11/24');
  const db = vm('db-01', '10.20.0.12/24');

  new RecoveryPlan(scope, 'quickstart', {
    groups: [
      {
        name: 'database',
        vms: [db],
        after: [{ name: 'record-database-up', script: { path: 'scripts/notify.sh', args: ['database-up'], timeout: '30s' } }],
      },
      {
        name: 'web',
        vms: [web],
        before: [{ name: 'record-web-starting', script: { path: 'scripts/notify.sh', args: ['web-starting'] } }],
        after: [{ name: 'record-web-up', script: { path: 'scripts/notify.sh', args: ['web-up'] } }],
      },
    ],
  });
}
