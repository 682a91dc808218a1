/*
 * Shamir sharing of the licence key (src/base/shamir.c, seed 003 Fig. 5): split and combine
 * round trips with every choice and order of T shares, the refusals of combine and split, a
 * fixed split checked against values worked out independently (Python integers over the
 * AES-256-CTR stream of the deterministic source, made with the openssl command), the rejection
 * sampling, the share record's codec, and the device's HPKE-sealed share.
 */
#include <string.h>

#include "keyhole/crypto.h"
#include "keyhole/hpke.h"
#include "keyhole/shamir.h"
#include "testutil.h"

#define L KH_SHAMIR_LEN

static void hex32(const char *hex, uint8_t out[static L])
{
	assert_int_equal(kh_test_unhex(hex, out, L), L);
}

/* v = P - d, big-endian (d at most 0x43: no borrow out of the last byte). */
static void p_minus(uint8_t d, uint8_t v[static L])
{
	assert_true(d <= kh_shamir_p[L - 1]);
	memcpy(v, kh_shamir_p, L);
	v[L - 1] = (uint8_t)(v[L - 1] - d);
}

/* ---- a randomness source that plays a script, to steer the draws ---- */

struct script {
	uint8_t b[16 * L];
	size_t n, pos;
};

static kh_err script_fn(void *ctx, uint8_t *out, size_t n)
{
	struct script *s = ctx;

	if (n > s->n - s->pos)
		return KH_ERR_CRYPTO;
	memcpy(out, s->b + s->pos, n);
	s->pos += n;
	return KH_OK;
}

static void script_add(struct script *s, const uint8_t v[static L])
{
	assert_true(s->n + L <= sizeof s->b);
	memcpy(s->b + s->n, v, L);
	s->n += L;
}

/* ---- round trips ---- */

/* Combine the shares named by idx (k of them) with threshold t. */
static kh_err combine_idx(const struct kh_shamir_share *sh, const unsigned *idx, size_t k, unsigned t,
			  uint8_t out[static L])
{
	struct kh_shamir_share pick[KH_SHAMIR_MAX_N];

	for (size_t i = 0; i < k; i++)
		pick[i] = sh[idx[i]];
	return kh_shamir_combine(pick, k, t, out);
}

/*
 * Every ordered choice of t distinct shares among n (n!/(n-t)! of them) recovers the secret;
 * returns how many were tried.
 */
static unsigned every_choice(const struct kh_shamir_share *sh, unsigned n, unsigned t, const uint8_t *secret,
			     unsigned *idx, unsigned depth, unsigned used)
{
	uint8_t got[L];
	unsigned tried = 0;

	if (depth == t) {
		memset(got, 0, sizeof got);
		assert_int_equal(combine_idx(sh, idx, t, t, got), KH_OK);
		assert_memory_equal(got, secret, L);
		return 1;
	}
	for (unsigned i = 0; i < n; i++) {
		if (used & (1u << i))
			continue;
		idx[depth] = i;
		tried += every_choice(sh, n, t, secret, idx, depth + 1, used | 1u << i);
	}
	return tried;
}

