// The generated CRDs against the rules kube-apiserver applies to apiextensions.k8s.io/v1 (checked
// here by code walking each schema, since no API server can run on these machines): structural
// schemas (a type on every node, nothing unknown kept without x-kubernetes-preserve-unknown-
// fields, junctors carrying value validations only, over fields declared outside them), only
// keywords JSONSchemaProps has, metadata restricted to name, RE2-compatible patterns; then the
// status subresource, the printer columns, and that the CRD schemas accept and reject the same
// documents as schemas/ (ajv on the openAPIV3Schema).
import { Ajv, type ValidateFunction } from 'ajv';
import addFormats from 'ajv-formats';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { describe, expect, test } from 'vitest';
import { generateCrds, type StructuralSchema } from '../../src/k8s/crds.ts';
import { drsite, ROOT } from '../cli/run-cli.ts';

const crds = generateCrds();
const byKind = new Map(crds.map((c) => [c.spec.names.kind, c]));

/** Fields of apiextensions.k8s.io/v1 JSONSchemaProps (minus those v1 forbids: $ref, definitions, id, $schema, ...). */
const JSON_SCHEMA_PROPS = new Set([
  'description', 'type', 'format', 'title', 'maximum', 'exclusiveMaximum', 'minimum', 'exclusiveMinimum', 'maxLength', 'minLength',
  'pattern', 'maxItems', 'minItems', 'multipleOf', 'enum', 'maxProperties', 'minProperties', 'required', 'items', 'allOf', 'oneOf',
  'anyOf', 'not', 'properties', 'additionalProperties', 'nullable', 'x-kubernetes-preserve-unknown-fields', 'x-kubernetes-embedded-resource',
  'x-kubernetes-int-or-string', 'x-kubernetes-list-map-keys', 'x-kubernetes-list-type', 'x-kubernetes-map-type', 'x-kubernetes-validations',
]);
const NOT_IN_JUNCTORS = ['type', 'description', 'default', 'additionalProperties', 'nullable', 'x-kubernetes-preserve-unknown-fields', 'x-kubernetes-list-type'];
const TYPES = new Set(['object', 'array', 'string', 'integer', 'number', 'boolean']);
const SCALARS = new Set(['string', 'integer', 'number', 'boolean']);

