// ggml's reference K-quant quantizers (quantize_row_q4_K_ref, _q5_K_ref, _q6_K_ref: no importance
// matrix), reproduced byte for byte.
//
// The block layouts and the search for scales are facts of ggml (ggml-common.h, ggml-quants.c);
// this is an independent implementation. ggml computes in float32: every operation here is
// rounded with Math.fround where ggml's float code rounds, and nearest_int is ggml's float trick
// (add 1.5 * 2^23, read the mantissa), which rounds half to even. test/oracle/ggml_kquant.py
// checks the bytes against ggml's own reference functions.

import { f16ToF32, f32ToF16Bits } from "./half.js";

const fround = Math.fround;
const QK_K = 256;
/** ggml's GROUP_MAX_EPS: a group whose largest magnitude is below it is all zeros. */
const GROUP_MAX_EPS = 1e-15;

const trick = new Float32Array(1);
const trickBits = new Int32Array(trick.buffer);

/** ggml's nearest_int: round a float32 to the nearest integer, ties to even, by the 1.5 * 2^23 trick. */
function nearestInt(x: number): number {
  trick[0] = x + 12582912;
  return (trickBits[0]! & 0x007fffff) - 0x00400000;
}

/** The float16 value a float32 becomes when stored as a block's scale. */
function viaHalf(x: number): number {
  return f16ToF32(f32ToF16Bits(x));
}

function putHalf(out: Uint8Array, at: number, x: number): void {
  const h = f32ToF16Bits(x);
  out[at] = h & 0xff;
  out[at + 1] = h >> 8;
}

/**
 * make_qkx2_quants: an affine (scale, min) fit of n values to 0..nmax, weighted, trying nstep + 1
 * scales around nmax / (max - min) and keeping the lowest weighted squared error.
 * Writes the levels to L; returns [scale, -min].
 */
function makeQkx2Quants(n: number, nmax: number, x: Float32Array, xo: number, weights: Float32Array, L: Uint8Array, lo: number, laux: Uint8Array, rmin: number, rdelta: number, nstep: number): [number, number] {
  let min = x[xo]!;
  let max = x[xo]!;
  let sumW = weights[0]!;
  let sumX = fround(sumW * x[xo]!);
  for (let i = 1; i < n; i++) {
    const v = x[xo + i]!;
    if (v < min) min = v;
    if (v > max) max = v;
    const w = weights[i]!;
    sumW = fround(sumW + w);
    sumX = fround(sumX + fround(w * v));
  }
  if (min > 0) min = 0;
  if (max === min) {
    for (let i = 0; i < n; i++) L[lo + i] = 0;
    return [0, -min];
  }
  let iscale = fround(nmax / fround(max - min));
  let scale = fround(1 / iscale);
  let bestError = 0;
  for (let i = 0; i < n; i++) {
    const l = Math.max(0, Math.min(nmax, nearestInt(fround(iscale * fround(x[xo + i]! - min)))));
    L[lo + i] = l;
    const diff = fround(fround(fround(scale * l) + min) - x[xo + i]!);
    bestError = fround(bestError + fround(weights[i]! * fround(diff * diff)));
  }
  for (let is = 0; is <= nstep; is++) {
    // As ggml does: once a better fit is found, its (non-positive) min moves the range of later tries.
    iscale = fround(fround(fround(rmin + fround(rdelta * is)) + nmax) / fround(max - min));
    let sumL = 0;
    let sumL2 = 0;
    let sumXL = 0;
    for (let i = 0; i < n; i++) {
      const v = x[xo + i]!;
      const l = Math.max(0, Math.min(nmax, nearestInt(fround(iscale * fround(v - min)))));
      laux[i] = l;
      const w = weights[i]!;
      const wl = fround(w * l);
      sumL = fround(sumL + wl);
      sumL2 = fround(sumL2 + fround(wl * l));
      sumXL = fround(sumXL + fround(wl * v));
    }
    const D = fround(fround(sumW * sumL2) - fround(sumL * sumL));
    if (D > 0) {
      let thisScale = fround(fround(fround(sumW * sumXL) - fround(sumX * sumL)) / D);
      let thisMin = fround(fround(fround(sumL2 * sumX) - fround(sumL * sumXL)) / D);
      if (thisMin > 0) {
        thisMin = 0;
        thisScale = fround(sumXL / sumL2);
      }
      let curError = 0;
      for (let i = 0; i < n; i++) {
        const diff = fround(fround(fround(thisScale * laux[i]!) + thisMin) - x[xo + i]!);
        curError = fround(curError + fround(weights[i]! * fround(diff * diff)));
      }
      if (curError < bestError) {
        for (let i = 0; i < n; i++) L[lo + i] = laux[i]!;
        bestError = curError;
        scale = thisScale;
        min = thisMin;
      }
    }
  }
  return [scale, -min];
}

