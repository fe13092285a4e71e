/*
 * The benchmark's load generator reads subscribed clients' WebSocket frames here, in C,
 * instead of once per socket in JavaScript. Not part of the product: bench/lib/native-reader.ts
 * loads it, and the load generator falls back to its JavaScript FrameReader without it.
 *
 * Why: at N = 1 000 and 5 000 (paced) the load generator, not the server under test, was
 * what bounded a change's last delivery: it spent 7–9 µs of its core per frame, about 40 %
 * of it in user space (libuv's read callback, Node's onStreamRead, the JavaScript parse),
 * once per socket per read. Here one epoll set holds every subscribed socket; when any is
 * readable, libuv wakes us once (the epoll fd is watched with a uv_poll), and one C loop
 * reads every ready socket, parses its frames and finds each change's marker, writing
 * (client, sent µs, seq, received µs) records into a Float64Array that JavaScript reads
 * once per wake-up.
 *
 * start(callback, tsMarker, seqMarker, records, kernelTimes)
 *   callback(kind, a, b, c): kind 0: `a` records are in `records` (4 doubles each), `b`
 *     data frames and `c` payload bytes were read since the last such call; kind 1: a ping
 *     on slot `a`, payload `c` (a Buffer) to pong; kind 2: slot `a` is handed back: `c` (a
 *     Buffer) holds the bytes from the first frame this reader does not handle (a close, a
 *     fragment, a masked frame, RSV bits, an unknown opcode, over 100 MiB), empty when the
 *     socket ended or failed; the slot is free again and the fd no longer watched.
 *   tsMarker, seqMarker: Buffers, the marker's parts (`bt=` and `|bs=`): a record per
 *     tsMarker followed by digits, seqMarker and digits, as the JavaScript reader finds them
 *   kernelTimes: true: a record's received time is the kernel's receive timestamp of the
 *     socket's last segment read (SO_TIMESTAMPNS), not the time of the read
 * add(fd, client) -> slot   watch a non-blocking socket (the caller stops its own reads)
 * push(slot, buffer)        bytes of the socket read before add(), parsed ahead of its reads
 * remove(slot)              stop watching (before the caller closes the fd)
 * readDelay() -> [reads, sum µs, max µs, unstamped]  of the reads that had a kernel
 *                           timestamp (one per read: its last segment's), how long after it
 *                           each read came, and the reads without a usable one (timed at the
 *                           read: none came, or it was over a second old, as after the wall
 *                           clock stepped); counted from the previous call
 * version                   the layout of these arguments
 *
 * Received times are CLOCK_MONOTONIC in µs, the clock of Node's process.hrtime (the
 * publisher's timestamps); the kernel's timestamps (CLOCK_REALTIME) are moved to that clock
 * by the difference of the two read at each wake-up.
 *
 * Why kernel timestamps: a change's latency is the server's, from its publish to the frame
 * reaching the subscriber's socket; when the load generator, on the same two cores, reads a
 * socket later (it was reading others, or another task had its CPU), the time of the read
 * adds its own delay: 0.15–2.4 ms on average and up to 51 ms over a paced series in the
 * runs of 2026-12-07, sixteenth (bench/README.md).
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <node_api.h>
#include <uv.h>

#define FRAME_READER_VERSION 2
#define READ_BYTES (64 * 1024)
#define MAX_PAYLOAD (100 * 1024 * 1024) /* ws's default maxPayload */
#define EVENTS 512
#define MARKER_MAX 16

typedef struct {
  int fd; /* -1: free */
  double client;
  uint8_t *pending; /* the start of a frame not yet whole */
  size_t pending_len;
  size_t pending_cap;
} slot_t;

static struct {
  napi_env env;
  napi_ref callback;
  napi_async_context async;
  uv_poll_t poll;
  int epfd;
  int started;
  slot_t *slots;
  uint32_t slot_count;
  uint32_t slot_cap;
  uint8_t ts[MARKER_MAX];
  size_t ts_len;
  uint8_t seq[MARKER_MAX];
  size_t seq_len;
  double *out;
  size_t out_cap; /* records */
  size_t out_n;
  double frames;
  double bytes;
  int kernel_times;
  double mono_minus_real; /* µs: CLOCK_MONOTONIC − CLOCK_REALTIME, at the last wake-up */
  double delay_reads, delay_sum, delay_max, unstamped;
  uint8_t buf[READ_BYTES];
} R;

