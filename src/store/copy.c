/*
 * keyhole store copy (docs/internals/store.md, "Copying and checking a store"): every row of one
 * store into another, empty one, on either backend, verified before it is committed. The tables
 * and their columns are listed once, below (tables[]): the copy, its checksums and the check's
 * test of the list against the live schema all read it, so a migration that adds a table or a
 * column without adding it here fails the tests (tests/unit/test_store_check.c).
 *
 * A table is read in primary-key order, a page at a time (keyset: the rows after the last key
 * read, never OFFSET), from one read transaction; each row is inserted into the target in its
 * one write transaction, and hashed. Then the target's tables are read back the same way inside
 * that transaction and their counts and checksums compared with the source's: only when every
 * table matches is it committed. The SQL is common to both backends; what is not (the read
 * transaction, the identity sequences, whether two connections are one database) is the
 * backend's (struct kh__backend, "the store tools").
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyhole/crypto.h"
#include "keyhole/log.h"
#include "store_int.h"

#define PAGE_ROWS 1000
#define PAGE " LIMIT 1000"
#define MAX_COLS 16
#define MAX_PK 3

/* ?1, ?2, ... ?n: an INSERT's values */
#define P3 "?1, ?2, ?3"
#define P4 P3 ", ?4"
#define P5 P4 ", ?5"
#define P6 P5 ", ?6"
#define P7 P6 ", ?7"
#define P8 P7 ", ?8"
#define P9 P8 ", ?9"
#define P10 P9 ", ?10"
#define P12 P9 ", ?10, ?11, ?12"
#define P15 P12 ", ?13, ?14, ?15"
#define P16 P15 ", ?16"
#define P2 "?1, ?2"

/* The key after which a page starts: the primary key's columns as a row value. */
#define AFTER1(a) "(" a ") > (?1)"
#define AFTER2(a, b) "(" a ", " b ") > (?1, ?2)"
#define AFTER3(a, b, c) "(" a ", " b ", " c ") > (?1, ?2, ?3)"

enum gen {
	GEN_NONE,
	GEN_ROWID, /* INTEGER PRIMARY KEY: SQLite's max + 1, an identity column on PostgreSQL */
	GEN_AUTO,  /* AUTOINCREMENT: never an id twice, even after a delete (sqlite_sequence) */
};

struct table {
	const char *name;
	const char *cols;  /* the primary key's columns first */
	const char *types; /* one per column: i integer, t text, b blob */
	int npk;
	enum gen gen;      /* the first column's generator */
	const char *q_page, *q_insert, *q_count;
	/* A column inserted NULL, then set once every row is in (cards.replaced_by refers to a card
	 * that may come later in key order): its 1-based index, the source's (key, value) rows and
	 * the target's UPDATE. */
	int late;
	const char *q_late_src, *q_late_set;
	/* The migration made a row (credit_policy): q_others counts the others, q_clear goes first. */
	const char *q_others, *q_clear;
};

#define T(tname, tcols, ttypes, tnpk, tpk, tafter, tparams)                                                      \
	.name = tname, .cols = tcols, .types = ttypes, .npk = tnpk,                                             \
	.q_page = "SELECT " tcols " FROM " tname " WHERE " tafter " ORDER BY " tpk PAGE,                       \
	.q_insert = "INSERT INTO " tname " (" tcols ") VALUES (" tparams ")", .q_count = "SELECT count(*) FROM " tname

/* Every table of the schema but schema_migrations (each side's own, at the same version) and,
 * on PostgreSQL, application_id: in an order where a table comes after those it refers to. */
