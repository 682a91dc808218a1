/*
 * The store's generic layer (docs/internals/store.md): what SQLite (sqlite.c) and PostgreSQL
 * (pg.c) share behind include/keyhole/store.h and the statement interface of store_int.h. The URL
 * chooses the backend; the statement cache (one prepared statement per SQL literal and
 * connection), transactions and the retry of the soft error (SQLite busy, PostgreSQL
 * serialization failure or deadlock) with random pauses, the versioned migrations and the one
 * line of error are here, written once; each backend only speaks to its database.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keyhole/crypto.h"
#include "keyhole/log.h"
#include "store_int.h"

/* ---- choosing the backend ---- */

/*
 * The backend a URL names: postgres:// and postgresql:// PostgreSQL (KH_ERR_NOT_BUILT without
 * libpq), anything else SQLite, which refuses schemes other than its own.
 */
static const struct kh__backend *backend_of(const char *url, kh_err *r)
{
	size_t n;

	*r = KH_ERR_INVAL;
	if (url == NULL || *url == '\0')
		return NULL;
	n = strspn(url, "abcdefghijklmnopqrstuvwxyz0123456789+.-");
	if (url[n] == ':' && ((n == 8 && strncmp(url, "postgres", 8) == 0) ||
			      (n == 10 && strncmp(url, "postgresql", 10) == 0))) {
#ifdef KH_HAVE_PG
		*r = KH_OK;
		return &kh__pg_backend;
#else
		*r = KH_ERR_NOT_BUILT;
		return NULL;
#endif
	}
	*r = KH_OK;
	return &kh__sqlite_backend;
}

static kh_err open_flags(const char *url, const struct kh_store_opts *opts, unsigned flags, struct kh_store **out)
{
	const struct kh__backend *be;
	kh_err r;

	if (out == NULL)
		return KH_ERR_INVAL;
	if ((be = backend_of(url, &r)) == NULL)
		return r;
	return be->open(url, opts, flags, out);
}

kh_err kh_store_open_opts(const char *url, const struct kh_store_opts *opts, struct kh_store **out)
{
	return open_flags(url, opts, 0, out);
}

kh_err kh_store_open_as_is(const char *url, struct kh_store **out)
{
	return open_flags(url, NULL, KH__OPEN_AS_IS, out);
}

/* Append len bytes of src to out (cap bytes, *n used), cut to fit; out stays terminated. */
static void put(char *out, size_t cap, size_t *n, const char *src, size_t len)
{
	if (len > cap - 1 - *n)
		len = cap - 1 - *n;
	memcpy(out + *n, src, len);
	*n += len;
	out[*n] = '\0';
}

void kh_store_url_safe(const char *url, char *out, size_t cap)
{
	const char *rest, *auth_end, *at, *colon, *p, *k;
	size_t n = 0;

	if (cap == 0)
		return;
	out[0] = '\0';
	if (url == NULL)
		return;
	if (strncmp(url, "postgres://", 11) != 0 && strncmp(url, "postgresql://", 13) != 0) {
		put(out, cap, &n, url, strlen(url));
		return;
	}
	rest = strstr(url, "://") + 3;
	auth_end = rest + strcspn(rest, "/?");
	at = memrchr(rest, '@', (size_t)(auth_end - rest)); /* the last: a password may hold one */
	colon = at ? memchr(rest, ':', (size_t)(at - rest)) : NULL;
	p = url;
	if (colon) { /* user:PASSWORD@ */
		put(out, cap, &n, p, (size_t)(colon + 1 - p));
		put(out, cap, &n, "***", 3);
		p = at;
	}
	/* each password= parameter of the query (k: at the '?' or '&' before a parameter) */
	for (k = strchr(p, '?'); k != NULL; k = strchr(k + 1, '&')) {
		if (strncmp(k + 1, "password=", 9) != 0)
			continue;
		put(out, cap, &n, p, (size_t)(k + 10 - p));
		put(out, cap, &n, "***", 3);
		p = k + 10 + strcspn(k + 10, "&");
		k = p - 1; /* the search goes on at the next '&' */
	}
	put(out, cap, &n, p, strlen(p));
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
	kh__stmt_cache_clear(s);
	s->be->close(s);
}

