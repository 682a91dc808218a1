/*
 * The device zone's transports (include/keyhole/device.h): in-process and UNIX socket, with
 * the socket daemon that hosts a module. The byte-pipe contract they implement (struct
 * kh_transport, kh_transport_xfer) is base's: include/keyhole/transport.h, src/base/transport.c. Both carry the identical APDU bytes; the socket adds only a
 * 4-byte length in front of each. A socket stream that fails mid-frame is never used again: a
 * leftover byte would pair an answer with the wrong command. The daemon bounds each frame in
 * time and honours its stop flag inside a blocked read or write, so a stalled client can
 * neither keep the one connection slot nor hold off SIGTERM.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "keyhole/apdu.h"
#include "keyhole/buf.h"
#include "keyhole/crypto.h"
#include "keyhole/log.h"
#include "keyhole/module.h"
#include "keyhole/device.h"
#include "keyhole/transport.h"

static kh_err inproc_xfer(void *ctx, const uint8_t *cmd, size_t len, uint8_t *resp, size_t cap, size_t *rlen)
{
	size_t n = kh_module_process(ctx, cmd, len, resp, cap);
	if (n < 2)
		return KH_ERR_TRANSPORT;
	*rlen = n;
	return KH_OK;
}

void kh_transport_inproc(struct kh_transport *t, struct kh_module *m)
{
	t->xfer = inproc_xfer;
	t->close = NULL;
	t->ctx = m;
}

/* ---- framing ---- */

/*
 * One end of a framed stream. The daemon sets stop and a time limit per frame so that a stalled
 * or trickling client, or a signal, cannot hold its only connection slot; the client sets
 * neither and simply blocks, retrying EINTR.
 */
struct peer {
	int fd;
	int *fds;  /* descriptors that came with the frame are kept here (NULL: none are taken) */
	int nfds;
	volatile sig_atomic_t *stop; /* give up after EINTR once it is set; NULL: retry EINTR */
	unsigned timeout_ms;         /* whole-frame limit, also SO_RCVTIMEO/SO_SNDTIMEO; 0: none */
	uint64_t deadline;           /* CLOCK_MONOTONIC ms by which the current frame must be done */
};

/* How a frame transfer ended. Anything but IO_OK leaves the stream out of step: close it. */
enum io { IO_OK, IO_EOF, IO_TIMEOUT, IO_STOP, IO_TOO_LARGE, IO_FAIL };

static const char *io_name(enum io e)
{
	switch (e) {
	case IO_OK: return "ok";
	case IO_EOF: return "eof";
	case IO_TIMEOUT: return "timeout";
	case IO_STOP: return "stop";
	case IO_TOO_LARGE: return "too_large";
	case IO_FAIL: break;
	}
	return "error";
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void frame_start(struct peer *s)
{
	if (s->timeout_ms)
		s->deadline = now_ms() + s->timeout_ms;
}

/*
 * Each blocking call is bounded by the socket timeouts; this bounds the frame, so that a peer
 * sending one byte just inside each timeout is cut off too (after at most twice the limit).
 */
static int late(const struct peer *s)
{
	return s->timeout_ms && now_ms() >= s->deadline;
}

/* What a failed send/recv means; EINTR is IO_OK (retry) unless we were told to stop. */
static enum io io_errno(const struct peer *s)
{
	if (errno == EAGAIN || errno == EWOULDBLOCK)
		return IO_TIMEOUT; /* SO_RCVTIMEO / SO_SNDTIMEO expired */
	if (errno == ECONNRESET || errno == EPIPE)
		return IO_EOF; /* the peer hung up (leaving bytes unread, or before our write) */
	if (errno != EINTR)
		return IO_FAIL;
	if (s->stop && *s->stop)
		return IO_STOP;
	return IO_OK;
}

static enum io write_all(struct peer *s, const uint8_t *p, size_t n)
{
	enum io e;
	while (n) {
		ssize_t k = send(s->fd, p, n, MSG_NOSIGNAL);
		if (k > 0) {
			p += k;
			n -= (size_t)k;
		} else if (k == 0) {
			return IO_FAIL;
		} else if ((e = io_errno(s)) != IO_OK) {
			return e;
		}
		if (n && late(s))
			return IO_TIMEOUT;
	}
	return IO_OK;
}

/* Descriptors passed with the bytes just read: kept in s->fds while there is room, else closed. */
static void take_fds(struct peer *s, struct msghdr *mh)
{
	for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c)) {
		size_t k;
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < k; i++) {
			int fd;
			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
			if (s->fds && s->nfds < KH_DAEMON_FDS)
				s->fds[s->nfds++] = fd;
			else
				close(fd);
		}
	}
}

