/*
 * libFuzzer harness: what the HTTP layer (src/net/) does with outside bytes before a handler
 * sees them. The first input byte picks the part, the rest is its input:
 *
 *   0  kh_b64url_decode: on success the output is 3/4 of the input length (rounded down) and
 *      encoding it again gives the input back exactly (one encoding per byte string); on
 *      failure the output buffer is untouched and the error is INVAL (or BUF when too small,
 *      and then a large enough buffer succeeds).
 *   1  a JSON request body as the server parses it (jansson, duplicate keys rejected), then
 *      kh_json_get_b64 on a few field names: a result is consistent with decoding the field's
 *      string directly, and the output is untouched on failure.
 *   2  a request path split into segments and matched against a fixed route table with
 *      kh__http_route_match: a match has the method asked for and as many segments as its
 *      pattern, literal segments equal, and the Allow list names only methods of the table.
 */
#include <string.h>

#include <jansson.h>

#include "keyhole/http.h"
#include "net/http_int.h"

#include "fuzz_common.h"

#define PATTERN 0xA5
#define OUT_MAX 4096

static struct kh__http_route routes[] = {
	{"GET", "/v1/subscribers/{id}", NULL, NULL, 0, 0, {0}, 0, NULL},
	{"POST", "/v1/subscribers", NULL, NULL, 0, 0, {0}, 0, NULL},
	{"POST", "/v1/cards/{ua}/replace", NULL, NULL, 0, 0, {0}, 0, NULL},
	{"GET", "/v1/cards/{ua}/emm", NULL, NULL, 0, 0, {0}, 0, NULL},
	{"PUT", "/v1/credit-policy", NULL, NULL, 0, 0, {0}, 0, NULL},
	{"DELETE", "/v1/subscribers/{id}/subscriptions/{product}", NULL, NULL, 0, 0, {0}, 0, NULL},
};
#define NROUTES (sizeof routes / sizeof routes[0])

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	for (size_t i = 0; i < NROUTES; i++)
		CHECK(kh__http_route_parse(&routes[i]) == KH_OK);
	return 0;
}

static int all_pattern(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != PATTERN)
			return 0;
	return 1;
}

static void b64(const uint8_t *in, size_t n)
{
	static uint8_t out[OUT_MAX];
	static char back[OUT_MAX * 2];
	size_t olen = (size_t)-1;
	kh_err r;

	if (n > OUT_MAX)
		n = OUT_MAX;
	memset(out, PATTERN, sizeof out);
	r = kh_b64url_decode((const char *)in, n, out, sizeof out, &olen);
	if (r != KH_OK) {
		CHECK(r == KH_ERR_INVAL);
		CHECK(all_pattern(out, sizeof out) && olen == (size_t)-1);
		return;
	}
	CHECK(olen == n * 3 / 4);
	CHECK(all_pattern(out + olen, sizeof out - olen));
	CHECK(kh_b64url_len(olen) == n);
	CHECK(kh_b64url_encode(out, olen, back, sizeof back) == KH_OK);
	CHECK(strlen(back) == n && memcmp(back, in, n) == 0);
	/* one byte short: BUF, nothing written */
	if (olen) {
		uint8_t small[OUT_MAX];
		size_t slen = (size_t)-1;
		memset(small, PATTERN, sizeof small);
		CHECK(kh_b64url_decode((const char *)in, n, small, olen - 1, &slen) == KH_ERR_BUF);
		CHECK(all_pattern(small, sizeof small) && slen == (size_t)-1);
	}
}

static void body(const uint8_t *in, size_t n)
{
	static const char *keys[] = {"certificate", "hello", "section", "a"};
	json_t *j = json_loadb((const char *)in, n, JSON_REJECT_DUPLICATES, NULL);

	if (!j)
		return;
	if (json_is_object(j)) {
		for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
			uint8_t out[512], direct[512];
			size_t olen = (size_t)-1, dlen = 0;
			json_t *v = json_object_get(j, keys[k]);
			memset(out, PATTERN, sizeof out);
			kh_err r = kh_json_get_b64(j, keys[k], out, sizeof out, &olen, 0);
			if (!v) {
				CHECK(r == KH_ERR_NOTFOUND);
			} else if (!json_is_string(v)) {
				CHECK(r == KH_ERR_INVAL);
			} else {
				kh_err d = kh_b64url_decode(json_string_value(v), json_string_length(v), direct,
							    sizeof direct, &dlen);
				CHECK(r == d);
				if (r == KH_OK)
					CHECK(olen == dlen && memcmp(out, direct, dlen) == 0);
			}
			if (r != KH_OK)
				CHECK(all_pattern(out, sizeof out) && olen == (size_t)-1);
		}
	}
	json_decref(j);
}

static void path(const uint8_t *in, size_t n)
{
	static const char *methods[] = {"GET", "POST", "PUT", "DELETE", "PATCH"};
	char buf[512], allow[128];
	char *seg[KH__HTTP_MAX_SEGS];
	size_t nseg = 0;
	int found = 0;

	if (n < 1 || n >= sizeof buf)
		return;
	memcpy(buf, in + 1, n - 1);
	buf[n - 1] = '\0';
	if (strlen(buf) != n - 1 || buf[0] != '/')
		return;
	for (char *p = buf + 1, *s = p;; p++) {
		if (*p == '/' || *p == '\0') {
			int end = *p == '\0';
			*p = '\0';
			if (nseg == KH__HTTP_MAX_SEGS)
				return;
			seg[nseg++] = s;
			if (end)
				break;
			s = p + 1;
		}
	}
	const char *m = methods[in[0] % 5];
	const struct kh__http_route *rt =
		kh__http_route_match(routes, NROUTES, m, seg, nseg, &found, allow, sizeof allow);
	if (rt) {
		CHECK(strcmp(rt->method, m) == 0 && rt->nseg == nseg && found);
		for (size_t i = 0; i < nseg; i++)
			if (!(rt->param_mask & (1u << i)))
				CHECK(strcmp(rt->seg[i], seg[i]) == 0);
	}
	if (found)
		for (char *t = strtok(allow, ", "); t; t = strtok(NULL, ", ")) {
			int known = 0;
			for (size_t i = 0; i < NROUTES; i++)
				known |= strcmp(routes[i].method, t) == 0;
			CHECK(known);
		}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	switch (data[0] % 3) {
	case 0: b64(data + 1, size - 1); break;
	case 1: body(data + 1, size - 1); break;
	default: path(data + 1, size - 1); break;
	}
	return 0;
}
