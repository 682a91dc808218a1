/*
 * HPKE base mode (RFC 9180, mode_base) with DHKEM(X25519, HKDF-SHA256) and HKDF-SHA256, over the
 * crypto facade because OpenSSL 3.0 has no HPKE. It is what the pairing protocol
 * of the protocol design uses to carry a session secret to a certified X25519 key, and it runs inside
 * the module zone, so it allocates nothing: the labeled KDF inputs of RFC 9180 §4 are built in
 * fixed stack buffers, and caller-supplied parts of them (info, exporter context, ikm) are
 * bounded by HPKE_INPUT_MAX and refused with KH_ERR_TOO_LARGE beyond it. Every intermediate
 * secret (ephemeral key, DH output, shared secret, PRKs, key schedule) is wiped on every path.
 */
#include <string.h>

#include "keyhole/hpke.h"

/* RFC 9180 §7.2.1 asks for at least 64 bytes of info and exporter context; we allow more. */
#define HPKE_INPUT_MAX KH_HPKE_INPUT_MAX
#define HPKE_LABEL_MAX 16 /* longest label used below is "shared_secret" */
#define HPKE_SUITE_MAX 10 /* "HPKE" || kem_id || kdf_id || aead_id */
#define HPKE_VERSION "HPKE-v1"
#define HPKE_VERSION_LEN 7
#define HPKE_NH 32  /* HKDF-SHA256 output */
#define HPKE_NSK 32 /* X25519 private key */
/* I2OSP(L, 2) || "HPKE-v1" || suite_id || label || input */
#define HPKE_LABELED_MAX (2 + HPKE_VERSION_LEN + HPKE_SUITE_MAX + HPKE_LABEL_MAX + HPKE_INPUT_MAX)
/* mode || psk_id_hash || info_hash */
#define HPKE_KSC_LEN (1 + 2 * HPKE_NH)

struct suite {
	uint8_t id[HPKE_SUITE_MAX];
	size_t len;
};

static void suite_kem(struct suite *s)
{
	memcpy(s->id, "KEM", 3);
	s->id[3] = (uint8_t)(KH_HPKE_KEM_X25519 >> 8);
	s->id[4] = (uint8_t)KH_HPKE_KEM_X25519;
	s->len = 5;
}

static void suite_hpke(struct suite *s, enum kh_aead_alg aead)
{
	memcpy(s->id, "HPKE", 4);
	s->id[4] = (uint8_t)(KH_HPKE_KEM_X25519 >> 8);
	s->id[5] = (uint8_t)KH_HPKE_KEM_X25519;
	s->id[6] = (uint8_t)(KH_HPKE_KDF_SHA256 >> 8);
	s->id[7] = (uint8_t)KH_HPKE_KDF_SHA256;
	s->id[8] = 0;
	s->id[9] = (uint8_t)aead;
	s->len = 10;
}

/*
 * Write "HPKE-v1" || suite_id || label || input after the first `pre` bytes of buf (which the
 * caller fills); returns the total length, or 0 when the input does not fit.
 */
static size_t labeled(uint8_t buf[static HPKE_LABELED_MAX], size_t pre, const struct suite *s,
		      const char *label, const uint8_t *in, size_t inlen)
{
	size_t labellen = strlen(label);
	size_t n = pre;

	if (labellen > HPKE_LABEL_MAX || inlen > HPKE_INPUT_MAX)
		return 0;
	memcpy(buf + n, HPKE_VERSION, HPKE_VERSION_LEN);
	n += HPKE_VERSION_LEN;
	memcpy(buf + n, s->id, s->len);
	n += s->len;
	memcpy(buf + n, label, labellen);
	n += labellen;
	if (inlen > 0) {
		memcpy(buf + n, in, inlen);
		n += inlen;
	}
	return n;
}

/* LabeledExtract(salt, label, ikm) of RFC 9180 §4. */
static kh_err labeled_extract(const struct suite *s, const uint8_t *salt, size_t saltlen,
			      const char *label, const uint8_t *ikm, size_t ikmlen,
			      uint8_t prk[static HPKE_NH])
{
	uint8_t buf[HPKE_LABELED_MAX];
	size_t n;
	kh_err r;

	if ((n = labeled(buf, 0, s, label, ikm, ikmlen)) == 0)
		return KH_ERR_TOO_LARGE;
	r = kh_hkdf_extract(salt, saltlen, buf, n, prk);
	kh_wipe(buf, sizeof buf);
	return r;
}

