/*
 * Inside the escrow's part of the store: what its files share. ops_escrow.c (accounts, moving
 * money, deposits and withdrawals, listings) gives ops_escrow_purchase.c (purchases: holds,
 * answers, settlement, the sweep) its row helpers and the one place money moves;
 * ops_escrow_audit.c gives check.c (keyhole store check) the ledger's checks, so that the audit
 * and the store's check run the same queries.
 */
#ifndef KH_ESCROW_INT_H
#define KH_ESCROW_INT_H

#include <stddef.h>
#include <stdint.h>

#include "keyhole/store_escrow.h"
#include "store_int.h"

/* ---- rows (ops_escrow.c) ---- */

/* Step st: KH_OK when it gave a row, `none` when it gave none, else the step's error. */
KH_WARN_UNUSED kh_err kh__escrow_step_one(struct kh__stmt *st, kh_err none);
/* A blob column of 1..cap bytes (0 bytes too when empty_ok) into out, *n its length (n NULL:
 * exactly cap bytes); KH_ERR_DB when the store holds something our CHECKs refuse. */
KH_WARN_UNUSED kh_err kh__escrow_col_bytes(struct kh__stmt *st, int col, uint8_t *out, size_t cap, size_t *n,
					   int empty_ok);
/* A user account's currency and its currency's outside account; KH_ERR_NOTFOUND. */
KH_WARN_UNUSED kh_err kh__escrow_account_of(struct kh_store *s, int64_t id, char currency[4], int64_t *outside);

/* A page of rows (at most limit, one more read to say *more) of sql, whose ?1 is an account
 * (0: any), ?2 the last id seen (after NULL: from the first) and ?3 the limit, each to row_fn
 * with fn and arg. KH_ERR_INVAL for a limit outside 1..KH_STORE_PAGE_MAX. */
typedef kh_err (*kh__escrow_page_row_fn)(struct kh__stmt *st, void *fn, void *arg);
KH_WARN_UNUSED kh_err kh__escrow_page(struct kh_store *s, const char *sql, int64_t account, const uint8_t *after,
				      unsigned limit, kh__escrow_page_row_fn row_fn, void *fn, void *arg, int *more);

/* ---- moving money (ops_escrow.c) ---- */

struct kh__escrow_move {
	const char *kind;          /* deposit, withdraw, hold, post, void */
	int64_t account;           /* whose movement it is (the buyer's for a purchase's) */
	const uint8_t *purchase;   /* NULL for a deposit or a withdrawal */
	const uint8_t *idem;       /* a deposit's or withdrawal's key, or NULL */
	int64_t amount, now;
	int64_t from, to;          /* accounts */
	const char *from_bucket, *to_bucket;
	kh_err short_err;          /* what a debit out of range is: FUNDS, TOO_LARGE, LEDGER */
	int64_t from_after, to_after; /* out: the two balances after */
};

/* The balances of a movement, in the caller's transaction: the debit first (refused with
 * m->short_err: nothing written), then the credit; the balances after into m. */
KH_WARN_UNUSED kh_err kh__escrow_move_balances(struct kh_store *s, struct kh__escrow_move *m);
/* The movement's row and its two entries (summing to zero), after kh__escrow_move_balances. */
KH_WARN_UNUSED kh_err kh__escrow_record(struct kh_store *s, const struct kh__escrow_move *m);

/* ---- the ledger's checks (ops_escrow_audit.c; docs/internals/ledger.md) ---- */

/*
 * One check: a SELECT of the rows that break it, in key order, none when it holds. Every row has
 * one shape, read by kh__escrow_row. kh_store_escrow_audit stops at the first row of the first
 * check broken; kh_store_invariants (check.c) reports every check broken, with its rows.
 */
struct kh__escrow_check {
	const char *name;  /* the audit's name of it: "balance_cache", ... */
	const char *table; /* the table at fault */
	const char *what;  /* one line: the rule that does not hold */
	const char *sql;   /* a literal (the statement cache's key) */
};
extern const struct kh__escrow_check kh__escrow_checks[];
extern const size_t kh__escrow_checks_count;
/* The row of a check that st is on into out->first (all but its check name). */
void kh__escrow_row(struct kh__stmt *st, struct kh_store_escrow_audit *out);

#endif
