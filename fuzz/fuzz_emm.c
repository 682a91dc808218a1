/*
 * libFuzzer harness: the EMM codec (include/keyhole/cas.h) on outside bytes. The input is one
 * whole EMM section for kh_emm_peek and kh_emm_open, opened with the fixed key of the address
 * type its header claims (fz_cas_kp, fz_cas_gkey, fz_cas_akey from fuzz_common.h).
 *
 * Invariants: peek and open agree on the framing (open never succeeds where peek fails, and
 * fails with peek's own error); a header peek accepts matches the bytes and its table_id the
 * address type (address 0 for ALL); the command buffer and length are left untouched on every
 * failure (prefilled with a pattern); errors are only the documented ones; a successful open
 * gives exactly n - header - tag bytes, is refused with KH_ERR_BUF (nothing written) when the
 * buffer is one byte short, does not open under another key, and sealing the commands again
 * with kh_emm_seal under the same header gives a section of the same length and clear header
 * that opens to the same commands.
 * kh_emm_peek's header, too, is untouched on failure (corpus/fuzz_emm/regress-peek-all-addr: an
 * ALL EMM with a non-zero address once left it written).
 */
#include <string.h>

#include "keyhole/cas.h"
#include "keyhole/crypto.h"

#include "fuzz_common.h"

#define PATTERN 0x5A

static struct kh_rng_det rng;
static uint8_t cmds[KH_EMM_CMDS_MAX + 8], cmds2[KH_EMM_CMDS_MAX + 8], sec[KH_EMM_MAX + 8];

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

static const uint8_t *key_of(uint8_t type)
{
	return type == KH_EMM_UNIQUE ? fz_cas_kp : type == KH_EMM_GROUP ? fz_cas_gkey : fz_cas_akey;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t tid[3] = {KH_EMM_TID_UNIQUE, KH_EMM_TID_GROUP, KH_EMM_TID_ALL};
	struct kh_emm_hdr h;
	const uint8_t *key;
	size_t len, len2, slen;
	kh_err rp, ro;

	if (size > 4096)
		return 0;
	memset(&h, PATTERN, sizeof h);
	rp = kh_emm_peek(data, size, &h);
	/* The key a decoder-side tool would pick from the (unchecked) type byte. */
	key = key_of(size > 4 ? data[4] : 0);
	memset(cmds, PATTERN, sizeof cmds);
	len = (size_t)-1;
	ro = kh_emm_open(key, data, size, cmds, sizeof cmds, &len);
	if (rp != KH_OK) {
		CHECK(rp == KH_ERR_TRUNCATED || rp == KH_ERR_TRAILING || rp == KH_ERR_TOO_LARGE || rp == KH_ERR_FORMAT ||
		      rp == KH_ERR_VERSION);
		CHECK(all_pattern(&h, sizeof h));
		CHECK(ro == rp);
		CHECK(all_pattern(cmds, sizeof cmds) && len == (size_t)-1);
		return 0;
	}
	CHECK(size <= KH_EMM_MAX && size >= KH_EMM_HDR_LEN + KH_CAS_TAG_LEN);
	CHECK(h.addr_type <= KH_EMM_ALL && h.table_id == tid[h.addr_type] && h.table_id == data[0]);
	CHECK(h.addr_type == data[4] && h.addr == kh_get_be32(data + 5) && h.seq == kh_get_be32(data + 9));
	CHECK(h.addr_type != KH_EMM_ALL || h.addr == 0);
	if (ro != KH_OK) {
		CHECK(ro == KH_ERR_AUTH);
		CHECK(all_pattern(cmds, sizeof cmds) && len == (size_t)-1);
		return 0;
	}
	CHECK(len == size - KH_EMM_HDR_LEN - KH_CAS_TAG_LEN);
	CHECK(all_pattern(cmds + len, sizeof cmds - len));

	/* One byte short of room: refused before anything is written. */
	if (len > 0) {
		memset(cmds2, PATTERN, sizeof cmds2);
		len2 = (size_t)-1;
		CHECK(kh_emm_open(key, data, size, cmds2, len - 1, &len2) == KH_ERR_BUF);
		CHECK(all_pattern(cmds2, sizeof cmds2) && len2 == (size_t)-1);
	}
	/* Another key: refused. */
	memset(cmds2, PATTERN, sizeof cmds2);
	CHECK(kh_emm_open(fz_cas_skey, data, size, cmds2, sizeof cmds2, &len2) == KH_ERR_AUTH);
	CHECK(all_pattern(cmds2, sizeof cmds2));

	/* Sealed again: same length and clear header (the nonce aside), opens to the same commands.
	 * An empty command list cannot be sealed (KH_ERR_INVAL), though one sealed elsewhere opens. */
	if (len == 0) {
		CHECK(kh_emm_seal(key, &h, cmds, 0, sec, sizeof sec, &slen) == KH_ERR_INVAL);
		return 0;
	}
	CHECK(kh_emm_seal(key, &h, cmds, len, sec, sizeof sec, &slen) == KH_OK);
	CHECK(slen == size && memcmp(sec, data, KH_EMM_HDR_LEN - KH_CAS_NONCE_LEN) == 0);
	memset(cmds2, PATTERN, sizeof cmds2);
	CHECK(kh_emm_open(key, sec, slen, cmds2, sizeof cmds2, &len2) == KH_OK);
	CHECK(len2 == len && memcmp(cmds2, cmds, len) == 0);
	{
		struct kh_emm_hdr h2;
		CHECK(kh_emm_peek(sec, slen, &h2) == KH_OK);
		CHECK(h2.table_id == h.table_id && h2.addr_type == h.addr_type && h2.addr == h.addr && h2.seq == h.seq);
	}
	CHECK(kh_emm_seal(key, &h, cmds, len, sec, slen - 1, &slen) == KH_ERR_BUF);
	kh_wipe(cmds, sizeof cmds);
	kh_wipe(cmds2, sizeof cmds2);
	return 0;
}
