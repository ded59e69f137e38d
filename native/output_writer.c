// A sequential output file written with O_DIRECT from a background thread.
//
// Why: pruning is mostly a byte copy of a checkpoint. On this project's machines buffered
// writes drain to the disk at 250-600 MB/s (dirty-page writeback), while O_DIRECT writes of
// large aligned blocks run at about 1 GB/s; and direct writes leave the page cache to the
// input, which pruning reads once. Measured in bench/RESULTS.md (section prune).
//
// How: bytes are appended into one of two 32 MiB page-aligned buffers. A full buffer goes to
// the writer thread, which writes it at its (aligned) file offset while the caller fills the
// other one, so reading the input overlaps writing the output. finish() writes the last,
// partial buffer padded to the block size and truncates the file to the bytes appended.
// Where the file system refuses O_DIRECT (EINVAL at fcntl, as tmpfs before Linux 6.6, or at a
// write, as a device with blocks over 4 KiB), the same code writes through the page cache
// instead: same bytes, no error. The descriptor's flags are restored when the writer stops.
//
// JavaScript API (src/formats/outputFile.ts owns the descriptor and closes it):
//   startOutput(fd) -> handle
//   append(handle, Uint8Array)
//   appendFrom(handle, fdIn, offsetIn, length)   reads the range with pread
//   finish(handle) -> { bytes, directBytes }     every byte on the file, size exact
//   abort(handle)                                stops the thread, frees the buffers
// Errors carry `code`, the errno name (ENOSPC, EIO, ...) or EOF for an input that ended early,
// and `syscall`, "read" (the input) or "write" (the output).
#define _GNU_SOURCE
#define _FILE_OFFSET_BITS 64
#include <errno.h>
#include <fcntl.h>
#include <node_api.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SLOT_BYTES ((size_t)32 << 20)
// O_DIRECT needs offsets, lengths and memory aligned to the logical block size (512 or 4096).
#define BLOCK_BYTES ((size_t)4096)
#define EOF_ERROR (-1)

typedef struct {
  int fd;
  int saved_flags;   // fd's status flags before startOutput, restored by release()
  // O_DIRECT is on for fd. write_block may turn it off, on whichever thread is writing; the
  // main thread reads it only after wait_idle (under the lock), when no job is out.
  int direct;
  int64_t direct_bytes; // bytes written with O_DIRECT on (same rule as direct)
  int open;          // 0 after finish or abort
  char *slot[2];
  int cur;           // the slot being filled
  size_t fill;       // bytes in slot[cur]
  int64_t slot_offset; // file offset where slot[cur] goes
  int64_t total;     // bytes appended so far
  pthread_t thread;
  pthread_mutex_t lock;
  pthread_cond_t changed;
  // The one job handed to the writer thread, under lock.
  int has_job;
  char *job;
  size_t job_len;
  int64_t job_offset;
  int stopping;
  int err;           // first errno a write failed with
} output_t;

static const char *errno_name(int err) {
  switch (err) {
    case EOF_ERROR: return "EOF";
    case ENOSPC: return "ENOSPC";
    case EDQUOT: return "EDQUOT";
    case EIO: return "EIO";
    case EFBIG: return "EFBIG";
    case EBADF: return "EBADF";
    case EINVAL: return "EINVAL";
    case ENOMEM: return "ENOMEM";
    case EROFS: return "EROFS";
    case EACCES: return "EACCES";
    case EPERM: return "EPERM";
    case EAGAIN: return "EAGAIN";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    default: return "EUNKNOWN";
  }
}

// Throws an Error with `code` (the errno name) and `syscall` ("read", "write" or "startOutput").
static napi_value throw_errno(napi_env env, int err, const char *syscall) {
  napi_value code, message, error, syscall_value;
  napi_create_string_utf8(env, errno_name(err), NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, err == EOF_ERROR ? "the input ended before the range did" : strerror(err), NAPI_AUTO_LENGTH, &message);
  napi_create_error(env, code, message, &error);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &syscall_value);
  napi_set_named_property(env, error, "syscall", syscall_value);
  napi_throw(env, error);
  return NULL;
}

// Writes len bytes at off, all of them. Returns 0 or an errno. A direct write the file system
// refuses (EINVAL) turns O_DIRECT off for the file and is retried through the page cache.
static int write_block(output_t *o, const char *buf, size_t len, int64_t off) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = pwrite(o->fd, buf + done, len - done, (off_t)(off + (int64_t)done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EINVAL && o->direct) {
      int flags = fcntl(o->fd, F_GETFL);
      if (flags < 0 || fcntl(o->fd, F_SETFL, flags & ~O_DIRECT) < 0) return errno;
      o->direct = 0;
      continue;
    }
    if (n < 0) return errno;
    if (n == 0) return EIO;
    done += (size_t)n;
    if (o->direct) o->direct_bytes += n;
  }
  return 0;
}

