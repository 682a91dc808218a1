/*
 * keyhole dist buy | get | run | list: the buyer's side of program distribution (seed 002,
 * docs/protocols/distribution.md). buy and get relay the second path between the distribution
 * server and the buyer's processor daemon (include/keyhole/distclient.h); run hands a package and
 * its licence to the daemon, which decrypts and runs it on its side of the wall. This process
 * never holds a key that opens the package, nor a byte of the program in clear.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/dist.h"
#include "keyhole/dist.h"
#include "keyhole/distclient.h"
#include "keyhole/file.h"
#include "keyhole/http.h"
#include "keyhole/runner.h"
#include "keyhole/softmodule.h"

#define PASSWORD_MAX 1024

static const char buy_help[] =
	"usage: keyhole dist buy --server URL --user NAME --password-file FILE --processor unix:SOCK\n"
	"                        --program ID --out BASE [--cacert FILE]\n"
	"\n"
	"Buy program ID from the distribution server for the processor behind the daemon socket SOCK\n"
	"(keyhole processor serve), relaying the messages between them: only that processor can run\n"
	"what is bought. Writes BASE.khpk (the encrypted package), BASE.lic (the licence token) and\n"
	"BASE.receipt (the signed receipt: keep it, it fetches the program again). While the charge\n"
	"may be under way BASE.part records the purchase; if the command fails then, run it again\n"
	"to finish: the server charges a purchase once. Prints\n"
	"\"bought program ID version V price P receipt HEX balance B\".\n"
	"\n"
	"      --server URL           the distribution server (https://, or http:// to the loopback host)\n"
	"      --user NAME            the account's name\n"
	"      --password-file FILE   the account's password (a file private to its owner)\n"
	"      --processor unix:SOCK  the processor daemon's socket\n"
	"      --program ID           the program to buy (keyhole dist list)\n"
	"  -o, --out BASE             where to write BASE.khpk, BASE.lic and BASE.receipt\n"
	"      --cacert FILE          PEM CA certificates to trust for the server\n";

static const char get_help[] =
	"usage: keyhole dist get --server URL --user NAME --password-file FILE --processor unix:SOCK\n"
	"                        --receipt FILE --out BASE [--cacert FILE]\n"
	"\n"
	"Fetch a program bought before again, on its receipt, for the same processor: nothing is\n"
	"charged. Writes BASE.khpk, BASE.lic and BASE.receipt as dist buy does. Prints\n"
	"\"fetched program ID version V receipt HEX charged 0\".\n"
	"\n"
	"      --server URL           the distribution server (https://, or http:// to the loopback host)\n"
	"      --user NAME            the account's name\n"
	"      --password-file FILE   the account's password (a file private to its owner)\n"
	"      --processor unix:SOCK  the processor daemon's socket\n"
	"      --receipt FILE         the receipt of the purchase (BASE.receipt of dist buy)\n"
	"  -o, --out BASE             where to write BASE.khpk, BASE.lic and BASE.receipt\n"
	"      --cacert FILE          PEM CA certificates to trust for the server\n";

static const char run_help[] =
	"usage: keyhole dist run --processor unix:SOCK --package FILE --licence FILE [--workdir DIR]\n"
	"                        [-- ARGS...]\n"
	"\n"
	"Run a package under its licence: the processor daemon decrypts it on its side and runs it\n"
	"confined, with ARGS and this command's standard streams. The program may write only under\n"
	"DIR. The exit status is the program's (128 + N when signal N ended it); a package or licence\n"
	"the processor refuses runs nothing and exits 1 with the reason.\n"
	"\n"
	"      --processor unix:SOCK  the processor daemon's socket\n"
	"      --package FILE         the package (BASE.khpk)\n"
	"      --licence FILE         its licence token (BASE.lic)\n"
	"      --workdir DIR          the program's working directory, the one place it may write\n";

static const char list_help[] =
	"usage: keyhole dist list --server URL [--cacert FILE]\n"
	"\n"
	"The distribution server's catalogue, one program a line: \"ID NAME VERSION PRICE\".\n"
	"\n"
	"      --server URL           the distribution server (https://, or http:// to the loopback host)\n"
	"      --cacert FILE          PEM CA certificates to trust for the server\n";

enum {
	O_SERVER = 256,
	O_USER,
	O_PASSWORD_FILE,
	O_PROCESSOR,
	O_PROGRAM,
	O_RECEIPT,
	O_CACERT,
	O_PACKAGE,
	O_LICENCE,
	O_WORKDIR,
};

struct args {
	const char *server, *user, *password_file, *processor, *program, *receipt, *out, *cacert;
	const char *package, *licence, *workdir;
	char **rest; /* after "--" (run) */
};

