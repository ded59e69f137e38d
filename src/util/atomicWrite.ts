// Output files appear whole or not at all: write beside the target under a recognisable
// temporary name that carries the writer's host and pid, then rename. A writer killed mid-way
// (kill -9, power loss) leaves only such a name, which the next writer of that output on that
// host removes.

import { closeSync, existsSync, fsyncSync, openSync, readdirSync, realpathSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { hostname } from "node:os";
import { basename, dirname, join, resolve } from "node:path";
import { OutputError } from "../errors.js";

export interface OutputCheck {
  /** Input files the output must not replace. */
  inputs: readonly string[];
  force: boolean;
  option: string;
}

function sameFile(a: string, b: string): boolean {
  const real = (p: string): string => (existsSync(p) ? realpathSync(p) : resolve(p));
  return real(a) === real(b);
}

/** Refuses to overwrite an input, or an existing path without force. */
export function checkOutputPath(path: string, check: OutputCheck): void {
  for (const input of check.inputs) {
    if (sameFile(path, input)) {
      throw new OutputError(`${check.option} ${path} is the input model; refusing to overwrite it`, {
        file: path, option: check.option, hint: "choose a different output path",
      });
    }
  }
  if (existsSync(path) && !check.force) {
    throw new OutputError(`${path} already exists`, { file: path, option: check.option, hint: "choose another path or pass --force to replace it" });
  }
  if (!existsSync(dirname(resolve(path)))) {
    throw new OutputError(`the folder of ${path} does not exist`, { file: path, option: check.option, hint: "create the folder first" });
  }
}

/**
 * Flushes a file, or a folder and everything in it, to the disk. Done before the rename that
 * publishes an output, so a crash cannot leave a complete-looking name over missing data.
 */
export function syncToDisk(path: string): void {
  if (statSync(path).isDirectory()) {
    for (const entry of readdirSync(path)) syncToDisk(join(path, entry));
  }
  const fd = openSync(path, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * This machine in temporary names: a pid means something only on the host that wrote it (a
 * folder on NFS or shared between containers is written by processes this one cannot see).
 */
export const TEMP_HOST = hostname().replace(/[^A-Za-z0-9_-]/g, "_") || "host";

/** `.<name>.shortgpt-tmp-<host>-<pid>-<ms>`: an output being written; `-old-`: an output being replaced, moved aside. */
const TEMP_NAME = /^\.(.+)\.shortgpt-(tmp|old)-([A-Za-z0-9_-]+)-(\d+)-\d+$/;

function processAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0); // signal 0: only asks whether the process exists
    return true;
  } catch (err) {
    return (err as { code?: string }).code === "EPERM"; // exists, owned by someone else
  }
}

/**
 * Removes what writers of `path` on this host that no longer run left beside it: their
 * temporary outputs, whole or partial. An output a replace had moved aside is put back only when
 * its writer died between the two renames (its finished temp is still there and the name is
 * free); otherwise it is removed, never resurrected over a name the user emptied. Best effort:
 * what cannot be removed stays. Returns the names it removed or restored.
 */
export function removeStaleTemps(path: string): string[] {
  const dir = dirname(resolve(path));
  const base = basename(resolve(path));
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return []; // an unreadable folder fails later, where the output is written, with a clear error
  }
  const stale = names.flatMap((name) => {
    const m = TEMP_NAME.exec(name);
    return m && m[1] === base && m[3] === TEMP_HOST && !processAlive(Number(m[4])) ? [{ name, kind: m[2]!, pid: m[4]! }] : [];
  });
  const handled: string[] = [];
  // Moved-aside outputs first: whether to restore one depends on its writer's temp, removed below.
  for (const { name, kind, pid } of [...stale].sort((a, b) => (a.kind === b.kind ? 0 : a.kind === "old" ? -1 : 1))) {
    try {
      const diedBetweenRenames = kind === "old" && !existsSync(join(dir, base)) && stale.some((s) => s.kind === "tmp" && s.pid === pid);
      if (diedBetweenRenames) renameSync(join(dir, name), join(dir, base));
      else rmSync(join(dir, name), { recursive: true, force: true });
      handled.push(name);
    } catch {
      // Left for a later writer: cleaning up must never fail the command that is writing.
    }
  }
  return handled;
}

/**
 * A fresh temporary path beside `path` (kind "old" for an output moved aside while it is
 * replaced), after clearing what dead writers left in that folder.
 */
export function claimTempPath(path: string, kind: "tmp" | "old" = "tmp"): string {
  if (kind === "tmp") removeStaleTemps(path);
  return join(dirname(resolve(path)), `.${basename(resolve(path))}.shortgpt-${kind}-${TEMP_HOST}-${process.pid}-${Date.now()}`);
}

/** Calls write(tempPath), flushes it, and renames it onto path; the temp file is removed on failure. */
export function writeAtomically(path: string, write: (tempPath: string) => void): void {
  const temp = claimTempPath(path);
  try {
    write(temp);
    syncToDisk(temp);
    renameSync(temp, path);
  } catch (err) {
    rmSync(temp, { force: true });
    throw err;
  }
}

export function writeJsonAtomically(path: string, value: unknown): void {
  writeAtomically(path, (temp) => writeFileSync(temp, JSON.stringify(value, null, 2) + "\n", { flag: "wx" }));
}

/**
 * Moves a finished temporary directory to `outputDir`, already synced to disk; an existing output
 * (--force) is moved aside first, put back if the move fails, and deleted last.
 */
export function replaceDirectory(temp: string, outputDir: string): void {
  syncToDisk(temp);
  if (!existsSync(outputDir)) {
    renameSync(temp, outputDir);
    return;
  }
  const old = claimTempPath(outputDir, "old");
  renameSync(outputDir, old);
  try {
    renameSync(temp, outputDir);
  } catch (err) {
    renameSync(old, outputDir);
    throw err;
  }
  rmSync(old, { recursive: true, force: true });
}
