/*
 * The store's tools (src/store/check.c, copy.c; docs/internals/store.md, "Copying and checking a
 * store"), on the real store, once per backend (unit/test_store_check on SQLite,
 * unit/test_store_check_pg on the test cluster). What it asserts:
 * - a store seeded with consistent rows of every table passes the check (none broken), and each
 *   invariant, broken on purpose with raw SQL behind the store's back, is found by its name with
 *   the number of rows at fault (and its keys, never a secret column); an older schema is found
 *   as such and nothing else is read;
 * - the copy's one list of tables and columns is exactly the live schema of a freshly migrated
 *   store (sqlite_master / information_schema): a migration that adds a table or a column
 *   without adding it to the copy fails here;
 * - a copy to the other backend and back gives every table the same rows and checksums, passes
 *   the check, keeps a card replaced by a card of a higher UA, and moves the id generators past
 *   the copied ids (the next subscriber added gets the next id);
 * - refusals leave the target as it was: a target with rows, the same database twice, a source
 *   of an older schema (neither migrated), a target that cannot be reached; a row the target
 *   cannot hold as it is (text with a NUL byte) fails the verification and nothing is
 *   committed (an SQLite target file the copy created is removed).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "keyhole/store.h"
#include "testutil.h"

struct ctx {
	char *dir;
	int pg;
	char *db; /* the store's URL */
};

static int setup(void **state)
{
	struct ctx *c = calloc(1, sizeof *c);

	assert_non_null(c);
	c->dir = kh_test_tmpdir();
	c->pg = kh_test_pg();
	*state = c;
	return 0;
}

static int teardown(void **state)
{
	struct ctx *c = *state;

	kh_test_rmdir(c->dir);
	free(c);
	return 0;
}

static const char *path_of(const char *url)
{
	return strncmp(url, "sqlite:", 7) == 0 ? url + 7 : url;
}

static int is_pg(const char *url)
{
	return strncmp(url, "postgres", 8) == 0;
}

/* SQL in SQLite's words; for PostgreSQL, X'..' blob literals become '\x..'::bytea. */
static char *dialect(const char *url, const char *sql)
{
	char *out = malloc(strlen(sql) * 2 + 1), *o = out;

	assert_non_null(out);
	for (const char *p = sql; *p; p++) {
		if (is_pg(url) && p[0] == 'X' && p[1] == '\'' && (p == sql || p[-1] == ' ' || p[-1] == '(' || p[-1] == ',')) {
			const char *end = strchr(p + 2, '\'');
			assert_non_null(end);
			o += sprintf(o, "'\\x%.*s'::bytea", (int)(end - p - 2), p + 2);
			p = end;
			continue;
		}
		*o++ = *p;
	}
	*o = '\0';
	return out;
}

/* SQL run on the database directly, behind the store's back (SQLite: foreign keys off). */
static void raw(const char *url, const char *sql)
{
	char *text = dialect(url, sql);

	kh_test_sql_exec(path_of(url), text);
	free(text);
}

static int64_t raw_int(const char *url, const char *sql)
{
	return kh_test_sql_int(path_of(url), sql);
}

