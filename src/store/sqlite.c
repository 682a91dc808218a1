/*
 * The store's generic layer over SQLite (docs/internals/store.md): opening a database file the
 * way a file of secrets must be opened (created 0600, refused when others can read it),
 * durability settings (WAL, synchronous=FULL, so a commit that returned survives a power cut),
 * versioned migrations, transactions with retry of the soft error (busy), and the prepared
 * statement interface of store_int.h that the typed operations use. Every SQLite return code is
 * checked and mapped to a kh_err; the detail goes to kh_store_last_error and the log, naming the
 * file and the operation but never a bound value.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "keyhole/log.h"
#include "store_int.h"

/* Distinct SQL literals one connection may prepare: every typed operation's, with room to spare
 * (about 60 exist); a full cache is an internal error, not a silent slowdown. */
#define STMT_CACHE 128
#define DEFAULT_BUSY_MS 5000
#define TX_ATTEMPTS 5

struct kh__stmt {
	struct kh_store *s;
	const char *sql; /* the literal: the cache key */
	sqlite3_stmt *st;
	int in_use;
};

struct kh_store {
	sqlite3 *db;
	char *path;
	int in_tx;
	uint32_t rng; /* jitter for retry pauses: not security relevant */
	size_t ncache;
	struct kh__stmt cache[STMT_CACHE];
	char err[320];
};

/* ---- errors ---- */

static kh_err map_rc(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_OK:
	case SQLITE_ROW:
	case SQLITE_DONE:
		return KH_OK;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return KH_ERR_DB_BUSY;
	case SQLITE_CONSTRAINT:
		if (rc == SQLITE_CONSTRAINT_PRIMARYKEY || rc == SQLITE_CONSTRAINT_UNIQUE)
			return KH_ERR_EXISTS;
		return KH_ERR_DB_CONSTRAINT;
	case SQLITE_NOMEM:
		return KH_ERR_NOMEM;
	case SQLITE_TOOBIG:
		return KH_ERR_TOO_LARGE;
	case SQLITE_NOTADB:
		return KH_ERR_DB_FOREIGN;
	case SQLITE_IOERR:
	case SQLITE_FULL:
	case SQLITE_CANTOPEN:
	case SQLITE_READONLY:
	case SQLITE_PERM:
		return KH_ERR_IO;
	default:
		return KH_ERR_DB;
	}
}

/* Record (and log, for hard errors) the failure of op with SQLite code rc; returns the kh_err. */
static kh_err fail(struct kh_store *s, const char *op, int rc)
{
	kh_err r = map_rc(rc);
	const char *msg = s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc);

	if (r == KH_OK)
		r = KH_ERR_DB;
	snprintf(s->err, sizeof s->err, "store %s: %s: %s", s->path, op, msg);
	if (r == KH_ERR_EXISTS || r == KH_ERR_DB_BUSY)
		kh_log_debug("store.error", "op=%s err=%s sqlite=%d", op, kh_err_name(r), rc);
	else
		kh_log_error("store.error", "path=%s op=%s err=%s sqlite=%d", s->path, op, kh_err_name(r),
			     rc);
	return r;
}

/* A failure that is ours, not SQLite's. */
static kh_err fail_msg(struct kh_store *s, kh_err r, const char *what)
{
	snprintf(s->err, sizeof s->err, "store %s: %s", s->path, what);
	kh_log_error("store.error", "path=%s err=%s what=\"%s\"", s->path, kh_err_name(r), what);
	return r;
}

const char *kh_store_last_error(const struct kh_store *s)
{
	return s ? s->err : "";
}

/* Run literal SQL (pragmas, transaction control, migration scripts). Never with input. */
static kh_err exec_sql(struct kh_store *s, const char *op, const char *sql)
{
	int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
	return rc == SQLITE_OK ? KH_OK : fail(s, op, rc);
}

/* ---- prepared statements (store_int.h) ---- */

static kh_err exec_cached(struct kh_store *s, const char *sql);

