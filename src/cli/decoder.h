/*
 * What the files of `keyhole decoder` share (cmd_decoder.c: the command table, play and buy;
 * decoder_status.c; decoder_m1.c: the decoder's memory M1 and its commands; decoder_connect.c).
 */
#ifndef KH_CLI_DECODER_H
#define KH_CLI_DECODER_H

#include <stdint.h>

#include "keyhole/err.h"
#include "keyhole/m1.h"

struct kh_host_cas;

/* The decoder's memory M1 as play, buy and connect keep it. */
struct kh__cli_m1 {
	const char *dir; /* NULL: no M1 */
	uint8_t key[KH_M1_KEY_LEN];
	kh_err last; /* last failure told on stderr, to tell each once */
	unsigned stored, kept; /* blocks M1 took; exports the card refused (not authorised) */
};

/* Load (or make) the local key before anything else happens: a bad key file is a hard error
 * (KH_EXIT_FAIL, told on stderr); dir NULL: no M1. */
int kh__cli_m1_open(struct kh__cli_m1 *m, const char *dir);
/*
 * The card's data changed, or the stream is over: ask the card for a block for M1 and keep it.
 * A card not authorised to export answers EXPORT_DENIED, and M1 keeps what it holds (seed 001:
 * the replaced card's block, until the center has recovered it). Never fails the command: M1
 * trouble is told on stderr once per kind.
 */
void kh__cli_m1_update(struct kh__cli_m1 *m, struct kh_host_cas *cas, const char *why);
void kh__cli_m1_close(struct kh__cli_m1 *m);

int kh__cli_decoder_status(int argc, char **argv);
int kh__cli_decoder_init(int argc, char **argv);
int kh__cli_decoder_m1(int argc, char **argv);
int kh__cli_decoder_connect(int argc, char **argv);

#endif
