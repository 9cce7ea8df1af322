// CustomResourceDefinitions generated from schemas/ (the single source of truth), so the API
// server checks a ProtectedVM applied with kubectl the way `drsite validate` checks a file.
// JSON Schema 2020-12 is turned into a Kubernetes structural schema: every $ref resolved inline,
// a type on every node, `const` as a one-value enum, `if/then/else` rewritten as the equivalent
// `anyOf`, logical junctors stripped of what they may not carry, `additionalProperties: false`
// dropped (structural pruning plus kubectl's strict field validation reject unknown fields), and
// `uniqueItems` expressed as `x-kubernetes-list-type: set`.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPLICATION_STATES, HEALTHS } from '../model/observed.ts';
import { GROUP, KIND_NAMES, VERSION, type KindNames } from './api-group.ts';

const SCHEMA_DIR = join(import.meta.dirname, '..', '..', 'schemas');

/** A node of a Kubernetes structural schema (apiextensions.k8s.io/v1 JSONSchemaProps). */
export interface StructuralSchema {
  type?: 'object' | 'array' | 'string' | 'integer' | 'number' | 'boolean';
  description?: string;
  format?: string;
  pattern?: string;
  enum?: unknown[];
  minLength?: number;
  maxLength?: number;
  minimum?: number;
  maximum?: number;
  minItems?: number;
  maxItems?: number;
  minProperties?: number;
  maxProperties?: number;
  required?: string[];
  properties?: Record<string, StructuralSchema>;
  additionalProperties?: StructuralSchema;
  items?: StructuralSchema;
  allOf?: StructuralSchema[];
  anyOf?: StructuralSchema[];
  oneOf?: StructuralSchema[];
  not?: StructuralSchema;
  'x-kubernetes-preserve-unknown-fields'?: true;
  'x-kubernetes-list-type'?: 'atomic' | 'set' | 'map';
  'x-kubernetes-list-map-keys'?: string[];
}

export interface PrinterColumn {
  name: string;
  type: 'string' | 'integer' | 'number' | 'boolean' | 'date';
  jsonPath: string;
  description?: string;
  priority?: number;
}

export interface CustomResourceDefinition {
  apiVersion: 'apiextensions.k8s.io/v1';
  kind: 'CustomResourceDefinition';
  metadata: { name: string; labels: Record<string, string> };
  spec: {
    group: string;
    scope: 'Namespaced';
    names: { kind: string; listKind: string; plural: string; singular: string; shortNames: string[]; categories: string[] };
    versions: {
      name: string;
      served: true;
      storage: true;
      subresources: { status: Record<string, never> };
      additionalPrinterColumns: PrinterColumn[];
      schema: { openAPIV3Schema: StructuralSchema };
    }[];
  };
}

type Json = Record<string, unknown>;

interface Ctx {
  /** The schema document a `#/...` reference points into. */
  doc: Json;
  load: (file: string) => Json;
  where: string;
}

function resolveRef(ref: string, ctx: Ctx): { node: Json; ctx: Ctx } {
  const [file, pointer = ''] = ref.split('#');
  const doc = file ? ctx.load(file) : ctx.doc;
  let node: unknown = doc;
  for (const part of pointer.split('/').filter(Boolean)) node = (node as Json)[part.replace(/~1/g, '/').replace(/~0/g, '~')];
  if (!node || typeof node !== 'object') throw new Error(`${ctx.where}: cannot resolve $ref ${ref}`);
  return { node: node as Json, ctx: { ...ctx, doc } };
}

const typeOfValue = (v: unknown): StructuralSchema['type'] =>
  typeof v === 'string' ? 'string' : typeof v === 'boolean' ? 'boolean' : Number.isInteger(v) ? 'integer' : typeof v === 'number' ? 'number' : Array.isArray(v) ? 'array' : 'object';

const COPIED = ['description', 'format', 'pattern', 'minLength', 'maxLength', 'minimum', 'maximum', 'minItems', 'maxItems', 'minProperties', 'maxProperties', 'required'] as const;
/** Keywords a value validation inside allOf/anyOf/oneOf/not may not carry in a structural schema. */
const NOT_IN_JUNCTORS = ['type', 'description', 'additionalProperties', 'x-kubernetes-preserve-unknown-fields', 'x-kubernetes-list-type'] as const;
const HANDLED = new Set<string>([...COPIED, 'type', 'enum', 'const', '$ref', 'properties', 'additionalProperties', 'items', 'uniqueItems', 'allOf', 'anyOf', 'oneOf', 'not', 'if', 'then', 'else', 'title', '$schema', '$id', '$defs']);

