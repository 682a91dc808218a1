/*
 * Shared libcurl helpers for the tests that drive a real HTTP server and for kh_upload_load
 * (see httputil.h). The request core asserts nothing, so the tool can use it; the cmocka
 * wrappers below it turn a missing or wrong answer into a test failure.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "httputil.h"
#include "keyhole/crypto.h"
#include "keyhole/store.h"

static kh_err take_key(void *arg, const struct kh_store_service_key *k)
{
	struct center_skey *sk = arg;
	if (k->key_id == 1 && k->version >= sk->version) {
		memcpy(sk->key, k->key, 32);
		sk->id = k->key_id;
		sk->version = k->version;
	}
	return KH_OK;
}

int center_service_key(const char *db, struct center_skey *sk)
{
	struct kh_store *st;
	kh_err r;

	memset(sk, 0, sizeof *sk);
	if ((r = kh_store_open(db, &st)) != KH_OK)
		return r;
	r = kh_store_service_keys_current(st, take_key, sk);
	kh_store_close(st);
	if (r == KH_OK && sk->version == 0)
		r = KH_ERR_NOTFOUND;
	return r;
}

#ifndef KH_HTTPUTIL_NO_CMOCKA
#include <time.h>

#include "keyhole/authority.h"
#include "keyhole/cas.h"
#include "keyhole/cert.h"
#include "keyhole/host.h"
#include "keyhole/http.h"
#include "keyhole/scramble.h"
#include "keyhole/sms.h"
#include "testutil.h"
#include "world.h"
#endif

static size_t on_data(char *p, size_t sz, size_t n, void *u)
{
	struct reply *r = u;
	char *b = realloc(r->body, r->len + sz * n + 1);
	if (!b)
		return 0; /* libcurl then fails the transfer with CURLE_WRITE_ERROR */
	memcpy(b + r->len, p, sz * n);
	r->len += sz * n;
	b[r->len] = 0;
	r->body = b;
	return sz * n;
}

static size_t on_header(char *p, size_t sz, size_t n, void *u)
{
	struct reply *r = u;
	if (sz * n >= 25 && strncasecmp(p, "Idempotent-Replayed: true", 25) == 0)
		r->replayed = 1;
	return sz * n;
}

CURLcode http_perform(CURL *c, const char *url, const char *method, const char *body, const char *idem,
		      const char *auth, long timeout, struct reply *out)
{
	char hdr[200];
	struct curl_slist *hl = NULL;
	CURLcode rc;

	memset(out, 0, sizeof *out);
	curl_easy_reset(c);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, timeout);
	if (method)
		curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, out);
	if (body) {
		hl = curl_slist_append(hl, "Content-Type: application/json");
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	}
	if (idem) {
		snprintf(hdr, sizeof hdr, "Idempotency-Key: %s", idem);
		hl = curl_slist_append(hl, hdr);
	}
	if (auth)
		hl = curl_slist_append(hl, auth);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
	rc = curl_easy_perform(c);
	if (rc == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
	curl_slist_free_all(hl);
	if (out->body)
		out->json = json_loads(out->body, 0, NULL);
	return rc;
}

void reply_free(struct reply *r)
{
	free(r->body);
	json_decref(r->json);
	memset(r, 0, sizeof *r);
}

#ifndef KH_HTTPUTIL_NO_CMOCKA
void http_req(const struct http_conn *hc, const char *method, const char *path, const char *body,
	      const char *idem, struct reply *out)
{
	char url[256];

	snprintf(url, sizeof url, "http://127.0.0.1:%u%s", hc->port, path);
	assert_int_equal(http_perform(hc->curl, url, method, body, idem, hc->auth, 60L, out), CURLE_OK);
}

json_t *http_expect(const struct http_conn *hc, const char *method, const char *path, const char *body,
		    const char *idem, long status, struct reply *r)
{
	http_req(hc, method, path, body, idem, r);
	if (r->status != status)
		fprintf(stderr, "%s %s -> %ld %s\n", method, path, r->status, r->body ? r->body : "");
	assert_int_equal(r->status, status);
	assert_non_null(r->json);
	return r->json;
}

void http_expect_error(const struct http_conn *hc, const char *method, const char *path, const char *body,
		       const char *idem, long status, const char *code)
{
	struct reply r;
	json_t *e;

	http_req(hc, method, path, body, idem, &r);
	if (r.status != status)
		fprintf(stderr, "%s %s -> %ld %s\n", method, path, r.status, r.body ? r.body : "");
	assert_int_equal(r.status, status);
	assert_false(r.replayed);
	assert_non_null(r.json);
	assert_true(json_is_object(r.json));
	assert_int_equal(json_object_size(r.json), 1);
	e = json_object_get(r.json, "error");
	assert_true(json_is_object(e));
	assert_int_equal(json_object_size(e), 2);
	assert_true(json_is_string(json_object_get(e, "message")));
	assert_true(json_string_length(json_object_get(e, "message")) > 0);
	assert_string_equal(json_string_value(json_object_get(e, "code")), code);
	reply_free(&r);
}

