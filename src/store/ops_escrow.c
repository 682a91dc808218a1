/*
 * The escrow's accounts, the movements of money, deposits and withdrawals, and listings
 * (include/keyhole/store_escrow.h, migration 9; the rules: docs/internals/ledger.md). Money moves
 * in one place, kh__escrow_move_balances and kh__escrow_record: the debit, an UPDATE whose own
 * WHERE refuses to take a bucket out of its range (so two connections spending the same money at
 * once cannot both succeed), the credit, then the movement and its two entries, all in the
 * caller's one transaction. The debit comes first, so a refusal (KH_ERR_FUNDS) has written
 * nothing, even inside a caller's larger transaction. Purchases (their holds and settlement) are
 * ops_escrow_purchase.c, the audit ops_escrow_audit.c; what they share is escrow_int.h.
 */
#include <stdlib.h>
#include <string.h>

#include "escrow_int.h"

static int text_ok(const char *t, size_t max)
{
	size_t n = t ? strnlen(t, max + 1) : 0;
	return n >= 1 && n <= max;
}

static int currency_ok(const char *c)
{
	return c != NULL && c[0] >= 'A' && c[0] <= 'Z' && c[1] >= 'A' && c[1] <= 'Z' && c[2] >= 'A' && c[2] <= 'Z' &&
	       c[3] == '\0';
}

static int amount_ok(int64_t v)
{
	return v >= 1 && v <= KH_STORE_ESCROW_AMOUNT_MAX;
}

/* ---------------------------------------------------------------- rows (escrow_int.h) */

kh_err kh__escrow_col_bytes(struct kh__stmt *st, int col, uint8_t *out, size_t cap, size_t *n, int empty_ok)
{
	size_t len;
	const uint8_t *p = kh__col_blob(st, col, &len);

	if (len > cap || (len == 0 && !empty_ok) || (n == NULL && len != cap))
		return KH_ERR_DB;
	memcpy(out, p, len);
	if (n)
		*n = len;
	return KH_OK;
}

kh_err kh__escrow_step_one(struct kh__stmt *st, kh_err none)
{
	int row = 0;
	kh_err r = kh__step(st, &row);

	return r != KH_OK ? r : row ? KH_OK : none;
}

/* ---------------------------------------------------------------- accounts */

/* A user account's currency and its outside account (escrow_int.h). */
kh_err kh__escrow_account_of(struct kh_store *s, int64_t id, char currency[4], int64_t *outside)
{
	static const char sql[] = "SELECT a.currency, o.id FROM escrow_accounts a\n"
				  "JOIN escrow_accounts o ON o.kind = 'outside' AND o.currency = a.currency\n"
				  "WHERE a.id = ?1 AND a.kind = 'user'";
	struct kh__stmt *st = NULL;
	kh_err r;

	if ((r = kh__stmt(s, sql, &st)) == KH_OK && (r = kh__bind_i64(st, 1, id)) == KH_OK &&
	    (r = kh__escrow_step_one(st, KH_ERR_NOTFOUND)) == KH_OK) {
		kh__col_text(st, 0, currency, 4);
		*outside = kh__col_i64(st, 1);
	}
	kh__stmt_done(st);
	return r;
}

/* The empty bucket of an account (ON CONFLICT: the outside bucket made once per currency). */
static kh_err bucket_new(struct kh_store *s, int64_t account, const char *bucket)
{
	static const char sql[] = "INSERT INTO escrow_balances (account_id, bucket, balance) VALUES (?1, ?2, 0)\n"
				  "ON CONFLICT (account_id, bucket) DO NOTHING";
	struct kh__stmt *st = NULL;
	kh_err r;

	if ((r = kh__stmt(s, sql, &st)) == KH_OK && (r = kh__bind_i64(st, 1, account)) == KH_OK &&
	    (r = kh__bind_text(st, 2, bucket)) == KH_OK)
		r = kh__exec(st);
	kh__stmt_done(st);
	return r;
}

struct account_add {
	const char *name, *currency;
	int64_t now, id;
};

