/*
 * The distribution client's state file BASE.part (include/keyhole/distclient.h): what a purchase
 * whose charge may have happened keeps, read back exactly as written, and every other text
 * refused without touching the output (a damaged or foreign state file must never send a charge
 * for someone else's delivery or to another server). And the server URLs a client accepts.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyhole/distclient.h"
#include "testutil.h"

static struct kh_dist_part sample(void)
{
	struct kh_dist_part p;

	memset(&p, 0, sizeof p);
	strcpy(p.url, "https://shop.example:8443");
	p.delivery = 42;
	for (size_t i = 0; i < sizeof p.package_hash; i++)
		p.package_hash[i] = (uint8_t)(i * 9 + 1);
	p.token_len = 300;
	for (size_t i = 0; i < p.token_len; i++)
		p.token[i] = (uint8_t)(255 - i);
	return p;
}

static void test_round_trip(void **state)
{
	struct kh_dist_part p = sample(), q;
	char text[KH_DIST_PART_MAX], again[KH_DIST_PART_MAX];
	size_t n = 0, m = 0;

	(void)state;
	assert_int_equal(kh_dist_part_format(&p, text, sizeof text, &n), KH_OK);
	assert_true(n > 0 && n < sizeof text);
	assert_int_equal(kh_dist_part_parse((const uint8_t *)text, n, &q), KH_OK);
	assert_string_equal(q.url, p.url);
	assert_true(q.delivery == p.delivery);
	assert_memory_equal(q.package_hash, p.package_hash, sizeof p.package_hash);
	assert_int_equal(q.token_len, p.token_len);
	assert_memory_equal(q.token, p.token, p.token_len);
	/* one text per state: written again, the same bytes */
	assert_int_equal(kh_dist_part_format(&q, again, sizeof again, &m), KH_OK);
	assert_int_equal(m, n);
	assert_memory_equal(again, text, n);
	/* the largest token and delivery fit */
	p.token_len = KH_DIST_TOKEN_MAX;
	p.delivery = INT64_MAX;
	assert_int_equal(kh_dist_part_format(&p, text, sizeof text, &n), KH_OK);
	assert_int_equal(kh_dist_part_parse((const uint8_t *)text, n, &q), KH_OK);
	assert_true(q.delivery == (uint64_t)INT64_MAX);
	/* too small a buffer: refused, nothing half written is claimed */
	assert_int_equal(kh_dist_part_format(&p, text, 40, &m), KH_ERR_BUF);
}

static void test_format_refuses(void **state)
{
	struct kh_dist_part p;
	char text[KH_DIST_PART_MAX];
	size_t n;

	(void)state;
	p = sample(), p.delivery = 0;
	assert_int_equal(kh_dist_part_format(&p, text, sizeof text, &n), KH_ERR_INVAL);
	p = sample(), p.token_len = 0;
	assert_int_equal(kh_dist_part_format(&p, text, sizeof text, &n), KH_ERR_INVAL);
	p = sample(), p.token_len = KH_DIST_TOKEN_MAX + 1;
	assert_int_equal(kh_dist_part_format(&p, text, sizeof text, &n), KH_ERR_INVAL);
	p = sample(), strcpy(p.url, "https://a\ndelivery 7");
	assert_int_equal(kh_dist_part_format(&p, text, sizeof text, &n), KH_ERR_INVAL);
}

