/*
 * The escrow's ledger (src/store/ops_escrow.c, ops_escrow_purchase.c, ops_escrow_audit.c, and its
 * checks in check.c), on SQLite and again on PostgreSQL (unit/test_store_escrow_pg). The judges:
 * every movement moves exactly its amount and the audit balances after it; a refusal (funds
 * short, a state that does not allow it) changes not a row; a retry or a repeated notice moves
 * nothing; two connections spending the same money at once cannot both succeed, and two sweepers
 * post each expired purchase once; the audit names the account of a tampered balance or entry,
 * and `keyhole store check` (kh_store_invariants) passes a sound ledger and names every check of
 * the ledger such a change breaks; after 8 threads of random movements every total matches the
 * threads' own tally.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#include "keyhole/store_escrow.h"

struct ctx {
	char *dir, *db;
	struct kh_store *s;
	int64_t alice, bob, carol; /* alice and bob in EUR, carol in USD */
};

static int setup(void **state)
{
	struct ctx *c = calloc(1, sizeof *c);

	assert_non_null(c);
	assert_non_null(c->dir = kh_test_tmpdir());
	c->db = kh_test_db(c->dir, "center.db");
	assert_int_equal(kh_store_open(c->db, &c->s), KH_OK);
	assert_int_equal(kh_store_escrow_account_add(c->s, "alice", "EUR", 100, &c->alice), KH_OK);
	assert_int_equal(kh_store_escrow_account_add(c->s, "bob", "EUR", 100, &c->bob), KH_OK);
	assert_int_equal(kh_store_escrow_account_add(c->s, "carol", "USD", 100, &c->carol), KH_OK);
	*state = c;
	return 0;
}

static int teardown(void **state)
{
	struct ctx *c = *state;

	kh_store_close(c->s);
	kh_test_db_drop(c->db);
	kh_test_rmdir(c->dir);
	free(c);
	return 0;
}

static struct kh_store_escrow_account acct(struct ctx *c, int64_t id)
{
	struct kh_store_escrow_account a;

	assert_int_equal(kh_store_escrow_account_get(c->s, id, &a), KH_OK);
	return a;
}

/* The audit balances, and currency's totals are these. */
static void audit_ok(struct kh_store *s, const char *currency, int64_t deposited, int64_t withdrawn, int64_t held)
{
	struct kh_store_escrow_audit au;
	size_t i;

	assert_int_equal(kh_store_escrow_audit(s, &au), KH_OK);
	assert_null(au.first.check);
	for (i = 0; i < au.ncurrencies && strcmp(au.cur[i].currency, currency) != 0; i++)
		;
	assert_true(i < au.ncurrencies);
	assert_int_equal(au.cur[i].deposited, deposited);
	assert_int_equal(au.cur[i].withdrawn, withdrawn);
	assert_int_equal(au.cur[i].held, held);
	assert_int_equal(au.cur[i].available, deposited - withdrawn - held);
	assert_int_equal(au.cur[i].outside, withdrawn - deposited);
}

/* A listing of seller's at price (its id: 16 bytes of tag). */
static void listing(struct ctx *c, uint8_t tag, int64_t seller, int64_t price, const char *currency)
{
	struct kh_store_escrow_listing l = {.seller = seller, .content = "film-1", .price = price, .deadline_secs = 600};

	memset(l.id, tag, sizeof l.id);
	memset(l.key_id, 0x4B, sizeof l.key_id);
	memcpy(l.currency, currency, 4);
	l.pubkey = (const uint8_t *)"\x30\x82spki";
	l.pubkey_len = 6;
	l.signed_bytes = (const uint8_t *)"signed listing";
	l.signed_len = 14;
	assert_int_equal(kh_store_escrow_listing_add(c->s, &l, 100), KH_OK);
}

/* A purchase request: id, request hash and idempotency key made of tag. */
static struct kh_store_escrow_hold req(uint8_t tag, uint8_t listing_tag, int64_t buyer, int64_t deadline)
{
	struct kh_store_escrow_hold h = {.buyer = buyer, .device_ua = 0x1234, .deadline = deadline};

	memset(h.id, tag, sizeof h.id);
	memset(h.listing, listing_tag, sizeof h.listing);
	memset(h.request_hash, tag, sizeof h.request_hash);
	memset(h.idem, tag ^ 0x80, sizeof h.idem);
	h.request = (const uint8_t *)"the device's signed request";
	h.request_len = 27;
	return h;
}

static int64_t sql_int(struct ctx *c, const char *sql)
{
	return kh_test_sql_int(c->db, sql);
}

/* The device's notice on purchase id: outcome, and whether it was a repeat. */
static kh_err settle(struct ctx *c, const uint8_t *id, enum kh_store_escrow_state outcome, int64_t now, int *repeat)
{
	enum kh_store_escrow_state st = 0;
	kh_err r = kh_store_escrow_purchase_settle(c->s, id, outcome, (const uint8_t *)"signed notice", 13, now, &st,
						   repeat);

	if (r == KH_OK)
		assert_int_equal(st, outcome);
	return r;
}

/* Every row of the store, to compare: a refusal must leave them all as they were. */
static char *rows(struct ctx *c)
{
	return kh_test_sql_dump(c->db);
}

static void unchanged(struct ctx *c, char *before)
{
	char *after = kh_test_sql_dump(c->db);

	assert_string_equal(before, after);
	free(before);
	free(after);
}

