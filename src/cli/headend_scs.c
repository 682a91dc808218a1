/*
 * The scrambler's SCS over TCP (headend_scs.h): blocking sends, answers awaited with poll and a
 * deadline, the byte stream framed with kh_sim_frame and handed whole to the SCS engine.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cli/headend_scs.h"
#include "keyhole/crypto.h"

#define CHANNEL_ID 1
#define RETRY_S 1.0

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Close the connection; the next one no sooner than RETRY_S from now. Returns err. */
static kh_err drop(struct kh_scs_client *c, kh_err err)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->have = 0;
	kh_wipe(c->in, sizeof c->in);
	c->retry_at = now_s() + RETRY_S;
	return err;
}

static kh_err lost(struct kh_scs_client *c, const char *what)
{
	snprintf(c->why, sizeof c->why, "%s", what);
	return drop(c, KH_ERR_TRANSPORT);
}

/* A non-blocking connect finished within timeout_ms: 0, or -1 with c->why set. */
static int connect_wait(struct kh_scs_client *c, int fd, int timeout_ms)
{
	struct pollfd p = {.fd = fd, .events = POLLOUT};
	int err = 0, r;
	socklen_t len = sizeof err;

	while ((r = poll(&p, 1, timeout_ms)) < 0 && errno == EINTR)
		;
	if (r == 0) {
		snprintf(c->why, sizeof c->why, "no connection to %s:%u within %d ms", c->host, c->port, timeout_ms);
		return -1;
	}
	if (r < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
		snprintf(c->why, sizeof c->why, "cannot connect to %s:%u: %s", c->host, c->port,
			 strerror(err ? err : errno));
		return -1;
	}
	return 0;
}

/* A connected, non-blocking socket to host:port, or -1 with c->why set. */
static int dial(struct kh_scs_client *c, int timeout_ms)
{
	struct addrinfo hints, *ai = NULL;
	char port[8];
	int fd, one = 1;

	memset(&hints, 0, sizeof hints);
	hints.ai_socktype = SOCK_STREAM;
	snprintf(port, sizeof port, "%u", (unsigned)c->port);
	if (getaddrinfo(c->host, port, &hints, &ai) != 0 || !ai) {
		snprintf(c->why, sizeof c->why, "cannot resolve %s", c->host);
		return -1;
	}
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
		if (errno != EINPROGRESS) {
			snprintf(c->why, sizeof c->why, "cannot connect to %s:%u: %s", c->host, c->port,
				 strerror(errno));
			close(fd);
			fd = -1;
		} else if (connect_wait(c, fd, timeout_ms) != 0) {
			close(fd);
			fd = -1;
		}
	} else if (fd < 0) {
		snprintf(c->why, sizeof c->why, "socket: %s", strerror(errno));
	}
	freeaddrinfo(ai);
	if (fd < 0)
		return -1;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	return fd;
}

/* Send one whole message before the deadline. */
static kh_err send_msg(struct kh_scs_client *c, const uint8_t *p, size_t n, double deadline)
{
	while (n > 0) {
		ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno == EAGAIN) {
			struct pollfd pf = {.fd = c->fd, .events = POLLOUT};
			int ms = (int)((deadline - now_s()) * 1000);
			if (ms <= 0 || poll(&pf, 1, ms) <= 0)
				return lost(c, "the ECMG takes nothing (send timed out)");
			continue;
		}
		if (w <= 0)
			return lost(c, "the connection to the ECMG is lost (send)");
		p += w;
		n -= (size_t)w;
	}
	return KH_OK;
}

/* Read what there is, waiting until the deadline for something. */
static kh_err fill(struct kh_scs_client *c, double deadline)
{
	struct pollfd pf = {.fd = c->fd, .events = POLLIN};
	int ms = (int)((deadline - now_s()) * 1000);
	ssize_t n;

	if (ms <= 0 || poll(&pf, 1, ms) == 0) {
		snprintf(c->why, sizeof c->why, "no answer from the ECMG in time");
		return drop(c, KH_ERR_TRANSPORT);
	}
	n = recv(c->fd, c->in + c->have, sizeof c->in - c->have, 0);
	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return KH_OK;
	if (n <= 0)
		return lost(c, "the ECMG closed the connection");
	c->have += (size_t)n;
	return KH_OK;
}