static void *writer_main(void *arg) {
  output_t *o = arg;
  pthread_mutex_lock(&o->lock);
  for (;;) {
    while (!o->has_job && !o->stopping) pthread_cond_wait(&o->changed, &o->lock);
    if (!o->has_job) break;
    char *buf = o->job;
    size_t len = o->job_len;
    int64_t off = o->job_offset;
    pthread_mutex_unlock(&o->lock);
    int err = write_block(o, buf, len, off);
    pthread_mutex_lock(&o->lock);
    if (err && !o->err) o->err = err;
    o->has_job = 0;
    pthread_cond_broadcast(&o->changed);
  }
  pthread_mutex_unlock(&o->lock);
  return NULL;
}

// Waits until the writer has no job; returns the first write error, if any.
static int wait_idle(output_t *o) {
  pthread_mutex_lock(&o->lock);
  while (o->has_job) pthread_cond_wait(&o->changed, &o->lock);
  int err = o->err;
  pthread_mutex_unlock(&o->lock);
  return err;
}

// Hands the full slot to the writer and switches to the other one.
static int hand_off(output_t *o) {
  int err = wait_idle(o);
  if (err) return err;
  pthread_mutex_lock(&o->lock);
  o->job = o->slot[o->cur];
  o->job_len = o->fill;
  o->job_offset = o->slot_offset;
  o->has_job = 1;
  pthread_cond_broadcast(&o->changed);
  pthread_mutex_unlock(&o->lock);
  o->slot_offset += (int64_t)o->fill;
  o->cur ^= 1;
  o->fill = 0;
  return 0;
}

// The room left in the slot being filled, at most `want` bytes.
static size_t room(const output_t *o, uint64_t want) {
  return SLOT_BYTES - o->fill < want ? SLOT_BYTES - o->fill : (size_t)want;
}

// Counts n bytes just placed in the slot; a full slot goes to the writer. Returns 0 or an errno.
static int filled(output_t *o, size_t n) {
  o->fill += n;
  o->total += (int64_t)n;
  return o->fill == SLOT_BYTES ? hand_off(o) : 0;
}

// Stops the writer thread (after its job, if one is out), restores the descriptor's flags and
// frees the buffers. Safe to call again.
static void release(output_t *o) {
  if (o->open) {
    pthread_mutex_lock(&o->lock);
    o->stopping = 1;
    pthread_cond_broadcast(&o->changed);
    pthread_mutex_unlock(&o->lock);
    pthread_join(o->thread, NULL);
    fcntl(o->fd, F_SETFL, o->saved_flags);
    o->open = 0;
  }
  free(o->slot[0]);
  free(o->slot[1]);
  o->slot[0] = o->slot[1] = NULL;
}

static void finalize_output(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  output_t *o = data;
  release(o);
  pthread_mutex_destroy(&o->lock);
  pthread_cond_destroy(&o->changed);
  free(o);
}

// Reads exactly n arguments into argv; otherwise throws a TypeError showing `usage`.
static int get_args(napi_env env, napi_callback_info info, size_t n, napi_value *argv, const char *usage) {
  size_t argc = n;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != n) {
    napi_throw_type_error(env, NULL, usage);
    return 0;
  }
  return 1;
}

static output_t *get_output(napi_env env, napi_value value) {
  output_t *o = NULL;
  if (napi_get_value_external(env, value, (void **)&o) != napi_ok || o == NULL) {
    napi_throw_type_error(env, NULL, "expected an output handle from startOutput");
    return NULL;
  }
  if (!o->open) {
    napi_throw_error(env, NULL, "the output was already finished or aborted");
    return NULL;
  }
  return o;
}

static napi_value start_output(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd = -1;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 1 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) {
    napi_throw_type_error(env, NULL, "startOutput(fd) takes an open file descriptor");
    return NULL;
  }
  output_t *o = calloc(1, sizeof *o);
  if (o == NULL) return throw_errno(env, ENOMEM, "startOutput");
  o->fd = fd;
  if (posix_memalign((void **)&o->slot[0], BLOCK_BYTES, SLOT_BYTES) != 0 || posix_memalign((void **)&o->slot[1], BLOCK_BYTES, SLOT_BYTES) != 0) {
    free(o->slot[0]);
    free(o);
    return throw_errno(env, ENOMEM, "startOutput");
  }
  o->saved_flags = fcntl(fd, F_GETFL);
  if (o->saved_flags < 0) {
    int err = errno;
    free(o->slot[0]);
    free(o->slot[1]);
    free(o);
    return throw_errno(env, err, "startOutput");
  }
  pthread_mutex_init(&o->lock, NULL);
  pthread_cond_init(&o->changed, NULL);
  int err = pthread_create(&o->thread, NULL, writer_main, o);
  if (err != 0) {
    finalize_output(env, o, NULL); // not open yet: frees the buffers, the lock and o
    return throw_errno(env, err, "startOutput");
  }
  o->open = 1;
  napi_value handle;
  if (napi_create_external(env, o, finalize_output, NULL, &handle) != napi_ok) {
    finalize_output(env, o, NULL);
    napi_throw_error(env, NULL, "startOutput: cannot create the handle");
    return NULL;
  }
  // Last, so a failure above leaves the descriptor as it was for the caller's plain writes.
  o->direct = fcntl(fd, F_SETFL, o->saved_flags | O_DIRECT) == 0;
  return handle;
}

