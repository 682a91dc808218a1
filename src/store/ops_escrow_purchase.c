/*
 * The escrow's purchases (include/keyhole/store_escrow.h, migration 9; the rules:
 * docs/internals/ledger.md): a purchase recorded with its hold of the buyer's money, the escrow's
 * answer recorded once, then settled exactly once, on the device's notice (posted to the seller,
 * or voided back to the buyer) or by the sweep at its deadline. Each state change is a
 * conditional UPDATE out of `held`, in the same transaction as the money it moves (through
 * ops_escrow.c's movements, escrow_int.h), so two transactions racing on one purchase move it
 * once.
 */
#include <stdlib.h>
#include <string.h>

#include "escrow_int.h"
#include "keyhole/crypto.h"

static const char *const state_names[] = {NULL, "held", "delivered", "failed", "swept"};

const char *kh_store_escrow_state_name(enum kh_store_escrow_state st)
{
	return st >= KH_STORE_ESCROW_HELD && st <= KH_STORE_ESCROW_SWEPT ? state_names[st] : NULL;
}

/* A purchase's state as its number (0: none our CHECK allows), read by the SQL itself. */
#define STATE_NUM "CASE state WHEN 'held' THEN 1 WHEN 'delivered' THEN 2 WHEN 'failed' THEN 3 WHEN 'swept' THEN 4 ELSE 0 END"

static enum kh_store_escrow_state state_col(struct kh__stmt *st, int col)
{
	int64_t v = kh__col_i64(st, col);

	return v >= KH_STORE_ESCROW_HELD && v <= KH_STORE_ESCROW_SWEPT ? (enum kh_store_escrow_state)v : 0;
}

#define PURCHASE_COLS                                                                                           \
	"id, listing_id, buyer_id, seller_id, price, device_ua, request_hash, request, idem_key, " STATE_NUM ",\n" \
	"  deadline, answer, notice, created_at, coalesce(settled_at, 0)"

static kh_err purchase_row(struct kh__stmt *st, struct kh_store_escrow_purchase *p)
{
	memset(p, 0, sizeof *p);
	if (kh__escrow_col_bytes(st, 0, p->id, sizeof p->id, NULL, 0) != KH_OK ||
	    kh__escrow_col_bytes(st, 1, p->listing, sizeof p->listing, NULL, 0) != KH_OK ||
	    kh__escrow_col_bytes(st, 6, p->request_hash, sizeof p->request_hash, NULL, 0) != KH_OK ||
	    kh__escrow_col_bytes(st, 7, p->request, sizeof p->request, &p->request_len, 0) != KH_OK ||
	    kh__escrow_col_bytes(st, 8, p->idem, sizeof p->idem, NULL, 0) != KH_OK ||
	    kh__escrow_col_bytes(st, 11, p->answer, sizeof p->answer, &p->answer_len, 1) != KH_OK ||
	    kh__escrow_col_bytes(st, 12, p->notice, sizeof p->notice, &p->notice_len, 1) != KH_OK)
		return KH_ERR_DB;
	if ((p->state = state_col(st, 9)) == 0)
		return KH_ERR_DB;
	p->buyer = kh__col_i64(st, 2);
	p->seller = kh__col_i64(st, 3);
	p->price = kh__col_i64(st, 4);
	p->device_ua = kh__col_u32(st, 5);
	p->deadline = kh__col_i64(st, 10);
	p->created_at = kh__col_i64(st, 13);
	p->settled_at = kh__col_i64(st, 14);
	return KH_OK;
}

static const char purchase_by_id[] = "SELECT " PURCHASE_COLS " FROM escrow_purchases WHERE id = ?1";
static const char purchase_by_idem[] = "SELECT " PURCHASE_COLS " FROM escrow_purchases WHERE idem_key = ?1";

