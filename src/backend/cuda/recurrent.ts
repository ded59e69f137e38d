// The recurrent layer kinds on the cuda backend (Mamba, Mamba-2, RWKV-4, RWKV-6, RWKV-7): which
// weights go up and in what type, and one layer over every window as cuBLAS GEMMs (all windows'
// tokens at once, GEMM inputs in the backend's precision, fp32 outputs where a kernel reads them)
// around the kernels of recurrentKernelSource.ts. Each window scans from a zero state, as the host
// twins (mambaLayer.ts ... rwkv7Layer.ts) do; the stream in and out is fp32 rows. RWKV-7's value
// residual (v_first) stays on the device beside the stream (cudaBackend.ts's DeviceSideStream).

import { UnsupportedError } from "../../errors.js";
import { type LayerKind, type LayerShape, type LayerWeightName, type LayerWeightsF32, layerKind, layerWeightDims, mamba2ConvDim, mamba2DimsOf, mambaDimsOf, rwkv6DimsOf, rwkv7DimsOf, rwkvAttDimOf } from "../backend.js";
import type { DevicePtr, KernelArg } from "./api.js";
import type { KernelName } from "./kernelSource.js";
import { MAMBA2_STATE_SIZES, MAMBA_STATE_SIZES, RWKV6_HEAD_SIZES, RWKV7_HEAD_SIZES } from "./recurrentKernelSource.js";

/** The recurrent kinds this backend computes (all of them; sizes its kernels do not take are refused by checkRecurrentShape). */
export const CUDA_RECURRENT_KINDS: ReadonlySet<LayerKind> = new Set(["mamba", "mamba2", "rwkv4", "rwkv6", "rwkv7"]);

/** A tensor of a recurrent layer on the device: a weight by its name, or RWKV-4's and RWKV-6's token-shift mixes stacked ((3, dim), (2, dim)). */
export type RecurrentTensorName = LayerWeightName | "rwkv4TimeMixes" | "rwkvChannelMixes";

/** Weights the GEMMs read (uploaded as GEMM inputs); the rest stay fp32 for the kernels. */
const GEMM_WEIGHTS: ReadonlySet<LayerWeightName> = new Set<LayerWeightName>([
  "mambaInProj", "mambaXProj", "mambaDtProj", "mambaOutProj",
  "wk", "wv", "wo", "rwkvReceptance", "wUp", "wDown", "rwkvFfnReceptance",
  "rwkv6MixW1", "rwkv6MixW2", "rwkv6DecayW1", "rwkv6DecayW2", "rwkv6Gate",
  "rwkv7W1", "rwkv7W2", "rwkv7A1", "rwkv7A2", "rwkv7V1", "rwkv7V2", "rwkv7G1", "rwkv7G2",
]);
/** Token-shift mixes uploaded stacked instead of alone. */
const STACKED_MIXES: ReadonlySet<LayerWeightName> = new Set<LayerWeightName>(["rwkvMixK", "rwkvMixV", "rwkvMixR", "rwkvFfnMixK", "rwkvFfnMixR", "rwkv6FfnLerpK", "rwkv6FfnLerpR"]);

/** The layer's tensors as the backend uploads them: every weight of layerWeightDims, RWKV-4's mixes stacked as its kernel reads them. */
export function recurrentUploadParts(w: LayerWeightsF32, shape: LayerShape): { name: RecurrentTensorName; values: Float32Array[]; gin: boolean }[] {
  const names = Object.keys(layerWeightDims(shape)) as LayerWeightName[];
  const stacked = shape.kind === "rwkv4" || shape.kind === "rwkv6";
  const parts: { name: RecurrentTensorName; values: Float32Array[]; gin: boolean }[] = names
    .filter((n) => !(stacked && STACKED_MIXES.has(n)))
    .map((n) => ({ name: n, values: [w[n]!], gin: GEMM_WEIGHTS.has(n) }));
  if (shape.kind === "rwkv4") {
    parts.push({ name: "rwkv4TimeMixes", values: [w.rwkvMixK!, w.rwkvMixV!, w.rwkvMixR!], gin: false });
    parts.push({ name: "rwkvChannelMixes", values: [w.rwkvFfnMixK!, w.rwkvFfnMixR!], gin: false });
  }
  if (shape.kind === "rwkv6") parts.push({ name: "rwkvChannelMixes", values: [w.rwkv6FfnLerpK!, w.rwkv6FfnLerpR!], gin: false });
  return parts;
}

