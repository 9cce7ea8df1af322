// Group 1 of the bench smoke run (test/bench/quick.ts says why the run is in groups), and the
// check that the groups leave no case out.
import { expect, test } from 'vitest';
import { CASES } from '../../bench/cases/index.ts';
import { QUICK_GROUPS, quickRun } from './quick.ts';

test('the three groups hold every bench case exactly once', () => {
  expect(QUICK_GROUPS.flat().sort()).toEqual(CASES.map((c) => c.name).sort());
});

quickRun(QUICK_GROUPS[0]);
