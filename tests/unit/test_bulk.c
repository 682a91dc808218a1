/*
 * Subscribing a product to many subscribers at once (POST /v1/products/{id}/subscriptions,
 * src/center/sms/sms_bulk.c): a real center on an ephemeral port whose bulk jobs commit two
 * subscribers per transaction, so every job here runs in several chunks, and real card modules
 * that fetch and apply their own EMMs. The judges are the cards (how many ENTITLEs each was sent,
 * what CAS STATUS reports once applied), the subscribers' records and the EMM queue.
 *
 * A failed chunk is made with a trigger the test adds to the store file (RAISE(ABORT) on one
 * subscriber's insert): the center's code is the production code, nothing is compiled for tests.
 */
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
#include "keyhole/host.h"
#include "keyhole/http.h"
#include "keyhole/sms.h"

#define CHUNK 2u
#define NCARDS 5

struct card {
	struct mod m;
	uint32_t applied; /* highest seq applied to the card */
	int64_t sub;      /* the subscriber it is assigned to (0: none) */
};

struct bw {
	struct world *w;
	char *db;
	struct kh_sms *sms;
	struct kh_http *h;
	struct http_conn hc;
	struct card cards[NCARDS];
	int64_t sub[8]; /* subscribers 0..5 exist after setup; 6, 7 are made by tests */
	int64_t now;
	int64_t clock; /* the center's clock (0: time()) */
};

static int64_t bw_clock(void *ctx)
{
	struct bw *b = ctx;
	return b->clock ? b->clock : (int64_t)time(NULL);
}

/* The end the center sends now for a subscription [start, end): its rights window's, or end. */
static int64_t rights_end(struct bw *b, int64_t start, int64_t end)
{
	int64_t half = KH_SMS_RIGHTS_TTL / 2, now = bw_clock(b), base = now > start ? now : start;
	int64_t w = (base / half + 2) * half;
	return w < end ? w : end;
}

/* The center, as center_start does it, but with a chunk of CHUNK subscribers. */
static void start(struct bw *b)
{
	struct kh_sms_config cfg = {0};
	struct kh_http_config hc = {0};

	cfg.db = b->db;
	cfg.authority_dir = b->w->auth_dir;
	cfg.bulk_chunk = CHUNK;
	cfg.clock = bw_clock;
	cfg.clock_ctx = b;
	assert_int_equal(kh_sms_new(&cfg, &b->sms, NULL), KH_OK);
	hc.threads = 0; /* KH_HTTP_THREADS */
	assert_int_equal(kh_http_new(&hc, &b->h), KH_OK);
	assert_int_equal(kh_sms_add_routes(b->sms, b->h), KH_OK);
	assert_int_equal(kh_http_start(b->h), KH_OK);
	b->hc.port = kh_http_port(b->h);
	assert_true(b->hc.port != 0);
}

static json_t *expect(struct bw *b, const char *method, const char *path, const char *body, const char *idem,
		      long status, struct reply *r)
{
	return http_expect(&b->hc, method, path, body, idem, status, r);
}

static int64_t new_subscriber(struct bw *b, const char *name)
{
	char body[64];
	struct reply r;
	int64_t id;

	snprintf(body, sizeof body, "{\"name\":\"%s\"}", name);
	id = jint(expect(b, "POST", "/v1/subscribers", body, NULL, 201, &r), "id");
	reply_free(&r);
	return id;
}

/* Personalise, register and assign a card to subscriber sub. */
static void new_card(struct bw *b, struct card *c, int64_t sub)
{
	uint8_t resp[KH_APDU_MAX_RESP];
	char *b64, *body, path[64];
	size_t dlen = 0;
	struct reply r;

	make_mod(b->w->auth, KH_ROLE_CARD, &c->m);
	assert_int_equal(send_apdu(&c->m.t, KH_CLA, KH_INS_GET_CERT, 1, 0, NULL, 0, resp, sizeof resp, &dlen), 0x9000);
	b64 = malloc(kh_b64url_len(dlen) + 1);
	assert_non_null(b64);
	assert_int_equal(kh_b64url_encode(resp, dlen, b64, kh_b64url_len(dlen) + 1), KH_OK);
	assert_true(asprintf(&body, "{\"certificate\":\"%s\"}", b64) > 0);
	expect(b, "POST", "/v1/cards", body, NULL, 201, &r);
	reply_free(&r);
	free(body);
	free(b64);
	snprintf(path, sizeof path, "/v1/cards/%08X/assign", c->m.ua);
	assert_true(asprintf(&body, "{\"subscriber_id\":%lld}", (long long)sub) > 0);
	expect(b, "POST", path, body, NULL, 200, &r);
	reply_free(&r);
	free(body);
	c->sub = sub;
}

