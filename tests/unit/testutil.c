/* Helpers for the unit tests (testutil.h). */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef KH_HAVE_PG
#include <libpq-fe.h>
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

static PGresult *pg_run(const char *url, const char *sql)
{
	PGconn *c = PQconnectdb(url);
	PGresult *res;

	if (PQstatus(c) != CONNECTION_OK)
		fail_msg("test database %s: %s", url, PQerrorMessage(c));
	PQsetNoticeProcessor(c, quiet, NULL);
	res = PQexec(c, sql);
	if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK)
		fail_msg("%s: %s", sql, PQerrorMessage(c));
	PQfinish(c);
	return res;
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
#else
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
		db_of(url, db, sizeof db);
		snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", db);
		kh_test_pg_exec(getenv("KH_TEST_PG_URL"), sql);
	}
	free(url);
}
