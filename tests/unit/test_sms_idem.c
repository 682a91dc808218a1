/*
 * Every operator write of the management center keeps its Idempotency-Key (src/center/sms/
 * sms_util.c, kh__sms_idem_*: bound in the write's own transaction): a real center on an
 * ephemeral port with a temporary authority and store, driven with libcurl, the store read
 * beside it (on SQLite, and again on PostgreSQL as unit/test_sms_idem_pg).
 *
 * The writes are data: each row of `writes` is a request, another request on the same route, and
 * a count (SQL on the store) of what the write changes. For each, the judges:
 *   - the request twice with one key: the count moves once, both answers have the same status
 *     and the same bytes (so the same id), the second marked Idempotent-Replayed, and the
 *     replay queues no EMM;
 *   - the other request with that key: 422 idempotency_mismatch, and nothing is committed at all
 *     (the store's data_version, which moves with any commit of another connection, stays);
 *   - the request with a second key: a new request, done as it would be without a key (a
 *     creation makes a second row with another id; an action done already is refused).
 * The bulk subscription, the reload and the renames and deletions have their own tests
 * (test_bulk.c, test_sms.c, test_sms_list.c). Last, a record stored before answers kept their
 * status (a reload's or an edit's, always a 200) is replayed as a 200.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "httputil.h"
#include "testutil.h"
#include "world.h"

#include "keyhole/authority.h"
#include "keyhole/cert.h"
#include "keyhole/crypto.h"
#include "keyhole/http.h"
#include "keyhole/sms.h"

/* What a write is asked, and what it changes. */
struct write {
	const char *method;
	/* [0] the request, [1] another on the same route ("" path: none), [2] the request sent with
	 * a second key ("" path: [0] again). A body "" is none. */
	char path[3][96];
	char body[3][KH_CERT_MAX * 2];
	const char *count;  /* SQL giving one integer: what the write changes */
	long status;        /* the answer to [0] */
	int64_t makes;      /* the count's move, the first time */
	long again;         /* the answer to [2] with a second key */
	int64_t again_makes;
	const char *id;     /* the answer's member naming what was made (another with a second key) */
};

struct iw;
/* One row of the table: what it makes first, and the write it asks (into x). */
struct row {
	void (*prepare)(struct iw *t, struct write *x);
};

struct iw {
	struct center_rig r;   /* the center, its store file, curl (httputil.h) */
	const struct row *row; /* the row run (NULL: another test) */
};

static int setup(void **state)
{
	struct iw *t = calloc(1, sizeof *t);

	assert_non_null(t);
	center_rig_up(&t->r);
	t->row = *state;
	*state = t;
	return 0;
}

static int teardown(void **state)
{
	struct iw *t = *state;

	center_rig_down(&t->r);
	free(t);
	return 0;
}

/* ---- the store, read ---- */

static int64_t sql_int(struct iw *t, const char *sql)
{
	return kh_test_sql_int(t->r.db, sql);
}

#define EMMS "SELECT count(*) FROM emm_queue"

/* ---- what a row needs made first (no key: as a client without one does) ---- */

/* A request that must answer status: its answer's member k as an integer (k NULL: none). */
static int64_t call(struct iw *t, const char *method, const char *path, const char *body, long status, const char *k)
{
	struct reply r;
	int64_t v;

	http_expect(&t->r.hc, method, path, body, NULL, status, &r);
	v = k ? jint(r.json, k) : 0;
	reply_free(&r);
	return v;
}

/* A card registered, and assigned to sub when sub is not 0. */
static uint32_t card(struct iw *t, int64_t sub)
{
	char body[KH_CERT_MAX * 2], path[64];
	uint32_t ua = center_card_body(t->r.w->auth, body, sizeof body);

	call(t, "POST", "/v1/cards", body, 201, NULL);
	if (sub) {
		snprintf(path, sizeof path, "/v1/cards/%08X/assign", ua);
		snprintf(body, sizeof body, "{\"subscriber_id\":%lld}", (long long)sub);
		call(t, "POST", path, body, 200, NULL);
	}
	return ua;
}

