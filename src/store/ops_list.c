/*
 * The operator's lists and reads (docs/internals/store.md "Lists"): subscribers, cards, the
 * catalogue, invoices, subscriptions, stored upload sessions and bulk jobs, each a keyset page.
 * A page is "the rows after this key, in key order, at most limit", read with one SELECT that
 * asks for one row more than the page holds: that row only says whether another page follows.
 * No OFFSET anywhere, so a page costs its own size wherever it starts, and rows added while an
 * operator pages are neither seen twice nor make another row be skipped.
 *
 * A filter that an index serves leads its own statement (cards by subscriber, by state, by
 * role): SQLite cannot use an index for "(?n IS NULL OR col = ?n)", so the statement chosen is the
 * one whose first condition is the index's, and the other filters ride along as such conditions.
 */
#include <stdlib.h>
#include <string.h>

#include "keyhole/store_dist.h"
#include "store_int.h"

/* One row of a statement handed to the caller's callback (which one: the union). */
struct walk {
	kh_err (*row)(struct kh__stmt *st, const struct walk *w);
	union {
		kh_store_subscriber_fn subscriber;
		kh_store_card_fn card;
		kh_store_product_fn product;
		kh_store_channel_fn channel;
		kh_store_event_fn event;
		kh_store_invoice_fn invoice;
		kh_store_subscription_fn subscription;
		kh_store_upload_session_fn session;
		kh_store_bulk_job_fn job;
		kh_store_dist_program_fn program;
	} fn;
	void *arg;
};

static int page_ok(const struct kh_store_page *pg)
{
	return pg != NULL && pg->limit >= 1 && pg->limit <= KH_STORE_PAGE_MAX &&
	       (!pg->after_set || pg->after_key == NULL || kh__idem_key_ok(pg->after_key));
}

/* The LIMIT to bind: one row more than the page, to know whether another follows. */
static int64_t page_limit(const struct kh_store_page *pg)
{
	return (int64_t)pg->limit + 1;
}

/*
 * Step st (prepared and bound) and hand its rows to w, at most limit of them (0: all); *more
 * (may be NULL) gets 1 when a row beyond the limit came, *seen (may be NULL) how many were
 * handed. st is released on every path.
 */
static kh_err walk_rows(struct kh__stmt *st, unsigned limit, const struct walk *w, int *more, unsigned *seen)
{
	unsigned n = 0;
	int row = 0;
	kh_err r;

	if (more)
		*more = 0;
	while ((r = kh__step(st, &row)) == KH_OK && row) {
		if (limit && n == limit) {
			if (more)
				*more = 1;
			break;
		}
		if ((r = w->row(st, w)) != KH_OK)
			break;
		n++;
	}
	kh__stmt_done(st);
	if (seen)
		*seen = n;
	return r;
}

/* Bind the page's position as ?1 (INT64_MIN: before the first row of any list) and its
 * limit as ?2. */
static kh_err bind_page(struct kh__stmt *st, const struct kh_store_page *pg)
{
	kh_err r = kh__bind_i64(st, 1, pg->after_set ? pg->after : INT64_MIN);
	return r != KH_OK ? r : kh__bind_i64(st, 2, page_limit(pg));
}

/* A page of sql: the position ?1, the limit ?2, then the n values vals as ?3, ?4, ... */
static kh_err page_of(struct kh_store *s, const char *sql, const struct kh_store_page *page, const int64_t *vals,
		      int n, const struct walk *w, int *more)
{
	struct kh__stmt *st = NULL;
	kh_err r;

	if ((r = kh__stmt(s, sql, &st)) != KH_OK)
		return r;
	r = bind_page(st, page);
	for (int i = 0; r == KH_OK && i < n; i++)
		r = kh__bind_i64(st, 3 + i, vals[i]);
	if (r != KH_OK) {
		kh__stmt_done(st);
		return r;
	}
	return walk_rows(st, page->limit, w, more, NULL);
}

/* The one row st (prepared, its key bound as ?1 by the caller) gives: KH_ERR_NOTFOUND for none. */
static kh_err one_row(struct kh__stmt *st, const struct walk *w)
{
	unsigned n = 0;
	kh_err r = walk_rows(st, 1, w, NULL, &n);

	return r == KH_OK && n == 0 ? KH_ERR_NOTFOUND : r;
}

