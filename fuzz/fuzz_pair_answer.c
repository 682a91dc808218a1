/*
 * libFuzzer harness: the responder's answer as the initiator checks it (kh_pair_finish, seed
 * 000 step 4). Setup, once: a fixed handshake — PAIR OPEN made with the deterministic random
 * source to a fixed responder key, answered by the responder — which gives the initiator's
 * secrets and the one valid answer. Each input is checked against a fresh copy of those
 * secrets. Invariants: success exactly when the input is the valid answer, and then the channel
 * is the responder's mirror image; on refusal the channel is left byte-identical; the handshake
 * secrets are wiped either way, so a second try with the same state is refused as out of order.
 */
#include <stdio.h>
#include <string.h>

#include "keyhole/crypto.h"
#include "keyhole/hpke.h"
#include "keyhole/pair.h"

#include "fuzz_common.h"

#define NOW 1000u

static struct kh_rng_det rng;
static struct kh_pair_hs hs0;                 /* the initiator's secrets after PAIR OPEN */
static uint8_t answer[KH_PAIR_ANSWER_LEN];   /* the one valid answer */
static struct kh_chan resp_ch;               /* the responder's side */
static struct kh_chan old;                   /* what the initiator's channel held before */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	uint8_t sk[32], pk[32], open[KH_PAIR_OPEN_MAX];
	struct kh_wr w, wa;

	(void)argc, (void)argv;
	kh_rng_det_init(&rng, (const uint8_t *)fz_seed, sizeof fz_seed - 1);
	kh_rng_set(kh_rng_det_fn, &rng);
	if (kh_hpke_derive_keypair((const uint8_t *)fz_resp_ikm, sizeof fz_resp_ikm - 1, sk, pk) != KH_OK)
		__builtin_trap();
	kh_wr_init(&w, open, sizeof open);
	if (kh_pair_open_make(&hs0, pk, fz_pair_id, sizeof fz_pair_id, &w) != KH_OK)
		__builtin_trap();
	kh_wr_init(&wa, answer, sizeof answer);
	if (kh_pair_open_answer(sk, open, w.len, NOW, &resp_ch, &wa) != KH_OK || wa.len != sizeof answer)
		__builtin_trap();
	kh_wipe(sk, sizeof sk);
	memset(&old, 0x3c, sizeof old);
	old.open = 1;
	old.initiator = 1;
	return 0;
}

static int all_zero(const void *p, size_t n)
{
	const uint8_t *b = p;
	uint8_t acc = 0;
	size_t i;

	for (i = 0; i < n; i++)
		acc |= b[i];
	return acc == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct kh_pair_hs hs;
	struct kh_chan ch;
	int valid = size == sizeof answer && memcmp(data, answer, sizeof answer) == 0;
	kh_err r;

	memcpy(&hs, &hs0, sizeof hs);
	memcpy(&ch, &old, sizeof ch);
	r = kh_pair_finish(&hs, data, size, NOW, &ch);
	CHECK(all_zero(&hs, sizeof hs));
	if (!valid) {
		CHECK(r == KH_ERR_TRUNCATED || r == KH_ERR_TRAILING || r == KH_ERR_VERSION || r == KH_ERR_PAIR_AUTH);
		CHECK(memcmp(&ch, &old, sizeof ch) == 0);
	} else {
		CHECK(r == KH_OK);
		CHECK(ch.open == 1 && ch.initiator == 1 && ch.sent == 0 && ch.accepted == 0);
		CHECK(ch.max_msgs == KH_CHAN_MAX_MSGS && ch.opened_at == NOW);
		CHECK(memcmp(ch.k_send, resp_ch.k_recv, 32) == 0 && memcmp(ch.k_recv, resp_ch.k_send, 32) == 0);
	}
	/* The secrets are gone: the same answer again is a step out of order. */
	CHECK(kh_pair_finish(&hs, answer, sizeof answer, NOW, &ch) == KH_ERR_PAIR_STATE);
	kh_chan_wipe(&ch);
	return 0;
}
