/*
 * Unit tests for transport streams over IP (include/keyhole/tsip.h): the URL parsed strictly
 * (every key, the defaults, and the refusals), the RTP framing (header fields, sequence, PCR
 * timestamp) round-tripping through the reader, datagrams that are not whole packets dropped
 * and counted, a burst of lost datagrams counted by RTP sequence and TS continuity while the
 * output goes on, and a loopback socket pair carrying packets (with a receive timeout).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "keyhole/tsip.h"
#include "testutil.h"

/* Packet i of a test stream on one PID: sync, PID 0x100, payload, cc = i mod 16. */
static void mkpkt(uint8_t *p, unsigned i)
{
	memset(p, (int)(i & 0xFF), KH_TSIP_PKT);
	p[0] = 0x47;
	p[1] = 0x01;
	p[2] = 0x00;
	p[3] = (uint8_t)(0x10 | (i & 0x0F));
}

static void test_url(void **state)
{
	struct kh_tsip_url u;
	static const char *bad[] = {"udp://", "udp://1.2.3.4", "udp://1.2.3.4:", "udp://1.2.3.4:0",
				    "udp://1.2.3.4:65536", "udp://1.2.3.4:12x", "udp://:5000", "tcp://1.2.3.4:5",
				    "udp://1.2.3.4:5?ttl=0", "udp://1.2.3.4:5?ttl=256", "udp://1.2.3.4:5?pkts=8",
				    "udp://1.2.3.4:5?pkts=0", "udp://1.2.3.4:5?rtp=2", "udp://1.2.3.4:5?foo=1",
				    "udp://1.2.3.4:5?ttl=2&ttl=3", "udp://1.2.3.4:5?", "udp://1.2.3.4:5?ttl",
				    "udp://a b:5", "udp://@1.2.3.4:5", "udp://1.2.3.4:5?local=", "udp://1.2.3.4:+5",
				    "udp://[::1:5000", "udp://::1:5000", "udp://[::1]5000", "udp://[::1]:", "udp://[]:5000",
				    "udp://[::1-2]:5000", "udp://[1.2.3.4:5"};
	(void)state;

	assert_int_equal(kh_tsip_url_parse("udp://127.0.0.1:5000", &u), KH_OK);
	assert_string_equal(u.host, "127.0.0.1");
	assert_int_equal(u.port, 5000);
	assert_int_equal(u.ttl, 1);
	assert_int_equal(u.pkts, 7);
	assert_int_equal(u.rtp, 0);
	assert_string_equal(u.src, "");
	assert_int_equal(kh_tsip_url_parse("udp://10.0.0.9@239.1.2.3:1234?ttl=16&pkts=4&local=10.0.0.1&rtp=1", &u),
			 KH_OK);
	assert_string_equal(u.src, "10.0.0.9");
	assert_string_equal(u.host, "239.1.2.3");
	assert_string_equal(u.local, "10.0.0.1");
	assert_int_equal(u.port, 1234);
	assert_int_equal(u.ttl, 16);
	assert_int_equal(u.pkts, 4);
	assert_int_equal(u.rtp, 1);
	/* IPv6: addresses in brackets, kept without them */
	assert_int_equal(kh_tsip_url_parse("udp://[::1]:5000", &u), KH_OK);
	assert_string_equal(u.host, "::1");
	assert_int_equal(u.port, 5000);
	assert_int_equal(kh_tsip_url_parse("udp://[2001:db8::9]@[ff3e::4242]:1234?local=lo&rtp=1", &u), KH_OK);
	assert_string_equal(u.src, "2001:db8::9");
	assert_string_equal(u.host, "ff3e::4242");
	assert_string_equal(u.local, "lo");
	assert_int_equal(u.port, 1234);
	assert_int_equal(kh_tsip_url_parse("udp://[ff02::1]:7?local=[fe80::1]", &u), KH_OK);
	assert_string_equal(u.local, "fe80::1");
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		if (kh_tsip_url_parse(bad[i], &u) != KH_ERR_INVAL)
			fail_msg("accepted: %s", bad[i]);
	}
	assert_true(kh_tsip_is_url("udp://x:1"));
	assert_false(kh_tsip_is_url("clip.ts"));
}

