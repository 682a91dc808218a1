/*
 * The distribution server's rows (include/keyhole/store_dist.h, migration 8). Money moves in one
 * place, kh_store_dist_charge: the debit, the receipt, the ledger entry and the delivery's new
 * state in one transaction, the debit an UPDATE that cannot take a balance below zero, and the
 * receipt unique per delivery, so a charge repeated (its answer lost, or two front ends at once)
 * finds the receipt of the first and moves nothing.
 */
#include <stdlib.h>
#include <string.h>

#include "keyhole/crypto.h"
#include "keyhole/store_dist.h"
#include "store_int.h"

static const char *const state_names[] = {NULL, "hello", "proven", "keyed", "charged"};

static const char *state_name(enum kh_store_dist_state st)
{
	return st >= KH_STORE_DIST_HELLO && st <= KH_STORE_DIST_CHARGED ? state_names[st] : NULL;
}

static enum kh_store_dist_state state_of(const uint8_t *p, size_t n)
{
	for (int i = KH_STORE_DIST_HELLO; i <= KH_STORE_DIST_CHARGED; i++)
		if (strlen(state_names[i]) == n && memcmp(state_names[i], p, n) == 0)
			return (enum kh_store_dist_state)i;
	return 0;
}

static int name_ok(const char *name)
{
	size_t n = name ? strnlen(name, KH_STORE_DIST_NAME_MAX + 1) : 0;
	return n >= 1 && n <= KH_STORE_DIST_NAME_MAX;
}

/* A blob column of exactly n bytes into out; KH_ERR_DB when the store holds another length. */
static kh_err col_fixed(struct kh__stmt *st, int col, uint8_t *out, size_t n)
{
	size_t len;
	const uint8_t *p = kh__col_blob(st, col, &len);

	if (len != n)
		return KH_ERR_DB;
	memcpy(out, p, n);
	return KH_OK;
}

/*
 * Run a statement that RETURNs one integer (an id, a balance) when it changed a row: *v, and the
 * statement run to its end; `none` when it returned no row.
 */
static kh_err returned(struct kh__stmt *st, kh_err none, int64_t *v)
{
	int row = 0;
	kh_err r = kh__step(st, &row);

	if (r != KH_OK)
		return r;
	if (!row)
		return none;
	*v = kh__col_i64(st, 0);
	return kh__exec(st);
}

/* ---------------------------------------------------------------- accounts */

struct account_add {
	const char *name;
	const uint8_t *salt, *hash;
	int64_t now, id;
};

