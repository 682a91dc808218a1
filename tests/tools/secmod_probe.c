/*
 * A front end in miniature for tests/cli/test_escrow_secmod.sh: talks to a running
 * `keyhole escrow secmod` through the real client library (include/keyhole/secmod.h).
 *
 *   kh_secmod_probe SOCK ping            the process answers (a PUBKEY of an id nobody has
 *                                        is NOTFOUND); prints "ok"
 *   kh_secmod_probe SOCK keygen BITS     make a key; prints "id=HEX"
 *   kh_secmod_probe SOCK check HEX N     N times: m random in [2, n-2], c' = m^e mod n,
 *                                        DECRYPT, z == m; then c' = 0 and c' = n are refused
 *                                        with BLIND_RANGE; prints "ok"
 * Exit status: 0 ok, 1 a wrong answer or a failed call (its error printed), 2 usage.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "keyhole/file.h"
#include "keyhole/secmod.h"

static int fail(const char *what, kh_err r)
{
	fprintf(stderr, "kh_secmod_probe: %s: %s (%s)\n", what, kh_strerror(r), kh_err_name(r));
	return 1;
}

static int check(struct kh_secmod_client *c, const uint8_t *id, long count)
{
	uint8_t der[2048], cb[KH_SECMOD_MOD_MAX], z[KH_SECMOD_MOD_MAX], m[KH_SECMOD_MOD_MAX];
	const unsigned char *q = der;
	BIGNUM *n = NULL, *e = NULL, *bm = BN_new(), *bc = BN_new(), *lim = NULL;
	BN_CTX *ctx = BN_CTX_new();
	EVP_PKEY *pk = NULL;
	size_t dl, len;
	kh_err r;
	int rc = 1;

	if ((r = kh_secmod_pubkey(c, id, der, sizeof der, &dl)) != KH_OK)
		return fail("pubkey", r);
	if (!(pk = d2i_PUBKEY(NULL, &q, (long)dl)) || !EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_RSA_N, &n) ||
	    !EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_RSA_E, &e) || !bm || !bc || !ctx || !(lim = BN_dup(n)) ||
	    !BN_sub_word(lim, 3)) {
		fprintf(stderr, "kh_secmod_probe: the public key does not parse\n");
		goto out;
	}
	len = (size_t)BN_num_bytes(n);
	for (long i = 0; i < count; i++) {
		if (!BN_rand_range(bm, lim) || !BN_add_word(bm, 2) || !BN_mod_exp(bc, bm, e, n, ctx) ||
		    BN_bn2binpad(bm, m, (int)len) < 0 || BN_bn2binpad(bc, cb, (int)len) < 0)
			goto out;
		if ((r = kh_secmod_decrypt(c, id, cb, len, z)) != KH_OK) {
			rc = fail("decrypt", r);
			goto out;
		}
		if (memcmp(z, m, len) != 0) {
			fprintf(stderr, "kh_secmod_probe: z is not m\n");
			goto out;
		}
	}
	memset(cb, 0, len);
	if ((r = kh_secmod_decrypt(c, id, cb, len, z)) != KH_ERR_BLIND_RANGE) {
		rc = fail("decrypt of 0 not refused as out of range", r);
		goto out;
	}
	if (BN_bn2binpad(n, cb, (int)len) < 0 || (r = kh_secmod_decrypt(c, id, cb, len, z)) != KH_ERR_BLIND_RANGE) {
		rc = fail("decrypt of n not refused as out of range", r);
		goto out;
	}
	printf("ok\n");
	rc = 0;
out:
	EVP_PKEY_free(pk);
	BN_free(n);
	BN_free(e);
	BN_free(bm);
	BN_free(bc);
	BN_free(lim);
	BN_CTX_free(ctx);
	return rc;
}

int main(int argc, char **argv)
{
	struct kh_secmod_client *c = NULL;
	uint8_t id[KH_SECMOD_ID_LEN], der[2048];
	char hex[2 * KH_SECMOD_ID_LEN + 1];
	size_t dl;
	kh_err r;
	int rc;

	if (argc < 3 || (strcmp(argv[2], "ping") == 0 && argc != 3) || (strcmp(argv[2], "check") == 0 && argc != 5) ||
	    (strcmp(argv[2], "keygen") == 0 && argc != 4)) {
		fprintf(stderr, "usage: kh_secmod_probe SOCK ping | SOCK keygen BITS | SOCK check HEXID N\n");
		return 2;
	}
	if ((r = kh_secmod_client_open(argv[1], &c)) != KH_OK)
		return fail(argv[1], r);
	if (strcmp(argv[2], "ping") == 0) {
		memset(id, 0, sizeof id);
		r = kh_secmod_pubkey(c, id, der, sizeof der, &dl);
		rc = r == KH_ERR_NOTFOUND ? 0 : fail("ping", r);
		if (rc == 0)
			printf("ok\n");
	} else if (strcmp(argv[2], "keygen") == 0) {
		if ((r = kh_secmod_keygen(c, (unsigned)atoi(argv[3]), id, der, sizeof der, &dl)) != KH_OK) {
			rc = fail("keygen", r);
		} else {
			kh_hex_encode(id, sizeof id, hex);
			printf("id=%s\n", hex);
			rc = 0;
		}
	} else if (strcmp(argv[2], "check") != 0) {
		fprintf(stderr, "kh_secmod_probe: unknown command %s\n", argv[2]);
		rc = 2;
	} else if (kh_hex_decode(argv[3], strlen(argv[3]), id, sizeof id) != KH_OK) {
		fprintf(stderr, "kh_secmod_probe: %s is not a key id\n", argv[3]);
		rc = 2;
	} else {
		rc = check(c, id, atol(argv[4]));
	}
	kh_secmod_client_close(c);
	return rc;
}
