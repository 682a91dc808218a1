/*
 * The operator's lists, reads, renames, closings and deletions, and the health endpoints
 * (src/center/sms/sms_list.c, sms_edit.c, sms_health.c; src/store/ops_list.c, ops_edit.c): a
 * real center on an ephemeral port with a temporary authority and store, driven with
 * libcurl.
 *
 * The judges: pages walked cursor to cursor give every row exactly once and in order, also when
 * rows are added between two pages (before the cursor: not shown; after it: shown once); each
 * filter gives exactly the rows it names; a refusal is a 409 and leaves every table of the store
 * byte for byte as it was; an allowed delete or close is seen in the reads and lists; a write
 * retried with its Idempotency-Key answers the first answer and changes nothing more; /readyz
 * says 503 once the database is locked or gone, and the health endpoints are never rate limited.
 *
 * Rows the API has no cheap way to make (invoices, which come from cards' usage uploads; stored
 * upload sessions; a purchase; an unfinished bulk job) are written into the store directly, as
 * the center's upload path writes them: the center reads them as its own. The test runs on SQLite
 * and again on PostgreSQL (unit/test_sms_list_pg).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>
#include <sqlite3.h>

#include "httputil.h"
#include "testutil.h"
#include "world.h"

#include "keyhole/authority.h"
#include "keyhole/cert.h"
#include "keyhole/crypto.h"
#include "keyhole/http.h"
#include "keyhole/sms.h"

#define N 250
#define LIMIT 100

static int setup(void **state)
{
	struct center_rig *t = calloc(1, sizeof *t);

	assert_non_null(t);
	center_rig_up(t);
	*state = t;
	return 0;
}

static int teardown(void **state)
{
	center_rig_down(*state);
	free(*state);
	return 0;
}

/* ---- helpers ---- */

static json_t *expect(struct center_rig *t, const char *method, const char *path, const char *body, const char *idem,
		      long status, struct reply *r)
{
	return http_expect(&t->hc, method, path, body, idem, status, r);
}

static void expect_error(struct center_rig *t, const char *method, const char *path, const char *body, const char *idem,
			 long status, const char *code)
{
	http_expect_error(&t->hc, method, path, body, idem, status, code);
}

/* A request that must answer status; its reply is dropped. */
static void call(struct center_rig *t, const char *method, const char *path, const char *body, long status)
{
	struct reply r;

	expect(t, method, path, body, NULL, status, &r);
	reply_free(&r);
}

/* Rows written behind the center's back, as its upload path writes them. Rows given explicit
 * ids leave PostgreSQL's identity sequence behind them: it is moved past them. */
static void store_exec(struct center_rig *t, const char *sql)
{
	char table[40];

	kh_test_sql_exec(t->db, sql);
	if (sscanf(sql, "INSERT INTO %39s (id,", table) == 1 && strstr(sql, " (id,") != NULL)
		kh_test_sql_ids_taken(t->db, table);
}

static char *store_dump(struct center_rig *t)
{
	return kh_test_sql_dump(t->db);
}

/* A refusal: 409 with code, and the store as it was. */
static void refused_idem(struct center_rig *t, const char *method, const char *path, const char *body, const char *idem,
			 const char *code)
{
	char *before = store_dump(t), *after;

	expect_error(t, method, path, body, idem, 409, code);
	after = store_dump(t);
	assert_string_equal(before, after);
	free(before);
	free(after);
}

static void refused(struct center_rig *t, const char *method, const char *path, const char *body, const char *code)
{
	refused_idem(t, method, path, body, NULL, code);
}

/* A card's signing certificate issued by the operator for a fresh key and UA, registered: its UA. */
static uint32_t new_card(struct center_rig *t)
{
	char body[KH_CERT_MAX * 2];
	uint32_t ua = center_card_body(t->w->auth, body, sizeof body);

	call(t, "POST", "/v1/cards", body, 201);
	return ua;
}

static int64_t new_subscriber(struct center_rig *t, const char *name)
{
	char body[300];
	struct reply r;
	int64_t id;

	snprintf(body, sizeof body, "{\"name\":\"%s\"}", name);
	id = jint(expect(t, "POST", "/v1/subscribers", body, NULL, 201, &r), "id");
	reply_free(&r);
	return id;
}

static void new_product(struct center_rig *t, int64_t id)
{
	char body[100];

	snprintf(body, sizeof body, "{\"id\":%lld,\"name\":\"P%lld\"}", (long long)id, (long long)id);
	call(t, "POST", "/v1/products", body, 201);
}

static void new_channel(struct center_rig *t, int64_t id, int64_t product)
{
	char body[120];

	snprintf(body, sizeof body, "{\"id\":%lld,\"name\":\"C%lld\",\"product_id\":%lld}", (long long)id, (long long)id,
		 (long long)product);
	call(t, "POST", "/v1/channels", body, 201);
}

static void new_event(struct center_rig *t, int64_t id, int64_t channel, int64_t start)
{
	char body[200];

	snprintf(body, sizeof body,
		 "{\"id\":%lld,\"name\":\"E%lld\",\"price\":10,\"channel_id\":%lld,\"start\":%lld,\"end\":%lld}",
		 (long long)id, (long long)id, (long long)channel, (long long)start, (long long)start + 100);
	call(t, "POST", "/v1/events", body, 201);
}

static void subscribe(struct center_rig *t, int64_t sub, int64_t product, int64_t end)
{
	char path[80], body[120];

	snprintf(path, sizeof path, "/v1/subscribers/%lld/subscriptions", (long long)sub);
	snprintf(body, sizeof body, "{\"product_id\":%lld,\"start\":1000,\"end\":%lld}", (long long)product,
		 (long long)end);
	call(t, "POST", path, body, 201);
}

static void assign(struct center_rig *t, uint32_t ua, int64_t sub)
{
	char path[60], body[60];

	snprintf(path, sizeof path, "/v1/cards/%08X/assign", ua);
	snprintf(body, sizeof body, "{\"subscriber_id\":%lld}", (long long)sub);
	call(t, "POST", path, body, 200);
}

/* Invoice id at time t for subscriber sub (0: nobody), written as an upload writes it. */
static void raw_invoice(struct center_rig *t, int64_t id, int64_t sub, int64_t time)
{
	char sql[300], who[24];

	snprintf(who, sizeof who, sub ? "%lld" : "NULL", (long long)sub);
	snprintf(sql, sizeof sql,
		 "INSERT INTO invoices (id, subscriber_id, ua, event_id, price, time, created_at)\n"
		 "VALUES (%lld, %s, 7, %lld, 10, %lld, 1)",
		 (long long)id, who, (long long)id, (long long)time);
	store_exec(t, sql);
}

