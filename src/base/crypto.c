/*
 * Crypto facade over OpenSSL 3.0 (include/keyhole/crypto.h, the design rules). Algorithms are
 * fetched once per process; the AEAD cipher context is kept per thread and re-keyed per call,
 * which costs a key schedule instead of an allocation and fetch. All temporaries are wiped.
 */
#include <pthread.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>

#include "keyhole/crypto.h"

void kh_wipe(void *p, size_t n)
{
	if (p && n)
		OPENSSL_cleanse(p, n);
}

int kh_ct_eq(const void *a, const void *b, size_t n)
{
	return CRYPTO_memcmp(a, b, n) == 0;
}

/* ---- fetched algorithms, once per process ---- */

static pthread_once_t fetch_once = PTHREAD_ONCE_INIT;
static EVP_CIPHER *c_aes128gcm, *c_aes256gcm, *c_chacha, *c_aes256ctr;
static EVP_KDF *k_hkdf;
static EVP_MD *md_sha256;

static void fetch_all(void)
{
	c_aes128gcm = EVP_CIPHER_fetch(NULL, "AES-128-GCM", NULL);
	c_aes256gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
	c_chacha = EVP_CIPHER_fetch(NULL, "ChaCha20-Poly1305", NULL);
	c_aes256ctr = EVP_CIPHER_fetch(NULL, "AES-256-CTR", NULL);
	k_hkdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
	md_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
}

static int fetched(void)
{
	pthread_once(&fetch_once, fetch_all);
	return c_aes128gcm && c_aes256gcm && c_chacha && c_aes256ctr && k_hkdf && md_sha256;
}

/* One cipher context per thread, freed when the thread ends. */
static pthread_key_t ctx_key;
static pthread_once_t ctx_once = PTHREAD_ONCE_INIT;

static void ctx_free(void *p)
{
	EVP_CIPHER_CTX_free(p);
}

static void ctx_key_make(void)
{
	(void)pthread_key_create(&ctx_key, ctx_free);
}

static EVP_CIPHER_CTX *thread_ctx(void)
{
	EVP_CIPHER_CTX *c;
	pthread_once(&ctx_once, ctx_key_make);
	c = pthread_getspecific(ctx_key);
	if (!c) {
		c = EVP_CIPHER_CTX_new();
		if (c && pthread_setspecific(ctx_key, c) != 0) {
			EVP_CIPHER_CTX_free(c);
			c = NULL;
		}
	}
	return c;
}

/* ---- random ---- */

static kh_rng_fn rng_fn;
static void *rng_ctx;

void kh_rng_set(kh_rng_fn fn, void *ctx)
{
	rng_fn = fn;
	rng_ctx = ctx;
}

kh_err kh_random(uint8_t *out, size_t n)
{
	if (n == 0)
		return KH_OK;
	if (rng_fn)
		return rng_fn(rng_ctx, out, n);
	if (n > INT32_MAX || RAND_bytes(out, (int)n) != 1)
		return KH_ERR_CRYPTO;
	return KH_OK;
}

void kh_rng_det_init(struct kh_rng_det *d, const uint8_t *seed, size_t seedlen)
{
	if (kh_sha256(seed, seedlen, d->key) != KH_OK)
		memset(d->key, 0x5a, sizeof d->key);
	d->block = 0;
}

kh_err kh_rng_det_fn(void *ctx, uint8_t *out, size_t n)
{
	struct kh_rng_det *d = ctx;
	EVP_CIPHER_CTX *c = thread_ctx();
	uint8_t iv[16] = {0};
	int outl;
	kh_err r = KH_ERR_CRYPTO;

	if (!fetched() || !c || n > INT32_MAX)
		return KH_ERR_CRYPTO;
	for (int i = 0; i < 8; i++)
		iv[i] = (uint8_t)(d->block >> (56 - 8 * i));
	memset(out, 0, n);
	if (EVP_EncryptInit_ex2(c, c_aes256ctr, d->key, iv, NULL) != 1 ||
	    EVP_EncryptUpdate(c, out, &outl, out, (int)n) != 1)
		goto out;
	d->block += (n + 15) / 16;
	r = KH_OK;
out:
	EVP_CIPHER_CTX_reset(c);
	return r;
}

