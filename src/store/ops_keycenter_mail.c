/*
 * The key center's mailbox and relay log (include/keyhole/store_keycenter.h, migration 10): the
 * deliveries waiting for their recipients, each with its key sealed under the center's state key
 * while it waits, and the log of relays, which holds serials, indexes and sizes only.
 */
#include <string.h>

#include "keyhole/crypto.h"
#include "keyhole/store_keycenter.h"
#include "store_int.h"

#define MAIL_COLS "recipient, idx, sender, sender_address, size, created"

static int serial_ok(uint64_t v)
{
	return v >= 1 && v <= KH_STORE_KC_SERIAL_MAX;
}

kh_err kh_store_kc_mail_add(struct kh_store *s, const struct kh_store_kc_mail *m)
{
	static const char sql[] = "INSERT INTO kc_mailbox (recipient, idx, sender, sender_address, msg, key_sealed,\n"
				  "  size, created) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
	struct kh__stmt *st = NULL;
	kh_err r;

	if (s == NULL || m == NULL || !serial_ok(m->recipient) || !serial_ok(m->idx) || !serial_ok(m->sender) ||
	    m->sender_address == NULL || m->msg == NULL || m->size < 0)
		return KH_ERR_INVAL;
	if ((r = kh__stmt(s, sql, &st)) == KH_OK && (r = kh__bind_i64(st, 1, (int64_t)m->recipient)) == KH_OK &&
	    (r = kh__bind_i64(st, 2, (int64_t)m->idx)) == KH_OK && (r = kh__bind_i64(st, 3, (int64_t)m->sender)) == KH_OK &&
	    (r = kh__bind_text(st, 4, m->sender_address)) == KH_OK &&
	    (r = kh__bind_blob(st, 5, m->msg, m->msg_len)) == KH_OK &&
	    (r = m->has_key ? kh__bind_blob(st, 6, m->key_sealed, sizeof m->key_sealed) : kh__bind_null(st, 6)) == KH_OK &&
	    (r = kh__bind_i64(st, 7, m->size)) == KH_OK && (r = kh__bind_i64(st, 8, m->created)) == KH_OK)
		r = kh__exec(st);
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_kc_mail_count(struct kh_store *s, uint64_t recipient, int64_t *n)
{
	static const char sql[] = "SELECT count(*) FROM kc_mailbox WHERE recipient = ?1";
	struct kh__stmt *st = NULL;
	int row = 0;
	kh_err r;

	if (s == NULL || n == NULL)
		return KH_ERR_INVAL;
	if ((r = kh__stmt(s, sql, &st)) == KH_OK && (r = kh__bind_i64(st, 1, (int64_t)recipient)) == KH_OK &&
	    (r = kh__step(st, &row)) == KH_OK)
		*n = row ? kh__col_i64(st, 0) : 0;
	kh__stmt_done(st);
	return r;
}

/* The listed columns of st's row into m (no bytes, no key). */
static void mail_row(struct kh__stmt *st, struct kh_store_kc_mail *m, char *addr, size_t cap)
{
	memset(m, 0, sizeof *m);
	m->recipient = (uint64_t)kh__col_i64(st, 0);
	m->idx = (uint64_t)kh__col_i64(st, 1);
	m->sender = (uint64_t)kh__col_i64(st, 2);
	kh__col_text(st, 3, addr, cap);
	m->sender_address = addr;
	m->size = kh__col_i64(st, 4);
	m->created = kh__col_i64(st, 5);
}

kh_err kh_store_kc_mail_list(struct kh_store *s, uint64_t recipient, kh_store_kc_mail_fn fn, void *arg)
{
	static const char sql[] = "SELECT " MAIL_COLS " FROM kc_mailbox WHERE recipient = ?1 ORDER BY idx";
	char addr[KH_STORE_KC_ADDR_MAX + 1];
	struct kh_store_kc_mail m;
	struct kh__stmt *st = NULL;
	int row = 1;
	kh_err r;

	if (s == NULL || fn == NULL)
		return KH_ERR_INVAL;
	if ((r = kh__stmt(s, sql, &st)) == KH_OK)
		r = kh__bind_i64(st, 1, (int64_t)recipient);
	while (r == KH_OK && (r = kh__step(st, &row)) == KH_OK && row) {
		mail_row(st, &m, addr, sizeof addr);
		r = fn(arg, &m);
	}
	kh__stmt_done(st);
	return r;
}

/* One whole row of st (columns MAIL_COLS, msg, key_sealed) to fn; KH_ERR_NOTFOUND when none. */
static kh_err mail_whole(struct kh__stmt *st, kh_store_kc_mail_fn fn, void *arg)
{
	char addr[KH_STORE_KC_ADDR_MAX + 1];
	struct kh_store_kc_mail m;
	const uint8_t *k;
	size_t kn;
	int row = 0;
	kh_err r = kh__step(st, &row);

	if (r != KH_OK)
		return r;
	if (!row)
		return KH_ERR_NOTFOUND;
	mail_row(st, &m, addr, sizeof addr);
	m.msg = kh__col_blob(st, 6, &m.msg_len);
	if (!kh__col_null(st, 7)) {
		k = kh__col_blob(st, 7, &kn);
		if (kn != sizeof m.key_sealed)
			return KH_ERR_DB;
		memcpy(m.key_sealed, k, kn);
		m.has_key = 1;
	}
	r = fn(arg, &m);
	kh_wipe(m.key_sealed, sizeof m.key_sealed);
	return r;
}

kh_err kh_store_kc_mail_get(struct kh_store *s, uint64_t recipient, uint64_t idx, kh_store_kc_mail_fn fn, void *arg)
{
	static const char sql[] = "SELECT " MAIL_COLS ", msg, key_sealed FROM kc_mailbox\n"
				  "WHERE recipient = ?1 AND idx = ?2";
	struct kh__stmt *st = NULL;
	kh_err r;

	if (s == NULL || fn == NULL)
		return KH_ERR_INVAL;
	if (!serial_ok(recipient) || !serial_ok(idx))
		return KH_ERR_NOTFOUND;
	if ((r = kh__stmt(s, sql, &st)) == KH_OK && (r = kh__bind_i64(st, 1, (int64_t)recipient)) == KH_OK &&
	    (r = kh__bind_i64(st, 2, (int64_t)idx)) == KH_OK)
		r = mail_whole(st, fn, arg);
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_kc_mail_next(struct kh_store *s, uint64_t recipient, uint64_t after, kh_store_kc_mail_fn fn, void *arg)
{
	static const char sql[] = "SELECT " MAIL_COLS ", msg, key_sealed FROM kc_mailbox\n"
				  "WHERE recipient = ?1 AND idx > ?2 ORDER BY idx LIMIT 1";
	struct kh__stmt *st = NULL;
	kh_err r;

	if (s == NULL || fn == NULL || after > KH_STORE_KC_SERIAL_MAX)
		return KH_ERR_INVAL;
	if ((r = kh__stmt(s, sql, &st)) == KH_OK && (r = kh__bind_i64(st, 1, (int64_t)recipient)) == KH_OK &&
	    (r = kh__bind_i64(st, 2, (int64_t)after)) == KH_OK)
		r = mail_whole(st, fn, arg);
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_kc_mail_delete(struct kh_store *s, uint64_t recipient, uint64_t idx)
{
	static const char sql[] = "DELETE FROM kc_mailbox WHERE recipient = ?1 AND idx = ?2";
	struct kh__stmt *st = NULL;
	kh_err r;

	if (s == NULL)
		return KH_ERR_INVAL;
	if (!serial_ok(recipient) || !serial_ok(idx))
		return KH_ERR_NOTFOUND;
	if ((r = kh__stmt(s, sql, &st)) == KH_OK && (r = kh__bind_i64(st, 1, (int64_t)recipient)) == KH_OK &&
	    (r = kh__bind_i64(st, 2, (int64_t)idx)) == KH_OK)
		r = kh__exec(st);
	kh__stmt_done(st);
	return r == KH_OK && kh__changes(s) != 1 ? KH_ERR_NOTFOUND : r;
}

/* ---------------------------------------------------------------- the relay log */

kh_err kh_store_kc_relay_add(struct kh_store *s, const struct kh_store_kc_relay *x)
{
	static const char sql[] = "INSERT INTO kc_relays (sender, send_idx, recipient, recv_idx, size, time)\n"
				  "VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
	struct kh__stmt *st = NULL;
	kh_err r;

	if (s == NULL || x == NULL || !serial_ok(x->sender) || !serial_ok(x->send_idx) || x->size < 0 ||
	    (x->recipient != 0) != (x->recv_idx != 0) || x->recipient > KH_STORE_KC_SERIAL_MAX ||
	    x->recv_idx > KH_STORE_KC_SERIAL_MAX)
		return KH_ERR_INVAL;
	if ((r = kh__stmt(s, sql, &st)) == KH_OK && (r = kh__bind_i64(st, 1, (int64_t)x->sender)) == KH_OK &&
	    (r = kh__bind_i64(st, 2, (int64_t)x->send_idx)) == KH_OK &&
	    (r = x->recipient ? kh__bind_i64(st, 3, (int64_t)x->recipient) : kh__bind_null(st, 3)) == KH_OK &&
	    (r = x->recipient ? kh__bind_i64(st, 4, (int64_t)x->recv_idx) : kh__bind_null(st, 4)) == KH_OK &&
	    (r = kh__bind_i64(st, 5, x->size)) == KH_OK && (r = kh__bind_i64(st, 6, x->time)) == KH_OK)
		r = kh__exec(st);
	kh__stmt_done(st);
	return r;
}

static void relay_row(struct kh__stmt *st, struct kh_store_kc_relay *x)
{
	x->id = kh__col_i64(st, 0);
	x->sender = (uint64_t)kh__col_i64(st, 1);
	x->send_idx = (uint64_t)kh__col_i64(st, 2);
	x->recipient = (uint64_t)kh__col_i64(st, 3);
	x->recv_idx = (uint64_t)kh__col_i64(st, 4);
	x->size = kh__col_i64(st, 5);
	x->time = kh__col_i64(st, 6);
}

#define RELAY_COLS "id, sender, send_idx, coalesce(recipient, 0), coalesce(recv_idx, 0), size, time"

kh_err kh_store_kc_relay_find(struct kh_store *s, uint64_t sender, uint64_t send_idx, struct kh_store_kc_relay *x)
{
	static const char sql[] = "SELECT " RELAY_COLS " FROM kc_relays WHERE sender = ?1 AND send_idx = ?2\n"
				  "ORDER BY id DESC LIMIT 1";
	struct kh__stmt *st = NULL;
	int row = 0;
	kh_err r;

	if (s == NULL || x == NULL)
		return KH_ERR_INVAL;
	if ((r = kh__stmt(s, sql, &st)) == KH_OK && (r = kh__bind_i64(st, 1, (int64_t)sender)) == KH_OK &&
	    (r = kh__bind_i64(st, 2, (int64_t)send_idx)) == KH_OK && (r = kh__step(st, &row)) == KH_OK) {
		if (row)
			relay_row(st, x);
		else
			r = KH_ERR_NOTFOUND;
	}
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_kc_relays_list(struct kh_store *s, kh_store_kc_relay_fn fn, void *arg)
{
	static const char sql[] = "SELECT " RELAY_COLS " FROM kc_relays ORDER BY id";
	struct kh_store_kc_relay x;
	struct kh__stmt *st = NULL;
	int row = 1;
	kh_err r;

	if (s == NULL || fn == NULL)
		return KH_ERR_INVAL;
	r = kh__stmt(s, sql, &st);
	while (r == KH_OK && (r = kh__step(st, &row)) == KH_OK && row) {
		relay_row(st, &x);
		r = fn(arg, &x);
	}
	kh__stmt_done(st);
	return r;
}