static void test_accounts(void **state)
{
	struct ctx *c = *state;
	struct kh_store_escrow_account a;
	int64_t id = 0;

	assert_int_equal(kh_store_escrow_account_add(c->s, "alice", "USD", 101, &id), KH_ERR_EXISTS);
	assert_int_equal(kh_store_escrow_account_add(c->s, "dave", "eur", 101, &id), KH_ERR_INVAL);
	assert_int_equal(kh_store_escrow_account_add(c->s, "dave", "EURO", 101, &id), KH_ERR_INVAL);
	assert_int_equal(kh_store_escrow_account_add(c->s, "", "EUR", 101, &id), KH_ERR_INVAL);
	assert_int_equal(kh_store_escrow_account_find(c->s, "bob", &a), KH_OK);
	assert_int_equal(a.id, c->bob);
	assert_string_equal(a.currency, "EUR");
	assert_int_equal(a.available + a.held + a.deposited + a.withdrawn, 0);
	assert_int_equal(kh_store_escrow_account_get(c->s, c->carol, &a), KH_OK);
	assert_string_equal(a.name, "carol");
	assert_string_equal(a.currency, "USD");
	assert_int_equal(kh_store_escrow_account_find(c->s, "dave", &a), KH_ERR_NOTFOUND);
	/* one outside account per currency, and it is no user's */
	assert_int_equal(sql_int(c, "SELECT count(*) FROM escrow_accounts WHERE kind = 'outside'"), 2);
	id = sql_int(c, "SELECT id FROM escrow_accounts WHERE kind = 'outside' AND currency = 'EUR'");
	assert_int_equal(kh_store_escrow_account_get(c->s, id, &a), KH_ERR_NOTFOUND);
}

static void test_deposit_withdraw(void **state)
{
	struct ctx *c = *state;
	uint8_t k1[16], k2[16];
	int64_t av = 0;
	char *before;

	memset(k1, 1, sizeof k1);
	memset(k2, 2, sizeof k2);
	assert_int_equal(kh_store_escrow_deposit(c->s, c->alice, 500, NULL, 110, &av), KH_OK);
	assert_int_equal(av, 500);
	audit_ok(c->s, "EUR", 500, 0, 0);
	assert_int_equal(kh_store_escrow_deposit(c->s, c->alice, 250, k1, 111, &av), KH_OK);
	assert_int_equal(av, 750);
	audit_ok(c->s, "EUR", 750, 0, 0);
	/* the same deposit again (its answer lost): the first outcome, no money moves */
	assert_int_equal(kh_store_escrow_deposit(c->s, c->alice, 250, k1, 112, &av), KH_OK);
	assert_int_equal(av, 750);
	assert_int_equal(acct(c, c->alice).available, 750);
	/* the key on another amount or as a withdrawal */
	assert_int_equal(kh_store_escrow_deposit(c->s, c->alice, 251, k1, 112, &av), KH_ERR_IDEM_MISMATCH);
	assert_int_equal(kh_store_escrow_withdraw(c->s, c->alice, 250, k1, 112, &av), KH_ERR_IDEM_MISMATCH);
	assert_int_equal(kh_store_escrow_withdraw(c->s, c->alice, 300, k2, 113, &av), KH_OK);
	assert_int_equal(av, 450);
	assert_int_equal(kh_store_escrow_withdraw(c->s, c->alice, 300, k2, 114, &av), KH_OK);
	assert_int_equal(av, 450);
	audit_ok(c->s, "EUR", 750, 300, 0);
	assert_int_equal(acct(c, c->alice).withdrawn, 300);
	assert_int_equal(acct(c, c->alice).deposited, 750);

	/* above available: refused, not a row changed */
	before = rows(c);
	assert_int_equal(kh_store_escrow_withdraw(c->s, c->alice, 451, NULL, 115, &av), KH_ERR_FUNDS);
	assert_int_equal(kh_store_escrow_withdraw(c->s, c->bob, 1, NULL, 115, &av), KH_ERR_FUNDS);
	assert_int_equal(kh_store_escrow_deposit(c->s, c->alice, 0, NULL, 115, &av), KH_ERR_INVAL);
	assert_int_equal(kh_store_escrow_deposit(c->s, c->alice, KH_STORE_ESCROW_AMOUNT_MAX + 1, NULL, 115, &av),
			 KH_ERR_INVAL);
	assert_int_equal(kh_store_escrow_deposit(c->s, 999, 5, NULL, 115, &av), KH_ERR_NOTFOUND);
	unchanged(c, before);
	assert_int_equal(kh_store_escrow_withdraw(c->s, c->alice, 450, NULL, 116, &av), KH_OK);
	assert_int_equal(av, 0);
	audit_ok(c->s, "EUR", 750, 750, 0);

	/* a currency holds at most 2^62: the deposit beyond is refused whole */
	for (int i = 0; i < 512; i++)
		assert_int_equal(kh_store_escrow_deposit(c->s, c->carol, KH_STORE_ESCROW_AMOUNT_MAX, NULL, 120, &av), KH_OK);
	assert_int_equal(av, KH_STORE_ESCROW_CURRENCY_MAX);
	assert_int_equal(kh_store_escrow_deposit(c->s, c->carol, 1, NULL, 121, &av), KH_ERR_TOO_LARGE);
	audit_ok(c->s, "USD", KH_STORE_ESCROW_CURRENCY_MAX, 0, 0);
}

static kh_err got_listing(void *arg, const struct kh_store_escrow_listing *l)
{
	int *n = arg;

	assert_string_equal(l->content, "film-1");
	assert_int_equal(l->pubkey_len, 6);
	assert_memory_equal(l->signed_bytes, "signed listing", 14);
	(*n)++;
	return KH_OK;
}

static void test_listings(void **state)
{
	struct ctx *c = *state;
	struct kh_store_escrow_listing l = {.seller = c->bob, .content = "x", .price = 5, .deadline_secs = 1};
	uint8_t id[16];
	int n = 0, more = 0;

	listing(c, 0xA1, c->bob, 40, "EUR");
	listing(c, 0xA2, c->carol, 40, "USD");
	memset(l.id, 0xA3, sizeof l.id);
	memcpy(l.currency, "USD", 4); /* not bob's currency */
	l.pubkey = l.signed_bytes = (const uint8_t *)"k";
	l.pubkey_len = l.signed_len = 1;
	assert_int_equal(kh_store_escrow_listing_add(c->s, &l, 100), KH_ERR_INVAL);
	memcpy(l.currency, "EUR", 4);
	memset(l.id, 0xA1, sizeof l.id);
	assert_int_equal(kh_store_escrow_listing_add(c->s, &l, 100), KH_ERR_EXISTS);
	memset(id, 0xA1, sizeof id);
	assert_int_equal(kh_store_escrow_listing_get(c->s, id, got_listing, &n), KH_OK);
	memset(id, 0xEE, sizeof id);
	assert_int_equal(kh_store_escrow_listing_get(c->s, id, got_listing, &n), KH_ERR_NOTFOUND);
	assert_int_equal(n, 1);
	assert_int_equal(kh_store_escrow_listings_page(c->s, 0, NULL, 1, got_listing, &n, &more), KH_OK);
	assert_true(more);
	memset(id, 0xA1, sizeof id);
	assert_int_equal(kh_store_escrow_listings_page(c->s, 0, id, 5, got_listing, &n, &more), KH_OK);
	assert_false(more);
	assert_int_equal(n, 3);
	assert_int_equal(kh_store_escrow_listings_page(c->s, c->carol, NULL, 5, got_listing, &n, &more), KH_OK);
	assert_int_equal(n, 4);
}

