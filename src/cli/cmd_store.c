/*
 * keyhole store: the operator's tools for the center's database, on SQLite or PostgreSQL. `check`
 * reads a store and says whether its integrity and the center's invariants hold; `copy` moves
 * every row of one store into a new, empty one (SQLite to PostgreSQL and back) and verifies it.
 * The work is the store's (kh_store_invariants, kh_store_copy: src/store/check.c, copy.c); this
 * file is options and output. See keyhole-store(1).
 */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "keyhole/log.h"
#include "keyhole/store.h"

static const char check_help[] =
	"usage: keyhole store check --db DB [--json]\n"
	"\n"
	"Check a center's database, reading only, in one read transaction (a center may go on\n"
	"serving): the database's own integrity (SQLite: integrity_check and foreign_key_check;\n"
	"PostgreSQL: every foreign key present, validated and enforced), that its schema is this\n"
	"program's, and the center's invariants: EMM sequence numbers never handed out twice, an\n"
	"upload block processed once, a purchase invoiced once, a reload id issued once, one\n"
	"record per Idempotency-Key, bulk jobs and key rotations within their bounds, and the\n"
	"escrow's ledger balanced as keyhole escrow audit checks it. All hold:\n"
	"one line 'ok: ...' and exit 0. Else one line per broken invariant on standard output\n"
	"(its name, table, how many rows, a few keys; never a secret column) and exit 1.\n"
	"\n"
	"      --db DB            the center's database: an SQLite file, FILE or sqlite:FILE (never\n"
	"                         created), or postgresql://... as libpq takes it; never migrated\n"
	"      --json             print the report as one JSON document\n";

static const char copy_help[] =
	"usage: keyhole store copy --from DB --to DB [--json]\n"
	"\n"
	"Copy every row of a center's database into a new, empty one, offline (stop the centers\n"
	"first), either way between SQLite and PostgreSQL. --from is only read, in one read\n"
	"transaction; its schema must be this program's (open it once with this version first).\n"
	"--to must be an SQLite file that does not exist yet, an empty PostgreSQL database, or a\n"
	"store of this version with no rows; anything else is refused and left unchanged. Every\n"
	"table is copied in one transaction, PostgreSQL's id sequences moved past the copied ids,\n"
	"then each table is read back from both sides: rows and a SHA-256 checksum per table are\n"
	"printed, and any difference fails the copy before it is committed.\n"
	"\n"
	"      --from DB          the database copied: FILE, sqlite:FILE or postgresql://...\n"
	"      --to DB            the new database: FILE, sqlite:FILE (created, mode 0600) or\n"
	"                         postgresql://... (the database must exist, without tables)\n"
	"      --json             print the report as one JSON document\n";

static void hex(const uint8_t *p, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		snprintf(out + 2 * i, 3, "%02x", p[i]);
}

/* ---- check ---- */

struct check_out {
	int json;
	json_t *arr;
};

static kh_err finding(void *arg, const struct kh_store_finding *f)
{
	struct check_out *o = arg;

	if (!o->json) {
		printf("broken: %s: table %s: %lld row(s): %s; e.g. %s\n", f->name, f->table, (long long)f->rows, f->what,
		       f->examples);
		return KH_OK;
	}
	if (json_array_append_new(o->arr, json_pack("{s:s,s:s,s:s,s:I,s:s}", "invariant", f->name, "table", f->table,
						    "what", f->what, "rows", (json_int_t)f->rows, "examples",
						    f->examples)) != 0)
		return KH_ERR_NOMEM;
	return KH_OK;
}

/* The options of check (db) or copy (from, to: the others NULL), each at most once. -1 to go on,
 * else the exit status (help printed, or the usage error said). */
static int options(const char *cmd, const char *help, int argc, char **argv, const char **from, const char **to,
		   const char **db, int *json)
{
	static const struct option opts[] = {{"db", required_argument, NULL, 'D'}, {"from", required_argument, NULL, 'F'},
					     {"to", required_argument, NULL, 'O'},  {"json", no_argument, NULL, 'J'},
					     {"help", no_argument, NULL, 'h'},      {NULL, 0, NULL, 0}};
	unsigned char seen[512] = {0};
	const char *twice;
	int c;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
		if ((twice = kh_cli_twice(opts, c, seen)) != NULL)
			return kh_cli_usage(cmd, "--%s may be given once", twice);
		switch (c) {
		case 'D':
		case 'F':
		case 'O':
			if ((c == 'D' ? db : c == 'F' ? from : to) == NULL)
				return kh_cli_usage(cmd, "unknown option '%s'", argv[optind - 1]);
			*(c == 'D' ? db : c == 'F' ? from : to) = optarg;
			break;
		case 'J':
			*json = 1;
			break;
		case 'h':
			fputs(help, stdout);
			return KH_EXIT_OK;
		default:
			return kh_cli_usage(cmd, "unknown or incomplete option '%s'", argv[optind - 1]);
		}
	}
	if (optind < argc)
		return kh_cli_usage(cmd, "unexpected argument '%s'", argv[optind]);
	return -1;
}

