/*
 * One call that hands many WebSocket frames to the kernel: sendmsg(2) with the frame's two
 * parts per socket (a writev that cannot raise SIGPIPE), in a loop,
 * without returning to JavaScript in between. The fan-out writes the same change to
 * thousands of sockets; per socket, Node's fs.writeSync costs a validation, a request object
 * and two crossings between JavaScript and C++ around the system call itself.
 *
 * writeFrames(arena, meta, count, bodies, results)
 *   arena    Buffer: the frames' first parts (WebSocket header and message prefix) back to back
 *   meta     Int32Array, 4 per frame: fd (-1: skip the frame, the socket is gone), offset in
 *            arena, length in arena, body index (-1: none)
 *   count    frames to write
 *   bodies   Array of Buffers: second parts, shared by many frames (the change's bytes)
 *   results  Int32Array: per frame, the bytes the kernel took (0 when its send buffer is full),
 *            or -errno (EPIPE, ECONNRESET, EBADF...)
 *
 * It never blocks: the sockets are non-blocking (libuv made them so), and it asks for that
 * anyway (MSG_DONTWAIT). A peer that has gone away gives EPIPE, never SIGPIPE (MSG_NOSIGNAL),
 * whether or not the host process ignores that signal. Whatever a socket did not take, the
 * caller queues on the socket's stream, in order.
 *
 * The module also exports `version`, the layout of these arguments.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <node_api.h>

/* the layout of writeFrames' arguments; the loader refuses a binary built for another */
#define FRAME_WRITER_VERSION 1

#define MAX_BODIES_ON_STACK 64

static napi_value fail(napi_env env, const char *message) {
  napi_throw_type_error(env, NULL, message);
  return NULL;
}

static int int32_array(napi_env env, napi_value value, int32_t **data, size_t *length) {
  bool is_typed = false;
  napi_typedarray_type type;
  napi_value buffer;
  size_t offset;
  if (napi_is_typedarray(env, value, &is_typed) != napi_ok || !is_typed) return 0;
  if (napi_get_typedarray_info(env, value, &type, length, (void **)data, &buffer, &offset) !=
      napi_ok)
    return 0;
  return type == napi_int32_array;
}

static napi_value WriteFrames(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 5)
    return fail(env, "writeFrames(arena, meta, count, bodies, results)");

  bool is_buffer = false;
  uint8_t *arena;
  size_t arena_length;
  if (napi_is_buffer(env, argv[0], &is_buffer) != napi_ok || !is_buffer ||
      napi_get_buffer_info(env, argv[0], (void **)&arena, &arena_length) != napi_ok)
    return fail(env, "arena must be a Buffer");

  int32_t *meta;
  size_t meta_length;
  if (!int32_array(env, argv[1], &meta, &meta_length)) return fail(env, "meta must be an Int32Array");

  uint32_t count;
  if (napi_get_value_uint32(env, argv[2], &count) != napi_ok) return fail(env, "count must be a number");

  bool is_array = false;
  uint32_t body_count = 0;
  if (napi_is_array(env, argv[3], &is_array) != napi_ok || !is_array ||
      napi_get_array_length(env, argv[3], &body_count) != napi_ok)
    return fail(env, "bodies must be an Array of Buffers");

  int32_t *results;
  size_t results_length;
  if (!int32_array(env, argv[4], &results, &results_length))
    return fail(env, "results must be an Int32Array");
  if ((size_t)count * 4 > meta_length || count > results_length)
    return fail(env, "count exceeds meta or results");

  struct iovec stack_bodies[MAX_BODIES_ON_STACK];
  struct iovec *bodies = stack_bodies;
  if (body_count > MAX_BODIES_ON_STACK) {
    bodies = malloc(sizeof(struct iovec) * body_count);
    if (bodies == NULL) return fail(env, "out of memory");
  }
  for (uint32_t i = 0; i < body_count; i++) {
    napi_value element;
    bool element_is_buffer = false;
    if (napi_get_element(env, argv[3], i, &element) != napi_ok ||
        napi_is_buffer(env, element, &element_is_buffer) != napi_ok || !element_is_buffer ||
        napi_get_buffer_info(env, element, &bodies[i].iov_base, &bodies[i].iov_len) != napi_ok) {
      if (bodies != stack_bodies) free(bodies);
      return fail(env, "bodies must be an Array of Buffers");
    }
  }

  /* check every frame before writing any: a bad one must not leave half a batch written */
  for (uint32_t i = 0; i < count; i++) {
    const int32_t *m = meta + (size_t)i * 4;
    if (m[0] < -1 || m[1] < 0 || m[2] < 0 || (size_t)m[1] + (size_t)m[2] > arena_length ||
        m[3] < -1 || m[3] >= (int32_t)body_count) {
      if (bodies != stack_bodies) free(bodies);
      return fail(env, "a frame's fd, arena range or body index is out of range");
    }
  }

  for (uint32_t i = 0; i < count; i++) {
    const int32_t *m = meta + (size_t)i * 4;
    struct iovec iov[2];
    int n = 0;
    if (m[2] > 0) {
      iov[n].iov_base = arena + m[1];
      iov[n].iov_len = (size_t)m[2];
      n++;
    }
    if (m[3] >= 0 && bodies[m[3]].iov_len > 0) iov[n++] = bodies[m[3]];
    if (m[0] < 0) {
      results[i] = -EBADF;
      continue;
    }
    struct msghdr message;
    memset(&message, 0, sizeof message);
    message.msg_iov = iov;
    message.msg_iovlen = (size_t)n;
    ssize_t written;
    do {
      written = n > 0 ? sendmsg(m[0], &message, MSG_NOSIGNAL | MSG_DONTWAIT) : 0;
    } while (written < 0 && errno == EINTR);
    if (written >= 0) results[i] = (int32_t)written;
    else results[i] = (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -errno;
  }

  if (bodies != stack_bodies) free(bodies);
  napi_value undefined;
  napi_get_undefined(env, &undefined);
  return undefined;
}

static napi_value Init(napi_env env, napi_value exports) {
  napi_value fn;
  if (napi_create_function(env, "writeFrames", NAPI_AUTO_LENGTH, WriteFrames, NULL, &fn) != napi_ok)
    return NULL;
  if (napi_set_named_property(env, exports, "writeFrames", fn) != napi_ok) return NULL;
  napi_value version;
  if (napi_create_int32(env, FRAME_WRITER_VERSION, &version) != napi_ok ||
      napi_set_named_property(env, exports, "version", version) != napi_ok)
    return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
