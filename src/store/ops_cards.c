/*
 * Cards and their life (issued, active, replaced, closed): registering one with its certificate,
 * reading and updating one, the next reload id, a subscriber's cards; and the names of a card's
 * state, kind and closing reason, which the database keeps and the center compares as enums.
 */
#include <stdlib.h>
#include <string.h>

#include "store_int.h"

/* ---------------------------------------------------------------- cards */

/* The names of a card's state, kind and closing reason: in the database, the API and the logs. */
static const char *const state_names[] = {NULL, "issued", "active", "replaced", "closed"};
static const char *const kind_names[] = {NULL, "card", "cam"};
static const char *const closed_names[] = {"", "forfeited", "recovered"};

static const char *name_of(const char *const *names, size_t n, int v)
{
	return v >= 0 && (size_t)v < n ? names[v] : NULL;
}

static kh_err parse_name(const char *const *names, size_t n, const char *name, int *v)
{
	for (size_t i = 0; name && i < n; i++)
		if (names[i] && strcmp(names[i], name) == 0) {
			*v = (int)i;
			return KH_OK;
		}
	return KH_ERR_INVAL;
}

#define NAMES(a) (a), sizeof(a) / sizeof(a)[0]

const char *kh_card_state_name(enum kh_card_state v)
{
	return name_of(NAMES(state_names), (int)v);
}

const char *kh_card_kind_name(enum kh_card_kind v)
{
	return name_of(NAMES(kind_names), (int)v);
}

const char *kh_card_closed_name(enum kh_card_closed v)
{
	return name_of(NAMES(closed_names), (int)v);
}

kh_err kh_card_state_parse(const char *name, enum kh_card_state *v)
{
	int x;
	kh_err r = parse_name(NAMES(state_names), name, &x);
	if (r == KH_OK)
		*v = (enum kh_card_state)x;
	return r;
}

kh_err kh_card_kind_parse(const char *name, enum kh_card_kind *v)
{
	int x;
	kh_err r = parse_name(NAMES(kind_names), name, &x);
	if (r == KH_OK)
		*v = (enum kh_card_kind)x;
	return r;
}

/* A stored closing reason ("" when none). */
static kh_err card_closed_parse(const char *name, enum kh_card_closed *v)
{
	int x;
	kh_err r = parse_name(NAMES(closed_names), name, &x);
	if (r == KH_OK)
		*v = (enum kh_card_closed)x;
	return r;
}

kh_err kh__card_row(struct kh__stmt *st, struct kh_store_card *c)
{
	int64_t ua = kh__col_i64(st, 0), rb = kh__col_i64(st, 5), rl = kh__col_i64(st, 7), cs = kh__col_i64(st, 10);
	char name[16];

	if (!kh__u32_ok(ua) || !kh__u32_ok(rb) || !kh__u32_ok(rl) || !kh__u32_ok(cs))
		return KH_ERR_DB;
	memset(c, 0, sizeof *c);
	c->ua = (uint32_t)ua;
	c->subscriber_id = kh__col_i64(st, 2);
	c->export_authorised = kh__col_i64(st, 4) != 0;
	c->replaced_by = (uint32_t)rb;
	/* the names the database keeps, as the center compares them; a name we never write is damage */
	kh__col_text(st, 1, name, sizeof name);
	if (kh_card_kind_parse(name, &c->kind) != KH_OK)
		return KH_ERR_DB;
	kh__col_text(st, 3, name, sizeof name);
	if (kh_card_state_parse(name, &c->state) != KH_OK)
		return KH_ERR_DB;
	kh__col_text(st, 6, name, sizeof name);
	if (card_closed_parse(name, &c->closed_reason) != KH_OK)
		return KH_ERR_DB;
	c->last_reload_id = (uint32_t)rl;
	c->created_at = kh__col_i64(st, 8);
	c->clone_alarm_at = kh__col_i64(st, 9);
	c->clone_block_seq = (uint32_t)cs;
	return KH_OK;
}