static kh_err account_add_tx(struct kh_store *s, void *arg)
{
	static const char sql[] = "INSERT INTO dist_accounts (name, pw_salt, pw_hash, balance, created_at)\n"
				  "VALUES (?1, ?2, ?3, 0, ?4) ON CONFLICT (name) DO NOTHING RETURNING id";
	struct account_add *a = arg;
	struct kh__stmt *st = NULL;
	kh_err r;

	if ((r = kh__stmt(s, sql, &st)) == KH_OK && (r = kh__bind_text(st, 1, a->name)) == KH_OK &&
	    (r = kh__bind_blob(st, 2, a->salt, KH_STORE_DIST_SALT_LEN)) == KH_OK &&
	    (r = kh__bind_blob(st, 3, a->hash, KH_STORE_DIST_HASH_LEN)) == KH_OK &&
	    (r = kh__bind_i64(st, 4, a->now)) == KH_OK)
		r = returned(st, KH_ERR_EXISTS, &a->id);
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_dist_account_add(struct kh_store *s, const char *name, const uint8_t salt[static KH_STORE_DIST_SALT_LEN],
				 const uint8_t hash[static KH_STORE_DIST_HASH_LEN], int64_t now, int64_t *id)
{
	struct account_add a = {name, salt, hash, now, 0};
	kh_err r;

	if (s == NULL || !name_ok(name) || salt == NULL || hash == NULL || id == NULL)
		return KH_ERR_INVAL;
	if ((r = kh_store_run_tx(s, account_add_tx, &a)) == KH_OK)
		*id = a.id;
	return r;
}

/* The account row st selects (id, name, salt, hash, balance) to fn; KH_ERR_NOTFOUND when none. */
static kh_err account_row(struct kh__stmt *st, kh_store_dist_account_fn fn, void *arg)
{
	struct kh_store_dist_account a;
	char *name = NULL;
	size_t sn, hn;
	int row = 0;
	kh_err r;

	if ((r = kh__step(st, &row)) != KH_OK)
		return r;
	if (!row)
		return KH_ERR_NOTFOUND;
	if ((name = kh__col_str(st, 1)) == NULL)
		return KH_ERR_NOMEM;
	a.id = kh__col_i64(st, 0);
	a.name = name;
	a.salt = kh__col_blob(st, 2, &sn);
	a.hash = kh__col_blob(st, 3, &hn);
	a.balance = kh__col_i64(st, 4);
	r = sn == KH_STORE_DIST_SALT_LEN && hn == KH_STORE_DIST_HASH_LEN ? fn(arg, &a) : KH_ERR_DB;
	free(name);
	return r;
}

kh_err kh_store_dist_account_find(struct kh_store *s, const char *name, kh_store_dist_account_fn fn, void *arg)
{
	static const char sql[] = "SELECT id, name, pw_salt, pw_hash, balance FROM dist_accounts WHERE name = ?1";
	struct kh__stmt *st = NULL;
	kh_err r;

	if (s == NULL || !name_ok(name) || fn == NULL)
		return KH_ERR_INVAL;
	if ((r = kh__stmt(s, sql, &st)) == KH_OK && (r = kh__bind_text(st, 1, name)) == KH_OK)
		r = account_row(st, fn, arg);
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_dist_account_get(struct kh_store *s, int64_t id, kh_store_dist_account_fn fn, void *arg)
{
	static const char sql[] = "SELECT id, name, pw_salt, pw_hash, balance FROM dist_accounts WHERE id = ?1";
	struct kh__stmt *st = NULL;
	kh_err r;

	if (s == NULL || fn == NULL)
		return KH_ERR_INVAL;
	if ((r = kh__stmt(s, sql, &st)) == KH_OK && (r = kh__bind_i64(st, 1, id)) == KH_OK)
		r = account_row(st, fn, arg);
	kh__stmt_done(st);
	return r;
}

struct deposit {
	int64_t account, amount, now, balance;
};

/* The ledger entry of a movement (amount: + in, - out), with its receipt or none. */
static kh_err ledger(struct kh_store *s, int64_t account, int64_t amount, const uint8_t *receipt, int64_t now)
{
	static const char sql[] =
		"INSERT INTO dist_ledger (account_id, amount, receipt_id, created_at) VALUES (?1, ?2, ?3, ?4)";
	struct kh__stmt *st = NULL;
	kh_err r;

	if ((r = kh__stmt(s, sql, &st)) == KH_OK && (r = kh__bind_i64(st, 1, account)) == KH_OK &&
	    (r = kh__bind_i64(st, 2, amount)) == KH_OK &&
	    (r = receipt ? kh__bind_blob(st, 3, receipt, KH_STORE_DIST_RECEIPT_LEN) : kh__bind_null(st, 3)) == KH_OK &&
	    (r = kh__bind_i64(st, 4, now)) == KH_OK)
		r = kh__exec(st);
	kh__stmt_done(st);
	return r;
}

static kh_err deposit_tx(struct kh_store *s, void *arg)
{
	static const char sql[] = "UPDATE dist_accounts SET balance = balance + ?2 WHERE id = ?1 RETURNING balance";
	struct deposit *d = arg;
	struct kh__stmt *st = NULL;
	kh_err r;

	if ((r = kh__stmt(s, sql, &st)) == KH_OK && (r = kh__bind_i64(st, 1, d->account)) == KH_OK &&
	    (r = kh__bind_i64(st, 2, d->amount)) == KH_OK)
		r = returned(st, KH_ERR_NOTFOUND, &d->balance);
	kh__stmt_done(st);
	return r == KH_OK ? ledger(s, d->account, d->amount, NULL, d->now) : r;
}

kh_err kh_store_dist_deposit(struct kh_store *s, int64_t account_id, int64_t amount, int64_t now, int64_t *balance)
{
	struct deposit d = {account_id, amount, now, 0};
	kh_err r;

	if (s == NULL || balance == NULL || amount < 1 || amount > UINT32_MAX)
		return KH_ERR_INVAL;
	if ((r = kh_store_run_tx(s, deposit_tx, &d)) == KH_OK)
		*balance = d.balance;
	return r;
}

/* ---------------------------------------------------------------- sessions */

struct session_add {
	const uint8_t *hash;
	int64_t account, expires;
};

static kh_err session_add_tx(struct kh_store *s, void *arg)
{
	static const char sql[] =
		"INSERT INTO dist_sessions (token_hash, account_id, expires_at) VALUES (?1, ?2, ?3)\n"
		"ON CONFLICT (token_hash) DO NOTHING RETURNING 1";
	static const char trim[] =
		"DELETE FROM dist_sessions WHERE account_id = ?1 AND token_hash NOT IN\n"
		"  (SELECT token_hash FROM dist_sessions WHERE account_id = ?1\n"
		"   ORDER BY expires_at DESC, token_hash LIMIT ?2)";
	struct session_add *a = arg;
	struct kh__stmt *st = NULL;
	int row = 0;
	kh_err r;

	if ((r = kh__stmt(s, sql, &st)) == KH_OK && (r = kh__bind_blob(st, 1, a->hash, 32)) == KH_OK &&
	    (r = kh__bind_i64(st, 2, a->account)) == KH_OK && (r = kh__bind_i64(st, 3, a->expires)) == KH_OK &&
	    (r = kh__step(st, &row)) == KH_OK)
		r = row ? kh__exec(st) : KH_ERR_EXISTS;
	kh__stmt_done(st);
	st = NULL;
	/* An account logs in as often as it likes; it keeps its newest sessions only. */
	if (r == KH_OK && (r = kh__stmt(s, trim, &st)) == KH_OK && (r = kh__bind_i64(st, 1, a->account)) == KH_OK &&
	    (r = kh__bind_i64(st, 2, KH_STORE_DIST_SESSIONS_MAX)) == KH_OK)
		r = kh__exec(st);
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_dist_session_add(struct kh_store *s, const uint8_t token_hash[static 32], int64_t account_id,
				 int64_t expires_at)
{
	struct session_add a = {token_hash, account_id, expires_at};

	if (s == NULL || token_hash == NULL)
		return KH_ERR_INVAL;
	return kh_store_run_tx(s, session_add_tx, &a);
}

kh_err kh_store_dist_session_find(struct kh_store *s, const uint8_t token_hash[static 32], int64_t now,
				  int64_t *account_id)
{
	static const char sql[] = "SELECT account_id FROM dist_sessions WHERE token_hash = ?1 AND expires_at > ?2";
	struct kh__stmt *st = NULL;
	int row = 0;
	kh_err r;

	if (s == NULL || token_hash == NULL || account_id == NULL)
		return KH_ERR_INVAL;
	if ((r = kh__stmt(s, sql, &st)) == KH_OK && (r = kh__bind_blob(st, 1, token_hash, 32)) == KH_OK &&
	    (r = kh__bind_i64(st, 2, now)) == KH_OK && (r = kh__step(st, &row)) == KH_OK) {
		if (!row)
			r = KH_ERR_NOTFOUND;
		else
			*account_id = kh__col_i64(st, 0);
	}
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_dist_session_purge(struct kh_store *s, int64_t before, unsigned max, unsigned *n)
{
	static const char sql[] = "DELETE FROM dist_sessions WHERE token_hash IN\n"
				  "(SELECT token_hash FROM dist_sessions WHERE expires_at < ?1 LIMIT ?2)";
	struct kh__stmt *st = NULL;
	kh_err r;

	if (s == NULL)
		return KH_ERR_INVAL;
	if ((r = kh__stmt(s, sql, &st)) == KH_OK && (r = kh__bind_i64(st, 1, before)) == KH_OK &&
	    (r = kh__bind_i64(st, 2, max)) == KH_OK)
		r = kh__exec(st);
	if (r == KH_OK && n)
		*n = (unsigned)kh__changes(s);
	kh__stmt_done(st);
	return r;
}

/* ---------------------------------------------------------------- programs */

struct program_add {
	const struct kh_store_dist_program *p;
	int64_t now, id;
};

static kh_err program_add_tx(struct kh_store *s, void *arg)
{
	static const char sql[] =
		"INSERT INTO dist_programs (name, version, price, manifest, program, created_at)\n"
		"VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (name, version) DO NOTHING RETURNING id";
	struct program_add *a = arg;
	struct kh__stmt *st = NULL;
	kh_err r;

	if ((r = kh__stmt(s, sql, &st)) == KH_OK && (r = kh__bind_text(st, 1, a->p->name)) == KH_OK &&
	    (r = kh__bind_i64(st, 2, a->p->version)) == KH_OK && (r = kh__bind_i64(st, 3, a->p->price)) == KH_OK &&
	    (r = kh__bind_blob(st, 4, a->p->manifest, a->p->manifest_len)) == KH_OK &&
	    (r = kh__bind_blob(st, 5, a->p->program, a->p->program_len)) == KH_OK &&
	    (r = kh__bind_i64(st, 6, a->now)) == KH_OK)
		r = returned(st, KH_ERR_EXISTS, &a->id);
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_dist_program_add(struct kh_store *s, const struct kh_store_dist_program *p, int64_t now, int64_t *id)
{
	struct program_add a = {p, now, 0};
	kh_err r;

	if (s == NULL || p == NULL || id == NULL || !name_ok(p->name) || p->version == 0 || p->manifest == NULL ||
	    p->manifest_len == 0 || p->program == NULL || p->program_len == 0)
		return KH_ERR_INVAL;
	if ((r = kh_store_run_tx(s, program_add_tx, &a)) == KH_OK)
		*id = a.id;
	return r;
}

/* ---------------------------------------------------------------- deliveries */

struct delivery_add {
	const struct kh_store_dist_delivery *d;
	int64_t now, id;
};

static kh_err delivery_add_tx(struct kh_store *s, void *arg)
{
	static const char sql[] =
		"INSERT INTO dist_deliveries (account_id, program_id, state, fp, peer, kx_sealed, refetch, created_at,\n"
		"  updated_at) VALUES (?1, ?2, 'hello', ?3, ?4, NULL, ?5, ?6, ?6) RETURNING id";
	static const char stale[] = "DELETE FROM dist_deliveries WHERE account_id = ?1 AND state = 'hello' AND created_at < ?2";
	static const char under_way[] =
		"SELECT count(*) FROM dist_deliveries WHERE account_id = ?1 AND state <> 'charged' AND created_at >= ?2";
	struct delivery_add *a = arg;
	const struct kh_store_dist_delivery *d = a->d;
	struct kh__stmt *st = NULL;
	int row = 0;
	kh_err r;

	/* A delivery still at hello after the window holds nothing anyone can finish: it goes. Those
	 * keyed may yet be charged, and stay; the window bounds how many one account starts. */
	if ((r = kh__stmt(s, stale, &st)) == KH_OK && (r = kh__bind_i64(st, 1, d->account_id)) == KH_OK &&
	    (r = kh__bind_i64(st, 2, a->now - KH_STORE_DIST_WINDOW)) == KH_OK)
		r = kh__exec(st);
	kh__stmt_done(st);
	st = NULL;
	if (r == KH_OK && (r = kh__stmt(s, under_way, &st)) == KH_OK &&
	    (r = kh__bind_i64(st, 1, d->account_id)) == KH_OK &&
	    (r = kh__bind_i64(st, 2, a->now - KH_STORE_DIST_WINDOW)) == KH_OK && (r = kh__step(st, &row)) == KH_OK &&
	    row && kh__col_i64(st, 0) >= KH_STORE_DIST_UNDER_WAY_MAX)
		r = KH_ERR_LIMIT;
	kh__stmt_done(st);
	st = NULL;
	if (r != KH_OK)
		return r;
	if ((r = kh__stmt(s, sql, &st)) == KH_OK && (r = kh__bind_i64(st, 1, d->account_id)) == KH_OK &&
	    (r = kh__bind_i64(st, 2, d->program_id)) == KH_OK && (r = kh__bind_blob(st, 3, d->fp, 32)) == KH_OK &&
	    (r = kh__bind_blob(st, 4, d->peer, d->peer_len)) == KH_OK &&
	    (r = d->refetch_set ? kh__bind_blob(st, 5, d->refetch, KH_STORE_DIST_RECEIPT_LEN) : kh__bind_null(st, 5)) ==
		    KH_OK &&
	    (r = kh__bind_i64(st, 6, a->now)) == KH_OK)
		r = returned(st, KH_ERR_DB, &a->id);
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_dist_delivery_add(struct kh_store *s, const struct kh_store_dist_delivery *d, int64_t now, int64_t *id)
{
	struct delivery_add a = {d, now, 0};
	kh_err r;

	if (s == NULL || d == NULL || id == NULL || d->peer_len == 0 || d->peer_len > KH_STORE_DIST_PEER_MAX)
		return KH_ERR_INVAL;
	if ((r = kh_store_run_tx(s, delivery_add_tx, &a)) == KH_OK)
		*id = a.id;
	return r;
}

kh_err kh_store_dist_delivery_read(struct kh_store *s, int64_t id, int64_t account_id, struct kh_store_dist_delivery *d)
{
	static const char sql[] = "SELECT program_id, state, fp, peer, kx_sealed, refetch FROM dist_deliveries\n"
				  "WHERE id = ?1 AND account_id = ?2";
	struct kh_store_dist_delivery t = {0};
	struct kh__stmt *st = NULL;
	const uint8_t *p;
	size_t n;
	int row = 0;
	kh_err r;

	if (s == NULL || d == NULL)
		return KH_ERR_INVAL;
	if ((r = kh__stmt(s, sql, &st)) != KH_OK || (r = kh__bind_i64(st, 1, id)) != KH_OK ||
	    (r = kh__bind_i64(st, 2, account_id)) != KH_OK || (r = kh__step(st, &row)) != KH_OK)
		goto out;
	if (!row) {
		r = KH_ERR_NOTFOUND;
		goto out;
	}
	t.id = id;
	t.account_id = account_id;
	t.program_id = kh__col_i64(st, 0);
	p = kh__col_blob(st, 1, &n);
	r = KH_ERR_DB; /* a row our own CHECKs would refuse */
	if ((t.state = state_of(p, n)) == 0 || col_fixed(st, 2, t.fp, sizeof t.fp) != KH_OK)
		goto out;
	p = kh__col_blob(st, 3, &t.peer_len);
	if (t.peer_len > sizeof t.peer)
		goto out;
	memcpy(t.peer, p, t.peer_len);
	p = kh__col_blob(st, 4, &t.kx_len);
	if (t.kx_len > sizeof t.kx_sealed)
		goto out;
	memcpy(t.kx_sealed, p, t.kx_len);
	if (!kh__col_null(st, 5)) {
		if (col_fixed(st, 5, t.refetch, sizeof t.refetch) != KH_OK)
			goto out;
		t.refetch_set = 1;
	}
	*d = t;
	r = KH_OK;
out:
	kh_wipe(&t, sizeof t);
	kh__stmt_done(st);
	return r;
}

struct step {
	int64_t id, now;
	const char *from, *to;
	const uint8_t *peer, *kx;
	size_t peer_len, kx_len;
};

static kh_err step_tx(struct kh_store *s, void *arg)
{
	/* The state compared in the UPDATE itself: of two requests racing on one delivery (on one
	 * front end or two), one moves it and the other finds it moved. */
	static const char sql[] =
		"UPDATE dist_deliveries SET state = ?3, peer = CASE WHEN ?4 = 1 THEN ?5 ELSE peer END,\n"
		"  kx_sealed = CASE WHEN ?6 = 1 THEN ?7 ELSE kx_sealed END, updated_at = ?8\n"
		"WHERE id = ?1 AND state = ?2 RETURNING id";
	struct step *a = arg;
	struct kh__stmt *st = NULL;
	int row = 0;
	kh_err r;

	if ((r = kh__stmt(s, sql, &st)) == KH_OK && (r = kh__bind_i64(st, 1, a->id)) == KH_OK &&
	    (r = kh__bind_text(st, 2, a->from)) == KH_OK && (r = kh__bind_text(st, 3, a->to)) == KH_OK &&
	    (r = kh__bind_i64(st, 4, a->peer != NULL)) == KH_OK &&
	    (r = kh__bind_blob(st, 5, a->peer ? a->peer : (const uint8_t *)"", a->peer_len)) == KH_OK &&
	    (r = kh__bind_i64(st, 6, a->kx != NULL)) == KH_OK &&
	    (r = kh__bind_blob(st, 7, a->kx ? a->kx : (const uint8_t *)"", a->kx_len)) == KH_OK &&
	    (r = kh__bind_i64(st, 8, a->now)) == KH_OK && (r = kh__step(st, &row)) == KH_OK)
		r = row ? kh__exec(st) : KH_ERR_DIST_SESSION;
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_dist_delivery_step(struct kh_store *s, int64_t id, enum kh_store_dist_state from,
				   enum kh_store_dist_state to, const uint8_t *peer, size_t peer_len,
				   const uint8_t *kx_sealed, size_t kx_len, int64_t now)
{
	struct step a = {id, now, state_name(from), state_name(to), peer, kx_sealed, peer ? peer_len : 0,
			 kx_sealed ? kx_len : 0};

	if (s == NULL || a.from == NULL || a.to == NULL || to <= from || (peer && (peer_len == 0 || peer_len > KH_STORE_DIST_PEER_MAX)) ||
	    (kx_sealed && (kx_len == 0 || kx_len > KH_STORE_DIST_KX_MAX)))
		return KH_ERR_INVAL;
	return kh_store_run_tx(s, step_tx, &a);
}

/* ---------------------------------------------------------------- receipts and the charge */

#define RECEIPT_COLS "id, delivery_id, account_id, program_id, fp, price, time"

static kh_err receipt_row(struct kh__stmt *st, struct kh_store_dist_receipt *out)
{
	struct kh_store_dist_receipt t = {0};

	if (col_fixed(st, 0, t.id, sizeof t.id) != KH_OK || col_fixed(st, 4, t.fp, sizeof t.fp) != KH_OK)
		return KH_ERR_DB;
	t.delivery_id = kh__col_i64(st, 1);
	t.account_id = kh__col_i64(st, 2);
	t.program_id = kh__col_i64(st, 3);
	t.price = kh__col_u32(st, 5);
	t.time = kh__col_i64(st, 6);
	*out = t;
	return KH_OK;
}

/* The receipt that sql (one blob or integer key at ?1) finds. */
static kh_err receipt_by(struct kh_store *s, const char *sql, const uint8_t *id, int64_t delivery,
			 struct kh_store_dist_receipt *out)
{
	struct kh__stmt *st = NULL;
	int row = 0;
	kh_err r;

	if ((r = kh__stmt(s, sql, &st)) == KH_OK &&
	    (r = id ? kh__bind_blob(st, 1, id, KH_STORE_DIST_RECEIPT_LEN) : kh__bind_i64(st, 1, delivery)) == KH_OK &&
	    (r = kh__step(st, &row)) == KH_OK)
		r = row ? receipt_row(st, out) : KH_ERR_NOTFOUND;
	kh__stmt_done(st);
	return r;
}

static const char receipt_by_id[] = "SELECT " RECEIPT_COLS " FROM dist_receipts WHERE id = ?1";
static const char receipt_by_delivery[] = "SELECT " RECEIPT_COLS " FROM dist_receipts WHERE delivery_id = ?1";

kh_err kh_store_dist_receipt_read(struct kh_store *s, const uint8_t id[static KH_STORE_DIST_RECEIPT_LEN],
				  struct kh_store_dist_receipt *out)
{
	if (s == NULL || id == NULL || out == NULL)
		return KH_ERR_INVAL;
	return receipt_by(s, receipt_by_id, id, 0, out);
}

struct charge {
	int64_t id, account, now;
	const uint8_t *rid;
	struct kh_store_dist_receipt got;
	int charged;
};

/* The program's price, and the debit: never below zero (KH_ERR_FUNDS). */
static kh_err debit(struct kh_store *s, int64_t account, int64_t program, uint32_t *price)
{
	static const char q_price[] = "SELECT price FROM dist_programs WHERE id = ?1";
	static const char q_debit[] = "UPDATE dist_accounts SET balance = balance - ?2\n"
				      "WHERE id = ?1 AND balance >= ?2 RETURNING balance";
	struct kh__stmt *st = NULL;
	int row = 0;
	kh_err r;

	if ((r = kh__stmt(s, q_price, &st)) == KH_OK && (r = kh__bind_i64(st, 1, program)) == KH_OK &&
	    (r = kh__step(st, &row)) == KH_OK) {
		if (!row)
			r = KH_ERR_DB; /* a delivery of no program: the foreign key forbids it */
		else
			*price = kh__col_u32(st, 0);
	}
	kh__stmt_done(st);
	if (r != KH_OK || *price == 0)
		return r;
	st = NULL;
	if ((r = kh__stmt(s, q_debit, &st)) == KH_OK && (r = kh__bind_i64(st, 1, account)) == KH_OK &&
	    (r = kh__bind_i64(st, 2, *price)) == KH_OK && (r = kh__step(st, &row)) == KH_OK)
		r = row ? kh__exec(st) : KH_ERR_FUNDS;
	kh__stmt_done(st);
	return r;
}

static kh_err receipt_insert(struct kh_store *s, const struct kh_store_dist_receipt *t)
{
	static const char sql[] =
		"INSERT INTO dist_receipts (" RECEIPT_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
	struct kh__stmt *st = NULL;
	kh_err r;

	if ((r = kh__stmt(s, sql, &st)) == KH_OK && (r = kh__bind_blob(st, 1, t->id, sizeof t->id)) == KH_OK &&
	    (r = kh__bind_i64(st, 2, t->delivery_id)) == KH_OK && (r = kh__bind_i64(st, 3, t->account_id)) == KH_OK &&
	    (r = kh__bind_i64(st, 4, t->program_id)) == KH_OK && (r = kh__bind_blob(st, 5, t->fp, sizeof t->fp)) == KH_OK &&
	    (r = kh__bind_i64(st, 6, t->price)) == KH_OK && (r = kh__bind_i64(st, 7, t->time)) == KH_OK)
		r = kh__exec(st);
	kh__stmt_done(st);
	return r;
}

static kh_err charge_tx(struct kh_store *s, void *arg)
{
	struct charge *c = arg;
	struct kh_store_dist_delivery d;
	struct kh_store_dist_receipt t = {0};
	uint32_t price = 0;
	kh_err r;

	c->charged = 0;
	if ((r = kh_store_dist_delivery_read(s, c->id, c->account, &d)) != KH_OK)
		return r;
	kh_wipe(d.kx_sealed, sizeof d.kx_sealed);
	if (d.state == KH_STORE_DIST_CHARGED) /* done before: the same receipt, nothing moves */
		return d.refetch_set ? receipt_by(s, receipt_by_id, d.refetch, 0, &c->got)
				     : receipt_by(s, receipt_by_delivery, NULL, c->id, &c->got);
	if (d.state != KH_STORE_DIST_KEYED)
		return KH_ERR_DIST_SESSION;
	if (d.refetch_set) { /* fetched again on a receipt: released, paid for once already */
		if ((r = receipt_by(s, receipt_by_id, d.refetch, 0, &c->got)) != KH_OK)
			return r;
	} else {
		if ((r = debit(s, c->account, d.program_id, &price)) != KH_OK)
			return r;
		memcpy(t.id, c->rid, sizeof t.id);
		t.delivery_id = c->id;
		t.account_id = c->account;
		t.program_id = d.program_id;
		memcpy(t.fp, d.fp, sizeof t.fp);
		t.price = price;
		t.time = c->now;
		if ((r = receipt_insert(s, &t)) != KH_OK ||
		    (price > 0 && (r = ledger(s, c->account, -(int64_t)price, t.id, c->now)) != KH_OK))
			return r;
		c->got = t;
		c->charged = 1;
	}
	return step_tx(s, &(struct step){c->id, c->now, "keyed", "charged", NULL, NULL, 0, 0});
}

kh_err kh_store_dist_charge(struct kh_store *s, int64_t id, int64_t account_id,
			    const uint8_t receipt_id[static KH_STORE_DIST_RECEIPT_LEN], int64_t now,
			    struct kh_store_dist_receipt *out, int *charged)
{
	struct charge c = {.id = id, .account = account_id, .now = now, .rid = receipt_id};
	kh_err r;

	if (s == NULL || receipt_id == NULL || out == NULL || charged == NULL)
		return KH_ERR_INVAL;
	if ((r = kh_store_run_tx(s, charge_tx, &c)) == KH_OK) {
		*out = c.got;
		*charged = c.charged;
	}
	return r;
}
