// The test lanes (scripts/test-lanes.ts runs them in this order for `npm test`):
//   fast     unit and in-process tests (real sockets, TLS, SQLite, embedded sites) and the bench
//            smoke run (it never judges speed): two files at a time.
//   qemu     real guests under QEMU (TCG takes a core per booting guest), and
//   libvirt  libvirt domains: these two lanes run beside each other, one file at a time each, so
//            at most two guests boot at once and libvirt tests never share libvirtd with another.
//   serial   kill loops, timing-tuned fault injection, etcd clusters: one file at a time, alone
//            on the machine (beside another lane, network-faults' stall give-up failed once).
// `npm run test:<lane>` runs one lane alone.
import { defineConfig } from 'vitest/config';

// A file's lane is in its name, so test folders can mirror src/: `<name>.qemu.test.ts`,
// `<name>.libvirt.test.ts`, `<name>.serial.test.ts`; every other `*.test.ts` is fast.
export const LANES = {
  qemu: ['test/**/*.qemu.test.ts'],
  libvirt: ['test/**/*.libvirt.test.ts'],
  serial: ['test/**/*.serial.test.ts'],
};

const shared = { testTimeout: 60_000, hookTimeout: 60_000 };

export default defineConfig({
  test: {
    pool: 'forks',
    // The fast lane takes both cores; the others run with --no-file-parallelism (vitest takes
    // worker counts per run, not per project).
    maxWorkers: 2,
    minWorkers: 1,
    projects: [
      { test: { ...shared, name: 'fast', include: ['test/**/*.test.ts'], exclude: Object.values(LANES).flat() } },
      ...Object.entries(LANES).map(([name, include]) => ({ test: { ...shared, name, include } })),
    ],
  },
});
