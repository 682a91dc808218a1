/*
 * Shamir secret sharing over GF(2^256 - 189) for the split-key escrow of seed 003 (Fig. 5),
 * its share record and the device's sealed share (include/keyhole/shamir.h).
 *
 * Where OpenSSL is called: this file is part of the crypto facade for big numbers. It includes
 * OpenSSL's bn.h and nothing else of OpenSSL; HPKE and randomness come through crypto.h and
 * hpke.h. BIGNUMs come from a secure BN_CTX (BN_CTX_secure_new), each one holding a secret is
 * BN_clear()ed before the context ends, and BN_CTX_free clears the pool again; byte copies of
 * coefficients, shares and sums are wiped on every path.
 *
 * Constant time, as far as OpenSSL's public BIGNUM API allows (docs/internals/shamir.md):
 * every product with a secret operand (a coefficient, y, a partial sum) is a Montgomery
 * multiplication (BN_mod_mul_montgomery, the public factor converted to Montgomery form), and
 * every sum of secrets BN_mod_add_quick; secrets carry BN_FLG_CONSTTIME. The inverses, the
 * Lagrange coefficients and the powers of x are of public values only (x travels in the clear).
 * Range checks of secrets (< P) are branch-free byte loops. What OpenSSL leaves variable: a
 * BIGNUM whose top 64-bit word is zero takes another path (a 2^-64 event for a uniform value).
 */
#include <string.h>

#include <openssl/bn.h>

#include "keyhole/buf.h"
#include "keyhole/crypto.h"
#include "keyhole/hpke.h"
#include "keyhole/shamir.h"

#define L KH_SHAMIR_LEN
#define MAX_DRAWS 8 /* a fair draw is refused with probability 189 / 2^256 */

const uint8_t kh_shamir_p[L] = {
	0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
	0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x43,
};

static const uint8_t magic[4] = {'K', 'H', 'S', 'H'};

/* 1 when v < P, without a branch on v: the borrow out of v - P. */
static unsigned lt_p(const uint8_t v[static L])
{
	unsigned borrow = 0;

	for (size_t i = L; i-- > 0;)
		borrow = ((unsigned)v[i] - kh_shamir_p[i] - borrow) >> 8 & 1;
	return borrow;
}

/* 1 when v is zero, without a branch on v. */
static unsigned is_zero(const uint8_t v[static L])
{
	unsigned acc = 0;

	for (size_t i = 0; i < L; i++)
		acc |= v[i];
	return (acc - 1) >> 8 & 1;
}

/* A draw from kh_random below P (rejection sampling: never a biased reduction). */
static kh_err draw_below_p(uint8_t out[static L])
{
	kh_err r;

	for (int i = 0; i < MAX_DRAWS; i++) {
		if ((r = kh_random(out, L)) != KH_OK)
			return r;
		if (lt_p(out))
			return KH_OK;
	}
	kh_wipe(out, L);
	return KH_ERR_CRYPTO;
}

/* A non-zero x below P, different from the `have` x drawn before it. */
static kh_err draw_x(struct kh_shamir_share *s, size_t have)
{
	kh_err r;

	for (int i = 0; i < MAX_DRAWS; i++) {
		int fresh = 1;

		if ((r = draw_below_p(s[have].x)) != KH_OK)
			return r;
		for (size_t j = 0; j < have; j++)
			fresh &= memcmp(s[j].x, s[have].x, L) != 0;
		if (fresh && !is_zero(s[have].x))
			return KH_OK;
	}
	return KH_ERR_CRYPTO;
}

kh_err kh_shamir_random_secret(uint8_t out[static KH_SHAMIR_LEN])
{
	uint8_t v[L];
	kh_err r;

	if (!out)
		return KH_ERR_INVAL;
	if ((r = draw_below_p(v)) == KH_OK)
		memcpy(out, v, L);
	kh_wipe(v, sizeof v);
	return r;
}

/* ---- the field, over BIGNUM ---- */

struct field {
	BN_CTX *ctx;
	BN_MONT_CTX *mont;
	BIGNUM *p;
};

static void field_free(struct field *f)
{
	if (f->ctx)
		BN_CTX_end(f->ctx);
	BN_MONT_CTX_free(f->mont);
	BN_CTX_free(f->ctx);
	memset(f, 0, sizeof *f);
}