/**
 * The API server compiles patterns with Go's RE2, which has no lookaround. A negative lookahead
 * `(?!.*X)` right after a leading class that cannot start X (our container-name rule, "no `--`")
 * says "X occurs nowhere": it becomes a separate `not: {pattern: X}`. Anything else RE2 lacks
 * is refused here rather than by the API server at `kubectl apply` time.
 */
export function re2Pattern(pattern: string, where: string): { pattern: string; forbidden?: string } {
  const m = /^\^(\[[^\]]+\])\(\?!\.\*([^()[\]{}*+?.|^$\\]+)\)(.*)$/.exec(pattern);
  let forbidden: string | undefined;
  let rest = pattern;
  if (m && !new RegExp(m[1]!).test(m[2]![0]!)) {
    forbidden = m[2]!;
    rest = `^${m[1]}${m[3]}`;
  }
  if (/\(\?[=!<]|\\[1-9]|\\k</.test(rest)) throw new Error(`${where}: pattern ${pattern} uses lookaround or backreferences, which Kubernetes (RE2) cannot compile`);
  return { pattern: rest, ...(forbidden && { forbidden }) };
}

/**
 * One JSON Schema node as a structural schema node. `junctor`: the node sits inside a logical
 * junctor, where only value validations are allowed (the structure comes from outside).
 */
export function toStructural(input: Json, ctx: Ctx, junctor = false): StructuralSchema {
  let schema = input;
  let here = ctx;
  while (typeof schema.$ref === 'string') {
    const r = resolveRef(schema.$ref, here);
    const { $ref: _ref, ...siblings } = schema;
    schema = { ...r.node, ...siblings };
    here = r.ctx;
  }
  for (const k of Object.keys(schema)) {
    if (!HANDLED.has(k)) throw new Error(`${ctx.where}: JSON Schema keyword ${k} has no structural equivalent; extend src/k8s/crds.ts`);
  }
  const out: StructuralSchema = {};
  for (const k of COPIED) if (schema[k] !== undefined) (out as Json)[k] = structuredClone(schema[k]);
  if (schema.const !== undefined) out.enum = [schema.const];
  if (Array.isArray(schema.enum)) out.enum = structuredClone(schema.enum);
  if (typeof out.pattern === 'string') {
    const { pattern, forbidden } = re2Pattern(out.pattern, ctx.where);
    out.pattern = pattern;
    if (forbidden) out.allOf = [...(out.allOf ?? []), { not: { pattern: forbidden } }];
  }
  if (typeof schema.type === 'string') out.type = schema.type as StructuralSchema['type'];
  else if (out.enum && new Set(out.enum.map(typeOfValue)).size === 1) out.type = typeOfValue(out.enum[0]);

  const sub = (s: unknown, where: string, inJunctor = junctor) => toStructural(s as Json, { ...here, where: `${ctx.where}${where}` }, inJunctor);
  if (schema.properties) {
    out.properties = {};
    for (const [name, p] of Object.entries(schema.properties as Json)) out.properties[name] = sub(p, `.${name}`);
  }
  if (schema.additionalProperties && typeof schema.additionalProperties === 'object') {
    out.additionalProperties = sub(schema.additionalProperties, '.*');
  } else if (schema.additionalProperties === true || (out.type === 'object' && !schema.properties && schema.additionalProperties === undefined && !junctor)) {
    // The schema itself allows arbitrary members here: say so, or the API server would prune them.
    out['x-kubernetes-preserve-unknown-fields'] = true;
  }
  if (schema.items) {
    out.items = sub(schema.items, '[]');
    if (schema.uniqueItems === true && out.items.type !== 'object' && out.items.type !== 'array') out['x-kubernetes-list-type'] = 'set';
  }
  for (const j of ['allOf', 'anyOf', 'oneOf'] as const) {
    if (Array.isArray(schema[j])) out[j] = [...(out[j] ?? []), ...(schema[j] as unknown[]).map((s, i) => sub(s, `.${j}[${i}]`, true))];
  }
  if (schema.not) out.not = sub(schema.not, '.not', true);
  if (schema.if) {
    // if A then B else C  ==  anyOf [ allOf [A, B], allOf [not A, C] ]: the same set of documents.
    const cond = sub(schema.if, '.if', true);
    const branch = (s: unknown, where: string): StructuralSchema[] => (s ? [sub(s, where, true)] : []);
    const rewritten: StructuralSchema = {
      anyOf: [{ allOf: [cond, ...branch(schema.then, '.then')] }, { allOf: [{ not: cond }, ...branch(schema.else, '.else')] }],
    };
    out.allOf = [...(out.allOf ?? []), rewritten];
  }
  // A node whose type the junctor branches decide (e.g. `anyOf: [{enum}, {format: date-time}]`).
  if (!out.type && !junctor) {
    const branches = [...(out.anyOf ?? []), ...(out.oneOf ?? [])];
    const types = new Set(branches.map((b) => b.type ?? (b.enum ? typeOfValue(b.enum[0]) : b.format ? 'string' : undefined)));
    if (types.size === 1 && !types.has(undefined)) out.type = [...types][0];
  }
  if (junctor) for (const k of NOT_IN_JUNCTORS) delete out[k];
  if (!junctor) for (const j of ['allOf', 'anyOf', 'oneOf'] as const) for (const b of out[j] ?? []) delete b.type;
  return out;
}

