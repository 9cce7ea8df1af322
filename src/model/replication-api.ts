// The data the replication service exchanges: the agent API's request bodies and its answers
// (relationship views, replica status, recovery points, the results of the failover family),
// generated from schemas/agent-api/. Plain types, shared by the engine (core), the agent API
// (transport), the agents and the site drivers; the paths and routes are transport's.
export type * from './generated/agent-api.ts';
export type * from './generated/agent-api-responses.ts';