/*
 * Subscribers 0..5; cards 0..3 active for subscribers 0, 1, 3, 4 (ids ascending), subscriber 2
 * and 5 without a card; products 7, 8, 9.
 */
static int setup(void **state)
{
	struct bw *b = calloc(1, sizeof *b);
	static const int with_card[4] = {0, 1, 3, 4};
	struct reply r;

	assert_non_null(b);
	world_setup((void **)&b->w);
	b->db = kh_test_db(b->w->dir, "center.db");
	b->hc.curl = curl_easy_init();
	assert_non_null(b->hc.curl);
	b->now = (int64_t)time(NULL);
	start(b);
	for (int p = 7; p <= 9; p++) {
		char body[64];
		snprintf(body, sizeof body, "{\"id\":%d,\"name\":\"P%d\"}", p, p);
		expect(b, "POST", "/v1/products", body, NULL, 201, &r);
		reply_free(&r);
	}
	for (int i = 0; i < 6; i++) {
		char name[16];
		snprintf(name, sizeof name, "S%d", i);
		b->sub[i] = new_subscriber(b, name);
	}
	for (int i = 0; i < 4; i++)
		new_card(b, &b->cards[i], b->sub[with_card[i]]);
	*state = b;
	return 0;
}

static int teardown(void **state)
{
	struct bw *b = *state;
	void *w = b->w;

	curl_easy_cleanup(b->hc.curl);
	kh_http_free(b->h);
	kh_sms_free(b->sms);
	for (int i = 0; i < NCARDS; i++)
		kh_softmod_free(b->cards[i].m.sm);
	kh_test_db_drop(b->db);
	world_teardown(&w);
	free(b);
	return 0;
}

/* ---- what the cards were told ---- */

/* ENTITLE commands for product in one EMM, opened with the card's Kp from the authority. */
static unsigned entitles_in(struct bw *b, uint32_t ua, const uint8_t *sec, size_t n, uint32_t product)
{
	uint8_t kp[32], ku[32], cmds[KH_EMM_CMDS_MAX];
	struct kh_tlv tlv;
	struct kh_rd rd;
	size_t len = 0;
	unsigned got = 0;
	int k;

	assert_int_equal(kh_authority_card_keys(b->w->auth, ua, kp, ku), KH_OK);
	assert_int_equal(kh_emm_open(kp, sec, n, cmds, sizeof cmds, &len), KH_OK);
	kh_wipe(kp, sizeof kp);
	kh_wipe(ku, sizeof ku);
	kh_rd_init(&rd, cmds, len);
	while ((k = kh_tlv_next(&rd, &tlv)) == 1)
		if (tlv.tag == KH_EMM_ENTITLE && kh_get_be32(tlv.v) == product)
			got++;
	assert_int_equal(k, 0);
	return got;
}

/*
 * Every EMM queued for the card: how many ENTITLEs for product they carry in all; those the card
 * has not applied yet are applied now, in sequence order, as its decoder would.
 */
static unsigned sync_card(struct bw *b, struct card *c, uint32_t product)
{
	struct kh_host_cas direct = {.card = &c->m.t};
	char path[80];
	struct reply r;
	json_t *j, *e;
	size_t i;
	unsigned got = 0;

	snprintf(path, sizeof path, "/v1/cards/%08X/emm?since=0&limit=1000", c->m.ua);
	j = expect(b, "GET", path, NULL, NULL, 200, &r);
	json_array_foreach(json_object_get(j, "emms"), i, e) {
		uint8_t sec[KH_EMM_MAX];
		size_t n = 0;
		uint32_t seq = (uint32_t)jint(e, "seq");

		assert_int_equal(kh_json_get_b64(e, "section", sec, sizeof sec, &n, 0), KH_OK);
		got += entitles_in(b, c->m.ua, sec, n, product);
		if (seq > c->applied) {
			assert_int_equal(kh_host_cas_emm(&direct, sec, n), KH_OK);
			c->applied = seq;
		}
	}
	reply_free(&r);
	return got;
}

