/*
 * The center's store (include/keyhole/store.h, docs/internals/store.md): opening and URLs, the
 * file's mode, migrations applied once and a newer schema refused, EMM sequence numbers that
 * only grow (also across reopen and a SIGKILL), an EMM queued in the transaction of its seq,
 * duplicate usage blocks, idempotency keys, transactions and the busy retry. The database is
 * checked behind the store's back with SQLite (or libpq) directly.
 *
 * One binary, two backends: run plain it tests SQLite; with KH_TEST_PG_URL (CTest's
 * unit/test_store_pg, on the throwaway cluster of tests/tools/pgtmp.sh) every test that is not
 * about SQLite's file runs again on a fresh PostgreSQL database of its own, and the tests of
 * what only PostgreSQL has (serialization failures, deadlocks, a lost connection, the URL's
 * password) run. A test for the other backend is reported as skipped.
 */
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "keyhole/cas.h"
#include "keyhole/store.h"
#include "testutil.h"

struct ctx {
	char *dir;
	int pg;   /* the store is a PostgreSQL database (KH_TEST_PG_URL) */
	char *db; /* its URL then (kh_test_db) */
	char path[512];
	char url[520];
	char name[600]; /* what kh_store_last_error names the store by */
};

static int setup(void **state)
{
	struct ctx *c = calloc(1, sizeof *c);
	assert_non_null(c);
	c->dir = kh_test_tmpdir();
	assert_non_null(c->dir);
	snprintf(c->path, sizeof c->path, "%s/center.db", c->dir);
	snprintf(c->url, sizeof c->url, "sqlite:%s", c->path);
	snprintf(c->name, sizeof c->name, "%s", c->path);
	if ((c->pg = kh_test_pg()) != 0) {
		c->db = kh_test_db(c->dir, "center.db");
		assert_true(strlen(c->db) < sizeof c->url);
		snprintf(c->url, sizeof c->url, "%s", c->db);
		/* the database's name: the URL's path, after its (empty) host */
		snprintf(c->name, sizeof c->name, "%s", strchr(strstr(c->db, "://") + 3, '/') + 1);
		c->name[strcspn(c->name, "?")] = '\0';
	}
	*state = c;
	return 0;
}

static int teardown(void **state)
{
	struct ctx *c = *state;
	kh_test_db_drop(c->db);
	kh_test_rmdir(c->dir);
	free(c);
	return 0;
}

/* The test is about SQLite's file (or PostgreSQL's server) alone: skipped on the other. */
#define ONLY_SQLITE(c)                                                                            \
	do {                                                                                      \
		if ((c)->pg)                                                                      \
			skip();                                                                   \
	} while (0)
#define ONLY_PG(c)                                                                                \
	do {                                                                                      \
		if (!(c)->pg)                                                                     \
			skip();                                                                   \
	} while (0)

