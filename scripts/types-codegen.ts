// Schema → TypeScript, shared by the generator script and the drift test.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { compile, type JSONSchema } from 'json-schema-to-typescript';

export const TYPES_FILE = 'src/model/types.generated.ts';
export const KIND_FILES = ['site', 'replicationpolicy', 'networkmapping', 'protectedvm', 'recoveryplan'];

type Json = Record<string, unknown>;

/** Inlines common.schema.json's $defs so the compiler never resolves a URL. */
function bundle(schema: Json, common: Json): Json {
  const defs = { ...(common.$defs as Json), ...((schema.$defs as Json) ?? {}) };
  const text = JSON.stringify({ ...schema, $defs: defs }).replaceAll('"common.schema.json#/$defs/', '"#/$defs/');
  const out = JSON.parse(text) as Json;
  delete out.$id;
  return out;
}

function joinDocToDecl(acc: string[], piece: string): string[] {
  const last = acc.at(-1);
  if (last !== undefined && last.trimStart().startsWith('/**') && !/^export /m.test(last)) acc[acc.length - 1] = `${last}\n${piece}`;
  else acc.push(piece);
  return acc;
}

export async function generateTypes(root: string): Promise<string> {
  const read = (f: string) => JSON.parse(readFileSync(join(root, 'schemas', `${f}.schema.json`), 'utf8')) as Json;
  const common = read('common');
  const parts: string[] = [];
  const seen = new Set<string>();
  for (const file of KIND_FILES) {
    const ts = await compile(bundle(read(file), common) as JSONSchema, file, {
      bannerComment: '',
      additionalProperties: false,
      unreachableDefinitions: false,
      format: true,
      style: { singleQuote: true, printWidth: 110 },
      strictIndexSignatures: true,
    });
    // Shared definitions (ObjectMeta, ...) come out of every kind: keep the first copy.
    // Each declaration starts at its JSDoc block (if any) at column 0.
    for (const decl of ts.split(/\n(?=\/\*\*|export )/).reduce<string[]>(joinDocToDecl, [])) {
      const name = /^export (?:interface|type) (\w+)/m.exec(decl)?.[1];
      if (!name || seen.has(name)) continue;
      seen.add(name);
      parts.push(decl.trim());
    }
  }
  return [
    '// Generated from schemas/*.schema.json by `npm run gen:types`. Do not edit by hand:',
    '// test/model/types-drift.test.ts fails when this file and the schemas disagree.',
    '',
    ...parts.map((p) => `${p}\n`),
  ].join('\n');
}
