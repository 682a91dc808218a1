/*
 * The key center's rows (src/store/ops_keycenter.c, ops_keycenter_mail.c), on SQLite and again on
 * PostgreSQL (unit/test_store_keycenter_pg). The judges: a serial or an address is one card's;
 * the chains' positions only move forward; a session nonce is used once; sessions are bounded and
 * expire; the mailbox lists in index order and a delivery deleted is gone with its sealed key;
 * the relay log keeps what it is given; `keyhole store copy` and `check` know the tables.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#include "keyhole/store_keycenter.h"

struct ctx {
	char *dir, *db;
	struct kh_store *s;
};

static int setup(void **state)
{
	struct ctx *c = calloc(1, sizeof *c);

	assert_non_null(c);
	assert_non_null(c->dir = kh_test_tmpdir());
	c->db = kh_test_db(c->dir, "kc.db");
	assert_int_equal(kh_store_open(c->db, &c->s), KH_OK);
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

static void card_init(struct kh_store_kc_card *k, uint64_t serial, const char *addr)
{
	memset(k, 0, sizeof *k);
	k->serial = serial;
	snprintf(k->address, sizeof k->address, "%s", addr);
	k->state = KH_STORE_KC_ENROLLED;
	memset(k->sign_cert, 0x30, 100);
	k->sign_cert_len = 100;
	memset(k->code_mac, (int)serial, sizeof k->code_mac);
	k->send_pos = k->recv_pos = 1;
	memset(k->send_state, 1, sizeof k->send_state);
	memset(k->recv_state, 2, sizeof k->recv_state);
}

static void test_cards(void **state)
{
	struct ctx *c = *state;
	struct kh_store_kc_card k, g;
	uint8_t st[KH_STORE_KC_SEALED_LEN], h[32];

	card_init(&k, 7, "a@x");
	assert_int_equal(kh_store_kc_card_add(c->s, &k, 100), KH_OK);
	assert_int_equal(kh_store_kc_card_add(c->s, &k, 100), KH_ERR_EXISTS);
	card_init(&k, 8, "a@x");
	assert_int_equal(kh_store_kc_card_add(c->s, &k, 100), KH_ERR_EXISTS);
	card_init(&k, 8, "b@x");
	assert_int_equal(kh_store_kc_card_add(c->s, &k, 100), KH_OK);
	card_init(&k, 0, "c@x");
	assert_int_equal(kh_store_kc_card_add(c->s, &k, 100), KH_ERR_INVAL);
	assert_int_equal(kh_store_kc_card_get(c->s, 7, &g), KH_OK);
	assert_string_equal(g.address, "a@x");
	assert_int_equal(g.state, KH_STORE_KC_ENROLLED);
	assert_int_equal(g.created, 100);
	assert_int_equal(g.has_post, 0);
	assert_int_equal(kh_store_kc_card_by_address(c->s, "b@x", &g), KH_OK);
	assert_int_equal(g.serial, 8);
	assert_int_equal(kh_store_kc_card_get(c->s, 9, &g), KH_ERR_NOTFOUND);
	assert_int_equal(kh_store_kc_card_lock(c->s, 9), KH_ERR_NOTFOUND);
	assert_int_equal(kh_store_kc_card_lock(c->s, 7), KH_OK);
	/* activation stamps the time once */
	assert_int_equal(kh_store_kc_card_state(c->s, 7, KH_STORE_KC_ACTIVE, 200), KH_OK);
	assert_int_equal(kh_store_kc_card_state(c->s, 7, KH_STORE_KC_ACTIVE, 300), KH_OK);
	assert_int_equal(kh_store_kc_card_get(c->s, 7, &g), KH_OK);
	assert_int_equal(g.activated, 200);
	/* chains move forward only */
	memset(st, 9, sizeof st);
	memset(h, 5, sizeof h);
	assert_int_equal(kh_store_kc_send_set(c->s, 7, 3, st, h), KH_OK);
	assert_int_equal(kh_store_kc_send_set(c->s, 7, 3, st, h), KH_ERR_NOTFOUND);
	assert_int_equal(kh_store_kc_send_set(c->s, 7, 2, st, h), KH_ERR_NOTFOUND);
	assert_int_equal(kh_store_kc_recv_set(c->s, 7, 5, st), KH_OK);
	assert_int_equal(kh_store_kc_recv_set(c->s, 7, 4, st), KH_ERR_NOTFOUND);
	assert_int_equal(kh_store_kc_card_get(c->s, 7, &g), KH_OK);
	assert_int_equal(g.send_pos, 3);
	assert_int_equal(g.recv_pos, 5);
	assert_true(g.has_post);
	assert_memory_equal(g.last_post_hash, h, 32);
	assert_memory_equal(g.send_state, st, sizeof st);
	/* nonces once, in time order */
	assert_int_equal(kh_store_kc_hello_use(c->s, 7, 1000), KH_OK);
	assert_int_equal(kh_store_kc_hello_use(c->s, 7, 1000), KH_ERR_REPLAY);
	assert_int_equal(kh_store_kc_hello_use(c->s, 7, 999), KH_ERR_REPLAY);
	assert_int_equal(kh_store_kc_hello_use(c->s, 7, 1001), KH_OK);
	/* failures counted */
	assert_int_equal(kh_store_kc_code_fails(c->s, 7, 3, 500), KH_OK);
	assert_int_equal(kh_store_kc_card_get(c->s, 7, &g), KH_OK);
	assert_true(g.code_fails == 3 && g.code_window_start == 500);
	/* replacement: blocked, address given up, once */
	assert_int_equal(kh_store_kc_card_replaced(c->s, 8, 7), KH_OK);
	assert_int_equal(kh_store_kc_card_replaced(c->s, 8, 7), KH_ERR_NOTFOUND);
	assert_int_equal(kh_store_kc_card_get(c->s, 8, &g), KH_OK);
	assert_true(g.state == KH_STORE_KC_BLOCKED && g.address[0] == '\0' && g.replaced_by == 7);
	assert_int_equal(kh_store_kc_card_by_address(c->s, "b@x", &g), KH_ERR_NOTFOUND);
	card_init(&k, 9, "b@x");
	assert_int_equal(kh_store_kc_card_add(c->s, &k, 100), KH_OK);
}

