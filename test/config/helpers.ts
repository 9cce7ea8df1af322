// Shared test helpers for the config layer: temp directories and rule inputs built from YAML text
// through the real pipeline (parse, schema, defaults), so rule tests see what production sees.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { declareSources } from '../../src/config/load.ts';
import type { RuleInput } from '../../src/config/rules.ts';
import type { Diagnostic } from '../../src/model/diagnostics.ts';

export function tempDir(): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'drsite-config-'));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Rule input from YAML; fails the test if the YAML itself does not parse and validate. */
export function ruleInput(yaml: string, file = 'test.yaml'): RuleInput {
  const { input, diagnostics } = declareSources([{ file, text: yaml }]);
  if (diagnostics.length > 0) throw new Error(`fixture is not valid:\n${diagnostics.map((d) => `${d.line}:${d.column} ${d.path} ${d.summary}`).join('\n')}`);
  return input;
}

/** `line:column path summary` — compact and exact, for assertions. */
export const brief = (d: Diagnostic): string => `${d.line}:${d.column} ${d.path} ${d.summary}`;

export const doc = (kind: string, name: string, spec: string): string =>
  `apiVersion: drsite.dev/v1\nkind: ${kind}\nmetadata: {name: ${name}}\nspec: ${spec}\n---\n`;

/** Two host sites (site-b a Replica server) and a 5-minute policy: most rule fixtures start here. */
export const BASE =
  doc('Site', 'site-a', '{type: host}') +
  doc('Site', 'site-b', '{type: host, replicaServer: {enabled: true}}') +
  doc('ReplicationPolicy', 'every-5m', '{frequency: 5m}');
