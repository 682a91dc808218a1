/*
 * Transport streams over UDP, with or without RTP (RFC 3550 header, payload type 33 for MP2T
 * per RFC 2250): the URL, the framing and the sockets. See include/keyhole/tsip.h.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "keyhole/crypto.h"
#include "keyhole/tsip.h"

#define PL KH_TSIP_PKT

/* ---- the URL ---- */

int kh_tsip_is_url(const char *s)
{
	return s && strncmp(s, "udp://", 6) == 0;
}

/* A decimal number lo..hi of the whole of s (no sign, no space): 0, else -1. */
static int num(const char *s, size_t len, unsigned long lo, unsigned long hi, unsigned long *v)
{
	unsigned long x = 0;

	if (!len || len > 6)
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		x = x * 10 + (unsigned long)(s[i] - '0');
	}
	if (x < lo || x > hi)
		return -1;
	*v = x;
	return 0;
}

/* Copy s[0..len) into a host field: letters, digits, '.', '-' only, not empty. */
static int host_field(char *dst, size_t cap, const char *s, size_t len)
{
	if (!len || len >= cap)
		return -1;
	for (size_t i = 0; i < len; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
		      s[i] == '.' || s[i] == '-'))
			return -1;
	memcpy(dst, s, len);
	dst[len] = 0;
	return 0;
}

/* One key=value of the query; seen marks the keys given (each once). */
static int query_item(struct kh_tsip_url *u, const char *s, size_t len, unsigned *seen)
{
	const char *eq = memchr(s, '=', len);
	size_t k, vl;
	unsigned long v;
	unsigned bit;

	if (!eq)
		return -1;
	k = (size_t)(eq - s);
	vl = len - k - 1;
	if (k == 3 && memcmp(s, "ttl", 3) == 0) {
		bit = 1;
		if (num(eq + 1, vl, 1, 255, &v) != 0)
			return -1;
		u->ttl = (unsigned)v;
	} else if (k == 4 && memcmp(s, "pkts", 4) == 0) {
		bit = 2;
		if (num(eq + 1, vl, 1, KH_TSIP_PKTS_MAX, &v) != 0)
			return -1;
		u->pkts = (unsigned)v;
	} else if (k == 5 && memcmp(s, "local", 5) == 0) {
		bit = 4;
		if (host_field(u->local, sizeof u->local, eq + 1, vl) != 0)
			return -1;
	} else if (k == 3 && memcmp(s, "rtp", 3) == 0) {
		bit = 8;
		if (num(eq + 1, vl, 0, 1, &v) != 0)
			return -1;
		u->rtp = (int)v;
	} else {
		return -1;
	}
	if (*seen & bit)
		return -1;
	*seen |= bit;
	return 0;
}

static int query(struct kh_tsip_url *u, const char *q)
{
	unsigned seen = 0;

	for (;;) {
		const char *amp = strchr(q, '&');
		size_t len = amp ? (size_t)(amp - q) : strlen(q);
		if (query_item(u, q, len, &seen) != 0)
			return -1;
		if (!amp)
			return 0;
		q = amp + 1;
	}
}

kh_err kh_tsip_url_parse(const char *url, struct kh_tsip_url *u)
{
	const char *a, *at, *colon, *q;
	unsigned long port;

	memset(u, 0, sizeof *u);
	u->ttl = 1;
	u->pkts = KH_TSIP_PKTS_MAX;
	if (!kh_tsip_is_url(url))
		return KH_ERR_INVAL;
	a = url + 6;
	q = strchr(a, '?');
	at = memchr(a, '@', q ? (size_t)(q - a) : strlen(a));
	if (at) {
		if (host_field(u->src, sizeof u->src, a, (size_t)(at - a)) != 0)
			return KH_ERR_INVAL;
		a = at + 1;
	}
	colon = memchr(a, ':', q ? (size_t)(q - a) : strlen(a));
	if (!colon || host_field(u->host, sizeof u->host, a, (size_t)(colon - a)) != 0)
		return KH_ERR_INVAL;
	if (num(colon + 1, q ? (size_t)(q - colon - 1) : strlen(colon + 1), 1, 65535, &port) != 0)
		return KH_ERR_INVAL;
	u->port = (uint16_t)port;
	if (q && query(u, q + 1) != 0)
		return KH_ERR_INVAL;
	return KH_OK;
}

/* ---- framing ---- */

