/*
 * The HTTP/JSON service layer (include/keyhole/http.h) driven by a real client: a server on an
 * ephemeral port of 127.0.0.1 with a few test routes, libcurl on the other side. Covers the
 * answers and the exact error shape (404/405/413/415/400 and a handler's own error), path and
 * query parameters, base64url, the Idempotency-Key hook with an in-memory store, /metrics,
 * concurrent clients, a stop with a request in flight, HTTPS (TLS 1.3 only), the log line.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "keyhole/http.h"
#include "keyhole/log.h"
#include "testutil.h"

/* ---------------------------------------------------------------- test routes */

static atomic_int echo_calls;

static kh_err h_hello(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	(void)req;
	(void)arg;
	return kh_http_reply(resp, 200, json_pack("{s:s}", "hello", "world"));
}

static kh_err h_item(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	const char *q = kh_http_query(req, "q");
	(void)arg;
	return kh_http_reply(resp, 200,
			     json_pack("{s:s,s:s,s:s?,s:s}", "id", kh_http_param(req, "id"), "part",
				       kh_http_param(req, "part"), "q", q, "route", "param"));
}

static kh_err h_item_new(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	(void)arg;
	return kh_http_reply(resp, 200, json_pack("{s:s,s:s}", "part", kh_http_param(req, "part"),
						  "route", "literal"));
}

/* Echoes the body, the key it was given and, when present, the decoded length of "data". */
static kh_err h_echo(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	json_t *b = kh_http_body(req), *out;
	const char *key = kh_http_idempotency_key(req);
	uint8_t data[64];
	size_t n = 0;
	kh_err r;

	(void)arg;
	atomic_fetch_add(&echo_calls, 1);
	if (b && json_object_get(b, "data")) {
		if ((r = kh_json_get_b64(b, "data", data, sizeof data, &n, 0)) != KH_OK)
			return kh_http_reply_error(resp, r, "field 'data' is not base64url");
	}
	out = json_pack("{s:O?,s:s?,s:i,s:i}", "body", b, "key", key, "n", (int)n, "call",
			atomic_load(&echo_calls));
	if (n && (r = kh_json_set_b64(out, "data", data, n)) != KH_OK) {
		json_decref(out);
		return r;
	}
	if ((r = kh_http_resp_header(resp, "Location", "/v1/echo/1")) != KH_OK) {
		json_decref(out);
		return r;
	}
	return kh_http_reply(resp, 201, out);
}

static kh_err h_fail(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	(void)req;
	(void)resp;
	(void)arg;
	return KH_ERR_NOT_PURCHASED;
}

static kh_err h_noreply(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	(void)req;
	(void)resp;
	(void)arg;
	return KH_OK;
}

/* Holds its request until the server is stopping. */
static pthread_mutex_t slow_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t slow_cond = PTHREAD_COND_INITIALIZER;
static int slow_entered;

static kh_err h_slow(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	struct kh_http *h = arg;
	(void)req;
	pthread_mutex_lock(&slow_lock);
	slow_entered = 1;
	pthread_cond_broadcast(&slow_cond);
	pthread_mutex_unlock(&slow_lock);
	while (!kh_http_stopping(h))
		usleep(1000);
	return kh_http_reply(resp, 200, json_pack("{s:b}", "done", 1));
}

static struct kh_http *start(const struct kh_http_config *cfg0)
{
	struct kh_http_config cfg = {0};
	struct kh_http *h = NULL;

	if (cfg0)
		cfg = *cfg0;
	assert_int_equal(kh_http_new(&cfg, &h), KH_OK);
	const struct kh_http_route routes[] = {
		{"GET", "/v1/hello", h_hello, NULL, 0},
		{"GET", "/v1/items/{id}/parts/{part}", h_item, NULL, 0},
		{"GET", "/v1/items/new/parts/{part}", h_item_new, NULL, 0},
		{"POST", "/v1/echo", h_echo, NULL, 0},
		{"PUT", "/v1/echo", h_echo, NULL, 0},
		{"POST", "/v1/fail", h_fail, NULL, 0},
		{"GET", "/v1/noreply", h_noreply, NULL, 0},
		{"GET", "/v1/slow", h_slow, h, 0},
		{"GET", "/v1/open", h_hello, NULL, KH_HTTP_ROUTE_OPEN},
	};
	assert_int_equal(kh_http_add_routes(h, routes, sizeof routes / sizeof routes[0]), KH_OK);
	assert_int_equal(kh_http_start(h), KH_OK);
	assert_true(kh_http_port(h) != 0);
	return h;
}

/* ---------------------------------------------------------------- client */

static size_t on_data_discard(char *p, size_t sz, size_t n, void *u)
{
	(void)p;
	(void)u;
	return sz * n;
}

struct reply {
	long status;
	char *body;
	size_t len;
	char allow[128];
	char ctype[128];
	char location[128];
	int replayed;
	int conn_close;
	long retry_after;
	json_t *json;
};

static size_t on_data(char *p, size_t sz, size_t n, void *u)
{
	struct reply *r = u;
	char *b = realloc(r->body, r->len + sz * n + 1);
	if (!b)
		return 0;
	memcpy(b + r->len, p, sz * n);
	r->body = b;
	r->len += sz * n;
	r->body[r->len] = '\0';
	return sz * n;
}

static void header_value(const char *line, size_t n, const char *name, char *out, size_t cap)
{
	size_t k = strlen(name);
	if (n > k + 1 && strncasecmp(line, name, k) == 0 && line[k] == ':') {
		const char *v = line + k + 1;
		size_t m = n - k - 1;
		while (m && (*v == ' '))
			v++, m--;
		while (m && (v[m - 1] == '\r' || v[m - 1] == '\n'))
			m--;
		if (m >= cap)
			m = cap - 1;
		memcpy(out, v, m);
		out[m] = '\0';
	}
}

static size_t on_header(char *p, size_t sz, size_t n, void *u)
{
	struct reply *r = u;
	char tmp[128] = "";
	header_value(p, sz * n, "Allow", r->allow, sizeof r->allow);
	header_value(p, sz * n, "Content-Type", r->ctype, sizeof r->ctype);
	header_value(p, sz * n, "Location", r->location, sizeof r->location);
	header_value(p, sz * n, "Idempotent-Replayed", tmp, sizeof tmp);
	if (strcmp(tmp, "true") == 0)
		r->replayed = 1;
	tmp[0] = '\0';
	header_value(p, sz * n, "Connection", tmp, sizeof tmp);
	if (strcasecmp(tmp, "close") == 0)
		r->conn_close = 1;
	tmp[0] = '\0';
	header_value(p, sz * n, "Retry-After", tmp, sizeof tmp);
	if (tmp[0])
		r->retry_after = strtol(tmp, NULL, 10);
	return sz * n;
}

static void reply_free(struct reply *r)
{
	free(r->body);
	json_decref(r->json);
	memset(r, 0, sizeof *r);
}

struct body_src {
	size_t left;
};

static size_t on_read(char *p, size_t sz, size_t n, void *u)
{
	struct body_src *s = u;
	size_t k = sz * n < s->left ? sz * n : s->left;
	memset(p, ' ', k);
	s->left -= k;
	return k;
}

