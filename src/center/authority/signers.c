/*
 * The operator's signing keys besides the root (include/keyhole/authority.h; docs/protocols/cas.md
 * "Who may say what"): the ECM signer, whose signature over every ECM makes its access criteria
 * (product, event, price, time) the operator's word, and the EMM signer, whose signature is what
 * a card believes in a group or broadcast EMM. The group and broadcast keys are in many cards and
 * so in an attacker's hands sooner or later: they only hide.
 *
 * Each signer is an Ed25519 key made here, certified by the root with its own role and a UA of
 * its own from KH_SIGNER_SERIAL_BASE up (its serial, which ECMs and EMMs name; module UAs stay
 * below that range), kept in the authority directory:
 *
 *   <role>.key   "<serial, 8 hex digits> <private key, 64 hex digits>\n", mode 0600
 *   issued/<role>-<serial>-sign.crt   its certificate, PEM, as for every module
 *
 * A card learns a signer from its certificate, which it checks against its root itself (SET
 * SIGNER, in an EMM under its own Kp).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keyhole/authority.h"
#include "keyhole/crypto.h"
#include "keyhole/file.h"

#define SIGNER_LINE (8 + 1 + 64 + 1)

static int signer_role(enum kh_role role)
{
	return role == KH_ROLE_ECM_SIGNER || role == KH_ROLE_EMM_SIGNER;
}

/* <dir>/<role>.key, or with a serial <dir>/issued/<role>-<serial>-sign.crt */
static char *path_of(const char *dir, const char *rname, const uint32_t *serial)
{
	char *p = NULL;
	int n = serial ? asprintf(&p, "%s/issued/%s-%08X-sign.crt", dir, rname, (unsigned)*serial)
		       : asprintf(&p, "%s/%s.key", dir, rname);
	return n < 0 ? NULL : p;
}

kh_err kh_signing_key_write(const char *path, uint32_t serial, const uint8_t sk[static 32])
{
	char line[SIGNER_LINE + 1];
	mode_t old_mask;
	kh_err r;

	snprintf(line, sizeof line, "%08X ", (unsigned)serial);
	kh_hex_encode(sk, 32, line + 9);
	line[SIGNER_LINE - 1] = '\n';
	old_mask = umask(077);
	r = kh_file_write_new(path, (const uint8_t *)line, SIGNER_LINE, 0600);
	umask(old_mask);
	kh_wipe(line, sizeof line);
	return r;
}

kh_err kh_signing_key_read(const char *path, uint32_t *serial, uint8_t sk[static 32])
{
	uint8_t *data = NULL;
	size_t n = 0;
	char hex[9], *end;
	kh_err r;

	if ((r = kh_keyfile_read(path, 4096, &data, &n)) != KH_OK)
		return r;
	if (n != SIGNER_LINE || data[8] != ' ' || data[SIGNER_LINE - 1] != '\n' ||
	    kh_hex_decode((const char *)data + 9, 64, sk, 32) != KH_OK) {
		r = KH_ERR_FORMAT;
		goto out;
	}
	memcpy(hex, data, 8);
	hex[8] = 0;
	*serial = (uint32_t)strtoul(hex, &end, 16);
	r = end == hex + 8 ? KH_OK : KH_ERR_FORMAT;
out:
	if (r != KH_OK)
		kh_wipe(sk, 32);
	kh_file_free(data, n);
	return r;
}

kh_err kh_authority_signer_new(struct kh_authority *a, enum kh_role role)
{
	uint8_t sk[32], pk[32], der[KH_CERT_MAX];
	char *kpath = NULL;
	size_t dlen;
	uint32_t serial;
	kh_err r;

	if (a == NULL || !signer_role(role))
		return KH_ERR_INVAL;
	if ((kpath = path_of(kh_authority_dir(a), kh_role_name(role), NULL)) == NULL)
		return KH_ERR_NOMEM;
	if (access(kpath, F_OK) == 0) {
		r = KH_ERR_EXISTS;
		goto out;
	}
	/* Signers take serials of their own range, so module UAs stay as they were. */
	for (serial = KH_SIGNER_SERIAL_BASE; serial != 0 && kh_authority_ua_free(a, serial) != KH_OK; serial++)
		;
	if (serial == 0) {
		r = KH_ERR_TOO_LARGE;
		goto out;
	}
	if ((r = kh_ed25519_keygen(sk, pk)) != KH_OK ||
	    (r = kh_authority_issue(a, role, serial, KH_CERT_KEY_ED25519, pk, "sign", der, sizeof der, &dlen)) != KH_OK)
		goto out;
	/* Created, never replaced: a signer's key names the certificate cards already trust. */
	r = kh_signing_key_write(kpath, serial, sk);
out:
	kh_wipe(sk, sizeof sk);
	free(kpath);
	return r;
}

