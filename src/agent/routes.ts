// The agent API's handlers, one per route of transport/agent-api.ts's table: each reads its
// (already checked) body, typed by its table entry, and calls the verb that does the work.
import { join } from 'node:path';
import { compareRequestFromJSON, digestsToJSON } from '../core/replication/block-checksums.ts';
import { TerminalError } from '../model/errors.ts';
import { ROUTES } from '../transport/agent-api.ts';
import { discardUploads, handleUpload } from '../transport/upload-server.ts';
import type { Agent } from './agent.ts';
import { ownReplica } from './authorization.ts';
import { primaryOf, replicaOf } from './context.ts';
import * as fo from './failover.ts';
import { createRelationship, createReplica, extend, removeRelationship } from './relationships.ts';
import { Router, type RouteContext } from './router.ts';
import { cycleGroup } from './scheduler.ts';
import * as vms from './vms.ts';
import { adoptVm, adoptedView } from './adopted.ts';

const seq = (ctx: { params: { seq: string } }): number => {
  const n = Number(ctx.params.seq);
  if (!Number.isSafeInteger(n) || n < 1) throw new TerminalError('invalid-argument', `bad sequence ${ctx.params.seq}`);
  return n;
};

export function agentRoutes(a: Agent): Router {
  const upload = async (ctx: RouteContext<typeof ROUTES.uploadLog | typeof ROUTES.uploadOffset>) => {
    const rep = ownReplica(a, ctx.params.id, ctx.peer);
    rep.acceptingLogs(); // refuse before taking any data
    const n = seq(ctx);
    await handleUpload(ctx.req, ctx.res, {
      dir: join(rep.dir, 'uploads'),
      name: `${n}.${ctx.params.disk}`,
      onComplete: (path) => rep.receive(ctx.params.disk, n, path),
    });
    return undefined;
  };
  const view = (id: string) => {
    const views = a.relationships().filter((v) => v.id === id);
    if (!views.length) throw new TerminalError('not-found', `no relationship ${id} on ${a.config.name}`);
    return views;
  };
  return new Router({
    health: async () => ({
      name: a.config.name,
      replicaServer: a.config.replicaServer.enabled,
      vms: a.runtimes.size,
      relationships: a.primaries.size + a.replicas.size,
    }),
    listVms: async () => vms.listVms(a),
    createVm: async (ctx) => vms.createVm(a, ctx.body),
    adoptVm: async (ctx) => adoptVm(a, ctx.body),
    getVm: async (ctx) => {
      const adopted = a.adopted.get(ctx.params.name);
      if (adopted) return adoptedView(adopted);
      const rt = a.runtimes.get(ctx.params.name);
      if (!rt) throw new TerminalError('not-found', `VM ${ctx.params.name} not found on ${a.config.name}`);
      return { ...(await a.hv.get(ctx.params.name)), ...(await vms.vmView(a, rt)) };
    },
    setVmPower: async (ctx) => vms.setPower(a, ctx.params.name, ctx.body),
    // The replication service (primary side, and views of both sides)
    listRelationships: async () => a.relationships(),
    createRelationship: async (ctx) => createRelationship(a, ctx.body),
    getRelationship: async (ctx) => {
      const views = view(ctx.params.id);
      return views.length === 1 ? views[0] : views.find((v) => v.role === 'Primary');
    },
    removeRelationship: async (ctx) => {
      await removeRelationship(a, ctx.params.id);
      return { removed: ctx.params.id };
    },
    startReplication: async (ctx) => {
      const p = primaryOf(a, ctx.params.id);
      const run = p.startInitial();
      if (ctx.query.get('wait') === 'true') await run;
      else run.catch(() => {}); // recorded by the relationship; status shows progress
      return p.view();
    },
    replicateNow: async (ctx) => {
      const p = primaryOf(a, ctx.params.id);
      const group = p.record.replicationGroup;
      if (!group) return p.cycle({ force: true });
      const mine = (await cycleGroup(a, group))[p.id];
      if (mine && 'error' in mine) throw mine.error;
      return mine;
    },
    replicateGroupNow: async (ctx) => {
      if (![...a.primaries.values()].some((p) => p.record.replicationGroup === ctx.params.group)) {
        throw new TerminalError('not-found', `no relationship of replication group ${ctx.params.group} has ${a.config.name} as primary`);
      }
      return Object.fromEntries(Object.entries(await cycleGroup(a, ctx.params.group)).map(([id, r]) => [id, 'error' in r ? { error: (r.error as Error).message } : r]));
    },
    resync: async (ctx) => primaryOf(a, ctx.params.id).requestResync(),
    modifySettings: async (ctx) => {
      const p = primaryOf(a, ctx.params.id);
      await p.modify(ctx.body.policy);
      return p.view();
    },
    suspend: async (ctx) => {
      const p = primaryOf(a, ctx.params.id);
      await p.suspend('operator');
      return p.view();
    },
    resume: async (ctx) => {
      const p = primaryOf(a, ctx.params.id);
      await p.resume();
      return p.view();
    },
    statistics: async (ctx) => view(ctx.params.id)[0].statistics,
    resetStatistics: async (ctx) => {
      const p = primaryOf(a, ctx.params.id);
      p.resetStatistics();
      await p.save();
      return p.view().statistics;
    },
    recoveryPoints: async (ctx) => replicaOf(a, ctx.params.id).points(),
    pointDigest: async (ctx) => ({ sha256: await replicaOf(a, ctx.params.id).pointDigest(seq(ctx), ctx.params.disk) }),
    importMedia: async (ctx) => replicaOf(a, ctx.params.id).importMedia(join(ctx.body.folder, ctx.params.id)),
    // Failover family
    testFailover: async (ctx) => fo.testFailover(a, ctx.params.id, ctx.body),
    cleanupTestFailover: async (ctx) => fo.cleanupTestFailover(a, ctx.params.id),
    preparePlannedFailover: async (ctx) => fo.preparePlannedFailover(a, ctx.params.id),
    failover: async (ctx) => fo.failover(a, ctx.params.id, ctx.body),
    commit: async (ctx) => fo.commit(a, ctx.params.id),
    cancel: async (ctx) => fo.cancel(a, ctx.params.id),
    failbackFromAzure: async (ctx) => fo.failbackFromAzure(a, ctx.params.id, ctx.body),
    replicateToAzure: async (ctx) => fo.replicateToAzure(a, ctx.params.id),
    moveStorage: async (ctx) => {
      const rep = replicaOf(a, ctx.params.id);
      await rep.moveStorage(ctx.body.path);
      return rep.view(a.clock.now());
    },
    extend: async (ctx) => extend(a, ctx.params.id, ctx.body),
    reverse: async (ctx) => fo.reverse(a, ctx.params.id, ctx.body),
    // Replica server: called by primaries
    createReplica: async (ctx) => (await createReplica(a, ctx.body, ctx.identity)).status(),
    replicaStatus: async (ctx) => ownReplica(a, ctx.params.id, ctx.peer).status(),
    removeReplica: async (ctx) => {
      const rep = ownReplica(a, ctx.params.id, ctx.peer);
      a.replicas.delete(rep.id);
      await rep.remove();
      return { removed: rep.id };
    },
    uploadLog: upload,
    uploadOffset: upload,
    replicaApply: async (ctx) => ownReplica(a, ctx.params.id, ctx.peer).apply(),
    uploadInitialSegment: async (ctx) => {
      const rep = ownReplica(a, ctx.params.id, ctx.peer);
      rep.acceptingLogs(); // refuse before taking any data
      const n = Number(ctx.params.segment);
      if (!/^(0|[1-9][0-9]{0,8})$/.test(ctx.params.segment)) throw new TerminalError('invalid-argument', `bad segment ${JSON.stringify(ctx.params.segment.slice(0, 32))}`);
      return rep.receiveInitialSegment(ctx.params.disk, n, ctx.req);
    },
    replicaDiscardPending: async (ctx) => {
      const rep = ownReplica(a, ctx.params.id, ctx.peer);
      const status = await rep.discardPending();
      // The discarded logs' uploads go too: a resync's log of the same sequence carries other bytes,
      // and an upload remembered as complete would refuse it as "a different complete upload".
      await discardUploads(join(rep.dir, 'uploads'), (name) => Number.parseInt(name, 10) <= status.applied);
      return status;
    },
    replicaChecksums: async (ctx) => digestsToJSON(await ownReplica(a, ctx.params.id, ctx.peer).checksums(ctx.params.disk)),
    // The multi-level compare (64 KiB, then 4 KiB inside differing blocks) with short keyed digests.
    replicaCompare: async (ctx) => digestsToJSON(await ownReplica(a, ctx.params.id, ctx.peer).checksums(ctx.params.disk, compareRequestFromJSON(ctx.body))),
    replicaSettings: async (ctx) => {
      await ownReplica(a, ctx.params.id, ctx.peer).setRetention(ctx.body.retention);
      return { ok: true };
    },
  });
}
