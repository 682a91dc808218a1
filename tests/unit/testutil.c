/* Helpers for the unit tests (testutil.h). */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>
#ifdef KH_HAVE_PG
#include <libpq-fe.h>
#include <pthread.h>
#endif

#include "testutil.h"

const char *kh_test_src(const char *rel)
{
	static char buf[4096];
	const char *root = getenv("KH_SOURCE_DIR");
#ifdef KH_SOURCE_DIR
	if (!root)
		root = KH_SOURCE_DIR;
#endif
	if (!root)
		root = ".";
	snprintf(buf, sizeof buf, "%s/%s", root, rel);
	return buf;
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = tolower(c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

long kh_test_unhex(const char *hex, uint8_t *out, size_t cap)
{
	size_t n = 0;
	int hi = -1;
	for (; *hex; hex++) {
		if (isspace((unsigned char)*hex))
			continue;
		int v = hexval((unsigned char)*hex);
		if (v < 0)
			return -1;
		if (hi < 0) {
			hi = v;
			continue;
		}
		if (n >= cap)
			return -1;
		out[n++] = (uint8_t)(hi << 4 | v);
		hi = -1;
	}
	return hi < 0 ? (long)n : -1;
}

char *kh_test_tmpdir(void)
{
	const char *t = getenv("TMPDIR");
	char *p;
	if (!t || !*t)
		t = "/tmp";
	if (asprintf(&p, "%s/kh-test-XXXXXX", t) < 0)
		return NULL;
	if (!mkdtemp(p)) {
		free(p);
		return NULL;
	}
	return p;
}

void kh_test_rmdir(char *path)
{
	char *cmd;
	if (!path)
		return;
	if (asprintf(&cmd, "rm -rf '%s'", path) >= 0) {
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", path);
		free(cmd);
	}
	free(path);
}

int kh_test_pg(void)
{
	const char *u = getenv("KH_TEST_PG_URL");
	return u != NULL && *u != '\0';
}

/* url with its database (the path after the host) replaced by db, malloc'd. */
static char *with_db(const char *url, const char *db)
{
	const char *a = strstr(url, "://"), *path, *query;
	char *out = NULL;

	assert_non_null(a);
	path = strchr(a + 3, '/');
	query = strchr(a + 3, '?');
	if (path == NULL || (query != NULL && path > query))
		path = query ? query : url + strlen(url);
	query = query ? query : url + strlen(url);
	assert_true(asprintf(&out, "%.*s/%s%s", (int)(path - url), url, db, query) > 0);
	return out;
}

/* The database a URL names (the path after the host), into out. */
static void db_of(const char *url, char *out, size_t cap)
{
	const char *a = strstr(url, "://"), *path, *end;

	assert_non_null(a);
	path = strchr(a + 3, '/');
	assert_non_null(path);
	path++;
	end = strchr(path, '?');
	end = end ? end : path + strlen(path);
	assert_true((size_t)(end - path) < cap);
	memcpy(out, path, (size_t)(end - path));
	out[end - path] = '\0';
}

#ifdef KH_HAVE_PG
static void quiet(void *arg, const char *msg)
{
	(void)arg;
	(void)msg;
}

/* One connection kept open for the last URL used (a new connection costs a server process:
 * dumping every table through a connection each made the PostgreSQL runs several times slower).
 * Tests call these helpers from one thread; the mutex is for the odd one that does not. */
static struct {
	pthread_mutex_t mu;
	char *url;
	PGconn *c;
} kept = {PTHREAD_MUTEX_INITIALIZER, NULL, NULL};

static void kept_close(void)
{
	PQfinish(kept.c);
	free(kept.url);
	kept.c = NULL;
	kept.url = NULL;
}

static PGresult *pg_run(const char *url, const char *sql)
{
	PGresult *res;

	char why[300];

	pthread_mutex_lock(&kept.mu);
	if (kept.c && (strcmp(kept.url, url) != 0 || PQstatus(kept.c) != CONNECTION_OK))
		kept_close();
	if (kept.c == NULL) {
		kept.c = PQconnectdb(url);
		kept.url = strdup(url);
		if (kept.url == NULL || PQstatus(kept.c) != CONNECTION_OK) {
			snprintf(why, sizeof why, "%s", PQerrorMessage(kept.c));
			kept_close();
			pthread_mutex_unlock(&kept.mu); /* fail_msg jumps out: nothing may stay locked */
			fail_msg("test database %s: %s", url, why);
		}
		PQsetNoticeProcessor(kept.c, quiet, NULL);
	}
	res = PQexec(kept.c, sql);
	if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK) {
		snprintf(why, sizeof why, "%s", PQerrorMessage(kept.c));
		PQclear(res);
		kept_close(); /* it may be inside an aborted transaction */
		pthread_mutex_unlock(&kept.mu);
		fail_msg("%s: %s", sql, why);
	}
	pthread_mutex_unlock(&kept.mu);
	return res;
}

/* Forget the kept connection (before its database is dropped). */
static void pg_forget(void)
{
	pthread_mutex_lock(&kept.mu);
	kept_close();
	pthread_mutex_unlock(&kept.mu);
}

int64_t kh_test_pg_int(const char *url, const char *sql)
{
	PGresult *res = pg_run(url, sql);
	int64_t v = -1;

	if (PQntuples(res) > 0 && !PQgetisnull(res, 0, 0)) {
		const char *t = PQgetvalue(res, 0, 0);
		v = strcmp(t, "t") == 0 ? 1 : strcmp(t, "f") == 0 ? 0 : strtoll(t, NULL, 10);
	}
	PQclear(res);
	return v;
}

void kh_test_pg_exec(const char *url, const char *sql)
{
	PQclear(pg_run(url, sql));
}

char *kh_test_pg_rows(const char *url, const char *sql)
{
	PGresult *res = pg_run(url, sql);
	char *out = calloc(1, 1);
	size_t len = 0;

	assert_non_null(out);
	for (int r = 0; r < PQntuples(res); r++)
		for (int i = 0; i < PQnfields(res); i++) {
			const char *v = PQgetisnull(res, r, i) ? "NULL" : PQgetvalue(res, r, i);
			size_t n = strlen(v) + 1;
			assert_non_null(out = realloc(out, len + n + 1));
			len += (size_t)snprintf(out + len, n + 1, "%s%c", v, i + 1 < PQnfields(res) ? '|' : '\n');
		}
	PQclear(res);
	return out;
}
void *kh_test_pg_hold(const char *url, const char *sql)
{
	PGconn *c = PQconnectdb(url);
	PGresult *res;

	if (PQstatus(c) != CONNECTION_OK)
		fail_msg("test database %s: %s", url, PQerrorMessage(c));
	PQsetNoticeProcessor(c, quiet, NULL);
	res = PQexec(c, "BEGIN");
	if (PQresultStatus(res) == PGRES_COMMAND_OK) {
		PQclear(res);
		res = PQexec(c, sql);
	}
	if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK)
		fail_msg("%s: %s", sql, PQerrorMessage(c));
	PQclear(res);
	return c;
}

