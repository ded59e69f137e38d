// Makes the Python the tests' live oracles run in (test/oracle/*.py called by a test: transformers
// loading a pruned directory strictly, gguf-py writing a fixture): .venv in the checkout, with
// torch (CPU), transformers, safetensors, gguf and numpy from pip's configured package index. This
// machine image carries those wheels locally; naming the local index as --index-url keeps pip from
// retrying an unreachable default index (minutes) first. Does nothing when .venv already imports
// them. Prints the interpreter's path. Run by .ci/run before the tests, and by the tests themselves
// (test/oraclePython.ts) when it is missing.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const python = join(root, ".venv", "bin", "python");
const MODULES = ["torch", "transformers", "safetensors", "gguf", "numpy"];

const hasModules = () => existsSync(python) && spawnSync(python, ["-c", `import ${MODULES.join(", ")}`]).status === 0;

/** pip's configured indexes (pip config, read by the venv's own pip), the first as --index-url so that no other is tried first. */
function indexArgs() {
  const urls = ["global.index-url", "global.extra-index-url"].flatMap((key) => {
    const r = spawnSync(python, ["-m", "pip", "config", "get", key], { encoding: "utf8" });
    return r.status === 0 ? r.stdout.trim().split(/\s+/).filter(Boolean) : [];
  });
  return urls.length === 0 ? [] : ["--index-url", urls[0], ...urls.slice(1).flatMap((u) => ["--extra-index-url", u])];
}

if (!hasModules()) {
  process.stderr.write(`shortgpt: making ${join(root, ".venv")} for the tests' Python oracles (${MODULES.join(", ")})\n`);
  const steps = [() => ["python3", ["-m", "venv", join(root, ".venv")]], () => [python, ["-m", "pip", "install", "-q", "--disable-pip-version-check", ...indexArgs(), ...MODULES]]];
  for (const step of steps) {
    const [command, args] = step();
    const r = spawnSync(command, args, { stdio: ["ignore", "inherit", "inherit"] });
    if (r.status !== 0) {
      process.stderr.write(`shortgpt: ${command} ${args.join(" ")} failed (${r.status ?? r.error?.message}); the tests that run a Python oracle need ${MODULES.join(", ")}\n`);
      process.exit(1);
    }
  }
  if (!hasModules()) {
    process.stderr.write(`shortgpt: ${python} still cannot import ${MODULES.join(", ")}\n`);
    process.exit(1);
  }
}
console.log(python);