/* LabeledExpand(prk, label, info, L) of RFC 9180 §4. */
static kh_err labeled_expand(const struct suite *s, const uint8_t prk[static HPKE_NH],
			     const char *label, const uint8_t *info, size_t infolen, uint8_t *out,
			     size_t outlen)
{
	uint8_t buf[HPKE_LABELED_MAX];
	size_t n;
	kh_err r;

	if (outlen > 255 * HPKE_NH)
		return KH_ERR_TOO_LARGE;
	buf[0] = (uint8_t)(outlen >> 8);
	buf[1] = (uint8_t)outlen;
	if ((n = labeled(buf, 2, s, label, info, infolen)) == 0)
		return KH_ERR_TOO_LARGE;
	r = kh_hkdf_expand(prk, buf, n, out, outlen);
	kh_wipe(buf, sizeof buf);
	return r;
}

kh_err kh_hpke_derive_keypair(const uint8_t *ikm, size_t ikmlen, uint8_t sk[static 32],
			      uint8_t pk[static 32])
{
	struct suite s;
	uint8_t prk[HPKE_NH], skx[HPKE_NSK], pkx[KH_X25519_LEN];
	kh_err r;

	/* RFC 9180 §7.1.3: ikm should carry at least Nsk bytes of entropy; shorter is a misuse. */
	if (!ikm || ikmlen < HPKE_NSK)
		return KH_ERR_INVAL;
	suite_kem(&s);
	if ((r = labeled_extract(&s, NULL, 0, "dkp_prk", ikm, ikmlen, prk)) != KH_OK)
		goto out;
	if ((r = labeled_expand(&s, prk, "sk", NULL, 0, skx, sizeof skx)) != KH_OK)
		goto out;
	if ((r = kh_x25519_public(skx, pkx)) != KH_OK)
		goto out;
	memcpy(sk, skx, sizeof skx);
	memcpy(pk, pkx, sizeof pkx);
	r = KH_OK;
out:
	kh_wipe(prk, sizeof prk);
	kh_wipe(skx, sizeof skx);
	return r;
}

/* ExtractAndExpand(dh, kem_context) of RFC 9180 §4.1, kem_context = enc || pkRm. */
static kh_err extract_and_expand(const uint8_t dh[static KH_X25519_LEN],
				 const uint8_t enc[static KH_HPKE_ENC_LEN],
				 const uint8_t pkR[static KH_X25519_LEN],
				 uint8_t ss[static HPKE_NH])
{
	struct suite s;
	uint8_t kem_context[KH_HPKE_ENC_LEN + KH_X25519_LEN];
	uint8_t prk[HPKE_NH];
	kh_err r;

	suite_kem(&s);
	memcpy(kem_context, enc, KH_HPKE_ENC_LEN);
	memcpy(kem_context + KH_HPKE_ENC_LEN, pkR, KH_X25519_LEN);
	if ((r = labeled_extract(&s, NULL, 0, "eae_prk", dh, KH_X25519_LEN, prk)) != KH_OK)
		goto out;
	r = labeled_expand(&s, prk, "shared_secret", kem_context, sizeof kem_context, ss, HPKE_NH);
out:
	kh_wipe(prk, sizeof prk);
	return r;
}

/* KeySchedule(mode_base, shared_secret, info, "", "") of RFC 9180 §5.1; fills key..exporter. */
static kh_err key_schedule(struct kh_hpke_ctx *c, enum kh_aead_alg aead,
			   const uint8_t ss[static HPKE_NH], const uint8_t *info, size_t infolen)
{
	struct suite s;
	uint8_t ksc[HPKE_KSC_LEN];
	uint8_t secret[HPKE_NH];
	size_t nk = kh_aead_keylen(aead);
	kh_err r;

	suite_hpke(&s, aead);
	ksc[0] = 0; /* mode_base */
	if ((r = labeled_extract(&s, NULL, 0, "psk_id_hash", NULL, 0, ksc + 1)) != KH_OK)
		goto out;
	if ((r = labeled_extract(&s, NULL, 0, "info_hash", info, infolen, ksc + 1 + HPKE_NH)) !=
	    KH_OK)
		goto out;
	if ((r = labeled_extract(&s, ss, HPKE_NH, "secret", NULL, 0, secret)) != KH_OK)
		goto out;
	if ((r = labeled_expand(&s, secret, "key", ksc, sizeof ksc, c->key, nk)) != KH_OK)
		goto out;
	if ((r = labeled_expand(&s, secret, "base_nonce", ksc, sizeof ksc, c->base_nonce,
				KH_NONCE_LEN)) != KH_OK)
		goto out;
	if ((r = labeled_expand(&s, secret, "exp", ksc, sizeof ksc, c->exporter_secret, HPKE_NH)) !=
	    KH_OK)
		goto out;
	c->aead = aead;
	c->seq = 0;
	r = KH_OK;
out:
	kh_wipe(ksc, sizeof ksc);
	kh_wipe(secret, sizeof secret);
	return r;
}