/* A secure context with one frame open, and P with its Montgomery context. */
static kh_err field_init(struct field *f)
{
	memset(f, 0, sizeof *f);
	if (!(f->ctx = BN_CTX_secure_new()))
		return KH_ERR_NOMEM;
	BN_CTX_start(f->ctx);
	if (!(f->p = BN_CTX_get(f->ctx)) || !BN_bin2bn(kh_shamir_p, L, f->p) ||
	    !(f->mont = BN_MONT_CTX_new()) || !BN_MONT_CTX_set(f->mont, f->p, f->ctx)) {
		field_free(f);
		return KH_ERR_CRYPTO;
	}
	return KH_OK;
}

/* A fresh BIGNUM of the context, marked constant-time when it will hold a secret. */
static BIGNUM *field_get(struct field *f, int secret)
{
	BIGNUM *b = BN_CTX_get(f->ctx);

	if (b && secret)
		BN_set_flags(b, BN_FLG_CONSTTIME);
	return b;
}

/* acc = acc * pub + add: pub_mont is the public factor in Montgomery form, acc and add secret. */
static int mul_add(struct field *f, BIGNUM *acc, const BIGNUM *pub_mont, const BIGNUM *add)
{
	return BN_mod_mul_montgomery(acc, acc, pub_mont, f->mont, f->ctx) &&
	       BN_mod_add_quick(acc, acc, add, f->p);
}

kh_err kh_shamir_split(const uint8_t secret[static KH_SHAMIR_LEN], unsigned t, unsigned n,
		       struct kh_shamir_share *shares)
{
	uint8_t coef[KH_SHAMIR_MAX_N][L];
	struct kh_shamir_share s[KH_SHAMIR_MAX_N];
	BIGNUM *a[KH_SHAMIR_MAX_N] = {0}, *acc = NULL, *xm = NULL;
	struct field f = {0};
	kh_err r;

	if (!secret || !shares || t < KH_SHAMIR_MIN_T || n < t || n > KH_SHAMIR_MAX_N)
		return KH_ERR_INVAL;
	if (!lt_p(secret))
		return KH_ERR_INVAL;
	memcpy(coef[0], secret, L);
	for (unsigned j = 1; j < t; j++)
		if ((r = draw_below_p(coef[j])) != KH_OK)
			goto out;
	for (unsigned i = 0; i < n; i++)
		if ((r = draw_x(s, i)) != KH_OK)
			goto out;
	if ((r = field_init(&f)) != KH_OK)
		goto out;
	r = KH_ERR_CRYPTO;
	for (unsigned j = 0; j < t; j++)
		if (!(a[j] = field_get(&f, 1)) || !BN_bin2bn(coef[j], L, a[j]))
			goto out;
	if (!(acc = field_get(&f, 1)) || !(xm = field_get(&f, 0)))
		goto out;
	/* Horner: y = (..(a_{t-1} x + a_{t-2}) x + ..) x + a_0, x in Montgomery form. */
	for (unsigned i = 0; i < n; i++) {
		if (!BN_bin2bn(s[i].x, L, xm) || !BN_to_montgomery(xm, xm, f.mont, f.ctx) ||
		    !BN_copy(acc, a[t - 1]))
			goto out;
		for (unsigned j = t - 1; j-- > 0;)
			if (!mul_add(&f, acc, xm, a[j]))
				goto out;
		if (BN_bn2binpad(acc, s[i].y, L) != L)
			goto out;
	}
	memcpy(shares, s, n * sizeof s[0]);
	r = KH_OK;
out:
	for (unsigned j = 0; j < t; j++)
		if (a[j])
			BN_clear(a[j]);
	if (acc)
		BN_clear(acc);
	if (f.ctx)
		field_free(&f);
	kh_wipe(coef, sizeof coef);
	kh_wipe(s, sizeof s);
	return r;
}

/*
 * out = sum over the first t shares of y_i * l_i(X), l_i the Lagrange basis polynomial of their
 * x at the public point X: the value at X of the polynomial of degree < t through them. The
 * x must be distinct (the caller checked).
 */