/* What each command takes. */
#define T_SERVER 0x001u
#define T_LOGIN 0x002u /* --user, --password-file, --processor, --out */
#define T_PROGRAM 0x004u
#define T_RECEIPT 0x008u
#define T_RUN 0x010u /* --processor, --package, --licence, --workdir, -- ARGS */

static const struct option all_opts[] = {{"server", required_argument, NULL, O_SERVER},
					 {"user", required_argument, NULL, O_USER},
					 {"password-file", required_argument, NULL, O_PASSWORD_FILE},
					 {"processor", required_argument, NULL, O_PROCESSOR},
					 {"program", required_argument, NULL, O_PROGRAM},
					 {"receipt", required_argument, NULL, O_RECEIPT},
					 {"out", required_argument, NULL, 'o'},
					 {"cacert", required_argument, NULL, O_CACERT},
					 {"package", required_argument, NULL, O_PACKAGE},
					 {"licence", required_argument, NULL, O_LICENCE},
					 {"workdir", required_argument, NULL, O_WORKDIR},
					 {"help", no_argument, NULL, 'h'},
					 {NULL, 0, NULL, 0}};

/* The set of commands an option belongs to. */
static unsigned takes(int c)
{
	switch (c) {
	case O_SERVER:
	case O_CACERT: return T_SERVER;
	case O_USER:
	case O_PASSWORD_FILE:
	case 'o': return T_LOGIN;
	case O_PROCESSOR: return T_LOGIN | T_RUN;
	case O_PROGRAM: return T_PROGRAM;
	case O_RECEIPT: return T_RECEIPT;
	case O_PACKAGE:
	case O_LICENCE:
	case O_WORKDIR: return T_RUN;
	default: return 0;
	}
}

/*
 * Parse argv for a command taking what (T_*): *help set when the help was printed. KH_EXIT_OK,
 * or a usage error's status. Only run takes arguments, and only after "--".
 */
static int parse(const char *P, const char *help, unsigned what, int argc, char **argv, struct args *a, int *helped)
{
	unsigned char seen[512] = {0};
	int c;

	memset(a, 0, sizeof *a);
	*helped = 0;
	if (kh_cli_wants_help(argc, argv)) {
		fputs(help, stdout);
		*helped = 1;
		return KH_EXIT_OK;
	}
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+ho:", all_opts, NULL)) != -1) {
		const char *dup = kh_cli_twice(all_opts, c, seen);
		if (dup)
			return kh_cli_usage(P, "--%s is given twice (it takes one value)", dup);
		if (!(takes(c) & what)) {
			for (const struct option *o = all_opts; o->name; o++)
				if (o->val == c && c != 'h')
					return kh_cli_usage(P, "--%s is not an option of this command", o->name);
			return kh_cli_usage(P, "unknown or incomplete option '%s'", argv[optind - 1]);
		}
		switch (c) {
		case O_SERVER: a->server = optarg; break;
		case O_USER: a->user = optarg; break;
		case O_PASSWORD_FILE: a->password_file = optarg; break;
		case O_PROCESSOR: a->processor = optarg; break;
		case O_PROGRAM: a->program = optarg; break;
		case O_RECEIPT: a->receipt = optarg; break;
		case 'o': a->out = optarg; break;
		case O_CACERT: a->cacert = optarg; break;
		case O_PACKAGE: a->package = optarg; break;
		case O_LICENCE: a->licence = optarg; break;
		case O_WORKDIR: a->workdir = optarg; break;
		}
	}
	if (optind < argc) {
		if (!(what & T_RUN) || strcmp(argv[optind - 1], "--") != 0)
			return kh_cli_usage(P, "unexpected argument '%s'", argv[optind]);
		a->rest = argv + optind;
	}
	if ((what & T_SERVER) && !a->server)
		return kh_cli_usage(P, "--server is required");
	if (a->server && kh_http_url_check(a->server, 0) != KH_OK)
		return kh_cli_usage(P, "--server takes https://HOST[:PORT], or http:// to 127.0.0.1, localhost or [::1]");
	if (a->cacert && !*a->cacert)
		return kh_cli_usage(P, "--cacert takes a file name");
	if ((what & (T_LOGIN | T_RUN)) && !a->processor)
		return kh_cli_usage(P, "--processor is required");
	if (a->processor && (strncmp(a->processor, "unix:", 5) != 0 || !a->processor[5]))
		return kh_cli_usage(P, "--processor takes unix:SOCK, the processor daemon's socket");
	if ((what & T_LOGIN) && (!a->user || !a->password_file || !a->out))
		return kh_cli_usage(P, "--user, --password-file and --out are required");
	if ((what & T_LOGIN) && (!*a->user || !*a->password_file || !*a->out))
		return kh_cli_usage(P, "--user, --password-file and --out take a non-empty value");
	if ((what & T_PROGRAM) && !a->program)
		return kh_cli_usage(P, "--program is required");
	if ((what & T_RECEIPT) && (!a->receipt || !*a->receipt))
		return kh_cli_usage(P, "--receipt is required");
	if ((what & T_RUN) && (!a->package || !a->licence || !*a->package || !*a->licence))
		return kh_cli_usage(P, "--package and --licence are required");
	if (a->workdir && !*a->workdir)
		return kh_cli_usage(P, "--workdir takes a directory");
	return KH_EXIT_OK;
}

