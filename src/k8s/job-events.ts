// A core/v1 Event for every job the reconciler records (DESIGN.md section 5), on the object the
// job acts on: one when it starts and one when it ends. Event names are derived from the job id
// and state, so a restarted controller (or a new leader) creating one again gets 409
// AlreadyExists instead of a duplicate.
import type { CoreV1Event } from '@kubernetes/client-node';
import type { JobSummary, Vault } from '../vault/vault.ts';
import { GROUP, VERSION } from './api-group.ts';
import type { CustomObject, KubeApi } from './kube-api.ts';
import { httpStatusOf } from './kube-api.ts';

/** Jobs older than this are not announced (Events themselves expire after an hour by default). */
const WINDOW_MS = 3_600_000;

export const eventName = (job: JobSummary, phase: string): string =>
  `${job.target.split('/')[1] ?? 'drsite'}.${job.id}.${phase}`.toLowerCase().replace(/[^a-z0-9.-]/g, '-').slice(0, 253);

export class JobEvents {
  private readonly emitted = new Set<string>();
  private readonly api: KubeApi;
  private readonly identity: string;

  constructor(api: KubeApi, identity: string) {
    this.api = api;
    this.identity = identity;
  }

  /** Creates the Events of jobs started or ended since the last call; returns how many were new. */
  async emit(vault: Vault, lookup: (kind: string, name: string) => CustomObject | undefined, now = Date.now()): Promise<number> {
    let created = 0;
    for (const job of vault.listJobs({ limit: 200 })) {
      const phases: [string, string][] = [['started', job.startedAt]];
      if (job.endedAt && job.state !== 'Running' && job.state !== 'Waiting') phases.push([job.state.toLowerCase(), job.endedAt]);
      for (const [phase, at] of phases) {
        const name = eventName(job, phase);
        if (this.emitted.has(name) || now - Date.parse(at) > WINDOW_MS) continue;
        const [kind = '', objName = ''] = job.target.split('/');
        const obj = lookup(kind, objName);
        try {
          await this.api.createEvent(this.event(name, job, phase, at, kind, objName, obj));
          created++;
        } catch (e) {
          if (httpStatusOf(e) !== 409) throw e;
        }
        this.emitted.add(name);
      }
    }
    return created;
  }

  private event(name: string, job: JobSummary, phase: string, at: string, kind: string, objName: string, obj: CustomObject | undefined): CoreV1Event {
    const failed = job.state === 'Failed' && phase === 'failed';
    const verb = phase === 'started' ? 'Started' : phase === 'succeeded' ? 'Succeeded' : phase === 'failed' ? 'Failed' : 'Cancelled';
    const message = phase === 'started'
      ? `${job.type} started (job ${job.id})`
      : `${job.type} ${phase}${job.error ? `: ${job.error.message}` : ''} (job ${job.id})`;
    const time = new Date(at);
    return {
      apiVersion: 'v1',
      kind: 'Event',
      metadata: { name, namespace: this.api.namespace },
      involvedObject: {
        apiVersion: `${GROUP}/${VERSION}`, kind, name: objName, namespace: this.api.namespace,
        ...(obj?.metadata.uid && { uid: obj.metadata.uid }),
      },
      reason: `${job.type}${verb}`,
      message: message.slice(0, 1024),
      type: failed ? 'Warning' : 'Normal',
      action: job.type,
      source: { component: 'drsite-controller' },
      reportingComponent: 'drsite-controller',
      reportingInstance: this.identity.slice(0, 128),
      firstTimestamp: time,
      lastTimestamp: time,
      count: 1,
    };
  }
}