int64_t jint(const json_t *o, const char *k)
{
	json_t *v = json_object_get(o, k);
	assert_true(json_is_integer(v));
	return json_integer_value(v);
}

const char *jstr(const json_t *o, const char *k)
{
	json_t *v = json_object_get(o, k);
	assert_true(json_is_string(v));
	return json_string_value(v);
}

int64_t http_metric(const struct http_conn *hc, const char *name)
{
	struct reply r;
	const char *p;
	long long v = -1;

	http_req(hc, "GET", "/metrics", NULL, NULL, &r);
	assert_int_equal(r.status, 200);
	/* the sample line: the name at the start of a line, then its value */
	for (p = strstr(r.body, name); p && p > r.body && p[-1] != '\n'; p = strstr(p + 1, name))
		;
	assert_non_null(p);
	assert_int_equal(sscanf(p + strlen(name), " %lld", &v), 1);
	reply_free(&r);
	return v;
}

void center_rig_up(struct center_rig *r)
{
	memset(r, 0, sizeof *r);
	world_setup((void **)&r->w);
	r->db = kh_test_db(r->w->dir, "center.db");
	center_start(r->db, r->w->auth_dir, NULL, &r->sms, &r->h, &r->hc.port);
	r->hc.curl = curl_easy_init();
	assert_non_null(r->hc.curl);
}

void center_rig_down(struct center_rig *r)
{
	void *w = r->w;

	curl_easy_cleanup(r->hc.curl);
	center_stop(r->sms, r->h);
	kh_test_db_drop(r->db);
	world_teardown(&w);
	memset(r, 0, sizeof *r);
}

uint32_t center_card_body(struct kh_authority *auth, char *body, size_t cap)
{
	uint8_t sk[KH_ED25519_SK_LEN], pk[KH_ED25519_PK_LEN], der[KH_CERT_MAX];
	char b64[KH_CERT_MAX * 4 / 3 + 4];
	size_t len = 0;
	uint32_t ua = 0;

	assert_int_equal(kh_ed25519_keygen(sk, pk), KH_OK);
	kh_wipe(sk, sizeof sk);
	assert_int_equal(kh_authority_next_ua(auth, &ua), KH_OK);
	assert_int_equal(kh_authority_issue(auth, KH_ROLE_CARD, ua, KH_CERT_KEY_ED25519, pk, "sign", der, sizeof der, &len),
			 KH_OK);
	assert_int_equal(kh_b64url_encode(der, len, b64, sizeof b64), KH_OK);
	assert_true((size_t)snprintf(body, cap, "{\"certificate\":\"%s\"}", b64) < cap);
	return ua;
}

void center_start(const char *db, const char *authdir, const char *token, struct kh_sms **sms,
		  struct kh_http **h, uint16_t *port)
{
	struct kh_sms_config cfg = {0};
	struct kh_http_config hc = {0};

	cfg.db = db;
	cfg.authority_dir = authdir;
	if (token) {
		cfg.operator_token = (const uint8_t *)token;
		cfg.token_len = strlen(token);
	}
	assert_int_equal(kh_sms_new(&cfg, sms, NULL), KH_OK);
	hc.port = 0;
	hc.threads = 0; /* KH_HTTP_THREADS */
	assert_int_equal(kh_http_new(&hc, h), KH_OK);
	assert_int_equal(kh_sms_add_routes(*sms, *h), KH_OK);
	assert_int_equal(kh_http_start(*h), KH_OK);
	*port = kh_http_port(*h);
	assert_true(*port != 0);
}

void center_stop(struct kh_sms *sms, struct kh_http *h)
{
	kh_http_free(h);
	kh_sms_free(sms);
}

int center_watch(const char *db, struct kh_transport *dec, const struct kh_cas_signer *sg, struct kh_transport *cam,
		 struct kh_transport *card, uint32_t product, int64_t t)
{
	struct center_skey sk = {0};
	struct kh_host_cas cas;
	struct kh_cw_answer cw;
	struct kh_ecm e = {0};
	uint8_t ecm[KH_ECM_MAX];
	size_t len;
	kh_err r;

	assert_int_equal(center_service_key(db, &sk), KH_OK);
	e.h.table_id = KH_ECM_TID_EVEN;
	e.h.key_id = sk.id;
	e.h.key_version = sk.version;
	e.alg = KH_SCR_CSA2;
	e.cw_len = 8;
	e.access = KH_ECM_PRODUCT;
	e.product = product;
	e.time = (uint64_t)t;
	assert_int_equal(kh_ecm_seal(sk.key, sg, &e, ecm, sizeof ecm, &len), KH_OK);
	kh_wipe(&sk, sizeof sk);
	kh_host_cas_init(&cas, dec, cam, card, 0);
	assert_int_equal(kh_host_cas_connect(&cas), KH_OK);
	r = kh_host_cas_ecm(&cas, ecm, len, &cw, NULL);
	kh_wipe(&cw, sizeof cw);
	kh_host_cas_wipe(&cas);
	return r;
}
#endif
