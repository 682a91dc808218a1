/*
 * keyhole store check (docs/internals/store.md, "Copying and checking a store"): the database's
 * own integrity and the center's invariants, read in one read transaction (one snapshot), so a
 * center may go on serving while it runs. Each invariant is one SELECT of the keys that break
 * it, in a stable order: none means it holds. The queries name key columns only, never a secret
 * one (a service key, a nonce, a hash of a request), so a finding can be printed as it is.
 *
 * The SQL is common to both backends, except the integrity checks each database offers (SQLite's
 * PRAGMAs; on PostgreSQL, that the foreign keys exist, are validated and enforced), which are
 * marked with their backend's name in the table below: the one place this file speaks a dialect.
 *
 * The escrow's ledger is checked by the escrow audit's own queries (kh__escrow_checks,
 * ops_escrow_audit.c; docs/internals/ledger.md), each an invariant here named escrow_<check>:
 * where the audit stops at the first discrepancy, this reports every check broken, with its rows.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "escrow_int.h"
#include "store_int.h"

#define EXAMPLES 3

struct inv {
	const char *name, *table, *what;
	const char *backend; /* NULL: every backend; else the one whose name it is */
	const char *sql;     /* the keys that break it, one row each */
	const char *keys;    /* their names, one word each */
	const char *types;   /* i integer, t text: one per key */
};