static napi_value fail(napi_env env, const char *message) {
  napi_throw_type_error(env, NULL, message);
  return NULL;
}

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e6 + (double)(t.tv_nsec / 1000);
}

/* Calls the JavaScript callback; an exception it throws becomes an uncaught one. */
static void call(napi_env env, int32_t kind, double a, double b, napi_value c) {
  napi_value fn, recv, argv[4], result;
  napi_get_reference_value(env, R.callback, &fn);
  napi_get_global(env, &recv); /* (MakeCallback wants an object) */
  napi_create_int32(env, kind, &argv[0]);
  napi_create_double(env, a, &argv[1]);
  napi_create_double(env, b, &argv[2]);
  argv[3] = c;
  if (napi_make_callback(env, R.async, recv, fn, 4, argv, &result) != napi_ok) {
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (pending) {
      napi_value error;
      napi_get_and_clear_last_exception(env, &error);
      napi_fatal_exception(env, error);
    }
  }
}

static void flush_records(napi_env env) {
  if (R.out_n == 0 && R.frames == 0) return;
  napi_value bytes;
  napi_create_double(env, R.bytes, &bytes);
  double n = (double)R.out_n;
  double frames = R.frames;
  R.out_n = 0;
  R.frames = 0;
  R.bytes = 0;
  call(env, 0, n, frames, bytes);
}

static napi_value copy_buffer(napi_env env, const uint8_t *data, size_t length) {
  napi_value buffer;
  void *unused;
  napi_create_buffer_copy(env, length, length > 0 ? data : (const uint8_t *)"", &unused, &buffer);
  return buffer;
}

static void release(slot_t *slot) {
  if (slot->fd >= 0) epoll_ctl(R.epfd, EPOLL_CTL_DEL, slot->fd, NULL);
  slot->fd = -1;
  free(slot->pending);
  slot->pending = NULL;
  slot->pending_len = slot->pending_cap = 0;
}

static void hand_back(napi_env env, uint32_t index, const uint8_t *rest, size_t length) {
  flush_records(env);
  napi_value buffer = copy_buffer(env, rest, length);
  release(&R.slots[index]);
  call(env, 2, (double)index, 0, buffer);
}

/* The records of one data frame's payload: every marker in it. */
static void scan(napi_env env, const slot_t *slot, const uint8_t *p, size_t len, double recv) {
  R.frames += 1;
  R.bytes += (double)len;
  const uint8_t *end = p + len;
  const uint8_t *at = p;
  while (at < end) {
    const uint8_t *hit = memmem(at, (size_t)(end - at), R.ts, R.ts_len);
    if (hit == NULL) break;
    const uint8_t *i = hit + R.ts_len;
    double ts = 0;
    while (i < end && *i >= '0' && *i <= '9') ts = ts * 10 + (*i++ - '0');
    double seq = -1;
    if ((size_t)(end - i) >= R.seq_len && memcmp(i, R.seq, R.seq_len) == 0) {
      i += R.seq_len;
      seq = 0;
      while (i < end && *i >= '0' && *i <= '9') seq = seq * 10 + (*i++ - '0');
    }
    if (seq >= 0) {
      if (R.out_n == R.out_cap) flush_records(env);
      double *o = R.out + R.out_n * 4;
      o[0] = slot->client;
      o[1] = ts;
      o[2] = seq;
      o[3] = recv;
      R.out_n++;
    }
    at = i;
  }
}

/*
 * Parses whole frames from data; returns the bytes consumed, or -1 when the slot let go of
 * the socket: handed back, or removed by a callback (data may then be freed memory).
 */