/** Refuses a recurrent kind or size the kernels do not take, naming it and what to do. */
export function checkRecurrentShape(shape: LayerShape): void {
  const kind = layerKind(shape);
  const hint = "run this model with --backend onnx (or wasm, reference): every CPU backend computes recurrent layers";
  if (!CUDA_RECURRENT_KINDS.has(kind)) throw new UnsupportedError(`backend cuda does not compute ${kind} layers (a recurrent scan) yet`, { got: kind, option: "--backend", hint });
  if (kind === "mamba" && mambaDimsOf(shape).dState > Math.max(...MAMBA_STATE_SIZES)) {
    throw new UnsupportedError(`the cuda backend's Mamba scan holds a state of up to ${Math.max(...MAMBA_STATE_SIZES)} per channel, the model has ${mambaDimsOf(shape).dState}`, { option: "--backend", hint });
  }
  if (kind === "mamba2" && mamba2DimsOf(shape).dState > Math.max(...MAMBA2_STATE_SIZES)) {
    throw new UnsupportedError(`the cuda backend's Mamba-2 scan holds a state of up to ${Math.max(...MAMBA2_STATE_SIZES)} per channel, the model has ${mamba2DimsOf(shape).dState}`, { option: "--backend", hint });
  }
  if (kind === "rwkv6" && !(RWKV6_HEAD_SIZES as readonly number[]).includes(rwkv6DimsOf(shape).headSize)) {
    throw new UnsupportedError(`the cuda backend's RWKV-6 scan takes head sizes ${RWKV6_HEAD_SIZES.join(", ")}, the model has ${rwkv6DimsOf(shape).headSize}`, { option: "--backend", hint });
  }
  if (kind === "rwkv7" && !(RWKV7_HEAD_SIZES as readonly number[]).includes(rwkv7DimsOf(shape).headSize)) {
    throw new UnsupportedError(`the cuda backend's RWKV-7 scan takes head sizes ${RWKV7_HEAD_SIZES.join(", ")}, the model has ${rwkv7DimsOf(shape).headSize}`, { option: "--backend", hint });
  }
}

/** The fp32 staging of the layer's largest weight on its way to the GEMM input type. */
export function recurrentStagingBytes(shape: LayerShape): number {
  return Math.max(...Object.values(layerWeightDims(shape)).map((dims) => dims!.reduce((a, b) => a * b, 1))) * 4;
}

/**
 * Device bytes a token of a recurrent layer needs beside the weights (its states, every scratch
 * buffer of the layer), for the backend's decision whether weights stay resident.
 */
export function recurrentRowBytes(shape: LayerShape, ginBytes: number): number {
  const { dim, hiddenDim } = shape;
  const states = 3 * dim * 4;
  if (shape.kind === "mamba") {
    const { dInner, dState, dtRank } = mambaDimsOf(shape);
    return states + dim * ginBytes + 2 * dInner * 4 + dInner * (4 + ginBytes) + (dtRank + 2 * dState) * 4 + dtRank * ginBytes + dInner * (4 + ginBytes);
  }
  if (shape.kind === "mamba2") {
    const m = mamba2DimsOf(shape);
    const convDim = mamba2ConvDim(m);
    return states + dim * ginBytes + (m.dInner + convDim + m.nHeads) * 4 + convDim * 4 + m.dInner * (4 + ginBytes);
  }
  const att = shape.kind === "rwkv4" ? rwkvAttDimOf(shape) : dim;
  // RWKV-6's token-shift LoRA: its middle and five branches' extras.
  const lora = shape.kind === "rwkv6" ? 5 * rwkv6DimsOf(shape).mixExtraDim * (4 + ginBytes) + 5 * dim * 4 : 0;
  // Normed rows, six mixes, r k v decay gate a mix (fp32), the LoRA middles, y, h, channel mixing's hidden.
  return states + dim * 4 + 6 * dim * ginBytes + 7 * Math.max(att, dim) * 4 + 2 * dim * (4 + ginBytes) + att * ginBytes + dim * 4 + hiddenDim * ginBytes + lora;
}