/* ---- walking a list cursor to cursor ---- */

/* The key a list is ordered by, of one item. */
typedef int64_t (*key_fn)(const json_t *item);
/* Called after the first page, with its next_cursor: rows may be added there. */
typedef void (*between_fn)(struct center_rig *t, void *ctx);

static int64_t key_id(const json_t *o)
{
	return jint(o, "id");
}

static int64_t key_ua(const json_t *o)
{
	return (int64_t)strtoul(jstr(o, "ua"), NULL, 16);
}

static int64_t key_product(const json_t *o)
{
	return jint(o, "product_id");
}

/* Invoices: by time, then id (times and ids here are small). */
static int64_t key_invoice(const json_t *o)
{
	return jint(o, "time") * 1000000 + jint(o, "id");
}

/*
 * Walk path (which has a '?' or not) at limit: every page but the last holds limit items, the
 * last says next_cursor null, keys rise strictly across pages (so no row twice, in order).
 * The keys into out (cap); returns how many; *pages the pages.
 */
static size_t walk(struct center_rig *t, const char *path, const char *items, unsigned limit, key_fn key,
		   between_fn between, void *ctx, int64_t *out, size_t cap, unsigned *pages)
{
	char url[400], cursor[200] = "";
	size_t n = 0;
	unsigned pg = 0;
	int64_t last = INT64_MIN;

	for (;;) {
		struct reply r;
		json_t *j, *arr, *next, *it;
		size_t i;

		snprintf(url, sizeof url, "%s%slimit=%u%s%s", path, strchr(path, '?') ? "&" : "?", limit,
			 cursor[0] ? "&cursor=" : "", cursor);
		j = expect(t, "GET", url, NULL, NULL, 200, &r);
		assert_int_equal(json_object_size(j), 2);
		arr = json_object_get(j, items);
		next = json_object_get(j, "next_cursor");
		assert_true(json_is_array(arr));
		assert_non_null(next);
		pg++;
		json_array_foreach(arr, i, it) {
			int64_t k = key(it);
			assert_true(k > last);
			last = k;
			assert_true(n < cap);
			out[n++] = k;
		}
		if (json_is_null(next)) {
			assert_true(json_array_size(arr) <= limit);
			reply_free(&r);
			break;
		}
		assert_int_equal(json_array_size(arr), limit);
		assert_true(json_is_string(next));
		snprintf(cursor, sizeof cursor, "%s", json_string_value(next));
		reply_free(&r);
		if (pg == 1 && between)
			between(t, ctx);
	}
	if (pages)
		*pages = pg;
	return n;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

/* got (n, ascending) is exactly want (m, any order). */
static void same_set(const int64_t *got, size_t n, int64_t *want, size_t m)
{
	qsort(want, m, sizeof *want, cmp_i64);
	assert_int_equal(n, m);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(got[i], want[i]);
}

/* ---- 1. every list, cursor to cursor, rows added between pages ---- */

struct grow {
	int64_t *want;
	size_t nwant;
	int64_t low, high; /* rows added before the cursor (never shown) and after it */
};

/* Walk path at limit, adding rows after the first page (more), in pages pages: exactly g->want. */
static void check_walk(struct center_rig *t, const char *path, const char *items, unsigned limit, key_fn key,
		       between_fn more, struct grow *g, unsigned pages)
{
	int64_t got[N + 10];
	unsigned walked = 0;
	size_t n = walk(t, path, items, limit, key, more, g, got, N + 10, &walked);

	assert_int_equal(walked, pages);
	same_set(got, n, g->want, g->nwant);
}

static void more_subscribers(struct center_rig *t, void *ctx)
{
	struct grow *g = ctx;
	g->want[g->nwant++] = new_subscriber(t, "late");
}

static void test_pages_subscribers(void **state)
{
	struct center_rig *t = *state;
	int64_t want[N + 1];
	struct grow g = {want, 0, 0, 0};

	for (int i = 0; i < N; i++)
		want[g.nwant++] = new_subscriber(t, "someone");
	check_walk(t, "/v1/subscribers", "subscribers", LIMIT, key_id, more_subscribers, &g, 3);
	/* the default page is 100 */
	{
		struct reply r;
		json_t *j = expect(t, "GET", "/v1/subscribers", NULL, NULL, 200, &r);
		assert_int_equal(json_array_size(json_object_get(j, "subscribers")), 100);
		assert_true(json_is_string(json_object_get(j, "next_cursor")));
		reply_free(&r);
	}
}

static void more_cards(struct center_rig *t, void *ctx)
{
	struct grow *g = ctx;
	g->want[g->nwant++] = new_card(t); /* UAs only grow: after the cursor */
}

static void test_pages_cards(void **state)
{
	struct center_rig *t = *state;
	int64_t want[N + 1];
	struct grow g = {want, 0, 0, 0};

	for (int i = 0; i < N; i++)
		want[g.nwant++] = new_card(t);
	check_walk(t, "/v1/cards", "cards", LIMIT, key_ua, more_cards, &g, 3);
}

/* A catalogue row below the cursor (never shown) and one above it (shown once). */
static void more_products(struct center_rig *t, void *ctx)
{
	struct grow *g = ctx;
	new_product(t, g->low);
	new_product(t, g->high);
	g->want[g->nwant++] = g->high;
}

static void more_channels(struct center_rig *t, void *ctx)
{
	struct grow *g = ctx;
	new_channel(t, g->low, 1);
	new_channel(t, g->high, 1);
	g->want[g->nwant++] = g->high;
}

static void more_events(struct center_rig *t, void *ctx)
{
	struct grow *g = ctx;
	new_event(t, g->low, 1, 5000);
	new_event(t, g->high, 1, 5000);
	g->want[g->nwant++] = g->high;
}

static void test_pages_catalogue(void **state)
{
	struct center_rig *t = *state;
	int64_t want[N + 2];

	/* ids 2, 4, ..., 2N: odd ids below the first page's end are free to add there */
	{
		struct grow g = {want, 0, 3, 2 * N + 1};
		for (int i = 1; i <= N; i++) {
			new_product(t, 2 * i);
			want[g.nwant++] = 2 * i;
		}
		check_walk(t, "/v1/products", "products", LIMIT, key_id, more_products, &g, 3);
	}
	{
		struct grow g = {want, 0, 3, 2 * N + 1};
		for (int i = 1; i <= N; i++) {
			new_channel(t, 2 * i, 2);
			want[g.nwant++] = 2 * i;
		}
		new_product(t, 1);
		check_walk(t, "/v1/channels", "channels", LIMIT, key_id, more_channels, &g, 3);
	}
	{
		struct grow g = {want, 0, 3, 2 * N + 1};
		for (int i = 1; i <= N; i++) {
			new_event(t, 2 * i, 2, 1000 + i);
			want[g.nwant++] = 2 * i;
		}
		new_channel(t, 1, 1);
		check_walk(t, "/v1/events", "events", LIMIT, key_id, more_events, &g, 3);
	}
}

/* Invoices: three at each time, so pages end inside a time; added before and after the cursor. */
static void more_invoices(struct center_rig *t, void *ctx)
{
	struct grow *g = ctx;
	raw_invoice(t, 900001, 1, 0);   /* the earliest time: before the cursor */
	raw_invoice(t, 900002, 1, 999); /* the latest: after it */
	g->want[g->nwant++] = 999 * 1000000 + 900002;
}

static void test_pages_invoices(void **state)
{
	struct center_rig *t = *state;
	int64_t want[N + 2];
	struct grow g = {want, 0, 0, 0};

	new_subscriber(t, "payer");
	/* ids descend while times ascend: the order is the time's, then the id's */
	for (int i = 0; i < N; i++) {
		int64_t id = N - i, time = 10 + i / 3;
		raw_invoice(t, id, 1, time);
		want[g.nwant++] = time * 1000000 + id;
	}
	check_walk(t, "/v1/invoices", "invoices", LIMIT, key_invoice, more_invoices, &g, 3);
	/* the subscriber's own list walks the same rows (and the two added) */
	g.nwant = 0;
	for (int i = 0; i < N; i++)
		want[g.nwant++] = (10 + i / 3) * 1000000 + (N - i);
	want[g.nwant++] = 0 * 1000000 + 900001;
	want[g.nwant++] = 999 * 1000000 + 900002;
	check_walk(t, "/v1/subscribers/1/invoices", "invoices", LIMIT, key_invoice, NULL, &g, 3);
}

static void more_sessions(struct center_rig *t, void *ctx)
{
	struct grow *g = ctx;
	store_exec(t, "INSERT INTO upload_sessions (id, ua, nonce, created_at, closed_at)\n"
		      "VALUES (100000, 9, randomblob(16), 1, 2)");
	g->want[g->nwant++] = 100000;
}

static void test_pages_sessions_jobs(void **state)
{
	struct center_rig *t = *state;
	int64_t want[N + 2];
	struct grow g = {want, 0, 0, 0};
	unsigned pages;
	char sql[200];

	for (int i = 1; i <= N; i++) {
		snprintf(sql, sizeof sql,
			 "INSERT INTO upload_sessions (id, ua, nonce, created_at, closed_at)\n"
			 "VALUES (%d, %d, randomblob(16), 100, 200)",
			 i, 1 + i % 3);
		store_exec(t, sql);
		want[g.nwant++] = i;
	}
	check_walk(t, "/v1/upload/sessions", "sessions", LIMIT, key_id, more_sessions, &g, 3);

	/* bulk jobs: ids are opaque strings in key order; each once */
	{
		char idem[32], *ids[N];
		size_t nids = 0;
		char cursor[256] = "", url[400];

		new_product(t, 7);
		new_subscriber(t, "target");
		for (int i = 0; i < N; i++) {
			struct reply r;
			snprintf(idem, sizeof idem, "job-%03d", i);
			expect(t, "POST", "/v1/products/7/subscriptions", "{\"subscribers\":[1],\"start\":1000,\"end\":2000}",
			       idem, 201, &r);
			reply_free(&r);
		}
		for (pages = 0;;) {
			struct reply r;
			json_t *j, *arr, *next, *it;
			size_t i;
			snprintf(url, sizeof url, "/v1/jobs?limit=%d%s%s", LIMIT, cursor[0] ? "&cursor=" : "", cursor);
			j = expect(t, "GET", url, NULL, NULL, 200, &r);
			arr = json_object_get(j, "jobs");
			next = json_object_get(j, "next_cursor");
			pages++;
			json_array_foreach(arr, i, it) {
				assert_true(nids < N);
				ids[nids] = strdup(jstr(it, "id"));
				assert_int_equal(jint(it, "product"), 7);
				assert_true(json_is_true(json_object_get(it, "done")));
				/* in key order: never repeated */
				if (nids > 0)
					assert_true(strcmp(ids[nids - 1], ids[nids]) != 0);
				nids++;
			}
			if (json_is_null(next)) {
				reply_free(&r);
				break;
			}
			assert_int_equal(json_array_size(arr), LIMIT);
			snprintf(cursor, sizeof cursor, "%s", jstr(j, "next_cursor"));
			reply_free(&r);
		}
		assert_int_equal(pages, 3);
		assert_int_equal(nids, N);
		/* one job by its id; an id that is no job's is 404 */
		{
			char path[300];
			struct reply r;
			snprintf(path, sizeof path, "/v1/jobs/%s", ids[17]);
			assert_string_equal(jstr(expect(t, "GET", path, NULL, NULL, 200, &r), "id"), ids[17]);
			reply_free(&r);
			expect_error(t, "GET", "/v1/jobs/b3A6bm9wZQ", NULL, NULL, 404, "not_found");
		}
		for (size_t i = 0; i < nids; i++)
			free(ids[i]);
	}
}

static void more_subscriptions(struct center_rig *t, void *ctx)
{
	struct grow *g = ctx;
	new_product(t, 1); /* below the cursor */
	new_product(t, 99);
	subscribe(t, 1, 1, 5000);
	subscribe(t, 1, 99, 5000);
	g->want[g->nwant++] = 99;
}

/* One reload of the card: one more EMM, after the cursor (queue ids only grow). */
struct reloads {
	uint32_t ua;
	int n;
};

static void reload(struct center_rig *t, struct reloads *rl)
{
	char path[60], idem[20];
	struct reply r;

	snprintf(path, sizeof path, "/v1/cards/%08X/reload", rl->ua);
	snprintf(idem, sizeof idem, "r%d", rl->n++);
	expect(t, "POST", path, NULL, idem, 200, &r);
	reply_free(&r);
}

static void more_emms(struct center_rig *t, void *ctx)
{
	reload(t, ctx);
}

static void test_pages_subscriptions_emms(void **state)
{
	struct center_rig *t = *state;
	int64_t want[40], got[60];
	struct grow g = {want, 0, 0, 0};
	unsigned pages;
	size_t n;
	uint32_t ua;
	char path[80];

	new_subscriber(t, "many");
	for (int i = 0; i < 25; i++) {
		new_product(t, 10 + 2 * i);
		subscribe(t, 1, 10 + 2 * i, 5000);
		want[g.nwant++] = 10 + 2 * i;
	}
	check_walk(t, "/v1/subscribers/1/subscriptions", "subscriptions", 10, key_product, more_subscriptions, &g, 3);

	/* a card's EMM queue: its assignment's EMM(s), then one per reload, one more between pages */
	ua = new_card(t);
	assign(t, ua, 1);
	call(t, "PUT", "/v1/credit-policy", "{\"initial_credit\":0,\"reload_amount\":5}", 200);
	{
		struct reloads rl = {ua, 0};
		for (int i = 0; i < 24; i++)
			reload(t, &rl);
		snprintf(path, sizeof path, "/v1/cards/%08X/emm-queue", ua);
		n = walk(t, path, "emms", 10, key_id, more_emms, &rl, got, 60, &pages);
		assert_int_equal(rl.n, 25);
	}
	assert_true(n >= 26); /* the assignment may take more than one EMM */
	assert_int_equal(pages, (unsigned)(n + 9) / 10);
	/* the same EMMs the open queue of the card gives */
	{
		struct reply r;
		json_t *arr;
		snprintf(path, sizeof path, "/v1/cards/%08X/emm?since=0&limit=1000", ua);
		arr = json_object_get(expect(t, "GET", path, NULL, NULL, 200, &r), "emms");
		assert_int_equal(json_array_size(arr), n);
		for (size_t i = 0; i < n; i++)
			assert_int_equal(jint(json_array_get(arr, i), "id"), got[i]);
		reply_free(&r);
	}
}

/* ---- 2. limit and cursor ---- */

static void test_limits(void **state)
{
	static const char *const lists[] = {
		"/v1/subscribers", "/v1/cards", "/v1/products", "/v1/channels", "/v1/events", "/v1/invoices",
		"/v1/subscribers/1/invoices", "/v1/subscribers/1/subscriptions", "/v1/upload/sessions", "/v1/jobs",
	};
	struct center_rig *t = *state;
	char path[200], cursor[64];
	struct reply r;

	new_subscriber(t, "one");
	new_subscriber(t, "two");
	for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++) {
		snprintf(path, sizeof path, "%s?limit=1001", lists[i]);
		expect_error(t, "GET", path, NULL, NULL, 400, "invalid");
		snprintf(path, sizeof path, "%s?limit=0", lists[i]);
		expect_error(t, "GET", path, NULL, NULL, 400, "invalid");
		snprintf(path, sizeof path, "%s?limit=-5", lists[i]);
		expect_error(t, "GET", path, NULL, NULL, 400, "invalid");
		snprintf(path, sizeof path, "%s?limit=1000", lists[i]);
		call(t, "GET", path, NULL, 200);
		/* not base64url, padded, or a text that is no cursor */
		snprintf(path, sizeof path, "%s?cursor=%%21%%21", lists[i]);
		expect_error(t, "GET", path, NULL, NULL, 400, "invalid");
		snprintf(path, sizeof path, "%s?cursor=czoy%%3D", lists[i]);
		expect_error(t, "GET", path, NULL, NULL, 400, "invalid");
		snprintf(path, sizeof path, "%s?cursor=eHl6", lists[i]); /* "xyz" */
		expect_error(t, "GET", path, NULL, NULL, 400, "invalid");
	}
	/* a subscribers' cursor is no other list's, and one with no number is nothing */
	snprintf(cursor, sizeof cursor, "%s",
		 jstr(expect(t, "GET", "/v1/subscribers?limit=1", NULL, NULL, 200, &r), "next_cursor"));
	reply_free(&r);
	snprintf(path, sizeof path, "/v1/subscribers?cursor=%s", cursor);
	call(t, "GET", path, NULL, 200);
	snprintf(path, sizeof path, "/v1/cards?cursor=%s", cursor);
	expect_error(t, "GET", path, NULL, NULL, 400, "invalid");
	expect_error(t, "GET", "/v1/subscribers?cursor=czo", NULL, NULL, 400, "invalid");    /* "s:" */
	expect_error(t, "GET", "/v1/subscribers?cursor=czp4eQ", NULL, NULL, 400, "invalid"); /* "s:xy" */
	/* the emm queue of a card the center does not know */
	expect_error(t, "GET", "/v1/cards/0000ABCD/emm-queue", NULL, NULL, 404, "not_found");
	expect_error(t, "GET", "/v1/cards/0000ABCD/emm-queue?limit=1001", NULL, NULL, 400, "invalid");
}

