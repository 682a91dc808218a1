/*
 * libFuzzer harness: the Shamir share record and combine (include/keyhole/shamir.h), what a
 * device does with the shares its host and the escrows hand it (seed 003, split key).
 *
 * Pass 1 parses the whole input as one record. The result is the one a model of the format
 * gives (TRUNCATED, FORMAT for the magic, VERSION, TRAILING, then FORMAT for a field out of
 * range, the ranges checked here with memcmp against P); a parsed record encodes back to the
 * input's exact bytes; a refused one leaves the output untouched.
 *
 * Pass 2 cuts the input into records of KH_SHAMIR_REC_LEN bytes (at most 17) and combines the
 * shares of those that parse with the first one's T (always 2..16). A refusal is SHARES,
 * leaves the output untouched and has a cause: fewer than T or more than 16 shares, a repeated
 * x, or shares past the T-th that the first T alone do not refuse.
 * A success is below P; the first T shares alone and in reverse order give the same, and so
 * does each share past the T-th put in place of the T-th; and a split of it (deterministic
 * source, reseeded per input) combines back to it.
 */
#include <string.h>

#include "keyhole/crypto.h"
#include "keyhole/shamir.h"

#include "fuzz_common.h"

#define L KH_SHAMIR_LEN
#define MAX_RECS (KH_SHAMIR_MAX_N + 1)

static struct kh_rng_det rng;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	kh_rng_set(kh_rng_det_fn, &rng);
	return 0;
}

/* The error a record of these bytes must give, worked out without the parser. */
static kh_err model(const uint8_t *d, size_t n)
{
	static const uint8_t zero[L];
	const uint8_t *x = d + 8, *y = d + 8 + L;

	if (n < 4)
		return KH_ERR_TRUNCATED;
	if (memcmp(d, "KHSH", 4) != 0)
		return KH_ERR_FORMAT;
	if (n < 5)
		return KH_ERR_TRUNCATED;
	if (d[4] != KH_SHAMIR_VERSION)
		return KH_ERR_VERSION;
	if (n != KH_SHAMIR_REC_LEN)
		return n < KH_SHAMIR_REC_LEN ? KH_ERR_TRUNCATED : KH_ERR_TRAILING;
	if (d[5] < 2 || d[6] < d[5] || d[6] > 16 || d[7] < 1 || d[7] > d[6] || memcmp(x, zero, L) == 0 ||
	    memcmp(x, kh_shamir_p, L) >= 0 || memcmp(y, kh_shamir_p, L) >= 0)
		return KH_ERR_FORMAT;
	return KH_OK;
}

static void one_record(const uint8_t *data, size_t size)
{
	struct kh_shamir_rec rec, keep;
	uint8_t again[KH_SHAMIR_REC_LEN];
	kh_err want = model(data, size), r;

	memset(&rec, 0xA5, sizeof rec);
	keep = rec;
	r = kh_shamir_rec_parse(data, size, &rec);
	CHECK(r == want);
	if (r != KH_OK) {
		CHECK(memcmp(&rec, &keep, sizeof rec) == 0);
		return;
	}
	CHECK(kh_shamir_rec_encode(&rec, again) == KH_OK);
	CHECK(memcmp(again, data, sizeof again) == 0);
}

static void combine(const uint8_t *data, size_t size)
{
	static const uint8_t untouched[L] = {0xA5, 0xA5, 0xA5, 0xA5, 0xA5, 0xA5, 0xA5, 0xA5,
					     0xA5, 0xA5, 0xA5, 0xA5, 0xA5, 0xA5, 0xA5, 0xA5,
					     0xA5, 0xA5, 0xA5, 0xA5, 0xA5, 0xA5, 0xA5, 0xA5,
					     0xA5, 0xA5, 0xA5, 0xA5, 0xA5, 0xA5, 0xA5, 0xA5};
	struct kh_shamir_share sh[MAX_RECS], rev[KH_SHAMIR_MAX_N], again[KH_SHAMIR_MAX_N];
	struct kh_shamir_rec rec;
	uint8_t secret[L], other[L];
	unsigned t = 0;
	size_t k = 0;
	int dup = 0;
	kh_err r;

	for (size_t off = 0; off + KH_SHAMIR_REC_LEN <= size && off < MAX_RECS * KH_SHAMIR_REC_LEN;
	     off += KH_SHAMIR_REC_LEN) {
		if (kh_shamir_rec_parse(data + off, KH_SHAMIR_REC_LEN, &rec) != KH_OK)
			continue;
		if (k == 0)
			t = rec.t;
		sh[k++] = rec.s;
	}
	if (k == 0)
		return;
	for (size_t i = 0; i < k; i++)
		for (size_t j = 0; j < i; j++)
			dup |= memcmp(sh[i].x, sh[j].x, L) == 0;

	memcpy(secret, untouched, L);
	r = kh_shamir_combine(sh, k, t, secret);
	if (r != KH_OK) {
		CHECK(r == KH_ERR_SHARES);
		CHECK(memcmp(secret, untouched, L) == 0);
		if (k >= t && k <= KH_SHAMIR_MAX_N && !dup) {
			/* refused for the shares past the t-th: the first t alone are fine */
			CHECK(k > t);
			CHECK(kh_shamir_combine(sh, t, t, other) == KH_OK);
		}
		return;
	}
	CHECK(k >= t && k <= KH_SHAMIR_MAX_N && !dup);
	CHECK(memcmp(secret, kh_shamir_p, L) < 0);
	CHECK(kh_shamir_combine(sh, t, t, other) == KH_OK && memcmp(other, secret, L) == 0);
	for (unsigned i = 0; i < t; i++)
		rev[i] = sh[t - 1 - i];
	CHECK(kh_shamir_combine(rev, t, t, other) == KH_OK && memcmp(other, secret, L) == 0);
	/* each share past the t-th is on the same polynomial: in place of the t-th, the same secret */
	for (size_t j = t; j < k; j++) {
		rev[0] = sh[j];
		CHECK(kh_shamir_combine(rev, t, t, other) == KH_OK && memcmp(other, secret, L) == 0);
	}
	/* the secret split again (t of t) and recombined */
	CHECK(kh_shamir_split(secret, t, t, again) == KH_OK);
	CHECK(kh_shamir_combine(again, t, t, other) == KH_OK && memcmp(other, secret, L) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > (MAX_RECS + 1) * KH_SHAMIR_REC_LEN)
		return 0;
	kh_rng_det_init(&rng, (const uint8_t *)fz_seed, sizeof fz_seed - 1);
	one_record(data, size);
	combine(data, size);
	return 0;
}