kh_err kh_authority_signers_ensure(struct kh_authority *a, unsigned *made)
{
	static const enum kh_role roles[] = {KH_ROLE_ECM_SIGNER, KH_ROLE_EMM_SIGNER};
	unsigned n = 0;
	kh_err r;

	for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++) {
		r = kh_authority_signer_new(a, roles[i]);
		if (r == KH_OK)
			n++;
		else if (r != KH_ERR_EXISTS)
			return r;
	}
	if (made)
		*made = n;
	return KH_OK;
}

kh_err kh_root_file_pk(const char *path, uint8_t root_pk[static 32])
{
	uint8_t *pem = NULL, der[KH_CERT_MAX];
	size_t n = 0, dlen;
	kh_err r;

	if ((r = kh_file_read(path, 65536, &pem, &n)) == KH_OK &&
	    (r = kh_cert_pem_to_der((const char *)pem, n, der, sizeof der, &dlen)) == KH_OK)
		r = kh_cert_root_pk(der, dlen, root_pk);
	kh_file_free(pem, n);
	return r;
}

static kh_err root_pk_of(const char *dir, uint8_t root_pk[static 32])
{
	char *p = NULL;
	kh_err r;

	if (asprintf(&p, "%s/root.crt", dir) < 0)
		return KH_ERR_NOMEM;
	r = kh_root_file_pk(p, root_pk);
	free(p);
	return r;
}

kh_err kh_authority_signer_load(const char *dir, enum kh_role role, struct kh_cas_signer *sg, uint8_t *der,
				size_t cap, size_t *len)
{
	uint8_t *pem = NULL;
	char *kpath = NULL, *cpath = NULL;
	size_t pn = 0;
	struct kh_cas_signer tmp;
	uint8_t pk[32], root_pk[32], cder[KH_CERT_MAX];
	struct kh_cert_info ci;
	size_t clen = 0;
	kh_err r;

	if (dir == NULL || !signer_role(role) || (sg == NULL && der == NULL))
		return KH_ERR_INVAL;
	if ((kpath = path_of(dir, kh_role_name(role), NULL)) == NULL)
		return KH_ERR_NOMEM;
	if ((r = kh_signing_key_read(kpath, &tmp.serial, tmp.sk)) != KH_OK)
		goto out;
	if ((cpath = path_of(dir, kh_role_name(role), &tmp.serial)) == NULL) {
		r = KH_ERR_NOMEM;
		goto out;
	}
	if ((r = kh_file_read(cpath, 65536, &pem, &pn)) != KH_OK)
		goto out;
	if ((r = kh_cert_pem_to_der((const char *)pem, pn, cder, sizeof cder, &clen)) != KH_OK ||
	    (r = root_pk_of(dir, root_pk)) != KH_OK)
		goto out;
	/* The key, its certificate and the root belong together: anything else is a broken authority. */
	if ((r = kh_cert_check(cder, clen, root_pk, role, KH_CERT_KEY_ED25519, 0, &ci)) != KH_OK ||
	    (r = kh_ed25519_public(tmp.sk, pk)) != KH_OK)
		goto out;
	if (ci.ua != tmp.serial || memcmp(ci.pub, pk, 32) != 0) {
		r = KH_ERR_CERT_KEY;
		goto out;
	}
	if (der != NULL) {
		if (clen > cap) {
			r = KH_ERR_BUF;
			goto out;
		}
		memcpy(der, cder, clen);
		*len = clen;
	}
	if (sg != NULL)
		*sg = tmp;
	r = KH_OK;
out:
	kh_wipe(&tmp, sizeof tmp);
	kh_file_free(pem, pn);
	free(kpath);
	free(cpath);
	return r;
}
