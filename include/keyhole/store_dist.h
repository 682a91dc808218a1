/*
 * The distribution server's rows in the center's store (src/store/ops_dist.c, the catalogue's
 * reads in ops_list.c beside the other lists; migration 8;
 * docs/protocols/distribution.md, docs/internals/store.md "Distribution"): buyers' accounts and
 * their money, login sessions, the catalogue of programs, deliveries and their receipts.
 *
 * As every typed operation: one transaction each (or the caller's), a kh_err, outputs written
 * only on success. Row callbacks get pointers valid during the call only.
 */
#ifndef KEYHOLE_STORE_DIST_H
#define KEYHOLE_STORE_DIST_H

#include <stddef.h>
#include <stdint.h>

#include "keyhole/store.h"

#define KH_STORE_DIST_NAME_MAX 64
#define KH_STORE_DIST_SALT_LEN 16
#define KH_STORE_DIST_HASH_LEN 32
#define KH_STORE_DIST_RECEIPT_LEN 16
/* What a delivery keeps of its session (the server's half, nothing secret) and its sealed key. */
#define KH_STORE_DIST_PEER_MAX 512
#define KH_STORE_DIST_KX_MAX 128

/* ---- accounts and sessions ---- */

struct kh_store_dist_account {
	int64_t id;
	const char *name;
	const uint8_t *salt; /* KH_STORE_DIST_SALT_LEN */
	const uint8_t *hash; /* KH_STORE_DIST_HASH_LEN: the password's scrypt */
	int64_t balance;
};
typedef kh_err (*kh_store_dist_account_fn)(void *arg, const struct kh_store_dist_account *a);

/* A new account with balance 0; KH_ERR_EXISTS when the name is taken. */
KH_WARN_UNUSED kh_err kh_store_dist_account_add(struct kh_store *s, const char *name,
						const uint8_t salt[static KH_STORE_DIST_SALT_LEN],
						const uint8_t hash[static KH_STORE_DIST_HASH_LEN], int64_t now,
						int64_t *id);
/* The account of that name to fn; KH_ERR_NOTFOUND. */
KH_WARN_UNUSED kh_err kh_store_dist_account_find(struct kh_store *s, const char *name, kh_store_dist_account_fn fn,
						 void *arg);
/* The account with that id to fn (its name, balance, password hash); KH_ERR_NOTFOUND. */
KH_WARN_UNUSED kh_err kh_store_dist_account_get(struct kh_store *s, int64_t id, kh_store_dist_account_fn fn,
						void *arg);
/* Credit amount (1 to UINT32_MAX) to the account, with its ledger entry; *balance after it. */
KH_WARN_UNUSED kh_err kh_store_dist_deposit(struct kh_store *s, int64_t account_id, int64_t amount, int64_t now,
					    int64_t *balance);

/* Sessions an account keeps: a log-in beyond them ends its oldest. */
#define KH_STORE_DIST_SESSIONS_MAX 16
/* A login: the token's SHA-256, its account, when it ends (and the account's sessions beyond
 * KH_STORE_DIST_SESSIONS_MAX, the oldest, removed in the same transaction). */
KH_WARN_UNUSED kh_err kh_store_dist_session_add(struct kh_store *s, const uint8_t token_hash[static 32],
						int64_t account_id, int64_t expires_at);
/* The account of a session that has not ended at now; KH_ERR_NOTFOUND otherwise. */
KH_WARN_UNUSED kh_err kh_store_dist_session_find(struct kh_store *s, const uint8_t token_hash[static 32], int64_t now,
						 int64_t *account_id);
/* Remove at most max sessions ended before `before`; *n how many. */
KH_WARN_UNUSED kh_err kh_store_dist_session_purge(struct kh_store *s, int64_t before, unsigned max, unsigned *n);

/* ---- the catalogue ---- */

struct kh_store_dist_program {
	int64_t id;
	const char *name;
	uint32_t version, price;
	const uint8_t *manifest;
	size_t manifest_len;
	const uint8_t *program; /* NULL in lists: only kh_store_dist_program_read gives it */
	size_t program_len;
	int64_t created_at;
};
typedef kh_err (*kh_store_dist_program_fn)(void *arg, const struct kh_store_dist_program *p);

/* A program (name, version 1..UINT32_MAX, price, manifest, code); KH_ERR_EXISTS for a name and
 * version published already. */
KH_WARN_UNUSED kh_err kh_store_dist_program_add(struct kh_store *s, const struct kh_store_dist_program *p, int64_t now,
						int64_t *id);
