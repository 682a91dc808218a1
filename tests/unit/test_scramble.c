/*
 * Scrambler tests (include/keyhole/scramble.h, docs/internals/scrambling.md).
 *
 * Known answers: DVB-CSA2 against libdvbcsa's own decryption vector (test/testdec.c, test 2:
 * CW 07 06 05 04 03 02 01 00, ciphertext 00..b7); AES against FIPS-197 Appendix C.1 (key
 * 000102..0f, 00112233..ff -> 69c4e0d8...), placed as the first block of a CISSA and an IDSA
 * payload. Then independent references computed here: CSA2 batches against libdvbcsa's
 * single-packet dvbcsa_encrypt on the same data (a real check of the batching and parity
 * handling), CISSA and IDSA against CBC and the DVS-042 residue written out by hand over raw
 * AES-128-ECB, one block per call, for every payload length 0..184. Then the packet rules:
 * round trips, TSC bits, clear adaptation fields, wrong keys, reserved and broken packets,
 * missing keys, key clearing, the CSA entropy reduction and argument checks.
 */
#include <string.h>

#include <dvbcsa/dvbcsa.h>
#include <openssl/evp.h>

#include "keyhole/scramble.h"
#include "testutil.h"

#define PL KH_SCR_PACKET_LEN

static uint64_t rng_state = 0x9E3779B97F4A7C15u;

static uint8_t rnd8(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (uint8_t)(rng_state >> 24);
}

static void rnd(uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		p[i] = rnd8();
}

static void unhex(const char *hex, uint8_t *out, size_t n)
{
	assert_int_equal(kh_test_unhex(hex, out, n), (long)n);
}

/*
 * A clear packet whose payload is plen bytes (0..184) of random data: AFC 01 for 184, AFC 11
 * with an adaptation field (random body after the flags byte) for 1..183, AFC 10 for 0.
 * Returns the payload offset.
 */
static unsigned make_packet(uint8_t *p, unsigned plen)
{
	unsigned off;

	rnd(p, PL);
	p[0] = 0x47;
	p[1] = 0x01;
	p[2] = 0x00;
	if (plen == 184) {
		p[3] = 0x10 | (p[3] & 0x0F);
		return 4;
	}
	p[3] = (uint8_t)((plen ? 0x30 : 0x20) | (p[3] & 0x0F));
	p[4] = (uint8_t)(183 - plen);
	off = 5u + p[4];
	return off;
}

static unsigned payload_off(const uint8_t *p)
{
	unsigned afc = (p[3] >> 4) & 3u;
	return afc == 1 ? 4 : 5u + p[4];
}

/* ---- independent AES references: raw ECB, one block per call ---- */

static void aes_block(const uint8_t key[16], const uint8_t in[16], uint8_t out[16], int enc)
{
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	int ol = 0;
	assert_non_null(c);
	assert_true(EVP_CipherInit_ex(c, EVP_aes_128_ecb(), NULL, key, NULL, enc));
	EVP_CIPHER_CTX_set_padding(c, 0);
	assert_true(EVP_CipherUpdate(c, out, &ol, in, 16));
	assert_int_equal(ol, 16);
	EVP_CIPHER_CTX_free(c);
}

static const uint8_t cissa_iv[16] = "DVBTMCPTAESCISSA";

/* CISSA or IDSA encryption of one payload, written from the standards (see the docs). */
static void ref_encrypt(int idsa, const uint8_t key[16], uint8_t *d, size_t len)
{
	uint8_t prev[16], x[16], m[16];
	size_t nb = len / 16, r = len % 16;

	if (idsa)
		memset(prev, 0, 16);
	else
		memcpy(prev, cissa_iv, 16);
	for (size_t j = 0; j < nb; j++) {
		for (int b = 0; b < 16; b++)
			x[b] = d[j * 16 + b] ^ prev[b];
		aes_block(key, x, d + j * 16, 1);
		memcpy(prev, d + j * 16, 16);
	}
	if (idsa && r) {
		/* DVS-042: residue XOR E(C_last); with no whole block, E(IV). */
		aes_block(key, prev, m, 1);
		for (size_t b = 0; b < r; b++)
			d[nb * 16 + b] ^= m[b];
	}
}