/* One row by id with sql (?1 the id). */
static kh_err read_one(struct kh_store *s, const char *sql, int64_t id, const struct walk *w)
{
	struct kh__stmt *st = NULL;
	kh_err r;

	if ((r = kh__stmt(s, sql, &st)) != KH_OK)
		return r;
	if ((r = kh__bind_i64(st, 1, id)) != KH_OK) {
		kh__stmt_done(st);
		return r;
	}
	return one_row(st, w);
}

/* ---------------------------------------------------------------- subscribers */

#define SUBSCRIBER_COLS "id, name, created_at, coalesce(closed_at, 0)"

static kh_err subscriber_row(struct kh__stmt *st, const struct walk *w)
{
	struct kh_store_subscriber u;
	char *name = kh__col_str(st, 1);
	kh_err r;

	if (name == NULL)
		return KH_ERR_NOMEM;
	u.id = kh__col_i64(st, 0);
	u.name = name;
	u.created_at = kh__col_i64(st, 2);
	u.closed_at = kh__col_i64(st, 3);
	r = w->fn.subscriber(w->arg, &u);
	free(name);
	return r;
}

/*
 * The least string above every string that starts with prefix (n bytes, n > 0), into out (n + 1
 * bytes): the prefix cut after its last byte below 0xFF, that byte plus one. A prefix of 0xFF
 * bytes only has none; then out is "" (no name is below it: an empty range), which is right,
 * since names are UTF-8 and UTF-8 has no 0xFF byte.
 */
static void prefix_end(const char *prefix, size_t n, char *out)
{
	memcpy(out, prefix, n);
	out[n] = 0;
	while (n > 0 && (unsigned char)out[n - 1] == 0xFF)
		out[--n] = 0;
	if (n > 0)
		out[n - 1] = (char)((unsigned char)out[n - 1] + 1);
}

/*
 * Whether p (n bytes) is well-formed UTF-8: no overlong form, no surrogate, nothing above
 * U+10FFFF. Names are UTF-8 (they come from JSON), so a prefix that is not cannot start one;
 * and PostgreSQL refuses such text outright (22021) where SQLite compares its bytes.
 */
static int utf8_ok(const unsigned char *p, size_t n)
{
	size_t i = 0;

	while (i < n) {
		unsigned c = p[i], len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3
							  : (c & 0xF8) == 0xF0 ? 4 : 0;
		uint32_t v;

		if (len == 0 || len > n - i)
			return 0;
		v = len == 1 ? c : c & (0x7Fu >> len);
		for (unsigned k = 1; k < len; k++) {
			if ((p[i + k] & 0xC0) != 0x80)
				return 0;
			v = v << 6 | (p[i + k] & 0x3Fu);
		}
		if ((len == 2 && v < 0x80) || (len == 3 && v < 0x800) || (len == 4 && v < 0x10000) || v > 0x10FFFF ||
		    (v >= 0xD800 && v <= 0xDFFF))
			return 0;
		i += len;
	}
	return 1;
}

kh_err kh_store_subscribers_page(struct kh_store *s, const char *name_prefix, const struct kh_store_page *page,
				 kh_store_subscriber_fn fn, void *arg, int *more)
{
	static const char all[] =
		"SELECT " SUBSCRIBER_COLS " FROM subscribers WHERE id > ?1 ORDER BY id LIMIT ?2";
	/* [prefix, end of prefix): the subscribers_name index, byte-wise (BINARY collation) */
	static const char prefixed[] =
		"SELECT " SUBSCRIBER_COLS " FROM subscribers\n"
		"WHERE name >= ?3 AND name < ?4 AND id > ?1 ORDER BY id LIMIT ?2";
	struct walk w = {subscriber_row, {.subscriber = fn}, arg};
	struct kh__stmt *st = NULL;
	char *end = NULL;
	size_t n = 0;
	kh_err r;

	if (s == NULL || fn == NULL || more == NULL || !page_ok(page))
		return KH_ERR_INVAL;
	if (name_prefix && (n = strnlen(name_prefix, KH_STORE_NAME_MAX + 1)) > KH_STORE_NAME_MAX)
		return KH_ERR_INVAL;
	if (n > 0 && !utf8_ok((const unsigned char *)name_prefix, n)) {
		*more = 0; /* no name starts so: an empty page, on every backend */
		return KH_OK;
	}
	if (n > 0 && (end = malloc(n + 1)) == NULL)
		return KH_ERR_NOMEM;
	if ((r = kh__stmt(s, n > 0 ? prefixed : all, &st)) != KH_OK)
		goto out;
	if ((r = bind_page(st, page)) != KH_OK)
		goto fail;
	if (n > 0) {
		prefix_end(name_prefix, n, end);
		if ((r = kh__bind_text(st, 3, name_prefix)) != KH_OK || (r = kh__bind_text(st, 4, end)) != KH_OK)
			goto fail;
	}
	r = walk_rows(st, page->limit, &w, more, NULL);
	goto out;
fail:
	kh__stmt_done(st);
out:
	free(end);
	return r;
}