static void test_hold(void **state)
{
	struct ctx *c = *state;
	struct kh_store_escrow_hold h = req(0x01, 0xA1, c->alice, 1000), other;
	struct kh_store_escrow_purchase p, q;
	int64_t av = 0;
	int repeat = -1;
	char *before;

	listing(c, 0xA1, c->bob, 40, "EUR");
	listing(c, 0xA2, c->carol, 40, "USD");
	assert_int_equal(kh_store_escrow_deposit(c->s, c->alice, 30, NULL, 110, &av), KH_OK);
	/* 30 < 40: refused, nothing changed */
	before = rows(c);
	assert_int_equal(kh_store_escrow_purchase_hold(c->s, &h, 200, &p, &repeat), KH_ERR_FUNDS);
	unchanged(c, before);
	assert_int_equal(kh_store_escrow_deposit(c->s, c->alice, 50, NULL, 201, &av), KH_OK);
	assert_int_equal(kh_store_escrow_purchase_hold(c->s, &h, 202, &p, &repeat), KH_OK);
	assert_int_equal(repeat, 0);
	assert_int_equal(p.state, KH_STORE_ESCROW_HELD);
	assert_int_equal(p.price, 40);
	assert_int_equal(p.seller, c->bob);
	assert_int_equal(p.request_len, 27);
	assert_int_equal(acct(c, c->alice).available, 40);
	assert_int_equal(acct(c, c->alice).held, 40);
	audit_ok(c->s, "EUR", 80, 0, 40);
	/* the retry: the same purchase, one hold */
	assert_int_equal(kh_store_escrow_purchase_hold(c->s, &h, 203, &q, &repeat), KH_OK);
	assert_int_equal(repeat, 1);
	assert_memory_equal(&q, &p, sizeof p);
	assert_int_equal(acct(c, c->alice).held, 40);
	assert_int_equal(sql_int(c, "SELECT count(*) FROM escrow_movements WHERE kind = 'hold'"), 1);
	/* the same id with another request, or the same idempotency key on another purchase */
	before = rows(c);
	other = h;
	other.request_hash[0] ^= 1;
	assert_int_equal(kh_store_escrow_purchase_hold(c->s, &other, 204, &q, &repeat), KH_ERR_EXISTS);
	other = req(0x02, 0xA1, c->alice, 1000);
	memcpy(other.idem, h.idem, sizeof h.idem);
	assert_int_equal(kh_store_escrow_purchase_hold(c->s, &other, 204, &q, &repeat), KH_ERR_EXISTS);
	/* a listing in another currency, a listing that does not exist */
	other = req(0x03, 0xA2, c->alice, 1000);
	assert_int_equal(kh_store_escrow_purchase_hold(c->s, &other, 204, &q, &repeat), KH_ERR_INVAL);
	other = req(0x03, 0xEE, c->alice, 1000);
	assert_int_equal(kh_store_escrow_purchase_hold(c->s, &other, 204, &q, &repeat), KH_ERR_NOTFOUND);
	/* the seller cannot withdraw what is held for its listing; the buyer cannot either */
	assert_int_equal(kh_store_escrow_withdraw(c->s, c->bob, 40, NULL, 205, &av), KH_ERR_FUNDS);
	assert_int_equal(kh_store_escrow_withdraw(c->s, c->alice, 41, NULL, 205, &av), KH_ERR_FUNDS);
	unchanged(c, before);
}

static void test_answer(void **state)
{
	struct ctx *c = *state;
	struct kh_store_escrow_hold h = req(0x01, 0xA1, c->alice, 1000);
	struct kh_store_escrow_purchase p;
	int64_t av = 0;

	listing(c, 0xA1, c->bob, 40, "EUR");
	assert_int_equal(kh_store_escrow_deposit(c->s, c->alice, 40, NULL, 110, &av), KH_OK);
	assert_int_equal(kh_store_escrow_purchase_hold(c->s, &h, 200, &p, NULL), KH_OK);
	assert_int_equal(p.answer_len, 0);
	assert_int_equal(kh_store_escrow_purchase_answer(c->s, h.id, (const uint8_t *)"z signed", 8), KH_OK);
	assert_int_equal(kh_store_escrow_purchase_answer(c->s, h.id, (const uint8_t *)"z signed", 8), KH_OK);
	assert_int_equal(kh_store_escrow_purchase_answer(c->s, h.id, (const uint8_t *)"z other!", 8),
			 KH_ERR_PURCHASE_STATE);
	memset(h.request_hash, 0x77, 1);
	assert_int_equal(kh_store_escrow_purchase_answer(c->s, h.listing, (const uint8_t *)"z", 1), KH_ERR_NOTFOUND);
	/* a retry of the purchase gets the answer recorded */
	h = req(0x01, 0xA1, c->alice, 1000);
	assert_int_equal(kh_store_escrow_purchase_hold(c->s, &h, 201, &p, NULL), KH_OK);
	assert_int_equal(p.answer_len, 8);
	assert_memory_equal(p.answer, "z signed", 8);
}

