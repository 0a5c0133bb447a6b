// Sends bytes of a regular file to a non-blocking TCP socket, driven by the event loop, in one of
// two ways: sendfile(2), or a copy loop (pread(2) into one buffer per event loop, send(2) from
// it). On loopback and veth the copy loop was measured about twice as fast as sendfile for the
// same CPU per byte (regcache's bench/RESULTS.md); sendfile spares a copy, which may pay off with
// network cards that take page fragments.
//
// The socket belongs to Node.js. It is dup()ed so that it can be watched for writability with a
// libuv poll handle of its own (a second epoll registration: Node's own watcher on the original
// descriptor is left alone), and so that Node closing its descriptor while a transfer is under
// way cannot hand the number to an unrelated file. Each time the socket can take more, as much as
// it takes is sent (up to a budget per wake-up, so one fast client cannot hold the loop), then
// the transfer waits again. Nothing blocks on the client: a slow or stalled client only leaves a
// poll handle waiting, and holds no buffer (the copy loop keeps nothing between wake-ups). The
// caller writes the HTTP head through Node first and ends the response through Node afterwards,
// so keep-alive and everything around the body stay Node's.

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <node_api.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

// Bytes sent per wake-up before the loop gets to run other work.
#define BUDGET (8 * 1024 * 1024)
// Largest count asked of one sendfile call (Linux caps a call at about 2 GiB anyway).
#define MAX_CALL (1 << 30)
// A file that ends before the range does: not a system errno, reported as EIO with this flag.
#define ERR_SHORT_FILE (-1)
// Copy mode's buffer: one per event loop (Node-API instance data), shared by its transfers.
#ifndef COPY_BUFFER
#define COPY_BUFFER (1024 * 1024)
#endif

static void free_copy_buffer(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  free(data);
}

static char *copy_buffer(napi_env env) {
  void *buf = NULL;
  if (napi_get_instance_data(env, &buf) == napi_ok && buf != NULL) return (char *)buf;
  buf = malloc(COPY_BUFFER);
  if (buf == NULL) return NULL;
  if (napi_set_instance_data(env, buf, free_copy_buffer, NULL) != napi_ok) {
    free(buf);
    return NULL;
  }
  return (char *)buf;
}

typedef struct {
  uv_poll_t poll;
  napi_env env;
  napi_ref callback;
  napi_ref resource;
  napi_async_context async;
  int sock;
  int file;
  int64_t offset;
  int64_t remaining;
  int64_t sent;
  // Running until finished or cancelled; then the poll handle closes.
  int done;
  // Freed when both the poll handle has closed and the JS handle object is collected.
  int refs;
  // Copy mode: the loop's shared buffer (see copy_buffer); NULL for sendfile(2).
  char *copy;
} transfer_t;

static void release(transfer_t *t) {
  if (--t->refs == 0) free(t);
}

static void on_closed(uv_handle_t *h) {
  transfer_t *t = (transfer_t *)h->data;
  close(t->sock);
  t->sock = -1;
  release(t);
}

static void on_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  release((transfer_t *)data);
}

// Stops watching and drops the references to JS values; the callback is not called.
static void stop(transfer_t *t) {
  t->done = 1;
  uv_poll_stop(&t->poll);
  uv_close((uv_handle_t *)&t->poll, on_closed);
}

static void drop_js(transfer_t *t) {
  if (t->async != NULL) napi_async_destroy(t->env, t->async);
  t->async = NULL;
  if (t->callback != NULL) napi_delete_reference(t->env, t->callback);
  t->callback = NULL;
  if (t->resource != NULL) napi_delete_reference(t->env, t->resource);
  t->resource = NULL;
}

// Calls back (errno or 0, bytes sent) and forgets the transfer.
static void finish(transfer_t *t, int err) {
  napi_env env = t->env;
  stop(t);
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) {
    drop_js(t);
    return;
  }
  napi_value cb, resource, argv[3], result;
  if (napi_get_reference_value(env, t->callback, &cb) == napi_ok && napi_get_reference_value(env, t->resource, &resource) == napi_ok) {
    napi_create_int32(env, err == ERR_SHORT_FILE ? EIO : err, &argv[0]);
    napi_create_double(env, (double)t->sent, &argv[1]);
    napi_get_boolean(env, err == ERR_SHORT_FILE, &argv[2]);
    napi_async_context async = t->async;
    t->async = NULL;
    // Through make_callback, so promise jobs queued by the callback run right after it.
    napi_make_callback(env, async, resource, cb, 3, argv, &result);
    napi_async_destroy(env, async);
    // An exception thrown by the callback is Node's to report, as for any other callback.
    bool pending = false;
    if (napi_is_exception_pending(env, &pending) == napi_ok && pending) {
      napi_value exc;
      napi_get_and_clear_last_exception(env, &exc);
      napi_fatal_exception(env, exc);
    }
  }
  drop_js(t);
  napi_close_handle_scope(env, scope);
}

