/*
 * The management center over HTTP (src/center/sms/): a real server on an ephemeral
 * port with a temporary authority and store, driven with libcurl, and real card modules
 * personalised in-process that apply the EMMs it queues. What the cards report (CAS STATUS) is
 * the judge: credit, rights, service keys and the export flag of seed 001 (a first card is
 * authorised at once, a replacement only once the old card's data is forfeited).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>

#include "httputil.h"
#include "testutil.h"
#include "world.h"

#include "keyhole/apdu.h"
#include "keyhole/buf.h"
#include "keyhole/cas.h"
#include "keyhole/crypto.h"
#include "keyhole/http.h"
#include "keyhole/host.h"
#include "keyhole/m1.h"
#include "keyhole/scramble.h"
#include "keyhole/sms.h"
#include "keyhole/store.h"
#include "keyhole/upload.h"

#define PRODUCT 7u

struct sms_world {
	struct world *w;
	char *db;
	struct kh_sms *sms;
	struct kh_http *h;
	uint16_t port;
	CURL *curl;
	int64_t seen_emm; /* last queue id applied */
	unsigned others;  /* EMMs deliver() met for other cards */
};

/* An Authorization header every request carries, when set (test_operator_token). */
static const char *g_auth;

/* One request; body NULL for none; idem NULL for no Idempotency-Key. Parses a JSON answer. */
static void req(struct sms_world *sw, const char *method, const char *path, const char *body, const char *idem,
		struct reply *out)
{
	struct http_conn hc = {sw->curl, sw->port, g_auth};
	http_req(&hc, method, path, body, idem, out);
}

/* The request must answer status; returns the parsed body (owned by r). */
static json_t *expect(struct sms_world *sw, const char *method, const char *path, const char *body, long status,
		      struct reply *r)
{
	struct http_conn hc = {sw->curl, sw->port, g_auth};
	return http_expect(&hc, method, path, body, NULL, status, r);
}

/* An error answer has exactly {"error": {"code": code, "message": "..."}}. */
static void expect_error(struct sms_world *sw, const char *method, const char *path, const char *body,
			 const char *idem, long status, const char *code)
{
	struct http_conn hc = {sw->curl, sw->port, g_auth};
	http_expect_error(&hc, method, path, body, idem, status, code);
}

static int setup(void **state)
{
	struct sms_world *sw = calloc(1, sizeof *sw);

	assert_non_null(sw);
	world_setup((void **)&sw->w);
	sw->db = kh_test_db(sw->w->dir, "center.db");
	center_start(sw->db, sw->w->auth_dir, NULL, &sw->sms, &sw->h, &sw->port);
	sw->curl = curl_easy_init();
	assert_non_null(sw->curl);
	*state = sw;
	return 0;
}

static int teardown(void **state)
{
	struct sms_world *sw = *state;
	void *w = sw->w;

	curl_easy_cleanup(sw->curl);
	center_stop(sw->sms, sw->h);
	kh_test_db_drop(sw->db);
	world_teardown(&w);
	free(sw);
	return 0;
}

/* The card's signing certificate, as the card gives it (GET CERT P1=1), in base64url. */
static char *sign_cert_b64(struct mod *m)
{
	uint8_t resp[KH_APDU_MAX_RESP];
	size_t dlen = 0;
	char *b64;

	assert_int_equal(send_apdu(&m->t, KH_CLA, KH_INS_GET_CERT, 1, 0, NULL, 0, resp, sizeof resp, &dlen), 0x9000);
	b64 = malloc(kh_b64url_len(dlen) + 1);
	assert_non_null(b64);
	assert_int_equal(kh_b64url_encode(resp, dlen, b64, kh_b64url_len(dlen) + 1), KH_OK);
	return b64;
}

static void register_card(struct sms_world *sw, struct mod *m)
{
	char *b64 = sign_cert_b64(m), *body, ua[9];
	struct reply r;
	json_t *j;

	assert_true(asprintf(&body, "{\"certificate\":\"%s\"}", b64) > 0);
	j = expect(sw, "POST", "/v1/cards", body, 201, &r);
	snprintf(ua, sizeof ua, "%08X", m->ua);
	assert_string_equal(jstr(j, "ua"), ua);
	assert_string_equal(jstr(j, "state"), "issued");
	reply_free(&r);
	expect_error(sw, "POST", "/v1/cards", body, NULL, 409, "exists");
	free(body);
	free(b64);
}

/* What a batch of EMMs told one card, opened with its Kp from the authority. */
struct told {
	unsigned emms;
	unsigned set_key, set_all, entitle, revoke, add_credit, auth_export, ack_usage, set_signer;
	uint32_t credit_total, last_reload;
	uint32_t entitled_product;
	uint32_t key_version_max;
	int auth_value;
	uint32_t last_seq;
};

static void open_emm(struct sms_world *sw, uint32_t ua, const uint8_t *sec, size_t n, struct told *t)
{
	uint8_t kp[32], ku[32], cmds[KH_EMM_CMDS_MAX];
	struct kh_emm_hdr h;
	struct kh_tlv tlv;
	struct kh_rd rd;
	size_t len = 0;
	int k;

	assert_int_equal(kh_emm_peek(sec, n, &h), KH_OK);
	assert_int_equal(h.addr_type, KH_EMM_UNIQUE);
	assert_int_equal(h.addr, ua);
	/* seq strictly increasing per card */
	assert_true(h.seq > t->last_seq);
	t->last_seq = h.seq;
	assert_int_equal(kh_authority_card_keys(sw->w->auth, ua, kp, ku), KH_OK);
	assert_int_equal(kh_emm_open(kp, sec, n, cmds, sizeof cmds, &len), KH_OK);
	kh_wipe(kp, sizeof kp);
	kh_wipe(ku, sizeof ku);
	t->emms++;
	kh_rd_init(&rd, cmds, len);
	while ((k = kh_tlv_next(&rd, &tlv)) == 1) {
		switch (tlv.tag) {
		case KH_EMM_SET_KEY:
			assert_int_equal(tlv.len, 1 + 4 + 32);
			t->set_key++;
			if (kh_get_be32(tlv.v + 1) > t->key_version_max)
				t->key_version_max = kh_get_be32(tlv.v + 1);
			break;
		case KH_EMM_SET_ALL_KEY: t->set_all++; break;
		case KH_EMM_ENTITLE:
			t->entitle++;
			t->entitled_product = kh_get_be32(tlv.v);
			break;
		case KH_EMM_REVOKE: t->revoke++; break;
		case KH_EMM_ADD_CREDIT:
			t->add_credit++;
			t->credit_total += kh_get_be32(tlv.v);
			t->last_reload = kh_get_be32(tlv.v + 4);
			break;
		case KH_EMM_AUTH_EXPORT:
			t->auth_export++;
			t->auth_value = tlv.v[0];
			break;
		case KH_EMM_ACK_USAGE: t->ack_usage++; break;
		case KH_EMM_SET_SIGNER: t->set_signer++; break;
		default: fail_msg("unexpected EMM command %u", tlv.tag);
		}
	}
	assert_int_equal(k, 0);
	kh_wipe(cmds, sizeof cmds);
}

/*
 * Fetch the broadcast queue past what was applied, open every EMM for card m, apply them to the
 * card in queue order (as the headend would carry them), and say what they told it. EMMs for
 * other cards are counted in sw->others and left alone.
 */
static struct told deliver(struct sms_world *sw, struct mod *m, uint32_t *last_seq)
{
	struct told t = {0};
	struct reply r;
	char path[64];
	json_t *j, *arr, *e;
	size_t i;

