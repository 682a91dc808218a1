/*
 * The buyer applet (src/module/applet_buy.c) and the escrow records and RSA blinding it uses
 * (src/base/escrow.c, src/base/crypto_rsa.c; docs/protocols/escrow.md), driven in APDUs only, with
 * this test playing the seller (K, the content, c = RSA-OAEP(listing key, K)) and the escrow (its
 * listing key's private operation on the blinded value, done here with OpenSSL directly, and its
 * signed answer). The whole purchase runs, then what a host or a dishonest party can try: an
 * answer tampered with, made with another listing's key, for another purchase; a seller's c that
 * decodes to no key or to a key the content does not commit to; a listing, c or content swapped
 * between the request and the answer; a cancelled purchase answered later; a licence taken to
 * another device or to other content; every slot taken. Each has its own outcome, and none shows
 * a byte of content or K.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buyerutil.h"
#include "keyhole/apdu.h"
#include "keyhole/device.h"
#include "keyhole/escrow.h"
#include "keyhole/file.h"
#include "testutil.h"
#include "world.h"

struct bw {
	struct world *w;
	struct mod b1, b2, card;
	uint8_t esk[32], epk[32];
	struct listing_key ka, kb;
	uint8_t pt[PT_LEN];
	struct offer a;       /* listing A, the genuine offer */
	uint8_t b1_pk[32];    /* b1's certified signing key */
};

/* The seller's side: a listing on key k at price, K, the content under K, and c for K2 (K when
 * NULL) under key kc (k when NULL). */
static void make_offer(struct bw *x, struct offer *o, const struct listing_key *k, uint64_t price,
		       const uint8_t *k2, const struct listing_key *kc)
{
	offer_listing(o, x->esk, ESCROW_UA, k, price);
	offer_content(o, x->pt, NULL);
	offer_c(o, kc ? kc : k, k2 ? k2 : o->k, KH_ESCROW_KEY_LEN);
}

/* The escrow's signed answer to b1's req, z computed with key k (flip: a byte of z flipped after). */
static size_t answer(struct bw *x, const uint8_t *req, size_t reqlen, const struct listing_key *k, int flip,
		     uint8_t *ans)
{
	return escrow_answer(x->esk, x->b1_pk, req, reqlen, k, k == &x->ka, flip, ans);
}

static int setup(void **state)
{
	struct bw *x = calloc(1, sizeof *x);
	assert_non_null(x);
	world_setup((void **)&x->w);
	make_mod(x->w->auth, KH_ROLE_BUYER, &x->b1);
	make_mod(x->w->auth, KH_ROLE_BUYER, &x->b2);
	make_mod(x->w->auth, KH_ROLE_CARD, &x->card);
	assert_int_equal(kh_ed25519_keygen(x->esk, x->epk), KH_OK);
	make_key(&x->ka, 2048);
	make_key(&x->kb, 2048);
	assert_int_equal(kh_random(x->pt, sizeof x->pt), KH_OK);
	make_offer(x, &x->a, &x->ka, 1250, NULL, NULL);
	device_key(&x->b1.t, x->w->root_pk, 0, x->b1_pk);
	*state = x;
	return 0;
}

static int teardown(void **state)
{
	struct bw *x = *state;
	kh_softmod_free(x->b1.sm);
	kh_softmod_free(x->b2.sm);
	kh_softmod_free(x->card.sm);
	EVP_PKEY_free(x->ka.pk);
	EVP_PKEY_free(x->kb.pk);
	world_teardown((void **)&x->w);
	free(x);
	return 0;
}

/* ---- the crypto facade and the records ---- */

