import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // Two test files at a time: on CI's 2 cores vitest's default (cores - 1) runs them one by one,
    // and most files spend their time waiting on real servers, guests and disks, not on a core.
    maxWorkers: 2,
    minWorkers: 1,
  },
});
