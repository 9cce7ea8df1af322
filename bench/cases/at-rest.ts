// Case 11, the cost of encryption at rest: the same chain (a full initial copy, then points of
// random 4 KiB writes, 4 additional points kept) applied to a plain replica and to one encrypted
// with AES-256-XTS as every replica an agent creates is; then an older point read back in full
// through its view (undo + image, decrypted). Same process layout as case 5 (the replica is its
// own process), both subjects in the same run.
import { randomBytes } from 'node:crypto';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { newAtRestKey } from '../../src/core/disk/at-rest.ts';
import { encodeChain } from '../lib/chain.ts';
import { measureOwn } from '../lib/measure.ts';
import { ReplicaPeer } from '../lib/replica-peer.ts';
import { MiB, fmtSize } from '../lib/report-helpers.ts';
import type { BenchCase, BenchContext, CaseResult, Sample } from '../lib/types.ts';
import { CorrectnessError } from '../lib/types.ts';

const DISK = 'disk0';
const REL = 'bench-at-rest';
const HOUR = 3_600_000;
const T0 = Date.UTC(2026, 11, 1, 0, 0, 0);
const GOAL = 1.5;

export const atRest: BenchCase = {
  name: 'at-rest',
  title: '11. Encryption at rest: apply and point-in-time read, AES-256-XTS vs a plain replica',
  goal: `<= ${GOAL}x the plain replica's wall time`,
  async run(ctx: BenchContext): Promise<CaseResult> {
    const size = ctx.quick ? 64 * MiB : 256 * MiB;
    const points = ctx.quick ? 3 : 6;
    const perPoint = ctx.quick ? 4 * MiB : 16 * MiB;
    const keys = { encryptionKey: randomBytes(32), macKey: randomBytes(32) };
    ctx.log(`encoding a chain of ${points} points on a ${fmtSize(size)} disk`);
    const { logs, shaAt, changed } = await encodeChain({
      workDir: ctx.workDir, relationshipId: REL, diskId: DISK, size, points, perPoint, keys, t0: T0, spacingMs: HOUR, seed: 11,
    });
    const older = Math.max(2, points - 2);

    const kinds = ['encrypted', 'plain'] as const;
    const apply: Record<string, Sample[]> = { encrypted: [], plain: [] };
    const read: Record<string, Sample[]> = { encrypted: [], plain: [] };
    for (let r = 0; r < ctx.runs; r++) {
      for (const kind of kinds) {
        const rdir = join(ctx.workDir, `replica-${kind}`);
        await rm(rdir, { recursive: true, force: true });
        await mkdir(rdir, { recursive: true });
        const peer = await ReplicaPeer.start({
          dir: rdir, relationshipId: REL, diskId: DISK, diskSize: size, keys, additional: 4,
          ...(kind === 'encrypted' && { atRestKey: newAtRestKey() }),
        });
        try {
          const run = await measureOwn(async () => {
            for (let p = 1; p <= points + 1; p++) await peer.shipAndApply(p, logs[p - 1]);
          }, { helper: () => peer.usage() });
          apply[kind].push(run.sample);
          const got = await peer.imageSha256();
          if (got !== shaAt[points + 1]) throw new CorrectnessError(`at-rest (${kind}) run ${r + 1}: latest image ${got} != expected ${shaAt[points + 1]}`);
          let view = '';
          const v = await measureOwn(async () => {
            view = await peer.viewSha256(older);
          }, { helper: () => peer.usage() });
          if (view !== shaAt[older]) throw new CorrectnessError(`at-rest (${kind}) run ${r + 1}: view of point ${older} is ${view}, expected ${shaAt[older]}`);
          read[kind].push(v.sample);
        } finally {
          await peer.close();
        }
      }
    }
    const med = (s: Sample[]) => s.map((x) => x.wallMs).sort((a, b) => a - b)[s.length >> 1];
    const applyRatio = med(apply.encrypted) / med(apply.plain);
    const readRatio = med(read.encrypted) / med(read.plain);
    return {
      status: 'ok',
      scenarios: [
        {
          name: `apply: ${fmtSize(size)} initial copy + ${points} points of ${fmtSize(perPoint)} random 4 KiB writes, 4 additional points kept`,
          inputBytes: size + changed,
          subjects: [
            { name: 'drsite replica, AES-256-XTS at rest', ours: true, samples: apply.encrypted },
            { name: 'drsite replica, plain', ours: false, samples: apply.plain },
          ],
          goals: [{ text: `apply with encryption at rest <= ${GOAL}x plain`, measured: `${applyRatio.toFixed(2)}x`, met: applyRatio <= GOAL }],
          verified: `sha256 of the latest image (decrypted) = expected, ${ctx.runs}/${ctx.runs} runs each`,
        },
        {
          name: `read: point ${older} of ${points + 1} in full through its view (undo + image), written out as a sparse image`,
          inputBytes: size,
          subjects: [
            { name: 'drsite view, AES-256-XTS at rest', ours: true, samples: read.encrypted },
            { name: 'drsite view, plain', ours: false, samples: read.plain },
          ],
          goals: [{ text: `point-in-time read with encryption at rest <= ${GOAL}x plain`, measured: `${readRatio.toFixed(2)}x`, met: readRatio <= GOAL }],
          verified: `sha256 of the exported view = the disk at point ${older}, ${ctx.runs}/${ctx.runs} runs each`,
        },
      ],
      notes: [
        'AES-256-XTS per 4 KiB unit (tweak = unit number), one node:crypto cipher per unit; a unit of zeroes is stored as zeroes, so images stay sparse. Undo segments hold the images\' ciphertext as it lay, so capturing undo costs no cipher work; applying encrypts, reading decrypts.',
        'The agent-level cases (initial replication over mutual TLS, RPO, failover) run real agents, whose replicas are all encrypted at rest: their figures include this cost.',
      ],
    };
  },
};