/* The answer to the ECMG's own test, if the event is one; KH_OK otherwise. */
static kh_err answer_test(struct kh_scs_client *c, const struct kh_scs_event *ev, double deadline)
{
	uint8_t out[KH_SCS_MSG_MAX];
	size_t n = 0;
	kh_err r;

	if (ev->type == KH_SCS_EV_CHANNEL_TEST)
		r = kh_scs_channel_status(&c->scs, out, sizeof out, &n);
	else if (ev->type == KH_SCS_EV_STREAM_TEST)
		r = kh_scs_stream_status(&c->scs, ev->stream, out, sizeof out, &n);
	else
		return KH_OK;
	return r == KH_OK ? send_msg(c, out, n, deadline) : r;
}

/* The next event other than the ECMG's tests (answered), before the deadline. */
static kh_err next_event(struct kh_scs_client *c, struct kh_scs_event *ev, uint8_t *ecm, size_t cap,
			 double deadline)
{
	for (;;) {
		size_t need = 0;
		kh_err r;

		if (kh_sim_frame(c->in, c->have, &need) != KH_SIM_OK)
			return lost(c, "the ECMG sent a message too long to frame");
		if (c->have < need) {
			if ((r = fill(c, deadline)) != KH_OK)
				return r;
			continue;
		}
		r = kh_scs_handle(&c->scs, c->in, need, ev, ecm, cap);
		memmove(c->in, c->in + need, c->have - need);
		c->have -= need;
		if (r != KH_OK) {
			snprintf(c->why, sizeof c->why, "the ECMG sent what this SCS cannot take: %s", kh_strerror(r));
			return drop(c, r);
		}
		if (ev->type != KH_SCS_EV_CHANNEL_TEST && ev->type != KH_SCS_EV_STREAM_TEST)
			return KH_OK;
		if ((r = answer_test(c, ev, deadline)) != KH_OK)
			return r;
	}
}

/* Wait for an event of type want; an error event fails with c->why. */
static kh_err expect(struct kh_scs_client *c, enum kh_scs_event_type want, struct kh_scs_event *ev, uint8_t *ecm,
		     size_t cap, double deadline)
{
	kh_err r = next_event(c, ev, ecm, cap, deadline);

	if (r != KH_OK)
		return r;
	if (ev->type == want)
		return KH_OK;
	if (ev->type == KH_SCS_EV_STREAM_ERROR) { /* that stream's request only: the channel stays */
		snprintf(c->why, sizeof c->why, "the ECMG refused: stream_error 0x%04X", ev->error);
		return KH_ERR_PEER_ERROR;
	}
	if (ev->type == KH_SCS_EV_CHANNEL_ERROR)
		snprintf(c->why, sizeof c->why, "the ECMG refused: channel_error 0x%04X", ev->error);
	else
		snprintf(c->why, sizeof c->why, "the ECMG answered out of turn (event %d)", (int)ev->type);
	return drop(c, KH_ERR_PEER_ERROR);
}

