// A full file system, said in words an operator can act on: which path, and about how much room
// is missing. ENOSPC (or a quota, EDQUOT) becomes RetryableError('low-disk'): replication retries
// on the recoverable schedule and succeeds once space is freed.
import { statfs } from 'node:fs/promises';
import { dirname } from 'node:path';
import { RetryableError } from '../model/errors.ts';

const MiB = 1 << 20;

/** Is `e` the file system saying it has no room (ENOSPC, or EDQUOT for a quota)? */
export function isDiskFull(e: unknown): boolean {
  const code = (e as { code?: unknown } | null)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT' || (RetryableError.is(e) && e.code === 'low-disk');
}

/** Bytes an unprivileged writer may still put on the file system holding `path` (or its nearest existing parent). */
export async function availableBytes(path: string): Promise<number> {
  for (let p = path; ; p = dirname(p)) {
    try {
      const s = await statfs(p);
      return s.bavail * s.bsize;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT' || dirname(p) === p) throw e;
    }
  }
}

/** The recoverable error for `path` lacking room for `neededBytes` (its message: how many MiB more, at least 1). */
export async function noSpaceError(path: string, neededBytes: number, cause?: unknown): Promise<RetryableError> {
  const missing = Math.max(1, Math.ceil((neededBytes - (await availableBytes(path))) / MiB));
  return new RetryableError('low-disk', `${path}: no space left on the device (needs about ${missing} MiB more)`, { cause });
}

/**
 * `e` as the low-disk error for `path` when it is a full file system (call it after removing what
 * the failed write left behind, so the free space is what a retry will find); any other error, or
 * one already classified, unchanged.
 */
export async function classifyDiskFull(e: unknown, path: string, neededBytes: number): Promise<unknown> {
  if (RetryableError.is(e) || !isDiskFull(e)) return e;
  return noSpaceError(path, neededBytes, e);
}

/** Throws the low-disk error unless the file system holding `path` has room for `neededBytes`. */
export async function ensureSpace(path: string, neededBytes: number): Promise<void> {
  if ((await availableBytes(path)) < neededBytes) throw await noSpaceError(path, neededBytes);
}
