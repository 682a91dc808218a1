/*
 * libFuzzer harness: the key ladder's formats (include/keyhole/cas.h, src/base/cas.c). A CAM
 * whose decoder gave it a ladder key K_S answers an ECM with TLV {1: alg, 4: cp, 5: sealed} where
 * sealed = nonce(12) | AES-256-GCM(K_S, nonce, aad = "keyhole ladder v1" | u8 alg | u32 cp,
 * u8 cw_len | even | odd); the host carries it to the decoder module, which opens it (LADDER
 * LOAD). So the decoder module reads the host's bytes with kh_cw_answer_parse and
 * kh_cw_ladder_open, and only what the CAM sealed may ever open.
 *
 * Each input, with the deterministic random source reseeded (the seal draws its nonce):
 *
 * 1. kh_cw_answer_parse of the input, into a struct prefilled with a pattern. Only OK, FORMAT and
 *    TRUNCATED; the struct untouched on failure. A success holds clear control words of the
 *    algorithm's length (1 CSA2: 8, 2 CISSA and 3 IDSA: 16) and no sealed pair, or a sealed pair
 *    of 29..61 bytes, a known algorithm and no control word (cw_len 0, both slots zero), never
 *    both; every field is the value of a TLV of its tag in the input. Written back as the
 *    canonical TLV, it parses to the same fields (the bytes past cw_len aside: a repeated tag
 *    makes the last one count, and may leave them from an earlier one).
 * 2. A sealed success is opened with the fixed key fz_ladder_key and with another key, and the
 *    harness opens it on its own with EVP AES-256-GCM as the format says: kh_cw_ladder_open
 *    answers LADDER exactly when that fails, FORMAT when it opens to a plaintext other than
 *    cw_len(alg) | even | odd, and OK otherwise, with exactly that plaintext's control words.
 *    Under another key: LADDER. On failure the struct is byte-for-byte what it was. A sealed
 *    length outside 29..61 is FORMAT, untouched. The fuzzer cannot forge: the seeds are pairs
 *    sealed with the fixed key, from which it may mutate.
 * 3. Round trip on values taken from the input (algorithm, control words, crypto period):
 *    kh_cw_ladder_seal with fz_ladder_key writes {1, 4, 5} (refusing, with INVAL, a CW length
 *    that is not the algorithm's and an unknown algorithm; BUF into a writer one byte short);
 *    that parses as sealed with the same alg and cp and opens to the same control words; a
 *    second seal of the same values carries another nonce; the other key, another cp and another
 *    algorithm are refused; and every byte of the encoding flipped (one bit chosen by the input)
 *    never both parses and opens.
 */
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>

#include "keyhole/buf.h"
#include "keyhole/cas.h"
#include "keyhole/crypto.h"
#include "keyhole/scramble.h"

#include "fuzz_common.h"

/* Another ladder key than fz_ladder_key (fuzz_common.h), which the seeds are sealed with. */
static const uint8_t fz_ladder_other[32] = "keyhole fuzz ladder other v1...";

#define SEALED_MIN (KH_NONCE_LEN + 1 + KH_TAG_LEN)

static struct kh_rng_det rng;
static EVP_CIPHER *gcm;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	kh_rng_det_init(&rng, (const uint8_t *)fz_seed, sizeof fz_seed - 1);
	kh_rng_set(kh_rng_det_fn, &rng);
	if (!(gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL)))
		__builtin_trap();
	return 0;
}

static size_t cw_len_of(uint8_t alg)
{
	return alg == KH_SCR_CSA2 ? 8 : alg == KH_SCR_CISSA || alg == KH_SCR_IDSA ? 16 : 0;
}

/* Whether some TLV of tag in d holds exactly v (len bytes); the walk stops where parsing does. */
static int has_tlv(const uint8_t *d, size_t n, uint8_t tag, const uint8_t *v, size_t len)
{
	struct kh_rd rd;
	struct kh_tlv t;

	kh_rd_init(&rd, d, n);
	while (kh_tlv_next(&rd, &t) == 1)
		if (t.tag == tag && t.len == len && (len == 0 || memcmp(t.v, v, len) == 0))
			return 1;
	return 0;
}