static void test_settle(void **state)
{
	struct ctx *c = *state;
	struct kh_store_escrow_hold h1 = req(0x01, 0xA1, c->alice, 1000), h2 = req(0x02, 0xA1, c->alice, 1000),
				    h3 = req(0x03, 0xA1, c->alice, 300);
	struct kh_store_escrow_purchase p;
	int64_t av = 0;
	int repeat = -1;
	char *before;

	listing(c, 0xA1, c->bob, 40, "EUR");
	assert_int_equal(kh_store_escrow_deposit(c->s, c->alice, 200, NULL, 110, &av), KH_OK);
	assert_int_equal(kh_store_escrow_purchase_hold(c->s, &h1, 200, &p, NULL), KH_OK);
	assert_int_equal(kh_store_escrow_purchase_hold(c->s, &h2, 200, &p, NULL), KH_OK);
	assert_int_equal(kh_store_escrow_purchase_hold(c->s, &h3, 200, &p, NULL), KH_OK);
	audit_ok(c->s, "EUR", 200, 0, 120);

	/* delivered posts once: seller +40, buyer held -40 */
	assert_int_equal(settle(c, h1.id, KH_STORE_ESCROW_DELIVERED, 210, &repeat), KH_OK);
	assert_int_equal(repeat, 0);
	assert_int_equal(acct(c, c->bob).available, 40);
	assert_int_equal(acct(c, c->alice).held, 80);
	assert_int_equal(acct(c, c->alice).available, 80);
	audit_ok(c->s, "EUR", 200, 0, 80);
	/* again: nothing moves; failed after delivered: refused, nothing changes */
	before = rows(c);
	assert_int_equal(settle(c, h1.id, KH_STORE_ESCROW_DELIVERED, 211, &repeat), KH_OK);
	assert_int_equal(repeat, 1);
	assert_int_equal(settle(c, h1.id, KH_STORE_ESCROW_FAILED, 212, &repeat), KH_ERR_PURCHASE_STATE);
	assert_int_equal(settle(c, h1.id, KH_STORE_ESCROW_SWEPT, 212, &repeat), KH_ERR_INVAL);
	unchanged(c, before);
	/* failed voids: the buyer's money back; delivered after it refused */
	assert_int_equal(settle(c, h2.id, KH_STORE_ESCROW_FAILED, 220, &repeat), KH_OK);
	assert_int_equal(acct(c, c->alice).available, 120);
	assert_int_equal(acct(c, c->alice).held, 40);
	assert_int_equal(acct(c, c->bob).available, 40);
	assert_int_equal(settle(c, h2.id, KH_STORE_ESCROW_DELIVERED, 221, &repeat), KH_ERR_PURCHASE_STATE);
	audit_ok(c->s, "EUR", 200, 0, 40);
	/* swept at its deadline: a late notice either way is refused, no refund */
	{
		unsigned n = 0;
		assert_int_equal(kh_store_escrow_sweep(c->s, 300, 10, &n), KH_OK);
		assert_int_equal(n, 1);
	}
	before = rows(c);
	assert_int_equal(settle(c, h3.id, KH_STORE_ESCROW_FAILED, 301, &repeat), KH_ERR_PURCHASE_STATE);
	assert_int_equal(settle(c, h3.id, KH_STORE_ESCROW_DELIVERED, 301, &repeat), KH_ERR_PURCHASE_STATE);
	unchanged(c, before);
	assert_int_equal(acct(c, c->bob).available, 80);
	assert_int_equal(acct(c, c->alice).held, 0);
	assert_int_equal(settle(c, h3.listing, KH_STORE_ESCROW_FAILED, 301, &repeat), KH_ERR_NOTFOUND);
	audit_ok(c->s, "EUR", 200, 0, 0);
	/* the seller withdraws what was posted to it, no more */
	assert_int_equal(kh_store_escrow_withdraw(c->s, c->bob, 81, NULL, 310, &av), KH_ERR_FUNDS);
	assert_int_equal(kh_store_escrow_withdraw(c->s, c->bob, 80, NULL, 310, &av), KH_OK);
	audit_ok(c->s, "EUR", 200, 80, 0);
}

static kh_err count_purchase(void *arg, const struct kh_store_escrow_purchase *p)
{
	int *n = arg;

	n[p->state]++;
	return KH_OK;
}

static void test_sweep(void **state)
{
	struct ctx *c = *state;
	struct kh_store_escrow_purchase p;
	int64_t av = 0;
	unsigned n = 0;
	int states[5] = {0}, more = 0;

	listing(c, 0xA1, c->bob, 10, "EUR");
	assert_int_equal(kh_store_escrow_deposit(c->s, c->alice, 100, NULL, 110, &av), KH_OK);
	for (uint8_t i = 1; i <= 6; i++) {
		struct kh_store_escrow_hold h = req(i, 0xA1, c->alice, 500 + 100 * (i % 3)); /* 600 700 500 ... */
		assert_int_equal(kh_store_escrow_purchase_hold(c->s, &h, 200, &p, NULL), KH_OK);
	}
	assert_int_equal(kh_store_escrow_sweep(c->s, 499, 10, &n), KH_OK);
	assert_int_equal(n, 0);
	/* deadline <= now: the two at 500 and the two at 600 */
	assert_int_equal(kh_store_escrow_sweep(c->s, 600, 3, &n), KH_OK);
	assert_int_equal(n, 3);
	assert_int_equal(kh_store_escrow_sweep(c->s, 600, 10, &n), KH_OK);
	assert_int_equal(n, 1);
	assert_int_equal(kh_store_escrow_sweep(c->s, 600, 10, &n), KH_OK);
	assert_int_equal(n, 0);
	assert_int_equal(acct(c, c->bob).available, 40);
	assert_int_equal(acct(c, c->alice).held, 20);
	audit_ok(c->s, "EUR", 100, 0, 20);
	assert_int_equal(kh_store_escrow_purchases_page(c->s, c->alice, 0, NULL, 100, count_purchase, states, &more),
			 KH_OK);
	assert_int_equal(states[KH_STORE_ESCROW_SWEPT], 4);
	assert_int_equal(states[KH_STORE_ESCROW_HELD], 2);
	assert_int_equal(kh_store_escrow_purchases_page(c->s, c->bob, 1, NULL, 100, count_purchase, states, &more), KH_OK);
	assert_int_equal(states[KH_STORE_ESCROW_SWEPT], 8);
	assert_int_equal(kh_store_escrow_sweep(c->s, 600, 0, &n), KH_ERR_INVAL);
}

