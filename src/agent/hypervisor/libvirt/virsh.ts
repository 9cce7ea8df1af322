// The libvirt client: the `virsh` command line, run with execFile (no shell) against one connection
// URI. npm has no maintained libvirt RPC client for Node (the `libvirt` package is an unmaintained
// native binding), and virsh is what every libvirt host has. Its failures become typed errors that
// name the domain: a libvirtd that does not answer is retryable, a missing domain is not.
import { execFile } from 'node:child_process';
import { RetryableError, TerminalError } from '../../../model/errors.ts';

export const DEFAULT_URI = 'qemu:///system';

export interface VirshOptions {
  /** The domain the call is about, named in every error. */
  readonly domain?: string;
  /** stdin for the command (virsh reads `/dev/stdin` as a file argument). */
  readonly input?: string;
  readonly timeoutMs?: number;
}

export class Virsh {
  readonly uri: string;
  readonly #bin: string;

  constructor(uri: string = DEFAULT_URI, bin = 'virsh') {
    this.uri = uri;
    this.#bin = bin;
  }

  /** Runs `virsh -c <uri> <args>`; resolves with stdout. */
  run(args: readonly string[], opts: VirshOptions = {}): Promise<string> {
    return new Promise((resolve, reject) => {
      const child = execFile(this.#bin, ['-q', '-c', this.uri, ...args], { maxBuffer: 64 << 20, timeout: opts.timeoutMs ?? 120_000, env: { ...process.env, LC_ALL: 'C' } }, (err, stdout, stderr) => {
        if (!err) return resolve(stdout);
        reject(this.#error(args, err as NodeJS.ErrnoException & { killed?: boolean }, String(stderr), opts.domain));
      });
      if (opts.input !== undefined) child.stdin?.end(opts.input);
    });
  }

  /** Whether libvirtd answers on this URI (a cheap call). */
  async answers(): Promise<boolean> {
    return this.run(['uri'], { timeoutMs: 15_000 }).then(() => true, () => false);
  }

  #error(args: readonly string[], err: NodeJS.ErrnoException & { killed?: boolean }, stderr: string, domain: string | undefined): Error {
    const about = domain !== undefined ? `libvirt domain "${domain}" at ${this.uri}` : `libvirt at ${this.uri}`;
    if (err.code === 'ENOENT') return new TerminalError('not-found', `${about}: the virsh command is not installed (Debian package libvirt-clients)`);
    const text = stderr.split('\n').map((l) => l.replace(/^error:\s*/, '').trim()).filter(Boolean).join('; ') || err.message;
    if (err.killed) return new RetryableError('network', `${about}: virsh ${args[0]} did not answer within its timeout`);
    if (/failed to connect to the hypervisor|Failed to connect socket|Connection refused|No such file or directory.*libvirt-sock|cannot connect/i.test(text)) {
      return new RetryableError('network', `${about}: libvirtd does not answer (is it running? start it with \`libvirtd -d\` or \`systemctl start libvirtd\`): ${text}`);
    }
    if (/Domain not found|failed to get domain|no domain with matching name/i.test(text)) {
      return new TerminalError('not-found', `${about}: no such domain (virsh list --all does not show it)`);
    }
    if (/Network not found|failed to get network/i.test(text)) return new TerminalError('not-found', `${about}: ${text}`);
    if (/authentication|access denied|Permission denied/i.test(text)) return new TerminalError('authorization', `${about}: virsh ${args[0]}: ${text}`);
    return new TerminalError('invalid-state', `${about}: virsh ${args[0]} failed: ${text}`);
  }
}

/** True when the error says the libvirt object does not exist. */
export function isNotFound(e: unknown): boolean {
  return TerminalError.is(e) && e.code === 'not-found';
}