struct card_add_args {
	uint32_t ua;
	enum kh_card_kind kind;
	const uint8_t *cert;
	size_t len;
};

static kh_err card_add_tx(struct kh_store *s, void *arg)
{
	static const char sql[] =
		"INSERT INTO cards (ua, role, cert, created_at) VALUES (?1, ?2, ?3, ?4)\n"
		"ON CONFLICT (ua) DO NOTHING RETURNING ua";
	struct card_add_args *a = arg;
	struct kh__stmt *st = NULL;
	int row = 0;
	kh_err r;

	if ((r = kh__stmt(s, sql, &st)) != KH_OK || (r = kh__bind_i64(st, 1, a->ua)) != KH_OK ||
	    (r = kh__bind_text(st, 2, kh_card_kind_name(a->kind))) != KH_OK || (r = kh__bind_blob(st, 3, a->cert, a->len)) != KH_OK ||
	    (r = kh__bind_i64(st, 4, kh__now())) != KH_OK || (r = kh__step(st, &row)) != KH_OK)
		goto out;
	if (!row) {
		r = KH_ERR_EXISTS;
		goto out;
	}
	r = kh__exec(st);
out:
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_card_add(struct kh_store *s, uint32_t ua, enum kh_card_kind kind, const uint8_t *cert, size_t len)
{
	struct card_add_args a = {ua, kind, cert, len};

	if (s == NULL || !kh_card_kind_name(kind) || cert == NULL || len == 0)
		return KH_ERR_INVAL;
	return kh_store_run_tx(s, card_add_tx, &a);
}

kh_err kh_store_card_get(struct kh_store *s, uint32_t ua, struct kh_store_card *c)
{
	static const char sql[] = "SELECT " KH__CARD_COLS " FROM cards WHERE ua = ?1";
	struct kh__stmt *st = NULL;
	struct kh_store_card tmp;
	int row = 0;
	kh_err r;

	if (s == NULL || c == NULL)
		return KH_ERR_INVAL;
	if ((r = kh__stmt(s, sql, &st)) != KH_OK || (r = kh__bind_i64(st, 1, ua)) != KH_OK ||
	    (r = kh__step(st, &row)) != KH_OK)
		goto out;
	if (!row) {
		r = KH_ERR_NOTFOUND;
		goto out;
	}
	if ((r = kh__card_row(st, &tmp)) != KH_OK)
		goto out;
	*c = tmp;
out:
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_card_cert(struct kh_store *s, uint32_t ua, uint8_t *der, size_t cap, size_t *len)
{
	static const char sql[] = "SELECT cert FROM cards WHERE ua = ?1";
	struct kh__stmt *st = NULL;
	const uint8_t *p;
	size_t n;
	int row = 0;
	kh_err r;

	if (s == NULL || der == NULL || len == NULL)
		return KH_ERR_INVAL;
	if ((r = kh__stmt(s, sql, &st)) != KH_OK || (r = kh__bind_i64(st, 1, ua)) != KH_OK ||
	    (r = kh__step(st, &row)) != KH_OK)
		goto out;
	if (!row) {
		r = KH_ERR_NOTFOUND;
		goto out;
	}
	p = kh__col_blob(st, 0, &n);
	if (n > cap) {
		r = KH_ERR_BUF;
		goto out;
	}
	memcpy(der, p, n);
	*len = n;
	r = KH_OK;
out:
	kh__stmt_done(st);
	return r;
}

static kh_err card_update_tx(struct kh_store *s, void *arg)
{
	static const char sql[] =
		"UPDATE cards SET subscriber_id = ?2, state = ?3, export_authorised = ?4, replaced_by = ?5,\n"
		"  closed_reason = ?6 WHERE ua = ?1 RETURNING ua";
	const struct kh_store_card *c = arg;
	struct kh__stmt *st = NULL;
	int row = 0;
	kh_err r;

	if ((r = kh__stmt(s, sql, &st)) != KH_OK || (r = kh__bind_i64(st, 1, c->ua)) != KH_OK)
		goto out;
	r = c->subscriber_id ? kh__bind_i64(st, 2, c->subscriber_id) : kh__bind_null(st, 2);
	if (r != KH_OK || (r = kh__bind_text(st, 3, kh_card_state_name(c->state))) != KH_OK ||
	    (r = kh__bind_i64(st, 4, c->export_authorised ? 1 : 0)) != KH_OK)
		goto out;
	r = c->replaced_by ? kh__bind_i64(st, 5, c->replaced_by) : kh__bind_null(st, 5);
	if (r != KH_OK)
		goto out;
	r = c->closed_reason ? kh__bind_text(st, 6, kh_card_closed_name(c->closed_reason)) : kh__bind_null(st, 6);
	if (r != KH_OK || (r = kh__step(st, &row)) != KH_OK)
		goto out;
	r = row ? kh__exec(st) : KH_ERR_NOTFOUND;
out:
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_card_update(struct kh_store *s, const struct kh_store_card *c)
{
	if (s == NULL || c == NULL || !kh_card_state_name(c->state) || !kh_card_closed_name(c->closed_reason))
		return KH_ERR_INVAL;
	return kh_store_run_tx(s, card_update_tx, (void *)c);
}

struct reload_args {
	uint32_t ua;
	uint32_t id;
};

static kh_err card_reload_tx(struct kh_store *s, void *arg)
{
	static const char sql[] =
		"UPDATE cards SET last_reload_id = last_reload_id + 1\n"
		"WHERE ua = ?1 AND last_reload_id < 4294967295 RETURNING last_reload_id";
	struct reload_args *a = arg;
	struct kh__stmt *st = NULL;
	int row = 0;
	int64_t v;
	kh_err r;

	if ((r = kh__stmt(s, sql, &st)) != KH_OK || (r = kh__bind_i64(st, 1, a->ua)) != KH_OK ||
	    (r = kh__step(st, &row)) != KH_OK)
		goto out;
	if (!row) {
		kh__stmt_done(st);
		st = NULL;
		/* unknown card, or a counter at its end */
		r = kh__exists_query(s, "SELECT 1 FROM cards WHERE ua = ?1", a->ua, 0, 1);
		if (r == KH_OK)
			r = KH_ERR_TOO_LARGE;
		goto out;
	}
	v = kh__col_i64(st, 0);
	if ((r = kh__exec(st)) != KH_OK)
		goto out;
	if (!kh__u32_ok(v) || v == 0) {
		r = KH_ERR_DB;
		goto out;
	}
	a->id = (uint32_t)v;
out:
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_card_next_reload(struct kh_store *s, uint32_t ua, uint32_t *reload_id)
{
	struct reload_args a = {ua, 0};
	kh_err r;

	if (s == NULL || reload_id == NULL)
		return KH_ERR_INVAL;
	if ((r = kh_store_run_tx(s, card_reload_tx, &a)) != KH_OK)
		return r;
	*reload_id = a.id;
	return KH_OK;
}

kh_err kh_store_cards_of(struct kh_store *s, int64_t subscriber_id, kh_store_card_fn fn, void *arg)
{
	static const char sql[] = "SELECT " KH__CARD_COLS " FROM cards WHERE subscriber_id = ?1 ORDER BY ua";
	struct kh__stmt *st = NULL;
	struct kh_store_card c;
	int row = 0;
	kh_err r;

	if (s == NULL || fn == NULL)
		return KH_ERR_INVAL;
	if ((r = kh__stmt(s, sql, &st)) != KH_OK || (r = kh__bind_i64(st, 1, subscriber_id)) != KH_OK)
		goto out;
	while ((r = kh__step(st, &row)) == KH_OK && row) {
		if ((r = kh__card_row(st, &c)) != KH_OK || (r = fn(arg, &c)) != KH_OK)
			goto out;
	}
out:
	kh__stmt_done(st);
	return r;
}