/* Consistent rows in every table, as the center would leave them. */
static const char seed_sql[] =
	"INSERT INTO subscribers (id, name, created_at) VALUES (1, 'S1', 1000), (2, 'S2', 1000);\n"
	"INSERT INTO products (id, name) VALUES (7, 'P');\n"
	"INSERT INTO channels (id, name, product_id) VALUES (1, 'C', 7);\n"
	"INSERT INTO events (id, name, price, channel_id, start_time, end_time) VALUES (5, 'E', 10, 1, 0, 100);\n"
	"INSERT INTO cards (ua, role, cert, subscriber_id, state, created_at, last_reload_id) VALUES\n"
	"  (12, 'card', X'3082', 1, 'active', 1000, 2), (13, 'card', X'3083', 2, 'active', 1000, 1),\n"
	"  (14, 'card', X'3084', 2, 'active', 1000, 0);\n"
	"INSERT INTO cards (ua, role, cert, subscriber_id, state, replaced_by, created_at) VALUES\n"
	"  (11, 'card', X'3081', 2, 'replaced', 14, 900);\n"
	"INSERT INTO subscriptions (subscriber_id, product_id, start_time, end_time) VALUES (1, 7, 0, 100);\n"
	"UPDATE credit_policy SET initial_credit = 100, reload_amount = 10;\n"
	"INSERT INTO service_keys (key_id, version, key, created_at) VALUES\n"
	"  (1, 1, X'0101010101010101010101010101010101010101010101010101010101010101', 1000),\n"
	"  (1, 2, X'0202020202020202020202020202020202020202020202020202020202020202', 1001);\n"
	"INSERT INTO rotation_jobs (key_id, version, last_ua, emms, done, created_at) VALUES (1, 2, 14, 3, 1, 1001);\n"
	"INSERT INTO emm_queue (id, address_type, address, seq, section, created_at) VALUES\n"
	"  (1, 0, 12, 1, X'AA', 1000), (2, 0, 12, 2, X'AB', 1000), (3, 0, 13, 1, X'AC', 1000);\n"
	"INSERT INTO emm_seq (address_type, address, last_seq) VALUES (0, 12, 2), (0, 13, 1);\n"
	"UPDATE emm_queue SET pos = id;\n"
	"UPDATE emm_order SET last_pos = 3;\n"
	"INSERT INTO upload_sessions (id, ua, nonce, created_at, closed_at) VALUES\n"
	"  (1, 12, X'00112233445566778899AABBCCDDEEFF', 1000, 1001),\n"
	"  (2, 13, X'10112233445566778899AABBCCDDEEFF', 1000, 1001);\n"
	"INSERT INTO usage_blocks (ua, block_seq, received_at, verdict, session_id, hash, credit, last_reload) VALUES\n"
	"  (12, 1, 1001, 'ok', 1, X'1111111111111111111111111111111111111111111111111111111111111111', 90, 2),\n"
	"  (12, 2, 1002, 'ok', 1, X'2222222222222222222222222222222222222222222222222222222222222222', 80, 2),\n"
	"  (13, 1, 1001, 'tampered', 2, NULL, NULL, NULL);\n"
	"INSERT INTO usage_clones (ua, block_seq, hash, session_id, received_at) VALUES\n"
	"  (12, 1, X'3333333333333333333333333333333333333333333333333333333333333333', 1, 1003);\n"
	"INSERT INTO purchases (id, ua, event_id, price, time, block_ua, block_seq) VALUES\n"
	"  (1, 12, 5, 10, 50, 12, 1), (2, 12, 5, 10, 60, 12, 2);\n"
	"INSERT INTO invoices (id, subscriber_id, ua, event_id, price, time, created_at, block_price) VALUES\n"
	"  (1, 1, 12, 5, 10, 50, 1001, 10), (2, 1, 12, 5, 10, 60, 1002, 10);\n"
	"INSERT INTO credit_reloads (ua, reload_id, amount, created_at) VALUES\n"
	"  (12, 1, 100, 1000), (12, 2, 10, 1001), (13, 1, 100, 1000);\n"
	"INSERT INTO idempotency (key, request_hash, response, created_at) VALUES\n"
	"  ('k1', X'4444444444444444444444444444444444444444444444444444444444444444', X'7B7D', 1000),\n"
	"  ('bulk-1', X'5555555555555555555555555555555555555555555555555555555555555555', X'7B7D', 1000);\n"
	"INSERT INTO bulk_jobs (key, request_hash, product_id, start_time, end_time, all_subscribers,\n"
	"  max_subscriber_id, last_subscriber_id, subscribers, emms_queued, skipped, chunks, done, created_at,\n"
	"  updated_at) VALUES ('bulk-1', X'5555555555555555555555555555555555555555555555555555555555555555', 7, 0,\n"
	"  100, 1, 2, 2, 2, 2, 0, 1, 1, 1000, 1000);\n"
	"INSERT INTO dist_accounts (id, name, pw_salt, pw_hash, balance, created_at) VALUES\n"
	"  (1, 'alice', X'11111111111111111111111111111111', X'2222222222222222222222222222222222222222222222222222222222222222', 60, 1000);\n"
	"INSERT INTO dist_programs (id, name, version, price, manifest, program, created_at) VALUES\n"
	"  (1, 'editor', 1, 40, X'AA', X'BB', 1000);\n"
	"INSERT INTO dist_sessions (token_hash, account_id, expires_at) VALUES (X'7777777777777777777777777777777777777777777777777777777777777777', 1, 2000);\n"
	"INSERT INTO dist_deliveries (id, account_id, program_id, state, fp, peer, kx_sealed, refetch, created_at,\n"
	"  updated_at) VALUES (1, 1, 1, 'charged', X'7777777777777777777777777777777777777777777777777777777777777777', X'CC', X'DD', NULL, 1000, 1001);\n"
	"INSERT INTO dist_receipts (id, delivery_id, account_id, program_id, fp, price, time) VALUES\n"
	"  (X'66666666666666666666666666666666', 1, 1, 1, X'7777777777777777777777777777777777777777777777777777777777777777', 40, 1001);\n"
	"INSERT INTO dist_ledger (id, account_id, amount, receipt_id, created_at) VALUES\n"
	"  (1, 1, 100, NULL, 1000), (2, 1, -40, X'66666666666666666666666666666666', 1001);\n";

