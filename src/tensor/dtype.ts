// Element types of stored tensors and their conversion to float32.

/** float16 (IEEE half) bits -> number. */
export function f16ToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24; // subnormal
  if (exp === 31) return frac === 0 ? sign * Infinity : NaN;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

/** Decodes little-endian float16 bytes into float32. */
export function decodeF16(bytes: Uint8Array, out: Float32Array): void {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 0; i < out.length; i++) out[i] = f16ToF32(view.getUint16(2 * i, true));
}

/** Decodes little-endian bfloat16 bytes (the top half of a float32) into float32. */
export function decodeBF16(bytes: Uint8Array, out: Float32Array): void {
  const bits = new Uint32Array(out.buffer, out.byteOffset, out.length);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 0; i < out.length; i++) bits[i] = view.getUint16(2 * i, true) << 16;
}

/** Copies little-endian float32 bytes into a fresh, aligned Float32Array. */
export function decodeF32(bytes: Uint8Array, out: Float32Array): void {
  if (bytes.byteOffset % 4 === 0) {
    out.set(new Float32Array(bytes.buffer, bytes.byteOffset, out.length));
  } else {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(4 * i, true);
  }
}
