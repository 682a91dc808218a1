/*
 * Inside the store: the small statement interface the typed operations (ops_*.c) are written
 * against, so that they hold SQL and logic but no backend calls, and the backend seam behind it.
 * store.c holds what every backend shares (the statement cache, transactions and their retry,
 * migrations, errors) and calls a backend through struct kh__backend: sqlite.c over SQLite, pg.c
 * over libpq (built when libpq is found). The typed operations and group.c see neither.
 *
 * Statements are prepared once per connection and cached by the address of their SQL text,
 * which must therefore be a string literal. Every value is bound, never pasted into SQL. The SQL
 * is what SQLite and PostgreSQL both accept (docs/internals/store.md, "Dialects"); ?N
 * placeholders, which pg.c rewrites to $N.
 */
#ifndef KH_STORE_INT_H
#define KH_STORE_INT_H

#include <stddef.h>
#include <stdint.h>

#include "keyhole/store.h"

/* Distinct SQL literals one connection may prepare: every typed operation's, with room to spare
 * (about 110 exist); a full cache is an internal error, not a silent slowdown. */
#define KH__STMT_CACHE 192

/* What every backend's prepared statement starts with (the backend's own struct embeds it
 * first, and casts). */
struct kh__stmt {
	struct kh_store *s;
	const char *sql; /* the literal: the cache key */
	int in_use;
};

struct kh__backend;

/* What every backend's connection starts with (embedded first, as for statements). */
struct kh_store {
	const struct kh__backend *be;
	char *name; /* what messages name: the file, or the database (never a password) */
	int in_tx;
	size_t ncache;
	struct kh__stmt *cache[KH__STMT_CACHE];
	char err[320];
};

/*
 * A backend. Statement functions take what store.c checked (a statement of this backend, an
 * index >= 1); every other function is called with a connection of this backend.
 */
struct kh__backend {
	const char *name;
	int tx_attempts;  /* kh_store_run_tx's attempts at a transaction that meets the soft error */
	int group_batch;  /* 1: the group committer batches jobs in one transaction (SQLite's one
			   * writer and one fsync per commit); 0: each job is its own transaction */
	/* A SELECT of one integer: 1 when schema_migrations exists (store.c, migrations). */
	const char *q_has_migrations;

	/* flags: KH__OPEN_AS_IS, or 0 */
	kh_err (*open)(const char *url, const struct kh_store_opts *o, unsigned flags, struct kh_store **out);
	/* Free s and what it holds; its statements are finalised and any transaction rolled back. */
	void (*close)(struct kh_store *s);
	kh_err (*check)(const char *url, int *exists, char *why, size_t cap);
	kh_err (*remove)(const char *url);
	kh_err (*probe)(struct kh_store *s, unsigned wait_ms);
	/* A connection that broke outside a transaction is made again here (NULL: never breaks);
	 * the statement cache is emptied first. */
	kh_err (*revive)(struct kh_store *s);

	kh_err (*prepare)(struct kh_store *s, const char *sql, struct kh__stmt **out);
	void (*finalize)(struct kh__stmt *st);
	void (*reset)(struct kh__stmt *st); /* unbind and forget the result */
	kh_err (*bind_i64)(struct kh__stmt *st, int idx, int64_t v);
	kh_err (*bind_null)(struct kh__stmt *st, int idx);
	kh_err (*bind_text)(struct kh__stmt *st, int idx, const char *v);
	kh_err (*bind_blob)(struct kh__stmt *st, int idx, const void *v, size_t n);
	kh_err (*step)(struct kh__stmt *st, int *row);
	int (*col_null)(struct kh__stmt *st, int col);
	int64_t (*col_i64)(struct kh__stmt *st, int col);
	const uint8_t *(*col_blob)(struct kh__stmt *st, int col, size_t *n);
	int64_t (*changes)(struct kh_store *s);

	/* Transaction control: begin opens a write transaction (store.c sets in_tx), commit returns
	 * once durable, rollback undoes whatever is open on the connection. */
	kh_err (*begin)(struct kh_store *s);
	kh_err (*commit)(struct kh_store *s);
	void (*rollback)(struct kh_store *s);
	/* Migrations: open the transaction a migration runs in, with schema_migrations present and
	 * locked against another process migrating at once; run one migration's text (SQLite's
	 * dialect: the backend translates it). */
	kh_err (*migrate_begin)(struct kh_store *s);
	kh_err (*exec_script)(struct kh_store *s, const char *sql);

