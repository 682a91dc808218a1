/*
 * Unit tests for the byte codecs of src/base: the error registry (every code has a message, a
 * JSON code and a status word, and the status words map back one-to-one), the bounded reader and
 * writer (sticky errors, no overrun), the TLV codec, and ISO 7816-4 APDU parsing and building.
 */
#include <string.h>

#include "keyhole/apdu.h"
#include "keyhole/buf.h"
#include "keyhole/err.h"
#include "testutil.h"

static void test_err_registry(void **state)
{
	(void)state;
	assert_int_equal(kh_err_to_sw(KH_OK), 0x9000);
	assert_int_equal(kh_err_from_sw(0x9000), KH_OK);
	for (int i = 1; i <= KH__ERR_COUNT; i++) {
		kh_err e = -i;
		assert_string_not_equal(kh_strerror(e), "unknown error");
		assert_true(strlen(kh_err_json(e)) > 0);
		assert_true(kh_err_http(e) >= 400 && kh_err_http(e) <= 599);
		/* A status word names exactly one code: what a module answers, a host decodes. */
		assert_int_equal(kh_err_from_sw(kh_err_to_sw(e)), e);
		assert_int_not_equal(kh_err_to_sw(e), 0x9000);
		assert_int_not_equal(kh_err_to_sw(e), KH_SW_RELAY);
		for (int j = 1; j < i; j++) {
			assert_int_not_equal(kh_err_to_sw(-j), kh_err_to_sw(e));
			assert_string_not_equal(kh_err_json(-j), kh_err_json(e));
		}
	}
	assert_string_equal(kh_strerror(-KH__ERR_COUNT - 1), "unknown error");
	assert_string_equal(kh_strerror(5), "unknown error");
	assert_int_equal(kh_err_from_sw(0x6123), KH_ERR_PEER_ERROR);
}

static void test_reader(void **state)
{
	static const uint8_t in[] = {1, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b,
				     0x0c, 0x0d, 0x0e, 0x0f};
	struct kh_rd r;
	uint8_t a;
	uint16_t b;
	uint32_t c;
	uint64_t d;
	uint8_t two[2];

	(void)state;
	kh_rd_init(&r, in, sizeof in);
	assert_int_equal(kh_rd_u8(&r, &a), KH_OK);
	assert_int_equal(a, 1);
	assert_int_equal(kh_rd_u16(&r, &b), KH_OK);
	assert_int_equal(b, 0x0203);
	assert_int_equal(kh_rd_u32(&r, &c), KH_OK);
	assert_int_equal(c, 0x04050607);
	assert_int_equal(kh_rd_end(&r), KH_ERR_TRAILING);
	/* 8 bytes left: a u64 fits exactly */
	assert_int_equal(kh_rd_u64(&r, &d), KH_OK);
	assert_true(d == 0x08090a0b0c0d0e0fULL);
	assert_int_equal(kh_rd_end(&r), KH_OK);
	/* past the end: the error sticks and nothing moves */
	assert_int_equal(kh_rd_u8(&r, &a), KH_ERR_TRUNCATED);
	assert_int_equal(kh_rd_end(&r), KH_ERR_TRUNCATED);

	kh_rd_init(&r, in, 1);
	two[0] = two[1] = 0xee;
	assert_int_equal(kh_rd_copy(&r, two, 2), KH_ERR_TRUNCATED);
	assert_int_equal(two[0], 0xee); /* nothing copied on failure */
	/* sticky even for a read that would now fit */
	assert_int_equal(kh_rd_u8(&r, &a), KH_ERR_TRUNCATED);
}

