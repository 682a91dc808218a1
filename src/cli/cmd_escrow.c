/*
 * keyhole escrow: the escrow of seed 003 (blinded license keys). Only the dispatch lives here;
 * each subcommand is a file of its own (cmd_escrow_<name>.c).
 */
#include "cli/cli.h"
#include "cli/escrow.h"

static const struct kh_cli_cmd sub[] = {
	{"secmod", kh_cmd_escrow_secmod, "the signing process: holds the listings' RSA keys, answers on a UNIX socket"},
};

int kh_cmd_escrow(int argc, char **argv)
{
	return kh_cli_dispatch("escrow", sub, sizeof sub / sizeof sub[0], argc, argv);
}