static int interpolate(struct field *f, const struct kh_shamir_share *s, unsigned t, const BIGNUM *X,
		       BIGNUM *out)
{
	BIGNUM *x[KH_SHAMIR_MAX_N], *num, *den, *d, *y = NULL;
	int ok = 0;

	BN_CTX_start(f->ctx);
	for (unsigned i = 0; i < t; i++)
		if (!(x[i] = field_get(f, 0)) || !BN_bin2bn(s[i].x, L, x[i]))
			goto out;
	if (!(num = field_get(f, 0)) || !(den = field_get(f, 0)) || !(d = field_get(f, 0)) ||
	    !(y = field_get(f, 1)))
		goto out;
	BN_zero(out);
	for (unsigned i = 0; i < t; i++) {
		if (!BN_one(num) || !BN_one(den))
			goto out;
		for (unsigned m = 0; m < t; m++) {
			if (m == i)
				continue;
			if (!BN_mod_sub(d, X, x[m], f->p, f->ctx) || !BN_mod_mul(num, num, d, f->p, f->ctx) ||
			    !BN_mod_sub(d, x[i], x[m], f->p, f->ctx) || !BN_mod_mul(den, den, d, f->p, f->ctx))
				goto out;
		}
		/* l_i(X) = num / den, public; into Montgomery form to multiply the secret y_i. */
		BN_set_flags(den, BN_FLG_CONSTTIME);
		if (!BN_mod_inverse(den, den, f->p, f->ctx) || !BN_mod_mul(num, num, den, f->p, f->ctx) ||
		    !BN_to_montgomery(num, num, f->mont, f->ctx) || !BN_bin2bn(s[i].y, L, y) ||
		    !BN_mod_mul_montgomery(y, y, num, f->mont, f->ctx) || !BN_mod_add_quick(out, out, y, f->p))
			goto out;
	}
	ok = 1;
out:
	if (y)
		BN_clear(y);
	BN_CTX_end(f->ctx);
	return ok;
}

/* The checks of kh_shamir_combine on the shares alone. */
static kh_err check_shares(const struct kh_shamir_share *s, size_t k)
{
	unsigned bad = 0;

	for (size_t i = 0; i < k; i++) {
		bad |= is_zero(s[i].x) | (lt_p(s[i].x) ^ 1) | (lt_p(s[i].y) ^ 1);
		for (size_t j = 0; j < i; j++)
			bad |= memcmp(s[i].x, s[j].x, L) == 0;
	}
	return bad ? KH_ERR_SHARES : KH_OK;
}

kh_err kh_shamir_combine(const struct kh_shamir_share *shares, size_t k, unsigned t,
			 uint8_t secret[static KH_SHAMIR_LEN])
{
	uint8_t v[L];
	BIGNUM *X, *out = NULL;
	struct field f = {0};
	kh_err r;

	if (!secret || t < KH_SHAMIR_MIN_T || t > KH_SHAMIR_MAX_N || (!shares && k > 0))
		return KH_ERR_INVAL;
	if (k < t || k > KH_SHAMIR_MAX_N)
		return KH_ERR_SHARES;
	if ((r = check_shares(shares, k)) != KH_OK)
		return r;
	if ((r = field_init(&f)) != KH_OK)
		return r;
	r = KH_ERR_CRYPTO;
	if (!(X = field_get(&f, 0)) || !(out = field_get(&f, 1)))
		goto out;
	/* Each share past the t-th must be the polynomial's value at its x. */
	for (size_t j = t; j < k; j++) {
		if (!BN_bin2bn(shares[j].x, L, X) || !interpolate(&f, shares, t, X, out) ||
		    BN_bn2binpad(out, v, L) != L)
			goto out;
		if (!kh_ct_eq(v, shares[j].y, L)) {
			r = KH_ERR_SHARES;
			goto out;
		}
	}
	BN_zero(X);
	if (!interpolate(&f, shares, t, X, out) || BN_bn2binpad(out, v, L) != L)
		goto out;
	memcpy(secret, v, L);
	r = KH_OK;
out:
	if (out)
		BN_clear(out);
	field_free(&f);
	kh_wipe(v, sizeof v);
	return r;
}

/* ---- the share record ---- */

/* The checks of the record's fields, after its framing. */
static int rec_fields_ok(const struct kh_shamir_rec *rec)
{
	return rec->t >= KH_SHAMIR_MIN_T && rec->n >= rec->t && rec->n <= KH_SHAMIR_MAX_N &&
	       rec->index >= 1 && rec->index <= rec->n && !is_zero(rec->s.x) && lt_p(rec->s.x) &&
	       lt_p(rec->s.y);
}

kh_err kh_shamir_rec_encode(const struct kh_shamir_rec *rec, uint8_t out[static KH_SHAMIR_REC_LEN])
{
	struct kh_wr w;

	if (!rec || !out || !rec_fields_ok(rec))
		return KH_ERR_INVAL;
	kh_wr_init(&w, out, KH_SHAMIR_REC_LEN);
	kh_wr_bytes(&w, magic, sizeof magic);
	kh_wr_u8(&w, KH_SHAMIR_VERSION);
	kh_wr_u8(&w, rec->t);
	kh_wr_u8(&w, rec->n);
	kh_wr_u8(&w, rec->index);
	kh_wr_bytes(&w, rec->s.x, L);
	kh_wr_bytes(&w, rec->s.y, L);
	kh_wr_bytes(&w, rec->id, KH_SHAMIR_ID_LEN);
	if (w.err != KH_OK || w.len != KH_SHAMIR_REC_LEN) {
		kh_wipe(out, KH_SHAMIR_REC_LEN);
		return KH_ERR_INTERNAL;
	}
	return KH_OK;
}