const CONDITIONS: StructuralSchema = {
  type: 'array',
  description: 'Kubernetes-style conditions: lastTransitionTime is when status last changed.',
  'x-kubernetes-list-type': 'map',
  'x-kubernetes-list-map-keys': ['type'],
  items: {
    type: 'object',
    required: ['type', 'status'],
    properties: {
      type: { type: 'string' },
      status: { type: 'string', enum: ['True', 'False', 'Unknown'] },
      reason: { type: 'string' },
      message: { type: 'string' },
      lastTransitionTime: { type: 'string', format: 'date-time' },
      observedGeneration: { type: 'integer', format: 'int64' },
    },
  },
};

const int64 = (description: string): StructuralSchema => ({ type: 'integer', format: 'int64', description });
const str = (description: string, extra: StructuralSchema = {}): StructuralSchema => ({ type: 'string', description, ...extra });

const PROTECTED_VM_STATUS: Record<string, StructuralSchema> = {
  state: str('Replication state (Hyper-V Replica / Site Recovery), or NotProtected.', { enum: [...REPLICATION_STATES, 'NotProtected'] }),
  health: str('Normal, Warning or Critical.', { enum: [...HEALTHS] }),
  roles: { type: 'object', description: 'Role per site name.', additionalProperties: { type: 'string', enum: ['Primary', 'Replica', 'ExtendedReplica'] } },
  direction: { type: 'object', description: 'Which site runs the VM now and which receives its changes.', properties: { primary: { type: 'string' }, replica: { type: 'string' } } },
  lastReplicationTime: str('RFC 3339 time of the last applied cycle.', { format: 'date-time' }),
  lag: str('How far the replica is behind, e.g. 12s.'),
  lagSeconds: int64('Seconds the replica is behind the primary.'),
  pendingBytes: int64('Bytes tracked on the primary and not yet applied on the replica.'),
  recoveryPoints: int64('Recovery points retained on the replica.'),
  testFailover: str('active while <vm>-Test VMs exist.', { enum: ['none', 'active'] }),
  testVms: { type: 'array', items: { type: 'string' } },
  initialReplication: {
    type: 'object',
    properties: { method: { type: 'string' }, bytesDone: int64('Bytes copied.'), bytesTotal: int64('Bytes to copy.') },
  },
  relationshipId: str('The replication relationship on the sites.'),
};

const RECOVERY_PLAN_STATUS: Record<string, StructuralSchema> = {
  lastAction: {
    type: 'object',
    description: 'The last failover action (spec.failover) and its job.',
    properties: {
      id: { type: 'string' }, type: { type: 'string' }, jobId: { type: 'string' },
      state: { type: 'string', enum: ['Running', 'Waiting', 'Succeeded', 'Failed'] },
      startedAt: { type: 'string', format: 'date-time' }, endedAt: { type: 'string', format: 'date-time' },
      waitingFor: { type: 'string' }, error: { type: 'string' },
    },
  },
};

function statusSchema(kind: KindNames['kind']): StructuralSchema {
  const extra = kind === 'ProtectedVM' ? PROTECTED_VM_STATUS : kind === 'RecoveryPlan' ? RECOVERY_PLAN_STATUS : {};
  return {
    type: 'object',
    description: 'Written by drsite controller through the status subresource.',
    properties: { observedGeneration: int64('The metadata.generation the controller last acted on.'), conditions: CONDITIONS, ...extra },
  };
}