static ssize_t recv_some(struct peer *s, uint8_t *p, size_t n)
{
	union {
		char buf[CMSG_SPACE(KH_DAEMON_FDS * sizeof(int))];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = {.iov_base = p, .iov_len = n};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof ctl.buf};
	ssize_t k = recvmsg(s->fd, &mh, MSG_CMSG_CLOEXEC);

	if (k > 0)
		take_fds(s, &mh);
	return k;
}

static enum io read_all(struct peer *s, uint8_t *p, size_t n)
{
	enum io e;
	while (n) {
		ssize_t k = recv_some(s, p, n);
		if (k > 0) {
			p += k;
			n -= (size_t)k;
		} else if (k == 0) {
			return IO_EOF;
		} else if ((e = io_errno(s)) != IO_OK) {
			return e;
		}
		if (n && late(s))
			return IO_TIMEOUT;
	}
	return IO_OK;
}

/* Length and bytes in one sendmsg, carrying descriptors: the frame's first bytes bring them. */
static enum io send_frame_fds(struct peer *s, const uint8_t *p, size_t n, const int *fds, int nfds)
{
	uint8_t buf[4 + KH_APDU_MAX_CMD];
	union {
		char buf[CMSG_SPACE(KH_DAEMON_FDS * sizeof(int))];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = {.iov_base = buf, .iov_len = 4 + n};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
	struct cmsghdr *c;
	ssize_t k;

	if (n > KH_APDU_MAX_CMD || nfds < 1 || nfds > KH_DAEMON_FDS)
		return IO_TOO_LARGE;
	kh_put_be32(buf, (uint32_t)n);
	memcpy(buf + 4, p, n);
	memset(&ctl, 0, sizeof ctl);
	mh.msg_control = ctl.buf;
	mh.msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int));
	c = CMSG_FIRSTHDR(&mh);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
	memcpy(CMSG_DATA(c), fds, (size_t)nfds * sizeof(int));
	frame_start(s);
	do
		k = sendmsg(s->fd, &mh, MSG_NOSIGNAL);
	while (k < 0 && errno == EINTR);
	if (k <= 0) {
		enum io e = k == 0 ? IO_FAIL : io_errno(s);
		return e == IO_OK ? IO_FAIL : e;
	}
	/* the descriptors went with the first byte; the rest of the frame as usual */
	return write_all(s, buf + k, 4 + n - (size_t)k);
}

/* Length and APDU in one send: two small writes cost the peer an extra wake-up. */
static enum io send_frame(struct peer *s, const uint8_t *p, size_t n)
{
	uint8_t buf[4 + KH_APDU_MAX_CMD];
	if (n > KH_APDU_MAX_CMD)
		return IO_TOO_LARGE;
	kh_put_be32(buf, (uint32_t)n);
	memcpy(buf + 4, p, n);
	frame_start(s);
	return write_all(s, buf, 4 + n);
}

/* A frame longer than cap is refused unread: the stream is then out of step. */
static enum io recv_frame(struct peer *s, uint8_t *p, size_t cap, size_t *n)
{
	uint8_t hdr[4];
	uint32_t len;
	enum io e;
	frame_start(s);
	if ((e = read_all(s, hdr, 4)) != IO_OK)
		return e;
	len = kh_get_be32(hdr);
	if (len > cap)
		return IO_TOO_LARGE;
	if ((e = read_all(s, p, len)) != IO_OK)
		return e;
	*n = len;
	return IO_OK;
}

/* fd is -1 once the stream failed: every later transfer is refused (see unix_xfer). */
struct unix_ctx {
	int fd;
};