/* ---- DVB-CSA2 ---- */

static const char csa_kat_plain[] =
	"2d0a472018119c8ad12a656b89e4352bc2b59061d17e02e13f4670cf77912f22"
	"93c16cfe49ad7cc2af861ba329beaa64f022b95e98aa60efdfd64477e6bfbb94"
	"b20a630e5cf2acb449cc9e4f944c3012e855c244a452cb6181c9b6a66befafa6"
	"711d7b582ffad10c079d1f3587be029f20c6608f1c300f96d071d65110df5bf6"
	"442f8028b7ec23594b940b9a74a11ff79e76b4dfbb3c8c88972256731605acf9"
	"4f779d38a06b05d2e61501b15cc962a99b1a6a1acfe6a8ba";

static void test_csa_known_answer(void **state)
{
	static const uint8_t cw[8] = {0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, 0x00};
	uint8_t pkt[PL], plain[184];
	struct kh_scr *s;
	(void)state;

	unhex(csa_kat_plain, plain, sizeof plain);
	assert_int_equal(kh_scr_new(KH_SCR_CSA2, 0, &s), KH_OK);
	for (unsigned par = 0; par < 2; par++) {
		assert_int_equal(kh_scr_set_key(s, par, cw, 8), KH_OK);
		/* Descramble the vector's ciphertext. */
		pkt[0] = 0x47;
		pkt[1] = 0x01;
		pkt[2] = 0x00;
		pkt[3] = (uint8_t)(0x90 | (par << 6));
		for (unsigned i = 0; i < 184; i++)
			pkt[4 + i] = (uint8_t)i;
		assert_int_equal(kh_scr_descramble(s, pkt, 1, NULL), KH_OK);
		assert_int_equal(pkt[3], 0x10);
		assert_memory_equal(pkt + 4, plain, 184);
		/* And scramble its plaintext back to it. */
		assert_int_equal(kh_scr_scramble(s, pkt, 1, par), KH_OK);
		assert_int_equal(pkt[3], 0x90 | (par << 6));
		for (unsigned i = 0; i < 184; i++)
			assert_int_equal(pkt[4 + i], i);
	}
	kh_scr_free(s);
}