/* ---- hashing and HKDF ---- */

kh_err kh_sha256(const uint8_t *in, size_t n, uint8_t out[static KH_SHA256_LEN])
{
	unsigned int len = 0;
	if (!fetched() || EVP_Digest(in, n, out, &len, md_sha256, NULL) != 1 || len != KH_SHA256_LEN)
		return KH_ERR_CRYPTO;
	return KH_OK;
}

static kh_err hkdf_mode(int mode, const uint8_t *ikm, size_t ikmlen, const uint8_t *salt,
			size_t saltlen, const uint8_t *info, size_t infolen, uint8_t *out, size_t outlen)
{
	EVP_KDF_CTX *k;
	OSSL_PARAM p[6], *q = p;
	static const uint8_t empty[1];
	kh_err r = KH_ERR_CRYPTO;

	if (!fetched() || !(k = EVP_KDF_CTX_new(k_hkdf)))
		return KH_ERR_CRYPTO;
	*q++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0);
	*q++ = OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode);
	*q++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)(ikm ? ikm : empty), ikmlen);
	if (saltlen)
		*q++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, saltlen);
	if (infolen)
		*q++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)info, infolen);
	*q = OSSL_PARAM_construct_end();
	if (EVP_KDF_derive(k, out, outlen, p) == 1)
		r = KH_OK;
	EVP_KDF_CTX_free(k);
	return r;
}

kh_err kh_hkdf(const uint8_t *ikm, size_t ikmlen, const uint8_t *salt, size_t saltlen,
	       const uint8_t *info, size_t infolen, uint8_t *out, size_t outlen)
{
	if (outlen == 0 || outlen > 255 * 32)
		return KH_ERR_INVAL;
	return hkdf_mode(EVP_KDF_HKDF_MODE_EXTRACT_AND_EXPAND, ikm, ikmlen, salt, saltlen, info,
			 infolen, out, outlen);
}

kh_err kh_hkdf_extract(const uint8_t *salt, size_t saltlen, const uint8_t *ikm, size_t ikmlen,
		       uint8_t prk[static 32])
{
	/* RFC 5869: an absent salt is HashLen zero bytes. */
	static const uint8_t zero[32];
	if (!saltlen) {
		salt = zero;
		saltlen = sizeof zero;
	}
	return hkdf_mode(EVP_KDF_HKDF_MODE_EXTRACT_ONLY, ikm, ikmlen, salt, saltlen, NULL, 0, prk, 32);
}

kh_err kh_hkdf_expand(const uint8_t prk[static 32], const uint8_t *info, size_t infolen,
		      uint8_t *out, size_t outlen)
{
	if (outlen == 0 || outlen > 255 * 32)
		return KH_ERR_INVAL;
	return hkdf_mode(EVP_KDF_HKDF_MODE_EXPAND_ONLY, prk, 32, NULL, 0, info, infolen, out, outlen);
}

/* ---- AEAD ---- */

size_t kh_aead_keylen(enum kh_aead_alg alg)
{
	switch (alg) {
	case KH_AEAD_AES128_GCM:
		return 16;
	case KH_AEAD_AES256_GCM:
	case KH_AEAD_CHACHA20_POLY1305:
		return 32;
	}
	return 0;
}

static const EVP_CIPHER *aead_cipher(enum kh_aead_alg alg)
{
	if (!fetched())
		return NULL;
	switch (alg) {
	case KH_AEAD_AES128_GCM:
		return c_aes128gcm;
	case KH_AEAD_AES256_GCM:
		return c_aes256gcm;
	case KH_AEAD_CHACHA20_POLY1305:
		return c_chacha;
	}
	return NULL;
}

