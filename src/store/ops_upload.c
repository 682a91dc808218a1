/*
 * Typed store operations for the upload session of seed 001 (docs/protocols/upload.md): the
 * session and its nonce (its age, and how many a card has open, for the center's limits), and
 * each purchase a card's block carried, recorded and invoiced once.
 * "Once" is the schema's: purchases and invoices are both unique on (ua, event, time), so a
 * block seen again, or the same purchase carried by a later block, inserts nothing.
 */
#include <string.h>

#include "store_int.h"

kh_err kh_store_upload_open(struct kh_store *s, uint32_t ua, const uint8_t *nonce, size_t n, int64_t created_at,
			    int64_t *id)
{
	/* A nonce already used is an expected answer, not a failed statement (which would abort
	 * the caller's transaction on PostgreSQL): no row, KH_ERR_EXISTS. */
	static const char sql[] = "INSERT INTO upload_sessions (ua, nonce, created_at) VALUES (?1, ?2, ?3) "
				  "ON CONFLICT (nonce) DO NOTHING RETURNING id";
	struct kh__stmt *st = NULL;
	int row = 0;
	kh_err r;

	if (!s || !nonce || n < 16 || n > 64 || !id)
		return KH_ERR_INVAL;
	if ((r = kh__stmt(s, sql, &st)) != KH_OK)
		return r;
	if ((r = kh__bind_i64(st, 1, ua)) == KH_OK && (r = kh__bind_blob(st, 2, nonce, n)) == KH_OK &&
	    (r = kh__bind_i64(st, 3, created_at)) == KH_OK && (r = kh__step(st, &row)) == KH_OK) {
		if (row)
			*id = kh__col_i64(st, 0);
		else
			r = KH_ERR_EXISTS;
	}
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_upload_get(struct kh_store *s, int64_t id, uint32_t *ua, uint8_t *nonce, size_t cap, size_t *n,
			   int64_t *closed_at)
{
	static const char sql[] = "SELECT ua, nonce, closed_at FROM upload_sessions WHERE id = ?1";
	struct kh__stmt *st = NULL;
	const uint8_t *b;
	size_t len;
	int row = 0;
	kh_err r;

	if (!s || !ua || !nonce || !n || !closed_at)
		return KH_ERR_INVAL;
	if ((r = kh__stmt(s, sql, &st)) != KH_OK)
		return r;
	if ((r = kh__bind_i64(st, 1, id)) != KH_OK || (r = kh__step(st, &row)) != KH_OK)
		goto out;
	if (!row) {
		r = KH_ERR_NOTFOUND;
		goto out;
	}
	b = kh__col_blob(st, 1, &len);
	if (len > cap) {
		r = KH_ERR_BUF;
		goto out;
	}
	*ua = (uint32_t)kh__col_i64(st, 0);
	memcpy(nonce, b, len);
	*n = len;
	*closed_at = kh__col_null(st, 2) ? 0 : kh__col_i64(st, 2);
out:
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_upload_state(struct kh_store *s, int64_t id, uint32_t *ua, int64_t *created_at, int64_t *closed_at)
{
	static const char sql[] = "SELECT ua, created_at, closed_at FROM upload_sessions WHERE id = ?1";
	struct kh__stmt *st = NULL;
	int row = 0;
	kh_err r;

	if (!s || !ua || !created_at || !closed_at)
		return KH_ERR_INVAL;
	if ((r = kh__stmt(s, sql, &st)) != KH_OK)
		return r;
	if ((r = kh__bind_i64(st, 1, id)) == KH_OK && (r = kh__step(st, &row)) == KH_OK) {
		if (row) {
			*ua = (uint32_t)kh__col_i64(st, 0);
			*created_at = kh__col_i64(st, 1);
			*closed_at = kh__col_null(st, 2) ? 0 : kh__col_i64(st, 2);
		} else {
			r = KH_ERR_NOTFOUND;
		}
	}
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_upload_count_open(struct kh_store *s, uint32_t ua, int64_t since, unsigned *n)
{
	/* Through the index on ua: a card's sessions only. */
	static const char sql[] = "SELECT count(*) FROM upload_sessions WHERE ua = ?1 AND closed_at IS NULL "
				  "AND created_at >= ?2";
	struct kh__stmt *st = NULL;
	int row = 0;
	kh_err r;

	if (!s || !n)
		return KH_ERR_INVAL;
	if ((r = kh__stmt(s, sql, &st)) != KH_OK)
		return r;
	if ((r = kh__bind_i64(st, 1, ua)) == KH_OK && (r = kh__bind_i64(st, 2, since)) == KH_OK &&
	    (r = kh__step(st, &row)) == KH_OK)
		*n = row ? (unsigned)kh__col_i64(st, 0) : 0;
	kh__stmt_done(st);
	return r;
}

/* A DELETE of a card's unprocessed sessions with one more integer parameter; *n how many. */
static kh_err delete_sessions(struct kh_store *s, const char *sql, uint32_t ua, int64_t v, unsigned *n)
{
	struct kh__stmt *st = NULL;
	kh_err r;

	if (!s)
		return KH_ERR_INVAL;
	if ((r = kh__stmt(s, sql, &st)) != KH_OK)
		return r;
	if ((r = kh__bind_i64(st, 1, ua)) == KH_OK && (r = kh__bind_i64(st, 2, v)) == KH_OK)
		r = kh__exec(st);
	if (r == KH_OK && n)
		*n = (unsigned)kh__changes(s);
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_upload_purge(struct kh_store *s, uint32_t ua, int64_t before, unsigned *purged)
{
	/* Never processed, so no usage block names them (usage_blocks.session_id). */
	static const char sql[] = "DELETE FROM upload_sessions WHERE ua = ?1 AND closed_at IS NULL AND created_at < ?2";
	return delete_sessions(s, sql, ua, before, purged);
}

kh_err kh_store_upload_evict(struct kh_store *s, uint32_t ua, unsigned keep, unsigned *evicted)
{
	/* All but the newest `keep` of the card's unprocessed sessions (ids grow with time). */
	static const char sql[] = "DELETE FROM upload_sessions WHERE ua = ?1 AND closed_at IS NULL AND id <= "
				  "(SELECT id FROM upload_sessions WHERE ua = ?1 AND closed_at IS NULL "
				  "ORDER BY id DESC LIMIT 1 OFFSET ?2)";
	return delete_sessions(s, sql, ua, keep, evicted);
}

kh_err kh_store_upload_close(struct kh_store *s, int64_t id)
{
	static const char sql[] = "UPDATE upload_sessions SET closed_at = ?2 WHERE id = ?1";
	struct kh__stmt *st = NULL;
	kh_err r;

	if ((r = kh__stmt(s, sql, &st)) != KH_OK)
		return r;
	if ((r = kh__bind_i64(st, 1, id)) == KH_OK && (r = kh__bind_i64(st, 2, kh__now())) == KH_OK)
		r = kh__exec(st);
	if (r == KH_OK && kh__changes(s) != 1)
		r = KH_ERR_NOTFOUND;
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_purchase_invoice(struct kh_store *s, const struct kh_store_purchase *p, int *invoiced)
{
	static const char ins_purchase[] =
		"INSERT INTO purchases (ua, event_id, price, time, block_ua, block_seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6) "
		"ON CONFLICT (ua, event_id, time) DO NOTHING RETURNING id";
	static const char ins_invoice[] =
		"INSERT INTO invoices (subscriber_id, ua, event_id, price, time, created_at, block_price, flag) "
		"VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (ua, event_id, time) DO NOTHING";
	struct kh__stmt *st = NULL;
	int row = 0;
	kh_err r;

	if (!s || !p || !invoiced)
		return KH_ERR_INVAL;
	*invoiced = 0;
	if ((r = kh__stmt(s, ins_purchase, &st)) != KH_OK)
		return r;
	if ((r = kh__bind_i64(st, 1, p->ua)) == KH_OK && (r = kh__bind_i64(st, 2, p->event)) == KH_OK &&
	    (r = kh__bind_i64(st, 3, p->price)) == KH_OK && (r = kh__bind_i64(st, 4, p->time)) == KH_OK &&
	    (r = kh__bind_i64(st, 5, p->block_ua)) == KH_OK && (r = kh__bind_i64(st, 6, p->block_seq)) == KH_OK)
		r = kh__step(st, &row);
	kh__stmt_done(st);
	if (r != KH_OK || !row || p->subscriber_id == 0)
		return r; /* seen before: nothing more to do */
	if ((r = kh__stmt(s, ins_invoice, &st)) != KH_OK)
		return r;
	if ((r = kh__bind_i64(st, 1, p->subscriber_id)) == KH_OK && (r = kh__bind_i64(st, 2, p->ua)) == KH_OK &&
	    (r = kh__bind_i64(st, 3, p->event)) == KH_OK && (r = kh__bind_i64(st, 4, p->invoice_price)) == KH_OK &&
	    (r = kh__bind_i64(st, 5, p->time)) == KH_OK && (r = kh__bind_i64(st, 6, kh__now())) == KH_OK &&
	    (r = kh__bind_i64(st, 7, p->price)) == KH_OK &&
	    (r = p->flag ? kh__bind_text(st, 8, p->flag) : kh__bind_null(st, 8)) == KH_OK)
		r = kh__exec(st);
	if (r == KH_OK)
		*invoiced = kh__changes(s) == 1;
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_purchase_record(struct kh_store *s, uint32_t ua, uint32_t event, uint32_t price, int64_t time,
				uint32_t block_ua, uint32_t block_seq, int64_t subscriber_id, int *invoiced)
{
	struct kh_store_purchase p = {ua, event, price, time, block_ua, block_seq, subscriber_id, price, NULL};

	return kh_store_purchase_invoice(s, &p, invoiced);
}