/* Batches (many packets, both parities, every payload length) equal single-packet CSA. */
static void test_csa_batch_vs_single(void **state)
{
	enum { N = 700 }; /* not a multiple of any batch size */
	static uint8_t ts[N * PL], ref[N * PL], clear[N * PL];
	uint8_t cw[2][8];
	struct dvbcsa_key_s *k[2];
	struct kh_scr *s;
	size_t skipped = 99;
	(void)state;

	rnd(cw[0], 8);
	rnd(cw[1], 8);
	k[0] = dvbcsa_key_alloc();
	k[1] = dvbcsa_key_alloc();
	assert_non_null(k[0]);
	assert_non_null(k[1]);
	dvbcsa_key_set(cw[0], k[0]);
	dvbcsa_key_set(cw[1], k[1]);
	for (size_t i = 0; i < N; i++)
		make_packet(ts + i * PL, (unsigned)(i % 185));
	memcpy(clear, ts, sizeof ts);
	memcpy(ref, ts, sizeof ts);
	for (size_t i = 0; i < N; i++) {
		uint8_t *p = ref + i * PL;
		unsigned par = (i / 3) & 1u, off = payload_off(p);
		if ((p[3] & 0x30) == 0x20)
			continue;
		p[3] = (uint8_t)(p[3] | 0x80 | (par << 6));
		dvbcsa_encrypt(k[par], p + off, PL - off);
	}
	assert_int_equal(kh_scr_new(KH_SCR_CSA2, 0, &s), KH_OK);
	assert_int_equal(kh_scr_set_key(s, KH_SCR_EVEN, cw[0], 8), KH_OK);
	assert_int_equal(kh_scr_set_key(s, KH_SCR_ODD, cw[1], 8), KH_OK);
	/* Parity changes every 3 packets: scramble runs of 3 in separate calls. */
	for (size_t i = 0; i < N; i += 3) {
		size_t m = N - i < 3 ? N - i : 3;
		assert_int_equal(kh_scr_scramble(s, ts + i * PL, m, (i / 3) & 1u), KH_OK);
	}
	assert_memory_equal(ts, ref, sizeof ts);
	/* Payloads under 8 bytes stay clear but carry the TSC bits. */
	for (size_t i = 0; i < N; i++) {
		unsigned plen = (unsigned)(i % 185);
		uint8_t *p = ts + i * PL;
		if (plen > 0 && plen < 8) {
			assert_memory_equal(p + 4, clear + i * PL + 4, PL - 4);
			assert_true(p[3] & 0x80);
		}
	}
	/* One descramble call with mixed parities, batched: back to the clear input. */
	assert_int_equal(kh_scr_descramble(s, ts, N, &skipped), KH_OK);
	assert_int_equal(skipped, 0);
	assert_memory_equal(ts, clear, sizeof ts);
	/* The same stream scrambled in one big call per parity matches single-packet CSA too. */
	for (unsigned par = 0; par < 2; par++) {
		memcpy(ts, clear, sizeof ts);
		memcpy(ref, clear, sizeof ts);
		assert_int_equal(kh_scr_scramble(s, ts, N, par), KH_OK);
		for (size_t i = 0; i < N; i++) {
			uint8_t *p = ref + i * PL;
			unsigned off = payload_off(p);
			if ((p[3] & 0x30) == 0x20)
				continue;
			p[3] = (uint8_t)(p[3] | 0x80 | (par << 6));
			dvbcsa_encrypt(k[par], p + off, PL - off);
		}
		assert_memory_equal(ts, ref, sizeof ts);
	}
	dvbcsa_key_free(k[0]);
	dvbcsa_key_free(k[1]);
	kh_scr_free(s);
}

static void test_csa_entropy_reduction(void **state)
{
	uint8_t cw[8] = {0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88}, red[8];
	uint8_t a[PL], b[PL], c[PL];
	struct kh_scr *s1, *s2;
	(void)state;

	memcpy(red, cw, 8);
	kh_scr_cw_reduce(red);
	assert_int_equal(red[3], 0x66);
	assert_int_equal(red[7], (0x55 + 0x66 + 0x77) & 0xFF);
	assert_memory_equal(red, cw, 3);
	make_packet(a, 184);
	memcpy(b, a, PL);
	memcpy(c, a, PL);
	assert_int_equal(kh_scr_new(KH_SCR_CSA2, KH_SCR_F_CSA_REDUCE, &s1), KH_OK);
	assert_int_equal(kh_scr_new(KH_SCR_CSA2, 0, &s2), KH_OK);
	assert_int_equal(kh_scr_set_key(s1, KH_SCR_EVEN, cw, 8), KH_OK);
	assert_int_equal(kh_scr_set_key(s2, KH_SCR_EVEN, red, 8), KH_OK);
	assert_int_equal(kh_scr_scramble(s1, a, 1, KH_SCR_EVEN), KH_OK);
	assert_int_equal(kh_scr_scramble(s2, b, 1, KH_SCR_EVEN), KH_OK);
	assert_memory_equal(a, b, PL);
	/* The unreduced CW gives something else. */
	assert_int_equal(kh_scr_set_key(s2, KH_SCR_EVEN, cw, 8), KH_OK);
	assert_int_equal(kh_scr_scramble(s2, c, 1, KH_SCR_EVEN), KH_OK);
	assert_memory_not_equal(a + 4, c + 4, 184);
	kh_scr_free(s1);
	kh_scr_free(s2);
}

/* ---- AES ---- */

