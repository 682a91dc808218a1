/*
 * keyhole escrow: the escrow's operator (docs/protocols/escrow.md, docs/operator-guide.md) —
 * `init` (its identity, certified by the authority), `serve` (its HTTP API, beside its signing
 * process), `account add|deposit|token` and `audit`, `sweep` on the store directly.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/escrow.h"
#include "keyhole/authority.h"
#include "keyhole/escrowsvc.h"
#include "keyhole/file.h"
#include "keyhole/http.h"
#include "keyhole/identity.h"
#include "keyhole/secmod.h"
#include "keyhole/store.h"
#include "keyhole/store_escrow.h"

#define ESCROW_LISTEN "127.0.0.1:8491"
#define ESCROW_OPEN_RATE 20u
#define ESCROW_OPEN_BURST 100u

/* ---------------------------------------------------------------- init */

static const char init_help[] =
	"usage: keyhole escrow init --authority DIR --dir DIR\n"
	"\n"
	"Make the escrow's identity in DIR (created, mode 0700): its Ed25519 signing key (escrow.key,\n"
	"mode 0600), made here and never shown to the authority, which signs listings and answers;\n"
	"its certificate from the authority with role escrow (escrow.crt) and the authority's root\n"
	"(root.crt). Prints 'escrow SERIAL'. Refuses a DIR that holds a key already.\n"
	"\n"
	"  -a, --authority DIR  the operator authority that certifies it\n"
	"      --dir DIR        the escrow's directory\n";

int kh_cmd_escrow_init(int argc, char **argv)
{
	return kh_cli_identity_init("escrow init", init_help, KH_ROLE_ESCROW, argc, argv);
}

/* ---------------------------------------------------------------- serve */

static const char serve_help[] =
	"usage: keyhole escrow serve --db DB --dir DIR --secmod PATH [--listen HOST:PORT]\n"
	"           [--cert FILE --key FILE] [--threads N] [--key-bits N] [--deadline SECONDS]\n"
	"           [--sweep-every SECONDS] [--open-rate N] [--open-burst N]\n"
	"\n"
	"Serve the escrow's API (HTTP/1.1 + JSON under /v1, and /metrics): sellers make listings,\n"
	"buyers' devices buy them, their notices settle the purchases. Every private key of a listing\n"
	"stays in the signing process (keyhole escrow secmod) at PATH. A sweeper posts to their sellers\n"
	"the purchases past their deadline; it runs on every instance (two never post one twice). When\n"
	"ready, print one line 'listening=HOST:PORT'; stop on SIGTERM or SIGINT after answering the\n"
	"requests in flight. Logs go to standard error, one key=value line per event.\n"
	"\n"
	"      --db DB             the database: an SQLite file (made if missing, mode 0600) or a\n"
	"                          postgresql:// URL, as keyhole serve --db\n"
	"      --dir DIR           the escrow's identity (keyhole escrow init)\n"
	"      --secmod PATH       the signing process's socket\n"
	"  -l, --listen HOST:PORT  numeric address and port (default 127.0.0.1:8491; port 0 picks a\n"
	"                          free one); beyond loopback --cert and --key are required\n"
	"      --cert FILE         PEM certificate chain: serve HTTPS (TLS 1.3) ...\n"
	"      --key FILE          ... with this PEM private key (private to its owner)\n"
	"  -t, --threads N         connections served at once, 1 to 1024 (default 256)\n"
	"      --key-bits N        size of each new listing's RSA key: 2048 (default), 3072 or 4096\n"
	"      --deadline S        how long a purchase's payment is held without a notice when the\n"
	"                          listing does not say, 1 to 31622400 seconds (default 604800)\n"
	"      --sweep-every S     seconds between two sweeps, 1 to 86400 (default 60)\n"
	"      --open-rate N       listing reads per second from one address, 0 to 100000, 0 for no\n"
	"                          limit (default 20); beyond it: 429\n"
	"      --open-burst N      how many of them one address may make at once, 1 to 100000\n"
	"                          (default 100)\n";

static kh_err escrow_make(void *ctx, void **svc, const char **what)
{
	return kh_escrow_service_new(ctx, (struct kh_escrow_service **)svc, what);
}

static kh_err escrow_routes(void *svc, struct kh_http *h)
{
	return kh_escrow_service_add_routes(svc, h);
}

