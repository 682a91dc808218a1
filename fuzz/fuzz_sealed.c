/*
 * libFuzzer harness: sealed channel messages (seed 000 step 4) as each end receives them.
 * Setup, once: a fixed open channel pair (the handshake of fuzz_pair_answer), after which the
 * initiator has sealed one command (counter 1). Each input goes, on fresh copies of that state,
 * to kh_chan_open_cmd on the responder and to kh_chan_open_resp on the initiator. Invariants:
 * a refusal leaves the channel byte-identical; an acceptance is genuine — sealing the opened
 * body again with the sender's key and that counter gives back exactly the input — and moves
 * only the accepted counter; the same message a second time is refused as a replay; a body
 * buffer one byte too small is refused without touching the channel.
 */
#include <stdio.h>
#include <string.h>

#include "keyhole/crypto.h"
#include "keyhole/hpke.h"
#include "keyhole/pair.h"

#include "fuzz_common.h"

static const uint8_t fz_body1[] = {0x80, 0x10, 0x00, 0x00};
#define NOW 1000u

#define MAX_BODY (1u << 16)

static struct kh_rng_det rng;
static struct kh_chan resp0; /* responder, nothing accepted yet */
static struct kh_chan init0; /* initiator right after the handshake (sent = 0) */
static struct kh_chan init1; /* initiator after sealing fz_body1 (sent = 1): the fuzzed state */
static uint8_t body[MAX_BODY], resealed[MAX_BODY + KH_CHAN_OVERHEAD];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	uint8_t sk[32], pk[32], open[KH_PAIR_OPEN_MAX], ans[KH_PAIR_ANSWER_LEN], cmd[64];
	struct kh_pair_hs hs;
	struct kh_wr w;

	(void)argc, (void)argv;
	kh_rng_det_init(&rng, (const uint8_t *)fz_seed, sizeof fz_seed - 1);
	kh_rng_set(kh_rng_det_fn, &rng);
	memset(&resp0, 0, sizeof resp0);
	memset(&init0, 0, sizeof init0);
	if (kh_hpke_derive_keypair((const uint8_t *)fz_resp_ikm, sizeof fz_resp_ikm - 1, sk, pk) != KH_OK)
		__builtin_trap();
	kh_wr_init(&w, open, sizeof open);
	if (kh_pair_open_make(&hs, pk, fz_pair_id, sizeof fz_pair_id, &w) != KH_OK)
		__builtin_trap();
	{
		struct kh_wr wa;
		kh_wr_init(&wa, ans, sizeof ans);
		if (kh_pair_open_answer(sk, open, w.len, NOW, &resp0, &wa) != KH_OK)
			__builtin_trap();
	}
	if (kh_pair_finish(&hs, ans, sizeof ans, NOW, &init0) != KH_OK)
		__builtin_trap();
	memcpy(&init1, &init0, sizeof init1);
	kh_wr_init(&w, cmd, sizeof cmd);
	if (kh_chan_seal_cmd(&init1, fz_body1, sizeof fz_body1, &w) != KH_OK || init1.sent != 1)
		__builtin_trap();
	kh_wipe(sk, sizeof sk);
	return 0;
}

static int refusal(kh_err r)
{
	return r == KH_ERR_TRUNCATED || r == KH_ERR_VERSION || r == KH_ERR_CHAN_REPLAY || r == KH_ERR_CHAN_REKEY ||
	       r == KH_ERR_TOO_LARGE || r == KH_ERR_CHAN_AUTH;
}