static void round_trip(unsigned t, unsigned n)
{
	struct kh_shamir_share sh[KH_SHAMIR_MAX_N];
	uint8_t secret[L], got[L], ff[L];
	unsigned idx[KH_SHAMIR_MAX_N];

	assert_int_equal(kh_shamir_random_secret(secret), KH_OK);
	assert_int_equal(kh_shamir_split(secret, t, n, sh), KH_OK);
	/* x distinct and non-zero, every value below P */
	for (unsigned i = 0; i < n; i++) {
		static const uint8_t zero[L];
		assert_memory_not_equal(sh[i].x, zero, L);
		assert_true(memcmp(sh[i].x, kh_shamir_p, L) < 0 && memcmp(sh[i].y, kh_shamir_p, L) < 0);
		for (unsigned j = 0; j < i; j++)
			assert_memory_not_equal(sh[i].x, sh[j].x, L);
	}
	if (t <= 4) {
		unsigned expect = 1;
		for (unsigned i = 0; i < t; i++)
			expect *= n - i;
		assert_int_equal(every_choice(sh, n, t, secret, idx, 0, 0), expect);
	} else {
		/* 16 of 16: n! orders are too many; the identity, the reverse, every rotation and
		 * 64 shuffles from the deterministic source. */
		struct kh_rng_det det;
		kh_rng_det_init(&det, (const uint8_t *)"order", 5);
		for (unsigned r = 0; r < n + 66; r++) {
			for (unsigned i = 0; i < n; i++)
				idx[i] = r == 0 ? i : r == 1 ? n - 1 - i : r < n + 2 ? (i + r - 2) % n : i;
			if (r >= n + 2) {
				uint8_t rnd[KH_SHAMIR_MAX_N];
				assert_int_equal(kh_rng_det_fn(&det, rnd, n), KH_OK);
				for (unsigned i = n; i-- > 1;) {
					unsigned j = rnd[i] % (i + 1), tmp = idx[i];
					idx[i] = idx[j];
					idx[j] = tmp;
				}
			}
			memset(got, 0, sizeof got);
			assert_int_equal(combine_idx(sh, idx, t, t, got), KH_OK);
			assert_memory_equal(got, secret, L);
		}
	}
	/* all n at once (the extra ones must lie on the polynomial) */
	memset(got, 0, sizeof got);
	assert_int_equal(kh_shamir_combine(sh, n, t, got), KH_OK);
	assert_memory_equal(got, secret, L);

	/* t - 1 shares: refused when the caller says t, and a different value when it says t - 1 */
	memset(ff, 0xa5, sizeof ff);
	memcpy(got, ff, L);
	assert_int_equal(kh_shamir_combine(sh, t - 1, t, got), KH_ERR_SHARES);
	assert_memory_equal(got, ff, L);
	if (t - 1 >= KH_SHAMIR_MIN_T) {
		assert_int_equal(kh_shamir_combine(sh + 1, t - 1, t - 1, got), KH_OK);
		assert_memory_not_equal(got, secret, L);
	}
}

/* T of N, given as the test's state. */
struct tn {
	unsigned t, n;
};
static const struct tn TN_2_2 = {2, 2}, TN_2_3 = {2, 3}, TN_3_5 = {3, 5}, TN_16_16 = {16, 16};

static void test_round_trip(void **state)
{
	const struct tn *c = *state;
	round_trip(c->t, c->n);
}

/* ---- refusals ---- */

static void expect_refused(const struct kh_shamir_share *sh, size_t k, unsigned t, kh_err want)
{
	uint8_t got[L], ff[L];

	memset(ff, 0x5a, sizeof ff);
	memcpy(got, ff, L);
	assert_int_equal(kh_shamir_combine(sh, k, t, got), want);
	assert_memory_equal(got, ff, L);
}

