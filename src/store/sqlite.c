/*
 * The store's generic layer over SQLite (docs/internals/store.md): opening a database file the
 * way a file of secrets must be opened (created 0600, refused when others can read it or its
 * -wal or -shm, or when it cannot be written), one file per process (only the first connection
 * creates or migrates it; later ones join that very file, and no write goes to a file deleted or
 * replaced meanwhile),
 * durability settings (WAL, synchronous=FULL, so a commit that returned survives a power cut),
 * versioned migrations, transactions with retry of the soft error (busy), and the prepared
 * statement interface of store_int.h that the typed operations use. Every SQLite return code is
 * checked and mapped to a kh_err; the detail goes to kh_store_last_error and the log, naming the
 * file and the operation but never a bound value.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
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
 * (about 110 exist); a full cache is an internal error, not a silent slowdown. */
#define STMT_CACHE 192
#define DEFAULT_BUSY_MS 5000
#define TX_ATTEMPTS 5

struct kh__stmt {
	struct kh_store *s;
	const char *sql; /* the literal: the cache key */
	sqlite3_stmt *st;
	int in_use;
};

struct open_db;

struct kh_store {
	sqlite3 *db;
	char *path;
	struct open_db *reg; /* this process's record of the file (see "the files in use") */
	dev_t dev;           /* the file this connection opened */
	ino_t ino;
	int gone_logged; /* the file's disappearance was logged once by this connection */
	int busy_ms;     /* the busy timeout configured (kh_store_probe waits less, then restores it) */
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

void kh__col_text(struct kh__stmt *st, int col, char *out, size_t cap)
{
	size_t n;
	const uint8_t *p = kh__col_blob(st, col, &n);

	if (n >= cap)
		n = cap - 1;
	memcpy(out, p, n);
	out[n] = 0;
}

char *kh__col_str(struct kh__stmt *st, int col)
{
	size_t n;
	const uint8_t *p = kh__col_blob(st, col, &n);
	char *s = malloc(n + 1);

	if (s) {
		memcpy(s, p, n);
		s[n] = 0;
	}
	return s;
}

uint32_t kh__col_u32(struct kh__stmt *st, int col)
{
	int64_t v = kh__col_i64(st, col);
	return v < 0 ? 0 : v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
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

static kh_err check_same_file(struct kh_store *s);

kh_err kh_store_begin(struct kh_store *s)
{
	kh_err r;

	if (s == NULL)
		return KH_ERR_INVAL;
	if (s->in_tx)
		return fail_msg(s, KH_ERR_INVAL, "begin: a transaction is already open");
	/* Every write starts here: none goes to a file that is no longer the database. */
	if ((r = check_same_file(s)) != KH_OK)
		return r;
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
 * ---- the files in use ----
 *
 * A process opens one database through several connections (the center: one per HTTP thread,
 * and its group committer). Only the first of them creates the file or migrates it; every later
 * one joins it: it never creates a file and never migrates, and it must find at the path the
 * very file (device and inode) the first one opened. So a database deleted or replaced while
 * the process runs is never silently taken over by a new, empty one that a connection opened
 * later made at the same path. The record lives while a connection to the file is open here.
 */
struct open_db {
	struct open_db *next;
	dev_t dev;
	ino_t ino;
	struct stat side[2]; /* its -wal and -shm as SQLite opened them (st_nlink 0: none) */
	unsigned refs;
	char key[]; /* the path, its directory made absolute */
};

static pthread_mutex_t files_mu = PTHREAD_MUTEX_INITIALIZER;
static struct open_db *files; /* under files_mu */

/* The path with its directory resolved ("db" and "./db" are one file), else the path as given. */
static char *file_key(const char *path)
{
	char *d = strdup(path), *b = strdup(path), *real = NULL, *key = NULL;

	if (d != NULL && b != NULL) {
		if ((real = realpath(dirname(d), NULL)) != NULL) {
			if (asprintf(&key, "%s/%s", strcmp(real, "/") == 0 ? "" : real, basename(b)) < 0)
				key = NULL;
		} else {
			key = strdup(path);
		}
	}
	free(real);
	free(d);
	free(b);
	return key;
}

static struct open_db *file_find(const char *key)
{
	struct open_db *e = files;

	while (e != NULL && strcmp(e->key, key) != 0)
		e = e->next;
	return e;
}

/* ---- checking the files ---- */

/* Why a file is refused: "FILE: reason" into why (cap bytes); returns r. */
static kh_err refuse(char *why, size_t cap, kh_err r, const char *file, const char *reason)
{
	snprintf(why, cap, "%s: %s", file, reason);
	return r;
}

/* A file that could not be checked (writing 0) or not for writing (1), by errno. */
static kh_err refuse_errno(char *why, size_t cap, int err, const char *file, const char *doing, int writing)
{
	char reason[160];

	if (writing && (err == EACCES || err == EPERM || err == EROFS))
		return refuse(why, cap, KH_ERR_IO, file,
			      "database file is read-only (it needs write permission, on a writable file system)");
	snprintf(reason, sizeof reason, "%s: %s", doing, strerror(err));
	return refuse(why, cap, err == ENOENT || err == ENOTDIR ? KH_ERR_NOTFOUND : KH_ERR_IO, file, reason);
}

static const char *const sidecar_sfx[2] = {"-wal", "-shm"};

static const char db_not_private[] =
	"database file is not private (group or others can access it, or another user owns it: chmod 600)";

/* The database file is a regular file, private to its owner, who runs this process. */
static kh_err check_db_file(const char *path, const struct stat *st, char *why, size_t cap)
{
	if (!S_ISREG(st->st_mode))
		return refuse(why, cap, KH_ERR_IO, path, "database is not a regular file");
	if ((st->st_mode & 077) != 0 || st->st_uid != geteuid())
		return refuse(why, cap, KH_ERR_KEYFILE_PERM, path, db_not_private);
	return KH_OK;
}

/*
 * The directory of the database: SQLite creates and removes the -wal and -shm files there, so it
 * must be writable; without that every write would fail once the center runs.
 */
static kh_err check_dir(const char *path, char *why, size_t cap)
{
	char *copy = strdup(path), *dir;
	kh_err r = KH_OK;

	if (copy == NULL)
		return refuse(why, cap, KH_ERR_NOMEM, path, "out of memory");
	dir = dirname(copy);
	if (faccessat(AT_FDCWD, dir, W_OK | X_OK, AT_EACCESS) != 0) {
		if (errno == ENOENT || errno == ENOTDIR)
			r = refuse(why, cap, KH_ERR_NOTFOUND, path, "the database's directory does not exist");
		else if (errno == EACCES || errno == EPERM || errno == EROFS)
			r = refuse(why, cap, KH_ERR_IO, path,
				   "the database's directory is not writable (SQLite keeps the -wal and -shm files "
				   "beside the database)");
		else
			r = refuse_errno(why, cap, errno, dir, "cannot check the directory", 0);
	}
	free(copy);
	return r;
}

/*
 * SQLite's -wal and -shm beside the database hold what it holds (a service key added a moment
 * ago is in the WAL), so each must be as private as the database: SQLite creates them with the
 * database file's mode (0600), and one already there is checked. With alone set (the database
 * does not exist yet) any is refused: SQLite would take a WAL left by a deleted database for
 * the new database's own.
 */
static kh_err check_sidecars(const char *path, int alone, char *why, size_t cap)
{
	const char *const *sfx = sidecar_sfx;
	size_t n = strlen(path) + 5;
	char *name = malloc(n);
	struct stat st;
	kh_err r = KH_OK;

	if (name == NULL)
		return refuse(why, cap, KH_ERR_NOMEM, path, "out of memory");
	for (size_t i = 0; i < 2 && r == KH_OK; i++) {
		snprintf(name, n, "%s%s", path, sfx[i]);
		if (lstat(name, &st) != 0) {
			if (errno != ENOENT)
				r = refuse_errno(why, cap, errno, name, "cannot check the file", 0);
		} else if (alone) {
			r = refuse(why, cap, KH_ERR_EXISTS, name,
				   "left without its database (move it away, or restore the database beside it)");
		} else if (!S_ISREG(st.st_mode)) {
			r = refuse(why, cap, KH_ERR_IO, name, "not a regular file");
		} else if ((st.st_mode & 077) != 0 || st.st_uid != geteuid()) {
			r = refuse(why, cap, KH_ERR_KEYFILE_PERM, name, db_not_private);
		}
	}
	free(name);
	return r;
}

kh_err kh_store_check(const char *url, int *exists, char *why, size_t cap)
{
	const char *path;
	struct stat st;
	kh_err r;

	if (exists)
		*exists = 0;
	if (why == NULL || cap == 0)
		return KH_ERR_INVAL;
	if ((path = url_path(url, &r)) == NULL)
		return refuse(why, cap, r, url ? url : "(null)",
			      r == KH_ERR_NOT_BUILT ? "this database backend is not built into this program"
						    : "not a database (PATH or sqlite:PATH)");
	if (stat(path, &st) != 0) {
		if (errno != ENOENT)
			return refuse_errno(why, cap, errno, path, "cannot check the database file", 0);
		if ((r = check_dir(path, why, cap)) != KH_OK)
			return r;
		return check_sidecars(path, 1, why, cap);
	}
	if (exists)
		*exists = 1;
	if ((r = check_db_file(path, &st, why, cap)) != KH_OK)
		return r;
	if (faccessat(AT_FDCWD, path, R_OK | W_OK, AT_EACCESS) != 0)
		return refuse_errno(why, cap, errno, path, "cannot open the database file", 1);
	if ((r = check_dir(path, why, cap)) != KH_OK)
		return r;
	return check_sidecars(path, 0, why, cap);
}

/* Remove path's -wal, -shm and -journal (what SQLite may have made beside a new database). */
static void remove_sidecars(const char *path)
{
	static const char *const sfx[] = {"-wal", "-shm", "-journal"};
	size_t n = strlen(path) + 9;
	char *name = malloc(n);

	if (name == NULL)
		return;
	for (size_t i = 0; i < sizeof sfx / sizeof sfx[0]; i++) {
		snprintf(name, n, "%s%s", path, sfx[i]);
		(void)unlink(name);
	}
	free(name);
}

kh_err kh_store_remove(const char *url)
{
	const char *path;
	char *key;
	kh_err r;
	int busy;

	if ((path = url_path(url, &r)) == NULL)
		return r;
	if ((key = file_key(path)) == NULL)
		return KH_ERR_NOMEM;
	pthread_mutex_lock(&files_mu);
	busy = file_find(key) != NULL;
	pthread_mutex_unlock(&files_mu);
	free(key);
	if (busy)
		return KH_ERR_INVAL; /* a connection of this process still has it open */
	if (unlink(path) != 0 && errno != ENOENT)
		return KH_ERR_IO;
	remove_sidecars(path);
	(void)fsync_dir_of(path);
	return KH_OK;
}

/* ---- opening the file ---- */

/* A failure found by the checks above: recorded and logged as fail_msg does, naming the file. */
static kh_err fail_why(struct kh_store *s, kh_err r, const char *why)
{
	if (snprintf(s->err, sizeof s->err, "store %s", why) >= (int)sizeof s->err)
		s->err[sizeof s->err - 1] = '\0'; /* a long path: cut here, whole in the log */
	kh_log_error("store.error", "path=%s err=%s what=\"%s\"", s->path, kh_err_name(r), why);
	return r;
}

/*
 * Never open the database file ourselves once SQLite may have it open in this process: closing
 * any descriptor of a file drops every POSIX lock the process holds on it, SQLite's included.
 * So the checks below stat the path, and the identity of what SQLite opened is checked after
 * its open (open_file).
 */

/*
 * The first connection's file: created 0600 when absent (SQLite would create it 0644 less the
 * umask; it then makes its -wal and -shm with the mode of the database), else checked to be
 * private and writable. *st gets its status, *created whether this call made it.
 */
static kh_err first_file(struct kh_store *s, struct stat *st, int *created, char *why, size_t cap)
{
	kh_err r;
	int fd;

	*created = 0;
	if (stat(s->path, st) != 0) {
		if (errno != ENOENT)
			return refuse_errno(why, cap, errno, s->path, "cannot check the database file", 0);
		if ((r = check_dir(s->path, why, cap)) != KH_OK || (r = check_sidecars(s->path, 1, why, cap)) != KH_OK)
			return r;
		fd = open(s->path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd >= 0) {
			int ok = fchmod(fd, 0600) == 0 && fsync(fd) == 0 && fstat(fd, st) == 0;
			close(fd); /* made here, just now: SQLite has no lock on it to lose */
			if (!ok || fsync_dir_of(s->path) != KH_OK) {
				unlink(s->path);
				return refuse(why, cap, KH_ERR_IO, s->path, "cannot create the database file");
			}
			*created = 1;
			return KH_OK;
		}
		if (errno != EEXIST) /* EEXIST: made by another process meanwhile, checked below */
			return refuse_errno(why, cap, errno, s->path, "cannot create the database file", 0);
		if (stat(s->path, st) != 0)
			return refuse_errno(why, cap, errno, s->path, "cannot check the database file", 0);
	}
	/* Not private is said before read-only: it is the first thing to fix. */
	if ((r = check_db_file(s->path, st, why, cap)) != KH_OK)
		return r;
	if (faccessat(AT_FDCWD, s->path, R_OK | W_OK, AT_EACCESS) != 0)
		return refuse_errno(why, cap, errno, s->path, "cannot open the database file", 1);
	return KH_OK;
}

/* A later connection's file: the one the first opened, never a new one. */
static kh_err join_file(struct kh_store *s, const struct open_db *e, struct stat *st, char *why, size_t cap)
{
	if (stat(s->path, st) != 0) {
		if (errno == ENOENT || errno == ENOTDIR)
			return refuse(why, cap, KH_ERR_DB_GONE, s->path,
				      "the database file was deleted or moved while in use (no new one is made)");
		return refuse_errno(why, cap, errno, s->path, "cannot check the database file", 0);
	}
	if (st->st_dev != e->dev || st->st_ino != e->ino)
		return refuse(why, cap, KH_ERR_DB_GONE, s->path,
			      "the database file was replaced while in use (by another file at the same path)");
	if (faccessat(AT_FDCWD, s->path, R_OK | W_OK, AT_EACCESS) != 0)
		return refuse_errno(why, cap, errno, s->path, "cannot open the database file", 1);
	return KH_OK;
}

/*
 * The file at the path is still the one this connection opened. A database deleted, moved or
 * replaced while in use takes no more writes: they would go to a file nobody can open again.
 * Logged once per connection; the error says it every time.
 */
static kh_err check_same_file(struct kh_store *s)
{
	const char *what;
	struct stat st;

	if (stat(s->path, &st) == 0) {
		if (st.st_dev == s->dev && st.st_ino == s->ino)
			return KH_OK;
		what = "the database file was replaced while in use: writes are refused";
	} else if (errno == ENOENT || errno == ENOTDIR) {
		what = "the database file was deleted or moved while in use: writes are refused";
	} else {
		return fail_msg(s, KH_ERR_IO, "cannot check the database file");
	}
	if (!s->gone_logged) {
		s->gone_logged = 1;
		return fail_msg(s, KH_ERR_DB_GONE, what);
	}
	snprintf(s->err, sizeof s->err, "store %s: %s", s->path, what);
	return KH_ERR_DB_GONE;
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
	s->busy_ms = o && o->busy_timeout_ms ? (int)(o->busy_timeout_ms > 600000 ? 600000 : o->busy_timeout_ms)
					     : DEFAULT_BUSY_MS;
	rc = sqlite3_busy_timeout(s->db, s->busy_ms);
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

/*
 * Open s->path for s: the first connection of this process to the file (e NULL) creates or
 * checks it and migrates it; a later one joins the file e records. *created: this call made
 * the file.
 */
static kh_err open_file(struct kh_store *s, const struct open_db *e, const struct kh_store_opts *opts, int *created)
{
	char why[PATH_MAX + 200];
	struct stat st, now;
	int rc, moved = 0, v = 0;
	kh_err r;

	*created = 0;
	r = e ? join_file(s, e, &st, why, sizeof why) : first_file(s, &st, created, why, sizeof why);
	if (r == KH_OK) {
		s->dev = st.st_dev;
		s->ino = st.st_ino;
		if ((r = check_db_file(s->path, &st, why, sizeof why)) == KH_OK &&
		    (r = check_dir(s->path, why, sizeof why)) == KH_OK)
			r = check_sidecars(s->path, 0, why, sizeof why);
	}
	if (r != KH_OK)
		return fail_why(s, r, why);
	/*
	 * Without SQLITE_OPEN_CREATE: SQLite opens an existing file or fails. That it is the file
	 * checked above: SQLite's own look (the path still names the inode it opened) and ours (the
	 * path still names the inode checked).
	 */
	rc = sqlite3_open_v2(s->path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK)
		return fail(s, "open", rc);
	if (sqlite3_file_control(s->db, "main", SQLITE_FCNTL_HAS_MOVED, &moved) != SQLITE_OK)
		moved = 0;
	if (stat(s->path, &now) != 0 || now.st_dev != s->dev || now.st_ino != s->ino)
		moved = 1;
	if (moved)
		return fail_msg(s, KH_ERR_DB_GONE, "the database file was replaced while being opened");
	/* SQLite falls back to reading only when it cannot write: then every write would fail. */
	if (sqlite3_db_readonly(s->db, "main") != 0)
		return fail_msg(s, KH_ERR_IO, "database file is read-only");
	if ((r = configure(s, opts)) != KH_OK)
		return r;
	if (e == NULL) {
		if ((r = migrate(s)) != KH_OK)
			return r;
	} else {
		if ((r = read_version(s, &v)) != KH_OK)
			return r;
		if (v != kh_store_schema_latest())
			return fail_msg(s, KH_ERR_DB, "the database's schema changed while in use");
	}
	/* By now SQLite has made its -wal and -shm, with the database's mode: checked all the same. */
	if ((r = check_sidecars(s->path, 0, why, sizeof why)) != KH_OK)
		return fail_why(s, r, why);
	return KH_OK;
}

/* The -wal and -shm at e's path now, as SQLite opened them, into e (first open). */
static void note_sidecars(struct open_db *e, const char *path)
{
	size_t n = strlen(path) + 5;
	char *name = malloc(n);

	for (size_t i = 0; i < 2; i++) {
		memset(&e->side[i], 0, sizeof e->side[i]);
		if (name != NULL) {
			snprintf(name, n, "%s%s", path, sidecar_sfx[i]);
			if (lstat(name, &e->side[i]) != 0)
				memset(&e->side[i], 0, sizeof e->side[i]);
		}
	}
	free(name);
}

/*
 * The last connection of the process to a database that was replaced at its path is closed.
 * SQLite neither checkpoints nor removes the -wal and -shm of a file that moved; beside the
 * replacement they would be taken for its own at the next open (the old file's pages over the
 * new one's). Those still the very files SQLite had open are removed. A database deleted
 * leaves them: the next start then refuses them, rather than making a new database beside them.
 */
static void drop_old_sidecars(const struct open_db *e, const char *path)
{
	size_t n = strlen(path) + 5;
	char *name;
	struct stat st;

	if (stat(path, &st) != 0 || (st.st_dev == e->dev && st.st_ino == e->ino))
		return;
	if ((name = malloc(n)) == NULL)
		return;
	for (size_t i = 0; i < 2; i++) {
		snprintf(name, n, "%s%s", path, sidecar_sfx[i]);
		if (e->side[i].st_nlink != 0 && lstat(name, &st) == 0 && st.st_dev == e->side[i].st_dev &&
		    st.st_ino == e->side[i].st_ino) {
			(void)unlink(name);
			kh_log_warn("store.replaced", "path=%s removed=%s msg=\"the WAL of the file it replaced\"", path,
				    name);
		}
	}
	free(name);
}

/* Close s's connection (not the record of the file). */
static void close_db(struct kh_store *s)
{
	kh_store_rollback(s);
	for (size_t i = 0; i < s->ncache; i++)
		sqlite3_finalize(s->cache[i].st);
	s->ncache = 0;
	if (s->db == NULL)
		return;
	if (sqlite3_close(s->db) != SQLITE_OK)
		kh_log_error("store.close", "path=%s err=%s", s->path, sqlite3_errmsg(s->db));
	s->db = NULL;
}

kh_err kh_store_open_opts(const char *url, const struct kh_store_opts *opts, struct kh_store **out)
{
	struct kh_store *s = NULL;
	struct open_db *e = NULL, *fresh = NULL;
	const char *path;
	char *key = NULL;
	int created = 0;
	kh_err r;

	if (out == NULL)
		return KH_ERR_INVAL;
	if ((path = url_path(url, &r)) == NULL)
		return r;
	if ((s = calloc(1, sizeof *s)) == NULL)
		return KH_ERR_NOMEM;
	if ((s->path = strdup(path)) == NULL || (key = file_key(path)) == NULL) {
		free(s->path);
		free(s);
		return KH_ERR_NOMEM;
	}
	s->rng = (uint32_t)getpid() * 2654435761u ^ (uint32_t)time(NULL) ^ 1u;

	/* Under the lock from the look-up to the record: two first connections cannot race. */
	pthread_mutex_lock(&files_mu);
	if ((e = file_find(key)) == NULL && (fresh = calloc(1, sizeof *fresh + strlen(key) + 1)) == NULL) {
		r = KH_ERR_NOMEM;
		goto out;
	}
	if ((r = open_file(s, e, opts, &created)) != KH_OK)
		goto out;
	if (e == NULL) {
		e = fresh;
		fresh = NULL;
		strcpy(e->key, key);
		e->dev = s->dev;
		e->ino = s->ino;
		note_sidecars(e, s->path);
		e->next = files;
		files = e;
	}
	e->refs++;
	s->reg = e;
	*out = s;
	s = NULL;
out:
	pthread_mutex_unlock(&files_mu);
	if (s != NULL) {
		close_db(s);
		/* A start that failed leaves no new file behind (nothing else has it open: we made it). */
		if (created) {
			struct stat st;
			if (stat(s->path, &st) == 0 && st.st_dev == s->dev && st.st_ino == s->ino)
				(void)unlink(s->path);
			remove_sidecars(s->path);
			(void)fsync_dir_of(s->path);
		}
		free(s->path);
		free(s);
	}
	free(fresh);
	free(key);
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
	close_db(s);
	if (s->reg != NULL) {
		pthread_mutex_lock(&files_mu);
		if (--s->reg->refs == 0) {
			struct open_db **p = &files;
			drop_old_sidecars(s->reg, s->path);
			while (*p != s->reg)
				p = &(*p)->next;
			*p = s->reg->next;
			free(s->reg);
		}
		pthread_mutex_unlock(&files_mu);
	}
	free(s->path);
	free(s);
}

/*
 * The readiness probe. The checks kh_store_check makes of a file to open for writing, made of the
 * file this connection has (so a file made read-only, or a directory, -wal or -shm gone wrong,
 * shows before a write fails on it), then a write: BEGIN IMMEDIATE takes the write lock within
 * wait_ms, an UPDATE of the one credit_policy row to itself dirties a page, and ROLLBACK leaves
 * everything as it was. The UPDATE goes to the page cache, not the disk: that the disk takes
 * writes is what the file checks above tell.
 */
kh_err kh_store_probe(struct kh_store *s, unsigned wait_ms)
{
	static const char touch[] = "UPDATE credit_policy SET initial_credit = initial_credit WHERE id = 1";
	char why[PATH_MAX + 200];
	struct stat st;
	struct kh__stmt *q = NULL;
	int rc;
	kh_err r;

	if (s == NULL || s->in_tx)
		return KH_ERR_INVAL;
	if ((r = check_same_file(s)) != KH_OK)
		return r;
	if (stat(s->path, &st) != 0)
		r = refuse_errno(why, sizeof why, errno, s->path, "cannot check the database file", 0);
	else if ((r = check_db_file(s->path, &st, why, sizeof why)) == KH_OK &&
		 faccessat(AT_FDCWD, s->path, R_OK | W_OK, AT_EACCESS) != 0)
		r = refuse_errno(why, sizeof why, errno, s->path, "cannot open the database file", 1);
	if (r == KH_OK && (r = check_dir(s->path, why, sizeof why)) == KH_OK)
		r = check_sidecars(s->path, 0, why, sizeof why);
	if (r != KH_OK)
		return fail_why(s, r, why);
	if ((rc = sqlite3_busy_timeout(s->db, wait_ms > 600000 ? 600000 : (int)wait_ms)) != SQLITE_OK)
		return fail(s, "busy_timeout", rc);
	r = exec_cached(s, "BEGIN IMMEDIATE");
	if (r == KH_OK) {
		s->in_tx = 1;
		if ((r = kh__stmt(s, touch, &q)) == KH_OK)
			r = kh__exec(q);
		kh__stmt_done(q);
		kh_store_rollback(s);
	}
	if ((rc = sqlite3_busy_timeout(s->db, s->busy_ms)) != SQLITE_OK && r == KH_OK)
		r = fail(s, "busy_timeout", rc);
	return r;
}