/**
 * make_qx_quants with rmse_type 1 (weights x^2): a symmetric fit of n values to -nmax..nmax-1,
 * trying 19 scales around nmax / max|x|. Writes levels + nmax to L; returns the scale.
 */
function makeQxQuants(n: number, nmax: number, x: Float32Array, xo: number, L: Uint8Array, lo: number): number {
  let max = 0;
  let amax = 0;
  for (let i = 0; i < n; i++) {
    const ax = Math.abs(x[xo + i]!);
    if (ax > amax) {
      amax = ax;
      max = x[xo + i]!;
    }
  }
  if (amax < GROUP_MAX_EPS) {
    for (let i = 0; i < n; i++) L[lo + i] = 0;
    return 0;
  }
  const level = (iscale: number, v: number): number => Math.max(-nmax, Math.min(nmax - 1, nearestInt(fround(iscale * v))));
  let iscale = fround(-nmax / max);
  let sumLX = 0;
  let sumL2 = 0;
  for (let i = 0; i < n; i++) {
    const v = x[xo + i]!;
    const l = level(iscale, v);
    L[lo + i] = l + nmax;
    const w = fround(v * v);
    sumLX = fround(sumLX + fround(fround(w * v) * l));
    sumL2 = fround(sumL2 + fround(fround(w * l) * l));
  }
  let scale = sumL2 ? fround(sumLX / sumL2) : 0;
  let best = fround(scale * sumLX);
  for (let is = -9; is <= 9; is++) {
    if (is === 0) continue;
    iscale = fround(-fround(nmax + fround(fround(0.1) * is)) / max);
    sumLX = 0;
    sumL2 = 0;
    for (let i = 0; i < n; i++) {
      const v = x[xo + i]!;
      const l = level(iscale, v);
      const w = fround(v * v);
      sumLX = fround(sumLX + fround(fround(w * v) * l));
      sumL2 = fround(sumL2 + fround(fround(w * l) * l));
    }
    if (sumL2 > 0 && fround(sumLX * sumLX) > fround(best * sumL2)) {
      for (let i = 0; i < n; i++) L[lo + i] = level(iscale, x[xo + i]!) + nmax;
      scale = fround(sumLX / sumL2);
      best = fround(scale * sumLX);
    }
  }
  return scale;
}

/** get_scale_min_k4: scale and min number j (0..7) from the 12 packed bytes at `at`. */
function scaleMinK4(b: Uint8Array, at: number, j: number): [number, number] {
  if (j < 4) return [b[at + j]! & 63, b[at + j + 4]! & 63];
  return [(b[at + j + 4]! & 0xf) | ((b[at + j - 4]! >> 6) << 4), (b[at + j + 4]! >> 4) | ((b[at + j]! >> 6) << 4)];
}

/**
 * Q4_K and Q5_K: eight sub-blocks of 32 each get an affine fit (weights sqrt(mean x^2) + |x|);
 * their scales and mins are quantized to six bits against the block's d and dmin; then every
 * element is requantized with its sub-block's stored scale and min.
 */
