/*
 * Transport streams over UDP, with or without RTP (RFC 3550 header, payload type 33 for MP2T
 * per RFC 2250): the URL, the framing and the sockets. See include/keyhole/tsip.h.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <net/if.h>
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
/* A host: a name or dotted IPv4 address, or an IPv6 address in brackets (kept without them). */
static int host_field(char *dst, size_t cap, const char *s, size_t len)
{
	int v6 = len >= 2 && s[0] == '[' && s[len - 1] == ']';

	if (v6) {
		s++;
		len -= 2;
	}
	if (!len || len >= cap)
		return -1;
	for (size_t i = 0; i < len; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
		      s[i] == '.' || (!v6 && s[i] == '-') || (v6 && s[i] == ':')))
			return -1;
	memcpy(dst, s, len);
	dst[len] = 0;
	return 0;
}

/* The end of a host at a (before ":PORT"): past "]" for a bracketed one. NULL when none. */
static const char *host_end(const char *a, size_t len)
{
	const char *close;

	if (len && a[0] == '[') {
		close = memchr(a, ']', len);
		return close && close + 1 < a + len && close[1] == ':' ? close + 1 : NULL;
	}
	return memchr(a, ':', len);
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
	colon = host_end(a, q ? (size_t)(q - a) : strlen(a));
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
	struct sockaddr_storage dst;
	socklen_t dst_len;
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

/* host (IPv4 or IPv6) and port into sa: 0, or -1 when it does not resolve. */
static int resolve_any(const char *host, uint16_t port, struct sockaddr_storage *sa, socklen_t *len)
{
	struct addrinfo hints, *res = NULL;

	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_DGRAM;
	if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res || res->ai_addrlen > sizeof *sa)
		goto fail;
	memset(sa, 0, sizeof *sa);
	memcpy(sa, res->ai_addr, res->ai_addrlen);
	*len = res->ai_addrlen;
	freeaddrinfo(res);
	if (sa->ss_family == AF_INET)
		((struct sockaddr_in *)(void *)sa)->sin_port = htons(port);
	else if (sa->ss_family == AF_INET6)
		((struct sockaddr_in6 *)(void *)sa)->sin6_port = htons(port);
	else
		return -1;
	return 0;
fail:
	if (res)
		freeaddrinfo(res);
	return -1;
}