kh_err kh_store_subscriber_read(struct kh_store *s, int64_t id, kh_store_subscriber_fn fn, void *arg)
{
	static const char sql[] = "SELECT " SUBSCRIBER_COLS " FROM subscribers WHERE id = ?1";
	struct walk w = {subscriber_row, {.subscriber = fn}, arg};

	if (s == NULL || fn == NULL)
		return KH_ERR_INVAL;
	return read_one(s, sql, id, &w);
}

static kh_err closed_of(void *arg, const struct kh_store_subscriber *u)
{
	*(int64_t *)arg = u->closed_at;
	return KH_OK;
}

kh_err kh_store_subscriber_closed(struct kh_store *s, int64_t id, int64_t *closed_at)
{
	int64_t at = 0;
	kh_err r;

	if (closed_at == NULL)
		return KH_ERR_INVAL;
	if ((r = kh_store_subscriber_read(s, id, closed_of, &at)) == KH_OK)
		*closed_at = at;
	return r;
}

/* ---------------------------------------------------------------- cards */

/* The columns kh__card_row reads (ops_cards.c). Each parameter is compared with its column
 * before it is tested for NULL: PostgreSQL types a parameter where it first meets it, and a bare
 * `?3 IS NULL` first would make it text, then refuse it beside a BIGINT (42P08). */
#define CARDS_PAGE(lead)                                                                          \
	"SELECT " KH__CARD_COLS " FROM cards WHERE " lead " AND ua > ?1\n"                        \
	"  AND (subscriber_id = ?3 OR ?3 IS NULL) AND (state = ?4 OR ?4 IS NULL)\n"               \
	"  AND (role = ?5 OR ?5 IS NULL) ORDER BY ua LIMIT ?2"

static kh_err card_row(struct kh__stmt *st, const struct walk *w)
{
	struct kh_store_card c;
	kh_err r = kh__card_row(st, &c);

	return r != KH_OK ? r : w->fn.card(w->arg, &c);
}

kh_err kh_store_cards_page(struct kh_store *s, const struct kh_store_card_filter *f, const struct kh_store_page *page,
			   kh_store_card_fn fn, void *arg, int *more)
{
	static const char by_subscriber[] = CARDS_PAGE("subscriber_id = ?3");
	static const char by_state[] = CARDS_PAGE("state = ?4");
	static const char by_role[] = CARDS_PAGE("role = ?5");
	static const char any[] = CARDS_PAGE("1 = 1"); /* a boolean: PostgreSQL takes no integer here */
	struct walk w = {card_row, {.card = fn}, arg};
	struct kh__stmt *st = NULL;
	const char *sql;
	kh_err r;

	if (s == NULL || f == NULL || fn == NULL || more == NULL || !page_ok(page) || f->subscriber_id < 0)
		return KH_ERR_INVAL;
	if ((f->state && !kh_card_state_name(f->state)) || (f->kind && !kh_card_kind_name(f->kind)))
		return KH_ERR_INVAL;
	sql = f->subscriber_id ? by_subscriber : f->state ? by_state : f->kind ? by_role : any;
	if ((r = kh__stmt(s, sql, &st)) != KH_OK)
		return r;
	if ((r = bind_page(st, page)) != KH_OK ||
	    (r = f->subscriber_id ? kh__bind_i64(st, 3, f->subscriber_id) : kh__bind_null(st, 3)) != KH_OK ||
	    (r = f->state ? kh__bind_text(st, 4, kh_card_state_name(f->state)) : kh__bind_null(st, 4)) != KH_OK ||
	    (r = f->kind ? kh__bind_text(st, 5, kh_card_kind_name(f->kind)) : kh__bind_null(st, 5)) != KH_OK) {
		kh__stmt_done(st);
		return r;
	}
	return walk_rows(st, page->limit, &w, more, NULL);
}

