/*
 * Crypto facade, RSA part: what the escrow protocol (seed 003, docs/protocols/escrow.md) needs of
 * RSA outside the escrow's own signing process. The buyer's device blinds the seller's c with a
 * factor r only it knows and later strips r from the escrow's answer; the seller encrypts K to a
 * listing's key with OAEP. Every big number goes through OpenSSL's BIGNUM; the device's secrets
 * (r, the unblinded m) are marked BN_FLG_CONSTTIME and every exponentiation that touches them is
 * the constant-time Montgomery ladder, even where the exponent (e) is public.
 *
 * r is not stored: the device keeps a 32-byte seed drawn from its RNG and expands it here to
 * nlen + 32 bytes with HKDF, reduced mod n. The extra 256 bits make the result's distance from
 * uniform on [0, n) below 2^-256; r = 0 or gcd(r, n) != 1 (r without an inverse) would reveal a
 * factor of n and is refused (KH_ERR_CRYPTO), which for a genuine modulus does not happen.
 *
 * OAEP decoding: OpenSSL 3.0 decodes OAEP only inside a private-key decryption, and the device
 * holds no private key (the escrow did the private operation on the blinded value). The padding
 * check it uses internally, RSA_padding_check_PKCS1_OAEP_mgf1, is still exported — deprecated,
 * but constant time and maintained — so this one file uses it rather than decoding OAEP by hand.
 */
#define OPENSSL_SUPPRESS_DEPRECATED 1

#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "keyhole/crypto.h"

static const char label_r[] = "keyhole escrow r v1";

static int modulus_ok(const uint8_t *n, size_t nlen)
{
	return nlen >= KH_RSA_MIN_LEN && nlen <= KH_RSA_MAX_LEN && nlen % 8 == 0 && n[0] >= 0x80 &&
	       (n[nlen - 1] & 1);
}

struct rsa_bn {
	BN_CTX *ctx;
	BN_MONT_CTX *mont;
	BIGNUM *n, *e, *r, *ri, *a, *b; /* ri: r^-1 mod n */
};

static void rsa_bn_free(struct rsa_bn *k)
{
	BN_clear_free(k->r);
	BN_clear_free(k->ri);
	BN_clear_free(k->a);
	BN_clear_free(k->b);
	BN_free(k->n);
	BN_free(k->e);
	BN_MONT_CTX_free(k->mont);
	BN_CTX_free(k->ctx);
	memset(k, 0, sizeof *k);
}

/* out = x * y mod n, through Montgomery form (constant time in the operands' values). */
static int mul_mod(struct rsa_bn *k, BIGNUM *out, const BIGNUM *x, const BIGNUM *y)
{
	return BN_mod_mul_montgomery(out, x, y, k->mont, k->ctx) && BN_to_montgomery(out, out, k->mont, k->ctx);
}

/* n and e loaded, r derived from seed and its inverse computed (which exists exactly when
 * gcd(r, n) = 1); KH_ERR_CRYPTO for r = 0 or no inverse. */
static kh_err rsa_bn_init(struct rsa_bn *k, const uint8_t *n, size_t nlen, const uint8_t seed[static KH_RSA_SEED_LEN])
{
	uint8_t wide[KH_RSA_MAX_LEN + 32];
	BIGNUM *t = NULL;
	kh_err r = KH_ERR_CRYPTO;

	memset(k, 0, sizeof *k);
	if (!modulus_ok(n, nlen))
		return KH_ERR_INVAL;
	if (!(k->ctx = BN_CTX_secure_new()) || !(k->mont = BN_MONT_CTX_new()) || !(k->n = BN_bin2bn(n, (int)nlen, NULL)) ||
	    !(k->e = BN_new()) || !BN_set_word(k->e, KH_RSA_E) || !(k->r = BN_secure_new()) ||
	    !(k->ri = BN_secure_new()) || !(k->a = BN_secure_new()) || !(k->b = BN_secure_new()))
		goto out;
	BN_set_flags(k->r, BN_FLG_CONSTTIME);
	BN_set_flags(k->ri, BN_FLG_CONSTTIME);
	BN_set_flags(k->a, BN_FLG_CONSTTIME);
	BN_set_flags(k->b, BN_FLG_CONSTTIME);
	if (!BN_MONT_CTX_set(k->mont, k->n, k->ctx))
		goto out;
	if ((r = kh_hkdf(seed, KH_RSA_SEED_LEN, NULL, 0, (const uint8_t *)label_r, sizeof label_r - 1, wide,
			 nlen + 32)) != KH_OK)
		goto out;
	r = KH_ERR_CRYPTO;
	if (!BN_bin2bn(wide, (int)(nlen + 32), k->a) || !BN_nnmod(k->r, k->a, k->n, k->ctx) || BN_is_zero(k->r))
		goto out;
	/*
	 * r^-1, which exists exactly when gcd(r, n) = 1 (the check), without a secret-dependent
	 * path: the inverse is taken of t = r * s for a fresh uniform s, which is uniform and
	 * independent of r, so the fast inverse's timing tells nothing of r; then r^-1 = s * t^-1.
	 * (OpenSSL's constant-time gcd and inverse cost about 20 times more; RSA blinding does the
	 * same.) No inverse of t means gcd(r, n) or gcd(s, n) is not 1: a factor of n, refused.
	 */
	if ((r = kh_random(wide, nlen + 32)) != KH_OK)
		goto out;
	r = KH_ERR_CRYPTO;
	/* t without the constant-time flag: its value may steer the inverse */
	if (!(t = BN_new()) || !BN_bin2bn(wide, (int)(nlen + 32), k->a) || !BN_nnmod(k->b, k->a, k->n, k->ctx) ||
	    !mul_mod(k, t, k->r, k->b) || !BN_mod_inverse(k->ri, t, k->n, k->ctx) || !mul_mod(k, k->ri, k->ri, k->b))
		goto out;
	r = KH_OK;
out:
	kh_wipe(wide, sizeof wide);
	BN_clear_free(t);
	if (r != KH_OK)
		rsa_bn_free(k);
	return r;
}