void kh_test_pg_release(void *held)
{
	PQclear(PQexec(held, "ROLLBACK"));
	PQfinish(held);
}
#else
static void pg_forget(void)
{
}

void *kh_test_pg_hold(const char *url, const char *sql)
{
	fail_msg("PostgreSQL is not built in (%s, %s)", url, sql);
	return NULL;
}

void kh_test_pg_release(void *held)
{
	(void)held;
}

int64_t kh_test_pg_int(const char *url, const char *sql)
{
	fail_msg("PostgreSQL is not built in (%s, %s)", url, sql);
	return -1;
}

void kh_test_pg_exec(const char *url, const char *sql)
{
	fail_msg("PostgreSQL is not built in (%s, %s)", url, sql);
}

char *kh_test_pg_rows(const char *url, const char *sql)
{
	fail_msg("PostgreSQL is not built in (%s, %s)", url, sql);
	return NULL;
}
#endif

char *kh_test_db(const char *dir, const char *name)
{
	static unsigned n;
	char db[64], sql[128], *out = NULL;

	if (!kh_test_pg()) {
		assert_true(asprintf(&out, "%s/%s", dir, name) > 0);
		return out;
	}
	snprintf(db, sizeof db, "kh_t_%ld_%u", (long)getpid(), __atomic_add_fetch(&n, 1, __ATOMIC_SEQ_CST));
	snprintf(sql, sizeof sql, "CREATE DATABASE %s", db);
	kh_test_pg_exec(getenv("KH_TEST_PG_URL"), sql);
	return with_db(getenv("KH_TEST_PG_URL"), db);
}

void kh_test_db_drop(char *url)
{
	char db[64], sql[128];

	if (url != NULL && strncmp(url, "postgres", 8) == 0) {
		pg_forget();
		db_of(url, db, sizeof db);
		snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", db);
		kh_test_pg_exec(getenv("KH_TEST_PG_URL"), sql);
	}
	free(url);
}

static int is_pg(const char *url)
{
	return strncmp(url, "postgres://", 11) == 0 || strncmp(url, "postgresql://", 13) == 0;
}

static sqlite3 *lite_open(const char *path)
{
	sqlite3 *db = NULL;

	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK)
		fail_msg("test database %s: %s", path, db ? sqlite3_errmsg(db) : "cannot open");
	assert_int_equal(sqlite3_busy_timeout(db, 5000), SQLITE_OK);
	return db;
}