kh_err kh_store_check(const char *url, int *exists, char *why, size_t cap)
{
	const struct kh__backend *be;
	kh_err r;

	if (exists)
		*exists = 0;
	if (why == NULL || cap == 0)
		return KH_ERR_INVAL;
	if ((be = backend_of(url, &r)) == NULL) {
		snprintf(why, cap, "%s: %s", url ? url : "(null)",
			 r == KH_ERR_NOT_BUILT ? "this database backend is not built into this program"
					       : "not a database (PATH or sqlite:PATH)");
		return r;
	}
	return be->check(url, exists, why, cap);
}

kh_err kh_store_remove(const char *url)
{
	const struct kh__backend *be;
	kh_err r;

	if ((be = backend_of(url, &r)) == NULL)
		return r;
	return be->remove(url);
}

kh_err kh_store_probe(struct kh_store *s, unsigned wait_ms)
{
	if (s == NULL || s->in_tx)
		return KH_ERR_INVAL;
	return s->be->probe(s, wait_ms);
}

kh_err kh__probe_write(struct kh_store *s, const char *wait_sql, unsigned wait_ms)
{
	struct kh__stmt *st = NULL;
	kh_err r;

	if ((r = kh_store_begin(s)) != KH_OK)
		return r;
	if (wait_sql != NULL && (r = kh__stmt(s, wait_sql, &st)) == KH_OK &&
	    (r = kh__bind_i64(st, 1, wait_ms > 600000 ? 600000 : wait_ms)) == KH_OK)
		r = kh__exec(st);
	kh__stmt_done(st);
	if (r == KH_OK)
		r = kh__exec_cached(s, "UPDATE credit_policy SET initial_credit = initial_credit WHERE id = 1");
	kh_store_rollback(s);
	return r;
}

/* ---- errors ---- */

kh_err kh__fail(struct kh_store *s, kh_err r, const char *op, const char *detail, const char *code)
{
	if (r == KH_OK)
		r = KH_ERR_DB;
	snprintf(s->err, sizeof s->err, "store %s: %s: %s", s->name, op, detail);
	if (r == KH_ERR_EXISTS || r == KH_ERR_DB_BUSY)
		kh_log_debug("store.error", "op=%s err=%s %s", op, kh_err_name(r), code ? code : "");
	else
		kh_log_error("store.error", "db=%s op=%s err=%s %s", s->name, op, kh_err_name(r), code ? code : "");
	return r;
}

kh_err kh__fail_msg(struct kh_store *s, kh_err r, const char *what)
{
	snprintf(s->err, sizeof s->err, "store %s: %s", s->name, what);
	kh_log_error("store.error", "db=%s err=%s what=\"%s\"", s->name, kh_err_name(r), what);
	return r;
}

const char *kh_store_last_error(const struct kh_store *s)
{
	return s ? s->err : "";
}

/* ---- prepared statements (store_int.h) ---- */

kh_err kh__stmt(struct kh_store *s, const char *sql, struct kh__stmt **out)
{
	struct kh__stmt *c = NULL;
	kh_err r;

	/* Outside a transaction a connection that broke may be made again (its cache then empty). */
	if (!s->in_tx && s->be->revive != NULL && (r = s->be->revive(s)) != KH_OK)
		return r;
	for (size_t i = 0; i < s->ncache; i++) {
		if (s->cache[i]->sql == sql) {
			c = s->cache[i];
			break;
		}
	}
	if (c == NULL) {
		if (s->ncache == KH__STMT_CACHE)
			return kh__fail_msg(s, KH_ERR_INTERNAL, "statement cache full");
		if ((r = s->be->prepare(s, sql, &c)) != KH_OK)
			return r;
		c->s = s;
		c->sql = sql;
		s->cache[s->ncache++] = c;
	}
	if (c->in_use) /* a contract breach: one statement used twice at once */
		return kh__fail_msg(s, KH_ERR_INTERNAL, "statement already in use");
	c->in_use = 1;
	*out = c;
	return KH_OK;
}