function quantizeK45(x: Float32Array, bits: 4 | 5): Uint8Array {
  const nmax = bits === 4 ? 15 : 31;
  const blockBytes = bits === 4 ? 144 : 176;
  const qsAt = bits === 4 ? 16 : 48;
  const out = new Uint8Array((x.length / QK_K) * blockBytes);
  const L = new Uint8Array(QK_K);
  const laux = new Uint8Array(32);
  const weights = new Float32Array(32);
  const scales = new Float32Array(8);
  const mins = new Float32Array(8);
  for (let blk = 0; blk * QK_K < x.length; blk++) {
    const xb = blk * QK_K;
    const at = blk * blockBytes;
    let maxScale = 0;
    let maxMin = 0;
    for (let j = 0; j < 8; j++) {
      let sumX2 = 0;
      for (let l = 0; l < 32; l++) sumX2 = fround(sumX2 + fround(x[xb + 32 * j + l]! * x[xb + 32 * j + l]!));
      const avX = fround(Math.sqrt(fround(sumX2 / 32)));
      for (let l = 0; l < 32; l++) weights[l] = avX + Math.abs(x[xb + 32 * j + l]!);
      const [scale, min] = bits === 4
        ? makeQkx2Quants(32, nmax, x, xb + 32 * j, weights, L, 32 * j, laux, -1, fround(0.1), 20)
        : makeQkx2Quants(32, nmax, x, xb + 32 * j, weights, L, 32 * j, laux, -0.5, fround(0.1), 15);
      scales[j] = scale;
      mins[j] = min;
      if (scales[j]! > maxScale) maxScale = scales[j]!;
      if (mins[j]! > maxMin) maxMin = mins[j]!;
    }
    const invScale = maxScale > 0 ? fround(63 / maxScale) : 0;
    const invMin = maxMin > 0 ? fround(63 / maxMin) : 0;
    const sc = at + 4;
    for (let j = 0; j < 8; j++) {
      // ggml stores nearest_int into a uint8_t before clamping to 63.
      const ls = Math.min(63, nearestInt(fround(invScale * scales[j]!)) & 0xff);
      const lm = Math.min(63, nearestInt(fround(invMin * mins[j]!)) & 0xff);
      if (j < 4) {
        out[sc + j] = ls;
        out[sc + j + 4] = lm;
      } else {
        out[sc + j + 4] = (ls & 0xf) | ((lm & 0xf) << 4);
        out[sc + j - 4] = out[sc + j - 4]! | ((ls >> 4) << 6);
        out[sc + j] = out[sc + j]! | ((lm >> 4) << 6);
      }
    }
    putHalf(out, at, fround(maxScale / 63));
    putHalf(out, at + 2, fround(maxMin / 63));
    const d = viaHalf(fround(maxScale / 63));
    const dmin = viaHalf(fround(maxMin / 63));
    for (let j = 0; j < 8; j++) {
      const [s, m] = scaleMinK4(out, sc, j);
      const dl = fround(d * s);
      if (!dl) continue;
      const ml = fround(dmin * m);
      for (let ii = 0; ii < 32; ii++) {
        L[32 * j + ii] = Math.max(0, Math.min(nmax, nearestInt(fround(fround(x[xb + 32 * j + ii]! + ml) / dl))));
      }
    }
    if (bits === 4) {
      for (let j = 0, q = at + qsAt; j < QK_K; j += 64, q += 32) {
        for (let l = 0; l < 32; l++) out[q + l] = L[j + l]! | (L[j + l + 32]! << 4);
      }
      continue;
    }
    // Q5_K: the fifth bit of element (64 n + j) goes to qh[j] bit 2n, of (64 n + 32 + j) to bit 2n + 1.
    const qh = at + 16;
    let m1 = 1;
    let m2 = 2;
    for (let n = 0, q = at + qsAt; n < QK_K; n += 64, q += 32) {
      for (let j = 0; j < 32; j++) {
        let l1 = L[n + j]!;
        if (l1 > 15) {
          l1 -= 16;
          out[qh + j] = out[qh + j]! | m1;
        }
        let l2 = L[n + j + 32]!;
        if (l2 > 15) {
          l2 -= 16;
          out[qh + j] = out[qh + j]! | m2;
        }
        out[q + j] = l1 | (l2 << 4);
      }
      m1 <<= 2;
      m2 <<= 2;
    }
  }
  return out;
}

/**
 * Q6_K: sixteen sub-blocks of 16 each get a symmetric fit (make_qx_quants, six bits); their scales
 * become int8 against the block's d, and every element is requantized with its stored scale.
 */
function quantizeQ6K(x: Float32Array): Uint8Array {
  const out = new Uint8Array((x.length / QK_K) * 210);
  const L = new Uint8Array(QK_K);
  const scales = new Float32Array(16);
  for (let blk = 0; blk * QK_K < x.length; blk++) {
    const xb = blk * QK_K;
    const at = blk * 210;
    let maxScale = 0;
    let maxAbsScale = 0;
    for (let ib = 0; ib < 16; ib++) {
      const scale = makeQxQuants(16, 32, x, xb + 16 * ib, L, 16 * ib);
      scales[ib] = scale;
      const abs = Math.abs(scale);
      if (abs > maxAbsScale) {
        maxAbsScale = abs;
        maxScale = scale;
      }
    }
    if (maxAbsScale < GROUP_MAX_EPS) continue; // an all-zero block: every byte 0, d = +0
    const iscale = fround(-128 / maxScale);
    putHalf(out, at + 208, fround(1 / iscale));
    const d = viaHalf(fround(1 / iscale));
    for (let ib = 0; ib < 16; ib++) out[at + 192 + ib] = Math.min(127, nearestInt(fround(iscale * scales[ib]!))) & 0xff;
    for (let j = 0; j < 16; j++) {
      const dl = fround(d * ((out[at + 192 + j]! << 24) >> 24));
      if (!dl) continue;
      for (let ii = 0; ii < 16; ii++) L[16 * j + ii] = Math.max(-32, Math.min(31, nearestInt(fround(x[xb + 16 * j + ii]! / dl)))) + 32;
    }
    for (let j = 0, ql = at, qh = at + 128; j < QK_K; j += 128, ql += 64, qh += 32) {
      for (let l = 0; l < 32; l++) {
        const q1 = L[j + l]!;
        const q2 = L[j + l + 32]!;
        const q3 = L[j + l + 64]!;
        const q4 = L[j + l + 96]!;
        out[ql + l] = (q1 & 0xf) | ((q3 & 0xf) << 4);
        out[ql + l + 32] = (q2 & 0xf) | ((q4 & 0xf) << 4);
        out[qh + l] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
      }
    }
  }
  return out;
}

export const quantizeQ4K = (x: Float32Array): Uint8Array => quantizeK45(x, 4);
export const quantizeQ5K = (x: Float32Array): Uint8Array => quantizeK45(x, 5);
export { quantizeQ6K };