/* ---- 3. each filter gives exactly its rows ---- */

/* The ids (key) of one page of path: all of them (limit 1000). */
static size_t ids_of(struct center_rig *t, const char *path, const char *items, key_fn key, int64_t *out, size_t cap)
{
	return walk(t, path, items, 1000, key, NULL, NULL, out, cap, NULL);
}

/* path lists exactly the n keys want (any order). */
static void only(struct center_rig *t, const char *path, const char *items, key_fn key, const int64_t *want, size_t n)
{
	int64_t got[64], copy[64];
	size_t m = ids_of(t, path, items, key, got, 64);

	assert_true(n <= 64);
	if (n)
		memcpy(copy, want, n * sizeof *want);
	same_set(got, m, copy, n);
}

static void test_filters(void **state)
{
	struct center_rig *t = *state;
	uint32_t ua[6];
	char path[120];

	/* subscribers by name prefix: bytes, case and all */
	new_subscriber(t, "Ada");         /* 1 */
	new_subscriber(t, "Adam");        /* 2 */
	new_subscriber(t, "adA");         /* 3 */
	new_subscriber(t, "Bob");         /* 4 */
	new_subscriber(t, "Ad");          /* 5 */
	new_subscriber(t, "\xc3\x89lise"); /* 6: Élise */
	only(t, "/v1/subscribers?name_prefix=Ad", "subscribers", key_id, (int64_t[]){1, 2, 5}, 3);
	only(t, "/v1/subscribers?name_prefix=Ada", "subscribers", key_id, (int64_t[]){1, 2}, 2);
	only(t, "/v1/subscribers?name_prefix=%C3%89", "subscribers", key_id, (int64_t[]){6}, 1);
	only(t, "/v1/subscribers?name_prefix=Z", "subscribers", key_id, NULL, 0);
	only(t, "/v1/subscribers?name_prefix=%FF", "subscribers", key_id, NULL, 0);
	expect_error(t, "GET", "/v1/subscribers?name_prefix=", NULL, NULL, 400, "invalid");

	/* cards by state, subscriber and role: issued, active, replaced, closed */
	for (int i = 0; i < 6; i++)
		ua[i] = new_card(t);
	assign(t, ua[0], 1);
	assign(t, ua[1], 2);
	{
		char body[60];
		snprintf(path, sizeof path, "/v1/cards/%08X/replace", ua[0]);
		snprintf(body, sizeof body, "{\"new_ua\":\"%08X\"}", ua[2]);
		call(t, "POST", path, body, 200); /* ua0 replaced, ua2 active for 1 */
		snprintf(path, sizeof path, "/v1/cards/%08X/replace", ua[1]);
		snprintf(body, sizeof body, "{\"new_ua\":\"%08X\"}", ua[3]);
		call(t, "POST", path, body, 200); /* ua1 replaced, ua3 active for 2 */
		snprintf(path, sizeof path, "/v1/cards/%08X/forfeit", ua[1]);
		call(t, "POST", path, NULL, 200); /* ua1 closed */
	}
	only(t, "/v1/cards?state=issued", "cards", key_ua, (int64_t[]){ua[4], ua[5]}, 2);
	only(t, "/v1/cards?state=active", "cards", key_ua, (int64_t[]){ua[2], ua[3]}, 2);
	only(t, "/v1/cards?state=replaced", "cards", key_ua, (int64_t[]){ua[0]}, 1);
	only(t, "/v1/cards?state=closed", "cards", key_ua, (int64_t[]){ua[1]}, 1);
	only(t, "/v1/cards?subscriber=1", "cards", key_ua, (int64_t[]){ua[0], ua[2]}, 2);
	only(t, "/v1/cards?subscriber=2&state=active", "cards", key_ua, (int64_t[]){ua[3]}, 1);
	only(t, "/v1/cards?subscriber=2&state=issued", "cards", key_ua, NULL, 0);
	only(t, "/v1/cards?role=card&state=issued", "cards", key_ua, (int64_t[]){ua[4], ua[5]}, 2);
	only(t, "/v1/cards?role=cam", "cards", key_ua, NULL, 0); /* only cards register */
	only(t, "/v1/cards?role=card", "cards", key_ua, (int64_t[]){ua[0], ua[1], ua[2], ua[3], ua[4], ua[5]}, 6);
	expect_error(t, "GET", "/v1/cards?state=lost", NULL, NULL, 400, "invalid");
	expect_error(t, "GET", "/v1/cards?role=decoder", NULL, NULL, 400, "invalid");
	expect_error(t, "GET", "/v1/cards?subscriber=0", NULL, NULL, 400, "invalid");

	/* channels by product; events by start */
	new_product(t, 1);
	new_product(t, 2);
	new_channel(t, 10, 1);
	new_channel(t, 11, 2);
	new_channel(t, 12, 1);
	only(t, "/v1/channels?product=1", "channels", key_id, (int64_t[]){10, 12}, 2);
	only(t, "/v1/channels?product=3", "channels", key_id, NULL, 0);
	expect_error(t, "GET", "/v1/channels?product=x", NULL, NULL, 400, "invalid");
	new_event(t, 20, 10, 1000);
	new_event(t, 21, 10, 2000);
	new_event(t, 22, 11, 3000);
	only(t, "/v1/events?since=1000&until=3000", "events", key_id, (int64_t[]){20, 21}, 2);
	only(t, "/v1/events?since=1001", "events", key_id, (int64_t[]){21, 22}, 2);
	only(t, "/v1/events?until=1000", "events", key_id, NULL, 0);
	expect_error(t, "GET", "/v1/events?since=soon", NULL, NULL, 400, "invalid");

	/* invoices by subscriber and time */
	raw_invoice(t, 1, 1, 100);
	raw_invoice(t, 2, 2, 100);
	raw_invoice(t, 3, 1, 200);
	raw_invoice(t, 4, 0, 150); /* invoiced to nobody */
	only(t, "/v1/invoices?subscriber=1", "invoices", key_invoice, (int64_t[]){100 * 1000000 + 1, 200 * 1000000 + 3}, 2);
	only(t, "/v1/invoices?since=100&until=200", "invoices", key_invoice, (int64_t[]){100 * 1000000 + 1, 100 * 1000000 + 2, 150 * 1000000 + 4}, 3);
	only(t, "/v1/invoices?subscriber=2&since=101", "invoices", key_invoice, NULL, 0);
	only(t, "/v1/subscribers/1/invoices?since=150", "invoices", key_invoice, (int64_t[]){200 * 1000000 + 3}, 1);
	{
		/* the list of everyone's says whose each is; the subscriber's own does not repeat it */
		struct reply r;
		json_t *arr = json_object_get(expect(t, "GET", "/v1/invoices", NULL, NULL, 200, &r), "invoices");
		assert_int_equal(jint(json_array_get(arr, 0), "subscriber_id"), 1);
		assert_null(json_object_get(json_array_get(arr, 2), "subscriber_id")); /* id 4: nobody */
		reply_free(&r);
		arr = json_object_get(expect(t, "GET", "/v1/subscribers/1/invoices", NULL, NULL, 200, &r), "invoices");
		assert_null(json_object_get(json_array_get(arr, 0), "subscriber_id"));
		reply_free(&r);
	}

	/* stored upload sessions by card, never a nonce */
	store_exec(t, "INSERT INTO upload_sessions (id, ua, nonce, created_at, closed_at) VALUES\n"
		      "(1, 5, randomblob(16), 10, 20), (2, 6, randomblob(16), 11, NULL), (3, 5, randomblob(16), 12, 30)");
	only(t, "/v1/upload/sessions?card=00000005", "sessions", key_id, (int64_t[]){1, 3}, 2);
	{
		struct reply r;
		json_t *s = json_array_get(
			json_object_get(expect(t, "GET", "/v1/upload/sessions?card=00000006", NULL, NULL, 200, &r),
					"sessions"),
			0);
		assert_string_equal(jstr(s, "card"), "00000006");
		assert_string_equal(jstr(s, "state"), "open");
		assert_int_equal(jint(s, "created_at"), 11);
		assert_null(json_object_get(s, "nonce"));
		assert_int_equal(json_object_size(s), 4);
		reply_free(&r);
	}
	expect_error(t, "GET", "/v1/upload/sessions?card=5", NULL, NULL, 400, "invalid");
}

