/*
 * The distribution server's rows (src/store/ops_dist.c), on SQLite and again on PostgreSQL
 * (unit/test_store_dist_pg). The judges: money moves only in a charge, once per delivery
 * whatever is retried or raced (two connections charging one delivery at once debit it once),
 * never below zero (a refused charge changes no row), and every balance is the sum of its
 * ledger; a delivery moves forward only, and a step another request made first is refused; a
 * delivery fetched again on a receipt is released for nothing; a session ends when it says.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#include "keyhole/store_dist.h"

struct ctx {
	char *dir, *db;
	struct kh_store *s;
	int64_t alice, bob, prog, free_prog;
};

static const uint8_t salt[16] = {1, 2, 3}, hash[32] = {9, 8, 7};

static int setup(void **state)
{
	struct ctx *c = calloc(1, sizeof *c);
	struct kh_store_dist_program p = {.name = "editor", .version = 3, .price = 40};

	assert_non_null(c);
	assert_non_null(c->dir = kh_test_tmpdir());
	c->db = kh_test_db(c->dir, "center.db");
	assert_int_equal(kh_store_open(c->db, &c->s), KH_OK);
	assert_int_equal(kh_store_dist_account_add(c->s, "alice", salt, hash, 100, &c->alice), KH_OK);
	assert_int_equal(kh_store_dist_account_add(c->s, "bob", salt, hash, 100, &c->bob), KH_OK);
	p.manifest = (const uint8_t *)"name: editor\n";
	p.manifest_len = 13;
	p.program = (const uint8_t *)"\x7f" "ELF...";
	p.program_len = 7;
	assert_int_equal(kh_store_dist_program_add(c->s, &p, 100, &c->prog), KH_OK);
	p.name = "viewer";
	p.price = 0;
	assert_int_equal(kh_store_dist_program_add(c->s, &p, 100, &c->free_prog), KH_OK);
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

static int64_t sql_int(struct ctx *c, const char *sql)
{
	return kh_test_sql_int(c->db, sql);
}

/* Every account's balance is the sum of its ledger entries. */
static void ledger_holds(struct ctx *c)
{
	assert_int_equal(sql_int(c, "SELECT count(*) FROM dist_accounts a WHERE balance <> "
				    "(SELECT coalesce(sum(amount), 0) FROM dist_ledger l WHERE l.account_id = a.id)"),
			 0);
}

static int64_t balance(struct ctx *c, int64_t account)
{
	char sql[100];

	snprintf(sql, sizeof sql, "SELECT balance FROM dist_accounts WHERE id = %lld", (long long)account);
	return sql_int(c, sql);
}

/* A delivery of program for account, stepped up to KEYED (refetch: started on that receipt). */
static int64_t keyed(struct ctx *c, int64_t account, int64_t program, const uint8_t *refetch)
{
	struct kh_store_dist_delivery d = {.account_id = account, .program_id = program, .peer_len = 4};
	int64_t id = 0;

	memcpy(d.peer, "peer", 4);
	memset(d.fp, 0xF0, sizeof d.fp);
	if (refetch) {
		d.refetch_set = 1;
		memcpy(d.refetch, refetch, sizeof d.refetch);
	}
	assert_int_equal(kh_store_dist_delivery_add(c->s, &d, 200, &id), KH_OK);
	assert_int_equal(kh_store_dist_delivery_step(c->s, id, KH_STORE_DIST_HELLO, KH_STORE_DIST_PROVEN, NULL, 0, NULL, 0,
						     201),
			 KH_OK);
	assert_int_equal(kh_store_dist_delivery_step(c->s, id, KH_STORE_DIST_PROVEN, KH_STORE_DIST_KEYED,
						     (const uint8_t *)"peer2", 5, (const uint8_t *)"sealed-kx", 9, 202),
			 KH_OK);
	return id;
}

static kh_err got_account(void *arg, const struct kh_store_dist_account *a)
{
	struct kh_store_dist_account *out = arg;

	assert_memory_equal(a->salt, salt, sizeof salt);
	assert_memory_equal(a->hash, hash, sizeof hash);
	out->id = a->id;
	out->balance = a->balance;
	return KH_OK;
}

