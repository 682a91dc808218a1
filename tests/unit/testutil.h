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

#endif
