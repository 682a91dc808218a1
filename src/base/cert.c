/*
 * Verification of operator certificates (include/keyhole/cert.h, the protocol design "Identities and
 * personalisation"): X.509 v3 certificates signed with the authority's Ed25519 root, whose
 * subject names a role (OU) and a unique address (serialNumber, 8 hex digits) and whose key is
 * a module's Ed25519 signing key or X25519 pairing key. Every zone checks certificates here,
 * the module zone included, so this file does no I/O, prints nothing and keeps no state: it
 * lets OpenSSL allocate while it works and frees everything before it returns, and it takes
 * back any errors it left on OpenSSL's error queue so a failed check leaves no trace behind.
 */
#include <limits.h>
#include <string.h>

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "keyhole/cert.h"

static const char *const role_names[] = {
	[KH_ROLE_CARD] = "card",
	[KH_ROLE_CAM] = "cam",
	[KH_ROLE_DECODER] = "decoder",
	[KH_ROLE_DISTRIBUTOR] = "distributor",
	[KH_ROLE_PROCESSOR] = "processor",
	[KH_ROLE_BUYER] = "buyer",
	[KH_ROLE_KEYCARD] = "keycard",
	[KH_ROLE_ECM_SIGNER] = "ecm-signer",
	[KH_ROLE_EMM_SIGNER] = "emm-signer",
	[KH_ROLE_ESCROW] = "escrow",
	[KH_ROLE_KEYCENTER] = "keycenter",
};
#define NROLES (sizeof role_names / sizeof role_names[0])

const char *kh_role_name(enum kh_role r)
{
	if ((unsigned)r >= NROLES)
		return NULL;
	return role_names[r]; /* NULL for KH_ROLE_NONE */
}

kh_err kh_role_parse(const char *name, enum kh_role *r)
{
	size_t i;

	if (name == NULL || r == NULL)
		return KH_ERR_INVAL;
	for (i = 1; i < NROLES; i++) {
		if (strcmp(name, role_names[i]) == 0) {
			*r = (enum kh_role)i;
			return KH_OK;
		}
	}
	return KH_ERR_INVAL;
}

/* Parse exactly len bytes of DER; NULL for bad DER, trailing bytes or an absurd length. */
static X509 *parse_der(const uint8_t *der, size_t len)
{
	const unsigned char *p = der;
	X509 *x;

	if (der == NULL || len == 0 || len > KH_CERT_MAX)
		return NULL;
	if ((x = d2i_X509(NULL, &p, (long)len)) == NULL)
		return NULL;
	if (p != der + len) {
		X509_free(x);
		return NULL;
	}
	return x;
}

/*
 * The shape every certificate of ours has, root or leaf: X.509 v3, signed with Ed25519,
 * extensions that OpenSSL could decode, and no critical extension it does not understand.
 */
static int well_formed(X509 *x)
{
	uint32_t flags;

	if (X509_get_version(x) != X509_VERSION_3)
		return 0;
	if (X509_get_signature_nid(x) != NID_ED25519)
		return 0;
	flags = X509_get_extension_flags(x);
	if (flags & (EXFLAG_INVALID | EXFLAG_CRITICAL))
		return 0;
	return 1;
}

/* Raw 32-byte key of a certificate and its type; 0 when it is neither Ed25519 nor X25519. */
static int cert_pub(X509 *x, uint8_t pub[static 32], enum kh_cert_key *type)
{
	EVP_PKEY *k = X509_get0_pubkey(x); /* owned by x */
	size_t n = 32;

	if (k == NULL)
		return 0;
	switch (EVP_PKEY_get_base_id(k)) {
	case EVP_PKEY_ED25519:
		*type = KH_CERT_KEY_ED25519;
		break;
	case EVP_PKEY_X25519:
		*type = KH_CERT_KEY_X25519;
		break;
	default:
		return 0;
	}
	return EVP_PKEY_get_raw_public_key(k, pub, &n) == 1 && n == 32;
}

/* The one value of attribute nid in name; NULL when it is missing or appears twice. */
static const ASN1_STRING *name_one(const X509_NAME *name, int nid)
{
	int i = X509_NAME_get_index_by_NID(name, nid, -1);

	if (i < 0 || X509_NAME_get_index_by_NID(name, nid, i) >= 0)
		return NULL;
	return X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i));
}

static enum kh_role subject_role(const X509_NAME *name)
{
	const ASN1_STRING *s = name_one(name, NID_organizationalUnitName);
	size_t i, n;

	if (s == NULL || ASN1_STRING_length(s) <= 0)
		return KH_ROLE_NONE;
	n = (size_t)ASN1_STRING_length(s);
	for (i = 1; i < NROLES; i++) {
		if (strlen(role_names[i]) == n && memcmp(ASN1_STRING_get0_data(s), role_names[i], n) == 0)
			return (enum kh_role)i;
	}
	return KH_ROLE_NONE;
}

