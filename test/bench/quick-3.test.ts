// Group 3 of the bench smoke run (test/bench/quick.ts says why the run is in groups).
import { QUICK_GROUPS, quickRun } from './quick.ts';
quickRun(QUICK_GROUPS[2]);
