/*
 * libFuzzer harness: the transport-stream component (src/ts/ts.c, src/ts/psi.c), which reads
 * every byte of a broadcast stream before anything else does.
 *
 * The input is cut into 188-byte packets. Each goes to kh_ts_parse: when it parses, the header
 * fields match the bytes, the adaptation field and payload lie inside the packet and with the
 * header fill it exactly, and kh_ts_build of the parsed fields gives back the same 188 bytes.
 * Packets then go to section assemblers (one per PID, for the first four PIDs seen, with the
 * private 4096-byte cap): every section popped is within the caller's buffer, exactly
 * 3 + section_length bytes and within its table's limit, and packetising it and assembling it
 * again gives the same bytes. Each section, and the whole input taken as one section, goes to
 * the PAT, PMT and CAT parsers: a section that parses rebuilds to the same bytes once its
 * reserved bits are set (the parsers ignore them, the builders set them; byte-identical with
 * CRC when the input had them set), its descriptor pointers lie inside the section, and the
 * rebuilt section parses to the same fields. The CA and scrambling descriptor finders walk
 * every descriptor loop found.
 */
#include <string.h>

#include "keyhole/buf.h"
#include "keyhole/ts.h"

#include "fuzz_common.h"

#define MAX_IN (64u * KH_TS_PACKET_LEN)
#define NASM 4

static struct kh_ts_asm asms[NASM], again;
static int nasm;
static uint8_t sec[KH_TS_PRIVATE_MAX], sec2[KH_TS_PRIVATE_MAX], canon[KH_TS_PRIVATE_MAX];
static uint8_t pk[32 * KH_TS_PACKET_LEN];
static struct kh_ts_pat pat, pat2;
static struct kh_ts_pmt pmt, pmt2;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	return 0;
}

static int inside(const uint8_t *p, size_t len, const uint8_t *base, size_t n)
{
	return len == 0 || (p >= base && p + len <= base + n);
}

static void check_packet(const uint8_t *p)
{
	struct kh_ts_pkt k;
	uint8_t q[KH_TS_PACKET_LEN];
	size_t used;

	if (kh_ts_parse(p, KH_TS_PACKET_LEN, &k) != KH_OK) {
		CHECK(p[0] != KH_TS_SYNC || (p[3] & 0x30) == 0 || (p[3] & 0x20));
		return;
	}
	CHECK(p[0] == KH_TS_SYNC);
	CHECK(k.pid == ((p[1] & 0x1F) << 8 | p[2]));
	CHECK(k.cc == (p[3] & 0x0F) && k.scrambling == p[3] >> 6 && k.afc == ((p[3] >> 4) & 3));
	CHECK(k.afc != 0 && k.tei == p[1] >> 7 && k.pusi == ((p[1] >> 6) & 1));
	CHECK(inside(k.af, k.af_len, p, KH_TS_PACKET_LEN));
	CHECK(inside(k.payload, k.payload_len, p, KH_TS_PACKET_LEN));
	used = KH_TS_HEADER_LEN + ((k.afc & 2) ? 1 + k.af_len : 0) + k.payload_len;
	CHECK(used == KH_TS_PACKET_LEN);
	CHECK((k.afc & 1) == (k.payload_len > 0));
	CHECK(kh_ts_build(q, &k, k.af, k.af_len, k.payload, k.payload_len) == KH_OK);
	CHECK(memcmp(q, p, KH_TS_PACKET_LEN) == 0);
}

/* Copy of a PAT/PMT/CAT section with every reserved bit set and the CRC recomputed: what the
 * builders write for the same fields. */
static void canonical(const uint8_t *s, size_t n)
{
	size_t pos, end = n - 4, l;

	memcpy(canon, s, n);
	canon[1] = (uint8_t)(0xB0 | (canon[1] & 0x0F));
	canon[5] |= 0xC0;
	switch (canon[0]) {
	case KH_TS_TID_PAT:
		for (pos = 8; pos + 4 <= end; pos += 4)
			canon[pos + 2] |= 0xE0;
		break;
	case KH_TS_TID_CAT:
		canon[3] = canon[4] = 0xFF;
		break;
	case KH_TS_TID_PMT:
		canon[8] |= 0xE0;
		canon[10] |= 0xF0;
		l = (size_t)(canon[10] & 0x0F) << 8 | canon[11];
		for (pos = 12 + l; pos + 5 <= end; pos += 5 + l) {
			canon[pos + 1] |= 0xE0;
			canon[pos + 3] |= 0xF0;
			l = (size_t)(canon[pos + 3] & 0x0F) << 8 | canon[pos + 4];
		}
		break;
	}
	kh_put_be32(canon + end, kh_ts_crc32(canon, end));
}

static void check_loop(const uint8_t *loop, size_t len, const uint8_t *s, size_t n)
{
	struct kh_ts_ca_desc ca;
	uint8_t mode;
	kh_err r;

	CHECK(inside(loop, len, s, n));
	CHECK(kh_ts_desc_loop_check(loop, len) == KH_OK);
	r = kh_ts_ca_desc_find(loop, len, (uint16_t)(len ? loop[0] << 8 | loop[len - 1] : 0), &ca);
	CHECK(r == KH_OK || r == KH_ERR_NOTFOUND || r == KH_ERR_TRUNCATED);
	if (r == KH_OK)
		CHECK(ca.ca_pid <= KH_TS_PID_MAX && inside(ca.priv, ca.priv_len, loop, len));
	r = kh_ts_scrambling_desc_find(loop, len, &mode);
	CHECK(r == KH_OK || r == KH_ERR_NOTFOUND || r == KH_ERR_FORMAT);
}