/* The purchase sql (a 16-byte key at ?1) finds, into *p; KH_ERR_NOTFOUND. */
static kh_err purchase_by(struct kh_store *s, const char *sql, const uint8_t *key, struct kh_store_escrow_purchase *p)
{
	struct kh__stmt *st = NULL;
	kh_err r;

	if ((r = kh__stmt(s, sql, &st)) == KH_OK && (r = kh__bind_blob(st, 1, key, KH_STORE_ESCROW_ID_LEN)) == KH_OK &&
	    (r = kh__escrow_step_one(st, KH_ERR_NOTFOUND)) == KH_OK)
		r = purchase_row(st, p);
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_escrow_purchase_get(struct kh_store *s, const uint8_t id[static KH_STORE_ESCROW_ID_LEN],
				    kh_store_escrow_purchase_fn fn, void *arg)
{
	struct kh_store_escrow_purchase *p;
	kh_err r;

	if (s == NULL || id == NULL || fn == NULL)
		return KH_ERR_INVAL;
	if ((p = malloc(sizeof *p)) == NULL)
		return KH_ERR_NOMEM;
	if ((r = purchase_by(s, purchase_by_id, id, p)) == KH_OK)
		r = fn(arg, p);
	free(p);
	return r;
}

static kh_err purchase_page_row(struct kh__stmt *st, void *fn, void *arg)
{
	struct kh_store_escrow_purchase *p = malloc(sizeof *p);
	kh_err r;

	if (p == NULL)
		return KH_ERR_NOMEM;
	if ((r = purchase_row(st, p)) == KH_OK)
		r = ((kh_store_escrow_purchase_fn)fn)(arg, p);
	free(p);
	return r;
}

kh_err kh_store_escrow_purchases_page(struct kh_store *s, int64_t account, int seller, const uint8_t *after,
				      unsigned limit, kh_store_escrow_purchase_fn fn, void *arg, int *more)
{
	static const char q_buyer[] = "SELECT " PURCHASE_COLS " FROM escrow_purchases\n"
				      "WHERE buyer_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3";
	static const char q_seller[] = "SELECT " PURCHASE_COLS " FROM escrow_purchases\n"
				       "WHERE seller_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3";

	return kh__escrow_page(s, seller ? q_seller : q_buyer, account, after, limit, purchase_page_row, (void *)fn, arg,
			       more);
}

struct hold {
	const struct kh_store_escrow_hold *h;
	int64_t now;
	struct kh_store_escrow_purchase *got;
	int repeat;
};

/* The listing's seller, price and currency; KH_ERR_NOTFOUND. */
static kh_err listing_terms(struct kh_store *s, const uint8_t *id, int64_t *seller, int64_t *price, char currency[4])
{
	static const char sql[] = "SELECT seller_id, price, currency FROM escrow_listings WHERE id = ?1";
	struct kh__stmt *st = NULL;
	kh_err r;

	if ((r = kh__stmt(s, sql, &st)) == KH_OK && (r = kh__bind_blob(st, 1, id, KH_STORE_ESCROW_ID_LEN)) == KH_OK &&
	    (r = kh__escrow_step_one(st, KH_ERR_NOTFOUND)) == KH_OK) {
		*seller = kh__col_i64(st, 0);
		*price = kh__col_i64(st, 1);
		kh__col_text(st, 2, currency, 4);
	}
	kh__stmt_done(st);
	return r;
}

static kh_err purchase_insert(struct kh_store *s, const struct kh_store_escrow_hold *h, int64_t seller, int64_t price,
			      int64_t now)
{
	static const char sql[] =
		"INSERT INTO escrow_purchases (id, listing_id, buyer_id, seller_id, price, device_ua, request_hash,\n"
		"  request, idem_key, state, deadline, created_at)\n"
		"VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'held', ?10, ?11)";
	struct kh__stmt *st = NULL;
	kh_err r;

	if ((r = kh__stmt(s, sql, &st)) == KH_OK && (r = kh__bind_blob(st, 1, h->id, sizeof h->id)) == KH_OK &&
	    (r = kh__bind_blob(st, 2, h->listing, sizeof h->listing)) == KH_OK &&
	    (r = kh__bind_i64(st, 3, h->buyer)) == KH_OK && (r = kh__bind_i64(st, 4, seller)) == KH_OK &&
	    (r = kh__bind_i64(st, 5, price)) == KH_OK && (r = kh__bind_i64(st, 6, h->device_ua)) == KH_OK &&
	    (r = kh__bind_blob(st, 7, h->request_hash, sizeof h->request_hash)) == KH_OK &&
	    (r = kh__bind_blob(st, 8, h->request, h->request_len)) == KH_OK &&
	    (r = kh__bind_blob(st, 9, h->idem, sizeof h->idem)) == KH_OK && (r = kh__bind_i64(st, 10, h->deadline)) == KH_OK &&
	    (r = kh__bind_i64(st, 11, now)) == KH_OK)
		r = kh__exec(st);
	kh__stmt_done(st);
	return r;
}

static kh_err hold_tx(struct kh_store *s, void *arg)
{
	struct hold *c = arg;
	const struct kh_store_escrow_hold *h = c->h;
	struct kh_store_escrow_purchase *p = c->got;
	char lcur[4], bcur[4];
	int64_t seller = 0, price = 0, outside = 0;
	struct kh__escrow_move m;
	kh_err r;

	c->repeat = 0;
	/* The same purchase asked again (its answer lost): as it is now, nothing moves. */
	if ((r = purchase_by(s, purchase_by_id, h->id, p)) == KH_OK) {
		if (!kh_ct_eq(p->request_hash, h->request_hash, sizeof h->request_hash) ||
		    memcmp(p->listing, h->listing, sizeof h->listing) != 0 || p->buyer != h->buyer)
			return KH_ERR_EXISTS;
		c->repeat = 1;
		return KH_OK;
	}
	if (r != KH_ERR_NOTFOUND)
		return r;
	/* Its idempotency key already another purchase's. */
	if ((r = purchase_by(s, purchase_by_idem, h->idem, p)) != KH_ERR_NOTFOUND)
		return r == KH_OK ? KH_ERR_EXISTS : r;
	if ((r = listing_terms(s, h->listing, &seller, &price, lcur)) != KH_OK ||
	    (r = kh__escrow_account_of(s, h->buyer, bcur, &outside)) != KH_OK)
		return r;
	if (strcmp(lcur, bcur) != 0)
		return KH_ERR_INVAL;
	m = (struct kh__escrow_move){"hold", h->buyer, h->id, NULL, price, c->now, h->buyer, h->buyer, "available", "held",
			  KH_ERR_FUNDS, 0, 0};
	/* The debit first: short of funds, nothing is written. The purchase before its movement
	 * (which refers to it). */
	if ((r = kh__escrow_move_balances(s, &m)) != KH_OK || (r = purchase_insert(s, h, seller, price, c->now)) != KH_OK ||
	    (r = kh__escrow_record(s, &m)) != KH_OK)
		return r;
	return purchase_by(s, purchase_by_id, h->id, p);
}

kh_err kh_store_escrow_purchase_hold(struct kh_store *s, const struct kh_store_escrow_hold *h, int64_t now,
				     struct kh_store_escrow_purchase *out, int *repeat)
{
	struct hold c = {h, now, NULL, 0};
	kh_err r;

	if (s == NULL || h == NULL || out == NULL || h->request == NULL || h->request_len == 0 ||
	    h->request_len > KH_STORE_ESCROW_REQUEST_MAX)
		return KH_ERR_INVAL;
	if ((c.got = malloc(sizeof *c.got)) == NULL)
		return KH_ERR_NOMEM;
	if ((r = kh_store_run_tx(s, hold_tx, &c)) == KH_OK) {
		*out = *c.got;
		if (repeat)
			*repeat = c.repeat;
	}
	free(c.got);
	return r;
}

struct answer {
	const uint8_t *id, *answer;
	size_t len;
};

static kh_err answer_tx(struct kh_store *s, void *arg)
{
	static const char q_set[] = "UPDATE escrow_purchases SET answer = ?2 WHERE id = ?1 AND answer IS NULL RETURNING 1";
	static const char q_get[] = "SELECT answer FROM escrow_purchases WHERE id = ?1";
	struct answer *a = arg;
	struct kh__stmt *st = NULL;
	const uint8_t *p;
	size_t n;
	kh_err r;

	if ((r = kh__stmt(s, q_set, &st)) == KH_OK && (r = kh__bind_blob(st, 1, a->id, KH_STORE_ESCROW_ID_LEN)) == KH_OK &&
	    (r = kh__bind_blob(st, 2, a->answer, a->len)) == KH_OK && (r = kh__escrow_step_one(st, KH_ERR_NOTFOUND)) == KH_OK)
		r = kh__exec(st);
	kh__stmt_done(st);
	if (r != KH_ERR_NOTFOUND)
		return r;
	/* Recorded before (or no such purchase): the same answer is the one recorded. */
	st = NULL;
	if ((r = kh__stmt(s, q_get, &st)) == KH_OK && (r = kh__bind_blob(st, 1, a->id, KH_STORE_ESCROW_ID_LEN)) == KH_OK &&
	    (r = kh__escrow_step_one(st, KH_ERR_NOTFOUND)) == KH_OK) {
		p = kh__col_blob(st, 0, &n);
		r = n == a->len && memcmp(p, a->answer, n) == 0 ? KH_OK : KH_ERR_PURCHASE_STATE;
	}
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_escrow_purchase_answer(struct kh_store *s, const uint8_t id[static KH_STORE_ESCROW_ID_LEN],
				       const uint8_t *answer, size_t len)
{
	struct answer a = {id, answer, len};

	if (s == NULL || id == NULL || answer == NULL || len == 0 || len > KH_STORE_ESCROW_ANSWER_MAX)
		return KH_ERR_INVAL;
	return kh_store_run_tx(s, answer_tx, &a);
}

/*
 * Move a purchase out of `held` to state `to` (a conditional UPDATE: of two transactions racing
 * on it, one moves it), then its money: post to the seller, or void back to the buyer. KH_ERR_
 * NOTFOUND when it was not held any more.
 */
static kh_err settle_held(struct kh_store *s, const uint8_t *id, const char *to, const uint8_t *notice, size_t notice_len,
			  int64_t now)
{
	static const char sql[] =
		"UPDATE escrow_purchases SET state = ?2, notice = ?3, settled_at = ?4\n"
		"WHERE id = ?1 AND state = 'held' RETURNING buyer_id, seller_id, price";
	struct kh__stmt *st = NULL;
	int is_void = strcmp(to, "failed") == 0;
	int64_t buyer = 0, seller = 0, price = 0;
	struct kh__escrow_move m;
	kh_err r;

	if ((r = kh__stmt(s, sql, &st)) == KH_OK && (r = kh__bind_blob(st, 1, id, KH_STORE_ESCROW_ID_LEN)) == KH_OK &&
	    (r = kh__bind_text(st, 2, to)) == KH_OK &&
	    (r = notice_len ? kh__bind_blob(st, 3, notice, notice_len) : kh__bind_null(st, 3)) == KH_OK &&
	    (r = kh__bind_i64(st, 4, now)) == KH_OK && (r = kh__escrow_step_one(st, KH_ERR_NOTFOUND)) == KH_OK) {
		buyer = kh__col_i64(st, 0);
		seller = kh__col_i64(st, 1);
		price = kh__col_i64(st, 2);
		r = kh__exec(st);
	}
	kh__stmt_done(st);
	if (r != KH_OK)
		return r;
	/* The held money must be there: a purchase held without it is a broken ledger. */
	m = (struct kh__escrow_move){is_void ? "void" : "post", buyer, id, NULL, price, now, buyer, is_void ? buyer : seller,
			  "held", "available", KH_ERR_LEDGER, 0, 0};
	if ((r = kh__escrow_move_balances(s, &m)) == KH_OK)
		r = kh__escrow_record(s, &m);
	return r;
}

struct settle {
	const uint8_t *id, *notice;
	size_t notice_len;
	enum kh_store_escrow_state outcome, after;
	int64_t now;
	int repeat;
};

static kh_err settle_tx(struct kh_store *s, void *arg)
{
	static const char sql[] = "SELECT " STATE_NUM " FROM escrow_purchases WHERE id = ?1";
	struct settle *c = arg;
	struct kh__stmt *st = NULL;
	enum kh_store_escrow_state now_state = 0;
	kh_err r;

	c->repeat = 0;
	if ((r = kh__stmt(s, sql, &st)) == KH_OK && (r = kh__bind_blob(st, 1, c->id, KH_STORE_ESCROW_ID_LEN)) == KH_OK &&
	    (r = kh__escrow_step_one(st, KH_ERR_NOTFOUND)) == KH_OK) {
		if ((now_state = state_col(st, 0)) == 0)
			r = KH_ERR_DB;
	}
	kh__stmt_done(st);
	if (r != KH_OK)
		return r;
	if (now_state == c->outcome) { /* settled so before: nothing moves */
		c->repeat = 1;
		c->after = now_state;
		return KH_OK;
	}
	/* Settled the other way, or posted by the sweep: a late `failed` does not refund. */
	if (now_state != KH_STORE_ESCROW_HELD)
		return KH_ERR_PURCHASE_STATE;
	r = settle_held(s, c->id, kh_store_escrow_state_name(c->outcome), c->notice, c->notice_len, c->now);
	if (r == KH_ERR_NOTFOUND) /* not held any more: cannot be, in this one transaction */
		r = KH_ERR_PURCHASE_STATE;
	c->after = c->outcome;
	return r;
}

kh_err kh_store_escrow_purchase_settle(struct kh_store *s, const uint8_t id[static KH_STORE_ESCROW_ID_LEN],
				       enum kh_store_escrow_state outcome, const uint8_t *notice, size_t notice_len,
				       int64_t now, enum kh_store_escrow_state *state_after, int *repeat)
{
	struct settle c = {id, notice, notice ? notice_len : 0, outcome, 0, now, 0};
	kh_err r;

	if (s == NULL || id == NULL || (outcome != KH_STORE_ESCROW_DELIVERED && outcome != KH_STORE_ESCROW_FAILED) ||
	    c.notice_len > KH_STORE_ESCROW_NOTICE_MAX)
		return KH_ERR_INVAL;
	if ((r = kh_store_run_tx(s, settle_tx, &c)) == KH_OK) {
		if (state_after)
			*state_after = c.after;
		if (repeat)
			*repeat = c.repeat;
	}
	return r;
}

struct sweep {
	int64_t now;
	unsigned max, count;
	uint8_t (*ids)[KH_STORE_ESCROW_ID_LEN];
};

static kh_err sweep_tx(struct kh_store *s, void *arg)
{
	static const char sql[] = "SELECT id FROM escrow_purchases WHERE state = 'held' AND deadline <= ?1\n"
				  "ORDER BY deadline, id LIMIT ?2";
	struct sweep *c = arg;
	struct kh__stmt *st = NULL;
	unsigned n = 0;
	int row = 0;
	kh_err r;

	c->count = 0;
	/* The ids first (the statement done before others run), then each moved on its own
	 * conditional update: what another sweeper took first is no longer held, and is skipped. */
	if ((r = kh__stmt(s, sql, &st)) == KH_OK && (r = kh__bind_i64(st, 1, c->now)) == KH_OK &&
	    (r = kh__bind_i64(st, 2, c->max)) == KH_OK)
		while (n < c->max && (r = kh__step(st, &row)) == KH_OK && row)
			if ((r = kh__escrow_col_bytes(st, 0, c->ids[n++], KH_STORE_ESCROW_ID_LEN, NULL, 0)) != KH_OK)
				break;
	kh__stmt_done(st);
	for (unsigned i = 0; i < n && r == KH_OK; i++) {
		r = settle_held(s, c->ids[i], "swept", NULL, 0, c->now);
		if (r == KH_OK)
			c->count++;
		else if (r == KH_ERR_NOTFOUND)
			r = KH_OK;
	}
	return r;
}

kh_err kh_store_escrow_sweep(struct kh_store *s, int64_t now, unsigned max, unsigned *count)
{
	struct sweep c = {now, max, 0, NULL};
	kh_err r;

	if (s == NULL || count == NULL || max == 0 || max > KH_STORE_ESCROW_SWEEP_MAX)
		return KH_ERR_INVAL;
	if ((c.ids = calloc(max, sizeof *c.ids)) == NULL)
		return KH_ERR_NOMEM;
	if ((r = kh_store_run_tx(s, sweep_tx, &c)) == KH_OK)
		*count = c.count;
	free(c.ids);
	return r;
}
