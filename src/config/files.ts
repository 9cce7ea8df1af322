// Expands the paths a user gave (files or directories) into the YAML files to load, in a
// deterministic order, and reads them as UTF-8 text. Problems become diagnostics, never throws.
import { readdir, readFile, stat } from 'node:fs/promises';
import { isAbsolute, join, relative, resolve } from 'node:path';
import type { Diagnostic } from '../model/diagnostics.ts';

export interface SourceText {
  /** The name diagnostics show: relative to cwd when inside it, absolute otherwise. */
  file: string;
  /** Absolute directory of the file: relative paths inside it (script actions) resolve against it. */
  dir?: string;
  text: string;
}

/** Larger files are refused outright: declarations are small, and this keeps memory bounded. */
export const MAX_FILE_BYTES = 16 * 1024 * 1024;

const YAML_FILE = /\.ya?ml$/i;

export async function readSources(paths: readonly string[], cwd: string): Promise<{ sources: SourceText[]; diagnostics: Diagnostic[] }> {
  const diagnostics: Diagnostic[] = [];
  const fileError = (file: string, summary: string, detail: string) =>
    diagnostics.push({ severity: 'error', summary, detail, file, line: 0, column: 0, path: '' });
  const display = (abs: string) => {
    const rel = relative(cwd, abs);
    return rel !== '' && !rel.startsWith('..') && !isAbsolute(rel) ? rel : abs;
  };

  if (paths.length === 0) fileError('', 'no paths given', 'name one or more YAML files or directories to load');
  const files: string[] = [];
  for (const p of paths) {
    const abs = resolve(cwd, p);
    let isDir: boolean;
    try {
      isDir = (await stat(abs)).isDirectory();
    } catch (e) {
      fileError(display(abs), (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'path not found' : 'cannot read path', (e as Error).message);
      continue;
    }
    if (!isDir) {
      files.push(abs);
      continue;
    }
    const found = await yamlFilesUnder(abs).catch((e: Error) => {
      fileError(display(abs), 'cannot read directory', e.message);
      return undefined;
    });
    if (found === undefined) continue;
    if (found.length === 0) fileError(display(abs), 'no YAML files in directory', 'expected *.yaml or *.yml files in this directory or below it');
    files.push(...found);
  }

  const sources: SourceText[] = [];
  const seen = new Set<string>();
  for (const abs of files) {
    if (seen.has(abs)) continue;
    seen.add(abs);
    const file = display(abs);
    let bytes: Buffer;
    try {
      const st = await stat(abs);
      if (st.size > MAX_FILE_BYTES) {
        fileError(file, 'file is too large', `${st.size} bytes; declarations are limited to ${MAX_FILE_BYTES} bytes a file`);
        continue;
      }
      bytes = await readFile(abs);
    } catch (e) {
      fileError(file, 'cannot read file', (e as Error).message);
      continue;
    }
    let text: string;
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    } catch {
      fileError(file, 'not a text file', 'the file is not valid UTF-8; expected YAML text');
      continue;
    }
    sources.push({ file, dir: resolve(abs, '..'), text });
  }
  return { sources, diagnostics };
}

/** YAML files below `dir`, sorted by path; hidden entries (.git, .drsite) are skipped. */
async function yamlFilesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string) => {
    const entries = (await readdir(d, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of entries) {
      if (e.name.startsWith('.')) continue;
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if ((e.isFile() || e.isSymbolicLink()) && YAML_FILE.test(e.name)) out.push(p);
    }
  };
  await walk(dir);
  return out;
}