static void test_combine_refuses(void **state)
{
	struct kh_shamir_share sh[5], bad[5];
	uint8_t secret[L], got[L];
	static const uint8_t zero[L];
	(void)state;

	assert_int_equal(kh_shamir_random_secret(secret), KH_OK);
	assert_int_equal(kh_shamir_split(secret, 3, 5, sh), KH_OK);

	/* duplicate x, with the same or another y, in the first t or after them */
	memcpy(bad, sh, sizeof sh);
	bad[1] = bad[0];
	expect_refused(bad, 3, 3, KH_ERR_SHARES);
	memcpy(bad, sh, sizeof sh);
	memcpy(bad[2].x, bad[0].x, L);
	expect_refused(bad, 3, 3, KH_ERR_SHARES);
	memcpy(bad, sh, sizeof sh);
	bad[4] = bad[1];
	expect_refused(bad, 5, 3, KH_ERR_SHARES);
	/* x = 0, x = P, x = P + 1, x = 2^256 - 1 */
	const uint8_t big[] = {0, 1, 2};
	memcpy(bad, sh, sizeof sh);
	memcpy(bad[1].x, zero, L);
	expect_refused(bad, 3, 3, KH_ERR_SHARES);
	for (size_t i = 0; i < 3; i++) {
		memcpy(bad, sh, sizeof sh);
		p_minus(0, bad[2].x);
		bad[2].x[L - 1] = (uint8_t)(bad[2].x[L - 1] + big[i]);
		expect_refused(bad, 3, 3, KH_ERR_SHARES);
	}
	memcpy(bad, sh, sizeof sh);
	memset(bad[0].x, 0xff, L);
	expect_refused(bad, 3, 3, KH_ERR_SHARES);
	/* y = P, y = 2^256 - 1; y = P - 1 is a field element (another secret, but accepted) */
	memcpy(bad, sh, sizeof sh);
	p_minus(0, bad[1].y);
	expect_refused(bad, 3, 3, KH_ERR_SHARES);
	memset(bad[1].y, 0xff, L);
	expect_refused(bad, 3, 3, KH_ERR_SHARES);
	p_minus(1, bad[1].y);
	assert_int_equal(kh_shamir_combine(bad, 3, 3, got), KH_OK);
	assert_memory_not_equal(got, secret, L);
	/* a share beyond the t-th that is not on the polynomial: y changed by one */
	memcpy(bad, sh, sizeof sh);
	bad[3].y[L - 1] ^= 1;
	expect_refused(bad, 4, 3, KH_ERR_SHARES);
	expect_refused(bad, 5, 3, KH_ERR_SHARES);
	/* a share of another split (of the same secret) mixed in */
	struct kh_shamir_share other[3];
	assert_int_equal(kh_shamir_split(secret, 3, 3, other), KH_OK);
	memcpy(bad, sh, sizeof sh);
	bad[3] = other[0];
	expect_refused(bad, 4, 3, KH_ERR_SHARES);
	/* too few, too many, and thresholds outside 2..16 */
	expect_refused(sh, 2, 3, KH_ERR_SHARES);
	expect_refused(sh, 0, 3, KH_ERR_SHARES);
	expect_refused(NULL, 0, 2, KH_ERR_SHARES);
	struct kh_shamir_share many[KH_SHAMIR_MAX_N + 1];
	assert_int_equal(kh_shamir_split(secret, 2, KH_SHAMIR_MAX_N, many), KH_OK);
	many[KH_SHAMIR_MAX_N] = sh[0];
	expect_refused(many, KH_SHAMIR_MAX_N + 1, 2, KH_ERR_SHARES);
	expect_refused(sh, 5, 1, KH_ERR_INVAL);
	expect_refused(sh, 5, 0, KH_ERR_INVAL);
	expect_refused(sh, 5, KH_SHAMIR_MAX_N + 1, KH_ERR_INVAL);
}

static void test_split_refuses(void **state)
{
	struct kh_shamir_share sh[KH_SHAMIR_MAX_N + 1], keep[KH_SHAMIR_MAX_N + 1];
	uint8_t secret[L];
	(void)state;

	memset(sh, 0x33, sizeof sh);
	memcpy(keep, sh, sizeof sh);
	/* secret >= P: P, P + 1, 2^256 - 1 */
	p_minus(0, secret);
	assert_int_equal(kh_shamir_split(secret, 2, 3, sh), KH_ERR_INVAL);
	secret[L - 1]++;
	assert_int_equal(kh_shamir_split(secret, 2, 3, sh), KH_ERR_INVAL);
	memset(secret, 0xff, L);
	assert_int_equal(kh_shamir_split(secret, 2, 3, sh), KH_ERR_INVAL);
	/* thresholds and counts */
	memset(secret, 0, L);
	assert_int_equal(kh_shamir_split(secret, 1, 3, sh), KH_ERR_INVAL);
	assert_int_equal(kh_shamir_split(secret, 4, 3, sh), KH_ERR_INVAL);
	assert_int_equal(kh_shamir_split(secret, 2, KH_SHAMIR_MAX_N + 1, sh), KH_ERR_INVAL);
	assert_int_equal(kh_shamir_split(secret, KH_SHAMIR_MAX_N + 1, KH_SHAMIR_MAX_N + 1, sh), KH_ERR_INVAL);
	assert_memory_equal(sh, keep, sizeof sh);
	/* P - 1 and 0 are secrets */
	p_minus(1, secret);
	assert_int_equal(kh_shamir_split(secret, 2, 2, sh), KH_OK);
	uint8_t got[L];
	assert_int_equal(kh_shamir_combine(sh, 2, 2, got), KH_OK);
	assert_memory_equal(got, secret, L);
	memset(secret, 0, L);
	assert_int_equal(kh_shamir_split(secret, 2, 2, sh), KH_OK);
	assert_int_equal(kh_shamir_combine(sh, 2, 2, got), KH_OK);
	assert_memory_equal(got, secret, L);
}