kh_err kh_aead_seal_alg(enum kh_aead_alg alg, const uint8_t *key, const uint8_t nonce[static KH_NONCE_LEN],
			const uint8_t *aad, size_t aadlen, const uint8_t *pt, size_t ptlen, uint8_t *ct)
{
	const EVP_CIPHER *ci = aead_cipher(alg);
	EVP_CIPHER_CTX *c = thread_ctx();
	int l;
	kh_err r = KH_ERR_CRYPTO;

	if (!ci || !c)
		return KH_ERR_CRYPTO;
	if (ptlen > INT32_MAX - KH_TAG_LEN || aadlen > INT32_MAX)
		return KH_ERR_TOO_LARGE;
	if (EVP_EncryptInit_ex2(c, ci, key, nonce, NULL) != 1)
		goto out;
	if (aadlen && EVP_EncryptUpdate(c, NULL, &l, aad, (int)aadlen) != 1)
		goto out;
	if (ptlen && EVP_EncryptUpdate(c, ct, &l, pt, (int)ptlen) != 1)
		goto out;
	if (EVP_EncryptFinal_ex(c, ct + ptlen, &l) != 1 ||
	    EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, KH_TAG_LEN, ct + ptlen) != 1)
		goto out;
	r = KH_OK;
out:
	EVP_CIPHER_CTX_reset(c);
	return r;
}

kh_err kh_aead_open_alg(enum kh_aead_alg alg, const uint8_t *key, const uint8_t nonce[static KH_NONCE_LEN],
			const uint8_t *aad, size_t aadlen, const uint8_t *ct, size_t ctlen, uint8_t *pt)
{
	const EVP_CIPHER *ci = aead_cipher(alg);
	EVP_CIPHER_CTX *c = thread_ctx();
	uint8_t tag[KH_TAG_LEN];
	size_t ptlen;
	int l;
	kh_err r = KH_ERR_CRYPTO;

	if (!ci || !c)
		return KH_ERR_CRYPTO;
	if (ctlen < KH_TAG_LEN)
		return KH_ERR_TRUNCATED;
	if (ctlen > INT32_MAX || aadlen > INT32_MAX)
		return KH_ERR_TOO_LARGE;
	ptlen = ctlen - KH_TAG_LEN;
	/* Keep the tag aside: ct and pt may be one buffer. */
	memcpy(tag, ct + ptlen, KH_TAG_LEN);
	if (EVP_DecryptInit_ex2(c, ci, key, nonce, NULL) != 1 ||
	    EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_TAG, KH_TAG_LEN, tag) != 1)
		goto out;
	if (aadlen && EVP_DecryptUpdate(c, NULL, &l, aad, (int)aadlen) != 1)
		goto out;
	if (ptlen && EVP_DecryptUpdate(c, pt, &l, ct, (int)ptlen) != 1)
		goto out;
	if (EVP_DecryptFinal_ex(c, pt + ptlen, &l) != 1) {
		r = KH_ERR_AUTH;
		goto out;
	}
	r = KH_OK;
out:
	/* On any failure the plaintext was never authentic: leave nothing of it behind. */
	if (r != KH_OK)
		kh_wipe(pt, ptlen);
	EVP_CIPHER_CTX_reset(c);
	return r;
}

kh_err kh_aead_seal(const uint8_t key[static KH_KEY_LEN], const uint8_t nonce[static KH_NONCE_LEN],
		    const uint8_t *aad, size_t aadlen, const uint8_t *pt, size_t ptlen, uint8_t *ct)
{
	return kh_aead_seal_alg(KH_AEAD_AES256_GCM, key, nonce, aad, aadlen, pt, ptlen, ct);
}

