/*
 * Inside the scramblers (src/base/scramble*.c) only: the two back ends behind kh_scr — libdvbcsa
 * bitslice batches for DVB-CSA2, AES-128 for DVB-CISSA and ATIS-IDSA — and the payload list that
 * scramble.c hands them after it has located and checked every packet.
 */
#ifndef KH_SCRAMBLE_INT_H
#define KH_SCRAMBLE_INT_H

#include <stddef.h>
#include <stdint.h>

#include "keyhole/err.h"
#include "keyhole/scramble.h"

/* One payload to process: where it is, its length (1..184) and its key parity. */
struct kh__scr_item {
	uint8_t *data;
	unsigned len;
	unsigned parity;
};

struct kh__scr_csa;
kh_err kh__scr_csa_new(unsigned flags, struct kh__scr_csa **out);
void kh__scr_csa_free(struct kh__scr_csa *c);
unsigned kh__scr_csa_batch(const struct kh__scr_csa *c);
void kh__scr_csa_set_key(struct kh__scr_csa *c, unsigned parity, const uint8_t cw[static 8]);
void kh__scr_csa_clear_key(struct kh__scr_csa *c, unsigned parity);
/* Queues the items into per-parity batches, running each batch when full; last != 0 also runs
 * the partial batches, which must happen before the call that owns the packets returns. */
void kh__scr_csa_run(struct kh__scr_csa *c, int encrypt, const struct kh__scr_item *it,
		     size_t n, int last);

struct kh__scr_aes;
kh_err kh__scr_aes_new(int idsa, struct kh__scr_aes **out);
void kh__scr_aes_free(struct kh__scr_aes *a);
kh_err kh__scr_aes_set_key(struct kh__scr_aes *a, unsigned parity, const uint8_t key[static 16]);
void kh__scr_aes_clear_key(struct kh__scr_aes *a, unsigned parity);
kh_err kh__scr_aes_run(struct kh__scr_aes *a, int encrypt, const struct kh__scr_item *it,
		       size_t n);

#endif