static const struct table tables[] = {
	{T("subscribers", "id, name, created_at, closed_at", "itii", 1, "id", AFTER1("id"), P4), .gen = GEN_AUTO},
	{T("products", "id, name", "it", 1, "id", AFTER1("id"), P2), .gen = GEN_ROWID},
	{T("channels", "id, name, product_id", "iti", 1, "id", AFTER1("id"), P3), .gen = GEN_ROWID},
	{T("events", "id, name, price, channel_id, start_time, end_time", "itiiii", 1, "id", AFTER1("id"), P6),
	 .gen = GEN_ROWID},
	{T("cards",
	   "ua, role, cert, subscriber_id, state, export_authorised, replaced_by, closed_reason, created_at, "
	   "last_reload_id, clone_alarm_at, clone_block_seq",
	   "itbitiitiiii", 1, "ua", AFTER1("ua"), P12),
	 .gen = GEN_ROWID, .late = 7,
	 .q_late_src = "SELECT ua, replaced_by FROM cards WHERE replaced_by IS NOT NULL ORDER BY ua",
	 .q_late_set = "UPDATE cards SET replaced_by = ?2 WHERE ua = ?1"},
	{T("subscriptions", "subscriber_id, product_id, start_time, end_time", "iiii", 2, "subscriber_id, product_id",
	   AFTER2("subscriber_id", "product_id"), P4)},
	{T("credit_policy", "id, initial_credit, reload_amount", "iii", 1, "id", AFTER1("id"), P3),
	 .gen = GEN_ROWID,
	 .q_others = "SELECT count(*) FROM credit_policy WHERE NOT (id = 1 AND initial_credit = 0 AND reload_amount = 0)",
	 .q_clear = "DELETE FROM credit_policy"},
	{T("service_keys", "key_id, version, key, created_at", "iibi", 2, "key_id, version", AFTER2("key_id", "version"),
	   P4)},
	{T("rotation_jobs", "key_id, version, last_ua, emms, done, created_at", "iiiiii", 2, "key_id, version",
	   AFTER2("key_id", "version"), P6)},
	{T("emm_queue", "id, address_type, address, seq, section, created_at, fetched_at, pos", "iiiibiii", 1, "id",
	   AFTER1("id"), P8),
	 .gen = GEN_AUTO},
	/* migration 7 made its one row: the source's replaces it */
	{T("emm_order", "id, last_pos", "ii", 1, "id", AFTER1("id"), P2), .gen = GEN_ROWID,
	 .q_others = "SELECT count(*) FROM emm_order WHERE NOT (id = 1 AND last_pos = 0)",
	 .q_clear = "DELETE FROM emm_order"},
	{T("emm_seq", "address_type, address, last_seq", "iii", 2, "address_type, address",
	   AFTER2("address_type", "address"), P3)},
	{T("upload_sessions", "id, ua, nonce, created_at, closed_at", "iibii", 1, "id", AFTER1("id"), P5),
	 .gen = GEN_AUTO},
	{T("usage_blocks", "ua, block_seq, received_at, verdict, session_id, hash, credit, last_reload", "iiitibii", 2,
	   "ua, block_seq", AFTER2("ua", "block_seq"), P8)},
	{T("usage_clones", "ua, block_seq, hash, session_id, received_at", "iibii", 3, "ua, block_seq, hash",
	   AFTER3("ua", "block_seq", "hash"), P5)},
	{T("purchases", "id, ua, event_id, price, time, block_ua, block_seq", "iiiiiii", 1, "id", AFTER1("id"), P7),
	 .gen = GEN_ROWID},
	{T("invoices", "id, subscriber_id, ua, event_id, price, time, created_at, block_price, flag", "iiiiiiiit", 1,
	   "id", AFTER1("id"), P9),
	 .gen = GEN_AUTO},
	{T("credit_reloads", "ua, reload_id, amount, created_at", "iiii", 2, "ua, reload_id", AFTER2("ua", "reload_id"),
	   P4)},
	{T("idempotency", "key, request_hash, response, created_at", "tbbi", 1, "key", AFTER1("key"), P4)},
	{T("bulk_jobs",
	   "key, request_hash, product_id, start_time, end_time, all_subscribers, max_subscriber_id, "
	   "last_subscriber_id, subscribers, emms_queued, skipped, chunks, done, created_at, updated_at",
	   "tbiiiiiiiiiiiii", 1, "key", AFTER1("key"), P15)},
	/* the distribution server's (migration 8) */
	{T("dist_accounts", "id, name, pw_salt, pw_hash, balance, created_at", "itbbii", 1, "id", AFTER1("id"), P6),
	 .gen = GEN_AUTO},
	{T("dist_programs", "id, name, version, price, manifest, program, created_at", "itiibbi", 1, "id", AFTER1("id"),
	   P7),
	 .gen = GEN_AUTO},
	{T("dist_sessions", "token_hash, account_id, expires_at", "bii", 1, "token_hash", AFTER1("token_hash"), P3)},
	{T("dist_deliveries", "id, account_id, program_id, state, fp, peer, kx_sealed, refetch, created_at, updated_at",
	   "iiitbbbbii", 1, "id", AFTER1("id"), P10),
	 .gen = GEN_AUTO},
	{T("dist_receipts", "id, delivery_id, account_id, program_id, fp, price, time", "biiibii", 1, "id", AFTER1("id"),
	   P7)},
	{T("dist_ledger", "id, account_id, amount, receipt_id, created_at", "iiibi", 1, "id", AFTER1("id"), P5),
	 .gen = GEN_AUTO},
	/* the escrow's (migration 9) */
	{T("escrow_accounts", "id, name, kind, currency, created_at", "ittti", 1, "id", AFTER1("id"), P5),
	 .gen = GEN_AUTO},
	{T("escrow_balances", "account_id, bucket, balance", "iti", 2, "account_id, bucket",
	   AFTER2("account_id", "bucket"), P3)},
	{T("escrow_listings",
	   "id, seller_id, content_id, price, currency, deadline_secs, key_id, public_key, signed, created_at",
	   "bititibbbi", 1, "id", AFTER1("id"), P10)},
	{T("escrow_purchases",
	   "id, listing_id, buyer_id, seller_id, price, device_ua, request_hash, request, idem_key, state, deadline, "
	   "answer, notice, created_at, settled_at",
	   "bbiiiibbbtibbii", 1, "id", AFTER1("id"), P15)},
	{T("escrow_movements", "id, kind, account_id, purchase_id, amount, idem_key, available_after, created_at",
	   "itibibii", 1, "id", AFTER1("id"), P8),
	 .gen = GEN_AUTO},
	{T("escrow_entries", "id, movement_id, account_id, bucket, amount", "iiiti", 1, "id", AFTER1("id"), P5),
	 .gen = GEN_AUTO},
	{T("escrow_tokens", "account_id, token_hash, created_at", "ibi", 1, "account_id", AFTER1("account_id"), P3)},
	/* the key center's (migration 10) */
	{T("kc_cards",
	   "serial, address, state, sign_cert, code_mac, code_fails, code_window_start, send_pos, send_state, "
	   "recv_pos, recv_state, last_post_hash, hello_time, replaced_by, created, activated",
	   "ittbbiiibibbiiii", 1, "serial", AFTER1("serial"), P16)},
	{T("kc_mailbox", "recipient, idx, sender, sender_address, msg, key_sealed, size, created", "iiitbbii", 2,
	   "recipient, idx", AFTER2("recipient", "idx"), P8)},
	{T("kc_relays", "id, sender, send_idx, recipient, recv_idx, size, time", "iiiiiii", 1, "id", AFTER1("id"), P7),
	 .gen = GEN_AUTO},
	{T("kc_sessions", "token_hash, serial, expires", "bii", 1, "token_hash", AFTER1("token_hash"), P3)},
};
#define NTABLES (sizeof tables / sizeof tables[0])