/* The card's own word: does it hold product over [start, end)? */
static int card_has(struct card *c, uint32_t product, int64_t start, int64_t end)
{
	struct kh_host_cas direct = {.card = &c->m.t};
	struct kh_cas_status st;

	assert_int_equal(kh_host_cas_status(&direct, &st), KH_OK);
	for (size_t i = 0; i < st.nrights; i++)
		if (st.rights[i].product == product)
			return st.rights[i].start == (uint64_t)start && st.rights[i].end == (uint64_t)end;
	return 0;
}

/* How many subscriptions the subscriber holds, and whether one is product. */
static size_t subs_of(struct bw *b, int64_t sub, uint32_t product, int *has)
{
	char path[64];
	struct reply r;
	json_t *arr, *u;
	size_t i, n;

	snprintf(path, sizeof path, "/v1/subscribers/%lld", (long long)sub);
	arr = json_object_get(expect(b, "GET", path, NULL, NULL, 200, &r), "subscriptions");
	n = json_array_size(arr);
	*has = 0;
	json_array_foreach(arr, i, u) if (jint(u, "product_id") == product) *has = 1;
	reply_free(&r);
	return n;
}

/* The id of the newest EMM in the whole queue (0: none). */
static int64_t queue_last(struct bw *b)
{
	struct reply r;
	int64_t last = 0;

	for (;;) {
		char path[64];
		int64_t got;
		snprintf(path, sizeof path, "/v1/emm?since=%lld&limit=1000", (long long)last);
		got = jint(expect(b, "GET", path, NULL, NULL, 200, &r), "last_id");
		reply_free(&r);
		if (got == last)
			return last;
		last = got;
	}
}

static int64_t metric_emms(struct bw *b)
{
	return http_metric(&b->hc, "keyhole_emms_queued_total");
}

static char *all_body(struct bw *b, int64_t end_off)
{
	char *s;
	assert_true(asprintf(&s, "{\"all\":true,\"start\":%lld,\"end\":%lld}", (long long)(b->now - 60),
			     (long long)(b->now + end_off)) > 0);
	return s;
}

static void expect_answer(const json_t *j, uint32_t product, int64_t subs, int64_t emms, int64_t skipped,
			  int64_t chunks)
{
	assert_int_equal(json_object_size(j), 5);
	assert_int_equal(jint(j, "product"), product);
	assert_int_equal(jint(j, "subscribers"), subs);
	assert_int_equal(jint(j, "emms_queued"), emms);
	assert_int_equal(jint(j, "skipped"), skipped);
	assert_int_equal(jint(j, "chunks"), chunks);
}

/* ---- (a) (b) (d): "all" in several chunks, each card one ENTITLE, replay and mismatch ---- */

static void test_all(void **state)
{
	struct bw *b = *state;
	char *body = all_body(b, 86400), *other = all_body(b, 2 * 86400);
	int64_t metric0 = metric_emms(b), last;
	struct reply r, again;
	json_t *j;
	int has;

	/* 4 subscribers with an active card, 2 per transaction: two chunks */
	j = expect(b, "POST", "/v1/products/7/subscriptions", body, "all-7", 201, &r);
	assert_int_equal(r.replayed, 0);
	expect_answer(j, 7, 4, 4, 0, 2);
	assert_int_equal(metric_emms(b), metric0 + 4);
	for (int i = 0; i < 4; i++) {
		struct card *c = &b->cards[i];
		assert_int_equal(sync_card(b, c, 7), 1);
		assert_true(card_has(c, 7, b->now - 60, b->now + 86400));
		assert_int_equal(subs_of(b, c->sub, 7, &has), 1);
		assert_true(has);
	}
	/* subscribers without an active card are not part of "all" */
	assert_int_equal(subs_of(b, b->sub[2], 7, &has), 0);
	assert_int_equal(subs_of(b, b->sub[5], 7, &has), 0);

	/* the same request again: the same bytes, marked replayed, nothing queued */
	last = queue_last(b);
	http_req(&b->hc, "POST", "/v1/products/7/subscriptions", body, "all-7", &again);
	assert_int_equal(again.status, 200);
	assert_int_equal(again.replayed, 1);
	assert_int_equal(again.len, r.len);
	assert_memory_equal(again.body, r.body, r.len);
	reply_free(&again);
	assert_int_equal(queue_last(b), last);
	assert_int_equal(metric_emms(b), metric0 + 4);

	/* the same key for another body, or another product: refused, nothing queued */
	http_expect_error(&b->hc, "POST", "/v1/products/7/subscriptions", other, "all-7", 422, "idempotency_mismatch");
	http_expect_error(&b->hc, "POST", "/v1/products/8/subscriptions", body, "all-7", 422, "idempotency_mismatch");
	assert_int_equal(queue_last(b), last);
	for (int i = 0; i < 4; i++)
		assert_int_equal(sync_card(b, &b->cards[i], 7), 1);

	/* a renewal under a new key replaces the right: one more ENTITLE each, the new end */
	reply_free(&r);
	j = expect(b, "POST", "/v1/products/7/subscriptions", other, "all-7-renew", 201, &r);
	expect_answer(j, 7, 4, 4, 0, 2);
	reply_free(&r);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(sync_card(b, &b->cards[i], 7), 2);
		assert_true(card_has(&b->cards[i], 7, b->now - 60, b->now + 2 * 86400));
		assert_int_equal(subs_of(b, b->cards[i].sub, 7, &has), 1);
	}
	free(body);
	free(other);
}

