/*
 * The escrow's audit (include/keyhole/store_escrow.h, docs/internals/ledger.md "What the audit
 * checks"): every balance recomputed from the entries, compared with the cached balances and the
 * ledger's rules, in one read transaction so that a running escrow (its movements committing
 * meanwhile) cannot show it a half-made movement.
 *
 * Each check is one SELECT of the rows that break it, in one shape (account, bucket, currency,
 * cached, recomputed, movement, purchase), in key order; the audit's finding is the first row of
 * the first check broken. The order of the checks is the order a reader would look: the cache
 * against the entries first, so a tampered entry or balance names its account. `keyhole store
 * check` runs the same checks (kh__escrow_checks, escrow_int.h: check.c), and reports every one
 * broken with its rows.
 */
#include <string.h>

#include "escrow_int.h"

/* Every bucket's sum of entries, by account and bucket. */
#define RECOMPUTED "(SELECT account_id, bucket, sum(amount) AS total FROM escrow_entries GROUP BY account_id, bucket)"

const struct kh__escrow_check kh__escrow_checks[] = {
	/* The cache: each bucket's cached balance is the sum of its entries. */
	{"balance_cache", "escrow_balances",
	 "a bucket's cached balance is not the sum of its entries (money made or lost outside a movement)",
	 "SELECT b.account_id, b.bucket, a.currency, b.balance, coalesce(e.total, 0), 0, NULL\n"
	 "FROM escrow_balances b JOIN escrow_accounts a ON a.id = b.account_id\n"
	 "LEFT JOIN " RECOMPUTED " e ON e.account_id = b.account_id AND e.bucket = b.bucket\n"
	 "WHERE b.balance <> coalesce(e.total, 0) ORDER BY b.account_id, b.bucket"},
	/* No user bucket below zero, no outside bucket above, whatever the cache says. */
	{"bucket_range", "escrow_entries",
	 "a user bucket's entries sum below zero, or an outside bucket's above zero",
	 "SELECT e.account_id, e.bucket, a.currency, 0, e.total, 0, NULL\n"
	 "FROM " RECOMPUTED " e JOIN escrow_accounts a ON a.id = e.account_id\n"
	 "WHERE (e.bucket = 'outside' AND e.total > 0) OR (e.bucket <> 'outside' AND e.total < 0)\n"
	 "ORDER BY e.account_id, e.bucket"},
	/* A user account has exactly its available and held buckets, an outside account its one. */
	{"buckets", "escrow_balances",
	 "an account's buckets are not those of its kind (a user's available and held, an outside account's outside)",
	 "SELECT a.id, '', a.currency, 0, 0, 0, NULL FROM escrow_accounts a\n"
	 "WHERE (SELECT count(*) FROM escrow_balances b WHERE b.account_id = a.id\n"
	 "  AND (b.bucket = 'outside') = (a.kind = 'outside')) <> CASE WHEN a.kind = 'user' THEN 2 ELSE 1 END\n"
	 "  OR EXISTS (SELECT 1 FROM escrow_balances b WHERE b.account_id = a.id\n"
	 "  AND (b.bucket = 'outside') <> (a.kind = 'outside'))\n"
	 "ORDER BY a.id"},
	/* Each movement: two entries of one currency, -amount from the bucket its kind takes from and
	 * +amount to the bucket its kind gives to. */
	{"movement_entries", "escrow_entries",
	 "a movement is not two entries of one currency, -amount from and +amount to the buckets its kind names",
	 "SELECT m.account_id, '', '', m.amount, coalesce(x.pos, 0), m.id, m.purchase_id FROM escrow_movements m\n"
	 "LEFT JOIN (SELECT e.movement_id, count(*) AS n, sum(e.amount) AS total,\n"
	 "  sum(CASE WHEN e.amount > 0 THEN e.amount ELSE 0 END) AS pos,\n"
	 "  min(CASE WHEN e.amount < 0 THEN e.bucket END) AS src, min(CASE WHEN e.amount > 0 THEN e.bucket END) AS dst,\n"
	 "  count(DISTINCT a.currency) AS ncur\n"
	 "  FROM escrow_entries e JOIN escrow_accounts a ON a.id = e.account_id GROUP BY e.movement_id) x\n"
	 "  ON x.movement_id = m.id\n"
	 "WHERE x.n IS NULL OR x.n <> 2 OR x.total <> 0 OR x.pos <> m.amount OR x.ncur <> 1\n"
	 "  OR x.src <> CASE m.kind WHEN 'deposit' THEN 'outside' WHEN 'withdraw' THEN 'available'\n"
	 "    WHEN 'hold' THEN 'available' ELSE 'held' END\n"
	 "  OR x.dst <> CASE m.kind WHEN 'deposit' THEN 'available' WHEN 'withdraw' THEN 'outside'\n"
	 "    WHEN 'hold' THEN 'held' ELSE 'available' END\n"
	 "ORDER BY m.id"},
	/* Each currency's buckets sum to zero: deposited = available + held + withdrawn. */
	{"currency_sum", "escrow_entries",
	 "a currency's entries do not sum to zero",
	 "SELECT 0, '', a.currency, 0, sum(e.amount), 0, NULL\n"
	 "FROM escrow_entries e JOIN escrow_accounts a ON a.id = e.account_id\n"
	 "GROUP BY a.currency HAVING sum(e.amount) <> 0 ORDER BY a.currency"},
	/* Each currency's outside balance is minus its deposits plus its withdrawals. */
	{"outside_balance", "escrow_movements",
	 "a currency's outside balance is not its withdrawals less its deposits",
	 "SELECT o.id, 'outside', o.currency,\n"
	 "  (SELECT coalesce(sum(CASE WHEN m.kind = 'deposit' THEN -m.amount ELSE m.amount END), 0)\n"
	 "   FROM escrow_movements m JOIN escrow_accounts u ON u.id = m.account_id\n"
	 "   WHERE u.currency = o.currency AND m.kind IN ('deposit', 'withdraw')),\n"
	 "  coalesce(e.total, 0), 0, NULL\n"
	 "FROM escrow_accounts o LEFT JOIN " RECOMPUTED " e ON e.account_id = o.id AND e.bucket = 'outside'\n"
	 "WHERE o.kind = 'outside' AND coalesce(e.total, 0) <>\n"
	 "  (SELECT coalesce(sum(CASE WHEN m.kind = 'deposit' THEN -m.amount ELSE m.amount END), 0)\n"
	 "   FROM escrow_movements m JOIN escrow_accounts u ON u.id = m.account_id\n"
	 "   WHERE u.currency = o.currency AND m.kind IN ('deposit', 'withdraw'))\n"
	 "ORDER BY o.currency"},
	/* Each purchase has its hold (its price, from its buyer), and the settlement its state says:
	 * none while held, a post when delivered or swept, a void when failed. */
	{"purchase_movements", "escrow_purchases",
	 "a purchase lacks its hold (its price, from its buyer), or its settlement is not the one its state says",
	 "SELECT p.buyer_id, '', '', p.price, coalesce(h.amount, 0), coalesce(h.id, 0), p.id\n"
	 "FROM escrow_purchases p\n"
	 "LEFT JOIN escrow_movements h ON h.purchase_id = p.id AND h.kind = 'hold'\n"
	 "LEFT JOIN escrow_movements po ON po.purchase_id = p.id AND po.kind = 'post'\n"
	 "LEFT JOIN escrow_movements v ON v.purchase_id = p.id AND v.kind = 'void'\n"
	 "WHERE h.id IS NULL OR h.amount <> p.price OR h.account_id <> p.buyer_id\n"
	 "  OR (p.state = 'held' AND (po.id IS NOT NULL OR v.id IS NOT NULL))\n"
	 "  OR (p.state IN ('delivered', 'swept') AND (po.id IS NULL OR v.id IS NOT NULL OR po.amount <> p.price))\n"
	 "  OR (p.state = 'failed' AND (v.id IS NULL OR po.id IS NOT NULL OR v.amount <> p.price))\n"
	 "ORDER BY p.id"},
	/* A buyer's held bucket is the sum of the prices of its purchases still held. */
	{"held_purchases", "escrow_balances",
	 "a buyer's held bucket is not the sum of the prices of its purchases still held",
	 "SELECT b.account_id, 'held', a.currency, b.balance, coalesce(p.total, 0), 0, NULL\n"
	 "FROM escrow_balances b JOIN escrow_accounts a ON a.id = b.account_id\n"
	 "LEFT JOIN (SELECT buyer_id, sum(price) AS total FROM escrow_purchases WHERE state = 'held'\n"
	 "  GROUP BY buyer_id) p ON p.buyer_id = b.account_id\n"
	 "WHERE b.bucket = 'held' AND b.balance <> coalesce(p.total, 0) ORDER BY b.account_id"},
};

