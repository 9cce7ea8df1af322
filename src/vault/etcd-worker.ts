// The etcd side of an etcd vault, in its own thread (see blocking-worker.ts): the etcd3 client and
// the few operations the mirror needs. Keys, under the vault's prefix:
//   schema            the vault's schema version
//   rev               touched by every commit; its mod revision is the vault's version
//   rows/<table>/<pk> one row as JSON
//   leases/<name>     a lease's holder, attached to an etcd lease (gone when that lease expires)
//   leases/<name>.last the last holder, kept so a new holder can say whom it took over from
import { parentPort, workerData } from 'node:worker_threads';
import etcd3 from 'etcd3';
import type { IKeyValue, IRequestOp } from 'etcd3';
import { RetryableError } from '../model/errors.ts';
import { serveBlockingCalls, type WorkerChannel } from './blocking-worker.ts';

const { Etcd3 } = etcd3;

export interface WorkerInput {
  readonly endpoints: string[];
  readonly prefix: string;
  readonly channel: WorkerChannel;
}

export interface Synced {
  /** The vault's version after this sync. */
  readonly rev: number;
  /** Rows changed since the version asked about (all rows when it was 0). */
  readonly puts?: [string, string][];
  /** Every row key, to find deletions; absent when the version asked about was 0. */
  readonly keys?: string[];
}

export type CommitResult = { readonly ok: true; readonly rev: number } | { readonly ok: false; readonly why: 'conflict' | 'fenced' };

export interface LeaseValue {
  readonly pid: number;
  readonly host: string;
  readonly command: string;
  readonly acquiredAt: number;
}

export type LeaseTake =
  | { readonly taken: true; readonly createRev: number; readonly tookOverFrom?: LeaseValue }
  | { readonly taken: false; readonly holder: LeaseValue; readonly ttlLeftMs: number };

const input = workerData as WorkerInput;
const client = new Etcd3({
  hosts: input.endpoints,
  dialTimeout: 3000,
  grpcOptions: { 'grpc.max_receive_message_length': 256 * 1024 * 1024 },
});
const kv = client.kv;
const key = (k: string) => Buffer.from(input.prefix + k);
const REV = 'rev';
const ROWS = 'rows/';
const str = (b: Buffer) => b.toString('utf8');
const num = (s: string | undefined) => Number(s ?? 0);

/** The end of the range holding every key that starts with prefix. */
function rangeEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i] < 0xff) {
      end[i]++;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}

async function first(k: string): Promise<IKeyValue | undefined> {
  return (await kv.range({ key: key(k) })).kvs[0];
}

async function open(args: { schemaVersion: number }): Promise<{ schema: number; created: boolean }> {
  const t = await kv.txn({
    compare: [{ key: key('schema'), target: 'Create', result: 'Equal', create_revision: 0 }],
    success: [{ request_put: { key: key('schema'), value: Buffer.from(String(args.schemaVersion)) } }],
    failure: [{ request_range: { key: key('schema') } }],
  });
  if (t.succeeded) return { schema: args.schemaVersion, created: true };
  const found = t.responses[0].response_range.kvs[0];
  return { schema: Number(found ? str(found.value) : 0), created: false };
}

async function sync(args: { since: number }): Promise<Synced> {
  const head = await kv.range({ key: key(REV) });
  const rev = num(head.kvs[0]?.mod_revision);
  if (rev === args.since) return { rev };
  // Both reads at the revision the head was read at: one consistent snapshot.
  const rows = { key: key(ROWS), range_end: rangeEnd(key(ROWS)), revision: head.header.revision };
  const changed = await kv.range({ ...rows, min_mod_revision: args.since + 1 });
  const strip = input.prefix.length + ROWS.length;
  const puts = changed.kvs.map((r): [string, string] => [str(r.key).slice(strip), str(r.value)]);
  if (args.since === 0) return { rev, puts };
  const all = await kv.range({ ...rows, keys_only: true });
  return { rev, puts, keys: all.kvs.map((r) => str(r.key).slice(strip)) };
}

async function commit(args: { expect: number; puts: [string, string][]; deletes: string[]; fence?: { name: string; createRev: number } }): Promise<CommitResult> {
  const fence = args.fence && key(`leases/${args.fence.name}`);
  const t = await kv.txn({
    compare: [
      { key: key(REV), target: 'Mod', result: 'Equal', mod_revision: args.expect },
      ...(fence ? [{ key: fence, target: 'Create' as const, result: 'Equal' as const, create_revision: args.fence!.createRev }] : []),
    ],
    success: [
      ...args.puts.map(([k, v]): IRequestOp => ({ request_put: { key: key(ROWS + k), value: Buffer.from(v) } })),
      ...args.deletes.map((k): IRequestOp => ({ request_delete_range: { key: key(ROWS + k) } })),
      { request_put: { key: key(REV), value: Buffer.alloc(0) } },
    ],
    failure: [{ request_range: { key: key(REV) } }],
  });
  if (t.succeeded) return { ok: true, rev: num(t.header.revision) };
  const now = num(t.responses[0].response_range.kvs[0]?.mod_revision);
  return { ok: false, why: now === args.expect ? 'fenced' : 'conflict' };
}