size_t kh_store_tables_count(void)
{
	return NTABLES;
}

const char *kh_store_table_name(size_t i, const char **cols)
{
	if (i >= NTABLES)
		return NULL;
	if (cols)
		*cols = tables[i].cols;
	return tables[i].name;
}

/* ---- read transactions (check.c too) ---- */

kh_err kh__begin_read(struct kh_store *s)
{
	kh_err r;

	if (s->in_tx)
		return kh__fail_msg(s, KH_ERR_INVAL, "begin: a transaction is already open");
	if ((r = kh__exec_cached(s, s->be->q_begin_read)) != KH_OK)
		return r;
	s->in_tx = 1;
	return KH_OK;
}

/* ---- walking a table in key order, hashing its rows ---- */

struct enc {
	uint8_t *p;
	size_t n, cap;
	int oom;
};

static void enc_put(struct enc *e, const void *p, size_t n)
{
	if (e->oom)
		return;
	if (e->n + n > e->cap) {
		size_t cap = (e->n + n) * 2 + 64;
		uint8_t *q = realloc(e->p, cap);
		if (q == NULL) {
			e->oom = 1;
			return;
		}
		e->p = q;
		e->cap = cap;
	}
	memcpy(e->p + e->n, p, n);
	e->n += n;
}

static void enc_u64(struct enc *e, uint8_t tag, uint64_t v)
{
	uint8_t b[9];

	b[0] = tag;
	for (int i = 0; i < 8; i++)
		b[1 + i] = (uint8_t)(v >> (56 - 8 * i));
	enc_put(e, b, sizeof b);
}