/* ---- 4. each refusal: 409, nothing changed ---- */

static void test_refusals(void **state)
{
	struct center_rig *t = *state;
	uint32_t active, issued, used;
	char path[80], sql[400];

	new_subscriber(t, "with card");  /* 1 */
	new_subscriber(t, "subscribed"); /* 2 */
	new_subscriber(t, "closed");     /* 3 */
	active = new_card(t);
	assign(t, active, 1);
	new_product(t, 7);
	subscribe(t, 2, 7, (int64_t)time(NULL) + 86400);
	call(t, "DELETE", "/v1/subscribers/3", NULL, 200);

	/* a subscriber with an active card, or a subscription not ended */
	refused(t, "DELETE", "/v1/subscribers/1", NULL, "conflict");
	refused(t, "DELETE", "/v1/subscribers/2", NULL, "conflict");
	/* a closed subscriber takes no card and no subscription */
	issued = new_card(t);
	snprintf(path, sizeof path, "/v1/cards/%08X/assign", issued);
	refused(t, "POST", path, "{\"subscriber_id\":3}", "subscriber_closed");
	refused(t, "POST", "/v1/subscribers/3/subscriptions", "{\"product_id\":7,\"start\":1000,\"end\":5000}",
		"subscriber_closed");
	refused_idem(t, "POST", "/v1/products/7/subscriptions", "{\"subscribers\":[3],\"start\":1000,\"end\":5000}",
		     "bulk-3", "subscriber_closed");

	/* a card that is not issued: active, replaced, closed; an issued one with usage */
	snprintf(path, sizeof path, "/v1/cards/%08X", active);
	refused(t, "DELETE", path, NULL, "conflict");
	{
		char body[60];
		snprintf(path, sizeof path, "/v1/cards/%08X/replace", active);
		snprintf(body, sizeof body, "{\"new_ua\":\"%08X\"}", issued);
		call(t, "POST", path, body, 200);
	}
	snprintf(path, sizeof path, "/v1/cards/%08X", active); /* replaced */
	refused(t, "DELETE", path, NULL, "conflict");
	snprintf(path, sizeof path, "/v1/cards/%08X/forfeit", active);
	call(t, "POST", path, NULL, 200);
	snprintf(path, sizeof path, "/v1/cards/%08X", active); /* closed */
	refused(t, "DELETE", path, NULL, "conflict");
	used = new_card(t);
	snprintf(sql, sizeof sql, "INSERT INTO usage_blocks (ua, block_seq, received_at, verdict) VALUES (%u, 1, 1, 'ok')",
		 used);
	store_exec(t, sql);
	snprintf(path, sizeof path, "/v1/cards/%08X", used);
	refused(t, "DELETE", path, NULL, "conflict");

	/* a product with a subscription, a channel, or an unfinished job */
	refused(t, "DELETE", "/v1/products/7", NULL, "conflict");
	new_product(t, 8);
	new_channel(t, 1, 8);
	refused(t, "DELETE", "/v1/products/8", NULL, "conflict");
	new_product(t, 9);
	store_exec(t, "INSERT INTO bulk_jobs (key, request_hash, product_id, start_time, end_time, all_subscribers,\n"
		      "  max_subscriber_id, last_subscriber_id, subscribers, emms_queued, skipped, chunks, done,\n"
		      "  created_at, updated_at) VALUES ('op:half', zeroblob(32), 9, 1, 2, 1, 10, 5, 5, 5, 0, 1, 0, 1, 1)");
	refused(t, "DELETE", "/v1/products/9", NULL, "conflict");

	/* a channel with an event; an event a card bought: not deleted, price and times kept */
	new_event(t, 55, 1, 1000);
	refused(t, "DELETE", "/v1/channels/1", NULL, "conflict");
	snprintf(sql, sizeof sql,
		 "INSERT INTO purchases (ua, event_id, price, time, block_ua, block_seq) VALUES (%u, 55, 10, 1050, %u, 1)",
		 used, used);
	store_exec(t, sql);
	refused(t, "DELETE", "/v1/events/55", NULL, "conflict");
	refused(t, "PATCH", "/v1/events/55", "{\"price\":11}", "conflict");
	refused(t, "PATCH", "/v1/events/55", "{\"start\":999}", "conflict");
	refused(t, "PATCH", "/v1/events/55", "{\"end\":1101,\"name\":\"Renamed\"}", "conflict");
	/* its name may change, and the same price and times are no change */
	{
		struct reply r;
		json_t *j = expect(t, "PATCH", "/v1/events/55", "{\"name\":\"The Final\",\"price\":10,\"start\":1000}", NULL,
				   200, &r);
		assert_string_equal(jstr(j, "name"), "The Final");
		assert_int_equal(jint(j, "price"), 10);
		reply_free(&r);
	}
	/* not found and bad input: answered, nothing changed */
	{
		char *before = store_dump(t), *after;
		expect_error(t, "DELETE", "/v1/products/4242", NULL, NULL, 404, "not_found");
		expect_error(t, "DELETE", "/v1/subscribers/4242", NULL, NULL, 404, "not_found");
		expect_error(t, "DELETE", "/v1/cards/0000FFFF", NULL, NULL, 404, "not_found");
		expect_error(t, "PATCH", "/v1/channels/4242", "{\"name\":\"x\"}", NULL, 404, "not_found");
		expect_error(t, "PATCH", "/v1/products/7", "{\"name\":\"\"}", NULL, 400, "invalid_argument");
		expect_error(t, "PATCH", "/v1/events/55", "{}", NULL, 400, "invalid_argument");
		expect_error(t, "PATCH", "/v1/events/55", "{\"start\":5000}", NULL, 400, "invalid_argument");
		after = store_dump(t);
		assert_string_equal(before, after);
		free(before);
		free(after);
	}
}

