/*
 * APDU transports (include/keyhole/transport.h): in-process and UNIX socket, with the socket
 * daemon that hosts a module. Both carry the identical APDU bytes; the socket adds only a
 * 4-byte length in front of each.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "keyhole/apdu.h"
#include "keyhole/buf.h"
#include "keyhole/log.h"
#include "keyhole/module.h"
#include "keyhole/transport.h"

kh_err kh_transport_xfer(struct kh_transport *t, const uint8_t *cmd, size_t len, uint8_t *resp, size_t cap,
			 size_t *rlen)
{
	if (!t || !t->xfer)
		return KH_ERR_TRANSPORT;
	return t->xfer(t->ctx, cmd, len, resp, cap, rlen);
}

void kh_transport_close(struct kh_transport *t)
{
	if (t && t->close)
		t->close(t->ctx);
	if (t)
		memset(t, 0, sizeof *t);
}

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

static kh_err write_all(int fd, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return KH_ERR_TRANSPORT;
		p += k;
		n -= (size_t)k;
	}
	return KH_OK;
}

static kh_err read_all(int fd, uint8_t *p, size_t n)
{
	while (n) {
		ssize_t k = recv(fd, p, n, 0);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return KH_ERR_TRANSPORT;
		p += k;
		n -= (size_t)k;
	}
	return KH_OK;
}

/* Length and APDU in one send: two small writes cost the peer an extra wake-up. */
static kh_err send_frame(int fd, const uint8_t *p, size_t n)
{
	uint8_t buf[4 + KH_APDU_MAX_CMD];
	if (n > KH_APDU_MAX_CMD)
		return KH_ERR_TOO_LARGE;
	kh_put_be32(buf, (uint32_t)n);
	memcpy(buf + 4, p, n);
	return write_all(fd, buf, 4 + n);
}

static kh_err recv_frame(int fd, uint8_t *p, size_t cap, size_t *n)
{
	uint8_t hdr[4];
	uint32_t len;
	kh_err r;
	if ((r = read_all(fd, hdr, 4)) != KH_OK)
		return r;
	len = kh_get_be32(hdr);
	if (len > cap)
		return KH_ERR_TOO_LARGE;
	if ((r = read_all(fd, p, len)) != KH_OK)
		return r;
	*n = len;
	return KH_OK;
}

struct unix_ctx {
	int fd;
};

static kh_err unix_xfer(void *ctx, const uint8_t *cmd, size_t len, uint8_t *resp, size_t cap, size_t *rlen)
{
	struct unix_ctx *u = ctx;
	kh_err r;
	if (len > KH_APDU_MAX_CMD)
		return KH_ERR_TOO_LARGE;
	if ((r = send_frame(u->fd, cmd, len)) != KH_OK)
		return r;
	if ((r = recv_frame(u->fd, resp, cap, rlen)) != KH_OK)
		return r == KH_ERR_TOO_LARGE ? KH_ERR_TRANSPORT : r;
	return *rlen >= 2 ? KH_OK : KH_ERR_TRANSPORT;
}

static void unix_close(void *ctx)
{
	struct unix_ctx *u = ctx;
	if (u) {
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

/* Serve one client until it hangs up or we are told to stop. */
static void serve_client(int fd, struct kh_module *m, volatile sig_atomic_t *stop)
{
	uint8_t cmd[KH_APDU_MAX_CMD], resp[KH_APDU_MAX_RESP];
	size_t n, rn;
	unsigned long count = 0;

	while (!*stop) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int k = poll(&p, 1, 200);
		if (k < 0 && errno != EINTR)
			break;
		if (k <= 0)
			continue;
		if (recv_frame(fd, cmd, sizeof cmd, &n) != KH_OK)
			break;
		rn = kh_module_process(m, cmd, n, resp, sizeof resp);
		if (send_frame(fd, resp, rn) != KH_OK)
			break;
		count++;
	}
	kh_log_info("serve.disconnect", "apdus=%lu", count);
}

kh_err kh_serve_unix(const char *path, struct kh_module *m, volatile sig_atomic_t *stop)
{
	struct sockaddr_un sa;
	struct kh_transport probe;
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
	kh_log_info("serve.listen", "socket=%s", path);
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
		if ((c = accept4(fd, NULL, NULL, SOCK_CLOEXEC)) < 0)
			continue;
		kh_log_info("serve.connect", "socket=%s", path);
		serve_client(c, m, stop);
		close(c);
	}
	r = KH_OK;
out:
	close(fd);
	unlink(path);
	return r;
}
