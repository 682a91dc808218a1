/*
 * libFuzzer harness: the center's checks of the card's usage-data block and upload hello
 * (include/keyhole/usage.h, docs/protocols/usage.md) on outside bytes. Fixed keys from
 * fuzz_common.h: Ku is fz_cas_ku, the card's signing key the Ed25519 seed fz_usage_sign_sk (its
 * public key derived at init). The first input byte selects:
 *   even, bit 3 clear  the rest is a block for kh_usage_peek and kh_usage_open; when bit 1 is
 *         set the rest is also taken as TLV contents that the harness seals with kh_usage_seal
 *         (fixed header, marked for M1 when bit 2 is set) and opens, so the contents parser is
 *         reachable past the signature and the tag
 *   even, bit 3 set  a block bound to an upload session (KH_USAGE_F_SESSION): the rest is
 *         u8 snlen | session nonce | tail; the tail is a block for kh_usage_open_bound with that
 *         nonce, and when bit 1 is set also TLV contents that the harness seals bound to the
 *         nonce with kh_usage_seal_bound and opens with kh_usage_open_bound (bit 2 unused)
 *   odd   the rest is u8 noncelen | nonce | hello for kh_hello_verify.
 *
 * Invariants. Block: peek and open agree on the framing (open never succeeds where peek fails,
 * and fails with peek's own error then), peek's error is exactly the one its length, version
 * byte and flags byte call for (a flag outside KH_USAGE_F_ALL, or M1 and SESSION together, is
 * KH_ERR_FORMAT); a header peek accepts matches the bytes; outputs are left byte-identical on
 * every failure (prefilled with a pattern); errors are only the documented ones; a block bound
 * to a session never opens without a nonce (KH_ERR_AUTH); a successful open has peek's header,
 * npurchases <= 64, export_ok <= 1, carries the one signature the card's key makes over
 * header | body (| the session nonce when bound; Ed25519 is deterministic: no malleated
 * signature is accepted), does not open under another Ku or another card key, and its fields
 * re-encoded as TLV in the documented order and sealed again under the same header, keys (and
 * nonce) give a block of the same length and header that opens to the same struct. Sealed
 * contents: kh_usage_seal refuses exactly what is above KH_USAGE_MAX; open gives exactly the
 * result of a model of the contents rules (tags 1..6, each but purchases once and all present,
 * fixed lengths, <= 64 purchases, export 0/1, first failure wins), byte-identical re-encoding
 * when the input was canonical.
 * Bound: with a fuzzed nonce, an unbound block opens exactly as without one (same result, same
 * struct: the nonce is ignored); a bound block opens only with a nonce of 16..64 bytes and the
 * signature the card's key makes over header | body | that nonce, else KH_ERR_AUTH.
 * kh_usage_seal_bound refuses (KH_ERR_INVAL, output and length untouched) a nonce with flags
 * other than exactly SESSION, SESSION without a nonce, and a nonce outside 16..64 bytes; above
 * KH_USAGE_MAX it is KH_ERR_TOO_LARGE, one byte short of room KH_ERR_BUF, both untouched. A
 * bound block it seals is the header with flags SESSION, AES-256-GCM of the contents under Ku
 * and the block_seq nonce with the header as AAD, and the card key's Ed25519 signature over
 * header | body | nonce, each computed independently here; peek reports SESSION; it opens with
 * exactly the model's result with that nonce, and with no nonce, no nonce at all through
 * kh_usage_open, the nonce with one bit flipped, one byte shorter or longer, another card key or
 * another Ku, or with its flags byte rewritten to 0 or M1, it gives KH_ERR_AUTH, struct untouched.
 * Hello: success only for noncelen in [16, 64] and exactly KH_HELLO_LEN bytes, the header from
 * the bytes and the signature the card's key makes; the error is the one the lengths call for;
 * the header is untouched on failure; another nonce or key is refused.
 */
#include <string.h>