/* A new store (migrated by the store itself), seeded: its URL (kh_test_db_drop it). */
static char *seeded(struct ctx *c, const char *name)
{
	char *url = kh_test_db(c->dir, name);
	struct kh_store *s = NULL;

	assert_int_equal(kh_store_open(url, &s), KH_OK);
	kh_store_close(s);
	raw(url, seed_sql);
	return url;
}

struct found {
	const char *want;
	int64_t rows;
	int seen;
	char examples[256];
	unsigned all;
};

static kh_err on_finding(void *arg, const struct kh_store_finding *f)
{
	struct found *x = arg;

	x->all++;
	assert_non_null(f->table);
	assert_non_null(f->what);
	if (x->want && strcmp(f->name, x->want) == 0) {
		x->seen = 1;
		x->rows = f->rows;
		snprintf(x->examples, sizeof x->examples, "%s", f->examples);
	}
	return KH_OK;
}

/* Check url as it is: the number broken, and what was found of want. */
static unsigned check(const char *url, struct found *x)
{
	struct kh_store *s = NULL;
	unsigned checked = 0, broken = 0;

	assert_int_equal(kh_store_open_as_is(url, &s), KH_OK);
	assert_int_equal(kh_store_invariants(s, on_finding, x, &checked, &broken), KH_OK);
	kh_store_close(s);
	assert_true(checked >= 1);
	assert_int_equal(broken, x->all);
	return broken;
}

struct breakage {
	const char *name;     /* the invariant the check must name */
	const char *sqlite;   /* how to break it on each backend (NULL: not this backend's) */
	const char *pg;
	int64_t rows;         /* rows at fault */
	const char *example;  /* part of the examples */
};

/* Rebuild TABLE without its constraints (CREATE TABLE AS), so a duplicate key can be inserted. */
#define BARE(t) "CREATE TABLE bare AS SELECT * FROM " t "; DROP TABLE " t "; ALTER TABLE bare RENAME TO " t "; "
#define BARE_PG(t) "CREATE TABLE bare AS SELECT * FROM " t "; DROP TABLE " t " CASCADE; ALTER TABLE bare RENAME TO " t "; "
#define BOTH(sql) sql, sql

