/*
 * keyhole dist: program distribution (docs/protocols/distribution.md). The server's side here —
 * `init` (its identity, certified by the authority), `serve` (its HTTP API), `publish` and
 * `account` (the operator's work on the store) — and the dispatch of every `dist` command.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "cli/dist.h"
#include "keyhole/authority.h"
#include "keyhole/distsrv.h"
#include "keyhole/distsvc.h"
#include "keyhole/file.h"
#include "keyhole/http.h"
#include "keyhole/log.h"
#include "keyhole/store.h"
#include "keyhole/store_dist.h"

#define DIST_LISTEN "127.0.0.1:8490"
#define DIST_OPEN_RATE 20u
#define DIST_OPEN_BURST 100u

/* ---------------------------------------------------------------- init */

static const char init_help[] =
	"usage: keyhole dist init --authority DIR --dir DIR\n"
	"\n"
	"Make the distribution server's identity in DIR (created, mode 0700): its Ed25519 signing key\n"
	"(distributor.key, mode 0600), made here and never shown to the authority, its certificate from\n"
	"the authority with role distributor (distributor.crt) and the authority's root (root.crt).\n"
	"Prints 'distributor SERIAL'. Refuses a DIR that holds a key already.\n"
	"\n"
	"  -a, --authority DIR  the operator authority that certifies it\n"
	"      --dir DIR        the server's directory\n";

static int cmd_init(int argc, char **argv)
{
	const char *auth = NULL, *dir = NULL;
	struct kh_cli_optv ov[] = {{"authority", &auth, 1, 'a'}, {"dir", &dir, 1, 0}};
	struct kh_authority *a = NULL;
	uint32_t serial = 0;
	int rc;
	kh_err r;

	if ((rc = kh_cli_optv_parse("dist init", init_help, ov, 2, argc, argv)) != KH_EXIT_OK)
		return rc < 0 ? KH_EXIT_OK : rc;
	if ((r = kh_authority_open(auth, &a)) != KH_OK)
		return kh_cli_fail(auth, r);
	r = kh_dist_identity_new(a, dir, &serial);
	kh_authority_free(a);
	if (r != KH_OK)
		return kh_cli_fail(dir, r);
	printf("distributor %08X\n", (unsigned)serial);
	return KH_EXIT_OK;
}

/* ---------------------------------------------------------------- account */

static const char account_add_help[] =
	"usage: keyhole dist account add --db DB --name NAME --password-file FILE\n"
	"\n"
	"Open a buyer's account with balance 0 in the distribution server's database (made if\n"
	"missing). The password is read from FILE (private to its owner; a final newline is ignored)\n"
	"and kept only as its scrypt hash. Prints 'account ID NAME'.\n"
	"\n"
	"      --db DB          the database (as keyhole dist serve --db)\n"
	"  -n, --name NAME      1 to 64 characters\n"
	"      --password-file FILE  the account's password, 1 to 1024 bytes\n";

static const char deposit_help[] =
	"usage: keyhole dist account deposit --db DB --name NAME --amount N\n"
	"\n"
	"Credit N (1 to 4294967295, in the smallest unit of the currency) to an account, with its\n"
	"ledger entry. Prints 'balance NAME BALANCE'.\n"
	"\n"
	"      --db DB      the database (as keyhole dist serve --db)\n"
	"  -n, --name NAME  the account\n"
	"      --amount N   what to credit\n";

/* The password in a private file: its bytes up to a final newline; NUL-terminated copy in *pw. */
static int read_password(const char *path, char **pw, size_t *len)
{
	uint8_t *d = NULL;
	size_t n = 0, k;
	kh_err r;

	if ((r = kh_keyfile_read(path, KH_DIST_PASSWORD_MAX + 2, &d, &n)) != KH_OK)
		return kh_cli_fail(path, r);
	k = n;
	if (k && d[k - 1] == '\n')
		k--;
	if (k && d[k - 1] == '\r')
		k--;
	if (!k || k > KH_DIST_PASSWORD_MAX || memchr(d, 0, k)) {
		kh_file_free(d, n);
		fprintf(stderr, "keyhole: %s: a password is 1 to %u bytes, without NUL\n", path, KH_DIST_PASSWORD_MAX);
		return KH_EXIT_FAIL;
	}
	if (!(*pw = malloc(k + 1))) {
		kh_file_free(d, n);
		return kh_cli_fail(path, KH_ERR_NOMEM);
	}
	memcpy(*pw, d, k);
	(*pw)[k] = 0;
	*len = k;
	kh_file_free(d, n);
	return KH_EXIT_OK;
}

