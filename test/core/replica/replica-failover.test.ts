// The replica engine's failover verbs over a recording VM port: the engine refuses an illegal verb
// before the host is asked to do anything, records each outcome through the transition table,
// and leaves the state as it was when the host's part fails.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { ReplicaReplication, type ReplicaRecord } from '../../../src/core/replication/replica.ts';
import type { RecoveryVms } from '../../../src/core/replication/replica-failover.ts';
import { systemClock } from '../../../src/model/clock.ts';
import { silentLogger } from '../../../src/model/logger.ts';

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'replica-failover-'));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

async function replica(over: Partial<ReplicaRecord>): Promise<ReplicaReplication> {
  const record: ReplicaRecord = {
    id: 'rel-1', role: 'Replica', vm: 'web', primary: 'host-a', storagePath: join(root, 'store'),
    disks: [{ id: 'os', size: 1 << 20 }], retention: { additional: 0 }, state: 'ReadyForInitialReplication', integrityErrors: 0, ...over,
  };
  return ReplicaReplication.open(root, record, { encryptionKey: randomBytes(32), macKey: randomBytes(32) }, undefined, systemClock, silentLogger);
}

/** A port that records what it was asked, and fails where told to. */
function recordingVms(fail?: keyof RecoveryVms): RecoveryVms & { calls: string[] } {
  const calls: string[] = [];
  const step = (name: keyof RecoveryVms) => async (...args: unknown[]) => {
    calls.push(`${name}(${args.filter((a) => a !== undefined).join(', ')})`);
    if (name === fail) throw new Error(`${name} failed`);
  };
  return {
    calls,
    startTest: async () => { throw new Error('not used'); },
    removeTest: step('removeTest'),
    startFailover: async () => { throw new Error('not used'); },
    stopFailover: step('stopFailover'),
    detachFromChain: step('detachFromChain'),
    committed: step('committed'),
    replicateBack: step('replicateBack'),
  };
}

const saved = async (): Promise<ReplicaRecord> => JSON.parse(await readFile(join(root, 'state.json'), 'utf8')) as ReplicaRecord;

describe('replica failover verbs', () => {
  it('refuse an illegal verb before the host is asked anything', async () => {
    const vms = recordingVms();
    const initial = await replica({});
    await expect(initial.failover(vms)).rejects.toThrow('replica of web has no complete copy yet (ReadyForInitialReplication)');
    await expect(initial.commit(vms)).rejects.toThrow('cannot commit web: no failover is waiting for completion (ReadyForInitialReplication)');
    await expect(initial.reverse(vms)).rejects.toThrow('cannot reverse web: it is not failed over (ReadyForInitialReplication)');
    await expect(initial.cleanupTestFailover(vms)).rejects.toThrow('no test failover of web is active');
    const committed = await replica({ state: 'FailedOver', failover: { vm: 'web', sequence: 3 }, committed: true });
    await expect(committed.failover(vms)).rejects.toThrow('replica of web is already failed over and committed');
    await expect(committed.cancel(vms)).rejects.toThrow('no failover is waiting for completion (FailedOver)');
    expect(vms.calls).toEqual([]);
  });

  it('cancel: the host drops the failed-over VM, then the replica is Replicating again, durably', async () => {
    const vms = recordingVms();
    const rep = await replica({ state: 'FailoverWaitingCompletion', failover: { vm: 'web', sequence: 3 } });
    await rep.cancel(vms);
    expect(vms.calls).toEqual(['stopFailover(web)']);
    expect(rep.record.state).toBe('Replicating');
    expect(rep.record.failover).toBeUndefined();
    expect((await saved()).state).toBe('Replicating');
  });

  it('commit: the VM is detached from the chain, the chain goes, the state is FailedOver, then the host finishes', async () => {
    const vms = recordingVms();
    const rep = await replica({ state: 'FailoverWaitingCompletion', failover: { vm: 'web', sequence: 3 } });
    await rep.commit(vms);
    expect(vms.calls).toEqual(['detachFromChain(web)', 'committed(web)']);
    expect(await saved()).toMatchObject({ state: 'FailedOver', committed: true });
  });

  it('a failure of the host part leaves the state where it was', async () => {
    const vms = recordingVms('detachFromChain');
    const rep = await replica({ state: 'FailoverWaitingCompletion', failover: { vm: 'web', sequence: 3 } });
    await rep.save();
    await expect(rep.commit(vms)).rejects.toThrow('detachFromChain failed');
    expect(rep.record.state).toBe('FailoverWaitingCompletion');
    expect((await saved()).state).toBe('FailoverWaitingCompletion');
  });

  it('reverse commits a waiting failover first, then hands over to the reverse relationship', async () => {
    const vms = recordingVms();
    const rep = await replica({ state: 'FailoverWaitingCompletion', failover: { vm: 'web', sequence: 3 } });
    await rep.reverse(vms);
    expect(vms.calls).toEqual(['detachFromChain(web)', 'committed(web)', 'replicateBack(web)']);
  });
});
