// Every benchmark case, in the order the runner runs and reports them.
import type { BenchCase } from '../lib/types.ts';
import { atRest } from './at-rest.ts';
import { atRestCipher } from './at-rest-cipher.ts';
import { bandwidth } from './bandwidth.ts';
import { deltaPipeline } from './delta-pipeline.ts';
import { failover } from './failover.ts';
import { fleet } from './fleet.ts';
import { initialReplication } from './initial-replication.ts';
import { planCase } from './plan.ts';
import { primaryAmplification } from './primary-amplification.ts';
import { replicaAmplification } from './replica-amplification.ts';
import { resync } from './resync.ts';
import { rpo, rpoContinuous } from './rpo.ts';
import { takeover } from './takeover.ts';

export const CASES: readonly BenchCase[] = [resync, initialReplication, deltaPipeline, rpo, replicaAmplification, failover, planCase, primaryAmplification, bandwidth, rpoContinuous, atRest, atRestCipher, takeover, fleet];