/* ---------------------------------------------------------------- catalogue */

static kh_err product_row(struct kh__stmt *st, const struct walk *w)
{
	struct kh_store_product p;
	char *name = kh__col_str(st, 1);
	kh_err r;

	if (name == NULL)
		return KH_ERR_NOMEM;
	p.id = kh__col_u32(st, 0);
	p.name = name;
	r = w->fn.product(w->arg, &p);
	free(name);
	return r;
}

static kh_err channel_row(struct kh__stmt *st, const struct walk *w)
{
	struct kh_store_channel c;
	char *name = kh__col_str(st, 1);
	kh_err r;

	if (name == NULL)
		return KH_ERR_NOMEM;
	c.id = kh__col_u32(st, 0);
	c.name = name;
	c.product_id = kh__col_u32(st, 2);
	r = w->fn.channel(w->arg, &c);
	free(name);
	return r;
}

static kh_err event_row(struct kh__stmt *st, const struct walk *w)
{
	struct kh_store_event e;
	char *name = kh__col_str(st, 1);
	kh_err r;

	if (name == NULL)
		return KH_ERR_NOMEM;
	e.id = kh__col_u32(st, 0);
	e.name = name;
	e.price = kh__col_u32(st, 2);
	e.channel_id = kh__col_u32(st, 3);
	e.start = kh__col_i64(st, 4);
	e.end = kh__col_i64(st, 5);
	r = w->fn.event(w->arg, &e);
	free(name);
	return r;
}

#define PRODUCT_COLS "id, name"
#define CHANNEL_COLS "id, name, coalesce(product_id, 0)"
#define EVENT_COLS "id, name, price, channel_id, start_time, end_time"

kh_err kh_store_products_page(struct kh_store *s, const struct kh_store_page *page, kh_store_product_fn fn,
			      void *arg, int *more)
{
	static const char sql[] = "SELECT " PRODUCT_COLS " FROM products WHERE id > ?1 ORDER BY id LIMIT ?2";
	struct walk w = {product_row, {.product = fn}, arg};

	if (s == NULL || fn == NULL || more == NULL || !page_ok(page))
		return KH_ERR_INVAL;
	return page_of(s, sql, page, NULL, 0, &w, more);
}

kh_err kh_store_products(struct kh_store *s, kh_store_product_fn fn, void *arg)
{
	static const char sql[] = "SELECT " PRODUCT_COLS " FROM products ORDER BY id";
	struct walk w = {product_row, {.product = fn}, arg};
	struct kh__stmt *st = NULL;
	kh_err r;

	if (s == NULL || fn == NULL)
		return KH_ERR_INVAL;
	if ((r = kh__stmt(s, sql, &st)) != KH_OK)
		return r;
	return walk_rows(st, 0, &w, NULL, NULL);
}

kh_err kh_store_channels_page(struct kh_store *s, int has_product, uint32_t product, const struct kh_store_page *page,
			      kh_store_channel_fn fn, void *arg, int *more)
{
	static const char all[] = "SELECT " CHANNEL_COLS " FROM channels WHERE id > ?1 ORDER BY id LIMIT ?2";
	static const char of_product[] =
		"SELECT " CHANNEL_COLS " FROM channels WHERE product_id = ?3 AND id > ?1 ORDER BY id LIMIT ?2";
	struct walk w = {channel_row, {.channel = fn}, arg};
	const int64_t v[1] = {product};

	if (s == NULL || fn == NULL || more == NULL || !page_ok(page))
		return KH_ERR_INVAL;
	return has_product ? page_of(s, of_product, page, v, 1, &w, more) : page_of(s, all, page, NULL, 0, &w, more);
}