#include "keyhole/crypto.h"
#include "keyhole/usage.h"

#include "fuzz_common.h"

#define PATTERN 0xC3

static struct kh_rng_det rng;
static uint8_t sign_pk[32], other_pk[32];
static struct kh_usage u, u2, u0;
static uint8_t sec[KH_USAGE_MAX + 64], tlv[KH_USAGE_MAX];
/* header | body | session nonce, the message a bound block's signature is over */
static uint8_t smsg[KH_USAGE_MAX + KH_HELLO_NONCE_MAX];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	kh_rng_det_init(&rng, (const uint8_t *)fz_seed, sizeof fz_seed - 1);
	kh_rng_set(kh_rng_det_fn, &rng);
	if (kh_ed25519_public(fz_usage_sign_sk, sign_pk) != KH_OK ||
	    kh_ed25519_public(fz_cas_kp, other_pk) != KH_OK) /* another card's key */
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

/* What kh_usage_peek accepts in the flags byte: known flags, never M1 and SESSION together. */
static int flags_ok(uint8_t f)
{
	return (f & ~KH_USAGE_F_ALL) == 0 && f != (KH_USAGE_F_M1 | KH_USAGE_F_SESSION);
}

static int nonce_len_ok(size_t snlen)
{
	return snlen >= KH_HELLO_NONCE_MIN && snlen <= KH_HELLO_NONCE_MAX;
}

static int same_hdr(const struct kh_usage_hdr *a, const struct kh_usage_hdr *b)
{
	return a->ua == b->ua && a->block_seq == b->block_seq && a->card_time == b->card_time && a->flags == b->flags;
}

static void same_usage(const struct kh_usage *a, const struct kh_usage *b)
{
	CHECK(same_hdr(&a->h, &b->h));
	CHECK(a->credit == b->credit && a->last_reload == b->last_reload);
	CHECK(a->n_ecm == b->n_ecm && a->n_cw == b->n_cw && a->n_refused == b->n_refused && a->n_emm == b->n_emm);
	CHECK(a->cas_version == b->cas_version && a->state_version == b->state_version && a->export_ok == b->export_ok);
	CHECK(a->npurchases == b->npurchases);
	for (size_t i = 0; i < a->npurchases; i++)
		CHECK(a->purchases[i].event == b->purchases[i].event && a->purchases[i].price == b->purchases[i].price &&
		      a->purchases[i].time == b->purchases[i].time);
}

/* The TLV contents of an opened block, in the documented order (as the card writes them). */
static size_t encode(const struct kh_usage *x, uint8_t *out, size_t cap)
{
	struct kh_wr w;
	uint8_t v[16];

	kh_wr_init(&w, out, cap);
	kh_tlv_put_u32(&w, KH_USAGE_T_CREDIT, x->credit);
	for (size_t i = 0; i < x->npurchases; i++) {
		kh_put_be32(v, x->purchases[i].event);
		kh_put_be32(v + 4, x->purchases[i].price);
		kh_put_be64(v + 8, x->purchases[i].time);
		kh_tlv_put(&w, KH_USAGE_T_PURCHASE, v, 16);
	}
	kh_put_be32(v, x->n_ecm);
	kh_put_be32(v + 4, x->n_cw);
	kh_put_be32(v + 8, x->n_refused);
	kh_put_be32(v + 12, x->n_emm);
	kh_tlv_put(&w, KH_USAGE_T_COUNTERS, v, 16);
	v[0] = x->cas_version;
	v[1] = x->state_version;
	kh_tlv_put(&w, KH_USAGE_T_VERSIONS, v, 2);
	kh_tlv_put_u32(&w, KH_USAGE_T_RELOAD, x->last_reload);
	CHECK(kh_tlv_put_u8(&w, KH_USAGE_T_EXPORT, x->export_ok) == KH_OK);
	return w.len;
}

/*
 * A model of the contents rules: the result kh_usage_open must give for authentic contents.
 * *canonical: the contents are in the documented order (credit, purchases, counters, versions,
 * reload, export), i.e. what encode() writes.
 */