static int64_t subscriber(struct iw *t)
{
	return call(t, "POST", "/v1/subscribers", "{\"name\":\"S\"}", 201, "id");
}

static void product(struct iw *t, int id)
{
	char body[64];

	snprintf(body, sizeof body, "{\"id\":%d,\"name\":\"P%d\"}", id, id);
	call(t, "POST", "/v1/products", body, 201, NULL);
}

/* ---- the writes ---- */

static void w_subscriber(struct iw *t, struct write *x)
{
	(void)t;
	*x = (struct write){"POST", {"/v1/subscribers", "/v1/subscribers"}, {"{\"name\":\"Ada\"}", "{\"name\":\"Bob\"}"},
			    "SELECT count(*) FROM subscribers", 201, 1, 201, 1, "id"};
}

static void w_card(struct iw *t, struct write *x)
{
	*x = (struct write){"POST", {"/v1/cards", "/v1/cards", "/v1/cards"}, {""}, "SELECT count(*) FROM cards", 201, 1,
			    201, 1, "ua"};
	for (int i = 0; i < 3; i++)
		center_card_body(t->r.w->auth, x->body[i], sizeof x->body[i]);
}

static void w_product(struct iw *t, struct write *x)
{
	(void)t;
	*x = (struct write){"POST", {"/v1/products", "/v1/products"}, {"{\"name\":\"Gold\"}", "{\"name\":\"Silver\"}"},
			    "SELECT count(*) FROM products", 201, 1, 201, 1, "id"};
}

static void w_channel(struct iw *t, struct write *x)
{
	product(t, 7);
	*x = (struct write){"POST",
			    {"/v1/channels", "/v1/channels"},
			    {"{\"name\":\"One\",\"product_id\":7}", "{\"name\":\"Two\",\"product_id\":7}"},
			    "SELECT count(*) FROM channels",
			    201, 1, 201, 1, "id"};
}

static void w_event(struct iw *t, struct write *x)
{
	product(t, 7);
	call(t, "POST", "/v1/channels", "{\"id\":70,\"name\":\"C\",\"product_id\":7}", 201, NULL);
	*x = (struct write){"POST",
			    {"/v1/events", "/v1/events"},
			    {"{\"name\":\"Final\",\"price\":30,\"channel_id\":70,\"start\":1000,\"end\":2000}",
			     "{\"name\":\"Final\",\"price\":31,\"channel_id\":70,\"start\":1000,\"end\":2000}"},
			    "SELECT count(*) FROM events",
			    201, 1, 201, 1, "id"};
}

/* A subscription queues ENTITLE for the active card; the second key renews it (one more). */
static void w_subscribe(struct iw *t, struct write *x)
{
	int64_t sub = subscriber(t), now = (int64_t)time(NULL);

	product(t, 7);
	card(t, sub);
	*x = (struct write){"POST", {""}, {""}, EMMS, 201, 1, 201, 1, NULL};
	snprintf(x->path[0], sizeof x->path[0], "/v1/subscribers/%lld/subscriptions", (long long)sub);
	strcpy(x->path[1], x->path[0]);
	snprintf(x->body[0], sizeof x->body[0], "{\"product_id\":7,\"start\":%lld,\"end\":%lld}", (long long)now,
		 (long long)now + 86400);
	snprintf(x->body[1], sizeof x->body[1], "{\"product_id\":7,\"start\":%lld,\"end\":%lld}", (long long)now,
		 (long long)now + 2 * 86400);
}

/* The second key finds no subscription left to remove: 404. */
static void w_unsubscribe(struct iw *t, struct write *x)
{
	int64_t sub = subscriber(t);
	char path[80];

	product(t, 7);
	product(t, 8);
	snprintf(path, sizeof path, "/v1/subscribers/%lld/subscriptions", (long long)sub);
	call(t, "POST", path, "{\"product_id\":7,\"start\":1000,\"end\":5000}", 201, NULL);
	call(t, "POST", path, "{\"product_id\":8,\"start\":1000,\"end\":5000}", 201, NULL);
	*x = (struct write){"DELETE", {""}, {""}, "SELECT count(*) FROM subscriptions", 200, -1, 404, 0, NULL};
	snprintf(x->path[0], sizeof x->path[0], "%s/7", path);
	snprintf(x->path[1], sizeof x->path[1], "%s/8", path);
}