kh_err kh__stmt(struct kh_store *s, const char *sql, struct kh__stmt **out)
{
	struct kh__stmt *c = NULL;
	int rc;

	for (size_t i = 0; i < s->ncache; i++) {
		if (s->cache[i].sql == sql) {
			c = &s->cache[i];
			break;
		}
	}
	if (c == NULL) {
		if (s->ncache == STMT_CACHE)
			return fail_msg(s, KH_ERR_INTERNAL, "statement cache full");
		c = &s->cache[s->ncache];
		rc = sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &c->st, NULL);
		if (rc != SQLITE_OK) {
			c->st = NULL;
			return fail(s, "prepare", rc);
		}
		c->s = s;
		c->sql = sql;
		s->ncache++;
	}
	if (c->in_use) /* a contract breach: one statement used twice at once */
		return fail_msg(s, KH_ERR_INTERNAL, "statement already in use");
	c->in_use = 1;
	*out = c;
	return KH_OK;
}

/* Transaction control run often (begin, commit, savepoints): prepared once per connection, not
 * parsed again by sqlite3_exec on every call. */
static kh_err exec_cached(struct kh_store *s, const char *sql)
{
	struct kh__stmt *st;
	kh_err r;

	if ((r = kh__stmt(s, sql, &st)) != KH_OK)
		return r;
	r = kh__exec(st);
	kh__stmt_done(st);
	return r;
}

void kh__stmt_done(struct kh__stmt *st)
{
	if (st == NULL)
		return;
	/* reset returns the last step's error, already reported by kh__step */
	(void)sqlite3_reset(st->st);
	(void)sqlite3_clear_bindings(st->st);
	st->in_use = 0;
}

static kh_err bound(struct kh__stmt *st, int rc)
{
	return rc == SQLITE_OK ? KH_OK : fail(st->s, "bind", rc);
}

kh_err kh__bind_i64(struct kh__stmt *st, int idx, int64_t v)
{
	return bound(st, sqlite3_bind_int64(st->st, idx, v));
}

kh_err kh__bind_null(struct kh__stmt *st, int idx)
{
	return bound(st, sqlite3_bind_null(st->st, idx));
}

kh_err kh__bind_text(struct kh__stmt *st, int idx, const char *v)
{
	return bound(st, sqlite3_bind_text(st->st, idx, v, -1, SQLITE_STATIC));
}

kh_err kh__bind_blob(struct kh__stmt *st, int idx, const void *v, size_t n)
{
	/*
	 * SQLITE_STATIC: SQLite does not copy the value (it may be a key) into memory of its own;
	 * the caller's buffer outlives the step, and kh__stmt_done unbinds it. A NULL pointer
	 * would bind SQL NULL, hence zeroblob for the empty value.
	 */
	if (n > INT32_MAX)
		return fail_msg(st->s, KH_ERR_TOO_LARGE, "bind: value too large");
	if (v == NULL || n == 0)
		return bound(st, sqlite3_bind_zeroblob(st->st, idx, 0));
	return bound(st, sqlite3_bind_blob(st->st, idx, v, (int)n, SQLITE_STATIC));
}

kh_err kh__step(struct kh__stmt *st, int *row)
{
	int rc = sqlite3_step(st->st);

	if (rc == SQLITE_ROW) {
		*row = 1;
		return KH_OK;
	}
	if (rc == SQLITE_DONE) {
		*row = 0;
		return KH_OK;
	}
	return fail(st->s, "step", rc);
}

kh_err kh__exec(struct kh__stmt *st)
{
	int row;
	kh_err r;

	while ((r = kh__step(st, &row)) == KH_OK && row)
		;
	return r;
}

int kh__col_null(struct kh__stmt *st, int col)
{
	return sqlite3_column_type(st->st, col) == SQLITE_NULL;
}

int64_t kh__col_i64(struct kh__stmt *st, int col)
{
	return sqlite3_column_int64(st->st, col);
}

const uint8_t *kh__col_blob(struct kh__stmt *st, int col, size_t *n)
{
	static const uint8_t empty[1];
	const uint8_t *p = sqlite3_column_blob(st->st, col);
	int len = sqlite3_column_bytes(st->st, col);

	*n = p && len > 0 ? (size_t)len : 0;
	return p ? p : empty;
}