const size_t kh__escrow_checks_count = sizeof kh__escrow_checks / sizeof kh__escrow_checks[0];

void kh__escrow_row(struct kh__stmt *st, struct kh_store_escrow_audit *out)
{
	const uint8_t *p;
	size_t n;

	out->first.account = kh__col_i64(st, 0);
	kh__col_text(st, 1, out->first.bucket, sizeof out->first.bucket);
	kh__col_text(st, 2, out->first.currency, sizeof out->first.currency);
	out->first.cached = kh__col_i64(st, 3);
	out->first.recomputed = kh__col_i64(st, 4);
	out->first.movement = kh__col_i64(st, 5);
	p = kh__col_blob(st, 6, &n);
	out->first.purchase_set = n == KH_STORE_ESCROW_ID_LEN;
	if (out->first.purchase_set)
		memcpy(out->first.purchase, p, n);
}

/* Run one check: KH_OK when no row breaks it, KH_ERR_LEDGER with out->first filled when one does. */
static kh_err run_check(struct kh_store *s, const struct kh__escrow_check *c, struct kh_store_escrow_audit *out)
{
	struct kh__stmt *st = NULL;
	int row = 0;
	kh_err r;

	if ((r = kh__stmt(s, c->sql, &st)) == KH_OK && (r = kh__step(st, &row)) == KH_OK && row) {
		out->first.check = c->name;
		kh__escrow_row(st, out);
		r = KH_ERR_LEDGER;
	}
	kh__stmt_done(st);
	return r;
}