kh_err kh_store_events_page(struct kh_store *s, int64_t since, int64_t until, const struct kh_store_page *page,
			    kh_store_event_fn fn, void *arg, int *more)
{
	static const char all[] = "SELECT " EVENT_COLS " FROM events WHERE id > ?1 ORDER BY id LIMIT ?2";
	/* events_start for the window: SQLite would take it for any range on start_time, even
	 * the whole line, and then sort every event by id at each page; without one, the id order */
	static const char window[] =
		"SELECT " EVENT_COLS " FROM events WHERE start_time >= ?3 AND start_time < ?4 AND id > ?1\n"
		"ORDER BY id LIMIT ?2";
	struct walk w = {event_row, {.event = fn}, arg};
	const int64_t v[2] = {since, until};

	if (s == NULL || fn == NULL || more == NULL || !page_ok(page))
		return KH_ERR_INVAL;
	if (since == INT64_MIN && until == INT64_MAX)
		return page_of(s, all, page, NULL, 0, &w, more);
	return page_of(s, window, page, v, 2, &w, more);
}

kh_err kh_store_product_read(struct kh_store *s, uint32_t id, kh_store_product_fn fn, void *arg)
{
	static const char sql[] = "SELECT " PRODUCT_COLS " FROM products WHERE id = ?1";
	struct walk w = {product_row, {.product = fn}, arg};

	if (s == NULL || fn == NULL)
		return KH_ERR_INVAL;
	return read_one(s, sql, id, &w);
}

kh_err kh_store_channel_read(struct kh_store *s, uint32_t id, kh_store_channel_fn fn, void *arg)
{
	static const char sql[] = "SELECT " CHANNEL_COLS " FROM channels WHERE id = ?1";
	struct walk w = {channel_row, {.channel = fn}, arg};

	if (s == NULL || fn == NULL)
		return KH_ERR_INVAL;
	return read_one(s, sql, id, &w);
}

kh_err kh_store_event_read(struct kh_store *s, uint32_t id, kh_store_event_fn fn, void *arg)
{
	static const char sql[] = "SELECT " EVENT_COLS " FROM events WHERE id = ?1";
	struct walk w = {event_row, {.event = fn}, arg};

	if (s == NULL || fn == NULL)
		return KH_ERR_INVAL;
	return read_one(s, sql, id, &w);
}

/* ---------------------------------------------------------------- invoices, subscriptions */

static kh_err invoice_row(struct kh__stmt *st, const struct walk *w)
{
	struct kh_store_invoice i;

	i.id = kh__col_i64(st, 0);
	i.subscriber_id = kh__col_i64(st, 1);
	i.ua = kh__col_u32(st, 2);
	i.event_id = kh__col_u32(st, 3);
	i.price = kh__col_u32(st, 4);
	i.time = kh__col_i64(st, 5);
	i.created_at = kh__col_i64(st, 6);
	i.block_price = kh__col_u32(st, 7);
	kh__col_text(st, 8, i.flag, sizeof i.flag);
	return w->fn.invoice(w->arg, &i);
}

#define INVOICES_PAGE(lead)                                                                       \
	"SELECT id, coalesce(subscriber_id, 0), ua, event_id, price, time, created_at,\n"         \
	"  coalesce(block_price, price), coalesce(flag, '') FROM invoices\n"                      \
	"WHERE " lead " time >= ?3 AND time < ?4 AND (time, id) > (?1, ?6)\n"                    \
	"ORDER BY time, id LIMIT ?2"

kh_err kh_store_invoices_page(struct kh_store *s, int64_t subscriber_id, int64_t since, int64_t until,
			      const struct kh_store_page *page, kh_store_invoice_fn fn, void *arg, int *more)
{
	/* invoices_subscriber (subscriber_id, time) and invoices_time (time): the rowid, the id,
	 * follows the time in both, so the walk is in (time, id) order from the position on */
	static const char of_subscriber[] = INVOICES_PAGE("subscriber_id = ?5 AND");
	static const char all[] = INVOICES_PAGE("?5 = 0 AND");
	struct walk w = {invoice_row, {.invoice = fn}, arg};
	const int64_t v[4] = {since, until, subscriber_id, page && page->after_set ? page->after_id : INT64_MIN};

	if (s == NULL || fn == NULL || more == NULL || !page_ok(page) || subscriber_id < 0)
		return KH_ERR_INVAL;
	return page_of(s, subscriber_id ? of_subscriber : all, page, v, 4, &w, more);
}

