// Random-access reads from a file with every offset checked against the file size, so a
// hostile size field fails with a clear error before anything is allocated.

import { closeSync, fstatSync, openSync, readSync, writeSync } from "node:fs";
import { CheckpointError } from "../errors.js";

export class RandomAccessFile {
  readonly path: string;
  readonly size: number;
  private fd: number;

  constructor(path: string) {
    this.path = path;
    try {
      this.fd = openSync(path, "r");
    } catch (err) {
      throw new CheckpointError(`cannot open ${path}: ${(err as Error).message}`, {
        file: path,
        hint: "check the path and its permissions",
      });
    }
    this.size = fstatSync(this.fd).size;
  }

  /** Reads exactly `length` bytes at `offset`; throws if the range runs past the end of the file. */
  read(offset: number, length: number, what: string): Buffer {
    const buf = Buffer.allocUnsafe(length);
    this.readInto(buf, offset, length, what);
    return buf;
  }

  /** Reads exactly `length` bytes at `offset` into the start of `buf` (reused by callers that stream). */
  readInto(buf: Buffer, offset: number, length: number, what: string): void {
    this.checkRange(offset, length, what);
    let done = 0;
    while (done < length) {
      const n = readSync(this.fd, buf, done, length - done, offset + done);
      if (n === 0) throw new CheckpointError(`${this.path}: unexpected end of file while reading ${what}`, { file: this.path });
      done += n;
    }
  }

  private checkRange(offset: number, length: number, what: string): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.size) {
      throw new CheckpointError(`${this.path}: ${what} needs bytes ${offset}..${offset + length} but the file has ${this.size} bytes`, {
        file: this.path,
        expected: offset + length,
        got: this.size,
        hint: "the file is truncated or corrupt; re-download or re-convert it",
      });
    }
  }

  /**
   * The bytes `offset..offset+length` as a FileRange: iterating it reads chunks, so a large
   * range is never held whole, and an OutputFile copies it without the JavaScript heap.
   */
  readChunks(offset: number, length: number, what: string, chunkBytes = 16 << 20): FileRange {
    this.checkRange(offset, length, what);
    return new FileRange(this, offset, length, what, chunkBytes);
  }

  /** The open descriptor, for the native output writer's reads. */
  get descriptor(): number {
    return this.fd;
  }

  close(): void {
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
  }
}

/** A checked byte range of a RandomAccessFile; iterating it yields chunks of at most `chunkBytes`. */
export class FileRange implements Iterable<Buffer> {
  constructor(
    readonly file: RandomAccessFile,
    readonly offset: number,
    readonly length: number,
    readonly what: string,
    readonly chunkBytes: number,
  ) {}

  *[Symbol.iterator](): Iterator<Buffer> {
    for (let done = 0; done < this.length; done += this.chunkBytes) {
      yield this.file.read(this.offset + done, Math.min(this.chunkBytes, this.length - done), this.what);
    }
  }
}

/**
 * Sequential little-endian parsing over a RandomAccessFile, buffered in chunks. Every
 * length read from the file is checked against the bytes that remain before it is used.
 */
export class ByteCursor {
  private chunk: Buffer = Buffer.alloc(0);
  private chunkStart = 0;
  pos: number;

  constructor(readonly file: RandomAccessFile, start = 0, private readonly chunkSize = 1 << 20) {
    this.pos = start;
  }

  get remaining(): number {
    return this.file.size - this.pos;
  }

  /** Throws a CheckpointError naming `what` unless `n` more bytes exist. */
  need(n: number, what: string): void {
    if (!Number.isSafeInteger(n) || n < 0 || n > this.remaining) {
      throw new CheckpointError(
        `${this.file.path}: ${what} needs ${n} bytes at offset ${this.pos} but only ${this.remaining} remain`,
        { file: this.file.path, expected: n, got: this.remaining, hint: "the file is truncated or corrupt" },
      );
    }
  }

  bytes(n: number, what: string): Buffer {
    this.need(n, what);
    const end = this.pos + n;
    if (this.pos < this.chunkStart || end > this.chunkStart + this.chunk.length) {
      const length = Math.min(Math.max(n, this.chunkSize), this.file.size - this.pos);
      this.chunk = this.file.read(this.pos, length, what);
      this.chunkStart = this.pos;
    }
    const out = this.chunk.subarray(this.pos - this.chunkStart, end - this.chunkStart);
    this.pos = end;
    return out;
  }

  u8(what: string): number {
    return this.bytes(1, what).readUInt8(0);
  }
  i8(what: string): number {
    return this.bytes(1, what).readInt8(0);
  }
  u16(what: string): number {
    return this.bytes(2, what).readUInt16LE(0);
  }
  i16(what: string): number {
    return this.bytes(2, what).readInt16LE(0);
  }
  u32(what: string): number {
    return this.bytes(4, what).readUInt32LE(0);
  }
  i32(what: string): number {
    return this.bytes(4, what).readInt32LE(0);
  }
  f32(what: string): number {
    return this.bytes(4, what).readFloatLE(0);
  }
  f64(what: string): number {
    return this.bytes(8, what).readDoubleLE(0);
  }
  u64(what: string): bigint {
    return this.bytes(8, what).readBigUInt64LE(0);
  }
  i64(what: string): bigint {
    return this.bytes(8, what).readBigInt64LE(0);
  }

  /** A u64 count or size that must fit a JS number and the rest of the file. */
  u64Size(what: string): number {
    const v = this.u64(what);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new CheckpointError(`${this.file.path}: ${what} is ${v}, larger than any file`, {
        file: this.file.path,
        got: v.toString(),
        hint: "the file is corrupt",
      });
    }
    return Number(v);
  }
}

/** Writes all of `bytes` (writeSync may write less than asked). */
export function writeAll(fd: number, bytes: Uint8Array): void {
  let done = 0;
  while (done < bytes.byteLength) done += writeSync(fd, bytes, done, bytes.byteLength - done);
}