/* ---- (c): chunk 2 fails once; the same request resumes after chunk 1 ---- */

static void store_exec(struct bw *b, const char *sql)
{
	kh_test_sql_exec(b->db, sql);
}

/* Make every INSERT into table whose new row meets when fail (a trigger of the backend's
 * dialect), or, when is NULL, stop that. */
static void fail_inserts(struct bw *b, const char *table, const char *when)
{
	char sql[600];

	if (when == NULL && kh_test_pg())
		snprintf(sql, sizeof sql, "DROP TRIGGER kh_test_fail ON %s", table);
	else if (when == NULL)
		snprintf(sql, sizeof sql, "DROP TRIGGER kh_test_fail");
	else if (kh_test_pg())
		snprintf(sql, sizeof sql,
			 "CREATE OR REPLACE FUNCTION kh_test_fail() RETURNS trigger LANGUAGE plpgsql AS\n"
			 "$$ BEGIN RAISE EXCEPTION 'injected'; END $$;\n"
			 "CREATE TRIGGER kh_test_fail BEFORE INSERT ON %s FOR EACH ROW WHEN (%s)\n"
			 "EXECUTE FUNCTION kh_test_fail()",
			 table, when);
	else
		snprintf(sql, sizeof sql,
			 "CREATE TRIGGER kh_test_fail BEFORE INSERT ON %s\n"
			 "WHEN %s BEGIN SELECT RAISE(ABORT, 'injected'); END",
			 table, when);
	store_exec(b, sql);
}

static void test_resume(void **state)
{
	struct bw *b = *state;
	char *body = all_body(b, 86400), *other = all_body(b, 3600), trig[320];
	struct reply r, again;
	int64_t metric0 = metric_emms(b), last;
	json_t *j;
	int has;

	/* subscriber 3 (card 2) opens chunk 2: its subscription insert fails, once */
	snprintf(trig, sizeof trig, "NEW.subscriber_id = %lld AND NEW.product_id = 8", (long long)b->sub[3]);
	fail_inserts(b, "subscriptions", trig);
	http_req(&b->hc, "POST", "/v1/products/8/subscriptions", body, "all-8", &r);
	assert_true(r.status >= 400 && r.status < 600);
	assert_int_equal(r.replayed, 0);
	reply_free(&r);
	/* chunk 1 committed (subscribers 0 and 1), chunk 2 rolled back whole */
	assert_int_equal(sync_card(b, &b->cards[0], 8), 1);
	assert_int_equal(sync_card(b, &b->cards[1], 8), 1);
	assert_int_equal(sync_card(b, &b->cards[2], 8), 0);
	assert_int_equal(sync_card(b, &b->cards[3], 8), 0);
	assert_int_equal(subs_of(b, b->sub[3], 8, &has), 0);
	assert_int_equal(metric_emms(b), metric0 + 2);
	/* the unfinished job is held by its key too */
	http_expect_error(&b->hc, "POST", "/v1/products/8/subscriptions", other, "all-8", 422, "idempotency_mismatch");

	/* a subscriber with a card who arrives after the job started is not part of it */
	b->sub[6] = new_subscriber(b, "late");
	new_card(b, &b->cards[4], b->sub[6]);
	metric0 = metric_emms(b) - 2; /* its assignment queued EMMs of its own */

	fail_inserts(b, "subscriptions", NULL);
	j = expect(b, "POST", "/v1/products/8/subscriptions", body, "all-8", 201, &r);
	assert_int_equal(r.replayed, 0);
	/* the whole job's counts: chunk 1 of the first attempt and chunk 2 of this one */
	expect_answer(j, 8, 4, 4, 0, 2);
	assert_int_equal(metric_emms(b), metric0 + 4);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(sync_card(b, &b->cards[i], 8), 1);
		assert_true(card_has(&b->cards[i], 8, b->now - 60, b->now + 86400));
	}
	assert_int_equal(sync_card(b, &b->cards[4], 8), 0);
	assert_false(card_has(&b->cards[4], 8, b->now - 60, b->now + 86400));
	assert_int_equal(subs_of(b, b->sub[6], 8, &has), 0);

	last = queue_last(b);
	http_req(&b->hc, "POST", "/v1/products/8/subscriptions", body, "all-8", &again);
	assert_int_equal(again.status, 200);
	assert_int_equal(again.replayed, 1);
	assert_int_equal(again.len, r.len);
	assert_memory_equal(again.body, r.body, r.len);
	reply_free(&again);
	reply_free(&r);
	assert_int_equal(queue_last(b), last);
	free(body);
	free(other);
}

