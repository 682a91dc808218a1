/*
 * A center service's identity (center zone, src/center/identity.c): the Ed25519 signing key of a
 * distribution server (role `distributor`) or an escrow (role `escrow`), certified by the
 * authority, in the service's own directory: ROLE.key (the signing key, mode 0600), ROLE.crt (its
 * certificate, PEM) and root.crt (the authority's root, PEM).
 */
#ifndef KEYHOLE_IDENTITY_H
#define KEYHOLE_IDENTITY_H

#include <stddef.h>
#include <stdint.h>

#include "keyhole/authority.h"
#include "keyhole/cert.h"
#include "keyhole/err.h"

/* Serials of center services: from here up to the signers' (KH_SIGNER_SERIAL_BASE). */
#define KH_CENTER_SERIAL_BASE 0xFE000000u

struct kh_identity {
	uint32_t serial;
	uint8_t sk[32], pk[32];
	uint8_t cert[KH_CERT_MAX];
	size_t cert_len;
	uint8_t root_pk[32];
};

/*
 * Make the key and have the authority a certify it for role, with the first serial from
 * KH_CENTER_SERIAL_BASE that no module or service has (dir is created, mode 0700, if missing).
 * KH_ERR_EXISTS when dir holds that role's key or certificate already; KH_ERR_TOO_LARGE when the
 * serials are used up. The key is written last: a directory with a key is a finished identity.
 */
KH_WARN_UNUSED kh_err kh_identity_new(struct kh_authority *a, const char *dir, enum kh_role role, uint32_t *serial);
/*
 * Load it: the certificate must be the root's, for role, on the key stored (KH_ERR_CERT,
 * KH_ERR_CERT_ROLE, KH_ERR_CERT_KEY). id is wiped on failure; the caller wipes it after use.
 */
KH_WARN_UNUSED kh_err kh_identity_load(const char *dir, enum kh_role role, struct kh_identity *id);

#endif
