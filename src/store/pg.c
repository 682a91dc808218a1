/*
 * The store's PostgreSQL backend over libpq (docs/internals/store.md, "PostgreSQL"): one
 * connection per struct kh_store, opened from the URL exactly as given to PQconnectdb (so a
 * service file, the PG* variables and ~/.pgpass work as for every libpq tool); every statement
 * prepared once per connection (PQprepare, named by the cache slot's address) with its ?N
 * placeholders rewritten to $N, then run with PQexecPrepared, integers bound as text and blobs
 * as binary bytea, results read as text and decoded so that the kh__col_* functions answer what
 * SQLite's do; write transactions SERIALIZABLE, whose serialization failures and deadlocks are
 * the soft error store.c retries. The schema lives in the connection's current schema; the
 * migrations are SQLite's text translated once (migrations.c, kh__ddl_pg).
 *
 * No message or log line holds a password: the URL is never printed (the store is named
 * postgresql://user@host:port/db from its parsed options), a password the URL carries is cut out
 * of any message libpq gives, and a URL libpq cannot parse is said to be so without quoting it.
 * Values are never in a message either: only a server error's primary message is kept (its
 * DETAIL names the key values), and not even that for data errors (class 22), which quote the
 * value.
 */
#include <errno.h>
#include <libpq-fe.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyhole/crypto.h"
#include "keyhole/log.h"
#include "store_int.h"

/* Serialization failures come in bursts under contention: more attempts than SQLite's busy,
 * which already waited its busy timeout at each. */
#define TX_ATTEMPTS 8
#define DEFAULT_LOCK_MS 5000
#define MAX_PARAMS 64

/* Type OIDs (catalog/pg_type.h, stable since forever). */
#define BOOLOID 16
#define BYTEAOID 17
#define TEXTOID 25

struct pg_stmt {
	struct kh__stmt h;
	char name[32];
	int nparams;
	const char *vals[MAX_PARAMS];
	int lens[MAX_PARAMS];
	int fmts[MAX_PARAMS];
	char num[MAX_PARAMS][24]; /* integer parameters, as text */
	PGresult *res;            /* NULL until the first step after a reset */
	int row, nrows;
	/* bytea columns of the current row, decoded on demand (wiped when the row changes) */
	int ncols;
	uint8_t **dec;
	size_t *declen;
};

/* A connection: h.name is postgresql://user@host:port/db, never with a password. */
struct pg {
	struct kh_store h;
	PGconn *conn;
	char *password; /* the URL's own, cut out of messages; wiped at close */
	int64_t changes;
	unsigned next_id; /* names prepared statements: kh1, kh2, ... */
	unsigned lock_ms;
	int sync_off;
};

static struct pg *pg_of(struct kh_store *s)
{
	return (struct pg *)s;
}

static struct pg_stmt *ps_of(struct kh__stmt *st)
{
	return (struct pg_stmt *)st;
}

/* ---- errors ---- */

/* An SQLSTATE to a kh_err; NULL (libpq's own failure) by the connection's state. */
static kh_err map_state(const char *st, PGconn *conn)
{
	if (conn == NULL || PQstatus(conn) != CONNECTION_OK)
		return KH_ERR_DB_UNAVAILABLE;
	if (st == NULL || strlen(st) != 5)
		return KH_ERR_DB;
	if (strcmp(st, "23505") == 0)
		return KH_ERR_EXISTS;
	if (strncmp(st, "23", 2) == 0 || strncmp(st, "22", 2) == 0)
		return KH_ERR_DB_CONSTRAINT;
	/* serialization failure, deadlock, lock wait past lock_timeout: the soft error */
	if (strcmp(st, "40001") == 0 || strcmp(st, "40P01") == 0 || strcmp(st, "55P03") == 0)
		return KH_ERR_DB_BUSY;
	/* connection, shutdown, too many connections, a commit whose outcome is unknown */
	if (strncmp(st, "08", 2) == 0 || strncmp(st, "57P", 3) == 0 || strcmp(st, "53300") == 0 ||
	    strcmp(st, "40003") == 0)
		return KH_ERR_DB_UNAVAILABLE;
	if (strcmp(st, "53100") == 0)
		return KH_ERR_IO; /* disk full */
	if (strcmp(st, "53200") == 0)
		return KH_ERR_NOMEM;
	if (strcmp(st, "54000") == 0)
		return KH_ERR_TOO_LARGE;
	return KH_ERR_DB;
}