	t.last_seq = *last_seq;
	snprintf(path, sizeof path, "/v1/emm?since=%lld", (long long)sw->seen_emm);
	j = expect(sw, "GET", path, NULL, 200, &r);
	arr = json_object_get(j, "emms");
	assert_true(json_is_array(arr));
	json_array_foreach(arr, i, e) {
		uint8_t sec[KH_EMM_MAX];
		size_t n = 0;
		char ua[9];
		struct kh_host_cas direct = {0};

		snprintf(ua, sizeof ua, "%08X", m->ua);
		assert_true(jint(e, "id") > sw->seen_emm);
		sw->seen_emm = jint(e, "id");
		assert_int_equal(jint(e, "address_type"), 0);
		if (strcmp(jstr(e, "address"), ua) != 0) {
			/* another card's (a replaced card's REVOKEs): not this card's to apply */
			sw->others++;
			continue;
		}
		assert_int_equal(kh_json_get_b64(e, "section", sec, sizeof sec, &n, 0), KH_OK);
		assert_int_equal(jint(e, "seq"), kh_get_be32(sec + 9));
		open_emm(sw, m->ua, sec, n, &t);
		direct.card = &m->t;
		assert_int_equal(kh_host_cas_emm(&direct, sec, n), KH_OK);
	}
	assert_int_equal(jint(j, "last_id"), sw->seen_emm);
	reply_free(&r);
	*last_seq = t.last_seq;
	return t;
}

static struct kh_cas_status status_of(struct mod *m)
{
	struct kh_host_cas c = {0};
	struct kh_cas_status st;
	c.card = &m->t;
	assert_int_equal(kh_host_cas_status(&c, &st), KH_OK);
	return st;
}

static int64_t metric(struct sms_world *sw, const char *name)
{
	struct http_conn hc = {sw->curl, sw->port, g_auth};
	return http_metric(&hc, name);
}

/* ---- the whole card life of seed 001, judged by the cards themselves ---- */

static void test_card_life(void **state)
{
	struct sms_world *sw = *state;
	struct mod *c1 = &sw->w->c1, *c2 = &sw->w->c2;
	uint32_t seq1 = 0, seq2 = 0;
	struct kh_cas_status st;
	struct told t;
	struct reply r, r2;
	char path[128], body[256], ua1[9], ua2[9];
	int64_t sub, now = (int64_t)time(NULL);
	json_t *j, *cards;

	snprintf(ua1, sizeof ua1, "%08X", c1->ua);
	snprintf(ua2, sizeof ua2, "%08X", c2->ua);

	/* catalogue, policy, subscriber with a subscription before any card */
	j = expect(sw, "PUT", "/v1/credit-policy", "{\"initial_credit\":100,\"reload_amount\":25}", 200, &r);
	reply_free(&r);
	j = expect(sw, "GET", "/v1/credit-policy", NULL, 200, &r);
	assert_int_equal(jint(j, "initial_credit"), 100);
	assert_int_equal(jint(j, "reload_amount"), 25);
	reply_free(&r);
	j = expect(sw, "POST", "/v1/products", "{\"id\":7,\"name\":\"Sport\"}", 201, &r);
	assert_int_equal(jint(j, "id"), PRODUCT);
	reply_free(&r);
	expect_error(sw, "POST", "/v1/products", "{\"id\":7,\"name\":\"Again\"}", NULL, 409, "exists");
	j = expect(sw, "POST", "/v1/subscribers", "{\"name\":\"Alice\"}", 201, &r);
	sub = jint(j, "id");
	reply_free(&r);
	snprintf(path, sizeof path, "/v1/subscribers/%lld/subscriptions", (long long)sub);
	snprintf(body, sizeof body, "{\"product_id\":7,\"start\":%lld,\"end\":%lld}", (long long)(now - 60),
		 (long long)(now + 86400));
	j = expect(sw, "POST", path, body, 201, &r);
	assert_int_equal(jint(j, "emms_queued"), 0); /* no card yet */
	reply_free(&r);

	register_card(sw, c1);
	register_card(sw, c2);

	/* assign the first card: one EMM with everything, export authorised */
	snprintf(path, sizeof path, "/v1/cards/%s/assign", ua1);
	snprintf(body, sizeof body, "{\"subscriber_id\":%lld}", (long long)sub);
	j = expect(sw, "POST", path, body, 200, &r);
	assert_string_equal(jstr(j, "state"), "active");
	assert_true(json_is_true(json_object_get(j, "export_authorised")));
	/* two: the ECM and EMM signers' certificates (2 x 413 bytes) leave no room for the rest */
	assert_int_equal(jint(j, "emms_queued"), 2);
	reply_free(&r);
	expect_error(sw, "POST", path, body, NULL, 409, "card_state");
	t = deliver(sw, c1, &seq1);
	assert_int_equal(t.emms, 2);
	assert_int_equal(t.set_signer, 2);
	assert_int_equal(t.set_all, 1);
	assert_int_equal(t.set_key, 1);
	assert_int_equal(t.entitle, 1);
	assert_int_equal(t.entitled_product, PRODUCT);
	assert_int_equal(t.add_credit, 1);
	assert_int_equal(t.credit_total, 100);
	assert_int_equal(t.last_reload, 1);
	assert_int_equal(t.auth_export, 1);
	assert_int_equal(t.auth_value, 1);
	st = status_of(c1);
	assert_int_equal(st.credit, 100);
	assert_int_equal(st.export_ok, 1);
	assert_int_equal(st.nrights, 1);
	assert_int_equal(st.rights[0].product, PRODUCT);
	assert_int_equal(st.nkeys, 1);
	assert_int_equal(st.keys[0].id, 1);
	assert_int_equal(st.keys[0].version, 1);

	/* replace by the second card: same rights and initial credit, NOT authorised to export */
	snprintf(path, sizeof path, "/v1/cards/%s/replace", ua1);
	snprintf(body, sizeof body, "{\"new_ua\":\"%s\"}", ua2);
	j = expect(sw, "POST", path, body, 200, &r);
	assert_string_equal(jstr(j, "ua"), ua2);
	assert_string_equal(jstr(j, "state"), "active");
	assert_false(json_is_true(json_object_get(j, "export_authorised")));
	reply_free(&r);
	{
		unsigned others = sw->others;
		t = deliver(sw, c2, &seq2);
		/* the old card's REVOKE went by too: it stops working */
		assert_int_equal(sw->others, others + 1);
	}
	assert_int_equal(t.emms, 2); /* the signers, then the rest */
	assert_int_equal(t.auth_export, 0);
	assert_int_equal(t.entitle, 1);
	assert_int_equal(t.credit_total, 100);
	st = status_of(c2);
	assert_int_equal(st.credit, 100);
	assert_int_equal(st.export_ok, 0);
	assert_int_equal(st.nrights, 1);
	{
		/* the old card applies its queue: what it had is a replay, the REVOKE takes its right */
		struct kh_host_cas direct = {0};
		json_t *e;
		size_t i, ok = 0;
		direct.card = &c1->t;
		assert_int_equal(status_of(c1).nrights, 1);
		snprintf(path, sizeof path, "/v1/cards/%s/emm?since=0", ua1);
		j = expect(sw, "GET", path, NULL, 200, &r);
		json_array_foreach(json_object_get(j, "emms"), i, e) {
			uint8_t sec[KH_EMM_MAX];
			size_t n = 0;
			assert_int_equal(kh_json_get_b64(e, "section", sec, sizeof sec, &n, 0), KH_OK);
			kh_err er = kh_host_cas_emm(&direct, sec, n);
			assert_true(er == KH_OK || er == KH_ERR_EMM_REPLAY);
			ok += er == KH_OK;
		}
		reply_free(&r);
		assert_int_equal(ok, 1);
		assert_int_equal(status_of(c1).nrights, 0);
	}

	/* the subscriber's view */
	snprintf(path, sizeof path, "/v1/subscribers/%lld", (long long)sub);
	j = expect(sw, "GET", path, NULL, 200, &r);
	assert_string_equal(jstr(j, "name"), "Alice");
	cards = json_object_get(j, "cards");
	assert_int_equal(json_array_size(cards), 2);
	for (size_t i = 0; i < 2; i++) {
		json_t *c = json_array_get(cards, i);
		if (strcmp(jstr(c, "ua"), ua1) == 0) {
			assert_string_equal(jstr(c, "state"), "replaced");
			assert_string_equal(jstr(c, "replaced_by"), ua2);
		} else {
			assert_string_equal(jstr(c, "state"), "active");
		}
	}
	assert_int_equal(json_array_size(json_object_get(j, "subscriptions")), 1);
	assert_int_equal(json_array_size(json_object_get(j, "invoices")), 0);
	reply_free(&r);

	/* only a replaced card can be forfeited; forfeiting authorises the new card */
	snprintf(path, sizeof path, "/v1/cards/%s/forfeit", ua2);
	expect_error(sw, "POST", path, NULL, NULL, 409, "card_state");
	snprintf(path, sizeof path, "/v1/cards/%s/forfeit", ua1);
	j = expect(sw, "POST", path, NULL, 200, &r);
	assert_string_equal(jstr(j, "state"), "closed");
	assert_string_equal(jstr(j, "closed_reason"), "forfeited");
	assert_string_equal(jstr(j, "export_authorised_card"), ua2);
	reply_free(&r);
	t = deliver(sw, c2, &seq2);
	assert_int_equal(t.emms, 1);
	assert_int_equal(t.auth_export, 1);
	assert_int_equal(t.auth_value, 1);
	assert_int_equal(t.set_key + t.add_credit + t.entitle, 0);
	st = status_of(c2);
	assert_int_equal(st.export_ok, 1);

	/* reload: an Idempotency-Key is required; a repeat answers the same and queues nothing */
	snprintf(path, sizeof path, "/v1/cards/%s/reload", ua2);
	expect_error(sw, "POST", path, NULL, NULL, 400, "invalid_argument");
	req(sw, "POST", path, NULL, "reload-abc-1", &r);
	assert_int_equal(r.status, 200);
	assert_int_equal(r.replayed, 0);
	assert_int_equal(jint(r.json, "amount"), 25);
	assert_int_equal(jint(r.json, "reload_id"), 2);
	req(sw, "POST", path, NULL, "reload-abc-1", &r2);
	assert_int_equal(r2.status, 200);
	assert_int_equal(r2.replayed, 1);
	assert_string_equal(r.body, r2.body);
	reply_free(&r);
	reply_free(&r2);
	snprintf(path, sizeof path, "/v1/cards/%s/reload", ua1);
	expect_error(sw, "POST", path, NULL, "reload-abc-1", 422, "idempotency_mismatch");
	t = deliver(sw, c2, &seq2);
	assert_int_equal(t.emms, 1);
	assert_int_equal(t.add_credit, 1);
	assert_int_equal(t.credit_total, 25);
	assert_int_equal(t.last_reload, 2);
	st = status_of(c2);
	assert_int_equal(st.credit, 125);

	/* service key rotation reaches the active card only */
	j = expect(sw, "POST", "/v1/service-keys/rotate", "{\"key_id\":1}", 201, &r);
	assert_int_equal(jint(j, "version"), 2);
	assert_int_equal(jint(j, "emms_queued"), 1);
	reply_free(&r);
	t = deliver(sw, c2, &seq2);
	assert_int_equal(t.set_key, 1);
	assert_int_equal(t.key_version_max, 2);
	st = status_of(c2);
	assert_int_equal(st.nkeys, 2);

	/* unsubscribe: REVOKE */
	snprintf(path, sizeof path, "/v1/subscribers/%lld/subscriptions/7", (long long)sub);
	j = expect(sw, "DELETE", path, NULL, 200, &r);
	assert_int_equal(jint(j, "emms_queued"), 1);
	reply_free(&r);
	expect_error(sw, "DELETE", path, NULL, NULL, 404, "not_found");
	t = deliver(sw, c2, &seq2);
	assert_int_equal(t.revoke, 1);
	st = status_of(c2);
	assert_int_equal(st.nrights, 0);

	/* one card's queue, for a decoder with a line: c2's EMMs only, in order */
	snprintf(path, sizeof path, "/v1/cards/%s/emm?since=0", ua2);
	j = expect(sw, "GET", path, NULL, 200, &r);
	assert_int_equal(json_array_size(json_object_get(j, "emms")), 6);
	reply_free(&r);
	assert_int_equal(seq1, 2);
	assert_int_equal(seq2, 6);

	/* every EMM queued is counted (the old card's REVOKE included) */
	assert_int_equal(metric(sw, "keyhole_emms_queued_total"), 9);
}

