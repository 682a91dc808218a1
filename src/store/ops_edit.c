/*
 * Changes the operator makes to rows already there (docs/internals/store.md "Renames, closing,
 * deletions"): renaming a subscriber or a catalogue row, closing a subscriber, changing an
 * event's price and times, deleting a catalogue row or a card never used, and the questions the
 * center asks before any of them ("is this row still referred to?"). The rules themselves (what
 * refuses what) are the center's (src/center/sms/sms_edit.c), asked and applied in one
 * transaction; here each statement is one typed operation, and every value is bound.
 */
#include <string.h>

#include "store_int.h"

static int named(enum kh_store_row what)
{
	return what == KH_STORE_SUBSCRIBER || what == KH_STORE_PRODUCT || what == KH_STORE_CHANNEL ||
	       what == KH_STORE_EVENT;
}

/* One statement changing one row: ?1 the id, ?2 text when given, ?3.. the first nint of a, b, c;
 * RETURNING a row when it changed one. */
struct change {
	const char *sql;
	int64_t id;
	const char *text;
	int64_t a, b, c;
	int nint;
	int product_jobs; /* delete: first the product's finished bulk jobs */
};

/* KH_ERR_NOTFOUND when the statement changed no row. */

static kh_err change_tx(struct kh_store *s, void *arg)
{
	const struct change *ch = arg;
	const int64_t v[3] = {ch->a, ch->b, ch->c};
	struct kh__stmt *st = NULL;
	int row = 0;
	kh_err r;

	if ((r = kh__stmt(s, ch->sql, &st)) != KH_OK || (r = kh__bind_i64(st, 1, ch->id)) != KH_OK ||
	    (ch->text && (r = kh__bind_text(st, 2, ch->text)) != KH_OK))
		goto out;
	for (int i = 0; i < ch->nint; i++)
		if ((r = kh__bind_i64(st, 3 + i, v[i])) != KH_OK)
			goto out;
	if ((r = kh__step(st, &row)) != KH_OK)
		goto out;
	r = row ? kh__exec(st) : KH_ERR_NOTFOUND;
out:
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_rename(struct kh_store *s, enum kh_store_row what, int64_t id, const char *name)
{
	static const char *const sql[] = {
		[KH_STORE_SUBSCRIBER] = "UPDATE subscribers SET name = ?2 WHERE id = ?1 RETURNING id",
		[KH_STORE_PRODUCT] = "UPDATE products SET name = ?2 WHERE id = ?1 RETURNING id",
		[KH_STORE_CHANNEL] = "UPDATE channels SET name = ?2 WHERE id = ?1 RETURNING id",
		[KH_STORE_EVENT] = "UPDATE events SET name = ?2 WHERE id = ?1 RETURNING id",
	};
	struct change ch = {0};
	size_t n;

	if (s == NULL || !named(what) || name == NULL)
		return KH_ERR_INVAL;
	n = strnlen(name, KH_STORE_NAME_MAX + 1);
	if (n < 1 || n > KH_STORE_NAME_MAX)
		return KH_ERR_INVAL;
	ch.sql = sql[what];
	ch.id = id;
	ch.text = name;
	return kh_store_run_tx(s, change_tx, &ch);
}

static kh_err delete_tx(struct kh_store *s, void *arg)
{
	static const char jobs[] = "DELETE FROM bulk_jobs WHERE product_id = ?1 AND done = 1";
	const struct change *ch = arg;
	struct kh__stmt *st = NULL;
	kh_err r;

	/* A product's finished jobs and renewals would hold it by their reference: they are done,
	 * and a retry of a finished job is answered from its idempotency record. */
	if (ch->product_jobs) {
		if ((r = kh__stmt(s, jobs, &st)) == KH_OK && (r = kh__bind_i64(st, 1, ch->id)) == KH_OK)
			r = kh__exec(st);
		kh__stmt_done(st);
		if (r != KH_OK)
			return r;
	}
	return change_tx(s, arg);
}

kh_err kh_store_delete(struct kh_store *s, enum kh_store_row what, int64_t id)
{
	static const char *const sql[] = {
		[KH_STORE_PRODUCT] = "DELETE FROM products WHERE id = ?1 RETURNING id",
		[KH_STORE_CHANNEL] = "DELETE FROM channels WHERE id = ?1 RETURNING id",
		[KH_STORE_EVENT] = "DELETE FROM events WHERE id = ?1 RETURNING id",
		[KH_STORE_CARD] = "DELETE FROM cards WHERE ua = ?1 AND state = 'issued' RETURNING ua",
	};
	struct change ch = {0};

	if (s == NULL || (what != KH_STORE_PRODUCT && what != KH_STORE_CHANNEL && what != KH_STORE_EVENT &&
			  what != KH_STORE_CARD))
		return KH_ERR_INVAL;
	ch.sql = sql[what];
	ch.id = id;
	ch.product_jobs = what == KH_STORE_PRODUCT;
	return kh_store_run_tx(s, delete_tx, &ch);
}

kh_err kh_store_subscriber_close(struct kh_store *s, int64_t id, int64_t at)
{
	static const char sql[] =
		"UPDATE subscribers SET closed_at = ?3 WHERE id = ?1 AND closed_at IS NULL RETURNING id";
	struct change ch = {.sql = sql, .id = id, .a = at, .nint = 1};
	int64_t closed = 0;
	kh_err r;

	if (s == NULL)
		return KH_ERR_INVAL;
	r = kh_store_run_tx(s, change_tx, &ch);
	if (r != KH_ERR_NOTFOUND)
		return r;
	/* none changed: an unknown subscriber, or one closed already */
	if ((r = kh_store_subscriber_closed(s, id, &closed)) != KH_OK)
		return r;
	return KH_ERR_EXISTS;
}

kh_err kh_store_event_update(struct kh_store *s, uint32_t id, uint32_t price, int64_t start, int64_t end)
{
	static const char sql[] =
		"UPDATE events SET price = ?3, start_time = ?4, end_time = ?5 WHERE id = ?1 RETURNING id";
	struct change ch = {.sql = sql, .id = id, .a = price, .b = start, .c = end, .nint = 3};

	if (s == NULL || start >= end)
		return KH_ERR_INVAL;
	return kh_store_run_tx(s, change_tx, &ch);
}

kh_err kh_store_refers(struct kh_store *s, enum kh_store_ref what, int64_t id, int64_t now, int *yes)
{
	/* Each an EXISTS that an index answers: cards_subscriber, subscriptions' key,
	 * subscriptions_product, channels_product, events_channel, purchases_event (migration 6),
	 * and the usage tables' keys by UA (an issued card is no card's replacement: it would be
	 * active). ?2, the time, where it matters. */
	static const char *const sql[] = {
		[KH_STORE_REF_ACTIVE_CARD] =
			"SELECT EXISTS (SELECT 1 FROM cards WHERE subscriber_id = ?1 AND state = 'active')",
		[KH_STORE_REF_RUNNING_SUB] =
			"SELECT EXISTS (SELECT 1 FROM subscriptions WHERE subscriber_id = ?1 AND end_time > ?2)",
		[KH_STORE_REF_PRODUCT_SUB] = "SELECT EXISTS (SELECT 1 FROM subscriptions WHERE product_id = ?1)",
		[KH_STORE_REF_PRODUCT_CHANNEL] = "SELECT EXISTS (SELECT 1 FROM channels WHERE product_id = ?1)",
		[KH_STORE_REF_PRODUCT_JOB] =
			"SELECT EXISTS (SELECT 1 FROM bulk_jobs WHERE product_id = ?1 AND done = 0)",
		[KH_STORE_REF_CHANNEL_EVENT] = "SELECT EXISTS (SELECT 1 FROM events WHERE channel_id = ?1)",
		[KH_STORE_REF_EVENT_PURCHASE] = "SELECT EXISTS (SELECT 1 FROM purchases WHERE event_id = ?1)",
		[KH_STORE_REF_CARD_USAGE] =
			"SELECT EXISTS (SELECT 1 FROM usage_blocks WHERE ua = ?1)\n"
			"  OR EXISTS (SELECT 1 FROM purchases WHERE ua = ?1)\n"
			"  OR EXISTS (SELECT 1 FROM credit_reloads WHERE ua = ?1)",
	};
	struct kh__stmt *st = NULL;
	int row = 0;
	kh_err r;

	if (s == NULL || yes == NULL || (unsigned)what >= sizeof sql / sizeof sql[0])
		return KH_ERR_INVAL;
	if ((r = kh__stmt(s, sql[what], &st)) != KH_OK || (r = kh__bind_i64(st, 1, id)) != KH_OK ||
	    (what == KH_STORE_REF_RUNNING_SUB && (r = kh__bind_i64(st, 2, now)) != KH_OK) ||
	    (r = kh__step(st, &row)) != KH_OK)
		goto out;
	if (!row) {
		r = KH_ERR_DB;
		goto out;
	}
	*yes = kh__col_i64(st, 0) != 0;
	r = kh__exec(st);
out:
	kh__stmt_done(st);
	return r;
}
