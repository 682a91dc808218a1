/*
 * What the harnesses that set up modules in service share (fuzz_cas, fuzz_decoder): a leaf
 * certificate as the authority issues it (include/keyhole/cert.h), signed with OpenSSL by a fixed
 * Ed25519 test root the harness holds, so a module personalised with that root's public key
 * accepts it. Deterministic: Ed25519 signatures are, and the fields are fixed.
 */
#ifndef KH_FUZZ_ISSUE_H
#define KH_FUZZ_ISSUE_H

#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "keyhole/cert.h"

static void __attribute__((unused)) fz_issue_die(const char *what)
{
	fprintf(stderr, "fuzz setup: certificate: %s\n", what);
	__builtin_trap();
}

/*
 * A certificate for role and ua holding the raw public key pub of type (EVP_PKEY_ED25519 or
 * EVP_PKEY_X25519), valid from not_before to not_after, signed by root_sk; its DER into der (cap
 * bytes). Returns the DER length; traps on any failure (harness setup only).
 */
static size_t __attribute__((unused))
fz_issue(const uint8_t root_sk[static 32], enum kh_role role, uint32_t ua, int type, const uint8_t pub[static 32],
	 uint64_t not_before, uint64_t not_after, uint8_t *der, size_t cap)
{
	char serial[9], cn[32];
	X509V3_CTX ctx;
	X509_EXTENSION *e;
	unsigned char *p;
	EVP_PKEY *rk, *pk;
	X509_NAME *nm, *iss;
	X509 *x;
	int n = 0;

	snprintf(serial, sizeof serial, "%08X", (unsigned)ua);
	snprintf(cn, sizeof cn, "%s %08X", kh_role_name(role), (unsigned)ua);
	rk = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, root_sk, 32);
	pk = EVP_PKEY_new_raw_public_key(type, NULL, pub, 32);
	x = X509_new();
	nm = X509_NAME_new();
	iss = X509_NAME_new();
	if (!rk || !pk || !x || !nm || !iss)
		fz_issue_die("openssl alloc");
	X509_NAME_add_entry_by_NID(iss, NID_organizationName, MBSTRING_UTF8, (const unsigned char *)"Fuzz Operator", -1, -1, 0);
	X509_NAME_add_entry_by_NID(iss, NID_commonName, MBSTRING_UTF8, (const unsigned char *)"Fuzz Operator root", -1, -1, 0);
	X509_NAME_add_entry_by_NID(nm, NID_organizationName, MBSTRING_UTF8, (const unsigned char *)"Fuzz Operator", -1, -1, 0);
	X509_NAME_add_entry_by_NID(nm, NID_organizationalUnitName, MBSTRING_UTF8,
				   (const unsigned char *)kh_role_name(role), -1, -1, 0);
	X509_NAME_add_entry_by_NID(nm, NID_serialNumber, MBSTRING_UTF8, (const unsigned char *)serial, -1, -1, 0);
	X509_NAME_add_entry_by_NID(nm, NID_commonName, MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0);
	if (X509_set_version(x, X509_VERSION_3) != 1 || X509_set_subject_name(x, nm) != 1 ||
	    X509_set_issuer_name(x, iss) != 1 || X509_set_pubkey(x, pk) != 1 ||
	    ASN1_INTEGER_set(X509_get_serialNumber(x), (long)ua) != 1 ||
	    ASN1_TIME_set(X509_getm_notBefore(x), (time_t)not_before) == NULL ||
	    ASN1_TIME_set(X509_getm_notAfter(x), (time_t)not_after) == NULL)
		fz_issue_die("fields");
	X509V3_set_ctx(&ctx, NULL, x, NULL, NULL, 0);
	if ((e = X509V3_EXT_nconf_nid(NULL, &ctx, NID_basic_constraints, "critical,CA:FALSE")) == NULL ||
	    X509_add_ext(x, e, -1) != 1)
		fz_issue_die("basicConstraints");
	X509_EXTENSION_free(e);
	if ((e = X509V3_EXT_nconf_nid(NULL, &ctx, NID_key_usage,
				      type == EVP_PKEY_ED25519 ? "critical,digitalSignature" : "critical,keyAgreement")) ==
		    NULL ||
	    X509_add_ext(x, e, -1) != 1)
		fz_issue_die("keyUsage");
	X509_EXTENSION_free(e);
	if (X509_sign(x, rk, NULL) <= 0 || (n = i2d_X509(x, NULL)) <= 0 || (size_t)n > cap)
		fz_issue_die("signature");
	p = der;
	i2d_X509(x, &p);
	X509_NAME_free(nm);
	X509_NAME_free(iss);
	X509_free(x);
	EVP_PKEY_free(pk);
	EVP_PKEY_free(rk);
	return (size_t)n;
}

#endif
