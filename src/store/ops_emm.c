/*
 * EMM sequence numbers and the EMM queue (the protocol design "Pay-TV: ECM and EMM"). A card refuses an
 * EMM whose seq is not above the last it accepted for that address type, so a seq must never be
 * handed out twice, even across a crash: it is taken by one committed UPDATE before anyone sees
 * it. Enqueueing takes the seq, has the caller seal the section with it, and queues the section
 * in the same transaction, so no seq is burnt by an EMM that was never queued and no queued EMM
 * carries a seq that was not recorded.
 *
 * The queue's global cursor is its position (emm_queue.pos, migration 7), handed out in commit
 * order so that a reader paging "pos > since" never passes a row that commits later. With one
 * writer at a time (SQLite) the enqueue takes the next position itself: the write lock orders
 * positions as commits. With concurrent writers (PostgreSQL) an EMM is queued without one, and a
 * reader first numbers the committed EMMs that have none, in a short transaction of its own on
 * the one counter row (emm_order): numbering transactions are serialised by that row, and
 * reading after one committed sees every position below the counter. Identity values would not
 * do: a writer may take id 7, another id 8 and commit first, and a reader at 8 never sees 7.
 */
#include <stdlib.h>

#include "keyhole/cas.h"
#include "store_int.h"

static int addr_ok(uint8_t type, uint32_t addr)
{
	if (type == KH_EMM_ALL)
		return addr == 0;
	return type == KH_EMM_UNIQUE || type == KH_EMM_GROUP;
}

struct seq_args {
	uint8_t type;
	uint32_t addr;
	uint32_t seq;
};