static kh_err escrow_started(void *svc)
{
	return kh_escrow_service_start_sweeper(svc);
}

static void escrow_free(void *svc)
{
	kh_escrow_service_free(svc);
}

/* escrow serve's own options into the service's configuration. */
static int escrow_option(void *ctx, int opt, const char *arg)
{
	static const char *const P = "escrow serve";
	struct kh_escrow_service_config *scfg = ctx;
	uint64_t v;

	switch (opt) {
	case 'M': scfg->secmod = arg; return KH_EXIT_OK;
	case 'B':
		if (kh_cli_parse_num(arg, 4096, &v) != 0 || !kh_secmod_bits_ok((unsigned)v))
			return kh_cli_usage(P, "--key-bits takes 2048, 3072 or 4096");
		scfg->key_bits = (unsigned)v;
		return KH_EXIT_OK;
	case 'L':
		if (kh_cli_parse_num(arg, KH_ESCROW_DEADLINE_MAX, &v) != 0 || v < 1)
			return kh_cli_usage(P, "--deadline takes a number of seconds from 1 to %u", KH_ESCROW_DEADLINE_MAX);
		scfg->deadline = (unsigned)v;
		return KH_EXIT_OK;
	case 'W':
		if (kh_cli_parse_num(arg, 86400, &v) != 0 || v < 1)
			return kh_cli_usage(P, "--sweep-every takes a number of seconds from 1 to 86400");
		scfg->sweep_every = (unsigned)v;
		return KH_EXIT_OK;
	default: return -1;
	}
}

