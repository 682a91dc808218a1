/*
 * The front end's side of the escrow's signing process (seed 003, include/keyhole/secmod.h): a
 * small pool of UNIX-socket connections shared by the front end's threads, one request frame
 * and its answer at a time on each. A process that restarted left the pool's connections dead:
 * one found closed is replaced before anything is sent on it, and a PUBKEY or DECRYPT that
 * breaks on the way is sent once more on a new connection (they change nothing). Whatever
 * cannot reach the process is KH_ERR_SECMOD, which the front end answers with 503.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "keyhole/crypto.h"
#include "keyhole/secmod.h"

/* A KEYGEN of 4096 bits may take seconds on a busy machine: give an answer this long. */
#define ANSWER_TIMEOUT_S 60

struct kh_secmod_client {
	struct sockaddr_un sa;
	pthread_mutex_t mu;
	pthread_cond_t cv; /* a connection was put back, or a slot freed */
	int idle[KH_SECMOD_POOL_MAX];
	unsigned nidle, open; /* idle connections; connections in existence (idle or in use) */
};

kh_err kh_secmod_client_open(const char *path, struct kh_secmod_client **out)
{
	struct kh_secmod_client *c;

	if (!path || !path[0] || !out)
		return KH_ERR_INVAL;
	if (!(c = calloc(1, sizeof *c)))
		return KH_ERR_NOMEM;
	c->sa.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof c->sa.sun_path) {
		free(c);
		return KH_ERR_INVAL;
	}
	strcpy(c->sa.sun_path, path);
	pthread_mutex_init(&c->mu, NULL);
	pthread_cond_init(&c->cv, NULL);
	*out = c;
	return KH_OK;
}

void kh_secmod_client_close(struct kh_secmod_client *c)
{
	if (!c)
		return;
	for (unsigned i = 0; i < c->nidle; i++)
		close(c->idle[i]);
	pthread_cond_destroy(&c->cv);
	pthread_mutex_destroy(&c->mu);
	free(c);
}

static int dial(const struct kh_secmod_client *c)
{
	struct timeval tv = {.tv_sec = ANSWER_TIMEOUT_S};
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	if (connect(fd, (const struct sockaddr *)&c->sa, sizeof c->sa) != 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* An idle connection the process has closed (it stopped or restarted) reads as ready. */
static int stale(int fd)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};

	return poll(&p, 1, 0) != 0;
}

/*
 * A connection for one exchange: an idle one that is still alive, else a new one when the pool
 * has room, else wait for one to come back. *fresh says it was dialled for this call. -1 when
 * the process cannot be reached.
 */
static int take(struct kh_secmod_client *c, int *fresh)
{
	int fd = -1;

	pthread_mutex_lock(&c->mu);
	for (;;) {
		while (c->nidle && fd < 0) {
			fd = c->idle[--c->nidle];
			if (stale(fd)) {
				close(fd);
				c->open--;
				fd = -1;
			}
		}
		if (fd >= 0 || c->open < KH_SECMOD_POOL_MAX)
			break;
		pthread_cond_wait(&c->cv, &c->mu);
	}
	*fresh = fd < 0;
	if (fd < 0)
		c->open++; /* the slot is ours while we dial, outside the lock */
	pthread_mutex_unlock(&c->mu);
	if (fd < 0 && (fd = dial(c)) < 0) {
		pthread_mutex_lock(&c->mu);
		c->open--;
		pthread_cond_signal(&c->cv);
		pthread_mutex_unlock(&c->mu);
	}
	return fd;
}

/* Back to the pool (ok) or closed for good (the stream is out of step or dead). */
static void give(struct kh_secmod_client *c, int fd, int ok)
{
	pthread_mutex_lock(&c->mu);
	if (ok) {
		c->idle[c->nidle++] = fd;
	} else {
		close(fd);
		c->open--;
	}
	pthread_cond_signal(&c->cv);
	pthread_mutex_unlock(&c->mu);
}

/* All n bytes sent (out) or received: 1, or 0 when the connection broke or timed out. */
static int xfer_all(int fd, int out, uint8_t *p, size_t n)
{
	while (n) {
		ssize_t k = out ? send(fd, p, n, MSG_NOSIGNAL) : recv(fd, p, n, 0);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return 0;
		p += k;
		n -= (size_t)k;
	}
	return 1;
}