/* ---- (e) the list form; the cap; refusals ---- */

/* ---- service key rotation in chunks (src/center/sms/sms_keys.c) ---- */

/* SET KEY commands for (key_id, version) in every EMM queued for the card; applies new ones. */
static unsigned set_keys_for(struct bw *b, struct card *c, uint8_t key_id, uint32_t version)
{
	struct kh_host_cas direct = {.card = &c->m.t};
	char path[80];
	struct reply r;
	json_t *j, *e;
	size_t i;
	unsigned got = 0;

	snprintf(path, sizeof path, "/v1/cards/%08X/emm?since=0&limit=1000", c->m.ua);
	j = expect(b, "GET", path, NULL, NULL, 200, &r);
	json_array_foreach(json_object_get(j, "emms"), i, e) {
		uint8_t sec[KH_EMM_MAX], kp[32], ku[32], cmds[KH_EMM_CMDS_MAX];
		size_t n = 0, len = 0;
		uint32_t seq = (uint32_t)jint(e, "seq");
		struct kh_tlv tlv;
		struct kh_rd rd;

		assert_int_equal(kh_json_get_b64(e, "section", sec, sizeof sec, &n, 0), KH_OK);
		assert_int_equal(kh_authority_card_keys(b->w->auth, c->m.ua, kp, ku), KH_OK);
		assert_int_equal(kh_emm_open(kp, sec, n, cmds, sizeof cmds, &len), KH_OK);
		kh_wipe(kp, sizeof kp);
		kh_wipe(ku, sizeof ku);
		kh_rd_init(&rd, cmds, len);
		while (kh_tlv_next(&rd, &tlv) == 1)
			if (tlv.tag == KH_EMM_SET_KEY && tlv.v[0] == key_id && kh_get_be32(tlv.v + 1) == version)
				got++;
		kh_wipe(cmds, sizeof cmds);
		if (seq > c->applied) {
			assert_int_equal(kh_host_cas_emm(&direct, sec, n), KH_OK);
			c->applied = seq;
		}
	}
	reply_free(&r);
	return got;
}

/*
 * A rotation runs in chunks of CHUNK cards; one that fails half-way is finished by asking again:
 * the same version, no new one, and every active card sent the key exactly once.
 */