static void test_aes_fips197_anchor(void **state)
{
	uint8_t key[16], pt[16], ct[16], pkt[PL];
	struct kh_scr *s;
	(void)state;

	unhex("000102030405060708090a0b0c0d0e0f", key, 16);
	unhex("00112233445566778899aabbccddeeff", pt, 16);
	unhex("69c4e0d86a7b0430d8cdb78070b4c55a", ct, 16);
	for (int idsa = 0; idsa < 2; idsa++) {
		unsigned off;
		assert_int_equal(kh_scr_new(idsa ? KH_SCR_IDSA : KH_SCR_CISSA, 0, &s), KH_OK);
		assert_int_equal(kh_scr_set_key(s, KH_SCR_ODD, key, 16), KH_OK);
		off = make_packet(pkt, 20); /* one block and a 4-byte residue */
		/* First block: IV XOR P = FIPS plaintext, so C must be the FIPS ciphertext. */
		for (int b = 0; b < 16; b++)
			pkt[off + b] = pt[b] ^ (idsa ? 0 : cissa_iv[b]);
		assert_int_equal(kh_scr_scramble(s, pkt, 1, KH_SCR_ODD), KH_OK);
		assert_int_equal(pkt[3] >> 6, 3);
		assert_memory_equal(pkt + off, ct, 16);
		kh_scr_free(s);
	}
}

/* Every payload length, both parities, against the hand-written references. */
static void test_aes_reference_all_lengths(void **state)
{
	enum { N = 185 * 2 };
	static uint8_t ts[N * PL], ref[N * PL], clear[N * PL];
	uint8_t key[2][16];
	(void)state;

	for (int idsa = 0; idsa < 2; idsa++) {
		struct kh_scr *s;
		rnd(key[0], 16);
		rnd(key[1], 16);
		for (size_t i = 0; i < N; i++)
			make_packet(ts + i * PL, (unsigned)(i % 185));
		memcpy(clear, ts, sizeof ts);
		memcpy(ref, ts, sizeof ts);
		for (size_t i = 0; i < N; i++) {
			uint8_t *p = ref + i * PL;
			unsigned par = i >= N / 2, off = payload_off(p);
			if ((p[3] & 0x30) == 0x20)
				continue;
			p[3] = (uint8_t)(p[3] | 0x80 | (par << 6));
			ref_encrypt(idsa, key[par], p + off, PL - off);
		}
		assert_int_equal(kh_scr_new(idsa ? KH_SCR_IDSA : KH_SCR_CISSA, 0, &s), KH_OK);
		assert_int_equal(kh_scr_set_key(s, KH_SCR_EVEN, key[0], 16), KH_OK);
		assert_int_equal(kh_scr_set_key(s, KH_SCR_ODD, key[1], 16), KH_OK);
		assert_int_equal(kh_scr_scramble(s, ts, N / 2, KH_SCR_EVEN), KH_OK);
		assert_int_equal(kh_scr_scramble(s, ts + N / 2 * PL, N / 2, KH_SCR_ODD), KH_OK);
		for (size_t i = 0; i < N; i++)
			assert_memory_equal(ts + i * PL, ref + i * PL, PL);
		/* Residue and short-payload rules, spelled out. */
		for (size_t i = 0; i < N; i++) {
			unsigned plen = (unsigned)(i % 185), off = PL - plen;
			const uint8_t *p = ts + i * PL, *c = clear + i * PL;
			if (plen == 0)
				continue;
			if (idsa)
				assert_memory_not_equal(p + PL - (plen % 16 ? plen % 16 : 16),
							c + PL - (plen % 16 ? plen % 16 : 16),
							plen % 16 ? plen % 16 : 16);
			else if (plen % 16)
				assert_memory_equal(p + PL - plen % 16, c + PL - plen % 16, plen % 16);
			if (!idsa && plen < 16)
				assert_memory_equal(p + off, c + off, plen);
		}
		/* Mixed-parity descramble in one call gives the clear stream back. */
		assert_int_equal(kh_scr_descramble(s, ts, N, NULL), KH_OK);
		assert_memory_equal(ts, clear, sizeof ts);
		kh_scr_free(s);
	}
}