/** What a recurrent layer needs of the backend: scratch memory, launches, its GEMM helpers. */
export interface RecurrentContext {
  ginBytes: number;
  scratch(slot: string, bytes: number): DevicePtr;
  launch(kernel: KernelName, grid: [number, number?, number?], block: number, args: KernelArg[]): void;
  /** out (rows, n) = input (rows, k; rows ldInput apart, default k) @ w (n, k)^T; out fp32, or GEMM inputs when asGin. */
  linear(out: DevicePtr, input: DevicePtr, w: DevicePtr, rows: number, k: number, n: number, asGin?: boolean, ldInput?: number): void;
  /** out (rows, dim) = x + input (rows, k) @ w (dim, k)^T (x may be out). */
  residualAdd(x: DevicePtr, out: DevicePtr, input: DevicePtr, w: DevicePtr, rows: number, k: number, dim: number): void;
  copy(dst: DevicePtr, src: DevicePtr, bytes: number): void;
}

/** RWKV-7's value residual across layers: the first block's v (rows, dim) fp32 on the device, once a block has started it. */
export interface ValueResidual {
  vFirst: DevicePtr | undefined;
  /** Device memory for v_first of these rows, for the block that starts it. */
  start(): DevicePtr;
}

const BLOCK = 256;
const SCAN_BLOCK = 128;
const gridFor = (n: number): number => Math.max(1, Math.min(Math.ceil(n / BLOCK), 132 * 32));
const ptr = (p: DevicePtr | null | undefined): KernelArg => ({ ptr: p ?? null });
const i32 = (v: number): KernelArg => ({ i32: v });
const f32 = (v: number): KernelArg => ({ f32: v });
const i64 = (v: number): KernelArg => ({ i64: v });

type Tensors = Partial<Record<RecurrentTensorName, DevicePtr>>;

/** The tensor, which recurrentUploadParts put on the device for this kind (absent is a programming error). */
function tensor(t: Tensors, name: RecurrentTensorName): DevicePtr {
  const p = t[name];
  if (p === undefined) throw new Error(`internal: recurrent layer tensor ${name} is not on the device`);
  return p;
}

/** x (nWindows * seqLen, dim) fp32 -> out, through one layer of a recurrent kind, each window from a zero state. */
export function runRecurrentLayer(ctx: RecurrentContext, x: DevicePtr, out: DevicePtr, nWindows: number, seqLen: number, t: Tensors, shape: LayerShape, side: ValueResidual): void {
  if (shape.kind === "mamba") mambaLayer(ctx, x, out, nWindows, seqLen, t, shape);
  else if (shape.kind === "mamba2") mamba2Layer(ctx, x, out, nWindows, seqLen, t, shape);
  else if (shape.kind === "rwkv4") rwkv4Layer(ctx, x, out, nWindows, seqLen, t, shape);
  else if (shape.kind === "rwkv6") rwkv6Layer(ctx, x, out, nWindows, seqLen, t, shape);
  else if (shape.kind === "rwkv7") rwkv7Layer(ctx, x, out, nWindows, seqLen, t, shape, side);
  else checkRecurrentShape(shape);
}

