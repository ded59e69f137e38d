// Random-access reads from a file with every offset checked against the file size, so a
// hostile size field fails with a clear error before anything is allocated. Files are opened
// without blocking and refused unless regular, so a directory, FIFO or device never reaches a read.

import { closeSync, constants as fsConstants, fstatSync, openSync, readSync, type Stats, statSync, writeSync } from "node:fs";
import { CheckpointError, type ShortgptError, type ShortgptErrorDetails } from "../errors.js";

/** The typed error a reader raises for its kind of file (CheckpointError, TokenizerError, DataError). */
export type FileErrorClass = new (message: string, details?: ShortgptErrorDetails) => ShortgptError;

/** What each file-system error code means to a user, for one-line messages. */
const FS_ERRORS: Record<string, { what: string; hint: string }> = {
  ENOENT: { what: "does not exist", hint: "check the path" },
  ENOTDIR: { what: "is not reachable (a part of the path is not a folder)", hint: "check the path" },
  EACCES: { what: "cannot be read: permission denied", hint: "check the file's permissions" },
  EPERM: { what: "cannot be read: operation not permitted", hint: "check the file's permissions" },
  ELOOP: { what: "is a loop of symbolic links", hint: "fix or remove the symbolic link" },
  ENAMETOOLONG: { what: "has a name too long for the file system", hint: "check the path" },
  EISDIR: { what: "is a folder, not a file", hint: "pass the model file, or the folder of a Hugging Face checkpoint" },
  EMFILE: { what: "cannot be opened: too many open files", hint: "raise the open-file limit (ulimit -n)" },
  EIO: { what: "cannot be read: input/output error", hint: "check the disk" },
};

/** A file-system error (it carries a `code`) as the reader's typed error naming `path`; other errors pass through. */
export function fileSystemError(err: unknown, path: string, errorClass: FileErrorClass = CheckpointError): unknown {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== "string") return err;
  const known = FS_ERRORS[code];
  return new errorClass(`${path} ${known?.what ?? `cannot be read (${code})`}`, { file: path, hint: known?.hint ?? "check the path and its permissions" });
}

/** What a path is when it is not a regular file, for messages. */
function fileKind(stat: Stats): string {
  if (stat.isDirectory()) return "a folder";
  if (stat.isFIFO()) return "a named pipe (FIFO)";
  if (stat.isSocket()) return "a socket";
  if (stat.isCharacterDevice() || stat.isBlockDevice()) return "a device";
  return "a special file";
}

/**
 * Opens a regular file for reading. O_NONBLOCK makes opening a FIFO return at once instead of
 * waiting for a writer; the check on the open descriptor (not the path) leaves no window for a swap.
 */
export function openRegularFile(path: string, errorClass: FileErrorClass = CheckpointError): { fd: number; size: number } {
  let fd: number;
  try {
    fd = openSync(path, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
  } catch (err) {
    throw fileSystemError(err, path, errorClass);
  }
  const stat = fstatSync(fd);
  if (!stat.isFile()) {
    closeSync(fd);
    const kind = fileKind(stat);
    throw new errorClass(`${path} is ${kind}, not a file`, { file: path, got: kind, hint: stat.isDirectory() ? "pass the model file, or the folder of a Hugging Face checkpoint" : "pass a regular file" });
  }
  return { fd, size: stat.size };
}

/** The kind of `path` without following a failure into an exception: "file", "dir", "other" or "missing". */
export function pathKind(path: string, errorClass: FileErrorClass = CheckpointError): "file" | "dir" | "other" | "missing" {
  try {
    const stat = statSync(path, { throwIfNoEntry: false });
    if (stat === undefined) return "missing";
    return stat.isFile() ? "file" : stat.isDirectory() ? "dir" : "other";
  } catch (err) {
    throw fileSystemError(err, path, errorClass);
  }
}

/**
 * A whole small file (a JSON config, a tokenizer, a text) as bytes, refused when it is not a
 * regular file or larger than `maxBytes`; a file that shrinks while read is an error, not a hang.
 */
export function readWholeFile(path: string, errorClass: FileErrorClass = CheckpointError, maxBytes = 1 << 30): Buffer {
  const { fd, size } = openRegularFile(path, errorClass);
  try {
    if (size > maxBytes) throw new errorClass(`${path} has ${size} bytes, more than the ${maxBytes} this file may have`, { file: path, expected: `<= ${maxBytes}`, got: size, hint: "the file is not what its name says" });
    const buf = Buffer.allocUnsafe(size);
    let done = 0;
    while (done < size) {
      let n: number;
      try {
        n = readSync(fd, buf, done, size - done, done);
      } catch (err) {
        throw fileSystemError(err, path, errorClass);
      }
      if (n === 0) throw new errorClass(`${path} became shorter while it was read (${done} of ${size} bytes)`, { file: path, hint: "the file changed while it was read; retry when it is complete" });
      done += n;
    }
    return buf;
  } finally {
    closeSync(fd);
  }
}

export class RandomAccessFile {
  readonly path: string;
  readonly size: number;
  private fd: number;

  constructor(path: string, readonly errorClass: FileErrorClass = CheckpointError) {
    this.path = path;
    const { fd, size } = openRegularFile(path, errorClass);
    this.fd = fd;
    this.size = size;
  }

  /** Reads exactly `length` bytes at `offset`; throws if the range runs past the end of the file. */
  read(offset: number, length: number, what: string): Buffer {
    const buf = Buffer.allocUnsafe(length);
    this.readInto(buf, offset, length, what);
    return buf;
  }

  /** Reads exactly `length` bytes at `offset` into the start of `buf` (reused by callers that stream, or a typed array's own memory). */
  readInto(buf: Uint8Array, offset: number, length: number, what: string): void {
    this.checkRange(offset, length, what);
    let done = 0;
    while (done < length) {
      let n: number;
      try {
        n = readSync(this.fd, buf, done, length - done, offset + done);
      } catch (err) {
        throw fileSystemError(err, this.path, this.errorClass);
      }
      if (n === 0) throw new this.errorClass(`${this.path}: unexpected end of file while reading ${what}`, { file: this.path, hint: "the file became shorter while it was read; retry when it is complete" });
      done += n;
    }
  }

  private checkRange(offset: number, length: number, what: string): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.size) {
      throw new this.errorClass(`${this.path}: ${what} needs bytes ${offset}..${offset + length} but the file has ${this.size} bytes`, {
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

  /** Throws the file's typed error naming `what` unless `n` more bytes exist. */
  need(n: number, what: string): void {
    if (!Number.isSafeInteger(n) || n < 0 || n > this.remaining) {
      throw new this.file.errorClass(
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
      throw new this.file.errorClass(`${this.file.path}: ${what} is ${v}, larger than any file`, {
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