	/* ---- the store tools (copy.c, check.c) ---- */
	/* Open a read-only transaction: one snapshot for every statement until the rollback. */
	const char *q_begin_read;
	/* 1 when a and b (both of this backend) are one database: the same file, or the same
	 * server database and schema. */
	int (*same_db)(struct kh_store *a, struct kh_store *b);
	/* The highest id the id generator of table.col handed out (*v 0: none, or a table whose ids
	 * are not generated), and moving it so that the next id given is above v. autoinc: the
	 * schema says AUTOINCREMENT (SQLite keeps a generator only for those; a plain INTEGER
	 * PRIMARY KEY gives max + 1). PostgreSQL's setval is not undone by a rollback. */
	kh_err (*seq_get)(struct kh_store *s, const char *table, const char *col, int64_t *v);
	kh_err (*seq_set)(struct kh_store *s, const char *table, const char *col, int autoinc, int64_t v);
};

/* Open the database as it is: never create a file, never migrate (the version is only checked
 * not to be newer); a file that does not exist is KH_ERR_NOTFOUND. */
#define KH__OPEN_AS_IS 1u
/* Open the backend's read-only transaction on s (kh_store_rollback ends it): copy.c, check.c. */
KH_WARN_UNUSED kh_err kh__begin_read(struct kh_store *s);

extern const struct kh__backend kh__sqlite_backend;
#ifdef KH_HAVE_PG
extern const struct kh__backend kh__pg_backend;
#endif

/* ---- for the backends (store.c) ---- */

/*
 * Record the failure of op ("store NAME: op: detail" in kh_store_last_error) and log it: the soft
 * errors (exists, busy) at debug level, the rest as event=store.error with code (the backend's
 * own, e.g. "sqlite=19", "sqlstate=23505"; may be NULL). Returns r. detail never holds a value.
 */
kh_err kh__fail(struct kh_store *s, kh_err r, const char *op, const char *detail, const char *code);
/* A failure that is ours, not the database's ("store NAME: what"). */
kh_err kh__fail_msg(struct kh_store *s, kh_err r, const char *what);
/* Bring a new connection's schema to the latest (migrations, each in its own transaction), after
 * the backend checked it is ours: KH_ERR_VERSION for a newer one, written nothing. */
KH_WARN_UNUSED kh_err kh__migrate(struct kh_store *s);
/* The version recorded in schema_migrations, 0 when there is none. */
KH_WARN_UNUSED kh_err kh__read_version(struct kh_store *s, int *version);
/* The same, and KH_ERR_VERSION (recorded) when it is newer than this code's latest. */
KH_WARN_UNUSED kh_err kh__check_version(struct kh_store *s, int *version);
/* Run a prepared statement with no parameter to its end: commit, savepoints, settings. */
KH_WARN_UNUSED kh_err kh__exec_cached(struct kh_store *s, const char *sql);
/* One integer from a statement without parameters (0 when it gives no row). */
KH_WARN_UNUSED kh_err kh__query_int(struct kh_store *s, const char *sql, int64_t *v);
/* Finalise every cached statement of s (at close, or when its connection is made again). */
void kh__stmt_cache_clear(struct kh_store *s);
/* The write a readiness probe makes: a transaction that updates the one credit_policy row to
 * itself, then rolls back. wait_sql (may be NULL) runs first in it with ?1 = wait_ms (at most
 * 600000): the backend's bound on the lock wait for this transaction. */
KH_WARN_UNUSED kh_err kh__probe_write(struct kh_store *s, const char *wait_sql, unsigned wait_ms);
/* Count one transaction run again after the soft error (kh_store_tx_stats). */
void kh__count_retry(void);
/* Pause before retry n >= 1: about 2^n ms plus a random part (kh_random) as large, so that
 * writers that met each other part. */
void kh__backoff(int n);

/* Migrations (migrations.c): versions 1..n in order, each one SQL script. */
struct kh__migration {
	int version;
	const char *sql;
};
extern const struct kh__migration kh__migrations[];
extern const size_t kh__migrations_count;
/* PRAGMA application_id of a Keyhole store ("KHC1"); on PostgreSQL, the row of application_id. */
#define KH__STORE_APP_ID 0x4B484331
/*
 * A migration's text (SQLite's dialect) in PostgreSQL's, malloc'd; NULL: out of memory. The
 * dialect's differences in DDL are all here (migrations.c); the typed operations' SQL needs
 * none.
 */
char *kh__ddl_pg(const char *sql);

/*
 * Get the cached prepared statement for sql (a literal), reset and with no bindings. Release
 * it with kh__stmt_done on every path.
 */
KH_WARN_UNUSED kh_err kh__stmt(struct kh_store *s, const char *sql, struct kh__stmt **st);
void kh__stmt_done(struct kh__stmt *st);