/* ---- a fixed split, checked against an independent computation ---- */

/*
 * Seed "keyhole shamir test vector v1", T = 3, N = 4. The draws are the deterministic source's
 * AES-256-CTR stream (key SHA-256(seed), one call per 32-byte draw, counter block << 64), made
 * with `openssl enc -aes-256-ctr`; y_i = K + a1 x_i + a2 x_i^2 mod P in Python integers.
 */
static const char *const VEC_K = "4b6579686f6c6520736861726564206c6963656e6365206b6579203030332121";
static const char *const VEC_X[4] = {
    "2491264d35affe7206acf097fe4f211ded430a3658f161d8fd86497782e034a4",
    "07465cc19510be50b3a48201b7a4eebe023897ac10e8e1214a9bc27da3523a2c",
    "36957a754a1b45e2e8f17830ca696f9b9419b17cb8d45b28331a03ba2a322ff8",
    "f30d58c92d0ddab39d8b904ccec2da2c239ec895804b9566f94336bda0e4d3c2",
};
static const char *const VEC_Y[4] = {
    "7215f676b8189ccef443511773a4bfc3400c95f5b580996ff028a40da705b1c6",
    "986ed78f08eb3a1ef9a132e2c3064a154eb6dfadb7eb16873ecde9a1614c4772",
    "978a0be077a83d8fe4fa26232ff1a8c1c07c0ba8de4b1ce25a5adef1972a480b",
    "d2dfb1aa661c38e1ec623e657760c18140df241772f1ec4332628ee6c0aa4ec2",
};

static void test_fixed_vector(void **state)
{
	static const char seed[] = "keyhole shamir test vector v1";
	struct kh_rng_det det;
	struct kh_shamir_share sh[4];
	uint8_t k[L], v[L], got[L];
	(void)state;

	hex32(VEC_K, k);
	kh_rng_det_init(&det, (const uint8_t *)seed, sizeof seed - 1);
	kh_rng_set(kh_rng_det_fn, &det);
	kh_err r = kh_shamir_split(k, 3, 4, sh);
	kh_rng_set(NULL, NULL);
	assert_int_equal(r, KH_OK);
	for (int i = 0; i < 4; i++) {
		hex32(VEC_X[i], v);
		assert_memory_equal(sh[i].x, v, L);
		hex32(VEC_Y[i], v);
		assert_memory_equal(sh[i].y, v, L);
	}
	/* the pasted shares themselves combine to K, in any three and all four */
	for (int i = 0; i < 4; i++) {
		hex32(VEC_X[i], sh[i].x);
		hex32(VEC_Y[i], sh[i].y);
	}
	assert_int_equal(kh_shamir_combine(sh + 1, 3, 3, got), KH_OK);
	assert_memory_equal(got, k, L);
	assert_int_equal(kh_shamir_combine(sh, 4, 3, got), KH_OK);
	assert_memory_equal(got, k, L);
}

/* ---- rejection sampling ---- */

