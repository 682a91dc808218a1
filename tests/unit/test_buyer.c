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

#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "keyhole/apdu.h"
#include "keyhole/cert.h"
#include "keyhole/device.h"
#include "keyhole/escrow.h"
#include "keyhole/file.h"
#include "testutil.h"
#include "world.h"

#define ESCROW_UA 0xFE000010u
#define PT_LEN (2 * KH_ESCROW_CHUNK_MAX + 777) /* three chunks, the last short */

struct listing_key {
	EVP_PKEY *pk;
	uint8_t spki[KH_RSA_SPKI_MAX];
	size_t spkilen;
	uint8_t n[KH_RSA_MAX_LEN];
	size_t nlen;
};

struct offer {
	uint8_t listing[KH_ESCROW_LISTING_MAX];
	size_t llen;
	uint8_t id[KH_ESCROW_ID_LEN];
	uint8_t c[KH_RSA_MAX_LEN];
	size_t clen;
	uint8_t k[KH_ESCROW_KEY_LEN];
	uint8_t header[KH_ESCROW_HEADER_MAX];
	size_t hlen;
	struct kh_escrow_header h;
	uint8_t ct[3][KH_ESCROW_CHUNK_MAX + KH_TAG_LEN];
};

struct bw {
	struct world *w;
	struct mod b1, b2, card;
	uint8_t esk[32], epk[32];
	struct listing_key ka, kb;
	uint8_t pt[PT_LEN];
	struct offer a;       /* listing A, the genuine offer */
	uint8_t b1_pk[32];    /* b1's certified signing key */
};

static uint8_t rbuf[KH_APDU_MAX_RESP];

static uint16_t cmd(struct kh_transport *t, uint8_t ins, const uint8_t *d, size_t n, size_t *dlen)
{
	return send_apdu(t, KH_CLA, ins, 0, 0, d, n, rbuf, sizeof rbuf, dlen);
}

static void make_key(struct listing_key *k, int bits)
{
	unsigned char *p = k->spki;
	int len;

	k->pk = EVP_RSA_gen((unsigned)bits);
	assert_non_null(k->pk);
	len = i2d_PUBKEY(k->pk, NULL);
	assert_true(len > 0 && (size_t)len <= sizeof k->spki);
	assert_int_equal(i2d_PUBKEY(k->pk, &p), len);
	k->spkilen = (size_t)len;
	assert_int_equal(kh_rsa_spki_modulus(k->spki, k->spkilen, k->n, &k->nlen), KH_OK);
	assert_int_equal(k->nlen, (size_t)bits / 8);
}

/* x (nlen bytes) mod k's n, into out (k->nlen bytes). */
static void reduce(const struct listing_key *k, const uint8_t *x, size_t nlen, uint8_t *out)
{
	BIGNUM *bx = BN_bin2bn(x, (int)nlen, NULL), *bn = BN_bin2bn(k->n, (int)k->nlen, NULL);
	BN_CTX *ctx = BN_CTX_new();

	assert_true(bx && bn && ctx);
	assert_true(BN_nnmod(bx, bx, bn, ctx) == 1);
	assert_int_equal(BN_bn2binpad(bx, out, (int)k->nlen), (int)k->nlen);
	BN_free(bx);
	BN_free(bn);
	BN_CTX_free(ctx);
}

/* The escrow's private operation: z = x^d mod n, as its signing process does it. */
static void rsa_private(const struct listing_key *k, const uint8_t *x, uint8_t *z)
{
	EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(k->pk, NULL);
	size_t outl = k->nlen;

	assert_non_null(c);
	assert_true(EVP_PKEY_decrypt_init(c) > 0);
	assert_true(EVP_PKEY_CTX_set_rsa_padding(c, RSA_NO_PADDING) > 0);
	assert_true(EVP_PKEY_decrypt(c, z, &outl, x, k->nlen) > 0);
	assert_int_equal(outl, k->nlen);
	EVP_PKEY_CTX_free(c);
}

/* The seller's side: a listing on key k at price, K, the content under K, and c for K2 (K when
 * NULL) under key kc (k when NULL). */