static void enc_free(struct enc *e)
{
	if (e->p != NULL) {
		kh_wipe(e->p, e->cap); /* a row may hold a service key */
		free(e->p);
	}
	memset(e, 0, sizeof *e);
}

/*
 * The checksum chain: sum = SHA256("keyhole store copy v1" 0 table 0 cols), then for each row in
 * key order sum = SHA256(sum || row), a row being its columns in order, each NULL as 00, an
 * integer as 01 and 8 bytes big-endian, text as 02 and blob as 03 followed by the length (8
 * bytes big-endian) and the bytes.
 */
static kh_err sum_start(const struct table *t, struct enc *e, uint8_t sum[32])
{
	e->n = 0;
	enc_put(e, "keyhole store copy v1", 22);
	enc_put(e, t->name, strlen(t->name) + 1);
	enc_put(e, t->cols, strlen(t->cols));
	return e->oom ? KH_ERR_NOMEM : kh_sha256(e->p, e->n, sum);
}

static kh_err sum_row(const struct table *t, struct kh__stmt *st, struct enc *e, uint8_t sum[32])
{
	e->n = 0;
	enc_put(e, sum, 32);
	for (int j = 0; t->types[j]; j++) {
		const uint8_t *p;
		size_t n;

		if (kh__col_null(st, j)) {
			enc_put(e, "", 1);
		} else if (t->types[j] == 'i') {
			enc_u64(e, 1, (uint64_t)kh__col_i64(st, j));
		} else {
			p = kh__col_blob(st, j, &n);
			enc_u64(e, t->types[j] == 't' ? 2 : 3, n);
			enc_put(e, p, n);
		}
	}
	return e->oom ? KH_ERR_NOMEM : kh_sha256(e->p, e->n, sum);
}

/* A row of a walk: the statement is on it (its columns are the table's). */
typedef kh_err (*row_fn)(void *arg, const struct table *t, struct kh__stmt *st);

struct walk {
	int64_t rows;
	int64_t last_id; /* the first key column of the last row (an integer key) */
	uint8_t sum[32];
};

/* The primary key of the row st is on, kept to start the next page after it. */
struct key {
	int64_t i[MAX_PK];
	char *t[MAX_PK];
};

static void key_free(struct key *k)
{
	for (int j = 0; j < MAX_PK; j++) {
		free(k->t[j]);
		k->t[j] = NULL;
	}
}

static kh_err key_keep(const struct table *t, struct kh__stmt *st, struct key *k)
{
	for (int j = 0; j < t->npk; j++) {
		const uint8_t *p;
		size_t n;

		if (t->types[j] == 'i') {
			k->i[j] = kh__col_i64(st, j);
			continue;
		}
		/* text or blob: its bytes and length (a blob may hold a 0 byte), NUL-terminated */
		p = kh__col_blob(st, j, &n);
		free(k->t[j]);
		if ((k->t[j] = malloc(n + 1)) == NULL)
			return KH_ERR_NOMEM;
		memcpy(k->t[j], p, n);
		k->t[j][n] = '\0';
		k->i[j] = (int64_t)n;
	}
	return KH_OK;
}

static kh_err key_bind(const struct table *t, struct kh__stmt *st, const struct key *k, int first)
{
	kh_err r = KH_OK;

	/* before every key: the smallest integer, the empty text (every text key has a byte), the
	 * empty blob */
	for (int j = 0; j < t->npk && r == KH_OK; j++) {
		if (t->types[j] == 'i')
			r = kh__bind_i64(st, j + 1, first ? INT64_MIN : k->i[j]);
		else if (t->types[j] == 'b')
			r = kh__bind_blob(st, j + 1, first ? NULL : k->t[j], first ? 0 : (size_t)k->i[j]);
		else
			r = kh__bind_text(st, j + 1, first ? "" : k->t[j]);
	}
	return r;
}