static void test_blind_unblind(void **state)
{
	struct bw *x = *state;
	const struct listing_key *k = &x->ka;
	uint8_t seed[32], seed2[32], cp[KH_RSA_MAX_LEN], cp2[KH_RSA_MAX_LEN], z[KH_RSA_MAX_LEN], m[KH_RSA_MAX_LEN];
	uint8_t em[KH_RSA_MAX_LEN], out[64];
	size_t outl = 0;

	assert_int_equal(kh_random(seed, sizeof seed), KH_OK);
	assert_int_equal(kh_random(seed2, sizeof seed2), KH_OK);
	/* c' hides c: not c, and two blindings of one c differ */
	assert_int_equal(kh_rsa_blind(k->n, k->nlen, x->a.c, seed, cp), KH_OK);
	assert_int_equal(kh_rsa_blind(k->n, k->nlen, x->a.c, seed2, cp2), KH_OK);
	assert_memory_not_equal(cp, x->a.c, k->nlen);
	assert_memory_not_equal(cp, cp2, k->nlen);
	/* z = c'^d unblinds to c^d, the OAEP block of K under the listing id */
	rsa_private(k, cp, z);
	assert_int_equal(kh_rsa_unblind(k->n, k->nlen, x->a.c, seed, z, m), KH_OK);
	rsa_private(k, x->a.c, em);
	assert_memory_equal(m, em, k->nlen);
	assert_int_equal(kh_rsa_oaep_decode(m, k->nlen, x->a.id, sizeof x->a.id, out, sizeof out, &outl), KH_OK);
	assert_int_equal(outl, KH_ESCROW_KEY_LEN);
	assert_memory_equal(out, x->a.k, KH_ESCROW_KEY_LEN);
	/* another label, or the wrong seed, or a flipped z: refused */
	assert_int_equal(kh_rsa_oaep_decode(m, k->nlen, x->a.id, 15, out, sizeof out, &outl), KH_ERR_UNBLIND);
	assert_int_equal(kh_rsa_unblind(k->n, k->nlen, x->a.c, seed2, z, m), KH_ERR_UNBLIND);
	z[7] ^= 0x80;
	assert_int_equal(kh_rsa_unblind(k->n, k->nlen, x->a.c, seed, z, m), KH_ERR_UNBLIND);
	/* z >= n is no answer; c >= n is no input */
	memset(z, 0xFF, k->nlen);
	assert_int_equal(kh_rsa_unblind(k->n, k->nlen, x->a.c, seed, z, m), KH_ERR_UNBLIND);
	assert_int_equal(kh_rsa_blind(k->n, k->nlen, z, seed, cp), KH_ERR_INVAL);
	/* a modulus too short, even, or without its top bit: refused */
	assert_int_equal(kh_rsa_blind(k->n, 128, x->a.c, seed, cp), KH_ERR_INVAL);
}

static void test_blinded_range(void **state)
{
	struct bw *x = *state;
	const struct listing_key *k = &x->ka;
	uint8_t v[KH_RSA_MAX_LEN];

	memset(v, 0, k->nlen);
	assert_int_equal(kh_rsa_blinded_in_range(k->n, k->nlen, v, k->nlen), KH_ERR_BLIND_RANGE); /* 0 */
	v[k->nlen - 1] = 1;
	assert_int_equal(kh_rsa_blinded_in_range(k->n, k->nlen, v, k->nlen), KH_ERR_BLIND_RANGE); /* 1 */
	v[k->nlen - 1] = 2;
	assert_int_equal(kh_rsa_blinded_in_range(k->n, k->nlen, v, k->nlen), KH_OK);
	memcpy(v, k->n, k->nlen);
	assert_int_equal(kh_rsa_blinded_in_range(k->n, k->nlen, v, k->nlen), KH_ERR_BLIND_RANGE); /* n */
	v[k->nlen - 1] -= 1;
	assert_int_equal(kh_rsa_blinded_in_range(k->n, k->nlen, v, k->nlen), KH_ERR_BLIND_RANGE); /* n - 1 */
	v[k->nlen - 1] -= 1;
	assert_int_equal(kh_rsa_blinded_in_range(k->n, k->nlen, v, k->nlen), KH_OK); /* n - 2 */
	memset(v, 0xFF, k->nlen);
	assert_int_equal(kh_rsa_blinded_in_range(k->n, k->nlen, v, k->nlen), KH_ERR_BLIND_RANGE); /* > n */
	assert_int_equal(kh_rsa_blinded_in_range(k->n, k->nlen, v, k->nlen - 1), KH_ERR_BLIND_RANGE); /* short */
}

/* Every record: parses back as written, each cut and a trailing byte refused, a flipped
 * signature byte refused with the key and accepted without it. */