static void make_offer(struct bw *x, struct offer *o, const struct listing_key *k, uint64_t price,
		       const uint8_t *k2, const struct listing_key *kc)
{
	struct kh_escrow_listing l;
	struct kh_wr w;
	uint8_t ck[KH_KEY_LEN];

	memset(o, 0, sizeof *o);
	memset(&l, 0, sizeof l);
	assert_int_equal(kh_random(l.id, sizeof l.id), KH_OK);
	memcpy(o->id, l.id, sizeof o->id);
	l.escrow = ESCROW_UA;
	l.seller = 42;
	l.price = price;
	memcpy(l.currency, "EUR", 4);
	l.deadline = 3600;
	l.created = 1700000000;
	strcpy(l.content, "song-1");
	l.key = k->spki;
	l.keylen = k->spkilen;
	kh_wr_init(&w, o->listing, sizeof o->listing);
	assert_int_equal(kh_escrow_listing_sign(&l, x->esk, &w), KH_OK);
	o->llen = w.len;

	assert_int_equal(kh_random(o->k, sizeof o->k), KH_OK);
	kh_wr_init(&w, o->header, sizeof o->header);
	assert_int_equal(kh_escrow_header_make("song-1", KH_ESCROW_CHUNK_MAX, PT_LEN, o->k, &w), KH_OK);
	o->hlen = w.len;
	assert_int_equal(kh_escrow_header_parse(o->header, o->hlen, &o->h), KH_OK);
	assert_int_equal(o->h.chunks, 3);
	assert_int_equal(kh_escrow_chunk_key(o->k, ck), KH_OK);
	for (uint64_t i = 0, off = 0; i < 3; off += kh_escrow_chunk_len(&o->h, i), i++)
		assert_int_equal(kh_escrow_chunk_seal(ck, &o->h, i, x->pt + off, kh_escrow_chunk_len(&o->h, i), o->ct[i]),
				 KH_OK);
	kh_wipe(ck, sizeof ck);
	kc = kc ? kc : k;
	assert_int_equal(kh_rsa_oaep_encrypt(kc->spki, kc->spkilen, o->id, sizeof o->id, k2 ? k2 : o->k, KH_ESCROW_KEY_LEN,
					     o->c, &o->clen),
			 KH_OK);
}

static size_t tlv(uint8_t *b, size_t cap, size_t at, uint8_t tag, const uint8_t *v, size_t n)
{
	struct kh_wr w;
	kh_wr_init(&w, b + at, cap - at);
	assert_int_equal(kh_tlv_put(&w, tag, v, n), KH_OK);
	return at + w.len;
}

/* BUY START on o: the request (its bytes into req). */
static uint16_t buy_start(struct kh_transport *t, const struct offer *o, uint8_t *req, size_t *reqlen)
{
	uint8_t d[KH_APDU_MAX_DATA];
	size_t n = 0, dl = 0;
	struct kh_tlv tt[KH_ESCROW_T_MAX + 1];
	uint16_t sw;

	n = tlv(d, sizeof d, n, KH_ESCROW_T_LISTING, o->listing, o->llen);
	n = tlv(d, sizeof d, n, KH_ESCROW_T_C, o->c, o->clen);
	n = tlv(d, sizeof d, n, KH_ESCROW_T_HEADER_HASH, o->h.hash, sizeof o->h.hash);
	sw = cmd(t, KH_INS_BUY_START, d, n, &dl);
	if (sw == 0x9000) {
		memset(tt, 0, sizeof tt);
		assert_int_equal(kh_tlv_take(rbuf, dl, tt, KH_ESCROW_T_MAX, 1u << KH_ESCROW_T_REQUEST), KH_OK);
		memcpy(req, tt[KH_ESCROW_T_REQUEST].v, tt[KH_ESCROW_T_REQUEST].len);
		*reqlen = tt[KH_ESCROW_T_REQUEST].len;
	}
	return sw;
}

/* The escrow's signed answer to req, z computed with key k (flip: a byte of z flipped after). */
static size_t escrow_answer(struct bw *x, const uint8_t *req, size_t reqlen, const struct listing_key *k, int flip,
			    uint8_t *ans)
{
	struct kh_escrow_request q;
	struct kh_escrow_answer an;
	uint8_t z[KH_RSA_MAX_LEN];
	struct kh_wr w;

	assert_int_equal(kh_escrow_request_parse(req, reqlen, x->b1_pk, &q), KH_OK);
	/* with the listing's own key c' is in range; another key's private operation (the escrow's
	 * mistake the device must catch) takes it reduced mod that key's n */
	if (k == &x->ka) {
		assert_int_equal(kh_rsa_blinded_in_range(k->n, k->nlen, q.cprime, q.nlen), KH_OK);
		rsa_private(k, q.cprime, z);
	} else {
		uint8_t red[KH_RSA_MAX_LEN];
		reduce(k, q.cprime, q.nlen, red);
		rsa_private(k, red, z);
	}
	if (flip)
		z[k->nlen / 2] ^= 0x01;
	memset(&an, 0, sizeof an);
	memcpy(an.purchase, q.purchase, sizeof an.purchase);
	memcpy(an.listing, q.listing, sizeof an.listing);
	an.escrow = q.escrow;
	assert_int_equal(kh_sha256(req, reqlen, an.request_hash), KH_OK);
	an.deadline = 1700003600;
	an.z = z;
	an.nlen = k->nlen;
	kh_wr_init(&w, ans, KH_ESCROW_ANSWER_MAX);
	assert_int_equal(kh_escrow_answer_sign(&an, x->esk, &w), KH_OK);
	return w.len;
}