static void be16(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void be32(uint8_t *p, uint32_t v)
{
	be16(p, v >> 16);
	be16(p + 2, v);
}

size_t kh_tsip_frame(struct kh_tsip_tx *t, const uint8_t *pkts, size_t n, uint32_t ts90k, uint8_t *out)
{
	size_t h = 0;

	if (n > KH_TSIP_PKTS_MAX)
		n = KH_TSIP_PKTS_MAX;
	if (t->rtp) {
		out[0] = 0x80; /* version 2, no padding, extension or CSRC */
		out[1] = KH_TSIP_RTP_PT;
		be16(out + 2, t->seq++);
		be32(out + 4, ts90k);
		be32(out + 8, t->ssrc);
		h = KH_TSIP_RTP_HDR;
	}
	memcpy(out + h, pkts, n * PL);
	return h + n * PL;
}

int kh_tsip_pcr90k(const uint8_t *pkts, size_t n, uint32_t *ts90k)
{
	for (size_t i = 0; i < n; i++) {
		const uint8_t *p = pkts + i * PL;
		if (p[0] == 0x47 && (p[3] & 0x20) && p[4] >= 7 && (p[5] & 0x10)) {
			uint64_t base = (uint64_t)p[6] << 25 | (uint64_t)p[7] << 17 | (uint64_t)p[8] << 9 |
					(uint64_t)p[9] << 1 | (uint64_t)(p[10] >> 7);
			*ts90k = (uint32_t)base;
			return 1;
		}
	}
	return 0;
}

void kh_tsip_rx_init(struct kh_tsip_rx *r, int force_rtp)
{
	memset(r, 0, sizeof *r);
	r->force_rtp = force_rtp;
}

/* The RTP header's length at d (fixed part, CSRCs, extension), or 0 when it is not one. */
static size_t rtp_len(const uint8_t *d, size_t len)
{
	size_t h = KH_TSIP_RTP_HDR + 4u * (d[0] & 0x0F);

	if ((d[0] >> 6) != 2 || len < h)
		return 0;
	if (d[0] & 0x10) {
		if (len < h + 4)
			return 0;
		h += 4 + 4u * ((size_t)d[h + 2] << 8 | d[h + 3]);
	}
	return h <= len ? h : 0;
}

/* The RTP sequence number of a datagram: lost datagrams counted (a jump back is a restart). */
static void rtp_seq(struct kh_tsip_rx *r, uint16_t seq)
{
	uint16_t gap = (uint16_t)(seq - r->next_seq);

	if (r->have_seq && gap && gap < 0x8000)
		r->st.lost += gap;
	r->have_seq = 1;
	r->next_seq = (uint16_t)(seq + 1);
}

/* TS continuity of the packets passed on (packets with a payload only; a repeat is allowed). */
static void continuity(struct kh_tsip_rx *r, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++, p += PL) {
		unsigned pid = (unsigned)(p[1] & 0x1F) << 8 | p[2], cc = p[3] & 0x0F;
		if (pid == 0x1FFF || !(p[3] & 0x10))
			continue;
		if (r->cc[pid] && cc != ((r->cc[pid] & 0x0F) + 1u) % 16 && cc != (r->cc[pid] & 0x0Fu))
			r->st.cc_errors++;
		r->cc[pid] = (uint8_t)(0x10 | cc);
	}
}

int kh_tsip_deframe(struct kh_tsip_rx *r, const uint8_t *d, size_t len, size_t *off, size_t *n)
{
	size_t h = 0;

	r->st.datagrams++;
	if (len >= KH_TSIP_RTP_HDR && (r->force_rtp || (d[0] >> 6 == 2 && (d[1] & 0x7F) == KH_TSIP_RTP_PT))) {
		if (!(h = rtp_len(d, len)) || (d[0] & 0x20)) { /* padding is not MP2T's */
			r->st.dropped++;
			return 0;
		}
		r->st.rtp++;
		rtp_seq(r, (uint16_t)(d[2] << 8 | d[3]));
	} else if (r->force_rtp) {
		r->st.dropped++;
		return 0;
	}
	len -= h;
	if (!len || len % PL) {
		r->st.dropped++;
		return 0;
	}
	for (size_t i = 0; i < len; i += PL)
		if (d[h + i] != 0x47) {
			r->st.dropped++;
			return 0;
		}
	*off = h;
	*n = len / PL;
	continuity(r, d + h, *n);
	r->st.packets += *n;
	return 1;
}