/* The responder receives the input as a command. */
static void as_command(const uint8_t *data, size_t size)
{
	struct kh_chan ch, sender, expect;
	struct kh_wr w;
	size_t blen = 0;
	uint32_t ctr;
	kh_err r;

	memcpy(&ch, &resp0, sizeof ch);
	r = kh_chan_open_cmd(&ch, data, size, body, sizeof body, &blen);
	if (r != KH_OK) {
		CHECK(refusal(r));
		CHECK(memcmp(&ch, &resp0, sizeof ch) == 0);
		return;
	}
	CHECK(size >= KH_CHAN_OVERHEAD && data[0] == KH_PAIR_VERSION && blen == size - KH_CHAN_OVERHEAD);
	ctr = kh_get_be32(data + 1);
	CHECK(ctr > resp0.accepted && ctr <= resp0.max_msgs);
	memcpy(&expect, &resp0, sizeof expect);
	expect.accepted = ctr;
	CHECK(memcmp(&ch, &expect, sizeof ch) == 0);

	/* Genuine: the initiator, about to send counter ctr, seals exactly these bytes. */
	memcpy(&sender, &init0, sizeof sender);
	sender.sent = ctr - 1;
	kh_wr_init(&w, resealed, sizeof resealed);
	CHECK(kh_chan_seal_cmd(&sender, body, blen, &w) == KH_OK);
	CHECK(w.len == size && memcmp(resealed, data, size) == 0);

	/* Once accepted, never again. */
	CHECK(kh_chan_open_cmd(&ch, data, size, body, sizeof body, &blen) == KH_ERR_CHAN_REPLAY);
	CHECK(memcmp(&ch, &expect, sizeof ch) == 0);

	/* No room for the body: refused, nothing moves. */
	if (size > KH_CHAN_OVERHEAD) {
		memcpy(&ch, &resp0, sizeof ch);
		CHECK(kh_chan_open_cmd(&ch, data, size, body, size - KH_CHAN_OVERHEAD - 1, &blen) == KH_ERR_TOO_LARGE);
		CHECK(memcmp(&ch, &resp0, sizeof ch) == 0);
	}
	kh_chan_wipe(&sender);
}

/* The initiator, waiting for the answer to its command 1, receives the input. */
static void as_response(const uint8_t *data, size_t size)
{
	struct kh_chan ch, sender, expect;
	struct kh_wr w;
	size_t blen = 0;
	kh_err r;

	memcpy(&ch, &init1, sizeof ch);
	r = kh_chan_open_resp(&ch, data, size, body, sizeof body, &blen);
	if (r != KH_OK) {
		CHECK(refusal(r));
		CHECK(memcmp(&ch, &init1, sizeof ch) == 0);
		return;
	}
	CHECK(size >= KH_CHAN_OVERHEAD && data[0] == KH_PAIR_VERSION && blen == size - KH_CHAN_OVERHEAD);
	CHECK(kh_get_be32(data + 1) == init1.sent);
	memcpy(&expect, &init1, sizeof expect);
	expect.accepted = init1.sent;
	CHECK(memcmp(&ch, &expect, sizeof ch) == 0);

	/* Genuine: the responder, having accepted command 1, seals exactly these bytes. */
	memcpy(&sender, &resp0, sizeof sender);
	sender.accepted = init1.sent;
	kh_wr_init(&w, resealed, sizeof resealed);
	CHECK(kh_chan_seal_resp(&sender, body, blen, &w) == KH_OK);
	CHECK(w.len == size && memcmp(resealed, data, size) == 0);

	CHECK(kh_chan_open_resp(&ch, data, size, body, sizeof body, &blen) == KH_ERR_CHAN_REPLAY);
	CHECK(memcmp(&ch, &expect, sizeof ch) == 0);

	if (size > KH_CHAN_OVERHEAD) {
		memcpy(&ch, &init1, sizeof ch);
		CHECK(kh_chan_open_resp(&ch, data, size, body, size - KH_CHAN_OVERHEAD - 1, &blen) == KH_ERR_TOO_LARGE);
		CHECK(memcmp(&ch, &init1, sizeof ch) == 0);
	}
	kh_chan_wipe(&sender);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > MAX_BODY)
		return 0;
	as_command(data, size);
	as_response(data, size);
	return 0;
}