static const struct breakage breaks[] = {
	{"sqlite_integrity", "PRAGMA ignore_check_constraints = 1; UPDATE events SET price = -1 WHERE id = 5", NULL, 1,
	 "CHECK constraint failed"},
	{"sqlite_foreign_keys", "UPDATE channels SET product_id = 99 WHERE id = 1", NULL, 1, "table=channels"},
	{"pg_foreign_keys", NULL, "ALTER TABLE channels DROP CONSTRAINT channels_product_id_fkey", 1,
	 "table=channels references=products"},
	{"pg_foreign_keys", NULL, "ALTER TABLE events DISABLE TRIGGER ALL", 1, "table=events references=channels"},
	{"emm_seq_unique", BOTH(BARE("emm_queue") "INSERT INTO emm_queue SELECT * FROM emm_queue WHERE id = 1"), 1,
	 "address_type=0 address=12 seq=1"},
	{"emm_seq_behind", BOTH("UPDATE emm_seq SET last_seq = 1 WHERE address = 12"), 1, "address_type=0 address=12"},
	{"emm_seq_behind", BOTH("DELETE FROM emm_seq WHERE address = 13"), 1, "address=13"},
	{"emm_pos_behind", BOTH("UPDATE emm_order SET last_pos = 2"), 1, "id=3"},
	{"session_nonce_once",
	 BARE("upload_sessions") "UPDATE upload_sessions SET nonce = (SELECT nonce FROM upload_sessions WHERE id = 1)",
	 BARE_PG("upload_sessions") "UPDATE upload_sessions SET nonce = (SELECT nonce FROM upload_sessions WHERE id = 1)",
	 1, "id=1"},
	{"block_once", BARE("usage_blocks") "INSERT INTO usage_blocks SELECT * FROM usage_blocks WHERE block_seq = 2",
	 BARE_PG("usage_blocks") "INSERT INTO usage_blocks SELECT * FROM usage_blocks WHERE block_seq = 2", 1,
	 "ua=12 block_seq=2"},
	{"purchase_block", BOTH("UPDATE usage_blocks SET verdict = 'tampered' WHERE ua = 12 AND block_seq = 2"), 1,
	 "id=2"},
	{"purchase_block", "UPDATE purchases SET block_seq = 9 WHERE id = 1",
	 "SET session_replication_role = replica; UPDATE purchases SET block_seq = 9 WHERE id = 1", 1, "id=1"},
	{"purchase_once", BOTH(BARE("purchases") "INSERT INTO purchases SELECT * FROM purchases WHERE id = 2"), 1,
	 "ua=12 event_id=5 time=60"},
	{"invoice_once", BOTH(BARE("invoices") "INSERT INTO invoices SELECT * FROM invoices WHERE id = 1"), 1,
	 "ua=12 event_id=5 time=50"},
	{"invoice_purchase", BOTH("DELETE FROM purchases WHERE id = 2"), 1, "id=2"},
	{"reload_once", BOTH(BARE("credit_reloads") "INSERT INTO credit_reloads SELECT * FROM credit_reloads WHERE ua = 13"),
	 1, "ua=13 reload_id=1"},
	{"reload_issued", BOTH("UPDATE cards SET last_reload_id = 1 WHERE ua = 12"), 1, "ua=12 reload_id=2"},
	{"reload_reported", BOTH("UPDATE usage_blocks SET last_reload = 5 WHERE ua = 12 AND block_seq = 2"), 1,
	 "ua=12 block_seq=2"},
	{"idem_once", BOTH(BARE("idempotency") "INSERT INTO idempotency SELECT * FROM idempotency WHERE key = 'k1'"), 1,
	 "key=k1"},
	{"bulk_bounds", BOTH("UPDATE bulk_jobs SET last_subscriber_id = 3"), 1, "key=bulk-1"},
	{"bulk_done", BOTH("UPDATE bulk_jobs SET last_subscriber_id = 1"), 1, "key=bulk-1"},
	{"rotation_pending",
	 BOTH("INSERT INTO rotation_jobs (key_id, version, last_ua, emms, done, created_at) VALUES (1, 1, 12, 1, 0, 999)"),
	 1, "key_id=1 version=1"},
	{"rotation_bounds", BOTH("UPDATE rotation_jobs SET last_ua = 99"), 1, "key_id=1 version=2"},
	{"dist_ledger_balance", BOTH("UPDATE dist_accounts SET balance = 61"), 1, "id=1"},
	{"dist_receipt_charged", BOTH("UPDATE dist_deliveries SET state = 'keyed'"), 1, "delivery_id=1"},
	/* the latest migration's row gone: the store reads as one version older */
	{"schema_version", BOTH("DELETE FROM schema_migrations WHERE version = (SELECT max(version) FROM schema_migrations)"),
	 1, "version="},
};

/* Each invariant broken on a healthy store is found by its name, with its rows and keys. */
static void test_breaks(void **state)
{
	struct ctx *c = *state;
	unsigned tried = 0;

	for (size_t i = 0; i < sizeof breaks / sizeof breaks[0]; i++) {
		const struct breakage *b = &breaks[i];
		const char *sql = c->pg ? b->pg : b->sqlite;
		struct found healthy = {0}, x = {b->name, 0, 0, "", 0};
		char *url, name[32];
		unsigned broken;

		if (sql == NULL)
			continue;
		snprintf(name, sizeof name, "c%zu.db", i);
		url = seeded(c, name);
		assert_int_equal(check(url, &healthy), 0);
		raw(url, sql);
		broken = check(url, &x);
		if (!x.seen)
			fail_msg("%s: not found after \"%s\" (%u others)", b->name, sql, broken);
		assert_int_equal(x.rows, b->rows);
		if (strstr(x.examples, b->example) == NULL)
			fail_msg("%s: examples \"%s\" lack \"%s\"", b->name, x.examples, b->example);
		/* an older schema is all that is said */
		if (strcmp(b->name, "schema_version") == 0)
			assert_int_equal(broken, 1);
		kh_test_db_drop(url);
		tried++;
	}
	assert_true(tried >= 20);
}