/* The second key finds the card active already: 409 card_state. */
static void w_assign(struct iw *t, struct write *x)
{
	int64_t a = subscriber(t), b = subscriber(t);
	uint32_t ua = card(t, 0);

	*x = (struct write){"POST", {""}, {""}, "SELECT count(*) FROM cards WHERE state = 'active'", 200, 1, 409, 0, NULL};
	snprintf(x->path[0], sizeof x->path[0], "/v1/cards/%08X/assign", ua);
	strcpy(x->path[1], x->path[0]);
	snprintf(x->body[0], sizeof x->body[0], "{\"subscriber_id\":%lld}", (long long)a);
	snprintf(x->body[1], sizeof x->body[1], "{\"subscriber_id\":%lld}", (long long)b);
}

static void w_replace(struct iw *t, struct write *x)
{
	uint32_t old = card(t, subscriber(t)), nw = card(t, 0), other = card(t, 0);

	*x = (struct write){"POST", {""}, {""}, "SELECT count(*) FROM cards WHERE state = 'replaced'", 200, 1, 409, 0, NULL};
	snprintf(x->path[0], sizeof x->path[0], "/v1/cards/%08X/replace", old);
	strcpy(x->path[1], x->path[0]);
	snprintf(x->body[0], sizeof x->body[0], "{\"new_ua\":\"%08X\"}", nw);
	snprintf(x->body[1], sizeof x->body[1], "{\"new_ua\":\"%08X\"}", other);
}

/* No body: the other request is another card's forfeit. */
static void w_forfeit(struct iw *t, struct write *x)
{
	uint32_t old = card(t, subscriber(t)), nw = card(t, 0);
	char path[64], body[40];

	snprintf(path, sizeof path, "/v1/cards/%08X/replace", old);
	snprintf(body, sizeof body, "{\"new_ua\":\"%08X\"}", nw);
	call(t, "POST", path, body, 200, NULL);
	*x = (struct write){"POST", {""}, {""}, "SELECT count(*) FROM cards WHERE state = 'closed'", 200, 1, 409, 0, NULL};
	snprintf(x->path[0], sizeof x->path[0], "/v1/cards/%08X/forfeit", old);
	snprintf(x->path[1], sizeof x->path[1], "/v1/cards/%08X/forfeit", nw);
}

/* Its answer says 201 for a new version: the replay too. Each key makes one version. */
static void w_rotate(struct iw *t, struct write *x)
{
	card(t, subscriber(t));
	*x = (struct write){"POST",
			    {"/v1/service-keys/rotate", "/v1/service-keys/rotate"},
			    {"{\"key_id\":1}", "{\"key_id\":2}"},
			    "SELECT count(*) FROM service_keys",
			    201, 1, 201, 1, "version"};
}

/* The sweep of the window is one progress row per product; the second key finds it done. */
static void w_renew(struct iw *t, struct write *x)
{
	(void)t;
	product(t, 7);
	*x = (struct write){"POST", {"/v1/rights/renew"}, {""}, "SELECT count(*) FROM bulk_jobs", 200, 1, 200, 0, NULL};
}

/* The count is the policy's initial credit (0 until set). */
static void w_policy(struct iw *t, struct write *x)
{
	(void)t;
	*x = (struct write){"PUT",
			    {"/v1/credit-policy", "/v1/credit-policy"},
			    {"{\"initial_credit\":10,\"reload_amount\":50}", "{\"initial_credit\":11,\"reload_amount\":50}"},
			    "SELECT initial_credit FROM credit_policy",
			    200, 10, 200, 0, NULL};
}

static const char *body_of(const struct write *x, int i)
{
	return x->body[i][0] ? x->body[i] : NULL;
}

