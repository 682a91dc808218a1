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

#endif