static const struct inv invs[] = {
	/* ---- the database's own integrity ---- */
	{"sqlite_integrity", "(database)", "PRAGMA integrity_check reports a problem", "sqlite",
	 "SELECT integrity_check FROM pragma_integrity_check WHERE integrity_check <> 'ok'", "problem", "t"},
	{"sqlite_foreign_keys", "(database)", "a row refers to a row that does not exist (PRAGMA foreign_key_check)",
	 "sqlite", "SELECT \"table\", rowid, parent FROM pragma_foreign_key_check", "table rowid parent", "tit"},
	{"pg_foreign_keys", "(database)", "a foreign key of the schema is missing, not validated or not enforced",
	 "postgresql",
	 "SELECT e.t, e.p FROM (VALUES ('cards', 'subscribers'), ('cards', 'cards'), ('channels', 'products'),\n"
	 "  ('events', 'channels'), ('subscriptions', 'subscribers'), ('subscriptions', 'products'),\n"
	 "  ('usage_blocks', 'upload_sessions'), ('purchases', 'cards'), ('purchases', 'usage_blocks'),\n"
	 "  ('invoices', 'subscribers'), ('bulk_jobs', 'products'), ('rotation_jobs', 'service_keys'),\n"
	 "  ('credit_reloads', 'cards'), ('usage_clones', 'upload_sessions'), ('usage_clones', 'usage_blocks'),\n"
	 "  ('dist_sessions', 'dist_accounts'), ('dist_deliveries', 'dist_accounts'),\n"
	 "  ('dist_deliveries', 'dist_programs'), ('dist_receipts', 'dist_deliveries'),\n"
	 "  ('dist_receipts', 'dist_accounts'), ('dist_receipts', 'dist_programs'), ('dist_ledger', 'dist_accounts'),\n"
	 "  ('dist_ledger', 'dist_receipts'), ('escrow_balances', 'escrow_accounts'),\n"
	 "  ('escrow_listings', 'escrow_accounts'), ('escrow_purchases', 'escrow_listings'),\n"
	 "  ('escrow_purchases', 'escrow_accounts'), ('escrow_movements', 'escrow_accounts'),\n"
	 "  ('escrow_movements', 'escrow_purchases'), ('escrow_entries', 'escrow_movements'),\n"
	 "  ('escrow_entries', 'escrow_balances'), ('escrow_tokens', 'escrow_accounts'),\n"
	 "  ('kc_mailbox', 'kc_cards'), ('kc_sessions', 'kc_cards'))\n"
	 "  AS e(t, p)\n"
	 "WHERE NOT EXISTS (SELECT 1 FROM pg_constraint c\n"
	 "  WHERE c.contype = 'f' AND c.convalidated\n"
	 "  AND c.conrelid = to_regclass(quote_ident(current_schema()) || '.' || e.t)\n"
	 "  AND c.confrelid = to_regclass(quote_ident(current_schema()) || '.' || e.p)\n"
	 "  AND NOT EXISTS (SELECT 1 FROM pg_trigger g WHERE g.tgconstraint = c.oid AND g.tgenabled = 'D'))\n"
	 "ORDER BY 1, 2",
	 "table references", "tt"},

	/* ---- EMM sequence numbers: none handed out twice ---- */
	{"emm_seq_unique", "emm_queue", "an address has two queued EMMs with one sequence number", NULL,
	 "SELECT address_type, address, seq FROM emm_queue GROUP BY address_type, address, seq\n"
	 "HAVING count(*) > 1 ORDER BY 1, 2, 3",
	 "address_type address seq", "iii"},
	{"emm_seq_behind", "emm_seq",
	 "an address's last recorded sequence number is below one it has queued (it would be handed out again)", NULL,
	 "SELECT q.address_type, q.address FROM emm_queue q\n"
	 "LEFT JOIN emm_seq s ON s.address_type = q.address_type AND s.address = q.address\n"
	 "GROUP BY q.address_type, q.address HAVING max(q.seq) > coalesce(max(s.last_seq), 0) ORDER BY 1, 2",
	 "address_type address", "ii"},
	{"emm_pos_behind", "emm_order",
	 "the queue's last handed-out position is below an EMM's (a reader's cursor would skip or repeat)", NULL,
	 "SELECT q.id FROM emm_queue q WHERE q.pos > (SELECT coalesce(max(last_pos), 0) FROM emm_order)\n"
	 "ORDER BY 1",
	 "id", "i"},

	/* ---- uploads: a session and a block processed once ---- */
	{"session_nonce_once", "upload_sessions", "two upload sessions share one nonce", NULL,
	 "SELECT min(id) FROM upload_sessions GROUP BY nonce HAVING count(*) > 1 ORDER BY 1", "id", "i"},
	{"block_once", "usage_blocks", "a usage block (ua, block_seq) is recorded twice", NULL,
	 "SELECT ua, block_seq FROM usage_blocks GROUP BY ua, block_seq HAVING count(*) > 1 ORDER BY 1, 2",
	 "ua block_seq", "ii"},
	{"purchase_block", "purchases", "a purchase does not belong to one accepted usage block", NULL,
	 "SELECT p.id FROM purchases p WHERE NOT EXISTS (SELECT 1 FROM usage_blocks b\n"
	 "  WHERE b.ua = p.block_ua AND b.block_seq = p.block_seq AND b.verdict = 'ok') ORDER BY 1",
	 "id", "i"},
	{"purchase_once", "purchases", "a purchase (ua, event, time) is recorded twice", NULL,
	 "SELECT ua, event_id, time FROM purchases GROUP BY ua, event_id, time HAVING count(*) > 1 ORDER BY 1, 2, 3",
	 "ua event_id time", "iii"},

	/* ---- invoices: never twice, never for nothing ---- */
	{"invoice_once", "invoices", "a purchase (ua, event, time) is invoiced twice", NULL,
	 "SELECT ua, event_id, time FROM invoices GROUP BY ua, event_id, time HAVING count(*) > 1 ORDER BY 1, 2, 3",
	 "ua event_id time", "iii"},
	{"invoice_purchase", "invoices", "an invoice names no recorded purchase", NULL,
	 "SELECT i.id FROM invoices i WHERE NOT EXISTS (SELECT 1 FROM purchases p\n"
	 "  WHERE p.ua = i.ua AND p.event_id = i.event_id AND p.time = i.time) ORDER BY 1",
	 "id", "i"},

	/* ---- credit: every reload id issued once, by the card's counter ---- */
	{"reload_once", "credit_reloads", "a card's reload id is recorded twice", NULL,
	 "SELECT ua, reload_id FROM credit_reloads GROUP BY ua, reload_id HAVING count(*) > 1 ORDER BY 1, 2",
	 "ua reload_id", "ii"},
	{"reload_issued", "credit_reloads",
	 "a reload id is above its card's reload counter (cards.last_reload_id: it would be issued again)", NULL,
	 "SELECT r.ua, r.reload_id FROM credit_reloads r LEFT JOIN cards c ON c.ua = r.ua\n"
	 "WHERE c.ua IS NULL OR r.reload_id > c.last_reload_id ORDER BY 1, 2",
	 "ua reload_id", "ii"},
	{"reload_reported", "usage_blocks", "an accepted block reports a reload id its card was never issued", NULL,
	 "SELECT b.ua, b.block_seq FROM usage_blocks b JOIN cards c ON c.ua = b.ua\n"
	 "WHERE b.verdict = 'ok' AND b.last_reload > c.last_reload_id ORDER BY 1, 2",
	 "ua block_seq", "ii"},

	/* ---- idempotency records ---- */
	{"idem_once", "idempotency", "an Idempotency-Key has two records", NULL,
	 "SELECT key FROM idempotency GROUP BY key HAVING count(*) > 1 ORDER BY 1", "key", "t"},

	/* ---- bulk subscriptions and key rotations ---- */
	{"bulk_bounds", "bulk_jobs", "a bulk job's progress is past its bound (last_subscriber_id > max_subscriber_id)",
	 NULL, "SELECT key FROM bulk_jobs WHERE last_subscriber_id > max_subscriber_id OR chunks < 1 ORDER BY 1", "key",
	 "t"},
	{"bulk_done", "bulk_jobs", "a finished bulk job has subscribers pending (last_subscriber_id < max_subscriber_id)",
	 NULL, "SELECT key FROM bulk_jobs WHERE done = 1 AND last_subscriber_id <> max_subscriber_id ORDER BY 1", "key",
	 "t"},
	{"rotation_pending", "rotation_jobs",
	 "an unfinished rotation is of a key version that is not its id's newest (it is never resumed)", NULL,
	 "SELECT j.key_id, j.version FROM rotation_jobs j WHERE j.done = 0\n"
	 "AND j.version < (SELECT max(k.version) FROM service_keys k WHERE k.key_id = j.key_id) ORDER BY 1, 2",
	 "key_id version", "ii"},
	{"rotation_bounds", "rotation_jobs", "a rotation's progress names a card that does not exist (last_ua)", NULL,
	 "SELECT j.key_id, j.version FROM rotation_jobs j\n"
	 "WHERE j.last_ua <> 0 AND NOT EXISTS (SELECT 1 FROM cards c WHERE c.ua = j.last_ua) ORDER BY 1, 2",
	 "key_id version", "ii"},

	/* ---- the distribution server: money conserved ---- */
	{"dist_ledger_balance", "dist_accounts",
	 "an account's balance is not the sum of its ledger entries (money made or lost outside a movement)", NULL,
	 "SELECT a.id FROM dist_accounts a\n"
	 "WHERE a.balance <> (SELECT coalesce(sum(l.amount), 0) FROM dist_ledger l WHERE l.account_id = a.id) ORDER BY 1",
	 "id", "i"},
	{"dist_receipt_charged", "dist_receipts",
	 "a receipt whose delivery is not charged, or a paid receipt without its ledger entry", NULL,
	 "SELECT r.delivery_id FROM dist_receipts r JOIN dist_deliveries d ON d.id = r.delivery_id\n"
	 "WHERE d.state <> 'charged' OR (r.price > 0 AND NOT EXISTS (SELECT 1 FROM dist_ledger l\n"
	 "  WHERE l.receipt_id = r.id AND l.amount = -r.price)) ORDER BY 1",
	 "delivery_id", "i"},
};

