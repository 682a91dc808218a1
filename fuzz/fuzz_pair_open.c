/*
 * libFuzzer harness: PAIR OPEN as the responder receives it (kh_pair_open_answer, seed 000
 * step 3), with a fixed X25519 key derived from a public constant. The channel passed in holds
 * an earlier session; on any refusal it must be left byte-identical and nothing may be written
 * out. On success the answer is KH_PAIR_ANSWER_LEN bytes, the channel is open as responder,
 * the same request answered again draws a fresh Nr (other answer, other keys), and answering it
 * into a writer too small for the answer is refused with the channel again untouched. The seeds (fuzz/gen_corpus.c) are PAIR OPENs made to this key.
 */
#include <stdio.h>
#include <string.h>

#include "keyhole/crypto.h"
#include "keyhole/hpke.h"
#include "keyhole/pair.h"

#include "fuzz_common.h"

#define NOW 1000u

static struct kh_rng_det rng;
static uint8_t skR[32], pkR[32];
static struct kh_chan old; /* the session the responder had before */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	kh_rng_det_init(&rng, (const uint8_t *)fz_seed, sizeof fz_seed - 1);
	kh_rng_set(kh_rng_det_fn, &rng);
	if (kh_hpke_derive_keypair((const uint8_t *)fz_resp_ikm, sizeof fz_resp_ikm - 1, skR, pkR) != KH_OK)
		__builtin_trap();
	memset(&old, 0xc3, sizeof old);
	old.sent = 7;
	old.accepted = 9;
	old.max_msgs = KH_CHAN_MAX_MSGS;
	old.opened_at = 42;
	old.open = 1;
	old.initiator = 0;
	return 0;
}

static int all_zero(const uint8_t *p, size_t n)
{
	uint8_t acc = 0;
	size_t i;

	for (i = 0; i < n; i++)
		acc |= p[i];
	return acc == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t out[2 * KH_PAIR_ANSWER_LEN];
	struct kh_chan ch;
	struct kh_wr w;
	kh_err r;

	memcpy(&ch, &old, sizeof ch); /* memcpy, not assignment: padding too */
	memset(out, 0, sizeof out);
	kh_wr_init(&w, out, sizeof out);
	r = kh_pair_open_answer(skR, data, size, NOW, &ch, &w);
	if (r != KH_OK) {
		CHECK(r == KH_ERR_TRUNCATED || r == KH_ERR_TRAILING || r == KH_ERR_VERSION || r == KH_ERR_FORMAT ||
		      r == KH_ERR_PAIR_OPEN);
		CHECK(memcmp(&ch, &old, sizeof ch) == 0);
		CHECK(w.len == 0 && w.err == KH_OK && all_zero(out, sizeof out));
		return 0;
	}
	/* Accepted: exactly the shape of PAIR OPEN, and an answer of the fixed length. */
	CHECK(size >= 2 && data[0] == KH_PAIR_VERSION && data[1] <= KH_PAIR_ID_MAX);
	CHECK(size == 2u + data[1] + 32 + KH_PAIR_CI_LEN + KH_PAIR_A_LEN + 16);
	CHECK(w.err == KH_OK && w.len == KH_PAIR_ANSWER_LEN && out[0] == KH_PAIR_VERSION);
	CHECK(all_zero(out + KH_PAIR_ANSWER_LEN, sizeof out - KH_PAIR_ANSWER_LEN));
	CHECK(ch.open == 1 && ch.initiator == 0 && ch.sent == 0 && ch.accepted == 0);
	CHECK(ch.max_msgs == KH_CHAN_MAX_MSGS && ch.opened_at == NOW);
	CHECK(memcmp(ch.k_send, ch.k_recv, 32) != 0);
	CHECK(memcmp(ch.k_send, old.k_send, 32) != 0 && memcmp(ch.k_recv, old.k_recv, 32) != 0);

	/* The same request again (a host replaying it): a fresh Nr, so a different answer and a
	 * channel with other keys — never the old channel back with its counters at zero. */
	{
		uint8_t again[KH_PAIR_ANSWER_LEN];
		struct kh_chan ch2;
		memcpy(&ch2, &old, sizeof ch2);
		kh_wr_init(&w, again, sizeof again);
		CHECK(kh_pair_open_answer(skR, data, size, NOW, &ch2, &w) == KH_OK);
		CHECK(w.len == KH_PAIR_ANSWER_LEN && again[0] == KH_PAIR_VERSION);
		CHECK(memcmp(again + 1, out + 1, KH_PAIR_NR_LEN) != 0);
		CHECK(memcmp(ch2.k_send, ch.k_send, 32) != 0 && memcmp(ch2.k_recv, ch.k_recv, 32) != 0);
		kh_chan_wipe(&ch2);
	}
	/* No room for the answer: refused, and the old channel stays. */
	{
		uint8_t small[KH_PAIR_ANSWER_LEN - 1];
		struct kh_chan ch3;
		memcpy(&ch3, &old, sizeof ch3);
		kh_wr_init(&w, small, sizeof small);
		CHECK(kh_pair_open_answer(skR, data, size, NOW, &ch3, &w) == KH_ERR_BUF);
		CHECK(memcmp(&ch3, &old, sizeof ch3) == 0);
		CHECK(w.len <= sizeof small);
	}
	kh_chan_wipe(&ch);
	return 0;
}
