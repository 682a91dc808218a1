/*
 * libFuzzer harness: the ECM codec (include/keyhole/cas.h) on outside bytes, and the host-side
 * parsers of the card's pay-TV answers. The input is one whole ECM section for kh_ecm_peek and
 * kh_ecm_open with the fixed service key fz_cas_skey (fuzz_common.h); the same bytes also go to
 * kh_cw_answer_parse, kh_ppv_offer_parse and kh_cas_status_parse.
 *
 * Invariants: peek and open agree on the framing (open never succeeds where peek fails, and
 * fails with peek's own error when peek fails); a successful open has peek's header, cw_len 8
 * or 16 matching its algorithm, access 1 or 2 with no stray field of the other kind; an output
 * struct is left byte-identical on failure (each is prefilled with a pattern); errors are only
 * the documented ones; sealing the opened ECM again with kh_ecm_seal and opening that gives the
 * same fields, and a section of the same length. The answer parsers, when they accept, give
 * values consistent with their rules (CW length from the algorithm, bounded repeated fields).
 */
#include <string.h>

#include "keyhole/cas.h"
#include "keyhole/crypto.h"
#include "keyhole/scramble.h"

#include "fuzz_common.h"

#define PATTERN 0xA5

static struct kh_rng_det rng;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	kh_rng_det_init(&rng, (const uint8_t *)fz_seed, sizeof fz_seed - 1);
	kh_rng_set(kh_rng_det_fn, &rng);
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

static void ecm(const uint8_t *data, size_t size)
{
	struct kh_ecm_hdr h;
	struct kh_ecm e, e2;
	uint8_t sec[KH_ECM_MAX + 1];
	size_t len = 0;
	kh_err rp, ro;

	memset(&h, PATTERN, sizeof h);
	memset(&e, PATTERN, sizeof e);
	rp = kh_ecm_peek(data, size, &h);
	ro = kh_ecm_open(fz_cas_skey, data, size, &e);
	if (rp != KH_OK) {
		CHECK(peek_error(rp));
		CHECK(all_pattern(&h, sizeof h));
		/* Framing errors are the same for both, and open never gets past them. */
		CHECK(ro == rp);
		CHECK(all_pattern(&e, sizeof e));
		return;
	}
	CHECK(size <= KH_ECM_MAX && size >= KH_ECM_HDR_LEN + KH_CAS_TAG_LEN);
	CHECK(h.table_id == KH_ECM_TID_EVEN || h.table_id == KH_ECM_TID_ODD);
	CHECK(h.table_id == data[0] && h.key_id == data[4] && h.key_version == kh_get_be32(data + 5) &&
	      h.cp == kh_get_be32(data + 9));
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
	 * the sealer writes is the canonical one, and the opener accepts only canonical lengths). */
	CHECK(kh_ecm_seal(fz_cas_skey, &e, sec, sizeof sec, &len) == KH_OK);
	CHECK(len == size);
	CHECK(memcmp(sec, data, KH_ECM_HDR_LEN - KH_CAS_NONCE_LEN) == 0);
	memset(&e2, PATTERN, sizeof e2);
	CHECK(kh_ecm_open(fz_cas_skey, sec, len, &e2) == KH_OK);
	same_ecm(&e, &e2);
	/* One byte short of room: refused. */
	CHECK(kh_ecm_seal(fz_cas_skey, &e, sec, len - 1, &len) == KH_ERR_BUF);
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