/* A finding never shows a secret column's value: the service key bytes are nowhere. */
static void test_no_secret(void **state)
{
	struct ctx *c = *state;
	char *url = seeded(c, "center.db");
	struct found x = {"rotation_bounds", 0, 0, "", 0};

	raw(url, "UPDATE rotation_jobs SET last_ua = 99; UPDATE cards SET last_reload_id = 0 WHERE ua = 12");
	assert_true(check(url, &x) >= 2);
	assert_null(strstr(x.examples, "0202"));
	kh_test_db_drop(url);
}

/* "a, b" lists into one sorted line "table.a table.b ..." */
static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static char *sorted_line(char **items, size_t n)
{
	size_t len = 1;
	char *out;

	qsort(items, n, sizeof *items, cmp_str);
	for (size_t i = 0; i < n; i++)
		len += strlen(items[i]) + 1;
	assert_non_null(out = calloc(1, len));
	for (size_t i = 0; i < n; i++) {
		strcat(out, items[i]);
		strcat(out, " ");
		free(items[i]);
	}
	return out;
}

/* The copy's list of tables and columns is the live schema of a new store, exactly. */
static void test_tables_match_schema(void **state)
{
	struct ctx *c = *state;
	char *url = kh_test_db(c->dir, "schema.db"), *items[512], *want, *got, *rows;
	struct kh_store *s = NULL;
	size_t n = 0;

	assert_int_equal(kh_store_open(url, &s), KH_OK);
	kh_store_close(s);
	for (size_t i = 0; i < kh_store_tables_count(); i++) {
		const char *cols, *t = kh_store_table_name(i, &cols);
		while (*cols) {
			size_t k = strcspn(cols, ",");
			assert_true(n < 512);
			assert_true(asprintf(&items[n++], "%s.%.*s", t, (int)k, cols) > 0);
			cols += k;
			cols += strspn(cols, ", ");
		}
	}
	assert_null(kh_store_table_name(kh_store_tables_count(), NULL));
	want = sorted_line(items, n);
	n = 0;
	rows = kh_test_sql_rows(path_of(url),
				is_pg(url) ? "SELECT table_name || '.' || column_name FROM information_schema.columns\n"
					     "WHERE table_schema = current_schema()\n"
					     "AND table_name NOT IN ('schema_migrations', 'application_id')"
					   : "SELECT m.name || '.' || p.name FROM sqlite_master m, pragma_table_info(m.name) p\n"
					     "WHERE m.type = 'table' AND m.name NOT IN ('schema_migrations', 'sqlite_sequence')");
	for (char *p = rows, *e; *p; p = e + 1) {
		e = strchr(p, '\n');
		assert_non_null(e);
		assert_true(n < 512);
		assert_non_null(items[n++] = strndup(p, (size_t)(e - p)));
	}
	assert_true(n > 50);
	free(rows);
	got = sorted_line(items, n);
	assert_string_equal(got, want);
	free(want);
	free(got);
	kh_test_db_drop(url);
}

/* Per table rows and checksums of a store. */
struct sums {
	size_t n;
	char line[48][128];
};

static kh_err on_sum(void *arg, const struct kh_store_copy_table *t)
{
	struct sums *x = arg;
	int k;

	assert_true(x->n < sizeof x->line / sizeof x->line[0]);
	k = snprintf(x->line[x->n], sizeof x->line[0], "%s %lld ", t->table, (long long)t->rows_from);

	assert_true(t->same);
	for (int i = 0; i < 32; i++)
		k += snprintf(x->line[x->n] + k, sizeof x->line[0] - (size_t)k, "%02x", t->sum_from[i]);
	x->n++;
	return KH_OK;
}