static int cmd_account_add(int argc, char **argv)
{
	const char *db = NULL, *name = NULL, *pwfile = NULL;
	struct kh_cli_optv ov[] = {{"db", &db, 1, 0}, {"name", &name, 1, 'n'}, {"password-file", &pwfile, 1, 0}};
	struct kh_store *st = NULL;
	char *pw = NULL;
	size_t pwlen = 0;
	int64_t id = 0;
	int rc, made = 0;
	kh_err r;

	if ((rc = kh_cli_optv_parse("dist account add", account_add_help, ov, 3, argc, argv)) != KH_EXIT_OK)
		return rc < 0 ? KH_EXIT_OK : rc;
	if (!*name || strlen(name) > KH_STORE_DIST_NAME_MAX)
		return kh_cli_usage("dist account add", "--name takes 1 to %d characters", KH_STORE_DIST_NAME_MAX);
	if ((rc = read_password(pwfile, &pw, &pwlen)) != KH_EXIT_OK)
		return rc;
	if ((rc = kh_cli_db_open(db, &st, &made)) != KH_EXIT_OK)
		goto out;
	if ((r = kh_dist_account_new(st, name, pw, pwlen, (int64_t)time(NULL), &id)) != KH_OK) {
		if (r == KH_ERR_EXISTS)
			fprintf(stderr, "keyhole: %s: an account of that name exists already\n", name);
		else
			kh_cli_fail(name, r);
		rc = KH_EXIT_FAIL;
	} else {
		printf("account %lld %s\n", (long long)id, name);
	}
	kh_cli_db_close(db, st, made, rc);
out:
	if (pw) {
		kh_wipe(pw, pwlen);
		free(pw);
	}
	return rc;
}

struct found {
	int64_t id;
};

static kh_err account_id(void *arg, const struct kh_store_dist_account *a)
{
	((struct found *)arg)->id = a->id;
	return KH_OK;
}

static int cmd_account_deposit(int argc, char **argv)
{
	const char *db = NULL, *name = NULL, *amount = NULL;
	struct kh_cli_optv ov[] = {{"db", &db, 1, 0}, {"name", &name, 1, 'n'}, {"amount", &amount, 1, 0}};
	struct kh_store *st = NULL;
	struct found f = {0};
	uint64_t v = 0;
	int64_t balance = 0;
	int rc, made = 0;
	kh_err r;

	if ((rc = kh_cli_optv_parse("dist account deposit", deposit_help, ov, 3, argc, argv)) != KH_EXIT_OK)
		return rc < 0 ? KH_EXIT_OK : rc;
	if (kh_cli_parse_num(amount, UINT32_MAX, &v) != 0 || v < 1)
		return kh_cli_usage("dist account deposit", "--amount takes a number from 1 to 4294967295");
	if ((rc = kh_cli_db_open(db, &st, &made)) != KH_EXIT_OK)
		return rc;
	if ((r = kh_store_dist_account_find(st, name, account_id, &f)) != KH_OK ||
	    (r = kh_store_dist_deposit(st, f.id, (int64_t)v, (int64_t)time(NULL), &balance)) != KH_OK) {
		if (r == KH_ERR_NOTFOUND || r == KH_ERR_INVAL)
			fprintf(stderr, "keyhole: %s: no such account\n", name);
		else
			kh_cli_fail(name, r);
		rc = KH_EXIT_FAIL;
	} else {
		printf("balance %s %lld\n", name, (long long)balance);
	}
	kh_cli_db_close(db, st, made, rc);
	return rc;
}

static const struct kh_cli_cmd account_sub[] = {
	{"add", cmd_account_add, "open a buyer's account"},
	{"deposit", cmd_account_deposit, "credit an account"},
};

static int cmd_account(int argc, char **argv)
{
	return kh_cli_dispatch("dist account", account_sub, sizeof account_sub / sizeof account_sub[0], argc, argv);
}

/* ---------------------------------------------------------------- publish */