/* ---- two connections at once ---- */

struct racer {
	const char *db;
	pthread_barrier_t *go;
	int sweep;
	struct kh_store_escrow_hold h;
	kh_err r;
	unsigned swept;
};

static void *race(void *arg)
{
	struct racer *x = arg;
	struct kh_store *s = NULL;
	struct kh_store_escrow_purchase *p = malloc(sizeof *p);

	x->r = p ? kh_store_open(x->db, &s) : KH_ERR_NOMEM;
	pthread_barrier_wait(x->go);
	if (x->r == KH_OK)
		x->r = x->sweep ? kh_store_escrow_sweep(s, 5000, KH_STORE_ESCROW_SWEEP_MAX, &x->swept)
				: kh_store_escrow_purchase_hold(s, &x->h, 300, p, NULL);
	kh_store_close(s);
	free(p);
	return NULL;
}

static void run_two(struct racer x[2])
{
	pthread_barrier_t go;
	pthread_t t[2];

	assert_int_equal(pthread_barrier_init(&go, NULL, 2), 0);
	for (int i = 0; i < 2; i++) {
		x[i].go = &go;
		assert_int_equal(pthread_create(&t[i], NULL, race, &x[i]), 0);
	}
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	pthread_barrier_destroy(&go);
}

/* Two purchases spending the same money at once: one holds it, the other is short. */
static void test_spend_race(void **state)
{
	struct ctx *c = *state;
	struct racer x[2];
	int64_t av = 0;

	listing(c, 0xA1, c->bob, 40, "EUR");
	for (uint8_t round = 0; round < 5; round++) {
		assert_int_equal(kh_store_escrow_deposit(c->s, c->alice, 40, NULL, 290, &av), KH_OK);
		assert_int_equal(av, 40);
		for (int i = 0; i < 2; i++)
			x[i] = (struct racer){.db = c->db, .h = req((uint8_t)(2 * round + i + 1), 0xA1, c->alice, 9999),
					      .r = KH_ERR_INTERNAL};
		run_two(x);
		assert_true((x[0].r == KH_OK && x[1].r == KH_ERR_FUNDS) || (x[0].r == KH_ERR_FUNDS && x[1].r == KH_OK));
		assert_int_equal(acct(c, c->alice).available, 0);
		assert_int_equal(acct(c, c->alice).held, 40 * (round + 1));
		audit_ok(c->s, "EUR", 40 * (round + 1), 0, 40 * (round + 1));
	}
	assert_int_equal(sql_int(c, "SELECT count(*) FROM escrow_purchases"), 5);
}

/* Two sweepers on the same expired purchases: each posted once. */
static void test_sweep_race(void **state)
{
	struct ctx *c = *state;
	struct kh_store_escrow_purchase p;
	struct racer x[2];
	int64_t av = 0;

	listing(c, 0xA1, c->bob, 3, "EUR");
	assert_int_equal(kh_store_escrow_deposit(c->s, c->alice, 1000, NULL, 110, &av), KH_OK);
	for (int round = 0; round < 3; round++) {
		for (int i = 1; i <= 20; i++) {
			struct kh_store_escrow_hold h = req((uint8_t)(round * 20 + i), 0xA1, c->alice, 400 + i);
			assert_int_equal(kh_store_escrow_purchase_hold(c->s, &h, 300, &p, NULL), KH_OK);
		}
		for (int i = 0; i < 2; i++)
			x[i] = (struct racer){.db = c->db, .sweep = 1, .r = KH_ERR_INTERNAL};
		run_two(x);
		assert_int_equal(x[0].r, KH_OK);
		assert_int_equal(x[1].r, KH_OK);
		assert_int_equal(x[0].swept + x[1].swept, 20);
		assert_int_equal(acct(c, c->bob).available, 60 * (round + 1));
		assert_int_equal(acct(c, c->alice).held, 0);
		assert_int_equal(sql_int(c, "SELECT count(*) FROM escrow_movements WHERE kind = 'post'"), 20 * (round + 1));
		audit_ok(c->s, "EUR", 1000, 0, 0);
	}
}

/* ---- the audit finds what was changed behind the store's back ---- */

static void test_audit_tamper(void **state)
{
	struct ctx *c = *state;
	struct kh_store_escrow_hold h = req(0x01, 0xA1, c->alice, 1000);
	struct kh_store_escrow_purchase p;
	struct kh_store_escrow_audit au;
	int64_t av = 0, mv;
	char sql[200];

	listing(c, 0xA1, c->bob, 40, "EUR");
	assert_int_equal(kh_store_escrow_deposit(c->s, c->alice, 100, NULL, 110, &av), KH_OK);
	assert_int_equal(kh_store_escrow_deposit(c->s, c->carol, 7, NULL, 110, &av), KH_OK);
	assert_int_equal(kh_store_escrow_purchase_hold(c->s, &h, 200, &p, NULL), KH_OK);
	audit_ok(c->s, "EUR", 100, 0, 40);
	audit_ok(c->s, "USD", 7, 0, 0);

	/* a cached balance raised by 5 */
	snprintf(sql, sizeof sql,
		 "UPDATE escrow_balances SET balance = balance + 5 WHERE account_id = %lld AND bucket = 'available'",
		 (long long)c->alice);
	kh_test_sql_exec(c->db, sql);
	assert_int_equal(kh_store_escrow_audit(c->s, &au), KH_ERR_LEDGER);
	assert_string_equal(au.first.check, "balance_cache");
	assert_int_equal(au.first.account, c->alice);
	assert_string_equal(au.first.bucket, "available");
	assert_string_equal(au.first.currency, "EUR");
	assert_int_equal(au.first.cached, 65);
	assert_int_equal(au.first.recomputed, 60);
	snprintf(sql, sizeof sql,
		 "UPDATE escrow_balances SET balance = balance - 5 WHERE account_id = %lld AND bucket = 'available'",
		 (long long)c->alice);
	kh_test_sql_exec(c->db, sql);
	audit_ok(c->s, "EUR", 100, 0, 40);

	/* an entry changed: the account whose balance no longer adds up */
	snprintf(sql, sizeof sql, "UPDATE escrow_entries SET amount = amount + 7 WHERE account_id = %lld AND amount > 0",
		 (long long)c->carol);
	kh_test_sql_exec(c->db, sql);
	assert_int_equal(kh_store_escrow_audit(c->s, &au), KH_ERR_LEDGER);
	assert_string_equal(au.first.check, "balance_cache");
	assert_int_equal(au.first.account, c->carol);
	assert_int_equal(au.first.cached, 7);
	assert_int_equal(au.first.recomputed, 14);
	/* and with the cache made to agree, the movement that no longer sums to zero */
	snprintf(sql, sizeof sql, "UPDATE escrow_balances SET balance = 14 WHERE account_id = %lld AND bucket = 'available'",
		 (long long)c->carol);
	kh_test_sql_exec(c->db, sql);
	mv = sql_int(c, "SELECT m.id FROM escrow_movements m JOIN escrow_accounts a ON a.id = m.account_id "
			"WHERE a.name = 'carol'");
	assert_int_equal(kh_store_escrow_audit(c->s, &au), KH_ERR_LEDGER);
	assert_string_equal(au.first.check, "movement_entries");
	assert_int_equal(au.first.account, c->carol);
	assert_int_equal(au.first.movement, mv);
	assert_int_equal(au.first.cached, 7);
	assert_int_equal(au.first.recomputed, 14);
}