static void sums_of(const char *url, struct sums *x)
{
	struct kh_store *s = NULL;

	memset(x, 0, sizeof *x);
	assert_int_equal(kh_store_open_as_is(url, &s), KH_OK);
	assert_int_equal(kh_store_sums(s, on_sum, x), KH_OK);
	kh_store_close(s);
	assert_int_equal(x->n, kh_store_tables_count());
}

static void same_sums(const struct sums *a, const struct sums *b)
{
	assert_int_equal(a->n, b->n);
	for (size_t i = 0; i < a->n; i++)
		assert_string_equal(a->line[i], b->line[i]);
}

/* The id the store gives the next subscriber added to url. */
static int64_t next_subscriber(const char *url)
{
	struct kh_store *s = NULL;
	int64_t id = 0;

	assert_int_equal(kh_store_open(url, &s), KH_OK);
	assert_int_equal(kh_store_subscriber_add(s, "next", &id), KH_OK);
	kh_store_close(s);
	return id;
}

/* There and back: the same rows, checksums, invariants; ids go on after the copied ones. */
static void test_copy_roundtrip(void **state)
{
	struct ctx *c = *state;
	char *a = seeded(c, "a.db"), mid[600], back[600], why[256];
	struct sums sa, sm, sb, copied = {0};
	struct found none = {0};
	char *pgmid = NULL;

	/* SQLite: through a second file; PostgreSQL: through an SQLite file, back into a new database */
	snprintf(mid, sizeof mid, "%s/mid.db", c->dir);
	if (c->pg) {
		pgmid = kh_test_db(c->dir, "back");
		snprintf(back, sizeof back, "%s", pgmid);
	} else {
		snprintf(back, sizeof back, "sqlite:%s/back.db", c->dir);
	}
	sums_of(a, &sa);
	assert_int_equal(kh_store_copy(a, mid, on_sum, &copied, why, sizeof why), KH_OK);
	same_sums(&sa, &copied);
	assert_int_equal(kh_store_copy(mid, back, NULL, NULL, why, sizeof why), KH_OK);
	sums_of(mid, &sm);
	sums_of(back, &sb);
	same_sums(&sa, &sm);
	same_sums(&sa, &sb);
	assert_int_equal(check(mid, &none), 0);
	assert_int_equal(check(back, &none), 0);
	/* the card replaced by a card of a higher UA kept its link */
	assert_int_equal(raw_int(back, "SELECT replaced_by FROM cards WHERE ua = 11"), 14);
	/* the generators moved on: the next subscriber is 3 on both sides of the trip */
	assert_int_equal(next_subscriber(back), 3);
	assert_int_equal(next_subscriber(mid), 3);
	kh_test_db_drop(pgmid);
	kh_test_db_drop(a);
}

/* A deleted id stays handed out: a source whose last subscriber was deleted copies its generator. */
static void test_copy_generator(void **state)
{
	struct ctx *c = *state;
	char *a = seeded(c, "a.db"), *b = kh_test_db(c->dir, "b.db"), why[256];

	/* subscriber 3 made by the store (its generator moves), then deleted behind its back */
	if (c->pg) /* the seed named its ids: the identity is moved past them first */
		raw(a, "SELECT setval(pg_get_serial_sequence('subscribers', 'id'), 2)");
	assert_int_equal(next_subscriber(a), 3);
	raw(a, "DELETE FROM subscribers WHERE id = 3");
	assert_int_equal(kh_store_copy(a, b, NULL, NULL, why, sizeof why), KH_OK);
	assert_int_equal(next_subscriber(b), 4);
	kh_test_db_drop(b);
	kh_test_db_drop(a);
}