static kh_err account_add_tx(struct kh_store *s, void *arg)
{
	static const char q_user[] = "INSERT INTO escrow_accounts (name, kind, currency, created_at)\n"
				     "VALUES (?1, 'user', ?2, ?3) ON CONFLICT (name) DO NOTHING RETURNING id";
	static const char q_outside[] = "INSERT INTO escrow_accounts (name, kind, currency, created_at)\n"
					"VALUES (NULL, 'outside', ?1, ?2) ON CONFLICT DO NOTHING";
	static const char q_outside_id[] = "SELECT id FROM escrow_accounts WHERE kind = 'outside' AND currency = ?1";
	struct account_add *a = arg;
	struct kh__stmt *st = NULL;
	int64_t outside = 0;
	kh_err r;

	/* The name first: a name taken has written nothing. */
	if ((r = kh__stmt(s, q_user, &st)) == KH_OK && (r = kh__bind_text(st, 1, a->name)) == KH_OK &&
	    (r = kh__bind_text(st, 2, a->currency)) == KH_OK && (r = kh__bind_i64(st, 3, a->now)) == KH_OK &&
	    (r = kh__escrow_step_one(st, KH_ERR_EXISTS)) == KH_OK) {
		a->id = kh__col_i64(st, 0);
		r = kh__exec(st);
	}
	kh__stmt_done(st);
	st = NULL;
	if (r == KH_OK && (r = kh__stmt(s, q_outside, &st)) == KH_OK && (r = kh__bind_text(st, 1, a->currency)) == KH_OK &&
	    (r = kh__bind_i64(st, 2, a->now)) == KH_OK)
		r = kh__exec(st);
	kh__stmt_done(st);
	st = NULL;
	if (r == KH_OK && (r = kh__stmt(s, q_outside_id, &st)) == KH_OK &&
	    (r = kh__bind_text(st, 1, a->currency)) == KH_OK && (r = kh__escrow_step_one(st, KH_ERR_DB)) == KH_OK)
		outside = kh__col_i64(st, 0);
	kh__stmt_done(st);
	if (r == KH_OK && (r = bucket_new(s, outside, "outside")) == KH_OK &&
	    (r = bucket_new(s, a->id, "available")) == KH_OK)
		r = bucket_new(s, a->id, "held");
	return r;
}

kh_err kh_store_escrow_account_add(struct kh_store *s, const char *name, const char *currency, int64_t now,
				   int64_t *id)
{
	struct account_add a = {name, currency, now, 0};
	kh_err r;

	if (s == NULL || !text_ok(name, KH_STORE_ESCROW_NAME_MAX) || !currency_ok(currency) || id == NULL)
		return KH_ERR_INVAL;
	if ((r = kh_store_run_tx(s, account_add_tx, &a)) == KH_OK)
		*id = a.id;
	return r;
}

#define ACCOUNT_SELECT                                                                                          \
	"SELECT a.id, a.name, a.currency, a.created_at, av.balance, h.balance,\n"                                \
	"  (SELECT coalesce(sum(m.amount), 0) FROM escrow_movements m WHERE m.account_id = a.id\n"              \
	"   AND m.kind = 'deposit'),\n"                                                                         \
	"  (SELECT coalesce(sum(m.amount), 0) FROM escrow_movements m WHERE m.account_id = a.id\n"              \
	"   AND m.kind = 'withdraw')\n"                                                                         \
	"FROM escrow_accounts a\n"                                                                             \
	"JOIN escrow_balances av ON av.account_id = a.id AND av.bucket = 'available'\n"                        \
	"JOIN escrow_balances h ON h.account_id = a.id AND h.bucket = 'held'\n"                                \
	"WHERE a.kind = 'user' AND "

static kh_err account_row(struct kh__stmt *st, struct kh_store_escrow_account *out)
{
	struct kh_store_escrow_account a = {0};
	kh_err r = kh__escrow_step_one(st, KH_ERR_NOTFOUND);

	if (r != KH_OK)
		return r;
	a.id = kh__col_i64(st, 0);
	kh__col_text(st, 1, a.name, sizeof a.name);
	kh__col_text(st, 2, a.currency, sizeof a.currency);
	a.created_at = kh__col_i64(st, 3);
	a.available = kh__col_i64(st, 4);
	a.held = kh__col_i64(st, 5);
	a.deposited = kh__col_i64(st, 6);
	a.withdrawn = kh__col_i64(st, 7);
	*out = a;
	return KH_OK;
}