/* ---- refusals: foreign certificates, bad input, unknown things; the exact error shape ---- */

static void test_refusals(void **state)
{
	struct sms_world *sw = *state;
	char *b64, *body;
	struct reply r;

	/* a card of another operator */
	b64 = sign_cert_b64(&sw->w->fx);
	assert_true(asprintf(&body, "{\"certificate\":\"%s\"}", b64) > 0);
	expect_error(sw, "POST", "/v1/cards", body, NULL, 403, "certificate");
	free(body);
	free(b64);
	expect_error(sw, "POST", "/v1/cards", "{\"certificate\":\"not base64!\"}", NULL, 400, "invalid_argument");
	expect_error(sw, "POST", "/v1/cards", "{}", NULL, 400, "invalid_argument");
	expect_error(sw, "POST", "/v1/cards", "{\"certificate\":", NULL, 400, "malformed");
	expect_error(sw, "POST", "/v1/subscribers", "{\"name\":\"\"}", NULL, 400, "invalid_argument");
	expect_error(sw, "POST", "/v1/subscribers", "{\"name\":7}", NULL, 400, "invalid_argument");
	expect_error(sw, "GET", "/v1/subscribers/0", NULL, NULL, 400, "invalid_argument");
	expect_error(sw, "GET", "/v1/subscribers/99", NULL, NULL, 404, "not_found");
	expect_error(sw, "GET", "/v1/cards/12345", NULL, NULL, 400, "invalid_argument");
	expect_error(sw, "GET", "/v1/cards/0000ABCD", NULL, NULL, 404, "not_found");
	expect_error(sw, "POST", "/v1/cards/0000ABCD/assign", "{\"subscriber_id\":1}", NULL, 404, "not_found");
	expect_error(sw, "POST", "/v1/cards/0000ABCD/assign", "{\"subscriber_id\":\"1\"}", NULL, 400,
		     "invalid_argument");
	expect_error(sw, "POST", "/v1/channels", "{\"name\":\"C\",\"product_id\":3}", NULL, 404, "not_found");
	expect_error(sw, "POST", "/v1/events",
		     "{\"name\":\"E\",\"price\":1,\"channel_id\":1,\"start\":10,\"end\":5}", NULL, 400,
		     "invalid_argument");
	expect_error(sw, "PUT", "/v1/credit-policy", "{\"initial_credit\":-1,\"reload_amount\":1}", NULL, 400,
		     "invalid_argument");
	expect_error(sw, "POST", "/v1/service-keys/rotate", "{\"key_id\":256}", NULL, 400, "invalid_argument");
	expect_error(sw, "GET", "/v1/emm?limit=0", NULL, NULL, 400, "invalid_argument");
	expect_error(sw, "GET", "/v1/emm?since=-1", NULL, NULL, 400, "invalid_argument");
	expect_error(sw, "GET", "/v1/nothing", NULL, NULL, 404, "not_found");

	/* a fresh center has service key 1 version 1, and answers ids and versions, never a key */
	req(sw, "GET", "/v1/service-keys", NULL, NULL, &r);
	assert_int_equal(r.status, 200);
	assert_int_equal(json_array_size(json_object_get(r.json, "service_keys")), 1);
	assert_null(strstr(r.body, "\"key\""));
	reply_free(&r);
	/* the catalogue round trip */
	req(sw, "POST", "/v1/products", "{\"name\":\"Movies\"}", NULL, &r);
	assert_int_equal(r.status, 201);
	assert_int_equal(jint(r.json, "id"), 1);
	reply_free(&r);
	req(sw, "POST", "/v1/channels", "{\"name\":\"M1\",\"product_id\":1}", NULL, &r);
	assert_int_equal(r.status, 201);
	reply_free(&r);
	req(sw, "POST", "/v1/events", "{\"name\":\"Film\",\"price\":30,\"channel_id\":1,\"start\":5,\"end\":10}", NULL, &r);
	assert_int_equal(r.status, 201);
	reply_free(&r);
	req(sw, "GET", "/v1/events", NULL, NULL, &r);
	assert_int_equal(r.status, 200);
	assert_int_equal(json_array_size(json_object_get(r.json, "events")), 1);
	assert_int_equal(jint(json_array_get(json_object_get(r.json, "events"), 0), "price"), 30);
	reply_free(&r);
	/* a reload with no reload amount in the policy is refused, and queues nothing */
	req(sw, "POST", "/v1/subscribers", "{\"name\":\"Bob\"}", NULL, &r);
	reply_free(&r);
	register_card(sw, &sw->w->c1);
	char path[64];
	snprintf(path, sizeof path, "/v1/cards/%08X/assign", sw->w->c1.ua);
	req(sw, "POST", path, "{\"subscriber_id\":1}", NULL, &r);
	assert_int_equal(r.status, 200);
	reply_free(&r);
	snprintf(path, sizeof path, "/v1/cards/%08X/reload", sw->w->c1.ua);
	expect_error(sw, "POST", path, NULL, "k1", 409, "no_reload_amount");
	req(sw, "GET", "/v1/emm", NULL, NULL, &r);
	assert_int_equal(json_array_size(json_object_get(r.json, "emms")), 1); /* the assignment only */
	reply_free(&r);
}

