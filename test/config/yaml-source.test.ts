// YAML with positions: every node maps back to file:line:column, and no input makes parsing throw.
import { describe, expect, test } from 'vitest';
import { parseYamlSource } from '../../src/config/yaml-source.ts';

const one = (text: string) => {
  const r = parseYamlSource('f.yaml', text);
  expect(r.diagnostics).toEqual([]);
  expect(r.documents).toHaveLength(1);
  return r.documents[0];
};

describe('positions', () => {
  const text = [
    'apiVersion: drsite.dev/v1', // 1
    'kind: RecoveryPlan', //          2
    'metadata:', //                   3
    '  name: plan', //                4
    'spec:', //                       5
    '  groups:', //                   6
    '    - vms: [db-01, web-01]', //  7
    '    - vms:', //                  8
    '        - app-01', //            9
    '      after:', //               10
    '        - {script: {path: x}}', // 11
    '  empty:', //                   12
  ].join('\n');

  test.each([
    ['spec.groups[0].vms[1] (flow sequence item)', ['spec', 'groups', 0, 'vms', 1], 'value', 7, 20],
    ['spec.groups[1].vms[0] (block sequence item)', ['spec', 'groups', 1, 'vms', 0], 'value', 9, 11],
    ['the key of spec.groups[1].after', ['spec', 'groups', 1, 'after'], 'key', 10, 7],
    ['a value inside a flow mapping', ['spec', 'groups', 1, 'after', 0, 'script', 'path'], 'value', 11, 27],
    ['a key with no value points at the key', ['spec', 'empty'], 'value', 12, 3],
    ['a missing field resolves to its deepest existing ancestor', ['spec', 'groups', 0, 'before', 3], 'value', 7, 7],
    ['the document root', [], 'value', 1, 1],
  ] as const)('%s', (_reason, path, target, line, column) => {
    expect(one(text).locate(path, target)).toEqual({ line, column });
  });

  test('CRLF line endings and a BOM-less Windows file keep columns exact', () => {
    const d = one('kind: Site\r\nspec:\r\n  type: host\r\n');
    expect(d.locate(['spec', 'type'])).toEqual({ line: 3, column: 9 });
  });

  test('aliases are followed to their anchor', () => {
    const d = one('base: &b {port: 8443}\nspec: *b\n');
    expect(d.value).toEqual({ base: { port: 8443 }, spec: { port: 8443 } });
    expect(d.locate(['spec', 'port'])).toEqual({ line: 1, column: 17 });
  });

  test('documents keep their index and start, empty ones are skipped', () => {
    const r = parseYamlSource('f.yaml', '# c\na: 1\n---\n---\n\nb: 2\n---\n');
    expect(r.diagnostics).toEqual([]);
    expect(r.documents.map((d) => [d.index, d.start, d.value])).toEqual([
      [0, { line: 2, column: 1 }, { a: 1 }],
      [2, { line: 6, column: 1 }, { b: 2 }],
    ]);
  });
});

describe('problems are diagnostics, never exceptions', () => {
  const errors = (text: string) => parseYamlSource('f.yaml', text).diagnostics.map((d) => `${d.severity} ${d.line}:${d.column} ${d.path} ${d.summary}`);

  test.each([
    ['empty file', '', ['error 0:0  empty file']],
    ['only whitespace', ' \n\n\t\n', ['error 0:0  empty file']],
    ['only comments', '# nothing\n# here\n', ['error 0:0  no documents']],
    ['only empty documents', '---\n---\n', ['error 0:0  no documents']],
    ['NUL bytes', 'a: 1\n\u0000\u0001\u0002', ['error 0:0  not a text file']],
    ['a scalar document', 'hello\n', ['error 1:1  document is not a mapping']],
    ['a null document', '~\n', ['error 1:1  document is not a mapping']],
    ['duplicate keys', 'a: 1\na: 2\n', ['error 2:1  invalid YAML: Map keys must be unique']],
    ['tabs as indentation', 'a:\n\tb: 1\n', ['error 2:1  invalid YAML: Tabs are not allowed as indentation']],
    // The parser reports this spot twice (nested mappings, implicit keys): one diagnostic per spot.
    ['a key indented deeper than its siblings', 'spec:\n  type: local\n   host: x\n', ['error 2:9  invalid YAML: Nested mappings are not allowed in compact mappings']],
    ['an unresolved alias', 'a: 1\nb: *nope\n', ['error 2:4  invalid YAML: Unresolved alias (the anchor must be set before the alias): nope']],
    ['a recursive alias', 'a: &x [1, *x]\n', ['error 1:11 a[1] recursive alias']],
    ['a number beyond float range', 'spec:\n  port: 1e999\n', ['error 2:9 spec.port number is not finite']],
    ['.inf', 'a: [.inf]\n', ['error 1:5 a[0] number is not finite']],
    ['an integer beyond 2^53', 'a: 123456789012345678901234567890\n', ['error 1:4 a number is too large']],
    ['binary data', 'a: !!binary aGVsbG8=\n', ['error 1:13 a unsupported YAML value']],
    ['a set', 'a: !!set {x, y}\n', ['error 1:10 a unsupported YAML value']],
    ['an unknown tag (a warning, read as a string)', 'a: !vault secret\n', ['warning 1:4  YAML: Unresolved tag: !vault']],
  ] as const)('%s', (_reason, text, want) => {
    expect(errors(text)).toEqual(want);
  });

  test('a billion-laughs alias bomb is refused', () => {
    const lines = ['a: &a [x, x, x, x, x, x, x, x, x, x]'];
    for (let i = 1; i < 9; i++) lines.push(`${String.fromCharCode(97 + i)}: &${String.fromCharCode(97 + i)} [${Array(10).fill(`*${String.fromCharCode(96 + i)}`).join(', ')}]`);
    const r = parseYamlSource('f.yaml', lines.join('\n'));
    expect(r.documents).toEqual([]);
    expect(r.diagnostics[0].summary).toMatch(/invalid YAML: .*alias/i);
  });

  test('deeply nested flow and block YAML', () => {
    for (const text of ['a: ' + '['.repeat(50_000) + ']'.repeat(50_000), Array.from({ length: 3000 }, (_, i) => `${' '.repeat(i)}k:`).join('\n') + ' 1']) {
      const r = parseYamlSource('f.yaml', text);
      for (const d of r.diagnostics) expect(d.line).toBeGreaterThanOrEqual(d.severity === 'error' ? 1 : 0);
    }
  });

  test('random bytes', () => {
    let seed = 42;
    const rand = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) % 256);
    for (let n = 0; n < 200; n++) {
      const text = String.fromCharCode(...Array.from({ length: 200 }, () => rand() || 32));
      expect(() => parseYamlSource('f.yaml', text)).not.toThrow();
    }
  });
});
