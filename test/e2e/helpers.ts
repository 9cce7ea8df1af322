// End-to-end helpers: a temp copy of examples/quickstart on free ports with its own state dir and
// vault, the real `drsite` CLI as separate processes (one-shot or long-running), and polling.
import { spawn, type ChildProcess } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Vault } from '../../src/vault/vault.ts';
import { freePorts, killGuestsUnder } from '../agent/cluster.ts';
import { DRSITE, ROOT, drsite, type CliResult } from '../cli/run-cli.ts';

export interface Quickstart {
  root: string;
  qs: string;
  state: string;
  vault: string;
  actionLog: string;
  env: NodeJS.ProcessEnv;
  cli(args: string[], timeoutMs?: number): Promise<CliResult>;
  /** Rewrites plan.yaml: the example's plan with this failover block (YAML lines under `failover:`), or none. */
  setFailover(lines: string[] | null, planText?: string): void;
  readVault<T>(fn: (v: Vault) => T): T;
  actions(): string[];
  cleanup(): void;
}

/** A copy of `examples/<example>` (default: the quickstart) whose Replica servers listen on free ports. */
export async function quickstart(example = 'quickstart'): Promise<Quickstart> {
  const root = mkdtempSync(join(tmpdir(), 'drsite-e2e-'));
  const qs = join(root, 'qs');
  cpSync(join(ROOT, 'examples', example), qs, { recursive: true });
  let sites = readFileSync(join(qs, 'sites.yaml'), 'utf8');
  const declared = sites.match(/port: \d+/g) ?? [];
  const free = await freePorts(declared.length);
  declared.forEach((port, i) => (sites = sites.replace(port, `port: ${free[i]}`)));
  // Real guests run under TCG in tests, sparing each run the `auto` probe (which boots the VM's kernel
  // under KVM first); test/e2e/guest-health.qemu.test.ts runs `auto`.
  sites = sites.replace(/accel: auto/g, 'accel: tcg');
  writeFileSync(join(qs, 'sites.yaml'), sites);
  const state = join(root, 'state');
  const vault = join(state, 'vault.db');
  const actionLog = join(root, 'actions.log');
  const env = { DRSITE_ACTION_LOG: actionLog };
  const original = readFileSync(join(qs, 'plan.yaml'), 'utf8');
  return {
    root, qs, state, vault, actionLog, env,
    cli: (args, timeoutMs = 90_000) => drsite([...args, '--state-dir', state], { cwd: root, env, timeoutMs }),
    setFailover(lines, planText = original) {
      writeFileSync(join(qs, 'plan.yaml'), lines ? `${planText.trimEnd()}\n  failover:\n${lines.map((l) => `    ${l}`).join('\n')}\n` : planText);
    },
    readVault<T>(fn: (v: Vault) => T): T {
      const v = Vault.open(vault);
      try {
        return fn(v);
      } finally {
        v.close();
      }
    },
    actions() {
      try {
        return readFileSync(actionLog, 'utf8').split('\n').filter(Boolean);
      } catch {
        return [];
      }
    },
    cleanup() {
      killGuestsUnder(root);
      rmSync(root, { recursive: true, force: true });
    },
  };
}

export interface Running {
  child: ChildProcess;
  output(): string;
  /** Sends the signal and waits for the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** `drsite run <qs>` as a long-running process. */
export function startRun(q: Quickstart, extra: string[] = []): Running {
  const child = spawn(process.execPath, [DRSITE, 'run', 'qs', '--state-dir', q.state, '--poll', '500ms', ...extra], {
    cwd: q.root,
    env: { ...process.env, ...q.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return {
    child,
    output: () => out,
    async stop(signal = 'SIGINT') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}

export async function waitFor<T>(what: string, fn: () => T | undefined | false, timeoutMs = 45_000, logs?: () => string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${logs ? `\n--- output:\n${logs().slice(-3000)}` : ''}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

export interface VmStatus {
  name: string;
  state?: string;
  health?: string;
  direction?: { primary: string; replica: string };
  testVms: string[];
}

export function vmStatus(v: Vault): VmStatus[] {
  return v.listStatus('ProtectedVM').map((s) => {
    const r = s.fields.relationship as { state: string; health: string; direction: { primary: string; replica: string }; testVms: string[] } | null;
    return { name: s.name, ...(r && { state: r.state, health: r.health, direction: r.direction }), testVms: r?.testVms ?? [] };
  });
}

/** The last RecoveryPlan job for the quickstart plan whose input has this failover id. */
export function planJob(v: Vault, failoverId: string) {
  const j = v.listJobs({ type: 'RecoveryPlan', limit: 100 }).find((x) => (x.input as { failoverId?: string }).failoverId === failoverId);
  return j && v.getJob(j.id);
}
