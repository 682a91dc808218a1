/*
 * Usage blocks received from decoders (seed 001, PROTOCOLS.md): which (UA, block_seq) the center
 * has seen and what it made of it. The key is what makes ingestion idempotent: a block seen
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
	uint32_t ua, seq;
	enum kh_store_verdict verdict;
	int64_t session;
	enum kh_store_verdict prev;
};

static kh_err block_tx(struct kh_store *s, void *arg)
{
	/* An OK block replaces a refusal recorded under its key; nothing else replaces anything. */
	static const char ins_ok[] =
		"INSERT INTO usage_blocks (ua, block_seq, received_at, verdict, session_id)\n"
		"VALUES (?1, ?2, ?3, 'ok', ?4)\n"
		"ON CONFLICT (ua, block_seq) DO UPDATE SET received_at = excluded.received_at,\n"
		"  verdict = 'ok', session_id = excluded.session_id WHERE usage_blocks.verdict <> 'ok'\n"
		"RETURNING 1";
	static const char ins_refused[] =
		"INSERT INTO usage_blocks (ua, block_seq, received_at, verdict, session_id)\n"
		"VALUES (?1, ?2, ?3, ?5, ?4)\n"
		"ON CONFLICT (ua, block_seq) DO NOTHING RETURNING 1";
	static const char get[] = "SELECT verdict FROM usage_blocks WHERE ua = ?1 AND block_seq = ?2";
	struct block_args *a = arg;
	struct kh__stmt *st = NULL;
	int row = 0;
	kh_err r;

	if ((r = kh__stmt(s, a->verdict == KH_STORE_BLOCK_OK ? ins_ok : ins_refused, &st)) != KH_OK ||
	    (r = kh__bind_i64(st, 1, a->ua)) != KH_OK || (r = kh__bind_i64(st, 2, a->seq)) != KH_OK ||
	    (r = kh__bind_i64(st, 3, kh__now())) != KH_OK ||
	    (r = a->session ? kh__bind_i64(st, 4, a->session) : kh__bind_null(st, 4)) != KH_OK ||
	    (a->verdict != KH_STORE_BLOCK_OK &&
	     (r = kh__bind_text(st, 5, verdict_name[a->verdict])) != KH_OK) ||
	    (r = kh__step(st, &row)) != KH_OK)
		goto out;
	if (row) {
		r = kh__exec(st);
		goto out;
	}
	kh__stmt_done(st);
	st = NULL;
	/* Nothing written: the block was seen before. Say how it was judged then. */
	if ((r = kh__stmt(s, get, &st)) != KH_OK || (r = kh__bind_i64(st, 1, a->ua)) != KH_OK ||
	    (r = kh__bind_i64(st, 2, a->seq)) != KH_OK || (r = kh__step(st, &row)) != KH_OK)
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
	}
	r = KH_ERR_EXISTS;
out:
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_block_seen(struct kh_store *s, uint32_t ua, uint32_t block_seq, enum kh_store_verdict verdict,
			   int64_t session_id, enum kh_store_verdict *prev)
{
	struct block_args a = {ua, block_seq, verdict, session_id, KH_STORE_BLOCK_OK};
	kh_err r;

	if (s == NULL || (unsigned)verdict > KH_STORE_BLOCK_TRUNCATED || session_id < 0)
		return KH_ERR_INVAL;
	r = kh_store_run_tx(s, block_tx, &a);
	if (r == KH_ERR_EXISTS && prev)
		*prev = a.prev;
	return r;
}

kh_err kh_store_block_max_ok(struct kh_store *s, uint32_t ua, uint32_t *block_seq)
{
	/* The primary key (ua, block_seq) serves it: the card's rows only, newest first. */
	static const char sql[] = "SELECT max(block_seq) FROM usage_blocks WHERE ua = ?1 AND verdict = 'ok'";
	struct kh__stmt *st = NULL;
	int row = 0;
	kh_err r;

	if (s == NULL || block_seq == NULL)
		return KH_ERR_INVAL;
	if ((r = kh__stmt(s, sql, &st)) != KH_OK)
		return r;
	if ((r = kh__bind_i64(st, 1, ua)) == KH_OK && (r = kh__step(st, &row)) == KH_OK)
		*block_seq = row && !kh__col_null(st, 0) ? (uint32_t)kh__col_i64(st, 0) : 0;
	kh__stmt_done(st);
	return r;
}