/* ---- sockets ---- */

struct kh_tsip_out {
	int fd;
	struct sockaddr_in dst;
	unsigned pkts;
	struct kh_tsip_tx tx;
	uint32_t last_ts;
	int have_pcr;
	uint64_t pcr_anchor, clock_anchor; /* the 90 kHz clock follows the wall clock between PCRs */
	size_t n;
	uint8_t q[KH_TSIP_PKTS_MAX * PL];
	uint8_t dg[KH_TSIP_DGRAM_MAX];
};

struct kh_tsip_in {
	int fd;
	struct kh_tsip_rx rx;
	uint8_t dg[65536];
};

static int resolve(const char *host, struct in_addr *a)
{
	struct addrinfo hints, *res = NULL;

	if (inet_pton(AF_INET, host, a) == 1)
		return 0;
	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_INET;
	hints.ai_socktype = SOCK_DGRAM;
	if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res)
		return -1;
	*a = ((struct sockaddr_in *)(void *)res->ai_addr)->sin_addr;
	freeaddrinfo(res);
	return 0;
}

static uint64_t mono90k(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 90000u + (uint64_t)ts.tv_nsec / 100000u * 9u / 10u;
}

static kh_err out_mcast(int fd, const struct kh_tsip_url *u)
{
	unsigned char ttl = (unsigned char)u->ttl;
	struct in_addr ifa;

	if (setsockopt(fd, IPPROTO_IP, IP_MULTICAST_TTL, &ttl, sizeof ttl) != 0)
		return KH_ERR_IO;
	if (!u->local[0])
		return KH_OK;
	if (resolve(u->local, &ifa) != 0)
		return KH_ERR_INVAL;
	return setsockopt(fd, IPPROTO_IP, IP_MULTICAST_IF, &ifa, sizeof ifa) == 0 ? KH_OK : KH_ERR_IO;
}