kh_err kh_store_escrow_account_get(struct kh_store *s, int64_t id, struct kh_store_escrow_account *out)
{
	static const char sql[] = ACCOUNT_SELECT "a.id = ?1";
	struct kh__stmt *st = NULL;
	kh_err r;

	if (s == NULL || out == NULL)
		return KH_ERR_INVAL;
	if ((r = kh__stmt(s, sql, &st)) == KH_OK && (r = kh__bind_i64(st, 1, id)) == KH_OK)
		r = account_row(st, out);
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_escrow_account_find(struct kh_store *s, const char *name, struct kh_store_escrow_account *out)
{
	static const char sql[] = ACCOUNT_SELECT "a.name = ?1";
	struct kh__stmt *st = NULL;
	kh_err r;

	if (s == NULL || !text_ok(name, KH_STORE_ESCROW_NAME_MAX) || out == NULL)
		return KH_ERR_INVAL;
	if ((r = kh__stmt(s, sql, &st)) == KH_OK && (r = kh__bind_text(st, 1, name)) == KH_OK)
		r = account_row(st, out);
	kh__stmt_done(st);
	return r;
}

/* ---------------------------------------------------------------- moving money */

/* Add delta to a bucket, within its range (a user's 0..max, outside's -max..0): the condition in
 * the UPDATE itself. *after; `out_of_range` when it would leave it. */
static kh_err bucket_add(struct kh_store *s, int64_t account, const char *bucket, int64_t delta, kh_err out_of_range,
			 int64_t *after)
{
	static const char sql[] =
		"UPDATE escrow_balances SET balance = balance + ?3\n"
		"WHERE account_id = ?1 AND bucket = ?2 AND CASE WHEN bucket = 'outside'\n"
		"  THEN balance + ?3 BETWEEN -4611686018427387904 AND 0\n"
		"  ELSE balance + ?3 BETWEEN 0 AND 4611686018427387904 END\n"
		"RETURNING balance";
	struct kh__stmt *st = NULL;
	kh_err r;

	if ((r = kh__stmt(s, sql, &st)) == KH_OK && (r = kh__bind_i64(st, 1, account)) == KH_OK &&
	    (r = kh__bind_text(st, 2, bucket)) == KH_OK && (r = kh__bind_i64(st, 3, delta)) == KH_OK &&
	    (r = kh__escrow_step_one(st, out_of_range)) == KH_OK) {
		*after = kh__col_i64(st, 0);
		r = kh__exec(st);
	}
	kh__stmt_done(st);
	return r;
}

/* The balances of a movement (escrow_int.h): the debit first (refused: nothing written), then the
 * credit. */
kh_err kh__escrow_move_balances(struct kh_store *s, struct kh__escrow_move *m)
{
	kh_err r = bucket_add(s, m->from, m->from_bucket, -m->amount, m->short_err, &m->from_after);

	/* A credit cannot leave its range while the ledger holds (every bucket of a currency sums to
	 * zero, and outside stays within -max): if it does, the ledger is broken. */
	return r == KH_OK ? bucket_add(s, m->to, m->to_bucket, m->amount, KH_ERR_LEDGER, &m->to_after) : r;
}

static kh_err entry(struct kh_store *s, int64_t movement, int64_t account, const char *bucket, int64_t amount)
{
	static const char sql[] =
		"INSERT INTO escrow_entries (movement_id, account_id, bucket, amount) VALUES (?1, ?2, ?3, ?4)";
	struct kh__stmt *st = NULL;
	kh_err r;

	if ((r = kh__stmt(s, sql, &st)) == KH_OK && (r = kh__bind_i64(st, 1, movement)) == KH_OK &&
	    (r = kh__bind_i64(st, 2, account)) == KH_OK && (r = kh__bind_text(st, 3, bucket)) == KH_OK &&
	    (r = kh__bind_i64(st, 4, amount)) == KH_OK)
		r = kh__exec(st);
	kh__stmt_done(st);
	return r;
}

/* The movement's row and its two entries (summing to zero), after kh__escrow_move_balances. */
kh_err kh__escrow_record(struct kh_store *s, const struct kh__escrow_move *m)
{
	static const char sql[] =
		"INSERT INTO escrow_movements (kind, account_id, purchase_id, amount, idem_key, available_after,\n"
		"  created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING id";
	struct kh__stmt *st = NULL;
	int64_t id = 0;
	int user_move = m->purchase == NULL;
	kh_err r;

	if ((r = kh__stmt(s, sql, &st)) == KH_OK && (r = kh__bind_text(st, 1, m->kind)) == KH_OK &&
	    (r = kh__bind_i64(st, 2, m->account)) == KH_OK &&
	    (r = user_move ? kh__bind_null(st, 3) : kh__bind_blob(st, 3, m->purchase, KH_STORE_ESCROW_ID_LEN)) == KH_OK &&
	    (r = kh__bind_i64(st, 4, m->amount)) == KH_OK &&
	    (r = m->idem ? kh__bind_blob(st, 5, m->idem, KH_STORE_ESCROW_ID_LEN) : kh__bind_null(st, 5)) == KH_OK &&
	    /* a deposit's or withdrawal's answer, kept for its repeat: the user's available after it */
	    (r = user_move ? kh__bind_i64(st, 6, m->from_bucket[0] == 'o' ? m->to_after : m->from_after)
			   : kh__bind_null(st, 6)) == KH_OK &&
	    (r = kh__bind_i64(st, 7, m->now)) == KH_OK && (r = kh__escrow_step_one(st, KH_ERR_DB)) == KH_OK) {
		id = kh__col_i64(st, 0);
		r = kh__exec(st);
	}
	kh__stmt_done(st);
	if (r == KH_OK && (r = entry(s, id, m->from, m->from_bucket, -m->amount)) == KH_OK)
		r = entry(s, id, m->to, m->to_bucket, m->amount);
	return r;
}

/* ---------------------------------------------------------------- deposits and withdrawals */

struct cash {
	int withdraw;
	int64_t account, amount, now;
	const uint8_t *idem;
	int64_t available;
};

/* A movement already made under this idempotency key: its answer if it is the same request. */
static kh_err cash_repeat(struct kh_store *s, struct cash *c)
{
	static const char sql[] =
		"SELECT kind, account_id, amount, available_after FROM escrow_movements WHERE idem_key = ?1";
	const char *kind = c->withdraw ? "withdraw" : "deposit";
	struct kh__stmt *st = NULL;
	const uint8_t *k;
	size_t kn;
	kh_err r;

	if ((r = kh__stmt(s, sql, &st)) == KH_OK && (r = kh__bind_blob(st, 1, c->idem, KH_STORE_ESCROW_ID_LEN)) == KH_OK &&
	    (r = kh__escrow_step_one(st, KH_ERR_NOTFOUND)) == KH_OK) {
		k = kh__col_blob(st, 0, &kn);
		if (kn != strlen(kind) || memcmp(k, kind, kn) != 0 || kh__col_i64(st, 1) != c->account ||
		    kh__col_i64(st, 2) != c->amount)
			r = KH_ERR_IDEM_MISMATCH;
		else
			c->available = kh__col_i64(st, 3);
	}
	kh__stmt_done(st);
	return r;
}

static kh_err cash_tx(struct kh_store *s, void *arg)
{
	struct cash *c = arg;
	struct kh__escrow_move m;
	char currency[4];
	int64_t outside = 0;
	kh_err r;

	if (c->idem && (r = cash_repeat(s, c)) != KH_ERR_NOTFOUND)
		return r;
	if ((r = kh__escrow_account_of(s, c->account, currency, &outside)) != KH_OK)
		return r;
	if (c->withdraw)
		m = (struct kh__escrow_move){"withdraw", c->account, NULL, c->idem, c->amount, c->now,
				  c->account, outside, "available", "outside", KH_ERR_FUNDS, 0, 0};
	else
		m = (struct kh__escrow_move){"deposit", c->account, NULL, c->idem, c->amount, c->now,
				  outside, c->account, "outside", "available", KH_ERR_TOO_LARGE, 0, 0};
	if ((r = kh__escrow_move_balances(s, &m)) != KH_OK || (r = kh__escrow_record(s, &m)) != KH_OK)
		return r;
	c->available = c->withdraw ? m.from_after : m.to_after;
	return KH_OK;
}

static kh_err cash(struct kh_store *s, int withdraw, int64_t account, int64_t amount, const uint8_t *idem, int64_t now,
		   int64_t *available)
{
	struct cash c = {withdraw, account, amount, now, idem, 0};
	kh_err r;

	if (s == NULL || !amount_ok(amount) || available == NULL)
		return KH_ERR_INVAL;
	if ((r = kh_store_run_tx(s, cash_tx, &c)) == KH_OK)
		*available = c.available;
	return r;
}

kh_err kh_store_escrow_deposit(struct kh_store *s, int64_t account, int64_t amount, const uint8_t *idem, int64_t now,
			       int64_t *available)
{
	return cash(s, 0, account, amount, idem, now, available);
}

kh_err kh_store_escrow_withdraw(struct kh_store *s, int64_t account, int64_t amount, const uint8_t *idem,
				int64_t now, int64_t *available)
{
	return cash(s, 1, account, amount, idem, now, available);
}

/* ---------------------------------------------------------------- listings */

#define LISTING_COLS "id, seller_id, content_id, price, currency, deadline_secs, key_id, public_key, signed, created_at"

struct listing_add {
	const struct kh_store_escrow_listing *l;
	int64_t now;
};

static kh_err listing_add_tx(struct kh_store *s, void *arg)
{
	static const char sql[] = "INSERT INTO escrow_listings (" LISTING_COLS ")\n"
				  "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT (id) DO NOTHING RETURNING 1";
	struct listing_add *a = arg;
	const struct kh_store_escrow_listing *l = a->l;
	struct kh__stmt *st = NULL;
	char currency[4];
	int64_t outside = 0;
	kh_err r;

	if ((r = kh__escrow_account_of(s, l->seller, currency, &outside)) != KH_OK)
		return r;
	if (strcmp(currency, l->currency) != 0)
		return KH_ERR_INVAL;
	if ((r = kh__stmt(s, sql, &st)) == KH_OK && (r = kh__bind_blob(st, 1, l->id, KH_STORE_ESCROW_ID_LEN)) == KH_OK &&
	    (r = kh__bind_i64(st, 2, l->seller)) == KH_OK && (r = kh__bind_text(st, 3, l->content)) == KH_OK &&
	    (r = kh__bind_i64(st, 4, l->price)) == KH_OK && (r = kh__bind_text(st, 5, l->currency)) == KH_OK &&
	    (r = kh__bind_i64(st, 6, l->deadline_secs)) == KH_OK &&
	    (r = kh__bind_blob(st, 7, l->key_id, KH_STORE_ESCROW_ID_LEN)) == KH_OK &&
	    (r = kh__bind_blob(st, 8, l->pubkey, l->pubkey_len)) == KH_OK &&
	    (r = kh__bind_blob(st, 9, l->signed_bytes, l->signed_len)) == KH_OK &&
	    (r = kh__bind_i64(st, 10, a->now)) == KH_OK && (r = kh__escrow_step_one(st, KH_ERR_EXISTS)) == KH_OK)
		r = kh__exec(st);
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_escrow_listing_add(struct kh_store *s, const struct kh_store_escrow_listing *l, int64_t now)
{
	struct listing_add a = {l, now};

	if (s == NULL || l == NULL || !text_ok(l->content, KH_STORE_ESCROW_CONTENT_MAX) || !amount_ok(l->price) ||
	    !currency_ok(l->currency) || l->deadline_secs <= 0 || l->pubkey == NULL || l->pubkey_len == 0 ||
	    l->pubkey_len > KH_STORE_ESCROW_PUBKEY_MAX || l->signed_bytes == NULL || l->signed_len == 0 ||
	    l->signed_len > KH_STORE_ESCROW_SIGNED_MAX)
		return KH_ERR_INVAL;
	return kh_store_run_tx(s, listing_add_tx, &a);
}

/* The listing row st is on, to fn. */
static kh_err listing_row(struct kh__stmt *st, kh_store_escrow_listing_fn fn, void *arg)
{
	struct kh_store_escrow_listing l = {0};
	char *content = NULL;
	kh_err r;

	if (kh__escrow_col_bytes(st, 0, l.id, sizeof l.id, NULL, 0) != KH_OK ||
	    kh__escrow_col_bytes(st, 6, l.key_id, sizeof l.key_id, NULL, 0) != KH_OK)
		return KH_ERR_DB;
	if ((content = kh__col_str(st, 2)) == NULL)
		return KH_ERR_NOMEM;
	l.seller = kh__col_i64(st, 1);
	l.content = content;
	l.price = kh__col_i64(st, 3);
	kh__col_text(st, 4, l.currency, sizeof l.currency);
	l.deadline_secs = kh__col_i64(st, 5);
	l.pubkey = kh__col_blob(st, 7, &l.pubkey_len);
	l.signed_bytes = kh__col_blob(st, 8, &l.signed_len);
	l.created_at = kh__col_i64(st, 9);
	r = fn(arg, &l);
	free(content);
	return r;
}

kh_err kh_store_escrow_listing_get(struct kh_store *s, const uint8_t id[static KH_STORE_ESCROW_ID_LEN],
				   kh_store_escrow_listing_fn fn, void *arg)
{
	static const char sql[] = "SELECT " LISTING_COLS " FROM escrow_listings WHERE id = ?1";
	struct kh__stmt *st = NULL;
	kh_err r;

	if (s == NULL || id == NULL || fn == NULL)
		return KH_ERR_INVAL;
	if ((r = kh__stmt(s, sql, &st)) == KH_OK && (r = kh__bind_blob(st, 1, id, KH_STORE_ESCROW_ID_LEN)) == KH_OK &&
	    (r = kh__escrow_step_one(st, KH_ERR_NOTFOUND)) == KH_OK)
		r = listing_row(st, fn, arg);
	kh__stmt_done(st);
	return r;
}

/* A page of rows, of listings or of purchases (escrow_int.h). */
kh_err kh__escrow_page(struct kh_store *s, const char *sql, int64_t account, const uint8_t *after, unsigned limit,
		       kh__escrow_page_row_fn row_fn, void *fn, void *arg, int *more)
{
	struct kh__stmt *st = NULL;
	unsigned n = 0;
	int row = 0;
	kh_err r;

	if (s == NULL || fn == NULL || more == NULL || limit == 0 || limit > KH_STORE_PAGE_MAX)
		return KH_ERR_INVAL;
	*more = 0;
	if ((r = kh__stmt(s, sql, &st)) != KH_OK || (r = kh__bind_i64(st, 1, account)) != KH_OK ||
	    (r = kh__bind_blob(st, 2, after, after ? KH_STORE_ESCROW_ID_LEN : 0)) != KH_OK ||
	    (r = kh__bind_i64(st, 3, (int64_t)limit + 1)) != KH_OK)
		goto out;
	while ((r = kh__step(st, &row)) == KH_OK && row) {
		if (n++ == limit) {
			*more = 1;
			break;
		}
		if ((r = row_fn(st, fn, arg)) != KH_OK)
			break;
	}
out:
	kh__stmt_done(st);
	return r;
}

static kh_err listing_page_row(struct kh__stmt *st, void *fn, void *arg)
{
	return listing_row(st, (kh_store_escrow_listing_fn)fn, arg);
}

kh_err kh_store_escrow_listings_page(struct kh_store *s, int64_t seller, const uint8_t *after, unsigned limit,
				     kh_store_escrow_listing_fn fn, void *arg, int *more)
{
	static const char sql[] = "SELECT " LISTING_COLS " FROM escrow_listings\n"
				  "WHERE (?1 = 0 OR seller_id = ?1) AND id > ?2 ORDER BY id LIMIT ?3";

	return kh__escrow_page(s, sql, seller, after, limit, listing_page_row, (void *)fn, arg, more);
}

