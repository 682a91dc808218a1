/*
 * Unit tests for the transport-stream component (include/keyhole/ts.h): CRC-32/MPEG-2 known
 * answers (the catalogue check value, ffmpeg's PAT, and biTStream's independent table-driven
 * CRC), packet header edge cases and adaptation_field_length bounds, packet build round trips,
 * the section assembler across packet boundaries, with several sections per packet and with
 * continuity errors, PAT/PMT/CAT with CA and scrambling descriptors through build, packetise,
 * assemble and parse, and the refusals (bad CRC, bad lengths, truncation) that leave the output
 * untouched. The last test walks a real clip made by ffmpeg (skipped when ffmpeg is absent) and
 * checks the PMT against ffprobe.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ts/bitstream.h"

#include "keyhole/buf.h"
#include "keyhole/ts.h"
#include "testutil.h"

#define CA_SYS 0x4B48 /* "KH": an arbitrary CA_system_id for the tests */

/* The PAT section ffmpeg's mpegts muxer writes by default (tsid 1, program 1 on PID 0x1000). */
static const uint8_t ffmpeg_pat[] = {0x00, 0xB0, 0x0D, 0x00, 0x01, 0xC1, 0x00, 0x00,
				     0x00, 0x01, 0xF0, 0x00, 0x2A, 0xB1, 0x04, 0xB2};

static void test_crc(void **state)
{
	const uint8_t check[] = "123456789";
	uint8_t sec[64];
	size_t n;
	struct kh_ts_pat pat;

	(void)state;
	/* catalogue check value of CRC-32/MPEG-2 */
	assert_int_equal(kh_ts_crc32(check, 9), 0x0376E6E7u);
	assert_int_equal(kh_ts_crc32(check, 0), 0xFFFFFFFFu);
	/* ffmpeg's PAT: CRC field as written, and 0 over the whole section */
	assert_int_equal(kh_ts_crc32(ffmpeg_pat, sizeof ffmpeg_pat - 4), 0x2AB104B2u);
	assert_int_equal(kh_ts_crc32(ffmpeg_pat, sizeof ffmpeg_pat), 0);
	assert_int_equal(kh_ts_pat_parse(ffmpeg_pat, sizeof ffmpeg_pat, &pat), KH_OK);
	assert_int_equal(pat.tsid, 1);
	assert_int_equal(pat.n, 1);
	assert_int_equal(pat.prog[0].program_number, 1);
	assert_int_equal(pat.prog[0].pid, 0x1000);
	/* and it rebuilds byte for byte */
	assert_int_equal(kh_ts_pat_build(&pat, sec, sizeof sec, &n), KH_OK);
	assert_int_equal(n, sizeof ffmpeg_pat);
	assert_memory_equal(sec, ffmpeg_pat, n);
	/* biTStream's table-driven CRC agrees on a section we build */
	pat.n = 3;
	pat.prog[1].program_number = 7;
	pat.prog[1].pid = 0x1ABC;
	pat.prog[2].program_number = 0;
	pat.prog[2].pid = 0x0010;
	pat.version = 17;
	assert_int_equal(kh_ts_pat_build(&pat, sec, sizeof sec, &n), KH_OK);
	assert_true(psi_check_crc(sec));
	sec[9] ^= 0x01;
	assert_false(psi_check_crc(sec));
}

static void fill_hdr(uint8_t p[188], uint8_t b1, uint8_t b2, uint8_t b3)
{
	memset(p, 0xAB, 188);
	p[0] = 0x47;
	p[1] = b1;
	p[2] = b2;
	p[3] = b3;
}

static void test_packet_parse(void **state)
{
	uint8_t p[189];
	struct kh_ts_pkt k, sentinel;

	(void)state;
	memset(&sentinel, 0x5A, sizeof sentinel);

	/* payload only, every header field */
	fill_hdr(p, 0x80 | 0x40 | 0x20 | 0x12, 0x34, 0xC0 | 0x10 | 0x0B);
	assert_int_equal(kh_ts_parse(p, 188, &k), KH_OK);
	assert_int_equal(k.pid, 0x1234);
	assert_int_equal(k.tei, 1);
	assert_int_equal(k.pusi, 1);
	assert_int_equal(k.priority, 1);
	assert_int_equal(k.scrambling, 3);
	assert_int_equal(k.afc, 1);
	assert_int_equal(k.cc, 11);
	assert_null(k.af);
	assert_ptr_equal(k.payload, p + 4);
	assert_int_equal(k.payload_len, 184);

	/* lengths and sync */
	k = sentinel;
	assert_int_equal(kh_ts_parse(p, 187, &k), KH_ERR_TRUNCATED);
	assert_int_equal(kh_ts_parse(p, 189, &k), KH_ERR_TRAILING);
	assert_int_equal(kh_ts_parse(NULL, 188, &k), KH_ERR_TRUNCATED);
	p[0] = 0x48;
	assert_int_equal(kh_ts_parse(p, 188, &k), KH_ERR_FORMAT);
	/* adaptation_field_control 00 is reserved */
	fill_hdr(p, 0x00, 0x11, 0x00);
	assert_int_equal(kh_ts_parse(p, 188, &k), KH_ERR_FORMAT);
	assert_memory_equal(&k, &sentinel, sizeof k); /* nothing written on failure */

	/* adaptation field only: length must be exactly 183 */
	fill_hdr(p, 0x00, 0x11, 0x20);
	p[4] = 183;
	assert_int_equal(kh_ts_parse(p, 188, &k), KH_OK);
	assert_int_equal(k.afc, 2);
	assert_ptr_equal(k.af, p + 5);
	assert_int_equal(k.af_len, 183);
	assert_null(k.payload);
	assert_int_equal(k.payload_len, 0);
	p[4] = 182;
	assert_int_equal(kh_ts_parse(p, 188, &k), KH_ERR_FORMAT);
	p[4] = 184;
	assert_int_equal(kh_ts_parse(p, 188, &k), KH_ERR_FORMAT);
	p[4] = 255;
	assert_int_equal(kh_ts_parse(p, 188, &k), KH_ERR_FORMAT);

	/* adaptation field and payload: at most 182, at least one payload byte */
	fill_hdr(p, 0x00, 0x11, 0x30);
	p[4] = 182;
	assert_int_equal(kh_ts_parse(p, 188, &k), KH_OK);
	assert_int_equal(k.afc, 3);
	assert_int_equal(k.af_len, 182);
	assert_ptr_equal(k.payload, p + 187);
	assert_int_equal(k.payload_len, 1);
	p[4] = 0;
	assert_int_equal(kh_ts_parse(p, 188, &k), KH_OK);
	assert_int_equal(k.af_len, 0);
	assert_ptr_equal(k.payload, p + 5);
	assert_int_equal(k.payload_len, 183);
	p[4] = 183;
	k = sentinel;
	assert_int_equal(kh_ts_parse(p, 188, &k), KH_ERR_FORMAT);
	p[4] = 200;
	assert_int_equal(kh_ts_parse(p, 188, &k), KH_ERR_FORMAT);
	assert_memory_equal(&k, &sentinel, sizeof k);
}

