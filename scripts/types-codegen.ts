// Schema → TypeScript, shared by the generator script and the drift test. One generated file per
// schema group under src/model/generated/: each kind's schema, and the agent API's request bodies.
// A declaration shared by several kinds (ObjectMeta, ...) is written once, in the first kind's
// file, and imported by the others; src/model/types.generated.ts re-exports the kinds.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { compile, type JSONSchema } from 'json-schema-to-typescript';

export const GENERATED_DIR = 'src/model/generated';
export const BARREL_FILE = 'src/model/types.generated.ts';
export const KIND_FILES = ['site', 'replicationpolicy', 'networkmapping', 'protectedvm', 'recoveryplan'];
/**
 * Schema groups that are not kinds: every `$defs` entry becomes a type (no root type). `byName`:
 * also a map from each definition's name to its type (the agent API's route table reads it).
 */
const DEFS_GROUPS = [
  { schema: 'agent-api/requests', file: 'agent-api', strictIndexSignatures: true, byName: true },
  // Views map disk ids to what the code looked up itself: indexed without `| undefined`.
  { schema: 'agent-api/responses', file: 'agent-api-responses', strictIndexSignatures: false, byName: false },
];

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

/** The compiler's output split into named declarations, each with its JSDoc block. */
function declarations(ts: string): { name: string; text: string }[] {
  return ts
    .split(/\n(?=\/\*\*|export )/)
    .reduce<string[]>(joinDocToDecl, [])
    .flatMap((decl) => {
      const name = /^export (?:interface|type) (\w+)/m.exec(decl)?.[1];
      return name ? [{ name, text: decl.trim() }] : [];
    });
}

const compileOptions = {
  bannerComment: '',
  additionalProperties: false,
  format: true,
  style: { singleQuote: true, printWidth: 110 },
  strictIndexSignatures: true,
} as const;

function header(source: string): string[] {
  return [
    `// Generated from ${source} by \`npm run gen:types\`. Do not edit by hand:`,
    '// test/model/types-drift.test.ts fails when this file and the schemas disagree.',
    '',
  ];
}

/** `import type` lines for the names a file uses but does not declare. */
function importLines(body: string, from: Map<string, string>): string[] {
  const byModule = new Map<string, string[]>();
  for (const [name, module] of from) {
    if (new RegExp(`\\b${name}\\b`).test(body)) byModule.set(module, [...(byModule.get(module) ?? []), name]);
  }
  const lines = [...byModule].map(([module, names]) => `import type { ${names.sort().join(', ')} } from '${module}';`);
  return lines.length ? [...lines, ''] : [];
}

function fileText(source: string, imports: string[], decls: string[]): string {
  return [...header(source), ...imports, ...decls.map((d) => `${d}\n`)].join('\n');
}

async function kindFiles(read: (f: string) => Json): Promise<Map<string, string>> {
  const common = read('common');
  const owner = new Map<string, string>();
  const files = new Map<string, string>();
  for (const kind of KIND_FILES) {
    const ts = await compile(bundle(read(kind), common) as JSONSchema, kind, { ...compileOptions, unreachableDefinitions: false });
    const own = declarations(ts).filter((d) => !owner.has(d.name));
    for (const d of own) owner.set(d.name, `./${kind}.ts`);
    const body = own.map((d) => d.text).join('\n');
    const shared = new Map([...owner].filter(([name, module]) => module !== `./${kind}.ts` && !own.some((d) => d.name === name)));
    files.set(`${GENERATED_DIR}/${kind}.ts`, fileText(`schemas/${kind}.schema.json`, importLines(body, shared), own.map((d) => d.text)));
  }
  return files;
}

/** The compiler's note on every definition ("This interface was referenced by ... via the `definition` X") says nothing here. */
function withoutReferenceNotes(text: string): string {
  return text.replace(/\n \*\n \* This interface was referenced by `\w+`'s JSON-Schema\n \* via the `definition` "\w+"\./g, '')
    .replace(/\/\*\*\n \* This interface was referenced by `\w+`'s JSON-Schema\n \* via the `definition` "\w+"\.\n \*\/\n/g, '');
}

async function defsFile(read: (f: string) => Json, group: (typeof DEFS_GROUPS)[number]): Promise<[string, string]> {
  const { tsImports, ...schema } = read(group.schema) as Json & { tsImports?: Record<string, string> };
  delete schema.$id;
  const root = String(schema.title);
  // minItems would make arrays tuples ([T, ...T[]]), which callers building arrays cannot satisfy.
  const options = { ...compileOptions, unreachableDefinitions: true, ignoreMinAndMaxItems: true, strictIndexSignatures: group.strictIndexSignatures };
  const ts = await compile(schema as JSONSchema, root, options);
  const decls = declarations(withoutReferenceNotes(ts)).filter((d) => d.name !== root).map((d) => d.text);
  const names = Object.keys(schema.$defs as Json);
  if (group.byName) decls.push([
    `/** Every definition of ${group.schema}.schema.json by its name: a schema's name names its type. */`,
    `export interface ${root} {`,
    ...names.map((n) => `  ${n}: ${n};`),
    '}',
  ].join('\n'));
  const imports = importLines(decls.join('\n'), new Map(Object.entries(tsImports ?? {})));
  return [`${GENERATED_DIR}/${group.file}.ts`, fileText(`schemas/${group.schema}.schema.json`, imports, decls)];
}

function barrel(): string {
  return [
    '// The declarative model\'s types, generated from schemas/*.schema.json (one file per kind in',
    '// generated/) by `npm run gen:types`. Do not edit by hand: test/model/types-drift.test.ts checks them.',
    '',
    ...KIND_FILES.map((k) => `export type * from './generated/${k}.ts';`),
    '',
  ].join('\n');
}

/** Every generated file by its path from the repository root. */
export async function generateTypes(root: string): Promise<Map<string, string>> {
  const read = (f: string) => JSON.parse(readFileSync(join(root, 'schemas', `${f}.schema.json`), 'utf8')) as Json;
  const files = await kindFiles(read);
  for (const group of DEFS_GROUPS) files.set(...(await defsFile(read, group)));
  files.set(BARREL_FILE, barrel());
  return files;
}