/*
 * A message made fit for a log line: one line (libpq's run over several), at most cap - 1
 * bytes, and every occurrence of pw (the URL's password) replaced by "***".
 */
static void clean_msg(char *out, size_t cap, const char *msg, const char *pw)
{
	size_t n = 0, pwlen = pw ? strlen(pw) : 0;

	while (*msg && n + 1 < cap) {
		if (pwlen > 0 && strncmp(msg, pw, pwlen) == 0) {
			for (const char *m = "***"; *m && n + 1 < cap; m++)
				out[n++] = *m;
			msg += pwlen;
			continue;
		}
		if (*msg == '\n' || *msg == '\t' || *msg == '\r') {
			if (n > 0 && out[n - 1] != ' ')
				out[n++] = ' ';
		} else {
			out[n++] = *msg;
		}
		msg++;
	}
	while (n > 0 && out[n - 1] == ' ')
		n--;
	out[n] = '\0';
}

/* Record the failure of op given res (may be NULL: the connection's message). */
static kh_err fail_res(struct pg *p, const char *op, const PGresult *res)
{
	const char *st = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	const char *prim = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
	char msg[240], code[24];
	kh_err r = map_state(st, p->conn);

	if (st != NULL && strncmp(st, "22", 2) == 0)
		prim = "a value the column's type refuses";
	if (prim == NULL)
		prim = p->conn ? PQerrorMessage(p->conn) : "out of memory";
	clean_msg(msg, sizeof msg, *prim ? prim : "unknown error", p->password);
	snprintf(code, sizeof code, "sqlstate=%s", st ? st : "none");
	return kh__fail(&p->h, r, op, msg, code);
}

static kh_err fail_msg(struct pg *p, kh_err r, const char *what)
{
	return kh__fail_msg(&p->h, r, what);
}

/* Run literal SQL with PQexec (transaction control, migration text). Never with input. */
static kh_err exec_sql(struct pg *p, const char *op, const char *sql)
{
	PGresult *res = PQexec(p->conn, sql);
	ExecStatusType t = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
	kh_err r = KH_OK;

	if (t != PGRES_COMMAND_OK && t != PGRES_TUPLES_OK)
		r = fail_res(p, op, res);
	PQclear(res);
	return r;
}

/* ---- statements ---- */

/*
 * SQL with ?N placeholders into out (as long: "$N" for "?N"), outside quoted literals and
 * identifiers. *n gets the highest N; used[N - 1] is set for each N that appears.
 */
static int rewrite(const char *sql, char *out, int *n, unsigned char used[MAX_PARAMS])
{
	char quote = 0;

	*n = 0;
	memset(used, 0, MAX_PARAMS);
	for (; *sql; sql++) {
		char c = *sql;
		*out++ = c;
		if (quote) {
			if (c == quote)
				quote = 0; /* a doubled quote closes and reopens: the same */
			continue;
		}
		if (c == '\'' || c == '"') {
			quote = c;
		} else if (c == '?') {
			long v;
			char *end;
			if (sql[1] < '0' || sql[1] > '9')
				return -1; /* a bare ?: the store only writes ?N */
			v = strtol(sql + 1, &end, 10);
			if (v < 1 || v > MAX_PARAMS)
				return -1;
			out[-1] = '$';
			used[v - 1] = 1;
			if (v > *n)
				*n = (int)v;
		}
	}
	*out = '\0';
	return quote ? -1 : 0;
}

