/*
 * keyhole escrow: the escrow of seed 003 (blinded licence keys). Only the dispatch lives here:
 * the signing process is cmd_escrow_secmod.c, the operator's commands cmd_escrow_admin.c.
 */
#include "cli/cli.h"
#include "cli/escrow.h"

static const struct kh_cli_cmd sub[] = {
	{"init", kh_cmd_escrow_init, "make the escrow's identity, certified by the authority"},
	{"secmod", kh_cmd_escrow_secmod, "the signing process: holds the listings' RSA keys, answers on a UNIX socket"},
	{"serve", kh_cmd_escrow_serve, "serve the escrow's API over HTTP, beside its signing process"},
	{"account", kh_cmd_escrow_account, "open accounts, credit them, give them API tokens"},
	{"audit", kh_cmd_escrow_audit, "recompute the ledger from its entries and check it balances"},
	{"sweep", kh_cmd_escrow_sweep, "post to their sellers the purchases past their deadline"},
};

int kh_cmd_escrow(int argc, char **argv)
{
	return kh_cli_dispatch("escrow", sub, sizeof sub / sizeof sub[0], argc, argv);
}
