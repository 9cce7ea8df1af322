// The agent API's request schemas, read once from schemas/agent-api/requests.schema.json (the
// source the request types are generated from too). Each definition comes out self-contained, its
// `$ref`s inlined and the generator's `tsType` hints dropped, so ajv compiles it alone (strict)
// and a refusal's field path starts at the body.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { AgentApiRequests } from '../model/replication-api.ts';

const FILE = join(import.meta.dirname, '..', '..', 'schemas', 'agent-api', 'requests.schema.json');

type Json = { [k: string]: unknown };

const defs = (JSON.parse(readFileSync(FILE, 'utf8')) as { $defs: Record<string, Json> }).$defs;

/** `$ref: '#/$defs/X'` replaced by X (its own keywords beside the reference kept); the schemas have no cycles. */
function inline(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(inline);
  if (node === null || typeof node !== 'object') return node;
  const { $ref, tsType: _hint, ...rest } = node as Json;
  const own = Object.fromEntries(Object.entries(rest).map(([k, v]) => [k, inline(v)]));
  if (typeof $ref !== 'string') return own;
  const name = $ref.replace('#/$defs/', '');
  if (!defs[name]) throw new Error(`${FILE}: no definition ${name}`);
  return { ...(inline(defs[name]) as Json), ...own };
}

/** A JSON Schema that carries, as a type only, the type of the values it accepts. */
export type BodySchema<T> = object & { readonly accepts?: T };

/** The named definition's schema, self-contained, typed by the type generated from it. */
export function requestSchema<N extends keyof AgentApiRequests>(name: N): BodySchema<AgentApiRequests[N]> {
  if (!defs[name]) throw new Error(`${FILE}: no definition ${name}`);
  return inline(defs[name]) as object;
}
