/*
 * The `keyhole` command: one binary, subcommands from a table (in the manner of wg(8)).
 * Exit status: 0 success, 1 failure, 2 usage error.
 */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

static const struct kh_cli_cmd commands[] = {
	{"authority", kh_cmd_authority, "create and inspect the operator authority"},
	{"card", kh_cmd_card, "issue, inspect and serve security modules (cards and CAMs)"},
	{"pair", kh_cmd_pair, "pair a CAM with a card (seed 000) and exchange sealed commands"},
	{"headend", kh_cmd_headend, "pay-TV headend: keys, EMMs, and scrambling a transport stream"},
	{"ecmg", kh_cmd_ecmg, "SimulCrypt ECMG: ECMs for a scrambler's SCS over TCP"},
	{"emmg", kh_cmd_emmg, "SimulCrypt EMMG: the center's EMMs to a multiplexer over TCP"},
	{"ts", kh_cmd_ts, "look inside a transport stream: programmes, PIDs, bitrates, scrambling, ECMs, EMMs"},
	{"decoder", kh_cmd_decoder, "watch a scrambled transport stream through a CAM and a card; buy; status"},
	{"serve", kh_cmd_serve, "serve the management center's operator API over HTTP (/v1, /metrics)"},
	{"center", kh_cmd_center, "the operator's client of the management center's API (keyhole serve)"},
	{"store", kh_cmd_store, "check a center's database, and copy it between SQLite and PostgreSQL"},
	{"processor", kh_cmd_processor, "the buyer's tamper-resistant processor: its module and runner as a daemon"},
	{"dist", kh_cmd_dist, "program distribution: its server, and the buyer's client"},
	{"escrow", kh_cmd_escrow, "the escrow of blinded licence keys: its service, signing process and ledger"},
	{"keycenter", kh_cmd_keycenter, "the key center relay: enrol key cards, serve their posts and mailboxes"},
	{"seller", kh_cmd_seller, "list content at an escrow and encrypt it for the listing"},
	{"buyer", kh_cmd_buyer, "buy escrowed content for a buyer's device, open it, follow purchases"},
	{"keycard", kh_cmd_keycard, "a key card's host: activate it, send, fetch and open messages (key center)"},
	{"demo", kh_cmd_demo, "tell the pairing and pay-TV story end to end in a temporary directory"},
};

int main(int argc, char **argv)
{
	if (argc == 2 && (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0)) {
		printf("keyhole %s\n", KH_VERSION);
		return KH_EXIT_OK;
	}
	return kh_cli_dispatch(NULL, commands, sizeof commands / sizeof commands[0], argc, argv);
}
