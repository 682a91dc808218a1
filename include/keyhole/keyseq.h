/*
 * The key sequences of the key center relay (seed 004, docs/protocols/keycenter.md): a key card
 * holds a 32-byte seed and a serial, and from them two chains, one for the messages it sends and
 * one for those it receives, so that a card sending and receiving at once never uses one key
 * twice. Each chain is a state s_i at a position i that only moves forward:
 *
 *   s_1     = HKDF(seed, "", "keyhole keyseq chain v1" | serial | dir, 32)
 *   key_i   = HKDF(s_i,  "", "keyhole keyseq key v1"   | serial | dir | i, 32)
 *   s_{i+1} = HKDF(s_i,  "", "keyhole keyseq next v1", 32)
 *
 * serial and i are u64 big-endian, dir one byte (0 send, 1 receive). A chain at position i holds
 * s_i and nothing behind it: once it has moved past i, key_i cannot be made again, by the card or
 * by the key center (forward secrecy). Keys ahead are made by rolling a copy forward, at most
 * a window of positions. Base zone, no allocation: the module calls every function.
 */
#ifndef KEYHOLE_KEYSEQ_H
#define KEYHOLE_KEYSEQ_H

#include <stddef.h>
#include <stdint.h>

#include "keyhole/err.h"

#define KH_KEYSEQ_LEN 32
#define KH_KEYSEQ_WINDOW 64          /* the default window W */
#define KH_KEYSEQ_WINDOW_MAX 4096    /* the largest a caller may ask for */
#define KH_KEYSEQ_POS_MAX (UINT64_MAX - KH_KEYSEQ_WINDOW_MAX) /* no chain reaches beyond */

enum kh_keyseq_dir { KH_KEYSEQ_SEND = 0, KH_KEYSEQ_RECV = 1 };

/* A chain: its card's serial and direction, and its state s_pos at position pos (>= 1). */
struct kh_keyseq {
	uint64_t serial;
	uint8_t dir;
	uint64_t pos;
	uint8_t s[KH_KEYSEQ_LEN];
};

/* The chain dir of the card (seed, serial) at its start, position 1. KH_ERR_INVAL for another dir. */
KH_WARN_UNUSED kh_err kh_keyseq_init(const uint8_t seed[static KH_KEYSEQ_LEN], uint64_t serial,
				     enum kh_keyseq_dir dir, struct kh_keyseq *c);
/*
 * key_j for pos <= j <= pos + window - 1 (window 1..KH_KEYSEQ_WINDOW_MAX), the chain unchanged:
 * KH_ERR_KEY_BEHIND for j < pos (a key it can no longer make), KH_ERR_KEY_AHEAD beyond the
 * window or KH_KEYSEQ_POS_MAX, KH_ERR_INVAL for a bad window. key is written only on success;
 * every intermediate state is wiped.
 */
KH_WARN_UNUSED kh_err kh_keyseq_key(const struct kh_keyseq *c, uint64_t j, unsigned window,
				    uint8_t key[static KH_KEYSEQ_LEN]);
/*
 * Move the chain to position j (pos < j <= pos + window: past key_{j-1}), forgetting every state
 * behind j. KH_ERR_KEY_BEHIND for j <= pos, KH_ERR_KEY_AHEAD beyond, KH_ERR_INVAL for a bad
 * window; c is changed only on success.
 */
KH_WARN_UNUSED kh_err kh_keyseq_advance(struct kh_keyseq *c, uint64_t j, unsigned window);

#endif