static void test_rejection_sampling(void **state)
{
	struct script s = {0};
	struct kh_shamir_share sh[2], keep[2];
	uint8_t v[L], got[L], want[L], k[L];
	(void)state;

	/* a secret: P and 2^256 - 1 are drawn again, P - 1 is taken */
	p_minus(0, v);
	script_add(&s, v);
	memset(v, 0xff, L);
	script_add(&s, v);
	p_minus(1, v);
	script_add(&s, v);
	kh_rng_set(script_fn, &s);
	assert_int_equal(kh_shamir_random_secret(got), KH_OK);
	kh_rng_set(NULL, NULL);
	assert_memory_equal(got, v, L);
	assert_int_equal(s.pos, s.n);

	/*
	 * A split of K = 5, T = 2: a1 drawn as P (again), then P - 1 (that is, -1); x1 drawn as 0
	 * (again), then 2; x2 as 2 (a repeat: again), then 7. y1 = 5 - 2 = 3, y2 = 5 - 7 = P - 2.
	 */
	memset(&s, 0, sizeof s);
	p_minus(0, v);
	script_add(&s, v);
	p_minus(1, v);
	script_add(&s, v);
	memset(v, 0, L);
	script_add(&s, v);
	v[L - 1] = 2;
	script_add(&s, v);
	script_add(&s, v);
	v[L - 1] = 7;
	script_add(&s, v);
	memset(k, 0, L);
	k[L - 1] = 5;
	kh_rng_set(script_fn, &s);
	kh_err r = kh_shamir_split(k, 2, 2, sh);
	kh_rng_set(NULL, NULL);
	assert_int_equal(r, KH_OK);
	assert_int_equal(s.pos, s.n);
	memset(want, 0, L);
	want[L - 1] = 2;
	assert_memory_equal(sh[0].x, want, L);
	want[L - 1] = 3;
	assert_memory_equal(sh[0].y, want, L);
	want[L - 1] = 7;
	assert_memory_equal(sh[1].x, want, L);
	p_minus(2, want);
	assert_memory_equal(sh[1].y, want, L);
	assert_int_equal(kh_shamir_combine(sh, 2, 2, got), KH_OK);
	assert_memory_equal(got, k, L);

	/* a source that only ever gives 2^256 - 1: refused after a bound, nothing written */
	memset(&s, 0, sizeof s);
	memset(v, 0xff, L);
	for (int i = 0; i < 16; i++)
		script_add(&s, v);
	memset(sh, 0x11, sizeof sh);
	memcpy(keep, sh, sizeof sh);
	kh_rng_set(script_fn, &s);
	r = kh_shamir_split(k, 2, 2, sh);
	kh_rng_set(NULL, NULL);
	assert_int_equal(r, KH_ERR_CRYPTO);
	assert_memory_equal(sh, keep, sizeof sh);
}

/* ---- the record ---- */

static void make_rec(struct kh_shamir_rec *rec)
{
	memset(rec, 0, sizeof *rec);
	rec->t = 3;
	rec->n = 4;
	rec->index = 2;
	hex32(VEC_X[1], rec->s.x);
	hex32(VEC_Y[1], rec->s.y);
	memcpy(rec->id, "listing-0123456", KH_SHAMIR_ID_LEN);
}

static void expect_parse(const uint8_t *b, size_t n, kh_err want)
{
	struct kh_shamir_rec out, keep;

	memset(&out, 0x77, sizeof out);
	keep = out;
	assert_int_equal(kh_shamir_rec_parse(b, n, &out), want);
	assert_memory_equal(&out, &keep, sizeof out);
}

/* Encode rec with one byte at off set to v, and expect the parser to refuse it with want. */
static void expect_byte(const uint8_t enc[static KH_SHAMIR_REC_LEN], size_t off, uint8_t v, kh_err want)
{
	uint8_t b[KH_SHAMIR_REC_LEN];

	memcpy(b, enc, sizeof b);
	b[off] = v;
	expect_parse(b, sizeof b, want);
}