/** Every violation found under `s` (empty: structural). `outer`: the structural node a junctor sits in. */
function violations(s: StructuralSchema, path: string, junctor: StructuralSchema | undefined = undefined): string[] {
  const out: string[] = [];
  for (const k of Object.keys(s)) if (!JSON_SCHEMA_PROPS.has(k)) out.push(`${path}: ${k} is not a JSONSchemaProps field`);
  if ((s as { uniqueItems?: unknown }).uniqueItems === true) out.push(`${path}: uniqueItems: true is forbidden`);
  if (s.pattern !== undefined && /\(\?[=!<]|\\[1-9]/.test(s.pattern)) out.push(`${path}: pattern needs lookaround or backreferences (not RE2)`);
  if (junctor) {
    for (const k of NOT_IN_JUNCTORS) if (k in s) out.push(`${path}: ${k} inside a logical junctor`);
    for (const p of Object.keys(s.properties ?? {})) {
      if (!junctor.properties?.[p]) out.push(`${path}.${p}: specified in a junctor but not in the structural schema around it`);
    }
    if (s.items && !junctor.items) out.push(`${path}: items in a junctor without items around it`);
  } else {
    const preserve = s['x-kubernetes-preserve-unknown-fields'] === true;
    if (!s.type && !preserve) out.push(`${path}: no type`);
    if (s.type && !TYPES.has(s.type)) out.push(`${path}: type ${s.type}`);
    if ((s as { additionalProperties?: unknown }).additionalProperties === false) out.push(`${path}: additionalProperties: false is forbidden`);
    if (s.properties && s.additionalProperties) out.push(`${path}: properties and additionalProperties together`);
    if (s.type === 'object' && !s.properties && !s.additionalProperties && !preserve) out.push(`${path}: object without properties would drop every field`);
    if (s.type === 'array' && !s.items) out.push(`${path}: array without items`);
    if (s.type !== 'array' && s.items) out.push(`${path}: items on a ${s.type}`);
    if (s['x-kubernetes-list-type'] === 'set' && !SCALARS.has(s.items?.type ?? '')) out.push(`${path}: list-type set needs scalar items`);
    if (s['x-kubernetes-list-type'] === 'map') {
      for (const key of s['x-kubernetes-list-map-keys'] ?? []) if (!s.items?.required?.includes(key)) out.push(`${path}: map key ${key} must be required`);
    }
    for (const e of s.enum ?? []) if (s.type && typeof e !== (s.type === 'integer' ? 'number' : s.type)) out.push(`${path}: enum value ${JSON.stringify(e)} is not a ${s.type}`);
  }
  const around = junctor ?? s;
  for (const [k, v] of Object.entries(s.properties ?? {})) {
    const subJunctor = junctor ? around.properties?.[k] : undefined;
    out.push(...violations(v, `${path}.${k}`, junctor ? subJunctor ?? {} : undefined));
  }
  if (s.additionalProperties) out.push(...violations(s.additionalProperties, `${path}.*`, junctor ? around.additionalProperties ?? {} : undefined));
  if (s.items) out.push(...violations(s.items, `${path}[]`, junctor ? around.items ?? {} : undefined));
  for (const j of ['allOf', 'anyOf', 'oneOf'] as const) for (const [i, b] of (s[j] ?? []).entries()) out.push(...violations(b, `${path}.${j}[${i}]`, around));
  if (s.not) out.push(...violations(s.not, `${path}.not`, around));
  return out;
}

describe('generated CRDs', () => {
  test('one CRD per kind in group drsite.dev, served and stored as v1, namespaced', () => {
    expect(crds.map((c) => c.metadata.name)).toEqual(['sites.drsite.dev', 'replicationpolicies.drsite.dev', 'networkmappings.drsite.dev', 'protectedvms.drsite.dev', 'recoveryplans.drsite.dev']);
    for (const c of crds) {
      expect(c.metadata.name).toBe(`${c.spec.names.plural}.${c.spec.group}`);
      expect(c.spec.versions.map((v) => [v.name, v.served, v.storage])).toEqual([['v1', true, true]]);
      expect(c.spec.scope).toBe('Namespaced');
    }
  });

  test.each(crds.map((c) => [c.spec.names.kind, c] as const))('%s: the schema is structural and uses only what apiextensions/v1 allows', (_kind, crd) => {
    const root = crd.spec.versions[0]!.schema.openAPIV3Schema;
    expect(violations(root, crd.spec.names.kind)).toEqual([]);
    // Only restrictions on metadata.name are allowed; apiVersion and kind are plain strings.
    expect(Object.keys(root.properties!.metadata!.properties ?? {})).toEqual(['name']);
    expect(root.properties!.apiVersion).toEqual({ type: 'string' });
    expect(root.properties!.kind).toEqual({ type: 'string' });
  });

  test('the walker finds what a real API server would refuse (it can fail)', () => {
    const bad: StructuralSchema = {
      type: 'object',
      properties: { a: { properties: { x: { type: 'string' } } } as StructuralSchema, b: { type: 'object' } },
      anyOf: [{ type: 'object', properties: { c: { enum: ['x'] } } } as StructuralSchema],
    };
    expect(violations(bad, 'bad')).toEqual([
      'bad.a: no type',
      'bad.b: object without properties would drop every field',
      'bad.anyOf[0]: type inside a logical junctor',
      'bad.anyOf[0].c: specified in a junctor but not in the structural schema around it',
    ]);
  });

  test('preserve-unknown-fields appears nowhere: every object in schemas/ declares its members', () => {
    expect(JSON.stringify(crds)).not.toContain('x-kubernetes-preserve-unknown-fields');
  });

  test('status subresource, and status declares observedGeneration and conditions (and state/health/lag for ProtectedVM)', () => {
    for (const c of crds) {
      const v = c.spec.versions[0]!;
      expect(v.subresources).toEqual({ status: {} });
      const status = v.schema.openAPIV3Schema.properties!.status!;
      expect(status.properties!.observedGeneration).toMatchObject({ type: 'integer' });
      expect(status.properties!.conditions).toMatchObject({ type: 'array', 'x-kubernetes-list-type': 'map', 'x-kubernetes-list-map-keys': ['type'] });
    }
    const pvm = byKind.get('ProtectedVM')!.spec.versions[0]!.schema.openAPIV3Schema.properties!.status!.properties!;
    expect(pvm.state!.enum).toContain('Replicating');
    expect(pvm.health!.enum).toEqual(['Normal', 'Warning', 'Critical']);
    expect(pvm.lag).toMatchObject({ type: 'string' });
  });

  test('printer columns: state, health and lag for ProtectedVM; each column points into the schema', () => {
    const cols = byKind.get('ProtectedVM')!.spec.versions[0]!.additionalPrinterColumns;
    expect(cols.map((c) => [c.name, c.jsonPath])).toEqual(expect.arrayContaining([
      ['State', '.status.state'], ['Health', '.status.health'], ['Lag', '.status.lag'], ['Ready', '.status.conditions[?(@.type=="Ready")].status'],
    ]));
    for (const c of crds) {
      const v = c.spec.versions[0]!;
      for (const col of v.additionalPrinterColumns) {
        expect(['string', 'integer', 'number', 'boolean', 'date']).toContain(col.type);
        if (col.jsonPath.startsWith('.metadata.') || col.jsonPath.includes('[?(')) continue;
        let node: StructuralSchema | undefined = v.schema.openAPIV3Schema;
        for (const part of col.jsonPath.slice(1).split('.')) node = node?.properties?.[part];
        expect(node, `${c.spec.names.kind} column ${col.name} (${col.jsonPath})`).toBeDefined();
      }
    }
  });

  describe('the CRD schemas accept what schemas/ accepts and reject what it rejects', () => {
    const ajv = new Ajv({ strict: false, allErrors: true });
    (addFormats as unknown as (a: Ajv, f: string[]) => void)(ajv, ['date-time', 'ipv4', 'ipv6']);
    ajv.addFormat('int64', true); // an OpenAPI format Kubernetes knows; ajv does not
    const validators = new Map<string, ValidateFunction>(crds.map((c) => [c.spec.names.kind, ajv.compile(c.spec.versions[0]!.schema.openAPIV3Schema)]));
    const examples = readdirSync(join(ROOT, 'examples'), { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.yaml') && !f.startsWith('invalid'));
    test('every valid example document', () => {
      let checked = 0;
      for (const f of examples) {
        for (const doc of parseAllDocuments(readFileSync(join(ROOT, 'examples', f), 'utf8'))) {
          const value = doc.toJS() as { kind?: string } | null;
          if (!value?.kind || !validators.has(value.kind)) continue;
          const validate = validators.get(value.kind)!;
          expect(validate(value), `${f} ${value.kind}: ${ajv.errorsText(validate.errors)}`).toBe(true);
          checked++;
        }
      }
      expect(checked).toBeGreaterThan(5);
    });
    const site = (spec: object) => ({ apiVersion: 'drsite.dev/v1', kind: 'Site', metadata: { name: 's' }, spec });
    test.each([
      ['an unknown frequency', { apiVersion: 'drsite.dev/v1', kind: 'ReplicationPolicy', metadata: { name: 'p' }, spec: { frequency: '10s' } }],
      ['an azure site with an endpoint (if/then/else)', site({ type: 'azure', storageAccount: 'acct', container: 'c1x', credentials: { connectionStringEnv: 'X' }, resourceGroup: 'rg', location: 'westeurope', endpoint: 'https://h:1' })],
      ['a host site with a storage account (else branch)', site({ type: 'host', storageAccount: 'acct' })],
      ['a container name with -- (the lookahead rewritten for RE2)', site({ type: 'azure', storageAccount: 'acct', container: 'a--b', credentials: { connectionStringEnv: 'X' }, resourceGroup: 'rg', location: 'westeurope' })],
      ['a recovery action with both script and manual (oneOf)', { apiVersion: 'drsite.dev/v1', kind: 'RecoveryPlan', metadata: { name: 'r' }, spec: { groups: [{ vms: ['a'], before: [{ script: { path: '/x' }, manual: { message: 'm' } }] }] } }],
      ['a recovery point that is neither a keyword nor a time', { apiVersion: 'drsite.dev/v1', kind: 'RecoveryPlan', metadata: { name: 'r' }, spec: { groups: [{ vms: ['a'] }], failover: { id: 'x', type: 'test', recoveryPoint: 'yesterday' } } }],
      ['a name that is not a DNS label', { apiVersion: 'drsite.dev/v1', kind: 'ReplicationPolicy', metadata: { name: 'Not_A_Label' }, spec: {} }],
    ])('rejects %s', (_what, doc) => {
      expect(validators.get(doc.kind)!(doc)).toBe(false);
    });
    test('accepts an azure site and an RFC 3339 recovery point', () => {
      expect(validators.get('Site')!(site({ type: 'azure', storageAccount: 'acct', container: 'a-b', credentials: { connectionStringEnv: 'X' }, resourceGroup: 'rg', location: 'westeurope' }))).toBe(true);
      expect(validators.get('RecoveryPlan')!({ apiVersion: 'drsite.dev/v1', kind: 'RecoveryPlan', metadata: { name: 'r' }, spec: { groups: [{ vms: ['a'] }], failover: { id: 'x', type: 'test', recoveryPoint: '2026-03-01T12:00:00Z' } } })).toBe(true);
    });
  });

  test('drsite crds prints them as YAML documents for kubectl apply, and as a List with --output json', async () => {
    const yaml = await drsite(['crds']);
    expect(yaml.code, yaml.stderr).toBe(0);
    expect(parseAllDocuments(yaml.stdout).map((d) => d.toJS())).toEqual(JSON.parse(JSON.stringify(crds)));
    const json = await drsite(['crds', '--output', 'json']);
    expect(json.code, json.stderr).toBe(0);
    expect(JSON.parse(json.stdout)).toEqual({ apiVersion: 'v1', kind: 'List', items: JSON.parse(JSON.stringify(crds)) });
  });
});
