// A minimal protocol-buffers writer: enough of the wire format (varints, fixed32,
// length-delimited fields, packed repeated scalars) to serialize ONNX models without a
// protobuf library.

/** Wire types of the protobuf encoding. */
const WIRE_VARINT = 0;
const WIRE_LEN = 2;
const WIRE_FIXED32 = 5;

const utf8 = new TextEncoder();

/**
 * Appends protobuf fields to a growable byte buffer. Nested messages are written by
 * encoding them into their own writer first, because a length prefix must precede them.
 */
export class ProtoWriter {
  private buf = new Uint8Array(256);
  private len = 0;
  private readonly scratch = new DataView(new ArrayBuffer(8));

  private reserve(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
  }

  /** A raw unsigned varint; negative int64 values become their 64-bit two's complement (10 bytes). */
  rawVarint(value: number | bigint): void {
    if (typeof value === "number" && !Number.isSafeInteger(value)) throw new RangeError(`varint ${value} is not a safe integer`);
    this.reserve(10);
    // Small non-negative numbers (tags, lengths, dims: nearly every varint) skip BigInt.
    if (typeof value === "number" && value >= 0 && value < 0x80000000) {
      let n = value;
      while (n >= 0x80) {
        this.buf[this.len++] = (n & 0x7f) | 0x80;
        n >>>= 7;
      }
      this.buf[this.len++] = n;
      return;
    }
    let v = BigInt.asUintN(64, BigInt(value));
    while (v >= 0x80n) {
      this.buf[this.len++] = Number(v & 0x7fn) | 0x80;
      v >>= 7n;
    }
    this.buf[this.len++] = Number(v);
  }

  private tag(field: number, wire: number): void {
    this.rawVarint(field * 8 + wire);
  }

  /** int32 / int64 / enum / bool field. */
  varint(field: number, value: number | bigint): void {
    this.tag(field, WIRE_VARINT);
    this.rawVarint(value);
  }

  /** float field (fixed32, little-endian). */
  float(field: number, value: number): void {
    this.tag(field, WIRE_FIXED32);
    this.scratch.setFloat32(0, value, true);
    this.reserve(4);
    for (let i = 0; i < 4; i++) this.buf[this.len++] = this.scratch.getUint8(i);
  }

  /** bytes field. */
  bytes(field: number, data: Uint8Array): void {
    this.tag(field, WIRE_LEN);
    this.rawVarint(data.length);
    this.reserve(data.length);
    this.buf.set(data, this.len);
    this.len += data.length;
  }

  /** string field (UTF-8). */
  string(field: number, value: string): void {
    this.bytes(field, utf8.encode(value));
  }

  /** Embedded message field: `write` fills a fresh writer whose bytes become the field. */
  message(field: number, write: (w: ProtoWriter) => void): void {
    const inner = new ProtoWriter();
    write(inner);
    this.bytes(field, inner.finish());
  }

  /** Packed repeated int64 (or int32) field: one length-delimited run of varints. */
  packedVarints(field: number, values: readonly (number | bigint)[]): void {
    const inner = new ProtoWriter();
    for (const v of values) inner.rawVarint(v);
    this.bytes(field, inner.finish());
  }

  /** Packed repeated float field: one length-delimited run of little-endian float32. */
  packedFloats(field: number, values: readonly number[]): void {
    const data = new Uint8Array(values.length * 4);
    const view = new DataView(data.buffer);
    values.forEach((v, i) => view.setFloat32(i * 4, v, true));
    this.bytes(field, data);
  }

  /** The bytes written so far (a view; copy it if the writer is used again). */
  finish(): Uint8Array {
    return this.buf.subarray(0, this.len);
  }
}