/*
 * One request. c NULL: a fresh handle. ctype NULL: no Content-Type. chunked_len != 0: a body
 * of that many spaces sent chunked. hdr: one extra header line or NULL.
 */
static CURLcode request_on(CURL *c, uint16_t port, const char *scheme, const char *method,
			   const char *path, const char *ctype, const char *body, size_t chunked_len,
			   const char *hdr, struct reply *out)
{
	char url[512];
	struct curl_slist *hl = NULL;
	struct body_src src = {chunked_len};
	int own = !c;
	CURLcode rc;

	memset(out, 0, sizeof *out);
	if (own)
		c = curl_easy_init();
	assert_non_null(c);
	snprintf(url, sizeof url, "%s://127.0.0.1:%u%s", scheme ? scheme : "http", port, path);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, out);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
	curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, NULL);
	curl_easy_setopt(c, CURLOPT_UPLOAD, 0L);
	curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	if (ctype) {
		char line[160];
		snprintf(line, sizeof line, "Content-Type: %s", ctype);
		hl = curl_slist_append(hl, line);
	} else {
		hl = curl_slist_append(hl, "Content-Type:");
	}
	if (hdr)
		hl = curl_slist_append(hl, hdr);
	if (chunked_len) {
		hl = curl_slist_append(hl, "Transfer-Encoding: chunked");
		curl_easy_setopt(c, CURLOPT_POST, 1L);
		curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
		curl_easy_setopt(c, CURLOPT_READDATA, &src);
	} else if (body) {
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	}
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
	rc = curl_easy_perform(c);
	if (rc == CURLE_OK) {
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
		if (out->body)
			out->json = json_loads(out->body, 0, NULL);
	}
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
	curl_slist_free_all(hl);
	if (own)
		curl_easy_cleanup(c);
	return rc;
}

static void request(uint16_t port, const char *method, const char *path, const char *ctype,
		    const char *body, const char *hdr, struct reply *out)
{
	assert_int_equal(request_on(NULL, port, NULL, method, path, ctype, body, 0, hdr, out), CURLE_OK);
}

/* The exact error shape: {"error": {"code": code, "message": "<non-empty>"}} and nothing else. */
static void assert_error(const struct reply *r, long status, const char *code)
{
	const json_t *e;
	assert_int_equal(r->status, status);
	assert_non_null(r->json);
	assert_string_equal(r->ctype, "application/json");
	assert_int_equal(json_object_size(r->json), 1);
	e = json_object_get(r->json, "error");
	assert_true(json_is_object(e));
	assert_int_equal(json_object_size(e), 2);
	assert_string_equal(json_string_value(json_object_get(e, "code")), code);
	assert_true(json_is_string(json_object_get(e, "message")));
	assert_true(json_string_length(json_object_get(e, "message")) > 0);
}

/* ---------------------------------------------------------------- tests */

