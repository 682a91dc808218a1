/*
 * What every harness shares: the libFuzzer entry points, the invariant check (prints the failed
 * condition, then traps so libFuzzer keeps the input), and the constants the seed corpus was
 * generated with (fuzz/gen_corpus.c uses the same), so the seeds stay valid inputs.
 */
#ifndef KH_FUZZ_COMMON_H
#define KH_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "keyhole/cas.h"
#include "keyhole/cert.h"
#include "keyhole/crypto.h"
#include "keyhole/pair.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                                                   \
	do {                                                                                       \
		if (!(c)) {                                                                        \
			fprintf(stderr, "%s: invariant failed: %s (line %d)\n", __FILE__, #c, __LINE__); \
			__builtin_trap();                                                          \
		}                                                                                  \
	} while (0)

/* every harness's kh_rng_det seed */
static const char fz_seed[] __attribute__((unused)) = "keyhole fuzz rng v1";
/* fuzz_pair_*, fuzz_sealed: ikm of the responder's X25519 key (a public test key) */
static const char fz_resp_ikm[] __attribute__((unused)) = "keyhole fuzz responder ikm v1, public test key";
/* the initiator's identity in PAIR OPEN */
static const uint8_t fz_pair_id[] __attribute__((unused)) = {'f', 'u', 'z', 'z', '-', 'c', 'a', 'm'};

/*
 * fuzz_ecm, fuzz_emm, fuzz_cas (pay-TV): the keys the harnesses open and seal with, and the card
 * fuzz_cas personalises (public test values). The service key has id FZ_CAS_KEY_ID, version
 * FZ_CAS_KEY_VERSION; fuzz_cas installs it, the group and broadcast keys, a right to
 * FZ_CAS_PRODUCT, FZ_CAS_CREDIT of credit and the two signers below in setup, with unique EMM
 * seq 1.
 */
#define FZ_CAS_UA 0x00001234u
#define FZ_CAS_GROUP 0x00000077u
#define FZ_CAS_KEY_ID 1
#define FZ_CAS_KEY_VERSION 1u
#define FZ_CAS_PRODUCT 100u
#define FZ_CAS_CREDIT 1000u
#define FZ_CAS_NOW 1800000000u
/*
 * Whether a CAM AUTH body a module accepted is genuine: its first tag 1 a certificate of role
 * from root_pk, valid at FZ_CAS_NOW, and its first tag 2 that key's signature over the role's
 * label, binding and the responder's UA (an oracle of the harnesses, independent of the module).
 */
static int __attribute__((unused)) fz_auth_genuine(const uint8_t *body, size_t n, const uint8_t root_pk[static 32],
						   uint8_t role, const uint8_t binding[static 32], uint32_t ua)
{
	struct kh_tlv t, cert = {0}, sig = {0};
	struct kh_cert_info ci;
	uint8_t msg[KH_CAM_AUTH_MSG_LEN];
	struct kh_rd rd;

	kh_rd_init(&rd, body, n);
	while (kh_tlv_next(&rd, &t) == 1) {
		if (t.tag == 1 && !cert.v)
			cert = t;
		else if (t.tag == 2 && !sig.v)
			sig = t;
	}
	return cert.v && sig.v && sig.len == KH_ED25519_SIG_LEN &&
	       kh_cert_check(cert.v, cert.len, root_pk, (enum kh_role)role, KH_CERT_KEY_ED25519, FZ_CAS_NOW, &ci) ==
		       KH_OK &&
	       kh_auth_msg(role, binding, ua, msg) == KH_OK && kh_ed25519_verify(ci.pub, msg, sizeof msg, sig.v) == KH_OK;
}
/* The module clock of the harnesses that run a CAS world (struct kh_module_env's now). */
static uint64_t __attribute__((unused)) fz_cas_now(void *ctx)
{
	(void)ctx;
	return FZ_CAS_NOW;
}
/* The status word that ends a module's answer of n >= 2 bytes. */
static uint16_t __attribute__((unused)) fz_sw_of(const uint8_t *r, size_t n)
{
	return (uint16_t)(r[n - 2] << 8 | r[n - 1]);
}
static const uint8_t fz_cas_skey[32] __attribute__((unused)) = "keyhole fuzz service key v1....";
static const uint8_t fz_cas_kp[32] __attribute__((unused)) = "keyhole fuzz card Kp v1........";
static const uint8_t fz_cas_ku[32] __attribute__((unused)) = "keyhole fuzz card Ku v1........";
static const uint8_t fz_cas_gkey[32] __attribute__((unused)) = "keyhole fuzz group key v1......";
static const uint8_t fz_cas_akey[32] __attribute__((unused)) = "keyhole fuzz all key v1........";
/*
 * The operator's signers (public test values): Ed25519 seeds and serials of the ECM signer that
 * signs every ECM and the EMM signer that signs group and broadcast EMMs (version 2 sections).
 * fuzz_cas certifies both with its test root and gives them to the card (SET SIGNER) in its
 * provisioning EMM; the serials are the first two an authority would give (KH_SIGNER_SERIAL_BASE).
 */
#define FZ_CAS_ECM_SIGNER 0xFF000001u
#define FZ_CAS_EMM_SIGNER 0xFF000002u
static const uint8_t fz_cas_ecm_signer_sk[32] __attribute__((unused)) = "keyhole fuzz ecm signer v1.....";
static const uint8_t fz_cas_emm_signer_sk[32] __attribute__((unused)) = "keyhole fuzz emm signer v1.....";
/* What a signed section's signature covers, after this label: every byte before the signature. */
static const char fz_ecm_sig_label[] __attribute__((unused)) = "keyhole ecm sig v2";
static const char fz_emm_sig_label[] __attribute__((unused)) = "keyhole emm sig v2";

/*
 * The signature a version-2 section (n bytes, trailer included) must carry, worked out here from
 * the format alone: Ed25519 with sk over label | every byte before the signature. Returns 0 when
 * n is too short or too long to be one.
 */
static int __attribute__((unused)) fz_sign_section(const uint8_t sk[static 32], const char *label, const uint8_t *sec,
						   size_t n, uint8_t sig[static KH_CAS_SIG_LEN])
{
	static uint8_t msg[32 + KH_EMM_MAX];
	size_t ll = strlen(label);

	if (n < KH_CAS_SIG_LEN || ll + n - KH_CAS_SIG_LEN > sizeof msg)
		return 0;
	memcpy(msg, label, ll);
	memcpy(msg + ll, sec, n - KH_CAS_SIG_LEN);
	return kh_ed25519_sign(sk, msg, ll + n - KH_CAS_SIG_LEN, sig) == KH_OK;
}

/*
 * The signature checks on a signed section (ECM, group or broadcast EMM) its peek accepted:
 * verify agrees with the signature worked out here from the format (KH_OK exactly when the
 * trailer holds it); with that signature put in, the section verifies under pk and not under
 * other_pk; and it fails with a trailer byte flipped (flip_all: every one; else one picked from
 * the section) and with a byte before the trailer flipped, when that still peeks (peek_ok).
 */
static void __attribute__((unused))
fz_check_sig(const uint8_t *d, size_t n, int flip_all, kh_err (*verify)(const uint8_t *, const uint8_t *, size_t),
	     const char *label, const uint8_t sk[static 32], const uint8_t pk[static 32],
	     const uint8_t other_pk[static 32], int (*peek_ok)(const uint8_t *, size_t))
{
	static uint8_t cp[KH_EMM_MAX];
	uint8_t sig[KH_CAS_SIG_LEN];
	kh_err rv;
	size_t i;

	CHECK(n <= sizeof cp && n > KH_CAS_TRAILER_LEN + KH_ECM_HDR_LEN);
	rv = verify(pk, d, n);
	CHECK(rv == KH_OK || rv == KH_ERR_SIGNATURE);
	CHECK(fz_sign_section(sk, label, d, n, sig));
	CHECK((rv == KH_OK) == (memcmp(sig, d + n - KH_CAS_SIG_LEN, sizeof sig) == 0));
	/* With the signature put in, the input verifies, whatever else it holds. */
	memcpy(cp, d, n);
	memcpy(cp + n - KH_CAS_SIG_LEN, sig, sizeof sig);
	CHECK(verify(pk, cp, n) == KH_OK);
	CHECK(verify(other_pk, cp, n) == KH_ERR_SIGNATURE);
	/* Any byte of the trailer (serial, signature) flipped: refused. */
	for (i = n - KH_CAS_TRAILER_LEN; i < n; i++) {
		if (!flip_all && i != n - KH_CAS_TRAILER_LEN + (size_t)d[KH_ECM_HDR_LEN] % KH_CAS_TRAILER_LEN)
			continue;
		cp[i] ^= (uint8_t)(1u << (i % 8));
		CHECK(verify(pk, cp, n) == KH_ERR_SIGNATURE);
		cp[i] ^= (uint8_t)(1u << (i % 8));
	}
	/* So is a byte before it (the signature covers the whole section). */
	i = (size_t)d[n - 1] % (n - KH_CAS_TRAILER_LEN);
	cp[i] ^= 0x01;
	if (peek_ok(cp, n))
		CHECK(verify(pk, cp, n) == KH_ERR_SIGNATURE);
}

/*
 * The framing error a whole ECM or EMM section of n bytes must get (cas.h), as the format states
 * it: the declared length against max and n, the syntax bit, then the version byte (version is
 * the one this kind of section must have), then room for header, tag and (version 2) trailer.
 */
static kh_err __attribute__((unused)) fz_frame_expect(const uint8_t *sec, size_t n, size_t max, uint8_t version)
{
	size_t declared;

	if (n < 3)
		return KH_ERR_TRUNCATED;
	declared = 3 + ((size_t)(sec[1] & 0x0F) << 8 | sec[2]);
	if (declared > max)
		return KH_ERR_TOO_LARGE;
	if (n != declared)
		return n < declared ? KH_ERR_TRUNCATED : KH_ERR_TRAILING;
	if (sec[1] & 0x80)
		return KH_ERR_FORMAT;
	if (n < 4)
		return KH_ERR_TRUNCATED;
	if (sec[3] != version)
		return KH_ERR_VERSION;
	if (n < KH_ECM_HDR_LEN + KH_CAS_TAG_LEN + (version == KH_CAS_VERSION_SIGNED ? KH_CAS_TRAILER_LEN : 0))
		return KH_ERR_TRUNCATED;
	return KH_OK;
}

/*
 * fuzz_ladder: the ladder key the seeds' sealed control words are sealed under (a public test
 * value), as a CAM seals them for its decoder module (kh_cw_ladder_seal).
 */
static const uint8_t fz_ladder_key[32] __attribute__((unused)) = "keyhole fuzz ladder key v1.....";

/*
 * fuzz_usage: the card's Ed25519 signing seed (a public test value); the harness derives the
 * public key with kh_ed25519_public. Blocks are sealed under fz_cas_ku.
 */
static const uint8_t fz_usage_sign_sk[32] __attribute__((unused)) = "keyhole fuzz card sign key v1..";

/*
 * fuzz_keycard (the key center relay's records): the key its messages are sealed under, the
 * header its chunk reader opens chunks under (a delivery to card FZ_KC_SERIAL, index
 * FZ_KC_INDEX), and the key center's Ed25519 signing seed that signs its acks and enrolment keys,
 * with another center's that signs nothing the harness accepts (public test values).
 */
#define FZ_KC_SERIAL 0x0000c0deu
#define FZ_KC_INDEX 5u
#define FZ_KC_CENTER 0xfe000040u
static const uint8_t fz_kc_key[32] __attribute__((unused)) = "keyhole fuzz keycard key v1....";
static const uint8_t fz_kc_center_sk[32] __attribute__((unused)) = "keyhole fuzz key center v1.....";
static const uint8_t fz_kc_other_sk[32] __attribute__((unused)) = "keyhole fuzz other center v1...";

#endif
