/*
 * The `keyhole escrow` commands (seed 003), dispatched from src/cli/cmd_escrow.c: the signing
 * process (cmd_escrow_secmod.c) and the operator's commands (cmd_escrow_admin.c).
 */
#ifndef KH_CLI_ESCROW_H
#define KH_CLI_ESCROW_H

#include "keyhole/escrowclient.h"
#include "keyhole/softmodule.h"

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

/* The escrow's clients (cmd_escrow_client.c; the split key in cmd_escrow_split.c). */
/* --escrow, --token-file (may be NULL), --cacert: a client of the escrow. An exit status. */
int kh_cli_escrow_client(const char *P, const char *url, const char *tfile, const char *cacert,
			 struct kh_escrow_client **c);
/* A failure of the client: its own words when it has them. An exit status. */
int kh_cli_escrow_fail(struct kh_escrow_client *c, const char *what, kh_err r);
/* --device SPEC: a module file run in-process, or unix:PATH for a daemon. An exit status. */
int kh_cli_escrow_device(const char *spec, struct kh_softmod **sm, struct kh_transport *t);
void kh_cli_escrow_device_close(struct kh_softmod *sm, struct kh_transport *t);
/* The device's reasons for a `failed` notice, by enum kh_escrow_reason. */
extern const char *const kh_cli_escrow_reasons[6];
/* keyhole seller split, seller grant, buyer cert, buyer combine. */
int kh_cmd_seller_split(int argc, char **argv);
int kh_cmd_seller_grant(int argc, char **argv);
int kh_cmd_buyer_cert(int argc, char **argv);
int kh_cmd_buyer_combine(int argc, char **argv);

#endif