static void test_packet_build(void **state)
{
	uint8_t p[188], q[188], pl[184], af[3] = {0x10, 1, 2};
	struct kh_ts_pkt h, k;

	(void)state;
	for (size_t i = 0; i < sizeof pl; i++)
		pl[i] = (uint8_t)i;
	memset(&h, 0, sizeof h);
	h.pid = 0x0100;
	h.cc = 5;
	h.pusi = 1;

	/* a full payload: no adaptation field */
	assert_int_equal(kh_ts_build(p, &h, NULL, 0, pl, 184), KH_OK);
	assert_int_equal(p[3], 0x15);
	assert_int_equal(kh_ts_parse(p, 188, &k), KH_OK);
	assert_int_equal(k.afc, 1);
	assert_int_equal(k.pid, 0x100);
	assert_int_equal(k.pusi, 1);
	assert_memory_equal(k.payload, pl, 184);

	/* a short payload: stuffed with an adaptation field, payload at the end */
	assert_int_equal(kh_ts_build(p, &h, NULL, 0, pl, 10), KH_OK);
	assert_int_equal(kh_ts_parse(p, 188, &k), KH_OK);
	assert_int_equal(k.afc, 3);
	assert_int_equal(k.af_len, 173);
	assert_int_equal(k.af[0], 0x00);
	assert_int_equal(k.af[1], 0xFF);
	assert_int_equal(k.payload_len, 10);
	assert_memory_equal(k.payload, pl, 10);
	/* it rebuilds byte-identically from what was parsed */
	assert_int_equal(kh_ts_build(q, &k, k.af, k.af_len, k.payload, k.payload_len), KH_OK);
	assert_memory_equal(p, q, 188);

	/* 183 bytes: an adaptation field of length 0 */
	assert_int_equal(kh_ts_build(p, &h, NULL, 0, pl, 183), KH_OK);
	assert_int_equal(p[4], 0);
	assert_int_equal(kh_ts_parse(p, 188, &k), KH_OK);
	assert_int_equal(k.payload_len, 183);

	/* given adaptation field bytes, no payload */
	assert_int_equal(kh_ts_build(p, &h, af, sizeof af, NULL, 0), KH_OK);
	assert_int_equal(kh_ts_parse(p, 188, &k), KH_OK);
	assert_int_equal(k.afc, 2);
	assert_memory_equal(k.af, af, sizeof af);
	assert_int_equal(k.af[3], 0xFF);

	/* refusals, nothing written */
	memset(q, 0x77, sizeof q);
	memcpy(p, q, sizeof p);
	assert_int_equal(kh_ts_build(p, &h, af, 1, pl, 184), KH_ERR_TOO_LARGE);
	assert_int_equal(kh_ts_build(p, &h, af, 3, pl, 181), KH_ERR_TOO_LARGE);
	assert_int_equal(kh_ts_build(p, &h, NULL, 0, pl, 185), KH_ERR_TOO_LARGE);
	h.pid = 0x2000;
	assert_int_equal(kh_ts_build(p, &h, NULL, 0, pl, 10), KH_ERR_INVAL);
	h.pid = 0x100;
	h.cc = 16;
	assert_int_equal(kh_ts_build(p, &h, NULL, 0, pl, 10), KH_ERR_INVAL);
	assert_memory_equal(p, q, sizeof p);
	h.cc = 0;
	assert_int_equal(kh_ts_build(p, &h, af, 3, pl, 180), KH_OK); /* exactly full */

	/* scrambling control */
	assert_int_equal(kh_ts_set_scrambling(p, KH_TS_SC_ODD), KH_OK);
	assert_int_equal(kh_ts_parse(p, 188, &k), KH_OK);
	assert_int_equal(k.scrambling, 3);
	assert_int_equal(kh_ts_set_scrambling(p, KH_TS_SC_EVEN), KH_OK);
	assert_int_equal(kh_ts_parse(p, 188, &k), KH_OK);
	assert_int_equal(k.scrambling, 2);
	assert_int_equal(k.cc, 0);
	assert_int_equal(k.pid, 0x100);
	assert_int_equal(kh_ts_set_scrambling(p, 4), KH_ERR_INVAL);
}

/* A private section of total length n (syntax 0, no CRC), bytes derived from seed. */
static size_t private_section(uint8_t *s, size_t n, uint8_t tid, uint8_t seed)
{
	s[0] = tid;
	s[1] = (uint8_t)(0x70 | (n - 3) >> 8);
	s[2] = (uint8_t)(n - 3);
	for (size_t i = 3; i < n; i++)
		s[i] = (uint8_t)(seed + i);
	return n;
}

