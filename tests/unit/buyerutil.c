/*
 * The seller, the escrow and the device's commands for the buyer device's tests (buyerutil.h).
 */
#include <string.h>

#include <openssl/bn.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "buyerutil.h"
#include "keyhole/cert.h"
#include "keyhole/device.h"
#include "testutil.h"
#include "world.h"

uint8_t rbuf[KH_APDU_MAX_RESP];

uint16_t cmd(struct kh_transport *t, uint8_t ins, const uint8_t *d, size_t n, size_t *dlen)
{
	return send_apdu(t, KH_CLA, ins, 0, 0, d, n, rbuf, sizeof rbuf, dlen);
}

size_t tlv(uint8_t *b, size_t cap, size_t at, uint8_t tag, const uint8_t *v, size_t n)
{
	struct kh_wr w;
	kh_wr_init(&w, b + at, cap - at);
	assert_int_equal(kh_tlv_put(&w, tag, v, n), KH_OK);
	return at + w.len;
}

void make_key(struct listing_key *k, int bits)
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

void rsa_private(const struct listing_key *k, const uint8_t *x, uint8_t *z)
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

/* ---- the seller ---- */

void offer_listing(struct offer *o, const uint8_t esk[static 32], uint32_t escrow, const struct listing_key *k,
		   uint64_t price)
{
	struct kh_escrow_listing l;
	struct kh_wr w;

	memset(o, 0, sizeof *o);
	memset(&l, 0, sizeof l);
	assert_int_equal(kh_random(l.id, sizeof l.id), KH_OK);
	memcpy(o->id, l.id, sizeof o->id);
	l.escrow = escrow;
	l.seller = 42;
	l.price = price;
	memcpy(l.currency, "EUR", 4);
	l.deadline = 3600;
	l.created = 1700000000;
	strcpy(l.content, "song-1");
	l.key = k->spki;
	l.keylen = k->spkilen;
	kh_wr_init(&w, o->listing, sizeof o->listing);
	assert_int_equal(kh_escrow_listing_sign(&l, esk, &w), KH_OK);
	o->llen = w.len;
}

void offer_content(struct offer *o, const uint8_t *pt, const uint8_t *k)
{
	struct kh_wr w;
	uint8_t ck[KH_KEY_LEN];

	if (k)
		memcpy(o->k, k, sizeof o->k);
	else
		assert_int_equal(kh_random(o->k, sizeof o->k), KH_OK);
	kh_wr_init(&w, o->header, sizeof o->header);
	assert_int_equal(kh_escrow_header_make("song-1", KH_ESCROW_CHUNK_MAX, PT_LEN, o->k, &w), KH_OK);
	o->hlen = w.len;
	assert_int_equal(kh_escrow_header_parse(o->header, o->hlen, &o->h), KH_OK);
	assert_int_equal(o->h.chunks, 3);
	assert_int_equal(kh_escrow_chunk_key(o->k, ck), KH_OK);
	for (uint64_t i = 0, off = 0; i < 3; off += kh_escrow_chunk_len(&o->h, i), i++)
		assert_int_equal(kh_escrow_chunk_seal(ck, &o->h, i, pt + off, kh_escrow_chunk_len(&o->h, i), o->ct[i]),
				 KH_OK);
	kh_wipe(ck, sizeof ck);
}

void offer_c(struct offer *o, const struct listing_key *kc, const uint8_t *m, size_t mlen)
{
	assert_int_equal(kh_rsa_oaep_encrypt(kc->spki, kc->spkilen, o->id, sizeof o->id, m, mlen, o->c, &o->clen), KH_OK);
}

/* ---- the escrow and the device ---- */

uint16_t buy_start(struct kh_transport *t, const struct offer *o, uint8_t *req, size_t *reqlen)
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

