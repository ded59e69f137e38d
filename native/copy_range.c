// copyRange(fdIn, offsetIn, fdOut, length): copies `length` bytes from fdIn at offsetIn to
// fdOut at its current position with copy_file_range(2), so the bytes never pass through user
// space. Pruning is a byte copy of most of a checkpoint; through read()/write() it runs at
// about a quarter of the speed the kernel copies at (bench/RESULTS.md).
//
// Returns the number of bytes copied. On failure it throws an Error whose `code` is the errno
// name (EXDEV, ENOSYS, EOPNOTSUPP, EINVAL, ...) and whose `copied` is what was copied before
// the failure, so the caller can finish the range with ordinary reads and writes.
#define _GNU_SOURCE
#define _FILE_OFFSET_BITS 64
#include <errno.h>
#include <node_api.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

static const char *errno_name(int err) {
  switch (err) {
    case EXDEV: return "EXDEV";
    case ENOSYS: return "ENOSYS";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case EINVAL: return "EINVAL";
    case EBADF: return "EBADF";
    case EIO: return "EIO";
    case ENOSPC: return "ENOSPC";
    case EFBIG: return "EFBIG";
    default: return "EUNKNOWN";
  }
}

static napi_value throw_copy_error(napi_env env, int err, int64_t copied) {
  napi_value code, message, error, copied_value;
  napi_create_string_utf8(env, err == 0 ? "EOF" : errno_name(err), NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, err == 0 ? "copy_file_range reached the end of the input" : strerror(err), NAPI_AUTO_LENGTH, &message);
  napi_create_error(env, code, message, &error);
  napi_create_int64(env, copied, &copied_value);
  napi_set_named_property(env, error, "copied", copied_value);
  napi_throw(env, error);
  return NULL;
}

static napi_value copy_range(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  int32_t fd_in = -1, fd_out = -1;
  int64_t offset_in = -1, length = -1;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 4 ||
      napi_get_value_int32(env, argv[0], &fd_in) != napi_ok || napi_get_value_int64(env, argv[1], &offset_in) != napi_ok ||
      napi_get_value_int32(env, argv[2], &fd_out) != napi_ok || napi_get_value_int64(env, argv[3], &length) != napi_ok ||
      offset_in < 0 || length < 0) {
    napi_throw_type_error(env, NULL, "copyRange(fdIn, offsetIn, fdOut, length) takes four non-negative integers");
    return NULL;
  }
  off_t in_pos = (off_t)offset_in;
  int64_t copied = 0;
  while (copied < length) {
    // The kernel caps one call well below 2 GiB; loop until the whole range is done.
    size_t want = (size_t)(length - copied > (1 << 30) ? (1 << 30) : length - copied);
    ssize_t n = copy_file_range(fd_in, &in_pos, fd_out, NULL, want, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return throw_copy_error(env, errno, copied);
    }
    if (n == 0) return throw_copy_error(env, 0, copied);
    copied += n;
  }
  napi_value result;
  napi_create_int64(env, copied, &result);
  return result;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  napi_create_function(env, "copyRange", NAPI_AUTO_LENGTH, copy_range, NULL, &fn);
  napi_set_named_property(env, exports, "copyRange", fn);
  return exports;
}