kh_err kh_aead_open(const uint8_t key[static KH_KEY_LEN], const uint8_t nonce[static KH_NONCE_LEN],
		    const uint8_t *aad, size_t aadlen, const uint8_t *ct, size_t ctlen, uint8_t *pt)
{
	return kh_aead_open_alg(KH_AEAD_AES256_GCM, key, nonce, aad, aadlen, ct, ctlen, pt);
}

/* ---- X25519 and Ed25519 over raw keys ---- */

static kh_err raw_public(int type, const uint8_t sk[static 32], uint8_t pk[static 32])
{
	EVP_PKEY *k = EVP_PKEY_new_raw_private_key(type, NULL, sk, 32);
	size_t len = 32;
	kh_err r = KH_ERR_CRYPTO;
	if (k && EVP_PKEY_get_raw_public_key(k, pk, &len) == 1 && len == 32)
		r = KH_OK;
	EVP_PKEY_free(k);
	return r;
}

static kh_err keygen(int type, uint8_t sk[static 32], uint8_t pk[static 32])
{
	uint8_t s[32];
	kh_err r;
	/* Draw through kh_random so tests can make keys reproducible. */
	if ((r = kh_random(s, sizeof s)) != KH_OK)
		return r;
	if ((r = raw_public(type, s, pk)) == KH_OK)
		memcpy(sk, s, 32);
	kh_wipe(s, sizeof s);
	return r;
}

kh_err kh_x25519_keygen(uint8_t sk[static KH_X25519_LEN], uint8_t pk[static KH_X25519_LEN])
{
	return keygen(EVP_PKEY_X25519, sk, pk);
}

kh_err kh_x25519_public(const uint8_t sk[static KH_X25519_LEN], uint8_t pk[static KH_X25519_LEN])
{
	return raw_public(EVP_PKEY_X25519, sk, pk);
}

/* Derive with an imported key pair k; refuses a low-order peer (all-zero result). */
static kh_err derive_with(EVP_PKEY *k, const uint8_t peer[static KH_X25519_LEN], uint8_t out[static KH_X25519_LEN])
{
	static const uint8_t zero[32];
	EVP_PKEY *p = EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, NULL, peer, 32);
	EVP_PKEY_CTX *c = k && p ? EVP_PKEY_CTX_new_from_pkey(NULL, k, NULL) : NULL;
	uint8_t s[32];
	size_t len = sizeof s;
	kh_err r = KH_ERR_CRYPTO;

	if (!c)
		goto out;
	if (EVP_PKEY_derive_init(c) != 1 || EVP_PKEY_derive_set_peer(c, p) != 1 ||
	    EVP_PKEY_derive(c, s, &len) != 1 || len != 32)
		goto out;
	/* A low-order peer point yields zero; refuse it rather than key a channel with it. */
	if (kh_ct_eq(s, zero, 32))
		goto out;
	memcpy(out, s, 32);
	r = KH_OK;
out:
	kh_wipe(s, sizeof s);
	EVP_PKEY_CTX_free(c);
	EVP_PKEY_free(p);
	return r;
}

kh_err kh_x25519(const uint8_t sk[static KH_X25519_LEN], const uint8_t peer[static KH_X25519_LEN],
		 uint8_t out[static KH_X25519_LEN])
{
	EVP_PKEY *k = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, sk, 32);
	kh_err r = derive_with(k, peer, out);
	EVP_PKEY_free(k);
	return r;
}

kh_err kh_x25519_kp(const uint8_t sk[static KH_X25519_LEN], const uint8_t pk[static KH_X25519_LEN],
		    const uint8_t peer[static KH_X25519_LEN], uint8_t out[static KH_X25519_LEN])
{
	EVP_PKEY_CTX *fc = EVP_PKEY_CTX_new_from_name(NULL, "X25519", NULL);
	EVP_PKEY *k = NULL;
	OSSL_PARAM pp[3];
	kh_err r = KH_ERR_CRYPTO;

	pp[0] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PRIV_KEY, (void *)sk, 32);
	pp[1] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, (void *)pk, 32);
	pp[2] = OSSL_PARAM_construct_end();
	if (fc && EVP_PKEY_fromdata_init(fc) == 1 && EVP_PKEY_fromdata(fc, &k, EVP_PKEY_KEYPAIR, pp) == 1)
		r = derive_with(k, peer, out);
	EVP_PKEY_free(k);
	EVP_PKEY_CTX_free(fc);
	return r;
}