/** RMSNorm, in_proj, conv + silu, x_proj, dt_proj, the selective scan (gated), out_proj + the residual. */
function mambaLayer(ctx: RecurrentContext, x: DevicePtr, out: DevicePtr, nWindows: number, seqLen: number, t: Tensors, shape: LayerShape): void {
  const { dim, normEps } = shape;
  const { dInner, dState, dtRank, convKernel } = mambaDimsOf(shape);
  const { ginBytes } = ctx;
  const rows = nWindows * seqLen;
  const nParams = dtRank + 2 * dState;
  const xn = ctx.scratch("mamba.normed", rows * dim * ginBytes);
  ctx.launch("norm_rows", [rows], BLOCK, [ptr(x), ptr(null), ptr(tensor(t, "attnNorm")), ptr(null), ptr(xn), i32(dim), f32(normEps), i32(0)]);
  // (rows, 2 dInner): the stream, then the gate; fp32, as the conv and the gate read it.
  const projected = ctx.scratch("mamba.projected", rows * 2 * dInner * 4);
  ctx.linear(projected, xn, tensor(t, "mambaInProj"), rows, dim, 2 * dInner);
  const n = rows * dInner;
  const u = ctx.scratch("mamba.u", n * 4);
  const uGin = ctx.scratch("mamba.uGin", n * ginBytes);
  ctx.launch("mamba_conv_silu", [gridFor(n)], BLOCK, [
    ptr(projected), i32(2 * dInner), i32(0), ptr(tensor(t, "mambaConv")), ptr(t.mambaConvBias), ptr(u), ptr(uGin), i32(dInner), i32(convKernel), i32(seqLen), i64(n),
  ]);
  const params = ctx.scratch("mamba.params", rows * nParams * 4);
  ctx.linear(params, uGin, tensor(t, "mambaXProj"), rows, dInner, nParams);
  const dtLow = ctx.scratch("mamba.dtLow", rows * dtRank * ginBytes);
  ctx.launch("columns_to_gin", [gridFor(rows * dtRank)], BLOCK, [ptr(params), i32(nParams), i32(0), i32(dtRank), ptr(dtLow), i64(rows * dtRank)]);
  const dtRaw = ctx.scratch("mamba.dtRaw", n * 4);
  ctx.linear(dtRaw, dtLow, tensor(t, "mambaDtProj"), rows, dtRank, dInner);
  const y = ctx.scratch("mamba.y", n * ginBytes);
  const stateSize = MAMBA_STATE_SIZES.find((s) => dState <= s);
  if (stateSize === undefined) checkRecurrentShape(shape);
  ctx.launch(`mamba_scan_${stateSize!}`, [Math.ceil(dInner / SCAN_BLOCK), nWindows], SCAN_BLOCK, [
    ptr(u), ptr(dtRaw), ptr(params), ptr(projected), ptr(tensor(t, "mambaALog")), ptr(tensor(t, "mambaDtBias")), ptr(tensor(t, "mambaD")), ptr(y),
    i32(dInner), i32(dState), i32(dtRank), i32(seqLen),
  ]);
  ctx.residualAdd(x, out, y, tensor(t, "mambaOutProj"), rows, dInner, dim);
}

