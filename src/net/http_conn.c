/*
 * The HTTP server's connections (http_int.h): a request target holding a control character is
 * refused before routing; each connection gets a record of its receive deadline, and a watcher
 * thread closes a connection whose request head or body is not in by its deadline, banning its
 * address for a while; an address already banned or over its budget is refused at accept.
 */
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <netinet/in.h>

#include <microhttpd.h>

#include "keyhole/file.h"
#include "keyhole/log.h"
#include "http_int.h"

int64_t kh__http_mono_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* The deadline record libmicrohttpd keeps for a connection (kh__http_on_connection), NULL when none. */
struct kh__http_conn *kh__http_track_of(struct MHD_Connection *c)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

	return ci ? ci->socket_context : NULL;
}

/* Start a receive deadline of ms milliseconds for a connection (0: none, the server has the turn). */
void kh__http_deadline_set(struct kh__http_conn *t, int phase, int64_t ms)
{
	if (!t)
		return;
	t->phase = phase;
	atomic_store(&t->deadline_ms, ms ? kh__http_mono_ms() + ms : 0);
}

/*
 * 1 when the request target, as the client sent it, holds a control character (below 0x20, or
 * 0x7F), raw or percent-encoded. libmicrohttpd decodes the path before the handler sees it, and
 * a decoded %00 would end it early: /v1/cards/00000004%00/emm would be routed as
 * /v1/cards/00000004. The query is held to the same rule.
 */
static int target_has_control(const char *t)
{
	for (; *t; t++) {
		int c = (unsigned char)*t;
		uint8_t b;
		if (c == '%' && t[1] && t[2] && kh_hex_decode(t + 1, 2, &b, 1) == KH_OK)
			c = b;
		if (c < 0x20 || c == 0x7F)
			return 1;
	}
	return 0;
}

/*
 * libmicrohttpd's first word on a request: its target, raw, before any decoding. The request's
 * record starts here, so that the check of the raw target reaches the handler of its headers.
 */
void *kh__http_on_uri(void *cls, const char *uri, struct MHD_Connection *c)
{
	struct kh_http_req *r = calloc(1, sizeof *r);
	struct kh__http_conn *t = kh__http_track_of(c);

	if (t)
		atomic_store(&t->line_seen, 1);
	if (!r)
		return NULL; /* on_request makes one; the raw target goes unchecked */
	r->h = cls;
	r->bad_target = uri && target_has_control(uri);
	return r;
}

static socklen_t sockaddr_len(const struct sockaddr *sa)
{
	return sa->sa_family == AF_INET6 ? (socklen_t)sizeof(struct sockaddr_in6)
					 : (socklen_t)sizeof(struct sockaddr_in);
}

/*
 * A connection begins and ends. While it lives, its record is in h->conns for the deadline
 * watcher: its head has head_timeout_s from now. libmicrohttpd closes the socket only after the
 * close notice, so the watcher never touches a descriptor that was closed and reused.
 */
void kh__http_on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
			  enum MHD_ConnectionNotificationCode code)
{
	struct kh_http *h = cls;
	struct kh__http_conn *t = *socket_context;

	if (code == MHD_CONNECTION_NOTIFY_STARTED) {
		const union MHD_ConnectionInfo *fd = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
		const union MHD_ConnectionInfo *ad = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
		if (!fd || !(t = calloc(1, sizeof *t)))
			return; /* not watched: the idle timeout still applies */
		t->fd = fd->connect_fd;
		if (ad && ad->client_addr) {
			t->addrlen = sockaddr_len(ad->client_addr);
			memcpy(&t->addr, ad->client_addr, t->addrlen);
		}
		t->phase = KH__PHASE_HEAD;
		atomic_init(&t->deadline_ms, kh__http_mono_ms() + h->head_ms);
		pthread_mutex_lock(&h->conns_mu);
		t->next = h->conns;
		if (h->conns)
			h->conns->prev = t;
		h->conns = t;
		pthread_mutex_unlock(&h->conns_mu);
		*socket_context = t;
		return;
	}
	if (!t)
		return;
	pthread_mutex_lock(&h->conns_mu);
	if (t->prev)
		t->prev->next = t->next;
	else
		h->conns = t->next;
	if (t->next)
		t->next->prev = t->prev;
	pthread_mutex_unlock(&h->conns_mu);
	free(t);
	*socket_context = NULL;
}

/* An address that missed a deadline waits out its ban before it connects again. */
enum MHD_Result kh__http_on_accept(void *cls, const struct sockaddr *addr, socklen_t addrlen)
{
	struct kh_http *h = cls;

	(void)addrlen;
	return kh__guard_banned(h->guard, addr, kh__http_mono_ms()) ? MHD_NO : MHD_YES;
}

/*
 * The deadline watcher: a connection whose request head or body is not in by its deadline is
 * shut down (its thread then sees the end of the stream and libmicrohttpd closes it), and its
 * address is refused new connections for a while. libmicrohttpd has an idle timeout only, which
 * a client sending a byte every few seconds never reaches.
 */
void *kh__http_watch_main(void *arg)
{
	struct kh_http *h = arg;

	pthread_mutex_lock(&h->conns_mu);
	while (!h->watch_stop) {
		struct timespec until;
		int64_t now = kh__http_mono_ms();

		for (struct kh__http_conn *t = h->conns; t; t = t->next) {
			int64_t d = atomic_load(&t->deadline_ms);
			char host[64] = "?";
			int ban;
			if (t->reaped || !d || now < d)
				continue;
			t->reaped = 1;
			shutdown(t->fd, SHUT_RDWR);
			kh_metric_add(h->deadline_closed, 1);
			/* A connection that never began a request is only closed (as the idle timeout
			 * would); one that began and did not finish is a slow sender: its address waits. */
			ban = t->phase == KH__PHASE_BODY || atomic_load(&t->line_seen);
			if (t->addrlen) {
				if (ban)
					kh__guard_ban(h->guard, (const struct sockaddr *)&t->addr,
						      now + h->head_ms * KH_HTTP_BAN_FACTOR, now);
				getnameinfo((const struct sockaddr *)&t->addr, t->addrlen, host, sizeof host, NULL, 0,
					    NI_NUMERICHOST);
			}
			kh_log_info("http.deadline", "client=%s phase=%s ban_s=%lld", host,
				    t->phase == KH__PHASE_BODY ? "body" : "head",
				    ban ? (long long)(h->head_ms * KH_HTTP_BAN_FACTOR / 1000) : 0LL);
		}
		/* a quarter of a second late at most */
		clock_gettime(CLOCK_MONOTONIC, &until);
		until.tv_nsec += 250000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&h->watch_cv, &h->conns_mu, &until);
	}
	pthread_mutex_unlock(&h->conns_mu);
	return NULL;
}