static void test_ok_and_params(void **state)
{
	struct kh_http *h = start(NULL);
	uint16_t port = kh_http_port(h);
	struct reply r;
	(void)state;

	request(port, "GET", "/v1/hello", NULL, NULL, NULL, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.ctype, "application/json");
	assert_string_equal(r.body, "{\"hello\":\"world\"}");
	reply_free(&r);

	request(port, "GET", "/v1/items/abc-1/parts/7?q=x%20y", NULL, NULL, NULL, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(json_string_value(json_object_get(r.json, "id")), "abc-1");
	assert_string_equal(json_string_value(json_object_get(r.json, "part")), "7");
	assert_string_equal(json_string_value(json_object_get(r.json, "q")), "x y");
	assert_string_equal(json_string_value(json_object_get(r.json, "route")), "param");
	reply_free(&r);

	/* A literal segment wins over a parameter in the same place. */
	request(port, "GET", "/v1/items/new/parts/9", NULL, NULL, NULL, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(json_string_value(json_object_get(r.json, "route")), "literal");
	assert_string_equal(json_string_value(json_object_get(r.json, "part")), "9");
	reply_free(&r);

	/* A POST with a JSON body; extra response header; charset parameter accepted. */
	request(port, "POST", "/v1/echo", "application/json; charset=utf-8", "{\"a\":[1,2]}", NULL, &r);
	assert_int_equal(r.status, 201);
	assert_string_equal(r.location, "/v1/echo/1");
	assert_int_equal(json_integer_value(json_array_get(json_object_get(json_object_get(r.json, "body"), "a"), 1)), 2);
	reply_free(&r);

	/* No body at all is allowed: the handler sees NULL. */
	request(port, "POST", "/v1/echo", NULL, NULL, NULL, &r);
	assert_int_equal(r.status, 201);
	assert_true(json_is_null(json_object_get(r.json, "body")) || !json_object_get(r.json, "body"));
	reply_free(&r);
	kh_http_free(h);
}

static void test_errors(void **state)
{
	struct kh_http *h = start(NULL);
	uint16_t port = kh_http_port(h);
	struct reply r;
	char big[400];
	char *huge;
	(void)state;

	request(port, "GET", "/v1/nope", NULL, NULL, NULL, &r);
	assert_error(&r, 404, "not_found");
	reply_free(&r);
	request(port, "GET", "/v1/items/a/parts", NULL, NULL, NULL, &r);
	assert_error(&r, 404, "not_found");
	reply_free(&r);
	request(port, "GET", "/v1/hello/", NULL, NULL, NULL, &r);
	assert_error(&r, 404, "not_found");
	reply_free(&r);
	request(port, "GET", "/", NULL, NULL, NULL, &r);
	assert_error(&r, 404, "not_found");
	reply_free(&r);

	request(port, "DELETE", "/v1/hello", NULL, NULL, NULL, &r);
	assert_error(&r, 405, "method_not_allowed");
	assert_string_equal(r.allow, "GET");
	reply_free(&r);
	request(port, "GET", "/v1/echo", NULL, NULL, NULL, &r);
	assert_error(&r, 405, "method_not_allowed");
	assert_string_equal(r.allow, "POST, PUT");
	reply_free(&r);
	request(port, "POST", "/metrics", NULL, NULL, NULL, &r);
	assert_error(&r, 405, "method_not_allowed");
	assert_string_equal(r.allow, "GET");
	reply_free(&r);

	/* 413: declared too large (answered before the body is read), and chunked too large. */
	huge = malloc(KH_HTTP_BODY_LIMIT + 2);
	assert_non_null(huge);
	memset(huge, ' ', KH_HTTP_BODY_LIMIT + 1);
	huge[0] = '{';
	huge[KH_HTTP_BODY_LIMIT] = '}';
	huge[KH_HTTP_BODY_LIMIT + 1] = '\0';
	request(port, "POST", "/v1/echo", "application/json", huge, NULL, &r);
	assert_error(&r, 413, "too_large");
	reply_free(&r);
	free(huge);
	assert_int_equal(request_on(NULL, port, NULL, "POST", "/v1/echo", "application/json", NULL,
				    2 * KH_HTTP_BODY_LIMIT, NULL, &r),
			 CURLE_OK);
	assert_error(&r, 413, "too_large");
	reply_free(&r);
	/* Exactly at the limit passes the size check (and is valid JSON). */
	huge = malloc(KH_HTTP_BODY_LIMIT + 1);
	assert_non_null(huge);
	memset(huge, ' ', KH_HTTP_BODY_LIMIT);
	huge[0] = '{';
	huge[KH_HTTP_BODY_LIMIT - 1] = '}';
	huge[KH_HTTP_BODY_LIMIT] = '\0';
	request(port, "POST", "/v1/echo", "application/json", huge, NULL, &r);
	assert_int_equal(r.status, 201);
	reply_free(&r);
	free(huge);

	request(port, "POST", "/v1/echo", "text/plain", "{}", NULL, &r);
	assert_error(&r, 415, "unsupported_media_type");
	reply_free(&r);
	request(port, "POST", "/v1/echo", NULL, "{}", NULL, &r);
	assert_error(&r, 415, "unsupported_media_type");
	reply_free(&r);
	request(port, "POST", "/v1/echo", "application/jsonx", "{}", NULL, &r);
	assert_error(&r, 415, "unsupported_media_type");
	reply_free(&r);

	request(port, "POST", "/v1/echo", "application/json", "{\"a\":", NULL, &r);
	assert_error(&r, 400, "malformed");
	reply_free(&r);
	request(port, "POST", "/v1/echo", "application/json", "[1,2]", NULL, &r);
	assert_error(&r, 400, "malformed");
	reply_free(&r);
	request(port, "POST", "/v1/echo", "application/json", "{\"a\":1,\"a\":2}", NULL, &r);
	assert_error(&r, 400, "malformed");
	reply_free(&r);
	request(port, "POST", "/v1/echo", "application/json", "{} {}", NULL, &r);
	assert_error(&r, 400, "malformed");
	reply_free(&r);

	/* A handler's error code becomes its status and body; a handler that forgets: 500. */
	request(port, "POST", "/v1/fail", NULL, NULL, NULL, &r);
	assert_error(&r, 402, "not_purchased");
	assert_string_equal(json_string_value(json_object_get(json_object_get(r.json, "error"), "message")),
			    kh_strerror(KH_ERR_NOT_PURCHASED));
	reply_free(&r);
	request(port, "GET", "/v1/noreply", NULL, NULL, NULL, &r);
	assert_error(&r, 500, "internal");
	reply_free(&r);

	/* Bad Idempotency-Key: too long. */
	memset(big, 'k', sizeof big);
	memcpy(big, "Idempotency-Key: ", 17);
	big[sizeof big - 1] = '\0';
	request(port, "POST", "/v1/echo", "application/json", "{}", big, &r);
	assert_error(&r, 400, "invalid_argument");
	reply_free(&r);
	kh_http_free(h);
}

static void test_b64url(void **state)
{
	static const struct {
		const char *bin, *enc;
	} v[] = {{"", ""},         {"f", "Zg"},         {"fo", "Zm8"},      {"foo", "Zm9v"},
		 {"foob", "Zm9vYg"}, {"fooba", "Zm9vYmE"}, {"foobar", "Zm9vYmFy"}};
	static const char *const bad[] = {"Zg==", "Z", "Zh", "Zm9=", "Zm9+", "Zm9/", "Zm 9v",
					  "Zm9v\n", "Zm-", "Zm9vY", "=", "Zm9vYmF=", "\xc3\xa9xx"};
	uint8_t buf[300], out[300], sentinel[4] = {0xAA, 0xAA, 0xAA, 0xAA};
	char enc[512];
	size_t n;
	json_t *o;
	(void)state;

	for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
		size_t bl = strlen(v[i].bin);
		assert_int_equal(kh_b64url_len(bl), strlen(v[i].enc));
		assert_int_equal(kh_b64url_encode((const uint8_t *)v[i].bin, bl, enc, sizeof enc), KH_OK);
		assert_string_equal(enc, v[i].enc);
		assert_int_equal(kh_b64url_decode(v[i].enc, strlen(v[i].enc), out, sizeof out, &n), KH_OK);
		assert_int_equal(n, bl);
		assert_memory_equal(out, v[i].bin, bl);
	}
	/* The two characters that differ from base64: 0xFB 0xFF -> "-_8". */
	buf[0] = 0xFB;
	buf[1] = 0xFF;
	assert_int_equal(kh_b64url_encode(buf, 2, enc, sizeof enc), KH_OK);
	assert_string_equal(enc, "-_8");
	for (size_t len = 0; len <= 256; len++) {
		assert_int_equal(RAND_bytes(buf, (int)len > 0 ? (int)len : 1), 1);
		assert_int_equal(kh_b64url_encode(buf, len, enc, sizeof enc), KH_OK);
		assert_int_equal(strlen(enc), kh_b64url_len(len));
		assert_int_equal(kh_b64url_decode(enc, strlen(enc), out, sizeof out, &n), KH_OK);
		assert_int_equal(n, len);
		assert_memory_equal(out, buf, len);
	}
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		memcpy(out, sentinel, sizeof sentinel);
		assert_int_equal(kh_b64url_decode(bad[i], strlen(bad[i]), out, sizeof out, &n),
				 KH_ERR_INVAL);
		assert_memory_equal(out, sentinel, sizeof sentinel); /* untouched on failure */
	}
	/* An embedded NUL counts as a bad character. */
	assert_int_equal(kh_b64url_decode("Zm\0v", 4, out, sizeof out, &n), KH_ERR_INVAL);
	/* Too small a buffer is a different error from bad input; so is a short encode buffer. */
	assert_int_equal(kh_b64url_decode("Zm9vYmFy", 8, out, 5, &n), KH_ERR_BUF);
	assert_int_equal(kh_b64url_decode("Zm9vYmFy", 8, out, 6, &n), KH_OK);
	assert_int_equal(kh_b64url_encode((const uint8_t *)"foo", 3, enc, 4), KH_ERR_BUF);
	assert_int_equal(kh_b64url_encode((const uint8_t *)"foo", 3, enc, 5), KH_OK);

	/* JSON helpers. */
	o = json_object();
	assert_int_equal(kh_json_set_b64(o, "k", (const uint8_t *)"foob", 4), KH_OK);
	assert_string_equal(json_string_value(json_object_get(o, "k")), "Zm9vYg");
	assert_int_equal(kh_json_get_b64(o, "k", out, 4, &n, 1), KH_OK);
	assert_int_equal(n, 4);
	assert_int_equal(kh_json_get_b64(o, "k", out, 5, &n, 1), KH_ERR_INVAL);
	assert_int_equal(kh_json_get_b64(o, "k", out, 3, &n, 0), KH_ERR_BUF);
	assert_int_equal(kh_json_get_b64(o, "missing", out, 4, &n, 0), KH_ERR_NOTFOUND);
	json_object_set_new(o, "i", json_integer(3));
	assert_int_equal(kh_json_get_b64(o, "i", out, 4, &n, 0), KH_ERR_INVAL);
	json_decref(o);
}