int64_t kh__now(void)
{
	return (int64_t)time(NULL);
}

int64_t kh__changes(struct kh_store *s)
{
	return (int64_t)sqlite3_changes64(s->db);
}

/* ---- transactions ---- */

int kh_store_in_tx(const struct kh_store *s)
{
	return s != NULL && s->in_tx;
}

kh_err kh_store_begin(struct kh_store *s)
{
	kh_err r;

	if (s == NULL)
		return KH_ERR_INVAL;
	if (s->in_tx)
		return fail_msg(s, KH_ERR_INVAL, "begin: a transaction is already open");
	if ((r = exec_cached(s, "BEGIN IMMEDIATE")) != KH_OK)
		return r;
	s->in_tx = 1;
	return KH_OK;
}

void kh_store_rollback(struct kh_store *s)
{
	if (s == NULL || !s->in_tx)
		return;
	s->in_tx = 0;
	/* SQLite rolls back by itself on some errors (full disk, I/O): nothing is open then. */
	if (!sqlite3_get_autocommit(s->db))
		(void)exec_sql(s, "rollback", "ROLLBACK");
}

kh_err kh_store_commit(struct kh_store *s)
{
	kh_err r;

	if (s == NULL)
		return KH_ERR_INVAL;
	if (!s->in_tx)
		return fail_msg(s, KH_ERR_INVAL, "commit: no transaction is open");
	if ((r = exec_cached(s, "COMMIT")) != KH_OK) {
		kh_store_rollback(s);
		return r;
	}
	s->in_tx = 0;
	return KH_OK;
}

kh_err kh__savepoint(struct kh_store *s)
{
	if (!s->in_tx)
		return fail_msg(s, KH_ERR_INVAL, "savepoint: no transaction is open");
	return exec_cached(s, "SAVEPOINT kh_job");
}

kh_err kh__savepoint_release(struct kh_store *s)
{
	return exec_cached(s, "RELEASE kh_job");
}

kh_err kh__savepoint_undo(struct kh_store *s)
{
	kh_err r;
	if ((r = exec_cached(s, "ROLLBACK TO kh_job")) != KH_OK)
		return r;
	return exec_cached(s, "RELEASE kh_job");
}

