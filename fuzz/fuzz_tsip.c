/*
 * libFuzzer harness: the datagram framing of transport streams over IP (src/net/tsip.c). The
 * first byte chooses: bit 0 forces RTP (the URL's rtp=1), bit 1 also parses the rest as a
 * udp:// URL. The rest is fed as one datagram, and again cut into datagrams whose lengths the
 * input's bytes give, to one reader. Invariants: a datagram passed on is whole 188-byte
 * packets each starting 0x47, lying inside the datagram and ending with it; the counters add
 * up (every datagram is passed on or dropped, packets are the sum passed on); a URL that parses
 * has a port, ttl 1..255 and pkts 1..7; a frame of the packets passed on deframes to them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyhole/tsip.h"

#include "fuzz_common.h"

static struct kh_tsip_rx rx;
static uint64_t passed_dg;

static void one(const uint8_t *d, size_t len)
{
	size_t off = 0, n = 0;
	uint64_t before = rx.st.packets;

	if (!kh_tsip_deframe(&rx, d, len, &off, &n))
		return;
	passed_dg++;
	CHECK(n >= 1 && off + n * KH_TSIP_PKT == len);
	CHECK(rx.st.packets == before + n);
	for (size_t i = 0; i < n; i++)
		CHECK(d[off + i * KH_TSIP_PKT] == 0x47);
	if (n <= KH_TSIP_PKTS_MAX) { /* framed again, it comes back the same */
		static uint8_t dg[KH_TSIP_DGRAM_MAX];
		struct kh_tsip_tx tx = {.rtp = 1, .seq = 1, .ssrc = 2};
		struct kh_tsip_rx r2;
		size_t l = kh_tsip_frame(&tx, d + off, n, 3, dg), o2, n2;
		kh_tsip_rx_init(&r2, 0);
		CHECK(kh_tsip_deframe(&r2, dg, l, &o2, &n2) == 1 && n2 == n && memcmp(dg + o2, d + off, n * 188) == 0);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!size)
		return 0;
	kh_tsip_rx_init(&rx, data[0] & 1);
	passed_dg = 0;
	if (data[0] & 2) {
		char *s = malloc(size);
		struct kh_tsip_url u;
		if (!s)
			return 0;
		memcpy(s, data + 1, size - 1);
		s[size - 1] = 0;
		if (kh_tsip_url_parse(s, &u) == KH_OK)
			CHECK(u.port && u.ttl >= 1 && u.ttl <= 255 && u.pkts >= 1 && u.pkts <= KH_TSIP_PKTS_MAX);
		free(s);
	}
	one(data + 1, size - 1);
	/* cut: each piece's length is 12 + 188 * (byte mod 8) plus the byte's top bits */
	for (size_t p = 1; p < size;) {
		size_t len = 12u + 188u * (data[p] % 8u) + (data[p] >> 6);
		if (len > size - p)
			len = size - p;
		one(data + p, len);
		p += len;
	}
	CHECK(rx.st.datagrams == passed_dg + rx.st.dropped);
	return 0;
}
