/*
 * Unit tests for kh_headend_cat_merge (src/center/headend/cat.c): another CA system's descriptor
 * and others kept in order, ours replaced to name the new EMM PID, the version moved on (and
 * wrapping at 32); a CAT of our own when the input has none; a damaged or multi-section CAT and
 * bad PIDs refused.
 */
#include <string.h>

#include "keyhole/headend.h"
#include "keyhole/ts.h"
#include "testutil.h"

static size_t input_cat(uint8_t version, uint8_t *out, size_t cap)
{
	uint8_t loop[64];
	struct kh_wr w;
	struct kh_ts_cat cat = {.version = version, .current = 1};
	size_t len = 0;

	kh_wr_init(&w, loop, sizeof loop);
	assert_int_equal(kh_ts_ca_desc_put(&w, 0x0100, 0x0200, (const uint8_t *)"\x01\x02", 2), KH_OK);
	assert_int_equal(kh_wr_u8(&w, 0x5F), KH_OK); /* a private descriptor */
	assert_int_equal(kh_wr_u8(&w, 1), KH_OK);
	assert_int_equal(kh_wr_u8(&w, 0xAA), KH_OK);
	assert_int_equal(kh_ts_ca_desc_put(&w, 0x4B48, 0x0300, NULL, 0), KH_OK);
	cat.desc = loop;
	cat.desc_len = w.len;
	assert_int_equal(kh_ts_cat_build(&cat, out, cap, &len), KH_OK);
	return len;
}

static void test_merge(void **state)
{
	uint8_t in[KH_TS_PSI_MAX], out[KH_TS_PSI_MAX];
	size_t n = input_cat(4, in, sizeof in), len = 0;
	struct kh_ts_cat cat;
	struct kh_ts_ca_desc ca;

	(void)state;
	assert_int_equal(kh_headend_cat_merge(in, n, 0x4B48, 0x0123, out, sizeof out, &len), KH_OK);
	assert_int_equal(kh_ts_cat_parse(out, len, &cat), KH_OK);
	assert_int_equal(cat.version, 5);
	assert_int_equal(kh_ts_ca_desc_find(cat.desc, cat.desc_len, 0x4B48, &ca), KH_OK);
	assert_int_equal(ca.ca_pid, 0x0123);
	assert_int_equal(kh_ts_ca_desc_find(cat.desc, cat.desc_len, 0x0100, &ca), KH_OK);
	assert_int_equal(ca.ca_pid, 0x0200);
	assert_int_equal(ca.priv_len, 2);
	/* others first in their order, then ours alone (the old one is gone): 8 + 3 + 6 bytes */
	assert_int_equal(cat.desc_len, 17);
	assert_int_equal(cat.desc[8], 0x5F);
	assert_int_equal(cat.desc[11], KH_TS_DESC_CA);
	/* the version wraps */
	n = input_cat(31, in, sizeof in);
	assert_int_equal(kh_headend_cat_merge(in, n, 0x4B48, 0x0123, out, sizeof out, &len), KH_OK);
	assert_int_equal(kh_ts_cat_parse(out, len, &cat), KH_OK);
	assert_int_equal(cat.version, 0);
}

static void test_own_and_refusals(void **state)
{
	uint8_t in[KH_TS_PSI_MAX], out[KH_TS_PSI_MAX];
	size_t n = input_cat(4, in, sizeof in), len = 0;
	struct kh_ts_cat cat;
	struct kh_ts_ca_desc ca;

	(void)state;
	assert_int_equal(kh_headend_cat_merge(NULL, 0, 0x4B48, 0x0101, out, sizeof out, &len), KH_OK);
	assert_int_equal(kh_ts_cat_parse(out, len, &cat), KH_OK);
	assert_int_equal(cat.version, 0);
	assert_int_equal(cat.desc_len, 6);
	assert_int_equal(kh_ts_ca_desc_find(cat.desc, cat.desc_len, 0x4B48, &ca), KH_OK);
	assert_int_equal(ca.ca_pid, 0x0101);
	in[n - 1] ^= 1; /* CRC */
	assert_int_equal(kh_headend_cat_merge(in, n, 0x4B48, 0x0101, out, sizeof out, &len), KH_ERR_FORMAT);
	assert_int_equal(len, 0);
	assert_int_equal(kh_headend_cat_merge(NULL, 0, 0x4B48, 0x0005, out, sizeof out, &len), KH_ERR_INVAL);
	assert_int_equal(kh_headend_cat_merge(NULL, 0, 0x4B48, 0x1FFF, out, sizeof out, &len), KH_ERR_INVAL);
	assert_int_equal(kh_headend_cat_merge(NULL, 0, 0x4B48, 0x0101, out, 10, &len), KH_ERR_BUF);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_merge),
		cmocka_unit_test(test_own_and_refusals),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
