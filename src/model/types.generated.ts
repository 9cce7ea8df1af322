// The declarative model's types, generated from schemas/*.schema.json (one file per kind in
// generated/) by `npm run gen:types`. Do not edit by hand: test/model/types-drift.test.ts checks them.

export type * from './generated/site.ts';
export type * from './generated/replicationpolicy.ts';
export type * from './generated/networkmapping.ts';
export type * from './generated/protectedvm.ts';
export type * from './generated/recoveryplan.ts';