static const char publish_help[] =
	"usage: keyhole dist publish --db DB --manifest FILE --program FILE --price N\n"
	"\n"
	"Put a program into the catalogue: its manifest (the clear description the package carries:\n"
	"name, version, kind, interpreter, entry, requires; its version a number) and its code, sold\n"
	"at N (0 to 4294967295, in the smallest unit of the currency). The database is made if\n"
	"missing. Prints 'published program ID NAME VERSION'. A name and version published already\n"
	"is refused: publish a new version.\n"
	"\n"
	"      --db DB          the database (as keyhole dist serve --db)\n"
	"      --manifest FILE  the manifest, at most 3072 bytes\n"
	"      --program FILE   the program, 1 byte to 256 MiB\n"
	"      --price N        its price\n";

static int cmd_publish(int argc, char **argv)
{
	const char *db = NULL, *mfile = NULL, *pfile = NULL, *price = NULL;
	struct kh_cli_optv ov[] = {{"db", &db, 1, 0}, {"manifest", &mfile, 1, 0}, {"program", &pfile, 1, 0}, {"price", &price, 1, 0}};
	struct kh_dist_manifest m;
	struct kh_store *st = NULL;
	uint8_t *man = NULL, *code = NULL;
	size_t mlen = 0, clen = 0, line = 0;
	uint64_t v = 0;
	int64_t id = 0;
	int rc, made = 0;
	kh_err r;

	if ((rc = kh_cli_optv_parse("dist publish", publish_help, ov, 4, argc, argv)) != KH_EXIT_OK)
		return rc < 0 ? KH_EXIT_OK : rc;
	if (kh_cli_parse_num(price, UINT32_MAX, &v) != 0)
		return kh_cli_usage("dist publish", "--price takes a number from 0 to 4294967295");
	if ((r = kh_file_read(mfile, KH_DIST_MANIFEST_MAX, &man, &mlen)) != KH_OK)
		return kh_cli_fail(mfile, r);
	if ((r = kh_dist_manifest_parse(man, mlen, &m, &line)) != KH_OK) {
		fprintf(stderr, "keyhole: %s: line %zu: not a manifest line (see keyhole-dist(1))\n", mfile, line);
		rc = KH_EXIT_FAIL;
		goto out;
	}
	if ((r = kh_file_read(pfile, KH_DIST_PROGRAM_MAX, &code, &clen)) != KH_OK || !clen) {
		rc = kh_cli_fail(pfile, r != KH_OK ? r : KH_ERR_TRUNCATED);
		goto out;
	}
	if ((rc = kh_cli_db_open(db, &st, &made)) != KH_EXIT_OK)
		goto out;
	r = kh_dist_publish(st, man, mlen, code, clen, (uint32_t)v, (int64_t)time(NULL), &id, &line);
	if (r == KH_ERR_FORMAT)
		fprintf(stderr, "keyhole: %s: the version '%s' is not a number from 1 to 4294967295\n", mfile, m.version);
	else if (r == KH_ERR_EXISTS)
		fprintf(stderr, "keyhole: %s %s: published already (publish a new version)\n", m.name, m.version);
	else if (r != KH_OK)
		kh_cli_fail(db, r);
	else
		printf("published program %lld %s %s\n", (long long)id, m.name, m.version);
	rc = r == KH_OK ? KH_EXIT_OK : KH_EXIT_FAIL;
	kh_cli_db_close(db, st, made, rc);
out:
	kh_file_free(man, mlen);
	kh_file_free(code, clen);
	return rc;
}

/* ---------------------------------------------------------------- serve */