static void test_rotation_chunks(void **state)
{
	struct bw *b = *state;
	char trig[320];
	struct reply r;
	json_t *j;

	/* four active cards, two chunks */
	j = expect(b, "POST", "/v1/service-keys/rotate", "{\"key_id\":1}", NULL, 201, &r);
	assert_int_equal(jint(j, "version"), 2);
	assert_int_equal(jint(j, "emms_queued"), 4);
	assert_false(json_is_true(json_object_get(j, "resumed")));
	reply_free(&r);
	for (int i = 0; i < 4; i++)
		assert_int_equal(set_keys_for(b, &b->cards[i], 1, 2), 1);

	/* the next rotation fails in its second chunk (cards 2 and 3: UAs ascending) */
	snprintf(trig, sizeof trig, "NEW.address = %u", b->cards[2].m.ua);
	fail_inserts(b, "emm_queue", trig);
	http_req(&b->hc, "POST", "/v1/service-keys/rotate", "{\"key_id\":1}", NULL, &r);
	assert_true(r.status >= 400 && r.status < 600);
	reply_free(&r);
	assert_int_equal(set_keys_for(b, &b->cards[0], 1, 3), 1);
	assert_int_equal(set_keys_for(b, &b->cards[1], 1, 3), 1);
	assert_int_equal(set_keys_for(b, &b->cards[2], 1, 3), 0);
	assert_int_equal(set_keys_for(b, &b->cards[3], 1, 3), 0);

	/* asked again: version 3's job resumes after card 1, no version 4 */
	fail_inserts(b, "emm_queue", NULL);
	j = expect(b, "POST", "/v1/service-keys/rotate", "{\"key_id\":1}", NULL, 200, &r);
	assert_int_equal(jint(j, "version"), 3);
	assert_int_equal(jint(j, "emms_queued"), 4); /* the job's: both attempts */
	assert_true(json_is_true(json_object_get(j, "resumed")));
	reply_free(&r);
	for (int i = 0; i < 4; i++)
		assert_int_equal(set_keys_for(b, &b->cards[i], 1, 3), 1);
	j = expect(b, "GET", "/v1/service-keys", NULL, NULL, 200, &r);
	{
		json_t *k;
		size_t i;
		int64_t newest = 0;
		json_array_foreach(json_object_get(j, "service_keys"), i, k) if (jint(k, "key_id") == 1 &&
										      jint(k, "version") > newest) newest =
			jint(k, "version");
		assert_int_equal(newest, 3);
	}
	reply_free(&r);
	/* and the rotation after that makes version 4 as usual */
	j = expect(b, "POST", "/v1/service-keys/rotate", "{\"key_id\":1}", NULL, 201, &r);
	assert_int_equal(jint(j, "version"), 4);
	reply_free(&r);
}

static void test_list(void **state)
{
	struct bw *b = *state;
	char body[256];
	struct reply r;
	int64_t last = queue_last(b), s0 = b->sub[0], s2 = b->sub[2];
	json_t *j;
	int has;

	/* an unknown id refuses the whole request before anything changes */
	snprintf(body, sizeof body, "{\"subscribers\":[%lld,999999],\"start\":1,\"end\":2000000000}", (long long)s0);
	http_expect_error(&b->hc, "POST", "/v1/products/9/subscriptions", body, "list-9-bad", 404, "unknown_subscriber");
	assert_int_equal(queue_last(b), last);
	assert_int_equal(subs_of(b, s0, 9, &has), 0);
	/* the refusal stored nothing under the key: the corrected request may use it */

	/* listed, repeated, in any order: each once; a subscriber without a card is subscribed
	 * (its card will get the right when assigned), with no EMM */
	snprintf(body, sizeof body, "{\"subscribers\":[%lld,%lld,%lld],\"start\":1,\"end\":2000000000}", (long long)s2,
		 (long long)s0, (long long)s0);
	j = expect(b, "POST", "/v1/products/9/subscriptions", body, "list-9-bad", 201, &r);
	expect_answer(j, 9, 2, 1, 0, 1);
	reply_free(&r);
	assert_int_equal(subs_of(b, s2, 9, &has), 1);
	assert_true(has);
	assert_int_equal(sync_card(b, &b->cards[0], 9), 1);
	assert_true(card_has(&b->cards[0], 9, 1, rights_end(b, 1, 2000000000)));
	assert_int_equal(sync_card(b, &b->cards[1], 9), 0);
}

static void test_cap(void **state)
{
	struct bw *b = *state;
	int64_t s5 = b->sub[5], s0 = b->sub[0];
	char body[256], path[64];
	struct reply r;
	json_t *j;
	int has;

	/* subscriber 5 (no card) holds 32 products: the cap */
	for (int p = 100; p < 100 + KH_CAS_STATUS_MAX_RIGHTS; p++) {
		snprintf(body, sizeof body, "{\"id\":%d,\"name\":\"P%d\"}", p, p);
		expect(b, "POST", "/v1/products", body, NULL, 201, &r);
		reply_free(&r);
		snprintf(path, sizeof path, "/v1/subscribers/%lld/subscriptions", (long long)s5);
		snprintf(body, sizeof body, "{\"product_id\":%d,\"start\":1,\"end\":2}", p);
		expect(b, "POST", path, body, NULL, 201, &r);
		reply_free(&r);
	}
	/* a new product: subscriber 5 is skipped and counted, subscriber 0 is done, 3 ids = 2 chunks */
	snprintf(body, sizeof body, "{\"subscribers\":[%lld,%lld,%lld],\"start\":1,\"end\":2000000000}", (long long)s5,
		 (long long)s0, (long long)b->sub[1]);
	j = expect(b, "POST", "/v1/products/9/subscriptions", body, "cap-9", 201, &r);
	expect_answer(j, 9, 2, 2, 1, 2);
	reply_free(&r);
	assert_int_equal(subs_of(b, s5, 9, &has), KH_CAS_STATUS_MAX_RIGHTS);
	assert_false(has);
	/* a renewal at the cap is not a new right: it goes through */
	snprintf(body, sizeof body, "{\"subscribers\":[%lld],\"start\":1,\"end\":3}", (long long)s5);
	j = expect(b, "POST", "/v1/products/100/subscriptions", body, "cap-100", 201, &r);
	expect_answer(j, 100, 1, 0, 0, 1);
	reply_free(&r);
}

