// The shortgpt library: load a model, score its layers, remove layers, measure perplexity.

export { loadModel, detectFormat, resolveModelPath, type LoadedModel, type LoadOptions, type CheckpointFormat } from "./load.js";
export { hubSettingsFromEnv, type HubSettings } from "./hub/cache.js";
export { downloadHubModel, cachedHubModel, type HubModel, type HubDownloadOptions } from "./hub/download.js";
export { parseHubId, type HubRepoRef } from "./hub/repoId.js";
export { LlamaModel, KvCache, type LlamaConfig, type LayerHooks, type ForwardOptions, type ForwardResult } from "./models/llama.js";
export { blockInfluence } from "./metrics/score.js";
export { BlockInfluence, type BlockInfluenceResult, type LayerScore } from "./metrics/blockInfluence.js";
export { CosineAccumulator, rowCosine } from "./metrics/cosine.js";
export { perplexity, type PerplexityResult } from "./eval/perplexity.js";
export { generate, type GenerateOptions } from "./eval/generate.js";
export { removeLayers, type RemoveLayersResult } from "./prune/removeLayers.js";
export { parseLayerList, lowestK } from "./prune/plan.js";
export { readTextData, tokenizeDocuments, type TextData } from "./data/documents.js";
export { scoringWindows, perplexityWindows, type Window, type PerplexityWindow } from "./data/windows.js";
export { tokenizeFile, resolveWindows, scoreData, perplexityData } from "./pipeline.js";
export { readGguf, writeGguf } from "./formats/gguf.js";
export { readLlama2c, writeLlama2c } from "./formats/llama2c.js";
export type { Tokenizer } from "./tokenizer/tokenizer.js";
export * from "./errors.js";
export { parseShard, shardIndices, type Shard } from "./shards/shard.js";
export { readPartial, checkParts, mergeScore, mergePerplexity, mergeTasks, type PartialResult } from "./shards/partial.js";
export { modelIdentity } from "./shards/identity.js";