/* A hold whose purchase row says something else: the purchase check names the buyer. */
static void test_audit_purchase(void **state)
{
	struct ctx *c = *state;
	struct kh_store_escrow_hold h = req(0x01, 0xA1, c->alice, 1000);
	struct kh_store_escrow_purchase p;
	struct kh_store_escrow_audit au;
	int64_t av = 0;

	listing(c, 0xA1, c->bob, 40, "EUR");
	assert_int_equal(kh_store_escrow_deposit(c->s, c->alice, 100, NULL, 110, &av), KH_OK);
	assert_int_equal(kh_store_escrow_purchase_hold(c->s, &h, 200, &p, NULL), KH_OK);
	kh_test_sql_exec(c->db, "UPDATE escrow_purchases SET state = 'delivered', settled_at = 1");
	assert_int_equal(kh_store_escrow_audit(c->s, &au), KH_ERR_LEDGER);
	assert_string_equal(au.first.check, "purchase_movements");
	assert_int_equal(au.first.account, c->alice);
	assert_true(au.first.purchase_set);
	assert_memory_equal(au.first.purchase, h.id, 16);
}

/* ---- keyhole store check runs the ledger's checks ---- */

#define FOUND_MAX 16

struct findings {
	unsigned n;
	struct {
		char name[48], table[32], examples[512];
		int64_t rows;
	} f[FOUND_MAX];
};

static kh_err on_finding(void *arg, const struct kh_store_finding *f)
{
	struct findings *x = arg;

	assert_true(x->n < FOUND_MAX);
	assert_non_null(f->what);
	snprintf(x->f[x->n].name, sizeof x->f[x->n].name, "%s", f->name);
	snprintf(x->f[x->n].table, sizeof x->f[x->n].table, "%s", f->table);
	snprintf(x->f[x->n].examples, sizeof x->f[x->n].examples, "%s", f->examples);
	x->f[x->n].rows = f->rows;
	x->n++;
	return KH_OK;
}

/* kh_store_invariants on s: how many invariants it found broken (each one into *x). */
static unsigned invariants(struct kh_store *s, struct findings *x)
{
	unsigned checked = 0, broken = 0;

	memset(x, 0, sizeof *x);
	assert_int_equal(kh_store_invariants(s, on_finding, x, &checked, &broken), KH_OK);
	assert_int_equal(broken, x->n);
	assert_true(checked > broken);
	return broken;
}

/* The finding named name, with its table and rows, whose examples hold example. */
static void finding_is(const struct findings *x, const char *name, const char *table, int64_t rows,
		       const char *example)
{
	for (unsigned i = 0; i < x->n; i++) {
		if (strcmp(x->f[i].name, name) != 0)
			continue;
		assert_string_equal(x->f[i].table, table);
		assert_int_equal(x->f[i].rows, rows);
		if (strstr(x->f[i].examples, example) == NULL)
			fail_msg("%s: examples \"%s\" lack \"%s\"", name, x->f[i].examples, example);
		return;
	}
	fail_msg("%s not found (%u others)", name, x->n);
}

/*
 * A ledger made by real movements (deposits, a withdrawal, purchases held, delivered, failed,
 * swept and still held) passes the store's check; a cached balance changed behind the store's
 * back, then one entry of a movement's pair deleted, are each found by name, with the account,
 * movement and purchase at fault, and counted as broken; put back, the check passes again.
 */