/*
 * Descrambling a stream scrambled by the references alone (not by us): parities interleaved
 * packet by packet and in runs, every payload length, adaptation fields, clear and
 * payload-less packets, over several internal groups and front-end chunks (more than 1024
 * payloads), and the same stream again in calls of awkward sizes (1, 63, 64, 65, 1025, ...),
 * so partial groups of both parities are flushed at every call's end.
 */
static void test_aes_descramble_mixed(void **state)
{
	enum { N = 2600 };
	static uint8_t ts[N * PL], scr[N * PL], clear[N * PL];
	static const size_t calls[] = {1, 63, 64, 65, 127, 129, 1025, 2};
	uint8_t key[2][16];
	(void)state;

	for (int idsa = 0; idsa < 2; idsa++) {
		struct kh_scr *s;
		size_t skipped = 99, done = 0;
		rnd(key[0], 16);
		rnd(key[1], 16);
		for (size_t i = 0; i < N; i++) {
			/* Mostly full payloads as in a video PID, every length now and then. */
			unsigned plen = rnd8() % 4 ? 184 : (unsigned)(rnd8() % 185);
			make_packet(ts + i * PL, plen);
		}
		memcpy(clear, ts, sizeof ts);
		memcpy(scr, ts, sizeof ts);
		for (size_t i = 0, run = 0, par = 0; i < N; i++) {
			uint8_t *p = scr + i * PL;
			unsigned off = payload_off(p);
			/* Alternate packet by packet in the first quarter, then runs of 1..90. */
			if (i < N / 4 || run-- == 0) {
				par ^= 1;
				run = rnd8() % 90;
			}
			if ((p[3] & 0x30) == 0x20 || i % 11 == 5) /* no payload, or left clear */
				continue;
			p[3] = (uint8_t)(p[3] | 0x80 | (par << 6));
			ref_encrypt(idsa, key[par], p + off, PL - off);
		}
		assert_int_equal(kh_scr_new(idsa ? KH_SCR_IDSA : KH_SCR_CISSA, 0, &s), KH_OK);
		assert_int_equal(kh_scr_set_key(s, KH_SCR_EVEN, key[0], 16), KH_OK);
		assert_int_equal(kh_scr_set_key(s, KH_SCR_ODD, key[1], 16), KH_OK);
		memcpy(ts, scr, sizeof ts);
		assert_int_equal(kh_scr_descramble(s, ts, N, &skipped), KH_OK);
		assert_int_equal(skipped, 0);
		for (size_t i = 0; i < N; i++)
			assert_memory_equal(ts + i * PL, clear + i * PL, PL);
		memcpy(ts, scr, sizeof ts);
		for (size_t c = 0; done < N; c++) {
			size_t m = calls[c % (sizeof calls / sizeof calls[0])];
			if (m > N - done)
				m = N - done;
			assert_int_equal(kh_scr_descramble(s, ts + done * PL, m, NULL), KH_OK);
			done += m;
		}
		assert_memory_equal(ts, clear, sizeof ts);
		kh_scr_free(s);
	}
}