/* ---- an assignment too big for one EMM, and the card's key capacity ---- */

static void test_split(void **state)
{
	struct sms_world *sw = *state;
	struct mod *c1 = &sw->w->c1;
	int64_t now = (int64_t)time(NULL);
	uint32_t seq1 = 0;
	struct kh_cas_status st;
	char body[256], path[96];
	struct reply r;
	struct told t;

	/* four key ids with two versions each: the 8 keys a card holds */
	for (int round = 0; round < 2; round++)
		for (int id = round ? 1 : 2; id <= 4; id++) {
			snprintf(body, sizeof body, "{\"key_id\":%d}", id);
			expect(sw, "POST", "/v1/service-keys/rotate", body, 201, &r);
			reply_free(&r);
		}
	expect(sw, "POST", "/v1/subscribers", "{\"name\":\"Many\"}", 201, &r);
	reply_free(&r);
	for (int p = 1; p <= 30; p++) {
		snprintf(body, sizeof body, "{\"name\":\"P%d\"}", p);
		expect(sw, "POST", "/v1/products", body, 201, &r);
		reply_free(&r);
		snprintf(body, sizeof body, "{\"product_id\":%d,\"start\":%lld,\"end\":%lld}", p, (long long)now - 10,
			 (long long)now + 1000);
		expect(sw, "POST", "/v1/subscribers/1/subscriptions", body, 201, &r);
		reply_free(&r);
	}
	register_card(sw, c1);
	snprintf(path, sizeof path, "/v1/cards/%08X/assign", c1->ua);
	expect(sw, "POST", path, "{\"subscriber_id\":1}", 200, &r);
	/* 2 x 413 (signers) + 35 + 8 x 40 + 30 x 23 + 4 bytes, at most 983 an EMM */
	assert_int_equal(jint(r.json, "emms_queued"), 2);
	reply_free(&r);
	t = deliver(sw, c1, &seq1);
	assert_int_equal(t.emms, 2);
	assert_int_equal(t.set_key, 8);
	assert_int_equal(t.entitle, 30);
	assert_int_equal(t.auth_export, 1);
	assert_int_equal(seq1, 2);
	st = status_of(c1);
	assert_int_equal(st.nkeys, 8);
	assert_int_equal(st.nrights, 30);
	assert_int_equal(st.export_ok, 1);

	/* a card holds 32 rights: the 33rd product is refused, a renewal is not */
	for (int p = 31; p <= 33; p++) {
		snprintf(body, sizeof body, "{\"name\":\"P%d\"}", p);
		expect(sw, "POST", "/v1/products", body, 201, &r);
		reply_free(&r);
	}
	for (int p = 31; p <= 33; p++) {
		snprintf(body, sizeof body, "{\"product_id\":%d,\"start\":%lld,\"end\":%lld}", p, (long long)now - 10,
			 (long long)now + 1000);
		if (p == 33) {
			expect_error(sw, "POST", "/v1/subscribers/1/subscriptions", body, NULL, 409, "too_many_subscriptions");
			continue;
		}
		expect(sw, "POST", "/v1/subscribers/1/subscriptions", body, 201, &r);
		reply_free(&r);
	}
	snprintf(body, sizeof body, "{\"product_id\":1,\"start\":%lld,\"end\":%lld}", (long long)now - 10,
		 (long long)now + 5000);
	expect(sw, "POST", "/v1/subscribers/1/subscriptions", body, 201, &r);
	reply_free(&r);
	t = deliver(sw, c1, &seq1);
	assert_int_equal(t.entitle, 3);
	st = status_of(c1);
	assert_int_equal(st.nrights, 32);

	/* a fifth id would not fit in the cards: refused, nothing queued */
	expect_error(sw, "POST", "/v1/service-keys/rotate", "{\"key_id\":5}", NULL, 409, "too_many_key_ids");
	t = deliver(sw, c1, &seq1);
	assert_int_equal(t.emms, 0);
	/* rotating an existing id replaces the card's older version of it */
	expect(sw, "POST", "/v1/service-keys/rotate", "{\"key_id\":3}", 201, &r);
	reply_free(&r);
	t = deliver(sw, c1, &seq1);
	assert_int_equal(t.set_key, 1);
	assert_int_equal(t.key_version_max, 3);
	st = status_of(c1);
	assert_int_equal(st.nkeys, 8);
}

/* ---- several HTTP threads and clients at once: one connection per thread, one answer per key ---- */

#define NCLIENTS 8
#define NSUBS 5

struct client {
	uint16_t port;
	int idx;
	char ua[9];
	long sub_status[NSUBS];
	int64_t sub_id[NSUBS];
	long same_status, own_status;
	char *same_body;
	int64_t own_reload;
};