static void test_refusals(void **state)
{
	struct bw *b = *state;
	static const char path[] = "/v1/products/7/subscriptions";
	int64_t last = queue_last(b);
	char *big;
	size_t off;

	/* no key */
	http_expect_error(&b->hc, "POST", path, "{\"all\":true,\"start\":1,\"end\":2}", NULL, 400, "invalid_argument");
	/* the set: neither, both, all:false, empty, not positive, not integers */
	http_expect_error(&b->hc, "POST", path, "{\"start\":1,\"end\":2}", "k1", 400, "invalid_argument");
	http_expect_error(&b->hc, "POST", path, "{\"all\":true,\"subscribers\":[1],\"start\":1,\"end\":2}", "k1", 400,
			  "invalid_argument");
	http_expect_error(&b->hc, "POST", path, "{\"all\":false,\"start\":1,\"end\":2}", "k1", 400, "invalid_argument");
	http_expect_error(&b->hc, "POST", path, "{\"subscribers\":[],\"start\":1,\"end\":2}", "k1", 400,
			  "invalid_argument");
	http_expect_error(&b->hc, "POST", path, "{\"subscribers\":[0],\"start\":1,\"end\":2}", "k1", 400,
			  "invalid_argument");
	http_expect_error(&b->hc, "POST", path, "{\"subscribers\":[\"1\"],\"start\":1,\"end\":2}", "k1", 400,
			  "invalid_argument");
	/* times */
	http_expect_error(&b->hc, "POST", path, "{\"all\":true,\"start\":2,\"end\":2}", "k1", 400, "invalid_argument");
	http_expect_error(&b->hc, "POST", path, "{\"all\":true,\"end\":2}", "k1", 400, "invalid_argument");
	/* the path */
	http_expect_error(&b->hc, "POST", "/v1/products/x/subscriptions", "{\"all\":true,\"start\":1,\"end\":2}", "k1",
			  400, "invalid_argument");
	/* more than 10 000 ids */
	big = malloc(10001 * 2 + 64);
	assert_non_null(big);
	off = (size_t)sprintf(big, "{\"start\":1,\"end\":2,\"subscribers\":[");
	for (int i = 0; i < 10001; i++)
		off += (size_t)sprintf(big + off, "%s1", i ? "," : "");
	sprintf(big + off, "]}");
	http_expect_error(&b->hc, "POST", path, big, "k1", 400, "invalid_argument");
	free(big);
	/* an unknown product */
	http_expect_error(&b->hc, "POST", "/v1/products/4242/subscriptions", "{\"all\":true,\"start\":1,\"end\":2}", "k1",
			  404, "unknown_product");
	assert_int_equal(queue_last(b), last);
	/* none of these stored anything under k1: it still serves a good request */
	{
		struct reply r;
		json_t *j = expect(b, "POST", path, "{\"all\":true,\"start\":1,\"end\":2}", "k1", 201, &r);
		expect_answer(j, 7, 4, 4, 0, 2);
		reply_free(&r);
	}
}

/* ---- rights that end on their own, and their renewal ---- */

/* An ECM for product at time t, through decoder -> CAM -> card c. */
static kh_err watch_at(struct bw *b, struct card *c, uint32_t product, int64_t t)
{
	return center_watch(b->db, &b->w->dec.t, world_ecm_signer(b->w->auth), &b->w->cam.t, &c->m.t, product, t);
}