/* Every row of t on s in key order, a page at a time: hashed into w, and handed to fn (may be NULL). */
static kh_err walk_table(struct kh_store *s, const struct table *t, row_fn fn, void *arg, struct walk *w)
{
	struct kh__stmt *st = NULL;
	struct enc e = {0};
	struct key k = {0};
	int first = 1, row = 0;
	int64_t page;
	kh_err r;

	memset(w, 0, sizeof *w);
	if ((r = sum_start(t, &e, w->sum)) != KH_OK)
		goto out;
	do {
		page = 0;
		if ((r = kh__stmt(s, t->q_page, &st)) != KH_OK || (r = key_bind(t, st, &k, first)) != KH_OK)
			goto out;
		while ((r = kh__step(st, &row)) == KH_OK && row) {
			if ((r = sum_row(t, st, &e, w->sum)) != KH_OK || (fn && (r = fn(arg, t, st)) != KH_OK))
				goto out;
			if ((r = key_keep(t, st, &k)) != KH_OK)
				goto out;
			w->last_id = kh__col_i64(st, 0);
			w->rows++;
			page++;
		}
		if (r != KH_OK)
			goto out;
		kh__stmt_done(st);
		st = NULL;
		first = 0;
	} while (page == PAGE_ROWS);
out:
	kh__stmt_done(st);
	key_free(&k);
	enc_free(&e);
	return r;
}

/* ---- checksums ---- */

kh_err kh_store_sums(struct kh_store *s, kh_store_copy_fn fn, void *arg)
{
	struct kh_store_copy_table out;
	struct walk w;
	kh_err r;

	if (s == NULL)
		return KH_ERR_INVAL;
	if ((r = kh__begin_read(s)) != KH_OK)
		return r;
	for (size_t i = 0; i < NTABLES && r == KH_OK; i++) {
		if ((r = walk_table(s, &tables[i], NULL, NULL, &w)) != KH_OK)
			break;
		memset(&out, 0, sizeof out);
		out.table = tables[i].name;
		out.rows_from = out.rows_to = w.rows;
		memcpy(out.sum_from, w.sum, 32);
		memcpy(out.sum_to, w.sum, 32);
		out.same = 1;
		if (fn)
			r = fn(arg, &out);
	}
	kh_store_rollback(s);
	return r;
}

/* ---- the copy ---- */

/* One source row into the target's table (its late column NULL for now). */
static kh_err insert_row(void *arg, const struct table *t, struct kh__stmt *src)
{
	struct kh_store *to = arg;
	struct kh__stmt *st = NULL;
	char *text[MAX_COLS] = {0};
	kh_err r;

	if ((r = kh__stmt(to, t->q_insert, &st)) != KH_OK)
		return r;
	for (int j = 0; t->types[j] && r == KH_OK; j++) {
		const uint8_t *p;
		size_t n;

		if (kh__col_null(src, j) || j + 1 == t->late) {
			r = kh__bind_null(st, j + 1);
		} else if (t->types[j] == 'i') {
			r = kh__bind_i64(st, j + 1, kh__col_i64(src, j));
		} else if (t->types[j] == 't') {
			if ((text[j] = kh__col_str(src, j)) == NULL)
				r = KH_ERR_NOMEM;
			else
				r = kh__bind_text(st, j + 1, text[j]);
		} else {
			p = kh__col_blob(src, j, &n);
			r = kh__bind_blob(st, j + 1, p, n);
		}
	}
	if (r == KH_OK)
		r = kh__exec(st);
	kh__stmt_done(st);
	for (int j = 0; j < MAX_COLS; j++)
		free(text[j]);
	return r;
}

/* The late column of t: (key, value) from the source set on the target. */
static kh_err set_late(struct kh_store *from, struct kh_store *to, const struct table *t)
{
	struct kh__stmt *src = NULL, *st = NULL;
	int row = 0;
	kh_err r;

	if ((r = kh__stmt(from, t->q_late_src, &src)) != KH_OK)
		return r;
	while ((r = kh__step(src, &row)) == KH_OK && row) {
		if ((r = kh__stmt(to, t->q_late_set, &st)) == KH_OK && (r = kh__bind_i64(st, 1, kh__col_i64(src, 0))) == KH_OK &&
		    (r = kh__bind_i64(st, 2, kh__col_i64(src, 1))) == KH_OK && (r = kh__exec(st)) == KH_OK &&
		    kh__changes(to) != 1)
			r = kh__fail_msg(to, KH_ERR_DB, "copy: a late column's row is missing");
		kh__stmt_done(st);
		st = NULL;
		if (r != KH_OK)
			break;
	}
	kh__stmt_done(src);
	return r;
}

