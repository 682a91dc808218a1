/*
 * libFuzzer harness: operator certificates (src/base/cert.c) — what a CAM gets from a card, a
 * decoder from a CAM, a module in PERSO CERTS, a centre from the field. The input is tried as
 * DER with kh_cert_check (fixed root key) and kh_cert_root_pk, and as PEM with
 * kh_cert_pem_to_der, whose output goes through the DER checks in turn.
 *
 * Invariants: only the documented codes come back and OpenSSL's error queue is left empty; an
 * accepted leaf names a known role and an Ed25519 or X25519 key, is accepted again when asked
 * for exactly that role and key and refused (CERT_ROLE) for any other, is refused under another
 * root, its validity ends exactly at not_after, and OpenSSL's own reading of it finds no CA, no
 * unhandled critical extension and no keyUsage at odds with the key; a certificate
 * kh_cert_root_pk accepts is a CA, so kh_cert_check refuses it under every root; PEM
 * decoding writes within its capacity, refuses one byte less, and gives back any DER it is
 * handed wrapped as PEM.
 *
 * ROOT_PK is the root of the throwaway authority that signed the seeds (fuzz/gen_corpus.c
 * prints it): regenerate the seeds and this key together. Besides real leaves and the root, the
 * seeds hold certificates that root signed but the authority would never issue (a CA with a
 * role, wrong key usage, unknown critical extension, bad UA, unknown role, two OUs, v1,
 * expired), so the fuzzer starts past the signature check.
 */
#include <stdio.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "keyhole/cert.h"
#include "keyhole/crypto.h"

#include "fuzz_common.h"

static const uint8_t ROOT_PK[32] = {
	0xd6, 0x2b, 0x1d, 0x2c, 0xbc, 0x00, 0x00, 0xba, 0x2a, 0x5e, 0xae, 0x78, 0x4b, 0xe8, 0xd1, 0xb9,
	0x55, 0xeb, 0xc5, 0xd6, 0x7c, 0xb3, 0x0f, 0xab, 0x12, 0x73, 0x4d, 0x37, 0x09, 0x96, 0x7f, 0x6c,
};

#define PEM_CAP (1u << 16)
#define MAX_IN (1u << 16)

static struct kh_rng_det rng;
static uint8_t other_pk[32]; /* a second, unrelated root */
static uint8_t der[PEM_CAP];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static const char seed[] = "keyhole fuzz rng v1";
	uint8_t sk[32];
	size_t i;

	(void)argc, (void)argv;
	kh_rng_det_init(&rng, (const uint8_t *)seed, sizeof seed - 1);
	kh_rng_set(kh_rng_det_fn, &rng);
	for (i = 0; i < sizeof sk; i++)
		sk[i] = (uint8_t)(0xa0 + i);
	if (kh_ed25519_public(sk, other_pk) != KH_OK)
		__builtin_trap();
	return 0;
}

static void same_info(const struct kh_cert_info *a, const struct kh_cert_info *b)
{
	CHECK(a->role == b->role && a->ua == b->ua && a->key == b->key && a->not_after == b->not_after);
	CHECK(memcmp(a->pub, b->pub, 32) == 0);
}

/* kh_cert_check, with the error queue checked empty afterwards. */
static kh_err check(const uint8_t *d, size_t n, const uint8_t pk[static 32], enum kh_role role,
		    enum kh_cert_key key, uint64_t now, struct kh_cert_info *info)
{
	kh_err r = kh_cert_check(d, n, pk, role, key, now, info);
	CHECK(ERR_peek_error() == 0);
	CHECK(r == KH_OK || r == KH_ERR_CERT || r == KH_ERR_CERT_ROLE || r == KH_ERR_CERT_EXPIRED);
	return r;
}

/*
 * OpenSSL's own view of d, independent of cert.c: 1 when it is exactly one DER certificate that
 * breaks a rule every module certificate keeps — X.509 v3, not a CA, no critical extension
 * OpenSSL does not handle, and a keyUsage (when present) that allows what the key is for.
 */
static int breaks_leaf_rules(const uint8_t *d, size_t n, enum kh_cert_key key)
{
	const unsigned char *p = d;
	uint32_t flags;
	X509 *x;
	int bad = 0;

	if (n == 0 || n > KH_CERT_MAX || (x = d2i_X509(NULL, &p, (long)n)) == NULL)
		return 0;
	if (p == d + n) {
		flags = X509_get_extension_flags(x);
		bad = X509_get_version(x) != X509_VERSION_3 || (flags & (EXFLAG_CA | EXFLAG_CRITICAL)) ||
		      X509_check_ca(x) != 0 ||
		      ((flags & EXFLAG_KUSAGE) &&
		       !(X509_get_key_usage(x) &
			 (key == KH_CERT_KEY_ED25519 ? KU_DIGITAL_SIGNATURE : KU_KEY_AGREEMENT)));
	}
	X509_free(x);
	ERR_clear_error();
	return bad;
}

