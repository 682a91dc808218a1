/*
 * The escrow's rows in the center's store (src/store/ops_escrow.c: accounts, listings;
 * ops_escrow_purchase.c: purchases; ops_escrow_audit.c: the audit; migration 9;
 * docs/internals/ledger.md, docs/internals/store.md "Escrow"): accounts that hold money, a double-entry ledger of every
 * movement, the sellers' listings and the buyers' purchases, whose payment is held, then posted
 * to the seller or given back.
 *
 * Money is an integer count of the currency's smallest unit, never a floating-point number; one
 * currency per account (three upper-case letters, "EUR"); one movement moves 1 to
 * KH_STORE_ESCROW_AMOUNT_MAX. Every movement is one transaction that writes its entries (they
 * sum to zero) and the cached balances they change; no user bucket is ever negative.
 *
 * As every typed operation: one transaction each (or the caller's), a kh_err, outputs written
 * only on success (the audit's report excepted: it is written when the audit finds a fault too).
 * Row callbacks get pointers valid during the call only.
 */
#ifndef KEYHOLE_STORE_ESCROW_H
#define KEYHOLE_STORE_ESCROW_H

#include <stddef.h>
#include <stdint.h>

#include "keyhole/store.h"

#define KH_STORE_ESCROW_NAME_MAX 64
#define KH_STORE_ESCROW_ID_LEN 16  /* listing and purchase ids, key ids, idempotency keys */
#define KH_STORE_ESCROW_CONTENT_MAX 64
#define KH_STORE_ESCROW_PUBKEY_MAX 1024 /* DER SubjectPublicKeyInfo */
#define KH_STORE_ESCROW_SIGNED_MAX 2048 /* the listing's signed bytes */
#define KH_STORE_ESCROW_REQUEST_MAX 1200
#define KH_STORE_ESCROW_ANSWER_MAX 1200
#define KH_STORE_ESCROW_NOTICE_MAX 512
/* One movement's amount: 1 to 2^53 (what a double, and so a JSON number, holds exactly). */
#define KH_STORE_ESCROW_AMOUNT_MAX INT64_C(9007199254740992)
/* The most one currency may hold in all (deposits less withdrawals): 2^62, so that no sum of a
 * currency's buckets can overflow. A deposit beyond it is KH_ERR_TOO_LARGE. */
#define KH_STORE_ESCROW_CURRENCY_MAX INT64_C(4611686018427387904)
/* Purchases one sweep posts at most. */
#define KH_STORE_ESCROW_SWEEP_MAX 1000

/* ---- accounts ---- */

struct kh_store_escrow_account {
	int64_t id;
	char name[KH_STORE_ESCROW_NAME_MAX + 1];
	char currency[4];
	int64_t available, held; /* the account's buckets */
	int64_t deposited, withdrawn; /* every deposit, every withdrawal, ever */
	int64_t created_at;
};

/*
 * A user account with empty buckets (and, on the currency's first account, the currency's
 * `outside` account). name: 1..KH_STORE_ESCROW_NAME_MAX bytes; currency: three upper-case letters
 * (else KH_ERR_INVAL). KH_ERR_EXISTS when the name is taken.
 */
KH_WARN_UNUSED kh_err kh_store_escrow_account_add(struct kh_store *s, const char *name, const char *currency,
						  int64_t now, int64_t *id);
/* A user account by id, or by name; KH_ERR_NOTFOUND (also for a currency's outside account). */
KH_WARN_UNUSED kh_err kh_store_escrow_account_get(struct kh_store *s, int64_t id, struct kh_store_escrow_account *out);
KH_WARN_UNUSED kh_err kh_store_escrow_account_find(struct kh_store *s, const char *name,
						   struct kh_store_escrow_account *out);

/*
 * Deposit: outside -amount, account.available +amount; *available after it. amount 1..
 * KH_STORE_ESCROW_AMOUNT_MAX (KH_ERR_INVAL); KH_ERR_TOO_LARGE when the currency would hold more
 * than KH_STORE_ESCROW_CURRENCY_MAX. idem (KH_STORE_ESCROW_ID_LEN bytes, may be NULL): a repeat
 * with the same key, account and amount moves nothing and gives the first call's *available; the
 * key on another account, amount or kind of movement is KH_ERR_IDEM_MISMATCH.
 */
KH_WARN_UNUSED kh_err kh_store_escrow_deposit(struct kh_store *s, int64_t account, int64_t amount,
					      const uint8_t *idem, int64_t now, int64_t *available);
/* Withdraw: account.available -amount, outside +amount. KH_ERR_FUNDS when available < amount
 * (held money is never available), and nothing changes. idem as for a deposit. */
KH_WARN_UNUSED kh_err kh_store_escrow_withdraw(struct kh_store *s, int64_t account, int64_t amount,
					       const uint8_t *idem, int64_t now, int64_t *available);

/* ---- API tokens: one per user account, kept as its SHA-256 (src/store/ops_escrow_token.c) ---- */

/* The account's token is now the one of this hash (the old one stops working); KH_ERR_NOTFOUND
 * for no such user account. */