/* Byte for byte the same struct, padding aside (what a refused open must leave). */
static int same_answer(const struct kh_cw_answer *a, const struct kh_cw_answer *b)
{
	return a->alg == b->alg && a->cw_len == b->cw_len && a->cp == b->cp && a->sealed_len == b->sealed_len &&
	       memcmp(a->even, b->even, sizeof a->even) == 0 && memcmp(a->odd, b->odd, sizeof a->odd) == 0 &&
	       memcmp(a->sealed, b->sealed, sizeof a->sealed) == 0;
}

/*
 * The same answer: the same fields and the bytes they give (cw_len of each slot, sealed_len of
 * the sealed pair). A repeated tag in the input makes the last one count, and one of another
 * length before it may leave bytes past cw_len in a slot, which no reader uses.
 */
static int same_fields(const struct kh_cw_answer *a, const struct kh_cw_answer *b)
{
	return a->alg == b->alg && a->cw_len == b->cw_len && a->cp == b->cp && a->sealed_len == b->sealed_len &&
	       memcmp(a->even, b->even, a->cw_len) == 0 && memcmp(a->odd, b->odd, a->cw_len) == 0 &&
	       memcmp(a->sealed, b->sealed, a->sealed_len) == 0;
}

/*
 * The format's own opening, with EVP directly: 1 when sealed opens under key for (alg, cp), with
 * the plaintext in pt and its length in *ptlen; 0 when the tag does not verify.
 */
static int evp_open(const uint8_t key[static 32], uint8_t alg, uint32_t cp, const uint8_t *sealed, size_t n,
		    uint8_t *pt, size_t *ptlen)
{
	uint8_t aad[sizeof KH_LADDER_LABEL - 1 + 5];
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	size_t ct = n - KH_NONCE_LEN - KH_TAG_LEN;
	int l, ok;

	CHECK(c != NULL && n >= SEALED_MIN);
	memcpy(aad, KH_LADDER_LABEL, sizeof KH_LADDER_LABEL - 1);
	aad[sizeof KH_LADDER_LABEL - 1] = alg;
	kh_put_be32(aad + sizeof KH_LADDER_LABEL, cp);
	ok = EVP_DecryptInit_ex2(c, gcm, key, sealed, NULL) == 1 &&
	     EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_TAG, KH_TAG_LEN, (void *)(uintptr_t)(sealed + n - KH_TAG_LEN)) == 1 &&
	     EVP_DecryptUpdate(c, NULL, &l, aad, (int)sizeof aad) == 1 &&
	     EVP_DecryptUpdate(c, pt, &l, sealed + KH_NONCE_LEN, (int)ct) == 1 && EVP_DecryptFinal_ex(c, pt + ct, &l) == 1;
	EVP_CIPHER_CTX_free(c);
	*ptlen = ct;
	return ok;
}

/* Part 2: open a parsed sealed answer a, checked against the harness's own opening. */
static void check_open(const struct kh_cw_answer *a)
{
	struct kh_cw_answer b, c;
	uint8_t pt[KH_LADDER_SEALED_MAX];
	size_t ptlen = 0;
	kh_err r;
	int opens, wellformed;

	opens = evp_open(fz_ladder_key, a->alg, a->cp, a->sealed, a->sealed_len, pt, &ptlen);
	wellformed = opens && ptlen >= 1 && pt[0] == cw_len_of(a->alg) && ptlen == 1u + 2u * pt[0];
	b = *a;
	r = kh_cw_ladder_open(fz_ladder_key, &b);
	CHECK(r == KH_OK || r == KH_ERR_LADDER || r == KH_ERR_FORMAT);
	CHECK((r == KH_ERR_LADDER) == !opens);
	CHECK((r == KH_OK) == wellformed);
	if (r != KH_OK) {
		CHECK(same_answer(&b, a));
	} else {
		/* exactly the plaintext's control words; alg, cp and the sealed bytes kept */
		CHECK(b.cw_len == pt[0] && b.alg == a->alg && b.cp == a->cp && b.sealed_len == a->sealed_len);
		CHECK(memcmp(b.even, pt + 1, b.cw_len) == 0 && memcmp(b.odd, pt + 1 + b.cw_len, b.cw_len) == 0);
		CHECK(memcmp(b.sealed, a->sealed, sizeof a->sealed) == 0);
	}
	kh_wipe(pt, sizeof pt);
	kh_wipe(&b, sizeof b);

	/* Another key never opens it. */
	c = *a;
	CHECK(kh_cw_ladder_open(fz_ladder_other, &c) == KH_ERR_LADDER);
	CHECK(same_answer(&c, a));
	/* A sealed length the format cannot have: FORMAT, untouched. */
	c = *a;
	c.sealed_len = (uint8_t)(a->sealed_len & 1 ? SEALED_MIN - 1 - a->sealed_len % SEALED_MIN
						    : KH_LADDER_SEALED_MAX + 1 + a->sealed_len % 64);
	b = c;
	CHECK(kh_cw_ladder_open(fz_ladder_key, &c) == KH_ERR_FORMAT);
	CHECK(same_answer(&c, &b));
}