static void test_accounts(void **state)
{
	struct ctx *c = *state;
	struct kh_store_dist_account a = {0};
	int64_t id = 0, bal = 0;
	uint8_t tok[32] = {1}, other[32] = {2};
	unsigned n = 0;

	assert_int_equal(kh_store_dist_account_add(c->s, "alice", salt, hash, 100, &id), KH_ERR_EXISTS);
	assert_int_equal(kh_store_dist_account_add(c->s, "", salt, hash, 100, &id), KH_ERR_INVAL);
	assert_int_equal(kh_store_dist_account_find(c->s, "alice", got_account, &a), KH_OK);
	assert_int_equal(a.id, c->alice);
	assert_int_equal(a.balance, 0);
	assert_int_equal(kh_store_dist_account_find(c->s, "carol", got_account, &a), KH_ERR_NOTFOUND);
	assert_int_equal(kh_store_dist_deposit(c->s, c->alice, 25, 110, &bal), KH_OK);
	assert_int_equal(bal, 25);
	assert_int_equal(kh_store_dist_deposit(c->s, c->alice, 0, 110, &bal), KH_ERR_INVAL);
	assert_int_equal(kh_store_dist_deposit(c->s, 999, 5, 110, &bal), KH_ERR_NOTFOUND);
	assert_int_equal(balance(c, c->alice), 25);
	ledger_holds(c);

	/* a session is the account's until it ends, and is purged after */
	assert_int_equal(kh_store_dist_session_add(c->s, tok, c->alice, 500), KH_OK);
	assert_int_equal(kh_store_dist_session_add(c->s, tok, c->bob, 500), KH_ERR_EXISTS);
	assert_int_equal(kh_store_dist_session_find(c->s, tok, 499, &id), KH_OK);
	assert_int_equal(id, c->alice);
	assert_int_equal(kh_store_dist_session_find(c->s, tok, 500, &id), KH_ERR_NOTFOUND);
	assert_int_equal(kh_store_dist_session_find(c->s, other, 1, &id), KH_ERR_NOTFOUND);
	assert_int_equal(kh_store_dist_session_purge(c->s, 500, 10, &n), KH_OK);
	assert_int_equal(n, 0);
	assert_int_equal(kh_store_dist_session_purge(c->s, 501, 10, &n), KH_OK);
	assert_int_equal(n, 1);

	/* an account keeps its newest sessions only: one more log-in ends the oldest */
	for (unsigned i = 0; i <= KH_STORE_DIST_SESSIONS_MAX; i++) {
		uint8_t t[32];
		memset(t, 0x40 + (int)i, sizeof t);
		assert_int_equal(kh_store_dist_session_add(c->s, t, c->alice, 1000 + i), KH_OK);
	}
	memset(other, 0x40, 32);
	assert_int_equal(kh_store_dist_session_find(c->s, other, 1, &id), KH_ERR_NOTFOUND);
	memset(other, 0x41, 32);
	assert_int_equal(kh_store_dist_session_find(c->s, other, 1, &id), KH_OK);
	assert_int_equal(kh_test_sql_int(c->db, "SELECT count(*) FROM dist_sessions"), KH_STORE_DIST_SESSIONS_MAX);
}

static kh_err count_program(void *arg, const struct kh_store_dist_program *p)
{
	int64_t *seen = arg;

	assert_null(p->program); /* a list never carries the code */
	assert_int_equal(p->program_len, 7);
	seen[seen[0]++ + 1] = p->id;
	return KH_OK;
}

static kh_err read_program(void *arg, const struct kh_store_dist_program *p)
{
	assert_string_equal(p->name, "editor");
	assert_int_equal(p->version, 3);
	assert_int_equal(p->price, 40);
	assert_int_equal(p->program_len, 7);
	assert_memory_equal(p->program, "\x7f" "ELF...", 7);
	assert_int_equal(p->manifest_len, 13);
	*(int *)arg = 1;
	return KH_OK;
}

