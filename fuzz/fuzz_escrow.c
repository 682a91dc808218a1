/*
 * libFuzzer harness: the escrow protocol's records (include/keyhole/escrow.h,
 * docs/protocols/escrow.md), which the escrow reads from buyers' hosts and sellers, and the
 * buyer's device and host read from the escrow. The first byte chooses the reader: listing,
 * request, answer, notice, content header, offer. A record that does not parse leaves the output
 * untouched; one that parses has every field within its limits and every pointer inside the input,
 * and written again by the record's own writer (signed with a fixed key) gives the input's bytes up
 * to its signature (the header: up to its commitment, which depends on K; the offer: all of it).
 * With the fixed key the signature of what was written verifies, and a record signed by nobody
 * holding that key never does.
 */
#include <string.h>

#include "keyhole/escrow.h"

#include "fuzz_common.h"

static uint8_t sk[32], pk[32];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static struct kh_rng_det det;

	(void)argc;
	(void)argv;
	kh_rng_det_init(&det, (const uint8_t *)fz_seed, sizeof fz_seed - 1);
	kh_rng_set(kh_rng_det_fn, &det);
	CHECK(kh_ed25519_keygen(sk, pk) == KH_OK);
	return 0;
}

static int inside(const uint8_t *p, size_t n, const uint8_t *d, size_t size)
{
	return p >= d && n <= size && p + n <= d + size;
}

static void untouched(const void *o, size_t n)
{
	for (size_t i = 0; i < n; i++)
		CHECK(((const uint8_t *)o)[i] == 0xA5);
}

/* out (wlen bytes, signed with sk) equals d up to d's signature; then it verifies with pk. */
static void same_body(const uint8_t *out, size_t wlen, const uint8_t *d, size_t size)
{
	CHECK(wlen == size);
	CHECK(memcmp(out, d, size - KH_ED25519_SIG_LEN) == 0);
}

static void listing(const uint8_t *d, size_t size)
{
	static struct kh_escrow_listing l, l2;
	static uint8_t out[KH_ESCROW_LISTING_MAX];
	struct kh_wr w;

	memset(&l, 0xA5, sizeof l);
	if (kh_escrow_listing_parse(d, size, NULL, &l) != KH_OK) {
		untouched(&l, sizeof l);
		return;
	}
	CHECK(l.price >= 1 && l.price <= KH_ESCROW_PRICE_MAX && l.deadline >= 1);
	CHECK(kh_escrow_currency_ok(l.currency) && kh_escrow_content_ok(l.content));
	CHECK(l.keylen >= 1 && l.keylen <= KH_RSA_SPKI_MAX && inside(l.key, l.keylen, d, size));
	CHECK(kh_escrow_listing_parse(d, size, pk, &l2) == KH_ERR_AUTH);
	kh_wr_init(&w, out, sizeof out);
	CHECK(kh_escrow_listing_sign(&l, sk, &w) == KH_OK);
	same_body(out, w.len, d, size);
	CHECK(kh_escrow_listing_parse(out, w.len, pk, &l2) == KH_OK);
}

static void request(const uint8_t *d, size_t size)
{
	static struct kh_escrow_request q, q2;
	static uint8_t out[KH_ESCROW_REQUEST_MAX];
	struct kh_wr w;

	memset(&q, 0xA5, sizeof q);
	if (kh_escrow_request_parse(d, size, NULL, &q) != KH_OK) {
		untouched(&q, sizeof q);
		return;
	}
	CHECK(q.price >= 1 && q.price <= KH_ESCROW_PRICE_MAX && kh_escrow_currency_ok(q.currency));
	CHECK(q.nlen >= KH_RSA_MIN_LEN && q.nlen <= KH_RSA_MAX_LEN && inside(q.cprime, q.nlen, d, size));
	CHECK(kh_escrow_request_parse(d, size, pk, &q2) == KH_ERR_AUTH);
	kh_wr_init(&w, out, sizeof out);
	CHECK(kh_escrow_request_sign(&q, sk, &w) == KH_OK);
	same_body(out, w.len, d, size);
	CHECK(kh_escrow_request_parse(out, w.len, pk, &q2) == KH_OK);
}