static void check_record(const uint8_t *b, size_t n, const uint8_t *pk,
			 kh_err (*parse)(const uint8_t *, size_t, const uint8_t *, void *), void *out)
{
	uint8_t c[2048];

	assert_true(n + 1 <= sizeof c);
	assert_int_equal(parse(b, n, pk, out), KH_OK);
	for (size_t i = 0; i < n; i++)
		assert_int_not_equal(parse(b, i, pk, out), KH_OK);
	memcpy(c, b, n);
	c[n] = 0;
	assert_int_equal(parse(c, n + 1, NULL, out), KH_ERR_TRAILING);
	c[n - 1] ^= 1;
	assert_int_equal(parse(c, n, pk, out), KH_ERR_AUTH);
	assert_int_equal(parse(c, n, NULL, out), KH_OK);
	c[n - 1] ^= 1;
	c[4] = 2; /* version */
	assert_int_equal(parse(c, n, NULL, out), KH_ERR_VERSION);
	assert_int_equal(parse(b, n, pk, out), KH_OK); /* out points into b again */
}

static kh_err p_listing(const uint8_t *b, size_t n, const uint8_t *pk, void *o)
{
	return kh_escrow_listing_parse(b, n, pk, o);
}
static kh_err p_request(const uint8_t *b, size_t n, const uint8_t *pk, void *o)
{
	return kh_escrow_request_parse(b, n, pk, o);
}
static kh_err p_answer(const uint8_t *b, size_t n, const uint8_t *pk, void *o)
{
	return kh_escrow_answer_parse(b, n, pk, o);
}
static kh_err p_notice(const uint8_t *b, size_t n, const uint8_t *pk, void *o)
{
	return kh_escrow_notice_parse(b, n, pk, o);
}

static void test_records(void **state)
{
	struct bw *x = *state;
	struct kh_escrow_listing l;
	struct kh_escrow_request q;
	struct kh_escrow_answer an;
	struct kh_escrow_notice t;
	uint8_t req[KH_ESCROW_REQUEST_MAX], ans[KH_ESCROW_ANSWER_MAX], off[KH_ESCROW_OFFER_MAX];
	size_t reqlen = 0, anslen, dl = 0;
	const uint8_t *lp, *cp;
	size_t ll, cl;
	struct kh_wr w;

	check_record(x->a.listing, x->a.llen, x->epk, p_listing, &l);
	assert_int_equal(l.price, 1250);
	assert_string_equal(l.currency, "EUR");
	assert_string_equal(l.content, "song-1");
	assert_memory_equal(l.key, x->ka.spki, x->ka.spkilen);

	assert_int_equal(buy_start(&x->b1.t, &x->a, req, &reqlen), 0x9000);
	check_record(req, reqlen, x->b1_pk, p_request, &q);
	assert_memory_equal(q.listing, x->a.id, sizeof q.listing);
	assert_int_equal(q.price, 1250);
	assert_int_equal(q.escrow, ESCROW_UA);
	assert_int_equal(q.device, x->b1.ua);
	assert_int_equal(q.nlen, x->ka.nlen);
	anslen = answer(x, req, reqlen, &x->ka, 0, ans);
	check_record(ans, anslen, x->epk, p_answer, &an);
	assert_memory_equal(an.purchase, q.purchase, sizeof an.purchase);

	assert_int_equal(buy_finish(&x->b1.t, &x->a, ans, anslen, &dl), 0x9000);
	{
		struct kh_tlv tt[KH_ESCROW_T_MAX + 1];
		memset(tt, 0, sizeof tt);
		assert_int_equal(kh_tlv_take(rbuf, dl, tt, KH_ESCROW_T_MAX, 1u << KH_ESCROW_T_NOTICE), KH_OK);
		memcpy(ans, tt[KH_ESCROW_T_NOTICE].v, tt[KH_ESCROW_T_NOTICE].len);
		check_record(ans, tt[KH_ESCROW_T_NOTICE].len, x->b1_pk, p_notice, &t);
	}

	/* the offer and the header: round trip and cuts */
	kh_wr_init(&w, off, sizeof off);
	assert_int_equal(kh_escrow_offer_make(x->a.listing, x->a.llen, x->a.c, x->a.clen, &w), KH_OK);
	assert_int_equal(kh_escrow_offer_parse(off, w.len, &lp, &ll, &cp, &cl), KH_OK);
	assert_int_equal(ll, x->a.llen);
	assert_memory_equal(cp, x->a.c, cl);
	for (size_t i = 0; i < w.len; i++)
		assert_int_not_equal(kh_escrow_offer_parse(off, i, &lp, &ll, &cp, &cl), KH_OK);
	for (size_t i = 0; i < x->a.hlen; i++) {
		struct kh_escrow_header h;
		assert_int_not_equal(kh_escrow_header_parse(x->a.header, i, &h), KH_OK);
	}
	assert_int_equal(kh_escrow_header_check(&x->a.h, x->a.header, x->a.k), KH_OK);
	{
		uint8_t k2[KH_ESCROW_KEY_LEN];
		memcpy(k2, x->a.k, sizeof k2);
		k2[0] ^= 1;
		assert_int_equal(kh_escrow_header_check(&x->a.h, x->a.header, k2), KH_ERR_AUTH);
	}
}