/* channel_setup and every stream_setup on the new connection c->fd. */
static kh_err set_up(struct kh_scs_client *c, int timeout_ms)
{
	uint8_t out[KH_SCS_MSG_MAX], sec[8];
	struct kh_scs_event ev;
	size_t n = 0;
	kh_err r;

	if ((r = kh_scs_init(&c->scs, c->super_cas_id, CHANNEL_ID, 3)) != KH_OK ||
	    (r = kh_scs_channel_setup(&c->scs, out, sizeof out, &n)) != KH_OK)
		return drop(c, r);
	if ((r = send_msg(c, out, n, now_s() + timeout_ms / 1000.0)) != KH_OK ||
	    (r = expect(c, KH_SCS_EV_CHANNEL_STATUS, &ev, sec, sizeof sec, now_s() + timeout_ms / 1000.0)) != KH_OK)
		return r;
	if (c->scs.ch.max_streams < c->n_svc) {
		snprintf(c->why, sizeof c->why, "the ECMG takes %u streams a channel, %u services are scrambled",
			 (unsigned)c->scs.ch.max_streams, c->n_svc);
		return drop(c, KH_ERR_PEER_ERROR);
	}
	for (unsigned i = 0; i < c->n_svc; i++) {
		const struct kh_scs_service *s = &c->svc[i];
		if ((r = kh_scs_stream_setup(&c->scs, i, (uint16_t)(i + 1), s->ecm_id, s->nominal_cp, out, sizeof out,
					     &n)) != KH_OK)
			return drop(c, r);
		if ((r = send_msg(c, out, n, now_s() + timeout_ms / 1000.0)) != KH_OK ||
		    (r = expect(c, KH_SCS_EV_STREAM_STATUS, &ev, sec, sizeof sec, now_s() + timeout_ms / 1000.0)) !=
			    KH_OK)
			return drop(c, r); /* a channel without all its streams is no use */
	}
	if (c->connects++ == 0)
		c->ch = c->scs.ch;
	return KH_OK;
}

kh_err kh_scs_client_open(struct kh_scs_client *c, int timeout_ms)
{
	c->why[0] = 0;
	c->have = 0;
	if ((c->fd = dial(c, timeout_ms)) < 0)
		return drop(c, KH_ERR_TRANSPORT);
	return set_up(c, timeout_ms);
}

/* Connected, or connecting again now if the retry time has come. */
static kh_err ensure(struct kh_scs_client *c, int timeout_ms)
{
	if (c->fd >= 0)
		return KH_OK;
	if (now_s() < c->retry_at)
		return KH_ERR_TRANSPORT; /* c->why still says why the last connection failed */
	return kh_scs_client_open(c, timeout_ms);
}

kh_err kh_scs_client_ecm(void *ctx, unsigned svc, uint32_t cp, const uint8_t *cw, const uint8_t *next,
			 size_t cw_len, uint8_t *ecm, size_t cap, size_t *len)
{
	struct kh_scs_client *c = ctx;
	const struct kh_scs_service *s;
	uint8_t out[KH_SCS_MSG_MAX];
	struct kh_scs_event ev;
	int wait_ms;
	size_t n = 0;
	kh_err r;

	if (svc >= c->n_svc)
		return KH_ERR_INVAL;
	s = &c->svc[svc];
	wait_ms = (c->ch.max_comp_time ? c->ch.max_comp_time : 1000) + KH_SCS_MARGIN_MS;
	if ((r = ensure(c, wait_ms)) != KH_OK)
		return r;
	r = kh_scs_cw_provision(&c->scs, svc, (uint16_t)cp, cw, next, cw_len, s->ac, s->ac_len, out, sizeof out, &n);
	if (r == KH_OK)
		r = send_msg(c, out, n, now_s() + wait_ms / 1000.0);
	kh_wipe(out, sizeof out);
	if (r != KH_OK)
		return r;
	if ((r = expect(c, KH_SCS_EV_ECM, &ev, ecm, cap, now_s() + wait_ms / 1000.0)) != KH_OK)
		return r;
	if (ev.stream != svc || ev.cp != (uint16_t)cp) {
		snprintf(c->why, sizeof c->why, "the ECMG answered another stream or period");
		return drop(c, KH_ERR_PEER_ERROR);
	}
	*len = ev.ecm_len;
	return KH_OK;
}

void kh_scs_client_close(struct kh_scs_client *c)
{
	uint8_t out[KH_SCS_MSG_MAX];
	size_t n = 0;

	if (c->fd >= 0 && kh_scs_channel_close(&c->scs, out, sizeof out, &n) == KH_OK)
		(void)send_msg(c, out, n, now_s() + 0.5);
	(void)drop(c, KH_OK);
}