static void test_b64url_over_http(void **state)
{
	struct kh_http *h = start(NULL);
	uint16_t port = kh_http_port(h);
	struct reply r;
	(void)state;

	request(port, "POST", "/v1/echo", "application/json", "{\"data\":\"-_8\"}", NULL, &r);
	assert_int_equal(r.status, 201);
	assert_int_equal(json_integer_value(json_object_get(r.json, "n")), 2);
	assert_string_equal(json_string_value(json_object_get(r.json, "data")), "-_8");
	reply_free(&r);
	request(port, "POST", "/v1/echo", "application/json", "{\"data\":\"+/8=\"}", NULL, &r);
	assert_error(&r, 400, "invalid_argument");
	assert_string_equal(json_string_value(json_object_get(json_object_get(r.json, "error"), "message")),
			    "field 'data' is not base64url");
	reply_free(&r);
	kh_http_free(h);
}

/* ---------------------------------------------------------------- idempotency */

/*
 * The server checks an Idempotency-Key and hands it to the handler, which binds it in its own
 * transaction (the center's tests: test_sms, test_sms_list). Here: 1 to KH_HTTP_IDEM_KEY_MAX
 * visible ASCII characters pass through unchanged; anything else is a 400 before the handler.
 */
static void test_idempotency(void **state)
{
	char hdr[KH_HTTP_IDEM_KEY_MAX + 40], key[KH_HTTP_IDEM_KEY_MAX + 2];
	static const char *const bad[] = {"Idempotency-Key: a\x01b", "Idempotency-Key: caf\xc3\xa9",
					  "Idempotency-Key: a b"};
	struct kh_http *h;
	uint16_t port;
	struct reply r;
	int calls;
	(void)state;

	h = start(NULL);
	port = kh_http_port(h);
	request(port, "POST", "/v1/echo", "application/json", "{}", "Idempotency-Key: abc-123", &r);
	assert_int_equal(r.status, 201);
	assert_string_equal(json_string_value(json_object_get(r.json, "key")), "abc-123");
	reply_free(&r);
	request(port, "POST", "/v1/echo", "application/json", "{}", NULL, &r);
	assert_true(json_is_null(json_object_get(r.json, "key")));
	reply_free(&r);
	/* the longest key passes whole; one more character is refused, and the handler never runs */
	memset(key, 'k', KH_HTTP_IDEM_KEY_MAX);
	key[KH_HTTP_IDEM_KEY_MAX] = 0;
	snprintf(hdr, sizeof hdr, "Idempotency-Key: %s", key);
	request(port, "POST", "/v1/echo", "application/json", "{}", hdr, &r);
	assert_int_equal(r.status, 201);
	assert_string_equal(json_string_value(json_object_get(r.json, "key")), key);
	reply_free(&r);
	calls = atomic_load(&echo_calls);
	snprintf(hdr, sizeof hdr, "Idempotency-Key: %sk", key);
	request(port, "POST", "/v1/echo", "application/json", "{}", hdr, &r);
	assert_error(&r, 400, "invalid_argument");
	reply_free(&r);
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		request(port, "POST", "/v1/echo", "application/json", "{}", bad[i], &r);
		assert_error(&r, 400, "invalid_argument");
		reply_free(&r);
	}
	assert_int_equal(atomic_load(&echo_calls), calls);
	kh_http_free(h);
}

/* ---------------------------------------------------------------- metrics */

/* The value of the sample line that starts with prefix (e.g. `name{labels} `), -1 if none. */
static long long sample(const char *text, const char *prefix)
{
	const char *p = text;
	size_t n = strlen(prefix);
	while (p && *p) {
		if (strncmp(p, prefix, n) == 0)
			return atoll(p + n);
		p = strchr(p, '\n');
		if (p)
			p++;
	}
	return -1;
}

static void test_metrics(void **state)
{
	struct kh_metrics *m;
	struct kh_metric *blocks, *queue, *x;
	struct kh_http_config cfg = {0};
	struct kh_http *h;
	uint16_t port;
	struct reply r;
	CURL *c = curl_easy_init();
	(void)state;

	assert_int_equal(kh_metrics_new(&m), KH_OK);
	assert_int_equal(kh_metrics_counter(m, "keyhole_blocks_ingested_total", "Usage blocks stored",
					    &blocks),
			 KH_OK);
	assert_int_equal(kh_metrics_gauge(m, "keyhole_emms_queued", "EMMs waiting", &queue), KH_OK);
	assert_int_equal(kh_metrics_counter(m, "bad name", NULL, &x), KH_ERR_INVAL);
	assert_int_equal(kh_metrics_counter(m, "9lives", NULL, &x), KH_ERR_INVAL);
	assert_int_equal(kh_metrics_counter(m, "keyhole_emms_queued", NULL, &x), KH_ERR_INVAL);
	assert_int_equal(kh_metrics_counter(m, "keyhole_blocks_ingested_total", NULL, &x), KH_OK);
	assert_ptr_equal(x, blocks);
	kh_metric_add(blocks, 5);
	kh_metric_set(queue, 12);
	kh_metric_add(queue, -2);
	assert_int_equal(kh_metric_value(queue), 10);

	cfg.metrics = m;
	h = start(&cfg);
	assert_ptr_equal(kh_http_metrics(h), m);
	port = kh_http_port(h);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(request_on(c, port, NULL, "GET", "/v1/hello", NULL, NULL, 0, NULL, &r), CURLE_OK);
		assert_int_equal(r.status, 200);
		reply_free(&r);
	}
	for (int i = 0; i < 2; i++) {
		assert_int_equal(request_on(c, port, NULL, "GET", "/v1/missing", NULL, NULL, 0, NULL, &r), CURLE_OK);
		assert_int_equal(r.status, 404);
		reply_free(&r);
	}
	assert_int_equal(request_on(c, port, NULL, "DELETE", "/v1/hello", NULL, NULL, 0, NULL, &r), CURLE_OK);
	reply_free(&r);
	/* A request answered before its body was read, on a fresh connection. */
	request(port, "POST", "/v1/echo", "text/plain", "x", NULL, &r);
	assert_int_equal(r.status, 415);
	reply_free(&r);

	assert_int_equal(request_on(c, port, NULL, "GET", "/metrics", NULL, NULL, 0, NULL, &r), CURLE_OK);
	assert_int_equal(r.status, 200);
	assert_non_null(strstr(r.ctype, "text/plain"));
	assert_non_null(strstr(r.ctype, "version=0.0.4"));
	assert_int_equal(sample(r.body, "keyhole_http_requests_total{method=\"GET\",code=\"200\"} "), 3);
	assert_int_equal(sample(r.body, "keyhole_http_requests_total{method=\"GET\",code=\"404\"} "), 2);
	assert_int_equal(sample(r.body, "keyhole_http_requests_total{method=\"DELETE\",code=\"405\"} "), 1);
	assert_int_equal(sample(r.body, "keyhole_http_requests_total{method=\"POST\",code=\"415\"} "), 1);
	assert_int_equal(sample(r.body, "keyhole_http_errors_total{code=\"not_found\"} "), 2);
	assert_int_equal(sample(r.body, "keyhole_http_errors_total{code=\"method_not_allowed\"} "), 1);
	assert_int_equal(sample(r.body, "keyhole_http_errors_total{code=\"unsupported_media_type\"} "), 1);
	assert_int_equal(sample(r.body, "keyhole_blocks_ingested_total "), 5);
	assert_int_equal(sample(r.body, "keyhole_emms_queued "), 10);
	/*
	 * This request itself is in flight while the page is rendered (an earlier one may still be
	 * finishing on another thread: it leaves the count once its answer is sent).
	 */
	assert_true(sample(r.body, "keyhole_http_requests_in_flight ") >= 1);
	assert_non_null(strstr(r.body, "# TYPE keyhole_http_requests_total counter\n"));
	assert_non_null(strstr(r.body, "# HELP keyhole_blocks_ingested_total Usage blocks stored\n"));
	assert_non_null(strstr(r.body, "# TYPE keyhole_emms_queued gauge\n"));
	/* One TYPE line per family, its samples together. */
	{
		const char *t = strstr(r.body, "# TYPE keyhole_http_requests_total");
		assert_null(strstr(t + 1, "# TYPE keyhole_http_requests_total"));
	}
	reply_free(&r);
	kh_http_free(h);
	curl_easy_cleanup(c);

	{
		char esc[32];
		assert_int_equal(kh_metrics_label_escape("a\"b\\c\nd", esc, sizeof esc), KH_OK);
		assert_string_equal(esc, "a\\\"b\\\\c\\nd");
		assert_int_equal(kh_metrics_label_escape("abcdef", esc, 6), KH_ERR_BUF);
	}
	kh_metrics_free(m);
}