static const char serve_help[] =
	"usage: keyhole dist serve --db DB --dir DIR [--listen HOST:PORT] [--cert FILE --key FILE]\n"
	"           [--threads N] [--session-ttl SECONDS] [--open-rate N] [--open-burst N]\n"
	"\n"
	"Serve the distribution server's API (HTTP/1.1 + JSON under /v1, and /metrics): buyers log in,\n"
	"read the catalogue, buy programs for their processor and fetch them again on a receipt.\n"
	"When ready, print one line 'listening=HOST:PORT'; stop on SIGTERM or SIGINT after answering\n"
	"the requests in flight. Logs go to standard error, one key=value line per event.\n"
	"\n"
	"      --db DB             the database: an SQLite file (made if missing, mode 0600) or a\n"
	"                          postgresql:// URL, as keyhole serve --db\n"
	"      --dir DIR           the server's identity (keyhole dist init)\n"
	"  -l, --listen HOST:PORT  numeric address and port (default 127.0.0.1:8490; port 0 picks a\n"
	"                          free one); beyond loopback --cert and --key are required\n"
	"      --cert FILE         PEM certificate chain: serve HTTPS (TLS 1.3) ...\n"
	"      --key FILE          ... with this PEM private key (private to its owner)\n"
	"  -t, --threads N         connections served at once, 1 to 1024 (default 256)\n"
	"      --session-ttl S     a log-in lasts S seconds, 60 to 86400 (default 3600)\n"
	"      --open-rate N       log-ins and catalogue reads per second from one address, 0 to\n"
	"                          100000, 0 for no limit (default 20); beyond it: 429\n"
	"      --open-burst N      how many of them one address may make at once, 1 to 100000\n"
	"                          (default 100)\n";

/* The service for kh_cli_serve_run: ctx is its config, *svc the service once made. */
static kh_err dist_make(void *ctx, void **svc, const char **what)
{
	return kh_dist_service_new(ctx, (struct kh_dist_service **)svc, what);
}

static kh_err dist_routes(void *svc, struct kh_http *h)
{
	return kh_dist_service_add_routes(svc, h);
}

static void dist_free(void *svc)
{
	kh_dist_service_free(svc);
}

/* dist serve's own option into the service's configuration. */
static int dist_option(void *ctx, int opt, const char *arg)
{
	struct kh_dist_service_config *scfg = ctx;
	uint64_t v;

	if (opt != 'S')
		return -1;
	if (kh_cli_parse_num(arg, 86400, &v) != 0 || v < 60)
		return kh_cli_usage("dist serve", "--session-ttl takes a number from 60 to 86400");
	scfg->session_ttl = (unsigned)v;
	return KH_EXIT_OK;
}

static int cmd_serve(int argc, char **argv)
{
	static const struct option opts[] = {{"db", required_argument, NULL, 'D'},
					     {"dir", required_argument, NULL, 'd'},
					     {"listen", required_argument, NULL, 'l'},
					     {"cert", required_argument, NULL, 'C'},
					     {"key", required_argument, NULL, 'K'},
					     {"threads", required_argument, NULL, 't'},
					     {"session-ttl", required_argument, NULL, 'S'},
					     {"open-rate", required_argument, NULL, 'O'},
					     {"open-burst", required_argument, NULL, 'U'},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	static const char *const P = "dist serve";
	struct kh_dist_service_config scfg = {0};
	struct kh_cli_serve sv = {.prog = P,
				  .name = "dist",
				  .what = "distribution server",
				  .listen = DIST_LISTEN,
				  .listen_default = DIST_LISTEN,
				  .threads = KH_HTTP_THREADS,
				  .open_rate = DIST_OPEN_RATE,
				  .open_burst = DIST_OPEN_BURST,
				  .make = dist_make,
				  .routes = dist_routes,
				  .free = dist_free};
	int rc;

	if ((rc = kh_cli_serve_parse(&sv, opts, serve_help, argc, argv, dist_option, &scfg)) != KH_EXIT_OK)
		return rc < 0 ? KH_EXIT_OK : rc;
	scfg.db = sv.db;
	scfg.dir = sv.dir;
	sv.ctx = &scfg;
	return kh_cli_serve_run(&sv);
}

/* ---------------------------------------------------------------- dispatch */

static const struct kh_cli_cmd sub[] = {
	{"init", cmd_init, "make the distribution server's identity, certified by the authority"},
	{"serve", cmd_serve, "serve the distribution server's API over HTTP"},
	{"publish", cmd_publish, "put a program into the catalogue"},
	{"account", cmd_account, "open buyers' accounts and credit them"},
	{"list", kh_cmd_dist_list, "the server's catalogue, one program a line"},
	{"buy", kh_cmd_dist_buy, "buy a program for a processor: its package, licence and receipt"},
	{"get", kh_cmd_dist_get, "fetch a program bought before again, on its receipt"},
	{"run", kh_cmd_dist_run, "run a package under its licence through the processor daemon"},
};

int kh_cmd_dist(int argc, char **argv)
{
	return kh_cli_dispatch("dist", sub, sizeof sub / sizeof sub[0], argc, argv);
}