/* Send a frame, read its answer (*rn bytes): 1, or 0 when the connection broke. */
static int exchange(int fd, uint8_t *req, size_t n, uint8_t *resp, size_t *rn)
{
	size_t len;

	if (!xfer_all(fd, 1, req, n) || !xfer_all(fd, 0, resp, KH_SECMOD_HDR_LEN))
		return 0;
	len = (size_t)resp[2] << 8 | resp[3];
	if (len > KH_SECMOD_BODY_MAX || !xfer_all(fd, 0, resp + KH_SECMOD_HDR_LEN, len))
		return 0;
	*rn = KH_SECMOD_HDR_LEN + len;
	return 1;
}

/*
 * One request, its answer's body into out (cap bytes, *outlen). An idempotent request (resend)
 * that breaks on a pooled connection is sent once more on a new one.
 */
static kh_err call(struct kh_secmod_client *c, const struct kh_secmod_req *q, int resend, uint8_t *out, size_t cap,
		   size_t *outlen)
{
	uint8_t req[KH_SECMOD_FRAME_MAX], resp[KH_SECMOD_FRAME_MAX];
	const uint8_t *body;
	size_t n, rn = 0, blen;
	int fd, fresh, ok = 0;
	kh_err r;

	if (!c)
		return KH_ERR_INVAL;
	if ((r = kh_secmod_req_build(q, req, sizeof req, &n)) != KH_OK)
		return r;
	for (int attempt = 0; attempt < 2 && !ok; attempt++) {
		if ((fd = take(c, &fresh)) < 0)
			return KH_ERR_SECMOD;
		ok = exchange(fd, req, n, resp, &rn);
		give(c, fd, ok);
		/* a fresh connection that broke, or a request that must not be sent twice: stop */
		if (!ok && (fresh || !resend))
			break;
	}
	if (!ok)
		return KH_ERR_SECMOD;
	if ((r = kh_secmod_resp_parse(resp, rn, &body, &blen)) != KH_OK) {
		/* a frame that does not parse is not the process speaking */
		return r == KH_ERR_TRUNCATED || r == KH_ERR_TRAILING || r == KH_ERR_TOO_LARGE ? KH_ERR_SECMOD : r;
	}
	if (blen > cap)
		return KH_ERR_BUF;
	memcpy(out, body, blen);
	*outlen = blen;
	kh_wipe(resp, sizeof resp);
	return KH_OK;
}

kh_err kh_secmod_keygen(struct kh_secmod_client *c, unsigned bits, uint8_t id[static KH_SECMOD_ID_LEN], uint8_t *pub,
			size_t cap, size_t *publen)
{
	struct kh_secmod_req q = {.op = KH_SECMOD_KEYGEN, .bits = bits};
	uint8_t body[KH_SECMOD_BODY_MAX];
	size_t n;
	kh_err r;

	if (!pub || !publen)
		return KH_ERR_INVAL;
	if (!kh_secmod_bits_ok(bits))
		return KH_ERR_FORMAT;
	if ((r = call(c, &q, 0, body, sizeof body, &n)) != KH_OK)
		return r;
	if (n <= KH_SECMOD_ID_LEN)
		return KH_ERR_SECMOD;
	if (n - KH_SECMOD_ID_LEN > cap)
		return KH_ERR_BUF;
	memcpy(id, body, KH_SECMOD_ID_LEN);
	memcpy(pub, body + KH_SECMOD_ID_LEN, n - KH_SECMOD_ID_LEN);
	*publen = n - KH_SECMOD_ID_LEN;
	return KH_OK;
}

kh_err kh_secmod_pubkey(struct kh_secmod_client *c, const uint8_t id[static KH_SECMOD_ID_LEN], uint8_t *pub, size_t cap,
			size_t *publen)
{
	struct kh_secmod_req q = {.op = KH_SECMOD_PUBKEY, .id = id};

	if (!pub || !publen)
		return KH_ERR_INVAL;
	return call(c, &q, 1, pub, cap, publen);
}

kh_err kh_secmod_decrypt(struct kh_secmod_client *c, const uint8_t id[static KH_SECMOD_ID_LEN], const uint8_t *cb,
			 size_t clen, uint8_t *z)
{
	struct kh_secmod_req q = {.op = KH_SECMOD_DECRYPT, .id = id, .c = cb, .clen = clen};
	uint8_t out[KH_SECMOD_MOD_MAX];
	size_t n = 0;
	kh_err r;

	if (!cb || !z)
		return KH_ERR_INVAL;
	if (clen != 256 && clen != 384 && clen != 512)
		return KH_ERR_FORMAT;
	if ((r = call(c, &q, 1, out, sizeof out, &n)) != KH_OK)
		return r;
	if (n != clen)
		r = KH_ERR_SECMOD;
	else
		memcpy(z, out, n);
	kh_wipe(out, sizeof out);
	return r;
}