static void test_assembler_span(void **state)
{
	static uint8_t pk[40 * 188], sec[4096], out[4096];
	static struct kh_ts_asm a;
	size_t n, len, plen;
	uint8_t cc = 14;

	(void)state;
	assert_int_equal(kh_ts_asm_init(&a, 0x0123, KH_TS_PRIVATE_MAX), KH_OK);
	n = private_section(sec, 1000, 0x80, 1);
	assert_int_equal(kh_ts_packets_for(n), 6);
	assert_int_equal(kh_ts_packetise(0x123, &cc, sec, n, pk, sizeof pk, &plen), KH_OK);
	assert_int_equal(plen, 6 * 188);
	assert_int_equal(cc, 4); /* 14, 15, 0, 1, 2, 3 */
	for (size_t i = 0; i < 6; i++) {
		assert_int_equal(kh_ts_asm_push(&a, pk + i * 188, 188), KH_OK);
		int k = kh_ts_asm_pop(&a, out, sizeof out, &len);
		assert_int_equal(k, i == 5 ? 1 : 0);
	}
	assert_int_equal(len, n);
	assert_memory_equal(out, sec, n);
	assert_int_equal(kh_ts_asm_pop(&a, out, sizeof out, &len), 0);

	/* the largest private section, and one above the cap */
	n = private_section(sec, 4096, 0x81, 2);
	assert_int_equal(kh_ts_packetise(0x123, &cc, sec, n, pk, sizeof pk, &plen), KH_OK);
	for (size_t i = 0; i < plen / 188; i++) {
		assert_int_equal(kh_ts_asm_push(&a, pk + i * 188, 188), KH_OK);
		if (i + 1 < plen / 188)
			assert_int_equal(kh_ts_asm_pop(&a, out, sizeof out, &len), 0);
	}
	/* too small a buffer: refused, and the section stays */
	assert_int_equal(kh_ts_asm_pop(&a, out, 100, &len), KH_ERR_BUF);
	assert_int_equal(kh_ts_asm_pop(&a, out, sizeof out, &len), 1);
	assert_int_equal(len, 4096);
	assert_memory_equal(out, sec, 4096);
	/* packetiser refusals */
	assert_int_equal(kh_ts_packetise(0x123, &cc, sec, 4097, pk, sizeof pk, &plen), KH_ERR_TOO_LARGE);
	assert_int_equal(kh_ts_packetise(0x123, &cc, sec, 1000, pk, 5 * 188, &plen), KH_ERR_BUF);
	assert_int_equal(kh_ts_packetise(0x2000, &cc, sec, 1000, pk, sizeof pk, &plen), KH_ERR_INVAL);

	/* a PSI table_id with a private-size length is too large, on a private-cap PID too */
	sec[0] = 0x02;
	sec[1] = 0xB4; /* section_length 0x400: 1027 in all */
	sec[2] = 0x00;
	assert_int_equal(kh_ts_packetise(0x123, &cc, sec, 1027, pk, sizeof pk, &plen), KH_OK);
	assert_int_equal(kh_ts_asm_push(&a, pk, 188), KH_OK);
	assert_int_equal(kh_ts_asm_pop(&a, out, sizeof out, &len), KH_ERR_TOO_LARGE);
	assert_int_equal(kh_ts_asm_pop(&a, out, sizeof out, &len), 0);
	assert_int_equal(kh_ts_asm_push(&a, pk + 188, 188), KH_OK);
	assert_int_equal(kh_ts_asm_pop(&a, out, sizeof out, &len), 0);

	/* wrong PID */
	assert_int_equal(kh_ts_asm_push(&a, pk, 187), KH_ERR_TRUNCATED);
	pk[2] = 0x24;
	assert_int_equal(kh_ts_asm_push(&a, pk, 188), KH_ERR_INVAL);
}

