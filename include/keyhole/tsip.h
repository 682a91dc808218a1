/*
 * Transport streams over IP: udp://[SRC@]HOST:PORT[?ttl=N&pkts=N&local=ADDR&rtp=1] parsed
 * strictly, datagrams of whole 188-byte packets (7 by default: 1316 bytes, within an Ethernet
 * MTU), unicast or multicast, optionally behind an RTP header (RFC 3550, payload type 33 for
 * MP2T per RFC 2250). The reader strips RTP when the URL says rtp=1 or the datagram carries
 * version 2 and payload type 33, drops (and counts) a datagram that is not whole packets, counts
 * lost datagrams by RTP sequence and lost packets by TS continuity: never fatal. HOST, SRC and
 * local= are IPv4 addresses or names, or IPv6 addresses in brackets ([::1], [ff3e::1]); an IPv6
 * group is joined on the interface local= names (an interface name such as lo, or one of its
 * addresses; the system's choice when none), which also scopes a link-local address.
 * The framing (kh_tsip_frame, kh_tsip_deframe) does no I/O; the sockets are kh_tsip_out/in.
 * Net zone.
 */
#ifndef KEYHOLE_TSIP_H
#define KEYHOLE_TSIP_H

#include <stddef.h>
#include <stdint.h>

#include "keyhole/err.h"

#define KH_TSIP_PKT 188
#define KH_TSIP_PKTS_MAX 7
#define KH_TSIP_RTP_HDR 12
#define KH_TSIP_RTP_PT 33
#define KH_TSIP_DGRAM_MAX (KH_TSIP_RTP_HDR + KH_TSIP_PKTS_MAX * KH_TSIP_PKT)

struct kh_tsip_url {
	char host[64];  /* IPv4 address, a name, or an IPv6 address (given in brackets, kept without) */
	char src[64];   /* SRC@ (source-specific multicast): "" when none */
	char local[64]; /* local=: the interface for multicast (IPv4: its address; IPv6: its name or
			 * an address of it); "" when none */
	uint16_t port;
	unsigned ttl;   /* ttl= (1..255, default 1) */
	unsigned pkts;  /* pkts= (1..7, default 7) */
	int rtp;        /* rtp=1 */
};

/* 1 when s begins with udp:// (then it is a network address, not a file). */
int kh_tsip_is_url(const char *s);
/* Parse url strictly into u: KH_ERR_INVAL for any fault (unknown or repeated key, bad number,
 * no port), u then unspecified. */
kh_err kh_tsip_url_parse(const char *url, struct kh_tsip_url *u);

/* ---- framing (no I/O) ---- */

struct kh_tsip_tx {
	int rtp;
	uint16_t seq;  /* the next RTP sequence number */
	uint32_t ssrc;
};

/* One datagram of n (1..KH_TSIP_PKTS_MAX) packets into out (KH_TSIP_DGRAM_MAX bytes), an RTP
 * header with timestamp ts90k in front when t->rtp. Returns its length. */
size_t kh_tsip_frame(struct kh_tsip_tx *t, const uint8_t *pkts, size_t n, uint32_t ts90k, uint8_t *out);
/* The 90 kHz clock of the first PCR among n packets into *ts90k: 1, or 0 when none carries one. */
int kh_tsip_pcr90k(const uint8_t *pkts, size_t n, uint32_t *ts90k);

struct kh_tsip_stats {
	uint64_t datagrams; /* received */
	uint64_t packets;   /* TS packets passed on */
	uint64_t rtp;       /* datagrams that carried an RTP header */
	uint64_t dropped;   /* datagrams not whole 188-byte packets (or a bad RTP header) */
	uint64_t lost;      /* datagrams missing by RTP sequence */
	uint64_t cc_errors; /* TS continuity breaks */
};

struct kh_tsip_rx {
	int force_rtp; /* the URL's rtp=1 */
	int have_seq;
	uint16_t next_seq;
	uint8_t cc[8192]; /* per PID: 0 unseen, else 0x10 | last continuity_counter */
	struct kh_tsip_stats st;
};

void kh_tsip_rx_init(struct kh_tsip_rx *r, int force_rtp);
/* The TS packets of one datagram: 1 with *off and *n set, or 0 when it was dropped (counted). */
int kh_tsip_deframe(struct kh_tsip_rx *r, const uint8_t *d, size_t len, size_t *off, size_t *n);

/* ---- sockets ---- */

struct kh_tsip_out;
struct kh_tsip_in;

/* A sender to u (multicast: TTL and interface set). KH_ERR_INVAL for an address that does not
 * resolve, KH_ERR_IO for a socket failure, KH_ERR_NOMEM. */
kh_err kh_tsip_out_open(const struct kh_tsip_url *u, struct kh_tsip_out **out);
/* Queue n packets; every u->pkts of them go out as a datagram. KH_ERR_IO when sending failed
 * (a refused unicast datagram, no reader yet, is not a failure). */
kh_err kh_tsip_out_write(struct kh_tsip_out *o, const uint8_t *pkts, size_t n);
/* Send what is queued (a shorter datagram). */
kh_err kh_tsip_out_flush(struct kh_tsip_out *o);
void kh_tsip_out_close(struct kh_tsip_out *o);

/* A receiver bound to u's port (multicast: the group joined, from SRC when given). As
 * kh_tsip_out_open. */
kh_err kh_tsip_in_open(const struct kh_tsip_url *u, struct kh_tsip_in **in);
/*
 * Wait up to timeout_ms (-1: forever) for datagrams; whole packets into buf (cap at least
 * KH_TSIP_DGRAM_MAX): the number of bytes (a multiple of 188), 0 when the wait ran out, -1 on
 * a socket failure, -2 when a signal interrupted the wait.
 */
long kh_tsip_in_read(struct kh_tsip_in *in, uint8_t *buf, size_t cap, int timeout_ms);
const struct kh_tsip_stats *kh_tsip_in_stats(const struct kh_tsip_in *in);
void kh_tsip_in_close(struct kh_tsip_in *in);

#endif