/* ---------------------------------------------------------------- concurrency and stop */

struct worker {
	uint16_t port;
	int id;
	int ok;
};

static void *worker_run(void *arg)
{
	struct worker *w = arg;
	CURL *c = curl_easy_init();
	for (int i = 0; c && i < 50; i++) {
		char path[64], want[32];
		struct reply r;
		snprintf(path, sizeof path, "/v1/items/w%d-%d/parts/p", w->id, i);
		snprintf(want, sizeof want, "w%d-%d", w->id, i);
		if (request_on(c, w->port, NULL, "GET", path, NULL, NULL, 0, NULL, &r) == CURLE_OK &&
		    r.status == 200 && r.json &&
		    strcmp(json_string_value(json_object_get(r.json, "id")), want) == 0)
			w->ok++;
		reply_free(&r);
	}
	curl_easy_cleanup(c);
	return NULL;
}

static void test_concurrent(void **state)
{
	struct kh_http *h = start(NULL);
	struct worker w[2] = {{kh_http_port(h), 0, 0}, {kh_http_port(h), 1, 0}};
	pthread_t t[2];
	char *text;
	(void)state;

	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&t[i], NULL, worker_run, &w[i]), 0);
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_join(t[i], NULL), 0);
	assert_int_equal(w[0].ok, 50);
	assert_int_equal(w[1].ok, 50);
	assert_int_equal(kh_metrics_render(kh_http_metrics(h), &text, NULL), KH_OK);
	assert_int_equal(sample(text, "keyhole_http_requests_total{method=\"GET\",code=\"200\"} "), 100);
	free(text);
	kh_http_free(h);
}

struct slow_client {
	uint16_t port;
	struct reply r;
	CURLcode rc;
};

static void *slow_run(void *arg)
{
	struct slow_client *s = arg;
	s->rc = request_on(NULL, s->port, NULL, "GET", "/v1/slow", NULL, NULL, 0, NULL, &s->r);
	return NULL;
}

static void *stop_run(void *arg)
{
	kh_http_stop(arg);
	return NULL;
}

static void test_stop_in_flight(void **state)
{
	struct kh_http *h = start(NULL);
	struct slow_client sc = {.port = kh_http_port(h)};
	pthread_t tc, ts;
	struct reply r;
	(void)state;

	slow_entered = 0;
	assert_int_equal(pthread_create(&tc, NULL, slow_run, &sc), 0);
	pthread_mutex_lock(&slow_lock);
	while (!slow_entered)
		pthread_cond_wait(&slow_cond, &slow_lock);
	pthread_mutex_unlock(&slow_lock);
	/* The handler answers only once the stop has begun: the stop must wait for it. */
	assert_int_equal(pthread_create(&ts, NULL, stop_run, h), 0);
	assert_int_equal(pthread_join(ts, NULL), 0);
	assert_int_equal(pthread_join(tc, NULL), 0);
	assert_int_equal(sc.rc, CURLE_OK);
	assert_int_equal(sc.r.status, 200);
	assert_true(json_is_true(json_object_get(sc.r.json, "done")));
	assert_true(sc.r.conn_close);
	reply_free(&sc.r);
	/* Stopped: nobody listens any more; a second stop is harmless. */
	assert_int_equal(request_on(NULL, sc.port, NULL, "GET", "/v1/hello", NULL, NULL, 0, NULL, &r),
			 CURLE_COULDNT_CONNECT);
	reply_free(&r);
	kh_http_stop(h);
	kh_http_free(h);
}

/* ---------------------------------------------------------------- routes, log */

static void test_route_table(void **state)
{
	struct kh_http_config cfg = {0};
	struct kh_http *h;
	(void)state;

	assert_int_equal(kh_http_new(&cfg, &h), KH_OK);
	{
		static const char *const bad[] = {"", "v1/x", "/", "/v1//x", "/v1/x/", "/v1/{}",
						  "/v1/{a", "/v1/a}", "/v1/x{a}", "/v1/{a-b}"};
		for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
			struct kh_http_route rt = {"GET", bad[i], h_hello, NULL, 0};
			assert_int_equal(kh_http_add_routes(h, &rt, 1), KH_ERR_INVAL);
		}
	}
	{
		struct kh_http_route rt = {"FETCH", "/v1/x", h_hello, NULL, 0};
		assert_int_equal(kh_http_add_routes(h, &rt, 1), KH_ERR_INVAL);
		rt.method = "GET";
		rt.fn = NULL;
		assert_int_equal(kh_http_add_routes(h, &rt, 1), KH_ERR_INVAL);
	}
	{
		struct kh_http_route a = {"GET", "/v1/c/{ua}", h_hello, NULL, 0};
		struct kh_http_route b = {"GET", "/v1/c/{id}", h_hello, NULL, 0};
		struct kh_http_route m = {"GET", "/metrics", h_hello, NULL, 0};
		struct kh_http_route p = {"POST", "/v1/c/{id}", h_hello, NULL, 0};
		assert_int_equal(kh_http_add_routes(h, &a, 1), KH_OK);
		assert_int_equal(kh_http_add_routes(h, &b, 1), KH_ERR_EXISTS);
		assert_int_equal(kh_http_add_routes(h, &m, 1), KH_ERR_EXISTS);
		assert_int_equal(kh_http_add_routes(h, &p, 1), KH_OK);
	}
	{
		/* All or nothing: a bad route leaves none of its call behind. */
		const struct kh_http_route two[] = {{"GET", "/v1/z", h_hello, NULL, 0},
						    {"GET", "/v1/z/", h_hello, NULL, 0}};
		assert_int_equal(kh_http_add_routes(h, two, 2), KH_ERR_INVAL);
		assert_int_equal(kh_http_add_routes(h, two, 1), KH_OK);
	}
	kh_http_free(h);
	/* Bad configs. */
	cfg.host = "not-an-address";
	assert_int_equal(kh_http_new(&cfg, &h), KH_OK);
	assert_int_equal(kh_http_start(h), KH_ERR_INVAL);
	kh_http_free(h);
	cfg.host = NULL;
	cfg.cert_file = "/nonexistent";
	assert_int_equal(kh_http_new(&cfg, &h), KH_ERR_INVAL); /* cert without key */
}