/** RMSNorm, in_proj (z | x B C | dt), conv + silu over x B C, the multi-head scan, the gated RMSNorm, out_proj + the residual. */
function mamba2Layer(ctx: RecurrentContext, x: DevicePtr, out: DevicePtr, nWindows: number, seqLen: number, t: Tensors, shape: LayerShape): void {
  const { dim, normEps } = shape;
  const m = mamba2DimsOf(shape);
  const { dInner, dState, nHeads, headDim, nGroups, convKernel, normGroupSize } = m;
  const convDim = mamba2ConvDim(m);
  const nProj = dInner + convDim + nHeads;
  const rows = nWindows * seqLen;
  const xn = ctx.scratch("mamba.normed", rows * dim * ctx.ginBytes);
  ctx.launch("norm_rows", [rows], BLOCK, [ptr(x), ptr(null), ptr(tensor(t, "attnNorm")), ptr(null), ptr(xn), i32(dim), f32(normEps), i32(0)]);
  const projected = ctx.scratch("mamba.projected", rows * nProj * 4);
  ctx.linear(projected, xn, tensor(t, "mambaInProj"), rows, dim, nProj);
  const convOut = ctx.scratch("mamba.u", rows * convDim * 4);
  ctx.launch("mamba_conv_silu", [gridFor(rows * convDim)], BLOCK, [
    ptr(projected), i32(nProj), i32(dInner), ptr(tensor(t, "mambaConv")), ptr(t.mambaConvBias), ptr(convOut), ptr(null), i32(convDim), i32(convKernel), i32(seqLen), i64(rows * convDim),
  ]);
  const y = ctx.scratch("mamba2.y", rows * dInner * 4);
  const stateSize = MAMBA2_STATE_SIZES.find((s) => dState <= s);
  if (stateSize === undefined) checkRecurrentShape(shape);
  ctx.launch(`mamba2_scan_${stateSize!}`, [Math.ceil(dInner / SCAN_BLOCK), nWindows], SCAN_BLOCK, [
    ptr(convOut), ptr(projected), ptr(tensor(t, "mambaALog")), ptr(tensor(t, "mambaDtBias")), ptr(tensor(t, "mambaD")), ptr(y),
    i32(dInner), i32(dState), i32(nHeads), i32(headDim), i32(nGroups), i32(nProj), f32(m.dtMin), f32(m.dtMax), i32(seqLen),
  ]);
  const gated = ctx.scratch("mamba.y", rows * dInner * ctx.ginBytes);
  ctx.launch("mamba2_gated_norm", [rows, dInner / normGroupSize], BLOCK, [ptr(y), ptr(projected), i32(nProj), ptr(tensor(t, "mambaNorm")), ptr(gated), i32(dInner), i32(normGroupSize), f32(normEps)]);
  ctx.residualAdd(x, out, gated, tensor(t, "mambaOutProj"), rows, dInner, dim);
}

/** LayerNorm of the stream (fp32) into the slot "rwkv.normed". */
function layerNormRows(ctx: RecurrentContext, stream: DevicePtr, norm: DevicePtr, normBias: DevicePtr, rows: number, shape: LayerShape): DevicePtr {
  const normed = ctx.scratch("rwkv.normed", rows * shape.dim * 4);
  ctx.launch("norm_rows_f32", [rows], BLOCK, [ptr(stream), ptr(norm), ptr(normBias), ptr(normed), i32(shape.dim), f32(shape.normEps), i32(1)]);
  return normed;
}

/**
 * Token shift of normed rows -> nMix GEMM inputs (mixes stacked, (nMix, rows, dim)), RWKV-4's
 * formula or the lerp of RWKV-6/7, extra (nMix, rows, dim) added to the mixes when given; returns mix m's rows.
 */
function tokenShift(ctx: RecurrentContext, normed: DevicePtr, mixes: DevicePtr, extra: DevicePtr | undefined, nMix: number, lerp: boolean, rows: number, seqLen: number, dim: number, slot = "rwkv.mixed"): (m: number) => DevicePtr {
  const n = rows * dim;
  const mixed = ctx.scratch(slot, nMix * n * ctx.ginBytes);
  ctx.launch("token_shift_mix", [gridFor(n)], BLOCK, [ptr(normed), ptr(mixes), ptr(extra), i32(nMix), ptr(mixed), i32(dim), i32(seqLen), i32(lerp ? 1 : 0), i64(n)]);
  return (m) => mixed + BigInt(m * n * ctx.ginBytes);
}

/** LayerNorm + token shift -> nMix GEMM inputs; returns mix m's rows. */
function shiftMixes(ctx: RecurrentContext, stream: DevicePtr, norm: DevicePtr, normBias: DevicePtr, mixes: DevicePtr, nMix: number, lerp: boolean, rows: number, seqLen: number, shape: LayerShape): (m: number) => DevicePtr {
  return tokenShift(ctx, layerNormRows(ctx, stream, norm, normBias, rows, shape), mixes, undefined, nMix, lerp, rows, seqLen, shape.dim);
}

/**
 * RWKV-4's and RWKV-6's channel mixing: out = h + sigmoid(receptance(mix 1)) * wDown @ relu(wUp @ mix 0)^2,
 * the mixes (key, receptance) of LayerNorm(h) by token shift.
 */