static kh_err pg_prepare(struct kh_store *s, const char *sql, struct kh__stmt **out)
{
	struct pg *p = pg_of(s);
	struct pg_stmt *c = calloc(1, sizeof *c);
	char *text = malloc(strlen(sql) + 1);
	unsigned char used[MAX_PARAMS];
	Oid types[MAX_PARAMS];
	PGresult *res = NULL;
	kh_err r = KH_OK;

	if (c == NULL || text == NULL) {
		r = fail_msg(p, KH_ERR_NOMEM, "prepare: out of memory");
		goto out;
	}
	if (rewrite(sql, text, &c->nparams, used) != 0) {
		r = fail_msg(p, KH_ERR_INTERNAL, "prepare: placeholders other than ?1..?64");
		goto out;
	}
	/* A number skipped in the SQL (bound, not used) has no type to infer: give it one. The
	 * others are inferred from where they stand. */
	for (int i = 0; i < c->nparams; i++)
		types[i] = used[i] ? 0 : TEXTOID;
	snprintf(c->name, sizeof c->name, "kh%u", ++p->next_id);
	res = PQprepare(p->conn, c->name, text, c->nparams, types);
	if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK)
		r = fail_res(p, "prepare", res);
out:
	PQclear(res);
	free(text);
	if (r != KH_OK) {
		free(c);
		return r;
	}
	c->row = -1;
	*out = &c->h;
	return KH_OK;
}

/* Forget the decoded columns of the current row (they may be keys). */
static void drop_decoded(struct pg_stmt *c)
{
	for (int i = 0; i < c->ncols; i++) {
		if (c->dec[i] != NULL) {
			kh_wipe(c->dec[i], c->declen[i]);
			free(c->dec[i]);
			c->dec[i] = NULL;
		}
	}
}

static void pg_reset(struct kh__stmt *st)
{
	struct pg_stmt *c = ps_of(st);

	drop_decoded(c);
	free(c->dec);
	free(c->declen);
	c->dec = NULL;
	c->declen = NULL;
	c->ncols = 0;
	PQclear(c->res);
	c->res = NULL;
	c->row = -1;
	c->nrows = 0;
	memset(c->vals, 0, sizeof c->vals);
	memset(c->lens, 0, sizeof c->lens);
	memset(c->fmts, 0, sizeof c->fmts);
}

static void pg_finalize(struct kh__stmt *st)
{
	/* The server's prepared statement goes with the connection (closed, or made again). */
	pg_reset(st);
	free(st);
}

static kh_err param(struct kh__stmt *st, int idx)
{
	if (idx < 1 || idx > ps_of(st)->nparams)
		return fail_msg(pg_of(st->s), KH_ERR_DB, "bind: no such parameter");
	return KH_OK;
}

static kh_err pg_bind_i64(struct kh__stmt *st, int idx, int64_t v)
{
	struct pg_stmt *c = ps_of(st);
	kh_err r;

	if ((r = param(st, idx)) != KH_OK)
		return r;
	/* As text: the server reads it as whatever integer type it inferred for the parameter. */
	snprintf(c->num[idx - 1], sizeof c->num[idx - 1], "%lld", (long long)v);
	c->vals[idx - 1] = c->num[idx - 1];
	c->fmts[idx - 1] = 0;
	return KH_OK;
}

static kh_err pg_bind_null(struct kh__stmt *st, int idx)
{
	kh_err r;

	if ((r = param(st, idx)) != KH_OK)
		return r;
	ps_of(st)->vals[idx - 1] = NULL;
	return KH_OK;
}

static kh_err pg_bind_text(struct kh__stmt *st, int idx, const char *v)
{
	kh_err r;

	if ((r = param(st, idx)) != KH_OK)
		return r;
	/* The caller's string outlives the step (as with SQLite's SQLITE_STATIC). */
	ps_of(st)->vals[idx - 1] = v;
	ps_of(st)->fmts[idx - 1] = 0;
	return KH_OK;
}

static kh_err pg_bind_blob(struct kh__stmt *st, int idx, const void *v, size_t n)
{
	struct pg_stmt *c = ps_of(st);
	kh_err r;

	if ((r = param(st, idx)) != KH_OK)
		return r;
	if (n > INT32_MAX)
		return fail_msg(pg_of(st->s), KH_ERR_TOO_LARGE, "bind: value too large");
	/* Binary: the bytes as they are, not copied or escaped. Empty is an empty value, not NULL. */
	c->vals[idx - 1] = v != NULL && n > 0 ? v : "";
	c->lens[idx - 1] = v != NULL ? (int)n : 0;
	c->fmts[idx - 1] = 1;
	return KH_OK;
}

