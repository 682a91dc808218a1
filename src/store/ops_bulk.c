/*
 * Store operations for subscribing a product to many subscribers at once
 * (POST /v1/products/{id}/subscriptions, docs/internals/sms.md "Subscribing a product to all"):
 * the subscribers a chunk reaches, read with what the 32-rights cap needs in one statement, and
 * the job's progress row (migration 3, bulk_jobs) that each chunk's transaction moves forward.
 * The progress row is keyed by the request's idempotency key and carries its request hash, so
 * that a retry resumes the job it belongs to and another request under the same key is refused.
 * The rights renewal (sms_rights.c) walks one product's subscriptions by subscriber the same way
 * and keeps its progress in the same rows, under keys of its own.
 */
#include <string.h>

#include "store_int.h"

/* Columns 1..4 of both target queries: the card, the count, the renewal flag, closed. */
static void target_of(struct kh__stmt *st, struct kh_store_bulk_target *t)
{
	int64_t n = kh__col_i64(st, 2);

	t->subscriber_id = kh__col_i64(st, 0);
	t->ua = (uint32_t)kh__col_i64(st, 1);
	t->subscriptions = n < 0 ? 0 : n > UINT32_MAX ? UINT32_MAX : (unsigned)n;
	t->has_product = kh__col_i64(st, 3) != 0;
	t->closed = kh__col_i64(st, 4) != 0;
}