static void test_assembler_packing(void **state)
{
	static struct kh_ts_asm a;
	uint8_t pkt[188], s1[40], s2[60], s3[300], out[1024];
	size_t len, n1, n2, n3;
	uint8_t *q;

	(void)state;
	n1 = private_section(s1, sizeof s1, 0x42, 3);
	n2 = private_section(s2, sizeof s2, 0x43, 4);
	n3 = private_section(s3, sizeof s3, 0x44, 5);
	assert_int_equal(kh_ts_asm_init(&a, 0x20, KH_TS_PSI_MAX), KH_OK);

	/* packet 1: pointer 0, s1, s2, start of s3 */
	pkt[0] = 0x47, pkt[1] = 0x40, pkt[2] = 0x20, pkt[3] = 0x10;
	q = pkt + 4;
	*q++ = 0;
	memcpy(q, s1, n1), q += n1;
	memcpy(q, s2, n2), q += n2;
	memcpy(q, s3, (size_t)(pkt + 188 - q));
	size_t s3done = (size_t)(pkt + 188 - q);
	assert_int_equal(kh_ts_asm_push(&a, pkt, 188), KH_OK);
	assert_int_equal(kh_ts_asm_pop(&a, out, sizeof out, &len), 1);
	assert_int_equal(len, n1);
	assert_memory_equal(out, s1, n1);
	assert_int_equal(kh_ts_asm_pop(&a, out, sizeof out, &len), 1);
	assert_int_equal(len, n2);
	assert_memory_equal(out, s2, n2);
	assert_int_equal(kh_ts_asm_pop(&a, out, sizeof out, &len), 0);

	/* packet 2: continuation of s3, no unit start */
	pkt[1] = 0x00, pkt[3] = 0x11;
	memcpy(pkt + 4, s3 + s3done, 184);
	s3done += 184;
	assert_int_equal(kh_ts_asm_push(&a, pkt, 188), KH_OK);
	assert_int_equal(kh_ts_asm_pop(&a, out, sizeof out, &len), 0);

	/* packet 3: unit start; pointer_field covers the end of s3, then s1 again, then stuffing */
	pkt[1] = 0x40, pkt[3] = 0x12;
	q = pkt + 4;
	*q++ = (uint8_t)(n3 - s3done);
	memcpy(q, s3 + s3done, n3 - s3done), q += n3 - s3done;
	memcpy(q, s1, n1), q += n1;
	memset(q, 0xFF, (size_t)(pkt + 188 - q));
	assert_int_equal(kh_ts_asm_push(&a, pkt, 188), KH_OK);
	assert_int_equal(kh_ts_asm_pop(&a, out, sizeof out, &len), 1);
	assert_int_equal(len, n3);
	assert_memory_equal(out, s3, n3);
	assert_int_equal(kh_ts_asm_pop(&a, out, sizeof out, &len), 1);
	assert_int_equal(len, n1);
	assert_memory_equal(out, s1, n1);
	assert_int_equal(kh_ts_asm_pop(&a, out, sizeof out, &len), 0);
	assert_int_equal(a.cc_errors, 0);
	assert_int_equal(a.dropped, 0);

	/* one duplicate of packet 3 is dropped silently; a second one is a continuity error */
	assert_int_equal(kh_ts_asm_push(&a, pkt, 188), KH_OK);
	assert_int_equal(kh_ts_asm_pop(&a, out, sizeof out, &len), 0);
	assert_int_equal(a.cc_errors, 0);
	assert_int_equal(kh_ts_asm_push(&a, pkt, 188), KH_OK);
	assert_int_equal(a.cc_errors, 1);
	/* it was used as a fresh unit start: s3's tail is skipped, s1 comes out again */
	assert_int_equal(kh_ts_asm_pop(&a, out, sizeof out, &len), 1);
	assert_int_equal(len, n1);
	assert_int_equal(kh_ts_asm_pop(&a, out, sizeof out, &len), 0);
	a.cc_errors = 0;

	/* a pointer_field beyond the payload: refused, reset */
	pkt[3] = 0x13;
	pkt[4] = 183;
	assert_int_equal(kh_ts_asm_push(&a, pkt, 188), KH_ERR_FORMAT);
	assert_int_equal(kh_ts_asm_pop(&a, out, sizeof out, &len), 0);

	/* a section cut short by the next unit start's pointer_field */
	kh_ts_asm_reset(&a);
	pkt[1] = 0x40, pkt[3] = 0x10;
	pkt[4] = 0;
	memcpy(pkt + 5, s3, 183);
	assert_int_equal(kh_ts_asm_push(&a, pkt, 188), KH_OK);
	assert_int_equal(kh_ts_asm_pop(&a, out, sizeof out, &len), 0);
	pkt[3] = 0x11;
	pkt[4] = 10; /* s3 needs 117 more bytes, but a section starts after 10 */
	memset(pkt + 5, 0xEE, 10);
	memcpy(pkt + 15, s2, n2);
	memset(pkt + 15 + n2, 0xFF, 188 - 15 - n2);
	assert_int_equal(kh_ts_asm_push(&a, pkt, 188), KH_OK);
	assert_int_equal(kh_ts_asm_pop(&a, out, sizeof out, &len), KH_ERR_TRUNCATED);
	assert_int_equal(kh_ts_asm_pop(&a, out, sizeof out, &len), 1);
	assert_int_equal(len, n2);
	assert_memory_equal(out, s2, n2);
	assert_int_equal(a.dropped, 1);

	/* scrambled and TEI packets are refused */
	pkt[3] = 0x92;
	assert_int_equal(kh_ts_asm_push(&a, pkt, 188), KH_ERR_FORMAT);
	pkt[3] = 0x12;
	pkt[1] = 0xC0;
	assert_int_equal(kh_ts_asm_push(&a, pkt, 188), KH_ERR_FORMAT);
}

static void test_assembler_cc(void **state)
{
	static uint8_t pk[8 * 188], sec[1024], out[1024];
	static struct kh_ts_asm a;
	size_t n, len, plen;
	uint8_t cc = 0;

	(void)state;
	assert_int_equal(kh_ts_asm_init(&a, 0x30, KH_TS_PSI_MAX), KH_OK);
	n = private_section(sec, 600, 0x42, 9); /* 4 packets */
	assert_int_equal(kh_ts_packetise(0x30, &cc, sec, n, pk, sizeof pk, &plen), KH_OK);
	assert_int_equal(plen, 4 * 188);

	/* packet 2 lost: the partial section is dropped, nothing comes out */
	assert_int_equal(kh_ts_asm_push(&a, pk, 188), KH_OK);
	assert_int_equal(kh_ts_asm_pop(&a, out, sizeof out, &len), 0);
	assert_int_equal(kh_ts_asm_push(&a, pk + 2 * 188, 188), KH_OK);
	assert_int_equal(kh_ts_asm_pop(&a, out, sizeof out, &len), 0);
	assert_int_equal(a.cc_errors, 1);
	assert_int_equal(a.dropped, 1);
	assert_int_equal(kh_ts_asm_push(&a, pk + 3 * 188, 188), KH_OK);
	assert_int_equal(kh_ts_asm_pop(&a, out, sizeof out, &len), 0);

	/* the next repetition (CC continues from 4) assembles */
	assert_int_equal(kh_ts_packetise(0x30, &cc, sec, n, pk, sizeof pk, &plen), KH_OK);
	for (size_t i = 0; i < 4; i++) {
		assert_int_equal(kh_ts_asm_push(&a, pk + i * 188, 188), KH_OK);
		assert_int_equal(kh_ts_asm_pop(&a, out, sizeof out, &len), i == 3 ? 1 : 0);
	}
	assert_memory_equal(out, sec, n);
	assert_int_equal(a.cc_errors, 1);

	/* a CC jump onto a unit start: the new section is still taken */
	cc = 9;
	assert_int_equal(kh_ts_packetise(0x30, &cc, sec, n, pk, sizeof pk, &plen), KH_OK);
	for (size_t i = 0; i < 4; i++) {
		assert_int_equal(kh_ts_asm_push(&a, pk + i * 188, 188), KH_OK);
		assert_int_equal(kh_ts_asm_pop(&a, out, sizeof out, &len), i == 3 ? 1 : 0);
	}
	assert_int_equal(a.cc_errors, 2);
	assert_memory_equal(out, sec, n);

	/* a discontinuity_indicator allows the jump without counting an error */
	{
		struct kh_ts_pkt h;
		uint8_t p[188], afb[1] = {0x80}, o2[1024];

		memset(&h, 0, sizeof h);
		h.pid = 0x30;
		h.pusi = 1;
		h.cc = 2;
		/* PAT section after pointer_field 0, in a packet with a discontinuity flag */
		{
			uint8_t pl[1 + sizeof ffmpeg_pat];
			pl[0] = 0;
			memcpy(pl + 1, ffmpeg_pat, sizeof ffmpeg_pat);
			assert_int_equal(kh_ts_build(p, &h, afb, 1, pl, sizeof pl), KH_OK);
		}
		assert_int_equal(kh_ts_asm_push(&a, p, 188), KH_OK);
		assert_int_equal(kh_ts_asm_pop(&a, o2, sizeof o2, &len), 1);
		assert_int_equal(len, sizeof ffmpeg_pat);
		assert_memory_equal(o2, ffmpeg_pat, len);
		assert_int_equal(a.cc_errors, 2);
	}
}

