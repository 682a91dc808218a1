/*
 * The operator authority (center zone): the Ed25519 root key and self-signed X.509 root, the
 * management master key from which card keys are diversified (the protocol design), and the issuing of
 * module certificates. Lives in a directory:
 *
 *   root.key     Ed25519 private key, PKCS#8 PEM, mode 0600
 *   root.crt     self-signed root certificate, PEM
 *   master.key   32-byte management master key, hex, mode 0600
 *   next-ua      next unique address to hand out (decimal), replaced atomically
 *   validity-days  optional: days a certificate issued is valid (default five years)
 *   ecm-signer.key, emm-signer.key  the operator's signers (signers.c), mode 0600
 *   issued/      every certificate issued, <role>-<UA>-<sign|pair>.crt, PEM, and ua-<UA>.spent
 *                for every UA whose keys went to a module (personalise.c)
 *
 * Key files are written under umask 077 and refused (KH_ERR_KEYFILE_PERM) when group or others
 * can read them.
 */
#ifndef KEYHOLE_AUTHORITY_H
#define KEYHOLE_AUTHORITY_H

#include <stddef.h>
#include <stdint.h>

#include "keyhole/cas.h"
#include "keyhole/cert.h"
#include "keyhole/err.h"

struct kh_authority;

/*
 * Longest operator name, in bytes. The root certificate's CN is "<name> root" and X.520 allows
 * at most 64 characters in a CN, so the name may take 64 - 5 of them.
 */
#define KH_AUTHORITY_NAME_MAX 59

/*
 * Create a new authority in dir (created if missing) for operator_name (1 to
 * KH_AUTHORITY_NAME_MAX bytes, no control characters; KH_ERR_INVAL otherwise). KH_ERR_EXISTS
 * if dir already holds root.key or master.key, or if another process creates the authority at
 * the same time. Nothing is ever replaced, and on failure the files this call created are
 * removed again, so a retry can succeed (files it did not create are left alone).
 */
KH_WARN_UNUSED kh_err kh_authority_init(const char *dir, const char *operator_name);
/*
 * The same with a validity policy: the certificates the authority issues (modules and signers)
 * are valid for days days from issue (0: the default, KH_AUTHORITY_VALIDITY_DEFAULT; at most
 * KH_AUTHORITY_VALIDITY_MAX, KH_ERR_INVAL beyond), written to DIR/validity-days, which an
 * operator may also edit for the certificates issued after. A short life bounds what one
 * extracted module key is worth; the revocation list covers the time until then.
 */
#define KH_AUTHORITY_VALIDITY_DEFAULT 1827 /* five years */
#define KH_AUTHORITY_VALIDITY_MAX 7305     /* twenty years */
KH_WARN_UNUSED kh_err kh_authority_init_days(const char *dir, const char *operator_name, unsigned days);
KH_WARN_UNUSED kh_err kh_authority_open(const char *dir, struct kh_authority **out);
void kh_authority_free(struct kh_authority *a);

/* The root's Ed25519 public key and DER certificate (owned by a; valid until _free). */
void kh_authority_root_pk(const struct kh_authority *a, uint8_t pk[static 32]);
void kh_authority_root_der(const struct kh_authority *a, const uint8_t **der, size_t *len);
const char *kh_authority_name(const struct kh_authority *a);

/* KH_ERR_EXISTS when a certificate was issued for ua, whatever the role, or ua was spent. */
KH_WARN_UNUSED kh_err kh_authority_ua_free(const struct kh_authority *a, uint32_t ua);
/*
 * Mark ua spent (issued/ua-XXXXXXXX.spent, created durably, never replaced) before its keys go
 * to a module: a personalisation that fails afterwards leaves the UA out of use for good, as the
 * module may hold its diversified keys. KH_ERR_EXISTS when it was spent already (another process
 * took it at the same time).
 */
KH_WARN_UNUSED kh_err kh_authority_ua_spend(struct kh_authority *a, uint32_t ua, enum kh_role role);
/* Take the next unique address; the counter is durable before it returns (never reused). */
KH_WARN_UNUSED kh_err kh_authority_next_ua(struct kh_authority *a, uint32_t *ua);

/*
 * Issue a certificate for a module key: role and ua go into the subject; key is the type of pub.
 * The DER goes to der (cap >= KH_CERT_MAX is enough) and a PEM copy to issued/.
 * `use` is "sign" or "pair" and names the file. The file is created, never replaced: when one
 * exists for that role, UA and use (also when another process issues it at the same time) the
 * result is KH_ERR_EXISTS and the certificate already there stays as it is.
 */
