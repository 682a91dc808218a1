/*
 * libFuzzer harness: the ECM codec (include/keyhole/cas.h) on outside bytes, and the host-side
 * parsers of the card's pay-TV answers. The input is one whole ECM section for kh_ecm_peek,
 * kh_ecm_open with the fixed service key fz_cas_skey and kh_ecm_verify with the fixed ECM
 * signer's public key (fuzz_common.h); the same bytes also go to kh_cw_answer_parse,
 * kh_ppv_offer_parse and kh_cas_status_parse.
 *
 * Invariants: peek fails with exactly the framing error the format calls for (fz_frame_expect:
 * anything but version 2, a version-1 ECM included, is KH_ERR_VERSION), and open and verify fail
 * with peek's own error whenever peek fails (open never succeeds where peek fails); a header peek
 * accepts matches the bytes, its signer the serial before the signature; verify answers only
 * KH_OK or KH_ERR_SIGNATURE past the framing, KH_OK exactly when the trailer holds the signature
 * the signer's key makes over "keyhole ecm sig v2" | every byte before it (checked by signing the
 * input's own bytes here), and fails once any byte of the trailer (serial or signature) is
 * flipped, or under another key; a successful open has peek's header, cw_len 8 or 16 matching its
 * algorithm, access 1 or 2 with no stray field of the other kind; an output struct is left
 * byte-identical on failure (each is prefilled with a pattern); errors are only the documented
 * ones; sealing the opened ECM again with kh_ecm_seal and the fixed signer gives a section of the
 * same length and clear header whose trailer names the signer and carries the signature worked
 * out here, that verifies, opens to the same fields, and fails to verify with any trailer byte
 * flipped. The answer parsers, when they accept, give values consistent with their rules (CW
 * length from the algorithm, bounded repeated fields and signers).
 */
#include <string.h>

#include "keyhole/cas.h"
#include "keyhole/crypto.h"
#include "keyhole/scramble.h"

#include "fuzz_common.h"

#define PATTERN 0xA5

static struct kh_rng_det rng;
static struct kh_cas_signer sg;                 /* the ECM signer */
static uint8_t sg_pk[32], emm_pk[32];           /* its public key; the EMM signer's (another key) */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	kh_rng_det_init(&rng, (const uint8_t *)fz_seed, sizeof fz_seed - 1);
	kh_rng_set(kh_rng_det_fn, &rng);
	sg.serial = FZ_CAS_ECM_SIGNER;
	memcpy(sg.sk, fz_cas_ecm_signer_sk, 32);
	if (kh_ed25519_public(sg.sk, sg_pk) != KH_OK || kh_ed25519_public(fz_cas_emm_signer_sk, emm_pk) != KH_OK)
		__builtin_trap();
	return 0;
}

static int all_pattern(const void *p, size_t n)
{
	const uint8_t *b = p;
	for (size_t i = 0; i < n; i++)
		if (b[i] != PATTERN)
			return 0;
	return 1;
}

static int peek_error(kh_err r)
{
	return r == KH_ERR_TRUNCATED || r == KH_ERR_TRAILING || r == KH_ERR_TOO_LARGE || r == KH_ERR_FORMAT ||
	       r == KH_ERR_VERSION;
}

static size_t cw_len_of(uint8_t alg)
{
	return alg == KH_SCR_CSA2 ? 8 : alg == KH_SCR_CISSA || alg == KH_SCR_IDSA ? 16 : 0;
}

static void same_ecm(const struct kh_ecm *a, const struct kh_ecm *b)
{
	CHECK(a->h.table_id == b->h.table_id && a->h.key_id == b->h.key_id && a->h.key_version == b->h.key_version &&
	      a->h.cp == b->h.cp);
	CHECK(a->alg == b->alg && a->cw_len == b->cw_len && a->access == b->access && a->time == b->time);
	CHECK(memcmp(a->cw_even, b->cw_even, a->cw_len) == 0 && memcmp(a->cw_odd, b->cw_odd, a->cw_len) == 0);
	if (a->access == KH_ECM_PRODUCT)
		CHECK(a->product == b->product);
	else
		CHECK(a->event == b->event && a->price == b->price);
}

static int ecm_peeks(const uint8_t *d, size_t n)
{
	return kh_ecm_peek(d, n, &(struct kh_ecm_hdr){0}) == KH_OK;
}

/* The signature checks of fuzz_common.h, with the ECM signer (the EMM signer's key is the other). */
static void check_sig(const uint8_t *d, size_t n, int flip_all)
{
	fz_check_sig(d, n, flip_all, kh_ecm_verify, fz_ecm_sig_label, sg.sk, sg_pk, emm_pk, ecm_peeks);
}