static void test_writer(void **state)
{
	uint8_t buf[8];
	struct kh_wr w;
	uint8_t *p;

	(void)state;
	memset(buf, 0xaa, sizeof buf);
	kh_wr_init(&w, buf, 6);
	assert_int_equal(kh_wr_u32(&w, 0x01020304), KH_OK);
	assert_int_equal(kh_wr_u32(&w, 0x05060708), KH_ERR_BUF);
	assert_int_equal(w.len, 4);
	assert_int_equal(buf[4], 0xaa); /* no partial write past capacity */
	assert_int_equal(kh_wr_u8(&w, 9), KH_ERR_BUF); /* sticky */
	assert_int_equal(kh_wr_reserve(&w, 1, &p), KH_ERR_BUF);
	assert_null(p);
	kh_wr_init(&w, buf, sizeof buf);
	assert_int_equal(kh_wr_u64(&w, 0x1122334455667788ULL), KH_OK);
	assert_int_equal(buf[0], 0x11);
	assert_int_equal(buf[7], 0x88);
}

static void test_tlv(void **state)
{
	uint8_t buf[64], big[70000];
	struct kh_wr w;
	struct kh_rd r;
	struct kh_tlv t;
	uint32_t v32;
	uint64_t v64;
	uint8_t v8;

	(void)state;
	kh_wr_init(&w, buf, sizeof buf);
	assert_int_equal(kh_tlv_put_u8(&w, 1, 7), KH_OK);
	assert_int_equal(kh_tlv_put_u32(&w, 2, 0xdeadbeef), KH_OK);
	assert_int_equal(kh_tlv_put_u64(&w, 3, 42), KH_OK);
	assert_int_equal(kh_tlv_put(&w, 4, NULL, 0), KH_OK);
	assert_int_equal(w.len, 4 + 7 + 11 + 3);
	assert_memory_equal(buf, ((const uint8_t[]){1, 0, 1, 7, 2, 0, 4, 0xde, 0xad, 0xbe, 0xef}), 11);

	kh_rd_init(&r, buf, w.len);
	assert_int_equal(kh_tlv_next(&r, &t), 1);
	assert_int_equal(kh_tlv_u8(&t, &v8), KH_OK);
	assert_int_equal(v8, 7);
	assert_int_equal(kh_tlv_u32(&t, &v32), KH_ERR_FORMAT); /* wrong width refused */
	assert_int_equal(kh_tlv_next(&r, &t), 1);
	assert_int_equal(kh_tlv_u32(&t, &v32), KH_OK);
	assert_true(v32 == 0xdeadbeef);
	assert_int_equal(kh_tlv_next(&r, &t), 1);
	assert_int_equal(kh_tlv_u64(&t, &v64), KH_OK);
	assert_true(v64 == 42);
	assert_int_equal(kh_tlv_next(&r, &t), 1);
	assert_int_equal(t.tag, 4);
	assert_int_equal(t.len, 0);
	assert_int_equal(kh_tlv_next(&r, &t), 0);

	/* a value that overruns the input, at every cut */
	for (size_t cut = 1; cut < 11; cut++) {
		int k;
		kh_rd_init(&r, buf + 4, cut);
		k = kh_tlv_next(&r, &t);
		assert_int_equal(k, cut >= 7 ? 1 : KH_ERR_TRUNCATED);
	}
	/* values longer than a u16 length are refused at write time */
	kh_wr_init(&w, big, sizeof big);
	assert_int_equal(kh_tlv_put(&w, 1, big, 65536), KH_ERR_TOO_LARGE);
	assert_int_equal(w.len, 0);
}

static void parse_ok(const uint8_t *b, size_t n, size_t lc, size_t le, int has_le)
{
	struct kh_apdu a;
	assert_int_equal(kh_apdu_parse(b, n, &a), KH_OK);
	assert_int_equal(a.lc, lc);
	assert_int_equal(a.le, le);
	assert_int_equal(a.has_le, has_le);
}