size_t escrow_answer(const uint8_t esk[static 32], const uint8_t dev_pk[static 32], const uint8_t *req,
		     size_t reqlen, const struct listing_key *k, int own, int flip, uint8_t *ans)
{
	struct kh_escrow_request q;
	struct kh_escrow_answer an;
	uint8_t z[KH_RSA_MAX_LEN];
	struct kh_wr w;

	assert_int_equal(kh_escrow_request_parse(req, reqlen, dev_pk, &q), KH_OK);
	if (own) {
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
	assert_int_equal(kh_escrow_answer_sign(&an, esk, &w), KH_OK);
	return w.len;
}

uint16_t buy_finish(struct kh_transport *t, const struct offer *o, const uint8_t *ans, size_t anslen, size_t *dl)
{
	uint8_t d[KH_APDU_MAX_DATA];
	size_t n = 0;

	n = tlv(d, sizeof d, n, KH_ESCROW_T_LISTING, o->listing, o->llen);
	n = tlv(d, sizeof d, n, KH_ESCROW_T_C, o->c, o->clen);
	n = tlv(d, sizeof d, n, KH_ESCROW_T_HEADER, o->header, o->hlen);
	n = tlv(d, sizeof d, n, KH_ESCROW_T_ANSWER, ans, anslen);
	return cmd(t, KH_INS_BUY_FINISH, d, n, dl);
}

uint16_t by_purchase(struct kh_transport *t, uint8_t ins, const uint8_t *pid, size_t *dl)
{
	uint8_t d[3 + KH_ESCROW_ID_LEN];
	size_t n = tlv(d, sizeof d, 0, KH_ESCROW_T_PURCHASE, pid, KH_ESCROW_ID_LEN);
	return cmd(t, ins, d, n, dl);
}

void read_settled(const uint8_t dev_pk[static 32], size_t dl, struct settled *s)
{
	struct kh_tlv tt[KH_ESCROW_T_MAX + 1];

	memset(s, 0, sizeof *s);
	memset(tt, 0, sizeof tt);
	assert_int_equal(kh_tlv_take(rbuf, dl, tt, KH_ESCROW_T_MAX, 1u << KH_ESCROW_T_NOTICE), KH_OK);
	assert_int_equal(tt[KH_ESCROW_T_NOTICE].len, KH_ESCROW_NOTICE_LEN);
	assert_int_equal(kh_escrow_notice_parse(tt[KH_ESCROW_T_NOTICE].v, tt[KH_ESCROW_T_NOTICE].len, dev_pk, &s->notice),
			 KH_OK);
	if (tt[KH_ESCROW_T_LICENCE].v) {
		assert_int_equal(tt[KH_ESCROW_T_LICENCE].len, KH_ESCROW_LICENCE_LEN);
		memcpy(s->licence, tt[KH_ESCROW_T_LICENCE].v, KH_ESCROW_LICENCE_LEN);
		s->has_licence = 1;
	}
}

int read_content(const uint8_t *pt, struct kh_transport *t, const struct offer *o, const uint8_t *licence,
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
		    memcmp(rbuf, pt + off, cl) != 0)
			return 0;
		off += cl;
	}
	assert_int_equal(cmd(t, KH_INS_CONTENT_CLOSE, NULL, 0, &dl), 0x9000);
	return 1;
}

void device_key(struct kh_transport *t, const uint8_t root_pk[static 32], int pairing, uint8_t pk[static 32])
{
	size_t dl = 0;
	struct kh_cert_info ci;

	/* GET CERT: P1 0 the pairing certificate, 1 the signing one */
	assert_int_equal(send_apdu(t, KH_CLA, KH_INS_GET_CERT, pairing ? 0 : 1, 0, NULL, 0, rbuf, sizeof rbuf, &dl),
			 0x9000);
	assert_int_equal(kh_cert_check(rbuf, dl, root_pk, KH_ROLE_BUYER, pairing ? KH_CERT_KEY_X25519 : KH_CERT_KEY_ED25519,
				       0, &ci),
			 KH_OK);
	memcpy(pk, ci.pub, 32);
}