/* The UA: exactly eight hex digits (the authority writes upper case; either case is read). */
static int subject_ua(const X509_NAME *name, uint32_t *ua)
{
	const ASN1_STRING *s = name_one(name, NID_serialNumber);
	const unsigned char *p;
	uint32_t v = 0;
	int i;

	if (s == NULL || ASN1_STRING_length(s) != 8)
		return 0;
	p = ASN1_STRING_get0_data(s);
	for (i = 0; i < 8; i++) {
		unsigned c = p[i], d;
		if (c >= '0' && c <= '9')
			d = c - '0';
		else if (c >= 'A' && c <= 'F')
			d = c - 'A' + 10;
		else if (c >= 'a' && c <= 'f')
			d = c - 'a' + 10;
		else
			return 0;
		v = v << 4 | d;
	}
	*ua = v;
	return 1;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (month 1..12); no time zone involved. */
static int64_t days_from_civil(int64_t y, int64_t m, int64_t d)
{
	int64_t era, yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

/* An ASN1_TIME (UTCTime or GeneralizedTime, always UTC in a certificate) as unix seconds. */
static int asn1_time_unix(const ASN1_TIME *t, int64_t *out)
{
	struct tm tm;

	if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1)
		return 0;
	*out = days_from_civil((int64_t)tm.tm_year + 1900, (int64_t)tm.tm_mon + 1, tm.tm_mday) * 86400 +
	       (int64_t)tm.tm_hour * 3600 + (int64_t)tm.tm_min * 60 + tm.tm_sec;
	return 1;
}

/* An Ed25519 public key object for root_pk; NULL on failure. */
static EVP_PKEY *root_key(const uint8_t root_pk[static 32])
{
	return EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, root_pk, 32);
}

static kh_err check(const uint8_t *der, size_t len, const uint8_t root_pk[static 32], enum kh_role want_role,
		    enum kh_cert_key want_key, uint64_t now, int lower_bound, struct kh_cert_info *info);

kh_err kh_cert_check(const uint8_t *der, size_t len, const uint8_t root_pk[static 32],
		     enum kh_role want_role, enum kh_cert_key want_key, uint64_t now,
		     struct kh_cert_info *info)
{
	return check(der, len, root_pk, want_role, want_key, now, 0, info);
}

kh_err kh_cert_check_by_clock(const uint8_t *der, size_t len, const uint8_t root_pk[static 32],
			      enum kh_role want_role, enum kh_cert_key want_key, uint64_t clock,
			      struct kh_cert_info *info)
{
	return check(der, len, root_pk, want_role, want_key, clock, 1, info);
}

kh_err kh_cert_read(const uint8_t *der, size_t len, struct kh_cert_info *info)
{
	struct kh_cert_info ci;
	const X509_NAME *subj;
	X509 *x = NULL;
	kh_err r = KH_ERR_CERT;

	ERR_set_mark();
	memset(&ci, 0, sizeof ci);
	if ((x = parse_der(der, len)) == NULL || !well_formed(x))
		goto out;
	subj = X509_get_subject_name(x);
	if ((ci.role = subject_role(subj)) == KH_ROLE_NONE || !subject_ua(subj, &ci.ua) || !cert_pub(x, ci.pub, &ci.key))
		goto out;
	*info = ci;
	r = KH_OK;
out:
	X509_free(x);
	ERR_pop_to_mark();
	return r;
}

static kh_err check(const uint8_t *der, size_t len, const uint8_t root_pk[static 32], enum kh_role want_role,
		    enum kh_cert_key want_key, uint64_t now, int lower_bound, struct kh_cert_info *info)
{
	struct kh_cert_info ci;
	const X509_NAME *subj;
	EVP_PKEY *rk = NULL;
	X509 *x = NULL;
	int64_t nb, na;
	uint32_t flags, ku;
	kh_err r;

