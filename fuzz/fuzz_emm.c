/*
 * libFuzzer harness: the EMM codec (include/keyhole/cas.h) on outside bytes. The input is one
 * whole EMM section for kh_emm_peek and kh_emm_open, opened with the fixed key of the address
 * type its header claims (fz_cas_kp, fz_cas_gkey, fz_cas_akey from fuzz_common.h), and for
 * kh_emm_verify with the fixed EMM signer's public key.
 *
 * Invariants: peek fails with exactly the error the format calls for (fz_frame_expect with the
 * version the type byte requires: 1 for UNIQUE, 2 for GROUP and ALL, so a version-1 group or
 * broadcast EMM and a version-2 unique one are KH_ERR_VERSION; then table_id against type and
 * ALL's address), and open and verify fail with peek's own error (open never succeeds where peek
 * fails); a header peek accepts matches the bytes and its table_id the address type (address 0
 * for ALL), its signer the serial before the signature (0 for UNIQUE); the command buffer and
 * length are left untouched on every failure (prefilled with a pattern); errors are only the
 * documented ones. Verify: a unique EMM carries no signature (KH_ERR_SIGNATURE); a group or all
 * EMM verifies exactly when its trailer holds the signature the signer's key makes over
 * "keyhole emm sig v2" | every byte before it (worked out here), and not once any trailer byte is
 * flipped, or under another key. A successful open gives exactly n - header - tag - trailer
 * bytes, is refused with KH_ERR_BUF (nothing written) when the buffer is one byte short, does not
 * open under another key, and sealing the commands again under the same header (kh_emm_seal for
 * UNIQUE, kh_emm_seal_signed with the fixed signer for GROUP and ALL; each refuses the other's
 * types) gives a section of the same length and clear header that opens to the same commands and,
 * signed, carries the signer's serial and the signature worked out here.
 * kh_emm_peek's header, too, is untouched on failure (corpus/fuzz_emm/regress-peek-all-addr: an
 * ALL EMM with a non-zero address once left it written).
 */
#include <string.h>

#include "keyhole/cas.h"
#include "keyhole/crypto.h"

#include "fuzz_common.h"

#define PATTERN 0x5A

static struct kh_rng_det rng;
static struct kh_cas_signer sg;       /* the EMM signer */
static uint8_t sg_pk[32], ecm_pk[32]; /* its public key; the ECM signer's (another key) */
static uint8_t cmds[KH_EMM_CMDS_MAX + 8], cmds2[KH_EMM_CMDS_MAX + 8], sec[KH_EMM_MAX + 8];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	kh_rng_det_init(&rng, (const uint8_t *)fz_seed, sizeof fz_seed - 1);
	kh_rng_set(kh_rng_det_fn, &rng);
	sg.serial = FZ_CAS_EMM_SIGNER;
	memcpy(sg.sk, fz_cas_emm_signer_sk, 32);
	if (kh_ed25519_public(sg.sk, sg_pk) != KH_OK || kh_ed25519_public(fz_cas_ecm_signer_sk, ecm_pk) != KH_OK)
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

static const uint8_t *key_of(uint8_t type)
{
	return type == KH_EMM_UNIQUE ? fz_cas_kp : type == KH_EMM_GROUP ? fz_cas_gkey : fz_cas_akey;
}

/* What kh_emm_peek must answer, from the format: framing with the type's version, then the type. */
static kh_err peek_expect(const uint8_t *d, size_t n)
{
	static const uint8_t tid[3] = {KH_EMM_TID_UNIQUE, KH_EMM_TID_GROUP, KH_EMM_TID_ALL};
	uint8_t type = n >= KH_EMM_HDR_LEN ? d[4] : KH_EMM_UNIQUE;
	kh_err r = fz_frame_expect(d, n, KH_EMM_MAX, type == KH_EMM_UNIQUE ? KH_CAS_VERSION : KH_CAS_VERSION_SIGNED);

	if (r != KH_OK)
		return r;
	if (type > KH_EMM_ALL || d[0] != tid[type] || (type == KH_EMM_ALL && kh_get_be32(d + 5) != 0))
		return KH_ERR_FORMAT;
	return KH_OK;
}

static int emm_peeks(const uint8_t *d, size_t n)
{
	return peek_expect(d, n) == KH_OK;
}

