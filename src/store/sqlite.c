/*
 * The store's SQLite backend (docs/internals/store.md): opening a database file the way a file of
 * secrets must be opened (created 0600, refused when others can read it or its -wal or -shm, or
 * when it cannot be written), one file per process (only the first connection creates or
 * migrates it; later ones join that very file, and no write goes to a file deleted or replaced
 * meanwhile), durability settings (WAL, synchronous=FULL, so a commit that returned survives a
 * power cut), BEGIN IMMEDIATE transactions, and the statements of store_int.h over SQLite's. Every
 * SQLite return code is checked and mapped to a kh_err; the detail goes to kh_store_last_error
 * and the log, naming the file and the operation but never a bound value. What the backends
 * share (the statement cache, the retry, migrations) is store.c's.
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
#include <unistd.h>

#include "keyhole/log.h"
#include "store_int.h"

#define DEFAULT_BUSY_MS 5000
#define TX_ATTEMPTS 5

struct sq_stmt {
	struct kh__stmt h;
	sqlite3_stmt *st;
};

struct open_db;

/* A connection: h.name is the file's path. */
struct sq {
	struct kh_store h;
	sqlite3 *db;
	const char *path;    /* h.name */
	struct open_db *reg; /* this process's record of the file (see "the files in use") */
	dev_t dev;           /* the file this connection opened */
	ino_t ino;
	int gone_logged; /* the file's disappearance was logged once by this connection */
	int busy_ms;     /* the busy timeout configured (the probe waits less, then restores it) */
};

static struct sq *sq_of(struct kh_store *s)
{
	return (struct sq *)s;
}

static sqlite3_stmt *st_of(struct kh__stmt *st)
{
	return ((struct sq_stmt *)st)->st;
}

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
static kh_err fail(struct sq *s, const char *op, int rc)
{
	char code[24];

	snprintf(code, sizeof code, "sqlite=%d", rc);
	return kh__fail(&s->h, map_rc(rc), op, s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc), code);
}

static kh_err fail_msg(struct sq *s, kh_err r, const char *what)
{
	return kh__fail_msg(&s->h, r, what);
}

/* Run literal SQL (pragmas, transaction control, migration scripts). Never with input. */
static kh_err exec_sql(struct sq *s, const char *op, const char *sql)
{
	int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
	return rc == SQLITE_OK ? KH_OK : fail(s, op, rc);
}

/* ---- prepared statements ---- */

static kh_err sq_prepare(struct kh_store *hs, const char *sql, struct kh__stmt **out)
{
	struct sq *s = sq_of(hs);
	struct sq_stmt *c = calloc(1, sizeof *c);
	int rc;

	if (c == NULL)
		return fail_msg(s, KH_ERR_NOMEM, "prepare: out of memory");
	rc = sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &c->st, NULL);
	if (rc != SQLITE_OK) {
		free(c);
		return fail(s, "prepare", rc);
	}
	*out = &c->h;
	return KH_OK;
}

static void sq_finalize(struct kh__stmt *st)
{
	sqlite3_finalize(st_of(st));
	free(st);
}

static void sq_reset(struct kh__stmt *st)
{
	/* reset returns the last step's error, already reported by the step */
	(void)sqlite3_reset(st_of(st));
	(void)sqlite3_clear_bindings(st_of(st));
}

static kh_err bound(struct kh__stmt *st, int rc)
{
	return rc == SQLITE_OK ? KH_OK : fail(sq_of(st->s), "bind", rc);
}

static kh_err sq_bind_i64(struct kh__stmt *st, int idx, int64_t v)
{
	return bound(st, sqlite3_bind_int64(st_of(st), idx, v));
}

static kh_err sq_bind_null(struct kh__stmt *st, int idx)
{
	return bound(st, sqlite3_bind_null(st_of(st), idx));
}

static kh_err sq_bind_text(struct kh__stmt *st, int idx, const char *v)
{
	return bound(st, sqlite3_bind_text(st_of(st), idx, v, -1, SQLITE_STATIC));
}

static kh_err sq_bind_blob(struct kh__stmt *st, int idx, const void *v, size_t n)
{
	/*
	 * SQLITE_STATIC: SQLite does not copy the value (it may be a key) into memory of its own;
	 * the caller's buffer outlives the step, and kh__stmt_done unbinds it. A NULL pointer
	 * would bind SQL NULL, hence zeroblob for the empty value.
	 */
	if (n > INT32_MAX)
		return fail_msg(sq_of(st->s), KH_ERR_TOO_LARGE, "bind: value too large");
	if (v == NULL || n == 0)
		return bound(st, sqlite3_bind_zeroblob(st_of(st), idx, 0));
	return bound(st, sqlite3_bind_blob(st_of(st), idx, v, (int)n, SQLITE_STATIC));
}