static kh_err model(const uint8_t *p, size_t n, int *canonical)
{
	static const uint16_t want[7] = {0, 4, 16, 16, 2, 4, 1};
	unsigned seen = 0;
	size_t i = 0, np = 0;
	int last = 0;

	*canonical = 1;
	while (i < n) {
		uint8_t tag;
		uint16_t len;
		if (n - i < 3)
			return KH_ERR_TRUNCATED;
		tag = p[i];
		len = (uint16_t)(p[i + 1] << 8 | p[i + 2]);
		i += 3;
		if (n - i < len)
			return KH_ERR_TRUNCATED;
		if (tag < 1 || tag > 6)
			return KH_ERR_TLV_TAG;
		if (tag != KH_USAGE_T_PURCHASE && (seen & (1u << tag)))
			return KH_ERR_FORMAT;
		seen |= 1u << tag;
		if (len != want[tag])
			return KH_ERR_FORMAT;
		if (tag == KH_USAGE_T_PURCHASE && np++ == KH_USAGE_MAX_PURCHASES)
			return KH_ERR_FORMAT;
		if (tag == KH_USAGE_T_EXPORT && p[i] > 1)
			return KH_ERR_FORMAT;
		if (tag < last)
			*canonical = 0;
		last = tag;
		i += len;
	}
	if ((seen | (1u << KH_USAGE_T_PURCHASE)) != 0x7E)
		return KH_ERR_FORMAT;
	return KH_OK;
}

/*
 * A block bound to snonce (authentic or not) never opens with another nonce, a nonce one byte
 * shorter or longer, no nonce, another card key or another Ku, nor once its flags byte says it
 * is not bound: KH_ERR_AUTH each time, struct untouched.
 */
static void bound_refused(const uint8_t *blk, size_t n, const uint8_t *snonce, size_t snlen)
{
	static uint8_t cp[KH_USAGE_MAX];
	uint8_t other[KH_HELLO_NONCE_MAX + 1];

	memset(&u2, PATTERN, sizeof u2);
	memcpy(other, snonce, snlen);
	other[snlen - 1] ^= 0x01;
	CHECK(kh_usage_open_bound(fz_cas_ku, sign_pk, blk, n, other, snlen, &u2) == KH_ERR_AUTH);
	other[snlen - 1] ^= 0x01;
	CHECK(kh_usage_open_bound(fz_cas_ku, sign_pk, blk, n, other, snlen - 1, &u2) == KH_ERR_AUTH);
	other[snlen] = 0;
	CHECK(kh_usage_open_bound(fz_cas_ku, sign_pk, blk, n, other, snlen + 1, &u2) == KH_ERR_AUTH);
	CHECK(kh_usage_open_bound(fz_cas_ku, sign_pk, blk, n, NULL, 0, &u2) == KH_ERR_AUTH);
	CHECK(kh_usage_open_bound(fz_cas_ku, sign_pk, blk, n, snonce, 0, &u2) == KH_ERR_AUTH);
	CHECK(kh_usage_open(fz_cas_ku, sign_pk, blk, n, &u2) == KH_ERR_AUTH);
	CHECK(kh_usage_open_bound(fz_cas_ku, other_pk, blk, n, snonce, snlen, &u2) == KH_ERR_AUTH);
	CHECK(kh_usage_open_bound(fz_cas_kp, sign_pk, blk, n, snonce, snlen, &u2) == KH_ERR_AUTH);
	/* The binding cannot be stripped: the same block claimed unbound, or for M1. */
	memcpy(cp, blk, n);
	cp[17] = 0;
	CHECK(kh_usage_open(fz_cas_ku, sign_pk, cp, n, &u2) == KH_ERR_AUTH);
	CHECK(kh_usage_open_bound(fz_cas_ku, sign_pk, cp, n, snonce, snlen, &u2) == KH_ERR_AUTH);
	cp[17] = KH_USAGE_F_M1;
	CHECK(kh_usage_open(fz_cas_ku, sign_pk, cp, n, &u2) == KH_ERR_AUTH);
	CHECK(all_pattern(&u2, sizeof u2));
}