/* "INSERT 0 3", "UPDATE 2", "DELETE 1": the rows changed, as SQLite's changes() counts them. */
static void note_changes(struct pg *p, const PGresult *res)
{
	const char *cmd = PQcmdStatus((PGresult *)res);

	if (strncmp(cmd, "INSERT ", 7) == 0 || strncmp(cmd, "UPDATE ", 7) == 0 || strncmp(cmd, "DELETE ", 7) == 0)
		p->changes = strtoll(PQcmdTuples((PGresult *)res), NULL, 10);
}

static kh_err pg_step(struct kh__stmt *st, int *row)
{
	struct pg_stmt *c = ps_of(st);
	struct pg *p = pg_of(st->s);
	ExecStatusType t;

	if (c->res == NULL) {
		c->res = PQexecPrepared(p->conn, c->name, c->nparams, c->vals, c->lens, c->fmts, 0);
		t = c->res ? PQresultStatus(c->res) : PGRES_FATAL_ERROR;
		if (t != PGRES_TUPLES_OK && t != PGRES_COMMAND_OK) {
			kh_err r = fail_res(p, "step", c->res);
			PQclear(c->res);
			c->res = NULL;
			return r;
		}
		note_changes(p, c->res);
		c->nrows = PQntuples(c->res);
		c->ncols = PQnfields(c->res);
		if (c->ncols > 0) {
			c->dec = calloc((size_t)c->ncols, sizeof *c->dec);
			c->declen = calloc((size_t)c->ncols, sizeof *c->declen);
			if (c->dec == NULL || c->declen == NULL)
				return fail_msg(p, KH_ERR_NOMEM, "step: out of memory");
		}
		c->row = 0;
	} else {
		drop_decoded(c);
		if (c->row < c->nrows)
			c->row++;
	}
	*row = c->row < c->nrows;
	return KH_OK;
}

static int pg_col_null(struct kh__stmt *st, int col)
{
	struct pg_stmt *c = ps_of(st);

	if (c->res == NULL || c->row >= c->nrows || col < 0 || col >= c->ncols)
		return 1;
	return PQgetisnull(c->res, c->row, col);
}

static int64_t pg_col_i64(struct kh__stmt *st, int col)
{
	struct pg_stmt *c = ps_of(st);
	const char *v;

	if (pg_col_null(st, col))
		return 0; /* as SQLite reads NULL */
	v = PQgetvalue(c->res, c->row, col);
	if (PQftype(c->res, col) == BOOLOID) /* EXISTS (...), a comparison */
		return v[0] == 't';
	return strtoll(v, NULL, 10);
}

static int hexval(char h)
{
	return h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10 : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
}

static const uint8_t *pg_col_blob(struct kh__stmt *st, int col, size_t *n)
{
	static const uint8_t empty[1];
	struct pg_stmt *c = ps_of(st);
	const char *v;
	size_t len;
	uint8_t *d;

	*n = 0;
	if (pg_col_null(st, col))
		return empty;
	v = PQgetvalue(c->res, c->row, col);
	len = (size_t)PQgetlength(c->res, c->row, col);
	if (PQftype(c->res, col) != BYTEAOID) {
		*n = len;
		return (const uint8_t *)v;
	}
	if (c->dec[col] != NULL) {
		*n = c->declen[col];
		return c->dec[col];
	}
	/* bytea_output is hex (set at connect): "\x" then two digits a byte. */
	if (len < 2 || v[0] != '\\' || v[1] != 'x' || len % 2 != 0)
		return empty;
	if ((d = malloc(len / 2 > 0 ? len / 2 : 1)) == NULL)
		return empty;
	for (size_t i = 2; i < len; i += 2) {
		int hi = hexval(v[i]), lo = hexval(v[i + 1]);
		if (hi < 0 || lo < 0) {
			free(d);
			return empty;
		}
		d[i / 2 - 1] = (uint8_t)(hi << 4 | lo);
	}
	c->dec[col] = d;
	c->declen[col] = len / 2 - 1;
	*n = c->declen[col];
	return d;
}