static void test_record_codec(void **state)
{
	struct kh_shamir_rec rec, got, bad;
	uint8_t enc[KH_SHAMIR_REC_LEN], big[KH_SHAMIR_REC_LEN + 1];
	(void)state;

	make_rec(&rec);
	assert_int_equal(kh_shamir_rec_encode(&rec, enc), KH_OK);
	assert_memory_equal(enc, "KHSH\x01\x03\x04\x02", 8);
	assert_memory_equal(enc + 8, rec.s.x, L);
	assert_memory_equal(enc + 8 + L, rec.s.y, L);
	assert_memory_equal(enc + 8 + 2 * L, rec.id, KH_SHAMIR_ID_LEN);
	memset(&got, 0, sizeof got);
	assert_int_equal(kh_shamir_rec_parse(enc, sizeof enc, &got), KH_OK);
	assert_memory_equal(&got, &rec, sizeof rec);

	/* every truncation, and one byte more */
	for (size_t n = 0; n < sizeof enc; n++)
		expect_parse(enc, n, KH_ERR_TRUNCATED);
	memcpy(big, enc, sizeof enc);
	big[sizeof enc] = 0;
	expect_parse(big, sizeof big, KH_ERR_TRAILING);
	/* magic, version, then the fields */
	expect_byte(enc, 0, 'k', KH_ERR_FORMAT);
	expect_byte(enc, 3, 'X', KH_ERR_FORMAT);
	expect_byte(enc, 4, 0, KH_ERR_VERSION);
	expect_byte(enc, 4, 2, KH_ERR_VERSION);
	expect_byte(enc, 5, 1, KH_ERR_FORMAT);   /* T = 1 */
	expect_byte(enc, 5, 5, KH_ERR_FORMAT);   /* T > N */
	expect_byte(enc, 6, 2, KH_ERR_FORMAT);   /* N < T */
	expect_byte(enc, 6, 17, KH_ERR_FORMAT);  /* N > 16 */
	expect_byte(enc, 7, 0, KH_ERR_FORMAT);   /* index 0 */
	expect_byte(enc, 7, 5, KH_ERR_FORMAT);   /* index > N */
	uint8_t b[KH_SHAMIR_REC_LEN];
	memcpy(b, enc, sizeof b);
	b[7] = 4; /* index = N */
	assert_int_equal(kh_shamir_rec_parse(b, sizeof b, &got), KH_OK);
	assert_int_equal(got.index, 4);
	memset(b + 8, 0, L); /* x = 0 */
	expect_parse(b, sizeof b, KH_ERR_FORMAT);
	p_minus(0, b + 8); /* x = P */
	expect_parse(b, sizeof b, KH_ERR_FORMAT);
	memcpy(b, enc, sizeof b);
	p_minus(0, b + 8 + L); /* y = P */
	expect_parse(b, sizeof b, KH_ERR_FORMAT);
	/* a record too short is truncated whatever its version says */
	memcpy(b, enc, sizeof b);
	b[4] = 2;
	expect_parse(b, 4, KH_ERR_TRUNCATED);
	expect_parse(b, 5, KH_ERR_VERSION);

	/* the encoder writes only what the parser takes */
	const struct { size_t field; uint8_t v; } fields[] = {{0, 1}, {0, 5}, {1, 17}, {1, 2}, {2, 0}, {2, 5}};
	for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
		bad = rec;
		uint8_t *f = fields[i].field == 0 ? &bad.t : fields[i].field == 1 ? &bad.n : &bad.index;
		*f = fields[i].v;
		assert_int_equal(kh_shamir_rec_encode(&bad, enc), KH_ERR_INVAL);
	}
	bad = rec;
	memset(bad.s.x, 0, L);
	assert_int_equal(kh_shamir_rec_encode(&bad, enc), KH_ERR_INVAL);
	bad = rec;
	p_minus(0, bad.s.y);
	assert_int_equal(kh_shamir_rec_encode(&bad, enc), KH_ERR_INVAL);
}

/* ---- the device's sealed share ---- */

static void expect_open(const uint8_t sk[static 32], const uint8_t pk[static 32], const char *info,
			const uint8_t *blob, size_t n, kh_err want)
{
	struct kh_shamir_rec out, keep;

	memset(&out, 0x66, sizeof out);
	keep = out;
	assert_int_equal(kh_shamir_share_open(sk, pk, (const uint8_t *)info, strlen(info), blob, n, &out), want);
	assert_memory_equal(&out, &keep, sizeof out);
}