struct settled {
	struct kh_escrow_notice notice;
	uint8_t licence[KH_ESCROW_LICENCE_LEN];
	int has_licence;
};

/* Parse a notice (checked with b1's key) and the licence that may follow it. */
static void read_settled(struct bw *x, size_t dl, struct settled *s)
{
	struct kh_tlv tt[KH_ESCROW_T_MAX + 1];

	memset(s, 0, sizeof *s);
	memset(tt, 0, sizeof tt);
	assert_int_equal(kh_tlv_take(rbuf, dl, tt, KH_ESCROW_T_MAX, 1u << KH_ESCROW_T_NOTICE), KH_OK);
	assert_int_equal(tt[KH_ESCROW_T_NOTICE].len, KH_ESCROW_NOTICE_LEN);
	assert_int_equal(kh_escrow_notice_parse(tt[KH_ESCROW_T_NOTICE].v, tt[KH_ESCROW_T_NOTICE].len, x->b1_pk, &s->notice),
			 KH_OK);
	if (tt[KH_ESCROW_T_LICENCE].v) {
		assert_int_equal(tt[KH_ESCROW_T_LICENCE].len, KH_ESCROW_LICENCE_LEN);
		memcpy(s->licence, tt[KH_ESCROW_T_LICENCE].v, KH_ESCROW_LICENCE_LEN);
		s->has_licence = 1;
	}
}

/* BUY FINISH with the parts given (o's by default). */
static uint16_t buy_finish(struct kh_transport *t, const struct offer *o, const uint8_t *ans, size_t anslen,
			   size_t *dl)
{
	uint8_t d[KH_APDU_MAX_DATA];
	size_t n = 0;

	n = tlv(d, sizeof d, n, KH_ESCROW_T_LISTING, o->listing, o->llen);
	n = tlv(d, sizeof d, n, KH_ESCROW_T_C, o->c, o->clen);
	n = tlv(d, sizeof d, n, KH_ESCROW_T_HEADER, o->header, o->hlen);
	n = tlv(d, sizeof d, n, KH_ESCROW_T_ANSWER, ans, anslen);
	return cmd(t, KH_INS_BUY_FINISH, d, n, dl);
}

static uint16_t by_purchase(struct kh_transport *t, uint8_t ins, const uint8_t *pid, size_t *dl)
{
	uint8_t d[3 + KH_ESCROW_ID_LEN];
	size_t n = tlv(d, sizeof d, 0, KH_ESCROW_T_PURCHASE, pid, KH_ESCROW_ID_LEN);
	return cmd(t, ins, d, n, dl);
}

/* Open the content with the licence and read every chunk: 1 when it reads back as pt. */
static int read_content(struct bw *x, struct kh_transport *t, const struct offer *o, const uint8_t *licence,
			uint16_t *open_sw)
{
	uint8_t d[KH_APDU_MAX_DATA];
	size_t n = 0, dl = 0, off = 0;

	n = tlv(d, sizeof d, n, KH_ESCROW_T_LICENCE, licence, KH_ESCROW_LICENCE_LEN);
	n = tlv(d, sizeof d, n, KH_ESCROW_T_HEADER, o->header, o->hlen);
	*open_sw = cmd(t, KH_INS_CONTENT_OPEN, d, n, &dl);
	if (*open_sw != 0x9000)
		return 0;
	assert_int_equal(dl, 16);
	assert_int_equal(kh_get_be64(rbuf), PT_LEN);
	assert_int_equal(kh_get_be64(rbuf + 8), 3);
	for (uint32_t i = 0; i < 3; i++) {
		size_t cl = kh_escrow_chunk_len(&o->h, i);
		kh_put_be32(d, i);
		memcpy(d + 4, o->ct[i], cl + KH_TAG_LEN);
		if (cmd(t, KH_INS_CONTENT_CHUNK, d, 4 + cl + KH_TAG_LEN, &dl) != 0x9000 || dl != cl ||
		    memcmp(rbuf, x->pt + off, cl) != 0)
			return 0;
		off += cl;
	}
	assert_int_equal(cmd(t, KH_INS_CONTENT_CLOSE, NULL, 0, &dl), 0x9000);
	return 1;
}