/* ---- 5. what is allowed really happens ---- */

static void test_allowed(void **state)
{
	struct center_rig *t = *state;
	uint32_t ua, kept;
	int64_t got[16];
	struct reply r;
	json_t *j;
	char path[80];
	size_t n;

	/* an issued card is deleted: gone from its read and the list, and may register again */
	ua = new_card(t);
	kept = new_card(t);
	snprintf(path, sizeof path, "/v1/cards/%08X", ua);
	j = expect(t, "DELETE", path, NULL, NULL, 200, &r);
	assert_true(json_is_true(json_object_get(j, "deleted")));
	assert_int_equal(json_object_size(j), 1);
	reply_free(&r);
	expect_error(t, "GET", path, NULL, NULL, 404, "not_found");
	n = ids_of(t, "/v1/cards", "cards", key_ua, got, 16);
	assert_int_equal(n, 1);
	assert_int_equal(got[0], kept);
	expect_error(t, "DELETE", path, NULL, NULL, 404, "not_found");

	/* a subscriber whose subscription ended and who has no active card is closed, and stays */
	new_subscriber(t, "Ada");
	new_product(t, 7);
	subscribe(t, 1, 7, 2000); /* ended long ago */
	j = expect(t, "PATCH", "/v1/subscribers/1", "{\"name\":\"Ada Lovelace\"}", NULL, 200, &r);
	assert_string_equal(jstr(j, "name"), "Ada Lovelace");
	assert_null(json_object_get(j, "closed_at"));
	reply_free(&r);
	j = expect(t, "DELETE", "/v1/subscribers/1", NULL, NULL, 200, &r);
	assert_true(jint(j, "closed_at") > 0);
	assert_string_equal(jstr(j, "name"), "Ada Lovelace");
	reply_free(&r);
	j = expect(t, "GET", "/v1/subscribers/1", NULL, NULL, 200, &r);
	assert_true(jint(j, "closed_at") > 0);
	assert_int_equal(json_array_size(json_object_get(j, "subscriptions")), 1); /* kept, as its invoices */
	reply_free(&r);
	j = expect(t, "GET", "/v1/subscribers", NULL, NULL, 200, &r);
	assert_true(jint(json_array_get(json_object_get(j, "subscribers"), 0), "closed_at") > 0);
	reply_free(&r);
	/* closing again changes nothing and answers the same */
	call(t, "DELETE", "/v1/subscribers/1", NULL, 200);

	/* renames, and deletions of a catalogue no longer referred to */
	new_channel(t, 1, 7);
	new_event(t, 5, 1, 1000);
	j = expect(t, "PATCH", "/v1/products/7", "{\"name\":\"Sports\"}", NULL, 200, &r);
	assert_string_equal(jstr(j, "name"), "Sports");
	reply_free(&r);
	j = expect(t, "PATCH", "/v1/channels/1", "{\"name\":\"Sports 1\"}", NULL, 200, &r);
	assert_string_equal(jstr(j, "name"), "Sports 1");
	assert_int_equal(jint(j, "product_id"), 7);
	reply_free(&r);
	j = expect(t, "PATCH", "/v1/events/5", "{\"price\":25,\"end\":3000}", NULL, 200, &r);
	assert_int_equal(jint(j, "price"), 25);
	assert_int_equal(jint(j, "start"), 1000);
	assert_int_equal(jint(j, "end"), 3000);
	reply_free(&r);
	j = expect(t, "GET", "/v1/events/5", NULL, NULL, 200, &r);
	assert_int_equal(jint(j, "price"), 25);
	reply_free(&r);
	j = expect(t, "GET", "/v1/products/7", NULL, NULL, 200, &r);
	assert_string_equal(jstr(j, "name"), "Sports");
	reply_free(&r);
	call(t, "DELETE", "/v1/events/5", NULL, 200);
	expect_error(t, "GET", "/v1/events/5", NULL, NULL, 404, "not_found");
	call(t, "DELETE", "/v1/channels/1", NULL, 200);
	expect_error(t, "GET", "/v1/channels/1", NULL, NULL, 404, "not_found");
	/* a product that had a bulk job (finished) and whose subscription was removed */
	expect_error(t, "POST", "/v1/products/7/subscriptions", "{\"subscribers\":[1],\"start\":1000,\"end\":2000}",
		     "bulk-1", 409, "subscriber_closed");
	new_subscriber(t, "Grace");
	expect(t, "POST", "/v1/products/7/subscriptions", "{\"subscribers\":[2],\"start\":1000,\"end\":2000}", "bulk-2",
	       201, &r);
	reply_free(&r);
	refused(t, "DELETE", "/v1/products/7", NULL, "conflict");
	call(t, "DELETE", "/v1/subscribers/1/subscriptions/7", NULL, 200);
	call(t, "DELETE", "/v1/subscribers/2/subscriptions/7", NULL, 200);
	j = expect(t, "DELETE", "/v1/products/7", NULL, NULL, 200, &r);
	assert_true(json_is_true(json_object_get(j, "deleted")));
	reply_free(&r);
	expect_error(t, "GET", "/v1/products/7", NULL, NULL, 404, "not_found");
	j = expect(t, "GET", "/v1/jobs", NULL, NULL, 200, &r);
	assert_int_equal(json_array_size(json_object_get(j, "jobs")), 0);
	reply_free(&r);
}