/* Part 1: the input as an answer. */
static void check_parse(const uint8_t *data, size_t size)
{
	struct kh_cw_answer a, pat, again;
	uint8_t buf[256];
	struct kh_wr w;
	kh_err r;

	memset(&pat, 0xA5, sizeof pat);
	a = pat;
	r = kh_cw_answer_parse(data, size, &a);
	CHECK(r == KH_OK || r == KH_ERR_FORMAT || r == KH_ERR_TRUNCATED);
	if (r != KH_OK) {
		CHECK(memcmp(&a, &pat, sizeof a) == 0);
		return;
	}
	CHECK(has_tlv(data, size, KH_CW_T_ALG, &a.alg, 1));
	{
		uint8_t cp[4];
		kh_put_be32(cp, a.cp);
		CHECK(has_tlv(data, size, KH_CW_T_CP, cp, 4));
	}
	CHECK((a.cw_len != 0) != (a.sealed_len != 0));
	CHECK(cw_len_of(a.alg) != 0);
	kh_wr_init(&w, buf, sizeof buf);
	kh_tlv_put_u8(&w, KH_CW_T_ALG, a.alg);
	if (a.sealed_len) {
		static const uint8_t zero[KH_CAS_CW_MAX];
		CHECK(a.cw_len == 0 && a.sealed_len >= SEALED_MIN && a.sealed_len <= KH_LADDER_SEALED_MAX);
		CHECK(memcmp(a.even, zero, sizeof zero) == 0 && memcmp(a.odd, zero, sizeof zero) == 0);
		CHECK(has_tlv(data, size, KH_CW_T_LADDER, a.sealed, a.sealed_len));
		kh_tlv_put(&w, KH_CW_T_LADDER, a.sealed, a.sealed_len);
	} else {
		CHECK(a.cw_len == cw_len_of(a.alg));
		CHECK(has_tlv(data, size, KH_CW_T_EVEN, a.even, a.cw_len) && has_tlv(data, size, KH_CW_T_ODD, a.odd, a.cw_len));
		kh_tlv_put(&w, KH_CW_T_EVEN, a.even, a.cw_len);
		kh_tlv_put(&w, KH_CW_T_ODD, a.odd, a.cw_len);
	}
	CHECK(kh_tlv_put_u32(&w, KH_CW_T_CP, a.cp) == KH_OK);
	again = pat;
	CHECK(kh_cw_answer_parse(buf, w.len, &again) == KH_OK && same_fields(&again, &a));
	if (a.sealed_len)
		check_open(&a);
	kh_wipe(&a, sizeof a);
	kh_wipe(&again, sizeof again);
}

/* Whether bytes d (n) parse and open under the key to exactly a's values. */
static int loads(const uint8_t *d, size_t n, const uint8_t key[static 32])
{
	struct kh_cw_answer x;
	int ok = kh_cw_answer_parse(d, n, &x) == KH_OK && x.sealed_len && kh_cw_ladder_open(key, &x) == KH_OK;

	kh_wipe(&x, sizeof x);
	return ok;
}