struct collect {
	uint64_t idx[8];
	int n;
	int with_key;
};

static kh_err collect(void *arg, const struct kh_store_kc_mail *m)
{
	struct collect *c = arg;

	c->idx[c->n++] = m->idx;
	c->with_key = m->has_key;
	return KH_OK;
}

static kh_err count_cards(void *arg, const struct kh_store_kc_card *k)
{
	int64_t *n = arg;

	*n += k->waiting;
	return KH_OK;
}

static void test_mail_and_sessions(void **state)
{
	struct ctx *c = *state;
	struct kh_store_kc_card k;
	struct kh_store_kc_mail m;
	struct kh_store_kc_relay x;
	struct collect col;
	uint8_t msg[40], h[32];
	uint64_t serial;
	int64_t n = 0;

	card_init(&k, 7, "a@x");
	assert_int_equal(kh_store_kc_card_add(c->s, &k, 100), KH_OK);
	memset(&m, 0, sizeof m);
	memset(msg, 'm', sizeof msg);
	m.recipient = 7;
	m.sender = 7;
	m.sender_address = "a@x";
	m.msg = msg;
	m.msg_len = sizeof msg;
	m.size = sizeof msg;
	m.has_key = 1;
	for (uint64_t j = 3; j >= 1; j--) {
		m.idx = j;
		assert_int_equal(kh_store_kc_mail_add(c->s, &m), KH_OK);
	}
	assert_int_equal(kh_store_kc_mail_add(c->s, &m), KH_ERR_EXISTS);
	m.recipient = 99; /* no such card */
	assert_int_not_equal(kh_store_kc_mail_add(c->s, &m), KH_OK);
	assert_int_equal(kh_store_kc_mail_count(c->s, 7, &n), KH_OK);
	assert_int_equal(n, 3);
	n = 0;
	assert_int_equal(kh_store_kc_cards_list(c->s, count_cards, &n), KH_OK);
	assert_int_equal(n, 3);
	memset(&col, 0, sizeof col);
	assert_int_equal(kh_store_kc_mail_list(c->s, 7, collect, &col), KH_OK);
	assert_true(col.n == 3 && col.idx[0] == 1 && col.idx[1] == 2 && col.idx[2] == 3 && !col.with_key);
	memset(&col, 0, sizeof col);
	assert_int_equal(kh_store_kc_mail_next(c->s, 7, 1, collect, &col), KH_OK);
	assert_true(col.n == 1 && col.idx[0] == 2 && col.with_key);
	assert_int_equal(kh_store_kc_mail_delete(c->s, 7, 2), KH_OK);
	assert_int_equal(kh_store_kc_mail_delete(c->s, 7, 2), KH_ERR_NOTFOUND);
	assert_int_equal(kh_store_kc_mail_get(c->s, 7, 2, collect, &col), KH_ERR_NOTFOUND);
	memset(&col, 0, sizeof col);
	assert_int_equal(kh_store_kc_mail_next(c->s, 7, 1, collect, &col), KH_OK);
	assert_int_equal(col.idx[0], 3);
	/* the relay log */
	x = (struct kh_store_kc_relay){.sender = 7, .send_idx = 4, .recipient = 7, .recv_idx = 3, .size = 40, .time = 5};
	assert_int_equal(kh_store_kc_relay_add(c->s, &x), KH_OK);
	x = (struct kh_store_kc_relay){.sender = 7, .send_idx = 5, .size = 40, .time = 6};
	assert_int_equal(kh_store_kc_relay_add(c->s, &x), KH_OK);
	x.recipient = 7; /* a recipient without its index */
	assert_int_equal(kh_store_kc_relay_add(c->s, &x), KH_ERR_INVAL);
	assert_int_equal(kh_store_kc_relay_find(c->s, 7, 4, &x), KH_OK);
	assert_true(x.recipient == 7 && x.recv_idx == 3);
	assert_int_equal(kh_store_kc_relay_find(c->s, 7, 5, &x), KH_OK);
	assert_true(x.recipient == 0 && x.recv_idx == 0);
	assert_int_equal(kh_store_kc_relay_find(c->s, 7, 6, &x), KH_ERR_NOTFOUND);
	/* sessions: 2 at most here, expired ones make room */
	memset(h, 1, sizeof h);
	assert_int_equal(kh_store_kc_session_add(c->s, h, 7, 1000, 100, 2), KH_OK);
	h[0] = 2;
	assert_int_equal(kh_store_kc_session_add(c->s, h, 7, 500, 100, 2), KH_OK);
	h[0] = 3;
	assert_int_equal(kh_store_kc_session_add(c->s, h, 7, 1000, 100, 2), KH_ERR_LIMIT);
	assert_int_equal(kh_store_kc_session_add(c->s, h, 7, 1000, 600, 2), KH_OK);
	h[0] = 1;
	assert_int_equal(kh_store_kc_session_find(c->s, h, 999, &serial), KH_OK);
	assert_int_equal(serial, 7);
	assert_int_equal(kh_store_kc_session_find(c->s, h, 1000, &serial), KH_ERR_NOTFOUND);
	h[0] = 2;
	assert_int_equal(kh_store_kc_session_find(c->s, h, 600, &serial), KH_ERR_NOTFOUND);
}