static kh_err sq_step(struct kh__stmt *st, int *row)
{
	int rc = sqlite3_step(st_of(st));

	if (rc == SQLITE_ROW) {
		*row = 1;
		return KH_OK;
	}
	if (rc == SQLITE_DONE) {
		*row = 0;
		return KH_OK;
	}
	return fail(sq_of(st->s), "step", rc);
}

static int sq_col_null(struct kh__stmt *st, int col)
{
	return sqlite3_column_type(st_of(st), col) == SQLITE_NULL;
}

static int64_t sq_col_i64(struct kh__stmt *st, int col)
{
	return sqlite3_column_int64(st_of(st), col);
}

static const uint8_t *sq_col_blob(struct kh__stmt *st, int col, size_t *n)
{
	static const uint8_t empty[1];
	const uint8_t *p = sqlite3_column_blob(st_of(st), col);
	int len = sqlite3_column_bytes(st_of(st), col);

	*n = p && len > 0 ? (size_t)len : 0;
	return p ? p : empty;
}

static int64_t sq_changes(struct kh_store *s)
{
	return (int64_t)sqlite3_changes64(sq_of(s)->db);
}

/* ---- transactions ---- */

static kh_err check_same_file(struct sq *s);

static kh_err sq_begin(struct kh_store *hs)
{
	struct sq *s = sq_of(hs);
	kh_err r;

	/* Every write starts here: none goes to a file that is no longer the database. */
	if ((r = check_same_file(s)) != KH_OK)
		return r;
	return kh__exec_cached(hs, "BEGIN IMMEDIATE");
}

static void sq_rollback(struct kh_store *hs)
{
	struct sq *s = sq_of(hs);

	/* SQLite rolls back by itself on some errors (full disk, I/O): nothing is open then. */
	if (s->db != NULL && !sqlite3_get_autocommit(s->db))
		(void)exec_sql(s, "rollback", "ROLLBACK");
}

static kh_err sq_commit(struct kh_store *hs)
{
	return kh__exec_cached(hs, "COMMIT");
}

/* ---- schema ---- */

/*
 * Refuse a database that is not ours (another application's, or ours from a newer release)
 * before writing anything to it.
 */
static kh_err check_identity(struct sq *s)
{
	int64_t app = 0, tables = 0;
	int v = 0;
	kh_err r;

	if ((r = kh__query_int(&s->h, "PRAGMA application_id", &app)) != KH_OK)
		return r;
	if (app != 0 && app != KH__STORE_APP_ID)
		return fail_msg(s, KH_ERR_DB_FOREIGN, "application_id is not Keyhole's");
	if (app == 0) {
		if ((r = kh__query_int(&s->h, "SELECT count(*) FROM sqlite_master", &tables)) != KH_OK)
			return r;
		if (tables != 0 && (r = kh__read_version(&s->h, &v)) == KH_OK && v == 0)
			return fail_msg(s, KH_ERR_DB_FOREIGN, "tables without a Keyhole schema");
		if (r != KH_OK)
			return r;
	}
	return kh__check_version(&s->h, &v);
}

/* The write lock (BEGIN IMMEDIATE) is what keeps two processes from migrating at once. */
static kh_err sq_migrate_begin(struct kh_store *hs)
{
	kh_err r;

	if ((r = sq_begin(hs)) != KH_OK)
		return r;
	if ((r = exec_sql(sq_of(hs), "migrate",
			  "CREATE TABLE IF NOT EXISTS schema_migrations (\n"
			  "  version INTEGER PRIMARY KEY,\n"
			  "  applied_at INTEGER NOT NULL\n"
			  ") STRICT")) != KH_OK)
		sq_rollback(hs);
	return r;
}