/* One frame out (with descriptors when nfds > 0), its answer in. */
static kh_err unix_exchange(struct unix_ctx *u, const uint8_t *cmd, size_t len, const int *fds, int nfds, uint8_t *resp,
			    size_t cap, size_t *rlen)
{
	struct peer s = {.fd = u->fd};
	size_t n = 0;
	enum io e;

	if (u->fd < 0)
		return KH_ERR_TRANSPORT;
	if (len > KH_APDU_MAX_CMD)
		return KH_ERR_TOO_LARGE; /* nothing sent: the stream is still in step */
	if (cap > KH_APDU_MAX_RESP)
		cap = KH_APDU_MAX_RESP;
	e = nfds ? send_frame_fds(&s, cmd, len, fds, nfds) : send_frame(&s, cmd, len);
	if (e == IO_OK && (e = recv_frame(&s, resp, cap, &n)) == IO_OK && n < 2)
		e = IO_FAIL; /* no status word: not a module answering */
	if (e != IO_OK) {
		/*
		 * A frame half sent, half read or left unread: whatever follows in the stream would
		 * be taken for the answer to the next command. Drop the connection for good.
		 */
		kh_log_info("transport.close", "reason=%s", io_name(e));
		close(u->fd);
		u->fd = -1;
		return KH_ERR_TRANSPORT;
	}
	*rlen = n;
	return KH_OK;
}

static kh_err unix_xfer(void *ctx, const uint8_t *cmd, size_t len, uint8_t *resp, size_t cap, size_t *rlen)
{
	return unix_exchange(ctx, cmd, len, NULL, 0, resp, cap, rlen);
}

kh_err kh_transport_unix_request(struct kh_transport *t, const uint8_t *req, size_t n, const int *fds, int nfds,
				 uint8_t *resp, size_t cap, size_t *rlen)
{
	if (!t || t->xfer != unix_xfer || !req || !n || req[0] != KH_CLA_DAEMON || nfds < 0 || nfds > KH_DAEMON_FDS ||
	    (nfds && !fds))
		return KH_ERR_INVAL;
	return unix_exchange(t->ctx, req, n, fds, nfds, resp, cap, rlen);
}

static void unix_close(void *ctx)
{
	struct unix_ctx *u = ctx;
	if (u) {
		if (u->fd >= 0)
			close(u->fd);
		free(u);
	}
}

static kh_err unix_addr(const char *path, struct sockaddr_un *sa)
{
	memset(sa, 0, sizeof *sa);
	sa->sun_family = AF_UNIX;
	if (!path || strlen(path) >= sizeof sa->sun_path)
		return KH_ERR_INVAL;
	strcpy(sa->sun_path, path);
	return KH_OK;
}

kh_err kh_transport_unix(struct kh_transport *t, const char *path)
{
	struct sockaddr_un sa;
	struct unix_ctx *u;
	int fd;
	kh_err r;

	if ((r = unix_addr(path, &sa)) != KH_OK)
		return r;
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
		return KH_ERR_IO;
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
		close(fd);
		return errno == ENOENT || errno == ECONNREFUSED ? KH_ERR_NOTFOUND : KH_ERR_TRANSPORT;
	}
	if (!(u = calloc(1, sizeof *u))) {
		close(fd);
		return KH_ERR_NOMEM;
	}
	u->fd = fd;
	t->xfer = unix_xfer;
	t->close = unix_close;
	t->ctx = u;
	return KH_OK;
}

/* Bound every blocking recv/send on the connection; a client that stalls then loses it. */
static int set_timeouts(int fd, unsigned ms)
{
	struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};
	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0)
		return -1;
	return setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

/*
 * Serve one client until it hangs up, breaks the framing, lets a frame time out, or we are
 * told to stop. Between frames the client may stay idle as long as it likes (a host holds its
 * card); once a frame has begun it must arrive within timeout_ms.
 */
/* A status word alone, as the module would answer it. */
static size_t sw_only(uint8_t *resp, kh_err r)
{
	uint16_t sw = kh_err_to_sw(r);
	resp[0] = (uint8_t)(sw >> 8);
	resp[1] = (uint8_t)sw;
	return 2;
}

/* One frame's answer: the daemon's own request, a command the socket must not carry, or the module's. */
static size_t answer(const struct kh_serve_opts *o, struct kh_module *m, const uint8_t *cmd, size_t n, const int *fds,
		     int nfds, uint8_t *resp, size_t cap)
{
	if (n >= 1 && cmd[0] == KH_CLA_DAEMON) {
		size_t rn = o->request ? o->request(o->ctx, cmd, n, fds, nfds, resp, cap) : 0;
		return rn >= 2 && rn <= cap ? rn : sw_only(resp, o->request ? KH_ERR_INTERNAL : KH_ERR_APDU_CLA);
	}
	return kh_serve_apdu(m, cmd, n, resp, cap);
}