/* No cmocka assertion here (other thread): results are checked after the join. */
static void *client_run(void *arg)
{
	struct client *cl = arg;
	CURL *c = curl_easy_init();
	char path[96], body[64], key[32];

	for (int j = 0; j < NSUBS; j++) {
		struct reply r;
		char url[128];

		snprintf(url, sizeof url, "http://127.0.0.1:%u/v1/subscribers", cl->port);
		snprintf(body, sizeof body, "{\"name\":\"T%d-%d\"}", cl->idx, j);
		if (http_perform(c, url, NULL, body, NULL, NULL, 0L, &r) == CURLE_OK) {
			json_t *id = r.json ? json_object_get(r.json, "id") : NULL;
			cl->sub_status[j] = r.status;
			cl->sub_id[j] = json_is_integer(id) ? json_integer_value(id) : -1;
		}
		reply_free(&r);
	}
	for (int k = 0; k < 2; k++) {
		struct reply r;
		char url[128];

		snprintf(path, sizeof path, "/v1/cards/%s/reload", cl->ua);
		snprintf(url, sizeof url, "http://127.0.0.1:%u%s", cl->port, path);
		snprintf(key, sizeof key, k == 0 ? "same-key" : "own-%d", cl->idx);
		if (http_perform(c, url, "POST", NULL, key, NULL, 0L, &r) == CURLE_OK) {
			if (k == 0) {
				cl->same_status = r.status;
				cl->same_body = r.body;
				r.body = NULL;
			} else {
				json_t *id = r.json ? json_object_get(r.json, "reload_id") : NULL;
				cl->own_status = r.status;
				cl->own_reload = json_is_integer(id) ? json_integer_value(id) : -1;
			}
		}
		reply_free(&r);
	}
	curl_easy_cleanup(c);
	return NULL;
}

static void test_concurrent(void **state)
{
	struct sms_world *sw = *state;
	struct mod *c1 = &sw->w->c1;
	struct client cl[NCLIENTS];
	pthread_t th[NCLIENTS];
	int64_t ids[NCLIENTS * NSUBS];
	uint32_t seq1 = 0;
	char path[96];
	struct reply r;
	struct told t;
	size_t n = 0;

	expect(sw, "PUT", "/v1/credit-policy", "{\"initial_credit\":0,\"reload_amount\":10}", 200, &r);
	reply_free(&r);
	expect(sw, "POST", "/v1/subscribers", "{\"name\":\"Owner\"}", 201, &r);
	reply_free(&r);
	register_card(sw, c1);
	snprintf(path, sizeof path, "/v1/cards/%08X/assign", c1->ua);
	expect(sw, "POST", path, "{\"subscriber_id\":1}", 200, &r);
	reply_free(&r);

	memset(cl, 0, sizeof cl);
	for (int i = 0; i < NCLIENTS; i++) {
		cl[i].port = sw->port;
		cl[i].idx = i;
		snprintf(cl[i].ua, sizeof cl[i].ua, "%08X", c1->ua);
		assert_int_equal(pthread_create(&th[i], NULL, client_run, &cl[i]), 0);
	}
	for (int i = 0; i < NCLIENTS; i++)
		assert_int_equal(pthread_join(th[i], NULL), 0);

	for (int i = 0; i < NCLIENTS; i++) {
		for (int j = 0; j < NSUBS; j++) {
			assert_int_equal(cl[i].sub_status[j], 201);
			assert_true(cl[i].sub_id[j] > 1);
			for (size_t k = 0; k < n; k++)
				assert_true(ids[k] != cl[i].sub_id[j]);
			ids[n++] = cl[i].sub_id[j];
		}
		/* every client sending "same-key" got the one first answer */
		assert_int_equal(cl[i].same_status, 200);
		assert_non_null(cl[i].same_body);
		assert_string_equal(cl[i].same_body, cl[0].same_body);
		assert_int_equal(cl[i].own_status, 200);
		for (int k = 0; k < i; k++)
			assert_true(cl[k].own_reload != cl[i].own_reload);
	}
	for (int i = 0; i < NCLIENTS; i++)
		free(cl[i].same_body);

	/* 1 assignment + 1 shared reload + one per client, applied in order: credit 10 x 9 */
	t = deliver(sw, c1, &seq1);
	assert_int_equal(t.emms, 1 + 1 + NCLIENTS);
	assert_int_equal(t.add_credit, 1 + NCLIENTS);
	assert_int_equal(seq1, 1 + 1 + NCLIENTS);
	assert_int_equal(status_of(c1).credit, 10 * (1 + NCLIENTS));
	assert_int_equal(metric(sw, "keyhole_emms_queued_total"), 1 + 1 + NCLIENTS);
}

/* ---- seed 001 end to end: a replaced card's pay-per-view recovered through the new card ---- */

/* Buy events first..first+n-1 (price 30) on the card in the slot, through decoder -> CAM -> card. */
static void buy(struct sms_world *sw, struct mod *card, const struct center_skey *sk, uint32_t first, unsigned n)
{
	struct kh_host_cas cas;
	struct kh_ppv_offer o;
	uint8_t ecm[KH_ECM_MAX];
	uint64_t now = (uint64_t)time(NULL);
	size_t len;

	kh_host_cas_init(&cas, &sw->w->dec.t, &sw->w->cam.t, &card->t, 0);
	assert_int_equal(kh_host_cas_connect(&cas), KH_OK);
	for (uint32_t ev = first; ev < first + n; ev++) {
		struct kh_ecm e = {0};
		e.h.table_id = KH_ECM_TID_EVEN;
		e.h.key_id = sk->id;
		e.h.key_version = sk->version;
		e.alg = KH_SCR_CSA2;
		e.cw_len = 8;
		e.access = KH_ECM_EVENT;
		e.event = ev;
		e.price = 30;
		e.time = now;
		assert_int_equal(kh_ecm_seal(sk->key, world_ecm_signer(sw->w->auth), &e, ecm, sizeof ecm, &len), KH_OK);
		assert_int_equal(kh_host_cas_purchase(&cas, ecm, len, &o), KH_OK);
	}
	kh_host_cas_wipe(&cas);
}

static size_t count_invoices(struct sms_world *sw, int64_t sub, uint32_t *sum)
{
	struct reply r;
	char path[64];
	json_t *j, *arr, *v;
	size_t i, n;

	snprintf(path, sizeof path, "/v1/subscribers/%lld/invoices", (long long)sub);
	j = expect(sw, "GET", path, NULL, 200, &r);
	arr = json_is_array(j) ? j : json_object_get(j, "invoices");
	assert_true(json_is_array(arr));
	n = json_array_size(arr);
	*sum = 0;
	json_array_foreach(arr, i, v)
		*sum += (uint32_t)jint(v, "price");
	reply_free(&r);
	return n;
}

static void upload(struct sms_world *sw, struct mod *card, const char *m1, const uint8_t *m1key,
		   struct kh_upload_result *res)
{
	struct kh_upload_curl *cc = NULL;
	struct kh_upload_http http;
	struct kh_upload_config cfg = {0};
	char url[64];

	snprintf(url, sizeof url, "http://127.0.0.1:%u", sw->port);
	assert_int_equal(kh_upload_curl_new(NULL, 0, &cc, &http), KH_OK);
	cfg.center = url;
	cfg.card = &card->t;
	cfg.m1_dir = m1;
	cfg.m1_key = m1key;
	cfg.http = &http;
	cfg.backoff_ms = 10;
	memset(res, 0, sizeof *res);
	assert_int_equal(kh_upload_run(&cfg, res), KH_OK);
	kh_upload_curl_free(cc);
}

static const char *verdict_of(const struct kh_upload_result *res, uint32_t ua)
{
	for (size_t i = 0; i < res->nverdicts; i++)
		if (res->verdicts[i].ua == ua)
			return res->verdicts[i].verdict;
	return "";
}