/* Round trips and the packet rules, for every algorithm. */
static void test_round_trip_rules(void **state)
{
	enum { N = 1500 };
	static uint8_t ts[N * PL], clear[N * PL];
	static const enum kh_scr_alg algs[] = {KH_SCR_CSA2, KH_SCR_CISSA, KH_SCR_IDSA};
	(void)state;

	for (size_t a = 0; a < 3; a++) {
		struct kh_scr *s, *w;
		size_t kl = kh_scr_keylen(algs[a]);
		uint8_t key[2][16], wrong[16];
		unsigned minlen = algs[a] == KH_SCR_CSA2 ? 8 : algs[a] == KH_SCR_CISSA ? 16 : 1;

		rnd(key[0], kl);
		rnd(key[1], kl);
		memcpy(wrong, key[0], kl);
		wrong[kl - 1] ^= 1;
		for (size_t i = 0; i < N; i++)
			make_packet(ts + i * PL, (i % 7) ? 184 : (unsigned)(rnd8() % 185));
		memcpy(clear, ts, sizeof ts);
		assert_int_equal(kh_scr_new(algs[a], 0, &s), KH_OK);
		assert_int_equal(kh_scr_set_key(s, KH_SCR_EVEN, key[0], kl), KH_OK);
		assert_int_equal(kh_scr_set_key(s, KH_SCR_ODD, key[1], kl), KH_OK);
		assert_int_equal(kh_scr_scramble(s, ts, N / 2, KH_SCR_EVEN), KH_OK);
		assert_int_equal(kh_scr_scramble(s, ts + N / 2 * PL, N - N / 2, KH_SCR_ODD), KH_OK);
		for (size_t i = 0; i < N; i++) {
			const uint8_t *p = ts + i * PL, *c = clear + i * PL;
			unsigned off = payload_off(c), has = (c[3] & 0x30) != 0x20 && off < PL;
			/* Header bytes 0..2 and the adaptation field are untouched. */
			assert_memory_equal(p, c, 3);
			assert_int_equal(p[3] & 0x3F, c[3] & 0x3F);
			if ((c[3] & 0x20))
				assert_memory_equal(p + 4, c + 4, (c[3] & 0x10) ? off - 4 : PL - 4);
			if (!has) {
				assert_int_equal(p[3] >> 6, 0);
				continue;
			}
			assert_int_equal(p[3] >> 6, i < N / 2 ? 2 : 3);
			if (PL - off >= minlen && PL - off >= 8)
				assert_memory_not_equal(p + off, c + off, PL - off);
		}
		/* A wrong even key does not restore the even packets. */
		{
			static uint8_t copy[N * PL];
			memcpy(copy, ts, sizeof copy);
			assert_int_equal(kh_scr_new(algs[a], 0, &w), KH_OK);
			assert_int_equal(kh_scr_set_key(w, KH_SCR_EVEN, wrong, kl), KH_OK);
			assert_int_equal(kh_scr_set_key(w, KH_SCR_ODD, key[1], kl), KH_OK);
			assert_int_equal(kh_scr_descramble(w, copy, N, NULL), KH_OK);
			for (size_t i = 0; i < N / 2; i++) {
				const uint8_t *c = clear + i * PL;
				unsigned off = payload_off(c);
				if ((c[3] & 0x30) == 0x20 || PL - off < minlen || PL - off < 8)
					continue;
				assert_memory_not_equal(copy + i * PL + off, c + off, PL - off);
			}
			assert_memory_equal(copy + N / 2 * PL, clear + N / 2 * PL, (N - N / 2) * PL);
			kh_scr_free(w);
		}
		assert_int_equal(kh_scr_descramble(s, ts, N, NULL), KH_OK);
		assert_memory_equal(ts, clear, sizeof ts);
		kh_scr_free(s);
	}
}

