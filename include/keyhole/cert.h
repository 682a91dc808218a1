/*
 * Operator certificates (the protocol design "Identities"). The authority signs X.509 v3
 * certificates with its Ed25519 root; each names a role and a unique address (UA) in its
 * subject:  O=<operator>, OU=<role>, serialNumber=<UA as 8 hex digits>, CN=<role> <UA hex>.
 * A module's pairing certificate carries its X25519 key, its signing certificate its Ed25519 key.
 *
 * kh_cert_check() is the one verifier every zone uses (a CAM checking a card, a decoder checking
 * a CAM, a center checking a card): it lives in base so the module zone can call it.
 */
#ifndef KEYHOLE_CERT_H
#define KEYHOLE_CERT_H

#include <stddef.h>
#include <stdint.h>

#include "keyhole/err.h"

#define KH_CERT_MAX 1024 /* largest DER certificate a module stores or accepts */

enum kh_role {
	KH_ROLE_NONE = 0,
	KH_ROLE_CARD = 1,
	KH_ROLE_CAM = 2,
	KH_ROLE_DECODER = 3,
	KH_ROLE_DISTRIBUTOR = 4,
	KH_ROLE_PROCESSOR = 5,
	KH_ROLE_BUYER = 6,
	KH_ROLE_KEYCARD = 7,
	KH_ROLE_ECM_SIGNER = 8, /* the headend's key that signs every ECM's access criteria */
	KH_ROLE_EMM_SIGNER = 9, /* the operator's key that signs group and broadcast EMMs */
	KH_ROLE_ESCROW = 10,    /* an escrow's key that signs listings and answers */
	KH_ROLE_KEYCENTER = 11, /* a key center's key that signs acks and its enrolment key */
};

enum kh_cert_key {
	KH_CERT_KEY_ANY = 0,
	KH_CERT_KEY_ED25519 = 1,
	KH_CERT_KEY_X25519 = 2,
};

/* "card", "cam", ...; NULL for an unknown role. */
const char *kh_role_name(enum kh_role r);
/* KH_ERR_INVAL for an unknown name. */
KH_WARN_UNUSED kh_err kh_role_parse(const char *name, enum kh_role *r);

struct kh_cert_info {
	enum kh_role role;
	uint32_t ua;
	enum kh_cert_key key;
	uint8_t pub[32];
	uint64_t not_after; /* unix seconds */
};

/*
 * Verify a DER certificate: it parses with no trailing bytes, is signed by the Ed25519 root key
 * root_pk, is not a CA, names a known role and a UA, and carries an Ed25519 or X25519 key.
 * want_role / want_key of NONE / ANY accept any. now (unix seconds) is checked against the
 * validity period unless 0. Returns KH_ERR_CERT (not from this root, or malformed),
 * KH_ERR_CERT_EXPIRED (genuine but outside its validity period), KH_ERR_CERT_ROLE (role or key
 * type differ), or KH_OK with *info filled (info may be NULL).
 */
KH_WARN_UNUSED kh_err kh_cert_check(const uint8_t *der, size_t len, const uint8_t root_pk[static 32],
				    enum kh_role want_role, enum kh_cert_key want_key, uint64_t now,
				    struct kh_cert_info *info);

/*
 * The same, judged by a clock that is only a lower bound of the time (a card's: the newest time
 * the operator signed, which lags): KH_ERR_CERT_EXPIRED once clock is past notAfter, but a
 * notBefore after clock is accepted (the certificate may well be valid by now). clock 0 skips it.
 */
KH_WARN_UNUSED kh_err kh_cert_check_by_clock(const uint8_t *der, size_t len, const uint8_t root_pk[static 32],
					     enum kh_role want_role, enum kh_cert_key want_key, uint64_t clock,
					     struct kh_cert_info *info);

/*
 * What a certificate of ours says (role, UA, key; not_after left 0), read without checking who
 * signed it: for a party that keeps its own certificate beside its key and wants to know they
 * match. Never a proof of anything. KH_ERR_CERT when it does not parse as one of ours.
 */
KH_WARN_UNUSED kh_err kh_cert_read(const uint8_t *der, size_t len, struct kh_cert_info *info);

/* Root certificate: parse a self-signed Ed25519 root and return its public key (KH_ERR_CERT otherwise). */
KH_WARN_UNUSED kh_err kh_cert_root_pk(const uint8_t *der, size_t len, uint8_t root_pk[static 32]);

/* PEM <-> DER for one CERTIFICATE block. */
KH_WARN_UNUSED kh_err kh_cert_pem_to_der(const char *pem, size_t pemlen, uint8_t *der, size_t cap, size_t *len);
/* PEM of one certificate (len <= KH_CERT_MAX) into pem, NUL-terminated, *pemlen without the NUL;
 * KH_ERR_BUF when cap is short (KH_CERT_PEM_MAX always does). */
#define KH_CERT_PEM_MAX (28 + (KH_CERT_MAX + 47) / 48 * 65 + 27)
KH_WARN_UNUSED kh_err kh_cert_der_to_pem(const uint8_t *der, size_t len, char *pem, size_t cap, size_t *pemlen);

#endif