static void test_seed_recovery(void **state)
{
	struct sms_world *sw = *state;
	struct world *w = sw->w;
	struct center_skey sk = {0};
	struct kh_m1_info mi;
	struct kh_upload_result res;
	uint8_t m1key[KH_M1_KEY_LEN];
	uint32_t seq1 = 0, seq2 = 0, sum = 0;
	char *m1 = path_in(w->dir, "m1"), body[96], path[64];
	struct reply r;
	json_t *j;
	int64_t sub;

	/* the operator: a credit policy, a subscriber, card 1 assigned, its EMMs carried */
	j = expect(sw, "PUT", "/v1/credit-policy", "{\"initial_credit\":100,\"reload_amount\":50}", 200, &r);
	reply_free(&r);
	/* the two films in the catalogue, at the price their ECMs carry */
	j = expect(sw, "POST", "/v1/products", "{\"name\":\"PPV\"}", 201, &r);
	reply_free(&r);
	j = expect(sw, "POST", "/v1/channels", "{\"id\":9,\"name\":\"Films\",\"product_id\":1}", 201, &r);
	reply_free(&r);
	for (int ev = 55; ev <= 56; ev++) {
		snprintf(body, sizeof body, "{\"id\":%d,\"name\":\"F\",\"price\":30,\"channel_id\":9,\"start\":0,"
			 "\"end\":4102444800}", ev);
		j = expect(sw, "POST", "/v1/events", body, 201, &r);
		reply_free(&r);
	}
	j = expect(sw, "POST", "/v1/subscribers", "{\"name\":\"Ada\"}", 201, &r);
	sub = jint(j, "id");
	reply_free(&r);
	register_card(sw, &w->c1);
	register_card(sw, &w->c2);
	snprintf(body, sizeof body, "{\"subscriber_id\":%lld}", (long long)sub);
	snprintf(path, sizeof path, "/v1/cards/%08X/assign", w->c1.ua);
	j = expect(sw, "POST", path, body, 200, &r);
	reply_free(&r);
	assert_int_equal(deliver(sw, &w->c1, &seq1).auth_export, 1);
	assert_int_equal(status_of(&w->c1).credit, 100);

	/* card 1 buys two films offline, with the initial credit; the decoder keeps its block in M1 */
	assert_int_equal(center_service_key(sw->db, &sk), KH_OK);
	assert_true(sk.version > 0);
	buy(sw, &w->c1, &sk, 55, 2);
	assert_int_equal(status_of(&w->c1).credit, 40);
	assert_int_equal(kh_m1_key(m1, 1, m1key), KH_OK);
	assert_int_equal(kh_m1_export(&w->c1.t, m1, m1key, w->c1.ua, &mi), KH_OK);
	assert_int_equal(mi.ua, w->c1.ua);
	/* nothing has reached the center yet */
	assert_int_equal(count_invoices(sw, sub, &sum), 0);

	/* the card is replaced: the new one is not authorised to export, so M1 keeps card 1's block */
	snprintf(body, sizeof body, "{\"new_ua\":\"%08X\"}", w->c2.ua);
	snprintf(path, sizeof path, "/v1/cards/%08X/replace", w->c1.ua);
	j = expect(sw, "POST", path, body, 200, &r);
	reply_free(&r);
	/* The broadcast has not reached card 2 yet: its start-up EMMs (keys, rights, credit) are
	 * still only in the queue. The upload answer must bring them, in order, before its own. */
	(void)seq2;
	assert_int_equal(status_of(&w->c2).seq[KH_EMM_UNIQUE], 0);
	assert_int_equal(kh_m1_export(&w->c2.t, m1, m1key, w->c2.ua, &mi), KH_ERR_EXPORT_DENIED);
	assert_int_equal(kh_m1_stat(m1, m1key, &mi), KH_OK);
	assert_int_equal(mi.ua, w->c1.ua);

	/* a session without card 1's block (a decoder without M1): card 2 is not authorised, since
	 * card 1's data is still outstanding, and nothing is invoiced */
	{
		struct kh_upload_curl *cc = NULL;
		struct kh_upload_http http;
		struct kh_upload_config cfg = {0};
		char url[64];
		snprintf(url, sizeof url, "http://127.0.0.1:%u", sw->port);
		assert_int_equal(kh_upload_curl_new(NULL, 0, &cc, &http), KH_OK);
		cfg.center = url;
		cfg.card = &w->c2.t;
		cfg.http = &http;
		memset(&res, 0, sizeof res);
		assert_int_equal(kh_upload_run(&cfg, &res), KH_OK);
		kh_upload_curl_free(cc);
		assert_int_equal(res.nverdicts, 1);
		assert_string_equal(verdict_of(&res, w->c2.ua), "ok");
		assert_int_equal(res.emms_refused, 0);
		assert_int_equal(status_of(&w->c2).export_ok, 0);
		/* the start-up EMMs came with the answer, before the session's own */
		assert_int_equal(status_of(&w->c2).credit, 100);
		assert_true(status_of(&w->c2).nkeys >= 1);
		assert_int_equal(count_invoices(sw, sub, &sum), 0);
	}

	/* the decoder connects with card 2: card 1's films are invoiced, card 1 closed, card 2
	 * authorised, and only then does M1 take card 2's block */
	upload(sw, &w->c2, m1, m1key, &res);
	assert_int_equal(res.nverdicts, 2);
	assert_string_equal(verdict_of(&res, w->c2.ua), "ok");
	assert_string_equal(verdict_of(&res, w->c1.ua), "recovered");
	assert_true(res.emms_applied >= 1);
	assert_int_equal(res.emms_refused, 0);
	assert_int_equal(res.m1_export, KH_OK);
	assert_int_equal(kh_m1_stat(m1, m1key, &mi), KH_OK);
	assert_int_equal(mi.ua, w->c2.ua);
	assert_int_equal(count_invoices(sw, sub, &sum), 2);
	assert_int_equal(sum, 60);
	snprintf(path, sizeof path, "/v1/cards/%08X", w->c1.ua);
	j = expect(sw, "GET", path, NULL, 200, &r);
	assert_string_equal(jstr(j, "state"), "closed");
	reply_free(&r);
	{
		struct kh_cas_status st = status_of(&w->c2);
		assert_int_equal(st.export_ok, 1);
		/* No reload: card 2 spent nothing and is at the policy's ceiling (its initial 100).
		 * Card 1's films were paid from card 1's credit, which went with card 1. */
		assert_int_equal(st.credit, 100);
	}

	/* connecting again invoices nothing twice */
	upload(sw, &w->c2, m1, m1key, &res);
	assert_int_equal(count_invoices(sw, sub, &sum), 2);
	assert_int_equal(sum, 60);
	assert_true(metric(sw, "keyhole_blocks_ingested_total") >= 3);
	free(m1);
}

/* With an operator token, the operator API wants it; what cards and decoders use stays open. */
static void test_operator_token(void **state)
{
	struct sms_world *sw = *state;
	static const char token[] = "a-long-enough-operator-token-0123";
	struct kh_sms_config cfg = {0};
	struct kh_sms *tmp = NULL;
	struct reply r;

	/* the same center again, with a token (one too short to be a secret is refused) */
	center_stop(sw->sms, sw->h);
	cfg.db = sw->db;
	cfg.authority_dir = sw->w->auth_dir;
	cfg.operator_token = (const uint8_t *)token;
	cfg.token_len = 8;
	assert_int_equal(kh_sms_new(&cfg, &tmp, NULL), KH_ERR_INVAL);
	assert_null(tmp);
	center_start(sw->db, sw->w->auth_dir, token, &sw->sms, &sw->h, &sw->port);

	expect_error(sw, "POST", "/v1/subscribers", "{\"name\":\"Eve\"}", NULL, 401, "unauthorised");
	expect_error(sw, "GET", "/v1/credit-policy", NULL, NULL, 401, "unauthorised");
	g_auth = "Authorization: Bearer a-long-enough-operator-token-0124";
	expect_error(sw, "POST", "/v1/subscribers", "{\"name\":\"Eve\"}", NULL, 401, "unauthorised");
	g_auth = "Authorization: Bearer a-long-enough-operator-token-012";
	expect_error(sw, "POST", "/v1/subscribers", "{\"name\":\"Eve\"}", NULL, 401, "unauthorised");
	g_auth = "Authorization: Bearer a-long-enough-operator-token-0123";
	expect(sw, "POST", "/v1/subscribers", "{\"name\":\"Ada\"}", 201, &r);
	reply_free(&r);
	/* open to all: the EMM queue (sealed per card) and upload sessions (signed by cards) */
	g_auth = NULL;
	expect(sw, "GET", "/v1/emm", NULL, 200, &r);
	reply_free(&r);
	expect_error(sw, "POST", "/v1/upload/sessions", "{\"ua\":\"0000FFFF\"}", NULL, 404, "not_found");
}

