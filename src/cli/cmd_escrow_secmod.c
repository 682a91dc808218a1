/*
 * keyhole escrow secmod: the escrow's signing process (seed 003, docs/internals/escrow-secmod.md).
 * It loads every listing key of its directory and answers KEYGEN, PUBKEY and DECRYPT on a UNIX
 * socket until SIGINT or SIGTERM; the HTTP front end, a separate process, never holds a key.
 */
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <sys/prctl.h>

#include "cli/cli.h"
#include "cli/escrow.h"
#include "keyhole/secmod.h"

static const char help[] =
	"usage: keyhole escrow secmod --keys DIR --socket PATH [--threads N]\n"
	"\n"
	"Run the escrow's signing process: it holds one RSA key per listing in DIR (mode 0700, one\n"
	"private file per key) and answers the front end on a UNIX socket (mode 0600, only processes\n"
	"of this user may connect): make a key, give a public key, and compute z = c'^d mod n on a\n"
	"blinded value. No answer and no log line carries a private key. Stops on SIGINT or SIGTERM.\n"
	"\n"
	"  -k, --keys DIR       the key directory (made with mode 0700 when it does not exist)\n"
	"      --socket PATH    the UNIX socket to create\n"
	"  -t, --threads N      connections served at once, 1 to 1024 (default 64)\n";

int kh_cmd_escrow_secmod(int argc, char **argv)
{
	enum { O_SOCKET = 256 };
	static const struct option opts[] = {{"keys", required_argument, NULL, 'k'},
					     {"socket", required_argument, NULL, O_SOCKET},
					     {"threads", required_argument, NULL, 't'},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	static const char *const P = "escrow secmod";
	const char *dir = NULL, *sock = NULL;
	unsigned threads = KH_SECMOD_THREADS_DEFAULT;
	unsigned char seen[512] = {0};
	struct kh_secmod *s = NULL;
	char bad[PATH_MAX];
	uint64_t v;
	int c;
	kh_err r;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+hk:t:", opts, NULL)) != -1) {
		const char *dup = kh_cli_twice(opts, c, seen);
		if (dup)
			return kh_cli_usage(P, "--%s is given twice (it takes one value)", dup);
		switch (c) {
		case 'k': dir = optarg; break;
		case O_SOCKET: sock = optarg; break;
		case 't':
			if (kh_cli_parse_num(optarg, KH_SECMOD_THREADS_MAX, &v) != 0 || v < 1)
				return kh_cli_usage(P, "--threads takes a number from 1 to %d", KH_SECMOD_THREADS_MAX);
			threads = (unsigned)v;
			break;
		case 'h': fputs(help, stdout); return KH_EXIT_OK;
		default: return kh_cli_usage(P, "unknown or incomplete option '%s'", argv[optind - 1]);
		}
	}
	if (optind != argc)
		return kh_cli_usage(P, "unexpected argument '%s'", argv[optind]);
	if (!dir || !sock)
		return kh_cli_usage(P, "--keys and --socket are required");
	if (!dir[0] || !sock[0])
		return kh_cli_usage(P, "--keys and --socket take a non-empty path");
	/* the process holds private keys: no core file, no tracing by its own user */
	if (prctl(PR_SET_DUMPABLE, 0) != 0)
		return kh_cli_fail("prctl", KH_ERR_IO);
	if ((r = kh_secmod_open(dir, &s, bad, sizeof bad)) != KH_OK)
		return kh_cli_fail(bad, r);
	r = kh_secmod_serve(s, sock, threads, kh_cli_stop_signals(), NULL);
	kh_secmod_free(s);
	if (r != KH_OK)
		return kh_cli_fail(sock, r);
	return KH_EXIT_OK;
}
