/*
 * Usage blocks received from decoders (seed 001, the protocol design): which (UA, block_seq) the center
 * has seen, the block's hash and what it reported, and what the center made of it; with them
 * the card-side facts the upload's credit rule reads (the reloads recorded per card, a clone
 * alarm) and the catalogue price it invoices at. The key is what makes ingestion idempotent: a block seen
 * twice changes nothing the second time. Only a verified block may take the key for good; a
 * refused copy (forged, truncated, foreign) is recorded but gives way to the genuine block, or
 * anyone able to send bytes could make the center ignore a real card's purchases.
 */
#include <string.h>

#include "store_int.h"

static const char *const verdict_name[] = {"ok", "tampered", "foreign", "truncated"};

static kh_err verdict_from(const uint8_t *p, size_t n, enum kh_store_verdict *v)
{
	for (int i = 0; i < 4; i++) {
		if (strlen(verdict_name[i]) == n && memcmp(p, verdict_name[i], n) == 0) {
			*v = (enum kh_store_verdict)i;
			return KH_OK;
		}
	}
	return KH_ERR_DB;
}

struct block_args {
	const struct kh_store_block *b;
	enum kh_store_verdict prev;
	int same;
};

static kh_err block_tx(struct kh_store *s, void *arg)
{
	/* An OK block replaces a refusal recorded under its key; nothing else replaces anything. */
	static const char ins_ok[] =
		"INSERT INTO usage_blocks (ua, block_seq, received_at, verdict, session_id, hash, credit, last_reload)\n"
		"VALUES (?1, ?2, ?3, 'ok', ?4, ?6, ?7, ?8)\n"
		"ON CONFLICT (ua, block_seq) DO UPDATE SET received_at = excluded.received_at,\n"
		"  verdict = 'ok', session_id = excluded.session_id, hash = excluded.hash,\n"
		"  credit = excluded.credit, last_reload = excluded.last_reload WHERE usage_blocks.verdict <> 'ok'\n"
		"RETURNING 1";
	static const char ins_refused[] =
		"INSERT INTO usage_blocks (ua, block_seq, received_at, verdict, session_id, hash)\n"
		"VALUES (?1, ?2, ?3, ?5, ?4, ?6)\n"
		"ON CONFLICT (ua, block_seq) DO NOTHING RETURNING 1";
	static const char get[] = "SELECT verdict, hash FROM usage_blocks WHERE ua = ?1 AND block_seq = ?2";
	struct block_args *a = arg;
	const struct kh_store_block *b = a->b;
	struct kh__stmt *st = NULL;
	int ok = b->verdict == KH_STORE_BLOCK_OK, row = 0;
	kh_err r;

	if ((r = kh__stmt(s, ok ? ins_ok : ins_refused, &st)) != KH_OK || (r = kh__bind_i64(st, 1, b->ua)) != KH_OK ||
	    (r = kh__bind_i64(st, 2, b->block_seq)) != KH_OK || (r = kh__bind_i64(st, 3, kh__now())) != KH_OK ||
	    (r = b->session_id ? kh__bind_i64(st, 4, b->session_id) : kh__bind_null(st, 4)) != KH_OK ||
	    (!ok && (r = kh__bind_text(st, 5, verdict_name[b->verdict])) != KH_OK) ||
	    (r = b->hash ? kh__bind_blob(st, 6, b->hash, 32) : kh__bind_null(st, 6)) != KH_OK ||
	    (ok && (r = b->reported ? kh__bind_i64(st, 7, b->credit) : kh__bind_null(st, 7)) != KH_OK) ||
	    (ok && (r = b->reported ? kh__bind_i64(st, 8, b->last_reload) : kh__bind_null(st, 8)) != KH_OK) ||
	    (r = kh__step(st, &row)) != KH_OK)
		goto out;
	if (row) {
		r = kh__exec(st);
		goto out;
	}
	kh__stmt_done(st);
	st = NULL;
	/* Nothing written: the block was seen before. Say how it was judged then, and whether it is
	 * the same block (hashes are public: no constant-time compare needed). */
	if ((r = kh__stmt(s, get, &st)) != KH_OK || (r = kh__bind_i64(st, 1, b->ua)) != KH_OK ||
	    (r = kh__bind_i64(st, 2, b->block_seq)) != KH_OK || (r = kh__step(st, &row)) != KH_OK)
		goto out;
	if (!row) {
		r = KH_ERR_DB;
		goto out;
	}
	{
		size_t n;
		const uint8_t *p = kh__col_blob(st, 0, &n);
		if ((r = verdict_from(p, n, &a->prev)) != KH_OK)
			goto out;
		p = kh__col_blob(st, 1, &n);
		a->same = !b->hash || kh__col_null(st, 1) || (n == 32 && memcmp(p, b->hash, 32) == 0);
	}
	r = KH_ERR_EXISTS;
out:
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_block_record(struct kh_store *s, const struct kh_store_block *b, enum kh_store_verdict *prev,
			     int *same)
{
	struct block_args a = {b, KH_STORE_BLOCK_OK, 1};
	kh_err r;

	if (s == NULL || b == NULL || (unsigned)b->verdict > KH_STORE_BLOCK_TRUNCATED || b->session_id < 0)
		return KH_ERR_INVAL;
	r = kh_store_run_tx(s, block_tx, &a);
	if (r == KH_ERR_EXISTS) {
		if (prev)
			*prev = a.prev;
		if (same)
			*same = a.same;
	}
	return r;
}

kh_err kh_store_block_seen(struct kh_store *s, uint32_t ua, uint32_t block_seq, enum kh_store_verdict verdict,
			   int64_t session_id, enum kh_store_verdict *prev)
{
	struct kh_store_block b = {.ua = ua, .block_seq = block_seq, .verdict = verdict, .session_id = session_id};

	return kh_store_block_record(s, &b, prev, NULL);
}

kh_err kh_store_block_reported(struct kh_store *s, uint32_t ua, int *found, uint32_t *block_seq, uint32_t *credit,
			       uint32_t *last_reload)
{
	/* The newest accepted block; what it said, when it was recorded since migration 5. */
	static const char sql[] = "SELECT block_seq, credit, last_reload FROM usage_blocks\n"
				  "WHERE ua = ?1 AND verdict = 'ok' ORDER BY block_seq DESC LIMIT 1";
	struct kh__stmt *st = NULL;
	int row = 0;
	kh_err r;

	if (s == NULL || found == NULL || block_seq == NULL || credit == NULL || last_reload == NULL)
		return KH_ERR_INVAL;
	if ((r = kh__stmt(s, sql, &st)) != KH_OK)
		return r;
	if ((r = kh__bind_i64(st, 1, ua)) == KH_OK && (r = kh__step(st, &row)) == KH_OK) {
		*found = row && !kh__col_null(st, 1) && !kh__col_null(st, 2);
		*block_seq = row ? (uint32_t)kh__col_i64(st, 0) : 0;
		*credit = *found ? (uint32_t)kh__col_i64(st, 1) : 0;
		*last_reload = *found ? (uint32_t)kh__col_i64(st, 2) : 0;
	}
	kh__stmt_done(st);
	return r;
}

/* One statement with n integer parameters, RETURNING a row exactly when it touched one. */
static kh_err one_row(struct kh_store *s, const char *sql, const int64_t *v, int n)
{
	struct kh__stmt *st = NULL;
	int row = 0;
	kh_err r = KH_OK;

	if ((r = kh__stmt(s, sql, &st)) != KH_OK)
		return r;
	for (int i = 0; i < n && r == KH_OK; i++)
		r = kh__bind_i64(st, i + 1, v[i]);
	if (r == KH_OK && (r = kh__step(st, &row)) == KH_OK)
		r = row ? kh__exec(st) : KH_ERR_NOTFOUND;
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_block_clone(struct kh_store *s, uint32_t ua, uint32_t block_seq, const uint8_t hash[static 32],
			    int64_t session_id)
{
	static const char sql[] = "INSERT INTO usage_clones (ua, block_seq, hash, session_id, received_at)\n"
				  "VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING RETURNING 1";
	struct kh__stmt *st = NULL;
	int row = 0;
	kh_err r;

	if (s == NULL || session_id < 0)
		return KH_ERR_INVAL;
	if ((r = kh__stmt(s, sql, &st)) != KH_OK)
		return r;
	if ((r = kh__bind_i64(st, 1, ua)) == KH_OK && (r = kh__bind_i64(st, 2, block_seq)) == KH_OK &&
	    (r = kh__bind_blob(st, 3, hash, 32)) == KH_OK &&
	    (r = session_id ? kh__bind_i64(st, 4, session_id) : kh__bind_null(st, 4)) == KH_OK &&
	    (r = kh__bind_i64(st, 5, kh__now())) == KH_OK && (r = kh__step(st, &row)) == KH_OK)
		r = row ? kh__exec(st) : KH_ERR_EXISTS;
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_card_clone_alarm(struct kh_store *s, uint32_t ua, uint32_t block_seq)
{
	static const char sql[] = "UPDATE cards SET clone_alarm_at = coalesce(clone_alarm_at, ?3),\n"
				  "  clone_block_seq = ?2 WHERE ua = ?1 RETURNING 1";

	int64_t v[3] = {ua, block_seq, kh__now()};

	if (s == NULL)
		return KH_ERR_INVAL;
	return one_row(s, sql, v, 3);
}

struct reload_add_args {
	uint32_t ua, amount, id;
};

static kh_err reload_add_tx(struct kh_store *s, void *arg)
{
	static const char sql[] = "INSERT INTO credit_reloads (ua, reload_id, amount, created_at)\n"
				  "VALUES (?1, ?2, ?3, ?4) RETURNING 1";
	struct reload_add_args *a = arg;
	int64_t v[4];
	kh_err r;

	if ((r = kh_store_card_next_reload(s, a->ua, &a->id)) != KH_OK)
		return r;
	v[0] = a->ua;
	v[1] = a->id;
	v[2] = a->amount;
	v[3] = kh__now();
	return one_row(s, sql, v, 4);
}

kh_err kh_store_card_reload_add(struct kh_store *s, uint32_t ua, uint32_t amount, uint32_t *reload_id)
{
	struct reload_add_args a = {ua, amount, 0};
	kh_err r;

	if (s == NULL || reload_id == NULL)
		return KH_ERR_INVAL;
	if ((r = kh_store_run_tx(s, reload_add_tx, &a)) != KH_OK)
		return r;
	*reload_id = a.id;
	return KH_OK;
}

/* The first column of the first row of sql with n integer parameters: *v (0 when NULL), *found 0
 * when there is no row. */
static kh_err one_int(struct kh_store *s, const char *sql, const int64_t *p, int n, int *found, int64_t *v)
{
	struct kh__stmt *st = NULL;
	int row = 0;
	kh_err r;

	if ((r = kh__stmt(s, sql, &st)) != KH_OK)
		return r;
	for (int i = 0; i < n && r == KH_OK; i++)
		r = kh__bind_i64(st, i + 1, p[i]);
	if (r == KH_OK && (r = kh__step(st, &row)) == KH_OK) {
		*found = row;
		*v = row && !kh__col_null(st, 0) ? kh__col_i64(st, 0) : 0;
	}
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_card_reloads_above(struct kh_store *s, uint32_t ua, uint32_t above_id, uint64_t *sum)
{
	/* The primary key (ua, reload_id) serves it. */
	static const char sql[] = "SELECT coalesce(sum(amount), 0) FROM credit_reloads WHERE ua = ?1 AND reload_id > ?2";
	int64_t p[2] = {ua, above_id}, v = 0;
	int found = 0;
	kh_err r;

	if (s == NULL || sum == NULL)
		return KH_ERR_INVAL;
	if ((r = one_int(s, sql, p, 2, &found, &v)) == KH_OK)
		*sum = (uint64_t)v;
	return r;
}

kh_err kh_store_event_price(struct kh_store *s, uint32_t id, uint32_t *price)
{
	static const char sql[] = "SELECT price FROM events WHERE id = ?1";
	int64_t p[1] = {id}, v = 0;
	int found = 0;
	kh_err r;

	if (s == NULL || price == NULL)
		return KH_ERR_INVAL;
	if ((r = one_int(s, sql, p, 1, &found, &v)) != KH_OK)
		return r;
	if (!found)
		return KH_ERR_NOTFOUND;
	*price = (uint32_t)v;
	return KH_OK;
}
