/*
 * Key sequences (include/keyhole/keyseq.h): HKDF-SHA256 chains that move forward only. The
 * states rolled forward for a key ahead, or for a move, live on the stack and are wiped on every
 * path; the chain itself is written only once the whole move worked.
 */
#include <string.h>

#include "keyhole/buf.h"
#include "keyhole/crypto.h"
#include "keyhole/keyseq.h"

static const char label_chain[] = "keyhole keyseq chain v1";
static const char label_key[] = "keyhole keyseq key v1";
static const char label_next[] = "keyhole keyseq next v1";

kh_err kh_keyseq_init(const uint8_t seed[static KH_KEYSEQ_LEN], uint64_t serial, enum kh_keyseq_dir dir,
		      struct kh_keyseq *c)
{
	uint8_t info[sizeof label_chain - 1 + 8 + 1], s[KH_KEYSEQ_LEN];
	kh_err r;

	if (dir != KH_KEYSEQ_SEND && dir != KH_KEYSEQ_RECV)
		return KH_ERR_INVAL;
	memcpy(info, label_chain, sizeof label_chain - 1);
	kh_put_be64(info + sizeof label_chain - 1, serial);
	info[sizeof info - 1] = (uint8_t)dir;
	if ((r = kh_hkdf(seed, KH_KEYSEQ_LEN, NULL, 0, info, sizeof info, s, sizeof s)) == KH_OK) {
		c->serial = serial;
		c->dir = (uint8_t)dir;
		c->pos = 1;
		memcpy(c->s, s, sizeof s);
	}
	kh_wipe(s, sizeof s);
	return r;
}

/* Whether j is within reach of the chain: KH_OK, or why not. */
static kh_err reach(const struct kh_keyseq *c, uint64_t j, unsigned window)
{
	if (window < 1 || window > KH_KEYSEQ_WINDOW_MAX || c->pos < 1)
		return KH_ERR_INVAL;
	if (j < c->pos)
		return KH_ERR_KEY_BEHIND;
	if (j > KH_KEYSEQ_POS_MAX || j - c->pos >= window)
		return KH_ERR_KEY_AHEAD;
	return KH_OK;
}

/* s rolled forward n steps, in place. */
static kh_err roll(uint8_t s[static KH_KEYSEQ_LEN], uint64_t n)
{
	kh_err r = KH_OK;

	for (uint64_t k = 0; k < n && r == KH_OK; k++)
		r = kh_hkdf(s, KH_KEYSEQ_LEN, NULL, 0, (const uint8_t *)label_next, sizeof label_next - 1, s,
			    KH_KEYSEQ_LEN);
	return r;
}

kh_err kh_keyseq_key(const struct kh_keyseq *c, uint64_t j, unsigned window, uint8_t key[static KH_KEYSEQ_LEN])
{
	uint8_t s[KH_KEYSEQ_LEN], info[sizeof label_key - 1 + 8 + 1 + 8], k[KH_KEYSEQ_LEN];
	kh_err r;

	if ((r = reach(c, j, window)) != KH_OK)
		return r;
	memcpy(s, c->s, sizeof s);
	memcpy(info, label_key, sizeof label_key - 1);
	kh_put_be64(info + sizeof label_key - 1, c->serial);
	info[sizeof label_key - 1 + 8] = c->dir;
	kh_put_be64(info + sizeof label_key - 1 + 9, j);
	if ((r = roll(s, j - c->pos)) == KH_OK && (r = kh_hkdf(s, sizeof s, NULL, 0, info, sizeof info, k, sizeof k)) == KH_OK)
		memcpy(key, k, sizeof k);
	kh_wipe(s, sizeof s);
	kh_wipe(k, sizeof k);
	return r;
}

kh_err kh_keyseq_advance(struct kh_keyseq *c, uint64_t j, unsigned window)
{
	uint8_t s[KH_KEYSEQ_LEN];
	kh_err r;

	if (window < 1 || window > KH_KEYSEQ_WINDOW_MAX || c->pos < 1)
		return KH_ERR_INVAL;
	if (j <= c->pos)
		return KH_ERR_KEY_BEHIND;
	if (j > KH_KEYSEQ_POS_MAX || j - c->pos > window)
		return KH_ERR_KEY_AHEAD;
	memcpy(s, c->s, sizeof s);
	if ((r = roll(s, j - c->pos)) == KH_OK) {
		memcpy(c->s, s, sizeof s);
		c->pos = j;
	}
	kh_wipe(s, sizeof s);
	return r;
}