/* The signature checks of fuzz_common.h, with the EMM signer (the ECM signer's key is the other). */
static void check_sig(const uint8_t *d, size_t n, int flip_all)
{
	fz_check_sig(d, n, flip_all, kh_emm_verify, fz_emm_sig_label, sg.sk, sg_pk, ecm_pk, emm_peeks);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t tid[3] = {KH_EMM_TID_UNIQUE, KH_EMM_TID_GROUP, KH_EMM_TID_ALL};
	struct kh_emm_hdr h;
	const uint8_t *key;
	uint8_t sig[KH_CAS_SIG_LEN];
	size_t len, len2, slen, trailer;
	kh_err rp, ro, rv;
	int is_signed;

	if (size > 4096)
		return 0;
	memset(&h, PATTERN, sizeof h);
	rp = kh_emm_peek(data, size, &h);
	/* The key a decoder-side tool would pick from the (unchecked) type byte. */
	key = key_of(size > 4 ? data[4] : 0);
	memset(cmds, PATTERN, sizeof cmds);
	len = (size_t)-1;
	ro = kh_emm_open(key, data, size, cmds, sizeof cmds, &len);
	rv = kh_emm_verify(sg_pk, data, size);
	CHECK(rp == peek_expect(data, size));
	/* Group and broadcast EMMs are signed: one of version 1, framed as one, is a version error. */
	if (size >= KH_EMM_HDR_LEN && (data[4] == KH_EMM_GROUP || data[4] == KH_EMM_ALL) &&
	    fz_frame_expect(data, size, KH_EMM_MAX, KH_CAS_VERSION) == KH_OK)
		CHECK(rp == KH_ERR_VERSION);
	if (rp != KH_OK) {
		CHECK(rp == KH_ERR_TRUNCATED || rp == KH_ERR_TRAILING || rp == KH_ERR_TOO_LARGE || rp == KH_ERR_FORMAT ||
		      rp == KH_ERR_VERSION);
		CHECK(all_pattern(&h, sizeof h));
		CHECK(ro == rp && rv == rp);
		CHECK(all_pattern(cmds, sizeof cmds) && len == (size_t)-1);
		return 0;
	}
	is_signed = h.addr_type != KH_EMM_UNIQUE;
	trailer = is_signed ? KH_CAS_TRAILER_LEN : 0;
	CHECK(size <= KH_EMM_MAX && size >= KH_EMM_HDR_LEN + KH_CAS_TAG_LEN + trailer);
	CHECK(h.addr_type <= KH_EMM_ALL && h.table_id == tid[h.addr_type] && h.table_id == data[0]);
	CHECK(h.addr_type == data[4] && h.addr == kh_get_be32(data + 5) && h.seq == kh_get_be32(data + 9));
	CHECK(h.addr_type != KH_EMM_ALL || h.addr == 0);
	CHECK(data[3] == (is_signed ? KH_CAS_VERSION_SIGNED : KH_CAS_VERSION));
	if (is_signed) {
		CHECK(h.signer == kh_get_be32(data + size - KH_CAS_TRAILER_LEN));
		CHECK(rv == KH_OK || rv == KH_ERR_SIGNATURE);
		check_sig(data, size, rv == KH_OK);
	} else {
		/* A card's own EMM carries no signature: there is nothing to verify. */
		CHECK(h.signer == 0 && rv == KH_ERR_SIGNATURE);
	}
	if (ro != KH_OK) {
		CHECK(ro == KH_ERR_AUTH);
		CHECK(all_pattern(cmds, sizeof cmds) && len == (size_t)-1);
		return 0;
	}
	CHECK(len == size - KH_EMM_HDR_LEN - KH_CAS_TAG_LEN - trailer);
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

	/* Each sealer refuses the other's address types. */
	CHECK(kh_emm_seal(key, &h, cmds, len ? len : 1, sec, sizeof sec, &slen) == (is_signed ? KH_ERR_INVAL : KH_OK));
	CHECK(kh_emm_seal_signed(key, &sg, &h, cmds, len ? len : 1, sec, sizeof sec, &slen) ==
	      (is_signed ? KH_OK : KH_ERR_INVAL));
	/* Sealed again: same length and clear header (the nonce aside), opens to the same commands.
	 * An empty command list cannot be sealed (KH_ERR_INVAL), though one sealed elsewhere opens. */
	if (len == 0) {
		CHECK(kh_emm_seal(key, &h, cmds, 0, sec, sizeof sec, &slen) == KH_ERR_INVAL);
		CHECK(kh_emm_seal_signed(key, &sg, &h, cmds, 0, sec, sizeof sec, &slen) == KH_ERR_INVAL);
		return 0;
	}
	if (is_signed)
		CHECK(kh_emm_seal_signed(key, &sg, &h, cmds, len, sec, sizeof sec, &slen) == KH_OK);
	else
		CHECK(kh_emm_seal(key, &h, cmds, len, sec, sizeof sec, &slen) == KH_OK);
	CHECK(slen == size && memcmp(sec, data, KH_EMM_HDR_LEN - KH_CAS_NONCE_LEN) == 0);
	memset(cmds2, PATTERN, sizeof cmds2);
	CHECK(kh_emm_open(key, sec, slen, cmds2, sizeof cmds2, &len2) == KH_OK);
	CHECK(len2 == len && memcmp(cmds2, cmds, len) == 0);
	{
		struct kh_emm_hdr h2;
		CHECK(kh_emm_peek(sec, slen, &h2) == KH_OK);
		CHECK(h2.table_id == h.table_id && h2.addr_type == h.addr_type && h2.addr == h.addr && h2.seq == h.seq);
		CHECK(h2.signer == (is_signed ? FZ_CAS_EMM_SIGNER : 0));
	}
	if (is_signed) {
		CHECK(fz_sign_section(sg.sk, fz_emm_sig_label, sec, slen, sig));
		CHECK(memcmp(sig, sec + slen - KH_CAS_SIG_LEN, sizeof sig) == 0);
		check_sig(sec, slen, 1);
		CHECK(kh_emm_seal_signed(key, &sg, &h, cmds, len, sec, slen - 1, &slen) == KH_ERR_BUF);
	} else {
		CHECK(kh_emm_verify(sg_pk, sec, slen) == KH_ERR_SIGNATURE);
		CHECK(kh_emm_seal(key, &h, cmds, len, sec, slen - 1, &slen) == KH_ERR_BUF);
	}
	kh_wipe(cmds, sizeof cmds);
	kh_wipe(cmds2, sizeof cmds2);
	return 0;
}