static kh_err seq_tx(struct kh_store *s, void *arg)
{
	/* The WHERE keeps the counter at UINT32_MAX: the upsert then returns no row. */
	static const char sql[] =
		"INSERT INTO emm_seq (address_type, address, last_seq) VALUES (?1, ?2, 1)\n"
		"ON CONFLICT (address_type, address) DO UPDATE SET last_seq = emm_seq.last_seq + 1\n"
		"  WHERE emm_seq.last_seq < 4294967295\n"
		"RETURNING last_seq";
	struct seq_args *a = arg;
	struct kh__stmt *st = NULL;
	int row = 0;
	int64_t v;
	kh_err r;

	if ((r = kh__stmt(s, sql, &st)) != KH_OK || (r = kh__bind_i64(st, 1, a->type)) != KH_OK ||
	    (r = kh__bind_i64(st, 2, a->addr)) != KH_OK || (r = kh__step(st, &row)) != KH_OK)
		goto out;
	if (!row) {
		r = KH_ERR_TOO_LARGE;
		goto out;
	}
	v = kh__col_i64(st, 0);
	if (v < 1 || v > UINT32_MAX) {
		r = KH_ERR_DB;
		goto out;
	}
	r = kh__exec(st); /* run the statement to its end */
	if (r == KH_OK)
		a->seq = (uint32_t)v;
out:
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_next_emm_seq(struct kh_store *s, uint8_t addr_type, uint32_t addr, uint32_t *seq)
{
	struct seq_args a = {addr_type, addr, 0};
	kh_err r;

	if (s == NULL || seq == NULL || !addr_ok(addr_type, addr))
		return KH_ERR_INVAL;
	if ((r = kh_store_run_tx(s, seq_tx, &a)) != KH_OK)
		return r;
	*seq = a.seq;
	return KH_OK;
}

struct enq_args {
	uint8_t type;
	uint32_t addr;
	kh_store_emm_build_fn build;
	void *arg;
	uint32_t seq;
	int64_t id;
};

/* 1 when the backend admits one writer at a time (SQLite: the group batches because of it), so
 * the order in which transactions take queue positions is their commit order. */
static int one_writer(const struct kh_store *s)
{
	return s->be->group_batch;
}

/* Take n queue positions: *first is the first of them. Holds the counter row to the commit. */
static kh_err take_positions(struct kh_store *s, int64_t n, int64_t *first)
{
	static const char sql[] = "UPDATE emm_order SET last_pos = last_pos + ?1 WHERE id = 1 RETURNING last_pos";
	struct kh__stmt *st = NULL;
	int row = 0;
	kh_err r;

	if ((r = kh__stmt(s, sql, &st)) != KH_OK || (r = kh__bind_i64(st, 1, n)) != KH_OK ||
	    (r = kh__step(st, &row)) != KH_OK)
		goto out;
	if (!row) {
		r = KH_ERR_DB; /* migration 7 made the row */
		goto out;
	}
	*first = kh__col_i64(st, 0) - n + 1;
	r = kh__exec(st);
out:
	kh__stmt_done(st);
	return r;
}

static kh_err enqueue_tx(struct kh_store *s, void *arg)
{
	static const char sql[] =
		"INSERT INTO emm_queue (address_type, address, seq, section, created_at, pos)\n"
		"VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id";
	struct enq_args *a = arg;
	struct seq_args sa = {a->type, a->addr, 0};
	struct kh__stmt *st = NULL;
	uint8_t sec[KH_EMM_MAX];
	size_t len = 0;
	int64_t pos = 0;
	int row = 0;
	kh_err r;

	if ((r = seq_tx(s, &sa)) != KH_OK)
		return r;
	if ((r = a->build(a->arg, sa.seq, sec, sizeof sec, &len)) != KH_OK)
		return r;
	if (len == 0)
		return KH_ERR_INVAL;
	if (len > sizeof sec)
		return KH_ERR_TOO_LARGE;
	if (one_writer(s) && (r = take_positions(s, 1, &pos)) != KH_OK)
		return r;
	if ((r = kh__stmt(s, sql, &st)) != KH_OK || (r = kh__bind_i64(st, 1, a->type)) != KH_OK ||
	    (r = kh__bind_i64(st, 2, a->addr)) != KH_OK || (r = kh__bind_i64(st, 3, sa.seq)) != KH_OK ||
	    (r = kh__bind_blob(st, 4, sec, len)) != KH_OK || (r = kh__bind_i64(st, 5, kh__now())) != KH_OK ||
	    (r = pos ? kh__bind_i64(st, 6, pos) : kh__bind_null(st, 6)) != KH_OK || (r = kh__step(st, &row)) != KH_OK)
		goto out;
	if (!row) {
		r = KH_ERR_DB;
		goto out;
	}
	a->id = kh__col_i64(st, 0);
	if ((r = kh__exec(st)) != KH_OK)
		goto out;
	a->seq = sa.seq;
out:
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_emm_enqueue(struct kh_store *s, uint8_t addr_type, uint32_t addr, kh_store_emm_build_fn build,
			    void *arg, uint32_t *seq, int64_t *id)
{
	struct enq_args a = {addr_type, addr, build, arg, 0, 0};
	kh_err r;

	if (s == NULL || build == NULL || !addr_ok(addr_type, addr))
		return KH_ERR_INVAL;
	if ((r = kh_store_run_tx(s, enqueue_tx, &a)) != KH_OK)
		return r;
	if (seq)
		*seq = a.seq;
	if (id)
		*id = a.id;
	return KH_OK;
}

/* EMMs numbered per transaction at most: a reader that finds more numbers them in several. */
#define NUMBER_MAX 20000

struct number_args {
	int64_t n; /* numbered by the last run */
};

/* Give the committed EMMs that have no position yet the next ones, in id order. */
static kh_err number_tx(struct kh_store *s, void *arg)
{
	static const char q_count[] =
		"SELECT count(*) FROM (SELECT id FROM emm_queue WHERE pos IS NULL ORDER BY id LIMIT ?1) AS p";
	static const char q_number[] =
		"UPDATE emm_queue SET pos = p.n\n"
		"FROM (SELECT id, ?1 + row_number() OVER (ORDER BY id) AS n FROM emm_queue\n"
		"      WHERE pos IS NULL ORDER BY id LIMIT ?2) AS p\n"
		"WHERE emm_queue.id = p.id";
	struct number_args *a = arg;
	int64_t n = 0, first = 0;
	struct kh__stmt *st = NULL;
	int row = 0;
	kh_err r;

	a->n = 0;
	if ((r = kh__stmt(s, q_count, &st)) != KH_OK || (r = kh__bind_i64(st, 1, NUMBER_MAX)) != KH_OK ||
	    (r = kh__step(st, &row)) != KH_OK)
		goto out;
	n = row ? kh__col_i64(st, 0) : 0;
	if ((r = kh__exec(st)) != KH_OK || n == 0)
		goto out;
	kh__stmt_done(st);
	st = NULL;
	if ((r = take_positions(s, n, &first)) != KH_OK || (r = kh__stmt(s, q_number, &st)) != KH_OK ||
	    (r = kh__bind_i64(st, 1, first - 1)) != KH_OK || (r = kh__bind_i64(st, 2, NUMBER_MAX)) != KH_OK ||
	    (r = kh__exec(st)) != KH_OK)
		goto out;
	/* The same snapshot counted them: anything else is a broken promise of the database. */
	if (kh__changes(s) != n)
		r = KH_ERR_DB;
	else
		a->n = n;
out:
	kh__stmt_done(st);
	return r;
}

/* Number what is committed without a position (nothing to do, and nothing written, with one
 * writer: the enqueue numbered it). Within a caller's transaction this joins it. */
static kh_err number_pending(struct kh_store *s)
{
	static const char q_any[] = "SELECT EXISTS (SELECT 1 FROM emm_queue WHERE pos IS NULL)";
	struct number_args a;
	int64_t any = 0;
	kh_err r;

	if ((r = kh__query_int(s, q_any, &any)) != KH_OK)
		return r;
	while (any) {
		if ((r = kh_store_run_tx(s, number_tx, &a)) != KH_OK)
			return r;
		any = a.n == NUMBER_MAX;
	}
	return KH_OK;
}

/* No limit is the largest one: SQLite reads a negative LIMIT as none, PostgreSQL refuses it. */
kh_err kh_store_emm_fetch(struct kh_store *s, int64_t since_id, unsigned limit, kh_store_emm_fn fn, void *arg,
			  int64_t *last_id)
{
	static const char sql[] =
		"SELECT id, address_type, address, seq, section, created_at, pos FROM emm_queue\n"
		"WHERE pos > ?1 ORDER BY pos LIMIT ?2";
	struct kh__stmt *st = NULL;
	int64_t last = since_id;
	int row = 0;
	kh_err r;

	if (s == NULL || fn == NULL)
		return KH_ERR_INVAL;
	if ((r = number_pending(s)) != KH_OK)
		return r;
	if ((r = kh__stmt(s, sql, &st)) != KH_OK || (r = kh__bind_i64(st, 1, since_id)) != KH_OK ||
	    (r = kh__bind_i64(st, 2, limit ? (int64_t)limit : INT64_MAX)) != KH_OK)
		goto out;
	/* One SELECT reads one snapshot, however long the callbacks take. */
	while ((r = kh__step(st, &row)) == KH_OK && row) {
		struct kh_store_emm e;
		int64_t type = kh__col_i64(st, 1), addr = kh__col_i64(st, 2), seq = kh__col_i64(st, 3);

		if (type < 0 || type > 2 || addr < 0 || addr > UINT32_MAX || seq < 1 || seq > UINT32_MAX) {
			r = KH_ERR_DB; /* the schema's CHECKs make this impossible */
			goto out;
		}
		e.id = kh__col_i64(st, 0);
		e.addr_type = (uint8_t)type;
		e.addr = (uint32_t)addr;
		e.seq = (uint32_t)seq;
		e.section = kh__col_blob(st, 4, &e.len);
		e.created_at = kh__col_i64(st, 5);
		e.pos = kh__col_i64(st, 6);
		if ((r = fn(arg, &e)) != KH_OK)
			goto out;
		last = e.pos;
	}
out:
	kh__stmt_done(st);
	if (r == KH_OK && last_id)
		*last_id = last;
	return r;
}

/* ---------------------------------------------------------------- one address's EMMs */

/* One address's EMMs from one of two statements: by queue id, or by sequence number. */
static kh_err fetch_addr(struct kh_store *s, const char *sql, uint8_t addr_type, uint32_t addr, int64_t after,
			 unsigned limit, kh_store_emm_fn fn, void *arg, int64_t *last_id)
{
	struct kh__stmt *st = NULL;
	int64_t last = 0;
	int row = 0, any = 0;
	kh_err r;

	if (s == NULL || fn == NULL || addr_type > KH_EMM_ALL)
		return KH_ERR_INVAL;
	if ((r = kh__stmt(s, sql, &st)) != KH_OK || (r = kh__bind_i64(st, 1, addr_type)) != KH_OK ||
	    (r = kh__bind_i64(st, 2, addr)) != KH_OK || (r = kh__bind_i64(st, 3, after)) != KH_OK ||
	    (r = kh__bind_i64(st, 4, limit ? (int64_t)limit : INT64_MAX)) != KH_OK)
		goto out;
	while ((r = kh__step(st, &row)) == KH_OK && row) {
		struct kh_store_emm e;
		int64_t seq = kh__col_i64(st, 1);

		if (seq < 1 || seq > UINT32_MAX) {
			r = KH_ERR_DB;
			goto out;
		}
		e.id = kh__col_i64(st, 0);
		e.addr_type = addr_type;
		e.addr = addr;
		e.seq = (uint32_t)seq;
		e.section = kh__col_blob(st, 2, &e.len);
		e.created_at = kh__col_i64(st, 3);
		e.pos = 0; /* one address's EMMs page by id: its writers are serialised by its seq row */
		if ((r = fn(arg, &e)) != KH_OK)
			goto out;
		last = e.id;
		any = 1;
	}
out:
	kh__stmt_done(st);
	if (r == KH_OK && last_id)
		*last_id = any ? last : -1;
	return r;
}

kh_err kh_store_emm_fetch_addr(struct kh_store *s, uint8_t addr_type, uint32_t addr, int64_t since_id,
			       unsigned limit, kh_store_emm_fn fn, void *arg, int64_t *last_id)
{
	static const char sql[] =
		"SELECT id, seq, section, created_at FROM emm_queue\n"
		"WHERE address_type = ?1 AND address = ?2 AND id > ?3 ORDER BY id LIMIT ?4";
	int64_t last = -1;
	kh_err r = fetch_addr(s, sql, addr_type, addr, since_id, limit, fn, arg, &last);

	if (r == KH_OK && last_id)
		*last_id = last < 0 ? since_id : last;
	return r;
}

kh_err kh_store_emm_fetch_addr_seq(struct kh_store *s, uint8_t addr_type, uint32_t addr, uint32_t above_seq,
				   unsigned limit, kh_store_emm_fn fn, void *arg)
{
	/* The (address_type, address, seq) unique index serves this: no scan of older EMMs. */
	static const char sql[] =
		"SELECT id, seq, section, created_at FROM emm_queue\n"
		"WHERE address_type = ?1 AND address = ?2 AND seq > ?3 ORDER BY seq LIMIT ?4";
	return fetch_addr(s, sql, addr_type, addr, above_seq, limit, fn, arg, NULL);
}
