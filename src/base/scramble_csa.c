/*
 * DVB-CSA2 back end of the scrambler (scramble.c), on libdvbcsa's bitslice implementation.
 * Bitslice CSA processes dvbcsa_bs_batch_size() packets at the cost of one, so a half-empty
 * batch runs at half speed: payloads are queued per parity and a batch runs
 * only when full, or when the caller's call ends. Payloads shorter than one 8-byte CSA block are
 * left clear, as libdvbcsa's single-packet dvbcsa_encrypt/dvbcsa_decrypt leave them (the CSA
 * block cipher needs one whole block; tests/unit/test_scramble.c checks the two agree).
 *
 * libdvbcsa's key structure is opaque, so a key is wiped by setting the all-zero CW into it,
 * which overwrites the whole expanded schedule, before it is freed.
 */
#include <stdlib.h>
#include <string.h>

#include <dvbcsa/dvbcsa.h>

#include "keyhole/crypto.h"
#include "keyhole/scramble.h"
#include "base/scramble_int.h"

#define CSA_MIN_PAYLOAD 8
/* maxlen for dvbcsa_bs_*: the largest payload, a multiple of 8. */
#define CSA_MAXLEN 184

struct kh__scr_csa {
	struct dvbcsa_bs_key_s *key[2];
	struct dvbcsa_bs_batch_s *batch[2]; /* bs + 1 entries: NULL-terminated */
	unsigned fill[2];
	unsigned bs;
	int reduce;
};

/* The CSA2 common practice of 48-bit control words: byte 3 and 7 are checksums of the three
 * before them. It lives with the CSA back end, which applies it; kh_scr and the headend call it. */
void kh_scr_cw_reduce(uint8_t cw[static KH_SCR_CSA_CW_LEN])
{
	cw[3] = (uint8_t)(cw[0] + cw[1] + cw[2]);
	cw[7] = (uint8_t)(cw[4] + cw[5] + cw[6]);
}

kh_err kh__scr_csa_new(unsigned flags, struct kh__scr_csa **out)
{
	struct kh__scr_csa *c;
	kh_err r = KH_ERR_NOMEM;

	if (!(c = calloc(1, sizeof *c)))
		return KH_ERR_NOMEM;
	c->reduce = (flags & KH_SCR_F_CSA_REDUCE) != 0;
	c->bs = dvbcsa_bs_batch_size();
	if (c->bs == 0) {
		r = KH_ERR_CRYPTO;
		goto out;
	}
	for (unsigned p = 0; p < 2; p++) {
		if (!(c->key[p] = dvbcsa_bs_key_alloc()))
			goto out;
		if (!(c->batch[p] = calloc(c->bs + 1, sizeof *c->batch[p])))
			goto out;
		kh__scr_csa_clear_key(c, p);
	}
	*out = c;
	c = NULL;
	r = KH_OK;
out:
	kh__scr_csa_free(c);
	return r;
}

void kh__scr_csa_free(struct kh__scr_csa *c)
{
	if (!c)
		return;
	for (unsigned p = 0; p < 2; p++) {
		if (c->key[p]) {
			kh__scr_csa_clear_key(c, p);
			dvbcsa_bs_key_free(c->key[p]);
		}
		free(c->batch[p]);
	}
	free(c);
}

unsigned kh__scr_csa_batch(const struct kh__scr_csa *c)
{
	return c->bs;
}

void kh__scr_csa_set_key(struct kh__scr_csa *c, unsigned parity, const uint8_t cw[static 8])
{
	dvbcsa_cw_t k;

	memcpy(k, cw, sizeof k);
	if (c->reduce)
		kh_scr_cw_reduce(k);
	dvbcsa_bs_key_set(k, c->key[parity]);
	kh_wipe(k, sizeof k);
}

void kh__scr_csa_clear_key(struct kh__scr_csa *c, unsigned parity)
{
	static const dvbcsa_cw_t zero;

	dvbcsa_bs_key_set(zero, c->key[parity]);
}

static void flush(struct kh__scr_csa *c, int encrypt, unsigned p)
{
	if (c->fill[p] == 0)
		return;
	c->batch[p][c->fill[p]].data = NULL;
	c->batch[p][c->fill[p]].len = 0;
	if (encrypt)
		dvbcsa_bs_encrypt(c->key[p], c->batch[p], CSA_MAXLEN);
	else
		dvbcsa_bs_decrypt(c->key[p], c->batch[p], CSA_MAXLEN);
	c->fill[p] = 0;
}

void kh__scr_csa_run(struct kh__scr_csa *c, int encrypt, const struct kh__scr_item *it,
		     size_t n, int last)
{
	for (size_t i = 0; i < n; i++) {
		unsigned p = it[i].parity & 1u;
		if (it[i].len < CSA_MIN_PAYLOAD)
			continue;
		c->batch[p][c->fill[p]].data = it[i].data;
		c->batch[p][c->fill[p]].len = it[i].len;
		if (++c->fill[p] == c->bs)
			flush(c, encrypt, p);
	}
	if (last) {
		flush(c, encrypt, 0);
		flush(c, encrypt, 1);
	}
}
