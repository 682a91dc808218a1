/*
 * libFuzzer harness: command and response APDUs (src/base/apdu.c), the first parser every byte
 * from a host meets. The input is one command APDU. When kh_apdu_parse accepts it: Lc is within
 * KH_APDU_MAX_DATA, the data lies inside the input, Le is present exactly when has_le says so,
 * and kh_apdu_build of the parsed fields parses back to the same fields (byte-identical when the
 * input used the form the builder picks: short unless Lc > 255 or Le > 256). The same input is
 * also split as a response APDU.
 */
#include <stdio.h>
#include <string.h>

#include "keyhole/apdu.h"
#include "keyhole/buf.h"
#include "keyhole/crypto.h"

#include "fuzz_common.h"

static struct kh_rng_det rng;
static uint8_t rebuilt[KH_APDU_MAX_CMD];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static const char seed[] = "keyhole fuzz rng v1";

	(void)argc, (void)argv;
	kh_rng_det_init(&rng, (const uint8_t *)seed, sizeof seed - 1);
	kh_rng_set(kh_rng_det_fn, &rng);
	return 0;
}

static void check_fields(const struct kh_apdu *a, const struct kh_apdu *b)
{
	CHECK(a->cla == b->cla && a->ins == b->ins && a->p1 == b->p1 && a->p2 == b->p2);
	CHECK(a->lc == b->lc);
	CHECK(a->lc == 0 || memcmp(a->data, b->data, a->lc) == 0);
	CHECK(a->has_le == b->has_le && a->le == b->le);
}

/* The form the builder chooses for these fields: short unless they do not fit. */
static int is_canonical(const uint8_t *data, size_t size, const struct kh_apdu *a)
{
	int ext = size > 5 && data[4] == 0;
	return ext == (a->lc > 255 || a->le > 256);
}

static void check_resp(const uint8_t *data, size_t size)
{
	const uint8_t *d = NULL;
	size_t dlen = 0;
	uint16_t sw = 0;
	kh_err r = kh_apdu_resp(data, size, &d, &dlen, &sw);

	if (size < 2) {
		CHECK(r == KH_ERR_APDU_LEN);
		return;
	}
	CHECK(r == KH_OK);
	CHECK(d == data && dlen == size - 2);
	CHECK(sw == (uint16_t)(data[size - 2] << 8 | data[size - 1]));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct kh_apdu a, b;
	struct kh_wr w;
	kh_err r;

	check_resp(data, size);

	memset(&a, 0x5a, sizeof a);
	r = kh_apdu_parse(data, size, &a);
	if (r != KH_OK) {
		CHECK(r == KH_ERR_APDU_LEN || r == KH_ERR_TOO_LARGE);
		return 0;
	}
	CHECK(size >= 4);
	CHECK(a.cla == data[0] && a.ins == data[1] && a.p1 == data[2] && a.p2 == data[3]);
	CHECK(a.lc <= KH_APDU_MAX_DATA);
	if (a.lc) {
		CHECK(a.data != NULL);
		CHECK(a.data >= data + 5 && a.data + a.lc <= data + size);
	}
	if (a.has_le)
		CHECK(a.le >= 1 && a.le <= 65536);
	else
		CHECK(a.le == 0);
	/* Header, the Lc field and data, the Le field: nothing more, nothing less. */
	CHECK(size >= 4 + a.lc);

	/* Round trip through the builder. */
	kh_wr_init(&w, rebuilt, sizeof rebuilt);
	CHECK(kh_apdu_build(&w, a.cla, a.ins, a.p1, a.p2, a.data, a.lc, a.has_le ? a.le : 0) == KH_OK);
	CHECK(w.len <= sizeof rebuilt);
	memset(&b, 0xa5, sizeof b);
	CHECK(kh_apdu_parse(rebuilt, w.len, &b) == KH_OK);
	check_fields(&a, &b);
	if (is_canonical(data, size, &a))
		CHECK(w.len == size && memcmp(rebuilt, data, size) == 0);
	else
		CHECK(w.len < size);

	/* A writer one byte short refuses, and never writes past its capacity. */
	if (w.len > 0) {
		size_t cap = w.len - 1;
		kh_wr_init(&w, rebuilt, cap);
		CHECK(kh_apdu_build(&w, a.cla, a.ins, a.p1, a.p2, a.data, a.lc, a.has_le ? a.le : 0) == KH_ERR_BUF);
		CHECK(w.err == KH_ERR_BUF && w.len <= cap);
	}
	return 0;
}