/* A row's examples are written after what out (cap bytes) holds: "; " after another row's. */
typedef void (*example_fn)(const struct inv *v, struct kh__stmt *st, char *out, size_t cap);

/* One line, printable: a value read from the database as it is. */
static void printable(char *t)
{
	for (; *t; t++)
		if ((unsigned char)*t < 0x20 || (unsigned char)*t == 0x7f)
			*t = '?';
}

/* Append one "key=value" to out (cap bytes, *n used), a space before it unless it is the row's
 * first (*n == start); cut at cap. */
__attribute__((format(printf, 5, 6))) static void add(char *out, size_t cap, size_t *n, size_t start,
						       const char *fmt, ...)
{
	va_list ap;
	int w;

	if (*n + 1 >= cap)
		return;
	if (*n > start)
		out[(*n)++] = ' ';
	va_start(ap, fmt);
	w = vsnprintf(out + *n, cap - *n, fmt, ap);
	va_end(ap);
	*n = w < 0 ? strlen(out) : *n + (size_t)w >= cap ? cap - 1 : *n + (size_t)w;
}

/* Where the row's examples start in out: after "; " when another row's are there. */
static size_t row_start(char *out, size_t cap)
{
	size_t n = strlen(out);

	if (n > 0 && n + 2 < cap) {
		memcpy(out + n, "; ", 3);
		n += 2;
	}
	return n;
}

/* "name=value" for each key of the row st is on. */
static void example(const struct inv *v, struct kh__stmt *st, char *out, size_t cap)
{
	const char *k = v->keys;
	size_t start = row_start(out, cap), n = start;

	for (int j = 0; v->types[j]; j++) {
		size_t kl = strcspn(k, " ");
		char val[64];

		if (v->types[j] == 'i') {
			snprintf(val, sizeof val, "%lld", (long long)kh__col_i64(st, j));
		} else {
			kh__col_text(st, j, val, sizeof val);
			printable(val);
		}
		add(out, cap, &n, start, "%.*s=%s", (int)kl, k, val);
		k += kl + (k[kl] == ' ');
	}
}

