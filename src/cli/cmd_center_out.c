/*
 * keyhole center, what a person reads: a list as a table (a header line of the fields' names in
 * capitals, then one row per item, columns aligned), one item as "key: value" lines (its lists as
 * tables indented below their key). Whatever the center sends is printed on one line per value:
 * control characters become spaces. --json skips all this and prints the answer as it came.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/center.h"
#include "cli/cli.h"

/* 1 when key is in the comma-separated list hide. */
static int hidden(const char *hide, const char *key)
{
	size_t kl = strlen(key);

	for (const char *p = hide; p && *p;) {
		size_t n = strcspn(p, ",");
		if (n == kl && strncmp(p, key, n) == 0)
			return 1;
		p += n + (p[n] == ',');
	}
	return 0;
}

static int scalar(const json_t *v)
{
	return !json_is_object(v) && !json_is_array(v);
}

/* The text of a scalar (missing: "-"); a malloc'd string, NULL when out of memory. */
static char *cell(const json_t *v)
{
	char *s = NULL;

	if (!v || json_is_null(v))
		return strdup("-");
	if (json_is_string(v)) {
		if ((s = strdup(json_string_value(v))))
			for (char *p = s; *p; p++)
				if ((unsigned char)*p < 0x20 || *p == 0x7f)
					*p = ' ';
		return s;
	}
	if (json_is_integer(v))
		return asprintf(&s, "%" JSON_INTEGER_FORMAT, json_integer_value(v)) < 0 ? NULL : s;
	if (json_is_real(v))
		return asprintf(&s, "%g", json_real_value(v)) < 0 ? NULL : s;
	return strdup(json_is_true(v) ? "true" : "false");
}

/* Columns on a terminal: UTF-8 continuation bytes take none. */
static size_t width(const char *s)
{
	size_t n = 0;
	for (; *s; s++)
		n += ((unsigned char)*s & 0xC0) != 0x80;
	return n;
}

int kh_cli_print_table(FILE *f, const char *indent, const json_t *items, const char *hide, const char *what)
{
	json_t *cols = json_array(); /* the column names, in the order they first appear */
	const json_t *it, *v;
	const char *k;
	size_t i, j, ncol, *w = NULL;
	char *s;
	int rc = KH_EXIT_FAIL;

	if (!cols)
		return kh_cli_fail("center", KH_ERR_NOMEM);
	json_array_foreach(items, i, it) {
		json_object_foreach((json_t *)it, k, v) {
			int have = 0;
			if (!scalar(v) || hidden(hide, k))
				continue;
			for (j = 0; j < json_array_size(cols) && !have; j++)
				have = strcmp(json_string_value(json_array_get(cols, j)), k) == 0;
			if (!have && json_array_append_new(cols, json_string(k)) != 0)
				goto out;
		}
	}
	if ((ncol = json_array_size(cols)) == 0) {
		fprintf(f, "%sno %s\n", indent, what);
		rc = KH_EXIT_OK;
		goto out;
	}
	if (!(w = calloc(ncol, sizeof *w)))
		goto out;
	for (j = 0; j < ncol; j++)
		w[j] = strlen(json_string_value(json_array_get(cols, j)));
	json_array_foreach(items, i, it) {
		for (j = 0; j < ncol; j++) {
			if (!(s = cell(json_object_get(it, json_string_value(json_array_get(cols, j))))))
				goto out;
			if (width(s) > w[j])
				w[j] = width(s);
			free(s);
		}
	}
	fputs(indent, f);
	for (j = 0; j < ncol; j++) {
		const char *name = json_string_value(json_array_get(cols, j));
		for (const char *p = name; *p; p++)
			fputc(*p >= 'a' && *p <= 'z' ? *p - 'a' + 'A' : *p, f);
		if (j + 1 < ncol)
			fprintf(f, "%*s", (int)(w[j] - strlen(name) + 2), "");
	}
	fputc('\n', f);
	json_array_foreach(items, i, it) {
		fputs(indent, f);
		for (j = 0; j < ncol; j++) {
			if (!(s = cell(json_object_get(it, json_string_value(json_array_get(cols, j))))))
				goto out;
			fputs(s, f);
			if (j + 1 < ncol)
				fprintf(f, "%*s", (int)(w[j] - width(s) + 2), "");
			free(s);
		}
		fputc('\n', f);
	}
	rc = KH_EXIT_OK;
out:
	if (rc != KH_EXIT_OK)
		kh_cli_fail("center", KH_ERR_NOMEM);
	free(w);
	json_decref(cols);
	return rc;
}

int kh_cli_print_item(FILE *f, const char *indent, const json_t *obj, const char *hide)
{
	const json_t *v, *e;
	const char *k;
	char *s, *deeper = NULL;
	size_t i;
	int rc = KH_EXIT_FAIL;

	if (asprintf(&deeper, "%s  ", indent) < 0)
		return kh_cli_fail("center", KH_ERR_NOMEM);
	json_object_foreach((json_t *)obj, k, v) {
		if (hidden(hide, k))
			continue;
		if (json_is_object(v)) {
			fprintf(f, "%s%s:\n", indent, k);
			if (kh_cli_print_item(f, deeper, v, hide) != KH_EXIT_OK)
				goto out;
		} else if (json_is_array(v) && json_array_size(v) > 0 && json_is_object(json_array_get(v, 0))) {
			fprintf(f, "%s%s:\n", indent, k);
			if (kh_cli_print_table(f, deeper, v, hide, k) != KH_EXIT_OK)
				goto out;
		} else if (json_is_array(v)) {
			fprintf(f, "%s%s:%s", indent, k, json_array_size(v) ? "" : " none");
			json_array_foreach(v, i, e) {
				if (!(s = cell(scalar(e) ? e : NULL)))
					goto nomem;
				fprintf(f, "%s %s", i ? "," : "", s);
				free(s);
			}
			fputc('\n', f);
		} else {
			if (!(s = cell(v)))
				goto nomem;
			fprintf(f, "%s%s: %s\n", indent, k, s);
			free(s);
		}
	}
	rc = KH_EXIT_OK;
	goto out;
nomem:
	kh_cli_fail("center", KH_ERR_NOMEM);
out:
	free(deeper);
	return rc;
}