kh_err kh_ed25519_keygen(uint8_t sk[static KH_ED25519_SK_LEN], uint8_t pk[static KH_ED25519_PK_LEN])
{
	return keygen(EVP_PKEY_ED25519, sk, pk);
}

kh_err kh_ed25519_public(const uint8_t sk[static KH_ED25519_SK_LEN], uint8_t pk[static KH_ED25519_PK_LEN])
{
	return raw_public(EVP_PKEY_ED25519, sk, pk);
}

/* Sign with the key object k (NULL: the import failed). */
static kh_err sign_with(EVP_PKEY *k, const uint8_t *msg, size_t n, uint8_t sig[static KH_ED25519_SIG_LEN])
{
	EVP_MD_CTX *m = EVP_MD_CTX_new();
	size_t len = KH_ED25519_SIG_LEN;
	kh_err r = KH_ERR_CRYPTO;

	if (k && m && EVP_DigestSignInit_ex(m, NULL, NULL, NULL, NULL, k, NULL) == 1 &&
	    EVP_DigestSign(m, sig, &len, msg, n) == 1 && len == KH_ED25519_SIG_LEN)
		r = KH_OK;
	EVP_MD_CTX_free(m);
	return r;
}

kh_err kh_ed25519_sign(const uint8_t sk[static KH_ED25519_SK_LEN], const uint8_t *msg, size_t n,
		       uint8_t sig[static KH_ED25519_SIG_LEN])
{
	EVP_PKEY *k = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, sk, 32);
	kh_err r = sign_with(k, msg, n, sig);

	EVP_PKEY_free(k);
	return r;
}

kh_err kh_ed25519_sign_kp(const uint8_t sk[static KH_ED25519_SK_LEN], const uint8_t pk[static KH_ED25519_PK_LEN],
			  const uint8_t *msg, size_t n, uint8_t sig[static KH_ED25519_SIG_LEN])
{
	EVP_PKEY_CTX *fc = EVP_PKEY_CTX_new_from_name(NULL, "ED25519", NULL);
	EVP_PKEY *k = NULL;
	OSSL_PARAM pp[3];
	kh_err r = KH_ERR_CRYPTO;

	pp[0] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PRIV_KEY, (void *)sk, 32);
	pp[1] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, (void *)pk, 32);
	pp[2] = OSSL_PARAM_construct_end();
	if (fc && EVP_PKEY_fromdata_init(fc) == 1 && EVP_PKEY_fromdata(fc, &k, EVP_PKEY_KEYPAIR, pp) == 1)
		r = sign_with(k, msg, n, sig);
	EVP_PKEY_free(k);
	EVP_PKEY_CTX_free(fc);
	return r;
}

kh_err kh_ed25519_verify(const uint8_t pk[static KH_ED25519_PK_LEN], const uint8_t *msg, size_t n,
			 const uint8_t sig[static KH_ED25519_SIG_LEN])
{
	EVP_PKEY *k = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pk, 32);
	EVP_MD_CTX *m = EVP_MD_CTX_new();
	kh_err r = KH_ERR_CRYPTO;

	if (!k || !m || EVP_DigestVerifyInit_ex(m, NULL, NULL, NULL, NULL, k, NULL) != 1)
		goto out;
	r = EVP_DigestVerify(m, sig, KH_ED25519_SIG_LEN, msg, n) == 1 ? KH_OK : KH_ERR_AUTH;
out:
	EVP_MD_CTX_free(m);
	EVP_PKEY_free(k);
	return r;
}