/* Programs by id, a page at a time (page->after: the last id seen), without their code. */
KH_WARN_UNUSED kh_err kh_store_dist_programs_page(struct kh_store *s, const struct kh_store_page *page,
						  kh_store_dist_program_fn fn, void *arg, int *more);
/* One program without its code (program NULL, program_len its length); KH_ERR_NOTFOUND. */
KH_WARN_UNUSED kh_err kh_store_dist_program_meta(struct kh_store *s, int64_t id, kh_store_dist_program_fn fn,
						 void *arg);
/* One program with its code; KH_ERR_NOTFOUND. */
KH_WARN_UNUSED kh_err kh_store_dist_program_read(struct kh_store *s, int64_t id, kh_store_dist_program_fn fn,
						 void *arg);

/* ---- deliveries and receipts ---- */

enum kh_store_dist_state {
	KH_STORE_DIST_HELLO = 1,  /* the processor's hello checked, the server's proof sent */
	KH_STORE_DIST_PROVEN = 2, /* the processor's answer checked */
	KH_STORE_DIST_KEYED = 3,  /* the program key sent */
	KH_STORE_DIST_CHARGED = 4 /* charged (or, on a receipt, released) */
};

struct kh_store_dist_delivery {
	int64_t id, account_id, program_id;
	enum kh_store_dist_state state;
	uint8_t fp[32];
	uint8_t peer[KH_STORE_DIST_PEER_MAX];
	size_t peer_len;
	uint8_t kx_sealed[KH_STORE_DIST_KX_MAX]; /* sealed at rest by the service; may still be a key: wipe */
	size_t kx_len;
	int refetch_set; /* started on a receipt: refetch is its id */
	uint8_t refetch[KH_STORE_DIST_RECEIPT_LEN];
};

struct kh_store_dist_receipt {
	uint8_t id[KH_STORE_DIST_RECEIPT_LEN];
	int64_t delivery_id, account_id, program_id;
	uint8_t fp[32];
	uint32_t price;
	int64_t time;
};

/* Deliveries not yet charged that one account may start within KH_STORE_DIST_WINDOW seconds. */
#define KH_STORE_DIST_UNDER_WAY_MAX 64
#define KH_STORE_DIST_WINDOW 3600
/*
 * A delivery in state HELLO (d's account, program, fp, peer, refetch; *id given back). In the
 * same transaction the account's deliveries left at HELLO for longer than KH_STORE_DIST_WINDOW
 * are removed; KH_ERR_LIMIT when it started KH_STORE_DIST_UNDER_WAY_MAX or more within that
 * window that are not charged (nothing changes then).
 */
KH_WARN_UNUSED kh_err kh_store_dist_delivery_add(struct kh_store *s, const struct kh_store_dist_delivery *d,
						 int64_t now, int64_t *id);
/* Delivery id of account_id into *d; KH_ERR_NOTFOUND also when it is another account's. */
KH_WARN_UNUSED kh_err kh_store_dist_delivery_read(struct kh_store *s, int64_t id, int64_t account_id,
						  struct kh_store_dist_delivery *d);
/*
 * Move delivery id from state `from` to `to` (forward only), replacing its peer and sealed key
 * (either NULL: kept). KH_ERR_DIST_SESSION when it is not in `from` (another request moved it).
 */
KH_WARN_UNUSED kh_err kh_store_dist_delivery_step(struct kh_store *s, int64_t id, enum kh_store_dist_state from,
						  enum kh_store_dist_state to, const uint8_t *peer, size_t peer_len,
						  const uint8_t *kx_sealed, size_t kx_len, int64_t now);
/*
 * Charge delivery id of account_id, once. In one transaction: a delivery already charged answers
 * its receipt again and moves no money; a KEYED delivery started on a receipt is released for
 * nothing and answers that receipt; any other KEYED delivery debits the program's price (never
 * below zero: KH_ERR_FUNDS, and nothing changes), records the receipt with the id given (fresh
 * random bytes from the caller) and its ledger entry, and becomes CHARGED. A delivery not yet
 * keyed: KH_ERR_DIST_SESSION. *charged is 1 when this call moved the money.
 */
KH_WARN_UNUSED kh_err kh_store_dist_charge(struct kh_store *s, int64_t id, int64_t account_id,
					   const uint8_t receipt_id[static KH_STORE_DIST_RECEIPT_LEN], int64_t now,
					   struct kh_store_dist_receipt *out, int *charged);
/* A receipt by its id; KH_ERR_NOTFOUND. */
KH_WARN_UNUSED kh_err kh_store_dist_receipt_read(struct kh_store *s, const uint8_t id[static KH_STORE_DIST_RECEIPT_LEN],
						 struct kh_store_dist_receipt *out);

#endif