/* One integer from SQL run on the database directly, behind the store's back. */
static int64_t raw_int(const struct ctx *c, const char *sql)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	int64_t v = -1;

	if (c->pg)
		return kh_test_pg_int(c->url, sql);
	assert_int_equal(sqlite3_open_v2(c->path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return v;
}

static void raw_exec(const struct ctx *c, const char *sql)
{
	sqlite3 *db = NULL;

	if (c->pg) {
		kh_test_pg_exec(c->url, sql);
		return;
	}
	assert_int_equal(sqlite3_open_v2(c->path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
}

/* SQL run with the schema's CHECKs off (on PostgreSQL, those on the card's names dropped). */
static void raw_exec_unchecked(const struct ctx *c, const char *sql)
{
	char buf[512];

	if (c->pg) {
		raw_exec(c, "ALTER TABLE cards DROP CONSTRAINT IF EXISTS cards_state_check,\n"
			    "  DROP CONSTRAINT IF EXISTS cards_role_check");
		raw_exec(c, sql);
		return;
	}
	snprintf(buf, sizeof buf, "PRAGMA ignore_check_constraints = 1; %s", sql);
	raw_exec(c, buf);
}

/*
 * A card's state, kind and closing reason are enums in the center and names in the database:
 * every value goes out and comes back as itself, and a name the store never writes (a damaged or
 * foreign row) is refused as KH_ERR_DB rather than read as some state.
 */
static void test_card_names(void **state)
{
	struct ctx *c = *state;
	struct kh_store *s = NULL;
	struct kh_store_card k;
	static const uint8_t der[] = {0x30, 0x03, 0x02, 0x01, 0x01};
	enum kh_card_state st;
	enum kh_card_kind kd;

	assert_int_equal(kh_store_open(c->url, &s), KH_OK);
	assert_int_equal(kh_store_card_add(s, 7, KH_CARD_KIND_CAM, der, sizeof der), KH_OK);
	assert_int_equal(kh_store_card_add(s, 8, (enum kh_card_kind)9, der, sizeof der), KH_ERR_INVAL);
	assert_int_equal(kh_store_card_get(s, 7, &k), KH_OK);
	assert_int_equal(k.kind, KH_CARD_KIND_CAM);
	assert_int_equal(k.state, KH_CARD_ISSUED);
	assert_int_equal(k.closed_reason, KH_CARD_OPEN);
	for (int v = KH_CARD_ISSUED; v <= KH_CARD_CLOSED; v++)
		for (int why = KH_CARD_OPEN; why <= KH_CARD_RECOVERED; why++) {
			k.state = (enum kh_card_state)v;
			k.closed_reason = (enum kh_card_closed)why;
			assert_int_equal(kh_store_card_update(s, &k), KH_OK);
			memset(&k, 0, sizeof k);
			assert_int_equal(kh_store_card_get(s, 7, &k), KH_OK);
			assert_int_equal(k.state, v);
			assert_int_equal(k.closed_reason, why);
			assert_int_equal(kh_card_state_parse(kh_card_state_name(k.state), &st), KH_OK);
			assert_int_equal(st, v);
		}
	k.state = (enum kh_card_state)0;
	assert_int_equal(kh_store_card_update(s, &k), KH_ERR_INVAL);
	assert_int_equal(kh_card_state_parse("Active", &st), KH_ERR_INVAL);
	assert_int_equal(kh_card_state_parse(NULL, &st), KH_ERR_INVAL);
	assert_int_equal(kh_card_kind_parse("cam", &kd), KH_OK);
	assert_int_equal(kd, KH_CARD_KIND_CAM);
	assert_int_equal(kh_card_kind_parse("decoder", &kd), KH_ERR_INVAL);
	kh_store_close(s);

	/* behind the store's back (the schema's CHECKs switched off, as in a damaged or foreign
	 * file): names it never writes */
	raw_exec_unchecked(c, "UPDATE cards SET state = 'lost' WHERE ua = 7");
	assert_int_equal(kh_store_open(c->url, &s), KH_OK);
	assert_int_equal(kh_store_card_get(s, 7, &k), KH_ERR_DB);
	kh_store_close(s);
	raw_exec(c, "UPDATE cards SET state = 'active', closed_reason = 'stolen' WHERE ua = 7");
	assert_int_equal(kh_store_open(c->url, &s), KH_OK);
	assert_int_equal(kh_store_card_get(s, 7, &k), KH_ERR_DB);
	kh_store_close(s);
	raw_exec_unchecked(c, "UPDATE cards SET closed_reason = NULL, role = 'Card' WHERE ua = 7");
	assert_int_equal(kh_store_open(c->url, &s), KH_OK);
	assert_int_equal(kh_store_card_get(s, 7, &k), KH_ERR_DB);
	kh_store_close(s);
}

static void test_urls(void **state)
{
	struct ctx *c = *state;
	struct kh_store *s = NULL;
	char url[600];
	struct stat st;

	/* postgres:// and postgresql:// go to PostgreSQL: here a server that is not there (no
	 * socket in that directory), which is the database unavailable, not a file. */
#ifdef KH_HAVE_PG
	snprintf(url, sizeof url, "postgres://u@/kh?host=%s/nowhere", c->dir);
	assert_int_equal(kh_store_open(url, &s), KH_ERR_DB_UNAVAILABLE);
	snprintf(url, sizeof url, "postgresql:///kh?host=%s/nowhere", c->dir);
	assert_int_equal(kh_store_open(url, &s), KH_ERR_DB_UNAVAILABLE);
	assert_int_equal(access(url, F_OK), -1);
#else
	assert_int_equal(kh_store_open("postgres://u@localhost/kh", &s), KH_ERR_NOT_BUILT);
	assert_int_equal(kh_store_open("postgresql://localhost/kh", &s), KH_ERR_NOT_BUILT);
#endif
	assert_int_equal(kh_store_open("mysql://localhost/kh", &s), KH_ERR_INVAL);
	assert_int_equal(kh_store_open("", &s), KH_ERR_INVAL);
	assert_int_equal(kh_store_open("sqlite:", &s), KH_ERR_INVAL);
	assert_int_equal(kh_store_open(NULL, &s), KH_ERR_INVAL);
	assert_null(s);
	ONLY_SQLITE(c);

	/* A plain path, sqlite:PATH and sqlite://PATH name the same file. */
	assert_int_equal(kh_store_open(c->path, &s), KH_OK);
	kh_store_close(s);
	snprintf(url, sizeof url, "sqlite://%s", c->path);
	assert_int_equal(kh_store_open(url, &s), KH_OK);
	kh_store_close(s);
	assert_int_equal(kh_store_open(c->url, &s), KH_OK);
	assert_string_equal(kh_store_last_error(s), "");

	/* Created private, and so are the WAL files SQLite makes beside it. */
	assert_int_equal(stat(c->path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	snprintf(url, sizeof url, "%s-wal", c->path);
	assert_int_equal(stat(url, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	kh_store_close(s);
	{
		sqlite3 *db;
		sqlite3_stmt *q;
		assert_int_equal(sqlite3_open(c->path, &db), SQLITE_OK);
		assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &q, NULL), SQLITE_OK);
		assert_int_equal(sqlite3_step(q), SQLITE_ROW);
		assert_string_equal((const char *)sqlite3_column_text(q, 0), "wal");
		sqlite3_finalize(q);
		sqlite3_close(db);
	}

	/* Readable by others: refused like a key file. */
	assert_int_equal(chmod(c->path, 0644), 0);
	s = NULL;
	assert_int_equal(kh_store_open(c->url, &s), KH_ERR_KEYFILE_PERM);
	assert_null(s);
	assert_int_equal(chmod(c->path, 0600), 0);

	/* A directory that does not exist. */
	snprintf(url, sizeof url, "%s/no/such/dir.db", c->dir);
	assert_int_equal(kh_store_open(url, &s), KH_ERR_NOTFOUND);
}

static void test_sync_option(void **state)
{
	struct ctx *c = *state;
	struct kh_store *s = NULL;
	struct kh_store_opts o = {.busy_timeout_ms = 100, .sync_normal = 1};

	/* The pragma is per connection: FULL by default, NORMAL only when asked. */
	assert_int_equal(kh_store_open_opts(c->url, &o, &s), KH_OK);
	kh_store_close(s);
	assert_int_equal(kh_store_open(c->url, &s), KH_OK);
	kh_store_close(s);
}

static void test_migrations_once(void **state)
{
	struct ctx *c = *state;
	struct kh_store *s = NULL;
	int v = -1, latest = kh_store_schema_latest();
	char sql[128];

	assert_true(latest >= 1);
	assert_int_equal(kh_store_open(c->url, &s), KH_OK);
	assert_int_equal(kh_store_schema_version(s, &v), KH_OK);
	assert_int_equal(v, latest);
	kh_store_close(s);
	int64_t applied = raw_int(c, "SELECT applied_at FROM schema_migrations WHERE version = 1");

	assert_int_equal(kh_store_open(c->url, &s), KH_OK);
	assert_int_equal(kh_store_schema_version(s, &v), KH_OK);
	assert_int_equal(v, latest);
	kh_store_close(s);
	assert_int_equal(raw_int(c, "SELECT count(*) FROM schema_migrations"), latest);
	assert_int_equal(raw_int(c, "SELECT applied_at FROM schema_migrations WHERE version = 1"), applied);
	assert_int_equal(raw_int(c, "SELECT count(*) FROM credit_policy"), 1);
	assert_int_equal(raw_int(c, c->pg ? "SELECT value FROM application_id" : "PRAGMA application_id"), 0x4B484331);

	/* A database from a newer release is refused and left as it was. */
	snprintf(sql, sizeof sql, "INSERT INTO schema_migrations VALUES (%d, 0)", latest + 1);
	raw_exec(c, sql);
	s = NULL;
	assert_int_equal(kh_store_open(c->url, &s), KH_ERR_VERSION);
	assert_null(s);
	assert_int_equal(raw_int(c, "SELECT max(version) FROM schema_migrations"), latest + 1);
}

static void test_foreign_db(void **state)
{
	struct ctx *c = *state;
	struct kh_store *s = NULL;
	int fd;

	ONLY_SQLITE(c);
	fd = open(c->path, O_CREAT | O_WRONLY, 0600);
	assert_true(fd >= 0);
	close(fd);
	raw_exec(c, "CREATE TABLE other_app (x INTEGER)");
	assert_int_equal(kh_store_open(c->url, &s), KH_ERR_DB_FOREIGN);
	assert_null(s);

	/* Not a database at all. */
	fd = open(c->path, O_WRONLY | O_TRUNC);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "this is not an SQLite database, not at all...........", 53), 53);
	close(fd);
	assert_int_not_equal(kh_store_open(c->url, &s), KH_OK);
	assert_null(s);
}

static void test_seq_increase(void **state)
{
	struct ctx *c = *state;
	struct kh_store *s = NULL;
	uint32_t seq = 0, last = 0;

	assert_int_equal(kh_store_open(c->url, &s), KH_OK);
	for (int i = 0; i < 20; i++) {
		assert_int_equal(kh_store_next_emm_seq(s, KH_EMM_UNIQUE, 42, &seq), KH_OK);
		assert_true(seq > last);
		last = seq;
	}
	assert_int_equal(last, 20);
	/* Each address has its own sequence, each address type too. */
	assert_int_equal(kh_store_next_emm_seq(s, KH_EMM_UNIQUE, 43, &seq), KH_OK);
	assert_int_equal(seq, 1);
	assert_int_equal(kh_store_next_emm_seq(s, KH_EMM_GROUP, 42, &seq), KH_OK);
	assert_int_equal(seq, 1);
	assert_int_equal(kh_store_next_emm_seq(s, KH_EMM_ALL, 0, &seq), KH_OK);
	assert_int_equal(seq, 1);
	assert_int_equal(kh_store_next_emm_seq(s, KH_EMM_ALL, 5, &seq), KH_ERR_INVAL);
	assert_int_equal(kh_store_next_emm_seq(s, 3, 5, &seq), KH_ERR_INVAL);
	kh_store_close(s);

	/* Across close and reopen. */
	assert_int_equal(kh_store_open(c->url, &s), KH_OK);
	assert_int_equal(kh_store_next_emm_seq(s, KH_EMM_UNIQUE, 42, &seq), KH_OK);
	assert_int_equal(seq, 21);
	kh_store_close(s);

	/* The last u32 is handed out once, then never wraps. */
	raw_exec(c, "UPDATE emm_seq SET last_seq = 4294967294 WHERE address_type = 0 AND address = 42");
	assert_int_equal(kh_store_open(c->url, &s), KH_OK);
	assert_int_equal(kh_store_next_emm_seq(s, KH_EMM_UNIQUE, 42, &seq), KH_OK);
	assert_int_equal(seq, UINT32_MAX);
	assert_int_equal(kh_store_next_emm_seq(s, KH_EMM_UNIQUE, 42, &seq), KH_ERR_TOO_LARGE);
	assert_int_equal(seq, UINT32_MAX);
	kh_store_close(s);
	assert_int_equal(raw_int(c, "SELECT last_seq FROM emm_seq WHERE address_type = 0 AND address = 42"),
			 (int64_t)UINT32_MAX);
}

struct build_arg {
	int fail;     /* return this code instead of building */
	size_t len;   /* section length to produce */
	uint32_t got; /* the seq the builder was given */
};

/* A stand-in section: 4 bytes of seq then filler, so the test can check which seq it carries. */
static kh_err build(void *arg, uint32_t seq, uint8_t *out, size_t cap, size_t *len)
{
	struct build_arg *b = arg;

	b->got = seq;
	if (b->fail)
		return b->fail;
	if (b->len > cap) {
		*len = b->len;
		return KH_OK;
	}
	memset(out, 0xA5, b->len);
	out[0] = (uint8_t)(seq >> 24);
	out[1] = (uint8_t)(seq >> 16);
	out[2] = (uint8_t)(seq >> 8);
	out[3] = (uint8_t)seq;
	*len = b->len;
	return KH_OK;
}

struct fetched {
	int n;
	int64_t ids[16];
	uint32_t seqs[16];
	int stop_after;
};

static kh_err collect(void *arg, const struct kh_store_emm *e)
{
	struct fetched *f = arg;
	uint32_t in;

	assert_true(f->n < 16);
	assert_true(e->len >= 4);
	in = (uint32_t)e->section[0] << 24 | (uint32_t)e->section[1] << 16 | (uint32_t)e->section[2] << 8 |
	     e->section[3];
	assert_int_equal(in, e->seq); /* the section was built with the seq it is queued under */
	f->ids[f->n] = e->id;
	f->seqs[f->n] = e->seq;
	f->n++;
	if (f->stop_after && f->n == f->stop_after)
		return KH_ERR_IO;
	return KH_OK;
}

static void test_enqueue_atomic(void **state)
{
	struct ctx *c = *state;
	struct kh_store *s = NULL;
	struct build_arg b = {0, 100, 0};
	struct fetched f = {0};
	uint32_t seq = 0;
	int64_t id = 0, last = -1;

	assert_int_equal(kh_store_open(c->url, &s), KH_OK);
	assert_int_equal(kh_store_emm_enqueue(s, KH_EMM_UNIQUE, 7, build, &b, &seq, &id), KH_OK);
	assert_int_equal(seq, 1);
	assert_int_equal(b.got, 1);
	assert_true(id > 0);

	/* The builder fails after it was given seq 2: neither the seq nor an EMM is kept. */
	b.fail = KH_ERR_CRYPTO;
	assert_int_equal(kh_store_emm_enqueue(s, KH_EMM_UNIQUE, 7, build, &b, &seq, &id), KH_ERR_CRYPTO);
	assert_int_equal(b.got, 2);
	assert_int_equal(seq, 1); /* outputs untouched on failure */
	/* Empty and oversized sections are refused the same way. */
	b.fail = 0;
	b.len = 0;
	assert_int_equal(kh_store_emm_enqueue(s, KH_EMM_UNIQUE, 7, build, &b, NULL, NULL), KH_ERR_INVAL);
	b.len = KH_EMM_MAX + 1;
	assert_int_equal(kh_store_emm_enqueue(s, KH_EMM_UNIQUE, 7, build, &b, NULL, NULL), KH_ERR_TOO_LARGE);
	assert_int_equal(raw_int(c, "SELECT last_seq FROM emm_seq WHERE address = 7"), 1);
	assert_int_equal(raw_int(c, "SELECT count(*) FROM emm_queue"), 1);

	b.len = KH_EMM_MAX;
	assert_int_equal(kh_store_emm_enqueue(s, KH_EMM_UNIQUE, 7, build, &b, &seq, NULL), KH_OK);
	assert_int_equal(seq, 2);
	b.len = 40;
	assert_int_equal(kh_store_emm_enqueue(s, KH_EMM_ALL, 0, build, &b, &seq, NULL), KH_OK);
	assert_int_equal(seq, 1);

	/* Inside a caller's transaction that is rolled back, nothing is kept either. */
	assert_int_equal(kh_store_begin(s), KH_OK);
	assert_int_equal(kh_store_begin(s), KH_ERR_INVAL);
	assert_int_equal(kh_store_emm_enqueue(s, KH_EMM_UNIQUE, 7, build, &b, &seq, NULL), KH_OK);
	assert_int_equal(seq, 3);
	kh_store_rollback(s);
	assert_int_equal(kh_store_in_tx(s), 0);

	/* The broadcast queue, in order, from a cursor, with a limit. */
	assert_int_equal(kh_store_emm_fetch(s, 0, 0, collect, &f, &last), KH_OK);
	assert_int_equal(f.n, 3);
	assert_int_equal(f.seqs[0], 1);
	assert_int_equal(f.seqs[1], 2);
	assert_int_equal(f.seqs[2], 1);
	assert_true(f.ids[0] < f.ids[1] && f.ids[1] < f.ids[2]);
	assert_int_equal(last, f.ids[2]);
	memset(&f, 0, sizeof f);
	assert_int_equal(kh_store_emm_fetch(s, last, 0, collect, &f, &last), KH_OK);
	assert_int_equal(f.n, 0);
	memset(&f, 0, sizeof f);
	assert_int_equal(kh_store_emm_fetch(s, 0, 1, collect, &f, &last), KH_OK);
	assert_int_equal(f.n, 1);
	memset(&f, 0, sizeof f);
	assert_int_equal(kh_store_emm_fetch(s, last, 5, collect, &f, &last), KH_OK);
	assert_int_equal(f.n, 2);
	/* A callback error stops the fetch and is returned; the store stays usable. */
	memset(&f, 0, sizeof f);
	f.stop_after = 1;
	assert_int_equal(kh_store_emm_fetch(s, 0, 0, collect, &f, NULL), KH_ERR_IO);
	assert_int_equal(kh_store_next_emm_seq(s, KH_EMM_UNIQUE, 7, &seq), KH_OK);
	assert_int_equal(seq, 3);
	kh_store_close(s);
}

/*
 * The queue's cursor with writers that commit out of order (PostgreSQL): a writes its EMM
 * first and commits last. A reader polling in between gets b's EMM and not a's, and its next
 * poll from the cursor it was given gets a's: nothing passed, nothing twice. On a cursor of
 * identity ids (a takes the smaller one) the second poll finds nothing, and a's EMM is never
 * broadcast.
 */
static void test_emm_cursor_late_commit(void **state)
{
	struct ctx *c = *state;
	struct kh_store *a = NULL, *b = NULL, *r = NULL;
	struct build_arg ba = {0, 40, 0};
	struct fetched f = {0};
	int64_t ida = 0, idb = 0, last = -1;

	ONLY_PG(c); /* SQLite admits one writer: b would wait for a */
	assert_int_equal(kh_store_open(c->url, &a), KH_OK);
	assert_int_equal(kh_store_open(c->url, &b), KH_OK);
	assert_int_equal(kh_store_open(c->url, &r), KH_OK);
	assert_int_equal(kh_store_begin(a), KH_OK);
	assert_int_equal(kh_store_emm_enqueue(a, KH_EMM_UNIQUE, 1, build, &ba, NULL, &ida), KH_OK);
	assert_int_equal(kh_store_emm_enqueue(b, KH_EMM_UNIQUE, 2, build, &ba, NULL, &idb), KH_OK);
	assert_true(ida < idb); /* the order the ids were taken in is not the commit order */

	assert_int_equal(kh_store_emm_fetch(r, 0, 0, collect, &f, &last), KH_OK);
	assert_int_equal(f.n, 1);
	assert_true(f.ids[0] == idb);
	assert_int_equal(kh_store_commit(a), KH_OK);
	memset(&f, 0, sizeof f);
	assert_int_equal(kh_store_emm_fetch(r, last, 0, collect, &f, &last), KH_OK);
	assert_int_equal(f.n, 1);
	assert_true(f.ids[0] == ida);
	memset(&f, 0, sizeof f);
	assert_int_equal(kh_store_emm_fetch(r, last, 0, collect, &f, &last), KH_OK);
	assert_int_equal(f.n, 0);
	/* every EMM has its position, each once */
	assert_int_equal(raw_int(c, "SELECT count(DISTINCT pos) FROM emm_queue"), 2);
	kh_store_close(a);
	kh_store_close(b);
	kh_store_close(r);
}

#define QWRITERS 4
#define QTX 40 /* transactions per writer, 1 to 3 EMMs each */
#define QMAX (QWRITERS * QTX * 3)

struct qwriter {
	const char *url;
	uint32_t addr;
	int n; /* EMMs committed */
	kh_err r;
};

struct qtx {
	uint32_t addr;
	int k;
};

static kh_err qtx_fn(struct kh_store *s, void *arg)
{
	struct qtx *t = arg;
	struct build_arg b = {0, 40, 0};
	kh_err r = KH_OK;

	for (int i = 0; i < t->k && r == KH_OK; i++)
		r = kh_store_emm_enqueue(s, KH_EMM_UNIQUE, t->addr, build, &b, NULL, NULL);
	return r;
}

static void *qwriter_thread(void *arg)
{
	struct qwriter *w = arg;
	struct kh_store *s = NULL;

	if ((w->r = kh_store_open(w->url, &s)) != KH_OK)
		return NULL;
	for (int i = 0; i < QTX && w->r == KH_OK; i++) {
		struct qtx t = {w->addr, 1 + i % 3};
		if ((w->r = kh_store_run_tx(s, qtx_fn, &t)) == KH_OK)
			w->n += t.k;
	}
	kh_store_close(s);
	return NULL;
}

struct qseen {
	int64_t seen[QMAX * 4]; /* by EMM id (a retried writer burns ids): how many times the reader got it */
	int64_t cap;
	int total, bad;
};

static kh_err qseen_fn(void *arg, const struct kh_store_emm *e)
{
	struct qseen *q = arg;

	if (e->id < 1 || e->id >= q->cap) {
		q->bad++;
		return KH_OK;
	}
	q->seen[e->id]++;
	q->total++;
	return KH_OK;
}

/*
 * Writers on connections of their own queue EMMs in transactions of 1 to 3 while a reader polls
 * the queue by its cursor: at the end the reader got every committed EMM exactly once.
 */
static void test_emm_cursor_concurrent(void **state)
{
	struct ctx *c = *state;
	struct qwriter w[QWRITERS];
	pthread_t th[QWRITERS];
	struct kh_store *r = NULL;
	static struct qseen q;
	int64_t last = 0;
	int done = 0, committed = 0, joined[QWRITERS] = {0};

	memset(&q, 0, sizeof q);
	q.cap = (int64_t)(sizeof q.seen / sizeof q.seen[0]);
	assert_int_equal(kh_store_open(c->url, &r), KH_OK);
	for (int i = 0; i < QWRITERS; i++) {
		w[i] = (struct qwriter){.url = c->url, .addr = 100 + (uint32_t)i};
		assert_int_equal(pthread_create(&th[i], NULL, qwriter_thread, &w[i]), 0);
	}
	/* Poll while they write (a small page: many polls), then once more after they are done. */
	while (!done) {
		done = 1;
		for (int i = 0; i < QWRITERS; i++)
			if (!joined[i] && !(joined[i] = pthread_tryjoin_np(th[i], NULL) == 0))
				done = 0;
		assert_int_equal(kh_store_emm_fetch(r, last, 7, qseen_fn, &q, &last), KH_OK);
	}
	for (int n = -1; n != 0;) {
		int before = q.total;
		assert_int_equal(kh_store_emm_fetch(r, last, 7, qseen_fn, &q, &last), KH_OK);
		n = q.total - before;
	}
	for (int i = 0; i < QWRITERS; i++) {
		assert_int_equal(w[i].r, KH_OK);
		committed += w[i].n;
	}
	assert_int_equal(committed, raw_int(c, "SELECT count(*) FROM emm_queue"));
	assert_int_equal(q.bad, 0);
	assert_int_equal(q.total, committed);
	for (int64_t id = 0; id < q.cap; id++)
		assert_true(q.seen[id] <= 1);
	kh_store_close(r);
}


static void test_block_dup(void **state)
{
	struct ctx *c = *state;
	struct kh_store *s = NULL;
	enum kh_store_verdict prev = KH_STORE_BLOCK_TRUNCATED;
	int64_t t1;

	assert_int_equal(kh_store_open(c->url, &s), KH_OK);
	assert_int_equal(kh_store_block_seen(s, 1001, 1, KH_STORE_BLOCK_OK, 0, &prev), KH_OK);
	assert_int_equal(prev, KH_STORE_BLOCK_TRUNCATED); /* untouched */
	raw_exec(c, "UPDATE usage_blocks SET received_at = 12345 WHERE ua = 1001");
	t1 = raw_int(c, "SELECT received_at FROM usage_blocks WHERE ua = 1001 AND block_seq = 1");

	/* Seen twice: EXISTS, and not one column changed, whatever the second verdict. */
	assert_int_equal(kh_store_block_seen(s, 1001, 1, KH_STORE_BLOCK_OK, 0, &prev), KH_ERR_EXISTS);
	assert_int_equal(prev, KH_STORE_BLOCK_OK);
	assert_int_equal(kh_store_block_seen(s, 1001, 1, KH_STORE_BLOCK_TAMPERED, 0, &prev), KH_ERR_EXISTS);
	assert_int_equal(prev, KH_STORE_BLOCK_OK);
	assert_int_equal(raw_int(c, "SELECT count(*) FROM usage_blocks"), 1);
	assert_int_equal(raw_int(c, "SELECT received_at FROM usage_blocks WHERE ua = 1001"), t1);
	assert_int_equal(raw_int(c, "SELECT verdict = 'ok' FROM usage_blocks WHERE ua = 1001"), 1);

	/* A forged copy that arrives first cannot shadow the genuine block. */
	assert_int_equal(kh_store_block_seen(s, 1002, 9, KH_STORE_BLOCK_TAMPERED, 0, NULL), KH_OK);
	assert_int_equal(kh_store_block_seen(s, 1002, 9, KH_STORE_BLOCK_TRUNCATED, 0, &prev), KH_ERR_EXISTS);
	assert_int_equal(prev, KH_STORE_BLOCK_TAMPERED);
	assert_int_equal(kh_store_block_seen(s, 1002, 9, KH_STORE_BLOCK_OK, 0, NULL), KH_OK);
	assert_int_equal(kh_store_block_seen(s, 1002, 9, KH_STORE_BLOCK_OK, 0, &prev), KH_ERR_EXISTS);
	assert_int_equal(prev, KH_STORE_BLOCK_OK);
	assert_int_equal(kh_store_block_seen(s, 1003, 1, KH_STORE_BLOCK_FOREIGN, 0, NULL), KH_OK);
	assert_int_equal(raw_int(c, "SELECT count(*) FROM usage_blocks"), 3);

	/* A session that does not exist is a broken reference, not a silent NULL. */
	assert_int_equal(kh_store_block_seen(s, 1004, 1, KH_STORE_BLOCK_OK, 77, NULL), KH_ERR_DB_CONSTRAINT);
	assert_int_equal(kh_store_block_seen(s, 1004, 1, 9, 0, NULL), KH_ERR_INVAL);
	assert_int_equal(raw_int(c, "SELECT count(*) FROM usage_blocks"), 3);

	/* With hashes (migration 5): the same block again is the same; another block under the
	 * number is not, and changes nothing either; a block without a hash compares as the same.
	 * What an accepted block reported is what the newest one said. */
	{
		uint8_t h1[32] = {1}, h2[32] = {2};
		struct kh_store_block b = {.ua = 1005, .block_seq = 4, .verdict = KH_STORE_BLOCK_OK, .hash = h1,
					   .reported = 1, .credit = 170, .last_reload = 2};
		uint32_t seq = 0, credit = 0, reload = 0;
		int same = -1, found = -1;

		assert_int_equal(kh_store_block_reported(s, 1005, &found, &seq, &credit, &reload), KH_OK);
		assert_int_equal(found, 0);
		assert_int_equal(kh_store_block_record(s, &b, &prev, &same), KH_OK);
		assert_int_equal(same, -1); /* untouched */
		assert_int_equal(kh_store_block_record(s, &b, &prev, &same), KH_ERR_EXISTS);
		assert_int_equal(same, 1);
		b.hash = h2;
		b.credit = 999;
		assert_int_equal(kh_store_block_record(s, &b, &prev, &same), KH_ERR_EXISTS);
		assert_int_equal(same, 0);
		b.hash = NULL;
		assert_int_equal(kh_store_block_record(s, &b, &prev, &same), KH_ERR_EXISTS);
		assert_int_equal(same, 1);
		assert_int_equal(kh_store_block_reported(s, 1005, &found, &seq, &credit, &reload), KH_OK);
		assert_true(found && seq == 4 && credit == 170 && reload == 2);
		/* the other block is kept once by its hash */
		assert_int_equal(kh_store_block_clone(s, 1005, 4, h2, 0), KH_OK);
		assert_int_equal(kh_store_block_clone(s, 1005, 4, h2, 0), KH_ERR_EXISTS);
		/* a block recorded before the migration's columns: not found */
		assert_int_equal(kh_store_block_seen(s, 1006, 1, KH_STORE_BLOCK_OK, 0, NULL), KH_OK);
		assert_int_equal(kh_store_block_reported(s, 1006, &found, &seq, &credit, &reload), KH_OK);
		assert_true(!found && seq == 1);
	}
	kh_store_close(s);
}

static void test_idempotency(void **state)
{
	struct ctx *c = *state;
	struct kh_store *s = NULL;
	uint8_t h1[KH_STORE_IDEM_HASH_LEN], h2[KH_STORE_IDEM_HASH_LEN];
	uint8_t *resp = NULL;
	size_t len = 0;
	char longkey[KH_STORE_IDEM_KEY_MAX + 2];

	memset(h1, 1, sizeof h1);
	memset(h2, 2, sizeof h2);
	assert_int_equal(kh_store_open(c->url, &s), KH_OK);
	assert_int_equal(kh_store_idem_get(s, "k1", h1, &resp, &len), KH_ERR_NOTFOUND);
	assert_int_equal(kh_store_idem_put(s, "k1", h1, (const uint8_t *)"first", 5), KH_OK);
	assert_int_equal(kh_store_idem_put(s, "k1", h1, (const uint8_t *)"second", 6), KH_ERR_EXISTS);
	assert_int_equal(kh_store_idem_get(s, "k1", h1, &resp, &len), KH_OK);
	assert_int_equal(len, 5);
	assert_memory_equal(resp, "first", 5);
	free(resp);
	resp = NULL;
	/* The same key for another request. */
	assert_int_equal(kh_store_idem_get(s, "k1", h2, &resp, &len), KH_ERR_IDEM_MISMATCH);
	assert_null(resp);
	/* An empty answer is an answer. */
	assert_int_equal(kh_store_idem_put(s, "k2", h2, NULL, 0), KH_OK);
	assert_int_equal(kh_store_idem_get(s, "k2", h2, &resp, &len), KH_OK);
	assert_int_equal(len, 0);
	free(resp);
	/* Key length limits. */
	memset(longkey, 'a', sizeof longkey - 1);
	longkey[sizeof longkey - 1] = '\0';
	assert_int_equal(kh_store_idem_put(s, longkey, h1, NULL, 0), KH_ERR_INVAL);
	longkey[KH_STORE_IDEM_KEY_MAX] = '\0';
	assert_int_equal(kh_store_idem_put(s, longkey, h1, NULL, 0), KH_OK);
	assert_int_equal(kh_store_idem_put(s, "", h1, NULL, 0), KH_ERR_INVAL);

	/* A repeat inside a caller's transaction leaves the transaction usable. */
	assert_int_equal(kh_store_begin(s), KH_OK);
	assert_int_equal(kh_store_idem_put(s, "k1", h1, (const uint8_t *)"x", 1), KH_ERR_EXISTS);
	assert_int_equal(kh_store_idem_put(s, "k3", h1, (const uint8_t *)"third", 5), KH_OK);
	assert_int_equal(kh_store_commit(s), KH_OK);
	assert_int_equal(kh_store_commit(s), KH_ERR_INVAL);
	kh_store_close(s);
	assert_int_equal(raw_int(c, "SELECT count(*) FROM idempotency"), 4);
}

/*
 * Idempotency records expire: kh_store_idem_expire deletes the oldest records written before a
 * time, at most max of them per call (a bounded cost for the writer that calls it), and the
 * finished bulk jobs of that age; an unfinished job stays, it is what a retry resumes from.
 */
static void test_idempotency_expire(void **state)
{
	struct ctx *c = *state;
	struct kh_store *s = NULL;
	struct kh_store_product p = {5, "P"};
	struct kh_store_bulk_job job = {.product_id = 5, .start = 1, .end = 2, .all = 1, .done = 1};
	uint8_t h[KH_STORE_IDEM_HASH_LEN];
	int64_t later = (int64_t)time(NULL) + 60;
	unsigned n = 99;
	uint32_t id = 0;
	char key[16];

	memset(h, 7, sizeof h);
	assert_int_equal(kh_store_open(c->url, &s), KH_OK);
	for (int i = 0; i < 20; i++) {
		snprintf(key, sizeof key, "e%d", i);
		assert_int_equal(kh_store_idem_put(s, key, h, (const uint8_t *)"a", 1), KH_OK);
	}
	assert_int_equal(kh_store_product_add(s, &p, &id), KH_OK);
	assert_int_equal(kh_store_bulk_job_put(s, "done-job", h, &job), KH_OK);
	job.done = 0;
	assert_int_equal(kh_store_bulk_job_put(s, "open-job", h, &job), KH_OK);
	/* nothing is older than the epoch */
	assert_int_equal(kh_store_idem_expire(s, 0, 8, &n), KH_OK);
	assert_int_equal(n, 0);
	/* everything is older than a minute from now: 8 go per call */
	assert_int_equal(kh_store_idem_expire(s, later, 8, &n), KH_OK);
	assert_int_equal(n, 8);
	assert_int_equal(raw_int(c, "SELECT count(*) FROM idempotency"), 12);
	assert_int_equal(raw_int(c, "SELECT count(*) FROM bulk_jobs"), 1);
	assert_int_equal(kh_store_bulk_job_get(s, "open-job", h, &job), KH_OK);
	assert_int_equal(kh_store_idem_expire(s, later, 100, NULL), KH_OK);
	assert_int_equal(raw_int(c, "SELECT count(*) FROM idempotency"), 0);
	assert_int_equal(kh_store_idem_expire(s, later, 0, &n), KH_OK);
	assert_int_equal(n, 0);
	assert_int_equal(kh_store_idem_expire(NULL, later, 1, &n), KH_ERR_INVAL);
	kh_store_close(s);
}

static kh_err tx_seq(struct kh_store *s, void *arg)
{
	uint32_t *seq = arg;
	return kh_store_next_emm_seq(s, KH_EMM_GROUP, 5, seq);
}

static void test_busy_retry(void **state)
{
	struct ctx *c = *state;
	struct kh_store *a = NULL, *b = NULL;
	struct kh_store_opts o = {.busy_timeout_ms = 5};
	uint32_t seq = 0, sa = 0;
	struct kh_store_tx_stats before, after;

	assert_int_equal(kh_store_open(c->url, &a), KH_OK);
	assert_int_equal(kh_store_open_opts(c->url, &o, &b), KH_OK);
	/* a holds the lock b needs (SQLite's write lock, PostgreSQL's on the new emm_seq row) past
	 * b's busy timeout: b retries, then reports the soft error, and nothing is half done. */
	assert_int_equal(kh_store_begin(a), KH_OK);
	assert_int_equal(kh_store_run_tx(a, tx_seq, &sa), KH_OK);
	assert_int_equal(sa, 1);
	kh_store_tx_stats(&before);
	assert_int_equal(kh_store_run_tx(b, tx_seq, &seq), KH_ERR_DB_BUSY);
	kh_store_tx_stats(&after);
	assert_true(after.retries > before.retries);
	assert_true(after.gave_up > before.gave_up);
	assert_int_equal(kh_store_in_tx(b), 0);
	assert_int_equal(seq, 0);
	assert_true(strstr(kh_store_last_error(b), c->name) != NULL);
	assert_int_equal(kh_store_commit(a), KH_OK);
	assert_int_equal(kh_store_run_tx(b, tx_seq, &seq), KH_OK);
	assert_int_equal(seq, 2);
	kh_store_close(a);
	kh_store_close(b);
}

static kh_err crash_build(void *arg, uint32_t seq, uint8_t *out, size_t cap, size_t *len)
{
	struct build_arg b = {0, 64, 0};
	(void)arg;
	return build(&b, seq, out, cap, len);
}

/* The child: commit EMMs one by one and report each seq once its commit has returned. */
static void crash_child(const char *url, int fd)
{
	struct kh_store *s = NULL;
	uint32_t seq;

	if (kh_store_open(url, &s) != KH_OK)
		_exit(2);
	for (int i = 0; i < 10000000; i++) {
		if (kh_store_emm_enqueue(s, KH_EMM_UNIQUE, 9, crash_build, NULL, &seq, NULL) != KH_OK)
			_exit(3);
		if (write(fd, &seq, sizeof seq) != (ssize_t)sizeof seq)
			_exit(4);
	}
	_exit(0);
}

static void test_crash(void **state)
{
	struct ctx *c = *state;
	struct kh_store *s = NULL;
	struct fetched f;
	int p[2], status = 0, n = 0;
	uint32_t seq, last_ack = 0, next;
	pid_t pid;

	/* Create the database first, so the child's first commits are EMMs, not the schema. */
	assert_int_equal(kh_store_open(c->url, &s), KH_OK);
	kh_store_close(s);
	assert_int_equal(pipe(p), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(p[0]);
		crash_child(c->url, p[1]);
	}
	close(p[1]);
	while (n < 50 && read(p[0], &seq, sizeof seq) == (ssize_t)sizeof seq) {
		assert_int_equal(seq, last_ack + 1);
		last_ack = seq;
		n++;
	}
	assert_int_equal(n, 50);
	assert_int_equal(kill(pid, SIGKILL), 0);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	/* What the child wrote before it died was acknowledged too. */
	while (read(p[0], &seq, sizeof seq) == (ssize_t)sizeof seq) {
		assert_int_equal(seq, last_ack + 1);
		last_ack = seq;
	}
	close(p[0]);

	/* Every acknowledged seq is there, with its EMM, and at most the one in flight beyond. */
	assert_int_equal(kh_store_open(c->url, &s), KH_OK);
	int64_t max = raw_int(c, "SELECT max(seq) FROM emm_queue WHERE address = 9");
	int64_t cnt = raw_int(c, "SELECT count(*) FROM emm_queue WHERE address = 9");
	int64_t last = raw_int(c, "SELECT last_seq FROM emm_seq WHERE address = 9");
	assert_true(max == last_ack || max == (int64_t)last_ack + 1);
	assert_int_equal(cnt, max); /* 1..max, none missing, none twice (UNIQUE) */
	assert_int_equal(last, max);
	memset(&f, 0, sizeof f);
	assert_int_equal(kh_store_emm_fetch(s, 0, 16, collect, &f, NULL), KH_OK);
	assert_int_equal(f.n, 16);
	for (int i = 0; i < 16; i++)
		assert_int_equal(f.seqs[i], (uint32_t)i + 1);
	/* And the sequence goes on from there. */
	assert_int_equal(kh_store_next_emm_seq(s, KH_EMM_UNIQUE, 9, &next), KH_OK);
	assert_int_equal(next, (uint32_t)max + 1);
	kh_store_close(s);
}

/* ---- group commit ---- */

#define GJOBS 8

struct gjob {
	struct kh_store_group *g;
	int i;
	int fail;      /* the job's function refuses after writing */
	int hold;      /* the first job: wait until the others are queued */
	int leading;   /* set (atomically) once the holding job runs: it leads the first batch */
	kh_err r;
};

static kh_err gjob_fn(struct kh_store *s, void *arg)
{
	struct gjob *j = arg;
	uint8_t h[KH_STORE_IDEM_HASH_LEN];
	char key[16];
	kh_err r;

	if (j->hold) {
		/* Led by this job: the other GJOBS-1 callers queue meanwhile, so they form one batch. */
		unsigned waiting = 0;
		__atomic_store_n(&j->leading, 1, __ATOMIC_SEQ_CST);
		for (int n = 0; n < 20000 && waiting < GJOBS - 1; n++) {
			usleep(500);
			kh_store_group_stats(j->g, NULL, NULL, &waiting);
		}
	}
	memset(h, j->i, sizeof h);
	snprintf(key, sizeof key, "g%d", j->i);
	if ((r = kh_store_idem_put(s, key, h, (const uint8_t *)"a", 1)) != KH_OK)
		return r;
	return j->fail ? KH_ERR_INVAL : KH_OK;
}

static void *gjob_thread(void *arg)
{
	struct gjob *j = arg;
	j->r = kh_store_group_run(j->g, gjob_fn, j);
	return NULL;
}

/*
 * Jobs queued while a batch runs commit together as the next batch, and one job that fails
 * takes back only its own writes: every other job's row is there, its own is not.
 */
static void test_group_commit(void **state)
{
	struct ctx *c = *state;
	struct kh_store_group *g = NULL;
	struct gjob jobs[GJOBS];
	pthread_t th[GJOBS];
	uint64_t batches = 0, njobs = 0;
	unsigned waiting = 1;

	assert_int_equal(kh_store_group_new(c->url, NULL, 0, &g), KH_OK);
	memset(jobs, 0, sizeof jobs);
	for (int i = 0; i < GJOBS; i++) {
		jobs[i] = (struct gjob){.g = g, .i = i + 1, .hold = i == 0, .fail = i == 3};
		assert_int_equal(pthread_create(&th[i], NULL, gjob_thread, &jobs[i]), 0);
		if (i == 0) {
			/* Let the first job lead (it runs: no longer queued) before the others queue. */
			for (int n = 0; n < 50000 && !__atomic_load_n(&jobs[0].leading, __ATOMIC_SEQ_CST); n++)
				usleep(200);
			assert_true(__atomic_load_n(&jobs[0].leading, __ATOMIC_SEQ_CST));
		}
	}
	for (int i = 0; i < GJOBS; i++)
		assert_int_equal(pthread_join(th[i], NULL), 0);
	for (int i = 0; i < GJOBS; i++)
		assert_int_equal(jobs[i].r, i == 3 ? KH_ERR_INVAL : KH_OK);
	kh_store_group_stats(g, &batches, &njobs, &waiting);
	assert_int_equal(njobs, GJOBS);
	assert_int_equal(waiting, 0);
	assert_int_equal(batches, 2); /* the leader's own, then the seven that queued behind it */
	kh_store_group_free(g);
	assert_int_equal(raw_int(c, "SELECT count(*) FROM idempotency"), GJOBS - 1);
	assert_int_equal(raw_int(c, "SELECT count(*) FROM idempotency WHERE key = 'g4'"), 0);
}

/* A batch whose transaction cannot start (another connection holds the write lock) fails every
 * job in it with the soft error, keeps nothing, and the group works again afterwards. */
static void test_group_busy(void **state)
{
	struct ctx *c = *state;
	struct kh_store_group *g = NULL;
	struct kh_store *a = NULL;
	struct kh_store_opts o = {.busy_timeout_ms = 5};
	struct gjob j = {.i = 1};

	assert_int_equal(kh_store_open(c->url, &a), KH_OK);
	assert_int_equal(kh_store_group_new(c->url, &o, 0, &g), KH_OK);
	j.g = g;
	/* a's transaction holds the lock the job needs (SQLite's write lock; on PostgreSQL the row
	 * of the key the job writes, as a wrote it first) */
	assert_int_equal(kh_store_begin(a), KH_OK);
	{
		uint8_t h[KH_STORE_IDEM_HASH_LEN];
		memset(h, 9, sizeof h);
		assert_int_equal(kh_store_idem_put(a, "g1", h, (const uint8_t *)"a", 1), KH_OK);
	}
	assert_int_equal(kh_store_group_run(g, gjob_fn, &j), KH_ERR_DB_BUSY);
	kh_store_rollback(a);
	assert_int_equal(raw_int(c, "SELECT count(*) FROM idempotency"), 0);
	assert_int_equal(kh_store_group_run(g, gjob_fn, &j), KH_OK);
	assert_int_equal(raw_int(c, "SELECT count(*) FROM idempotency"), 1);
	kh_store_group_free(g);
	kh_store_close(a);
}

/*
 * Whether the group batches is what the center decides its write path by: SQLite's group
 * batches (one writer, one fsync per commit), PostgreSQL's does not (each job would be one
 * transaction on the group's ONE connection, so a center runs its writes on each thread's own
 * connection instead). A mutant answering 1 on PostgreSQL, or 0 on SQLite, fails here.
 */
static void test_group_batches(void **state)
{
	struct ctx *c = *state;
	struct kh_store_group *g = NULL;

	assert_int_equal(kh_store_group_batches(NULL), 0);
	assert_int_equal(kh_store_group_new(c->url, NULL, 0, &g), KH_OK);
	assert_int_equal(kh_store_group_batches(g), c->pg ? 0 : 1);
	kh_store_group_free(g);
}

/* The path's -wal or -shm ("-wal" / "-shm" appended to the database path) into buf. */
static const char *side(const struct ctx *c, const char *sfx, char *buf, size_t cap)
{
	snprintf(buf, cap, "%s%s", c->path, sfx);
	return buf;
}

/*
 * The database file deleted while connections have it open: a connection opened later makes no
 * new file at the path (it is refused), no write is taken on the connections already open, and
 * those go on reading what the file held; a group committer cannot be made on it either.
 */
static void test_file_deleted(void **state)
{
	struct ctx *c = *state;
	struct kh_store *a = NULL, *b = NULL;
	struct kh_store_group *g = NULL;
	char wal[600];
	uint32_t seq = 0;
	int v = 0;

	ONLY_SQLITE(c);

	assert_int_equal(kh_store_open(c->url, &a), KH_OK);
	assert_int_equal(kh_store_next_emm_seq(a, KH_EMM_UNIQUE, 7, &seq), KH_OK);
	assert_int_equal(seq, 1);
	assert_int_equal(unlink(c->path), 0);

	assert_int_equal(kh_store_open(c->url, &b), KH_ERR_DB_GONE);
	assert_null(b);
	assert_int_equal(kh_store_group_new(c->url, NULL, 0, &g), KH_ERR_DB_GONE);
	assert_null(g);
	assert_int_equal(access(c->path, F_OK), -1); /* no new, empty database at the path */

	assert_int_equal(kh_store_next_emm_seq(a, KH_EMM_UNIQUE, 7, &seq), KH_ERR_DB_GONE);
	assert_non_null(strstr(kh_store_last_error(a), "deleted"));
	assert_int_equal(kh_store_begin(a), KH_ERR_DB_GONE);
	assert_false(kh_store_in_tx(a));
	assert_int_equal(kh_store_schema_version(a, &v), KH_OK); /* reads: the file it has */
	assert_int_equal(v, kh_store_schema_latest());
	kh_store_close(a);
	assert_int_equal(access(c->path, F_OK), -1);

	/* Its WAL stays behind, and no new database is made beside it... */
	a = NULL;
	assert_int_equal(access(side(c, "-wal", wal, sizeof wal), F_OK), 0);
	assert_int_equal(kh_store_open(c->url, &a), KH_ERR_EXISTS);
	assert_null(a);
	assert_int_equal(access(c->path, F_OK), -1);
	/* ... until it is moved away. */
	assert_int_equal(unlink(wal), 0);
	(void)unlink(side(c, "-shm", wal, sizeof wal));
	assert_int_equal(kh_store_open(c->url, &a), KH_OK);
	assert_int_equal(kh_store_next_emm_seq(a, KH_EMM_UNIQUE, 7, &seq), KH_OK);
	assert_int_equal(seq, 1);
	kh_store_close(a);
}

/* Replaced by another file (a copy of it, even): the same refusals, and the copy is not written. */
static void test_file_replaced(void **state)
{
	struct ctx *c = *state;
	struct kh_store *a = NULL, *b = NULL;
	struct kh_store_group *g = NULL;
	char copy[600], cmd[1400];
	uint32_t seq = 0;

	ONLY_SQLITE(c);

	assert_int_equal(kh_store_group_new(c->url, NULL, 0, &g), KH_OK);
	assert_int_equal(kh_store_open(c->url, &a), KH_OK);
	assert_int_equal(kh_store_next_emm_seq(a, KH_EMM_UNIQUE, 7, &seq), KH_OK);
	/* A copy (by SQLite's backup, so whole) renamed over the path. */
	snprintf(copy, sizeof copy, "%s.copy", c->path);
	snprintf(cmd, sizeof cmd, "VACUUM INTO '%s'", copy);
	raw_exec(c, cmd);
	assert_int_equal(chmod(copy, 0600), 0);
	assert_int_equal(rename(copy, c->path), 0);

	assert_int_equal(kh_store_open(c->url, &b), KH_ERR_DB_GONE);
	assert_null(b);
	assert_int_equal(kh_store_next_emm_seq(a, KH_EMM_UNIQUE, 7, &seq), KH_ERR_DB_GONE);
	assert_non_null(strstr(kh_store_last_error(a), "replaced"));
	{
		struct gjob j = {.g = g, .i = 1};
		assert_int_equal(kh_store_group_run(g, gjob_fn, &j), KH_ERR_DB_GONE);
	}
	kh_store_group_free(g);
	kh_store_close(a);
	/* The old file's WAL is not left for the copy to take as its own; the copy is as copied. */
	assert_int_equal(access(side(c, "-wal", copy, sizeof copy), F_OK), -1);
	assert_int_equal(access(side(c, "-shm", copy, sizeof copy), F_OK), -1);
	assert_int_equal(raw_int(c, "SELECT last_seq FROM emm_seq WHERE address = 7"), 1);
	assert_int_equal(raw_int(c, "SELECT count(*) FROM idempotency"), 0);
	assert_int_equal(kh_store_open(c->url, &a), KH_OK);
	kh_store_close(a);
}

/*
 * The -wal and -shm beside the database: created as private as it (whatever the umask), a
 * world-readable one refused as the database itself is, and one left without its database
 * refused rather than taken for a new database's.
 */
static void test_sidecars(void **state)
{
	struct ctx *c = *state;
	struct kh_store *a = NULL;
	char wal[600], shm[600];
	struct stat st;
	mode_t old;
	int fd;

	ONLY_SQLITE(c);
	old = umask(0);

	assert_int_equal(kh_store_open(c->url, &a), KH_OK);
	umask(old);
	assert_int_equal(stat(side(c, "-wal", wal, sizeof wal), &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(stat(side(c, "-shm", shm, sizeof shm), &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);

	/* While a connection is open: a later one checks them too. */
	assert_int_equal(chmod(wal, 0644), 0);
	{
		struct kh_store *b = NULL;
		assert_int_equal(kh_store_open(c->url, &b), KH_ERR_KEYFILE_PERM);
		assert_null(b);
	}
	assert_int_equal(chmod(wal, 0600), 0);
	kh_store_close(a);

	/* At the first open: a 0644 -wal (and -shm) is refused, and left as it is. */
	fd = open(wal, O_CREAT | O_WRONLY, 0644);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(chmod(wal, 0644), 0);
	a = NULL;
	assert_int_equal(kh_store_open(c->url, &a), KH_ERR_KEYFILE_PERM);
	assert_null(a);
	assert_int_equal(stat(wal, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0644);
	assert_int_equal(rename(wal, shm), 0);
	assert_int_equal(kh_store_open(c->url, &a), KH_ERR_KEYFILE_PERM);
	assert_int_equal(chmod(shm, 0600), 0);
	assert_int_equal(kh_store_open(c->url, &a), KH_OK);
	kh_store_close(a);

	/* A -wal without its database: refused, and no database is made beside it. */
	assert_int_equal(unlink(c->path), 0);
	fd = open(wal, O_CREAT | O_WRONLY, 0600);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(kh_store_open(c->url, &a), KH_ERR_EXISTS);
	assert_int_equal(access(c->path, F_OK), -1);
	assert_int_equal(unlink(wal), 0);
	(void)unlink(shm);
	assert_int_equal(kh_store_open(c->url, &a), KH_OK);
	kh_store_close(a);
}

/*
 * kh_store_check: what kh_store_open would refuse, said with the file at fault, creating and
 * changing nothing.
 */
static void test_check(void **state)
{
	struct ctx *c = *state;
	struct kh_store *a = NULL;
	char why[5000], wal[600], url[700];
	int exists = -1;

	ONLY_SQLITE(c);

	assert_int_equal(kh_store_check(c->url, &exists, why, sizeof why), KH_OK);
	assert_int_equal(exists, 0);
	assert_int_equal(access(c->path, F_OK), -1);
	snprintf(url, sizeof url, "%s/no/such/dir.db", c->dir);
	assert_int_equal(kh_store_check(url, &exists, why, sizeof why), KH_ERR_NOTFOUND);
	assert_non_null(strstr(why, "no/such/dir.db: "));
	assert_int_equal(kh_store_check("mysql://x", NULL, why, sizeof why), KH_ERR_INVAL);
#ifdef KH_HAVE_PG
	assert_int_equal(kh_store_check("postgres://x", NULL, why, sizeof why), KH_OK); /* the server's to say */
#else
	assert_int_equal(kh_store_check("postgres://x", NULL, why, sizeof why), KH_ERR_NOT_BUILT);
#endif

	assert_int_equal(kh_store_open(c->url, &a), KH_OK);
	kh_store_close(a);
	assert_int_equal(kh_store_check(c->url, &exists, why, sizeof why), KH_OK);
	assert_int_equal(exists, 1);
	assert_int_equal(chmod(c->path, 0640), 0);
	assert_int_equal(kh_store_check(c->url, &exists, why, sizeof why), KH_ERR_KEYFILE_PERM);
	assert_non_null(strstr(why, "center.db: database file is not private"));
	assert_int_equal(chmod(c->path, 0600), 0);
	fclose(fopen(side(c, "-wal", wal, sizeof wal), "w")); /* umask 022: 0644 */
	assert_int_equal(chmod(wal, 0644), 0);
	assert_int_equal(kh_store_check(c->url, &exists, why, sizeof why), KH_ERR_KEYFILE_PERM);
	assert_non_null(strstr(why, "center.db-wal: database file is not private"));
	assert_int_equal(unlink(wal), 0);

	/* Read-only: the file's mode, or its directory's (root writes anyway: checked as another user
	 * by tests/cli/test_serve_start.sh). */
	if (geteuid() != 0) {
		assert_int_equal(chmod(c->path, 0400), 0);
		assert_int_equal(kh_store_check(c->url, &exists, why, sizeof why), KH_ERR_IO);
		assert_non_null(strstr(why, "read-only"));
		assert_int_equal(kh_store_open(c->url, &a), KH_ERR_IO);
		assert_int_equal(chmod(c->path, 0600), 0);
		assert_int_equal(chmod(c->dir, 0500), 0);
		assert_int_equal(kh_store_check(c->url, &exists, why, sizeof why), KH_ERR_IO);
		assert_non_null(strstr(why, "directory is not writable"));
		assert_int_equal(kh_store_open(c->url, &a), KH_ERR_IO);
		assert_int_equal(chmod(c->dir, 0700), 0);
	}

	/* kh_store_remove: not while open here; then the file and what SQLite made beside it. */
	assert_int_equal(kh_store_open(c->url, &a), KH_OK);
	assert_int_equal(kh_store_remove(c->url), KH_ERR_INVAL);
	assert_int_equal(access(c->path, F_OK), 0);
	kh_store_close(a);
	assert_int_equal(kh_store_remove(c->url), KH_OK);
	assert_int_equal(access(c->path, F_OK), -1);
	assert_int_equal(access(wal, F_OK), -1);
	assert_int_equal(kh_store_remove(c->url), KH_OK);
}

/* ---- PostgreSQL only ---- */

/* url with user:password@ put before its host, into out. */
static void with_password(const char *url, const char *userpw, char *out, size_t cap)
{
	const char *a = strstr(url, "://");

	assert_non_null(a);
	assert_true((size_t)snprintf(out, cap, "%.*s%s@%s", (int)(a + 3 - url), url, userpw, a + 3) < cap);
}

struct logged {
	const char *url;
	kh_err r;
};

static void open_fails(void *arg)
{
	struct logged *l = arg;
	struct kh_store *s = NULL;

	l->r = kh_store_open(l->url, &s);
	kh_store_close(s);
}

/* Run fn with standard error (where the log goes) caught into buf. */
static void catch_stderr(const struct ctx *c, void (*fn)(void *), void *arg, char *buf, size_t cap)
{
	char path[600];
	int fd, saved;
	ssize_t n;

	snprintf(path, sizeof path, "%s/stderr.log", c->dir);
	fd = open(path, O_CREAT | O_TRUNC | O_RDWR, 0600);
	assert_true(fd >= 0);
	fflush(stderr);
	saved = dup(2);
	assert_true(saved >= 0);
	assert_int_equal(dup2(fd, 2), 2);
	fn(arg);
	fflush(stderr);
	assert_int_equal(dup2(saved, 2), 2);
	close(saved);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	n = read(fd, buf, cap - 1);
	assert_true(n >= 0);
	buf[n] = '\0';
	close(fd);
}

/*
 * A URL's password is in no message and no log line: not when the server is not there, not when
 * libpq cannot parse the URL (its own message would quote it), not in the store's name once
 * connected. kh_store_check has no file to look at; kh_store_remove drops no server database.
 */
static void test_pg_urls(void **state)
{
	struct ctx *c = *state;
	struct kh_store *s = NULL;
	char url[1200], log[8192], why[512];
	struct logged l = {url, KH_OK};
	int exists = 0;

	ONLY_PG(c);
	snprintf(url, sizeof url, "postgresql://kh:s3cret-pw@/kh?host=%s/nowhere", c->dir);
	catch_stderr(c, open_fails, &l, log, sizeof log);
	assert_int_equal(l.r, KH_ERR_DB_UNAVAILABLE);
	assert_non_null(strstr(log, "event=store.error"));
	assert_non_null(strstr(log, "postgresql://kh@"));
	assert_null(strstr(log, "s3cret"));

	snprintf(url, sizeof url, "postgresql://kh:s3cret%%zz@/kh?host=%s/nowhere", c->dir);
	catch_stderr(c, open_fails, &l, log, sizeof log);
	assert_int_equal(l.r, KH_ERR_INVAL);
	assert_non_null(strstr(log, "cannot be parsed"));
	assert_null(strstr(log, "s3cret"));
	assert_int_equal(kh_store_check(url, &exists, why, sizeof why), KH_ERR_INVAL);
	assert_null(strstr(why, "s3cret"));

	/* The cluster trusts its socket: any password opens it. */
	with_password(c->url, "postgres:s3cret-pw", url, sizeof url);
	assert_int_equal(kh_store_open(url, &s), KH_OK);
	assert_int_equal(kh_store_begin(s), KH_OK);
	assert_int_equal(kh_store_begin(s), KH_ERR_INVAL);
	assert_non_null(strstr(kh_store_last_error(s), c->name));
	assert_null(strstr(kh_store_last_error(s), "s3cret"));
	kh_store_rollback(s);
	kh_store_close(s);

	assert_int_equal(kh_store_check(c->url, &exists, why, sizeof why), KH_OK);
	assert_int_equal(exists, 1);
	assert_int_equal(kh_store_remove(c->url), KH_ERR_INVAL);
	assert_int_equal(kh_store_open(c->url, &s), KH_OK);
	kh_store_close(s);
}

/* A schema with another application's tables, or another application id, is refused before
 * anything is written to it. */
static void test_pg_foreign(void **state)
{
	struct ctx *c = *state;
	struct kh_store *s = NULL;

	ONLY_PG(c);
	raw_exec(c, "CREATE TABLE other_app (x INTEGER)");
	assert_int_equal(kh_store_open(c->url, &s), KH_ERR_DB_FOREIGN);
	assert_null(s);
	assert_int_equal(raw_int(c, "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"), 1);
	raw_exec(c, "DROP TABLE other_app; CREATE TABLE application_id (value BIGINT NOT NULL);"
		    "INSERT INTO application_id VALUES (7)");
	assert_int_equal(kh_store_open(c->url, &s), KH_ERR_DB_FOREIGN);
	assert_int_equal(raw_int(c, "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"), 1);
	raw_exec(c, "DROP TABLE application_id");
	assert_int_equal(kh_store_open(c->url, &s), KH_OK);
	kh_store_close(s);
}

struct conflict {
	const struct ctx *c;
	struct kh_store *a;
	int runs;
	uint32_t id;
};

/* b's transaction: read card 7, then take its next reload id. At the first run, a takes one and
 * commits in between: b's snapshot no longer holds the row it updates. */
static kh_err reload_after_a(struct kh_store *s, void *arg)
{
	struct conflict *x = arg;
	struct kh_store_card k;
	uint32_t id = 0;
	kh_err r;

	if ((r = kh_store_card_get(s, 7, &k)) != KH_OK)
		return r;
	if (x->runs++ == 0) {
		assert_int_equal(kh_store_card_next_reload(x->a, 7, &id), KH_OK);
		assert_int_equal(id, 1);
	}
	return kh_store_card_next_reload(s, 7, &x->id);
}

/* A serialization failure (SQLSTATE 40001) is the soft error: the transaction runs again, wins,
 * and the retry is counted. Neither change is lost. */
static void test_pg_serialization(void **state)
{
	struct ctx *c = *state;
	struct kh_store *a = NULL, *b = NULL;
	struct conflict x = {.c = c};
	struct kh_store_tx_stats before, after;
	static const uint8_t der[] = {0x30, 0x03, 0x02, 0x01, 0x01};

	ONLY_PG(c);
	assert_int_equal(kh_store_open(c->url, &a), KH_OK);
	assert_int_equal(kh_store_open(c->url, &b), KH_OK);
	assert_int_equal(kh_store_card_add(a, 7, KH_CARD_KIND_CARD, der, sizeof der), KH_OK);
	x.a = a;
	kh_store_tx_stats(&before);
	assert_int_equal(kh_store_run_tx(b, reload_after_a, &x), KH_OK);
	kh_store_tx_stats(&after);
	assert_int_equal(x.runs, 2);
	assert_int_equal(x.id, 2);
	assert_true(after.retries >= before.retries + 1);
	assert_int_equal(raw_int(c, "SELECT last_reload_id FROM cards WHERE ua = 7"), 2);
	kh_store_close(a);
	kh_store_close(b);
}

struct cross {
	struct kh_store *s;
	uint32_t first, second;
	pthread_barrier_t *bar;
	int runs;
	kh_err r;
};

/* Take a reload id of one card, then (once both threads hold their first) of the other. */
static kh_err cross_fn(struct kh_store *s, void *arg)
{
	struct cross *x = arg;
	uint32_t id;
	kh_err r;

	if ((r = kh_store_card_next_reload(s, x->first, &id)) != KH_OK)
		return r;
	if (x->runs++ == 0)
		pthread_barrier_wait(x->bar);
	return kh_store_card_next_reload(s, x->second, &id);
}

static void *cross_thread(void *arg)
{
	struct cross *x = arg;
	x->r = kh_store_run_tx(x->s, cross_fn, x);
	return NULL;
}

/* Two transactions update the same two card rows in crossed order: the server finds the
 * deadlock (40P01), one of them is rolled back and runs again, and both changes stand. */
static void test_pg_deadlock(void **state)
{
	struct ctx *c = *state;
	static const uint8_t der[] = {0x30, 0x03, 0x02, 0x01, 0x01};
	pthread_barrier_t bar;
	struct cross x[2];
	pthread_t th[2];
	struct kh_store_tx_stats before, after;

	ONLY_PG(c);
	assert_int_equal(pthread_barrier_init(&bar, NULL, 2), 0);
	for (int i = 0; i < 2; i++) {
		x[i] = (struct cross){.first = 7 + (uint32_t)i, .second = 8 - (uint32_t)i, .bar = &bar};
		assert_int_equal(kh_store_open(c->url, &x[i].s), KH_OK);
		assert_int_equal(kh_store_card_add(x[i].s, 7 + (uint32_t)i, KH_CARD_KIND_CARD, der, sizeof der), KH_OK);
	}
	kh_store_tx_stats(&before);
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&th[i], NULL, cross_thread, &x[i]), 0);
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_join(th[i], NULL), 0);
	kh_store_tx_stats(&after);
	assert_int_equal(x[0].r, KH_OK);
	assert_int_equal(x[1].r, KH_OK);
	assert_true(x[0].runs + x[1].runs >= 3); /* one of them ran again */
	assert_true(after.retries > before.retries);
	assert_int_equal(raw_int(c, "SELECT count(*) FROM cards WHERE last_reload_id = 2"), 2);
	for (int i = 0; i < 2; i++)
		kh_store_close(x[i].s);
	pthread_barrier_destroy(&bar);
}

static const char kill_others[] =
	"SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity\n"
	"WHERE datname = current_database() AND pid <> pg_backend_pid()";

/*
 * The server drops the connection (a restart, a failover, an administrator): the next
 * transaction makes it again and runs; one that was open fails with the database unavailable
 * (503), and nothing of it stays.
 */
static void test_pg_reconnect(void **state)
{
	struct ctx *c = *state;
	struct kh_store *s = NULL;
	uint32_t seq = 0;

	ONLY_PG(c);
	assert_int_equal(kh_store_open(c->url, &s), KH_OK);
	assert_int_equal(kh_store_next_emm_seq(s, KH_EMM_UNIQUE, 7, &seq), KH_OK);
	assert_int_equal(seq, 1);
	assert_int_equal(raw_int(c, kill_others), 1);
	assert_int_equal(kh_store_next_emm_seq(s, KH_EMM_UNIQUE, 7, &seq), KH_OK);
	assert_int_equal(seq, 2);

	assert_int_equal(kh_store_begin(s), KH_OK);
	assert_int_equal(kh_store_next_emm_seq(s, KH_EMM_UNIQUE, 7, &seq), KH_OK);
	assert_int_equal(seq, 3);
	assert_int_equal(raw_int(c, kill_others), 1);
	seq = 0;
	assert_int_equal(kh_store_next_emm_seq(s, KH_EMM_UNIQUE, 7, &seq), KH_ERR_DB_UNAVAILABLE);
	assert_int_equal(kh_err_http(KH_ERR_DB_UNAVAILABLE), 503);
	assert_int_equal(kh_store_commit(s), KH_ERR_DB_UNAVAILABLE);
	assert_false(kh_store_in_tx(s));
	assert_int_equal(raw_int(c, "SELECT last_seq FROM emm_seq WHERE address = 7"), 2);
	assert_int_equal(kh_store_next_emm_seq(s, KH_EMM_UNIQUE, 7, &seq), KH_OK);
	assert_int_equal(seq, 3);
	kh_store_close(s);
}

struct opener {
	const char *url;
	kh_err r;
};

static void *open_thread(void *arg)
{
	struct opener *o = arg;
	struct kh_store *s = NULL;

	o->r = kh_store_open(o->url, &s);
	kh_store_close(s);
	return NULL;
}

/* Processes that open a new database at once migrate it once: the lock on schema_migrations
 * makes the second wait and find the first one's work. */
static void test_pg_migrate_race(void **state)
{
	struct ctx *c = *state;
	struct opener o[4];
	pthread_t th[4];

	ONLY_PG(c);
	for (int i = 0; i < 4; i++) {
		o[i] = (struct opener){.url = c->url, .r = KH_ERR_INTERNAL};
		assert_int_equal(pthread_create(&th[i], NULL, open_thread, &o[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		assert_int_equal(pthread_join(th[i], NULL), 0);
		assert_int_equal(o[i].r, KH_OK);
	}
	assert_int_equal(raw_int(c, "SELECT count(*) FROM schema_migrations"), kh_store_schema_latest());
	assert_int_equal(raw_int(c, "SELECT count(*) FROM application_id"), 1);
	assert_int_equal(raw_int(c, "SELECT count(*) FROM credit_policy"), 1);
}

/* What a message may show of a database URL: never its password, whichever way it is given. */
static void test_url_safe(void **state)
{
	static const struct {
		const char *in, *out;
	} cases[] = {
		{"postgresql://kh:s3cret@db.example:5432/center", "postgresql://kh:***@db.example:5432/center"},
		{"postgres://kh:s3cret@/center?host=/run/pg", "postgres://kh:***@/center?host=/run/pg"},
		{"postgresql:///center?user=kh&password=s3cret&host=/run/pg",
		 "postgresql:///center?user=kh&password=***&host=/run/pg"},
		{"postgresql://kh:a@b@h/db?password=x&password=y", "postgresql://kh:***@h/db?password=***&password=***"},
		{"postgresql://kh@h/db?sslmode=require", "postgresql://kh@h/db?sslmode=require"},
		{"postgresql://h/db?passwordless=1", "postgresql://h/db?passwordless=1"},
		{"center.db", "center.db"},
		{"sqlite:a:b@c.db", "sqlite:a:b@c.db"},
	};
	char out[128];

	(void)state;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		kh_store_url_safe(cases[i].in, out, sizeof out);
		assert_string_equal(out, cases[i].out);
		assert_null(strstr(out, "s3cret"));
	}
	kh_store_url_safe("postgresql://kh:s3cret@h/db", out, 12); /* cut, still terminated */
	assert_string_equal(out, "postgresql:");
	kh_store_url_safe(NULL, out, sizeof out);
	assert_string_equal(out, "");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_url_safe),
		cmocka_unit_test_setup_teardown(test_urls, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sync_option, setup, teardown),
		cmocka_unit_test_setup_teardown(test_migrations_once, setup, teardown),
		cmocka_unit_test_setup_teardown(test_foreign_db, setup, teardown),
		cmocka_unit_test_setup_teardown(test_seq_increase, setup, teardown),
		cmocka_unit_test_setup_teardown(test_enqueue_atomic, setup, teardown),
		cmocka_unit_test_setup_teardown(test_emm_cursor_late_commit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_emm_cursor_concurrent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_block_dup, setup, teardown),
		cmocka_unit_test_setup_teardown(test_idempotency, setup, teardown),
		cmocka_unit_test_setup_teardown(test_idempotency_expire, setup, teardown),
		cmocka_unit_test_setup_teardown(test_busy_retry, setup, teardown),
		cmocka_unit_test_setup_teardown(test_crash, setup, teardown),
		cmocka_unit_test_setup_teardown(test_group_commit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_group_busy, setup, teardown),
		cmocka_unit_test_setup_teardown(test_group_batches, setup, teardown),
		cmocka_unit_test_setup_teardown(test_file_deleted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_file_replaced, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sidecars, setup, teardown),
		cmocka_unit_test_setup_teardown(test_check, setup, teardown),
		cmocka_unit_test_setup_teardown(test_card_names, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pg_urls, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pg_foreign, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pg_serialization, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pg_deadlock, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pg_reconnect, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pg_migrate_race, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
