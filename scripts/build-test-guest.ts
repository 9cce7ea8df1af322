// Builds (or finds in .cache/test-guest) drsite's test guest and prints its kernel and initrd paths.
// Run: npx node scripts/build-test-guest.ts
import { buildTestGuest } from '../src/demo/test-guest.ts';

buildTestGuest().then(
  (g) => console.log(JSON.stringify(g, null, 2)),
  (e: Error) => {
    console.error(`build-test-guest: ${e.message}`);
    process.exit(1);
  },
);