static void test_log_line(void **state)
{
	char path[] = "/tmp/kh-http-log.XXXXXX";
	int fd = mkstemp(path), saved;
	struct kh_http *h;
	struct reply r;
	char buf[8192];
	ssize_t n;
	(void)state;

	assert_true(fd >= 0);
	saved = dup(STDERR_FILENO);
	assert_true(saved >= 0);
	kh_log_set_level(KH_LOG_INFO);
	assert_true(dup2(fd, STDERR_FILENO) >= 0);
	h = start(NULL);
	request(kh_http_port(h), "POST", "/v1/echo", "application/json", "{\"secret\":\"s3cr3t\"}",
		NULL, &r);
	reply_free(&r);
	request(kh_http_port(h), "GET", "/v1/a%20b\"c", NULL, NULL, NULL, &r);
	reply_free(&r);
	kh_http_free(h); /* the log line is written once the answer is sent: stop waits for it */
	assert_true(dup2(saved, STDERR_FILENO) >= 0);
	close(saved);
	kh_log_set_level(KH_LOG_WARN);
	n = pread(fd, buf, sizeof buf - 1, 0);
	close(fd);
	unlink(path);
	assert_true(n > 0);
	buf[n] = '\0';
	assert_non_null(strstr(buf, "event=http.request method=POST path=/v1/echo status=201 duration_us="));
	assert_non_null(strstr(buf, "event=http.request method=GET path=/v1/a%20b%22c status=404 duration_us="));
	assert_null(strstr(buf, "s3cr3t"));
}

/* ---------------------------------------------------------------- HTTPS */

static void write_cert(const char *dir, char *certp, char *keyp, size_t cap)
{
	EVP_PKEY *pk = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	X509_NAME *name;
	X509V3_CTX ctx;
	X509_EXTENSION *ext;
	FILE *f;
	int fd;

	assert_non_null(pk);
	assert_non_null(x);
	assert_int_equal(X509_set_version(x, 2), 1);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), -60);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	assert_int_equal(X509_set_pubkey(x, pk), 1);
	name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1, -1, 0);
	X509_set_issuer_name(x, name);
	X509V3_set_ctx_nodb(&ctx);
	X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1");
	assert_non_null(ext);
	X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	assert_true(X509_sign(x, pk, EVP_sha256()) > 0);
	snprintf(certp, cap, "%s/cert.pem", dir);
	snprintf(keyp, cap, "%s/key.pem", dir);
	f = fopen(certp, "w");
	assert_non_null(f);
	PEM_write_X509(f, x);
	fclose(f);
	fd = open(keyp, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	f = fdopen(fd, "w");
	assert_non_null(f);
	PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL);
	fclose(f);
	X509_free(x);
	EVP_PKEY_free(pk);
}

/* One GET /v1/hello from source address src; the status, or 0 when the connection failed. */
static long hello_path_from(uint16_t port, const char *src, const char *path)
{
	CURL *c = curl_easy_init();
	char url[96];
	long st = 0;

	assert_non_null(c);
	snprintf(url, sizeof url, "http://127.0.0.1:%u%s", port, path);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(c, CURLOPT_INTERFACE, src);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data_discard);
	if (curl_easy_perform(c) == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &st);
	curl_easy_cleanup(c);
	return st;
}

static long hello_from(uint16_t port, const char *src)
{
	return hello_path_from(port, src, "/v1/hello");
}

/*
 * A thread per connection, and one client address may hold a quarter of them: idle sockets from
 * 127.0.0.1 fill its share, its next request is dropped, and another address (127.0.0.2, also
 * loopback on Linux) is still served.
 */