static void test_seal_open(void **state)
{
	static const char info[] = "listing 7 purchase 42";
	uint8_t sk[32], pk[32], sk2[32], pk2[32];
	uint8_t blob[KH_SHAMIR_SEALED_LEN], blob2[KH_SHAMIR_SEALED_LEN], b[KH_SHAMIR_SEALED_LEN + 1];
	struct kh_shamir_rec rec, got, bad;
	(void)state;

	assert_int_equal(kh_x25519_keygen(sk, pk), KH_OK);
	assert_int_equal(kh_x25519_keygen(sk2, pk2), KH_OK);
	make_rec(&rec);
	assert_int_equal(kh_shamir_share_seal(pk, (const uint8_t *)info, strlen(info), &rec, blob), KH_OK);
	memset(&got, 0, sizeof got);
	assert_int_equal(kh_shamir_share_open(sk, pk, (const uint8_t *)info, strlen(info), blob, sizeof blob, &got),
			 KH_OK);
	assert_memory_equal(&got, &rec, sizeof rec);
	/* the record is not in the clear, and each seal is fresh */
	assert_null(memmem(blob, sizeof blob, rec.s.y, L));
	assert_int_equal(kh_shamir_share_seal(pk, (const uint8_t *)info, strlen(info), &rec, blob2), KH_OK);
	assert_memory_not_equal(blob, blob2, sizeof blob);

	/* any flipped byte, another key pair, a pk that is not sk's, another info */
	for (size_t i = 0; i < sizeof blob; i++) {
		memcpy(b, blob, sizeof blob);
		b[i] ^= 0x01;
		expect_open(sk, pk, info, b, sizeof blob, KH_ERR_AUTH);
	}
	expect_open(sk2, pk2, info, blob, sizeof blob, KH_ERR_AUTH);
	expect_open(sk, pk2, info, blob, sizeof blob, KH_ERR_AUTH);
	expect_open(sk, pk, "listing 7 purchase 43", blob, sizeof blob, KH_ERR_AUTH);
	expect_open(sk, pk, "", blob, sizeof blob, KH_ERR_AUTH);
	/* lengths */
	expect_open(sk, pk, info, blob, sizeof blob - 1, KH_ERR_TRUNCATED);
	expect_open(sk, pk, info, blob, 0, KH_ERR_TRUNCATED);
	memcpy(b, blob, sizeof blob);
	b[sizeof blob] = 0;
	expect_open(sk, pk, info, b, sizeof b, KH_ERR_TRAILING);
	/* a record the parser refuses is not sealed */
	bad = rec;
	bad.index = 9;
	memset(b, 0x44, sizeof b);
	assert_int_equal(kh_shamir_share_seal(pk, (const uint8_t *)info, strlen(info), &bad, b), KH_ERR_INVAL);
	for (size_t i = 0; i < KH_SHAMIR_SEALED_LEN; i++)
		assert_int_equal(b[i], 0x44);
}

/*
 * Seed 003, Fig. 5 end to end: K split 2 of 3; the device's share sealed to its key and opened,
 * one escrow's share added: K again; the device's share alone, or the two escrows' shares
 * without it when T = 3, do not give K.
 */
static void test_device_and_escrow(void **state)
{
	static const char info[] = "listing 9";
	uint8_t k[L], got[L], sk[32], pk[32], blob[KH_SHAMIR_SEALED_LEN];
	struct kh_shamir_share sh[3], two[2];
	struct kh_shamir_rec rec, opened;
	(void)state;

	assert_int_equal(kh_shamir_random_secret(k), KH_OK);
	assert_int_equal(kh_shamir_split(k, 3, 3, sh), KH_OK);
	assert_int_equal(kh_x25519_keygen(sk, pk), KH_OK);
	memset(&rec, 0, sizeof rec);
	rec.t = 3;
	rec.n = 3;
	rec.index = 1;
	rec.s = sh[0];
	memcpy(rec.id, "device-000000001", KH_SHAMIR_ID_LEN);
	assert_int_equal(kh_shamir_share_seal(pk, (const uint8_t *)info, strlen(info), &rec, blob), KH_OK);
	assert_int_equal(kh_shamir_share_open(sk, pk, (const uint8_t *)info, strlen(info), blob, sizeof blob,
					     &opened), KH_OK);
	two[0] = sh[1];
	two[1] = sh[2];
	/* the escrows' two shares without the device's: refused at T = 3, and not K at T = 2 */
	assert_int_equal(kh_shamir_combine(two, 2, 3, got), KH_ERR_SHARES);
	assert_int_equal(kh_shamir_combine(two, 2, 2, got), KH_OK);
	assert_memory_not_equal(got, k, L);
	struct kh_shamir_share all[3] = {sh[2], opened.s, sh[1]};
	assert_int_equal(kh_shamir_combine(all, 3, opened.t, got), KH_OK);
	assert_memory_equal(got, k, L);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_prestate(test_round_trip, (void *)&TN_2_2),
	    cmocka_unit_test_prestate(test_round_trip, (void *)&TN_2_3),
	    cmocka_unit_test_prestate(test_round_trip, (void *)&TN_3_5),
	    cmocka_unit_test_prestate(test_round_trip, (void *)&TN_16_16),
	    cmocka_unit_test(test_combine_refuses),
	    cmocka_unit_test(test_split_refuses),
	    cmocka_unit_test(test_fixed_vector),
	    cmocka_unit_test(test_rejection_sampling),
	    cmocka_unit_test(test_record_codec),
	    cmocka_unit_test(test_seal_open),
	    cmocka_unit_test(test_device_and_escrow),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