/*
 * Idempotency keys are scoped by caller and route. Before, they were one namespace: an
 * unauthenticated opening of an upload session with the guide's example keys made the
 * operator's reload and bulk subscription with those keys fail with 422. And a bulk
 * subscription's list is a set: [2,1] and [1,2] are one request, answered again, not 422.
 */
static void test_idempotency_scopes(void **state)
{
	struct sms_world *sw = *state;
	static const char token[] = "a-long-enough-operator-token-0123";
	static const char *const keys[] = {"reload-2026-11-21-ada", "p7-vip-1"};
	struct mod *c1 = &sw->w->c1;
	char path[96], body[160], open_body[32];
	struct reply r, again;
	int64_t a, b;

	center_stop(sw->sms, sw->h);
	center_start(sw->db, sw->w->auth_dir, token, &sw->sms, &sw->h, &sw->port);
	g_auth = "Authorization: Bearer a-long-enough-operator-token-0123";
	expect(sw, "PUT", "/v1/credit-policy", "{\"initial_credit\":100,\"reload_amount\":25}", 200, &r);
	reply_free(&r);
	expect(sw, "POST", "/v1/products", "{\"id\":7,\"name\":\"Sport\"}", 201, &r);
	reply_free(&r);
	a = jint(expect(sw, "POST", "/v1/subscribers", "{\"name\":\"Ada\"}", 201, &r), "id");
	reply_free(&r);
	b = jint(expect(sw, "POST", "/v1/subscribers", "{\"name\":\"Bob\"}", 201, &r), "id");
	reply_free(&r);
	register_card(sw, c1);
	snprintf(path, sizeof path, "/v1/cards/%08X/assign", c1->ua);
	snprintf(body, sizeof body, "{\"subscriber_id\":%lld}", (long long)a);
	expect(sw, "POST", path, body, 200, &r);
	reply_free(&r);

	/* anyone, without the token, opens sessions with the operator's keys first */
	g_auth = NULL;
	snprintf(open_body, sizeof open_body, "{\"ua\":\"%08X\"}", c1->ua);
	for (size_t i = 0; i < 2; i++) {
		req(sw, "POST", "/v1/upload/sessions", open_body, keys[i], &r);
		assert_int_equal(r.status, 201);
		reply_free(&r);
	}
	/* the operator's requests with those keys are the operator's own */
	g_auth = "Authorization: Bearer a-long-enough-operator-token-0123";
	snprintf(path, sizeof path, "/v1/cards/%08X/reload", c1->ua);
	req(sw, "POST", path, NULL, keys[0], &r);
	assert_int_equal(r.status, 200);
	assert_false(r.replayed);
	reply_free(&r);
	snprintf(body, sizeof body, "{\"start\":1000,\"end\":2000000000,\"subscribers\":[%lld,%lld]}", (long long)b,
		 (long long)a);
	req(sw, "POST", "/v1/products/7/subscriptions", body, keys[1], &r);
	assert_int_equal(r.status, 201);
	/* the same set in another order, or with a repeat, is the same request: its answer again */
	snprintf(body, sizeof body, "{\"start\":1000,\"end\":2000000000,\"subscribers\":[%lld,%lld,%lld]}", (long long)a,
		 (long long)b, (long long)a);
	req(sw, "POST", "/v1/products/7/subscriptions", body, keys[1], &again);
	assert_int_equal(again.status, 200);
	assert_true(again.replayed);
	assert_true(json_equal(r.json, again.json));
	reply_free(&again);
	reply_free(&r);
	/* another set is another request */
	snprintf(body, sizeof body, "{\"start\":1000,\"end\":2000000000,\"subscribers\":[%lld]}", (long long)a);
	expect_error(sw, "POST", "/v1/products/7/subscriptions", body, keys[1], 422, "idempotency_mismatch");
	/* the reload's key on another operator route is that route's own */
	snprintf(body, sizeof body, "{\"start\":1000,\"end\":2000000000,\"subscribers\":[%lld]}", (long long)a);
	req(sw, "POST", "/v1/products/7/subscriptions", body, keys[0], &r);
	assert_int_equal(r.status, 201);
	reply_free(&r);
	g_auth = NULL;
}

/* ---- a withheld REVOKE: the card refuses what follows it, the decoder fetches it ---- */

/* An ECM for product now, through decoder -> CAM -> card. */
static kh_err watch(struct sms_world *sw, struct mod *card, uint32_t product)
{
	return center_watch(sw->db, &sw->w->dec.t, world_ecm_signer(sw->w->auth), &sw->w->cam.t, &card->t, product, (int64_t)time(NULL));
}

/* A man in the middle of the upload session: drops the card's EMM number drop from the answer. */
struct mitm {
	struct kh_upload_http real;
	uint32_t drop;
	int dropped;
};

static kh_err mitm_post(void *ctx, const char *url, json_t *body, const char *idem_key, int *status, json_t **resp)
{
	struct mitm *m = ctx;
	kh_err r = m->real.post_json(m->real.ctx, url, body, idem_key, status, resp);
	json_t *list = *resp ? json_object_get(*resp, "emms") : NULL, *v;
	size_t i;

	json_array_foreach(list, i, v) {
		uint8_t sec[KH_EMM_MAX];
		struct kh_emm_hdr h;
		size_t n;
		const char *b = json_string_value(v);
		if (b && kh_b64url_decode(b, strlen(b), sec, sizeof sec, &n) == KH_OK &&
		    kh_emm_peek(sec, n, &h) == KH_OK && h.seq == m->drop) {
			json_array_remove(list, i);
			m->dropped++;
			break;
		}
	}
	return r;
}

static kh_err mitm_get(void *ctx, const char *url, int *status, json_t **resp)
{
	struct mitm *m = ctx;
	return m->real.get_json(m->real.ctx, url, status, resp);
}

/*
 * The attack: the subscriber cancels, the center queues REVOKE (EMM n) and then EMM n+1 (another
 * product). A host withholds n and delivers n+1: the card refuses it (EMM_GAP), so the REVOKE is
 * not made a replay, and nothing after it applies. Then the decoder connects through a man in the
 * middle that drops n from the upload answer too: the card answers EMM_GAP for the rest, the
 * client asks the center for what follows the card's last, and n, n+1, ... apply in order. The
 * cancelled product no longer plays.
 */