static void test_store_check(void **state)
{
	struct ctx *c = *state;
	struct kh_store_escrow_hold h;
	struct kh_store_escrow_purchase p;
	struct kh_store_escrow_audit au;
	struct findings x;
	struct kh_store *empty = NULL;
	char *url = kh_test_db(c->dir, "empty.db"), sql[200], want[160], hex[33];
	int64_t av = 0, bob_av, hold4;
	unsigned n = 0;
	uint8_t dep[16];

	/* a store that never saw the escrow */
	assert_int_equal(kh_store_open(url, &empty), KH_OK);
	assert_int_equal(invariants(empty, &x), 0);
	kh_store_close(empty);
	kh_test_db_drop(url);
	/* accounts, no movement yet */
	assert_int_equal(invariants(c->s, &x), 0);

	memset(dep, 0xD1, sizeof dep);
	listing(c, 0xA1, c->bob, 300, "EUR");
	assert_int_equal(kh_store_escrow_deposit(c->s, c->alice, 1000, dep, 110, &av), KH_OK);
	assert_int_equal(kh_store_escrow_deposit(c->s, c->alice, 1000, dep, 111, &av), KH_OK); /* its repeat */
	assert_int_equal(kh_store_escrow_deposit(c->s, c->alice, 500, NULL, 112, &av), KH_OK);
	assert_int_equal(kh_store_escrow_deposit(c->s, c->carol, 50, NULL, 112, &av), KH_OK);
	for (uint8_t tag = 1; tag <= 4; tag++) {
		h = req(tag, 0xA1, c->alice, tag == 3 ? 1000 : 5000);
		assert_int_equal(kh_store_escrow_purchase_hold(c->s, &h, 200, &p, NULL), KH_OK);
	}
	memset(h.id, 1, sizeof h.id);
	assert_int_equal(settle(c, h.id, KH_STORE_ESCROW_DELIVERED, 300, NULL), KH_OK);
	memset(h.id, 2, sizeof h.id);
	assert_int_equal(settle(c, h.id, KH_STORE_ESCROW_FAILED, 300, NULL), KH_OK);
	assert_int_equal(kh_store_escrow_sweep(c->s, 2000, 10, &n), KH_OK);
	assert_int_equal(n, 1); /* purchase 3; purchase 4 still held */
	assert_int_equal(kh_store_escrow_withdraw(c->s, c->bob, 100, NULL, 2100, &bob_av), KH_OK);
	assert_int_equal(bob_av, 500);
	audit_ok(c->s, "EUR", 1500, 100, 300);
	assert_int_equal(invariants(c->s, &x), 0);

	/* a cached balance raised by 5: one invariant broken, bob's available named */
	snprintf(sql, sizeof sql,
		 "UPDATE escrow_balances SET balance = balance + 5 WHERE account_id = %lld AND bucket = 'available'",
		 (long long)c->bob);
	kh_test_sql_exec(c->db, sql);
	assert_int_equal(invariants(c->s, &x), 1);
	snprintf(want, sizeof want, "account=%lld bucket=available currency=EUR cached=505 recomputed=500",
		 (long long)c->bob);
	finding_is(&x, "escrow_balance_cache", "escrow_balances", 1, want);
	/* the audit, by the same query, says the same */
	assert_int_equal(kh_store_escrow_audit(c->s, &au), KH_ERR_LEDGER);
	assert_string_equal(au.first.check, "balance_cache");
	assert_int_equal(au.first.account, c->bob);
	snprintf(sql, sizeof sql,
		 "UPDATE escrow_balances SET balance = balance - 5 WHERE account_id = %lld AND bucket = 'available'",
		 (long long)c->bob);
	kh_test_sql_exec(c->db, sql);
	assert_int_equal(invariants(c->s, &x), 0);

	/* one entry of a pair deleted: purchase 4's hold credited nothing to alice's held bucket */
	hold4 = sql_int(c, "SELECT max(id) FROM escrow_movements WHERE kind = 'hold'");
	snprintf(sql, sizeof sql, "DELETE FROM escrow_entries WHERE movement_id = %lld AND amount > 0", (long long)hold4);
	kh_test_sql_exec(c->db, sql);
	assert_int_equal(invariants(c->s, &x), 3);
	snprintf(want, sizeof want, "account=%lld bucket=held currency=EUR cached=300 recomputed=0", (long long)c->alice);
	finding_is(&x, "escrow_balance_cache", "escrow_balances", 1, want);
	for (int i = 0; i < 16; i++)
		snprintf(hex + 2 * i, 3, "%02x", 4);
	snprintf(want, sizeof want, "account=%lld cached=300 recomputed=0 movement=%lld purchase=%s", (long long)c->alice,
		 (long long)hold4, hex);
	finding_is(&x, "escrow_movement_entries", "escrow_entries", 1, want);
	finding_is(&x, "escrow_currency_sum", "escrow_entries", 1, "currency=EUR cached=0 recomputed=-300");
}

/* ---- 8 threads of random movements ---- */

#define THREADS 8
#define ROUNDS 200
#define NACCT 8

struct worker {
	const char *db;
	int idx;
	const int64_t *accts; /* NACCT: even ones EUR, odd ones USD; each sells listing 0xB0 + i */
	uint64_t rng;
	/* the tally: per currency (0 EUR, 1 USD) */
	int64_t deposited[2], withdrawn[2];
	int64_t movements, busy, ok;
	uint8_t ids[ROUNDS][16];
	int nids;
	kh_err fail;
};

static uint64_t next(struct worker *w)
{
	w->rng ^= w->rng << 13;
	w->rng ^= w->rng >> 7;
	w->rng ^= w->rng << 17;
	return w->rng;
}

static int64_t price_of(int i)
{
	return 5 + 3 * i;
}