static void test_keyed_write(void **state)
{
	struct iw *t = *state;
	struct write x;
	struct reply a, b, c;
	int64_t n0, n1, emms;
	int i;

	t->row->prepare(t, &x);
	/* the request twice with one key: done once, answered the same */
	n0 = sql_int(t, x.count);
	http_expect(&t->r.hc, x.method, x.path[0], body_of(&x, 0), "key-1", x.status, &a);
	assert_false(a.replayed);
	n1 = sql_int(t, x.count);
	assert_int_equal(n1 - n0, x.makes);
	emms = sql_int(t, EMMS);
	http_expect(&t->r.hc, x.method, x.path[0], body_of(&x, 0), "key-1", x.status, &b);
	assert_true(b.replayed);
	assert_string_equal(a.body, b.body);
	if (x.id)
		assert_true(json_equal(json_object_get(a.json, x.id), json_object_get(b.json, x.id)));
	assert_int_equal(sql_int(t, x.count), n1);
	assert_int_equal(sql_int(t, EMMS), emms);

	/* the key with another request: refused, nothing committed */
	if (x.path[1][0]) {
		char *before = kh_test_sql_dump(t->r.db), *after;

		http_expect_error(&t->r.hc, x.method, x.path[1], body_of(&x, 1), "key-1", 422, "idempotency_mismatch");
		after = kh_test_sql_dump(t->r.db);
		assert_string_equal(before, after); /* not a row of any table changed */
		free(before);
		free(after);
	}

	/* a second key: a new request */
	i = x.path[2][0] ? 2 : 0;
	http_req(&t->r.hc, x.method, x.path[i], body_of(&x, i), "key-2", &c);
	if (c.status != x.again)
		fprintf(stderr, "%s %s -> %ld %s\n", x.method, x.path[i], c.status, c.body ? c.body : "");
	assert_int_equal(c.status, x.again);
	assert_false(c.replayed);
	assert_int_equal(sql_int(t, x.count) - n1, x.again_makes);
	if (x.id && x.again / 100 == 2)
		assert_false(json_equal(json_object_get(a.json, x.id), json_object_get(c.json, x.id)));
	reply_free(&a);
	reply_free(&b);
	reply_free(&c);
}

/*
 * A record stored before records kept the answer's status: the answer's JSON alone. Only a
 * reload and the renames and deletions stored records then, and each answered 200: so is the
 * replay. The record is written as the center scopes and hashes it (kh__sms_idem_key,
 * kh__sms_idem_init): "op:" and base64url(SHA-256("op", "PATCH", route, key)), SHA-256 of the
 * method, path and body.
 */
static void test_record_without_status(void **state)
{
	static const char route[] = "/v1/products/{id}", key[] = "old-1", body[] = "{\"name\":\"Old\"}",
			  answer[] = "{\"id\":7,\"name\":\"Old\"}";
	struct iw *t = *state;
	char in[128], fp[128], scoped[64] = "op:", sql[512], hex[65];
	uint8_t d[32];
	size_t n;
	struct reply r;

	product(t, 7);
	n = (size_t)snprintf(in, sizeof in, "op%cPATCH%c%s%c%s", 0, 0, route, 0, key);
	assert_int_equal(kh_sha256((const uint8_t *)in, n, d), KH_OK);
	assert_int_equal(kh_b64url_encode(d, sizeof d, scoped + 3, sizeof scoped - 3), KH_OK);
	n = (size_t)snprintf(fp, sizeof fp, "PATCH\n/v1/products/7\n%s", body);
	assert_int_equal(kh_sha256((const uint8_t *)fp, n, d), KH_OK);
	for (size_t i = 0; i < sizeof d; i++)
		snprintf(hex + 2 * i, 3, "%02x", d[i]);
	if (kh_test_pg())
		snprintf(sql, sizeof sql,
			 "INSERT INTO idempotency (key, request_hash, response, created_at) VALUES ('%s', '\\x%s'::bytea, "
			 "convert_to('%s', 'UTF8'), %lld)",
			 scoped, hex, answer, (long long)time(NULL));
	else
		snprintf(sql, sizeof sql,
			 "INSERT INTO idempotency (key, request_hash, response, created_at) VALUES ('%s', x'%s', "
			 "CAST('%s' AS BLOB), %lld)",
			 scoped, hex, answer, (long long)time(NULL));
	kh_test_sql_exec(t->r.db, sql);

	http_expect(&t->r.hc, "PATCH", "/v1/products/7", body, key, 200, &r);
	assert_true(r.replayed);
	assert_string_equal(r.body, answer);
	reply_free(&r);
	/* the replay changed nothing: the product keeps its name */
	http_expect(&t->r.hc, "GET", "/v1/products/7", NULL, NULL, 200, &r);
	assert_string_equal(jstr(r.json, "name"), "P7");
	reply_free(&r);
}

