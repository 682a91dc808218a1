/*
 * Idempotency keys: a request that moves money or credit carries a key chosen by
 * the client; the first answer is stored with the hash of the request in the transaction that
 * made the change, and a repeat of the same request gets that answer again. The same key with
 * another request is refused, so a client bug cannot make one request pass for another.
 * Answers are kept for a horizon the service chooses and then purged, a few per answer written
 * (kh_store_idem_expire), so the table holds what the horizon holds and no more.
 */
#include <stdlib.h>
#include <string.h>

#include "keyhole/crypto.h"
#include "store_int.h"

int kh__idem_key_ok(const char *key)
{
	size_t n;

	if (key == NULL)
		return 0;
	n = strnlen(key, KH_STORE_IDEM_KEY_MAX + 1);
	return n >= 1 && n <= KH_STORE_IDEM_KEY_MAX;
}

kh_err kh__keyed_row(struct kh_store *s, const char *sql, const char *key,
		     const uint8_t hash[static KH_STORE_IDEM_HASH_LEN], struct kh__stmt **out)
{
	struct kh__stmt *st = NULL;
	const uint8_t *h;
	size_t hn;
	int row = 0;
	kh_err r;

	if ((r = kh__stmt(s, sql, &st)) != KH_OK || (r = kh__bind_text(st, 1, key)) != KH_OK ||
	    (r = kh__step(st, &row)) != KH_OK)
		goto fail;
	if (!row) {
		r = KH_ERR_NOTFOUND;
		goto fail;
	}
	h = kh__col_blob(st, 0, &hn);
	if (hn != KH_STORE_IDEM_HASH_LEN || !kh_ct_eq(h, hash, KH_STORE_IDEM_HASH_LEN)) {
		r = KH_ERR_IDEM_MISMATCH;
		goto fail;
	}
	*out = st;
	return KH_OK;
fail:
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_idem_get(struct kh_store *s, const char *key, const uint8_t hash[static KH_STORE_IDEM_HASH_LEN],
			 uint8_t **resp, size_t *len)
{
	static const char sql[] = "SELECT request_hash, response FROM idempotency WHERE key = ?1";
	struct kh__stmt *st = NULL;
	const uint8_t *p;
	uint8_t *copy = NULL;
	size_t n;
	kh_err r;

	if (s == NULL || !kh__idem_key_ok(key) || hash == NULL || resp == NULL || len == NULL)
		return KH_ERR_INVAL;
	if ((r = kh__keyed_row(s, sql, key, hash, &st)) != KH_OK)
		return r;
	p = kh__col_blob(st, 1, &n);
	if ((copy = malloc(n ? n : 1)) == NULL) {
		r = KH_ERR_NOMEM;
		goto out;
	}
	if (n)
		memcpy(copy, p, n);
	*resp = copy;
	*len = n;
	copy = NULL;
	r = KH_OK;
out:
	kh__stmt_done(st);
	free(copy);
	return r;
}

struct put_args {
	const char *key;
	const uint8_t *hash, *resp;
	size_t len;
};

static kh_err put_tx(struct kh_store *s, void *arg)
{
	/* DO NOTHING rather than a failing INSERT: a failed statement would abort a PostgreSQL
	 * transaction, and the caller's transaction must survive a repeat. */
	static const char sql[] =
		"INSERT INTO idempotency (key, request_hash, response, created_at) VALUES (?1, ?2, ?3, ?4)\n"
		"ON CONFLICT (key) DO NOTHING RETURNING 1";
	struct put_args *a = arg;
	struct kh__stmt *st = NULL;
	int row = 0;
	kh_err r;

	if ((r = kh__stmt(s, sql, &st)) != KH_OK || (r = kh__bind_text(st, 1, a->key)) != KH_OK ||
	    (r = kh__bind_blob(st, 2, a->hash, KH_STORE_IDEM_HASH_LEN)) != KH_OK ||
	    (r = kh__bind_blob(st, 3, a->resp, a->len)) != KH_OK || (r = kh__bind_i64(st, 4, kh__now())) != KH_OK ||
	    (r = kh__step(st, &row)) != KH_OK)
		goto out;
	r = row ? kh__exec(st) : KH_ERR_EXISTS;
out:
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_idem_put(struct kh_store *s, const char *key, const uint8_t hash[static KH_STORE_IDEM_HASH_LEN],
			 const uint8_t *resp, size_t len)
{
	struct put_args a = {key, hash, resp, len};

	if (s == NULL || !kh__idem_key_ok(key) || hash == NULL || (resp == NULL && len != 0))
		return KH_ERR_INVAL;
	return kh_store_run_tx(s, put_tx, &a);
}

/* A DELETE with (before, max) parameters; *n the rows it removed. */
static kh_err delete_before(struct kh_store *s, const char *sql, int64_t before, unsigned max, unsigned *n)
{
	struct kh__stmt *st = NULL;
	kh_err r;

	if ((r = kh__stmt(s, sql, &st)) != KH_OK)
		return r;
	if ((r = kh__bind_i64(st, 1, before)) == KH_OK && (r = kh__bind_i64(st, 2, max)) == KH_OK)
		r = kh__exec(st);
	if (r == KH_OK && n)
		*n = (unsigned)kh__changes(s);
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_idem_expire(struct kh_store *s, int64_t before, unsigned max, unsigned *purged)
{
	/* The oldest first, through the index on created_at: max rows read, max deleted. */
	static const char idem[] = "DELETE FROM idempotency WHERE key IN "
				   "(SELECT key FROM idempotency WHERE created_at < ?1 ORDER BY created_at LIMIT ?2)";
	/* A finished job's answer is in idempotency; its row only resumes an unfinished one. */
	static const char jobs[] = "DELETE FROM bulk_jobs WHERE key IN "
				   "(SELECT key FROM bulk_jobs WHERE done = 1 AND updated_at < ?1 LIMIT ?2)";
	unsigned n = 0;
	kh_err r;

	if (s == NULL)
		return KH_ERR_INVAL;
	if (purged)
		*purged = 0;
	if (max == 0)
		return KH_OK;
	if ((r = delete_before(s, idem, before, max, &n)) != KH_OK ||
	    (r = delete_before(s, jobs, before, max, NULL)) != KH_OK)
		return r;
	if (purged)
		*purged = n;
	return KH_OK;
}