static void ecm(const uint8_t *data, size_t size)
{
	struct kh_ecm_hdr h, h2;
	struct kh_ecm e, e2;
	uint8_t sec[KH_ECM_MAX + 1], sig[KH_CAS_SIG_LEN];
	size_t len = 0;
	kh_err rp, ro, rv, fe;

	memset(&h, PATTERN, sizeof h);
	memset(&e, PATTERN, sizeof e);
	rp = kh_ecm_peek(data, size, &h);
	ro = kh_ecm_open(fz_cas_skey, data, size, &e);
	rv = kh_ecm_verify(sg_pk, data, size);
	/* Exactly the error the format calls for: framing, only version 2 (signed), then table_id. */
	fe = fz_frame_expect(data, size, KH_ECM_MAX, KH_CAS_VERSION_SIGNED);
	if (fe == KH_OK && data[0] != KH_ECM_TID_EVEN && data[0] != KH_ECM_TID_ODD)
		fe = KH_ERR_FORMAT;
	CHECK(rp == fe);
	/* A version-1 (unsigned) ECM, framed as one, is refused as a version, never read. */
	if (size >= 4 && data[3] == KH_CAS_VERSION && fz_frame_expect(data, size, KH_ECM_MAX, KH_CAS_VERSION) == KH_OK)
		CHECK(rp == KH_ERR_VERSION);
	if (rp != KH_OK) {
		CHECK(peek_error(rp));
		CHECK(all_pattern(&h, sizeof h));
		/* Framing errors are the same for all three, and open never gets past them. */
		CHECK(ro == rp && rv == rp);
		CHECK(all_pattern(&e, sizeof e));
		return;
	}
	CHECK(size <= KH_ECM_MAX && size >= KH_ECM_HDR_LEN + KH_CAS_TAG_LEN + KH_CAS_TRAILER_LEN);
	CHECK(data[3] == KH_CAS_VERSION_SIGNED);
	CHECK(h.table_id == KH_ECM_TID_EVEN || h.table_id == KH_ECM_TID_ODD);
	CHECK(h.table_id == data[0] && h.key_id == data[4] && h.key_version == kh_get_be32(data + 5) &&
	      h.cp == kh_get_be32(data + 9) && h.signer == kh_get_be32(data + size - KH_CAS_TRAILER_LEN));
	CHECK(rv == KH_OK || rv == KH_ERR_SIGNATURE);
	check_sig(data, size, rv == KH_OK);
	if (ro != KH_OK) {
		CHECK(ro == KH_ERR_AUTH || ro == KH_ERR_TLV_TAG || ro == KH_ERR_FORMAT || ro == KH_ERR_TRUNCATED);
		CHECK(all_pattern(&e, sizeof e));
		return;
	}
	CHECK(e.h.table_id == h.table_id && e.h.key_id == h.key_id && e.h.key_version == h.key_version && e.h.cp == h.cp);
	CHECK(e.cw_len == 8 || e.cw_len == 16);
	CHECK(e.cw_len == cw_len_of(e.alg));
	CHECK(e.access == KH_ECM_PRODUCT || e.access == KH_ECM_EVENT);

	/* Sealed again under the same key: opens to the same fields, at the same length (the TLV
	 * the sealer writes is the canonical one, and the opener accepts only canonical lengths),
	 * signed by the signer it was given, with the signature the format says. */
	CHECK(kh_ecm_seal(fz_cas_skey, &sg, &e, sec, sizeof sec, &len) == KH_OK);
	CHECK(len == size);
	CHECK(memcmp(sec, data, KH_ECM_HDR_LEN - KH_CAS_NONCE_LEN) == 0);
	CHECK(kh_ecm_peek(sec, len, &h2) == KH_OK && h2.signer == FZ_CAS_ECM_SIGNER);
	CHECK(fz_sign_section(sg.sk, fz_ecm_sig_label, sec, len, sig));
	CHECK(memcmp(sig, sec + len - KH_CAS_SIG_LEN, sizeof sig) == 0);
	check_sig(sec, len, 1);
	memset(&e2, PATTERN, sizeof e2);
	CHECK(kh_ecm_open(fz_cas_skey, sec, len, &e2) == KH_OK);
	same_ecm(&e, &e2);
	/* One byte short of room: refused; no signer: refused. */
	CHECK(kh_ecm_seal(fz_cas_skey, &sg, &e, sec, len - 1, &len) == KH_ERR_BUF);
	CHECK(kh_ecm_seal(fz_cas_skey, NULL, &e, sec, sizeof sec, &len) == KH_ERR_INVAL);
	/* Under another key it does not open. */
	memset(&e2, PATTERN, sizeof e2);
	CHECK(kh_ecm_open(fz_cas_kp, data, size, &e2) == KH_ERR_AUTH);
	CHECK(all_pattern(&e2, sizeof e2));
	kh_wipe(&e, sizeof e);
	kh_wipe(&e2, sizeof e2);
}

static int parse_error(kh_err r)
{
	return r == KH_ERR_FORMAT || r == KH_ERR_TRUNCATED;
}

static void answers(const uint8_t *data, size_t size)
{
	static struct kh_cas_status st; /* large: static */
	struct kh_cw_answer cw;
	struct kh_ppv_offer o;
	kh_err r;

	memset(&cw, PATTERN, sizeof cw);
	r = kh_cw_answer_parse(data, size, &cw);
	if (r != KH_OK) {
		CHECK(parse_error(r));
		CHECK(all_pattern(&cw, sizeof cw));
	} else {
		CHECK(cw.cw_len == 8 || cw.cw_len == 16);
		CHECK(cw.cw_len == cw_len_of(cw.alg));
	}

	memset(&o, PATTERN, sizeof o);
	r = kh_ppv_offer_parse(data, size, &o);
	if (r != KH_OK) {
		CHECK(parse_error(r));
		CHECK(all_pattern(&o, sizeof o));
	}

	memset(&st, PATTERN, sizeof st);
	r = kh_cas_status_parse(data, size, &st);
	if (r != KH_OK) {
		CHECK(parse_error(r));
		CHECK(all_pattern(&st, sizeof st));
	} else {
		CHECK(st.nrights <= KH_CAS_STATUS_MAX_RIGHTS && st.nkeys <= KH_CAS_STATUS_MAX_KEYS);
		CHECK(st.nsigners <= sizeof st.signers / sizeof st.signers[0]);
		CHECK(st.has_group <= 1);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 4096)
		return 0;
	ecm(data, size);
	answers(data, size);
	return 0;
}
