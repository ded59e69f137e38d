// Reading a score JSON (a single run's or merged shards') back, for prune --from-scores: the
// chosen metric's scores, checked against the model they will prune.

import { readFileSync } from "node:fs";
import { DataError, OptionError } from "../errors.js";
import { METRIC_NAMES, type MetricName, type MetricScores } from "../metrics/layerMetrics.js";
import { PARTIAL_KIND } from "./partial.js";

export interface ScoresFile {
  scores: MetricScores;
  /** The fields of the score JSON that say where the scores came from. */
  data?: unknown;
  options?: unknown;
  backend?: string;
  modelIdentity?: string;
}

/** The scores of `metric` (default: bi if present, else the file's only metric) in the score JSON at `path`. */
export function readScoresFile(path: string, metric?: MetricName): ScoresFile {
  let value: unknown;
  try {
    value = JSON.parse(readFileSync(path, "utf8"));
  } catch (err) {
    throw new DataError(`--from-scores ${path}: not a readable JSON file (${(err as Error).message})`, { file: path, hint: "pass the --json file of shortgpt score or shortgpt merge" });
  }
  const json = value as { kind?: unknown; metrics?: unknown; data?: unknown; options?: unknown; backend?: { name?: unknown }; modelIdentity?: unknown } | null;
  if (json?.kind === PARTIAL_KIND) throw new DataError(`--from-scores ${path} is one part of a sharded run`, { file: path, hint: "merge the parts first: shortgpt merge PART... --json MERGED.json" });
  const metrics = Array.isArray(json?.metrics) ? (json!.metrics as MetricScores[]) : undefined;
  const valid = metrics?.every((m) => (METRIC_NAMES as readonly string[]).includes(m?.metric) && Number.isInteger(m.block) && Array.isArray(m.scores) && Array.isArray(m.ranking)
    && m.scores.every((s) => Number.isInteger(s?.layer) && typeof s.score === "number") && m.ranking.every((l) => Number.isInteger(l)));
  if (!metrics || !valid || metrics.length === 0) throw new DataError(`--from-scores ${path} is not a score JSON (no valid "metrics" list)`, { file: path, hint: "pass the --json file of shortgpt score or shortgpt merge" });
  const names = metrics.map((m) => m.metric);
  const wanted = metric ?? (names.includes("bi") ? "bi" : names.length === 1 ? names[0]! : undefined);
  if (wanted === undefined) throw new OptionError(`--from-scores ${path} holds ${names.join(", ")}: say which with --metric`, { option: "--metric", hint: `one of ${names.join(", ")}` });
  const scores = metrics.find((m) => m.metric === wanted);
  if (!scores) throw new OptionError(`--from-scores ${path} has no ${wanted} scores (it holds ${names.join(", ")})`, { option: "--metric", got: wanted });
  return {
    scores, ...(json!.data === undefined ? {} : { data: json!.data }), ...(json!.options === undefined ? {} : { options: json!.options }),
    ...(typeof json!.backend?.name === "string" ? { backend: json!.backend.name } : {}), ...(typeof json!.modelIdentity === "string" ? { modelIdentity: json!.modelIdentity } : {}),
  };
}

/** Refuses scores of another model: a different identity, or layers the model does not have. */
export function checkScoresFit(file: ScoresFile, path: string, identity: string, nLayers: number): void {
  if (file.modelIdentity !== undefined && file.modelIdentity !== identity) {
    throw new DataError(`--from-scores ${path} scored a different model (identity ${file.modelIdentity.slice(0, 12)}..., this one is ${identity.slice(0, 12)}...)`, { file: path, hint: "prune the model that was scored, in the same file format" });
  }
  const s = file.scores;
  const expected = nLayers - s.block + 1;
  const layers = s.scores.map((x) => x.layer).sort((a, b) => a - b);
  if (layers.length !== expected || layers.some((l, i) => l !== i) || s.ranking.length !== expected) {
    throw new DataError(`--from-scores ${path}: ${s.metric} scores ${layers.length} ${s.block > 1 ? "blocks" : "layers"}, the model has ${nLayers} layers`, { file: path, hint: "score the model you prune, without --skip" });
  }
}
