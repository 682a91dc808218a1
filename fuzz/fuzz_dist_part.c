/*
 * libFuzzer harness: the distribution client's state file BASE.part (include/keyhole/distclient.h),
 * the one file of outside bytes the client reads back to send a charge. On success every field
 * is within its limits (an http(s) URL the client would use, a delivery of 1 to 2^63-1, a token of
 * 1 to KH_DIST_TOKEN_MAX bytes) and writing it again gives the input's exact bytes (one text per
 * state); on failure the output is untouched.
 */
#include <string.h>

#include "keyhole/distclient.h"
#include "keyhole/http.h"

#include "fuzz_common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct kh_dist_part p;
	static char again[KH_DIST_PART_MAX];
	size_t n = 0;

	memset(&p, 0xA5, sizeof p);
	if (kh_dist_part_parse(data, size, &p) != KH_OK) {
		for (size_t i = 0; i < sizeof p; i++)
			CHECK(((const uint8_t *)&p)[i] == 0xA5);
		return 0;
	}
	CHECK(memchr(p.url, 0, sizeof p.url) != NULL && kh_http_url_check(p.url, 0) == KH_OK);
	CHECK(p.delivery >= 1 && p.delivery <= (uint64_t)INT64_MAX);
	CHECK(p.token_len >= 1 && p.token_len <= KH_DIST_TOKEN_MAX);
	CHECK(kh_dist_part_format(&p, again, sizeof again, &n) == KH_OK);
	CHECK(n == size && memcmp(again, data, size) == 0);
	return 0;
}