static kh_err subscription_row(struct kh__stmt *st, const struct walk *w)
{
	struct kh_store_subscription u = {kh__col_i64(st, 0), kh__col_u32(st, 1), kh__col_i64(st, 2), kh__col_i64(st, 3)};
	return w->fn.subscription(w->arg, &u);
}

kh_err kh_store_subscriptions_page(struct kh_store *s, int64_t subscriber_id, const struct kh_store_page *page,
				   kh_store_subscription_fn fn, void *arg, int *more)
{
	static const char sql[] =
		"SELECT subscriber_id, product_id, start_time, end_time FROM subscriptions\n"
		"WHERE subscriber_id = ?3 AND product_id > ?1 ORDER BY product_id LIMIT ?2";
	struct walk w = {subscription_row, {.subscription = fn}, arg};
	const int64_t v[1] = {subscriber_id};

	if (s == NULL || fn == NULL || more == NULL || !page_ok(page))
		return KH_ERR_INVAL;
	return page_of(s, sql, page, v, 1, &w, more);
}

/* ---------------------------------------------------------------- upload sessions, bulk jobs */

static kh_err session_row(struct kh__stmt *st, const struct walk *w)
{
	struct kh_store_upload_session u;

	u.id = kh__col_i64(st, 0);
	u.ua = kh__col_u32(st, 1);
	u.created_at = kh__col_i64(st, 2);
	u.closed_at = kh__col_i64(st, 3);
	return w->fn.session(w->arg, &u);
}

kh_err kh_store_upload_sessions_page(struct kh_store *s, int has_ua, uint32_t ua, const struct kh_store_page *page,
				     kh_store_upload_session_fn fn, void *arg, int *more)
{
	/* never the nonce */
	static const char all[] =
		"SELECT id, ua, created_at, coalesce(closed_at, 0) FROM upload_sessions WHERE id > ?1\n"
		"ORDER BY id LIMIT ?2";
	static const char of_card[] =
		"SELECT id, ua, created_at, coalesce(closed_at, 0) FROM upload_sessions\n"
		"WHERE ua = ?3 AND id > ?1 ORDER BY id LIMIT ?2";
	struct walk w = {session_row, {.session = fn}, arg};
	const int64_t v[1] = {ua};

	if (s == NULL || fn == NULL || more == NULL || !page_ok(page))
		return KH_ERR_INVAL;
	return has_ua ? page_of(s, of_card, page, v, 1, &w, more) : page_of(s, all, page, NULL, 0, &w, more);
}

#define JOB_COLS                                                                                  \
	"key, product_id, start_time, end_time, all_subscribers, max_subscriber_id, last_subscriber_id,\n" \
	"  subscribers, emms_queued, skipped, chunks, done, created_at, updated_at"

static kh_err job_row(struct kh__stmt *st, const struct walk *w)
{
	struct kh_store_bulk_job_info j;
	char *key = kh__col_str(st, 0);
	kh_err r;

	if (key == NULL)
		return KH_ERR_NOMEM;
	kh__bulk_job_cols(st, &j.job);
	j.key = key;
	j.created_at = kh__col_i64(st, 12);
	j.updated_at = kh__col_i64(st, 13);
	r = w->fn.job(w->arg, &j);
	free(key);
	return r;
}

