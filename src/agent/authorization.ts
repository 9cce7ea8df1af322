// Who may call this agent: operators (the reconciler, the CLI) by the agent's `operators` globs,
// and primaries by the Replica server's allowedPrimaries (Hyper-V's "allow replication from the
// specified servers"). One pattern matcher for both: transport/authorization.ts's.
import { TerminalError } from '../model/errors.ts';
import { authorizePeer, matchesServerPattern } from '../transport/authorization.ts';
import type { PeerIdentity } from '../transport/peer.ts';
import type { AgentContext } from './context.ts';
import { replicaOf } from './context.ts';
import type { ReplicaReplication } from '../core/replication/replica.ts';

export function authorizeOperator(ctx: AgentContext, peer: PeerIdentity, path: string): void {
  if (ctx.config.operators.some((g) => matchesServerPattern(g, peer.commonName))) return;
  ctx.log.warn('refused: not an operator of this agent', { peer: peer.commonName, fingerprint: peer.fingerprint256, path });
  throw new TerminalError('authorization', `${peer.commonName} may not manage ${ctx.config.name}`);
}

/**
 * Checked on every request of a primary (not only when a replica is created), so removing an
 * entry takes effect at once.
 */
export function authorizePrimary(ctx: AgentContext, peer: PeerIdentity): { storagePath: string; trustGroup: string } {
  const rs = ctx.config.replicaServer;
  if (!rs.enabled) throw new TerminalError('authorization', `${ctx.config.name} is not a Replica server`);
  const decision = authorizePeer(
    rs.allowedPrimaries.map((a) => ({ server: a.server, storagePath: a.storagePath ?? rs.defaultStoragePath, trustGroup: a.trustGroup ?? 'default' })),
    peer,
  );
  if (!decision.allowed) {
    ctx.log.warn('replication refused: peer is not an allowed primary server', { peer: peer.commonName, fingerprint: peer.fingerprint256, reason: decision.reason });
    throw new TerminalError('authorization', decision.reason);
  }
  return decision;
}

/** A replica's calls must come from the primary that created it. */
export function ownReplica(ctx: AgentContext, id: string, peer: string): ReplicaReplication {
  const r = replicaOf(ctx, id);
  if (r.record.primary !== peer) throw new TerminalError('authorization', `relationship ${id} belongs to primary ${r.record.primary}, not ${peer}`);
  return r;
}