static int64_t pg_changes(struct kh_store *s)
{
	return pg_of(s)->changes;
}

/* ---- the connection ---- */

static void quiet(void *arg, const char *msg)
{
	(void)arg;
	(void)msg; /* NOTICEs ("relation already exists, skipping"): nothing an operator needs */
}

/*
 * The session's settings, each by set_config with the value bound: bytea read back as hex (what
 * pg_col_blob decodes, whatever the server's default), the lock wait (the SQLite busy
 * timeout's counterpart: a lock held past it is the soft error), and synchronous_commit (on:
 * a commit returns once its WAL is flushed; off only when asked, never durable).
 */
static kh_err configure(struct pg *p)
{
	static const char set[] = "SELECT set_config($1, $2, false)";
	char ms[24];
	const char *names[] = {"bytea_output", "lock_timeout", "synchronous_commit", "client_min_messages"};
	const char *vals[] = {"hex", ms, p->sync_off ? "off" : "on", "warning"};
	kh_err r = KH_OK;

	if (PQsetClientEncoding(p->conn, "UTF8") != 0)
		return fail_res(p, "client_encoding", NULL);
	snprintf(ms, sizeof ms, "%u", p->lock_ms);
	for (size_t i = 0; i < sizeof names / sizeof names[0] && r == KH_OK; i++) {
		const char *params[2] = {names[i], vals[i]};
		PGresult *res = PQexecParams(p->conn, set, 2, NULL, params, NULL, NULL, 0);
		if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK)
			r = fail_res(p, "configure", res);
		PQclear(res);
	}
	return r;
}

/* A connection that broke (the server restarted, the network went) is made again before the
 * next transaction or statement outside one; what it had prepared went with it. */
static kh_err pg_revive(struct kh_store *s)
{
	struct pg *p = pg_of(s);

	if (PQstatus(p->conn) == CONNECTION_OK)
		return KH_OK;
	/* A statement still held by a caller cannot go: the connection stays down until it is. */
	for (size_t i = 0; i < s->ncache; i++)
		if (s->cache[i]->in_use)
			return fail_res(p, "reconnect", NULL);
	kh__stmt_cache_clear(s);
	PQreset(p->conn);
	if (PQstatus(p->conn) != CONNECTION_OK)
		return fail_res(p, "reconnect", NULL);
	kh_log_warn("store.reconnect", "db=%s", s->name);
	return configure(p);
}

/*
 * The name messages give the store: postgresql://user@host:port/db from what the connection
 * uses (or, before it exists, from the URL's own options), without the password.
 */
static kh_err set_name(struct pg *p, PQconninfoOption *opts)
{
	const char *user = NULL, *host = NULL, *port = NULL, *db = NULL;
	char *name = NULL;

	if (p->conn != NULL && PQstatus(p->conn) == CONNECTION_OK) {
		user = PQuser(p->conn);
		host = PQhost(p->conn);
		port = PQport(p->conn);
		db = PQdb(p->conn);
	} else {
		for (PQconninfoOption *o = opts; o && o->keyword; o++) {
			if (o->val == NULL)
				continue;
			if (strcmp(o->keyword, "user") == 0)
				user = o->val;
			else if (strcmp(o->keyword, "host") == 0)
				host = o->val;
			else if (strcmp(o->keyword, "port") == 0)
				port = o->val;
			else if (strcmp(o->keyword, "dbname") == 0)
				db = o->val;
		}
	}
	if (asprintf(&name, "postgresql://%s%s%s:%s/%s", user ? user : "", user ? "@" : "", host ? host : "",
		     port ? port : "", db ? db : "") < 0)
		return KH_ERR_NOMEM;
	free(p->h.name);
	p->h.name = name;
	return KH_OK;
}

static void pg_close(struct kh_store *s)
{
	struct pg *p = pg_of(s);

	PQfinish(p->conn);
	if (p->password != NULL) {
		kh_wipe(p->password, strlen(p->password));
		free(p->password);
	}
	free(p->h.name);
	free(p);
}

/* ---- transactions ---- */

static kh_err pg_begin(struct kh_store *s)
{
	return kh__exec_cached(s, "BEGIN ISOLATION LEVEL SERIALIZABLE");
}

