// README.md's quickstart, in its order, taken from README.md itself (a README edit that breaks it
// fails here): `npm start -- --until converged`, then the YAML block it says to add to plan.yaml,
// `npx drsite apply examples/quickstart`, the same id again, and the cleanupTest it describes.
// On a copy of the repository's examples/quickstart (free ports), with the default state dir.
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { Vault } from '../../src/vault/vault.ts';
import { freePorts, killGuestsUnder } from '../agent/cluster.ts';
import { ROOT, drsite } from '../cli/run-cli.ts';
import { vmStatus } from './helpers.ts';

const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
let root: string;
const plan = () => join(root, 'examples', 'quickstart', 'plan.yaml');
const status = () => {
  const v = Vault.open(join(root, '.drsite', 'vault.db'));
  try {
    return vmStatus(v);
  } finally {
    v.close();
  }
};
/** `npx drsite <args>` in the copy, as README's commands run from the repository root. */
const npxDrsite = (command: string) => {
  const args = command.replace(/^npx drsite /, '').split(/\s+/);
  return drsite(args, { cwd: root, timeoutMs: 90_000 });
};

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'drsite-readme-'));
  cpSync(join(ROOT, 'examples', 'quickstart'), join(root, 'examples', 'quickstart'), { recursive: true });
  const sites = join(root, 'examples', 'quickstart', 'sites.yaml');
  let text = readFileSync(sites, 'utf8');
  const declared = text.match(/port: \d+/g) ?? [];
  const free = await freePorts(declared.length);
  declared.forEach((port, i) => (text = text.replace(port, `port: ${free[i]}`)));
  writeFileSync(sites, text);
});
afterAll(() => {
  if (!root) return;
  killGuestsUnder(root);
  rmSync(root, { recursive: true, force: true });
});

test('README quickstart: npm start -- --until converged, then the declared test failover, as written', async () => {
  // `npm start` is `drsite run examples/quickstart`; README's `npm start -- --until converged` adds the flag.
  expect(readme).toContain('npm start -- --until converged');
  const start = pkg.scripts.start.match(/^node bin\/drsite\.mjs (run examples\/quickstart)$/);
  expect(start, pkg.scripts.start).not.toBeNull();
  const converged = await drsite([...start![1].split(' '), '--until', 'converged'], { cwd: root, timeoutMs: 90_000 });
  expect(converged.code, converged.stdout + converged.stderr).toBe(0);
  expect(converged.stdout).toMatch(/converged in [\d.]+s/);
  expect(status().map((s) => [s.name, s.state])).toEqual([['db-01', 'Replicating'], ['web-01', 'Replicating']]);

  // "Next, declare a test failover: add to `examples/quickstart/plan.yaml`" — the block that follows.
  const block = /add to `examples\/quickstart\/plan\.yaml`\s*\n\s*```yaml\n([\s\S]*?)```/.exec(readme);
  expect(block, 'README no longer shows the failover block to add').not.toBeNull();
  const original = readFileSync(plan(), 'utf8');
  writeFileSync(plan(), `${original.trimEnd()}\n${block![1]}`);
  const applyCommand = /and run `(npx drsite apply examples\/quickstart)`/.exec(readme)![1];
  const applied = await npxDrsite(applyCommand);
  expect(applied.code, applied.stdout + applied.stderr).toBe(0);
  // What the block's comment promises: web-01-Test and db-01-Test.
  expect(status().map((s) => s.testVms)).toEqual([['db-01-Test'], ['web-01-Test']]);

  // "a new id runs the action once; the same id again is a no-op"
  const again = await npxDrsite(applyCommand);
  expect(again.code, again.stdout + again.stderr).toBe(0);
  expect(again.stdout).toMatch(/^No changes\. The observed state matches the declarations\.$/m);

  // "A new id with `cleanupTest: true` removes them."
  expect(readme).toContain('A new id with `cleanupTest: true` removes them.');
  writeFileSync(plan(), `${original.trimEnd()}\n  failover:\n    id: drill-2\n    type: test\n    cleanupTest: true\n`);
  const cleaned = await npxDrsite(applyCommand);
  expect(cleaned.code, cleaned.stdout + cleaned.stderr).toBe(0);
  expect(status().map((s) => s.testVms)).toEqual([[], []]);
}, 180_000);