static long parse(napi_env env, uint32_t index, const uint8_t *data, size_t length, double recv) {
  size_t at = 0;
  while (length - at >= 2) {
    uint8_t b0 = data[at], b1 = data[at + 1];
    uint8_t opcode = b0 & 0x0f;
    uint64_t len = b1 & 0x7f;
    size_t head = 2;
    if (len == 126) {
      if (length - at < 4) break;
      len = ((uint64_t)data[at + 2] << 8) | data[at + 3];
      head = 4;
    } else if (len == 127) {
      if (length - at < 10) break;
      len = 0;
      for (int k = 2; k < 10; k++) len = (len << 8) | data[at + k];
      head = 10;
    }
    int fin = (b0 & 0x80) != 0;
    int data_frame = opcode == 1 || opcode == 2;
    /* what ws's Receiver should have: a close, a fragment, a broken or oversized frame */
    if (!(fin && (data_frame || opcode == 9 || opcode == 10)) || (b1 & 0x80) || (b0 & 0x70) ||
        len > MAX_PAYLOAD) {
      hand_back(env, index, data + at, length - at);
      return -1;
    }
    if ((uint64_t)(length - at) < head + len) break;
    const uint8_t *payload = data + at + head;
    at += head + (size_t)len;
    if (data_frame) {
      scan(env, &R.slots[index], payload, (size_t)len, recv);
    } else if (opcode == 9) {
      flush_records(env);
      call(env, 1, (double)index, 0, copy_buffer(env, payload, (size_t)len));
    }
    if (R.slots[index].fd < 0) return -1; /* removed by a callback (records, ping) */
  }
  return (long)at;
}

/* Room for `need` bytes in the slot's pending buffer; false when there is no memory. */
static int reserve(slot_t *slot, size_t need) {
  if (need <= slot->pending_cap) return 1;
  uint8_t *grown = realloc(slot->pending, need * 2);
  if (grown == NULL) return 0;
  slot->pending = grown;
  slot->pending_cap = need * 2;
  return 1;
}

/* Parses bytes read from the slot's socket, after what it kept; false when it let go. */
static int consume(napi_env env, uint32_t index, const uint8_t *bytes, size_t n, double recv_us) {
  slot_t *slot = &R.slots[index];
  const uint8_t *data = bytes;
  size_t length = n;
  if (slot->pending_len > 0) {
    if (!reserve(slot, slot->pending_len + length)) {
      hand_back(env, index, slot->pending, slot->pending_len);
      return 0;
    }
    memcpy(slot->pending + slot->pending_len, bytes, length);
    slot->pending_len += length;
    data = slot->pending;
    length = slot->pending_len;
  }
  long used = parse(env, index, data, length, recv_us);
  if (used < 0) return 0;
  slot = &R.slots[index];
  size_t rest = length - (size_t)used;
  if (data == slot->pending) {
    memmove(slot->pending, slot->pending + used, rest);
    slot->pending_len = rest;
  } else if (rest > 0) {
    if (!reserve(slot, rest)) {
      hand_back(env, index, data + used, rest);
      return 0;
    }
    memcpy(slot->pending, data + used, rest);
    slot->pending_len = rest;
  }
  return 1;
}

/*
 * One read of the socket into R.buf; *when: the received time of what was read (the kernel's
 * timestamp on CLOCK_MONOTONIC with kernelTimes and when the kernel gave one, else now).
 */