/* The one signature the card's key makes over header | body (| snonce when given). */
static void card_signed(const uint8_t *blk, size_t n, const uint8_t *snonce, size_t snlen)
{
	uint8_t sig[64];
	size_t body = n - KH_USAGE_SIG_LEN;

	memcpy(smsg, blk, body);
	if (snonce)
		memcpy(smsg + body, snonce, snlen);
	CHECK(kh_ed25519_sign(fz_usage_sign_sk, smsg, body + (snonce ? snlen : 0), sig) == KH_OK);
	CHECK(memcmp(sig, blk + body, sizeof sig) == 0);
}

/*
 * What every successfully opened block must satisfy; blk/n is the block, x what it opened to,
 * snonce/snlen the session nonce it was opened with when it is bound (NULL otherwise).
 */
static void opened(const uint8_t *blk, size_t n, const struct kh_usage *x, size_t ctlen, const uint8_t *snonce,
		   size_t snlen)
{
	size_t len, slen;

	CHECK(x->npurchases <= KH_USAGE_MAX_PURCHASES);
	CHECK(x->export_ok <= 1);
	CHECK(flags_ok(x->h.flags));
	CHECK(((x->h.flags & KH_USAGE_F_SESSION) != 0) == (snonce != NULL));
	CHECK(!snonce || nonce_len_ok(snlen));
	/* The one signature the card's key makes over header | body (| nonce). */
	card_signed(blk, n, snonce, snlen);

	/* Re-encoded and sealed again under the same header, keys (and nonce): same length (every
	 * field has a fixed length and appears at most once but purchases), same clear fields, a
	 * fresh AEAD nonce (never the one of the block it re-makes), same struct. */
	len = encode(x, tlv, sizeof tlv);
	CHECK(len == ctlen);
	CHECK(kh_usage_seal_bound(fz_cas_ku, fz_usage_sign_sk, &x->h, tlv, len, snonce, snlen, sec, sizeof sec,
				  &slen) == KH_OK);
	CHECK(slen == n && memcmp(sec, blk, KH_USAGE_NONCE_OFF) == 0);
	CHECK(memcmp(sec + KH_USAGE_NONCE_OFF, blk + KH_USAGE_NONCE_OFF, KH_NONCE_LEN) != 0);
	memset(&u2, PATTERN, sizeof u2);
	CHECK(kh_usage_open_bound(fz_cas_ku, sign_pk, sec, slen, snonce, snlen, &u2) == KH_OK);
	same_usage(x, &u2);
	/* One byte short of room: refused. */
	CHECK(kh_usage_seal_bound(fz_cas_ku, fz_usage_sign_sk, &x->h, tlv, len, snonce, snlen, sec, n - 1, &slen) ==
	      KH_ERR_BUF);

	/* Another Ku, another card's key: refused, nothing written. */
	memset(&u2, PATTERN, sizeof u2);
	CHECK(kh_usage_open_bound(fz_cas_kp, sign_pk, blk, n, snonce, snlen, &u2) == KH_ERR_AUTH);
	CHECK(kh_usage_open_bound(fz_cas_ku, other_pk, blk, n, snonce, snlen, &u2) == KH_ERR_AUTH);
	CHECK(all_pattern(&u2, sizeof u2));
	if (snonce)
		bound_refused(blk, n, snonce, snlen);
}

