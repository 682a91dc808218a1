/* Helpers for the unit tests (testutil.h). */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
