/*
 * The catalogue (products, channels, pay-per-view events), the credit policy, the service keys
 * and a subscriber's invoices: what the center sells, at what price, under which keys, and what it
 * billed.
 */
#include <stdlib.h>
#include <string.h>

#include "store_int.h"

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
	if (!kh__u32_ok(v) || v == 0) {
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

	if (s == NULL || p == NULL || !kh__name_ok(p->name))
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
	return kh__exists_query(s, "SELECT 1 FROM products WHERE id = ?1", id, 0, 1);
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

	if (s == NULL || c == NULL || !kh__name_ok(c->name))
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

	if ((r = kh__exists_query(s, "SELECT 1 FROM channels WHERE id = ?1", e->channel_id, 0, 1)) != KH_OK)
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

	if (s == NULL || e == NULL || !kh__name_ok(e->name) || e->start >= e->end)
		return KH_ERR_INVAL;
	if ((r = kh_store_run_tx(s, event_add_tx, &a)) != KH_OK)
		return r;
	if (id)
		*id = a.id;
	return KH_OK;
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
	if (!kh__u32_ok(a) || !kh__u32_ok(b)) {
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
	if (!kh__u32_ok(v)) {
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
		if (id < 0 || id > 255 || !kh__u32_ok(v)) {
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