static void check_der(const uint8_t *d, size_t n)
{
	struct kh_cert_info info, again;
	uint8_t pk[32];
	kh_err r;

	memset(&info, 0, sizeof info);
	r = check(d, n, ROOT_PK, KH_ROLE_NONE, KH_CERT_KEY_ANY, 0, &info);
	CHECK(r == KH_OK || r == KH_ERR_CERT);
	/* kh_cert_read (no signature checked): refuses only as CERT, leaves no error behind, and
	 * reads what the root vouches for exactly as kh_cert_check does */
	{
		struct kh_cert_info rd;
		kh_err rr = kh_cert_read(d, n, &rd);
		CHECK(ERR_peek_error() == 0);
		CHECK(rr == KH_OK || rr == KH_ERR_CERT);
		if (r == KH_OK)
			CHECK(rr == KH_OK && rd.role == info.role && rd.ua == info.ua && rd.key == info.key &&
			      memcmp(rd.pub, info.pub, 32) == 0);
	}
	if (r == KH_OK) {
		enum kh_role other_role = (enum kh_role)(info.role % KH_ROLE_KEYCARD + 1);
		enum kh_cert_key other_key =
			info.key == KH_CERT_KEY_ED25519 ? KH_CERT_KEY_X25519 : KH_CERT_KEY_ED25519;

		CHECK(n <= KH_CERT_MAX);
		CHECK(!breaks_leaf_rules(d, n, info.key));
		CHECK(kh_role_name(info.role) != NULL);
		CHECK(info.key == KH_CERT_KEY_ED25519 || info.key == KH_CERT_KEY_X25519);
		memset(&again, 0xee, sizeof again);
		CHECK(check(d, n, ROOT_PK, info.role, info.key, 0, &again) == KH_OK);
		same_info(&info, &again);
		CHECK(check(d, n, ROOT_PK, info.role, KH_CERT_KEY_ANY, 0, NULL) == KH_OK);
		CHECK(check(d, n, ROOT_PK, other_role, KH_CERT_KEY_ANY, 0, NULL) == KH_ERR_CERT_ROLE);
		CHECK(check(d, n, ROOT_PK, KH_ROLE_NONE, other_key, 0, NULL) == KH_ERR_CERT_ROLE);
		/* Valid up to and including not_after, not a second longer. */
		CHECK(check(d, n, ROOT_PK, KH_ROLE_NONE, KH_CERT_KEY_ANY, info.not_after, NULL) == KH_OK ||
		      info.not_after == 0);
		CHECK(check(d, n, ROOT_PK, KH_ROLE_NONE, KH_CERT_KEY_ANY, info.not_after + 1, NULL) == KH_ERR_CERT_EXPIRED);
		/* Another root's signature it is not. */
		CHECK(check(d, n, other_pk, KH_ROLE_NONE, KH_CERT_KEY_ANY, 0, NULL) == KH_ERR_CERT);
	}

	r = kh_cert_root_pk(d, n, pk);
	CHECK(ERR_peek_error() == 0);
	CHECK(r == KH_OK || r == KH_ERR_CERT);
	if (r == KH_OK) {
		/* A root is a CA: never a module's certificate, whoever signed it. */
		CHECK(n <= KH_CERT_MAX);
		CHECK(check(d, n, pk, KH_ROLE_NONE, KH_CERT_KEY_ANY, 0, NULL) == KH_ERR_CERT);
		CHECK(check(d, n, ROOT_PK, KH_ROLE_NONE, KH_CERT_KEY_ANY, 0, NULL) == KH_ERR_CERT);
	}
}

static void check_pem(const uint8_t *d, size_t n)
{
	size_t len = 0, len2 = 0;
	kh_err r;

	r = kh_cert_pem_to_der((const char *)d, n, der, sizeof der, &len);
	CHECK(ERR_peek_error() == 0);
	CHECK(r == KH_OK || r == KH_ERR_CERT);
	if (r != KH_OK)
		return;
	CHECK(len > 0 && len <= sizeof der);
	CHECK(kh_cert_pem_to_der((const char *)d, n, der, len - 1, &len2) == KH_ERR_BUF);
	CHECK(ERR_peek_error() == 0);
	CHECK(kh_cert_pem_to_der((const char *)d, n, der, len, &len2) == KH_OK && len2 == len);
	check_der(der, len);
}

/* Wrap the input as a PEM CERTIFICATE block: the decoder must give it back. */
static void pem_round_trip(const uint8_t *d, size_t n)
{
	BIO *bio;
	char *pem = NULL;
	long pemlen;
	size_t len = 0;

	if (n == 0)
		return;
	if ((bio = BIO_new(BIO_s_mem())) == NULL)
		return;
	if (PEM_write_bio(bio, "CERTIFICATE", "", d, (long)n) > 0 && (pemlen = BIO_get_mem_data(bio, &pem)) > 0) {
		CHECK(kh_cert_pem_to_der(pem, (size_t)pemlen, der, sizeof der, &len) == KH_OK);
		CHECK(len == n && memcmp(der, d, n) == 0);
	}
	BIO_free(bio);
	ERR_clear_error();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > MAX_IN)
		return 0;
	ERR_clear_error();
	check_der(data, size);
	check_pem(data, size);
	pem_round_trip(data, size);
	return 0;
}
