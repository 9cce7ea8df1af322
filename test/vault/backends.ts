// One suite, two backends: the vault and reconciler tests run once on SQLite and once on etcd (a
// real one-member etcd started for the file; each vault gets its own key prefix, so every test
// starts from an empty vault as with a new SQLite file).
import { join } from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import { startEtcd, type EtcdCluster } from '../support/etcd-cluster.ts';
import { useTempDir } from './temp-dir.ts';

export type Backend = 'sqlite' | 'etcd';
export const BACKENDS: readonly Backend[] = ['sqlite', 'etcd'];

/** Call at the top of a file: a one-member etcd for the file's tests; the URL of a new, empty vault in it. */
export function useEtcdVaults(): () => string {
  let etcd: EtcdCluster | undefined;
  let n = 0;
  beforeAll(async () => {
    etcd = await startEtcd({ members: 1 });
  }, 60_000);
  afterAll(async () => {
    await etcd?.stop();
  });
  return () => {
    if (!etcd) throw new Error('etcd is not running (call useEtcdVaults at the top of the file)');
    return `${etcd.url}/vault-${process.pid}-${++n}`;
  };
}

/** Call at the top of a file: returns where to open a new, empty vault on each backend. */
export function useVaultPlaces(): (backend: Backend) => string {
  const tempDir = useTempDir();
  const etcdVault = useEtcdVaults();
  return (backend) => (backend === 'sqlite' ? join(tempDir(), 'vault.db') : etcdVault());
}
