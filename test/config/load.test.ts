// loadDesiredState on real files and directories: discovery order, file names in diagnostics,
// cross-file references, script paths, and garbage input that must never make it throw.
import { chmodSync, mkdirSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, expect, test } from 'vitest';
import { loadDesiredState } from '../../src/config/index.ts';
import type { Diagnostic } from '../../src/model/diagnostics.ts';
import { BASE, doc, tempDir } from './helpers.ts';

let dir: string;
let cleanup: () => void;
beforeEach(() => ({ dir, cleanup } = tempDir()));
afterEach(() => cleanup());

const write = (rel: string, text: string | Buffer) => {
  mkdirSync(join(dir, rel, '..'), { recursive: true });
  writeFileSync(join(dir, rel), text);
};
const brief = (d: Diagnostic) => `${d.file}:${d.line}:${d.column} ${d.path} ${d.summary}`;

test('directories are read recursively in sorted order; hidden entries and other files are skipped', async () => {
  write('b/vms.yml', doc('ProtectedVM', 'web-01', '{vm: web-01, primary: site-a, replica: site-b, policy: every-5m}'));
  write('a/base.yaml', BASE);
  write('a/z-extra.YAML', doc('Site', 'site-z', '{type: host}'));
  write('.hidden/broken.yaml', 'not: [valid');
  write('a/notes.txt', 'not yaml: [');
  const r = await loadDesiredState(['.'], { cwd: dir });
  expect(r.diagnostics).toEqual([]);
  if (!r.ok) throw new Error('not ok');
  expect(r.state.sites.map((s) => s.metadata.name)).toEqual(['site-a', 'site-b', 'site-z']);
  expect(r.state.sources).toEqual({
    'Site/site-a': { file: join('a', 'base.yaml'), line: 1, column: 1 },
    'Site/site-b': { file: join('a', 'base.yaml'), line: 6, column: 1 },
    'ReplicationPolicy/every-5m': { file: join('a', 'base.yaml'), line: 11, column: 1 },
    'Site/site-z': { file: join('a', 'z-extra.YAML'), line: 1, column: 1 },
    'ProtectedVM/web-01': { file: join('b', 'vms.yml'), line: 1, column: 1 },
  });
});

test('lists are sorted by name whatever the declaration order', async () => {
  write('x.yaml', doc('Site', 'zulu', '{type: host}') + doc('Site', 'alpha', '{type: host}') + doc('Site', 'mike', '{type: host}'));
  const r = await loadDesiredState(['x.yaml'], { cwd: dir });
  expect(r.ok && r.state.sites.map((s) => s.metadata.name)).toEqual(['alpha', 'mike', 'zulu']);
});

test('explicit files load whatever their extension, and a file named twice loads once', async () => {
  write('sites.conf', BASE);
  const r = await loadDesiredState(['sites.conf', join(dir, 'sites.conf')], { cwd: dir });
  expect(r.diagnostics).toEqual([]);
  expect(r.ok && r.state.sites).toHaveLength(2);
});

test('file names are relative to cwd inside it and absolute outside it', async () => {
  write('in/x.yaml', 'kind: Nope\n');
  const inside = await loadDesiredState(['in'], { cwd: dir });
  expect(inside.diagnostics.map(brief)).toEqual([`${join('in', 'x.yaml')}:1:7 kind unknown kind "Nope"`]);
  const outside = await loadDesiredState([join(dir, 'in')], { cwd: join(dir, 'in', 'deeper') });
  expect(outside.diagnostics[0].file).toBe(join(dir, 'in', 'x.yaml'));
});

test('missing paths, empty directories, dangling links, non-UTF-8 and oversized files are whole-file diagnostics', async () => {
  mkdirSync(join(dir, 'empty'));
  mkdirSync(join(dir, 'links'));
  symlinkSync(join(dir, 'nowhere.yaml'), join(dir, 'links', 'dangling.yaml'));
  write('latin1.yaml', Buffer.from([0x61, 0x3a, 0x20, 0xe9, 0x0a]));
  write('big.yaml', '');
  truncateSync(join(dir, 'big.yaml'), 16 * 1024 * 1024 + 1);
  const r = await loadDesiredState(['missing.yaml', 'empty', 'links', 'latin1.yaml', 'big.yaml'], { cwd: dir });
  expect(r.ok).toBe(false);
  expect(r.diagnostics.map((d) => `${d.file}:${d.line}:${d.column} ${d.path} ${d.summary}`)).toEqual([
    'missing.yaml:0:0  path not found',
    'empty:0:0  no YAML files in directory',
    `${join('links', 'dangling.yaml')}:0:0  cannot read file`,
    'latin1.yaml:0:0  not a text file',
    'big.yaml:0:0  file is too large',
  ]);
});

test('no paths at all is a diagnostic', async () => {
  const r = await loadDesiredState([], { cwd: dir });
  expect(r.ok).toBe(false);
  expect(r.diagnostics[0].summary).toBe('no paths given');
});

test('references resolve across files, and diagnostics come sorted by file, line and column', async () => {
  write('1-vms.yaml', doc('ProtectedVM', 'web-01', '{vm: web-01, primary: site-a, replica: site-c, policy: every-5m}') + 'kind: Bogus\n');
  write('2-base.yaml', BASE + doc('Site', 'site-a', '{type: host}'));
  const r = await loadDesiredState(['.'], { cwd: dir });
  expect(r.diagnostics.map(brief)).toEqual([
    '1-vms.yaml:4:46 spec.replica replica site "site-c" is not declared',
    '1-vms.yaml:6:7 kind unknown kind "Bogus"',
    '2-base.yaml:18:18 metadata.name duplicate Site name "site-a"',
  ]);
});