static void test_programs(void **state)
{
	struct ctx *c = *state;
	struct kh_store_dist_program p = {.name = "editor", .version = 3, .price = 1};
	struct kh_store_page page = {.limit = 1};
	int64_t seen[4] = {0}, id = 0;
	int more = 0, read = 0;

	p.manifest = p.program = (const uint8_t *)"x";
	p.manifest_len = p.program_len = 1;
	assert_int_equal(kh_store_dist_program_add(c->s, &p, 100, &id), KH_ERR_EXISTS);
	p.version = 0;
	assert_int_equal(kh_store_dist_program_add(c->s, &p, 100, &id), KH_ERR_INVAL);
	assert_int_equal(kh_store_dist_programs_page(c->s, &page, count_program, seen, &more), KH_OK);
	assert_true(more);
	page.after_set = 1;
	page.after = seen[1];
	assert_int_equal(kh_store_dist_programs_page(c->s, &page, count_program, seen, &more), KH_OK);
	assert_false(more);
	assert_int_equal(seen[0], 2);
	assert_int_equal(seen[1], c->prog);
	assert_int_equal(seen[2], c->free_prog);
	assert_int_equal(kh_store_dist_program_read(c->s, c->prog, read_program, &read), KH_OK);
	assert_true(read);
	assert_int_equal(kh_store_dist_program_read(c->s, 999, read_program, &read), KH_ERR_NOTFOUND);
}

static void test_delivery_steps(void **state)
{
	struct ctx *c = *state;
	struct kh_store_dist_delivery d;
	int64_t id = keyed(c, c->alice, c->prog, NULL);

	assert_int_equal(kh_store_dist_delivery_read(c->s, id, c->alice, &d), KH_OK);
	assert_int_equal(d.state, KH_STORE_DIST_KEYED);
	assert_int_equal(d.program_id, c->prog);
	assert_int_equal(d.peer_len, 5);
	assert_memory_equal(d.peer, "peer2", 5);
	assert_int_equal(d.kx_len, 9);
	assert_false(d.refetch_set);
	/* another account's delivery is none of bob's */
	assert_int_equal(kh_store_dist_delivery_read(c->s, id, c->bob, &d), KH_ERR_NOTFOUND);
	/* a step another request made first, and a step back, are refused */
	assert_int_equal(kh_store_dist_delivery_step(c->s, id, KH_STORE_DIST_PROVEN, KH_STORE_DIST_KEYED, NULL, 0, NULL, 0,
						     300),
			 KH_ERR_DIST_SESSION);
	assert_int_equal(kh_store_dist_delivery_step(c->s, id, KH_STORE_DIST_KEYED, KH_STORE_DIST_HELLO, NULL, 0, NULL, 0,
						     300),
			 KH_ERR_INVAL);
	assert_int_equal(kh_store_dist_delivery_read(c->s, id, c->alice, &d), KH_OK);
	assert_int_equal(d.state, KH_STORE_DIST_KEYED);
	assert_memory_equal(d.peer, "peer2", 5); /* kept when not given */
}

static void test_charge_once(void **state)
{
	struct ctx *c = *state;
	struct kh_store_dist_receipt r1, r2, r3;
	uint8_t rid1[16], rid2[16];
	int64_t id = keyed(c, c->alice, c->prog, NULL), bal = 0, early;
	int charged = -1;
	char *before, *after;

	memset(rid1, 0xA1, sizeof rid1);
	memset(rid2, 0xA2, sizeof rid2);
	/* a delivery not keyed yet is not charged */
	{
		struct kh_store_dist_delivery d = {.account_id = c->alice, .program_id = c->prog, .peer_len = 1};
		assert_int_equal(kh_store_dist_delivery_add(c->s, &d, 200, &early), KH_OK);
		assert_int_equal(kh_store_dist_charge(c->s, early, c->alice, rid1, 300, &r1, &charged), KH_ERR_DIST_SESSION);
	}
	/* 0 < 40: refused, and not a row changed */
	before = kh_test_sql_dump(c->db);
	assert_int_equal(kh_store_dist_charge(c->s, id, c->alice, rid1, 300, &r1, &charged), KH_ERR_FUNDS);
	after = kh_test_sql_dump(c->db);
	assert_string_equal(before, after);
	free(before);
	free(after);
	assert_int_equal(kh_store_dist_deposit(c->s, c->alice, 50, 301, &bal), KH_OK);
	/* bob cannot charge alice's delivery */
	assert_int_equal(kh_store_dist_charge(c->s, id, c->bob, rid1, 302, &r1, &charged), KH_ERR_NOTFOUND);
	assert_int_equal(kh_store_dist_charge(c->s, id, c->alice, rid1, 302, &r1, &charged), KH_OK);
	assert_int_equal(charged, 1);
	assert_memory_equal(r1.id, rid1, 16);
	assert_int_equal(r1.price, 40);
	assert_int_equal(r1.delivery_id, id);
	assert_int_equal(balance(c, c->alice), 10);
	/* again (the answer lost), with another fresh id: the first receipt, nothing moves */
	assert_int_equal(kh_store_dist_charge(c->s, id, c->alice, rid2, 303, &r2, &charged), KH_OK);
	assert_int_equal(charged, 0);
	assert_memory_equal(&r2, &r1, sizeof r1);
	assert_int_equal(balance(c, c->alice), 10);
	assert_int_equal(kh_store_dist_receipt_read(c->s, rid1, &r3), KH_OK);
	assert_memory_equal(&r3, &r1, sizeof r1);
	assert_int_equal(kh_store_dist_receipt_read(c->s, rid2, &r3), KH_ERR_NOTFOUND);
	ledger_holds(c);

	/* fetched again on that receipt: released for nothing, answering the first receipt */
	id = keyed(c, c->alice, c->prog, rid1);
	assert_int_equal(kh_store_dist_charge(c->s, id, c->alice, rid2, 400, &r2, &charged), KH_OK);
	assert_int_equal(charged, 0);
	assert_memory_equal(&r2, &r1, sizeof r1);
	assert_int_equal(balance(c, c->alice), 10);
	assert_int_equal(kh_store_dist_charge(c->s, id, c->alice, rid2, 401, &r2, &charged), KH_OK);
	assert_memory_equal(&r2, &r1, sizeof r1);
	/* a free program: a receipt, no ledger entry */
	id = keyed(c, c->bob, c->free_prog, NULL);
	assert_int_equal(kh_store_dist_charge(c->s, id, c->bob, rid2, 500, &r2, &charged), KH_OK);
	assert_int_equal(charged, 1);
	assert_int_equal(r2.price, 0);
	assert_int_equal(sql_int(c, "SELECT count(*) FROM dist_receipts"), 2);
	assert_int_equal(sql_int(c, "SELECT count(*) FROM dist_ledger"), 2); /* the deposit, the one debit */
	ledger_holds(c);
}