static void test_frame_rtp(void **state)
{
	struct kh_tsip_tx tx = {.rtp = 1, .seq = 0xFFFF, .ssrc = 0x01020304};
	struct kh_tsip_rx rx;
	uint8_t pk[7 * KH_TSIP_PKT], dg[KH_TSIP_DGRAM_MAX];
	size_t len, off, n;
	(void)state;

	for (unsigned i = 0; i < 7; i++)
		mkpkt(pk + i * KH_TSIP_PKT, i);
	len = kh_tsip_frame(&tx, pk, 7, 0xA1B2C3D4, dg);
	assert_int_equal(len, 12 + 7 * 188);
	assert_int_equal(dg[0], 0x80);
	assert_int_equal(dg[1], 33);
	assert_int_equal(dg[2] << 8 | dg[3], 0xFFFF);
	assert_int_equal(tx.seq, 0); /* wraps */
	assert_memory_equal(dg + 4, "\xA1\xB2\xC3\xD4\x01\x02\x03\x04", 8);
	kh_tsip_rx_init(&rx, 0); /* detected, not forced */
	assert_int_equal(kh_tsip_deframe(&rx, dg, len, &off, &n), 1);
	assert_int_equal(off, 12);
	assert_int_equal(n, 7);
	assert_memory_equal(dg + off, pk, sizeof pk);
	assert_int_equal(rx.st.rtp, 1);

	/* plain UDP: no header; rtp=1 on the reader refuses it */
	tx.rtp = 0;
	len = kh_tsip_frame(&tx, pk, 3, 0, dg);
	assert_int_equal(len, 3 * 188);
	assert_memory_equal(dg, pk, len);
	assert_int_equal(kh_tsip_deframe(&rx, dg, len, &off, &n), 1);
	assert_int_equal(off, 0);
	assert_int_equal(n, 3);
	kh_tsip_rx_init(&rx, 1);
	assert_int_equal(kh_tsip_deframe(&rx, dg, len, &off, &n), 0);
	assert_int_equal(rx.st.dropped, 1);
}

static void test_pcr(void **state)
{
	uint8_t p[KH_TSIP_PKT] = {0x47, 0x01, 0x00, 0x30, 7, 0x10};
	uint32_t t = 0;
	(void)state;

	/* PCR base 0x1_2345_6789 (33 bits): its low 32 bits are the 90 kHz stamp */
	p[6] = 0x91;
	p[7] = 0xA2;
	p[8] = 0xB3;
	p[9] = 0xC4;
	p[10] = 0x80;
	assert_int_equal(kh_tsip_pcr90k(p, 1, &t), 1);
	assert_int_equal(t, (uint32_t)0x123456789ull);
	p[5] = 0; /* no PCR flag */
	assert_int_equal(kh_tsip_pcr90k(p, 1, &t), 0);
}

static void test_bad_datagrams(void **state)
{
	struct kh_tsip_rx rx;
	uint8_t d[KH_TSIP_DGRAM_MAX];
	size_t off, n;
	(void)state;

	kh_tsip_rx_init(&rx, 0);
	mkpkt(d, 0);
	mkpkt(d + 188, 1);
	assert_int_equal(kh_tsip_deframe(&rx, d, 187, &off, &n), 0);     /* cut */
	assert_int_equal(kh_tsip_deframe(&rx, d, 188 + 5, &off, &n), 0); /* a tail */
	assert_int_equal(kh_tsip_deframe(&rx, d, 0, &off, &n), 0);
	d[188] = 0x46; /* second packet without its sync byte */
	assert_int_equal(kh_tsip_deframe(&rx, d, 376, &off, &n), 0);
	assert_int_equal(rx.st.dropped, 4);
	assert_int_equal(rx.st.packets, 0);
	assert_int_equal(rx.st.datagrams, 4);
	/* an RTP header claiming more CSRCs than the datagram holds */
	kh_tsip_rx_init(&rx, 1);
	memset(d, 0, 12);
	d[0] = 0x8F;
	d[1] = 33;
	assert_int_equal(kh_tsip_deframe(&rx, d, 12 + 20, &off, &n), 0);
	assert_int_equal(rx.st.dropped, 1);
}

