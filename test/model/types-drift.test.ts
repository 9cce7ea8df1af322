import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect, test } from 'vitest';
import { generateTypes, TYPES_FILE } from '../../scripts/types-codegen.ts';

const root = join(import.meta.dirname, '..', '..');

test('the committed model types are exactly what the schemas generate', async () => {
  const committed = readFileSync(join(root, TYPES_FILE), 'utf8');
  const generated = await generateTypes(root);
  // On failure: run `npm run gen:types` and commit the result.
  expect(committed).toBe(generated);
});