static ssize_t read_once(int fd, double *when) {
  ssize_t n;
  if (!R.kernel_times) {
    do {
      n = recv(fd, R.buf, READ_BYTES, MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    if (n > 0) *when = now_us();
    return n;
  }
  struct iovec iov = {R.buf, READ_BYTES};
  union {
    char buf[CMSG_SPACE(sizeof(struct timespec))];
    struct cmsghdr align;
  } control;
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.buf;
  msg.msg_controllen = sizeof control.buf;
  do {
    n = recvmsg(fd, &msg, MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n <= 0) return n;
  double now = now_us();
  *when = now;
  int stamped = 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SO_TIMESTAMPNS ||
        c->cmsg_len < CMSG_LEN(sizeof(struct timespec)) || (msg.msg_flags & MSG_CTRUNC))
      continue;
    struct timespec ts;
    memcpy(&ts, CMSG_DATA(c), sizeof ts);
    double kernel = (double)ts.tv_sec * 1e6 + (double)(ts.tv_nsec / 1000) + R.mono_minus_real;
    /* (never after the read: the two clocks were read a moment apart; over a second before
       it, the wall clock stepped since the stamp, and the read's own time is the better) */
    double delay = kernel < now ? now - kernel : 0;
    if (delay > 1e6) break;
    *when = now - delay;
    stamped = 1;
    R.delay_reads++;
    R.delay_sum += delay;
    if (delay > R.delay_max) R.delay_max = delay;
  }
  if (!stamped) R.unstamped++;
  return n;
}

/* Reads what the socket has; false when the slot was handed back or removed. */
static int read_slot(napi_env env, uint32_t index) {
  for (int round = 0; round < 16; round++) {
    slot_t *slot = &R.slots[index];
    if (slot->fd < 0) return 0;
    double when;
    ssize_t n = read_once(slot->fd, &when);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 1;
    if (n <= 0) { /* the end, or an error: the socket's owner reads it again and sees it */
      hand_back(env, index, slot->pending, slot->pending_len);
      return 0;
    }
    if (!consume(env, index, R.buf, (size_t)n, when)) return 0;
    if (n < READ_BYTES) return 1;
  }
  return 1;
}

static void on_ready(uv_poll_t *handle, int status, int events) {
  (void)handle;
  (void)status;
  (void)events;
  napi_env env = R.env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  struct epoll_event ready[EVENTS];
  if (R.kernel_times) {
    struct timespec real, mono;
    clock_gettime(CLOCK_REALTIME, &real);
    clock_gettime(CLOCK_MONOTONIC, &mono);
    R.mono_minus_real = ((double)mono.tv_sec - (double)real.tv_sec) * 1e6 +
                        ((double)mono.tv_nsec - (double)real.tv_nsec) / 1000;
  }
  for (int pass = 0; pass < 64; pass++) {
    int n;
    do {
      n = epoll_wait(R.epfd, ready, EVENTS, 0);
    } while (n < 0 && errno == EINTR);
    if (n <= 0) break;
    for (int i = 0; i < n; i++) {
      uint32_t index = ready[i].data.u32;
      if (index < R.slot_count && R.slots[index].fd >= 0) read_slot(env, index);
    }
    if (n < EVENTS) break;
  }
  flush_records(env);
  napi_close_handle_scope(env, scope);
}

static int buffer_arg(napi_env env, napi_value value, uint8_t *target, size_t *length) {
  bool is_buffer = false;
  void *data;
  size_t n;
  if (napi_is_buffer(env, value, &is_buffer) != napi_ok || !is_buffer ||
      napi_get_buffer_info(env, value, &data, &n) != napi_ok || n == 0 || n > MARKER_MAX)
    return 0;
  memcpy(target, data, n);
  *length = n;
  return 1;
}

static napi_value Start(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  bool kernel_times = false;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 5 ||
      napi_get_value_bool(env, argv[4], &kernel_times) != napi_ok)
    return fail(env, "start(callback, tsMarker, seqMarker, records, kernelTimes)");
  if (R.started) return fail(env, "the reader is already started");
  napi_valuetype type;
  if (napi_typeof(env, argv[0], &type) != napi_ok || type != napi_function)
    return fail(env, "callback must be a function");
  if (!buffer_arg(env, argv[1], R.ts, &R.ts_len) || !buffer_arg(env, argv[2], R.seq, &R.seq_len))
    return fail(env, "markers must be Buffers of 1 to 16 bytes");
  bool is_typed = false;
  napi_typedarray_type array_type;
  size_t length, offset;
  napi_value arraybuffer;
  void *records;
  if (napi_is_typedarray(env, argv[3], &is_typed) != napi_ok || !is_typed ||
      napi_get_typedarray_info(env, argv[3], &array_type, &length, &records, &arraybuffer,
                               &offset) != napi_ok ||
      array_type != napi_float64_array || length < 4)
    return fail(env, "records must be a Float64Array of at least 4");
  uv_loop_t *loop;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) return fail(env, "no event loop");
  int epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) return fail(env, "epoll_create1 failed");
  if (uv_poll_init(loop, &R.poll, epfd) != 0 || uv_poll_start(&R.poll, UV_READABLE, on_ready) != 0) {
    close(epfd);
    return fail(env, "uv_poll on the epoll fd failed");
  }
  /* keep the records' memory alive: hold a reference to the array for good */
  napi_ref keep;
  napi_create_reference(env, argv[3], 1, &keep);
  napi_create_reference(env, argv[0], 1, &R.callback);
  napi_value name;
  napi_create_string_utf8(env, "FrameReader", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, NULL, name, &R.async);
  R.env = env;
  R.epfd = epfd;
  R.out = records;
  R.out_cap = length / 4;
  R.out_n = 0;
  R.kernel_times = kernel_times;
  R.started = 1;
  /* the uv_poll alone must not keep the process alive */
  uv_unref((uv_handle_t *)&R.poll);
  napi_value undefined;
  napi_get_undefined(env, &undefined);
  return undefined;
}