static napi_value append(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv, "append(handle, bytes)")) return NULL;
  output_t *o = get_output(env, argv[0]);
  if (o == NULL) return NULL;
  napi_typedarray_type type;
  size_t length = 0;
  void *data = NULL;
  napi_value buffer;
  size_t byte_offset = 0;
  if (napi_get_typedarray_info(env, argv[1], &type, &length, &data, &buffer, &byte_offset) != napi_ok || type != napi_uint8_array) {
    napi_throw_type_error(env, NULL, "append(handle, bytes) takes a Uint8Array");
    return NULL;
  }
  const char *src = data;
  while (length > 0) {
    size_t n = room(o, length);
    memcpy(o->slot[o->cur] + o->fill, src, n);
    src += n;
    length -= n;
    int err = filled(o, n);
    if (err) return throw_errno(env, err, "write");
  }
  return NULL;
}

static napi_value append_from(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  int32_t fd_in = -1;
  int64_t offset = -1, length = -1;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 4 || napi_get_value_int32(env, argv[1], &fd_in) != napi_ok ||
      napi_get_value_int64(env, argv[2], &offset) != napi_ok || napi_get_value_int64(env, argv[3], &length) != napi_ok || offset < 0 || length < 0) {
    napi_throw_type_error(env, NULL, "appendFrom(handle, fdIn, offsetIn, length) takes a handle and three non-negative integers");
    return NULL;
  }
  output_t *o = get_output(env, argv[0]);
  if (o == NULL) return NULL;
  while (length > 0) {
    ssize_t n = pread(fd_in, o->slot[o->cur] + o->fill, room(o, (uint64_t)length), (off_t)offset);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return throw_errno(env, errno, "read");
    if (n == 0) return throw_errno(env, EOF_ERROR, "read");
    offset += n;
    length -= n;
    int err = filled(o, (size_t)n);
    if (err) return throw_errno(env, err, "write");
  }
  return NULL;
}

static napi_value finish(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv, "finish(handle)")) return NULL;
  output_t *o = get_output(env, argv[0]);
  if (o == NULL) return NULL;
  int err = wait_idle(o);
  if (!err && o->fill > 0) {
    // The writer is idle, so o->direct is stable. A direct write must cover whole blocks:
    // pad with zeros, then cut the file back to the bytes appended.
    size_t len = o->fill;
    if (o->direct) {
      len = (o->fill + BLOCK_BYTES - 1) / BLOCK_BYTES * BLOCK_BYTES;
      memset(o->slot[o->cur] + o->fill, 0, len - o->fill);
    }
    err = write_block(o, o->slot[o->cur], len, o->slot_offset);
  }
  if (!err && ftruncate(o->fd, (off_t)o->total) != 0) err = errno;
  // Padding written directly and then cut off is not counted.
  int64_t direct_bytes = o->direct_bytes < o->total ? o->direct_bytes : o->total;
  int64_t total = o->total;
  release(o);
  if (err) return throw_errno(env, err, "write");
  napi_value result, bytes, direct_value;
  napi_create_object(env, &result);
  napi_create_int64(env, total, &bytes);
  napi_create_int64(env, direct_bytes, &direct_value);
  napi_set_named_property(env, result, "bytes", bytes);
  napi_set_named_property(env, result, "directBytes", direct_value);
  return result;
}

static napi_value abort_output(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  output_t *o = NULL;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 1 || napi_get_value_external(env, argv[0], (void **)&o) != napi_ok || o == NULL) {
    napi_throw_type_error(env, NULL, "abort(handle)");
    return NULL;
  }
  release(o);
  return NULL;
}

static void export_function(napi_env env, napi_value exports, const char *name, napi_callback cb) {
  napi_value fn;
  napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, NULL, &fn);
  napi_set_named_property(env, exports, name, fn);
}

NAPI_MODULE_INIT() {
  export_function(env, exports, "startOutput", start_output);
  export_function(env, exports, "append", append);
  export_function(env, exports, "appendFrom", append_from);
  export_function(env, exports, "finish", finish);
  export_function(env, exports, "abort", abort_output);
  return exports;
}
