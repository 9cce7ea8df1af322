import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect, test } from 'vitest';
import { GENERATED_DIR, generateTypes } from '../../scripts/types-codegen.ts';

const root = join(import.meta.dirname, '..', '..');

test('the committed model types are exactly what the schemas generate', async () => {
  const generated = await generateTypes(root);
  // On failure: run `npm run gen:types` and commit the result.
  for (const [path, text] of generated) expect(readFileSync(join(root, path), 'utf8'), path).toBe(text);
  // And no file is left over from a schema group that is gone.
  const committed = readdirSync(join(root, GENERATED_DIR)).map((f) => `${GENERATED_DIR}/${f}`);
  expect(committed.sort()).toEqual([...generated.keys()].filter((p) => p.startsWith(`${GENERATED_DIR}/`)).sort());
});

test('every generated file stays under 400 lines', async () => {
  for (const [path, text] of await generateTypes(root)) expect(text.split('\n').length, path).toBeLessThan(400);
});
