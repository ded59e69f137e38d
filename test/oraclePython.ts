// The Python that a test runs an oracle script with (transformers, gguf-py): SHORTGPT_PYTHON when
// set, else the checkout's .venv, made on first use by scripts/oracle-venv.mjs from the machine's
// local package index (.ci/run makes it before the tests).

import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { repoRoot } from "../src/shared.js";

let resolved: string | undefined;

export function oraclePython(): string {
  if (resolved) return resolved;
  const fromEnv = process.env["SHORTGPT_PYTHON"];
  if (fromEnv) return (resolved = fromEnv);
  const r = spawnSync(process.execPath, [join(repoRoot(), "scripts", "oracle-venv.mjs")], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"], timeout: 900_000 });
  if (r.status !== 0) throw new Error(`scripts/oracle-venv.mjs could not make the oracles' Python (status ${r.status ?? r.error?.message}); set SHORTGPT_PYTHON to a Python with torch, transformers, safetensors, gguf and numpy`);
  return (resolved = r.stdout.trim().split("\n").pop()!);
}