/* Push a packetised section through a fresh assembler and return it. */
static size_t through_packets(const uint8_t *sec, size_t n, uint16_t pid, uint8_t *out, size_t cap)
{
	static uint8_t pk[30 * 188];
	static struct kh_ts_asm a;
	size_t plen, len = 0;
	uint8_t cc = 7;
	int got = 0;

	assert_int_equal(kh_ts_asm_init(&a, pid, KH_TS_PSI_MAX), KH_OK);
	assert_int_equal(kh_ts_packetise(pid, &cc, sec, n, pk, sizeof pk, &plen), KH_OK);
	for (size_t i = 0; i < plen / 188; i++) {
		int k;

		assert_int_equal(kh_ts_asm_push(&a, pk + i * 188, 188), KH_OK);
		while ((k = kh_ts_asm_pop(&a, out, cap, &len)) == 1)
			got++;
		assert_int_equal(k, 0);
	}
	assert_int_equal(got, 1);
	return len;
}

static void test_tables_round_trip(void **state)
{
	static struct kh_ts_pat pat, pat2;
	static struct kh_ts_pmt pmt, pmt2;
	struct kh_ts_cat cat, cat2;
	struct kh_ts_ca_desc ca;
	uint8_t sec[1024], got[1024], pdesc[64], edesc[64], cdesc[300], priv[3] = {1, 2, 3};
	static uint8_t big[256];
	uint8_t mode = 0;
	struct kh_wr w;
	size_t n, m;

	(void)state;
	for (size_t i = 0; i < sizeof big; i++)
		big[i] = (uint8_t)(i * 7 + 1);
	/* PAT */
	memset(&pat, 0, sizeof pat);
	pat.tsid = 0xBEEF;
	pat.version = 9;
	pat.current = 1;
	pat.n = 2;
	pat.prog[0] = (struct kh_ts_pat_prog){0, 0x10};
	pat.prog[1] = (struct kh_ts_pat_prog){0x0101, 0x1FFE};
	assert_int_equal(kh_ts_pat_build(&pat, sec, sizeof sec, &n), KH_OK);
	assert_int_equal(n, 8 + 8 + 4);
	assert_int_equal(kh_ts_section_check(sec, n), KH_OK);
	m = through_packets(sec, n, KH_TS_PID_PAT, got, sizeof got);
	assert_int_equal(m, n);
	assert_int_equal(kh_ts_pat_parse(got, m, &pat2), KH_OK);
	assert_int_equal(pat2.tsid, 0xBEEF);
	assert_int_equal(pat2.version, 9);
	assert_int_equal(pat2.current, 1);
	assert_int_equal(pat2.n, 2);
	assert_int_equal(pat2.prog[1].program_number, 0x0101);
	assert_int_equal(pat2.prog[1].pid, 0x1FFE);
	assert_int_equal(pat2.prog[0].pid, 0x10);

	/* PMT: program-level CA_descriptor (ECM PID), ES-level CA and scrambling descriptors */
	kh_wr_init(&w, pdesc, sizeof pdesc);
	assert_int_equal(kh_ts_ca_desc_put(&w, 0x0100, 0x0200, NULL, 0), KH_OK); /* another CA */
	assert_int_equal(kh_ts_ca_desc_put(&w, CA_SYS, 0x1234, priv, sizeof priv), KH_OK);
	assert_int_equal(kh_ts_scrambling_desc_put(&w, KH_TS_SCRAMBLING_CISSA1), KH_OK);
	size_t plen = w.len;
	kh_wr_init(&w, edesc, sizeof edesc);
	assert_int_equal(kh_ts_ca_desc_put(&w, CA_SYS, 0x0777, NULL, 0), KH_OK);
	size_t elen = w.len;
	memset(&pmt, 0, sizeof pmt);
	pmt.program_number = 0x0101;
	pmt.version = 31;
	pmt.current = 1;
	pmt.pcr_pid = 0x0100;
	pmt.desc = pdesc;
	pmt.desc_len = plen;
	pmt.n = 2;
	pmt.es[0] = (struct kh_ts_pmt_es){0x02, 0x0100, NULL, 0};
	pmt.es[1] = (struct kh_ts_pmt_es){0x03, 0x0101, edesc, elen};
	assert_int_equal(kh_ts_pmt_build(&pmt, sec, sizeof sec, &n), KH_OK);
	assert_true(psi_check_crc(sec));
	m = through_packets(sec, n, 0x1000, got, sizeof got);
	assert_int_equal(m, n);
	assert_int_equal(kh_ts_pmt_parse(got, m, &pmt2), KH_OK);
	assert_int_equal(pmt2.program_number, 0x0101);
	assert_int_equal(pmt2.version, 31);
	assert_int_equal(pmt2.pcr_pid, 0x0100);
	assert_int_equal(pmt2.n, 2);
	assert_int_equal(pmt2.es[0].stream_type, 0x02);
	assert_int_equal(pmt2.es[0].desc_len, 0);
	assert_int_equal(pmt2.es[1].pid, 0x0101);
	assert_int_equal(pmt2.desc_len, plen);
	assert_memory_equal(pmt2.desc, pdesc, plen);
	assert_int_equal(kh_ts_ca_desc_find(pmt2.desc, pmt2.desc_len, CA_SYS, &ca), KH_OK);
	assert_int_equal(ca.ca_pid, 0x1234);
	assert_int_equal(ca.priv_len, 3);
	assert_memory_equal(ca.priv, priv, 3);
	assert_int_equal(kh_ts_ca_desc_find(pmt2.desc, pmt2.desc_len, 0x0100, &ca), KH_OK);
	assert_int_equal(ca.ca_pid, 0x0200);
	assert_int_equal(kh_ts_ca_desc_find(pmt2.desc, pmt2.desc_len, 0x0999, &ca), KH_ERR_NOTFOUND);
	assert_int_equal(kh_ts_scrambling_desc_find(pmt2.desc, pmt2.desc_len, &mode), KH_OK);
	assert_int_equal(mode, KH_TS_SCRAMBLING_CISSA1);
	assert_int_equal(kh_ts_ca_desc_find(pmt2.es[1].desc, pmt2.es[1].desc_len, CA_SYS, &ca), KH_OK);
	assert_int_equal(ca.ca_pid, 0x0777);
	assert_null(ca.priv);
	assert_int_equal(kh_ts_scrambling_desc_find(pmt2.es[1].desc, pmt2.es[1].desc_len, &mode),
			 KH_ERR_NOTFOUND);
	/* rebuilt from the parse: the same bytes */
	assert_int_equal(kh_ts_pmt_build(&pmt2, got, sizeof got, &m), KH_OK);
	assert_int_equal(m, n);
	assert_memory_equal(got, sec, n);

	/* CAT with the EMM PID, long enough to span two packets */
	kh_wr_init(&w, cdesc, sizeof cdesc);
	assert_int_equal(kh_ts_ca_desc_put(&w, CA_SYS, 0x0050, big, 200), KH_OK);
	assert_int_equal(kh_ts_ca_desc_put(&w, 0x0B00, 0x0051, NULL, 0), KH_OK);
	memset(&cat, 0, sizeof cat);
	cat.version = 3;
	cat.current = 1;
	cat.desc = cdesc;
	cat.desc_len = w.len;
	assert_int_equal(kh_ts_cat_build(&cat, sec, sizeof sec, &n), KH_OK);
	assert_int_equal(kh_ts_packets_for(n), 2);
	m = through_packets(sec, n, KH_TS_PID_CAT, got, sizeof got);
	assert_int_equal(kh_ts_cat_parse(got, m, &cat2), KH_OK);
	assert_int_equal(cat2.version, 3);
	assert_int_equal(kh_ts_ca_desc_find(cat2.desc, cat2.desc_len, CA_SYS, &ca), KH_OK);
	assert_int_equal(ca.ca_pid, 0x0050);
	assert_int_equal(ca.priv_len, 200);
	assert_memory_equal(ca.priv, big, 200);
	assert_int_equal(kh_ts_ca_desc_find(cat2.desc, cat2.desc_len, 0x0B00, &ca), KH_OK);
	assert_int_equal(ca.ca_pid, 0x0051);

	/* descriptor builders' limits */
	kh_wr_init(&w, cdesc, sizeof cdesc);
	assert_int_equal(kh_ts_ca_desc_put(&w, CA_SYS, 0x2000, NULL, 0), KH_ERR_INVAL);
	assert_int_equal(kh_ts_ca_desc_put(&w, CA_SYS, 0x50, big, 252), KH_ERR_TOO_LARGE);
	assert_int_equal(kh_ts_ca_desc_put(&w, CA_SYS, 0x50, big, 251), KH_OK);
	assert_int_equal(w.len, 257);
	kh_wr_init(&w, cdesc, 5);
	assert_int_equal(kh_ts_ca_desc_put(&w, CA_SYS, 0x50, NULL, 0), KH_ERR_BUF);
}