static void block(const uint8_t *d, size_t n)
{
	struct kh_usage_hdr h;
	kh_err rp, ro;

	memset(&h, PATTERN, sizeof h);
	rp = kh_usage_peek(d, n, &h);
	memset(&u, PATTERN, sizeof u);
	ro = kh_usage_open(fz_cas_ku, sign_pk, d, n, &u);
	if (rp != KH_OK) {
		CHECK(rp == (n < KH_USAGE_MIN_LEN		? KH_ERR_TRUNCATED
			     : n > KH_USAGE_MAX			? KH_ERR_TOO_LARGE
			     : d[0] != KH_USAGE_VERSION		? KH_ERR_VERSION
							: KH_ERR_FORMAT));
		CHECK(rp != KH_ERR_FORMAT || !flags_ok(d[17]));
		CHECK(all_pattern(&h, sizeof h));
		CHECK(ro == rp);
		CHECK(all_pattern(&u, sizeof u));
		return;
	}
	CHECK(n >= KH_USAGE_MIN_LEN && n <= KH_USAGE_MAX && d[0] == KH_USAGE_VERSION && flags_ok(d[17]));
	CHECK(h.ua == kh_get_be32(d + 1) && h.block_seq == kh_get_be32(d + 5) && h.card_time == kh_get_be64(d + 9) &&
	      h.flags == d[17]);
	/* Bound to a session: never opens without its nonce, and the signature is checked first. */
	CHECK(!(h.flags & KH_USAGE_F_SESSION) || ro == KH_ERR_AUTH);
	if (ro != KH_OK) {
		CHECK(ro == KH_ERR_AUTH || ro == KH_ERR_TLV_TAG || ro == KH_ERR_FORMAT || ro == KH_ERR_TRUNCATED);
		CHECK(all_pattern(&u, sizeof u));
		return;
	}
	CHECK(same_hdr(&u.h, &h));
	opened(d, n, &u, n - KH_USAGE_HDR_LEN - KH_TAG_LEN - KH_USAGE_SIG_LEN, NULL, 0);
	kh_wipe(&u, sizeof u);
	kh_wipe(&u2, sizeof u2);
}

/* The rest as contents: sealed by the harness (authentic), opened, checked against the model. */
static void contents(const uint8_t *d, size_t n, int flag_m1)
{
	/* the contents byte's bit 2 picks the M1 flag, so both kinds of header are sealed */
	const struct kh_usage_hdr h0 = {FZ_CAS_UA, 7, FZ_CAS_NOW, (uint8_t)(flag_m1 ? KH_USAGE_F_M1 : 0)};
	static uint8_t blk[KH_USAGE_MAX + 64];
	size_t blen = 0;
	int canonical;
	kh_err r, want;

	r = kh_usage_seal(fz_cas_ku, fz_usage_sign_sk, &h0, d, n, blk, sizeof blk, &blen);
	if (KH_USAGE_HDR_LEN + n + KH_TAG_LEN + KH_USAGE_SIG_LEN > KH_USAGE_MAX) {
		CHECK(r == KH_ERR_TOO_LARGE);
		return;
	}
	CHECK(r == KH_OK && blen == n + KH_USAGE_MIN_LEN);
	want = model(d, n, &canonical);
	memset(&u, PATTERN, sizeof u);
	r = kh_usage_open(fz_cas_ku, sign_pk, blk, blen, &u);
	if (r != want)
		fprintf(stderr, "open %d, model %d\n", r, want);
	CHECK(r == want);
	if (r != KH_OK) {
		CHECK(all_pattern(&u, sizeof u));
		return;
	}
	CHECK(same_hdr(&u.h, &h0));
	opened(blk, blen, &u, n, NULL, 0);
	/* In the documented order the re-encoding is the input itself. */
	if (canonical)
		CHECK(encode(&u, tlv, sizeof tlv) == n && memcmp(tlv, d, n) == 0);
	kh_wipe(&u, sizeof u);
	kh_wipe(&u2, sizeof u2);
}

/*
 * A block opened in an upload session whose nonce (snonce, snlen: anything the input gives) is
 * fuzzed: it must open only as its flags and that nonce allow.
 */