/* What the copy holds while it runs. */
struct copy {
	struct kh_store *from, *to;
	int created; /* the target file was made by this copy */
	struct walk src[NTABLES], dst[NTABLES];
	char *why;
	size_t cap;
};

__attribute__((format(printf, 3, 4))) static kh_err say(struct copy *c, kh_err r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->why, c->cap, fmt, ap);
	va_end(ap);
	return r;
}

/* The store's own line for a failure on s, or the code's message. */
static kh_err say_store(struct copy *c, kh_err r, const char *side, struct kh_store *s)
{
	const char *e = s ? kh_store_last_error(s) : "";
	return say(c, r, "%s: %s", side, *e ? e : kh_strerror(r));
}

/* The source: as it is, at this code's version. */
static kh_err open_from(struct copy *c, const char *url)
{
	char msg[160];
	int v = 0;
	kh_err r;

	if ((r = kh_store_open_as_is(url, &c->from)) != KH_OK)
		return say(c, r, "%s: %s", "--from", r == KH_ERR_NOTFOUND ? "the database does not exist" : kh_strerror(r));
	if ((r = kh_store_schema_version(c->from, &v)) != KH_OK)
		return say_store(c, r, "--from", c->from);
	if (v != kh_store_schema_latest()) {
		snprintf(msg, sizeof msg,
			 "its schema is version %d, this program's %d: open it once with this version first (keyhole "
			 "serve migrates it), then copy",
			 v, kh_store_schema_latest());
		return say(c, KH_ERR_VERSION, "%s: %s", "--from", msg);
	}
	return KH_OK;
}

/*
 * The target: a new SQLite file or a database without tables is made a store (migrated); one
 * at this code's version is taken as it is (whether it is empty is asked next); any other is
 * refused unchanged. The same database as the source is refused before anything is written.
 */
static kh_err open_to(struct copy *c, const char *url)
{
	char why[320];
	int exists = 0, v = 0;
	kh_err r;

	if ((r = kh_store_check(url, &exists, why, sizeof why)) != KH_OK)
		return say(c, r, "%s: %s", "--to", why);
	if (exists) {
		if ((r = kh_store_open_as_is(url, &c->to)) != KH_OK)
			return say(c, r, "%s: %s", "--to", kh_strerror(r));
		if (c->to->be == c->from->be && c->to->be->same_db(c->from, c->to))
			return say(c, KH_ERR_INVAL, "--from and --to name the same database");
		if ((r = kh_store_schema_version(c->to, &v)) != KH_OK)
			return say_store(c, r, "--to", c->to);
		if (v == kh_store_schema_latest())
			return KH_OK;
		if (v != 0)
			return say(c, KH_ERR_VERSION, "%s: %s", "--to",
				   "a store of an older version: copy only into a new, empty store");
		kh_store_close(c->to);
		c->to = NULL;
	}
	if ((r = kh_store_open(url, &c->to)) != KH_OK)
		return say(c, r, "%s: %s", "--to", kh_strerror(r));
	c->created = !exists;
	return KH_OK;
}

static kh_err check_empty(struct copy *c)
{
	int64_t rows = 0;
	kh_err r;

	for (size_t i = 0; i < NTABLES; i++) {
		if ((r = kh__query_int(c->to, tables[i].q_others ? tables[i].q_others : tables[i].q_count, &rows)) != KH_OK)
			return say_store(c, r, "--to", c->to);
		if (rows != 0)
			return say(c, KH_ERR_EXISTS, "--to is not an empty store: table %s has %lld row(s); nothing was copied",
				   tables[i].name, (long long)rows);
	}
	return KH_OK;
}

/* Inside both transactions: every table, the late columns, then the generators moved on. */
static kh_err copy_rows(struct copy *c)
{
	kh_err r;

	for (size_t i = 0; i < NTABLES; i++) {
		const struct table *t = &tables[i];

		if (t->q_clear && (r = kh__exec_cached(c->to, t->q_clear)) != KH_OK)
			return say_store(c, r, "--to", c->to);
		if ((r = walk_table(c->from, t, insert_row, c->to, &c->src[i])) != KH_OK)
			return say_store(c, r, t->name, kh_store_last_error(c->to)[0] ? c->to : c->from);
	}
	for (size_t i = 0; i < NTABLES; i++)
		if (tables[i].late && (r = set_late(c->from, c->to, &tables[i])) != KH_OK)
			return say_store(c, r, tables[i].name, c->to);
	return KH_OK;
}

