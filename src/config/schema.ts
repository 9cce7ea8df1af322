// Schema validation of one document: picks the kind's JSON Schema from schemas/ and runs ajv
// (draft 2020-12, strict, compiled once per process). No defaults, no coercion: defaults are an
// explicit later step (defaults.ts), so validation never depends on the order things ran in.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Ajv2020, type AnySchemaObject, type ValidateFunction } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import { formatPath } from './field-path.ts';
import { describeAjvErrors, type SchemaIssue } from './schema-errors.ts';
import { didYouMean } from './suggest.ts';

export type { SchemaIssue } from './schema-errors.ts';

const SCHEMA_DIR = join(import.meta.dirname, '..', '..', 'schemas');

interface Compiled {
  byKind: Map<string, ValidateFunction>;
  /** Every schema document by its $id, for resolving $ref while phrasing errors. */
  roots: Map<string, AnySchemaObject>;
}

let compiled: Compiled | undefined;

/**
 * Compiled on first use, then shared: compiling is the expensive part of ajv. strictRequired is
 * off because ajv evaluates `oneOf`/`not`/`if` before `properties`, so `oneOf: [{required:
 * [script]}]` (RecoveryAction) is reported as an undefined property although it is defined.
 */
function schemas(): Compiled {
  if (compiled) return compiled;
  const ajv = new Ajv2020({ strict: true, strictRequired: false, allErrors: true, verbose: true });
  (addFormats as unknown as (a: Ajv2020, f: string[]) => void)(ajv, ['date-time', 'ipv4', 'ipv6']);
  const roots = new Map<string, AnySchemaObject>();
  for (const f of readdirSync(SCHEMA_DIR).filter((n) => n.endsWith('.schema.json')).sort()) {
    const schema = JSON.parse(readFileSync(join(SCHEMA_DIR, f), 'utf8')) as AnySchemaObject;
    roots.set(schema.$id as string, schema);
    ajv.addSchema(schema);
  }
  const byKind = new Map<string, ValidateFunction>();
  for (const [id, schema] of roots) {
    const kind = (schema.properties as Record<string, { const?: unknown }> | undefined)?.kind?.const;
    if (typeof kind === 'string') byKind.set(kind, ajv.getSchema(id)!);
  }
  compiled = { byKind, roots };
  return compiled;
}

/** The kinds that have a schema, in schema file order. */
export function knownKinds(): string[] {
  return [...schemas().byKind.keys()];
}

/** Every schema problem of one document, each located by field path (nothing thrown). */
export function schemaIssues(doc: unknown): SchemaIssue[] {
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) {
    return [{ path: [], at: [], target: 'value', summary: 'document is not a mapping', detail: 'expected a mapping with apiVersion, kind, metadata and spec' }];
  }
  const { byKind, roots } = schemas();
  const kind = (doc as { kind?: unknown }).kind;
  const kinds = [...byKind.keys()];
  if (kind === undefined) {
    return [{ path: ['kind'], at: [], target: 'value', summary: 'missing kind', detail: `every document needs a kind, one of: ${kinds.join(', ')}` }];
  }
  const validate = typeof kind === 'string' ? byKind.get(kind) : undefined;
  if (!validate) {
    const shown = typeof kind === 'string' ? JSON.stringify(kind.length > 60 ? `${kind.slice(0, 60)}...` : kind) : `(${typeof kind})`;
    return [{
      path: ['kind'], at: ['kind'], target: 'value', summary: `unknown kind ${shown}`,
      detail: `expected one of: ${kinds.join(', ')}${typeof kind === 'string' ? didYouMean(kind, kinds) : ''}`,
    }];
  }
  if (validate(doc)) return [];
  return describeAjvErrors(validate.errors ?? [], doc, roots);
}

/** Validates one document without files or positions (for constructs and other front ends). */
export function validateDocument(doc: unknown): { valid: boolean; errors: { path: string; message: string }[] } {
  const issues = schemaIssues(doc);
  return {
    valid: issues.length === 0,
    errors: issues.map((i) => ({ path: formatPath(i.path), message: i.detail ? `${i.summary}: ${i.detail}` : i.summary })),
  };
}