/* ---- the device ---- */

static void test_purchase(void **state)
{
	struct bw *x = *state;
	uint8_t req[KH_ESCROW_REQUEST_MAX], ans[KH_ESCROW_ANSWER_MAX];
	size_t reqlen = 0, anslen, dl = 0;
	struct kh_escrow_request q;
	struct settled s, again;
	uint16_t osw;

	assert_int_equal(buy_start(&x->b1.t, &x->a, req, &reqlen), 0x9000);
	assert_int_equal(kh_escrow_request_parse(req, reqlen, x->b1_pk, &q), KH_OK);
	/* the request carries c', never c */
	assert_memory_not_equal(q.cprime, x->a.c, q.nlen);
	anslen = answer(x, req, reqlen, &x->ka, 0, ans);
	assert_int_equal(buy_finish(&x->b1.t, &x->a, ans, anslen, &dl), 0x9000);
	read_settled(x->b1_pk, dl, &s);
	assert_int_equal(s.notice.outcome, KH_ESCROW_DELIVERED);
	assert_int_equal(s.notice.reason, KH_ESCROW_R_NONE);
	assert_memory_equal(s.notice.purchase, q.purchase, sizeof q.purchase);
	assert_memory_equal(s.notice.listing, x->a.id, sizeof x->a.id);
	assert_int_equal(s.notice.device, x->b1.ua);
	assert_true(s.has_licence);
	/* K is nowhere in what the host saw */
	assert_null(memmem(rbuf, dl, x->a.k, sizeof x->a.k));
	assert_true(read_content(x->pt, &x->b1.t, &x->a, s.licence, &osw));

	/* the same answer again: settled, nothing changes; NOTICE gives the notice and a licence */
	assert_int_equal(buy_finish(&x->b1.t, &x->a, ans, anslen, &dl), kh_err_to_sw(KH_ERR_PURCHASE_STATE));
	assert_int_equal(by_purchase(&x->b1.t, KH_INS_BUY_NOTICE, q.purchase, &dl), 0x9000);
	read_settled(x->b1_pk, dl, &again);
	assert_memory_equal(&again.notice, &s.notice, sizeof s.notice);
	assert_true(again.has_licence);
	assert_true(read_content(x->pt, &x->b1.t, &x->a, again.licence, &osw));
	/* a delivered purchase cannot be cancelled into a refund */
	assert_int_equal(by_purchase(&x->b1.t, KH_INS_BUY_CANCEL, q.purchase, &dl), kh_err_to_sw(KH_ERR_PURCHASE_STATE));

	/* the licence opens nothing on another device, and nothing but its content */
	assert_false(read_content(x->pt, &x->b2.t, &x->a, s.licence, &osw));
	assert_int_equal(osw, kh_err_to_sw(KH_ERR_LICENCE));
	{
		struct offer *o2 = calloc(1, sizeof *o2);
		assert_non_null(o2);
		make_offer(x, o2, &x->ka, 1250, NULL, NULL);
		assert_false(read_content(x->pt, &x->b1.t, o2, s.licence, &osw));
		assert_int_equal(osw, kh_err_to_sw(KH_ERR_MANIFEST));
		free(o2);
	}
	/* a flipped chunk is refused and shows nothing */
	{
		uint8_t d[KH_APDU_MAX_DATA];
		size_t n = 0;
		n = tlv(d, sizeof d, n, KH_ESCROW_T_LICENCE, s.licence, KH_ESCROW_LICENCE_LEN);
		n = tlv(d, sizeof d, n, KH_ESCROW_T_HEADER, x->a.header, x->a.hlen);
		assert_int_equal(cmd(&x->b1.t, KH_INS_CONTENT_OPEN, d, n, &dl), 0x9000);
		kh_put_be32(d, 1);
		memcpy(d + 4, x->a.ct[1], KH_ESCROW_CHUNK_MAX + KH_TAG_LEN);
		d[4 + 100] ^= 1;
		assert_int_equal(cmd(&x->b1.t, KH_INS_CONTENT_CHUNK, d, 4 + KH_ESCROW_CHUNK_MAX + KH_TAG_LEN, &dl),
				 kh_err_to_sw(KH_ERR_CHUNK));
		assert_int_equal(dl, 0);
		/* chunk 1 given as chunk 0 */
		d[4 + 100] ^= 1;
		kh_put_be32(d, 0);
		assert_int_equal(cmd(&x->b1.t, KH_INS_CONTENT_CHUNK, d, 4 + KH_ESCROW_CHUNK_MAX + KH_TAG_LEN, &dl),
				 kh_err_to_sw(KH_ERR_CHUNK));
		assert_int_equal(cmd(&x->b1.t, KH_INS_CONTENT_CLOSE, NULL, 0, &dl), 0x9000);
	}
}