/* 40 datagrams of 7 packets; 5..9 and 20 never arrive: 6 lost by sequence, TS continuity broken
 * twice, every other packet passed on in order. */
static void test_loss_burst(void **state)
{
	struct kh_tsip_tx tx = {.rtp = 1, .seq = 65530, .ssrc = 7};
	struct kh_tsip_rx rx;
	uint8_t pk[7 * KH_TSIP_PKT], dg[KH_TSIP_DGRAM_MAX];
	unsigned passed = 0;
	(void)state;

	kh_tsip_rx_init(&rx, 0);
	for (unsigned d = 0; d < 40; d++) {
		size_t len, off, n;
		for (unsigned i = 0; i < 7; i++)
			mkpkt(pk + i * KH_TSIP_PKT, d * 7 + i);
		len = kh_tsip_frame(&tx, pk, 7, d * 3003, dg);
		if ((d >= 5 && d <= 9) || d == 20)
			continue;
		assert_int_equal(kh_tsip_deframe(&rx, dg, len, &off, &n), 1);
		assert_int_equal(n, 7);
		assert_memory_equal(dg + off, pk, sizeof pk);
		passed += (unsigned)n;
	}
	assert_int_equal(rx.st.lost, 6);
	assert_int_equal(rx.st.cc_errors, 2);
	assert_int_equal(rx.st.packets, passed);
	assert_int_equal(passed, 34 * 7);
	assert_int_equal(rx.st.dropped, 0);
}

static void test_loopback(void **state)
{
	struct kh_tsip_url u;
	struct kh_tsip_in *in = NULL;
	struct kh_tsip_out *out = NULL;
	uint8_t pk[10 * KH_TSIP_PKT], buf[KH_TSIP_DGRAM_MAX];
	char url[64];
	long got;
	unsigned port = 0;
	(void)state;

	for (unsigned i = 0; i < 10; i++)
		mkpkt(pk + i * KH_TSIP_PKT, i);
	/* a port free now: try a few from a spread-out start */
	for (unsigned t = 0; t < 50 && !in; t++) {
		port = 20000 + (unsigned)(getpid() * 7 + t * 131) % 40000;
		snprintf(url, sizeof url, "udp://127.0.0.1:%u?rtp=1&pkts=4", port);
		assert_int_equal(kh_tsip_url_parse(url, &u), KH_OK);
		if (kh_tsip_in_open(&u, &in) != KH_OK)
			in = NULL;
	}
	assert_non_null(in);
	assert_int_equal(kh_tsip_out_open(&u, &out), KH_OK);
	assert_int_equal(kh_tsip_out_write(out, pk, 10), KH_OK); /* 4 + 4 sent, 2 held */
	assert_int_equal(kh_tsip_out_flush(out), KH_OK);
	assert_int_equal(kh_tsip_in_read(in, buf, sizeof buf, 5000), 4 * 188);
	assert_memory_equal(buf, pk, 4 * 188);
	assert_int_equal(kh_tsip_in_read(in, buf, sizeof buf, 5000), 4 * 188);
	assert_memory_equal(buf, pk + 4 * 188, 4 * 188);
	got = kh_tsip_in_read(in, buf, sizeof buf, 5000);
	assert_int_equal(got, 2 * 188);
	assert_memory_equal(buf, pk + 8 * 188, 2 * 188);
	assert_int_equal(kh_tsip_in_read(in, buf, sizeof buf, 10), 0); /* nothing more: the wait runs out */
	assert_int_equal(kh_tsip_in_stats(in)->rtp, 3);
	assert_int_equal(kh_tsip_in_stats(in)->lost, 0);
	kh_tsip_out_close(out);
	kh_tsip_in_close(in);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_url),          cmocka_unit_test(test_frame_rtp),  cmocka_unit_test(test_pcr),
		cmocka_unit_test(test_bad_datagrams), cmocka_unit_test(test_loss_burst), cmocka_unit_test(test_loopback),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