static kh_err sq_exec_script(struct kh_store *hs, const char *sql)
{
	return exec_sql(sq_of(hs), "migrate", sql);
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

static kh_err sq_check(const char *url, int *exists, char *why, size_t cap)
{
	const char *path;
	struct stat st;
	kh_err r;

	if ((path = url_path(url, &r)) == NULL)
		return refuse(why, cap, r, url ? url : "(null)", "not a database (PATH or sqlite:PATH)");
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

static kh_err sq_remove(const char *url)
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
static kh_err fail_why(struct sq *s, kh_err r, const char *why)
{
	if (snprintf(s->h.err, sizeof s->h.err, "store %s", why) >= (int)sizeof s->h.err)
		s->h.err[sizeof s->h.err - 1] = '\0'; /* a long path: cut here, whole in the log */
	kh_log_error("store.error", "db=%s err=%s what=\"%s\"", s->path, kh_err_name(r), why);
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
static kh_err first_file(struct sq *s, struct stat *st, int *created, unsigned flags, char *why, size_t cap)
{
	kh_err r;
	int fd;

	*created = 0;
	if (stat(s->path, st) != 0) {
		if (errno != ENOENT)
			return refuse_errno(why, cap, errno, s->path, "cannot check the database file", 0);
		if (flags & KH__OPEN_AS_IS)
			return refuse(why, cap, KH_ERR_NOTFOUND, s->path, "the database file does not exist");
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
static kh_err join_file(struct sq *s, const struct open_db *e, struct stat *st, char *why, size_t cap)
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
static kh_err check_same_file(struct sq *s)
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
	snprintf(s->h.err, sizeof s->h.err, "store %s: %s", s->path, what);
	return KH_ERR_DB_GONE;
}

static kh_err configure(struct sq *s, const struct kh_store_opts *o)
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
	if ((r = kh__query_int(&s->h, "PRAGMA synchronous", &v)) != KH_OK)
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
static kh_err open_file(struct sq *s, const struct open_db *e, const struct kh_store_opts *opts, unsigned flags,
			int *created)
{
	char why[PATH_MAX + 200];
	struct stat st, now;
	int rc, moved = 0, v = 0;
	kh_err r;

	*created = 0;
	r = e ? join_file(s, e, &st, why, sizeof why) : first_file(s, &st, created, flags, why, sizeof why);
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
		/* as it is: configure's identity check already refused a newer schema */
		if (!(flags & KH__OPEN_AS_IS) && (r = kh__migrate(&s->h)) != KH_OK)
			return r;
	} else {
		if ((r = kh__read_version(&s->h, &v)) != KH_OK)
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

/* Close s's connection (not the record of the file); its statements are finalised already. */
static void close_db(struct sq *s)
{
	if (s->db == NULL)
		return;
	if (sqlite3_close(s->db) != SQLITE_OK)
		kh_log_error("store.close", "db=%s err=%s", s->path, sqlite3_errmsg(s->db));
	s->db = NULL;
}

static void sq_close(struct kh_store *hs)
{
	struct sq *s = sq_of(hs);

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
	free(s->h.name);
	free(s);
}

static kh_err sq_open(const char *url, const struct kh_store_opts *opts, unsigned flags, struct kh_store **out)
{
	struct sq *s = NULL;
	struct open_db *e = NULL, *fresh = NULL;
	const char *path;
	char *key = NULL;
	int created = 0;
	kh_err r;

	if ((path = url_path(url, &r)) == NULL)
		return r;
	if ((s = calloc(1, sizeof *s)) == NULL)
		return KH_ERR_NOMEM;
	s->h.be = &kh__sqlite_backend;
	if ((s->h.name = strdup(path)) == NULL || (key = file_key(path)) == NULL) {
		free(s->h.name);
		free(s);
		return KH_ERR_NOMEM;
	}
	s->path = s->h.name;

	/* Under the lock from the look-up to the record: two first connections cannot race. */
	pthread_mutex_lock(&files_mu);
	if ((e = file_find(key)) == NULL && (fresh = calloc(1, sizeof *fresh + strlen(key) + 1)) == NULL) {
		r = KH_ERR_NOMEM;
		goto out;
	}
	if ((r = open_file(s, e, opts, flags, &created)) != KH_OK)
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
	*out = &s->h;
	s = NULL;
out:
	pthread_mutex_unlock(&files_mu);
	if (s != NULL) {
		kh_store_rollback(&s->h);
		kh__stmt_cache_clear(&s->h);
		close_db(s);
		/* A start that failed leaves no new file behind (nothing else has it open: we made it). */
		if (created) {
			struct stat st;
			if (stat(s->path, &st) == 0 && st.st_dev == s->dev && st.st_ino == s->ino)
				(void)unlink(s->path);
			remove_sidecars(s->path);
			(void)fsync_dir_of(s->path);
		}
		free(s->h.name);
		free(s);
	}
	free(fresh);
	free(key);
	return r;
}

/*
 * The readiness probe. The checks kh_store_check makes of a file to open for writing, made of the
 * file this connection has (so a file made read-only, or a directory, -wal or -shm gone wrong,
 * shows before a write fails on it), then a write: BEGIN IMMEDIATE takes the write lock within
 * wait_ms, an UPDATE of the one credit_policy row to itself dirties a page, and ROLLBACK leaves
 * everything as it was. The UPDATE goes to the page cache, not the disk: that the disk takes
 * writes is what the file checks above tell.
 */
static kh_err sq_probe(struct kh_store *hs, unsigned wait_ms)
{
	struct sq *s = sq_of(hs);
	char why[PATH_MAX + 200];
	struct stat st;
	int rc;
	kh_err r;

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
	r = kh__probe_write(hs, NULL, 0);
	if ((rc = sqlite3_busy_timeout(s->db, s->busy_ms)) != SQLITE_OK && r == KH_OK)
		r = fail(s, "busy_timeout", rc);
	return r;
}

/* ---- the store tools ---- */

static int sq_same_db(struct kh_store *a, struct kh_store *b)
{
	return sq_of(a)->dev == sq_of(b)->dev && sq_of(a)->ino == sq_of(b)->ino;
}

/* AUTOINCREMENT tables keep the highest id handed out in sqlite_sequence (so a deleted id is
 * never given again); a plain INTEGER PRIMARY KEY has no generator of its own (max + 1). */
static kh_err sq_seq_get(struct kh_store *s, const char *table, const char *col, int64_t *v)
{
	static const char sql[] = "SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = ?1";
	struct kh__stmt *st = NULL;
	int row = 0;
	kh_err r;

	(void)col;
	*v = 0;
	if ((r = kh__stmt(s, sql, &st)) == KH_OK && (r = kh__bind_text(st, 1, table)) == KH_OK &&
	    (r = kh__step(st, &row)) == KH_OK && row)
		*v = kh__col_i64(st, 0);
	kh__stmt_done(st);
	return r;
}

static kh_err sq_seq_set(struct kh_store *s, const char *table, const char *col, int autoinc, int64_t v)
{
	static const char upd[] = "UPDATE sqlite_sequence SET seq = max(seq, ?2) WHERE name = ?1";
	static const char ins[] = "INSERT INTO sqlite_sequence (name, seq) SELECT ?1, ?2\n"
				  "WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = ?1)";
	const char *const q[2] = {upd, ins};
	struct kh__stmt *st = NULL;
	kh_err r = KH_OK;

	(void)col;
	if (!autoinc) /* the next rowid is max + 1: nothing to move */
		return KH_OK;
	for (size_t i = 0; i < 2 && r == KH_OK; i++) {
		if ((r = kh__stmt(s, q[i], &st)) == KH_OK && (r = kh__bind_text(st, 1, table)) == KH_OK &&
		    (r = kh__bind_i64(st, 2, v)) == KH_OK)
			r = kh__exec(st);
		kh__stmt_done(st);
		st = NULL;
	}
	return r;
}

const struct kh__backend kh__sqlite_backend = {
	.name = "sqlite",
	.tx_attempts = TX_ATTEMPTS,
	.group_batch = 1,
	.q_has_migrations = "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'",
	.open = sq_open,
	.close = sq_close,
	.check = sq_check,
	.remove = sq_remove,
	.probe = sq_probe,
	.revive = NULL,
	.prepare = sq_prepare,
	.finalize = sq_finalize,
	.reset = sq_reset,
	.bind_i64 = sq_bind_i64,
	.bind_null = sq_bind_null,
	.bind_text = sq_bind_text,
	.bind_blob = sq_bind_blob,
	.step = sq_step,
	.col_null = sq_col_null,
	.col_i64 = sq_col_i64,
	.col_blob = sq_col_blob,
	.changes = sq_changes,
	.begin = sq_begin,
	.commit = sq_commit,
	.rollback = sq_rollback,
	.migrate_begin = sq_migrate_begin,
	.exec_script = sq_exec_script,
	.q_begin_read = "BEGIN DEFERRED",
	.same_db = sq_same_db,
	.seq_get = sq_seq_get,
	.seq_set = sq_seq_set,
};
