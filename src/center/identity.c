/*
 * A center service's identity (include/keyhole/identity.h): the signing key of a distribution
 * server or an escrow, made in the service's own directory, and its certificate from the
 * authority with the service's role, beside a copy of the root. The authority never holds the
 * service's private key; the service's directory then stands alone, as the service runs elsewhere
 * than the authority.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keyhole/authority.h"
#include "keyhole/crypto.h"
#include "keyhole/file.h"
#include "keyhole/identity.h"

#define PEM_MAX 65536

static char *in_dir(const char *dir, const char *name)
{
	char *p = NULL;
	return asprintf(&p, "%s/%s", dir, name) < 0 ? NULL : p;
}

/* Copy the PEM file from into to (created, mode 0644). */
static kh_err copy_pem(const char *from, const char *to)
{
	uint8_t *b = NULL;
	size_t n = 0;
	kh_err r;

	if ((r = kh_file_read(from, PEM_MAX, &b, &n)) == KH_OK)
		r = kh_file_write_new(to, b, n, 0644);
	kh_file_free(b, n);
	return r;
}

/* DIR/ROLE.EXT */
static char *role_file(const char *dir, enum kh_role role, const char *ext)
{
	char *p = NULL;
	return asprintf(&p, "%s/%s.%s", dir, kh_role_name(role), ext) < 0 ? NULL : p;
}

kh_err kh_identity_new(struct kh_authority *a, const char *dir, enum kh_role role, uint32_t *serial)
{
	uint8_t sk[32], pk[32], der[KH_CERT_MAX];
	char *key = role_file(dir, role, "key"), *crt = role_file(dir, role, "crt"), *root = in_dir(dir, "root.crt"),
	     *issued = NULL, *aroot = NULL;
	size_t dlen;
	uint32_t s;
	kh_err r;

	if (!key || !crt || !root) {
		r = KH_ERR_NOMEM;
		goto out;
	}
	if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
		r = KH_ERR_IO;
		goto out;
	}
	if (access(key, F_OK) == 0 || access(crt, F_OK) == 0) {
		r = KH_ERR_EXISTS;
		goto out;
	}
	for (s = KH_CENTER_SERIAL_BASE; s < KH_SIGNER_SERIAL_BASE && kh_authority_ua_free(a, s) != KH_OK; s++)
		;
	if (s == KH_SIGNER_SERIAL_BASE) {
		r = KH_ERR_TOO_LARGE;
		goto out;
	}
	if ((r = kh_ed25519_keygen(sk, pk)) != KH_OK ||
	    (r = kh_authority_issue(a, role, s, KH_CERT_KEY_ED25519, pk, "sign", der, sizeof der, &dlen)) !=
		    KH_OK)
		goto out;
	if (asprintf(&issued, "%s/issued/%s-%08X-sign.crt", kh_authority_dir(a), kh_role_name(role),
		     (unsigned)s) < 0 ||
	    !(aroot = in_dir(kh_authority_dir(a), "root.crt"))) {
		issued = NULL;
		r = KH_ERR_NOMEM;
		goto out;
	}
	/* the key last: a directory with a key is a finished identity */
	if ((r = copy_pem(aroot, root)) != KH_OK && r != KH_ERR_EXISTS)
		goto out;
	if ((r = copy_pem(issued, crt)) != KH_OK || (r = kh_signing_key_write(key, s, sk)) != KH_OK)
		goto out;
	if (serial)
		*serial = s;
out:
	kh_wipe(sk, sizeof sk);
	free(key);
	free(crt);
	free(root);
	free(issued);
	free(aroot);
	return r;
}

kh_err kh_identity_load(const char *dir, enum kh_role role, struct kh_identity *id)
{
	uint8_t *pem = NULL;
	char *key = role_file(dir, role, "key"), *crt = role_file(dir, role, "crt"), *root = in_dir(dir, "root.crt");
	struct kh_cert_info ci;
	size_t pn = 0;
	kh_err r;

	memset(id, 0, sizeof *id);
	if (!key || !crt || !root) {
		r = KH_ERR_NOMEM;
		goto out;
	}
	if ((r = kh_signing_key_read(key, &id->serial, id->sk)) != KH_OK ||
	    (r = kh_root_file_pk(root, id->root_pk)) != KH_OK || (r = kh_file_read(crt, PEM_MAX, &pem, &pn)) != KH_OK ||
	    (r = kh_cert_pem_to_der((const char *)pem, pn, id->cert, sizeof id->cert, &id->cert_len)) != KH_OK ||
	    (r = kh_cert_check(id->cert, id->cert_len, id->root_pk, role, KH_CERT_KEY_ED25519, 0, &ci)) != KH_OK ||
	    (r = kh_ed25519_public(id->sk, id->pk)) != KH_OK)
		goto out;
	/* the key is the one certified, under the serial it was stored with */
	if (!kh_ct_eq(id->pk, ci.pub, sizeof id->pk) || ci.ua != id->serial)
		r = KH_ERR_CERT_KEY;
out:
	if (r != KH_OK)
		kh_wipe(id, sizeof *id);
	kh_file_free(pem, pn);
	free(key);
	free(crt);
	free(root);
	return r;
}