kh_err kh_hpke_setup_s(struct kh_hpke_ctx *c, enum kh_aead_alg aead, const uint8_t pkR[static 32],
		       const uint8_t *info, size_t infolen, const uint8_t *skE,
		       uint8_t enc[static KH_HPKE_ENC_LEN])
{
	struct kh_hpke_ctx t;
	uint8_t ske[KH_X25519_LEN], pke[KH_X25519_LEN], dh[KH_X25519_LEN], ss[HPKE_NH];
	kh_err r;

	if (!c || kh_aead_keylen(aead) == 0 || (!info && infolen > 0))
		return KH_ERR_INVAL;
	if (infolen > HPKE_INPUT_MAX)
		return KH_ERR_TOO_LARGE;
	memset(&t, 0, sizeof t);
	if (skE)
		memcpy(ske, skE, sizeof ske);
	else if ((r = kh_random(ske, sizeof ske)) != KH_OK)
		goto out;
	if ((r = kh_x25519_public(ske, pke)) != KH_OK)
		goto out;
	if ((r = kh_x25519_kp(ske, pke, pkR, dh)) != KH_OK)
		goto out;
	if ((r = extract_and_expand(dh, pke, pkR, ss)) != KH_OK)
		goto out;
	if ((r = key_schedule(&t, aead, ss, info, infolen)) != KH_OK)
		goto out;
	memcpy(enc, pke, KH_HPKE_ENC_LEN);
	*c = t;
	r = KH_OK;
out:
	kh_wipe(&t, sizeof t);
	kh_wipe(ske, sizeof ske);
	kh_wipe(dh, sizeof dh);
	kh_wipe(ss, sizeof ss);
	return r;
}

kh_err kh_hpke_setup_r(struct kh_hpke_ctx *c, enum kh_aead_alg aead,
		       const uint8_t enc[static KH_HPKE_ENC_LEN], const uint8_t skR[static 32],
		       const uint8_t *info, size_t infolen)
{
	struct kh_hpke_ctx t;
	uint8_t pkr[KH_X25519_LEN], dh[KH_X25519_LEN], ss[HPKE_NH];
	kh_err r;

	if (!c || kh_aead_keylen(aead) == 0 || (!info && infolen > 0))
		return KH_ERR_INVAL;
	if (infolen > HPKE_INPUT_MAX)
		return KH_ERR_TOO_LARGE;
	memset(&t, 0, sizeof t);
	if ((r = kh_x25519_public(skR, pkr)) != KH_OK)
		goto out;
	if ((r = kh_x25519_kp(skR, pkr, enc, dh)) != KH_OK)
		goto out;
	if ((r = extract_and_expand(dh, enc, pkr, ss)) != KH_OK)
		goto out;
	if ((r = key_schedule(&t, aead, ss, info, infolen)) != KH_OK)
		goto out;
	*c = t;
	r = KH_OK;
out:
	kh_wipe(&t, sizeof t);
	kh_wipe(dh, sizeof dh);
	kh_wipe(ss, sizeof ss);
	return r;
}

/* ComputeNonce(seq) of RFC 9180 §5.2: base_nonce XOR I2OSP(seq, Nn). */
static void compute_nonce(const struct kh_hpke_ctx *c, uint8_t nonce[static KH_NONCE_LEN])
{
	memcpy(nonce, c->base_nonce, KH_NONCE_LEN);
	for (size_t i = 0; i < 8; i++)
		nonce[KH_NONCE_LEN - 1 - i] ^= (uint8_t)(c->seq >> (8 * i));
}

/*
 * The RFC's limit is 2^96 - 1 messages; ours is the 64-bit counter's. Either way a context
 * that reaches it must never reuse a nonce, so it refuses (MessageLimitReachedError).
 */
static kh_err check_ctx(const struct kh_hpke_ctx *c)
{
	if (!c || kh_aead_keylen(c->aead) == 0)
		return KH_ERR_INVAL;
	if (c->seq == UINT64_MAX)
		return KH_ERR_CHAN_REKEY;
	return KH_OK;
}