size_t kh_serve_apdu(struct kh_module *m, const uint8_t *cmd, size_t n, uint8_t *resp, size_t cap)
{
	if (n >= 1 && cmd[0] == KH_CLA_DAEMON)
		return sw_only(resp, KH_ERR_APDU_CLA);
	if (n >= 2 && cmd[0] == KH_CLA &&
	    (cmd[1] == KH_INS_RUN_OPEN || cmd[1] == KH_INS_RUN_CHUNK || cmd[1] == KH_INS_RUN_CLOSE))
		return sw_only(resp, KH_ERR_APDU_INS); /* the runner's, never a socket's */
	return kh_module_process(m, cmd, n, resp, cap);
}

static void serve_client(int fd, struct kh_module *m, volatile sig_atomic_t *stop, const struct kh_serve_opts *o)
{
	uint8_t cmd[KH_APDU_MAX_CMD], resp[KH_APDU_MAX_RESP];
	int fds[KH_DAEMON_FDS];
	unsigned timeout_ms = o->timeout_ms;
	struct peer s = {.fd = fd, .fds = fds, .stop = stop, .timeout_ms = timeout_ms};
	size_t n, rn;
	unsigned long count = 0;
	enum io e = IO_OK;

	if (set_timeouts(fd, timeout_ms) != 0)
		e = IO_FAIL;
	while (e == IO_OK && !*stop) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int k = poll(&p, 1, 200);
		if (k < 0 && errno != EINTR)
			e = IO_FAIL;
		if (k <= 0)
			continue;
		e = recv_frame(&s, cmd, sizeof cmd, &n);
		rn = e == IO_OK ? answer(o, m, cmd, n, fds, s.nfds, resp, sizeof resp) : 0;
		/* the descriptors served this frame only */
		for (int i = 0; i < s.nfds; i++)
			close(fds[i]);
		s.nfds = 0;
		if (e != IO_OK || (e = send_frame(&s, resp, rn)) != IO_OK)
			break;
		kh_wipe(resp, rn);
		count++;
	}
	if (e == IO_TIMEOUT)
		kh_log_info("serve.timeout", "timeout_ms=%u apdus=%lu", timeout_ms, count);
	kh_log_info("serve.disconnect", "apdus=%lu reason=%s", count, e == IO_OK ? "stop" : io_name(e));
}

kh_err kh_serve_unix(const char *path, struct kh_module *m, volatile sig_atomic_t *stop)
{
	return kh_serve_unix_opts(path, m, stop, NULL);
}

kh_err kh_serve_unix_opts(const char *path, struct kh_module *m, volatile sig_atomic_t *stop,
			  const struct kh_serve_opts *opts)
{
	struct sockaddr_un sa;
	struct kh_transport probe;
	struct kh_serve_opts o = opts ? *opts : (struct kh_serve_opts){0};
	unsigned timeout_ms = o.timeout_ms ? o.timeout_ms : KH_SERVE_TIMEOUT_MS;
	int fd = -1;
	mode_t old;
	kh_err r;

	if ((r = unix_addr(path, &sa)) != KH_OK)
		return r;
	/* A live daemon already owns the path: refuse. A stale socket file: replace it. */
	if (kh_transport_unix(&probe, path) == KH_OK) {
		kh_transport_close(&probe);
		return KH_ERR_EXISTS;
	}
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
		return KH_ERR_IO;
	{
		struct stat st;
		if (lstat(path, &st) == 0) {
			if (!S_ISSOCK(st.st_mode)) {
				close(fd);
				return KH_ERR_EXISTS;
			}
			unlink(path);
		}
	}
	old = umask(0177);
	if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
		umask(old);
		close(fd);
		return KH_ERR_IO;
	}
	umask(old);
	if (listen(fd, 4) != 0) {
		r = KH_ERR_IO;
		goto out;
	}
	kh_log_info("serve.listen", "socket=%s timeout_ms=%u", path, timeout_ms);
	while (!*stop) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int k = poll(&p, 1, 200);
		int c;
		if (k < 0 && errno != EINTR) {
			r = KH_ERR_IO;
			goto out;
		}
		if (k <= 0)
			continue;
		if ((c = accept4(fd, NULL, NULL, SOCK_CLOEXEC)) < 0) {
			/* Out of descriptors or memory: the listening socket stays readable, so wait a
			 * little rather than spin on it. */
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
				(void)poll(NULL, 0, 100);
			continue;
		}
		kh_log_info("serve.connect", "socket=%s", path);
		o.timeout_ms = timeout_ms;
		serve_client(c, m, stop, &o);
		close(c);
	}
	r = KH_OK;
out:
	close(fd);
	unlink(path);
	return r;
}