/* text with the first occurrence of from replaced by to, parsed: refused and q untouched. */
static void refused(const char *text, const char *from, const char *to)
{
	char buf[2 * KH_DIST_PART_MAX];
	const char *at = strstr(text, from);
	struct kh_dist_part q;

	assert_non_null(at);
	snprintf(buf, sizeof buf, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
	memset(&q, 0x5A, sizeof q);
	if (kh_dist_part_parse((const uint8_t *)buf, strlen(buf), &q) != KH_ERR_FORMAT)
		fail_msg("accepted a state file with '%s' replaced by '%s'", from, to);
	for (size_t i = 0; i < sizeof q; i++)
		if (((uint8_t *)&q)[i] != 0x5A)
			fail_msg("a refused state file wrote the output ('%s' -> '%s')", from, to);
}

static void test_parse_refuses(void **state)
{
	struct kh_dist_part p = sample();
	char text[KH_DIST_PART_MAX], big[KH_DIST_PART_MAX + 2];
	size_t n;

	(void)state;
	p.token_len = 4;
	assert_int_equal(kh_dist_part_format(&p, text, sizeof text, &n), KH_OK);
	text[n] = 0;
	refused(text, "keyhole dist part 1", "keyhole dist part 2");
	refused(text, "keyhole dist part 1\n", "");
	/* another server's scheme, or plain http to a remote host */
	refused(text, "https://shop.example:8443", "ftp://shop.example");
	refused(text, "https://shop.example:8443", "http://shop.example");
	refused(text, "https://shop.example:8443", "");
	/* the delivery: decimal, no leading zero, not 0, not beyond 2^63-1 */
	refused(text, "delivery 42", "delivery 042");
	refused(text, "delivery 42", "delivery 0");
	refused(text, "delivery 42", "delivery -42");
	refused(text, "delivery 42", "delivery 0x2A");
	refused(text, "delivery 42", "delivery 9223372036854775808");
	refused(text, "delivery 42", "delivery 99999999999999999999");
	/* the hash: 64 lowercase hex digits */
	refused(text, "package 01", "package 0");
	refused(text, "package 01", "package 01ff");
	refused(text, "package 01", "package 0A");
	refused(text, "package 01", "package 0g");
	/* the token: base64url, not empty, not padded */
	refused(text, "token ", "token =");
	refused(text, "\ntoken ", "\ntoken\n");
	/* lines: in order, once each, nothing else, each ending in a newline, no carriage return */
	refused(text, "delivery 42\n", "");
	refused(text, "delivery 42\n", "delivery 42\ndelivery 42\n");
	refused(text, "delivery 42\n", "delivery 42\r\n");
	refused(text, "delivery 42\n", "delivery  42\n");
	refused(text, "delivery", "Delivery");
	refused(text, "server", "delivery 42\nserver");
	refused(text, "token", "extra 1\ntoken");
	{
		char tail[KH_DIST_PART_MAX + 8];
		snprintf(tail, sizeof tail, "%s", text);
		tail[n - 1] = 0; /* no final newline */
		struct kh_dist_part q;
		assert_int_equal(kh_dist_part_parse((const uint8_t *)tail, n - 1, &q), KH_ERR_FORMAT);
		snprintf(tail, sizeof tail, "%sx\n", text);
		assert_int_equal(kh_dist_part_parse((const uint8_t *)tail, strlen(tail), &q), KH_ERR_FORMAT);
		/* a NUL inside a line */
		memcpy(tail, text, n);
		tail[strstr(text, "delivery") - text + 9] = 0;
		assert_int_equal(kh_dist_part_parse((const uint8_t *)tail, n, &q), KH_ERR_FORMAT);
	}
	/* beyond the largest state file */
	memset(big, 'a', sizeof big);
	memcpy(big, text, n);
	{
		struct kh_dist_part q;
		assert_int_equal(kh_dist_part_parse((const uint8_t *)big, sizeof big, &q), KH_ERR_FORMAT);
		assert_int_equal(kh_dist_part_parse(NULL, 0, &q), KH_ERR_FORMAT);
	}
}

static void test_client_urls(void **state)
{
	static const char *const bad[] = {"ftp://127.0.0.1:1", "http://example.com", "http://192.0.2.1:80",
					  "https://", "127.0.0.1:8480", "http://user@127.0.0.1:1",
					  "http://127.0.0.1:1/?a=b"};
	struct kh_dist_client *c = NULL;

	(void)state;
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		assert_int_equal(kh_dist_client_new(bad[i], NULL, &c), KH_ERR_INVAL);
		assert_null(c);
	}
	assert_int_equal(kh_dist_client_new("http://127.0.0.1:1/", NULL, &c), KH_OK);
	assert_non_null(c);
	assert_string_equal(kh_dist_client_error(c), "");
	kh_dist_client_free(c);
	kh_dist_client_free(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_format_refuses),
		cmocka_unit_test(test_parse_refuses),
		cmocka_unit_test(test_client_urls),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