/* The id generators of the target past every id copied, and every id the source handed out. */
static kh_err move_generators(struct copy *c)
{
	char col[32];
	int64_t v;
	kh_err r;

	for (size_t i = 0; i < NTABLES; i++) {
		const struct table *t = &tables[i];

		if (t->gen == GEN_NONE)
			continue;
		snprintf(col, sizeof col, "%.*s", (int)strcspn(t->cols, ","), t->cols);
		if ((r = c->from->be->seq_get(c->from, t->name, col, &v)) != KH_OK)
			return say_store(c, r, "--from", c->from);
		if (c->src[i].rows > 0 && c->src[i].last_id > v)
			v = c->src[i].last_id;
		if ((r = c->to->be->seq_set(c->to, t->name, col, t->gen == GEN_AUTO, v)) != KH_OK)
			return say_store(c, r, "--to", c->to);
	}
	return KH_OK;
}

/* Every table read back from the target (its own transaction sees its rows) and compared. */
static kh_err verify(struct copy *c, kh_store_copy_fn fn, void *arg)
{
	struct kh_store_copy_table out;
	const char *bad = NULL;
	kh_err r;

	for (size_t i = 0; i < NTABLES; i++) {
		if ((r = walk_table(c->to, &tables[i], NULL, NULL, &c->dst[i])) != KH_OK)
			return say_store(c, r, "--to", c->to);
		memset(&out, 0, sizeof out);
		out.table = tables[i].name;
		out.rows_from = c->src[i].rows;
		out.rows_to = c->dst[i].rows;
		memcpy(out.sum_from, c->src[i].sum, 32);
		memcpy(out.sum_to, c->dst[i].sum, 32);
		out.same = out.rows_from == out.rows_to && memcmp(out.sum_from, out.sum_to, 32) == 0;
		if (!out.same && bad == NULL)
			bad = tables[i].name;
		if (fn && (r = fn(arg, &out)) != KH_OK)
			return say(c, r, "stopped");
	}
	if (bad != NULL)
		return say(c, KH_ERR_DB, "verification failed: table %s differs once copied; nothing was committed", bad);
	return KH_OK;
}

kh_err kh_store_copy(const char *from, const char *to, kh_store_copy_fn fn, void *arg, char *why, size_t cap)
{
	static char none[1];
	struct copy *c;
	kh_err r;

	if (why == NULL || cap == 0) {
		why = none;
		cap = sizeof none;
	}
	why[0] = '\0';
	if (from == NULL || to == NULL)
		return KH_ERR_INVAL;
	if ((c = calloc(1, sizeof *c)) == NULL)
		return KH_ERR_NOMEM;
	c->why = why;
	c->cap = cap;
	if ((r = open_from(c, from)) != KH_OK || (r = open_to(c, to)) != KH_OK || (r = check_empty(c)) != KH_OK)
		goto out;
	if ((r = kh__begin_read(c->from)) != KH_OK) {
		r = say_store(c, r, "--from", c->from);
		goto out;
	}
	if ((r = kh_store_begin(c->to)) != KH_OK) {
		r = say_store(c, r, "--to", c->to);
		goto out;
	}
	/* PostgreSQL's setval is not undone by a rollback: the generators move once all is verified. */
	if ((r = copy_rows(c)) != KH_OK || (r = verify(c, fn, arg)) != KH_OK || (r = move_generators(c)) != KH_OK)
		goto out;
	if ((r = kh_store_commit(c->to)) != KH_OK)
		r = say_store(c, r, "--to", c->to);
out:
	kh_store_rollback(c->to);
	kh_store_rollback(c->from);
	kh_store_close(c->from);
	kh_store_close(c->to);
	/* a file this copy made, with nothing committed in it, goes; the copy's error is what is said */
	if (r != KH_OK && c->created && kh_store_remove(to) != KH_OK)
		kh_log_warn("store.copy", "msg=\"the target file this copy created could not be removed\"");
	free(c);
	return r;
}