static void cert_pk(struct bw *x, struct kh_transport *t, uint8_t pk[32])
{
	size_t dl = 0;
	struct kh_cert_info ci;

	assert_int_equal(send_apdu(t, KH_CLA, KH_INS_GET_CERT, 1, 0, NULL, 0, rbuf, sizeof rbuf, &dl), 0x9000);
	assert_int_equal(kh_cert_check(rbuf, dl, x->w->root_pk, KH_ROLE_BUYER, KH_CERT_KEY_ED25519, 0, &ci), KH_OK);
	memcpy(pk, ci.pub, 32);
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
	cert_pk(x, &x->b1.t, x->b1_pk);
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
	anslen = escrow_answer(x, req, reqlen, &x->ka, 0, ans);
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
	anslen = escrow_answer(x, req, reqlen, &x->ka, 0, ans);
	assert_int_equal(buy_finish(&x->b1.t, &x->a, ans, anslen, &dl), 0x9000);
	read_settled(x, dl, &s);
	assert_int_equal(s.notice.outcome, KH_ESCROW_DELIVERED);
	assert_int_equal(s.notice.reason, KH_ESCROW_R_NONE);
	assert_memory_equal(s.notice.purchase, q.purchase, sizeof q.purchase);
	assert_memory_equal(s.notice.listing, x->a.id, sizeof x->a.id);
	assert_int_equal(s.notice.device, x->b1.ua);
	assert_true(s.has_licence);
	/* K is nowhere in what the host saw */
	assert_null(memmem(rbuf, dl, x->a.k, sizeof x->a.k));
	assert_true(read_content(x, &x->b1.t, &x->a, s.licence, &osw));

	/* the same answer again: settled, nothing changes; NOTICE gives the notice and a licence */
	assert_int_equal(buy_finish(&x->b1.t, &x->a, ans, anslen, &dl), kh_err_to_sw(KH_ERR_PURCHASE_STATE));
	assert_int_equal(by_purchase(&x->b1.t, KH_INS_BUY_NOTICE, q.purchase, &dl), 0x9000);
	read_settled(x, dl, &again);
	assert_memory_equal(&again.notice, &s.notice, sizeof s.notice);
	assert_true(again.has_licence);
	assert_true(read_content(x, &x->b1.t, &x->a, again.licence, &osw));
	/* a delivered purchase cannot be cancelled into a refund */
	assert_int_equal(by_purchase(&x->b1.t, KH_INS_BUY_CANCEL, q.purchase, &dl), kh_err_to_sw(KH_ERR_PURCHASE_STATE));

	/* the licence opens nothing on another device, and nothing but its content */
	assert_false(read_content(x, &x->b2.t, &x->a, s.licence, &osw));
	assert_int_equal(osw, kh_err_to_sw(KH_ERR_LICENCE));
	{
		struct offer *o2 = calloc(1, sizeof *o2);
		assert_non_null(o2);
		make_offer(x, o2, &x->ka, 1250, NULL, NULL);
		assert_false(read_content(x, &x->b1.t, o2, s.licence, &osw));
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
	anslen = escrow_answer(x, req, reqlen, k, flip, ans);
	assert_int_equal(buy_finish(&x->b1.t, o, ans, anslen, &dl), 0x9000);
	read_settled(x, dl, &s);
	assert_int_equal(s.notice.outcome, KH_ESCROW_FAILED);
	assert_int_equal(s.notice.reason, reason);
	assert_false(s.has_licence);
	/* and the genuine answer, afterwards, opens nothing: r is gone */
	anslen = escrow_answer(x, req, reqlen, &x->ka, 0, ans);
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
	anslen = escrow_answer(x, req, reqlen, &x->ka, 0, ans);
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
	read_settled(x, dl, &s);
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
	read_settled(x, dl, &s);
	assert_int_equal(s.notice.outcome, KH_ESCROW_FAILED);
	assert_int_equal(s.notice.reason, KH_ESCROW_R_CANCELLED);
	/* cancelling again gives the same notice */
	assert_int_equal(by_purchase(&x->b1.t, KH_INS_BUY_CANCEL, q.purchase, &dl), 0x9000);
	/* the escrow's genuine answer after the cancel opens nothing */
	anslen = escrow_answer(x, req, reqlen, &x->ka, 0, ans);
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
	anslen = escrow_answer(x, req, reqlen, &x->ka, 0, ans);
	assert_int_equal(buy_finish(&t, &x->a, ans, anslen, &dl), 0x9000);
	read_settled(x, dl, &s);
	assert_int_equal(s.notice.outcome, KH_ESCROW_DELIVERED);
	assert_true(read_content(x, &t, &x->a, s.licence, &osw));
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