static void check_tables(const uint8_t *s, size_t n)
{
	struct kh_ts_cat cat, cat2;
	size_t m;
	kh_err r;

	r = kh_ts_section_check(s, n);
	if (r != KH_OK)
		CHECK(r == KH_ERR_TRUNCATED || r == KH_ERR_TRAILING || r == KH_ERR_TOO_LARGE ||
		      r == KH_ERR_FORMAT || r == KH_ERR_CRC);
	else
		CHECK(n >= 3 && n == 3u + ((s[1] & 0x0F) << 8 | s[2]) && n <= kh_ts_section_max(s[0]));

	if (kh_ts_pat_parse(s, n, &pat) == KH_OK) {
		CHECK(r == KH_OK && s[0] == KH_TS_TID_PAT && pat.n == (n - 12) / 4);
		canonical(s, n);
		CHECK(kh_ts_pat_build(&pat, sec2, sizeof sec2, &m) == KH_OK);
		CHECK(m == n && memcmp(sec2, canon, n) == 0);
		CHECK(kh_ts_pat_parse(sec2, m, &pat2) == KH_OK && pat2.n == pat.n &&
		      memcmp(pat2.prog, pat.prog, pat.n * sizeof pat.prog[0]) == 0 &&
		      pat2.tsid == pat.tsid && pat2.version == pat.version);
	}
	if (kh_ts_pmt_parse(s, n, &pmt) == KH_OK) {
		CHECK(r == KH_OK && s[0] == KH_TS_TID_PMT);
		check_loop(pmt.desc, pmt.desc_len, s, n);
		for (size_t i = 0; i < pmt.n; i++)
			check_loop(pmt.es[i].desc, pmt.es[i].desc_len, s, n);
		canonical(s, n);
		CHECK(kh_ts_pmt_build(&pmt, sec2, sizeof sec2, &m) == KH_OK);
		CHECK(m == n && memcmp(sec2, canon, n) == 0);
		CHECK(kh_ts_pmt_parse(sec2, m, &pmt2) == KH_OK && pmt2.n == pmt.n &&
		      pmt2.pcr_pid == pmt.pcr_pid && pmt2.desc_len == pmt.desc_len);
	}
	if (kh_ts_cat_parse(s, n, &cat) == KH_OK) {
		CHECK(r == KH_OK && s[0] == KH_TS_TID_CAT);
		check_loop(cat.desc, cat.desc_len, s, n);
		canonical(s, n);
		CHECK(kh_ts_cat_build(&cat, sec2, sizeof sec2, &m) == KH_OK);
		CHECK(m == n && memcmp(sec2, canon, n) == 0);
		CHECK(kh_ts_cat_parse(sec2, m, &cat2) == KH_OK && cat2.desc_len == cat.desc_len);
	}
}

/* A section re-packetised and re-assembled comes back unchanged. */
static void check_repacketise(const uint8_t *s, size_t n, uint16_t pid)
{
	size_t plen, len = 0;
	uint8_t cc = (uint8_t)(n & 0x0F);
	int got = 0, k;

	CHECK(kh_ts_packetise(pid, &cc, s, n, pk, sizeof pk, &plen) == KH_OK);
	CHECK(plen == kh_ts_packets_for(n) * KH_TS_PACKET_LEN);
	CHECK(kh_ts_asm_init(&again, pid, KH_TS_PRIVATE_MAX) == KH_OK);
	for (size_t i = 0; i < plen; i += KH_TS_PACKET_LEN) {
		CHECK(kh_ts_asm_push(&again, pk + i, KH_TS_PACKET_LEN) == KH_OK);
		while ((k = kh_ts_asm_pop(&again, sec2, sizeof sec2, &len)) == 1)
			got++;
		CHECK(k == 0);
	}
	CHECK(got == 1 && len == n && memcmp(sec2, s, n) == 0);
}

static struct kh_ts_asm *asm_for(uint16_t pid)
{
	for (int i = 0; i < nasm; i++)
		if (asms[i].pid == pid)
			return &asms[i];
	if (nasm == NASM)
		return NULL;
	CHECK(kh_ts_asm_init(&asms[nasm], pid, KH_TS_PRIVATE_MAX) == KH_OK);
	return &asms[nasm++];
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct kh_ts_pkt k;
	size_t len;
	int r;

	if (size > MAX_IN)
		return 0;
	nasm = 0;
	if (size != KH_TS_PACKET_LEN)
		CHECK(kh_ts_parse(data, size, &k) ==
		      (size < KH_TS_PACKET_LEN ? KH_ERR_TRUNCATED : KH_ERR_TRAILING));

	for (size_t off = 0; off + KH_TS_PACKET_LEN <= size; off += KH_TS_PACKET_LEN) {
		const uint8_t *p = data + off;
		struct kh_ts_asm *a;

		check_packet(p);
		if (kh_ts_parse(p, KH_TS_PACKET_LEN, &k) != KH_OK || (a = asm_for(k.pid)) == NULL)
			continue;
		(void)kh_ts_asm_push(a, p, KH_TS_PACKET_LEN);
		while ((r = kh_ts_asm_pop(a, sec, sizeof sec, &len)) != 0) {
			CHECK(r == 1 || r == KH_ERR_TOO_LARGE || r == KH_ERR_TRUNCATED);
			if (r != 1)
				continue;
			CHECK(len >= 3 && len <= sizeof sec);
			CHECK(len == 3u + ((sec[1] & 0x0F) << 8 | sec[2]));
			CHECK(len <= kh_ts_section_max(sec[0]));
			check_repacketise(sec, len, k.pid);
			check_tables(sec, len);
		}
	}
	/* the whole input as one section */
	if (size <= KH_TS_PRIVATE_MAX)
		check_tables(data, size);
	return 0;
}