/* ---- 6. a retried write with its Idempotency-Key replays ---- */

static void test_idempotent_retry(void **state)
{
	struct center_rig *t = *state;
	struct reply a, b;
	char *before, *after;

	new_product(t, 7);
	new_channel(t, 1, 7);
	new_event(t, 5, 1, 1000);
	new_subscriber(t, "Ada");

	/* DELETE: the first answer again, replayed, and nothing more changes */
	expect(t, "DELETE", "/v1/events/5", NULL, "del-5", 200, &a);
	assert_false(a.replayed);
	before = store_dump(t);
	expect(t, "DELETE", "/v1/events/5", NULL, "del-5", 200, &b);
	assert_true(b.replayed);
	assert_string_equal(a.body, b.body);
	after = store_dump(t);
	assert_string_equal(before, after);
	free(before);
	free(after);
	reply_free(&a);
	reply_free(&b);
	/* without the key, it is a new request: the event is gone */
	expect_error(t, "DELETE", "/v1/events/5", NULL, NULL, 404, "not_found");

	/* PATCH: replayed even after the row changed since; another body under the key is 422 */
	expect(t, "PATCH", "/v1/products/7", "{\"name\":\"First\"}", "ren-7", 200, &a);
	call(t, "PATCH", "/v1/products/7", "{\"name\":\"Second\"}", 200);
	before = store_dump(t);
	expect(t, "PATCH", "/v1/products/7", "{ \"name\" : \"First\" }", "ren-7", 200, &b);
	assert_true(b.replayed);
	assert_string_equal(a.body, b.body);
	assert_string_equal(jstr(b.json, "name"), "First");
	after = store_dump(t);
	assert_string_equal(before, after); /* the name stays "Second" */
	free(before);
	free(after);
	reply_free(&a);
	reply_free(&b);
	expect_error(t, "PATCH", "/v1/products/7", "{\"name\":\"Third\"}", "ren-7", 422, "idempotency_mismatch");
	/* the same key on another route is another request */
	call(t, "GET", "/v1/products/7", NULL, 200);
	expect(t, "PATCH", "/v1/channels/1", "{\"name\":\"First\"}", "ren-7", 200, &a);
	assert_false(a.replayed);
	reply_free(&a);

	/* closing a subscriber */
	expect(t, "DELETE", "/v1/subscribers/1", NULL, "close-1", 200, &a);
	expect(t, "DELETE", "/v1/subscribers/1", NULL, "close-1", 200, &b);
	assert_true(b.replayed);
	assert_string_equal(a.body, b.body);
	reply_free(&a);
	reply_free(&b);

	/* a refusal is not remembered: the same key succeeds once its cause is gone */
	new_event(t, 6, 1, 1000);
	expect_error(t, "DELETE", "/v1/channels/1", NULL, "del-ch", 409, "conflict");
	call(t, "DELETE", "/v1/events/6", NULL, 200);
	expect(t, "DELETE", "/v1/channels/1", NULL, "del-ch", 200, &a);
	assert_false(a.replayed);
	reply_free(&a);
}

