// The contract between the bench runner and its cases: a case runs its scenarios several times,
// measuring ours and its peers in the same run, and returns plain data the runner reports.

export interface BenchContext {
  /** Small sizes, shortened policies: a one-minute smoke run that never fails on speed. */
  readonly quick: boolean;
  /** Runs per measured subject (at least 3). */
  readonly runs: number;
  /** Scratch folder of this case (created, emptied afterwards by the runner). */
  readonly workDir: string;
  /** Peer tools present (rsync, zstd, openssl, qemu-img, time). */
  readonly tools: ReadonlySet<string>;
  log(message: string): void;
}

/** One timed run of one subject. */
export interface Sample {
  readonly wallMs: number;
  /** User + system CPU of every process involved (ours, replica peer, or the tool and its children). */
  readonly cpuMs: number;
  /** Peak resident set of the largest process involved, bytes. */
  readonly peakRssBytes: number;
  /** Bytes that crossed the wire (pipe, socket) between the two sides, both directions. */
  readonly wireBytes?: number;
  /** Case-specific figures (e.g. amplification, lag). */
  readonly extra?: Readonly<Record<string, number>>;
}

export interface Subject {
  /** `drsite` for ours, the tool's command line for a peer. */
  readonly name: string;
  readonly ours: boolean;
  readonly samples: readonly Sample[];
}

export interface Goal {
  /** As the issue states it, e.g. "<= 0.35x rsync wall time". */
  readonly text: string;
  /** What was measured against it, e.g. "0.21x". */
  readonly measured: string;
  /** null: not judged in this scenario (informational). */
  readonly met: boolean | null;
}

export interface Scenario {
  readonly name: string;
  /** Input size the throughput figures refer to, bytes (when meaningful). */
  readonly inputBytes?: number;
  readonly subjects: readonly Subject[];
  readonly goals: readonly Goal[];
  /** How correctness was checked, e.g. "sha256 of replica = primary (3/3 runs)". */
  readonly verified: string;
}

export interface CaseResult {
  readonly status: 'ok' | 'not-built' | 'skipped';
  readonly scenarios: readonly Scenario[];
  readonly notes: readonly string[];
}

export interface BenchCase {
  /** Short id used by --only, e.g. `resync`. */
  readonly name: string;
  /** Heading in RESULTS.md. */
  readonly title: string;
  /** The goal as the issue states it. */
  readonly goal: string;
  run(ctx: BenchContext): Promise<CaseResult>;
}

/** Thrown by a case when a result is not byte-identical: the bench exits non-zero. */
export class CorrectnessError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CorrectnessError';
  }
}
