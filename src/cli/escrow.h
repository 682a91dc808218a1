/*
 * The `keyhole escrow` commands (seed 003), dispatched from src/cli/cmd_escrow.c: the signing
 * process (cmd_escrow_secmod.c) and the operator's commands (cmd_escrow_admin.c).
 */
#ifndef KH_CLI_ESCROW_H
#define KH_CLI_ESCROW_H

/* keyhole escrow secmod: the signing process that holds the listings' RSA keys. */
int kh_cmd_escrow_secmod(int argc, char **argv);
/* keyhole escrow init: the escrow's identity, certified by the authority (cmd_escrow_admin.c). */
int kh_cmd_escrow_init(int argc, char **argv);
/* keyhole escrow serve: the escrow's HTTP API. */
int kh_cmd_escrow_serve(int argc, char **argv);
/* keyhole escrow account add|deposit|token. */
int kh_cmd_escrow_account(int argc, char **argv);
/* keyhole escrow audit: recompute the ledger and check it balances. */
int kh_cmd_escrow_audit(int argc, char **argv);
/* keyhole escrow sweep: post the purchases past their deadline. */
int kh_cmd_escrow_sweep(int argc, char **argv);

#endif