/* x (nlen bytes) as a number below n, into bn; KH_ERR_INVAL when x >= n. */
static kh_err load_below(struct rsa_bn *k, const uint8_t *x, size_t nlen, BIGNUM *bn)
{
	if (!BN_bin2bn(x, (int)nlen, bn))
		return KH_ERR_CRYPTO;
	return BN_cmp(bn, k->n) < 0 ? KH_OK : KH_ERR_INVAL;
}

kh_err kh_rsa_blind(const uint8_t *n, size_t nlen, const uint8_t *c, const uint8_t seed[static KH_RSA_SEED_LEN],
		    uint8_t *cprime)
{
	struct rsa_bn k;
	kh_err r;

	if ((r = rsa_bn_init(&k, n, nlen, seed)) != KH_OK)
		return r;
	if ((r = load_below(&k, c, nlen, k.b)) != KH_OK)
		goto out;
	r = KH_ERR_CRYPTO;
	/* c' = c * r^e mod n */
	if (!BN_mod_exp_mont_consttime(k.a, k.r, k.e, k.n, k.ctx, k.mont) || !mul_mod(&k, k.a, k.a, k.b) ||
	    BN_bn2binpad(k.a, cprime, (int)nlen) != (int)nlen)
		goto out;
	r = KH_OK;
out:
	rsa_bn_free(&k);
	return r;
}

kh_err kh_rsa_unblind(const uint8_t *n, size_t nlen, const uint8_t *c, const uint8_t seed[static KH_RSA_SEED_LEN],
		      const uint8_t *z, uint8_t *m)
{
	uint8_t check[KH_RSA_MAX_LEN];
	struct rsa_bn k;
	kh_err r;

	if ((r = rsa_bn_init(&k, n, nlen, seed)) != KH_OK)
		return r;
	if ((r = load_below(&k, z, nlen, k.b)) != KH_OK) {
		r = KH_ERR_UNBLIND; /* z >= n: not an answer for this key */
		goto out;
	}
	r = KH_ERR_CRYPTO;
	/* m = z * r^-1 mod n, then m^e must give back c */
	if (!mul_mod(&k, k.a, k.b, k.ri) ||
	    !BN_mod_exp_mont_consttime(k.b, k.a, k.e, k.n, k.ctx, k.mont) ||
	    BN_bn2binpad(k.b, check, (int)nlen) != (int)nlen)
		goto out;
	if (!kh_ct_eq(check, c, nlen)) {
		r = KH_ERR_UNBLIND;
		goto out;
	}
	if (BN_bn2binpad(k.a, m, (int)nlen) != (int)nlen)
		goto out;
	r = KH_OK;
out:
	kh_wipe(check, sizeof check);
	rsa_bn_free(&k);
	return r;
}

kh_err kh_rsa_oaep_decode(const uint8_t *em, size_t nlen, const uint8_t *label, size_t labellen, uint8_t *out,
			  size_t cap, size_t *outlen)
{
	uint8_t tmp[KH_RSA_MAX_LEN];
	int got;

	if (nlen < KH_RSA_MIN_LEN || nlen > KH_RSA_MAX_LEN || labellen > 1024 || cap > nlen)
		return KH_ERR_INVAL;
	/* the check takes the whole block (leading zero byte included) and writes at most cap bytes */
	got = RSA_padding_check_PKCS1_OAEP_mgf1(tmp, (int)nlen, em, (int)nlen, (int)nlen, label, (int)labellen,
						EVP_sha256(), EVP_sha256());
	if (got < 0 || (size_t)got > cap) {
		kh_wipe(tmp, sizeof tmp);
		return KH_ERR_UNBLIND;
	}
	memcpy(out, tmp, (size_t)got);
	*outlen = (size_t)got;
	kh_wipe(tmp, sizeof tmp);
	return KH_OK;
}