/* An escrow check's row (one shape for all, kh__escrow_row): the fields it sets. */
static void escrow_example(const struct inv *v, struct kh__stmt *st, char *out, size_t cap)
{
	struct kh_store_escrow_audit a;
	char id[2 * KH_STORE_ESCROW_ID_LEN + 1];
	size_t start = row_start(out, cap), n = start;

	(void)v;
	memset(&a.first, 0, sizeof a.first);
	kh__escrow_row(st, &a);
	printable(a.first.bucket);
	printable(a.first.currency);
	if (a.first.account != 0)
		add(out, cap, &n, start, "account=%lld", (long long)a.first.account);
	if (a.first.bucket[0])
		add(out, cap, &n, start, "bucket=%s", a.first.bucket);
	if (a.first.currency[0])
		add(out, cap, &n, start, "currency=%s", a.first.currency);
	if (a.first.cached != a.first.recomputed)
		add(out, cap, &n, start, "cached=%lld recomputed=%lld", (long long)a.first.cached,
		    (long long)a.first.recomputed);
	if (a.first.movement != 0)
		add(out, cap, &n, start, "movement=%lld", (long long)a.first.movement);
	if (a.first.purchase_set) {
		for (size_t i = 0; i < KH_STORE_ESCROW_ID_LEN; i++)
			snprintf(id + 2 * i, 3, "%02x", a.first.purchase[i]);
		add(out, cap, &n, start, "purchase=%s", id);
	}
}

/* Run one invariant, counted in *checked, and in *broken with a finding to fn when rows break it. */
static kh_err run_one(struct kh_store *s, const struct inv *v, example_fn ex_fn, kh_store_finding_fn fn, void *arg,
		      unsigned *checked, unsigned *broken)
{
	struct kh__stmt *st = NULL;
	char ex[512] = "";
	int64_t rows = 0;
	int row = 0;
	kh_err r;

	(*checked)++;
	if ((r = kh__stmt(s, v->sql, &st)) != KH_OK)
		return r;
	while ((r = kh__step(st, &row)) == KH_OK && row)
		if (rows++ < EXAMPLES)
			ex_fn(v, st, ex, sizeof ex);
	kh__stmt_done(st);
	/* SQLite's own checks fail outright on a schema they cannot read ("foreign key mismatch": a
	 * parent key no longer unique): a finding too, SQLite's message its example. A failed
	 * statement would abort PostgreSQL's transaction: there any failure is the check's. */
	if (r == KH_ERR_DB && v->backend != NULL && strcmp(v->backend, "sqlite") == 0) {
		snprintf(ex, sizeof ex, "%s", kh_store_last_error(s));
		rows = 1;
		r = KH_OK;
	}
	if (r != KH_OK || rows == 0)
		return r;
	(*broken)++;
	if (fn) {
		struct kh_store_finding f = {v->name, v->table, v->what, rows, ex};
		r = fn(arg, &f);
	}
	return r;
}

static kh_err check_all(struct kh_store *s, kh_store_finding_fn fn, void *arg, unsigned *checked, unsigned *broken)
{
	char what[128], ex[64];
	int v = 0;
	kh_err r;

	/* The schema first: an older one may lack the columns the rest reads. */
	(*checked)++;
	if ((r = kh__read_version(s, &v)) != KH_OK)
		return r;
	if (v != kh_store_schema_latest()) {
		struct kh_store_finding f = {"schema_version", "schema_migrations", what, 1, ex};
		snprintf(what, sizeof what, "the schema is version %d, this program's %d (open it once with this version)", v,
			 kh_store_schema_latest());
		snprintf(ex, sizeof ex, "version=%d", v);
		(*broken)++;
		return fn ? fn(arg, &f) : KH_OK;
	}
	for (size_t i = 0; i < sizeof invs / sizeof invs[0]; i++) {
		if (invs[i].backend != NULL && strcmp(invs[i].backend, s->be->name) != 0)
			continue;
		if ((r = run_one(s, &invs[i], example, fn, arg, checked, broken)) != KH_OK)
			return r;
	}
	/* The escrow's ledger, by the audit's own queries: none of its rows, none broken. */
	for (size_t i = 0; i < kh__escrow_checks_count; i++) {
		const struct kh__escrow_check *e = &kh__escrow_checks[i];
		char name[48];
		struct inv ev = {name, e->table, e->what, NULL, e->sql, NULL, NULL};

		snprintf(name, sizeof name, "escrow_%s", e->name);
		if ((r = run_one(s, &ev, escrow_example, fn, arg, checked, broken)) != KH_OK)
			return r;
	}
	return KH_OK;
}

kh_err kh_store_invariants(struct kh_store *s, kh_store_finding_fn fn, void *arg, unsigned *checked, unsigned *broken)
{
	unsigned c = 0, b = 0;
	kh_err r;

	if (s == NULL)
		return KH_ERR_INVAL;
	if ((r = kh__begin_read(s)) != KH_OK)
		return r;
	r = check_all(s, fn, arg, &c, &b);
	kh_store_rollback(s);
	if (r != KH_OK)
		return r;
	if (checked)
		*checked = c;
	if (broken)
		*broken = b;
	return KH_OK;
}