	ERR_set_mark();
	memset(&ci, 0, sizeof ci);
	if (root_pk == NULL) {
		r = KH_ERR_INVAL;
		goto out;
	}
	r = KH_ERR_CERT;
	if ((x = parse_der(der, len)) == NULL || !well_formed(x))
		goto out;
	if ((rk = root_key(root_pk)) == NULL) {
		r = KH_ERR_CRYPTO;
		goto out;
	}
	/* Signature first: nothing a stranger wrote is looked at more closely than that. */
	if (X509_verify(x, rk) != 1)
		goto out;
	/* A module is never a CA: a leaked root certificate must not pass for a module's. */
	flags = X509_get_extension_flags(x);
	if ((flags & EXFLAG_CA) || X509_check_ca(x) != 0)
		goto out;
	subj = X509_get_subject_name(x);
	if ((ci.role = subject_role(subj)) == KH_ROLE_NONE || !subject_ua(subj, &ci.ua))
		goto out;
	if (!cert_pub(x, ci.pub, &ci.key))
		goto out;
	/* When keyUsage is present it must allow what the key is for. */
	ku = X509_get_key_usage(x);
	if ((flags & EXFLAG_KUSAGE) &&
	    !(ku & (ci.key == KH_CERT_KEY_ED25519 ? KU_DIGITAL_SIGNATURE : KU_KEY_AGREEMENT)))
		goto out;
	if (!asn1_time_unix(X509_get0_notBefore(x), &nb) || !asn1_time_unix(X509_get0_notAfter(x), &na) ||
	    na < 0 || nb > na)
		goto out;
	ci.not_after = (uint64_t)na;
	/* A lower bound of the time (a card's clock) can prove "expired", never "not yet valid". */
	if (now != 0 && ((!lower_bound && nb > 0 && now < (uint64_t)nb) || now > (uint64_t)na)) {
		r = KH_ERR_CERT_EXPIRED;
		goto out;
	}
	if ((want_role != KH_ROLE_NONE && ci.role != want_role) ||
	    (want_key != KH_CERT_KEY_ANY && ci.key != want_key)) {
		r = KH_ERR_CERT_ROLE;
		goto out;
	}
	if (info != NULL)
		*info = ci;
	r = KH_OK;
out:
	EVP_PKEY_free(rk);
	X509_free(x);
	ERR_pop_to_mark();
	return r;
}

kh_err kh_cert_root_pk(const uint8_t *der, size_t len, uint8_t root_pk[static 32])
{
	enum kh_cert_key type;
	uint8_t pk[32];
	X509 *x = NULL;
	uint32_t flags;
	kh_err r = KH_ERR_CERT;

	ERR_set_mark();
	if (root_pk == NULL) {
		r = KH_ERR_INVAL;
		goto out;
	}
	if ((x = parse_der(der, len)) == NULL || !well_formed(x))
		goto out;
	if (!cert_pub(x, pk, &type) || type != KH_CERT_KEY_ED25519)
		goto out;
	if (X509_NAME_cmp(X509_get_subject_name(x), X509_get_issuer_name(x)) != 0)
		goto out;
	/* Self-signed: the key inside verifies the signature over it. */
	if (X509_verify(x, X509_get0_pubkey(x)) != 1)
		goto out;
	flags = X509_get_extension_flags(x);
	if (!(flags & EXFLAG_BCONS) || !(flags & EXFLAG_CA))
		goto out;
	if ((flags & EXFLAG_KUSAGE) && !(X509_get_key_usage(x) & KU_KEY_CERT_SIGN))
		goto out;
	memcpy(root_pk, pk, 32);
	r = KH_OK;
out:
	X509_free(x);
	ERR_pop_to_mark();
	return r;
}

kh_err kh_cert_pem_to_der(const char *pem, size_t pemlen, uint8_t *der, size_t cap, size_t *len)
{
	unsigned char *data = NULL;
	long n = 0;
	BIO *bio = NULL;
	kh_err r;

	ERR_set_mark();
	if (pem == NULL || len == NULL || (der == NULL && cap > 0) || pemlen > INT_MAX) {
		r = KH_ERR_INVAL;
		goto out;
	}
	if ((bio = BIO_new_mem_buf(pem, (int)pemlen)) == NULL) {
		r = KH_ERR_NOMEM;
		goto out;
	}
	/* The first CERTIFICATE block; text before it (as openssl x509 -text writes) is skipped. */
	if (PEM_bytes_read_bio(&data, &n, NULL, PEM_STRING_X509, bio, NULL, NULL) != 1 || n <= 0) {
		r = KH_ERR_CERT;
		goto out;
	}
	if ((size_t)n > cap) {
		r = KH_ERR_BUF;
		goto out;
	}
	memcpy(der, data, (size_t)n);
	*len = (size_t)n;
	r = KH_OK;
out:
	OPENSSL_free(data);
	BIO_free(bio);
	ERR_pop_to_mark();
	return r;
}

kh_err kh_cert_der_to_pem(const uint8_t *der, size_t len, char *pem, size_t cap, size_t *pemlen)
{
	static const char head[] = "-----BEGIN CERTIFICATE-----\n", tail[] = "-----END CERTIFICATE-----\n";
	size_t at = sizeof head - 1;

	if (!der || !len || len > KH_CERT_MAX || !pem || !pemlen)
		return KH_ERR_INVAL;
	/* 48 bytes make one 64-character line */
	if (cap < sizeof head - 1 + (len + 47) / 48 * 65 + sizeof tail)
		return KH_ERR_BUF;
	memcpy(pem, head, at);
	for (size_t off = 0; off < len; off += 48) {
		size_t n = len - off < 48 ? len - off : 48;
		at += (size_t)EVP_EncodeBlock((unsigned char *)pem + at, der + off, (int)n);
		pem[at++] = '\n';
	}
	memcpy(pem + at, tail, sizeof tail);
	*pemlen = at + sizeof tail - 1;
	return KH_OK;
}