/* Reserved, broken and keyless packets; outputs only on success. */
static void test_bad_packets(void **state)
{
	uint8_t ts[4 * PL], before[4 * PL], key[16];
	struct kh_scr *s;
	size_t skipped = 0;
	(void)state;

	rnd(key, 16);
	assert_int_equal(kh_scr_new(KH_SCR_IDSA, 0, &s), KH_OK);
	assert_int_equal(kh_scr_set_key(s, KH_SCR_EVEN, key, 16), KH_OK);
	for (int i = 0; i < 4; i++)
		make_packet(ts + i * PL, 184);

	/* Scramble refuses, and leaves everything as it was: */
	memcpy(before, ts, sizeof ts);
	ts[2 * PL + 3] |= 0x40; /* TSC 01 (reserved) */
	memcpy(before, ts, sizeof ts);
	assert_int_equal(kh_scr_scramble(s, ts, 4, KH_SCR_EVEN), KH_ERR_FORMAT);
	assert_memory_equal(ts, before, sizeof ts);
	ts[2 * PL + 3] &= 0x3F;
	ts[3 * PL] = 0x48; /* no sync byte */
	memcpy(before, ts, sizeof ts);
	assert_int_equal(kh_scr_scramble(s, ts, 4, KH_SCR_EVEN), KH_ERR_FORMAT);
	assert_memory_equal(ts, before, sizeof ts);
	ts[3 * PL] = 0x47;
	ts[3 * PL + 3] &= 0xCF; /* AFC 00 (reserved) */
	assert_int_equal(kh_scr_scramble(s, ts, 4, KH_SCR_EVEN), KH_ERR_FORMAT);
	ts[3 * PL + 3] |= 0x30;
	ts[3 * PL + 4] = 184; /* adaptation field past the packet */
	assert_int_equal(kh_scr_scramble(s, ts, 4, KH_SCR_EVEN), KH_ERR_FORMAT);
	assert_int_equal(kh_scr_scramble(s, ts, 4, KH_SCR_ODD), KH_ERR_INVAL); /* no odd key */
	ts[3 * PL + 4] = 10;
	memcpy(before, ts, sizeof ts);
	assert_int_equal(kh_scr_scramble(s, ts, 4, KH_SCR_EVEN), KH_OK);
	/* Scrambling twice is refused: TSC is no longer 00. */
	assert_int_equal(kh_scr_scramble(s, ts, 1, KH_SCR_EVEN), KH_ERR_FORMAT);

	/* Descramble skips what it cannot handle and leaves it byte-identical. */
	ts[1 * PL + 3] = (uint8_t)((ts[1 * PL + 3] & 0x3F) | 0x40); /* TSC 01 */
	ts[2 * PL] = 0x00;                                       /* sync lost */
	{
		uint8_t p1[PL], p2[PL];
		memcpy(p1, ts + PL, PL);
		memcpy(p2, ts + 2 * PL, PL);
		assert_int_equal(kh_scr_descramble(s, ts, 4, &skipped), KH_OK);
		assert_int_equal(skipped, 2);
		assert_memory_equal(ts + PL, p1, PL);
		assert_memory_equal(ts + 2 * PL, p2, PL);
		assert_memory_equal(ts, before, PL);
		assert_memory_equal(ts + 3 * PL, before + 3 * PL, PL);
	}
	/* An odd packet with no odd key: refused, nothing written. */
	assert_int_equal(kh_scr_scramble(s, ts, 1, KH_SCR_EVEN), KH_OK);
	ts[3] |= 0x40;
	memcpy(before, ts, sizeof ts);
	skipped = 77;
	assert_int_equal(kh_scr_descramble(s, ts, 4, &skipped), KH_ERR_INVAL);
	assert_int_equal(skipped, 77);
	assert_memory_equal(ts, before, sizeof ts);
	/* Clear packets pass through a descrambler untouched; n == 0 is fine. */
	make_packet(ts, 100);
	memcpy(before, ts, PL);
	assert_int_equal(kh_scr_descramble(s, ts, 1, &skipped), KH_OK);
	assert_int_equal(skipped, 0);
	assert_memory_equal(ts, before, PL);
	assert_int_equal(kh_scr_descramble(s, NULL, 0, NULL), KH_OK);
	assert_int_equal(kh_scr_scramble(s, NULL, 0, KH_SCR_EVEN), KH_OK);
	kh_scr_free(s);
}

/* Packets without payload keep TSC 00; adaptation-field-only packets are left alone. */
static void test_no_payload(void **state)
{
	uint8_t ts[2 * PL], before[2 * PL], cw[8];
	struct kh_scr *s;
	(void)state;

	rnd(cw, 8);
	make_packet(ts, 0);              /* AFC 10 */
	make_packet(ts + PL, 184 - 184); /* AFC 10 again, then make it AFC 11 with AF 183 */
	ts[PL + 3] |= 0x30;
	memcpy(before, ts, sizeof ts);
	assert_int_equal(kh_scr_new(KH_SCR_CSA2, 0, &s), KH_OK);
	assert_int_equal(kh_scr_set_key(s, KH_SCR_ODD, cw, 8), KH_OK);
	assert_int_equal(kh_scr_scramble(s, ts, 2, KH_SCR_ODD), KH_OK);
	assert_memory_equal(ts, before, sizeof ts);
	/* A scrambled-marked packet without payload just has its bits cleared. */
	ts[3] |= 0xC0;
	assert_int_equal(kh_scr_descramble(s, ts, 2, NULL), KH_OK);
	assert_memory_equal(ts, before, sizeof ts);
	kh_scr_free(s);
}

