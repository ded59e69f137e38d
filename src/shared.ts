// Locates the read-only shared folder (real model and data) beside the repository.

import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { ShortgptError } from "./errors.js";

/** The repository root: this file is compiled to dist/src/shared.js. */
export function repoRoot(): string {
  return resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
}

/** The shared folder: $SHORTGPT_SHARED if set, else ../shared beside the repository. */
export function sharedDir(): string {
  const fromEnv = process.env["SHORTGPT_SHARED"];
  return fromEnv && fromEnv.length > 0 ? resolve(fromEnv) : resolve(repoRoot(), "..", "shared");
}

/** A path inside the shared folder; throws naming where it looked when the file is missing. */
export function sharedPath(...parts: string[]): string {
  const path = join(sharedDir(), ...parts);
  if (!existsSync(path)) {
    throw new ShortgptError("DATA", `shared file not found: ${path}`, {
      file: path,
      hint: "set SHORTGPT_SHARED to the folder that holds models/ and data/, or place it at ../shared beside the repository",
    });
  }
  return path;
}
