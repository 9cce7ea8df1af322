// A cache of one kind's custom objects kept current by list + watch: list, then watch from the
// list's resourceVersion (with bookmarks, which move it on without events); when the watch ends
// it resumes from the last resourceVersion seen; when that version has expired (410 Gone, as an
// ERROR event or a status) it lists again and replaces the cache, so nothing missed is kept.
import type { CustomObject, KubeApi, WatchEvent } from './kube-api.ts';
import { describeApiError, statusCode } from './kube-api.ts';

export interface InformerOptions {
  api: KubeApi;
  plural: string;
  /** An object changed (prev/next undefined: added/deleted), or the cache was replaced by a list (no arguments). */
  onChange: (change?: { prev: CustomObject | undefined; next: CustomObject | undefined }) => void;
  report?: (line: string) => void;
}

const MAX_BACKOFF_MS = 30_000;

export class Informer {
  readonly plural: string;
  private readonly opts: InformerOptions;
  private readonly store = new Map<string, CustomObject>();
  private resourceVersion = '';
  private abort: AbortController | undefined;
  private stopped = false;
  private failures = 0;
  private hasSynced = false;
  private readonly syncWaiters: (() => void)[] = [];
  private timer: NodeJS.Timeout | undefined;
  /** How many times the cache was filled by a list (the first one and every re-list after 410). */
  lists = 0;

  constructor(opts: InformerOptions) {
    this.opts = opts;
    this.plural = opts.plural;
  }

  get synced(): boolean {
    return this.hasSynced;
  }

  /** Resolves once the first list has filled the cache. */
  waitSynced(): Promise<void> {
    return this.hasSynced ? Promise.resolve() : new Promise((r) => this.syncWaiters.push(r));
  }

  items(): CustomObject[] {
    return [...this.store.values()].sort((a, b) => (a.metadata.name < b.metadata.name ? -1 : a.metadata.name > b.metadata.name ? 1 : 0));
  }

  get(name: string): CustomObject | undefined {
    return this.store.get(name);
  }

  /** Records what a write of ours returned, so the next pass does not act on the older copy. */
  update(obj: CustomObject): void {
    const cur = this.store.get(obj.metadata.name);
    if (!cur || newer(obj, cur)) this.store.set(obj.metadata.name, obj);
  }

  start(): void {
    this.stopped = false;
    void this.relist();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.abort?.abort();
    this.abort = undefined;
  }

  private later(fn: () => void, ms: number): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(fn, ms);
    this.timer.unref();
  }

  private backoff(): number {
    this.failures++;
    return Math.min(MAX_BACKOFF_MS, 500 * 2 ** (this.failures - 1));
  }

  private async relist(): Promise<void> {
    if (this.stopped) return;
    let listed: Awaited<ReturnType<KubeApi['list']>>;
    try {
      listed = await this.opts.api.list(this.plural);
    } catch (e) {
      const wait = this.backoff();
      this.opts.report?.(`${(e as Error).message}; listing again in ${Math.round(wait / 1000)}s`);
      this.later(() => void this.relist(), wait);
      return;
    }
    if (this.stopped) return;
    this.lists++;
    this.store.clear();
    for (const o of listed.items) this.store.set(o.metadata.name, o);
    this.resourceVersion = listed.resourceVersion;
    if (!this.hasSynced) {
      this.hasSynced = true;
      for (const w of this.syncWaiters.splice(0)) w();
    }
    this.opts.onChange();
    void this.watch();
  }

  private async watch(): Promise<void> {
    if (this.stopped) return;
    let gone = false;
    let errored = false;
    let sawEvent = false;
    const onEvent = (e: WatchEvent) => {
      sawEvent = true;
      if (e.type === 'ERROR') {
        const code = (e.object as { code?: number }).code;
        if (code === 410) gone = true;
        else errored = true;
        if (!gone) this.opts.report?.(`watch of ${this.plural}: ${(e.object as { message?: string }).message ?? 'error'}`);
        this.abort?.abort();
        return;
      }
      const obj = e.object as CustomObject;
      const rv = obj.metadata?.resourceVersion;
      if (rv) this.resourceVersion = rv;
      if (e.type === 'BOOKMARK') return;
      const prev = this.store.get(obj.metadata.name);
      if (e.type === 'DELETED') this.store.delete(obj.metadata.name);
      else this.store.set(obj.metadata.name, obj);
      this.opts.onChange({ prev, next: e.type === 'DELETED' ? undefined : obj });
    };
    const done = (err: unknown) => {
      if (this.stopped) return;
      this.abort = undefined;
      if (gone || statusCode(err) === 410) {
        this.opts.report?.(`watch of ${this.plural}: resourceVersion ${this.resourceVersion} expired (410 Gone); listing again`);
        void this.relist();
        return;
      }
      const aborted = (err as { name?: string } | undefined)?.name;
      if (errored || (err && aborted !== 'AbortError' && aborted !== 'TimeoutError')) {
        const wait = this.backoff();
        if (!errored) this.opts.report?.(`${describeApiError(`watch ${this.plural}`, err).message}; watching again in ${Math.round(wait / 1000)}s`);
        this.later(() => void this.watch(), wait);
        return;
      }
      if (sawEvent) this.failures = 0;
      // Ended by the server (timeoutSeconds) or by the inactivity timeout: resume where it was.
      this.later(() => void this.watch(), 0);
    };
    try {
      const controller = await this.opts.api.watch(this.plural, this.resourceVersion, onEvent, done);
      if (this.stopped) controller.abort();
      else if (this.abort === undefined) this.abort = controller;
    } catch (e) {
      done(e);
    }
  }
}

/** resourceVersions are opaque strings; integers on every real API server, compared as such when they are. */
function newer(a: CustomObject, b: CustomObject): boolean {
  const x = a.metadata.resourceVersion ?? '';
  const y = b.metadata.resourceVersion ?? '';
  return /^\d+$/.test(x) && /^\d+$/.test(y) ? BigInt(x) > BigInt(y) : x !== y;
}