static void answer(const uint8_t *d, size_t size)
{
	static struct kh_escrow_answer a, a2;
	static uint8_t out[KH_ESCROW_ANSWER_MAX];
	struct kh_wr w;

	memset(&a, 0xA5, sizeof a);
	if (kh_escrow_answer_parse(d, size, NULL, &a) != KH_OK) {
		untouched(&a, sizeof a);
		return;
	}
	CHECK(a.nlen >= KH_RSA_MIN_LEN && a.nlen <= KH_RSA_MAX_LEN && inside(a.z, a.nlen, d, size));
	CHECK(kh_escrow_answer_parse(d, size, pk, &a2) == KH_ERR_AUTH);
	kh_wr_init(&w, out, sizeof out);
	CHECK(kh_escrow_answer_sign(&a, sk, &w) == KH_OK);
	same_body(out, w.len, d, size);
	CHECK(kh_escrow_answer_parse(out, w.len, pk, &a2) == KH_OK);
}

static void notice(const uint8_t *d, size_t size)
{
	static struct kh_escrow_notice t, t2;
	static uint8_t out[KH_ESCROW_NOTICE_LEN];
	struct kh_wr w;

	memset(&t, 0xA5, sizeof t);
	if (kh_escrow_notice_parse(d, size, NULL, &t) != KH_OK) {
		untouched(&t, sizeof t);
		return;
	}
	CHECK(size == KH_ESCROW_NOTICE_LEN);
	CHECK((t.outcome == KH_ESCROW_DELIVERED && t.reason == KH_ESCROW_R_NONE) ||
	      (t.outcome == KH_ESCROW_FAILED && t.reason >= KH_ESCROW_R_UNBLIND && t.reason <= KH_ESCROW_R_SHARES));
	CHECK(kh_escrow_notice_parse(d, size, pk, &t2) == KH_ERR_AUTH);
	kh_wr_init(&w, out, sizeof out);
	CHECK(kh_escrow_notice_sign(&t, sk, &w) == KH_OK);
	same_body(out, w.len, d, size);
	CHECK(kh_escrow_notice_parse(out, w.len, pk, &t2) == KH_OK);
}

static void header(const uint8_t *d, size_t size)
{
	static struct kh_escrow_header h;
	static uint8_t out[KH_ESCROW_HEADER_MAX];
	uint8_t k[KH_ESCROW_KEY_LEN] = {1};
	struct kh_wr w;

	memset(&h, 0xA5, sizeof h);
	if (kh_escrow_header_parse(d, size, &h) != KH_OK) {
		untouched(&h, sizeof h);
		return;
	}
	CHECK(h.len <= size && h.len <= KH_ESCROW_HEADER_MAX && kh_escrow_content_ok(h.content));
	CHECK(h.chunk >= 1 && h.chunk <= KH_ESCROW_CHUNK_MAX && h.length >= 1);
	CHECK(h.chunks == (h.length - 1) / h.chunk + 1 && h.chunks <= UINT32_MAX);
	CHECK(kh_escrow_chunk_len(&h, h.chunks - 1) >= 1 && kh_escrow_chunk_len(&h, h.chunks) == 0);
	kh_wr_init(&w, out, sizeof out);
	CHECK(kh_escrow_header_make(h.content, h.chunk, h.length, k, &w) == KH_OK);
	CHECK(w.len == h.len && memcmp(out, d, h.len - KH_SHA256_LEN) == 0);
}

static void offer(const uint8_t *d, size_t size)
{
	static uint8_t out[KH_ESCROW_OFFER_MAX];
	const uint8_t *l = NULL, *c = NULL;
	size_t ll = 0, cl = 0;
	struct kh_wr w;

	if (kh_escrow_offer_parse(d, size, &l, &ll, &c, &cl) != KH_OK)
		return;
	CHECK(inside(l, ll, d, size) && inside(c, cl, d, size) && cl >= KH_RSA_MIN_LEN && cl <= KH_RSA_MAX_LEN);
	kh_wr_init(&w, out, sizeof out);
	CHECK(kh_escrow_offer_make(l, ll, c, cl, &w) == KH_OK);
	CHECK(w.len == size && memcmp(out, d, size) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static void (*const readers[])(const uint8_t *, size_t) = {listing, request, answer, notice, header, offer};

	if (size < 1)
		return 0;
	readers[data[0] % (sizeof readers / sizeof readers[0])](data + 1, size - 1);
	return 0;
}