static kh_err pg_commit(struct kh_store *s)
{
	struct pg *p = pg_of(s);
	PGresult *res;
	kh_err r = KH_OK;

	/* A transaction in which a statement failed ends in ROLLBACK whatever is asked. */
	if (PQtransactionStatus(p->conn) == PQTRANS_INERROR)
		return fail_msg(p, KH_ERR_DB, "commit: a statement of the transaction failed: rolled back");
	res = PQexec(p->conn, "COMMIT");
	if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK)
		r = fail_res(p, "commit", res);
	else if (strcmp(PQcmdStatus(res), "COMMIT") != 0)
		r = fail_msg(p, KH_ERR_DB, "commit: the server rolled the transaction back");
	PQclear(res);
	return r;
}

static void pg_rollback(struct kh_store *s)
{
	struct pg *p = pg_of(s);
	PGTransactionStatusType t = PQtransactionStatus(p->conn);

	if (t == PQTRANS_INTRANS || t == PQTRANS_INERROR)
		(void)exec_sql(p, "rollback", "ROLLBACK");
}

/* ---- schema ---- */

/* Tables of the current schema: 1 when the one named is there. */
#define HAS_TABLE(t)                                                                                                    \
	"SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = '" t "'"

/*
 * Refuse a schema that is not ours (another application's tables, or ours from a newer
 * release) before writing anything to it. The application_id table (migration 1's PRAGMA,
 * translated) holds KH__STORE_APP_ID; schema_migrations alone is what a first migration that
 * failed half-way leaves.
 */
static kh_err check_identity(struct pg *p)
{
	int64_t others = 0, has_app = 0, app = 0;
	int v = 0;
	kh_err r;

	if ((r = kh__query_int(&p->h, HAS_TABLE("application_id"), &has_app)) != KH_OK)
		return r;
	if (has_app) {
		if ((r = kh__query_int(&p->h, "SELECT min(value) FROM application_id", &app)) != KH_OK)
			return r;
		if (app != KH__STORE_APP_ID)
			return fail_msg(p, KH_ERR_DB_FOREIGN, "application_id is not Keyhole's");
	} else {
		if ((r = kh__query_int(&p->h,
				       "SELECT count(*) FROM information_schema.tables\n"
				       "WHERE table_schema = current_schema() AND table_name <> 'schema_migrations'",
				       &others)) != KH_OK)
			return r;
		if (others != 0)
			return fail_msg(p, KH_ERR_DB_FOREIGN, "tables without a Keyhole schema");
	}
	return kh__check_version(&p->h, &v);
}

/*
 * schema_migrations is made in a transaction of its own (two processes may race to make it:
 * the loser's error is only that it exists), then each migration's transaction locks it first,
 * before any read takes the transaction's snapshot: a second process migrating waits, then
 * reads the version the first one committed.
 */
static kh_err pg_migrate_begin(struct kh_store *s)
{
	struct pg *p = pg_of(s);
	kh_err r;

	/* Two processes creating it at once: IF NOT EXISTS does not cover the race, and the loser
	 * fails on the catalogue (23505, 42P07, 42710) while the winner commits. The statement runs
	 * outside a transaction, so it is run again: then it finds the table. */
	for (int n = 0; n < 3; n++) {
		r = exec_sql(p, "migrate",
			     "CREATE TABLE IF NOT EXISTS schema_migrations (\n"
			     "  version BIGINT PRIMARY KEY,\n"
			     "  applied_at BIGINT NOT NULL\n"
			     ")");
		if (r == KH_OK || r == KH_ERR_EXISTS || r == KH_ERR_DB_UNAVAILABLE)
			break;
		kh__backoff(n + 1);
	}
	if (r != KH_OK && r != KH_ERR_EXISTS)
		return r;
	if ((r = pg_begin(s)) != KH_OK)
		return r;
	if ((r = exec_sql(p, "migrate", "LOCK TABLE schema_migrations IN SHARE ROW EXCLUSIVE MODE")) != KH_OK)
		pg_rollback(s);
	return r;
}