/* The peer has not closed fd: nothing to read yet (a closed socket reads 0 at once). */
static int still_open(int fd)
{
	char b;
	ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
	return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

static void test_per_address_limit(void **state)
{
	struct kh_http_config cfg = {.threads = 16}; /* a quarter: 4 per address */
	struct kh_http *h;
	int fds[4];
	struct sockaddr_in a = {0};

	(void)state;
	h = start(&cfg);
	a.sin_family = AF_INET;
	a.sin_port = htons(kh_http_port(h));
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(hello_from(kh_http_port(h), "127.0.0.1"), 200);
	/*
	 * While the four idle sockets are open at the server, 127.0.0.1's next request is dropped. A
	 * loaded machine may take a while to accept them (no timing is asserted), and the server may
	 * close an idle socket (KH_HTTP_IDLE_S, or when short of threads); a socket it closed is
	 * opened again before the next try, so each try is made with all four held.
	 */
	for (int i = 0; i < 4; i++)
		fds[i] = -1;
	{
		long st = 200;
		for (int n = 0; n < 300 && st != 0; n++) {
			for (int i = 0; i < 4; i++) {
				if (fds[i] >= 0 && still_open(fds[i]))
					continue;
				if (fds[i] >= 0)
					close(fds[i]);
				fds[i] = socket(AF_INET, SOCK_STREAM, 0);
				assert_true(fds[i] >= 0);
				assert_int_equal(connect(fds[i], (struct sockaddr *)&a, sizeof a), 0);
			}
			usleep(100000);
			st = hello_from(kh_http_port(h), "127.0.0.1");
		}
		assert_int_equal(st, 0);
	}
	assert_int_equal(hello_from(kh_http_port(h), "127.0.0.2"), 200);
	for (int i = 0; i < 4; i++)
		close(fds[i]);
	{
		long st = 0;
		for (int n = 0; n < 100 && st != 200; n++) {
			usleep(100000);
			st = hello_from(kh_http_port(h), "127.0.0.1");
		}
		assert_int_equal(st, 200);
	}
	kh_http_free(h);
}


/* ---------------------------------------------------------------- attacks on the server */

/* A TCP connection to the server from src (a loopback address), or -1 when refused. */
static int raw_connect(uint16_t port, const char *src)
{
	struct sockaddr_in a = {0}, b = {0};
	struct timeval tv = {10, 0}; /* a bound on a test that would hang, not a measure */
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	b.sin_family = AF_INET;
	assert_int_equal(inet_pton(AF_INET, src, &b.sin_addr), 1);
	assert_int_equal(bind(fd, (struct sockaddr *)&b, sizeof b), 0);
	a.sin_family = AF_INET;
	a.sin_port = htons(port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static int send_str(int fd, const char *s)
{
	size_t n = strlen(s);
	while (n) {
		ssize_t k = send(fd, s, n, MSG_NOSIGNAL);
		if (k <= 0)
			return -1;
		s += k;
		n -= (size_t)k;
	}
	return 0;
}

/*
 * Everything the server sends on fd until it closes the connection, NUL-terminated (malloc'd).
 * *closed: 1 when it did close; 0 when it kept the connection open (the 10 s receive timeout
 * ran out: only a bound, so that a server that keeps the connection does not hang the test).
 */
static char *read_to_close(int fd, int *closed)
{
	char *all = NULL;
	size_t len = 0;

	*closed = 0;
	for (;;) {
		char buf[4096];
		ssize_t k = recv(fd, buf, sizeof buf, 0);
		if (k == 0 || (k < 0 && errno == ECONNRESET)) {
			*closed = 1;
			break;
		}
		if (k < 0)
			break;
		all = realloc(all, len + (size_t)k + 1);
		assert_non_null(all);
		memcpy(all + len, buf, (size_t)k);
		len += (size_t)k;
	}
	if (!all)
		all = calloc(1, 1);
	all[len] = 0;
	return all;
}

static int count_answers(const char *s)
{
	int n = 0;
	for (const char *p = s; (p = strstr(p, "HTTP/1.1 ")) != NULL; p++)
		n++;
	return n;
}

/*
 * Request smuggling (RFC 9112 §6.3). A request whose body length two readers could read two
 * ways is refused with 400 and the connection closed, so the request that follows on the
 * connection (here a GET that a front end might have taken for part of the body, or the other
 * way round) is never answered. Before, Content-Length beside "chunked" and two Content-Lengths
 * were accepted and the follow-on answered, and an unknown Transfer-Encoding hung.
 */
static void test_framing(void **state)
{
	static const char *const bad[] = {
		/* both: libmicrohttpd used chunked, a front end may use the length */
		"POST /v1/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 4\r\n"
		"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
		/* two lengths */
		"POST /v1/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
		"Content-Length: 0\r\n\r\n{}",
		/* a coding no one here understands */
		"POST /v1/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nTransfer-Encoding: gzip\r\n\r\n",
		/* chunked, but not last */
		"POST /v1/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
		"Transfer-Encoding: chunked, identity\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
		/* Transfer-Encoding in HTTP/1.0 */
		"POST /v1/echo HTTP/1.0\r\nHost: t\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
		"Connection: keep-alive\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
	};
	static const char follow[] = "GET /v1/hello HTTP/1.1\r\nHost: t\r\n\r\n";
	struct kh_http *h = start(NULL);
	uint16_t port = kh_http_port(h);
	int fd, closed;
	char *got;

	(void)state;
	/* The control: two sound requests on one connection are both answered. */
	assert_true((fd = raw_connect(port, "127.0.0.1")) >= 0);
	assert_int_equal(send_str(fd, "GET /v1/hello HTTP/1.1\r\nHost: t\r\n\r\n"
				      "GET /v1/hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
			 0);
	got = read_to_close(fd, &closed);
	assert_true(closed);
	assert_int_equal(count_answers(got), 2);
	free(got);
	close(fd);
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		char *req = malloc(strlen(bad[i]) + sizeof follow);
		assert_non_null(req);
		strcpy(req, bad[i]);
		strcat(req, follow);
		assert_true((fd = raw_connect(port, "127.0.0.1")) >= 0);
		assert_int_equal(send_str(fd, req), 0);
		got = read_to_close(fd, &closed);
		if (!closed || count_answers(got) != 1 || strncmp(got, "HTTP/1.1 400 ", 13) != 0)
			fail_msg("request %zu: closed=%d answers=%d: %.200s", i, closed, count_answers(got), got);
		assert_non_null(strstr(got, "\"invalid_argument\""));
		free(got);
		free(req);
		close(fd);
	}
	/* the same length twice is one length: accepted */
	assert_true((fd = raw_connect(port, "127.0.0.1")) >= 0);
	assert_int_equal(send_str(fd, "POST /v1/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
				      "Content-Length: 2\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"),
			 0);
	got = read_to_close(fd, &closed);
	assert_true(closed);
	assert_int_equal(strncmp(got, "HTTP/1.1 201 ", 13), 0);
	free(got);
	close(fd);
	kh_http_free(h);
}

/*
 * A control character in the path, raw or percent-encoded, is refused (400) and never routed.
 * Before, libmicrohttpd decoded %00 and the path ended there: /v1/hello%00/x was /v1/hello.
 */
static void test_control_in_path(void **state)
{
	static const char *const bad[] = {"/v1/hello%00", "/v1/hello%00/x", "/v1/items/1%00/parts/2",
					  "/v1/items/1%0a/parts/2", "/v1/items/1%1F/parts/2", "/v1/items/1%7f/parts/2",
					  "/v1/items/1/parts/2?q=a%00b"};
	struct kh_http *h = start(NULL);
	struct reply r;
	int fd, closed;
	char *got;

	(void)state;
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		assert_int_equal(request_on(NULL, kh_http_port(h), NULL, "GET", bad[i], NULL, NULL, 0, NULL, &r), CURLE_OK);
		if (r.status != 400)
			fail_msg("%s: %ld %s", bad[i], r.status, r.body ? r.body : "");
		assert_non_null(strstr(r.body, "\"invalid_argument\""));
		reply_free(&r);
	}
	/* a raw control byte in the request line */
	assert_true((fd = raw_connect(kh_http_port(h), "127.0.0.1")) >= 0);
	assert_int_equal(send_str(fd, "GET /v1/hello\x01 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"), 0);
	got = read_to_close(fd, &closed);
	assert_int_equal(strncmp(got, "HTTP/1.1 400 ", 13), 0);
	free(got);
	close(fd);
	/* printable escapes are fine */
	assert_int_equal(request_on(NULL, kh_http_port(h), NULL, "GET", "/v1/items/%41/parts/2", NULL, NULL, 0, NULL, &r),
			 CURLE_OK);
	assert_int_equal(r.status, 200);
	assert_non_null(strstr(r.body, "\"id\":\"A\""));
	reply_free(&r);
	kh_http_free(h);
}

/*
 * The open routes' budget per client address: past its burst, an address gets 429 with
 * Retry-After, while another address still has its own. (A bucket of 5 refilled at 1 a second:
 * however slow the machine, the 429 comes within 40 requests unless they take 35 s.)
 */
static void test_open_budget(void **state)
{
	struct kh_http_config cfg = {.open_rate = 1, .open_burst = 5};
	struct kh_http *h;
	struct reply r;
	int ok = 0, limited = 0;

	(void)state;
	h = start(&cfg);
	for (int i = 0; i < 40 && !limited; i++) {
		assert_int_equal(request_on(NULL, kh_http_port(h), NULL, "GET", "/v1/open", NULL, NULL, 0, NULL, &r),
				 CURLE_OK);
		if (r.status == 200) {
			ok++;
		} else {
			assert_int_equal(r.status, 429);
			assert_non_null(strstr(r.body, "\"rate_limited\""));
			assert_true(r.retry_after >= 1);
			limited = 1;
		}
		reply_free(&r);
	}
	assert_true(limited);
	assert_true(ok >= 5);
	/* routes that are not open are not counted */
	assert_int_equal(request_on(NULL, kh_http_port(h), NULL, "GET", "/v1/hello", NULL, NULL, 0, NULL, &r), CURLE_OK);
	assert_int_equal(r.status, 200);
	reply_free(&r);
	/* another address has its own budget */
	assert_int_equal(hello_path_from(kh_http_port(h), "127.0.0.2", "/v1/open"), 200);
	kh_http_free(h);
}

/* Slow clients: the trickle of one connection (a header line at a time, never the end). */
struct slow {
	uint16_t port;
	const char *src;
	int fds[4];
	atomic_int stop;
	int closed_by_server; /* connections the server ended while they were still sending */
	int refused;          /* new connections closed at once (the address waits out its ban) */
	atomic_int held;      /* of its first four connections, those the server took */
	pthread_t th;
};

static void *slow_main(void *arg)
{
	struct slow *s = arg;

	for (int i = 0; i < 4; i++) {
		s->fds[i] = raw_connect(s->port, s->src);
		if (s->fds[i] >= 0 && send_str(s->fds[i], "GET /v1/hello HTTP/1.1\r\nHost: t\r\n") != 0) {
			close(s->fds[i]);
			s->fds[i] = -1;
		}
		if (s->fds[i] >= 0)
			atomic_fetch_add(&s->held, 1);
	}
	/* a header line every 200 ms, well inside the idle timeout; bounded: 300 rounds */
	for (int round = 0; round < 300 && !atomic_load(&s->stop); round++) {
		usleep(200000);
		for (int i = 0; i < 4; i++) {
			if (s->fds[i] >= 0 && (!still_open(s->fds[i]) || send_str(s->fds[i], "X-Slow: 1\r\n") != 0)) {
				s->closed_by_server++;
				close(s->fds[i]);
				s->fds[i] = -1;
			}
			if (s->fds[i] < 0) {
				/* as an attacker would: connect again and start over */
				int fd = raw_connect(s->port, s->src);
				if (fd >= 0 && send_str(fd, "GET /v1/hello HTTP/1.1\r\nHost: t\r\n") == 0 && (usleep(20000), still_open(fd)))
					s->fds[i] = fd;
				else {
					s->refused++;
					if (fd >= 0)
						close(fd);
				}
			}
		}
	}
	for (int i = 0; i < 4; i++)
		if (s->fds[i] >= 0)
			close(s->fds[i]);
	return NULL;
}

/*
 * Slowloris: four addresses hold every connection the server has (16 threads, 4 per address),
 * each sending a header line every 200 ms and never the blank line that ends the head. The
 * idle timeout never fires. The head deadline (1 s here) closes them, their addresses are
 * refused new connections for a while, and a genuine client from a fifth address is served.
 * Before, the trickle held all 16 for as long as it went on and the genuine client was dropped.
 */
static void test_slow_clients(void **state)
{
	struct kh_http_config cfg = {.threads = 16, .head_timeout_s = 1};
	static const char *const src[] = {"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"};
	struct slow sl[4];
	struct kh_http *h;
	long st = 0;
	int closed = 0;
	struct reply r;

	(void)state;
	h = start(&cfg);
	memset(sl, 0, sizeof sl);
	for (int i = 0; i < 4; i++) {
		sl[i].port = kh_http_port(h);
		sl[i].src = src[i];
		assert_int_equal(pthread_create(&sl[i].th, NULL, slow_main, &sl[i]), 0);
	}
	/* once the four addresses hold every connection (bounded wait), the genuine client comes; it
	 * retries a dropped connection, as clients do (bounded: 150 tries) */
	for (int n = 0; n < 100; n++) {
		int held = 0;
		for (int i = 0; i < 4; i++)
			held += atomic_load(&sl[i].held);
		if (held == 16)
			break;
		usleep(50000);
	}
	for (int n = 0; n < 150 && st != 200; n++) {
		st = hello_from(kh_http_port(h), "127.0.0.1");
		if (st != 200)
			usleep(200000);
	}
	for (int i = 0; i < 4; i++) {
		atomic_store(&sl[i].stop, 1);
		pthread_join(sl[i].th, NULL);
		closed += sl[i].closed_by_server;
	}
	assert_int_equal(st, 200);
	assert_true(closed > 0);
	assert_int_equal(request_on(NULL, kh_http_port(h), NULL, "GET", "/metrics", NULL, NULL, 0, NULL, &r), CURLE_OK);
	assert_non_null(strstr(r.body, "keyhole_http_deadline_closed_total "));
	assert_null(strstr(r.body, "keyhole_http_deadline_closed_total 0\n"));
	reply_free(&r);
	kh_http_free(h);
}

static CURLcode https_get(uint16_t port, const char *ca, long sslversion, struct reply *r)
{
	CURL *c = curl_easy_init();
	CURLcode rc;
	assert_non_null(c);
	curl_easy_setopt(c, CURLOPT_CAINFO, ca);
	curl_easy_setopt(c, CURLOPT_SSLVERSION, sslversion);
	rc = request_on(c, port, "https", "GET", "/v1/hello", NULL, NULL, 0, NULL, r);
	curl_easy_cleanup(c);
	return rc;
}

static void test_https(void **state)
{
	char *dir, certp[512], keyp[512];
	struct kh_http_config cfg = {0};
	struct kh_http *h;
	struct reply r;
	(void)state;

	if (!kh_http_tls_supported()) {
		/* Documented in docs/internals/http.md; the Debian 12 package has TLS. */
		skip();
	}
	dir = kh_test_tmpdir();
	write_cert(dir, certp, keyp, sizeof certp);
	cfg.cert_file = certp;
	cfg.key_file = keyp;
	h = start(&cfg);
	assert_int_equal(https_get(kh_http_port(h), certp, CURL_SSLVERSION_TLSv1_3, &r), CURLE_OK);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "{\"hello\":\"world\"}");
	reply_free(&r);
	/* TLS 1.2 and older are refused. */
	assert_int_equal(https_get(kh_http_port(h), certp,
				   CURL_SSLVERSION_TLSv1_2 | CURL_SSLVERSION_MAX_TLSv1_2, &r),
			 CURLE_SSL_CONNECT_ERROR);
	reply_free(&r);
	/* Plain HTTP on the HTTPS port gets no answer. */
	assert_true(request_on(NULL, kh_http_port(h), NULL, "GET", "/v1/hello", NULL, NULL, 0, NULL, &r) != CURLE_OK ||
		    r.status == 0);
	reply_free(&r);
	kh_http_free(h);

	/* A key file others can read is refused. */
	assert_int_equal(chmod(keyp, 0644), 0);
	assert_int_equal(kh_http_new(&cfg, &h), KH_OK);
	assert_int_equal(kh_http_start(h), KH_ERR_KEYFILE_PERM);
	kh_http_free(h);
	kh_test_rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ok_and_params),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_b64url),
		cmocka_unit_test(test_b64url_over_http),
		cmocka_unit_test(test_idempotency),
		cmocka_unit_test(test_metrics),
		cmocka_unit_test(test_concurrent),
		cmocka_unit_test(test_stop_in_flight),
		cmocka_unit_test(test_route_table),
		cmocka_unit_test(test_log_line),
		cmocka_unit_test(test_https),
		cmocka_unit_test(test_per_address_limit),
		cmocka_unit_test(test_framing),
		cmocka_unit_test(test_control_in_path),
		cmocka_unit_test(test_open_budget),
		cmocka_unit_test(test_slow_clients),
	};
	int rc;

	curl_global_init(CURL_GLOBAL_DEFAULT);
	rc = cmocka_run_group_tests(tests, NULL, NULL);
	curl_global_cleanup();
	return rc;
}
