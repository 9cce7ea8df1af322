// Two lanes. `fast`: unit and in-process tests (real sockets, TLS, SQLite, embedded sites).
// `serial`: what must not share the machine with another file of its kind — kill loops and
// timing-tuned fault injection, real guests under QEMU (TCG eats a core per guest), etcd clusters
// and the bench smoke run — one file at a time, on a machine the fast lane has left: run beside
// it, the timing-tuned fault tests still fail now and then (a stall's give-up in network-faults).
// `npm test` runs the fast lane, then the serial one; `npm run test:fast` / `test:serial` one.
import { defineConfig } from 'vitest/config';

/** Test files that must not share the machine with another test file. */
export const SERIAL = [
  'test/reliability/**/*.test.ts',
  'test/qemu/**/*.test.ts',
  'test/qemu-failover/**/*.test.ts',
  'test/qemu-track/**/*.test.ts',
  'test/libvirt/**/*.test.ts',
  'test/e2e/qemu*.test.ts',
  'test/etcd/**/*.test.ts',
  'test/vault/etcd.test.ts',
  'test/bench/**/*.test.ts',
  // Injected stalls and paced uploads: their outcomes depend on timers firing on time.
  'test/agent/faults.test.ts',
  'test/transport/upload-pace.test.ts',
  'test/core-primary/bandwidth.test.ts',
];

const shared = { testTimeout: 60_000, hookTimeout: 60_000 };

export default defineConfig({
  test: {
    pool: 'forks',
    // The fast lane takes both cores; the serial lane runs with --no-file-parallelism (vitest
    // takes worker counts per run, not per project).
    maxWorkers: 2,
    minWorkers: 1,
    projects: [
      { test: { ...shared, name: 'fast', include: ['test/**/*.test.ts'], exclude: SERIAL } },
      { test: { ...shared, name: 'serial', include: SERIAL } },
    ],
  },
});
