// The primary's link to a Replica server over HTTPS with mutual TLS: the agent API's replica
// verbs, and log transfers that resume where the server's durable offset stands.
import { compareRequestToJSON, digestsFromJSON, type BlockDigests, type CompareRequest } from '../../core/replication/block-checksums.ts';
import { Readable } from 'node:stream';
import { TerminalError } from '../../model/errors.ts';
import { pathOf, ROUTES, type CreateReplicaRequest, type ReplicaStatus } from '../../transport/agent-api.ts';
import { callRoute, requestRoute } from '../../transport/agent-call.ts';
import type { CertBundle } from '../../transport/certs.ts';
import { createMtlsClient, type MtlsClient } from '../../transport/mtls.ts';
import { TransferCounters } from '../../transport/transfer-counters.ts';
import { uploadFile, uploadStream } from '../../transport/upload-client.ts';
import { CONTENT_TYPE_OCTETS } from '../../transport/wire.ts';
import type { ReplicaLink, UploadOptions } from '../../core/replication/ports.ts';

export class HttpReplicaLink implements ReplicaLink {
  readonly counters = new TransferCounters();
  readonly #client: MtlsClient;

  /** `timeoutMs`: how long a request may make no progress before it fails (retryable). */
  constructor(endpoint: string, tls: CertBundle, timeoutMs?: number) {
    this.#client = createMtlsClient({ ca: tls.ca, cert: tls.cert, key: tls.key, baseUrl: endpoint, counters: this.counters, ...(timeoutMs !== undefined && { timeoutMs }) });
  }

  async createReplica(req: CreateReplicaRequest): Promise<ReplicaStatus> {
    return callRoute(this.#client, ROUTES.createReplica, {}, req);
  }

  async status(id: string): Promise<ReplicaStatus> {
    return callRoute(this.#client, ROUTES.replicaStatus, { id });
  }

  async upload(id: string, sequence: number, diskId: string, path: string, onProgress?: (done: number, total: number) => void, opts?: UploadOptions): Promise<void> {
    // A short in-place retry rides over a dropped connection; longer outages belong to the
    // relationship's retry schedule (1, 2, 4, 8, 10, then 30 minutes), not to this call.
    // `pace` (a bandwidth cap) paces the body slice by slice inside each PUT, of `chunkSize` bytes.
    await uploadFile(this.#client, path, pathOf(ROUTES.uploadLog, { id, seq: sequence, disk: diskId }), {
      retries: 2,
      retryDelayMs: 100,
      ...(onProgress && { onProgress }),
      ...(opts?.pace && { pace: opts.pace }),
      ...(opts?.chunkSize && { chunkSize: opts.chunkSize }),
    });
  }

  async uploadStream(id: string, sequence: number, diskId: string, body: AsyncIterable<Buffer>): Promise<void> {
    await uploadStream(this.#client, pathOf(ROUTES.uploadLog, { id, seq: sequence, disk: diskId }), body);
  }

  async initialSegment(id: string, diskId: string, index: number, body: AsyncIterable<Buffer>): Promise<ReplicaStatus> {
    const res = await requestRoute(this.#client, ROUTES.uploadInitialSegment, { id, disk: diskId, segment: index }, Readable.from(body, { objectMode: false }), {
      headers: { 'content-type': CONTENT_TYPE_OCTETS },
    });
    return res.json<ReplicaStatus>();
  }

  async apply(id: string): Promise<ReplicaStatus> {
    return callRoute(this.#client, ROUTES.replicaApply, { id }, {});
  }

  async discardPending(id: string): Promise<ReplicaStatus> {
    return callRoute(this.#client, ROUTES.replicaDiscardPending, { id }, {});
  }

  /**
   * Without `compare`: the whole-disk 4 KiB digests. With it: compare digests, except that when a
   * replica agent has no compare route (405, invalid-argument) the whole-disk 4 KiB digests come
   * instead; the primary's one-block probe sees that and compares the older way.
   */
  async checksums(id: string, diskId: string, compare?: CompareRequest): Promise<BlockDigests> {
    const params = { id, disk: diskId };
    if (compare) {
      try {
        return digestsFromJSON(await callRoute(this.#client, ROUTES.replicaCompare, params, compareRequestToJSON(compare)));
      } catch (e) {
        if (!(TerminalError.is(e) && e.code === 'invalid-argument')) throw e;
      }
    }
    return digestsFromJSON(await callRoute(this.#client, ROUTES.replicaChecksums, params));
  }

  async settings(id: string, retention: CreateReplicaRequest['retention']): Promise<void> {
    await callRoute(this.#client, ROUTES.replicaSettings, { id }, { retention });
  }

  async remove(id: string): Promise<void> {
    await callRoute(this.#client, ROUTES.removeReplica, { id });
  }

  close(): void {
    this.#client.close();
  }
}
