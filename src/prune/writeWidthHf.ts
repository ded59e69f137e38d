// Writes a width-pruned model as a Hugging Face directory beside the one it came from:
// model.safetensors with every tensor (in the input's float dtype), config.json with the changed
// sizes patched, the tokenizer and other side files copied. Built in a temporary folder and
// renamed into place; the input is only read.

import { copyFileSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { UnsupportedError } from "../errors.js";
import { HF_CONFIG, HF_SINGLE_WEIGHTS, openHfDirectory } from "../formats/hfDirectory.js";
import { writeSafetensors } from "../formats/safetensors.js";
import { encodeF32 } from "../tensor/encode.js";
import { claimTempPath, replaceDirectory } from "../util/atomicWrite.js";
import { checkHfOutputDir, STALE_WEIGHTS } from "./removeLayersHf.js";
import type { WidthPrunedModel } from "./widthModel.js";

export interface WriteWidthHfResult {
  output: string;
  dtype: "F32" | "F16" | "BF16";
  tensorsWritten: number;
  bytesWritten: number;
  patchedConfigKeys: string[];
  copied: string[];
}

const TORCH_DTYPE = { F32: "float32", F16: "float16", BF16: "bfloat16" } as const;

/** inputDir must be the Hugging Face directory the model was pruned from (its side files are copied). */
export function writeWidthHf(model: WidthPrunedModel, inputDir: string, outputDir: string, options: { force?: boolean } = {}): WriteWidthHfResult {
  checkHfOutputDir(inputDir, outputDir, options.force ?? false);
  const hf = openHfDirectory(inputDir);
  let files: { config: Record<string, unknown>; other: string[]; dtype: WriteWidthHfResult["dtype"] };
  try {
    const dtypes = new Set(hf.tensors.map((t) => t.dtype as string));
    // One float dtype in, the same out; anything else (mixed, integer) is written as float32.
    const only = dtypes.size === 1 ? [...dtypes][0]! : "mixed";
    const dtype = only === "F16" || only === "BF16" ? only : "F32";
    const config: Record<string, unknown> = { ...hf.config, ...model.configPatch };
    if ("torch_dtype" in config || "dtype" in config) config["torch_dtype"] = TORCH_DTYPE[dtype];
    files = { config, other: hf.otherFiles.filter((f) => !STALE_WEIGHTS.test(f)), dtype };
  } finally {
    hf.close();
  }
  if (model.config.nLayers < 1) throw new UnsupportedError("the pruned model has no layers");
  const temp = claimTempPath(outputDir);
  try {
    mkdirSync(temp);
    const tensors = [...model.tensors].map(([name, t]) => {
      const bytes = encodeF32(t.data, files.dtype);
      return { name, dtype: files.dtype, shape: t.shape, byteLength: bytes.byteLength, bytes: () => bytes };
    });
    const written = writeSafetensors(join(temp, HF_SINGLE_WEIGHTS), tensors, { format: "pt" });
    writeFileSync(join(temp, HF_CONFIG), JSON.stringify(files.config, null, 2) + "\n", { flag: "wx" });
    for (const f of files.other) copyFileSync(join(inputDir, f), join(temp, f));
    replaceDirectory(temp, outputDir);
    return {
      output: outputDir, dtype: files.dtype, tensorsWritten: tensors.length, bytesWritten: written.dataBytes,
      patchedConfigKeys: Object.keys(model.configPatch).sort(), copied: files.other,
    };
  } catch (err) {
    rmSync(temp, { recursive: true, force: true });
    throw err;
  }
}