/* Pause before retry n (0-based): about 2^n ms, with jitter so that racing writers part. */
static void backoff(struct kh_store *s, int n)
{
	struct timespec ts;
	long ms;

	s->rng ^= s->rng << 13;
	s->rng ^= s->rng >> 17;
	s->rng ^= s->rng << 5;
	ms = (1L << n) + (long)(s->rng % (1u << n));
	ts.tv_sec = ms / 1000;
	ts.tv_nsec = (ms % 1000) * 1000000L;
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

kh_err kh_store_run_tx(struct kh_store *s, kh_store_tx_fn fn, void *arg)
{
	kh_err r = KH_ERR_DB_BUSY;

	if (s == NULL || fn == NULL)
		return KH_ERR_INVAL;
	if (s->in_tx)
		return fn(s, arg);
	for (int attempt = 0; attempt < TX_ATTEMPTS; attempt++) {
		if (attempt > 0)
			backoff(s, attempt);
		if ((r = kh_store_begin(s)) != KH_OK) {
			if (r == KH_ERR_DB_BUSY)
				continue;
			return r;
		}
		r = fn(s, arg);
		if (r == KH_OK)
			r = kh_store_commit(s);
		else
			kh_store_rollback(s);
		if (r != KH_ERR_DB_BUSY)
			return r;
		kh_log_debug("store.retry", "attempt=%d", attempt + 1);
	}
	return r;
}

/* ---- schema ---- */

int kh_store_schema_latest(void)
{
	return kh__migrations[kh__migrations_count - 1].version;
}

/* Version recorded in schema_migrations, 0 when the table does not exist yet. */
static kh_err read_version(struct kh_store *s, int *version)
{
	static const char q_table[] =
		"SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'";
	static const char q_max[] = "SELECT COALESCE(MAX(version), 0) FROM schema_migrations";
	struct kh__stmt *st = NULL;
	int row = 0;
	int64_t n;
	kh_err r;

	if ((r = kh__stmt(s, q_table, &st)) != KH_OK)
		goto out;
	if ((r = kh__step(st, &row)) != KH_OK)
		goto out;
	n = row ? kh__col_i64(st, 0) : 0;
	kh__stmt_done(st);
	st = NULL;
	if (n == 0) {
		*version = 0;
		goto out;
	}
	if ((r = kh__stmt(s, q_max, &st)) != KH_OK)
		goto out;
	if ((r = kh__step(st, &row)) != KH_OK)
		goto out;
	n = row ? kh__col_i64(st, 0) : 0;
	if (n < 0 || n > INT32_MAX) {
		r = fail_msg(s, KH_ERR_DB, "schema_migrations holds an impossible version");
		goto out;
	}
	*version = (int)n;
out:
	kh__stmt_done(st);
	return r;
}

kh_err kh_store_schema_version(struct kh_store *s, int *version)
{
	int v = 0;
	kh_err r;

	if (s == NULL || version == NULL)
		return KH_ERR_INVAL;
	if ((r = read_version(s, &v)) != KH_OK)
		return r;
	*version = v;
	return KH_OK;
}

static kh_err pragma_int(struct kh_store *s, const char *sql, int64_t *v)
{
	struct kh__stmt *st = NULL;
	int row = 0;
	kh_err r;

	if ((r = kh__stmt(s, sql, &st)) != KH_OK)
		goto out;
	if ((r = kh__step(st, &row)) != KH_OK)
		goto out;
	*v = row ? kh__col_i64(st, 0) : 0;
out:
	kh__stmt_done(st);
	return r;
}

/*
 * Refuse a database that is not ours (another application's, or ours from a newer release)
 * before writing anything to it.
 */
static kh_err check_identity(struct kh_store *s)
{
	int64_t app = 0, tables = 0;
	int v = 0;
	kh_err r;

	if ((r = pragma_int(s, "PRAGMA application_id", &app)) != KH_OK)
		return r;
	if (app != 0 && app != KH__STORE_APP_ID)
		return fail_msg(s, KH_ERR_DB_FOREIGN, "application_id is not Keyhole's");
	if (app == 0) {
		if ((r = pragma_int(s, "SELECT count(*) FROM sqlite_master", &tables)) != KH_OK)
			return r;
		if (tables != 0 && (r = read_version(s, &v)) == KH_OK && v == 0)
			return fail_msg(s, KH_ERR_DB_FOREIGN, "tables without a Keyhole schema");
		if (r != KH_OK)
			return r;
	}
	if ((r = read_version(s, &v)) != KH_OK)
		return r;
	if (v > kh_store_schema_latest())
		return fail_msg(s, KH_ERR_VERSION, "database schema is newer than this program");
	return KH_OK;
}

static kh_err apply(struct kh_store *s, const struct kh__migration *m)
{
	static const char ins[] = "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)";
	struct kh__stmt *st = NULL;
	int v = 0;
	kh_err r;

	if ((r = kh_store_begin(s)) != KH_OK)
		return r;
	if ((r = exec_sql(s, "migrate",
			  "CREATE TABLE IF NOT EXISTS schema_migrations (\n"
			  "  version INTEGER PRIMARY KEY,\n"
			  "  applied_at INTEGER NOT NULL\n"
			  ") STRICT")) != KH_OK)
		goto out;
	/* Under the write lock: another process may have migrated since we looked. */
	if ((r = read_version(s, &v)) != KH_OK)
		goto out;
	if (v > kh_store_schema_latest()) {
		r = fail_msg(s, KH_ERR_VERSION, "database schema is newer than this program");
		goto out;
	}
	if (v >= m->version)
		goto out;
	if (v != m->version - 1) {
		r = fail_msg(s, KH_ERR_DB, "schema_migrations skips a version");
		goto out;
	}
	if ((r = exec_sql(s, "migrate", m->sql)) != KH_OK)
		goto out;
	if ((r = kh__stmt(s, ins, &st)) != KH_OK || (r = kh__bind_i64(st, 1, m->version)) != KH_OK ||
	    (r = kh__bind_i64(st, 2, kh__now())) != KH_OK || (r = kh__exec(st)) != KH_OK)
		goto out;
	kh_log_info("store.migrate", "version=%d", m->version);
out:
	kh__stmt_done(st);
	if (r == KH_OK)
		return kh_store_commit(s);
	kh_store_rollback(s);
	return r;
}

static kh_err migrate(struct kh_store *s)
{
	int v = 0;
	kh_err r;

	if ((r = read_version(s, &v)) != KH_OK)
		return r;
	for (size_t i = 0; i < kh__migrations_count; i++) {
		if (kh__migrations[i].version <= v)
			continue;
		if ((r = apply(s, &kh__migrations[i])) != KH_OK)
			return r;
	}
	return KH_OK;
}

/* ---- open and close ---- */

/*
 * The file path in url, or NULL with *r set. A leading "scheme:" other than sqlite is refused
 * rather than taken for a file name (name such a file ./a:b).
 */
static const char *url_path(const char *url, kh_err *r)
{
	size_t n;

	*r = KH_ERR_INVAL;
	if (url == NULL || *url == '\0')
		return NULL;
	n = strspn(url, "abcdefghijklmnopqrstuvwxyz0123456789+.-");
	if (n > 0 && url[n] == ':') {
		if ((n == 8 && strncmp(url, "postgres", 8) == 0) ||
		    (n == 10 && strncmp(url, "postgresql", 10) == 0)) {
			*r = KH_ERR_NOT_BUILT;
			return NULL;
		}
		if (n != 6 || strncmp(url, "sqlite", 6) != 0)
			return NULL;
		url += strncmp(url, "sqlite://", 9) == 0 ? 9 : 7;
	}
	if (*url == '\0')
		return NULL;
	*r = KH_OK;
	return url;
}

static kh_err fsync_dir_of(const char *path)
{
	char *copy = strdup(path);
	kh_err r = KH_ERR_IO;
	int fd;

	if (copy == NULL)
		return KH_ERR_NOMEM;
	fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		if (fsync(fd) == 0)
			r = KH_OK;
		close(fd);
	}
	free(copy);
	return r;
}