static kh_err pg_exec_script(struct kh_store *s, const char *sql)
{
	char *text = kh__ddl_pg(sql);
	kh_err r;

	if (text == NULL)
		return fail_msg(pg_of(s), KH_ERR_NOMEM, "migrate: out of memory");
	r = exec_sql(pg_of(s), "migrate", text);
	free(text);
	return r;
}

/* ---- opening ---- */

static kh_err pg_open(const char *url, const struct kh_store_opts *o, unsigned flags, struct kh_store **out)
{
	struct pg *p = calloc(1, sizeof *p);
	PQconninfoOption *opts = NULL;
	char *perr = NULL;
	kh_err r;

	if (p == NULL)
		return KH_ERR_NOMEM;
	p->h.be = &kh__pg_backend;
	p->lock_ms = o && o->busy_timeout_ms ? (o->busy_timeout_ms > 600000 ? 600000 : o->busy_timeout_ms) : DEFAULT_LOCK_MS;
	p->sync_off = o && o->sync_normal;
	/* libpq's parse error may quote the URL, password and all: not repeated. */
	if ((opts = PQconninfoParse(url, &perr)) == NULL) {
		PQfreemem(perr);
		p->h.name = strdup("postgresql");
		r = p->h.name ? fail_msg(p, KH_ERR_INVAL, "the connection URL cannot be parsed") : KH_ERR_NOMEM;
		goto out;
	}
	for (PQconninfoOption *op = opts; op->keyword; op++)
		if (strcmp(op->keyword, "password") == 0 && op->val != NULL && *op->val &&
		    (p->password = strdup(op->val)) == NULL) {
			r = KH_ERR_NOMEM;
			goto out;
		}
	if ((r = set_name(p, opts)) != KH_OK)
		goto out;
	p->conn = PQconnectdb(url);
	if (p->conn == NULL) {
		r = fail_msg(p, KH_ERR_NOMEM, "connect: out of memory");
		goto out;
	}
	if (PQstatus(p->conn) != CONNECTION_OK) {
		r = fail_res(p, "connect", NULL);
		goto out;
	}
	PQsetNoticeProcessor(p->conn, quiet, NULL);
	if ((r = set_name(p, NULL)) != KH_OK || (r = configure(p)) != KH_OK)
		goto out;
	if (p->sync_off)
		kh_log_warn("store.sync", "db=%s synchronous_commit=off commits are not durable", p->h.name);
	/* as it is: the identity check refused a newer schema, and nothing is migrated */
	if ((r = check_identity(p)) != KH_OK || (!(flags & KH__OPEN_AS_IS) && (r = kh__migrate(&p->h)) != KH_OK))
		goto out;
	*out = &p->h;
	p = NULL;
out:
	if (opts != NULL) {
		for (PQconninfoOption *op = opts; op->keyword; op++)
			if (op->val != NULL)
				kh_wipe(op->val, strlen(op->val));
		PQconninfoFree(opts);
	}
	if (p != NULL) {
		kh_store_rollback(&p->h);
		kh__stmt_cache_clear(&p->h);
		pg_close(&p->h);
	}
	return r;
}

/* Nothing on this machine to check: the server says at connect what is wrong. */
static kh_err pg_check(const char *url, int *exists, char *why, size_t cap)
{
	char *perr = NULL;
	PQconninfoOption *opts = PQconninfoParse(url, &perr);

	PQfreemem(perr);
	if (opts == NULL) {
		snprintf(why, cap, "postgresql: the connection URL cannot be parsed");
		return KH_ERR_INVAL;
	}
	PQconninfoFree(opts);
	if (exists)
		*exists = 1; /* never removed by us: the operator made the database */
	return KH_OK;
}

static kh_err pg_remove(const char *url)
{
	(void)url;
	return KH_ERR_INVAL; /* a server's database is the operator's to drop */
}

/* The probe's write, with the lock wait bounded by wait_ms for its transaction only. */
static kh_err pg_probe(struct kh_store *s, unsigned wait_ms)
{
	return kh__probe_write(s, "SELECT set_config('lock_timeout', ?1, true)", wait_ms);
}

/* ---- the store tools ---- */

