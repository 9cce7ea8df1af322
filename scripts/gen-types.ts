// Generates src/model/generated/*.ts (and the src/model/types.generated.ts barrel) from
// schemas/: the schemas are the single source of truth and test/model/types-drift.test.ts fails
// when the committed files differ. Files of groups that no longer exist are removed.
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { GENERATED_DIR, generateTypes } from './types-codegen.ts';

const root = join(import.meta.dirname, '..');
const files = await generateTypes(root);
mkdirSync(join(root, GENERATED_DIR), { recursive: true });
for (const name of readdirSync(join(root, GENERATED_DIR))) {
  if (!files.has(`${GENERATED_DIR}/${name}`)) rmSync(join(root, GENERATED_DIR, name));
}
for (const [path, text] of files) {
  writeFileSync(join(root, path), text);
  console.log(`wrote ${path}`);
}
