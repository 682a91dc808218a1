/*
 * The escrow accounts' API tokens (include/keyhole/store_escrow.h, migration 9's escrow_tokens):
 * one per user account, kept as its SHA-256 only, so a copy of the database logs nobody in; and
 * the count of a seller's listings, which the service bounds.
 */
#include "keyhole/store_escrow.h"
#include "store_int.h"

kh_err kh_store_escrow_token_set(struct kh_store *s, int64_t account, const uint8_t hash[static 32], int64_t now)
{
	/* a user account's, replacing its old one: the old token stops working with this statement */
	static const char sql[] = "INSERT INTO escrow_tokens (account_id, token_hash, created_at)\n"
				  "SELECT id, ?2, ?3 FROM escrow_accounts WHERE id = ?1 AND kind = 'user'\n"
				  "ON CONFLICT (account_id) DO UPDATE SET token_hash = excluded.token_hash,\n"
				  "  created_at = excluded.created_at";
	struct kh__stmt *st = NULL;
	kh_err r;

	if (s == NULL || account < 1)
		return KH_ERR_INVAL;
	if ((r = kh__stmt(s, sql, &st)) == KH_OK && (r = kh__bind_i64(st, 1, account)) == KH_OK &&
	    (r = kh__bind_blob(st, 2, hash, 32)) == KH_OK && (r = kh__bind_i64(st, 3, now)) == KH_OK)
		r = kh__exec(st);
	kh__stmt_done(st);
	if (r == KH_OK && kh__changes(s) != 1)
		r = KH_ERR_NOTFOUND;
	return r;
}

kh_err kh_store_escrow_token_find(struct kh_store *s, const uint8_t hash[static 32], int64_t *account)
{
	static const char sql[] = "SELECT account_id FROM escrow_tokens WHERE token_hash = ?1";
	struct kh__stmt *st = NULL;
	int row = 0;
	kh_err r;

	if (s == NULL || account == NULL)
		return KH_ERR_INVAL;
	if ((r = kh__stmt(s, sql, &st)) == KH_OK && (r = kh__bind_blob(st, 1, hash, 32)) == KH_OK &&
	    (r = kh__step(st, &row)) == KH_OK) {
		if (row)
			*account = kh__col_i64(st, 0);
		else
			r = KH_ERR_NOTFOUND;
	}
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_escrow_listing_count(struct kh_store *s, int64_t seller, int64_t *n)
{
	static const char sql[] = "SELECT count(*) FROM escrow_listings WHERE seller_id = ?1";
	struct kh__stmt *st = NULL;
	int row = 0;
	kh_err r;

	if (s == NULL || n == NULL)
		return KH_ERR_INVAL;
	if ((r = kh__stmt(s, sql, &st)) == KH_OK && (r = kh__bind_i64(st, 1, seller)) == KH_OK &&
	    (r = kh__step(st, &row)) == KH_OK)
		*n = row ? kh__col_i64(st, 0) : 0;
	kh__stmt_done(st);
	return r;
}
