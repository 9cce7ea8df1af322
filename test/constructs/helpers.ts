// Shared helpers for the constructs tests: a fresh construct root per test, the YAML quickstart
// loaded the way the YAML front end loads it, and a Testing.synth()-style reader of cdk.tf.json.
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Construct } from 'constructs';
import { ConstructValidationError } from '../../constructs/errors.ts';
import { loadDesiredStateFromSources } from '../../src/config/index.ts';
import type { DesiredState } from '../../src/model/desired.ts';

export const QUICKSTART_DIR = join(import.meta.dirname, '..', '..', 'examples', 'quickstart');

/** A root with one `DrApp` scope, so construct paths read `DrApp/<id>`. */
export function drApp(): Construct {
  const root = new Construct(undefined as unknown as Construct, '');
  return new Construct(root, 'DrApp');
}

/**
 * The YAML quickstart through the config pipeline. No `dir` on the sources: script paths stay as
 * written, as the constructs write them, so the two are comparable as data.
 */
export function yamlQuickstart(): DesiredState {
  const files = readdirSync(QUICKSTART_DIR).filter((f) => f.endsWith('.yaml')).sort();
  const result = loadDesiredStateFromSources(files.map((f) => ({ file: f, text: readFileSync(join(QUICKSTART_DIR, f), 'utf8') })));
  if (!result.ok) throw new Error(JSON.stringify(result.diagnostics));
  return result.state;
}

/** Temp directories, removed after the file's tests. */
export function tempDirs(): { make(): Promise<string>; cleanup(): Promise<void> } {
  const dirs: string[] = [];
  return {
    async make() {
      const d = await mkdtemp(join(tmpdir(), 'drsite-constructs-'));
      dirs.push(d);
      return d;
    },
    async cleanup() {
      await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
    },
  };
}

export interface TerraformJson {
  resource: Record<string, Record<string, Record<string, unknown>>>;
  data?: Record<string, Record<string, Record<string, unknown>>>;
  variable?: Record<string, unknown>;
  terraform: { backend?: Record<string, { path?: string }> };
}

export const readTerraform = (file: string): TerraformJson => JSON.parse(readFileSync(file, 'utf8')) as TerraformJson;

/** The single resource of `type` whose `name` attribute is `name`, with its logical id. */
export function byName(tf: TerraformJson, type: string, name: string): { id: string; attrs: Record<string, any> } {
  const found = Object.entries(tf.resource[type] ?? {}).filter(([, r]) => r.name === name);
  if (found.length !== 1) throw new Error(`expected one ${type} named ${name}, found ${found.length}`);
  return { id: found[0][0], attrs: found[0][1] as Record<string, any> };
}

/** The Terraform reference to a resource's attribute, as cdktf writes it. */
export const ref = (type: string, id: string, attr = 'id'): string => `\${${type}.${id}.${attr}}`;

/** The ConstructValidationError `fn` throws; any other outcome fails the test. */
export function validationError(fn: () => unknown): ConstructValidationError {
  try {
    fn();
  } catch (e) {
    if (e instanceof ConstructValidationError) return e;
    throw e;
  }
  throw new Error('expected a ConstructValidationError');
}