kh_err kh_store_bulk_targets_active(struct kh_store *s, uint32_t product, int64_t after_id, int64_t max_id,
				    unsigned limit, kh_store_bulk_target_fn fn, void *arg)
{
	/* Walks cards_subscriber in id order and stops after limit subscribers: a chunk costs its
	 * own size, not the size of what is left. "c.state || ''" keeps SQLite off cards_state
	 * (migration 6): every active card by state, then sorted by subscriber, at every chunk.
	 * (SQLite's own idiom, "+c.state", is not PostgreSQL's: + of text.) */
	static const char sql[] =
		"SELECT c.subscriber_id, min(c.ua),\n"
		"  (SELECT count(*) FROM subscriptions u WHERE u.subscriber_id = c.subscriber_id),\n"
		"  EXISTS (SELECT 1 FROM subscriptions u WHERE u.subscriber_id = c.subscriber_id AND u.product_id = ?3),\n"
		"  0\n" /* a subscriber with an active card is open: closing needs none, assigning an open one */
		"FROM cards c WHERE c.state || '' = 'active' AND c.subscriber_id > ?1 AND c.subscriber_id <= ?2\n"
		"GROUP BY c.subscriber_id ORDER BY c.subscriber_id LIMIT ?4";
	struct kh__stmt *st = NULL;
	int row = 0;
	kh_err r;

	if (s == NULL || fn == NULL || limit == 0)
		return KH_ERR_INVAL;
	if ((r = kh__stmt(s, sql, &st)) != KH_OK || (r = kh__bind_i64(st, 1, after_id)) != KH_OK ||
	    (r = kh__bind_i64(st, 2, max_id)) != KH_OK || (r = kh__bind_i64(st, 3, product)) != KH_OK ||
	    (r = kh__bind_i64(st, 4, limit)) != KH_OK)
		goto out;
	while ((r = kh__step(st, &row)) == KH_OK && row) {
		struct kh_store_bulk_target t;
		target_of(st, &t);
		if ((r = fn(arg, &t)) != KH_OK)
			goto out;
	}
out:
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_bulk_target(struct kh_store *s, int64_t subscriber_id, uint32_t product,
			    struct kh_store_bulk_target *t)
{
	static const char sql[] =
		"SELECT s.id,\n"
		"  coalesce((SELECT min(c.ua) FROM cards c WHERE c.subscriber_id = s.id AND c.state = 'active'), 0),\n"
		"  (SELECT count(*) FROM subscriptions u WHERE u.subscriber_id = s.id),\n"
		"  EXISTS (SELECT 1 FROM subscriptions u WHERE u.subscriber_id = s.id AND u.product_id = ?2),\n"
		"  s.closed_at IS NOT NULL\n"
		"FROM subscribers s WHERE s.id = ?1";
	struct kh__stmt *st = NULL;
	struct kh_store_bulk_target got;
	int row = 0;
	kh_err r;

	if (s == NULL || t == NULL)
		return KH_ERR_INVAL;
	if ((r = kh__stmt(s, sql, &st)) != KH_OK || (r = kh__bind_i64(st, 1, subscriber_id)) != KH_OK ||
	    (r = kh__bind_i64(st, 2, product)) != KH_OK || (r = kh__step(st, &row)) != KH_OK)
		goto out;
	if (!row) {
		r = KH_ERR_NOTFOUND;
		goto out;
	}
	target_of(st, &got);
	if ((r = kh__exec(st)) != KH_OK)
		goto out;
	*t = got;
out:
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_renew_targets(struct kh_store *s, uint32_t product, int64_t after_id, int64_t max_id,
			      int64_t started_before, int64_t ends_after, unsigned limit, kh_store_renew_target_fn fn,
			      void *arg)
{
	/* Walks subscriptions_product (product, subscriber_id) in id order: a chunk costs its own size.
	 * One subscription per subscriber for the product: grouping by its times too changes no
	 * group, and names every column selected (PostgreSQL wants that; SQLite does not). */
	static const char sql[] =
		"SELECT u.subscriber_id, min(c.ua), u.start_time, u.end_time\n"
		"FROM subscriptions u JOIN cards c ON c.subscriber_id = u.subscriber_id AND c.state = 'active'\n"
		"WHERE u.product_id = ?1 AND u.subscriber_id > ?2 AND u.subscriber_id <= ?3\n"
		"  AND u.start_time < ?4 AND u.end_time > ?5\n"
		"GROUP BY u.subscriber_id, u.start_time, u.end_time ORDER BY u.subscriber_id LIMIT ?6";
	struct kh__stmt *st = NULL;
	int row = 0;
	kh_err r;

	if (s == NULL || fn == NULL || limit == 0)
		return KH_ERR_INVAL;
	if ((r = kh__stmt(s, sql, &st)) != KH_OK || (r = kh__bind_i64(st, 1, product)) != KH_OK ||
	    (r = kh__bind_i64(st, 2, after_id)) != KH_OK || (r = kh__bind_i64(st, 3, max_id)) != KH_OK ||
	    (r = kh__bind_i64(st, 4, started_before)) != KH_OK || (r = kh__bind_i64(st, 5, ends_after)) != KH_OK ||
	    (r = kh__bind_i64(st, 6, limit)) != KH_OK)
		goto out;
	while ((r = kh__step(st, &row)) == KH_OK && row) {
		struct kh_store_renew_target t;
		t.subscriber_id = kh__col_i64(st, 0);
		t.ua = (uint32_t)kh__col_i64(st, 1);
		t.start = kh__col_i64(st, 2);
		t.end = kh__col_i64(st, 3);
		if ((r = fn(arg, &t)) != KH_OK)
			goto out;
	}
out:
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_subscriber_max_id(struct kh_store *s, int64_t *id)
{
	static const char sql[] = "SELECT coalesce(max(id), 0) FROM subscribers";
	struct kh__stmt *st = NULL;
	int64_t v = 0;
	int row = 0;
	kh_err r;

	if (s == NULL || id == NULL)
		return KH_ERR_INVAL;
	if ((r = kh__stmt(s, sql, &st)) != KH_OK || (r = kh__step(st, &row)) != KH_OK)
		goto out;
	if (row)
		v = kh__col_i64(st, 0);
	if ((r = kh__exec(st)) != KH_OK)
		goto out;
	*id = v;
out:
	kh__stmt_done(st);
	return r;
}

void kh__bulk_job_cols(struct kh__stmt *st, struct kh_store_bulk_job *j)
{
	memset(j, 0, sizeof *j);
	j->product_id = kh__col_u32(st, 1);
	j->start = kh__col_i64(st, 2);
	j->end = kh__col_i64(st, 3);
	j->all = kh__col_i64(st, 4) != 0;
	j->max_subscriber_id = kh__col_i64(st, 5);
	j->last_subscriber_id = kh__col_i64(st, 6);
	j->subscribers = kh__col_u32(st, 7);
	j->emms_queued = kh__col_u32(st, 8);
	j->skipped = kh__col_u32(st, 9);
	j->chunks = kh__col_u32(st, 10);
	j->done = kh__col_i64(st, 11) != 0;
}

kh_err kh_store_bulk_job_get(struct kh_store *s, const char *key, const uint8_t hash[static KH_STORE_IDEM_HASH_LEN],
			     struct kh_store_bulk_job *job)
{
	static const char sql[] =
		"SELECT request_hash, product_id, start_time, end_time, all_subscribers, max_subscriber_id,\n"
		"  last_subscriber_id, subscribers, emms_queued, skipped, chunks, done FROM bulk_jobs WHERE key = ?1";
	struct kh__stmt *st = NULL;
	struct kh_store_bulk_job j;
	kh_err r;

	if (s == NULL || !kh__idem_key_ok(key) || hash == NULL || job == NULL)
		return KH_ERR_INVAL;
	if ((r = kh__keyed_row(s, sql, key, hash, &st)) != KH_OK)
		return r;
	kh__bulk_job_cols(st, &j);
	if ((r = kh__exec(st)) != KH_OK)
		goto out;
	*job = j;
out:
	kh__stmt_done(st);
	return r;
}

struct put_args {
	const char *key;
	const uint8_t *hash;
	const struct kh_store_bulk_job *job;
};

static kh_err job_put_tx(struct kh_store *s, void *arg)
{
	/* One upsert, no failing statement: the update only happens under the same request hash,
	 * and no row returned means the key belongs to another request. The request's own fields
	 * (product, times, set) are fixed when the row is created. */
	static const char sql[] =
		"INSERT INTO bulk_jobs (key, request_hash, product_id, start_time, end_time, all_subscribers,\n"
		"  max_subscriber_id, last_subscriber_id, subscribers, emms_queued, skipped, chunks, done,\n"
		"  created_at, updated_at)\n"
		"VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?14)\n"
		"ON CONFLICT (key) DO UPDATE SET last_subscriber_id = excluded.last_subscriber_id,\n"
		"  subscribers = excluded.subscribers, emms_queued = excluded.emms_queued,\n"
		"  skipped = excluded.skipped, chunks = excluded.chunks, done = excluded.done,\n"
		"  updated_at = excluded.updated_at\n"
		"WHERE bulk_jobs.request_hash = excluded.request_hash RETURNING 1";
	struct put_args *a = arg;
	const struct kh_store_bulk_job *j = a->job;
	struct kh__stmt *st = NULL;
	int row = 0;
	kh_err r;

	if ((r = kh__stmt(s, sql, &st)) != KH_OK || (r = kh__bind_text(st, 1, a->key)) != KH_OK ||
	    (r = kh__bind_blob(st, 2, a->hash, KH_STORE_IDEM_HASH_LEN)) != KH_OK ||
	    (r = kh__bind_i64(st, 3, j->product_id)) != KH_OK || (r = kh__bind_i64(st, 4, j->start)) != KH_OK ||
	    (r = kh__bind_i64(st, 5, j->end)) != KH_OK || (r = kh__bind_i64(st, 6, j->all ? 1 : 0)) != KH_OK ||
	    (r = kh__bind_i64(st, 7, j->max_subscriber_id)) != KH_OK ||
	    (r = kh__bind_i64(st, 8, j->last_subscriber_id)) != KH_OK ||
	    (r = kh__bind_i64(st, 9, j->subscribers)) != KH_OK || (r = kh__bind_i64(st, 10, j->emms_queued)) != KH_OK ||
	    (r = kh__bind_i64(st, 11, j->skipped)) != KH_OK || (r = kh__bind_i64(st, 12, j->chunks)) != KH_OK ||
	    (r = kh__bind_i64(st, 13, j->done ? 1 : 0)) != KH_OK || (r = kh__bind_i64(st, 14, kh__now())) != KH_OK ||
	    (r = kh__step(st, &row)) != KH_OK)
		goto out;
	r = row ? kh__exec(st) : KH_ERR_IDEM_MISMATCH;
out:
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_bulk_job_put(struct kh_store *s, const char *key, const uint8_t hash[static KH_STORE_IDEM_HASH_LEN],
			     const struct kh_store_bulk_job *job)
{
	struct put_args a = {key, hash, job};

	if (s == NULL || !kh__idem_key_ok(key) || hash == NULL || job == NULL || job->start >= job->end ||
	    job->max_subscriber_id < 0 || job->last_subscriber_id < 0)
		return KH_ERR_INVAL;
	return kh_store_run_tx(s, job_put_tx, &a);
}