static void test_withheld_revoke(void **state)
{
	struct sms_world *sw = *state;
	struct world *w = sw->w;
	struct kh_upload_curl *cc = NULL;
	struct kh_upload_config cfg = {0};
	struct kh_upload_result res;
	struct mitm m = {0};
	struct kh_host_cas direct = {0};
	int64_t now = (int64_t)time(NULL), sub;
	uint32_t seq = 0, n;
	char body[128], path[96], url[64];
	struct reply r;
	json_t *j, *e;

	j = expect(sw, "POST", "/v1/products", "{\"id\":7,\"name\":\"Sport\"}", 201, &r);
	reply_free(&r);
	j = expect(sw, "POST", "/v1/products", "{\"id\":8,\"name\":\"Films\"}", 201, &r);
	reply_free(&r);
	j = expect(sw, "POST", "/v1/subscribers", "{\"name\":\"Mallory\"}", 201, &r);
	sub = jint(j, "id");
	reply_free(&r);
	snprintf(path, sizeof path, "/v1/subscribers/%lld/subscriptions", (long long)sub);
	snprintf(body, sizeof body, "{\"product_id\":7,\"start\":%lld,\"end\":%lld}", (long long)(now - 60),
		 (long long)(now + 86400 * 365));
	j = expect(sw, "POST", path, body, 201, &r);
	reply_free(&r);
	register_card(sw, &w->c1);
	snprintf(path, sizeof path, "/v1/cards/%08X/assign", w->c1.ua);
	snprintf(body, sizeof body, "{\"subscriber_id\":%lld}", (long long)sub);
	j = expect(sw, "POST", path, body, 200, &r);
	reply_free(&r);
	(void)deliver(sw, &w->c1, &seq);
	assert_int_equal(watch(sw, &w->c1, PRODUCT), KH_OK);

	/* the cancellation (REVOKE, n) and another change after it (ENTITLE 8, n + 1) */
	snprintf(path, sizeof path, "/v1/subscribers/%lld/subscriptions/7", (long long)sub);
	j = expect(sw, "DELETE", path, NULL, 200, &r);
	reply_free(&r);
	n = status_of(&w->c1).seq[KH_EMM_UNIQUE] + 1;
	snprintf(path, sizeof path, "/v1/subscribers/%lld/subscriptions", (long long)sub);
	snprintf(body, sizeof body, "{\"product_id\":8,\"start\":%lld,\"end\":%lld}", (long long)(now - 60),
		 (long long)(now + 86400 * 365));
	j = expect(sw, "POST", path, body, 201, &r);
	reply_free(&r);

	/* the host withholds n and delivers n + 1: refused, nothing changes */
	snprintf(path, sizeof path, "/v1/cards/%08X/emm?after_seq=%u", w->c1.ua, n);
	j = expect(sw, "GET", path, NULL, 200, &r);
	assert_int_equal(json_array_size(json_object_get(j, "emms")), 1);
	e = json_array_get(json_object_get(j, "emms"), 0);
	assert_int_equal(jint(e, "seq"), n + 1);
	{
		uint8_t sec[KH_EMM_MAX];
		size_t len = 0;
		assert_int_equal(kh_json_get_b64(e, "section", sec, sizeof sec, &len, 0), KH_OK);
		direct.card = &w->c1.t;
		assert_int_equal(kh_host_cas_emm(&direct, sec, len), KH_ERR_EMM_GAP);
	}
	reply_free(&r);
	assert_int_equal(status_of(&w->c1).seq[KH_EMM_UNIQUE], n - 1);
	assert_int_equal(watch(sw, &w->c1, PRODUCT), KH_OK); /* the REVOKE has not arrived yet */
	assert_int_equal(watch(sw, &w->c1, 8), KH_ERR_NO_RIGHT);

	/* the decoder connects; the man in the middle drops n from the answer as well */
	snprintf(url, sizeof url, "http://127.0.0.1:%u", sw->port);
	assert_int_equal(kh_upload_curl_new(NULL, 0, &cc, &m.real), KH_OK);
	m.drop = n;
	cfg.center = url;
	cfg.card = &w->c1.t;
	cfg.http = &(struct kh_upload_http){mitm_post, &m, mitm_get};
	cfg.backoff_ms = 10;
	memset(&res, 0, sizeof res);
	assert_int_equal(kh_upload_run(&cfg, &res), KH_OK);
	kh_upload_curl_free(cc);
	assert_int_equal(m.dropped, 1);
	assert_int_equal(watch(sw, &w->c1, PRODUCT), KH_ERR_NO_RIGHT);
	assert_true(res.emms_gap >= 1);
	assert_true(res.emms_fetched >= 2);
	assert_int_equal(res.emms_refused, 0);
	assert_true(status_of(&w->c1).seq[KH_EMM_UNIQUE] >= n + 1);
	assert_int_equal(watch(sw, &w->c1, 8), KH_OK);

	/* the endpoint's new parameter does not go with since */
	snprintf(path, sizeof path, "/v1/cards/%08X/emm?after_seq=1&since=3", w->c1.ua);
	expect_error(sw, "GET", path, NULL, NULL, 400, "invalid_argument");
}

/*
 * More EMMs queued for a card than one upload answer carries (32): the client asks the center for
 * what follows the card's last and applies it in the same session, so nothing stays behind.
 */
static void test_upload_fetches_the_rest(void **state)
{
	struct sms_world *sw = *state;
	struct world *w = sw->w;
	struct kh_upload_result res;
	int64_t now = (int64_t)time(NULL), sub;
	char body[128], path[96];
	struct reply r;
	json_t *j;

	j = expect(sw, "POST", "/v1/products", "{\"id\":7,\"name\":\"Sport\"}", 201, &r);
	reply_free(&r);
	j = expect(sw, "POST", "/v1/subscribers", "{\"name\":\"Zoe\"}", 201, &r);
	sub = jint(j, "id");
	reply_free(&r);
	register_card(sw, &w->c1);
	snprintf(path, sizeof path, "/v1/cards/%08X/assign", w->c1.ua);
	snprintf(body, sizeof body, "{\"subscriber_id\":%lld}", (long long)sub);
	j = expect(sw, "POST", path, body, 200, &r);
	reply_free(&r);
	for (int i = 0; i < 20; i++) { /* 40 EMMs more */
		snprintf(path, sizeof path, "/v1/subscribers/%lld/subscriptions", (long long)sub);
		snprintf(body, sizeof body, "{\"product_id\":7,\"start\":%lld,\"end\":%lld}", (long long)(now - 60),
			 (long long)(now + 86400));
		j = expect(sw, "POST", path, body, 201, &r);
		reply_free(&r);
		snprintf(path, sizeof path, "/v1/subscribers/%lld/subscriptions/7", (long long)sub);
		j = expect(sw, "DELETE", path, NULL, 200, &r);
		reply_free(&r);
	}
	upload(sw, &w->c1, NULL, NULL, &res);
	assert_int_equal(res.emms, KH_UPLOAD_MAX_EMMS);
	assert_int_equal(res.emms_refused, 0);
	assert_int_equal(res.emms_gap, 0);
	/* the card has every EMM the center queued for it */
	snprintf(path, sizeof path, "/v1/cards/%08X/emm?after_seq=%u", w->c1.ua, status_of(&w->c1).seq[KH_EMM_UNIQUE]);
	j = expect(sw, "GET", path, NULL, 200, &r);
	assert_int_equal(json_array_size(json_object_get(j, "emms")), 0);
	reply_free(&r);
	assert_true(status_of(&w->c1).seq[KH_EMM_UNIQUE] >= 41);
	assert_int_equal(res.emms_applied, status_of(&w->c1).seq[KH_EMM_UNIQUE]);
	assert_true(res.emms_fetched >= 9);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_card_life, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refusals, setup, teardown),
		cmocka_unit_test_setup_teardown(test_split, setup, teardown),
		cmocka_unit_test_setup_teardown(test_concurrent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_seed_recovery, setup, teardown),
		cmocka_unit_test_setup_teardown(test_operator_token, setup, teardown),
		cmocka_unit_test_setup_teardown(test_idempotency_scopes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_withheld_revoke, setup, teardown),
		cmocka_unit_test_setup_teardown(test_upload_fetches_the_rest, setup, teardown),
	};
	int rc;

	curl_global_init(CURL_GLOBAL_DEFAULT);
	rc = cmocka_run_group_tests(tests, NULL, NULL);
	curl_global_cleanup();
	return rc;
}
