/*
 * The key center's cards and mailbox sessions (include/keyhole/store_keycenter.h, migration 10).
 * The store keeps what the service gives it: chain states arrive sealed, codes as MACs, tokens
 * as hashes. Every write names its card by serial and checks that it changed one row, so a
 * write to a card that is not there is KH_ERR_NOTFOUND, never a silent no-op.
 */
#include <stdlib.h>
#include <string.h>

#include "keyhole/store_keycenter.h"
#include "store_int.h"

#define CARD_COLS                                                                                        \
	"serial, coalesce(address, ''), state, sign_cert, code_mac, code_fails, code_window_start, send_pos,\n" \
	"send_state, recv_pos, recv_state, last_post_hash, hello_time, coalesce(replaced_by, 0), created,\n"    \
	"coalesce(activated, 0)"

static const char *const state_names[] = {NULL, "enrolled", "active", "blocked"};

const char *kh_store_kc_state_name(enum kh_store_kc_state s)
{
	return s >= KH_STORE_KC_ENROLLED && s <= KH_STORE_KC_BLOCKED ? state_names[s] : "?";
}

static enum kh_store_kc_state state_of(const char *name)
{
	for (int i = KH_STORE_KC_ENROLLED; i <= KH_STORE_KC_BLOCKED; i++)
		if (strcmp(name, state_names[i]) == 0)
			return (enum kh_store_kc_state)i;
	return 0;
}

static int serial_ok(uint64_t serial)
{
	return serial >= 1 && serial <= KH_STORE_KC_SERIAL_MAX;
}

/* Exactly cap bytes of a blob column into out; KH_ERR_DB for another length (the CHECKs hold it). */
static kh_err col_exact(struct kh__stmt *st, int col, uint8_t *out, size_t cap)
{
	size_t n;
	const uint8_t *p = kh__col_blob(st, col, &n);

	if (n != cap)
		return KH_ERR_DB;
	memcpy(out, p, n);
	return KH_OK;
}

static kh_err card_row(struct kh__stmt *st, struct kh_store_kc_card *c)
{
	char state[16];
	const uint8_t *p;
	size_t n;
	kh_err r;

	memset(c, 0, sizeof *c);
	c->serial = (uint64_t)kh__col_i64(st, 0);
	kh__col_text(st, 1, c->address, sizeof c->address);
	kh__col_text(st, 2, state, sizeof state);
	if (!(c->state = state_of(state)))
		return KH_ERR_DB;
	p = kh__col_blob(st, 3, &n);
	if (n == 0 || n > sizeof c->sign_cert)
		return KH_ERR_DB;
	memcpy(c->sign_cert, p, n);
	c->sign_cert_len = n;
	if ((r = col_exact(st, 4, c->code_mac, sizeof c->code_mac)) != KH_OK)
		return r;
	c->code_fails = kh__col_i64(st, 5);
	c->code_window_start = kh__col_i64(st, 6);
	c->send_pos = (uint64_t)kh__col_i64(st, 7);
	c->recv_pos = (uint64_t)kh__col_i64(st, 9);
	if ((r = col_exact(st, 8, c->send_state, sizeof c->send_state)) != KH_OK ||
	    (r = col_exact(st, 10, c->recv_state, sizeof c->recv_state)) != KH_OK)
		return r;
	if (!kh__col_null(st, 11)) {
		if ((r = col_exact(st, 11, c->last_post_hash, sizeof c->last_post_hash)) != KH_OK)
			return r;
		c->has_post = 1;
	}
	c->hello_time = kh__col_i64(st, 12);
	c->replaced_by = (uint64_t)kh__col_i64(st, 13);
	c->created = kh__col_i64(st, 14);
	c->activated = kh__col_i64(st, 15);
	return KH_OK;
}

/* One row of st into c: KH_ERR_NOTFOUND when none. */
static kh_err card_one(struct kh__stmt *st, struct kh_store_kc_card *c)
{
	int row = 0;
	kh_err r = kh__step(st, &row);

	if (r != KH_OK)
		return r;
	return row ? card_row(st, c) : KH_ERR_NOTFOUND;
}

/* ?1 the serial, ?2.. the rest, expecting one row changed. */
static kh_err one_changed(struct kh_store *s, kh_err r)
{
	return r == KH_OK && kh__changes(s) != 1 ? KH_ERR_NOTFOUND : r;
}

static int card_ok(const struct kh_store_kc_card *c)
{
	size_t an = strnlen(c->address, sizeof c->address);

	return serial_ok(c->serial) && an >= 1 && an <= KH_STORE_KC_ADDR_MAX && state_of(kh_store_kc_state_name(c->state)) &&
	       c->sign_cert_len >= 1 && c->sign_cert_len <= sizeof c->sign_cert && c->send_pos >= 1 &&
	       c->send_pos <= KH_STORE_KC_SERIAL_MAX && c->recv_pos >= 1 && c->recv_pos <= KH_STORE_KC_SERIAL_MAX;
}