/* ---- 7. health ---- */

static void readyz(struct center_rig *t, long status, const char *reason_has)
{
	struct reply r;
	json_t *j = expect(t, "GET", "/readyz", NULL, NULL, status, &r);

	if (status == 200) {
		assert_string_equal(jstr(j, "status"), "ready");
		assert_int_equal(json_object_size(j), 1);
	} else {
		assert_string_equal(jstr(j, "status"), "not_ready");
		assert_non_null(strstr(jstr(j, "reason"), reason_has));
		assert_null(strstr(jstr(j, "reason"), t->db)); /* never a path */
	}
	reply_free(&r);
}

static void healthz(struct center_rig *t)
{
	struct reply r;
	json_t *j = expect(t, "GET", "/healthz", NULL, NULL, 200, &r);

	assert_string_equal(jstr(j, "status"), "ok");
	assert_int_equal(json_object_size(j), 1);
	reply_free(&r);
}

static void test_health(void **state)
{
	struct center_rig *t = *state;
	char *before, *after;
	void *held;

	healthz(t);
	readyz(t, 200, NULL);
	/* the probe writes nothing */
	before = store_dump(t);
	readyz(t, 200, NULL);
	after = store_dump(t);
	assert_string_equal(before, after);
	free(before);
	free(after);

	/* another writer holds the lock: not ready, and ready again once it lets go */
	if (kh_test_pg()) {
		held = kh_test_pg_hold(t->db, "LOCK TABLE credit_policy IN EXCLUSIVE MODE");
		readyz(t, 503, "locked");
		healthz(t);
		kh_test_pg_release(held);
		readyz(t, 200, NULL);
		return; /* a database is not a file: it cannot be deleted under the center */
	}
	{
		sqlite3 *db = NULL;
		assert_int_equal(sqlite3_open(t->db, &db), SQLITE_OK);
		assert_int_equal(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
		readyz(t, 503, "locked");
		healthz(t);
		assert_int_equal(sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
		sqlite3_close(db);
	}
	readyz(t, 200, NULL);

	/* the database deleted while the center serves */
	assert_int_equal(unlink(t->db), 0);
	readyz(t, 503, "deleted or replaced");
	healthz(t);
	expect_error(t, "POST", "/v1/subscribers", "{\"name\":\"x\"}", NULL, 503, "database_gone");
}

/* Open to all when the operator API wants a token, and outside the open endpoints' budget. */
static void test_health_open(void **state)
{
	struct center_rig *t = *state;
	struct kh_sms_config cfg = {0};
	struct kh_http_config hc = {.open_rate = 1, .open_burst = 1};
	static const char token[] = "0123456789abcdef0123456789abcdef";
	struct kh_sms *sms = NULL;
	struct kh_http *h = NULL;
	char *db = kh_test_db(t->w->dir, "guarded.db");
	struct center_rig g = *t;

	cfg.db = db;
	cfg.authority_dir = t->w->auth_dir;
	cfg.operator_token = (const uint8_t *)token;
	cfg.token_len = sizeof token - 1;
	assert_int_equal(kh_sms_new(&cfg, &sms, NULL), KH_OK);
	assert_int_equal(kh_http_new(&hc, &h), KH_OK);
	assert_int_equal(kh_sms_add_routes(sms, h), KH_OK);
	assert_int_equal(kh_http_start(h), KH_OK);
	g.hc.port = kh_http_port(h);
	g.db = db;

	expect_error(&g, "GET", "/v1/subscribers", NULL, NULL, 401, "unauthorised");
	for (int i = 0; i < 5; i++) {
		healthz(&g);
		readyz(&g, 200, NULL);
	}
	/* an open endpoint, by contrast, has spent its budget of one */
	call(&g, "GET", "/v1/emm", NULL, 200);
	expect_error(&g, "GET", "/v1/emm", NULL, NULL, 429, "rate_limited");
	healthz(&g);
	readyz(&g, 200, NULL);
	kh_http_free(h);
	kh_sms_free(sms);
	kh_test_db_drop(db);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_pages_subscribers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pages_cards, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pages_catalogue, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pages_invoices, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pages_sessions_jobs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pages_subscriptions_emms, setup, teardown),
		cmocka_unit_test_setup_teardown(test_limits, setup, teardown),
		cmocka_unit_test_setup_teardown(test_filters, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refusals, setup, teardown),
		cmocka_unit_test_setup_teardown(test_allowed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_idempotent_retry, setup, teardown),
		cmocka_unit_test_setup_teardown(test_health, setup, teardown),
		cmocka_unit_test_setup_teardown(test_health_open, setup, teardown),
	};

	curl_global_init(CURL_GLOBAL_DEFAULT);
	{
		int rc = cmocka_run_group_tests(tests, NULL, NULL);
		curl_global_cleanup();
		return rc;
	}
}