/* The schema the connection's tables live in, into out. */
static kh_err schema_of(struct kh_store *s, char *out, size_t cap)
{
	struct kh__stmt *st = NULL;
	int row = 0;
	kh_err r;

	out[0] = '\0';
	if ((r = kh__stmt(s, "SELECT current_schema()", &st)) == KH_OK && (r = kh__step(st, &row)) == KH_OK && row)
		kh__col_text(st, 0, out, cap);
	kh__stmt_done(st);
	return r;
}

/* One database: the same host, port and database (the name without its user) and schema. */
static int pg_same_db(struct kh_store *a, struct kh_store *b)
{
	const char *na = strchr(a->name, '@'), *nb = strchr(b->name, '@');
	char sa[128], sb[128];

	na = na ? na + 1 : a->name + strlen("postgresql://");
	nb = nb ? nb + 1 : b->name + strlen("postgresql://");
	if (strcmp(na, nb) != 0)
		return 0;
	/* a schema that cannot be read: taken for the same, so that nothing is written */
	if (schema_of(a, sa, sizeof sa) != KH_OK || schema_of(b, sb, sizeof sb) != KH_OK)
		return 1;
	return strcmp(sa, sb) == 0;
}

/* Every INTEGER PRIMARY KEY is an identity column here (migrations.c): its sequence's last value. */
static kh_err pg_seq_get(struct kh_store *s, const char *table, const char *col, int64_t *v)
{
	static const char sql[] =
		"SELECT coalesce(pg_sequence_last_value(CAST(pg_get_serial_sequence(?1, ?2) AS regclass)), 0)";
	struct kh__stmt *st = NULL;
	int row = 0;
	kh_err r;

	*v = 0;
	if ((r = kh__stmt(s, sql, &st)) == KH_OK && (r = kh__bind_text(st, 1, table)) == KH_OK &&
	    (r = kh__bind_text(st, 2, col)) == KH_OK && (r = kh__step(st, &row)) == KH_OK && row)
		*v = kh__col_i64(st, 0);
	kh__stmt_done(st);
	return r;
}

/* setval: the next id is v + 1 (1 when v < 1). Not transactional: a rollback leaves it moved. */
static kh_err pg_seq_set(struct kh_store *s, const char *table, const char *col, int autoinc, int64_t v)
{
	static const char sql[] = "SELECT setval(pg_get_serial_sequence(?1, ?2), GREATEST(CAST(?3 AS BIGINT), 1),\n"
				  "  CAST(?3 AS BIGINT) >= 1)";
	struct kh__stmt *st = NULL;
	kh_err r;

	(void)autoinc; /* every identity column has its sequence */
	if ((r = kh__stmt(s, sql, &st)) == KH_OK && (r = kh__bind_text(st, 1, table)) == KH_OK &&
	    (r = kh__bind_text(st, 2, col)) == KH_OK && (r = kh__bind_i64(st, 3, v)) == KH_OK)
		r = kh__exec(st);
	kh__stmt_done(st);
	return r;
}

const struct kh__backend kh__pg_backend = {
	.name = "postgresql",
	.tx_attempts = TX_ATTEMPTS,
	.group_batch = 0,
	.q_has_migrations = HAS_TABLE("schema_migrations"),
	.open = pg_open,
	.close = pg_close,
	.check = pg_check,
	.remove = pg_remove,
	.probe = pg_probe,
	.revive = pg_revive,
	.prepare = pg_prepare,
	.finalize = pg_finalize,
	.reset = pg_reset,
	.bind_i64 = pg_bind_i64,
	.bind_null = pg_bind_null,
	.bind_text = pg_bind_text,
	.bind_blob = pg_bind_blob,
	.step = pg_step,
	.col_null = pg_col_null,
	.col_i64 = pg_col_i64,
	.col_blob = pg_col_blob,
	.changes = pg_changes,
	.begin = pg_begin,
	.commit = pg_commit,
	.rollback = pg_rollback,
	.migrate_begin = pg_migrate_begin,
	.exec_script = pg_exec_script,
	.q_begin_read = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY",
	.same_db = pg_same_db,
	.seq_get = pg_seq_get,
	.seq_set = pg_seq_set,
};