// Leases: one etcd lease per name this process campaigns for or holds, renewed only when the
// vault's caller renews (a stalled process loses its lease, as with the SQLite vault).
const held = new Map<string, { lease: ReturnType<typeof client.lease>; id: string }>();

async function liveLease(name: string, ttlMs: number): Promise<string> {
  const mine = held.get(name);
  if (mine && !mine.lease.revoked()) {
    const r = await mine.lease.keepaliveOnce().catch(() => undefined);
    if (r && num(r.TTL) > 0) return mine.id;
  }
  const lease = client.lease(Math.max(1, Math.ceil(ttlMs / 1000)), { autoKeepAlive: false });
  const id = await lease.grant();
  held.set(name, { lease, id });
  return id;
}

async function ttlLeft(kvLease: string): Promise<number> {
  if (kvLease === '0') return 0;
  const r = await client.leaseClient.leaseTimeToLive({ ID: kvLease }).catch(() => undefined);
  return Math.max(0, num(r?.TTL) * 1000);
}

async function leaseTake(args: { name: string; holder: LeaseValue; ttlMs: number }): Promise<LeaseTake> {
  const k = key(`leases/${args.name}`);
  const last = key(`leases/${args.name}.last`);
  const id = await liveLease(args.name, args.ttlMs);
  const t = await kv.txn({
    compare: [{ key: k, target: 'Create', result: 'Equal', create_revision: 0 }],
    success: [{ request_range: { key: last } }, { request_put: { key: k, value: Buffer.from(JSON.stringify(args.holder)), lease: id } }, { request_put: { key: last, value: Buffer.from(JSON.stringify(args.holder)) } }],
    failure: [{ request_range: { key: k } }],
  });
  if (t.succeeded) {
    const before = t.responses[0].response_range.kvs[0];
    const prior = before && (JSON.parse(str(before.value)) as LeaseValue);
    const createRev = num(t.header.revision);
    return prior && !(prior.pid === args.holder.pid && prior.host === args.holder.host) ? { taken: true, createRev, tookOverFrom: prior } : { taken: true, createRev };
  }
  const cur = t.responses[0].response_range.kvs[0];
  if (!cur) return leaseTake(args); // it expired between the compare and the read
  const holder = JSON.parse(str(cur.value)) as LeaseValue;
  if (cur.lease === id) return { taken: true, createRev: num(cur.create_revision) }; // already ours
  return { taken: false, holder, ttlLeftMs: await ttlLeft(cur.lease) };
}

async function leaseRenew(args: { name: string }): Promise<boolean> {
  const mine = held.get(args.name);
  if (!mine) return false;
  const r = await mine.lease.keepaliveOnce().catch(() => undefined);
  if (!r || num(r.TTL) <= 0) return false;
  const cur = await first(`leases/${args.name}`);
  return cur?.lease === mine.id;
}

async function leaseRelease(args: { name: string }): Promise<boolean> {
  const mine = held.get(args.name);
  if (!mine) return false;
  held.delete(args.name);
  const cur = await first(`leases/${args.name}`);
  const ours = cur?.lease === mine.id;
  if (ours) await kv.deleteRange({ key: key(`leases/${args.name}.last`) });
  await mine.lease.revoke().catch(() => undefined);
  return ours;
}

async function leaseGet(args: { name: string }): Promise<{ holder: LeaseValue; ttlLeftMs: number } | undefined> {
  const cur = await first(`leases/${args.name}`);
  return cur && { holder: JSON.parse(str(cur.value)) as LeaseValue, ttlLeftMs: await ttlLeft(cur.lease) };
}

const ops: Record<string, (args: never) => Promise<unknown>> = {
  open,
  sync,
  commit,
  leaseTake,
  leaseRenew,
  leaseRelease,
  leaseGet,
  async close() {
    for (const name of [...held.keys()]) await leaseRelease({ name });
    client.close();
  },
};

serveBlockingCalls(parentPort!, input.channel, (op, args) => {
  const f = ops[op];
  if (!f) return Promise.reject(new Error(`unknown etcd vault operation ${op}`));
  // What etcd3 throws (unavailable, deadline, no leader) is a network fault: the caller retries.
  return f(args as never).catch((e: unknown) => {
    const grpc = typeof (e as { code?: unknown } | null)?.code === 'number'; // a gRPC status (UNAVAILABLE, DEADLINE_EXCEEDED)
    throw e instanceof etcd3.EtcdError || e instanceof etcd3.GRPCGenericError || grpc ? new RetryableError('network', `etcd: ${(e as Error).message}`, { cause: e }) : e;
  });
});
