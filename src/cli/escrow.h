/*
 * The `keyhole escrow` commands (seed 003): one file per subcommand, dispatched from
 * src/cli/cmd_escrow.c.
 */
#ifndef KH_CLI_ESCROW_H
#define KH_CLI_ESCROW_H

/* keyhole escrow secmod: the signing process that holds the listings' RSA keys. */
int kh_cmd_escrow_secmod(int argc, char **argv);

#endif
