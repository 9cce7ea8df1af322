// A cache of one kind's custom objects kept current by @kubernetes/client-node's informer (its
// ListWatch: list, watch from the list's resourceVersion, resume after the watch ends, list again
// after 410 Gone). Around it, what the controller needs and the library leaves out: bookmarks and
// a server-side watch timeout, the previous copy of a changed object, the objects our own writes
// returned, a start again with backoff after a failure (the library's informer stops there), and
// a promise for the first list.
import { ADD, DELETE, ERROR, ListWatch, UPDATE, Watch, type KubernetesListObject, type KubernetesObject } from '@kubernetes/client-node';
import type { CustomObject, KubeApi, WatchEvent } from './kube-api.ts';
import { describeApiError } from './kube-api.ts';

export interface InformerOptions {
  api: KubeApi;
  plural: string;
  /** An object was added, changed or deleted (prev/next undefined: added/deleted), by a watch event or a list. */
  onChange: (change: { prev: CustomObject | undefined; next: CustomObject | undefined }) => void;
  report?: (line: string) => void;
}

const MAX_BACKOFF_MS = 30_000;
/** A watch the server ends by itself before the client's 30 s inactivity timeout would abort it. */
const WATCH_TIMEOUT_SECONDS = 25;

interface WatchHooks {
  /** The informer opens a watch; it does so only once a list has filled the cache. */
  opening(): void;
  event(e: WatchEvent): void;
}

/**
 * The library types objects as its generated models (timestamps as Date); a ListWatch passes the
 * parsed JSON through unchanged, so what it holds are our CustomObjects, timestamps as strings.
 */
const custom = (o: KubernetesObject): CustomObject => o as unknown as CustomObject;

/** The library's Watch, asking for bookmarks and a server-side timeout, and showing us each event. */
class InformerWatch extends Watch {
  private readonly hooks: WatchHooks;

  constructor(api: KubeApi, hooks: WatchHooks) {
    super(api.kubeConfig);
    this.hooks = hooks;
  }

  override watch(...[path, query, callback, done]: Parameters<Watch['watch']>): Promise<AbortController> {
    this.hooks.opening();
    const withBookmarks = { ...query, allowWatchBookmarks: true, timeoutSeconds: WATCH_TIMEOUT_SECONDS };
    return super.watch(path, withBookmarks, (type, object, raw) => {
      this.hooks.event({ type: type as WatchEvent['type'], object: object as WatchEvent['object'] });
      callback(type, object, raw);
    }, done);
  }
}

export class Informer {
  readonly plural: string;
  private readonly opts: InformerOptions;
  private readonly listWatch: ListWatch<KubernetesObject>;
  /** The last copy of each object the callbacks saw: the library passes only the new one. */
  private readonly previous = new Map<string, CustomObject>();
  /** What our writes returned, newer than the cache until the watch brings that version. */
  private readonly written = new Map<string, CustomObject>();
  private stopped = false;
  private listing = false;
  private failures = 0;
  private resourceVersion = '';
  private hasSynced = false;
  private readonly syncWaiters: (() => void)[] = [];
  private timer: NodeJS.Timeout | undefined;
  /** How many times the cache was filled by a list (the first one and every re-list after 410). */
  lists = 0;

  constructor(opts: InformerOptions) {
    this.opts = opts;
    this.plural = opts.plural;
    const watch = new InformerWatch(opts.api, { opening: () => this.synced || this.markSynced(), event: (e) => this.watchEvent(e) });
    this.listWatch = new ListWatch(opts.api.collectionPath(opts.plural), watch, () => this.list(), false);
    this.listWatch.on(ADD, (o) => this.changed(custom(o), custom(o)));
    this.listWatch.on(UPDATE, (o) => this.changed(custom(o), custom(o)));
    this.listWatch.on(DELETE, (o) => this.changed(custom(o), undefined));
    this.listWatch.on(ERROR, (e) => this.failed(e));
  }

  get synced(): boolean {
    return this.hasSynced;
  }

  /** Resolves once the first list has filled the cache. */
  waitSynced(): Promise<void> {
    return this.hasSynced ? Promise.resolve() : new Promise((r) => this.syncWaiters.push(r));
  }

  items(): CustomObject[] {
    const names = new Set([...this.listWatch.list().map((o) => custom(o).metadata.name), ...this.written.keys()]);
    return [...names].sort().map((n) => this.get(n)!);
  }

  get(name: string): CustomObject | undefined {
    const found = this.listWatch.get(name, this.opts.api.namespace);
    const cached = found && custom(found);
    const ours = this.written.get(name);
    return ours && (!cached || newer(ours, cached)) ? ours : cached;
  }

  /** Records what a write of ours returned, so the next pass does not act on the older copy. */
  update(obj: CustomObject): void {
    const cur = this.get(obj.metadata.name);
    if (!cur || newer(obj, cur)) this.written.set(obj.metadata.name, obj);
  }

  start(): void {
    this.stopped = false;
    this.listWatch.start().catch((e: unknown) => this.failed(e));
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    void this.listWatch.stop();
  }

  private async list(): Promise<KubernetesListObject<KubernetesObject>> {
    this.listing = true;
    const listed = await this.opts.api.list(this.plural);
    this.listing = false;
    this.lists++;
    this.failures = 0;
    this.resourceVersion = listed.metadata?.resourceVersion ?? '';
    return listed as KubernetesListObject<KubernetesObject>;
  }

  private markSynced(): void {
    this.hasSynced = true;
    for (const w of this.syncWaiters.splice(0)) w();
  }

  private changed(obj: CustomObject, next: CustomObject | undefined): void {
    const name = obj.metadata.name;
    const prev = this.previous.get(name);
    if (next) this.previous.set(name, next);
    else this.previous.delete(name);
    const ours = this.written.get(name);
    if (ours && (!next || !newer(ours, next))) this.written.delete(name);
    this.opts.onChange({ prev, next });
  }

  /** The library acts on ERROR events itself (410 Gone: list again); we say what happened. */
  private watchEvent(e: WatchEvent): void {
    if (e.type !== 'ERROR') {
      this.failures = 0;
      this.resourceVersion = e.object.metadata?.resourceVersion ?? this.resourceVersion;
      return;
    }
    const status = e.object as { code?: number; message?: string };
    this.opts.report?.(status.code === 410
      ? `watch of ${this.plural}: resourceVersion ${this.resourceVersion} expired (410 Gone); listing again`
      : `watch of ${this.plural}: ${status.message ?? 'error'}`);
  }

  /** A failed list or watch stops the library's informer; it starts again after a backoff, from where it was. */
  private failed(e: unknown): void {
    if (this.stopped) return;
    const wait = Math.min(MAX_BACKOFF_MS, 500 * 2 ** this.failures++);
    const secs = Math.round(wait / 1000);
    if (this.listing) this.opts.report?.(`${(e as Error).message}; listing again in ${secs}s`);
    else this.opts.report?.(`${describeApiError(`watch ${this.plural}`, e).message}; watching again in ${secs}s`);
    this.listing = false;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.stopped || this.start(), wait);
    this.timer.unref();
  }
}

/** resourceVersions are opaque strings; integers on every real API server, compared as such when they are. */
function newer(a: CustomObject, b: CustomObject): boolean {
  const x = a.metadata.resourceVersion ?? '';
  const y = b.metadata.resourceVersion ?? '';
  return /^\d+$/.test(x) && /^\d+$/.test(y) ? BigInt(x) > BigInt(y) : x !== y;
}