static void block_bound(const uint8_t *d, size_t n, const uint8_t *snonce, size_t snlen)
{
	struct kh_usage_hdr h;
	kh_err rp, ro, r0;

	memset(&h, PATTERN, sizeof h);
	rp = kh_usage_peek(d, n, &h);
	memset(&u, PATTERN, sizeof u);
	ro = kh_usage_open_bound(fz_cas_ku, sign_pk, d, n, snonce, snlen, &u);
	memset(&u0, PATTERN, sizeof u0);
	r0 = kh_usage_open(fz_cas_ku, sign_pk, d, n, &u0);
	if (rp != KH_OK) {
		/* the framing comes first, whatever the nonce */
		CHECK(ro == rp && r0 == rp);
		CHECK(all_pattern(&u, sizeof u) && all_pattern(&u0, sizeof u0));
		return;
	}
	if (!(h.flags & KH_USAGE_F_SESSION)) {
		/* Not bound: the nonce is ignored, the result is the one without it. */
		CHECK(ro == r0);
		if (ro != KH_OK) {
			CHECK(all_pattern(&u, sizeof u) && all_pattern(&u0, sizeof u0));
			return;
		}
		same_usage(&u, &u0);
		CHECK(same_hdr(&u.h, &h));
		opened(d, n, &u, n - KH_USAGE_HDR_LEN - KH_TAG_LEN - KH_USAGE_SIG_LEN, NULL, 0);
		goto out;
	}
	/* Bound: never without a nonce, never with a nonce of a length the card cannot sign. */
	CHECK(r0 == KH_ERR_AUTH && all_pattern(&u0, sizeof u0));
	if (!snonce || !nonce_len_ok(snlen))
		CHECK(ro == KH_ERR_AUTH);
	if (ro != KH_OK) {
		CHECK(ro == KH_ERR_AUTH || ro == KH_ERR_TLV_TAG || ro == KH_ERR_FORMAT || ro == KH_ERR_TRUNCATED);
		CHECK(all_pattern(&u, sizeof u));
		return;
	}
	CHECK(same_hdr(&u.h, &h));
	/* checks the card's signature over header | body | this nonce, and every other nonce refused */
	opened(d, n, &u, n - KH_USAGE_HDR_LEN - KH_TAG_LEN - KH_USAGE_SIG_LEN, snonce, snlen);
out:
	kh_wipe(&u, sizeof u);
	kh_wipe(&u0, sizeof u0);
	kh_wipe(&u2, sizeof u2);
}

/* kh_usage_seal_bound's refusals: r is KH_ERR_INVAL and neither output was touched. */
static void seal_refused(kh_err r, const uint8_t *out, size_t cap, size_t outlen)
{
	CHECK(r == KH_ERR_INVAL);
	CHECK(all_pattern(out, cap));
	CHECK(all_pattern(&outlen, sizeof outlen));
}