test('script paths resolve against the declaring file; a missing or non-executable script is a warning', async () => {
  const planDoc = (path: string) => doc('RecoveryPlan', 'plan', `{groups: [{vms: [web-01], after: [{script: {path: ${path}}}]}]}`);
  write('base.yaml', BASE + doc('ProtectedVM', 'web-01', '{vm: web-01, primary: site-a, replica: site-b, policy: every-5m}'));
  write('plans/plan.yaml', planDoc('scripts/go.sh'));
  write('plans/scripts/go.sh', '#!/bin/sh\n');
  chmodSync(join(dir, 'plans/scripts/go.sh'), 0o755);
  const ok = await loadDesiredState(['.'], { cwd: dir });
  expect(ok.diagnostics).toEqual([]);
  expect(ok.ok && ok.state.recoveryPlans[0].spec.groups[0].after?.[0].script?.path).toBe(join(dir, 'plans/scripts/go.sh'));

  chmodSync(join(dir, 'plans/scripts/go.sh'), 0o644);
  write('plans/plan.yaml', planDoc('scripts/go.sh'));
  const notExec = await loadDesiredState(['.'], { cwd: dir });
  // root may execute any file with an x bit only; without one, access(X_OK) fails for root too.
  expect(notExec.ok).toBe(true);
  expect(notExec.diagnostics.map(brief)).toEqual([`${join('plans', 'plan.yaml')}:4:57 spec.groups[0].after[0].script.path script not found or not executable`]);
  expect(notExec.diagnostics[0].severity).toBe('warning');
});

test('garbage never makes loading throw, and document problems always carry a position and a path', async () => {
  const garbage: Record<string, string | Buffer> = {
    'binary.yaml': Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7919) % 256)),
    'huge-numbers.yaml': doc('Site', 's1', '{type: host, replicaServer: {enabled: true, port: 1e400}}') + doc('ReplicationPolicy', 'p1', '{bandwidth: 99999999999999999999999}'),
    'deep.yaml': 'apiVersion: drsite.dev/v1\nkind: Site\nmetadata: {name: s2, labels: ' + '{a: '.repeat(20_000) + '1' + '}'.repeat(20_001) + '\nspec: {type: host}\n',
    'deep-block.yaml': doc('Site', 's3', '{type: host}') + 'apiVersion: drsite.dev/v1\nkind: Site\nmetadata:\n' + Array.from({ length: 2000 }, (_, i) => `${' '.repeat(i + 2)}k${i}:`).join('\n') + ' 1\n',
    'aliases.yaml': 'x: &x {type: host}\napiVersion: drsite.dev/v1\nkind: Site\nmetadata: {name: s4}\nspec: *x\n---\na: &a [*a]\n',
    'weird-types.yaml': 'apiVersion: [drsite.dev/v1]\nkind: {Site: 1}\nmetadata: 5\nspec: null\n---\n? [complex, key]\n: value\n',
    'unicode.yaml': '\ufeffapiVersion: drsite.dev/v1\nkind: Site\nmetadata: {name: "s\u00e9"}\nspec: {type: host, replicaServer: {enabled: true, defaultStoragePath: "\u{1F4BE}"}}\n',
    'merge-keys.yaml': 'apiVersion: drsite.dev/v1\nkind: Site\nmetadata: {name: s5}\nspec:\n  <<: {type: host}\n',
  };
  for (const [name, text] of Object.entries(garbage)) write(name, text);
  const r = await loadDesiredState(['.'], { cwd: dir });
  expect(r.ok).toBe(false);
  const files = new Set(r.diagnostics.map((d) => d.file));
  expect([...files].sort()).toEqual(Object.keys(garbage).sort());
  for (const d of r.diagnostics) {
    expect(d.file).not.toBe('');
    if (d.line === 0) {
      expect(d.column).toBe(0);
      expect(d.path).toBe('');
    } else {
      expect(d.column).toBeGreaterThanOrEqual(1);
    }
    expect(d.summary).not.toBe('');
  }
  const summaries = r.diagnostics.map(brief);
  expect(summaries).toContain('binary.yaml:0:0  not a text file');
  expect(summaries).toContain('huge-numbers.yaml:4:57 spec.replicaServer.port number is not finite');
  expect(summaries).toContain('huge-numbers.yaml:9:19 spec.bandwidth number is too large');
  expect(summaries).toContain('aliases.yaml:7:8 a[0] recursive alias');
  expect(summaries).toContain('aliases.yaml:1:1 x unknown field "x"');
  expect(summaries).toContain('merge-keys.yaml:5:3 spec["<<"] unknown field "<<"');
  // Where the parser's stack runs out depends on the stack size, so only the line is fixed.
  expect(summaries).toContainEqual(expect.stringMatching(/^deep\.yaml:3:\d+ {2}invalid YAML: the document is nested too deeply or too large$/));
  expect(summaries).toContain('weird-types.yaml:2:7 kind unknown kind (object)');
  expect(summaries).toContain('unicode.yaml:3:18 metadata.name invalid value "s\u00e9"');
});