/* An answer that is not c'^d for this listing's key: failed, the buyer refunded, no K. */
static void expect_failed(struct bw *x, const struct offer *o, const struct listing_key *k, int flip, uint8_t reason)
{
	uint8_t req[KH_ESCROW_REQUEST_MAX], ans[KH_ESCROW_ANSWER_MAX];
	size_t reqlen = 0, anslen, dl = 0;
	struct settled s;

	assert_int_equal(buy_start(&x->b1.t, o, req, &reqlen), 0x9000);
	anslen = answer(x, req, reqlen, k, flip, ans);
	assert_int_equal(buy_finish(&x->b1.t, o, ans, anslen, &dl), 0x9000);
	read_settled(x->b1_pk, dl, &s);
	assert_int_equal(s.notice.outcome, KH_ESCROW_FAILED);
	assert_int_equal(s.notice.reason, reason);
	assert_false(s.has_licence);
	/* and the genuine answer, afterwards, opens nothing: r is gone */
	anslen = answer(x, req, reqlen, &x->ka, 0, ans);
	assert_int_equal(buy_finish(&x->b1.t, o, ans, anslen, &dl), kh_err_to_sw(KH_ERR_PURCHASE_STATE));
}

static void test_failed(void **state)
{
	struct bw *x = *state;
	struct offer *o = calloc(1, sizeof *o);
	uint8_t wrong[KH_ESCROW_KEY_LEN];

	assert_non_null(o);
	/* the escrow's answer tampered with on its way */
	expect_failed(x, &x->a, &x->ka, 1, KH_ESCROW_R_UNBLIND);
	/* listing A answered with listing B's key */
	expect_failed(x, &x->a, &x->kb, 0, KH_ESCROW_R_UNBLIND);
	/* a seller whose c holds another key than the content's */
	assert_int_equal(kh_random(wrong, sizeof wrong), KH_OK);
	make_offer(x, o, &x->ka, 99, wrong, NULL);
	expect_failed(x, o, &x->ka, 0, KH_ESCROW_R_COMMIT);
	/* a seller whose c was made for another listing (OAEP label) or another key */
	make_offer(x, o, &x->ka, 99, NULL, NULL);
	{
		uint8_t id2[KH_ESCROW_ID_LEN];
		memcpy(id2, o->id, sizeof id2);
		id2[0] ^= 1;
		assert_int_equal(kh_rsa_oaep_encrypt(x->ka.spki, x->ka.spkilen, id2, sizeof id2, o->k, sizeof o->k, o->c,
						     &o->clen),
				 KH_OK);
	}
	expect_failed(x, o, &x->ka, 0, KH_ESCROW_R_KEY);
	free(o);
}