void kh__stmt_done(struct kh__stmt *st)
{
	if (st == NULL)
		return;
	st->s->be->reset(st);
	st->in_use = 0;
}

void kh__stmt_cache_clear(struct kh_store *s)
{
	for (size_t i = 0; i < s->ncache; i++)
		s->be->finalize(s->cache[i]);
	s->ncache = 0;
}

kh_err kh__exec_cached(struct kh_store *s, const char *sql)
{
	struct kh__stmt *st;
	kh_err r;

	if ((r = kh__stmt(s, sql, &st)) != KH_OK)
		return r;
	r = kh__exec(st);
	kh__stmt_done(st);
	return r;
}

kh_err kh__query_int(struct kh_store *s, const char *sql, int64_t *v)
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

kh_err kh__bind_i64(struct kh__stmt *st, int idx, int64_t v)
{
	return st->s->be->bind_i64(st, idx, v);
}

kh_err kh__bind_null(struct kh__stmt *st, int idx)
{
	return st->s->be->bind_null(st, idx);
}

kh_err kh__bind_text(struct kh__stmt *st, int idx, const char *v)
{
	return st->s->be->bind_text(st, idx, v);
}

kh_err kh__bind_blob(struct kh__stmt *st, int idx, const void *v, size_t n)
{
	return st->s->be->bind_blob(st, idx, v, n);
}

kh_err kh__step(struct kh__stmt *st, int *row)
{
	return st->s->be->step(st, row);
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
	return st->s->be->col_null(st, col);
}

int64_t kh__col_i64(struct kh__stmt *st, int col)
{
	return st->s->be->col_i64(st, col);
}

const uint8_t *kh__col_blob(struct kh__stmt *st, int col, size_t *n)
{
	return st->s->be->col_blob(st, col, n);
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
	return s->be->changes(s);
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
		return kh__fail_msg(s, KH_ERR_INVAL, "begin: a transaction is already open");
	if (s->be->revive != NULL && (r = s->be->revive(s)) != KH_OK)
		return r;
	r = s->be->begin(s);
	/* A connection found lost by the BEGIN itself did nothing yet: made again, once. */
	if (r == KH_ERR_DB_UNAVAILABLE && s->be->revive != NULL && (r = s->be->revive(s)) == KH_OK)
		r = s->be->begin(s);
	if (r != KH_OK)
		return r;
	s->in_tx = 1;
	return KH_OK;
}

void kh_store_rollback(struct kh_store *s)
{
	if (s == NULL || !s->in_tx)
		return;
	s->in_tx = 0;
	s->be->rollback(s);
}

kh_err kh_store_commit(struct kh_store *s)
{
	kh_err r;

	if (s == NULL)
		return KH_ERR_INVAL;
	if (!s->in_tx)
		return kh__fail_msg(s, KH_ERR_INVAL, "commit: no transaction is open");
	if ((r = s->be->commit(s)) != KH_OK) {
		kh_store_rollback(s);
		return r;
	}
	s->in_tx = 0;
	return KH_OK;
}

kh_err kh__savepoint(struct kh_store *s)
{
	if (!s->in_tx)
		return kh__fail_msg(s, KH_ERR_INVAL, "savepoint: no transaction is open");
	return kh__exec_cached(s, "SAVEPOINT kh_job");
}

kh_err kh__savepoint_release(struct kh_store *s)
{
	return kh__exec_cached(s, "RELEASE kh_job");
}

kh_err kh__savepoint_undo(struct kh_store *s)
{
	kh_err r;
	if ((r = kh__exec_cached(s, "ROLLBACK TO kh_job")) != KH_OK)
		return r;
	return kh__exec_cached(s, "RELEASE kh_job");
}