/* The totals of every currency (the first KH_STORE_ESCROW_AUDIT_CURRENCIES kept), and of all. */
static kh_err totals(struct kh_store *s, struct kh_store_escrow_audit *out)
{
	static const char q_cur[] =
		"SELECT c.currency,\n"
		"  (SELECT coalesce(sum(CASE WHEN m.kind = 'deposit' THEN m.amount ELSE 0 END), 0) FROM escrow_movements m\n"
		"   JOIN escrow_accounts a ON a.id = m.account_id WHERE a.currency = c.currency),\n"
		"  (SELECT coalesce(sum(CASE WHEN m.kind = 'withdraw' THEN m.amount ELSE 0 END), 0) FROM escrow_movements m\n"
		"   JOIN escrow_accounts a ON a.id = m.account_id WHERE a.currency = c.currency),\n"
		"  (SELECT count(*) FROM escrow_movements m JOIN escrow_accounts a ON a.id = m.account_id\n"
		"   WHERE a.currency = c.currency),\n"
		"  (SELECT coalesce(sum(CASE WHEN e.bucket = 'available' THEN e.amount ELSE 0 END), 0) FROM escrow_entries e\n"
		"   JOIN escrow_accounts a ON a.id = e.account_id WHERE a.currency = c.currency),\n"
		"  (SELECT coalesce(sum(CASE WHEN e.bucket = 'held' THEN e.amount ELSE 0 END), 0) FROM escrow_entries e\n"
		"   JOIN escrow_accounts a ON a.id = e.account_id WHERE a.currency = c.currency),\n"
		"  (SELECT coalesce(sum(CASE WHEN e.bucket = 'outside' THEN e.amount ELSE 0 END), 0) FROM escrow_entries e\n"
		"   JOIN escrow_accounts a ON a.id = e.account_id WHERE a.currency = c.currency),\n"
		"  (SELECT count(*) FROM escrow_entries e JOIN escrow_accounts a ON a.id = e.account_id\n"
		"   WHERE a.currency = c.currency)\n"
		"FROM (SELECT DISTINCT currency FROM escrow_accounts) c ORDER BY c.currency";
	static const char q_all[] = "SELECT (SELECT count(*) FROM escrow_movements), (SELECT count(*) FROM escrow_entries),\n"
				    "  (SELECT count(*) FROM escrow_purchases)";
	struct kh__stmt *st = NULL;
	int row = 0;
	kh_err r;

	if ((r = kh__stmt(s, q_cur, &st)) != KH_OK)
		return r;
	while ((r = kh__step(st, &row)) == KH_OK && row) {
		struct kh_store_escrow_totals *t = &out->cur[out->ncurrencies];

		if (out->ncurrencies == KH_STORE_ESCROW_AUDIT_CURRENCIES) {
			out->currencies_more = 1;
			break;
		}
		kh__col_text(st, 0, t->currency, sizeof t->currency);
		t->deposited = kh__col_i64(st, 1);
		t->withdrawn = kh__col_i64(st, 2);
		t->movements = kh__col_i64(st, 3);
		t->available = kh__col_i64(st, 4);
		t->held = kh__col_i64(st, 5);
		t->outside = kh__col_i64(st, 6);
		t->entries = kh__col_i64(st, 7);
		out->ncurrencies++;
	}
	kh__stmt_done(st);
	st = NULL;
	if (r == KH_OK && (r = kh__stmt(s, q_all, &st)) == KH_OK && (r = kh__step(st, &row)) == KH_OK && row) {
		out->movements = kh__col_i64(st, 0);
		out->entries = kh__col_i64(st, 1);
		out->purchases = kh__col_i64(st, 2);
	}
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_escrow_audit(struct kh_store *s, struct kh_store_escrow_audit *out)
{
	int own = 0;
	kh_err r;

	if (s == NULL || out == NULL)
		return KH_ERR_INVAL;
	memset(out, 0, sizeof *out);
	/* One snapshot for every query: a movement committed meanwhile is wholly in or wholly out. */
	if (!kh_store_in_tx(s)) {
		if ((r = kh__begin_read(s)) != KH_OK)
			return r;
		own = 1;
	}
	r = totals(s, out);
	for (size_t i = 0; r == KH_OK && i < kh__escrow_checks_count; i++)
		r = run_check(s, &kh__escrow_checks[i], out);
	if (own)
		kh_store_rollback(s);
	if (r != KH_OK && r != KH_ERR_LEDGER) {
		/* the read failed: no finding to report */
		memset(out, 0, sizeof *out);
	}
	return r;
}
