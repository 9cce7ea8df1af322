// The FIFO mutexes: one holder at a time per key, in arrival order, a failing holder does not
// block the next, different keys do not wait on each other, and a drained key is forgotten.
import { describe, expect, test } from 'vitest';
import { AsyncMutex, KeyedMutex } from '../../src/core/async-mutex.ts';

/** A promise and the function that settles it, to hold a lock open as long as a test wants. */
function gate(): { open: () => void; wait: Promise<void> } {
  let open!: () => void;
  const wait = new Promise<void>((r) => (open = r));
  return { open, wait };
}

describe('KeyedMutex', () => {
  test('holders of one key run one at a time in arrival order; other keys do not wait', async () => {
    const m = new KeyedMutex();
    const order: string[] = [];
    const first = gate();
    const a1 = m.run('a', async () => {
      order.push('a1 start');
      await first.wait;
      order.push('a1 end');
    });
    const a2 = m.run('a', () => void order.push('a2'));
    const b1 = m.run('b', () => void order.push('b1'));
    await b1;
    // b ran while a1 still holds a; a2 waits behind it.
    expect(order).toEqual(['a1 start', 'b1']);
    first.open();
    await Promise.all([a1, a2]);
    expect(order).toEqual(['a1 start', 'b1', 'a1 end', 'a2']);
    expect(m.size).toBe(0);
  });

  test('a holder that throws passes its error on and releases the key', async () => {
    const m = new KeyedMutex();
    await expect(m.run('k', () => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
    expect(await m.run('k', () => 42)).toBe(42);
    expect(m.size).toBe(0);
  });
});

describe('AsyncMutex', () => {
  test('run() serialises in arrival order', async () => {
    const m = new AsyncMutex();
    const order: number[] = [];
    const g = gate();
    const p1 = m.run(async () => {
      await g.wait;
      order.push(1);
    });
    const p2 = m.run(() => void order.push(2));
    g.open();
    await Promise.all([p1, p2]);
    expect(order).toEqual([1, 2]);
  });
});