/* Process-wide, for /metrics: transactions run again after the soft error, and those that met
 * it at their last attempt. */
static atomic_uint_fast64_t tx_retries, tx_gave_up;

void kh_store_tx_stats(struct kh_store_tx_stats *out)
{
	out->retries = atomic_load(&tx_retries);
	out->gave_up = atomic_load(&tx_gave_up);
}

void kh__count_retry(void)
{
	atomic_fetch_add(&tx_retries, 1);
}

void kh__backoff(int n)
{
	struct timespec ts;
	uint8_t rnd[2] = {0, 0};
	long span = 1L << (n < 10 ? n : 10), ms;

	/* Without randomness the pause is still there, only not spread. */
	if (kh_random(rnd, sizeof rnd) != KH_OK)
		rnd[0] = rnd[1] = 0;
	ms = span + (long)(((unsigned)rnd[0] << 8 | rnd[1]) % (unsigned long)span);
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
	for (int attempt = 0; attempt < s->be->tx_attempts; attempt++) {
		if (attempt > 0) {
			kh__count_retry();
			kh__backoff(attempt);
		}
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
	atomic_fetch_add(&tx_gave_up, 1);
	return r;
}

/* ---- schema ---- */

int kh_store_schema_latest(void)
{
	return kh__migrations[kh__migrations_count - 1].version;
}

kh_err kh__read_version(struct kh_store *s, int *version)
{
	static const char q_max[] = "SELECT COALESCE(MAX(version), 0) FROM schema_migrations";
	int64_t n = 0;
	kh_err r;

	if ((r = kh__query_int(s, s->be->q_has_migrations, &n)) != KH_OK)
		return r;
	if (n == 0) {
		*version = 0;
		return KH_OK;
	}
	if ((r = kh__query_int(s, q_max, &n)) != KH_OK)
		return r;
	if (n < 0 || n > INT32_MAX)
		return kh__fail_msg(s, KH_ERR_DB, "schema_migrations holds an impossible version");
	*version = (int)n;
	return KH_OK;
}

kh_err kh_store_schema_version(struct kh_store *s, int *version)
{
	int v = 0;
	kh_err r;

	if (s == NULL || version == NULL)
		return KH_ERR_INVAL;
	if ((r = kh__read_version(s, &v)) != KH_OK)
		return r;
	*version = v;
	return KH_OK;
}

/* One migration in its own transaction, with its row in schema_migrations: whole or not at all. */
static kh_err apply(struct kh_store *s, const struct kh__migration *m)
{
	static const char ins[] = "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)";
	struct kh__stmt *st = NULL;
	int v = 0;
	kh_err r;

	if ((r = s->be->migrate_begin(s)) != KH_OK)
		return r;
	s->in_tx = 1;
	/* Under the backend's lock: another process may have migrated since we looked. */
	if ((r = kh__check_version(s, &v)) != KH_OK)
		goto out;
	if (v >= m->version)
		goto out;
	if (v != m->version - 1) {
		r = kh__fail_msg(s, KH_ERR_DB, "schema_migrations skips a version");
		goto out;
	}
	if ((r = s->be->exec_script(s, m->sql)) != KH_OK)
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

kh_err kh__check_version(struct kh_store *s, int *version)
{
	kh_err r;

	if ((r = kh__read_version(s, version)) != KH_OK)
		return r;
	if (*version > kh_store_schema_latest())
		return kh__fail_msg(s, KH_ERR_VERSION, "database schema is newer than this program");
	return KH_OK;
}

kh_err kh__migrate(struct kh_store *s)
{
	int v = 0;
	kh_err r;

	if ((r = kh__check_version(s, &v)) != KH_OK)
		return r;
	for (size_t i = 0; i < kh__migrations_count; i++) {
		if (kh__migrations[i].version <= v)
			continue;
		if ((r = apply(s, &kh__migrations[i])) != KH_OK)
			return r;
	}
	return KH_OK;
}
