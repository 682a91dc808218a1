/*
 * The key center's keys (include/keyhole/keycentersvc.h): all derived from its identity's signing
 * key, so that the center has one secret to keep, and what they seal at rest. The sealing binds
 * what the store keeps in clear beside it (serial, direction, position), so a row moved to another
 * card or rolled back to an older position does not open.
 */
#include <stdlib.h>
#include <string.h>

#include "kc_int.h"
#include "keyhole/buf.h"
#include "keyhole/crypto.h"

static const char label_state[] = "keyhole keycenter state v1";
static const char label_code[] = "keyhole keycenter code v1";
static const char label_nonce[] = "keyhole keycenter nonce v1";
/* Crockford's base32: no I, L, O, U. 32 symbols, so a random byte's low 5 bits pick one evenly. */
static const char crockford[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

#define CHAIN_AAD_LEN (4 + 8 + 1 + 8)
#define MKEY_AAD_LEN (4 + 8 + 8)
#define TYPED_MAX 64

static kh_err derive(const uint8_t sk[static 32], const char *label, uint8_t out[static 32])
{
	return kh_hkdf(sk, 32, NULL, 0, (const uint8_t *)label, strlen(label), out, 32);
}

kh_err kh_keycenter_open(const char *dir, struct kh_keycenter **out)
{
	struct kh_keycenter *kc;
	kh_err r;

	if (!dir || !out)
		return KH_ERR_INVAL;
	if (!(kc = calloc(1, sizeof *kc)))
		return KH_ERR_NOMEM;
	if ((r = kh_identity_load(dir, KH_ROLE_KEYCENTER, &kc->id)) != KH_OK ||
	    (r = derive(kc->id.sk, label_state, kc->state_key)) != KH_OK ||
	    (r = derive(kc->id.sk, label_code, kc->code_key)) != KH_OK ||
	    (r = derive(kc->id.sk, label_nonce, kc->nonce_key)) != KH_OK) {
		kh_keycenter_close(kc);
		return r;
	}
	*out = kc;
	return KH_OK;
}

void kh_keycenter_close(struct kh_keycenter *kc)
{
	if (!kc)
		return;
	kh_wipe(kc, sizeof *kc);
	free(kc);
}

uint32_t kh_keycenter_serial(const struct kh_keycenter *kc)
{
	return kc->id.serial;
}

const uint8_t *kh_keycenter_cert(const struct kh_keycenter *kc, size_t *len)
{
	*len = kc->id.cert_len;
	return kc->id.cert;
}

kh_err kh_keycenter_enrolkey(const struct kh_keycenter *kc, uint8_t out[static KH_KC_ENROLKEY_LEN])
{
	uint8_t xsk[32], xpk[32];
	kh_err r = kh_kc_enrol_keypair(kc->id.sk, xsk, xpk);

	kh_wipe(xsk, sizeof xsk);
	return r != KH_OK ? r : kh_kc_enrolkey_sign(kc->id.sk, kc->id.serial, xpk, out);
}

/* ---------------------------------------------------------------- sealing at rest */

/* nonce (12) | AES-256-GCM(state key, nonce, aad, 32 bytes) */
static kh_err seal(const struct kh_keycenter *kc, const uint8_t *aad, size_t aadlen, const uint8_t pt[static 32],
		   uint8_t out[static KH_STORE_KC_SEALED_LEN])
{
	kh_err r = kh_random(out, KH_NONCE_LEN);

	return r != KH_OK ? r : kh_aead_seal(kc->state_key, out, aad, aadlen, pt, 32, out + KH_NONCE_LEN);
}

static kh_err unseal(const struct kh_keycenter *kc, const uint8_t *aad, size_t aadlen,
		     const uint8_t in[static KH_STORE_KC_SEALED_LEN], uint8_t pt[static 32])
{
	return kh_aead_open(kc->state_key, in, aad, aadlen, in + KH_NONCE_LEN, 32 + KH_TAG_LEN, pt);
}

static void chain_aad(uint64_t serial, uint8_t dir, uint64_t pos, uint8_t aad[static CHAIN_AAD_LEN])
{
	memcpy(aad, "KHCS", 4);
	kh_put_be64(aad + 4, serial);
	aad[12] = dir;
	kh_put_be64(aad + 13, pos);
}

kh_err kh__kc_chain_seal(const struct kh_keycenter *kc, const struct kh_keyseq *c,
			 uint8_t out[static KH_STORE_KC_SEALED_LEN])
{
	uint8_t aad[CHAIN_AAD_LEN];

	chain_aad(c->serial, c->dir, c->pos, aad);
	return seal(kc, aad, sizeof aad, c->s, out);
}

kh_err kh__kc_chain_open(const struct kh_keycenter *kc, uint64_t serial, enum kh_keyseq_dir dir, uint64_t pos,
			 const uint8_t in[static KH_STORE_KC_SEALED_LEN], struct kh_keyseq *c)
{
	uint8_t aad[CHAIN_AAD_LEN];
	kh_err r;

	memset(c, 0, sizeof *c);
	chain_aad(serial, (uint8_t)dir, pos, aad);
	if ((r = unseal(kc, aad, sizeof aad, in, c->s)) != KH_OK) {
		kh_wipe(c, sizeof *c);
		return KH_ERR_AUTH;
	}
	c->serial = serial;
	c->dir = (uint8_t)dir;
	c->pos = pos;
	return KH_OK;
}

static void mkey_aad(uint64_t recipient, uint64_t j, uint8_t aad[static MKEY_AAD_LEN])
{
	memcpy(aad, "KHMK", 4);
	kh_put_be64(aad + 4, recipient);
	kh_put_be64(aad + 12, j);
}

kh_err kh__kc_mkey_seal(const struct kh_keycenter *kc, uint64_t recipient, uint64_t j, const uint8_t key[static 32],
			uint8_t out[static KH_STORE_KC_SEALED_LEN])
{
	uint8_t aad[MKEY_AAD_LEN];

	mkey_aad(recipient, j, aad);
	return seal(kc, aad, sizeof aad, key, out);
}

kh_err kh__kc_mkey_open(const struct kh_keycenter *kc, uint64_t recipient, uint64_t j,
			const uint8_t in[static KH_STORE_KC_SEALED_LEN], uint8_t key[static 32])
{
	uint8_t aad[MKEY_AAD_LEN];

	mkey_aad(recipient, j, aad);
	return unseal(kc, aad, sizeof aad, in, key) == KH_OK ? KH_OK : KH_ERR_AUTH;
}

/* ---------------------------------------------------------------- codes and nonces */

kh_err kh__kc_hmac(const uint8_t key[static 32], const uint8_t *msg, size_t n, uint8_t out[static 32])
{
	return kh_hkdf_extract(key, 32, msg, n, out);
}

kh_err kh__kc_code_new(char code[static KH_KEYCENTER_CODE_LEN + 1])
{
	uint8_t b[KH_KEYCENTER_CODE_LEN];
	kh_err r = kh_random(b, sizeof b);

	if (r == KH_OK) {
		for (size_t i = 0; i < sizeof b; i++)
			code[i] = crockford[b[i] & 31];
		code[KH_KEYCENTER_CODE_LEN] = '\0';
	}
	kh_wipe(b, sizeof b);
	return r;
}

kh_err kh__kc_code_mac(const struct kh_keycenter *kc, uint64_t serial, const char *typed, uint8_t mac[static 32])
{
	uint8_t m[8 + TYPED_MAX];
	size_t n = 8;
	kh_err r;

	/* what was typed, normalised; cut at TYPED_MAX (a code that long is wrong anyway) */
	kh_put_be64(m, serial);
	for (const char *p = typed; *p && n < sizeof m; p++) {
		if (*p == '-' || *p == ' ')
			continue;
		m[n++] = (uint8_t)(*p >= 'a' && *p <= 'z' ? *p - 'a' + 'A' : *p);
	}
	r = kh__kc_hmac(kc->code_key, m, n, mac);
	kh_wipe(m, sizeof m);
	return r;
}

static kh_err nonce_mac(const struct kh_keycenter *kc, uint64_t serial, uint64_t t, uint8_t mac[static 32])
{
	uint8_t m[16];

	kh_put_be64(m, serial);
	kh_put_be64(m + 8, t);
	return kh__kc_hmac(kc->nonce_key, m, sizeof m, mac);
}

kh_err kh__kc_nonce(const struct kh_keycenter *kc, uint64_t serial, int64_t t, uint8_t nonce[static KH_KC_NONCE_LEN])
{
	uint8_t mac[32];
	kh_err r = nonce_mac(kc, serial, (uint64_t)t, mac);

	if (r == KH_OK) {
		kh_put_be64(nonce, (uint64_t)t);
		memcpy(nonce + 8, mac, KH_KC_NONCE_LEN - 8);
	}
	return r;
}

kh_err kh__kc_nonce_check(const struct kh_keycenter *kc, uint64_t serial, const uint8_t nonce[static KH_KC_NONCE_LEN],
			  int64_t *t)
{
	uint64_t v = kh_get_be64(nonce);
	uint8_t mac[32];
	kh_err r;

	if ((r = nonce_mac(kc, serial, v, mac)) != KH_OK)
		return r;
	if (!kh_ct_eq(mac, nonce + 8, KH_KC_NONCE_LEN - 8) || v > (uint64_t)INT64_MAX)
		return KH_ERR_AUTH;
	*t = (int64_t)v;
	return KH_OK;
}
