// The few Kubernetes API calls the controller makes, on @kubernetes/client-node: list custom
// objects (and name the collection and configuration an informer watches), merge-patch their metadata and /status subresource, create Events, and read /
// create / replace a coordination.k8s.io Lease. Failures become typed errors with one readable
// line (the client's ApiException message carries the whole response and headers).
import {
  ApiException, CoordinationV1Api, CoreV1Api, CustomObjectsApi, PatchStrategy, setHeaderOptions,
  type CoreV1Event, type KubeConfig, type V1Lease,
} from '@kubernetes/client-node';
import { RetryableError, TerminalError } from '../model/errors.ts';
import { GROUP, VERSION } from './api-group.ts';

export interface ObjectMeta {
  name: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  deletionTimestamp?: string;
  finalizers?: string[];
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

/** A drsite custom resource as the API server returns it. */
export interface CustomObject {
  apiVersion: string;
  kind: string;
  metadata: ObjectMeta;
  spec?: unknown;
  status?: Record<string, unknown>;
}

export interface WatchEvent {
  type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';
  object: CustomObject | { kind: 'Status'; code?: number; reason?: string; message?: string; metadata?: { resourceVersion?: string } };
}

const MERGE = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

/** The HTTP status of a failed call, if the API server answered. */
export function statusCode(e: unknown): number | undefined {
  if (e instanceof ApiException) return e.code;
  const c = (e as { statusCode?: unknown; httpCode?: unknown } | null)?.statusCode ?? (e as { httpCode?: unknown } | null)?.httpCode;
  return typeof c === 'number' ? c : undefined;
}

function bodyMessage(body: unknown): string | undefined {
  if (typeof body === 'string') {
    try {
      return bodyMessage(JSON.parse(body));
    } catch {
      return body.slice(0, 300) || undefined;
    }
  }
  const m = (body as { message?: unknown } | null)?.message;
  return typeof m === 'string' ? m : undefined;
}

/** One line: what was attempted, the status and the API server's own message. */
export function describeApiError(what: string, e: unknown): Error {
  const code = statusCode(e);
  if (code === undefined) {
    const cause = (e as { cause?: { code?: string; message?: string } }).cause;
    const detail = cause?.code ?? cause?.message ?? (e instanceof Error ? e.message : String(e));
    return new RetryableError('network', `${what}: cannot reach the Kubernetes API server (${detail})`, { cause: e });
  }
  const msg = `${what}: HTTP ${code}${bodyMessage((e as ApiException<unknown>).body) ? `: ${bodyMessage((e as ApiException<unknown>).body)}` : ''}`;
  if (code === 401) return new TerminalError('authentication', msg, { cause: e });
  if (code === 403) return new TerminalError('authorization', `${msg} (see the ClusterRole in docs/kubernetes.md)`, { cause: e });
  if (code === 404) return new TerminalError('not-found', msg, { cause: e });
  const err = code === 409 || code >= 500 || code === 429 ? new RetryableError('busy', msg, { cause: e }) : new TerminalError('invalid-argument', msg, { cause: e });
  (err as { httpStatus?: number }).httpStatus = code;
  return err;
}

/** The HTTP status kept on an error describeApiError made (or the client's own). */
export const httpStatusOf = (e: unknown): number | undefined =>
  (e as { httpStatus?: number } | null)?.httpStatus ?? statusCode((e as { cause?: unknown } | null)?.cause) ?? statusCode(e);

export class KubeApi {
  readonly namespace: string;
  private readonly kc: KubeConfig;
  private readonly custom: CustomObjectsApi;
  private readonly core: CoreV1Api;
  private readonly coordination: CoordinationV1Api;

  constructor(kc: KubeConfig, namespace: string) {
    this.kc = kc;
    this.namespace = namespace;
    this.custom = kc.makeApiClient(CustomObjectsApi);
    this.core = kc.makeApiClient(CoreV1Api);
    this.coordination = kc.makeApiClient(CoordinationV1Api);
  }

  private async call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      throw describeApiError(what, e);
    }
  }

  private ref(plural: string) {
    return { group: GROUP, version: VERSION, namespace: this.namespace, plural };
  }

  /** The configuration the calls are made with (an informer's Watch uses it too). */
  get kubeConfig(): KubeConfig {
    return this.kc;
  }

  /** Where a kind's objects in the namespace are listed and watched. */
  collectionPath(plural: string): string {
    return `/apis/${GROUP}/${VERSION}/namespaces/${encodeURIComponent(this.namespace)}/${plural}`;
  }

  async list(plural: string): Promise<{ items: CustomObject[]; metadata?: { resourceVersion?: string } }> {
    return (await this.call(`list ${plural} in ${this.namespace}`, () => this.custom.listNamespacedCustomObject(this.ref(plural)))) as { items: CustomObject[] };
  }

  /** JSON merge patch of the object (metadata, e.g. finalizers guarded by resourceVersion). */
  async patch(plural: string, name: string, body: unknown): Promise<CustomObject> {
    return (await this.call(`patch ${plural}/${name}`, () => this.custom.patchNamespacedCustomObject({ ...this.ref(plural), name, body }, MERGE))) as CustomObject;
  }

  /** JSON merge patch through the status subresource (spec and metadata are ignored there). */
  async patchStatus(plural: string, name: string, status: unknown): Promise<CustomObject> {
    return (await this.call(`update status of ${plural}/${name}`, () =>
      this.custom.patchNamespacedCustomObjectStatus({ ...this.ref(plural), name, body: { status } }, MERGE))) as CustomObject;
  }

  async createEvent(event: CoreV1Event): Promise<void> {
    await this.call(`create event ${event.metadata?.name}`, () => this.core.createNamespacedEvent({ namespace: this.namespace, body: event }));
  }

  /** The Lease, or undefined when it does not exist yet. */
  async readLease(name: string): Promise<V1Lease | undefined> {
    try {
      return await this.coordination.readNamespacedLease({ name, namespace: this.namespace });
    } catch (e) {
      if (statusCode(e) === 404) return undefined;
      throw describeApiError(`read lease ${name}`, e);
    }
  }

  async createLease(lease: V1Lease): Promise<V1Lease> {
    return this.call(`create lease ${lease.metadata?.name}`, () => this.coordination.createNamespacedLease({ namespace: this.namespace, body: lease }));
  }

  /** Replaces the Lease; lease.metadata.resourceVersion makes it fail with 409 if it changed meanwhile. */
  async replaceLease(lease: V1Lease): Promise<V1Lease> {
    const name = lease.metadata!.name!;
    return this.call(`update lease ${name}`, () => this.coordination.replaceNamespacedLease({ name, namespace: this.namespace, body: lease }));
  }
}
