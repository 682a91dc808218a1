/*
 * What the distribution server's operator does on the store itself (include/keyhole/distsvc.h):
 * accounts with their password hashes, and programs published into the catalogue. The password
 * hash is OpenSSL's scrypt; its cost is fixed here, since the store keeps only salt and hash.
 */
#include <stdint.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/kdf.h>
#include <openssl/params.h>

#include "keyhole/crypto.h"
#include "keyhole/dist.h"
#include "keyhole/distsvc.h"
#include "keyhole/store_dist.h"

/* scrypt N = 2^15, r = 8, p = 1: 32 MiB and a few tens of milliseconds per hash. */
#define SCRYPT_N 32768u
#define SCRYPT_R 8u
#define SCRYPT_P 1u
#define SCRYPT_MAXMEM (64u * 1024u * 1024u)

kh_err kh_dist_password_hash(const char *pw, size_t len, const uint8_t salt[static 16], uint8_t out[static 32])
{
	EVP_KDF *kdf;
	EVP_KDF_CTX *ctx = NULL;
	uint64_t n = SCRYPT_N, maxmem = SCRYPT_MAXMEM;
	uint32_t r = SCRYPT_R, p = SCRYPT_P;
	OSSL_PARAM params[7];
	kh_err e = KH_ERR_CRYPTO;

	if (!pw || !len || len > KH_DIST_PASSWORD_MAX)
		return KH_ERR_INVAL;
	if (!(kdf = EVP_KDF_fetch(NULL, "SCRYPT", NULL)))
		return KH_ERR_CRYPTO;
	ctx = EVP_KDF_CTX_new(kdf);
	EVP_KDF_free(kdf);
	if (!ctx)
		return KH_ERR_CRYPTO;
	params[0] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_PASSWORD, (void *)pw, len);
	params[1] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, 16);
	params[2] = OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_N, &n);
	params[3] = OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_R, &r);
	params[4] = OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_P, &p);
	params[5] = OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_MAXMEM, &maxmem);
	params[6] = OSSL_PARAM_construct_end();
	if (EVP_KDF_derive(ctx, out, 32, params) == 1)
		e = KH_OK;
	EVP_KDF_CTX_free(ctx);
	return e;
}

kh_err kh_dist_account_new(struct kh_store *st, const char *name, const char *pw, size_t len, int64_t now, int64_t *id)
{
	uint8_t salt[KH_STORE_DIST_SALT_LEN], hash[KH_STORE_DIST_HASH_LEN];
	kh_err r;

	if ((r = kh_random(salt, sizeof salt)) != KH_OK || (r = kh_dist_password_hash(pw, len, salt, hash)) != KH_OK)
		goto out;
	r = kh_store_dist_account_add(st, name, salt, hash, now, id);
out:
	kh_wipe(hash, sizeof hash);
	return r;
}

kh_err kh_dist_publish(struct kh_store *st, const uint8_t *manifest, size_t mlen, const uint8_t *code, size_t clen,
		       uint32_t price, int64_t now, int64_t *id, size_t *line)
{
	uint64_t version = 0;
	struct kh_dist_manifest m;
	struct kh_store_dist_program p;
	size_t at = 0;
	kh_err r;

	if (line)
		*line = 0;
	if (!manifest || !mlen || mlen > KH_DIST_MANIFEST_MAX)
		return KH_ERR_FORMAT;
	if ((r = kh_dist_manifest_parse(manifest, mlen, &m, &at)) != KH_OK) {
		if (line)
			*line = at;
		return r;
	}
	if (!code || !clen || clen > KH_DIST_PROGRAM_MAX)
		return KH_ERR_TOO_LARGE;
	/* The catalogue orders versions: the manifest's is a number, 1 to 2^32 - 1. */
	for (const char *c = m.version; *c; c++) {
		if (*c < '0' || *c > '9' || (version = version * 10 + (uint64_t)(*c - '0')) > UINT32_MAX)
			return KH_ERR_FORMAT;
	}
	if (version < 1)
		return KH_ERR_FORMAT;
	memset(&p, 0, sizeof p);
	p.name = m.name;
	p.version = (uint32_t)version;
	p.price = price;
	p.manifest = manifest;
	p.manifest_len = mlen;
	p.program = code;
	p.program_len = clen;
	return kh_store_dist_program_add(st, &p, now, id);
}