/* Bind parameter idx (1-based). A NULL or empty blob binds an empty blob, never SQL NULL. */
KH_WARN_UNUSED kh_err kh__bind_i64(struct kh__stmt *st, int idx, int64_t v);
KH_WARN_UNUSED kh_err kh__bind_null(struct kh__stmt *st, int idx);
KH_WARN_UNUSED kh_err kh__bind_text(struct kh__stmt *st, int idx, const char *v);
KH_WARN_UNUSED kh_err kh__bind_blob(struct kh__stmt *st, int idx, const void *v, size_t n);

/*
 * Step: *row = 1 with a row to read, 0 when done. A unique or primary-key violation is
 * KH_ERR_EXISTS, another constraint KH_ERR_DB_CONSTRAINT, a lock KH_ERR_DB_BUSY, the rest
 * KH_ERR_DB (with the detail in kh_store_last_error).
 */
KH_WARN_UNUSED kh_err kh__step(struct kh__stmt *st, int *row);
/* Step a statement that returns no row (INSERT, UPDATE, ...). */
KH_WARN_UNUSED kh_err kh__exec(struct kh__stmt *st);

int kh__col_null(struct kh__stmt *st, int col);
int64_t kh__col_i64(struct kh__stmt *st, int col);
/* Blob or text bytes of a column, valid until the next step or kh__stmt_done; never NULL. */
const uint8_t *kh__col_blob(struct kh__stmt *st, int col, size_t *n);
/* A text column into out (cap > 0 bytes, cut to cap - 1, NUL-terminated). */
void kh__col_text(struct kh__stmt *st, int col, char *out, size_t cap);
/* A text column as a malloc'd string; NULL: out of memory. */
char *kh__col_str(struct kh__stmt *st, int col);
/* An integer column held to 0..UINT32_MAX (clamped: the schema's CHECKs keep it there). */
uint32_t kh__col_u32(struct kh__stmt *st, int col);

/*
 * Savepoints inside the open transaction (group.c): one level only. kh__savepoint_undo rolls
 * back to the savepoint and releases it. Any failure leaves the whole transaction to be rolled
 * back by the caller.
 */
KH_WARN_UNUSED kh_err kh__savepoint(struct kh_store *s);
KH_WARN_UNUSED kh_err kh__savepoint_release(struct kh_store *s);
KH_WARN_UNUSED kh_err kh__savepoint_undo(struct kh_store *s);

/* An Idempotency-Key the store accepts: 1..KH_STORE_IDEM_KEY_MAX bytes of text (ops_idem.c). */
int kh__idem_key_ok(const char *key);
/*
 * The row keyed by an Idempotency-Key: sql is a SELECT whose ?1 is the key and whose first column
 * is the stored request hash. KH_OK with *out on the row (read its other columns, then
 * kh__stmt_done), KH_ERR_NOTFOUND, or KH_ERR_IDEM_MISMATCH when the hash (compared in constant
 * time) is another request's; *out is released on every error.
 */
KH_WARN_UNUSED kh_err kh__keyed_row(struct kh_store *s, const char *sql, const char *key,
				    const uint8_t hash[static KH_STORE_IDEM_HASH_LEN], struct kh__stmt **out);

/* A card row (ops_cards.c): the columns KH__CARD_COLS names, in that order, read into *c. */
#define KH__CARD_COLS \
	"ua, role, coalesce(subscriber_id, 0), state, export_authorised, coalesce(replaced_by, 0),\n" \
	"coalesce(closed_reason, ''), last_reload_id, created_at, coalesce(clone_alarm_at, 0),\n" \
	"coalesce(clone_block_seq, 0)"
KH_WARN_UNUSED kh_err kh__card_row(struct kh__stmt *st, struct kh_store_card *c);

/* A bulk_jobs row's columns 1..11 (product_id, start_time, end_time, all_subscribers,
 * max_subscriber_id, last_subscriber_id, subscribers, emms_queued, skipped, chunks, done) into
 * *j (ops_bulk.c); the other fields are zeroed. */
void kh__bulk_job_cols(struct kh__stmt *st, struct kh_store_bulk_job *j);

/* Rows changed by the last INSERT/UPDATE/DELETE on s. */
int64_t kh__changes(struct kh_store *s);
/* Current time for created_at columns, Unix seconds. */
int64_t kh__now(void);

/* ---- shared by the typed operations (ops_util.c) ---- */

/* A name of 1 to KH_STORE_NAME_MAX bytes. */
int kh__name_ok(const char *name);
/* 0 to UINT32_MAX. */
int kh__u32_ok(int64_t v);
/* Run a prepared statement binding a (and b when nbind > 1): KH_OK when it gave a row,
 * KH_ERR_NOTFOUND when none. */
KH_WARN_UNUSED kh_err kh__exists_query(struct kh_store *s, const char *sql, int64_t a, int64_t b, int nbind);

#endif