// Copy mode: pread() into the shared buffer, send() from it. A partial send means the socket is
// full: the unsent part is read again from the file next time (nothing is kept between wake-ups,
// so one buffer serves every transfer on the loop).
// About how many more bytes the socket takes now: its send buffer less what is queued in it
// (the kernel's own accounting adds overhead per packet, so this errs high; a short send is
// the correction). Reading no more than this spares reading bytes again after a short send,
// which matters with many slow clients. At least MIN_READ, so a full socket costs one small read.
#define MIN_READ (64 * 1024)
static size_t socket_room(int sock) {
  int sndbuf = 0, queued = 0;
  socklen_t len = sizeof sndbuf;
  if (getsockopt(sock, SOL_SOCKET, SO_SNDBUF, &sndbuf, &len) != 0 || ioctl(sock, SIOCOUTQ, &queued) != 0) return COPY_BUFFER;
  int room = sndbuf - queued;
  return room < MIN_READ ? MIN_READ : (size_t)room;
}

static void copy_some(transfer_t *t, int64_t budget) {
  while (t->remaining > 0 && budget > 0) {
    size_t want = (size_t)(t->remaining < COPY_BUFFER ? t->remaining : COPY_BUFFER);
    size_t room = socket_room(t->sock);
    if (room < want) want = room;
    ssize_t r = pread(t->file, t->copy, want, (off_t)t->offset);
    if (r < 0) {
      if (errno == EINTR) continue;
      finish(t, errno);
      return;
    }
    if (r == 0) {
      finish(t, ERR_SHORT_FILE);
      return;
    }
    ssize_t n;
    do n = send(t->sock, t->copy, (size_t)r, MSG_NOSIGNAL | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      finish(t, errno);
      return;
    }
    t->offset += n;
    t->remaining -= n;
    t->sent += n;
    budget -= n;
    if (n < r) return;
  }
  if (t->remaining == 0) finish(t, 0);
}

static void on_writable(uv_poll_t *h, int status, int events) {
  (void)events;
  transfer_t *t = (transfer_t *)h->data;
  if (t->done) return;
  if (status < 0) {
    // libuv reports any poll error (EPOLLERR: the peer reset, for one) as EBADF and stops the
    // handle; the socket knows what really happened.
    int soerr = 0;
    socklen_t len = sizeof soerr;
    if (getsockopt(t->sock, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0 || soerr == 0) soerr = status == UV_EBADF ? EPIPE : -status;
    finish(t, soerr);
    return;
  }
  int64_t budget = BUDGET;
  if (t->copy != NULL) {
    copy_some(t, budget);
    return;
  }
  while (t->remaining > 0 && budget > 0) {
    size_t want = (size_t)(t->remaining < budget ? t->remaining : budget);
    if (want > MAX_CALL) want = MAX_CALL;
    off_t off = (off_t)t->offset;
    ssize_t n = sendfile(t->sock, t->file, &off, want);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      finish(t, errno);
      return;
    }
    if (n == 0) {
      finish(t, ERR_SHORT_FILE);
      return;
    }
    t->offset += n;
    t->remaining -= n;
    t->sent += n;
    budget -= n;
  }
  if (t->remaining == 0) finish(t, 0);
}

static napi_value throw_errno(napi_env env, const char *what, int err) {
  napi_value code, msg, error;
  char buf[64];
  snprintf(buf, sizeof buf, "%d", err);
  napi_create_string_utf8(env, buf, NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, what, NAPI_AUTO_LENGTH, &msg);
  napi_create_error(env, code, msg, &error);
  napi_value errnum;
  napi_create_int32(env, err, &errnum);
  napi_set_named_property(env, error, "errno", errnum);
  napi_throw(env, error);
  return NULL;
}

