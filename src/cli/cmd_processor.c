/*
 * keyhole processor: the buyer's tamper-resistant processor of program distribution
 * (docs/protocols/distribution.md). `serve` runs a processor module and its runner as a daemon on
 * a UNIX socket, the one way the host reaches it.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "keyhole/device.h"
#include "keyhole/host.h"
#include "keyhole/runner.h"
#include "keyhole/softmodule.h"

static const char serve_help[] =
	"usage: keyhole processor serve --module FILE --socket PATH [--key KEYFILE]\n"
	"\n"
	"Run the processor module in FILE and its runner as a daemon on a UNIX socket (mode 0600).\n"
	"The host sends the module's commands there (the distribution server's messages, relayed)\n"
	"and run requests: the runner decrypts a package through the module into memory and runs it\n"
	"confined, its output going to the host's own streams. The module's decrypting commands are\n"
	"never taken from the socket. Stops on SIGINT or SIGTERM.\n"
	"\n"
	"      --module FILE    the processor's module file (keyhole card issue --role processor)\n"
	"      --socket PATH    the UNIX socket to create (clients name it unix:PATH)\n"
	"      --key KEYFILE    its root key (default: FILE with .card replaced by .key)\n";

static int cmd_serve(int argc, char **argv)
{
	enum { O_KEY = 256, O_SOCKET, O_MODULE };
	static const struct option opts[] = {{"module", required_argument, NULL, O_MODULE},
					     {"socket", required_argument, NULL, O_SOCKET},
					     {"key", required_argument, NULL, O_KEY},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	static const char *const P = "processor serve";
	const char *sock = NULL, *file = NULL, *key = NULL;
	unsigned char seen[512] = {0};
	struct kh_softmod *sm = NULL;
	struct kh_transport t = {0};
	struct kh_module_info info;
	char what[4200];
	int c;
	kh_err r;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
		const char *dup = kh_cli_twice(opts, c, seen);
		if (dup)
			return kh_cli_usage(P, "--%s is given twice (it takes one value)", dup);
		switch (c) {
		case O_MODULE: file = optarg; break;
		case O_SOCKET: sock = optarg; break;
		case O_KEY: key = optarg; break;
		case 'h': fputs(serve_help, stdout); return KH_EXIT_OK;
		default: return kh_cli_usage(P, "unknown or incomplete option '%s'", argv[optind - 1]);
		}
	}
	if (optind != argc)
		return kh_cli_usage(P, "unexpected argument '%s'", argv[optind]);
	if (!sock || !file)
		return kh_cli_usage(P, "--module and --socket are required");
	if (strncmp(file, "unix:", 5) == 0)
		return kh_cli_usage(P, "--module takes a module file, not a socket");
	if ((r = kh_cli_open_module(file, key, &sm, &t, what, sizeof what)) != KH_OK)
		return kh_cli_fail(what, r);
	if ((r = kh_host_info(&t, &info)) != KH_OK || info.role != KH_ROLE_PROCESSOR) {
		kh_softmod_free(sm);
		if (r != KH_OK)
			return kh_cli_fail(file, r);
		fprintf(stderr, "keyhole: %s: a %s module, not a processor\n", file,
			kh_role_name((enum kh_role)info.role) ? kh_role_name((enum kh_role)info.role) : "blank");
		return KH_EXIT_FAIL;
	}
	r = kh_serve_processor(sock, kh_softmod_module(sm), kh_cli_stop_signals());
	kh_softmod_free(sm);
	if (r != KH_OK)
		return kh_cli_fail(sock, r);
	return KH_EXIT_OK;
}

static const struct kh_cli_cmd sub[] = {
	{"serve", cmd_serve, "run a processor module and its runner on a UNIX socket"},
};

int kh_cmd_processor(int argc, char **argv)
{
	return kh_cli_dispatch("processor", sub, sizeof sub / sizeof sub[0], argc, argv);
}