static void test_tables_refused(void **state)
{
	static struct kh_ts_pat pat, sentinel;
	static struct kh_ts_pmt pmt, pmt_out, pmt_sentinel;
	struct kh_ts_cat cat, cat_sentinel;
	uint8_t sec[1100], bad[1100], desc[8] = {0x09, 0x04, 0x4B, 0x48, 0xE0, 0x10, 0x65, 0x00};
	struct kh_ts_ca_desc ca;
	uint8_t mode;
	size_t n;

	(void)state;
	memset(&sentinel, 0x5A, sizeof sentinel);
	memset(&pmt_sentinel, 0x5A, sizeof pmt_sentinel);
	memset(&cat_sentinel, 0x5A, sizeof cat_sentinel);
	pmt_out = pmt_sentinel;
	cat = cat_sentinel;
	memcpy(sec, ffmpeg_pat, sizeof ffmpeg_pat);
	n = sizeof ffmpeg_pat;

	/* bad CRC: CRC; truncated: TRUNCATED; trailing byte: TRAILING; nothing written */
	pat = sentinel;
	memcpy(bad, sec, n);
	bad[n - 1] ^= 1;
	assert_int_equal(kh_ts_section_check(bad, n), KH_ERR_CRC);
	assert_int_equal(kh_ts_pat_parse(bad, n, &pat), KH_ERR_CRC);
	memcpy(bad, sec, n);
	bad[10] ^= 0x10; /* a program PID bit */
	assert_int_equal(kh_ts_pat_parse(bad, n, &pat), KH_ERR_CRC);
	assert_int_equal(kh_ts_pat_parse(sec, n - 1, &pat), KH_ERR_TRUNCATED);
	assert_int_equal(kh_ts_pat_parse(sec, 2, &pat), KH_ERR_TRUNCATED);
	assert_int_equal(kh_ts_pat_parse(NULL, 0, &pat), KH_ERR_TRUNCATED);
	memcpy(bad, sec, n);
	bad[n] = 0;
	assert_int_equal(kh_ts_pat_parse(bad, n + 1, &pat), KH_ERR_TRAILING);
	/* section_length above the PSI limit */
	memcpy(bad, sec, n);
	bad[1] = 0xB3, bad[2] = 0xFE; /* 3 + 0x3FE = 1025 */
	assert_int_equal(kh_ts_pat_parse(bad, 1025, &pat), KH_ERR_TOO_LARGE);
	/* a section of another table */
	assert_int_equal(kh_ts_pmt_parse(sec, n, &pmt_out), KH_ERR_FORMAT);
	assert_int_equal(kh_ts_cat_parse(sec, n, &cat), KH_ERR_FORMAT);
	assert_int_equal(kh_ts_cat_parse(sec, n - 1, &cat), KH_ERR_TRUNCATED);
	assert_memory_equal(&pat, &sentinel, sizeof pat);
	assert_memory_equal(&cat, &cat_sentinel, sizeof cat);

	/* program loop not a multiple of 4 (CRC recomputed so only the structure is wrong) */
	memcpy(bad, sec, 12);
	bad[2] = 0x0E;
	bad[12] = 0x00;
	kh_put_be32(bad + 13, kh_ts_crc32(bad, 13));
	assert_int_equal(kh_ts_section_check(bad, 17), KH_OK);
	assert_int_equal(kh_ts_pat_parse(bad, 17, &pat), KH_ERR_FORMAT);
	assert_memory_equal(&pat, &sentinel, sizeof pat);

	/* PMT whose program_info_length overruns, and whose descriptor loop is broken */
	memset(&pmt, 0, sizeof pmt);
	pmt.pcr_pid = 0x100;
	pmt.desc = desc;
	pmt.desc_len = 8;
	assert_int_equal(kh_ts_pmt_build(&pmt, sec, sizeof sec, &n), KH_OK);
	memcpy(bad, sec, n);
	bad[11] = 0x30; /* program_info_length 0x30 */
	kh_put_be32(bad + n - 4, kh_ts_crc32(bad, n - 4));
	assert_int_equal(kh_ts_pmt_parse(bad, n, &pmt_out), KH_ERR_FORMAT);
	memcpy(bad, sec, n);
	bad[13] = 0x05; /* CA_descriptor length 5 overruns the loop */
	kh_put_be32(bad + n - 4, kh_ts_crc32(bad, n - 4));
	assert_int_equal(kh_ts_pmt_parse(bad, n, &pmt_out), KH_ERR_FORMAT);
	/* an ES entry cut short */
	memcpy(bad, sec, n - 4);
	bad[n - 4] = 0x02, bad[n - 3] = 0xE1, bad[n - 2] = 0x00;
	bad[2] = (uint8_t)(bad[2] + 3);
	kh_put_be32(bad + n - 1, kh_ts_crc32(bad, n - 1));
	assert_int_equal(kh_ts_section_check(bad, n + 3), KH_OK);
	assert_int_equal(kh_ts_pmt_parse(bad, n + 3, &pmt_out), KH_ERR_FORMAT);
	assert_int_equal(kh_ts_pmt_parse(bad, n + 2, &pmt_out), KH_ERR_TRUNCATED);
	bad[n + 2] ^= 0x40; /* CRC */
	assert_int_equal(kh_ts_pmt_parse(bad, n + 3, &pmt_out), KH_ERR_CRC);
	assert_memory_equal(&pmt_out, &pmt_sentinel, sizeof pmt_out);
	assert_int_equal(kh_ts_pmt_parse(sec, n, &pmt_out), KH_OK); /* the original is fine */
	/* builder refuses a broken loop and bad fields */
	pmt.desc_len = 7;
	assert_int_equal(kh_ts_pmt_build(&pmt, sec, sizeof sec, &n), KH_ERR_FORMAT);
	pmt.desc_len = 8;
	pmt.version = 32;
	assert_int_equal(kh_ts_pmt_build(&pmt, sec, sizeof sec, &n), KH_ERR_INVAL);
	pmt.version = 0;
	assert_int_equal(kh_ts_pmt_build(&pmt, sec, 10, &n), KH_ERR_BUF);

	/* descriptor parsers */
	assert_int_equal(kh_ts_ca_desc_find(desc, 7, CA_SYS, &ca), KH_OK); /* CA before the cut */
	assert_int_equal(kh_ts_scrambling_desc_find(desc, 7, &mode), KH_ERR_TRUNCATED);
	assert_int_equal(kh_ts_scrambling_desc_find(desc, 8, &mode), KH_ERR_FORMAT); /* empty body */
	assert_int_equal(kh_ts_ca_desc_parse(desc + 2, 3, &ca), KH_ERR_TRUNCATED);
	assert_int_equal(kh_ts_desc_loop_check(desc, 8), KH_OK);
	assert_int_equal(kh_ts_desc_loop_check(desc, 1), KH_ERR_TRUNCATED);

	/* too many ES for one section: 16 + 201 * 5 + 3 = 1024 fits, one byte more does not */
	static const uint8_t d3[4] = {0x05, 0x01, 0xAA, 0xBB}, d4[4] = {0x05, 0x02, 0xAA, 0xBB};
	memset(&pmt, 0, sizeof pmt);
	pmt.n = KH_TS_PMT_MAX_ES + 1;
	assert_int_equal(kh_ts_pmt_build(&pmt, sec, sizeof sec, &n), KH_ERR_INVAL);
	pmt.n = KH_TS_PMT_MAX_ES;
	pmt.desc = d4;
	pmt.desc_len = 4;
	assert_int_equal(kh_ts_pmt_build(&pmt, sec, sizeof sec, &n), KH_ERR_TOO_LARGE);
	pmt.desc = d3;
	pmt.desc_len = 3;
	assert_int_equal(kh_ts_pmt_build(&pmt, sec, sizeof sec, &n), KH_OK);
	assert_int_equal(n, 1024);
	assert_int_equal(kh_ts_pmt_parse(sec, n, &pmt), KH_OK);
	assert_int_equal(pmt.n, KH_TS_PMT_MAX_ES);
}