/* store copy carries the rows; store check finds them sound. */
struct copied {
	int kc_tables, kc_rows, all_same;
};

static kh_err on_table(void *arg, const struct kh_store_copy_table *t)
{
	struct copied *c = arg;

	if (!t->same)
		c->all_same = 0;
	if (strncmp(t->table, "kc_", 3) == 0) {
		c->kc_tables++;
		c->kc_rows += (int)t->rows_to;
		assert_int_equal(t->rows_from, t->rows_to);
		assert_memory_equal(t->sum_from, t->sum_to, 32);
	}
	return KH_OK;
}

static void test_copy_and_check(void **state)
{
	struct ctx *c = *state;
	struct kh_store_kc_card k;
	struct kh_store_kc_mail m;
	struct kh_store_kc_relay x;
	struct copied cp = {0, 0, 1};
	struct kh_store *t;
	uint8_t msg[30] = {1}, h[32] = {7};
	unsigned checked = 0, broken = 9;
	char why[256], *to = kh_test_db(c->dir, "copy.db");

	card_init(&k, 7, "a@x");
	assert_int_equal(kh_store_kc_card_add(c->s, &k, 100), KH_OK);
	card_init(&k, 8, "b@x");
	assert_int_equal(kh_store_kc_card_add(c->s, &k, 100), KH_OK);
	assert_int_equal(kh_store_kc_card_replaced(c->s, 8, 7), KH_OK);
	memset(&m, 0, sizeof m);
	m = (struct kh_store_kc_mail){.recipient = 7, .idx = 1, .sender = 8, .sender_address = "b@x", .msg = msg,
				      .msg_len = sizeof msg, .size = sizeof msg, .has_key = 1, .created = 5};
	assert_int_equal(kh_store_kc_mail_add(c->s, &m), KH_OK);
	x = (struct kh_store_kc_relay){.sender = 8, .send_idx = 1, .recipient = 7, .recv_idx = 1, .size = 30, .time = 5};
	assert_int_equal(kh_store_kc_relay_add(c->s, &x), KH_OK);
	x = (struct kh_store_kc_relay){.sender = 8, .send_idx = 2, .size = 30, .time = 6};
	assert_int_equal(kh_store_kc_relay_add(c->s, &x), KH_OK);
	assert_int_equal(kh_store_kc_session_add(c->s, h, 7, 1000, 100, 8), KH_OK);
	assert_int_equal(kh_store_copy(c->db, to, on_table, &cp, why, sizeof why), KH_OK);
	assert_int_equal(cp.kc_tables, 4);
	assert_int_equal(cp.kc_rows, 2 + 1 + 2 + 1);
	assert_true(cp.all_same);
	assert_int_equal(kh_store_open(to, &t), KH_OK);
	assert_int_equal(kh_store_kc_card_get(t, 8, &k), KH_OK);
	assert_true(k.replaced_by == 7 && k.address[0] == '\0' && k.state == KH_STORE_KC_BLOCKED);
	assert_int_equal(kh_store_invariants(t, NULL, NULL, &checked, &broken), KH_OK);
	assert_int_equal(broken, 0);
	assert_true(checked > 0);
	kh_store_close(t);
	assert_int_equal(kh_store_invariants(c->s, NULL, NULL, &checked, &broken), KH_OK);
	assert_int_equal(broken, 0);
	kh_test_db_drop(to);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_cards, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mail_and_sessions, setup, teardown),
		cmocka_unit_test_setup_teardown(test_copy_and_check, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