kh_err kh_hpke_seal(struct kh_hpke_ctx *c, const uint8_t *aad, size_t aadlen, const uint8_t *pt,
		    size_t ptlen, uint8_t *ct)
{
	uint8_t nonce[KH_NONCE_LEN];
	kh_err r;

	if ((r = check_ctx(c)) != KH_OK)
		return r;
	if ((!aad && aadlen > 0) || (!pt && ptlen > 0) || !ct)
		return KH_ERR_INVAL;
	compute_nonce(c, nonce);
	r = kh_aead_seal_alg(c->aead, c->key, nonce, aad, aadlen, pt, ptlen, ct);
	if (r == KH_OK)
		c->seq++;
	kh_wipe(nonce, sizeof nonce);
	return r;
}

kh_err kh_hpke_open(struct kh_hpke_ctx *c, const uint8_t *aad, size_t aadlen, const uint8_t *ct,
		    size_t ctlen, uint8_t *pt)
{
	uint8_t nonce[KH_NONCE_LEN], none[1];
	kh_err r;

	if ((r = check_ctx(c)) != KH_OK)
		return r;
	if ((!aad && aadlen > 0) || !ct || (!pt && ctlen > KH_TAG_LEN))
		return KH_ERR_INVAL;
	if (ctlen < KH_TAG_LEN)
		return KH_ERR_TRUNCATED;
	compute_nonce(c, nonce);
	/* An empty plaintext may come with no buffer; the AEAD still wants somewhere to point. */
	r = kh_aead_open_alg(c->aead, c->key, nonce, aad, aadlen, ct, ctlen, pt ? pt : none);
	if (r == KH_OK)
		c->seq++;
	kh_wipe(nonce, sizeof nonce);
	return r;
}

kh_err kh_hpke_export(const struct kh_hpke_ctx *c, const uint8_t *exp_ctx, size_t exp_ctx_len,
		      uint8_t *out, size_t outlen)
{
	struct suite s;

	if (!c || kh_aead_keylen(c->aead) == 0 || (!exp_ctx && exp_ctx_len > 0) ||
	    (!out && outlen > 0))
		return KH_ERR_INVAL;
	if (exp_ctx_len > HPKE_INPUT_MAX || outlen > 255 * HPKE_NH)
		return KH_ERR_TOO_LARGE;
	if (outlen == 0)
		return KH_OK;
	suite_hpke(&s, c->aead);
	return labeled_expand(&s, c->exporter_secret, "sec", exp_ctx, exp_ctx_len, out, outlen);
}

void kh_hpke_ctx_wipe(struct kh_hpke_ctx *c)
{
	if (c)
		kh_wipe(c, sizeof *c);
}

kh_err kh_hpke_seal_base(const uint8_t pkR[static 32], const uint8_t *info, size_t infolen,
			 const uint8_t *aad, size_t aadlen, const uint8_t *pt, size_t ptlen,
			 uint8_t enc[static KH_HPKE_ENC_LEN], uint8_t *ct)
{
	struct kh_hpke_ctx c;
	uint8_t e[KH_HPKE_ENC_LEN];
	kh_err r;

	memset(&c, 0, sizeof c);
	if ((r = kh_hpke_setup_s(&c, KH_AEAD_AES128_GCM, pkR, info, infolen, NULL, e)) != KH_OK)
		goto out;
	if ((r = kh_hpke_seal(&c, aad, aadlen, pt, ptlen, ct)) != KH_OK)
		goto out;
	memcpy(enc, e, sizeof e);
	r = KH_OK;
out:
	kh_hpke_ctx_wipe(&c);
	return r;
}

kh_err kh_hpke_open_base(const uint8_t skR[static 32], const uint8_t enc[static KH_HPKE_ENC_LEN],
			 const uint8_t *info, size_t infolen, const uint8_t *aad, size_t aadlen,
			 const uint8_t *ct, size_t ctlen, uint8_t *pt)
{
	struct kh_hpke_ctx c;
	kh_err r;

	memset(&c, 0, sizeof c);
	if ((r = kh_hpke_setup_r(&c, KH_AEAD_AES128_GCM, enc, skR, info, infolen)) != KH_OK)
		goto out;
	r = kh_hpke_open(&c, aad, aadlen, ct, ctlen, pt);
out:
	kh_hpke_ctx_wipe(&c);
	return r;
}