kh_err kh_store_bulk_jobs_page(struct kh_store *s, const struct kh_store_page *page, kh_store_bulk_job_fn fn,
			       void *arg, int *more)
{
	/* every key is at least one byte: "" is before the first */
	static const char sql[] = "SELECT " JOB_COLS " FROM bulk_jobs WHERE key > ?1 ORDER BY key LIMIT ?2";
	struct walk w = {job_row, {.job = fn}, arg};
	struct kh__stmt *st = NULL;
	kh_err r;

	if (s == NULL || fn == NULL || more == NULL || !page_ok(page) || (page->after_set && !page->after_key))
		return KH_ERR_INVAL;
	if ((r = kh__stmt(s, sql, &st)) != KH_OK)
		return r;
	if ((r = kh__bind_text(st, 1, page->after_set ? page->after_key : "")) != KH_OK ||
	    (r = kh__bind_i64(st, 2, page_limit(page))) != KH_OK) {
		kh__stmt_done(st);
		return r;
	}
	return walk_rows(st, page->limit, &w, more, NULL);
}

kh_err kh_store_bulk_job_read(struct kh_store *s, const char *key, kh_store_bulk_job_fn fn, void *arg)
{
	static const char sql[] = "SELECT " JOB_COLS " FROM bulk_jobs WHERE key = ?1";
	struct walk w = {job_row, {.job = fn}, arg};
	struct kh__stmt *st = NULL;
	kh_err r;

	if (s == NULL || fn == NULL || !kh__idem_key_ok(key))
		return KH_ERR_INVAL;
	if ((r = kh__stmt(s, sql, &st)) != KH_OK)
		return r;
	if ((r = kh__bind_text(st, 1, key)) != KH_OK) {
		kh__stmt_done(st);
		return r;
	}
	return one_row(st, &w);
}

/* ---------------------------------------------------------------- the distribution catalogue */

/* Columns 0..5 of a dist_programs row to w, and column 6: the code itself (code) or its length. */
static kh_err dist_program(struct kh__stmt *st, const struct walk *w, int code)
{
	struct kh_store_dist_program p = {0};
	char *name = kh__col_str(st, 1);
	kh_err r;

	if (name == NULL)
		return KH_ERR_NOMEM;
	p.id = kh__col_i64(st, 0);
	p.name = name;
	p.version = kh__col_u32(st, 2);
	p.price = kh__col_u32(st, 3);
	p.manifest = kh__col_blob(st, 4, &p.manifest_len);
	p.created_at = kh__col_i64(st, 5);
	if (code)
		p.program = kh__col_blob(st, 6, &p.program_len);
	else
		p.program_len = (size_t)kh__col_i64(st, 6);
	r = w->fn.program(w->arg, &p);
	free(name);
	return r;
}

static kh_err dist_program_listed(struct kh__stmt *st, const struct walk *w)
{
	return dist_program(st, w, 0);
}

static kh_err dist_program_whole(struct kh__stmt *st, const struct walk *w)
{
	return dist_program(st, w, 1);
}

kh_err kh_store_dist_programs_page(struct kh_store *s, const struct kh_store_page *page, kh_store_dist_program_fn fn,
				   void *arg, int *more)
{
	static const char sql[] = "SELECT id, name, version, price, manifest, created_at, length(program)\n"
				  "FROM dist_programs WHERE id > ?1 ORDER BY id LIMIT ?2";
	struct walk w = {dist_program_listed, {.program = fn}, arg};

	if (s == NULL || fn == NULL || more == NULL || !page_ok(page))
		return KH_ERR_INVAL;
	return page_of(s, sql, page, NULL, 0, &w, more);
}

kh_err kh_store_dist_program_read(struct kh_store *s, int64_t id, kh_store_dist_program_fn fn, void *arg)
{
	static const char sql[] = "SELECT id, name, version, price, manifest, created_at, program\n"
				  "FROM dist_programs WHERE id = ?1";
	struct walk w = {dist_program_whole, {.program = fn}, arg};

	if (s == NULL || fn == NULL)
		return KH_ERR_INVAL;
	return read_one(s, sql, id, &w);
}

kh_err kh_store_dist_program_meta(struct kh_store *s, int64_t id, kh_store_dist_program_fn fn, void *arg)
{
	static const char sql[] = "SELECT id, name, version, price, manifest, created_at, length(program)\n"
				  "FROM dist_programs WHERE id = ?1";
	struct walk w = {dist_program_listed, {.program = fn}, arg};

	if (s == NULL || fn == NULL)
		return KH_ERR_INVAL;
	return read_one(s, sql, id, &w);
}