static int cmd_check(int argc, char **argv)
{
	struct check_out o = {0};
	struct kh_store *s = NULL;
	const char *db = NULL;
	unsigned checked = 0, broken = 0;
	int rc, version = 0;
	kh_err r;

	if ((rc = options("store check", check_help, argc, argv, NULL, NULL, &db, &o.json)) != -1)
		return rc;
	if (db == NULL || *db == '\0')
		return kh_cli_usage("store check", "--db is required");
	if (getenv("KEYHOLE_LOG") == NULL)
		kh_log_set_level((enum kh_log_level)(KH_LOG_ERROR + 1)); /* the report says it all */
	if ((r = kh_store_open_as_is(db, &s)) != KH_OK)
		return kh_cli_fail("--db", r);
	if (o.json && (o.arr = json_array()) == NULL) {
		kh_store_close(s);
		return kh_cli_fail("store check", KH_ERR_NOMEM);
	}
	if ((r = kh_store_invariants(s, finding, &o, &checked, &broken)) == KH_OK)
		r = kh_store_schema_version(s, &version);
	if (r != KH_OK) {
		fprintf(stderr, "keyhole: store check: %s\n", kh_store_last_error(s)[0] ? kh_store_last_error(s) : kh_strerror(r));
		json_decref(o.arr);
		kh_store_close(s);
		return KH_EXIT_FAIL;
	}
	kh_store_close(s);
	if (o.json) {
		json_t *doc = json_pack("{s:b,s:i,s:i,s:i,s:o}", "ok", broken == 0, "schema_version", version, "checked",
					(int)checked, "broken", (int)broken, "findings", o.arr);
		if (doc == NULL || json_dumpf(doc, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER) != 0) {
			json_decref(doc);
			return kh_cli_fail("store check", KH_ERR_NOMEM);
		}
		putchar('\n');
		json_decref(doc);
	} else if (broken == 0) {
		printf("ok: %u checks hold (schema version %d)\n", checked, version);
	}
	if (broken == 0)
		return KH_EXIT_OK;
	fprintf(stderr, "keyhole: store check: %u of %u checks broken\n", broken, checked);
	return KH_EXIT_FAIL;
}

/* ---- copy ---- */

struct copy_out {
	int json;
	json_t *arr;
	int64_t rows;
};

static kh_err table_line(void *arg, const struct kh_store_copy_table *t)
{
	struct copy_out *o = arg;
	char a[65], b[65];

	hex(t->sum_from, 32, a);
	hex(t->sum_to, 32, b);
	o->rows += t->rows_from;
	if (!o->json) {
		if (t->same)
			printf("%-16s %10lld %s ok\n", t->table, (long long)t->rows_from, a);
		else
			printf("%-16s %10lld/%lld %s/%s DIFFERS\n", t->table, (long long)t->rows_from, (long long)t->rows_to, a,
			       b);
		return KH_OK;
	}
	if (json_array_append_new(o->arr, json_pack("{s:s,s:I,s:I,s:s,s:s,s:b}", "table", t->table, "rows_from",
						    (json_int_t)t->rows_from, "rows_to", (json_int_t)t->rows_to,
						    "sha256_from", a, "sha256_to", b, "same", t->same)) != 0)
		return KH_ERR_NOMEM;
	return KH_OK;
}

static int cmd_copy(int argc, char **argv)
{
	struct copy_out o = {0};
	const char *from = NULL, *to = NULL;
	char why[512];
	int rc;
	kh_err r;

	if ((rc = options("store copy", copy_help, argc, argv, &from, &to, NULL, &o.json)) != -1)
		return rc;
	if (from == NULL || *from == '\0' || to == NULL || *to == '\0')
		return kh_cli_usage("store copy", "--from and --to are both required");
	if (strcmp(from, to) == 0)
		return kh_cli_usage("store copy", "--from and --to name the same database");
	if (getenv("KEYHOLE_LOG") == NULL)
		kh_log_set_level((enum kh_log_level)(KH_LOG_ERROR + 1));
	if (o.json && (o.arr = json_array()) == NULL)
		return kh_cli_fail("store copy", KH_ERR_NOMEM);
	r = kh_store_copy(from, to, table_line, &o, why, sizeof why);
	if (o.json) {
		json_t *doc = json_pack("{s:b,s:I,s:o}", "ok", r == KH_OK, "rows", (json_int_t)o.rows, "tables", o.arr);
		if (doc == NULL || json_dumpf(doc, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER) != 0) {
			json_decref(doc);
			return kh_cli_fail("store copy", KH_ERR_NOMEM);
		}
		putchar('\n');
		json_decref(doc);
	} else if (r == KH_OK) {
		printf("copied and verified: %lld rows\n", (long long)o.rows);
	}
	if (r != KH_OK) {
		fprintf(stderr, "keyhole: store copy: %s\n", why[0] ? why : kh_strerror(r));
		return KH_EXIT_FAIL;
	}
	return KH_EXIT_OK;
}

static const struct kh_cli_cmd sub[] = {
	{"check", cmd_check, "check a center's database: integrity and the center's invariants"},
	{"copy", cmd_copy, "copy a center's database into a new, empty one, verified (SQLite, PostgreSQL)"},
};

int kh_cmd_store(int argc, char **argv)
{
	return kh_cli_dispatch("store", sub, sizeof sub / sizeof sub[0], argc, argv);
}
