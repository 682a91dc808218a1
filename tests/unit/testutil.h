/*
 * Shared helpers for the cmocka unit tests: locating source-tree files, hex, temporary
 * directories. cmocka's headers need the standard includes below before <cmocka.h>.
 */
#ifndef KH_TESTUTIL_H
#define KH_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

/* Absolute path of a file in the source tree (static buffer, overwritten by the next call). */
const char *kh_test_src(const char *rel);
/* Decode hex (whitespace ignored) into out; returns the byte count, or -1 on bad input/overflow. */
long kh_test_unhex(const char *hex, uint8_t *out, size_t cap);
/* Make a fresh temporary directory (mkdtemp under $TMPDIR or /tmp); returns a malloc'd path. */
char *kh_test_tmpdir(void);
/* rm -rf of a directory made by kh_test_tmpdir, and free(path). */
void kh_test_rmdir(char *path);
/* A whole file, NUL-terminated (malloc'd); *len its size. Asserts it can be read. */
uint8_t *kh_test_slurp(const char *path, size_t *len);

/*
 * The store a test uses. Without KH_TEST_PG_URL: the SQLite file DIR/NAME. With it (CTest's pg
 * fixture sets it to the admin URL of the throwaway cluster tests/tools/pgtmp.sh started): a
 * fresh, empty PostgreSQL database made for this call on that cluster, and its URL. malloc'd;
 * give it back to kh_test_db_drop, which drops such a database (a file goes with its directory).
 */
int kh_test_pg(void);
char *kh_test_db(const char *dir, const char *name);
void kh_test_db_drop(char *url);
/* SQL run directly on a PostgreSQL test database, behind the store's back: the first column of
 * the first row as an integer (a boolean as 1 or 0), -1 when there is no row or it is NULL. */
int64_t kh_test_pg_int(const char *url, const char *sql);
void kh_test_pg_exec(const char *url, const char *sql);
/* Every row of sql, fields joined by '|', rows ended by '\n', NULL as "NULL" (malloc'd). */
char *kh_test_pg_rows(const char *url, const char *sql);
/* A PostgreSQL connection that ran BEGIN then sql and stays in that transaction (holding what
 * sql locked) until kh_test_pg_release rolls it back and closes it. */
void *kh_test_pg_hold(const char *url, const char *sql);
void kh_test_pg_release(void *held);

/*
 * The same on a test's store whichever backend it is (a postgres:// URL or an SQLite file, as
 * kh_test_db made it), behind the store's back: SQL run on a connection of its own, which waits
 * up to 5 s for the center's write lock on SQLite. kh_test_sql_exec takes SQLite's randomblob(16)
 * and zeroblob(32) on PostgreSQL too.
 */
void kh_test_sql_exec(const char *url, const char *sql);
char *kh_test_sql_rows(const char *url, const char *sql);
/* The first column of the first row as an integer; -1 when there is no row or it is NULL. */
int64_t kh_test_sql_int(const char *url, const char *sql);
/* Every table of the store, every row ("[table]" then its rows ordered by the first two
 * columns), as one text: what "nothing changed" is compared on. malloc'd. */
char *kh_test_sql_dump(const char *url);
/* After rows were inserted with explicit ids into table's identity column: on PostgreSQL the
 * sequence is moved past them (SQLite's AUTOINCREMENT follows by itself). */
void kh_test_sql_ids_taken(const char *url, const char *table);

#endif