int kh_cmd_escrow_serve(int argc, char **argv)
{
	static const struct option opts[] = {{"db", required_argument, NULL, 'D'},
					     {"dir", required_argument, NULL, 'd'},
					     {"secmod", required_argument, NULL, 'M'},
					     {"listen", required_argument, NULL, 'l'},
					     {"cert", required_argument, NULL, 'C'},
					     {"key", required_argument, NULL, 'K'},
					     {"threads", required_argument, NULL, 't'},
					     {"key-bits", required_argument, NULL, 'B'},
					     {"deadline", required_argument, NULL, 'L'},
					     {"sweep-every", required_argument, NULL, 'W'},
					     {"open-rate", required_argument, NULL, 'O'},
					     {"open-burst", required_argument, NULL, 'U'},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	static const char *const P = "escrow serve";
	struct kh_escrow_service_config scfg = {0};
	struct kh_cli_serve sv = {.prog = P,
				  .name = "escrow",
				  .what = "escrow",
				  .listen = ESCROW_LISTEN,
				  .listen_default = ESCROW_LISTEN,
				  .threads = KH_HTTP_THREADS,
				  .open_rate = ESCROW_OPEN_RATE,
				  .open_burst = ESCROW_OPEN_BURST,
				  .make = escrow_make,
				  .routes = escrow_routes,
				  .started = escrow_started,
				  .free = escrow_free};
	int rc;

	if ((rc = kh_cli_serve_parse(&sv, opts, serve_help, argc, argv, escrow_option, &scfg)) != KH_EXIT_OK)
		return rc < 0 ? KH_EXIT_OK : rc;
	if (!scfg.secmod)
		return kh_cli_usage(P, "--secmod is required");
	scfg.db = sv.db;
	scfg.dir = sv.dir;
	sv.ctx = &scfg;
	return kh_cli_serve_run(&sv);
}

/* ---------------------------------------------------------------- account */

static const char account_add_help[] =
	"usage: keyhole escrow account add --db DB --name NAME --currency CUR --token-out FILE\n"
	"\n"
	"Open an account (a seller's or a buyer's: the same kind) with empty balances in currency\n"
	"CUR, in the escrow's database (made if missing), and write its API token to FILE (created,\n"
	"mode 0600; refused if it exists). The escrow keeps only the token's SHA-256: the token is in\n"
	"FILE alone. Prints 'account ID NAME CUR'.\n"
	"\n"
	"      --db DB          the database (as keyhole escrow serve --db)\n"
	"  -n, --name NAME      1 to 64 characters\n"
	"      --currency CUR   three upper-case letters, e.g. EUR\n"
	"      --token-out FILE  where the account's token goes\n";

static const char token_help[] =
	"usage: keyhole escrow account token --db DB --name NAME --token-out FILE\n"
	"\n"
	"Give the account a new API token, written to FILE (created, mode 0600; refused if it exists).\n"
	"Its old token stops working at once. Prints 'token NAME'.\n"
	"\n"
	"      --db DB          the database (as keyhole escrow serve --db)\n"
	"  -n, --name NAME      the account\n"
	"      --token-out FILE  where the new token goes\n";

static const char deposit_help[] =
	"usage: keyhole escrow account deposit --db DB --name NAME --amount N [--idempotency-key KEY]\n"
	"\n"
	"Credit N (1 to 9007199254740992, in the smallest unit of the account's currency) to the\n"
	"account's available money, as one double-entry movement from outside. With --idempotency-key\n"
	"a repeat of the same deposit moves nothing. Prints 'available NAME AMOUNT CUR'.\n"
	"\n"
	"      --db DB          the database (as keyhole escrow serve --db)\n"
	"  -n, --name NAME      the account\n"
	"      --amount N       what to credit\n"
	"      --idempotency-key KEY  1 to 128 visible characters naming this deposit\n";

/* Write a fresh token to path, new, mode 0600: the token is never printed. */
static int token_out(const char *path, const char *tok)
{
	char line[KH_ESCROW_TOKEN_B64 + 1];
	size_t n = (size_t)snprintf(line, sizeof line, "%s\n", tok);
	kh_err r = kh_file_write_new(path, (const uint8_t *)line, n, 0600);

	kh_wipe(line, sizeof line);
	return r == KH_OK ? KH_EXIT_OK : kh_cli_fail(path, r);
}

static int cmd_account_add(int argc, char **argv)
{
	const char *db = NULL, *name = NULL, *cur = NULL, *tfile = NULL;
	struct kh_cli_optv ov[] = {{"db", &db, 1, 0}, {"name", &name, 1, 'n'}, {"currency", &cur, 1, 0},
				   {"token-out", &tfile, 1, 0}};
	struct kh_store *st = NULL;
	char tok[KH_ESCROW_TOKEN_B64];
	int64_t id = 0;
	int rc, made = 0;
	kh_err r;

	if ((rc = kh_cli_optv_parse("escrow account add", account_add_help, ov, 4, argc, argv)) != KH_EXIT_OK)
		return rc < 0 ? KH_EXIT_OK : rc;
	if (!*name || strlen(name) > KH_STORE_ESCROW_NAME_MAX)
		return kh_cli_usage("escrow account add", "--name takes 1 to %d characters", KH_STORE_ESCROW_NAME_MAX);
	if (strlen(cur) != 3 || cur[0] < 'A' || cur[0] > 'Z' || cur[1] < 'A' || cur[1] > 'Z' || cur[2] < 'A' ||
	    cur[2] > 'Z')
		return kh_cli_usage("escrow account add", "--currency takes three upper-case letters, e.g. EUR");
	if (access(tfile, F_OK) == 0)
		return kh_cli_fail(tfile, KH_ERR_EXISTS);
	if ((rc = kh_cli_db_open(db, &st, &made)) != KH_EXIT_OK)
		return rc;
	if ((r = kh_escrow_account_new(st, name, cur, (int64_t)time(NULL), &id, tok)) != KH_OK) {
		if (r == KH_ERR_EXISTS)
			fprintf(stderr, "keyhole: %s: an account of that name exists already\n", name);
		else
			kh_cli_fail(name, r);
		rc = KH_EXIT_FAIL;
	} else if ((rc = token_out(tfile, tok)) == KH_EXIT_OK) {
		printf("account %lld %s %s\n", (long long)id, name, cur);
	}
	kh_wipe(tok, sizeof tok);
	kh_cli_db_close(db, st, made, rc);
	return rc;
}

/* The account named, or a one-line error. */
static int find_account(struct kh_store *st, const char *name, struct kh_store_escrow_account *a)
{
	kh_err r = kh_store_escrow_account_find(st, name, a);

	if (r == KH_ERR_NOTFOUND || r == KH_ERR_INVAL) {
		fprintf(stderr, "keyhole: %s: no such account\n", name);
		return KH_EXIT_FAIL;
	}
	return r == KH_OK ? KH_EXIT_OK : kh_cli_fail(name, r);
}

static int cmd_account_token(int argc, char **argv)
{
	const char *db = NULL, *name = NULL, *tfile = NULL;
	struct kh_cli_optv ov[] = {{"db", &db, 1, 0}, {"name", &name, 1, 'n'}, {"token-out", &tfile, 1, 0}};
	struct kh_store_escrow_account a;
	struct kh_store *st = NULL;
	char tok[KH_ESCROW_TOKEN_B64];
	int rc, made = 0;
	kh_err r;

	if ((rc = kh_cli_optv_parse("escrow account token", token_help, ov, 3, argc, argv)) != KH_EXIT_OK)
		return rc < 0 ? KH_EXIT_OK : rc;
	if (access(tfile, F_OK) == 0)
		return kh_cli_fail(tfile, KH_ERR_EXISTS);
	if ((rc = kh_cli_db_open(db, &st, &made)) != KH_EXIT_OK)
		return rc;
	if ((rc = find_account(st, name, &a)) == KH_EXIT_OK) {
		if ((r = kh_escrow_account_token(st, a.id, (int64_t)time(NULL), tok)) != KH_OK)
			rc = kh_cli_fail(name, r);
		else if ((rc = token_out(tfile, tok)) == KH_EXIT_OK)
			printf("token %s\n", name);
		kh_wipe(tok, sizeof tok);
	}
	kh_cli_db_close(db, st, made, rc);
	return rc;
}

static int cmd_account_deposit(int argc, char **argv)
{
	const char *db = NULL, *name = NULL, *amount = NULL, *key = NULL;
	struct kh_cli_optv ov[] = {{"db", &db, 1, 0}, {"name", &name, 1, 'n'}, {"amount", &amount, 1, 0},
				   {"idempotency-key", &key, 0, 0}};
	struct kh_store_escrow_account a;
	struct kh_store *st = NULL;
	uint8_t idem[KH_SHA256_LEN];
	uint64_t v = 0;
	int64_t available = 0;
	int rc, made = 0;
	kh_err r;

	if ((rc = kh_cli_optv_parse("escrow account deposit", deposit_help, ov, 4, argc, argv)) != KH_EXIT_OK)
		return rc < 0 ? KH_EXIT_OK : rc;
	if (kh_cli_parse_num(amount, (uint64_t)KH_STORE_ESCROW_AMOUNT_MAX, &v) != 0 || v < 1)
		return kh_cli_usage("escrow account deposit", "--amount takes a number from 1 to 9007199254740992");
	if (key && (!*key || strlen(key) > KH_HTTP_IDEM_KEY_MAX))
		return kh_cli_usage("escrow account deposit", "--idempotency-key takes 1 to 128 characters");
	if (key && kh_sha256((const uint8_t *)key, strlen(key), idem) != KH_OK)
		return kh_cli_fail("idempotency key", KH_ERR_CRYPTO);
	if ((rc = kh_cli_db_open(db, &st, &made)) != KH_EXIT_OK)
		return rc;
	if ((rc = find_account(st, name, &a)) == KH_EXIT_OK) {
		if ((r = kh_store_escrow_deposit(st, a.id, (int64_t)v, key ? idem : NULL, (int64_t)time(NULL),
						 &available)) != KH_OK)
			rc = kh_cli_fail(name, r);
		else
			printf("available %s %lld %s\n", name, (long long)available, a.currency);
	}
	kh_cli_db_close(db, st, made, rc);
	return rc;
}

static const struct kh_cli_cmd account_sub[] = {
	{"add", cmd_account_add, "open an account in a currency, with its API token"},
	{"deposit", cmd_account_deposit, "credit money to an account"},
	{"token", cmd_account_token, "give an account a new API token"},
};

int kh_cmd_escrow_account(int argc, char **argv)
{
	return kh_cli_dispatch("escrow account", account_sub, sizeof account_sub / sizeof account_sub[0], argc, argv);
}

/* ---------------------------------------------------------------- audit */

/* The store db, which must exist already: a read or a sweep never makes a database. */
static int open_existing(const char *db, struct kh_store **st)
{
	char why[4400] = "";
	int exists = 0;
	kh_err r;

	if (kh_store_check(db, &exists, why, sizeof why) != KH_OK) {
		fprintf(stderr, "keyhole: %s\n", why[0] ? why : db);
		return KH_EXIT_FAIL;
	}
	if (!exists)
		return kh_cli_fail(db, KH_ERR_NOTFOUND);
	return (r = kh_store_open(db, st)) == KH_OK ? KH_EXIT_OK : kh_cli_fail(db, r);
}

static const char audit_help[] =
	"usage: keyhole escrow audit --db DB\n"
	"\n"
	"Recompute every account's balances from the ledger's entries, in one snapshot of a running\n"
	"escrow's database, and check the ledger's rules: every movement sums to zero, no balance is\n"
	"negative, the balances kept match the entries, and per currency what was deposited is what\n"
	"is available, held or paid out. Prints one line per currency ('CUR deposited=N\n"
	"available=N held=N withdrawn=N'), then 'ledger balances' and exits 0; or the first\n"
	"discrepancy and exits 1.\n"
	"\n"
	"      --db DB  the database (as keyhole escrow serve --db); never made\n";

int kh_cmd_escrow_audit(int argc, char **argv)
{
	const char *db = NULL;
	struct kh_cli_optv ov[] = {{"db", &db, 1, 0}};
	struct kh_store_escrow_audit *au = NULL;
	struct kh_store *st = NULL;
	int rc;
	kh_err r;

	if ((rc = kh_cli_optv_parse("escrow audit", audit_help, ov, 1, argc, argv)) != KH_EXIT_OK)
		return rc < 0 ? KH_EXIT_OK : rc;
	if ((rc = open_existing(db, &st)) != KH_EXIT_OK)
		return rc;
	if (!(au = calloc(1, sizeof *au))) {
		kh_store_close(st);
		return kh_cli_fail("audit", KH_ERR_NOMEM);
	}
	r = kh_store_escrow_audit(st, au);
	if (r == KH_OK || r == KH_ERR_LEDGER) {
		for (size_t i = 0; i < au->ncurrencies; i++) {
			const struct kh_store_escrow_totals *t = &au->cur[i];
			printf("%s deposited=%lld available=%lld held=%lld withdrawn=%lld\n", t->currency,
			       (long long)t->deposited, (long long)t->available, (long long)t->held,
			       (long long)t->withdrawn);
		}
	}
	if (r == KH_OK) {
		printf("ledger balances: %lld movements, %lld entries, %lld purchases\n", (long long)au->movements,
		       (long long)au->entries, (long long)au->purchases);
		rc = KH_EXIT_OK;
	} else if (r == KH_ERR_LEDGER && au->first.check) {
		fprintf(stderr,
			"keyhole: the ledger does not balance: %s (account %lld%s%s, currency %s: kept %lld, "
			"recomputed %lld)\n",
			au->first.check, (long long)au->first.account, au->first.bucket[0] ? ", " : "",
			au->first.bucket, au->first.currency, (long long)au->first.cached,
			(long long)au->first.recomputed);
		rc = KH_EXIT_FAIL;
	} else {
		rc = kh_cli_fail(db, r);
	}
	free(au);
	kh_store_close(st);
	return rc;
}

/* ---------------------------------------------------------------- sweep */

static const char sweep_help[] =
	"usage: keyhole escrow sweep --db DB\n"
	"\n"
	"Post to their sellers, now, every purchase still held past its deadline (what the running\n"
	"escrow's sweeper does on its own every --sweep-every seconds). Safe beside a running escrow.\n"
	"Prints 'swept N'.\n"
	"\n"
	"      --db DB  the database (as keyhole escrow serve --db); never made\n";

int kh_cmd_escrow_sweep(int argc, char **argv)
{
	const char *db = NULL;
	struct kh_cli_optv ov[] = {{"db", &db, 1, 0}};
	struct kh_store *st = NULL;
	unsigned n = 0, total = 0;
	int rc;
	kh_err r;

	if ((rc = kh_cli_optv_parse("escrow sweep", sweep_help, ov, 1, argc, argv)) != KH_EXIT_OK)
		return rc < 0 ? KH_EXIT_OK : rc;
	if ((rc = open_existing(db, &st)) != KH_EXIT_OK)
		return rc;
	do {
		r = kh_store_escrow_sweep(st, (int64_t)time(NULL), KH_STORE_ESCROW_SWEEP_MAX, &n);
		total += n;
	} while (r == KH_OK && n == KH_STORE_ESCROW_SWEEP_MAX);
	kh_store_close(st);
	if (r != KH_OK)
		return kh_cli_fail(db, r);
	printf("swept %u\n", total);
	return KH_EXIT_OK;
}