kh_err kh_shamir_rec_parse(const uint8_t *b, size_t len, struct kh_shamir_rec *rec)
{
	struct kh_shamir_rec t;
	struct kh_rd rd;
	const uint8_t *m;
	uint8_t version;
	kh_err r;

	if (!b || !rec)
		return KH_ERR_INVAL;
	kh_rd_init(&rd, b, len);
	if ((r = kh_rd_ref(&rd, &m, sizeof magic)) != KH_OK)
		return r;
	if (memcmp(m, magic, sizeof magic) != 0)
		return KH_ERR_FORMAT;
	if ((r = kh_rd_u8(&rd, &version)) != KH_OK)
		return r;
	if (version != KH_SHAMIR_VERSION)
		return KH_ERR_VERSION;
	/* The reader's error sticks: the first that fails is the one kh_rd_end gives. */
	if (kh_rd_u8(&rd, &t.t) != KH_OK || kh_rd_u8(&rd, &t.n) != KH_OK || kh_rd_u8(&rd, &t.index) != KH_OK ||
	    kh_rd_copy(&rd, t.s.x, L) != KH_OK || kh_rd_copy(&rd, t.s.y, L) != KH_OK ||
	    kh_rd_copy(&rd, t.id, KH_SHAMIR_ID_LEN) != KH_OK)
		r = rd.err;
	else if ((r = kh_rd_end(&rd)) == KH_OK && !rec_fields_ok(&t))
		r = KH_ERR_FORMAT;
	if (r == KH_OK)
		*rec = t;
	kh_wipe(&t, sizeof t);
	return r;
}

/* ---- the device's sealed share ---- */

/* The AEAD's associated data: the label, then the recipient's public key. */
static void share_aad(const uint8_t pk[static 32], uint8_t aad[static sizeof KH_SHAMIR_AAD_LABEL - 1 + 32])
{
	memcpy(aad, KH_SHAMIR_AAD_LABEL, sizeof KH_SHAMIR_AAD_LABEL - 1);
	memcpy(aad + sizeof KH_SHAMIR_AAD_LABEL - 1, pk, 32);
}

kh_err kh_shamir_share_seal(const uint8_t pk[static 32], const uint8_t *info, size_t infolen,
			    const struct kh_shamir_rec *rec, uint8_t out[static KH_SHAMIR_SEALED_LEN])
{
	uint8_t pt[KH_SHAMIR_REC_LEN], blob[KH_SHAMIR_SEALED_LEN];
	uint8_t aad[sizeof KH_SHAMIR_AAD_LABEL - 1 + 32];
	kh_err r;

	if (!pk || !out || (!info && infolen > 0))
		return KH_ERR_INVAL;
	if ((r = kh_shamir_rec_encode(rec, pt)) != KH_OK)
		goto out;
	share_aad(pk, aad);
	if ((r = kh_hpke_seal_base(pk, info, infolen, aad, sizeof aad, pt, sizeof pt, blob,
				   blob + KH_HPKE_ENC_LEN)) != KH_OK)
		goto out;
	memcpy(out, blob, sizeof blob);
out:
	kh_wipe(pt, sizeof pt);
	kh_wipe(blob, sizeof blob);
	return r;
}

kh_err kh_shamir_share_open(const uint8_t sk[static 32], const uint8_t pk[static 32], const uint8_t *info,
			    size_t infolen, const uint8_t *blob, size_t len, struct kh_shamir_rec *rec)
{
	uint8_t pt[KH_SHAMIR_REC_LEN];
	uint8_t aad[sizeof KH_SHAMIR_AAD_LABEL - 1 + 32];
	kh_err r;

	if (!sk || !pk || !blob || !rec || (!info && infolen > 0))
		return KH_ERR_INVAL;
	if (len != KH_SHAMIR_SEALED_LEN)
		return len < KH_SHAMIR_SEALED_LEN ? KH_ERR_TRUNCATED : KH_ERR_TRAILING;
	share_aad(pk, aad);
	if ((r = kh_hpke_open_base(sk, blob, info, infolen, aad, sizeof aad, blob + KH_HPKE_ENC_LEN,
				   len - KH_HPKE_ENC_LEN, pt)) == KH_OK)
		r = kh_shamir_rec_parse(pt, sizeof pt, rec);
	kh_wipe(pt, sizeof pt);
	return r;
}