const condition = (type: string): PrinterColumn => ({ name: type, type: 'string', jsonPath: `.status.conditions[?(@.type=="${type}")].status` });
const AGE: PrinterColumn = { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' };

const PRINTER_COLUMNS: Record<KindNames['kind'], PrinterColumn[]> = {
  Site: [{ name: 'Type', type: 'string', jsonPath: '.spec.type' }, { name: 'Endpoint', type: 'string', jsonPath: '.spec.endpoint' }, condition('Accepted'), AGE],
  ReplicationPolicy: [{ name: 'Frequency', type: 'string', jsonPath: '.spec.frequency' }, condition('Accepted'), AGE],
  NetworkMapping: [{ name: 'Source', type: 'string', jsonPath: '.spec.source.site' }, { name: 'Target', type: 'string', jsonPath: '.spec.target.site' }, condition('Accepted'), AGE],
  ProtectedVM: [
    { name: 'Primary', type: 'string', jsonPath: '.status.direction.primary', description: 'Site that runs the VM now.' },
    { name: 'Replica', type: 'string', jsonPath: '.status.direction.replica', description: 'Site that receives its changes.' },
    { name: 'State', type: 'string', jsonPath: '.status.state', description: 'Replication state.' },
    { name: 'Health', type: 'string', jsonPath: '.status.health', description: 'Replication health.' },
    { name: 'Lag', type: 'string', jsonPath: '.status.lag', description: 'How far the replica is behind.' },
    { name: 'Last Replication', type: 'date', jsonPath: '.status.lastReplicationTime', priority: 1 },
    condition('Ready'),
    AGE,
  ],
  RecoveryPlan: [
    { name: 'Last Action', type: 'string', jsonPath: '.status.lastAction.id' },
    { name: 'Action State', type: 'string', jsonPath: '.status.lastAction.state' },
    condition('Accepted'),
    AGE,
  ],
};

/** Loads schemas/*.schema.json by file name (once per call of generateCrds). */
function schemaLoader(dir: string): (file: string) => Json {
  const cache = new Map<string, Json>();
  return (file) => {
    let s = cache.get(file);
    if (!s) cache.set(file, (s = JSON.parse(readFileSync(join(dir, file), 'utf8')) as Json));
    return s;
  };
}

export function crdFor(names: KindNames, load: (file: string) => Json): CustomResourceDefinition {
  const doc = load(names.schemaFile);
  const props = doc.properties as Json;
  const ctx: Ctx = { doc, load, where: names.kind };
  const metadataName = toStructural((props.metadata as Json), ctx).properties?.name;
  const root: StructuralSchema = {
    type: 'object',
    ...(typeof doc.description === 'string' && { description: doc.description }),
    required: ['spec'],
    properties: {
      apiVersion: { type: 'string' },
      kind: { type: 'string' },
      // Only restrictions on metadata.name are allowed here: the rest is Kubernetes' ObjectMeta.
      metadata: { type: 'object', ...(metadataName && { properties: { name: { type: 'string', ...(metadataName.pattern && { pattern: metadataName.pattern }), maxLength: 63 } } }) },
      spec: toStructural(props.spec as Json, { ...ctx, where: `${names.kind}.spec` }),
      status: statusSchema(names.kind),
    },
  };
  return {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: { name: `${names.plural}.${GROUP}`, labels: { 'app.kubernetes.io/name': 'drsite', 'app.kubernetes.io/component': 'crd' } },
    spec: {
      group: GROUP,
      scope: 'Namespaced',
      names: { kind: names.kind, listKind: `${names.kind}List`, plural: names.plural, singular: names.singular, shortNames: names.shortNames, categories: ['drsite'] },
      versions: [{
        name: VERSION,
        served: true,
        storage: true,
        subresources: { status: {} },
        additionalPrinterColumns: PRINTER_COLUMNS[names.kind],
        schema: { openAPIV3Schema: root },
      }],
    },
  };
}

/** The CRDs of every kind, in the order of KINDS. */
export function generateCrds(schemaDir: string = SCHEMA_DIR): CustomResourceDefinition[] {
  const load = schemaLoader(schemaDir);
  return KIND_NAMES.map((n) => crdFor(n, load));
}