/* Part 3: seal values taken from the input, and check what comes out. */
static void check_round_trip(const uint8_t *data, size_t size)
{
	struct kh_cw_answer a, p, q;
	uint8_t out[128], out2[128], flip[128];
	struct kh_wr w;
	size_t i;
	kh_err r;

	if (size < 6)
		return;
	memset(&a, 0, sizeof a);
	/* bit 7 of the first byte: take the algorithm byte and the CW length as they come */
	if (data[0] & 0x80) {
		a.alg = data[1];
		a.cw_len = (uint8_t)(data[2] % (KH_CAS_CW_MAX + 1));
	} else {
		a.alg = (uint8_t)(1 + data[1] % 3);
		a.cw_len = (uint8_t)cw_len_of(a.alg);
	}
	a.cp = (uint32_t)data[2] << 24 | (uint32_t)data[3] << 16 | (uint32_t)data[4] << 8 | data[5];
	for (i = 0; i < KH_CAS_CW_MAX; i++) {
		a.even[i] = data[(6 + i) % size];
		a.odd[i] = data[(6 + KH_CAS_CW_MAX + i) % size];
	}
	kh_wr_init(&w, out, sizeof out);
	r = kh_cw_ladder_seal(fz_ladder_key, &a, &w);
	if (a.cw_len == 0 || a.cw_len != cw_len_of(a.alg)) {
		CHECK(r == KH_ERR_INVAL && w.len == 0);
		return;
	}
	CHECK(r == KH_OK);
	/* {1: alg} 4 bytes, {4: cp} 7, {5: sealed} 3 + nonce + 1 + 2 cw + tag */
	CHECK(w.len == 4 + 7 + 3 + SEALED_MIN + 2u * a.cw_len);

	/* the same values into a writer one byte short: BUF */
	{
		struct kh_wr s;
		kh_wr_init(&s, out2, w.len - 1);
		CHECK(kh_cw_ladder_seal(fz_ladder_key, &a, &s) == KH_ERR_BUF);
	}

	memset(&p, 0x5A, sizeof p);
	CHECK(kh_cw_answer_parse(out, w.len, &p) == KH_OK);
	CHECK(p.alg == a.alg && p.cp == a.cp && p.cw_len == 0 && p.sealed_len == SEALED_MIN + 2u * a.cw_len);
	q = p;
	CHECK(kh_cw_ladder_open(fz_ladder_key, &q) == KH_OK);
	CHECK(q.cw_len == a.cw_len && memcmp(q.even, a.even, a.cw_len) == 0 && memcmp(q.odd, a.odd, a.cw_len) == 0);
	check_open(&p);

	/* a second seal of the same values: another nonce */
	kh_wr_init(&w, out2, sizeof out2);
	CHECK(kh_cw_ladder_seal(fz_ladder_key, &a, &w) == KH_OK);
	CHECK(memcmp(out2 + 14, out + 14, KH_NONCE_LEN) != 0);

	/* bound to alg and cp, and to the key */
	q = p;
	q.cp ^= 1u << (data[3] % 32);
	CHECK(kh_cw_ladder_open(fz_ladder_key, &q) == KH_ERR_LADDER);
	q = p;
	q.alg = q.alg == KH_SCR_CISSA ? KH_SCR_IDSA : KH_SCR_CISSA;
	CHECK(kh_cw_ladder_open(fz_ladder_key, &q) == KH_ERR_LADDER);
	CHECK(!loads(out, w.len, fz_ladder_other));

	/* any byte of the encoding flipped: never both parses and opens */
	for (i = 0; i < w.len; i++) {
		memcpy(flip, out2, w.len);
		flip[i] ^= (uint8_t)(1u << (data[i % size] & 7));
		CHECK(!loads(flip, w.len, fz_ladder_key));
	}
	CHECK(loads(out2, w.len, fz_ladder_key));
	kh_wipe(&a, sizeof a);
	kh_wipe(&p, sizeof p);
	kh_wipe(&q, sizeof q);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 1024)
		return 0;
	kh_rng_det_init(&rng, (const uint8_t *)fz_seed, sizeof fz_seed - 1);
	check_parse(data, size);
	check_round_trip(data, size);
	return 0;
}