/* Refusals change nothing, on either side. */
static void test_copy_refusals(void **state)
{
	struct ctx *c = *state;
	char *a = seeded(c, "a.db"), *b = seeded(c, "b.db"), *e = kh_test_db(c->dir, "e.db"), why[256], bad[700],
	     same[700], nul[600];
	struct sums sa, sb, sa2, sb2;
	struct kh_store *s = NULL;

	sums_of(a, &sa);
	sums_of(b, &sb);
	/* a target with rows */
	assert_int_equal(kh_store_copy(a, b, NULL, NULL, why, sizeof why), KH_ERR_EXISTS);
	assert_non_null(strstr(why, "not an empty store"));
	/* the same database, named otherwise */
	if (is_pg(a))
		snprintf(same, sizeof same, "%s&connect_timeout=10", a);
	else
		snprintf(same, sizeof same, "sqlite:%s", path_of(a));
	assert_int_equal(kh_store_copy(a, same, NULL, NULL, why, sizeof why), KH_ERR_INVAL);
	assert_non_null(strstr(why, "same database"));
	/* a target that cannot be reached (PostgreSQL), or in no directory (SQLite) */
	if (is_pg(a))
		snprintf(bad, sizeof bad, "postgresql:///nope?host=%s/nosock&port=5432&connect_timeout=2", c->dir);
	else
		snprintf(bad, sizeof bad, "%s/no/such/dir/x.db", c->dir);
	assert_int_not_equal(kh_store_copy(a, bad, NULL, NULL, why, sizeof why), KH_OK);
	assert_true(why[0] != '\0');
	/* a source of an older schema: refused, and neither side migrated */
	raw(b, "DELETE FROM schema_migrations WHERE version = (SELECT max(version) FROM schema_migrations)");
	assert_int_equal(kh_store_copy(b, e, NULL, NULL, why, sizeof why), KH_ERR_VERSION);
	assert_int_equal(raw_int(b, "SELECT max(version) FROM schema_migrations"), kh_store_schema_latest() - 1);
	if (is_pg(e))
		assert_int_equal(raw_int(e, "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()"),
				 0);
	else
		assert_int_equal(access(path_of(e), F_OK), -1);
	{
		char sql[100];
		snprintf(sql, sizeof sql, "INSERT INTO schema_migrations (version, applied_at) VALUES (%d, 0)",
			 kh_store_schema_latest());
		raw(b, sql);
	}
	sums_of(a, &sa2);
	sums_of(b, &sb2);
	same_sums(&sa, &sa2);
	same_sums(&sb, &sb2);
	/* text with a NUL byte (SQLite holds it; bound as text it is cut): the verification fails and
	 * nothing is committed; a file made by the copy is removed */
	if (!is_pg(a)) {
		raw(a, "UPDATE subscribers SET name = CAST(X'610062' AS TEXT) WHERE id = 2");
		snprintf(nul, sizeof nul, "%s/nul.db", c->dir);
		assert_int_equal(kh_store_copy(a, nul, NULL, NULL, why, sizeof why), KH_ERR_DB);
		assert_non_null(strstr(why, "verification failed: table subscribers"));
		assert_int_equal(access(nul, F_OK), -1);
		/* a target that exists (made empty by the store) stays with no row */
		assert_int_equal(kh_store_open(e, &s), KH_OK);
		kh_store_close(s);
		assert_int_equal(kh_store_copy(a, e, NULL, NULL, why, sizeof why), KH_ERR_DB);
		assert_int_equal(raw_int(e, "SELECT count(*) FROM subscribers"), 0);
	}
	kh_test_db_drop(e);
	kh_test_db_drop(b);
	kh_test_db_drop(a);
}

/* A NUL byte in text, from an SQLite source into a PostgreSQL target: refused, nothing committed. */
static void test_copy_verify_pg(void **state)
{
	struct ctx *c = *state;
	char src[600], why[256], *e;
	struct kh_store *s = NULL;

	if (!c->pg)
		skip();
	snprintf(src, sizeof src, "sqlite:%s/src.db", c->dir);
	assert_int_equal(kh_store_open(src, &s), KH_OK);
	assert_int_equal(kh_store_subscriber_add(s, "x", &(int64_t){0}), KH_OK);
	kh_store_close(s);
	raw(src, "UPDATE subscribers SET name = CAST(X'610062' AS TEXT)");
	e = kh_test_db(c->dir, "e");
	/* PostgreSQL refuses the NUL (22021), or takes "a": either way nothing is committed */
	assert_int_not_equal(kh_store_copy(src, e, NULL, NULL, why, sizeof why), KH_OK);
	assert_int_equal(raw_int(e, "SELECT count(*) FROM subscribers"), 0);
	kh_test_db_drop(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_breaks, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_secret, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tables_match_schema, setup, teardown),
		cmocka_unit_test_setup_teardown(test_copy_roundtrip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_copy_generator, setup, teardown),
		cmocka_unit_test_setup_teardown(test_copy_refusals, setup, teardown),
		cmocka_unit_test_setup_teardown(test_copy_verify_pg, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