/* The public key in a DER SubjectPublicKeyInfo, if it is RSA with e = 65537 and a size we take. */
static EVP_PKEY *spki_load(const uint8_t *spki, size_t len, uint8_t *n, size_t *nlen)
{
	const unsigned char *p = spki;
	EVP_PKEY *pk;
	BIGNUM *bn = NULL, *be = NULL;
	int ok = 0;

	if (len > KH_RSA_SPKI_MAX || !(pk = d2i_PUBKEY(NULL, &p, (long)len)))
		return NULL;
	if (p != spki + len || EVP_PKEY_get_base_id(pk) != EVP_PKEY_RSA ||
	    !EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_RSA_N, &bn) ||
	    !EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_RSA_E, &be) || !BN_is_word(be, KH_RSA_E))
		goto out;
	*nlen = (size_t)BN_num_bytes(bn);
	if (*nlen < KH_RSA_MIN_LEN || *nlen > KH_RSA_MAX_LEN || BN_bn2binpad(bn, n, (int)*nlen) != (int)*nlen ||
	    !modulus_ok(n, *nlen))
		goto out;
	ok = 1;
out:
	BN_free(bn);
	BN_free(be);
	if (!ok) {
		EVP_PKEY_free(pk);
		pk = NULL;
	}
	return pk;
}

kh_err kh_rsa_spki_modulus(const uint8_t *spki, size_t len, uint8_t n[static KH_RSA_MAX_LEN], size_t *nlen)
{
	EVP_PKEY *pk = spki_load(spki, len, n, nlen);

	if (!pk)
		return KH_ERR_FORMAT;
	EVP_PKEY_free(pk);
	return KH_OK;
}

kh_err kh_rsa_oaep_encrypt(const uint8_t *spki, size_t spkilen, const uint8_t *label, size_t labellen,
			   const uint8_t *in, size_t inlen, uint8_t c[static KH_RSA_MAX_LEN], size_t *clen)
{
	uint8_t n[KH_RSA_MAX_LEN];
	size_t nlen = 0, outl;
	EVP_PKEY *pk = spki_load(spki, spkilen, n, &nlen);
	EVP_PKEY_CTX *ctx = NULL;
	void *lab = NULL;
	kh_err r = KH_ERR_CRYPTO;

	if (!pk)
		return KH_ERR_FORMAT;
	if (labellen > 1024 || inlen > nlen - 2 * KH_SHA256_LEN - 2) {
		r = KH_ERR_INVAL;
		goto out;
	}
	outl = nlen;
	if (!(ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pk, NULL)) || EVP_PKEY_encrypt_init(ctx) <= 0 ||
	    EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) <= 0 ||
	    EVP_PKEY_CTX_set_rsa_oaep_md_name(ctx, "SHA256", NULL) <= 0 ||
	    EVP_PKEY_CTX_set_rsa_mgf1_md_name(ctx, "SHA256", NULL) <= 0)
		goto out;
	if (labellen) {
		/* the context takes the label's ownership */
		if (!(lab = OPENSSL_memdup(label, labellen)) || EVP_PKEY_CTX_set0_rsa_oaep_label(ctx, lab, (int)labellen) <= 0)
			goto out;
		lab = NULL;
	}
	if (EVP_PKEY_encrypt(ctx, c, &outl, in, inlen) <= 0 || outl != nlen)
		goto out;
	*clen = outl;
	r = KH_OK;
out:
	OPENSSL_free(lab);
	EVP_PKEY_CTX_free(ctx);
	EVP_PKEY_free(pk);
	return r;
}

kh_err kh_rsa_blinded_in_range(const uint8_t *n, size_t nlen, const uint8_t *x, size_t xlen)
{
	BIGNUM *bn = NULL, *bx = NULL;
	kh_err r = KH_ERR_CRYPTO;

	if (!modulus_ok(n, nlen))
		return KH_ERR_INVAL;
	if (xlen != nlen)
		return KH_ERR_BLIND_RANGE;
	if (!(bn = BN_bin2bn(n, (int)nlen, NULL)) || !(bx = BN_bin2bn(x, (int)xlen, NULL)) || !BN_sub_word(bn, 2))
		goto out;
	/* 2 <= x <= n - 2: 0, 1 and n - 1 are their own e-th powers and would answer themselves */
	r = BN_cmp(bx, bn) <= 0 && !BN_is_zero(bx) && !BN_is_one(bx) ? KH_OK : KH_ERR_BLIND_RANGE;
out:
	BN_free(bn);
	BN_free(bx);
	return r;
}