/* Two connections charge one delivery at once (two front ends): it is debited once. */
struct racer {
	const char *db;
	int64_t id, account;
	uint8_t rid[16];
	pthread_barrier_t *go;
	kh_err r;
	int charged;
};

static void *race(void *arg)
{
	struct racer *x = arg;
	struct kh_store *s = NULL;
	struct kh_store_dist_receipt got;

	x->r = kh_store_open(x->db, &s);
	pthread_barrier_wait(x->go);
	if (x->r == KH_OK)
		x->r = kh_store_dist_charge(s, x->id, x->account, x->rid, 600, &got, &x->charged);
	kh_store_close(s);
	return NULL;
}

static void test_charge_race(void **state)
{
	struct ctx *c = *state;
	pthread_barrier_t go;
	pthread_t t[2];
	struct racer x[2];
	int64_t bal = 0;

	assert_int_equal(kh_store_dist_deposit(c->s, c->alice, 100, 590, &bal), KH_OK);
	for (int round = 0; round < 5; round++) {
		int64_t id = keyed(c, c->alice, c->prog, NULL);

		assert_int_equal(pthread_barrier_init(&go, NULL, 2), 0);
		for (int i = 0; i < 2; i++) {
			x[i] = (struct racer){c->db, id, c->alice, {0}, &go, KH_ERR_INTERNAL, 0};
			memset(x[i].rid, 0x10 * (round + 1) + i, sizeof x[i].rid);
			assert_int_equal(pthread_create(&t[i], NULL, race, &x[i]), 0);
		}
		for (int i = 0; i < 2; i++)
			pthread_join(t[i], NULL);
		pthread_barrier_destroy(&go);
		/* both answered (one charged, one found the receipt), or one ran out of money */
		assert_int_equal(x[0].charged + x[1].charged, bal >= 40 ? 1 : 0);
		for (int i = 0; i < 2; i++)
			assert_int_equal(x[i].r, bal >= 40 ? KH_OK : KH_ERR_FUNDS);
		bal -= bal >= 40 ? 40 : 0;
		assert_int_equal(balance(c, c->alice), bal);
	}
	assert_int_equal(bal, 20); /* 100: two charges of 40, then three refused */
	ledger_holds(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_accounts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_programs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_delivery_steps, setup, teardown),
		cmocka_unit_test_setup_teardown(test_charge_once, setup, teardown),
		cmocka_unit_test_setup_teardown(test_charge_race, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