/* The rest as contents the harness seals bound to the fuzzed session nonce, then opens. */
static void contents_bound(const uint8_t *d, size_t n, const uint8_t *snonce, size_t snlen)
{
	static const uint8_t bad_flags[] = {0, KH_USAGE_F_M1, KH_USAGE_F_M1 | KH_USAGE_F_SESSION,
					    KH_USAGE_F_SESSION | 0x04, KH_USAGE_F_SESSION | 0x80};
	struct kh_usage_hdr h0 = {FZ_CAS_UA, 9, FZ_CAS_NOW, KH_USAGE_F_SESSION}, hb, hp;
	static uint8_t blk[KH_USAGE_MAX + 64];
	uint8_t nonce[KH_NONCE_LEN];
	size_t blen, body, slen;
	int canonical;
	kh_err r, want;

	/* Refused, nothing written: a nonce with flags other than exactly SESSION, SESSION without
	 * a nonce (through either call). */
	for (size_t i = 0; i < sizeof bad_flags; i++) {
		hb = h0;
		hb.flags = bad_flags[i];
		memset(blk, PATTERN, sizeof blk);
		memset(&blen, PATTERN, sizeof blen);
		r = kh_usage_seal_bound(fz_cas_ku, fz_usage_sign_sk, &hb, d, n, snonce, snlen, blk, sizeof blk, &blen);
		seal_refused(r, blk, sizeof blk, blen);
	}
	memset(blk, PATTERN, sizeof blk);
	memset(&blen, PATTERN, sizeof blen);
	r = kh_usage_seal_bound(fz_cas_ku, fz_usage_sign_sk, &h0, d, n, NULL, 0, blk, sizeof blk, &blen);
	seal_refused(r, blk, sizeof blk, blen);
	r = kh_usage_seal(fz_cas_ku, fz_usage_sign_sk, &h0, d, n, blk, sizeof blk, &blen);
	seal_refused(r, blk, sizeof blk, blen);

	/* The fuzzed nonce: refused outside 16..64 bytes, then too large, then short of room. */
	r = kh_usage_seal_bound(fz_cas_ku, fz_usage_sign_sk, &h0, d, n, snonce, snlen, blk, sizeof blk, &blen);
	if (!nonce_len_ok(snlen)) {
		seal_refused(r, blk, sizeof blk, blen);
		return;
	}
	if (KH_USAGE_HDR_LEN + n + KH_TAG_LEN + KH_USAGE_SIG_LEN > KH_USAGE_MAX) {
		CHECK(r == KH_ERR_TOO_LARGE);
		CHECK(all_pattern(blk, sizeof blk) && all_pattern(&blen, sizeof blen));
		return;
	}
	CHECK(r == KH_OK && blen == n + KH_USAGE_MIN_LEN);
	body = blen - KH_USAGE_SIG_LEN;
	/* Nothing past the block (the nonce was only lent the signature's place). */
	CHECK(all_pattern(blk + blen, sizeof blk - blen));
	memset(sec, PATTERN, sizeof sec);
	memset(&slen, PATTERN, sizeof slen);
	CHECK(kh_usage_seal_bound(fz_cas_ku, fz_usage_sign_sk, &h0, d, n, snonce, snlen, sec, blen - 1, &slen) ==
	      KH_ERR_BUF);
	CHECK(all_pattern(sec, sizeof sec) && all_pattern(&slen, sizeof slen));

	/* The block, computed independently: header (with the nonce the seal drew), AES-256-GCM
	 * under Ku with that nonce and the header as AAD, the card's signature over header | body |
	 * nonce. */
	CHECK(kh_usage_peek(blk, blen, &hp) == KH_OK && same_hdr(&hp, &h0) && hp.flags == KH_USAGE_F_SESSION);
	sec[0] = KH_USAGE_VERSION;
	kh_put_be32(sec + 1, h0.ua);
	kh_put_be32(sec + 5, h0.block_seq);
	kh_put_be64(sec + 9, h0.card_time);
	sec[17] = KH_USAGE_F_SESSION;
	memcpy(nonce, blk + KH_USAGE_NONCE_OFF, sizeof nonce);
	memcpy(sec + KH_USAGE_NONCE_OFF, nonce, sizeof nonce);
	CHECK(kh_aead_seal(fz_cas_ku, nonce, sec, KH_USAGE_HDR_LEN, d, n, sec + KH_USAGE_HDR_LEN) == KH_OK);
	CHECK(memcmp(sec, blk, body) == 0);
	card_signed(blk, blen, snonce, snlen);

	/* Opened with its nonce: exactly the model's result. */
	want = model(d, n, &canonical);
	memset(&u, PATTERN, sizeof u);
	r = kh_usage_open_bound(fz_cas_ku, sign_pk, blk, blen, snonce, snlen, &u);
	if (r != want)
		fprintf(stderr, "open_bound %d, model %d\n", r, want);
	CHECK(r == want);
	if (r != KH_OK) {
		CHECK(all_pattern(&u, sizeof u));
		/* whatever the contents, the signature is checked first: no other nonce gets that far */
		bound_refused(blk, blen, snonce, snlen);
		return;
	}
	CHECK(same_hdr(&u.h, &h0));
	opened(blk, blen, &u, n, snonce, snlen); /* includes bound_refused */
	if (canonical)
		CHECK(encode(&u, tlv, sizeof tlv) == n && memcmp(tlv, d, n) == 0);
	kh_wipe(&u, sizeof u);
	kh_wipe(&u2, sizeof u2);
}