/* The password from a private file, its final newline dropped; *pw wiped and freed by the caller. */
static int read_password(const char *P, const char *path, char **pw)
{
	uint8_t *b = NULL;
	size_t len = 0, n;
	kh_err r;

	if ((r = kh_keyfile_read(path, PASSWORD_MAX, &b, &len)) != KH_OK)
		return kh_cli_fail(path, r);
	n = len > 0 && b[len - 1] == '\n' ? len - 1 : len;
	*pw = NULL;
	if (n == 0 || memchr(b, 0, n) || memchr(b, '\n', n))
		fprintf(stderr, "keyhole: %s: %s: a password file holds one line, not empty\n", P, path);
	else if (!(*pw = strndup((const char *)b, n)))
		kh_cli_fail(P, KH_ERR_NOMEM);
	kh_file_free(b, len);
	return *pw ? KH_EXIT_OK : KH_EXIT_FAIL;
}

static void free_password(char *pw)
{
	if (pw) {
		kh_wipe(pw, strlen(pw));
		free(pw);
	}
}

/* "keyhole: P: WHY" with the client's words when it has some. */
static int client_fail(const char *P, const struct kh_dist_client *c, kh_err r, const char *tail)
{
	const char *m = kh_dist_client_error(c);
	fprintf(stderr, "keyhole: %s: %s%s\n", P, *m ? m : kh_strerror(r), tail ? tail : "");
	return KH_EXIT_FAIL;
}

/* buy (receipt_path NULL) and get. */
static int fetch(const char *P, const struct args *a, uint32_t program, const char *receipt_path)
{
	struct kh_dist_client *c = NULL;
	struct kh_transport t = {0};
	struct kh_softmod *sm = NULL;
	struct kh_dist_result res;
	uint8_t *rcpt = NULL;
	size_t rn = 0;
	char *pw = NULL, what[256], hex[2 * KH_DIST_RECEIPT_LEN + 1];
	int rc, maybe = 0, opened = 0;
	kh_err r;

	if (receipt_path) {
		if ((r = kh_file_read(receipt_path, KH_DIST_RECEIPT_BYTES + 1, &rcpt, &rn)) != KH_OK)
			return kh_cli_fail(receipt_path, r);
		if (rn != KH_DIST_RECEIPT_BYTES) {
			kh_file_free(rcpt, rn);
			fprintf(stderr, "keyhole: %s: %s: not a receipt (%d bytes)\n", P, receipt_path,
				KH_DIST_RECEIPT_BYTES);
			return KH_EXIT_FAIL;
		}
	}
	if ((rc = read_password(P, a->password_file, &pw)) != KH_EXIT_OK)
		goto out;
	rc = KH_EXIT_FAIL;
	if ((r = kh_dist_client_new(a->server, a->cacert, &c)) != KH_OK) {
		rc = kh_cli_fail(P, r);
		goto out;
	}
	if ((r = kh_cli_open_module(a->processor, NULL, &sm, &t, what, sizeof what)) != KH_OK) {
		rc = kh_cli_fail(what, r);
		goto out;
	}
	opened = 1;
	r = kh_dist_login(c, a->user, pw);
	free_password(pw);
	pw = NULL;
	if (r != KH_OK) {
		rc = client_fail(P, c, r, NULL);
		goto out;
	}
	if ((r = kh_dist_fetch(c, &t, program, rcpt, a->out, &res, &maybe)) != KH_OK) {
		rc = client_fail(P, c, r, maybe ? "; the charge may have been made: run the same command again to finish"
						 : NULL);
		goto out;
	}
	kh_hex_encode(res.receipt_id, sizeof res.receipt_id, hex);
	if (receipt_path)
		printf("fetched program %" PRIu32 " version %" PRIu32 " receipt %s charged %d\n", res.program,
		       res.version, hex, res.charged);
	else
		printf("bought program %" PRIu32 " version %" PRIu32 " price %" PRIu32 " receipt %s balance %" PRId64
		       "\n",
		       res.program, res.version, res.price, hex, res.balance);
	rc = fflush(stdout) == 0 ? KH_EXIT_OK : kh_cli_fail("standard output", KH_ERR_IO);
out:
	free_password(pw);
	if (opened)
		kh_transport_close(&t);
	kh_softmod_free(sm);
	kh_dist_client_free(c);
	if (rcpt)
		kh_file_free(rcpt, rn);
	return rc;
}