kh_err kh_store_kc_card_add(struct kh_store *s, const struct kh_store_kc_card *c, int64_t now)
{
	static const char sql[] =
		"INSERT INTO kc_cards (serial, address, state, sign_cert, code_mac, code_fails, code_window_start,\n"
		"  send_pos, send_state, recv_pos, recv_state, last_post_hash, hello_time, replaced_by, created, activated)\n"
		"VALUES (?1, ?2, ?3, ?4, ?5, 0, 0, ?6, ?7, ?8, ?9, NULL, 0, NULL, ?10, NULL)";
	struct kh__stmt *st = NULL;
	kh_err r;

	if (s == NULL || c == NULL || !card_ok(c))
		return KH_ERR_INVAL;
	if ((r = kh__stmt(s, sql, &st)) == KH_OK && (r = kh__bind_i64(st, 1, (int64_t)c->serial)) == KH_OK &&
	    (r = kh__bind_text(st, 2, c->address)) == KH_OK &&
	    (r = kh__bind_text(st, 3, kh_store_kc_state_name(c->state))) == KH_OK &&
	    (r = kh__bind_blob(st, 4, c->sign_cert, c->sign_cert_len)) == KH_OK &&
	    (r = kh__bind_blob(st, 5, c->code_mac, sizeof c->code_mac)) == KH_OK &&
	    (r = kh__bind_i64(st, 6, (int64_t)c->send_pos)) == KH_OK &&
	    (r = kh__bind_blob(st, 7, c->send_state, sizeof c->send_state)) == KH_OK &&
	    (r = kh__bind_i64(st, 8, (int64_t)c->recv_pos)) == KH_OK &&
	    (r = kh__bind_blob(st, 9, c->recv_state, sizeof c->recv_state)) == KH_OK &&
	    (r = kh__bind_i64(st, 10, now)) == KH_OK)
		r = kh__exec(st);
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_kc_card_get(struct kh_store *s, uint64_t serial, struct kh_store_kc_card *c)
{
	static const char sql[] = "SELECT " CARD_COLS " FROM kc_cards WHERE serial = ?1";
	struct kh_store_kc_card tmp;
	struct kh__stmt *st = NULL;
	kh_err r;

	if (s == NULL || c == NULL)
		return KH_ERR_INVAL;
	if (!serial_ok(serial))
		return KH_ERR_NOTFOUND;
	if ((r = kh__stmt(s, sql, &st)) == KH_OK && (r = kh__bind_i64(st, 1, (int64_t)serial)) == KH_OK &&
	    (r = card_one(st, &tmp)) == KH_OK)
		*c = tmp;
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_kc_card_by_address(struct kh_store *s, const char *address, struct kh_store_kc_card *c)
{
	static const char sql[] = "SELECT " CARD_COLS " FROM kc_cards WHERE address = ?1";
	struct kh_store_kc_card tmp;
	struct kh__stmt *st = NULL;
	kh_err r;

	if (s == NULL || address == NULL || c == NULL)
		return KH_ERR_INVAL;
	if ((r = kh__stmt(s, sql, &st)) == KH_OK && (r = kh__bind_text(st, 1, address)) == KH_OK &&
	    (r = card_one(st, &tmp)) == KH_OK)
		*c = tmp;
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_kc_card_lock(struct kh_store *s, uint64_t serial)
{
	static const char sql[] = "UPDATE kc_cards SET hello_time = hello_time WHERE serial = ?1";
	struct kh__stmt *st = NULL;
	kh_err r;

	if (s == NULL)
		return KH_ERR_INVAL;
	if (!serial_ok(serial))
		return KH_ERR_NOTFOUND;
	if ((r = kh__stmt(s, sql, &st)) == KH_OK && (r = kh__bind_i64(st, 1, (int64_t)serial)) == KH_OK)
		r = kh__exec(st);
	kh__stmt_done(st);
	return one_changed(s, r);
}

kh_err kh_store_kc_cards_list(struct kh_store *s, kh_store_kc_card_fn fn, void *arg)
{
	static const char sql[] = "SELECT " CARD_COLS ",\n"
				  "  (SELECT count(*) FROM kc_mailbox m WHERE m.recipient = c.serial)\n"
				  "FROM kc_cards c ORDER BY serial";
	struct kh_store_kc_card *c;
	struct kh__stmt *st = NULL;
	int row = 1;
	kh_err r;

	if (s == NULL || fn == NULL)
		return KH_ERR_INVAL;
	if (!(c = calloc(1, sizeof *c)))
		return KH_ERR_NOMEM;
	r = kh__stmt(s, sql, &st);
	while (r == KH_OK && (r = kh__step(st, &row)) == KH_OK && row) {
		if ((r = card_row(st, c)) != KH_OK)
			break;
		c->waiting = kh__col_i64(st, 16);
		r = fn(arg, c);
	}
	kh__stmt_done(st);
	free(c);
	return r;
}

kh_err kh_store_kc_card_state(struct kh_store *s, uint64_t serial, enum kh_store_kc_state state, int64_t now)
{
	static const char sql[] = "UPDATE kc_cards SET state = ?2,\n"
				  "  activated = CASE WHEN ?2 = 'active' AND activated IS NULL THEN ?3 ELSE activated END\n"
				  "WHERE serial = ?1";
	struct kh__stmt *st = NULL;
	kh_err r;

	if (s == NULL || !state_of(kh_store_kc_state_name(state)))
		return KH_ERR_INVAL;
	if (!serial_ok(serial))
		return KH_ERR_NOTFOUND;
	if ((r = kh__stmt(s, sql, &st)) == KH_OK && (r = kh__bind_i64(st, 1, (int64_t)serial)) == KH_OK &&
	    (r = kh__bind_text(st, 2, kh_store_kc_state_name(state))) == KH_OK && (r = kh__bind_i64(st, 3, now)) == KH_OK)
		r = kh__exec(st);
	kh__stmt_done(st);
	return one_changed(s, r);
}

kh_err kh_store_kc_code_fails(struct kh_store *s, uint64_t serial, int64_t fails, int64_t window_start)
{
	static const char sql[] = "UPDATE kc_cards SET code_fails = ?2, code_window_start = ?3 WHERE serial = ?1";
	struct kh__stmt *st = NULL;
	kh_err r;

	if (s == NULL || fails < 0)
		return KH_ERR_INVAL;
	if (!serial_ok(serial))
		return KH_ERR_NOTFOUND;
	if ((r = kh__stmt(s, sql, &st)) == KH_OK && (r = kh__bind_i64(st, 1, (int64_t)serial)) == KH_OK &&
	    (r = kh__bind_i64(st, 2, fails)) == KH_OK && (r = kh__bind_i64(st, 3, window_start)) == KH_OK)
		r = kh__exec(st);
	kh__stmt_done(st);
	return one_changed(s, r);
}

kh_err kh_store_kc_send_set(struct kh_store *s, uint64_t serial, uint64_t pos,
			    const uint8_t state[static KH_STORE_KC_SEALED_LEN], const uint8_t post_hash[static 32])
{
	/* forward only: a position at or behind the stored one changes nothing (NOTFOUND) */
	static const char sql[] = "UPDATE kc_cards SET send_pos = ?2, send_state = ?3, last_post_hash = ?4\n"
				  "WHERE serial = ?1 AND send_pos < ?2";
	struct kh__stmt *st = NULL;
	kh_err r;

	if (s == NULL || pos < 2 || pos > KH_STORE_KC_SERIAL_MAX)
		return KH_ERR_INVAL;
	if (!serial_ok(serial))
		return KH_ERR_NOTFOUND;
	if ((r = kh__stmt(s, sql, &st)) == KH_OK && (r = kh__bind_i64(st, 1, (int64_t)serial)) == KH_OK &&
	    (r = kh__bind_i64(st, 2, (int64_t)pos)) == KH_OK &&
	    (r = kh__bind_blob(st, 3, state, KH_STORE_KC_SEALED_LEN)) == KH_OK &&
	    (r = kh__bind_blob(st, 4, post_hash, 32)) == KH_OK)
		r = kh__exec(st);
	kh__stmt_done(st);
	return one_changed(s, r);
}

kh_err kh_store_kc_recv_set(struct kh_store *s, uint64_t serial, uint64_t pos,
			    const uint8_t state[static KH_STORE_KC_SEALED_LEN])
{
	static const char sql[] = "UPDATE kc_cards SET recv_pos = ?2, recv_state = ?3 WHERE serial = ?1 AND recv_pos < ?2";
	struct kh__stmt *st = NULL;
	kh_err r;

	if (s == NULL || pos < 2 || pos > KH_STORE_KC_SERIAL_MAX)
		return KH_ERR_INVAL;
	if (!serial_ok(serial))
		return KH_ERR_NOTFOUND;
	if ((r = kh__stmt(s, sql, &st)) == KH_OK && (r = kh__bind_i64(st, 1, (int64_t)serial)) == KH_OK &&
	    (r = kh__bind_i64(st, 2, (int64_t)pos)) == KH_OK &&
	    (r = kh__bind_blob(st, 3, state, KH_STORE_KC_SEALED_LEN)) == KH_OK)
		r = kh__exec(st);
	kh__stmt_done(st);
	return one_changed(s, r);
}

kh_err kh_store_kc_hello_use(struct kh_store *s, uint64_t serial, int64_t t)
{
	static const char sql[] = "UPDATE kc_cards SET hello_time = ?2 WHERE serial = ?1 AND hello_time < ?2";
	struct kh__stmt *st = NULL;
	kh_err r;

	if (s == NULL)
		return KH_ERR_INVAL;
	if (!serial_ok(serial))
		return KH_ERR_NOTFOUND;
	if ((r = kh__stmt(s, sql, &st)) == KH_OK && (r = kh__bind_i64(st, 1, (int64_t)serial)) == KH_OK &&
	    (r = kh__bind_i64(st, 2, t)) == KH_OK)
		r = kh__exec(st);
	kh__stmt_done(st);
	return r == KH_OK && kh__changes(s) != 1 ? KH_ERR_REPLAY : r;
}

kh_err kh_store_kc_card_replaced(struct kh_store *s, uint64_t old, uint64_t by)
{
	static const char sql[] = "UPDATE kc_cards SET state = 'blocked', address = NULL, replaced_by = ?2\n"
				  "WHERE serial = ?1 AND replaced_by IS NULL";
	struct kh__stmt *st = NULL;
	kh_err r;

	if (s == NULL || !serial_ok(by) || old == by)
		return KH_ERR_INVAL;
	if (!serial_ok(old))
		return KH_ERR_NOTFOUND;
	if ((r = kh__stmt(s, sql, &st)) == KH_OK && (r = kh__bind_i64(st, 1, (int64_t)old)) == KH_OK &&
	    (r = kh__bind_i64(st, 2, (int64_t)by)) == KH_OK)
		r = kh__exec(st);
	kh__stmt_done(st);
	return one_changed(s, r);
}

/* ---------------------------------------------------------------- sessions */

struct session_add {
	const uint8_t *hash;
	uint64_t serial;
	int64_t expires, now;
	unsigned max;
};

static kh_err session_add_tx(struct kh_store *s, void *arg)
{
	static const char q_gc[] = "DELETE FROM kc_sessions WHERE expires <= ?1";
	static const char q_count[] = "SELECT count(*) FROM kc_sessions WHERE serial = ?1";
	static const char q_add[] = "INSERT INTO kc_sessions (token_hash, serial, expires) VALUES (?1, ?2, ?3)";
	struct session_add *a = arg;
	struct kh__stmt *st = NULL;
	int row = 0;
	kh_err r;

	if ((r = kh__stmt(s, q_gc, &st)) == KH_OK && (r = kh__bind_i64(st, 1, a->now)) == KH_OK)
		r = kh__exec(st);
	kh__stmt_done(st);
	st = NULL;
	if (r == KH_OK && (r = kh__stmt(s, q_count, &st)) == KH_OK &&
	    (r = kh__bind_i64(st, 1, (int64_t)a->serial)) == KH_OK && (r = kh__step(st, &row)) == KH_OK &&
	    row && kh__col_i64(st, 0) >= (int64_t)a->max)
		r = KH_ERR_LIMIT;
	kh__stmt_done(st);
	st = NULL;
	if (r == KH_OK && (r = kh__stmt(s, q_add, &st)) == KH_OK && (r = kh__bind_blob(st, 1, a->hash, 32)) == KH_OK &&
	    (r = kh__bind_i64(st, 2, (int64_t)a->serial)) == KH_OK && (r = kh__bind_i64(st, 3, a->expires)) == KH_OK)
		r = kh__exec(st);
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_kc_session_add(struct kh_store *s, const uint8_t hash[static 32], uint64_t serial, int64_t expires,
			       int64_t now, unsigned max)
{
	struct session_add a = {hash, serial, expires, now, max};

	if (s == NULL || !serial_ok(serial) || max == 0)
		return KH_ERR_INVAL;
	return kh_store_run_tx(s, session_add_tx, &a);
}

kh_err kh_store_kc_session_find(struct kh_store *s, const uint8_t hash[static 32], int64_t now, uint64_t *serial)
{
	static const char sql[] = "SELECT serial FROM kc_sessions WHERE token_hash = ?1 AND expires > ?2";
	struct kh__stmt *st = NULL;
	int row = 0;
	kh_err r;

	if (s == NULL || serial == NULL)
		return KH_ERR_INVAL;
	if ((r = kh__stmt(s, sql, &st)) == KH_OK && (r = kh__bind_blob(st, 1, hash, 32)) == KH_OK &&
	    (r = kh__bind_i64(st, 2, now)) == KH_OK && (r = kh__step(st, &row)) == KH_OK) {
		if (row)
			*serial = (uint64_t)kh__col_i64(st, 0);
		else
			r = KH_ERR_NOTFOUND;
	}
	kh__stmt_done(st);
	return r;
}