static int is_mcast(const struct sockaddr_storage *sa)
{
	if (sa->ss_family == AF_INET6)
		return IN6_IS_ADDR_MULTICAST(&((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr);
	return IN_MULTICAST(ntohl(((const struct sockaddr_in *)(const void *)sa)->sin_addr.s_addr));
}

/* IPv6 multicast: the interface local= names (an interface name, or one of its addresses); 0 for
 * the system's choice. -1 when there is no such interface. */
static int if_index6(const char *local)
{
	struct ifaddrs *ifs = NULL;
	struct in6_addr a;
	int idx = -1;

	if (!local[0])
		return 0;
	if (inet_pton(AF_INET6, local, &a) != 1) {
		unsigned i = if_nametoindex(local);
		return i ? (int)i : -1;
	}
	if (getifaddrs(&ifs) != 0)
		return -1;
	for (struct ifaddrs *f = ifs; f && idx < 0; f = f->ifa_next)
		if (f->ifa_addr && f->ifa_addr->sa_family == AF_INET6 &&
		    memcmp(&((struct sockaddr_in6 *)(void *)f->ifa_addr)->sin6_addr, &a, sizeof a) == 0)
			idx = (int)if_nametoindex(f->ifa_name);
	freeifaddrs(ifs);
	return idx > 0 ? idx : -1;
}

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

/* IPv6 multicast out: hop limit ttl=, interface local=. */
static kh_err out_mcast6(int fd, const struct kh_tsip_url *u)
{
	int hops = (int)u->ttl, idx = if_index6(u->local);

	if (idx < 0)
		return KH_ERR_INVAL;
	if (setsockopt(fd, IPPROTO_IPV6, IPV6_MULTICAST_HOPS, &hops, sizeof hops) != 0)
		return KH_ERR_IO;
	if (idx && setsockopt(fd, IPPROTO_IPV6, IPV6_MULTICAST_IF, &idx, sizeof idx) != 0)
		return KH_ERR_IO;
	return KH_OK;
}

kh_err kh_tsip_out_open(const struct kh_tsip_url *u, struct kh_tsip_out **out)
{
	struct kh_tsip_out *o;
	uint8_t r[4];
	kh_err e;

	*out = NULL;
	if (!(o = calloc(1, sizeof *o)))
		return KH_ERR_NOMEM;
	o->pkts = u->pkts ? u->pkts : KH_TSIP_PKTS_MAX;
	o->tx.rtp = u->rtp;
	if ((e = kh_random(r, sizeof r)) != KH_OK ||
	    (e = resolve_any(u->host, u->port, &o->dst, &o->dst_len) ? KH_ERR_INVAL : KH_OK)) {
		free(o);
		return e;
	}
	o->tx.ssrc = (uint32_t)r[0] << 24 | (uint32_t)r[1] << 16 | (uint32_t)r[2] << 8 | r[3];
	o->tx.seq = (uint16_t)(r[0] << 8 | r[2]);
	if ((o->fd = socket(o->dst.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0) {
		free(o);
		return KH_ERR_IO;
	}
	if (o->dst.ss_family == AF_INET6 && u->local[0]) { /* a link-local address needs its interface */
		struct sockaddr_in6 *d6 = (struct sockaddr_in6 *)(void *)&o->dst;
		int idx = if_index6(u->local);
		if (idx > 0 && (IN6_IS_ADDR_LINKLOCAL(&d6->sin6_addr) || IN6_IS_ADDR_MC_LINKLOCAL(&d6->sin6_addr) ||
				IN6_IS_ADDR_MC_NODELOCAL(&d6->sin6_addr)))
			d6->sin6_scope_id = (uint32_t)idx;
	}
	if (is_mcast(&o->dst) &&
	    (e = o->dst.ss_family == AF_INET6 ? out_mcast6(o->fd, u) : out_mcast(o->fd, u)) != KH_OK) {
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
		ssize_t s = sendto(o->fd, o->dg, len, 0, (const struct sockaddr *)&o->dst, o->dst_len);
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

/* Join the IPv6 group grp of u on fd (from u->src only when given), on the interface local=. */
static kh_err join6(int fd, const struct kh_tsip_url *u, const struct sockaddr_storage *grp, socklen_t len)
{
	int idx = if_index6(u->local);

	if (idx < 0)
		return KH_ERR_INVAL;
	if (u->src[0]) {
		struct group_source_req g;
		socklen_t sl;
		memset(&g, 0, sizeof g);
		g.gsr_interface = (uint32_t)idx;
		memcpy(&g.gsr_group, grp, len);
		if (resolve_any(u->src, 0, &g.gsr_source, &sl) != 0 || g.gsr_source.ss_family != AF_INET6)
			return KH_ERR_INVAL;
		return setsockopt(fd, IPPROTO_IPV6, MCAST_JOIN_SOURCE_GROUP, &g, sizeof g) == 0 ? KH_OK : KH_ERR_IO;
	}
	struct group_req g;
	memset(&g, 0, sizeof g);
	g.gr_interface = (uint32_t)idx;
	memcpy(&g.gr_group, grp, len);
	return setsockopt(fd, IPPROTO_IPV6, MCAST_JOIN_GROUP, &g, sizeof g) == 0 ? KH_OK : KH_ERR_IO;
}

kh_err kh_tsip_in_open(const struct kh_tsip_url *u, struct kh_tsip_in **in)
{
	struct sockaddr_storage sa;
	socklen_t sa_len = 0;
	struct kh_tsip_in *r;
	int one = 1, mc, rcvbuf = 4 << 20;
	kh_err e = KH_OK;

	*in = NULL;
	if (resolve_any(u->host, u->port, &sa, &sa_len) != 0)
		return KH_ERR_INVAL;
	if (!(r = calloc(1, sizeof *r)))
		return KH_ERR_NOMEM;
	kh_tsip_rx_init(&r->rx, u->rtp);
	if ((r->fd = socket(sa.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0) {
		free(r);
		return KH_ERR_IO;
	}
	mc = is_mcast(&sa);
	setsockopt(r->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	setsockopt(r->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf); /* a hint: the kernel may cap it */
	if (mc && sa.ss_family == AF_INET6) {
		/* an IPv6 group is joined on an interface; the socket takes the port on any address (a
		 * link-local group could not be bound without a scope) */
		struct sockaddr_in6 any = {.sin6_family = AF_INET6, .sin6_port = htons(u->port)};
		struct sockaddr_storage grp = sa;
		if (bind(r->fd, (const struct sockaddr *)&any, sizeof any) != 0)
			e = KH_ERR_IO;
		else
			e = join6(r->fd, u, &grp, sa_len);
		if (e != KH_OK) {
			kh_tsip_in_close(r);
			return e;
		}
		*in = r;
		return KH_OK;
	}
	if (bind(r->fd, (const struct sockaddr *)&sa, sa_len) != 0)
		e = KH_ERR_IO;
	else if (mc && sa.ss_family == AF_INET6)
		e = join6(r->fd, u, &sa, sa_len);
	else if (mc)
		e = join(r->fd, u, ((struct sockaddr_in *)(void *)&sa)->sin_addr);
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