int kh_cmd_dist_buy(int argc, char **argv)
{
	static const char P[] = "dist buy";
	struct args a;
	uint64_t id;
	int helped, rc;

	if ((rc = parse(P, buy_help, T_SERVER | T_LOGIN | T_PROGRAM, argc, argv, &a, &helped)) != KH_EXIT_OK || helped)
		return rc;
	if (kh_cli_parse_num(a.program, UINT32_MAX, &id) != 0 || id == 0)
		return kh_cli_usage(P, "--program takes a program's id, 1 to 4294967295");
	return fetch(P, &a, (uint32_t)id, NULL);
}

int kh_cmd_dist_get(int argc, char **argv)
{
	static const char P[] = "dist get";
	struct args a;
	int helped, rc;

	if ((rc = parse(P, get_help, T_SERVER | T_LOGIN | T_RECEIPT, argc, argv, &a, &helped)) != KH_EXIT_OK || helped)
		return rc;
	return fetch(P, &a, 0, a.receipt);
}

static kh_err print_listing(void *arg, const struct kh_dist_listing *p)
{
	(void)arg;
	if (printf("%" PRIu32 " %s %" PRIu32 " %" PRIu64 "\n", p->id, p->name, p->version, p->price) < 0)
		return KH_ERR_IO;
	return KH_OK;
}

int kh_cmd_dist_list(int argc, char **argv)
{
	static const char P[] = "dist list";
	struct kh_dist_client *c = NULL;
	struct args a;
	int helped, rc;
	kh_err r;

	if ((rc = parse(P, list_help, T_SERVER, argc, argv, &a, &helped)) != KH_EXIT_OK || helped)
		return rc;
	if ((r = kh_dist_client_new(a.server, a.cacert, &c)) != KH_OK)
		return kh_cli_fail(P, r);
	r = kh_dist_list(c, print_listing, NULL);
	rc = r == KH_OK ? KH_EXIT_OK : client_fail(P, c, r, NULL);
	kh_dist_client_free(c);
	if (rc == KH_EXIT_OK && fflush(stdout) != 0)
		rc = kh_cli_fail("standard output", KH_ERR_IO);
	return rc;
}

int kh_cmd_dist_run(int argc, char **argv)
{
	static const char P[] = "dist run";
	struct kh_run_opts o = {.workdir_fd = -1, .fd_in = STDIN_FILENO, .fd_out = STDOUT_FILENO, .fd_err = STDERR_FILENO};
	struct kh_transport t = {0};
	struct kh_softmod *sm = NULL;
	struct args a;
	uint8_t *tok = NULL;
	size_t toklen = 0;
	char what[256], why[256];
	int helped, rc, pkg = -1, status = 0;
	kh_err r;

	if ((rc = parse(P, run_help, T_RUN, argc, argv, &a, &helped)) != KH_EXIT_OK || helped)
		return rc;
	rc = KH_EXIT_FAIL;
	if ((pkg = open(a.package, O_RDONLY | O_CLOEXEC | O_NOCTTY)) < 0) {
		fprintf(stderr, "keyhole: %s: %s\n", a.package, strerror(errno));
		goto out;
	}
	if ((r = kh_file_read(a.licence, KH_DIST_TOKEN_MAX, &tok, &toklen)) != KH_OK) {
		rc = kh_cli_fail(a.licence, r);
		goto out;
	}
	if (a.workdir && (o.workdir_fd = open(a.workdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
		fprintf(stderr, "keyhole: %s: %s\n", a.workdir, strerror(errno));
		goto out;
	}
	o.args = a.rest;
	if ((r = kh_cli_open_module(a.processor, NULL, &sm, &t, what, sizeof what)) != KH_OK) {
		rc = kh_cli_fail(what, r);
		goto out;
	}
	r = kh_processor_run(&t, pkg, tok, toklen, &o, &status, why, sizeof why);
	kh_transport_close(&t);
	if (r != KH_OK) {
		fprintf(stderr, "keyhole: %s: %s\n", P, why[0] ? why : kh_strerror(r));
		goto out;
	}
	rc = status;
out:
	kh_softmod_free(sm);
	if (tok)
		kh_file_free(tok, toklen);
	if (pkg >= 0)
		close(pkg);
	if (o.workdir_fd >= 0)
		close(o.workdir_fd);
	return rc;
}