function sigmoidGatedChannelMix(ctx: RecurrentContext, h: DevicePtr, out: DevicePtr, t: Tensors, lerp: boolean, rows: number, seqLen: number, shape: LayerShape): void {
  const { dim, hiddenDim } = shape;
  const n = rows * dim;
  const mix = shiftMixes(ctx, h, tensor(t, "ffnNorm"), tensor(t, "ffnNormBias"), tensor(t, "rwkvChannelMixes"), 2, lerp, rows, seqLen, shape);
  const hidden = ctx.scratch("rwkv.hidden", rows * hiddenDim * ctx.ginBytes);
  ctx.linear(hidden, mix(0), tensor(t, "wUp"), rows, dim, hiddenDim, true);
  ctx.launch("relu_square_in_place", [gridFor(rows * hiddenDim)], BLOCK, [ptr(hidden), i64(rows * hiddenDim)]);
  const gate = ctx.scratch("rwkv.gate", n * 4);
  ctx.linear(gate, mix(1), tensor(t, "rwkvFfnReceptance"), rows, dim, dim);
  const value = ctx.scratch("rwkv.value", n * 4);
  ctx.linear(value, hidden, tensor(t, "wDown"), rows, hiddenDim, dim);
  ctx.launch("add_sigmoid_gated", [gridFor(n)], BLOCK, [ptr(h), ptr(gate), ptr(value), ptr(out), i64(n)]);
}

/** Time mixing (k, v, r GEMMs, the WKV scan, output GEMM + residual), then channel mixing (squared ReLU key, sigmoid receptance gate). */
function rwkv4Layer(ctx: RecurrentContext, x: DevicePtr, out: DevicePtr, nWindows: number, seqLen: number, t: Tensors, shape: LayerShape): void {
  const { dim } = shape;
  const att = rwkvAttDimOf(shape);
  const rows = nWindows * seqLen;
  const n = rows * dim;
  const timeMix = shiftMixes(ctx, x, tensor(t, "attnNorm"), tensor(t, "attnNormBias"), tensor(t, "rwkv4TimeMixes"), 3, false, rows, seqLen, shape);
  const k = ctx.scratch("rwkv.k", rows * att * 4);
  const v = ctx.scratch("rwkv.v", rows * att * 4);
  const r = ctx.scratch("rwkv.r", rows * att * 4);
  ctx.linear(k, timeMix(0), tensor(t, "wk"), rows, dim, att);
  ctx.linear(v, timeMix(1), tensor(t, "wv"), rows, dim, att);
  ctx.linear(r, timeMix(2), tensor(t, "rwkvReceptance"), rows, dim, att);
  const wkv = ctx.scratch("rwkv.y", rows * att * ctx.ginBytes);
  ctx.launch("rwkv4_wkv", [Math.ceil(att / SCAN_BLOCK), nWindows], SCAN_BLOCK, [ptr(k), ptr(v), ptr(r), ptr(tensor(t, "rwkvTimeDecay")), ptr(tensor(t, "rwkvTimeFirst")), ptr(wkv), i32(att), i32(seqLen)]);
  const h = ctx.scratch("rwkv.h", n * 4);
  ctx.residualAdd(x, h, wkv, tensor(t, "wo"), rows, att, dim);
  sigmoidGatedChannelMix(ctx, h, out, t, false, rows, seqLen, shape);
}

/**
 * Time mixing (the token-shift LoRA giving each of the five branches w, k, v, r, g its own lerp per
 * token; r, k, v and the gate; the decay LoRA; the WKV6 scan per head with its group norm and silu
 * gate; output GEMM + residual), then channel mixing as RWKV-4's with lerps.
 */