/* What BUY START was given cannot be swapped at BUY FINISH; a refusal leaves the purchase as it was. */
static void test_binding(void **state)
{
	struct bw *x = *state;
	uint8_t req[KH_ESCROW_REQUEST_MAX], ans[KH_ESCROW_ANSWER_MAX];
	size_t reqlen = 0, anslen, dl = 0;
	struct offer *o = calloc(1, sizeof *o);
	struct settled s;

	assert_non_null(o);
	assert_int_equal(buy_start(&x->b1.t, &x->a, req, &reqlen), 0x9000);
	anslen = answer(x, req, reqlen, &x->ka, 0, ans);
	/* another content's header */
	*o = x->a;
	{
		struct offer *o2 = calloc(1, sizeof *o2);
		assert_non_null(o2);
		make_offer(x, o2, &x->ka, 1250, NULL, NULL);
		memcpy(o->header, o2->header, o2->hlen);
		o->hlen = o2->hlen;
		assert_int_equal(buy_finish(&x->b1.t, o, ans, anslen, &dl), kh_err_to_sw(KH_ERR_AUTH));
		/* another c */
		*o = x->a;
		memcpy(o->c, o2->c, o2->clen);
		assert_int_equal(buy_finish(&x->b1.t, o, ans, anslen, &dl), kh_err_to_sw(KH_ERR_AUTH));
		/* another listing on the same key */
		*o = x->a;
		memcpy(o->listing, o2->listing, o2->llen);
		o->llen = o2->llen;
		assert_int_equal(buy_finish(&x->b1.t, o, ans, anslen, &dl), kh_err_to_sw(KH_ERR_AUTH));
		free(o2);
	}
	/* an answer naming a purchase this device never made */
	{
		uint8_t bad[KH_ESCROW_ANSWER_MAX];
		memcpy(bad, ans, anslen);
		bad[5] ^= 1;
		assert_int_equal(buy_finish(&x->b1.t, &x->a, bad, anslen, &dl), kh_err_to_sw(KH_ERR_NOTFOUND));
	}
	/* the same answer on another device: it has no such purchase */
	assert_int_equal(buy_finish(&x->b2.t, &x->a, ans, anslen, &dl), kh_err_to_sw(KH_ERR_NOTFOUND));
	/* still pending: the genuine parts finish it */
	assert_int_equal(buy_finish(&x->b1.t, &x->a, ans, anslen, &dl), 0x9000);
	read_settled(x->b1_pk, dl, &s);
	assert_int_equal(s.notice.outcome, KH_ESCROW_DELIVERED);
	free(o);
}

static void test_cancel(void **state)
{
	struct bw *x = *state;
	uint8_t req[KH_ESCROW_REQUEST_MAX], ans[KH_ESCROW_ANSWER_MAX];
	size_t reqlen = 0, anslen, dl = 0;
	struct kh_escrow_request q;
	struct settled s;

	assert_int_equal(buy_start(&x->b1.t, &x->a, req, &reqlen), 0x9000);
	assert_int_equal(kh_escrow_request_parse(req, reqlen, NULL, &q), KH_OK);
	assert_int_equal(by_purchase(&x->b1.t, KH_INS_BUY_NOTICE, q.purchase, &dl), kh_err_to_sw(KH_ERR_PURCHASE_STATE));
	assert_int_equal(by_purchase(&x->b1.t, KH_INS_BUY_CANCEL, q.purchase, &dl), 0x9000);
	read_settled(x->b1_pk, dl, &s);
	assert_int_equal(s.notice.outcome, KH_ESCROW_FAILED);
	assert_int_equal(s.notice.reason, KH_ESCROW_R_CANCELLED);
	/* cancelling again gives the same notice */
	assert_int_equal(by_purchase(&x->b1.t, KH_INS_BUY_CANCEL, q.purchase, &dl), 0x9000);
	/* the escrow's genuine answer after the cancel opens nothing */
	anslen = answer(x, req, reqlen, &x->ka, 0, ans);
	assert_int_equal(buy_finish(&x->b1.t, &x->a, ans, anslen, &dl), kh_err_to_sw(KH_ERR_PURCHASE_STATE));
}