/*
 * Create the database file 0600 if it is absent (SQLite would create it 0644 less the umask,
 * and makes its -wal and -shm files with the mode of the database), else check that it is as
 * private as a key file.
 */
static kh_err prepare_file(struct kh_store *s)
{
	struct stat st;
	int fd;

	fd = open(s->path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd >= 0) {
		int ok = fchmod(fd, 0600) == 0 && fsync(fd) == 0;
		close(fd);
		if (!ok || fsync_dir_of(s->path) != KH_OK) {
			unlink(s->path);
			return fail_msg(s, KH_ERR_IO, "cannot create the database file");
		}
		return KH_OK;
	}
	if (errno != EEXIST)
		return fail_msg(s, errno == ENOENT || errno == ENOTDIR ? KH_ERR_NOTFOUND : KH_ERR_IO,
				"cannot create the database file");
	if (stat(s->path, &st) != 0)
		return fail_msg(s, KH_ERR_IO, "cannot stat the database file");
	if (!S_ISREG(st.st_mode))
		return fail_msg(s, KH_ERR_IO, "not a regular file");
	if ((st.st_mode & 077) != 0 || st.st_uid != geteuid())
		return fail_msg(s, KH_ERR_KEYFILE_PERM, "database file is readable by others (chmod 600)");
	return KH_OK;
}