function rwkv6Layer(ctx: RecurrentContext, x: DevicePtr, out: DevicePtr, nWindows: number, seqLen: number, t: Tensors, shape: LayerShape): void {
  const { dim } = shape;
  const { headSize, mixExtraDim: extra, decayExtraDim } = rwkv6DimsOf(shape);
  const rows = nWindows * seqLen;
  const n = rows * dim;
  const normed = layerNormRows(ctx, x, tensor(t, "attnNorm"), tensor(t, "attnNormBias"), rows, shape);
  const lerpX = tokenShift(ctx, normed, tensor(t, "rwkv6LerpX"), undefined, 1, true, rows, seqLen, dim, "rwkv6.lerpX")(0);
  // The LoRA's middle (rows, 5 extra): tanh of the down projection; branch b's up projection reads its columns b extra ...
  const middle = ctx.scratch("rwkv.loraMiddle", rows * 5 * extra * 4);
  const middleGin = ctx.scratch("rwkv.loraMiddleGin", rows * 5 * extra * ctx.ginBytes);
  ctx.linear(middle, lerpX, tensor(t, "rwkv6MixW1"), rows, dim, 5 * extra);
  ctx.launch("activation_to_gin", [gridFor(rows * 5 * extra)], BLOCK, [ptr(middle), ptr(middleGin), i32(1), i64(rows * 5 * extra)]);
  const branchExtra = ctx.scratch("rwkv6.branchExtra", 5 * n * 4);
  const w2 = tensor(t, "rwkv6MixW2");
  for (let b = 0; b < 5; b++) {
    ctx.linear(branchExtra + BigInt(b * n * 4), middleGin + BigInt(b * extra * ctx.ginBytes), w2 + BigInt(b * dim * extra * ctx.ginBytes), rows, extra, dim, false, 5 * extra);
  }
  // Branches in rwkv6LerpFused's order: w, k, v, r, g.
  const branch = tokenShift(ctx, normed, tensor(t, "rwkv6LerpFused"), branchExtra, 5, true, rows, seqLen, dim);
  const fp32 = (slot: string): DevicePtr => ctx.scratch(`rwkv.${slot}`, n * 4);
  const [r, k, v, gate, decayIn] = [fp32("r"), fp32("k"), fp32("v"), fp32("gate"), fp32("decay")];
  ctx.linear(k, branch(1), tensor(t, "wk"), rows, dim, dim);
  ctx.linear(v, branch(2), tensor(t, "wv"), rows, dim, dim);
  ctx.linear(r, branch(3), tensor(t, "rwkvReceptance"), rows, dim, dim);
  ctx.linear(gate, branch(4), tensor(t, "rwkv6Gate"), rows, dim, dim);
  lowRank(ctx, decayIn, branch(0), tensor(t, "rwkv6DecayW1"), tensor(t, "rwkv6DecayW2"), 1, decayExtraDim, rows, dim);
  const y = ctx.scratch("rwkv.y", n * ctx.ginBytes);
  ctx.launch(`rwkv6_scan_${headSize}` as KernelName, [dim / headSize, nWindows], Math.max(32, headSize), [
    ptr(r), ptr(k), ptr(v), ptr(decayIn), ptr(gate),
    ...(["rwkvTimeFirst", "rwkvTimeDecay", "rwkv6LnX", "rwkv6LnXBias"] as const).map((name) => ptr(tensor(t, name))),
    ptr(y), i32(dim), i32(seqLen),
  ]);
  const h = ctx.scratch("rwkv.h", n * 4);
  ctx.residualAdd(x, h, y, tensor(t, "wo"), rows, dim, dim);
  sigmoidGatedChannelMix(ctx, h, out, t, true, rows, seqLen, shape);
}

/** RWKV-7's low-rank projection into dst (rows, dim) fp32: w2 @ act(w1 @ input); act 0 identity, 1 tanh, 2 sigmoid. */
function lowRank(ctx: RecurrentContext, dst: DevicePtr, input: DevicePtr, w1: DevicePtr, w2: DevicePtr, act: 0 | 1 | 2, rank: number, rows: number, dim: number): void {
  const mid = ctx.scratch("rwkv.loraMiddle", rows * rank * 4);
  const midGin = ctx.scratch("rwkv.loraMiddleGin", rows * rank * ctx.ginBytes);
  ctx.linear(mid, input, w1, rows, dim, rank);
  ctx.launch("activation_to_gin", [gridFor(rows * rank)], BLOCK, [ptr(mid), ptr(midGin), i32(act), i64(rows * rank)]);
  ctx.linear(dst, midGin, w2, rows, rank, dim);
}