static void *work(void *arg)
{
	struct worker *w = arg;
	struct kh_store *s = NULL;
	struct kh_store_escrow_purchase *p = malloc(sizeof *p);

	if (p == NULL || (w->fail = kh_store_open(w->db, &s)) != KH_OK)
		goto out;
	for (int i = 0; i < ROUNDS && w->fail == KH_OK; i++) {
		unsigned op = (unsigned)(next(w) % 100);
		int a = (int)(next(w) % NACCT), cur = a & 1;
		int64_t amount = 1 + (int64_t)(next(w) % 150), av = 0, av2 = 0;
		uint8_t key[16];
		kh_err r;

		memset(key, 0, sizeof key);
		key[0] = (uint8_t)w->idx;
		key[1] = (uint8_t)i;
		key[2] = 0xD0;
		if (op < 20) {
			r = kh_store_escrow_deposit(s, w->accts[a], amount, key, i, &av);
			if (r == KH_OK) {
				w->deposited[cur] += amount;
				w->movements++;
				/* its repeat answers the first outcome and moves nothing */
				r = kh_store_escrow_deposit(s, w->accts[a], amount, key, i, &av2);
				if (r == KH_OK && av2 != av)
					r = KH_ERR_INTERNAL;
			}
		} else if (op < 35) {
			r = kh_store_escrow_withdraw(s, w->accts[a], amount, NULL, i, &av);
			if (r == KH_OK) {
				w->withdrawn[cur] += amount;
				w->movements++;
			}
		} else if (op < 65) {
			/* a listing in the buyer's currency, perhaps its own */
			int l = (int)((next(w) % (NACCT / 2)) * 2 + (unsigned)cur);
			struct kh_store_escrow_hold h = req(0, (uint8_t)(0xB0 + l), w->accts[a], i + 10 + (int)(next(w) % 40));
			int repeat = 0;

			memcpy(h.id, key, sizeof key);
			h.id[2] = 0xE0;
			memcpy(h.request_hash, h.id, sizeof h.id);
			memcpy(h.idem, h.id, sizeof h.id);
			h.idem[2] = 0xF0;
			r = kh_store_escrow_purchase_hold(s, &h, i, p, &repeat);
			if (r == KH_OK) {
				if (repeat || p->price != price_of(l))
					r = KH_ERR_INTERNAL;
				memcpy(w->ids[w->nids++], h.id, 16);
				w->movements++;
			}
		} else if (op < 90 && w->nids > 0) {
			enum kh_store_escrow_state out = next(w) & 1 ? KH_STORE_ESCROW_DELIVERED : KH_STORE_ESCROW_FAILED, st;
			int repeat = 0;

			r = kh_store_escrow_purchase_settle(s, w->ids[next(w) % (unsigned)w->nids], out, NULL, 0, i, &st,
							    &repeat);
			if (r == KH_OK && !repeat)
				w->movements++;
		} else {
			unsigned n = 0;

			r = kh_store_escrow_sweep(s, i, 5, &n);
			if (r == KH_OK)
				w->movements += n;
		}
		if (r == KH_OK)
			w->ok++;
		else if (r == KH_ERR_DB_BUSY)
			w->busy++; /* gave up after its retries: nothing of it stays */
		else if (r != KH_ERR_FUNDS && r != KH_ERR_PURCHASE_STATE)
			w->fail = r;
	}
out:
	kh_store_close(s);
	free(p);
	return NULL;
}

static kh_err held_price(void *arg, const struct kh_store_escrow_purchase *p)
{
	if (p->state == KH_STORE_ESCROW_HELD)
		*(int64_t *)arg += p->price;
	return KH_OK;
}

static void test_stress(void **state)
{
	struct ctx *c = *state;
	struct worker *w = calloc(THREADS, sizeof *w);
	struct kh_store_escrow_audit au;
	pthread_t th[THREADS];
	int64_t accts[NACCT], dep[2] = {0}, wd[2] = {0}, held[2] = {0}, movements = 0, ok = 0, sum[2] = {0};

	assert_non_null(w);
	for (int i = 0; i < NACCT; i++) {
		char name[16];
		snprintf(name, sizeof name, "s%d", i);
		assert_int_equal(kh_store_escrow_account_add(c->s, name, i & 1 ? "USD" : "EUR", 100, &accts[i]), KH_OK);
		listing(c, (uint8_t)(0xB0 + i), accts[i], price_of(i), i & 1 ? "USD" : "EUR");
	}
	for (int i = 0; i < THREADS; i++) {
		w[i] = (struct worker){.db = c->db, .idx = i, .accts = accts, .rng = 0x9E3779B97F4A7C15u * (uint64_t)(i + 1)};
		assert_int_equal(pthread_create(&th[i], NULL, work, &w[i]), 0);
	}
	for (int i = 0; i < THREADS; i++)
		pthread_join(th[i], NULL);
	for (int i = 0; i < THREADS; i++) {
		assert_int_equal(w[i].fail, KH_OK);
		for (int k = 0; k < 2; k++) {
			dep[k] += w[i].deposited[k];
			wd[k] += w[i].withdrawn[k];
		}
		movements += w[i].movements;
		ok += w[i].ok;
		for (int j = 0; j < w[i].nids; j++) { /* every hold a thread saw succeed is there */
			int64_t ph = 0;
			assert_int_equal(kh_store_escrow_purchase_get(c->s, w[i].ids[j], held_price, &ph), KH_OK);
		}
	}
	assert_true(ok > THREADS * ROUNDS / 2);
	/* held money by currency, from the purchases still held */
	for (int i = 0; i < NACCT; i++) {
		struct kh_store_escrow_account a = acct(c, accts[i]);
		int more = 0;
		int64_t h = 0;
		assert_int_equal(kh_store_escrow_purchases_page(c->s, accts[i], 0, NULL, KH_STORE_PAGE_MAX, held_price, &h,
								&more),
				 KH_OK);
		assert_false(more);
		assert_int_equal(a.held, h);
		held[i & 1] += h;
		sum[i & 1] += a.available + a.held;
	}
	assert_int_equal(kh_store_escrow_audit(c->s, &au), KH_OK);
	assert_int_equal(au.ncurrencies, 2);
	for (int k = 0; k < 2; k++) {
		const struct kh_store_escrow_totals *t = &au.cur[k];
		assert_string_equal(t->currency, k ? "USD" : "EUR");
		assert_int_equal(t->deposited, dep[k]);
		assert_int_equal(t->withdrawn, wd[k]);
		assert_int_equal(t->held, held[k]);
		assert_int_equal(t->available + t->held, dep[k] - wd[k]);
		assert_int_equal(sum[k], dep[k] - wd[k]);
		assert_int_equal(t->outside, wd[k] - dep[k]);
	}
	/* every movement a thread saw succeed is in the ledger once, and no other */
	assert_int_equal(au.movements, movements);
	assert_int_equal(au.entries, 2 * movements);
	free(w);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_accounts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deposit_withdraw, setup, teardown),
		cmocka_unit_test_setup_teardown(test_listings, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hold, setup, teardown),
		cmocka_unit_test_setup_teardown(test_answer, setup, teardown),
		cmocka_unit_test_setup_teardown(test_settle, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sweep, setup, teardown),
		cmocka_unit_test_setup_teardown(test_spend_race, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sweep_race, setup, teardown),
		cmocka_unit_test_setup_teardown(test_audit_tamper, setup, teardown),
		cmocka_unit_test_setup_teardown(test_audit_purchase, setup, teardown),
		cmocka_unit_test_setup_teardown(test_store_check, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stress, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
