// The peers the bench compares against come from Debian packages. Missing ones are installed with
// apt-get only when running as root in CI; otherwise the bench says what is missing and measures
// without them.
import { execFileSync, spawnSync } from 'node:child_process';

/** Tool -> Debian package. `time` is GNU time (/usr/bin/time), used for CPU and RSS of peers. */
export const PEER_PACKAGES: Readonly<Record<string, string>> = {
  rsync: 'rsync',
  zstd: 'zstd',
  openssl: 'openssl',
  'qemu-img': 'qemu-utils',
  time: 'time',
};

function present(tool: string): boolean {
  const path = tool === 'time' ? '/usr/bin/time' : tool;
  return spawnSync('sh', ['-c', `command -v ${path}`], { stdio: 'ignore' }).status === 0;
}

function ciLike(): boolean {
  return ['CI', 'GITHUB_ACTIONS', 'GITLAB_CI', 'BUILDKITE'].some((k) => !!process.env[k] && process.env[k] !== 'false');
}

export function ensureTools(log: (m: string) => void): Set<string> {
  let missing = Object.keys(PEER_PACKAGES).filter((t) => !present(t));
  if (missing.length && process.getuid?.() === 0 && ciLike()) {
    const pkgs = [...new Set(missing.map((t) => PEER_PACKAGES[t]))];
    log(`installing peer packages: ${pkgs.join(' ')}`);
    try {
      execFileSync('apt-get', ['update'], { stdio: 'inherit' });
      execFileSync('apt-get', ['install', '-y', '--no-install-recommends', ...pkgs], { stdio: 'inherit', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
    } catch (e) {
      log(`apt-get failed: ${(e as Error).message}`);
    }
    missing = missing.filter((t) => !present(t));
  }
  if (missing.length) {
    log(`missing peers (measured without them): ${missing.map((t) => `${t} (Debian package ${PEER_PACKAGES[t]})`).join(', ')}; ` +
      'install them with apt-get, or run as root with CI=1 to let the bench do it');
  }
  return new Set(Object.keys(PEER_PACKAGES).filter((t) => !missing.includes(t)));
}

/** First line of `<tool> --version` (or `openssl version`), for RESULTS.md. */
export function toolVersion(tool: string): string {
  const args = tool === 'openssl' ? ['version'] : tool === 'time' ? ['--version'] : ['--version'];
  const bin = tool === 'time' ? '/usr/bin/time' : tool;
  const r = spawnSync(bin, args, { encoding: 'utf8' });
  const out = `${r.stdout ?? ''}${r.stderr ?? ''}`.trim().split('\n')[0];
  return r.error ? 'missing' : out.replace(/\*+/g, '').trim();
}