/** Time mixing (six lerps, r/k/v and the four LoRAs, the value residual, the delta-rule scan per head, output GEMM + residual), then channel mixing. */
function rwkv7Layer(ctx: RecurrentContext, x: DevicePtr, out: DevicePtr, nWindows: number, seqLen: number, t: Tensors, shape: LayerShape, side: ValueResidual): void {
  const { dim, hiddenDim } = shape;
  const { headSize, decayRank, iclrRank, valueRank, gateRank } = rwkv7DimsOf(shape);
  const rows = nWindows * seqLen;
  const n = rows * dim;
  // Mixes in rwkv7Lerp's order: r, w (decay), k, v, a, g.
  const mix = shiftMixes(ctx, x, tensor(t, "attnNorm"), tensor(t, "attnNormBias"), tensor(t, "rwkv7Lerp"), 6, true, rows, seqLen, shape);
  const fp32 = (slot: string): DevicePtr => ctx.scratch(`rwkv.${slot}`, n * 4);
  const [r, decayIn, k, v, gate, aIn] = [fp32("r"), fp32("decay"), fp32("k"), fp32("v"), fp32("gate"), fp32("a")];
  ctx.linear(r, mix(0), tensor(t, "rwkvReceptance"), rows, dim, dim);
  lowRank(ctx, decayIn, mix(1), tensor(t, "rwkv7W1"), tensor(t, "rwkv7W2"), 1, decayRank, rows, dim);
  ctx.linear(k, mix(2), tensor(t, "wk"), rows, dim, dim);
  ctx.linear(v, mix(3), tensor(t, "wv"), rows, dim, dim);
  if (side.vFirst === undefined) {
    ctx.copy(side.start(), v, n * 4);
  } else {
    const residualMix = fp32("valueMix");
    lowRank(ctx, residualMix, mix(3), tensor(t, "rwkv7V1"), tensor(t, "rwkv7V2"), 0, valueRank, rows, dim);
    ctx.launch("rwkv7_value_residual", [gridFor(n)], BLOCK, [ptr(v), ptr(side.vFirst), ptr(residualMix), ptr(tensor(t, "rwkv7V0")), i32(dim), i64(n)]);
  }
  lowRank(ctx, gate, mix(5), tensor(t, "rwkv7G1"), tensor(t, "rwkv7G2"), 2, gateRank, rows, dim);
  lowRank(ctx, aIn, mix(4), tensor(t, "rwkv7A1"), tensor(t, "rwkv7A2"), 0, iclrRank, rows, dim);
  const y = ctx.scratch("rwkv.y", n * ctx.ginBytes);
  ctx.launch(`rwkv7_scan_${headSize}` as KernelName, [dim / headSize, nWindows], headSize, [
    ptr(r), ptr(decayIn), ptr(k), ptr(v), ptr(aIn), ptr(gate),
    ...(["rwkv7W0", "rwkv7A0", "rwkv7KK", "rwkv7KA", "rwkv7RK", "rwkv7LnX", "rwkv7LnXBias"] as const).map((name) => ptr(tensor(t, name))),
    ptr(y), i32(dim), i32(seqLen),
  ]);
  const h = ctx.scratch("rwkv.h", n * 4);
  ctx.residualAdd(x, h, y, tensor(t, "wo"), rows, dim, dim);
  const channelMix = shiftMixes(ctx, h, tensor(t, "ffnNorm"), tensor(t, "ffnNormBias"), tensor(t, "rwkvFfnMixK"), 1, true, rows, seqLen, shape);
  const hidden = ctx.scratch("rwkv.hidden", rows * hiddenDim * ctx.ginBytes);
  ctx.linear(hidden, channelMix(0), tensor(t, "wUp"), rows, dim, hiddenDim, true);
  ctx.launch("relu_square_in_place", [gridFor(rows * hiddenDim)], BLOCK, [ptr(hidden), i64(rows * hiddenDim)]);
  ctx.residualAdd(h, out, hidden, tensor(t, "wDown"), rows, hiddenDim, dim);
}
