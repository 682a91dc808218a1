/*
 * Service key rotation in chunks (docs/internals/sms.md, "What each action queues"): the job row
 * of migration 4, a service key's bytes by version, and the active cards after a UA, in UA order,
 * a chunk at a time. The center's rotate handler (src/center/sms/sms_keys.c) moves the job in the
 * same transaction as the SET KEY EMMs of each chunk.
 */
#include <string.h>

#include "store_int.h"

/* Step sql (?1 key_id, ?2 version) to its row: KH_OK with *out on it, KH_ERR_NOTFOUND. */
static kh_err version_row(struct kh_store *s, const char *sql, uint8_t key_id, uint32_t version, struct kh__stmt **out)
{
	struct kh__stmt *st = NULL;
	int row = 0;
	kh_err r;

	if ((r = kh__stmt(s, sql, &st)) != KH_OK || (r = kh__bind_i64(st, 1, key_id)) != KH_OK ||
	    (r = kh__bind_i64(st, 2, version)) != KH_OK || (r = kh__step(st, &row)) != KH_OK)
		goto fail;
	if (!row) {
		r = KH_ERR_NOTFOUND;
		goto fail;
	}
	*out = st;
	return KH_OK;
fail:
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_rotation_get(struct kh_store *s, uint8_t key_id, uint32_t version, struct kh_store_rotation *out)
{
	static const char sql[] =
		"SELECT last_ua, emms, done FROM rotation_jobs WHERE key_id = ?1 AND version = ?2";
	struct kh__stmt *st = NULL;
	kh_err r;

	if (s == NULL || out == NULL)
		return KH_ERR_INVAL;
	if ((r = version_row(s, sql, key_id, version, &st)) != KH_OK)
		return r;
	out->key_id = key_id;
	out->version = version;
	out->last_ua = (uint32_t)kh__col_i64(st, 0);
	out->emms = (uint32_t)kh__col_i64(st, 1);
	out->done = kh__col_i64(st, 2) != 0;
	kh__stmt_done(st);
	return KH_OK;
}

kh_err kh_store_rotation_put(struct kh_store *s, const struct kh_store_rotation *j)
{
	static const char sql[] =
		"INSERT INTO rotation_jobs (key_id, version, last_ua, emms, done, created_at)\n"
		"VALUES (?1, ?2, ?3, ?4, ?5, ?6)\n"
		"ON CONFLICT (key_id, version) DO UPDATE SET last_ua = excluded.last_ua, emms = excluded.emms,\n"
		"  done = excluded.done";
	struct kh__stmt *st = NULL;
	kh_err r;

	if (s == NULL || j == NULL)
		return KH_ERR_INVAL;
	if ((r = kh__stmt(s, sql, &st)) == KH_OK && (r = kh__bind_i64(st, 1, j->key_id)) == KH_OK &&
	    (r = kh__bind_i64(st, 2, j->version)) == KH_OK && (r = kh__bind_i64(st, 3, j->last_ua)) == KH_OK &&
	    (r = kh__bind_i64(st, 4, j->emms)) == KH_OK && (r = kh__bind_i64(st, 5, j->done ? 1 : 0)) == KH_OK &&
	    (r = kh__bind_i64(st, 6, kh__now())) == KH_OK)
		r = kh__exec(st);
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_service_key_get(struct kh_store *s, uint8_t key_id, uint32_t version, uint8_t key[static 32])
{
	static const char sql[] = "SELECT key FROM service_keys WHERE key_id = ?1 AND version = ?2";
	struct kh__stmt *st = NULL;
	const uint8_t *p;
	size_t n;
	kh_err r;

	if (s == NULL)
		return KH_ERR_INVAL;
	if ((r = version_row(s, sql, key_id, version, &st)) != KH_OK)
		return r;
	p = kh__col_blob(st, 0, &n);
	r = n == 32 ? KH_OK : KH_ERR_DB;
	if (r == KH_OK)
		memcpy(key, p, 32);
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_active_cards_after(struct kh_store *s, uint32_t after, size_t max, uint32_t *ua, size_t *n)
{
	/* The primary key is the UA: an index walk from after, max rows. */
	static const char sql[] =
		"SELECT ua FROM cards WHERE state = 'active' AND ua > ?1 ORDER BY ua LIMIT ?2";
	struct kh__stmt *st = NULL;
	int row = 0;
	kh_err r;

	if (s == NULL || ua == NULL || n == NULL || max == 0)
		return KH_ERR_INVAL;
	*n = 0;
	if ((r = kh__stmt(s, sql, &st)) != KH_OK || (r = kh__bind_i64(st, 1, after)) != KH_OK ||
	    (r = kh__bind_i64(st, 2, (int64_t)max)) != KH_OK)
		goto out;
	while ((r = kh__step(st, &row)) == KH_OK && row)
		ua[(*n)++] = (uint32_t)kh__col_i64(st, 0);
out:
	kh__stmt_done(st);
	return r;
}