static kh_err configure(struct kh_store *s, const struct kh_store_opts *o)
{
	int rc, fk = 0;
	int64_t v = 0;
	kh_err r;
	char mode[16] = "";
	sqlite3_stmt *st = NULL;

	if ((rc = sqlite3_extended_result_codes(s->db, 1)) != SQLITE_OK)
		return fail(s, "open", rc);
	rc = sqlite3_busy_timeout(s->db, o && o->busy_timeout_ms ? (int)(o->busy_timeout_ms > 600000 ? 600000 : o->busy_timeout_ms)
							 : DEFAULT_BUSY_MS);
	if (rc != SQLITE_OK)
		return fail(s, "busy_timeout", rc);
	if ((rc = sqlite3_db_config(s->db, SQLITE_DBCONFIG_ENABLE_FKEY, 1, &fk)) != SQLITE_OK)
		return fail(s, "foreign_keys", rc);
	if (!fk)
		return fail_msg(s, KH_ERR_DB, "foreign keys cannot be enabled");
	/* Deleted rows (old service keys) are overwritten, not left in free pages. */
	if ((r = exec_sql(s, "secure_delete", "PRAGMA secure_delete = ON")) != KH_OK)
		return r;
	if ((r = check_identity(s)) != KH_OK)
		return r;

	/* journal_mode answers with the mode in force: a file system without shared memory may
	 * refuse WAL, and we would rather say so than run in another mode. */
	rc = sqlite3_prepare_v2(s->db, "PRAGMA journal_mode = WAL", -1, &st, NULL);
	if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		const unsigned char *m = sqlite3_column_text(st, 0);
		snprintf(mode, sizeof mode, "%s", m ? (const char *)m : "");
		rc = SQLITE_OK;
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_OK)
		return fail(s, "journal_mode", rc);
	if (strcmp(mode, "wal") != 0)
		return fail_msg(s, KH_ERR_DB, "the database cannot use WAL mode");

	if (o && o->sync_normal) {
		kh_log_warn("store.sync", "path=%s synchronous=NORMAL commits are not durable", s->path);
		r = exec_sql(s, "synchronous", "PRAGMA synchronous = NORMAL");
	} else {
		r = exec_sql(s, "synchronous", "PRAGMA synchronous = FULL");
	}
	if (r != KH_OK)
		return r;
	if ((r = pragma_int(s, "PRAGMA synchronous", &v)) != KH_OK)
		return r;
	if (v != (o && o->sync_normal ? 1 : 2))
		return fail_msg(s, KH_ERR_DB, "synchronous setting did not hold");
	return KH_OK;
}

kh_err kh_store_open_opts(const char *url, const struct kh_store_opts *opts, struct kh_store **out)
{
	struct kh_store *s = NULL;
	const char *path;
	kh_err r;
	int rc;

	if (out == NULL)
		return KH_ERR_INVAL;
	if ((path = url_path(url, &r)) == NULL)
		return r;
	if ((s = calloc(1, sizeof *s)) == NULL)
		return KH_ERR_NOMEM;
	if ((s->path = strdup(path)) == NULL) {
		r = KH_ERR_NOMEM;
		goto out;
	}
	s->rng = (uint32_t)getpid() * 2654435761u ^ (uint32_t)time(NULL) ^ 1u;
	if ((r = prepare_file(s)) != KH_OK)
		goto out;
	rc = sqlite3_open_v2(s->path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		r = fail(s, "open", rc);
		goto out;
	}
	if ((r = configure(s, opts)) != KH_OK)
		goto out;
	if ((r = migrate(s)) != KH_OK)
		goto out;
	*out = s;
	s = NULL;
out:
	kh_store_close(s);
	return r;
}

kh_err kh_store_open(const char *url, struct kh_store **out)
{
	return kh_store_open_opts(url, NULL, out);
}

void kh_store_close(struct kh_store *s)
{
	if (s == NULL)
		return;
	kh_store_rollback(s);
	for (size_t i = 0; i < s->ncache; i++)
		sqlite3_finalize(s->cache[i].st);
	if (s->db != NULL && sqlite3_close(s->db) != SQLITE_OK)
		kh_log_error("store.close", "path=%s err=%s", s->path, sqlite3_errmsg(s->db));
	free(s->path);
	free(s);
}