/* sql with each `from` replaced by `to`, malloc'd. */
static char *replace_all(const char *sql, const char *from, const char *to)
{
	char *out = NULL;
	size_t len = 0;
	FILE *f;

	assert_non_null(f = open_memstream(&out, &len));
	for (const char *p; (p = strstr(sql, from)) != NULL; sql = p + strlen(from))
		fprintf(f, "%.*s%s", (int)(p - sql), sql, to);
	fputs(sql, f);
	assert_int_equal(fclose(f), 0);
	return out;
}

void kh_test_sql_exec(const char *url, const char *sql)
{
	sqlite3 *db;
	char *err = NULL;

	if (is_pg(url)) {
		char *a = replace_all(sql, "randomblob(16)", "decode(md5(random()::text), 'hex')");
		char *b = replace_all(a, "zeroblob(32)", "decode(repeat('00', 32), 'hex')");
		kh_test_pg_exec(url, b);
		free(a);
		free(b);
		return;
	}
	db = lite_open(url);
	if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK)
		fail_msg("%s: %s", sql, err ? err : "?");
	sqlite3_free(err);
	sqlite3_close(db);
}

char *kh_test_sql_rows(const char *url, const char *sql)
{
	sqlite3 *db;
	sqlite3_stmt *st = NULL;
	char *out = NULL;
	size_t len = 0;
	FILE *f;
	int rc;

	if (is_pg(url))
		return kh_test_pg_rows(url, sql);
	assert_non_null(f = open_memstream(&out, &len));
	db = lite_open(url);
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
		fail_msg("%s: %s", sql, sqlite3_errmsg(db));
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		for (int i = 0; i < sqlite3_column_count(st); i++) {
			if (sqlite3_column_type(st, i) == SQLITE_BLOB) { /* as PostgreSQL shows a bytea */
				const uint8_t *b = sqlite3_column_blob(st, i);
				fputs("\\x", f);
				for (int k = 0; k < sqlite3_column_bytes(st, i); k++)
					fprintf(f, "%02x", b[k]);
			} else {
				const char *v = (const char *)sqlite3_column_text(st, i);
				fputs(v ? v : "NULL", f);
			}
			fputc(i + 1 < sqlite3_column_count(st) ? '|' : '\n', f);
		}
	if (rc != SQLITE_DONE)
		fail_msg("%s: %s", sql, sqlite3_errmsg(db));
	sqlite3_finalize(st);
	sqlite3_close(db);
	assert_int_equal(fclose(f), 0);
	return out;
}

int64_t kh_test_sql_int(const char *url, const char *sql)
{
	char *rows, *end;
	int64_t v;

	if (is_pg(url))
		return kh_test_pg_int(url, sql);
	rows = kh_test_sql_rows(url, sql);
	v = strtoll(rows, &end, 10);
	if (end == rows)
		v = -1; /* no row, or NULL */
	free(rows);
	return v;
}

static int cmp_line(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

char *kh_test_sql_dump(const char *url)
{
	const char *list = is_pg(url) ? "SELECT table_name FROM information_schema.tables "
					"WHERE table_schema = current_schema() ORDER BY 1"
				      : "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY 1";
	char *tables = kh_test_sql_rows(url, list), *out = NULL, *save = NULL, sql[200];
	size_t len = 0;
	FILE *f;

	assert_non_null(f = open_memstream(&out, &len));
	for (char *t = strtok_r(tables, "\n", &save); t; t = strtok_r(NULL, "\n", &save)) {
		char *rows, **line = NULL, *lsave = NULL;
		size_t n = 0;

		snprintf(sql, sizeof sql, "SELECT * FROM \"%s\"", t);
		rows = kh_test_sql_rows(url, sql);
		for (char *l = strtok_r(rows, "\n", &lsave); l; l = strtok_r(NULL, "\n", &lsave)) {
			assert_non_null(line = realloc(line, (n + 1) * sizeof *line));
			line[n++] = l;
		}
		if (n > 0) /* rows in an order of their own, not the scan's */
			qsort(line, n, sizeof line[0], cmp_line);
		fprintf(f, "[%s]\n", t);
		for (size_t i = 0; i < n; i++)
			fprintf(f, "%s\n", line[i]);
		free(line);
		free(rows);
	}
	free(tables);
	assert_int_equal(fclose(f), 0);
	return out;
}

void kh_test_sql_ids_taken(const char *url, const char *table)
{
	char sql[300];

	if (!is_pg(url))
		return;
	snprintf(sql, sizeof sql, "SELECT setval(pg_get_serial_sequence('%s', 'id'), (SELECT max(id) FROM %s))", table,
		 table);
	kh_test_pg_exec(url, sql);
}

uint8_t *kh_test_slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *b;
	long n;
	assert_non_null(f);
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	n = ftell(f);
	assert_true(n >= 0);
	rewind(f);
	assert_non_null(b = malloc((size_t)n + 1));
	assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
	b[n] = 0;
	fclose(f);
	*len = (size_t)n;
	return b;
}