static const struct row rows[] = {
	{w_subscriber}, {w_card},   {w_product}, {w_channel}, {w_event}, {w_subscribe}, {w_unsubscribe},
	{w_assign},     {w_replace}, {w_forfeit}, {w_rotate},  {w_renew}, {w_policy},
};

#define WRITE(i, name) {name, test_keyed_write, setup, teardown, (void *)&rows[i]}

/*
 * Records past the horizon go: on SQLite with the next keyed write, in its transaction; on
 * PostgreSQL not there (that DELETE made every two concurrent writes conflict) but in the
 * renewal thread's round, outside any request.
 */
static void test_expiry(void **state)
{
	struct iw *t = *state;
	struct reply r;
	const char *old = "INSERT INTO idempotency (key, request_hash, response, created_at) VALUES "
			  "('op:old', zeroblob(32), randomblob(16), 1)";
	int64_t left;

	kh_test_sql_exec(t->r.db, old);
	http_expect(&t->r.hc, "POST", "/v1/subscribers", "{\"name\":\"New\"}", "new-1", 201, &r);
	reply_free(&r);
	left = sql_int(t, "SELECT count(*) FROM idempotency WHERE key = 'op:old'");
	assert_int_equal(left, kh_test_pg() ? 1 : 0);
	assert_int_equal(sql_int(t, "SELECT count(*) FROM idempotency WHERE key <> 'op:old'"), 1);
	if (!kh_test_pg())
		return;
	assert_int_equal(kh_sms_renew_start(t->r.sms, 3600), KH_OK); /* its first round runs at once */
	for (int i = 0; i < 100 && left != 0; i++) {
		usleep(50000);
		left = sql_int(t, "SELECT count(*) FROM idempotency WHERE key = 'op:old'");
	}
	assert_int_equal(left, 0);
	assert_int_equal(sql_int(t, "SELECT count(*) FROM idempotency"), 1); /* the new one stays */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		WRITE(0, "POST /v1/subscribers"),
		WRITE(1, "POST /v1/cards"),
		WRITE(2, "POST /v1/products"),
		WRITE(3, "POST /v1/channels"),
		WRITE(4, "POST /v1/events"),
		WRITE(5, "POST /v1/subscribers/{id}/subscriptions"),
		WRITE(6, "DELETE /v1/subscribers/{id}/subscriptions/{product_id}"),
		WRITE(7, "POST /v1/cards/{ua}/assign"),
		WRITE(8, "POST /v1/cards/{ua}/replace"),
		WRITE(9, "POST /v1/cards/{ua}/forfeit"),
		WRITE(10, "POST /v1/service-keys/rotate"),
		WRITE(11, "POST /v1/rights/renew"),
		WRITE(12, "PUT /v1/credit-policy"),
		cmocka_unit_test_setup_teardown(test_record_without_status, setup, teardown),
		cmocka_unit_test_setup_teardown(test_expiry, setup, teardown),
	};
	int rc;

	_Static_assert(sizeof rows / sizeof rows[0] == 13, "one WRITE() per row");
	curl_global_init(CURL_GLOBAL_DEFAULT);
	rc = cmocka_run_group_tests(tests, NULL, NULL);
	curl_global_cleanup();
	return rc;
}