static napi_value Add(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int32_t fd;
  double client;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
      napi_get_value_double(env, argv[1], &client) != napi_ok || fd < 0)
    return fail(env, "add(fd, client)");
  if (!R.started) return fail(env, "start() first");
  uint32_t index = 0;
  while (index < R.slot_count && R.slots[index].fd >= 0) index++;
  if (index == R.slot_count) {
    if (R.slot_count == R.slot_cap) {
      uint32_t cap = R.slot_cap ? R.slot_cap * 2 : 1024;
      slot_t *grown = realloc(R.slots, sizeof(slot_t) * cap);
      if (grown == NULL) return fail(env, "out of memory");
      R.slots = grown;
      R.slot_cap = cap;
    }
    R.slot_count++;
  }
  slot_t *slot = &R.slots[index];
  memset(slot, 0, sizeof *slot);
  slot->client = client;
  struct epoll_event event;
  memset(&event, 0, sizeof event);
  event.events = EPOLLIN | EPOLLRDHUP;
  event.data.u32 = index;
  int one = 1;
  if (R.kernel_times && setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one) != 0) {
    slot->fd = -1;
    return fail(env, "setsockopt SO_TIMESTAMPNS failed");
  }
  if (epoll_ctl(R.epfd, EPOLL_CTL_ADD, fd, &event) != 0) {
    slot->fd = -1;
    return fail(env, "epoll_ctl ADD failed");
  }
  slot->fd = fd;
  napi_value result;
  napi_create_uint32(env, index, &result);
  return result;
}

static napi_value Push(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  uint32_t index;
  bool is_buffer = false;
  void *data;
  size_t length;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 ||
      napi_get_value_uint32(env, argv[0], &index) != napi_ok ||
      napi_is_buffer(env, argv[1], &is_buffer) != napi_ok || !is_buffer ||
      napi_get_buffer_info(env, argv[1], &data, &length) != napi_ok)
    return fail(env, "push(slot, buffer)");
  if (index >= R.slot_count || R.slots[index].fd < 0) return fail(env, "no such slot");
  /* (copied first: the records' callback may run, and the buffer is the caller's) */
  uint8_t *copy = malloc(length > 0 ? length : 1);
  if (copy == NULL) return fail(env, "out of memory");
  memcpy(copy, data, length);
  if (consume(env, index, copy, length, now_us())) flush_records(env);
  free(copy);
  napi_value undefined;
  napi_get_undefined(env, &undefined);
  return undefined;
}

static napi_value Remove(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  uint32_t index;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_uint32(env, argv[0], &index) != napi_ok)
    return fail(env, "remove(slot)");
  if (index < R.slot_count) release(&R.slots[index]);
  napi_value undefined;
  napi_get_undefined(env, &undefined);
  return undefined;
}

static napi_value ReadDelay(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value result, value;
  napi_create_array_with_length(env, 4, &result);
  const double values[4] = {R.delay_reads, R.delay_sum, R.delay_max, R.unstamped};
  for (uint32_t i = 0; i < 4; i++) {
    napi_create_double(env, values[i], &value);
    napi_set_element(env, result, i, value);
  }
  R.delay_reads = R.delay_sum = R.delay_max = R.unstamped = 0;
  return result;
}

static napi_value Init(napi_env env, napi_value exports) {
  const struct {
    const char *name;
    napi_callback fn;
  } fns[] = {{"start", Start}, {"add", Add}, {"push", Push}, {"remove", Remove}, {"readDelay", ReadDelay}};
  for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
    napi_value fn;
    if (napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].fn, NULL, &fn) != napi_ok ||
        napi_set_named_property(env, exports, fns[i].name, fn) != napi_ok)
      return NULL;
  }
  napi_value version;
  if (napi_create_int32(env, FRAME_READER_VERSION, &version) != napi_ok ||
      napi_set_named_property(env, exports, "version", version) != napi_ok)
    return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
