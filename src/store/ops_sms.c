/*
 * The management center's typed operations (issue 4): subscribers, cards and their life
 * (issued, active, replaced, closed), the catalogue (products, channels, pay-per-view events),
 * subscriptions, the credit policy, service keys, invoices, and one card's EMM queue. The
 * service (src/center/sms/) composes them with kh_store_emm_enqueue into one transaction per
 * request, so a card's state and the EMMs that tell the card about it commit together.
 *
 * Expected conflicts are found with a SELECT or ON CONFLICT, never by a failing statement, so
 * that a caller's transaction survives them (docs/internals/store.md, PostgreSQL).
 */
#include <stdlib.h>
#include <string.h>

#include "keyhole/cas.h"
#include "store_int.h"

static int name_ok(const char *name)
{
	size_t n;

	if (name == NULL)
		return 0;
	n = strnlen(name, KH_STORE_NAME_MAX + 1);
	return n >= 1 && n <= KH_STORE_NAME_MAX;
}

static int u32_ok(int64_t v)
{
	return v >= 0 && v <= UINT32_MAX;
}

/* Run a prepared statement to its end; *row = 1 when it gave a row (the first is left unread). */
static kh_err exists_query(struct kh_store *s, const char *sql, int64_t a, int64_t b, int nbind)
{
	struct kh__stmt *st = NULL;
	int row = 0;
	kh_err r;

	if ((r = kh__stmt(s, sql, &st)) != KH_OK || (r = kh__bind_i64(st, 1, a)) != KH_OK ||
	    (nbind > 1 && (r = kh__bind_i64(st, 2, b)) != KH_OK) || (r = kh__step(st, &row)) != KH_OK)
		goto out;
	r = row ? KH_OK : KH_ERR_NOTFOUND;
out:
	kh__stmt_done(st);
	return r;
}

/* ---------------------------------------------------------------- subscribers */

struct name_args {
	const char *name;
	int64_t id;
};

