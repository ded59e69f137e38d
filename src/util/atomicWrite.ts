// Output files appear whole or not at all: write beside the target, then rename.

import { closeSync, existsSync, fsyncSync, openSync, readdirSync, realpathSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
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

/** Calls write(tempPath), flushes it, and renames it onto path; the temp file is removed on failure. */
export function writeAtomically(path: string, write: (tempPath: string) => void): void {
  const temp = join(dirname(resolve(path)), `.${basename(path)}.tmp-${process.pid}-${Date.now()}`);
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