kh_err kh_tsip_out_open(const struct kh_tsip_url *u, struct kh_tsip_out **out)
{
	struct kh_tsip_out *o;
	uint8_t r[4];
	kh_err e;

	*out = NULL;
	if (!(o = calloc(1, sizeof *o)))
		return KH_ERR_NOMEM;
	o->dst.sin_family = AF_INET;
	o->dst.sin_port = htons(u->port);
	o->pkts = u->pkts ? u->pkts : KH_TSIP_PKTS_MAX;
	o->tx.rtp = u->rtp;
	if ((e = kh_random(r, sizeof r)) != KH_OK || (e = resolve(u->host, &o->dst.sin_addr) ? KH_ERR_INVAL : KH_OK)) {
		free(o);
		return e;
	}
	o->tx.ssrc = (uint32_t)r[0] << 24 | (uint32_t)r[1] << 16 | (uint32_t)r[2] << 8 | r[3];
	o->tx.seq = (uint16_t)(r[0] << 8 | r[2]);
	if ((o->fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0) {
		free(o);
		return KH_ERR_IO;
	}
	if (IN_MULTICAST(ntohl(o->dst.sin_addr.s_addr)) && (e = out_mcast(o->fd, u)) != KH_OK) {
		kh_tsip_out_close(o);
		return e;
	}
	*out = o;
	return KH_OK;
}

/* The RTP timestamp of the queued packets: their PCR, else the last PCR advanced by the wall
 * clock, else the wall clock. */
static uint32_t stamp(struct kh_tsip_out *o)
{
	uint32_t t;

	if (kh_tsip_pcr90k(o->q, o->n, &t)) {
		o->have_pcr = 1;
		o->pcr_anchor = t;
		o->clock_anchor = mono90k();
		return t;
	}
	if (o->have_pcr)
		return (uint32_t)(o->pcr_anchor + mono90k() - o->clock_anchor);
	return (uint32_t)mono90k();
}

kh_err kh_tsip_out_flush(struct kh_tsip_out *o)
{
	size_t len;

	if (!o->n)
		return KH_OK;
	len = kh_tsip_frame(&o->tx, o->q, o->n, o->tx.rtp ? stamp(o) : 0, o->dg);
	o->n = 0;
	for (;;) {
		ssize_t s = sendto(o->fd, o->dg, len, 0, (const struct sockaddr *)&o->dst, sizeof o->dst);
		if (s == (ssize_t)len || (s < 0 && errno == ECONNREFUSED))
			return KH_OK; /* no reader (yet): a datagram lost, as on a network */
		if (s < 0 && errno == EINTR)
			continue;
		return KH_ERR_IO;
	}
}

kh_err kh_tsip_out_write(struct kh_tsip_out *o, const uint8_t *pkts, size_t n)
{
	while (n) {
		size_t take = o->pkts - o->n < n ? o->pkts - o->n : n;
		kh_err e;
		memcpy(o->q + o->n * PL, pkts, take * PL);
		o->n += take;
		pkts += take * PL;
		n -= take;
		if (o->n == o->pkts && (e = kh_tsip_out_flush(o)) != KH_OK)
			return e;
	}
	return KH_OK;
}

void kh_tsip_out_close(struct kh_tsip_out *o)
{
	if (!o)
		return;
	if (o->fd >= 0)
		close(o->fd);
	kh_wipe(o, sizeof *o);
	free(o);
}

/* Join the group of u on fd (from u->src only when given). */
static kh_err join(int fd, const struct kh_tsip_url *u, struct in_addr grp)
{
	struct in_addr ifa = {.s_addr = htonl(INADDR_ANY)};

	if (u->local[0] && resolve(u->local, &ifa) != 0)
		return KH_ERR_INVAL;
	if (u->src[0]) {
		struct ip_mreq_source m = {.imr_multiaddr = grp, .imr_interface = ifa};
		if (resolve(u->src, &m.imr_sourceaddr) != 0)
			return KH_ERR_INVAL;
		return setsockopt(fd, IPPROTO_IP, IP_ADD_SOURCE_MEMBERSHIP, &m, sizeof m) == 0 ? KH_OK : KH_ERR_IO;
	}
	struct ip_mreq m = {.imr_multiaddr = grp, .imr_interface = ifa};
	return setsockopt(fd, IPPROTO_IP, IP_ADD_MEMBERSHIP, &m, sizeof m) == 0 ? KH_OK : KH_ERR_IO;
}

kh_err kh_tsip_in_open(const struct kh_tsip_url *u, struct kh_tsip_in **in)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(u->port)};
	struct kh_tsip_in *r;
	int one = 1, mc, rcvbuf = 4 << 20;
	kh_err e = KH_OK;

	*in = NULL;
	if (resolve(u->host, &sa.sin_addr) != 0)
		return KH_ERR_INVAL;
	if (!(r = calloc(1, sizeof *r)))
		return KH_ERR_NOMEM;
	kh_tsip_rx_init(&r->rx, u->rtp);
	if ((r->fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0) {
		free(r);
		return KH_ERR_IO;
	}
	mc = IN_MULTICAST(ntohl(sa.sin_addr.s_addr));
	setsockopt(r->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	setsockopt(r->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf); /* a hint: the kernel may cap it */
	if (bind(r->fd, (const struct sockaddr *)&sa, sizeof sa) != 0)
		e = KH_ERR_IO;
	else if (mc)
		e = join(r->fd, u, sa.sin_addr);
	if (e != KH_OK) {
		kh_tsip_in_close(r);
		return e;
	}
	*in = r;
	return KH_OK;
}

long kh_tsip_in_read(struct kh_tsip_in *in, uint8_t *buf, size_t cap, int timeout_ms)
{
	for (;;) {
		struct pollfd pf = {.fd = in->fd, .events = POLLIN};
		size_t off, n;
		ssize_t got;
		int pr = poll(&pf, 1, timeout_ms);
		if (pr < 0)
			return errno == EINTR ? -2 : -1;
		if (pr == 0)
			return 0;
		got = recv(in->fd, in->dg, sizeof in->dg, 0);
		if (got < 0) {
			if (errno == EINTR)
				return -2;
			if (errno == EAGAIN || errno == ECONNREFUSED)
				continue;
			return -1;
		}
		if (!kh_tsip_deframe(&in->rx, in->dg, (size_t)got, &off, &n))
			continue;
		if (n * PL > cap)
			n = cap / PL;
		memcpy(buf, in->dg + off, n * PL);
		return (long)(n * PL);
	}
}

const struct kh_tsip_stats *kh_tsip_in_stats(const struct kh_tsip_in *in)
{
	return &in->rx.st;
}

void kh_tsip_in_close(struct kh_tsip_in *in)
{
	if (!in)
		return;
	if (in->fd >= 0)
		close(in->fd);
	kh_wipe(in->dg, sizeof in->dg);
	free(in);
}
