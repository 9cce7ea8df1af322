// Generates src/model/types.generated.ts from schemas/*.schema.json: the schemas are the single
// source of truth and test/model/types-drift.test.ts fails when the committed file differs.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { generateTypes, TYPES_FILE } from './types-codegen.ts';

const root = join(import.meta.dirname, '..');
writeFileSync(join(root, TYPES_FILE), await generateTypes(root));
console.log(`wrote ${TYPES_FILE}`);