// start(socketFd, fileFd, offset, length, callback(errno, sent, shortFile)[, copy]) -> handle
// Throws (with .errno) when the transfer cannot start; the callback is then never called.
static napi_value start(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 5) {
    napi_throw_type_error(env, NULL, "start(socketFd, fileFd, offset, length, callback)");
    return NULL;
  }
  int32_t sock_fd, file_fd;
  int64_t offset, length;
  napi_valuetype cb_type;
  if (napi_get_value_int32(env, argv[0], &sock_fd) != napi_ok || napi_get_value_int32(env, argv[1], &file_fd) != napi_ok ||
      napi_get_value_int64(env, argv[2], &offset) != napi_ok || napi_get_value_int64(env, argv[3], &length) != napi_ok ||
      napi_typeof(env, argv[4], &cb_type) != napi_ok || cb_type != napi_function || sock_fd < 0 || file_fd < 0 || offset < 0 || length < 0) {
    napi_throw_type_error(env, NULL, "start(socketFd, fileFd, offset, length, callback): bad arguments");
    return NULL;
  }

  // Only a non-blocking stream socket: a blocking one would stall the whole event loop.
  int type = 0;
  socklen_t len = sizeof type;
  if (getsockopt(sock_fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0) return throw_errno(env, "not a socket", errno);
  if (type != SOCK_STREAM) return throw_errno(env, "not a stream socket", EINVAL);
  int flags = fcntl(sock_fd, F_GETFL);
  if (flags < 0) return throw_errno(env, "socket flags", errno);
  if (!(flags & O_NONBLOCK)) return throw_errno(env, "socket is blocking", EINVAL);
  struct stat st;
  if (fstat(file_fd, &st) != 0) return throw_errno(env, "file", errno);
  if (!S_ISREG(st.st_mode)) return throw_errno(env, "not a regular file", EINVAL);

  uv_loop_t *loop;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) return throw_errno(env, "no event loop", EINVAL);

  bool copy = false;
  if (argc >= 6 && napi_get_value_bool(env, argv[5], &copy) != napi_ok) copy = false;
  char *buffer = NULL;
  if (copy && (buffer = copy_buffer(env)) == NULL) return throw_errno(env, "out of memory", ENOMEM);

  transfer_t *t = calloc(1, sizeof *t);
  if (t == NULL) return throw_errno(env, "out of memory", ENOMEM);
  t->copy = buffer;
  t->env = env;
  t->file = file_fd;
  t->offset = offset;
  t->remaining = length;
  t->sock = fcntl(sock_fd, F_DUPFD_CLOEXEC, 0);
  if (t->sock < 0) {
    int err = errno;
    free(t);
    return throw_errno(env, "dup", err);
  }
  int rc = uv_poll_init(loop, &t->poll, t->sock);
  if (rc != 0) {
    close(t->sock);
    free(t);
    return throw_errno(env, "poll", -rc);
  }
  t->poll.data = t;
  // From here on the poll handle exists and must be closed; the JS object holds the second ref.
  t->refs = 2;

  napi_value handle, name;
  if (napi_create_object(env, &handle) != napi_ok || napi_wrap(env, handle, t, on_finalize, NULL, NULL) != napi_ok) {
    t->refs = 1;
    stop(t);
    return throw_errno(env, "handle", ENOMEM);
  }
  napi_create_string_utf8(env, "regcache.sendfile", NAPI_AUTO_LENGTH, &name);
  if (napi_create_reference(env, argv[4], 1, &t->callback) != napi_ok || napi_create_reference(env, handle, 1, &t->resource) != napi_ok ||
      napi_async_init(env, handle, name, &t->async) != napi_ok) {
    drop_js(t);
    stop(t);
    return throw_errno(env, "handle", ENOMEM);
  }
  // Always through the loop, so the callback never runs before start() returns.
  rc = uv_poll_start(&t->poll, UV_WRITABLE, on_writable);
  if (rc != 0) {
    drop_js(t);
    stop(t);
    return throw_errno(env, "poll", -rc);
  }
  return handle;
}

// cancel(handle): stops a transfer (its callback is not called). Harmless once it has ended.
static napi_value cancel(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  void *data = NULL;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 || napi_unwrap(env, argv[0], &data) != napi_ok || data == NULL) {
    napi_throw_type_error(env, NULL, "cancel(handle)");
    return NULL;
  }
  transfer_t *t = (transfer_t *)data;
  if (!t->done) {
    stop(t);
    drop_js(t);
  }
  return NULL;
}

// sent(handle): bytes sent so far.
static napi_value sent(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], result;
  void *data = NULL;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 || napi_unwrap(env, argv[0], &data) != napi_ok || data == NULL) {
    napi_throw_type_error(env, NULL, "sent(handle)");
    return NULL;
  }
  napi_create_double(env, (double)((transfer_t *)data)->sent, &result);
  return result;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"start", NULL, start, NULL, NULL, NULL, napi_default, NULL},
      {"cancel", NULL, cancel, NULL, NULL, NULL, napi_default, NULL},
      {"sent", NULL, sent, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
