// A checkpoint file written front to back: headers as bytes, tensors as bytes or as ranges of
// an input file. Pruning is mostly a byte copy, so how the bytes reach the disk decides its
// speed. With the native helper (native/output_writer.c, built by `npm ci`) ranges are read
// with pread into aligned buffers and written with O_DIRECT from a background thread: about
// 1 GB/s here, where buffered writes drain at 250-600 MB/s (bench/RESULTS.md). Without the
// helper the same bytes go through a reused buffer and plain writes.

import { closeSync, openSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { CheckpointError, OutputError } from "../errors.js";
import { repoRoot } from "../shared.js";
import { FileRange, writeAll } from "./file.js";

type NativeHandle = object & { readonly __nativeOutput: unique symbol };

interface NativeHelper {
  startOutput(fd: number): NativeHandle;
  append(handle: NativeHandle, bytes: Uint8Array): void;
  appendFrom(handle: NativeHandle, fdIn: number, offsetIn: number, length: number): void;
  finish(handle: NativeHandle): { bytes: number; directBytes: number };
  abort(handle: NativeHandle): void;
}

export const NATIVE_HELPER_PATH = join(repoRoot(), "build", "shortgpt_native.node");

let helper: NativeHelper | null | undefined;
let nativeEnabled = true;

/** Bytes written by each path in this process: lets tests and benchmarks prove which one ran. */
export const outputStats = { nativeBytes: 0, directBytes: 0, bufferedBytes: 0 };

function loadHelper(): NativeHelper | null {
  if (helper === undefined) {
    try {
      helper = createRequire(import.meta.url)(NATIVE_HELPER_PATH) as NativeHelper;
    } catch {
      helper = null;
    }
  }
  return helper;
}

/** True when the native writer is built, loadable and switched on. */
export function nativeOutputAvailable(): boolean {
  return nativeEnabled && loadHelper() !== null;
}

/** Switches the native writer on or off for this process (tests and the benchmark compare both). */
export function setNativeOutput(on: boolean): void {
  nativeEnabled = on;
}

/**
 * One buffer for every buffered range copy: a fresh allocation per chunk costs a page fault per
 * 4 KiB touched (about 2.5 million for a 7B checkpoint); a reused 1 MiB one stays mapped and in
 * cache, as GNU cp's 128 KiB buffer does.
 */
const COPY_BUFFER_BYTES = 1 << 20;
let copyBuffer: Buffer | undefined;

const WRITE_ERROR_HINTS: Record<string, string> = {
  ENOSPC: "free disk space or choose another output folder",
  EDQUOT: "free space within your disk quota or choose another output folder",
  EFBIG: "the file system, or a file size limit (ulimit -f), refuses a file this large; choose another output folder or raise the limit",
};

export class OutputFile {
  private fd: number;
  private native: { helper: NativeHelper; handle: NativeHandle } | null = null;
  private written = 0;
  private state: "open" | "finished" | "aborted" = "open";

  /** Creates `path`, which must not exist (callers write to a temporary name and rename). */
  constructor(readonly path: string) {
    this.fd = openSync(path, "wx");
    const native = nativeEnabled ? loadHelper() : null;
    if (native) {
      try {
        this.native = { helper: native, handle: native.startOutput(this.fd) };
      } catch {
        this.native = null; // no memory for the buffers or no thread: plain writes still work
      }
    }
  }

  /** Bytes appended so far. */
  get bytesWritten(): number {
    return this.written;
  }

  write(bytes: Uint8Array): void {
    this.checkOpen();
    const native = this.native;
    this.guard(() => (native ? native.helper.append(native.handle, bytes) : writeAll(this.fd, bytes)));
    this.written += bytes.byteLength;
  }

  /** Appends a checked range of an input file, without holding it in memory. */
  copyFrom(range: FileRange): void {
    this.checkOpen();
    const native = this.native;
    if (native) {
      this.guard(() => native.helper.appendFrom(native.handle, range.file.descriptor, range.offset, range.length), range);
    } else {
      const buffer = (copyBuffer ??= Buffer.allocUnsafe(COPY_BUFFER_BYTES));
      for (let done = 0; done < range.length;) {
        const n = Math.min(COPY_BUFFER_BYTES, range.length - done);
        this.guard(() => range.file.readInto(buffer, range.offset + done, n, range.what), range);
        this.guard(() => writeAll(this.fd, buffer.subarray(0, n)));
        done += n;
      }
    }
    this.written += range.length;
  }

  /** Writes out everything appended and closes the file (syncing it is the caller's rename step). */
  finish(): void {
    this.checkOpen();
    const native = this.native;
    try {
      if (native) {
        const { bytes, directBytes } = this.guard(() => native.helper.finish(native.handle));
        if (bytes !== this.written) throw new Error(`internal: the native writer wrote ${bytes} bytes of ${this.path}, expected ${this.written}`);
        outputStats.nativeBytes += bytes;
        outputStats.directBytes += directBytes;
      } else {
        outputStats.bufferedBytes += this.written;
      }
      this.state = "finished";
    } finally {
      this.release();
    }
  }

  /** Stops writing after a failure; the caller removes the file. Safe to call more than once. */
  abort(): void {
    if (this.state === "open") this.state = "aborted";
    this.release();
  }

  private checkOpen(): void {
    if (this.state !== "open") throw new Error(`internal: ${this.path} was already ${this.state}`);
  }

  private release(): void {
    const native = this.native;
    this.native = null;
    if (native) native.helper.abort(native.handle); // no-op after finish
    const fd = this.fd;
    this.fd = -1; // before closing: a failed close still frees the number for reuse
    if (fd >= 0) closeSync(fd);
  }

  /**
   * Runs a read or write (native, or Node's) and turns its system errors (they carry `code` and
   * `syscall`) into the project's typed errors: read errors name the input, write errors the
   * output. After a failure the file takes no more bytes.
   */
  private guard<T>(call: () => T, range?: FileRange): T {
    try {
      return call();
    } catch (err) {
      const e = err as Error & { code?: string; syscall?: string };
      if (typeof e.code !== "string" || e.syscall === undefined) throw err;
      this.abort();
      if (e.syscall === "read" && range) {
        const what = e.code === "EOF" ? "unexpected end of file" : e.message;
        throw new CheckpointError(`${range.file.path}: ${what} while reading ${range.what}`, {
          file: range.file.path, hint: e.code === "EOF" ? "the file changed while it was read; check it and retry" : "check the input file and its disk",
        });
      }
      const hint = WRITE_ERROR_HINTS[e.code] ?? "check the output folder and its disk";
      throw new OutputError(`cannot write ${this.path}: ${e.message}`, { file: this.path, hint });
    }
  }
}

/** Creates `path`, lets `write` fill it, and finishes it; on failure the file is aborted (and left to the caller to remove). */
export function writeOutputFile<T>(path: string, write: (out: OutputFile) => T): T {
  const out = new OutputFile(path);
  let result: T;
  try {
    result = write(out);
  } catch (err) {
    try {
      out.abort();
    } catch {
      // the original error says what went wrong; a failing close adds nothing
    }
    throw err;
  }
  out.finish();
  return result;
}

/**
 * Appends a tensor's bytes, whole, in chunks or as a file range, and returns how many the
 * source supplied. `limit` stops a source that supplies more bytes than declared (what was
 * written is returned, and is more than the limit).
 */
export function writeChunks(out: OutputFile, source: Uint8Array | Iterable<Uint8Array>, limit = Infinity): number {
  if (source instanceof FileRange) {
    if (source.length > limit) return source.length;
    out.copyFrom(source);
    return source.length;
  }
  let written = 0;
  for (const chunk of source instanceof Uint8Array ? [source] : source) {
    written += chunk.byteLength;
    if (written > limit) break;
    out.write(chunk);
  }
  return written;
}
