/*
 * keyhole dist: program distribution (docs/protocols/distribution.md). The client's four
 * subcommands (src/cli/cmd_dist_client.c), called from the `dist` command's table.
 */
#ifndef KH_CLI_DIST_H
#define KH_CLI_DIST_H

/* keyhole dist buy: buy a program for a processor; BASE.khpk, BASE.lic and BASE.receipt. */
int kh_cmd_dist_buy(int argc, char **argv);
/* keyhole dist get: fetch a program again on its receipt, charged nothing. */
int kh_cmd_dist_get(int argc, char **argv);
/* keyhole dist run: run a package under its licence through the processor daemon. */
int kh_cmd_dist_run(int argc, char **argv);
/* keyhole dist list: the server's catalogue, one program a line. */
int kh_cmd_dist_list(int argc, char **argv);

#endif
