/*
 * The card side of the vpcd reader driver: a TCP client that connects to the driver inside
 * pcscd and answers its messages with a module (docs/internals/pcsc.md). Being connected is
 * having a card in the reader; ejecting is hanging up.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "device/vpcd.h"
#include "keyhole/apdu.h"
#include "keyhole/crypto.h"
#include "keyhole/device.h"
#include "keyhole/log.h"
#include "keyhole/module.h"

/* How long to wait between tries to reach the driver, and how long one poll may sleep. */
#define RETRY_MS 200
#define POLL_MS 200

struct conn {
	int fd;
	size_t have;
	uint8_t in[2 + KH_APDU_MAX_CMD];
	uint8_t out[2 + KH_APDU_MAX_RESP];
	uint8_t resp[KH_APDU_MAX_RESP];
	unsigned long apdus;
};

static int set_flag(int fd, int level, int name)
{
	int one = 1;
	return setsockopt(fd, level, name, &one, sizeof one);
}

/* One try to connect to the driver; -1 when it is not there (yet). */
static int dial(const struct addrinfo *ai)
{
	for (; ai; ai = ai->ai_next) {
		int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
		if (fd < 0)
			continue;
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 && set_flag(fd, IPPROTO_TCP, TCP_NODELAY) == 0)
			return fd;
		close(fd);
	}
	return -1;
}

/* Send one framed message with a single send(); 0 when all of it went. */
static int send_msg(struct conn *c, const uint8_t *payload, size_t len)
{
	size_t n = kh_vpcd_frame(c->out, sizeof c->out, payload, len);
	ssize_t k;

	if (!n)
		return -1;
	do
		k = send(c->fd, c->out, n, MSG_NOSIGNAL);
	while (k < 0 && errno == EINTR);
	kh_wipe(c->out, n);
	return k == (ssize_t)n ? 0 : -1;
}

/* Answer one message: the ATR for get-ATR, nothing for power and reset, the module for an APDU. */
static int handle(struct conn *c, struct kh_module *m, const struct kh_vpcd_msg *msg)
{
	uint8_t atr[KH_VPCD_ATR_LEN];
	size_t rn;
	int e;

	if (msg->is_ctrl) {
		if (msg->ctrl != KH_VPCD_ATR)
			return 0; /* power off/on and reset change nothing in the module: see pcsc.md */
		kh_vpcd_atr(kh_module_role(m), atr); /* the role now: a blank card personalised in the reader */
		return send_msg(c, atr, sizeof atr);
	}
	rn = kh_serve_apdu(m, msg->apdu, msg->apdu_len, c->resp, sizeof c->resp);
	e = send_msg(c, c->resp, rn);
	kh_wipe(c->resp, rn);
	c->apdus++;
	return e;
}

/* Read what has arrived and answer every whole message; -1 when the connection must end. */
static int pump(struct conn *c, struct kh_module *m)
{
	struct kh_vpcd_msg msg;
	size_t used;
	ssize_t k;
	kh_err r;

	/* Linux turns quick ACKs off again after a while: ask before every read. */
	(void)set_flag(c->fd, IPPROTO_TCP, TCP_QUICKACK);
	do
		k = recv(c->fd, c->in + c->have, sizeof c->in - c->have, 0);
	while (k < 0 && errno == EINTR);
	if (k <= 0)
		return -1;
	c->have += (size_t)k;
	while ((r = kh_vpcd_take(c->in, c->have, KH_APDU_MAX_CMD, &msg, &used)) == KH_OK) {
		int e = handle(c, m, &msg);
		memmove(c->in, c->in + used, c->have - used);
		c->have -= used;
		if (e != 0)
			return -1;
	}
	if (r != KH_ERR_TRUNCATED) {
		kh_log_warn("vpcd.frame", "error=%s", kh_err_name(r));
		return -1;
	}
	return 0;
}

/* Serve one connection until the driver hangs up, the framing breaks, or we stop or eject. */
static void serve_conn(struct conn *c, struct kh_module *m, const struct kh_vpcd_opts *o)
{
	c->have = 0;
	c->apdus = 0;
	while (!*o->stop && !*o->ejected) {
		struct pollfd p = {.fd = c->fd, .events = POLLIN};
		int k = poll(&p, 1, POLL_MS);
		if (k < 0 && errno != EINTR)
			break;
		if (k > 0 && pump(c, m) != 0)
			break;
	}
	kh_wipe(c->in, sizeof c->in);
	kh_log_info("vpcd.disconnect", "apdus=%lu reason=%s", c->apdus,
		    *o->stop ? "stop" : *o->ejected ? "eject" : "driver");
}

static kh_err resolve(const struct kh_vpcd_opts *o, struct addrinfo **ai)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
	char port[8];

	snprintf(port, sizeof port, "%u", o->port ? o->port : KH_VPCD_PORT);
	return getaddrinfo(o->host ? o->host : "127.0.0.1", port, &hints, ai) == 0 ? KH_OK : KH_ERR_INVAL;
}

kh_err kh_serve_vpcd(struct kh_module *m, const struct kh_vpcd_opts *o)
{
	static struct conn c; /* one card side per process; the buffers stay off the stack */
	struct addrinfo *ai = NULL;
	int said_waiting = 0;
	kh_err r;

	if (!m || !o || !o->stop || !o->ejected)
		return KH_ERR_INVAL;
	if ((r = resolve(o, &ai)) != KH_OK)
		return r;
	while (!*o->stop) {
		if (*o->ejected || (c.fd = dial(ai)) < 0) {
			if (!*o->ejected && !said_waiting++)
				kh_log_info("vpcd.wait", "port=%u", o->port ? o->port : KH_VPCD_PORT);
			(void)poll(NULL, 0, RETRY_MS);
			continue;
		}
		said_waiting = 0;
		kh_log_info("vpcd.connect", "port=%u", o->port ? o->port : KH_VPCD_PORT);
		serve_conn(&c, m, o);
		close(c.fd);
	}
	freeaddrinfo(ai);
	return KH_OK;
}