KH_WARN_UNUSED kh_err kh_store_escrow_token_set(struct kh_store *s, int64_t account, const uint8_t hash[static 32],
						int64_t now);
/* The account whose token has this hash; KH_ERR_NOTFOUND. */
KH_WARN_UNUSED kh_err kh_store_escrow_token_find(struct kh_store *s, const uint8_t hash[static 32], int64_t *account);

/* ---- listings ---- */

struct kh_store_escrow_listing {
	uint8_t id[KH_STORE_ESCROW_ID_LEN];
	int64_t seller;  /* the seller's account */
	const char *content; /* 1..KH_STORE_ESCROW_CONTENT_MAX bytes */
	int64_t price;       /* 1..KH_STORE_ESCROW_AMOUNT_MAX */
	char currency[4];    /* the seller account's */
	int64_t deadline_secs; /* how long a purchase's payment stays held without a notice, > 0 */
	uint8_t key_id[KH_STORE_ESCROW_ID_LEN]; /* the signing process's key */
	const uint8_t *pubkey; /* the listing's RSA key, DER SubjectPublicKeyInfo */
	size_t pubkey_len;
	const uint8_t *signed_bytes; /* the listing as the escrow signed it */
	size_t signed_len;
	int64_t created_at;
};
typedef kh_err (*kh_store_escrow_listing_fn)(void *arg, const struct kh_store_escrow_listing *l);

/* A listing (created_at is now). KH_ERR_INVAL for a field out of range or a currency that is not
 * the seller's; KH_ERR_NOTFOUND for no such seller; KH_ERR_EXISTS for an id taken. */
KH_WARN_UNUSED kh_err kh_store_escrow_listing_add(struct kh_store *s, const struct kh_store_escrow_listing *l,
						  int64_t now);
/* How many listings the seller has. */
KH_WARN_UNUSED kh_err kh_store_escrow_listing_count(struct kh_store *s, int64_t seller, int64_t *n);
/* The listing with that id to fn; KH_ERR_NOTFOUND. */
KH_WARN_UNUSED kh_err kh_store_escrow_listing_get(struct kh_store *s, const uint8_t id[static KH_STORE_ESCROW_ID_LEN],
						  kh_store_escrow_listing_fn fn, void *arg);
/* Listings in id order, limit (1..KH_STORE_PAGE_MAX) at a time after `after` (NULL: from the
 * first); seller 0: every seller's. *more: another page follows. */
KH_WARN_UNUSED kh_err kh_store_escrow_listings_page(struct kh_store *s, int64_t seller, const uint8_t *after,
						    unsigned limit, kh_store_escrow_listing_fn fn, void *arg,
						    int *more);

/* ---- purchases ---- */

enum kh_store_escrow_state {
	KH_STORE_ESCROW_HELD = 1,      /* the buyer's payment held */
	KH_STORE_ESCROW_DELIVERED = 2, /* posted to the seller on the device's notice */
	KH_STORE_ESCROW_FAILED = 3,    /* given back to the buyer on the device's notice */
	KH_STORE_ESCROW_SWEPT = 4      /* posted to the seller at its deadline, no notice came */
};
/* "held", "delivered", "failed", "swept"; NULL for anything else. */
const char *kh_store_escrow_state_name(enum kh_store_escrow_state st);

/* What a purchase asks (kh_store_escrow_purchase_hold). */
struct kh_store_escrow_hold {
	uint8_t id[KH_STORE_ESCROW_ID_LEN]; /* chosen by the device */
	uint8_t listing[KH_STORE_ESCROW_ID_LEN];
	int64_t buyer;
	uint32_t device_ua;
	uint8_t request_hash[32];
	const uint8_t *request; /* 1..KH_STORE_ESCROW_REQUEST_MAX bytes */
	size_t request_len;
	uint8_t idem[KH_STORE_ESCROW_ID_LEN];
	int64_t deadline; /* absolute, Unix seconds */
};

struct kh_store_escrow_purchase {
	uint8_t id[KH_STORE_ESCROW_ID_LEN];
	uint8_t listing[KH_STORE_ESCROW_ID_LEN];
	int64_t buyer, seller, price;
	uint32_t device_ua;
	uint8_t request_hash[32];
	uint8_t idem[KH_STORE_ESCROW_ID_LEN];
	enum kh_store_escrow_state state;
	int64_t deadline, created_at, settled_at; /* settled_at 0 while held */
	uint8_t request[KH_STORE_ESCROW_REQUEST_MAX];
	size_t request_len;
	uint8_t answer[KH_STORE_ESCROW_ANSWER_MAX]; /* answer_len 0: none recorded yet */
	size_t answer_len;
	uint8_t notice[KH_STORE_ESCROW_NOTICE_MAX]; /* the notice that settled it (0: none) */
	size_t notice_len;
};
typedef kh_err (*kh_store_escrow_purchase_fn)(void *arg, const struct kh_store_escrow_purchase *p);