/* ------------------------------------------------------------------------------------------ */
/* Real media                                                                                   */

static int have_tool(const char *name)
{
	char cmd[128];

	snprintf(cmd, sizeof cmd, "command -v %s >/dev/null 2>&1", name);
	return system(cmd) == 0;
}

static void test_ffmpeg_clip(void **state)
{
	static struct kh_ts_pat pat;
	static struct kh_ts_pmt pmt;
	static struct kh_ts_asm pat_asm, pmt_asm;
	static uint8_t sec[1024], pmt_sec[1024];
	static unsigned long per_pid[8192];
	static unsigned char seen[8192];
	char cmd[1024], path[600], line[128];
	char *dir;
	uint8_t pkt[188];
	size_t len, npk = 0, pmt_len = 0;
	int have_pat = 0, have_pmt = 0, k, matched = 0, lines = 0;
	uint16_t pmt_pid = 0;
	FILE *f;

	(void)state;
	if (!have_tool("ffmpeg") || !have_tool("ffprobe")) {
		skip();
		return;
	}
	dir = kh_test_tmpdir();
	snprintf(path, sizeof path, "%s/clip.ts", dir);
	snprintf(cmd, sizeof cmd,
		 "ffmpeg -nostdin -v error -f lavfi -i testsrc=duration=2:size=320x240:rate=25 "
		 "-f lavfi -i sine=duration=2 -c:v mpeg2video -c:a mp2 -f mpegts '%s'",
		 path);
	assert_int_equal(system(cmd), 0);

	f = fopen(path, "rb");
	assert_non_null(f);
	assert_int_equal(kh_ts_asm_init(&pat_asm, KH_TS_PID_PAT, KH_TS_PSI_MAX), KH_OK);
	memset(per_pid, 0, sizeof per_pid);
	memset(seen, 0, sizeof seen);
	for (;;) {
		struct kh_ts_pkt p;
		size_t got = fread(pkt, 1, sizeof pkt, f);

		if (got == 0)
			break;
		assert_int_equal(got, 188); /* 188-byte aligned */
		assert_int_equal(kh_ts_parse(pkt, got, &p), KH_OK);
		assert_int_equal(p.tei, 0);
		assert_int_equal(p.scrambling, 0);
		/* every packet rebuilds byte-identically */
		{
			uint8_t q[188];
			assert_int_equal(kh_ts_build(q, &p, p.af, p.af_len, p.payload, p.payload_len), KH_OK);
			assert_memory_equal(q, pkt, 188);
		}
		per_pid[p.pid]++;
		npk++;
		if (p.pid == KH_TS_PID_PAT) {
			assert_int_equal(kh_ts_asm_push(&pat_asm, pkt, 188), KH_OK);
			while ((k = kh_ts_asm_pop(&pat_asm, sec, sizeof sec, &len)) == 1) {
				assert_int_equal(kh_ts_pat_parse(sec, len, &pat), KH_OK);
				assert_true(pat.n >= 1);
				if (!have_pat) {
					pmt_pid = pat.prog[0].pid;
					assert_int_equal(kh_ts_asm_init(&pmt_asm, pmt_pid, KH_TS_PSI_MAX), KH_OK);
				}
				have_pat++;
			}
			assert_int_equal(k, 0);
		} else if (have_pat && p.pid == pmt_pid) {
			assert_int_equal(kh_ts_asm_push(&pmt_asm, pkt, 188), KH_OK);
			while ((k = kh_ts_asm_pop(&pmt_asm, pmt_sec, sizeof pmt_sec, &len)) == 1) {
				assert_int_equal(kh_ts_pmt_parse(pmt_sec, len, &pmt), KH_OK);
				pmt_len = len;
				have_pmt++;
			}
			assert_int_equal(k, 0);
		}
	}
	fclose(f);
	assert_true(npk > 100);
	assert_true(have_pat >= 1);
	assert_true(have_pmt >= 1);
	assert_int_equal(pat_asm.cc_errors, 0);
	assert_int_equal(pmt_asm.cc_errors, 0);
	assert_int_equal(pmt.n, 2);
	/* the PMT rebuilds byte-identically */
	assert_int_equal(kh_ts_pmt_build(&pmt, sec, sizeof sec, &len), KH_OK);
	assert_int_equal(len, pmt_len);
	assert_memory_equal(sec, pmt_sec, len);

	/* ffprobe's view: "id,codec" per stream */
	snprintf(cmd, sizeof cmd, "ffprobe -v error -show_entries stream=id,codec_name -of csv=p=0 '%s'",
		 path);
	f = popen(cmd, "r");
	assert_non_null(f);
	/* ffprobe lists each stream under its program and again on its own, with blank lines
	 * between: skip blank lines and count each PID once */
	while (fgets(line, sizeof line, f) != NULL) {
		char codec[64];
		unsigned id;

		if (line[0] == '\n' || line[0] == '\0')
			continue;
		if (sscanf(line, "%63[^,],%x", codec, &id) != 2) {
			/* an ffprobe that puts the id first */
			assert_int_equal(sscanf(line, "%x,%63[^,\n]", &id, codec), 2);
		}
		lines++;
		assert_true(id <= KH_TS_PID_MAX);
		if (seen[id]++)
			continue;
		for (size_t i = 0; i < pmt.n; i++) {
			if (pmt.es[i].pid != id)
				continue;
			if (strcmp(codec, "mpeg2video") == 0)
				assert_int_equal(pmt.es[i].stream_type, 0x02);
			else if (strcmp(codec, "mp2") == 0)
				assert_true(pmt.es[i].stream_type == 0x03 || pmt.es[i].stream_type == 0x04);
			else
				fail_msg("unexpected codec %s", codec);
			assert_true(per_pid[id] > 0);
			matched++;
		}
	}
	assert_int_equal(pclose(f), 0);
	assert_true(lines >= 2);
	assert_int_equal(matched, 2);
	kh_test_rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_crc),
		cmocka_unit_test(test_packet_parse),
		cmocka_unit_test(test_packet_build),
		cmocka_unit_test(test_assembler_span),
		cmocka_unit_test(test_assembler_packing),
		cmocka_unit_test(test_assembler_cc),
		cmocka_unit_test(test_tables_round_trip),
		cmocka_unit_test(test_tables_refused),
		cmocka_unit_test(test_ffmpeg_clip),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