KH_WARN_UNUSED kh_err kh_authority_issue(struct kh_authority *a, enum kh_role role, uint32_t ua,
					 enum kh_cert_key key, const uint8_t pub[static 32], const char *use,
					 uint8_t *der, size_t cap, size_t *len);

/* Kp and Ku of a card (the protocol design): HKDF(master, "", label || UA, 32). */
KH_WARN_UNUSED kh_err kh_authority_card_keys(const struct kh_authority *a, uint32_t ua,
					     uint8_t kp[static 32], uint8_t ku[static 32]);

/* What personalising one module produced: its identity and the two certificates issued for it. */
struct kh_issued {
	enum kh_role role;
	uint32_t ua;
	size_t sign_len, pair_len;
	uint8_t sign_der[KH_CERT_MAX];
	uint8_t pair_der[KH_CERT_MAX];
};

/*
 * The operator's ECM and EMM signers (docs/protocols/cas.md): an Ed25519 key made here and
 * certified by the root with role `ecm-signer` or `emm-signer` and a UA of its own (the signer's
 * serial), kept in <dir>/<role>.key (mode 0600) beside its certificate in issued/.
 * _new makes one (KH_ERR_EXISTS when the role's key file is there: it is never replaced, as
 * cards already trust its certificate; KH_ERR_INVAL for another role). _ensure makes whichever of
 * the two is missing (*made, may be NULL: how many). _load reads one back (sg and der may each be
 * NULL, not both) and checks that key, certificate and the root belong together (KH_ERR_CERT_KEY
 * otherwise); KH_ERR_NOTFOUND when the authority has none yet. sg holds a private key: wipe it.
 */
#define KH_SIGNER_SERIAL_BASE 0xFF000000u /* signers' UAs; modules get UAs below it */
KH_WARN_UNUSED kh_err kh_authority_signer_new(struct kh_authority *a, enum kh_role role);
KH_WARN_UNUSED kh_err kh_authority_signers_ensure(struct kh_authority *a, unsigned *made);
KH_WARN_UNUSED kh_err kh_authority_signer_load(const char *dir, enum kh_role role, struct kh_cas_signer *sg,
					       uint8_t *der, size_t cap, size_t *len);
/*
 * A signing key's file: "<serial, 8 hex digits> <Ed25519 private key, 64 hex digits>\n", mode
 * 0600. _write creates it and never replaces one (KH_ERR_EXISTS); _read refuses a file others
 * may read (kh_keyfile_read) or of another shape (KH_ERR_FORMAT). sk is wiped on failure.
 */
KH_WARN_UNUSED kh_err kh_signing_key_write(const char *path, uint32_t serial, const uint8_t sk[static 32]);
KH_WARN_UNUSED kh_err kh_signing_key_read(const char *path, uint32_t *serial, uint8_t sk[static 32]);

/* The public key of the root certificate in a PEM file (an authority's root.crt, or a copy). */
KH_WARN_UNUSED kh_err kh_root_file_pk(const char *path, uint8_t root_pk[static 32]);

/* The directory the authority lives in (owned by a). */
const char *kh_authority_dir(const struct kh_authority *a);

struct kh_transport;

/*
 * Personalise a blank module through a transport, in APDUs only: GET INFO, PERSO INIT with its
 * role, UA (0: the next free one), the operator root key and its diversified keys; certify the
 * two public keys it answers with (its private keys never leave it); PERSO CERTS. The module
 * stores its sealed state itself. Errors: the module's refusal, or a key it answers with that is
 * malformed.
 *
 * A module that GET INFO shows past blank (keys made, or personalised) is refused with
 * KH_ERR_PERSONALISED, and a transport that fails there with its error, before the authority
 * takes a UA or writes anything: such a refusal leaves the authority as it was. Once PERSO INIT
 * has gone out the module may hold the UA's diversified keys, so nothing after is undone: the
 * next UA stays moved on and a certificate written stays in issued/ (no other module may be
 * given those keys).
 */
KH_WARN_UNUSED kh_err kh_authority_personalise(struct kh_authority *a, struct kh_transport *t, enum kh_role role,
					       uint32_t ua, struct kh_issued *out);

#endif