static void test_keys_and_args(void **state)
{
	uint8_t key[16] = {1}, pkt[PL];
	struct kh_scr *s = NULL;
	(void)state;

	assert_int_equal(kh_scr_new((enum kh_scr_alg)0, 0, &s), KH_ERR_INVAL);
	assert_int_equal(kh_scr_new(KH_SCR_CISSA, KH_SCR_F_CSA_REDUCE, &s), KH_ERR_INVAL);
	assert_int_equal(kh_scr_new(KH_SCR_CSA2, 0x80, &s), KH_ERR_INVAL);
	assert_null(s);
	assert_int_equal(kh_scr_keylen(KH_SCR_CSA2), 8);
	assert_int_equal(kh_scr_keylen(KH_SCR_IDSA), 16);
	assert_string_equal(kh_scr_alg_name(KH_SCR_CISSA), "DVB-CISSA");
	kh_scr_free(NULL);

	assert_int_equal(kh_scr_new(KH_SCR_CISSA, 0, &s), KH_OK);
	assert_int_equal(kh_scr_set_key(s, KH_SCR_EVEN, key, 8), KH_ERR_INVAL);
	assert_int_equal(kh_scr_set_key(s, (enum kh_scr_parity)2, key, 16), KH_ERR_INVAL);
	assert_false(kh_scr_has_key(s, KH_SCR_EVEN));
	assert_int_equal(kh_scr_set_key(s, KH_SCR_EVEN, key, 16), KH_OK);
	assert_true(kh_scr_has_key(s, KH_SCR_EVEN));
	make_packet(pkt, 184);
	assert_int_equal(kh_scr_scramble(s, pkt, 1, (enum kh_scr_parity)5), KH_ERR_INVAL);
	assert_int_equal(kh_scr_scramble(s, pkt, 1, KH_SCR_EVEN), KH_OK);
	/* Re-key, then clear: the context no longer descrambles. */
	key[0] = 2;
	assert_int_equal(kh_scr_set_key(s, KH_SCR_EVEN, key, 16), KH_OK);
	kh_scr_clear_key(s, KH_SCR_EVEN);
	assert_false(kh_scr_has_key(s, KH_SCR_EVEN));
	assert_int_equal(kh_scr_descramble(s, pkt, 1, NULL), KH_ERR_INVAL);
	kh_scr_free(s);

	/* CSA paths under ASan: set, re-key, clear, free. */
	assert_int_equal(kh_scr_new(KH_SCR_CSA2, KH_SCR_F_CSA_REDUCE, &s), KH_OK);
	assert_int_equal(kh_scr_set_key(s, KH_SCR_ODD, key, 8), KH_OK);
	assert_int_equal(kh_scr_set_key(s, KH_SCR_ODD, key, 8), KH_OK);
	assert_int_equal(kh_scr_set_key(s, KH_SCR_ODD, key, 16), KH_ERR_INVAL);
	kh_scr_clear_key(s, KH_SCR_ODD);
	assert_false(kh_scr_has_key(s, KH_SCR_ODD));
	kh_scr_free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_csa_known_answer),
		cmocka_unit_test(test_csa_batch_vs_single),
		cmocka_unit_test(test_csa_entropy_reduction),
		cmocka_unit_test(test_aes_fips197_anchor),
		cmocka_unit_test(test_aes_reference_all_lengths),
		cmocka_unit_test(test_aes_descramble_mixed),
		cmocka_unit_test(test_round_trip_rules),
		cmocka_unit_test(test_bad_packets),
		cmocka_unit_test(test_no_payload),
		cmocka_unit_test(test_keys_and_args),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