/* A pending purchase's r survives a power cycle (the state on file, reopened). */
static void test_power_cycle(void **state)
{
	struct bw *x = *state;
	uint8_t req[KH_ESCROW_REQUEST_MAX], ans[KH_ESCROW_ANSWER_MAX];
	size_t reqlen = 0, anslen, dl = 0;
	char *card = path_in(x->w->dir, "buyer.card");
	struct kh_softmod *sm = NULL;
	struct kh_transport t;
	struct settled s;
	uint16_t osw;

	assert_int_equal(buy_start(&x->b1.t, &x->a, req, &reqlen), 0x9000);
	assert_int_equal(kh_softmod_save(x->b1.sm, card, NULL), KH_OK);
	assert_int_equal(kh_softmod_open(card, NULL, &sm, NULL), KH_OK);
	kh_transport_inproc(&t, kh_softmod_module(sm));
	anslen = answer(x, req, reqlen, &x->ka, 0, ans);
	assert_int_equal(buy_finish(&t, &x->a, ans, anslen, &dl), 0x9000);
	read_settled(x->b1_pk, dl, &s);
	assert_int_equal(s.notice.outcome, KH_ESCROW_DELIVERED);
	assert_true(read_content(x->pt, &t, &x->a, s.licence, &osw));
	kh_softmod_free(sm);
	free(card);
}

/* Every slot under way: the next purchase is refused until one is settled; settled slots are
 * reused oldest first. */
static void test_slots(void **state)
{
	struct bw *x = *state;
	uint8_t req[KH_ESCROW_REQUEST_MAX], first[KH_ESCROW_ID_LEN];
	size_t reqlen = 0, dl = 0, pending = 0;
	struct kh_escrow_request q;

	/* b2 is fresh: fill it */
	for (size_t i = 0; i < 16; i++) {
		assert_int_equal(buy_start(&x->b2.t, &x->a, req, &reqlen), 0x9000);
		assert_int_equal(kh_escrow_request_parse(req, reqlen, NULL, &q), KH_OK);
		if (i == 0)
			memcpy(first, q.purchase, sizeof first);
	}
	assert_int_equal(buy_start(&x->b2.t, &x->a, req, &reqlen), kh_err_to_sw(KH_ERR_PURCHASES_FULL));
	assert_int_equal(cmd(&x->b2.t, KH_INS_BUY_LIST, NULL, 0, &dl), 0x9000);
	assert_int_equal(dl, 16 * (3 + KH_ESCROW_SLOT_LEN));
	for (size_t i = 0; i < dl; i += 3 + KH_ESCROW_SLOT_LEN)
		pending += rbuf[i + 3] == KH_ESCROW_SLOT_PENDING;
	assert_int_equal(pending, 16);
	assert_int_equal(by_purchase(&x->b2.t, KH_INS_BUY_CANCEL, first, &dl), 0x9000);
	assert_int_equal(buy_start(&x->b2.t, &x->a, req, &reqlen), 0x9000);
	/* the cancelled one made room, and is gone */
	assert_int_equal(by_purchase(&x->b2.t, KH_INS_BUY_NOTICE, first, &dl), kh_err_to_sw(KH_ERR_NOTFOUND));
}

/* Only a buyer device knows these commands; a blank one is refused. */
static void test_roles(void **state)
{
	struct bw *x = *state;
	uint8_t req[KH_ESCROW_REQUEST_MAX];
	size_t reqlen = 0;

	assert_int_equal(buy_start(&x->card.t, &x->a, req, &reqlen), kh_err_to_sw(KH_ERR_APDU_INS));
	assert_int_equal(buy_start(&x->w->blank.t, &x->a, req, &reqlen), kh_err_to_sw(KH_ERR_APDU_INS));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_blind_unblind), cmocka_unit_test(test_blinded_range),
		cmocka_unit_test(test_records),       cmocka_unit_test(test_purchase),
		cmocka_unit_test(test_failed),        cmocka_unit_test(test_binding),
		cmocka_unit_test(test_cancel),        cmocka_unit_test(test_power_cycle),
		cmocka_unit_test(test_slots),         cmocka_unit_test(test_roles),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
