/*
 * Subscribers and their subscriptions: adding and reading a subscriber, putting, removing and
 * listing the products one is subscribed to. The center (src/center/sms/) composes them with the
 * EMMs each change queues, in one transaction per request. Expected conflicts are found with a
 * SELECT or ON CONFLICT, never by a failing statement (docs/internals/store.md).
 */
#include <stdlib.h>
#include <string.h>

#include "store_int.h"

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

	if (s == NULL || !kh__name_ok(name))
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

	if ((r = kh__exists_query(s, "SELECT 1 FROM subscribers WHERE id = ?1", u->subscriber_id, 0, 1)) != KH_OK ||
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