/*
 * A purchase, in one transaction. A purchase with that id already there, asked with the same
 * request hash, listing and buyer, is a retry: *out is that purchase as it is now, *repeat 1
 * (may be NULL), and nothing moves. The id with another request, or the idempotency key of
 * another purchase: KH_ERR_EXISTS. Otherwise the buyer's and the listing's currencies must be
 * one (KH_ERR_INVAL), the buyer's available must cover the price (KH_ERR_FUNDS, nothing
 * changes), and the purchase is recorded `held` with its hold (buyer.available -price,
 * buyer.held +price). KH_ERR_NOTFOUND for no such listing or buyer.
 */
KH_WARN_UNUSED kh_err kh_store_escrow_purchase_hold(struct kh_store *s, const struct kh_store_escrow_hold *h,
						    int64_t now, struct kh_store_escrow_purchase *out, int *repeat);
/* Record the escrow's signed answer, once: the same bytes again is KH_OK, other bytes
 * KH_ERR_PURCHASE_STATE; KH_ERR_NOTFOUND. */
KH_WARN_UNUSED kh_err kh_store_escrow_purchase_answer(struct kh_store *s, const uint8_t id[static KH_STORE_ESCROW_ID_LEN],
						      const uint8_t *answer, size_t len);
/*
 * Settle a purchase on the device's notice: outcome DELIVERED posts the held payment to the
 * seller (buyer.held -price, seller.available +price), FAILED gives it back (buyer.held -price,
 * buyer.available +price). The outcome it already has: KH_OK, nothing moves, *repeat 1. The other
 * outcome, or any notice after a sweep posted it: KH_ERR_PURCHASE_STATE, nothing changes.
 * *state_after and *repeat may be NULL.
 */
KH_WARN_UNUSED kh_err kh_store_escrow_purchase_settle(struct kh_store *s, const uint8_t id[static KH_STORE_ESCROW_ID_LEN],
						      enum kh_store_escrow_state outcome, const uint8_t *notice,
						      size_t notice_len, int64_t now,
						      enum kh_store_escrow_state *state_after, int *repeat);
/*
 * Post to their sellers the held purchases whose deadline is <= now, at most max
 * (1..KH_STORE_ESCROW_SWEEP_MAX) in one transaction, oldest deadline first; each becomes SWEPT.
 * Safe on every instance at once: a purchase is posted by the one transaction whose conditional
 * update moved it from `held`. *count: how many this call posted.
 */
KH_WARN_UNUSED kh_err kh_store_escrow_sweep(struct kh_store *s, int64_t now, unsigned max, unsigned *count);
/* The purchase with that id to fn; KH_ERR_NOTFOUND. */
KH_WARN_UNUSED kh_err kh_store_escrow_purchase_get(struct kh_store *s, const uint8_t id[static KH_STORE_ESCROW_ID_LEN],
						   kh_store_escrow_purchase_fn fn, void *arg);
/* An account's purchases (as buyer; as seller when seller is 1) in id order, limit
 * (1..KH_STORE_PAGE_MAX) after `after` (NULL: from the first). *more: another page follows. */
KH_WARN_UNUSED kh_err kh_store_escrow_purchases_page(struct kh_store *s, int64_t account, int seller,
						     const uint8_t *after, unsigned limit,
						     kh_store_escrow_purchase_fn fn, void *arg, int *more);

/* ---- the audit ---- */

#define KH_STORE_ESCROW_AUDIT_CURRENCIES 32

struct kh_store_escrow_totals {
	char currency[4];
	int64_t deposited, withdrawn; /* every deposit, every withdrawal */
	int64_t available, held;      /* the users' buckets, recomputed from the entries */
	int64_t outside;              /* the outside account's balance: withdrawn - deposited */
	int64_t movements, entries;
};

struct kh_store_escrow_audit {
	size_t ncurrencies; /* totals of the first KH_STORE_ESCROW_AUDIT_CURRENCIES currencies (by code) */
	int currencies_more; /* 1: more currencies than that (all are checked) */
	struct kh_store_escrow_totals cur[KH_STORE_ESCROW_AUDIT_CURRENCIES];
	int64_t movements, entries, purchases;
	/* The first discrepancy found (check NULL: none). */
	struct {
		const char *check;  /* a static name: docs/internals/ledger.md lists them */
		int64_t account;    /* the account at fault (0: none in particular) */
		char bucket[10];    /* "available", "held", "outside", or "" */
		char currency[4];
		int64_t cached, recomputed; /* the two values that differ */
		int64_t movement;   /* the movement at fault (0: none) */
		uint8_t purchase[KH_STORE_ESCROW_ID_LEN]; /* the purchase at fault (purchase_set) */
		int purchase_set;
	} first;
};

/*
 * Recompute every balance from the entries, in one read transaction (a snapshot: REPEATABLE
 * READ on PostgreSQL), and compare with the cached balances and the ledger's rules
 * (docs/internals/ledger.md, "What the audit checks"). *out gets the totals per currency and the
 * first discrepancy; KH_ERR_LEDGER when anything fails to balance, KH_OK when all holds. Inside
 * a transaction already open on s it reads in that one.
 */
KH_WARN_UNUSED kh_err kh_store_escrow_audit(struct kh_store *s, struct kh_store_escrow_audit *out);

#endif