/* Selector bit 3: u8 snlen | session nonce | the rest. */
static void bound_mode(const uint8_t *d, size_t n, int with_contents)
{
	size_t snlen;

	if (n < 1 || d[0] > n - 1)
		return;
	snlen = d[0];
	block_bound(d + 1 + snlen, n - 1 - snlen, d + 1, snlen);
	if (with_contents)
		contents_bound(d + 1 + snlen, n - 1 - snlen, d + 1, snlen);
}

static void hello(const uint8_t *d, size_t n)
{
	uint8_t msg[KH_HELLO_MSG_LEN(KH_HELLO_NONCE_MAX)], nonce2[256], sig[64];
	struct kh_usage_hdr h;
	const uint8_t *nonce, *hl;
	size_t nl, hn;
	kh_err r, want;

	if (n < 1 || d[0] > n - 1)
		return;
	nl = d[0];
	nonce = d + 1;
	hl = d + 1 + nl;
	hn = n - 1 - nl;
	memset(&h, PATTERN, sizeof h);
	r = kh_hello_verify(sign_pk, nonce, nl, hl, hn, &h);
	if (r != KH_OK) {
		/* kh_hello_verify refuses a bad nonce length with KH_ERR_INVAL and a bad hello length
		 * with KH_ERR_TRUNCATED / KH_ERR_TRAILING (usage.h names only AUTH and FORMAT). */
		want = nl < KH_HELLO_NONCE_MIN || nl > KH_HELLO_NONCE_MAX ? KH_ERR_INVAL
		       : hn < KH_HELLO_LEN				 ? KH_ERR_TRUNCATED
		       : hn > KH_HELLO_LEN				 ? KH_ERR_TRAILING
									 : KH_ERR_AUTH;
		CHECK(r == want);
		CHECK(all_pattern(&h, sizeof h));
		return;
	}
	CHECK(nl >= KH_HELLO_NONCE_MIN && nl <= KH_HELLO_NONCE_MAX && hn == KH_HELLO_LEN);
	CHECK(h.ua == kh_get_be32(hl) && h.block_seq == kh_get_be32(hl + 4) && h.card_time == kh_get_be64(hl + 8));
	/* The one signature the card's key makes. */
	kh_hello_msg(nonce, nl, h.ua, h.block_seq, h.card_time, msg);
	CHECK(kh_ed25519_sign(fz_usage_sign_sk, msg, KH_HELLO_MSG_LEN(nl), sig) == KH_OK);
	CHECK(memcmp(sig, hl + 16, sizeof sig) == 0);
	/* Another nonce, another key: refused, header untouched. */
	memcpy(nonce2, nonce, nl);
	nonce2[nl - 1] ^= 1;
	memset(&h, PATTERN, sizeof h);
	CHECK(kh_hello_verify(sign_pk, nonce2, nl, hl, hn, &h) == KH_ERR_AUTH);
	CHECK(kh_hello_verify(other_pk, nonce, nl, hl, hn, &h) == KH_ERR_AUTH);
	CHECK(all_pattern(&h, sizeof h));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 4096)
		return 0;
	if (data[0] & 1) {
		hello(data + 1, size - 1);
		return 0;
	}
	if (data[0] & 8) {
		bound_mode(data + 1, size - 1, (data[0] & 2) != 0);
		return 0;
	}
	block(data + 1, size - 1);
	if (data[0] & 2)
		contents(data + 1, size - 1, (data[0] & 4) != 0);
	return 0;
}
