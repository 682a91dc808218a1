/*
 * Small checks the typed operations share (store_int.h).
 */
#include <string.h>

#include "store_int.h"

int kh__name_ok(const char *name)
{
	size_t n;

	if (name == NULL)
		return 0;
	n = strnlen(name, KH_STORE_NAME_MAX + 1);
	return n >= 1 && n <= KH_STORE_NAME_MAX;
}

int kh__u32_ok(int64_t v)
{
	return v >= 0 && v <= UINT32_MAX;
}

/* Run a prepared statement to its end; *row = 1 when it gave a row (the first is left unread). */
kh_err kh__exists_query(struct kh_store *s, const char *sql, int64_t a, int64_t b, int nbind)
{
	struct kh__stmt *st = NULL;
	int row = 0;
	kh_err r;

	if ((r = kh__stmt(s, sql, &st)) != KH_OK || (r = kh__bind_i64(st, 1, a)) != KH_OK ||
	    (nbind > 1 && (r = kh__bind_i64(st, 2, b)) != KH_OK) || (r = kh__step(st, &row)) != KH_OK)
		goto out;
	r = row ? KH_OK : KH_ERR_NOTFOUND;
out:
	kh__stmt_done(st);
	return r;
}