static json_t *renew(struct bw *b, int64_t cards, int64_t emms, struct reply *r)
{
	json_t *j = expect(b, "POST", "/v1/rights/renew", "{}", NULL, 200, r);
	assert_int_equal(jint(j, "cards"), cards);
	assert_int_equal(jint(j, "emms_queued"), emms);
	return j;
}

/*
 * A year's subscription for every card (product 7, in chunks of two): each card is sent rights
 * only up to the end of the current rights window, at most the TTL ahead. Within the window the
 * renewal has nothing to do. One window later the renewal sends the next window to the three
 * subscribers still subscribed — not to the one who cancelled — in several chunks, and once only
 * however often it is asked. The card whose EMMs are withheld from then on (card 2) keeps the
 * first window's right: an ECM broadcast after that end gets RIGHT_EXPIRED, while the card that
 * got its renewal still plays.
 */
static void test_rights_renewal(void **state)
{
	struct bw *b = *state;
	const int64_t ttl = KH_SMS_RIGHTS_TTL, half = ttl / 2, year = 365 * 86400;
	const int64_t k = (int64_t)time(NULL) / half, t0 = k * half + half / 2;
	char body[128], path[96];
	struct reply r;
	json_t *j;

	b->clock = t0;
	snprintf(body, sizeof body, "{\"all\":true,\"start\":%lld,\"end\":%lld}", (long long)(t0 - 60),
		 (long long)(t0 + year));
	expect(b, "POST", "/v1/products/7/subscriptions", body, "rights-7", 201, &r);
	reply_free(&r);
	snprintf(path, sizeof path, "/v1/subscribers/%lld/subscriptions/7", (long long)b->sub[1]);
	expect(b, "DELETE", path, NULL, NULL, 200, &r);
	reply_free(&r);
	for (int i = 0; i < 4; i++)
		(void)sync_card(b, &b->cards[i], 7);
	/* rights only a window ahead: more than half the TTL, at most the TTL, not the year */
	assert_true(card_has(&b->cards[0], 7, t0 - 60, (k + 2) * half));
	assert_true((k + 2) * half - t0 <= ttl && (k + 2) * half - t0 > half);
	assert_true(card_has(&b->cards[2], 7, t0 - 60, (k + 2) * half));
	assert_int_equal(watch_at(b, &b->cards[2], 7, t0), KH_OK);

	/* nothing to renew within the window, however often asked */
	reply_free((renew(b, 0, 0, &r), &r));
	reply_free((renew(b, 0, 0, &r), &r));

	/* the next window: subscribers 0, 3 and 4, two per chunk; asked again, nothing twice */
	b->clock = t0 + half;
	j = renew(b, 3, 3, &r);
	assert_int_equal(jint(j, "window_start"), (k + 1) * half);
	assert_int_equal(jint(j, "rights_end"), (k + 3) * half);
	assert_true(jint(j, "chunks") >= 2);
	reply_free(&r);
	reply_free((renew(b, 0, 0, &r), &r));
	assert_int_equal(sync_card(b, &b->cards[0], 7), 2);
	assert_true(card_has(&b->cards[0], 7, t0 - 60, (k + 3) * half));
	assert_int_equal(sync_card(b, &b->cards[1], 7), 1); /* cancelled: the first ENTITLE only */
	assert_int_equal(sync_card(b, &b->cards[3], 7), 2);

	/* card 2's EMMs are withheld from now on: its right ends with the first window */
	assert_int_equal(watch_at(b, &b->cards[2], 7, (k + 2) * half - 1), KH_OK);
	assert_int_equal(watch_at(b, &b->cards[2], 7, (k + 2) * half + 1), KH_ERR_RIGHT_EXPIRED);
	assert_int_equal(watch_at(b, &b->cards[0], 7, (k + 2) * half + 1), KH_OK);

	/* a year later the subscription's own end caps the window */
	b->clock = t0 + year - half / 2;
	reply_free((renew(b, 3, 3, &r), &r));
	(void)sync_card(b, &b->cards[0], 7);
	assert_true(card_has(&b->cards[0], 7, t0 - 60, t0 + year));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_all, setup, teardown),
		cmocka_unit_test_setup_teardown(test_resume, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rotation_chunks, setup, teardown),
		cmocka_unit_test_setup_teardown(test_list, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cap, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refusals, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rights_renewal, setup, teardown),
	};
	curl_global_init(CURL_GLOBAL_DEFAULT);
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	curl_global_cleanup();
	return rc;
}