static void test_apdu_cases(void **state)
{
	uint8_t b[KH_APDU_MAX_CMD + 8];
	struct kh_apdu a;
	struct kh_wr w;

	(void)state;
	memset(b, 0, sizeof b);
	b[0] = 0x80;
	b[1] = 0x10;
	parse_ok(b, 4, 0, 0, 0); /* case 1 */
	b[4] = 0;
	parse_ok(b, 5, 0, 256, 1); /* case 2S, Le 00 = 256 */
	b[4] = 3;
	parse_ok(b, 8, 3, 0, 0);    /* case 3S */
	parse_ok(b, 9, 3, 256, 1);  /* case 4S */
	assert_int_equal(kh_apdu_parse(b, 7, &a), KH_ERR_APDU_LEN);  /* Lc says 3, 2 present */
	assert_int_equal(kh_apdu_parse(b, 10, &a), KH_ERR_APDU_LEN); /* one too many */
	b[4] = 0;
	b[5] = 0;
	b[6] = 0;
	parse_ok(b, 7, 0, 65536, 1); /* case 2E */
	assert_int_equal(kh_apdu_parse(b, 6, &a), KH_ERR_APDU_LEN);
	b[5] = 0x01;
	b[6] = 0x2c; /* 300 */
	parse_ok(b, 7 + 300, 300, 0, 0);     /* case 3E */
	parse_ok(b, 9 + 300, 300, 65536, 1); /* case 4E */
	assert_int_equal(kh_apdu_parse(b, 8 + 300, &a), KH_ERR_APDU_LEN);
	b[5] = 0;
	b[6] = 0;
	assert_int_equal(kh_apdu_parse(b, 9, &a), KH_ERR_APDU_LEN); /* extended Lc of 0 */
	assert_int_equal(kh_apdu_parse(b, 3, &a), KH_ERR_APDU_LEN);
	assert_int_equal(kh_apdu_parse(NULL, 0, &a), KH_ERR_APDU_LEN);
	b[5] = (KH_APDU_MAX_DATA + 1) >> 8;
	b[6] = (KH_APDU_MAX_DATA + 1) & 0xff;
	assert_int_equal(kh_apdu_parse(b, 7 + KH_APDU_MAX_DATA + 1, &a), KH_ERR_TOO_LARGE);

	/* build picks the short form when it can, extended otherwise, and parses back */
	kh_wr_init(&w, b, sizeof b);
	assert_int_equal(kh_apdu_build(&w, 0x80, 0x20, 1, 2, (const uint8_t *)"abc", 3, 256), KH_OK);
	assert_int_equal(w.len, 9);
	assert_int_equal(kh_apdu_parse(b, w.len, &a), KH_OK);
	assert_int_equal(a.ins, 0x20);
	assert_int_equal(a.p1, 1);
	assert_int_equal(a.p2, 2);
	assert_memory_equal(a.data, "abc", 3);
	kh_wr_init(&w, b, sizeof b);
	{
		static uint8_t data[1000];
		assert_int_equal(kh_apdu_build(&w, 0x80, 0x20, 0, 0, data, sizeof data, 0), KH_OK);
		assert_int_equal(w.len, 7 + sizeof data);
		assert_int_equal(kh_apdu_parse(b, w.len, &a), KH_OK);
		assert_int_equal(a.lc, sizeof data);
	}
}

static void test_apdu_resp(void **state)
{
	const uint8_t r[] = {1, 2, 0x69, 0x82};
	const uint8_t *d;
	size_t n;
	uint16_t sw;

	(void)state;
	assert_int_equal(kh_apdu_resp(r, sizeof r, &d, &n, &sw), KH_OK);
	assert_int_equal(n, 2);
	assert_int_equal(sw, 0x6982);
	assert_int_equal(kh_err_from_sw(sw), KH_ERR_AUTH);
	assert_int_equal(kh_apdu_resp(r, 1, &d, &n, &sw), KH_ERR_APDU_LEN);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_err_registry), cmocka_unit_test(test_reader),
		cmocka_unit_test(test_writer),       cmocka_unit_test(test_tlv),
		cmocka_unit_test(test_apdu_cases),   cmocka_unit_test(test_apdu_resp),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