static kh_err subscriber_add_tx(struct kh_store *s, void *arg)
{
	static const char sql[] = "INSERT INTO subscribers (name, created_at) VALUES (?1, ?2) RETURNING id";
	struct name_args *a = arg;
	struct kh__stmt *st = NULL;
	int row = 0;
	kh_err r;

	if ((r = kh__stmt(s, sql, &st)) != KH_OK || (r = kh__bind_text(st, 1, a->name)) != KH_OK ||
	    (r = kh__bind_i64(st, 2, kh__now())) != KH_OK || (r = kh__step(st, &row)) != KH_OK)
		goto out;
	if (!row) {
		r = KH_ERR_DB;
		goto out;
	}
	a->id = kh__col_i64(st, 0);
	r = kh__exec(st);
out:
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_subscriber_add(struct kh_store *s, const char *name, int64_t *id)
{
	struct name_args a = {name, 0};
	kh_err r;

	if (s == NULL || !name_ok(name))
		return KH_ERR_INVAL;
	if ((r = kh_store_run_tx(s, subscriber_add_tx, &a)) != KH_OK)
		return r;
	if (id)
		*id = a.id;
	return KH_OK;
}

kh_err kh_store_subscriber_get(struct kh_store *s, int64_t id, char *name, size_t cap, int64_t *created_at)
{
	static const char sql[] = "SELECT name, created_at FROM subscribers WHERE id = ?1";
	struct kh__stmt *st = NULL;
	int row = 0;
	kh_err r;

	if (s == NULL || (name && cap == 0))
		return KH_ERR_INVAL;
	if ((r = kh__stmt(s, sql, &st)) != KH_OK || (r = kh__bind_i64(st, 1, id)) != KH_OK ||
	    (r = kh__step(st, &row)) != KH_OK)
		goto out;
	if (!row) {
		r = KH_ERR_NOTFOUND;
		goto out;
	}
	if (name)
		kh__col_text(st, 0, name, cap);
	if (created_at)
		*created_at = kh__col_i64(st, 1);
	r = KH_OK;
out:
	kh__stmt_done(st);
	return r;
}

/* ---------------------------------------------------------------- cards */

/* The names of a card's state, kind and closing reason: in the database, the API and the logs. */
static const char *const state_names[] = {NULL, "issued", "active", "replaced", "closed"};
static const char *const kind_names[] = {NULL, "card", "cam"};
static const char *const closed_names[] = {"", "forfeited", "recovered"};

static const char *name_of(const char *const *names, size_t n, int v)
{
	return v >= 0 && (size_t)v < n ? names[v] : NULL;
}

static kh_err parse_name(const char *const *names, size_t n, const char *name, int *v)
{
	for (size_t i = 0; name && i < n; i++)
		if (names[i] && strcmp(names[i], name) == 0) {
			*v = (int)i;
			return KH_OK;
		}
	return KH_ERR_INVAL;
}

#define NAMES(a) (a), sizeof(a) / sizeof(a)[0]

const char *kh_card_state_name(enum kh_card_state v)
{
	return name_of(NAMES(state_names), (int)v);
}

const char *kh_card_kind_name(enum kh_card_kind v)
{
	return name_of(NAMES(kind_names), (int)v);
}

const char *kh_card_closed_name(enum kh_card_closed v)
{
	return name_of(NAMES(closed_names), (int)v);
}

kh_err kh_card_state_parse(const char *name, enum kh_card_state *v)
{
	int x;
	kh_err r = parse_name(NAMES(state_names), name, &x);
	if (r == KH_OK)
		*v = (enum kh_card_state)x;
	return r;
}

kh_err kh_card_kind_parse(const char *name, enum kh_card_kind *v)
{
	int x;
	kh_err r = parse_name(NAMES(kind_names), name, &x);
	if (r == KH_OK)
		*v = (enum kh_card_kind)x;
	return r;
}

/* A stored closing reason ("" when none). */
static kh_err card_closed_parse(const char *name, enum kh_card_closed *v)
{
	int x;
	kh_err r = parse_name(NAMES(closed_names), name, &x);
	if (r == KH_OK)
		*v = (enum kh_card_closed)x;
	return r;
}

kh_err kh__card_row(struct kh__stmt *st, struct kh_store_card *c)
{
	int64_t ua = kh__col_i64(st, 0), rb = kh__col_i64(st, 5), rl = kh__col_i64(st, 7), cs = kh__col_i64(st, 10);
	char name[16];

	if (!u32_ok(ua) || !u32_ok(rb) || !u32_ok(rl) || !u32_ok(cs))
		return KH_ERR_DB;
	memset(c, 0, sizeof *c);
	c->ua = (uint32_t)ua;
	c->subscriber_id = kh__col_i64(st, 2);
	c->export_authorised = kh__col_i64(st, 4) != 0;
	c->replaced_by = (uint32_t)rb;
	/* the names the database keeps, as the center compares them; a name we never write is damage */
	kh__col_text(st, 1, name, sizeof name);
	if (kh_card_kind_parse(name, &c->kind) != KH_OK)
		return KH_ERR_DB;
	kh__col_text(st, 3, name, sizeof name);
	if (kh_card_state_parse(name, &c->state) != KH_OK)
		return KH_ERR_DB;
	kh__col_text(st, 6, name, sizeof name);
	if (card_closed_parse(name, &c->closed_reason) != KH_OK)
		return KH_ERR_DB;
	c->last_reload_id = (uint32_t)rl;
	c->created_at = kh__col_i64(st, 8);
	c->clone_alarm_at = kh__col_i64(st, 9);
	c->clone_block_seq = (uint32_t)cs;
	return KH_OK;
}

struct card_add_args {
	uint32_t ua;
	enum kh_card_kind kind;
	const uint8_t *cert;
	size_t len;
};

static kh_err card_add_tx(struct kh_store *s, void *arg)
{
	static const char sql[] =
		"INSERT INTO cards (ua, role, cert, created_at) VALUES (?1, ?2, ?3, ?4)\n"
		"ON CONFLICT (ua) DO NOTHING RETURNING ua";
	struct card_add_args *a = arg;
	struct kh__stmt *st = NULL;
	int row = 0;
	kh_err r;

	if ((r = kh__stmt(s, sql, &st)) != KH_OK || (r = kh__bind_i64(st, 1, a->ua)) != KH_OK ||
	    (r = kh__bind_text(st, 2, kh_card_kind_name(a->kind))) != KH_OK || (r = kh__bind_blob(st, 3, a->cert, a->len)) != KH_OK ||
	    (r = kh__bind_i64(st, 4, kh__now())) != KH_OK || (r = kh__step(st, &row)) != KH_OK)
		goto out;
	if (!row) {
		r = KH_ERR_EXISTS;
		goto out;
	}
	r = kh__exec(st);
out:
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_card_add(struct kh_store *s, uint32_t ua, enum kh_card_kind kind, const uint8_t *cert, size_t len)
{
	struct card_add_args a = {ua, kind, cert, len};

	if (s == NULL || !kh_card_kind_name(kind) || cert == NULL || len == 0)
		return KH_ERR_INVAL;
	return kh_store_run_tx(s, card_add_tx, &a);
}

kh_err kh_store_card_get(struct kh_store *s, uint32_t ua, struct kh_store_card *c)
{
	static const char sql[] = "SELECT " KH__CARD_COLS " FROM cards WHERE ua = ?1";
	struct kh__stmt *st = NULL;
	struct kh_store_card tmp;
	int row = 0;
	kh_err r;

	if (s == NULL || c == NULL)
		return KH_ERR_INVAL;
	if ((r = kh__stmt(s, sql, &st)) != KH_OK || (r = kh__bind_i64(st, 1, ua)) != KH_OK ||
	    (r = kh__step(st, &row)) != KH_OK)
		goto out;
	if (!row) {
		r = KH_ERR_NOTFOUND;
		goto out;
	}
	if ((r = kh__card_row(st, &tmp)) != KH_OK)
		goto out;
	*c = tmp;
out:
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_card_cert(struct kh_store *s, uint32_t ua, uint8_t *der, size_t cap, size_t *len)
{
	static const char sql[] = "SELECT cert FROM cards WHERE ua = ?1";
	struct kh__stmt *st = NULL;
	const uint8_t *p;
	size_t n;
	int row = 0;
	kh_err r;

	if (s == NULL || der == NULL || len == NULL)
		return KH_ERR_INVAL;
	if ((r = kh__stmt(s, sql, &st)) != KH_OK || (r = kh__bind_i64(st, 1, ua)) != KH_OK ||
	    (r = kh__step(st, &row)) != KH_OK)
		goto out;
	if (!row) {
		r = KH_ERR_NOTFOUND;
		goto out;
	}
	p = kh__col_blob(st, 0, &n);
	if (n > cap) {
		r = KH_ERR_BUF;
		goto out;
	}
	memcpy(der, p, n);
	*len = n;
	r = KH_OK;
out:
	kh__stmt_done(st);
	return r;
}

static kh_err card_update_tx(struct kh_store *s, void *arg)
{
	static const char sql[] =
		"UPDATE cards SET subscriber_id = ?2, state = ?3, export_authorised = ?4, replaced_by = ?5,\n"
		"  closed_reason = ?6 WHERE ua = ?1 RETURNING ua";
	const struct kh_store_card *c = arg;
	struct kh__stmt *st = NULL;
	int row = 0;
	kh_err r;

	if ((r = kh__stmt(s, sql, &st)) != KH_OK || (r = kh__bind_i64(st, 1, c->ua)) != KH_OK)
		goto out;
	r = c->subscriber_id ? kh__bind_i64(st, 2, c->subscriber_id) : kh__bind_null(st, 2);
	if (r != KH_OK || (r = kh__bind_text(st, 3, kh_card_state_name(c->state))) != KH_OK ||
	    (r = kh__bind_i64(st, 4, c->export_authorised ? 1 : 0)) != KH_OK)
		goto out;
	r = c->replaced_by ? kh__bind_i64(st, 5, c->replaced_by) : kh__bind_null(st, 5);
	if (r != KH_OK)
		goto out;
	r = c->closed_reason ? kh__bind_text(st, 6, kh_card_closed_name(c->closed_reason)) : kh__bind_null(st, 6);
	if (r != KH_OK || (r = kh__step(st, &row)) != KH_OK)
		goto out;
	r = row ? kh__exec(st) : KH_ERR_NOTFOUND;
out:
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_card_update(struct kh_store *s, const struct kh_store_card *c)
{
	if (s == NULL || c == NULL || !kh_card_state_name(c->state) || !kh_card_closed_name(c->closed_reason))
		return KH_ERR_INVAL;
	return kh_store_run_tx(s, card_update_tx, (void *)c);
}

struct reload_args {
	uint32_t ua;
	uint32_t id;
};

static kh_err card_reload_tx(struct kh_store *s, void *arg)
{
	static const char sql[] =
		"UPDATE cards SET last_reload_id = last_reload_id + 1\n"
		"WHERE ua = ?1 AND last_reload_id < 4294967295 RETURNING last_reload_id";
	struct reload_args *a = arg;
	struct kh__stmt *st = NULL;
	int row = 0;
	int64_t v;
	kh_err r;

	if ((r = kh__stmt(s, sql, &st)) != KH_OK || (r = kh__bind_i64(st, 1, a->ua)) != KH_OK ||
	    (r = kh__step(st, &row)) != KH_OK)
		goto out;
	if (!row) {
		kh__stmt_done(st);
		st = NULL;
		/* unknown card, or a counter at its end */
		r = exists_query(s, "SELECT 1 FROM cards WHERE ua = ?1", a->ua, 0, 1);
		if (r == KH_OK)
			r = KH_ERR_TOO_LARGE;
		goto out;
	}
	v = kh__col_i64(st, 0);
	if ((r = kh__exec(st)) != KH_OK)
		goto out;
	if (!u32_ok(v) || v == 0) {
		r = KH_ERR_DB;
		goto out;
	}
	a->id = (uint32_t)v;
out:
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_card_next_reload(struct kh_store *s, uint32_t ua, uint32_t *reload_id)
{
	struct reload_args a = {ua, 0};
	kh_err r;

	if (s == NULL || reload_id == NULL)
		return KH_ERR_INVAL;
	if ((r = kh_store_run_tx(s, card_reload_tx, &a)) != KH_OK)
		return r;
	*reload_id = a.id;
	return KH_OK;
}

static kh_err cards_query(struct kh_store *s, const char *sql, int64_t subscriber_id, const char *state,
			  kh_store_card_fn fn, void *arg)
{
	struct kh__stmt *st = NULL;
	struct kh_store_card c;
	int row = 0;
	kh_err r;

	if ((r = kh__stmt(s, sql, &st)) != KH_OK)
		goto out;
	r = state ? kh__bind_text(st, 1, state) : kh__bind_i64(st, 1, subscriber_id);
	if (r != KH_OK)
		goto out;
	while ((r = kh__step(st, &row)) == KH_OK && row) {
		if ((r = kh__card_row(st, &c)) != KH_OK || (r = fn(arg, &c)) != KH_OK)
			goto out;
	}
out:
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_cards_of(struct kh_store *s, int64_t subscriber_id, kh_store_card_fn fn, void *arg)
{
	static const char sql[] = "SELECT " KH__CARD_COLS " FROM cards WHERE subscriber_id = ?1 ORDER BY ua";

	if (s == NULL || fn == NULL)
		return KH_ERR_INVAL;
	return cards_query(s, sql, subscriber_id, NULL, fn, arg);
}

kh_err kh_store_cards_in_state(struct kh_store *s, const char *state, kh_store_card_fn fn, void *arg)
{
	static const char sql[] = "SELECT " KH__CARD_COLS " FROM cards WHERE state = ?1 ORDER BY ua";

	if (s == NULL || fn == NULL || state == NULL)
		return KH_ERR_INVAL;
	return cards_query(s, sql, 0, state, fn, arg);
}

/* ---------------------------------------------------------------- catalogue */

/* The id to use: the one asked for, or one above the highest. */
static kh_err pick_id(struct kh_store *s, const char *max_sql, uint32_t want, uint32_t *id)
{
	struct kh__stmt *st = NULL;
	int row = 0;
	int64_t v;
	kh_err r;

	if (want) {
		*id = want;
		return KH_OK;
	}
	if ((r = kh__stmt(s, max_sql, &st)) != KH_OK || (r = kh__step(st, &row)) != KH_OK)
		goto out;
	v = row ? kh__col_i64(st, 0) + 1 : 1;
	if ((r = kh__exec(st)) != KH_OK)
		goto out;
	if (!u32_ok(v) || v == 0) {
		r = KH_ERR_TOO_LARGE;
		goto out;
	}
	*id = (uint32_t)v;
out:
	kh__stmt_done(st);
	return r;
}

struct cat_args {
	const struct kh_store_product *p;
	const struct kh_store_channel *c;
	const struct kh_store_event *e;
	uint32_t id;
};

static kh_err product_add_tx(struct kh_store *s, void *arg)
{
	static const char sql[] =
		"INSERT INTO products (id, name) VALUES (?1, ?2) ON CONFLICT (id) DO NOTHING RETURNING id";
	struct cat_args *a = arg;
	struct kh__stmt *st = NULL;
	int row = 0;
	kh_err r;

	if ((r = pick_id(s, "SELECT coalesce(max(id), 0) FROM products", a->p->id, &a->id)) != KH_OK)
		return r;
	if ((r = kh__stmt(s, sql, &st)) != KH_OK || (r = kh__bind_i64(st, 1, a->id)) != KH_OK ||
	    (r = kh__bind_text(st, 2, a->p->name)) != KH_OK || (r = kh__step(st, &row)) != KH_OK)
		goto out;
	r = row ? kh__exec(st) : KH_ERR_EXISTS;
out:
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_product_add(struct kh_store *s, const struct kh_store_product *p, uint32_t *id)
{
	struct cat_args a = {p, NULL, NULL, 0};
	kh_err r;

	if (s == NULL || p == NULL || !name_ok(p->name))
		return KH_ERR_INVAL;
	if ((r = kh_store_run_tx(s, product_add_tx, &a)) != KH_OK)
		return r;
	if (id)
		*id = a.id;
	return KH_OK;
}

kh_err kh_store_product_exists(struct kh_store *s, uint32_t id)
{
	if (s == NULL)
		return KH_ERR_INVAL;
	return exists_query(s, "SELECT 1 FROM products WHERE id = ?1", id, 0, 1);
}

static kh_err channel_add_tx(struct kh_store *s, void *arg)
{
	static const char sql[] =
		"INSERT INTO channels (id, name, product_id) VALUES (?1, ?2, ?3)\n"
		"ON CONFLICT (id) DO NOTHING RETURNING id";
	struct cat_args *a = arg;
	struct kh__stmt *st = NULL;
	int row = 0;
	kh_err r;

	if ((r = kh_store_product_exists(s, a->c->product_id)) != KH_OK)
		return r;
	if ((r = pick_id(s, "SELECT coalesce(max(id), 0) FROM channels", a->c->id, &a->id)) != KH_OK)
		return r;
	if ((r = kh__stmt(s, sql, &st)) != KH_OK || (r = kh__bind_i64(st, 1, a->id)) != KH_OK ||
	    (r = kh__bind_text(st, 2, a->c->name)) != KH_OK || (r = kh__bind_i64(st, 3, a->c->product_id)) != KH_OK ||
	    (r = kh__step(st, &row)) != KH_OK)
		goto out;
	r = row ? kh__exec(st) : KH_ERR_EXISTS;
out:
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_channel_add(struct kh_store *s, const struct kh_store_channel *c, uint32_t *id)
{
	struct cat_args a = {NULL, c, NULL, 0};
	kh_err r;

	if (s == NULL || c == NULL || !name_ok(c->name))
		return KH_ERR_INVAL;
	if ((r = kh_store_run_tx(s, channel_add_tx, &a)) != KH_OK)
		return r;
	if (id)
		*id = a.id;
	return KH_OK;
}

static kh_err event_add_tx(struct kh_store *s, void *arg)
{
	static const char sql[] =
		"INSERT INTO events (id, name, price, channel_id, start_time, end_time)\n"
		"VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (id) DO NOTHING RETURNING id";
	struct cat_args *a = arg;
	const struct kh_store_event *e = a->e;
	struct kh__stmt *st = NULL;
	int row = 0;
	kh_err r;

	if ((r = exists_query(s, "SELECT 1 FROM channels WHERE id = ?1", e->channel_id, 0, 1)) != KH_OK)
		return r;
	if ((r = pick_id(s, "SELECT coalesce(max(id), 0) FROM events", e->id, &a->id)) != KH_OK)
		return r;
	if ((r = kh__stmt(s, sql, &st)) != KH_OK || (r = kh__bind_i64(st, 1, a->id)) != KH_OK ||
	    (r = kh__bind_text(st, 2, e->name)) != KH_OK || (r = kh__bind_i64(st, 3, e->price)) != KH_OK ||
	    (r = kh__bind_i64(st, 4, e->channel_id)) != KH_OK || (r = kh__bind_i64(st, 5, e->start)) != KH_OK ||
	    (r = kh__bind_i64(st, 6, e->end)) != KH_OK || (r = kh__step(st, &row)) != KH_OK)
		goto out;
	r = row ? kh__exec(st) : KH_ERR_EXISTS;
out:
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_event_add(struct kh_store *s, const struct kh_store_event *e, uint32_t *id)
{
	struct cat_args a = {NULL, NULL, e, 0};
	kh_err r;

	if (s == NULL || e == NULL || !name_ok(e->name) || e->start >= e->end)
		return KH_ERR_INVAL;
	if ((r = kh_store_run_tx(s, event_add_tx, &a)) != KH_OK)
		return r;
	if (id)
		*id = a.id;
	return KH_OK;
}

/* ---------------------------------------------------------------- subscriptions */

static kh_err subscription_put_tx(struct kh_store *s, void *arg)
{
	static const char sql[] =
		"INSERT INTO subscriptions (subscriber_id, product_id, start_time, end_time)\n"
		"VALUES (?1, ?2, ?3, ?4) ON CONFLICT (subscriber_id, product_id)\n"
		"DO UPDATE SET start_time = excluded.start_time, end_time = excluded.end_time";
	const struct kh_store_subscription *u = arg;
	struct kh__stmt *st = NULL;
	kh_err r;

	if ((r = exists_query(s, "SELECT 1 FROM subscribers WHERE id = ?1", u->subscriber_id, 0, 1)) != KH_OK ||
	    (r = kh_store_product_exists(s, u->product_id)) != KH_OK)
		return r;
	if ((r = kh__stmt(s, sql, &st)) != KH_OK || (r = kh__bind_i64(st, 1, u->subscriber_id)) != KH_OK ||
	    (r = kh__bind_i64(st, 2, u->product_id)) != KH_OK || (r = kh__bind_i64(st, 3, u->start)) != KH_OK ||
	    (r = kh__bind_i64(st, 4, u->end)) != KH_OK)
		goto out;
	r = kh__exec(st);
out:
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_subscription_put(struct kh_store *s, const struct kh_store_subscription *u)
{
	if (s == NULL || u == NULL || u->start >= u->end)
		return KH_ERR_INVAL;
	return kh_store_run_tx(s, subscription_put_tx, (void *)u);
}

struct sub_del_args {
	int64_t subscriber_id;
	uint32_t product_id;
};

static kh_err subscription_del_tx(struct kh_store *s, void *arg)
{
	static const char sql[] = "DELETE FROM subscriptions WHERE subscriber_id = ?1 AND product_id = ?2 RETURNING product_id";
	struct sub_del_args *a = arg;
	struct kh__stmt *st = NULL;
	int row = 0;
	kh_err r;

	if ((r = kh__stmt(s, sql, &st)) != KH_OK || (r = kh__bind_i64(st, 1, a->subscriber_id)) != KH_OK ||
	    (r = kh__bind_i64(st, 2, a->product_id)) != KH_OK || (r = kh__step(st, &row)) != KH_OK)
		goto out;
	r = row ? kh__exec(st) : KH_ERR_NOTFOUND;
out:
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_subscription_del(struct kh_store *s, int64_t subscriber_id, uint32_t product_id)
{
	struct sub_del_args a = {subscriber_id, product_id};

	if (s == NULL)
		return KH_ERR_INVAL;
	return kh_store_run_tx(s, subscription_del_tx, &a);
}

kh_err kh_store_subscriptions_of(struct kh_store *s, int64_t subscriber_id, kh_store_subscription_fn fn, void *arg)
{
	static const char sql[] =
		"SELECT product_id, start_time, end_time FROM subscriptions WHERE subscriber_id = ?1\n"
		"ORDER BY product_id";
	struct kh__stmt *st = NULL;
	int row = 0;
	kh_err r;

	if (s == NULL || fn == NULL)
		return KH_ERR_INVAL;
	if ((r = kh__stmt(s, sql, &st)) != KH_OK || (r = kh__bind_i64(st, 1, subscriber_id)) != KH_OK)
		goto out;
	while ((r = kh__step(st, &row)) == KH_OK && row) {
		struct kh_store_subscription u = {subscriber_id, (uint32_t)kh__col_i64(st, 0), kh__col_i64(st, 1),
						  kh__col_i64(st, 2)};
		if ((r = fn(arg, &u)) != KH_OK)
			goto out;
	}
out:
	kh__stmt_done(st);
	return r;
}

/* ---------------------------------------------------------------- credit policy */

kh_err kh_store_credit_policy_get(struct kh_store *s, uint32_t *initial_credit, uint32_t *reload_amount)
{
	static const char sql[] = "SELECT initial_credit, reload_amount FROM credit_policy WHERE id = 1";
	struct kh__stmt *st = NULL;
	int row = 0;
	int64_t a, b;
	kh_err r;

	if (s == NULL)
		return KH_ERR_INVAL;
	if ((r = kh__stmt(s, sql, &st)) != KH_OK || (r = kh__step(st, &row)) != KH_OK)
		goto out;
	if (!row) {
		r = KH_ERR_DB; /* migration 1 inserts the row */
		goto out;
	}
	a = kh__col_i64(st, 0);
	b = kh__col_i64(st, 1);
	if ((r = kh__exec(st)) != KH_OK)
		goto out;
	if (!u32_ok(a) || !u32_ok(b)) {
		r = KH_ERR_DB;
		goto out;
	}
	if (initial_credit)
		*initial_credit = (uint32_t)a;
	if (reload_amount)
		*reload_amount = (uint32_t)b;
out:
	kh__stmt_done(st);
	return r;
}

struct policy_args {
	uint32_t initial, reload;
};

static kh_err policy_set_tx(struct kh_store *s, void *arg)
{
	static const char sql[] = "UPDATE credit_policy SET initial_credit = ?1, reload_amount = ?2 WHERE id = 1 RETURNING id";
	struct policy_args *a = arg;
	struct kh__stmt *st = NULL;
	int row = 0;
	kh_err r;

	if ((r = kh__stmt(s, sql, &st)) != KH_OK || (r = kh__bind_i64(st, 1, a->initial)) != KH_OK ||
	    (r = kh__bind_i64(st, 2, a->reload)) != KH_OK || (r = kh__step(st, &row)) != KH_OK)
		goto out;
	r = row ? kh__exec(st) : KH_ERR_DB; /* migration 1 inserts the row */
out:
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_credit_policy_set(struct kh_store *s, uint32_t initial_credit, uint32_t reload_amount)
{
	struct policy_args a = {initial_credit, reload_amount};

	if (s == NULL)
		return KH_ERR_INVAL;
	return kh_store_run_tx(s, policy_set_tx, &a);
}

/* ---------------------------------------------------------------- service keys */

struct skey_args {
	uint8_t id;
	uint32_t version;
	const uint8_t *key;
};

static kh_err skey_add_tx(struct kh_store *s, void *arg)
{
	static const char sql[] =
		"INSERT INTO service_keys (key_id, version, key, created_at) VALUES (?1, ?2, ?3, ?4)\n"
		"ON CONFLICT (key_id, version) DO NOTHING RETURNING version";
	struct skey_args *a = arg;
	struct kh__stmt *st = NULL;
	int row = 0;
	kh_err r;

	if ((r = kh__stmt(s, sql, &st)) != KH_OK || (r = kh__bind_i64(st, 1, a->id)) != KH_OK ||
	    (r = kh__bind_i64(st, 2, a->version)) != KH_OK || (r = kh__bind_blob(st, 3, a->key, 32)) != KH_OK ||
	    (r = kh__bind_i64(st, 4, kh__now())) != KH_OK || (r = kh__step(st, &row)) != KH_OK)
		goto out;
	r = row ? kh__exec(st) : KH_ERR_EXISTS;
out:
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_service_key_add(struct kh_store *s, uint8_t key_id, uint32_t version, const uint8_t key[static 32])
{
	struct skey_args a = {key_id, version, key};

	if (s == NULL || key == NULL)
		return KH_ERR_INVAL;
	return kh_store_run_tx(s, skey_add_tx, &a);
}

kh_err kh_store_service_key_latest(struct kh_store *s, uint8_t key_id, uint32_t *version)
{
	static const char sql[] = "SELECT max(version) FROM service_keys WHERE key_id = ?1";
	struct kh__stmt *st = NULL;
	int row = 0;
	int64_t v;
	kh_err r;

	if (s == NULL || version == NULL)
		return KH_ERR_INVAL;
	if ((r = kh__stmt(s, sql, &st)) != KH_OK || (r = kh__bind_i64(st, 1, key_id)) != KH_OK ||
	    (r = kh__step(st, &row)) != KH_OK)
		goto out;
	if (!row || kh__col_null(st, 0)) {
		r = KH_ERR_NOTFOUND;
		goto out;
	}
	v = kh__col_i64(st, 0);
	if ((r = kh__exec(st)) != KH_OK)
		goto out;
	if (!u32_ok(v)) {
		r = KH_ERR_DB;
		goto out;
	}
	*version = (uint32_t)v;
out:
	kh__stmt_done(st);
	return r;
}

static kh_err skeys_query(struct kh_store *s, const char *sql, int with_key, kh_store_service_key_fn fn, void *arg)
{
	struct kh__stmt *st = NULL;
	int row = 0;
	kh_err r;

	if (s == NULL || fn == NULL)
		return KH_ERR_INVAL;
	if ((r = kh__stmt(s, sql, &st)) != KH_OK)
		goto out;
	while ((r = kh__step(st, &row)) == KH_OK && row) {
		struct kh_store_service_key k;
		int64_t id = kh__col_i64(st, 0), v = kh__col_i64(st, 1);
		size_t n = 0;

		k.key = NULL;
		if (with_key) {
			k.key = kh__col_blob(st, 2, &n);
			if (n != 32) {
				r = KH_ERR_DB;
				goto out;
			}
		}
		if (id < 0 || id > 255 || !u32_ok(v)) {
			r = KH_ERR_DB;
			goto out;
		}
		k.key_id = (uint8_t)id;
		k.version = (uint32_t)v;
		k.created_at = kh__col_i64(st, 3);
		if ((r = fn(arg, &k)) != KH_OK)
			goto out;
	}
out:
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_service_keys_current(struct kh_store *s, kh_store_service_key_fn fn, void *arg)
{
	/* The two highest versions of each id: those with at most one higher version beside them. */
	static const char sql[] =
		"SELECT k.key_id, k.version, k.key, k.created_at FROM service_keys k\n"
		"WHERE (SELECT count(*) FROM service_keys h WHERE h.key_id = k.key_id AND h.version > k.version) < 2\n"
		"ORDER BY k.key_id, k.version";

	return skeys_query(s, sql, 1, fn, arg);
}

kh_err kh_store_service_key_list(struct kh_store *s, kh_store_service_key_fn fn, void *arg)
{
	static const char sql[] =
		"SELECT key_id, version, NULL, created_at FROM service_keys ORDER BY key_id, version";

	return skeys_query(s, sql, 0, fn, arg);
}

/* ---------------------------------------------------------------- invoices */

kh_err kh_store_invoices_of(struct kh_store *s, int64_t subscriber_id, kh_store_invoice_fn fn, void *arg)
{
	static const char sql[] =
		"SELECT id, ua, event_id, price, time, created_at, coalesce(block_price, price), coalesce(flag, '')\n"
		"FROM invoices WHERE subscriber_id = ?1 ORDER BY time, id";
	struct kh__stmt *st = NULL;
	int row = 0;
	kh_err r;

	if (s == NULL || fn == NULL)
		return KH_ERR_INVAL;
	if ((r = kh__stmt(s, sql, &st)) != KH_OK || (r = kh__bind_i64(st, 1, subscriber_id)) != KH_OK)
		goto out;
	while ((r = kh__step(st, &row)) == KH_OK && row) {
		struct kh_store_invoice i;

		i.id = kh__col_i64(st, 0);
		i.subscriber_id = subscriber_id;
		i.ua = (uint32_t)kh__col_i64(st, 1);
		i.event_id = (uint32_t)kh__col_i64(st, 2);
		i.price = (uint32_t)kh__col_i64(st, 3);
		i.time = kh__col_i64(st, 4);
		i.created_at = kh__col_i64(st, 5);
		i.block_price = (uint32_t)kh__col_i64(st, 6);
		kh__col_text(st, 7, i.flag, sizeof i.flag);
		if ((r = fn(arg, &i)) != KH_OK)
			goto out;
	}
out:
	kh__stmt_done(st);
	return r;
}

/* ---------------------------------------------------------------- one address's EMMs */

/* One address's EMMs from one of two statements: by queue id, or by sequence number. */
static kh_err fetch_addr(struct kh_store *s, const char *sql, uint8_t addr_type, uint32_t addr, int64_t after,
			 unsigned limit, kh_store_emm_fn fn, void *arg, int64_t *last_id)
{
	struct kh__stmt *st = NULL;
	int64_t last = 0;
	int row = 0, any = 0;
	kh_err r;

	if (s == NULL || fn == NULL || addr_type > KH_EMM_ALL)
		return KH_ERR_INVAL;
	if ((r = kh__stmt(s, sql, &st)) != KH_OK || (r = kh__bind_i64(st, 1, addr_type)) != KH_OK ||
	    (r = kh__bind_i64(st, 2, addr)) != KH_OK || (r = kh__bind_i64(st, 3, after)) != KH_OK ||
	    (r = kh__bind_i64(st, 4, limit ? (int64_t)limit : -1)) != KH_OK)
		goto out;
	while ((r = kh__step(st, &row)) == KH_OK && row) {
		struct kh_store_emm e;
		int64_t seq = kh__col_i64(st, 1);

		if (seq < 1 || seq > UINT32_MAX) {
			r = KH_ERR_DB;
			goto out;
		}
		e.id = kh__col_i64(st, 0);
		e.addr_type = addr_type;
		e.addr = addr;
		e.seq = (uint32_t)seq;
		e.section = kh__col_blob(st, 2, &e.len);
		e.created_at = kh__col_i64(st, 3);
		if ((r = fn(arg, &e)) != KH_OK)
			goto out;
		last = e.id;
		any = 1;
	}
out:
	kh__stmt_done(st);
	if (r == KH_OK && last_id)
		*last_id = any ? last : -1;
	return r;
}

kh_err kh_store_emm_fetch_addr(struct kh_store *s, uint8_t addr_type, uint32_t addr, int64_t since_id,
			       unsigned limit, kh_store_emm_fn fn, void *arg, int64_t *last_id)
{
	static const char sql[] =
		"SELECT id, seq, section, created_at FROM emm_queue\n"
		"WHERE address_type = ?1 AND address = ?2 AND id > ?3 ORDER BY id LIMIT ?4";
	int64_t last = -1;
	kh_err r = fetch_addr(s, sql, addr_type, addr, since_id, limit, fn, arg, &last);

	if (r == KH_OK && last_id)
		*last_id = last < 0 ? since_id : last;
	return r;
}

kh_err kh_store_emm_fetch_addr_seq(struct kh_store *s, uint8_t addr_type, uint32_t addr, uint32_t above_seq,
				   unsigned limit, kh_store_emm_fn fn, void *arg)
{
	/* The (address_type, address, seq) unique index serves this: no scan of older EMMs. */
	static const char sql[] =
		"SELECT id, seq, section, created_at FROM emm_queue\n"
		"WHERE address_type = ?1 AND address = ?2 AND seq > ?3 ORDER BY seq LIMIT ?4";
	return fetch_addr(s, sql, addr_type, addr, above_seq, limit, fn, arg, NULL);
}
