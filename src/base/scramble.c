/*
 * Scrambler front end (include/keyhole/scramble.h): the part common to every algorithm. It
 * reads just enough of each TS packet header (ISO/IEC 13818-1 §2.4.3.2: sync byte 0x47,
 * transport_scrambling_control, adaptation_field_control, adaptation_field_length) to find the
 * payload, checks a whole call's packets before changing any, sets or clears the TSC bits, and
 * hands the payloads to the algorithm (scramble_csa.c, scramble_aes.c) in chunks so that the
 * back end can batch across packets. The full TS parser lives in ts.c; this one is kept small
 * and private on purpose, since it must never disagree with itself between scramble and
 * descramble.
 */
#include <stdlib.h>
#include <string.h>

#include "keyhole/crypto.h"
#include "keyhole/scramble.h"
#include "base/scramble_int.h"

/* Payloads handed to the back end per round; a multiple of the CSA batch size (see new). */
#define CHUNK_MIN 1024

struct kh_scr {
	enum kh_scr_alg alg;
	int keyed[2];
	struct kh__scr_csa *csa;
	struct kh__scr_aes *aes;
	struct kh__scr_item *items;
	size_t cap;
};

size_t kh_scr_keylen(enum kh_scr_alg alg)
{
	switch (alg) {
	case KH_SCR_CSA2:
		return KH_SCR_CSA_CW_LEN;
	case KH_SCR_CISSA:
	case KH_SCR_IDSA:
		return KH_SCR_AES_KEY_LEN;
	}
	return 0;
}

const char *kh_scr_alg_name(enum kh_scr_alg alg)
{
	switch (alg) {
	case KH_SCR_CSA2:
		return "DVB-CSA2";
	case KH_SCR_CISSA:
		return "DVB-CISSA";
	case KH_SCR_IDSA:
		return "ATIS-IDSA";
	}
	return "unknown";
}

kh_err kh_scr_new(enum kh_scr_alg alg, unsigned flags, struct kh_scr **out)
{
	struct kh_scr *s = NULL;
	kh_err r;

	if (!out || kh_scr_keylen(alg) == 0 || (flags & ~KH_SCR_F_CSA_REDUCE) ||
	    (flags && alg != KH_SCR_CSA2))
		return KH_ERR_INVAL;
	if (!(s = calloc(1, sizeof *s)))
		return KH_ERR_NOMEM;
	s->alg = alg;
	s->cap = CHUNK_MIN;
	if (alg == KH_SCR_CSA2) {
		unsigned bs;
		if ((r = kh__scr_csa_new(flags, &s->csa)) != KH_OK)
			goto out;
		/* A chunk of whole batches: a chunk boundary never leaves a batch half full. */
		bs = kh__scr_csa_batch(s->csa);
		s->cap = (CHUNK_MIN + bs - 1) / bs * bs;
	} else if ((r = kh__scr_aes_new(alg == KH_SCR_IDSA, &s->aes)) != KH_OK) {
		goto out;
	}
	if (!(s->items = calloc(s->cap, sizeof *s->items))) {
		r = KH_ERR_NOMEM;
		goto out;
	}
	*out = s;
	s = NULL;
	r = KH_OK;
out:
	kh_scr_free(s);
	return r;
}

void kh_scr_free(struct kh_scr *s)
{
	if (!s)
		return;
	kh__scr_csa_free(s->csa);
	kh__scr_aes_free(s->aes);
	/* The items only point into caller buffers, but hold nothing of ours worth keeping. */
	free(s->items);
	kh_wipe(s, sizeof *s);
	free(s);
}

kh_err kh_scr_set_key(struct kh_scr *s, enum kh_scr_parity parity, const uint8_t *key,
		      size_t keylen)
{
	kh_err r;

	if (!s || !key || (parity != KH_SCR_EVEN && parity != KH_SCR_ODD) ||
	    keylen != kh_scr_keylen(s->alg))
		return KH_ERR_INVAL;
	s->keyed[parity] = 0;
	if (s->csa) {
		kh__scr_csa_set_key(s->csa, parity, key);
	} else if ((r = kh__scr_aes_set_key(s->aes, parity, key)) != KH_OK) {
		kh__scr_aes_clear_key(s->aes, parity);
		return r;
	}
	s->keyed[parity] = 1;
	return KH_OK;
}

void kh_scr_clear_key(struct kh_scr *s, enum kh_scr_parity parity)
{
	if (!s || (parity != KH_SCR_EVEN && parity != KH_SCR_ODD))
		return;
	if (s->csa)
		kh__scr_csa_clear_key(s->csa, parity);
	else
		kh__scr_aes_clear_key(s->aes, parity);
	s->keyed[parity] = 0;
}

int kh_scr_has_key(const struct kh_scr *s, enum kh_scr_parity parity)
{
	if (!s || (parity != KH_SCR_EVEN && parity != KH_SCR_ODD))
		return 0;
	return s->keyed[parity];
}

/* ---- the minimal packet reader ---- */

enum pkt_kind {
	PKT_BAD,   /* no sync byte, AFC 00, adaptation field past the packet */
	PKT_EMPTY, /* no payload bytes (AFC 10, or AFC 11 with a 183-byte adaptation field) */
	PKT_PAYLOAD,
};

/* Classify p; for PKT_PAYLOAD, *off is where the payload starts (5..187 or 4). */
static enum pkt_kind pkt_parse(const uint8_t *p, unsigned *off)
{
	unsigned afc = (p[3] >> 4) & 3u;

	if (p[0] != 0x47 || afc == 0)
		return PKT_BAD;
	if (afc == 1) {
		*off = 4;
		return PKT_PAYLOAD;
	}
	/* An adaptation field: its length byte, then that many bytes, within the 184. */
	if (p[4] > 183)
		return PKT_BAD;
	if (afc == 2)
		return PKT_EMPTY;
	*off = 5u + p[4];
	return *off < KH_SCR_PACKET_LEN ? PKT_PAYLOAD : PKT_EMPTY;
}

static unsigned pkt_tsc(const uint8_t *p)
{
	return (p[3] >> 6) & 3u;
}

/* Hand the queued items to the back end. */
static kh_err run(struct kh_scr *s, int encrypt, size_t n, int last)
{
	if (s->csa) {
		kh__scr_csa_run(s->csa, encrypt, s->items, n, last);
		return KH_OK;
	}
	return kh__scr_aes_run(s->aes, encrypt, s->items, n);
}

kh_err kh_scr_scramble(struct kh_scr *s, uint8_t *pkts, size_t n, enum kh_scr_parity parity)
{
	unsigned off;
	size_t i, m = 0;
	kh_err r;

	if (!s || (!pkts && n) || (parity != KH_SCR_EVEN && parity != KH_SCR_ODD) ||
	    !s->keyed[parity] || n > SIZE_MAX / KH_SCR_PACKET_LEN)
		return KH_ERR_INVAL;
	/* Check every packet first: outputs only on success. */
	for (i = 0; i < n; i++) {
		const uint8_t *p = pkts + i * KH_SCR_PACKET_LEN;
		if (pkt_parse(p, &off) == PKT_BAD || pkt_tsc(p) != 0)
			return KH_ERR_FORMAT;
	}
	for (i = 0; i < n; i++) {
		uint8_t *p = pkts + i * KH_SCR_PACKET_LEN;
		if (pkt_parse(p, &off) != PKT_PAYLOAD)
			continue;
		p[3] = (uint8_t)((p[3] & 0x3Fu) | (parity ? 0xC0u : 0x80u));
		s->items[m].data = p + off;
		s->items[m].len = KH_SCR_PACKET_LEN - off;
		s->items[m].parity = parity;
		if (++m == s->cap) {
			if ((r = run(s, 1, m, 0)) != KH_OK)
				return r;
			m = 0;
		}
	}
	return run(s, 1, m, 1);
}

kh_err kh_scr_descramble(struct kh_scr *s, uint8_t *pkts, size_t n, size_t *skipped)
{
	unsigned off, tsc;
	size_t i, m = 0, skip = 0;
	enum pkt_kind k;
	kh_err r;

	if (!s || (!pkts && n) || n > SIZE_MAX / KH_SCR_PACKET_LEN)
		return KH_ERR_INVAL;
	/* Only a missing key can refuse the call: with both keys set, skip the checking pass. */
	for (i = 0; i < n && !(s->keyed[0] && s->keyed[1]); i++) {
		const uint8_t *p = pkts + i * KH_SCR_PACKET_LEN;
		tsc = pkt_tsc(p);
		if (tsc >= 2 && pkt_parse(p, &off) != PKT_BAD && !s->keyed[tsc & 1u])
			return KH_ERR_INVAL;
	}
	for (i = 0; i < n; i++) {
		uint8_t *p = pkts + i * KH_SCR_PACKET_LEN;
		tsc = pkt_tsc(p);
		k = pkt_parse(p, &off);
		if (k == PKT_BAD || tsc == 1)
			skip++;
		if (k == PKT_BAD || tsc < 2)
			continue;
		p[3] &= 0x3Fu;
		if (k != PKT_PAYLOAD)
			continue;
		s->items[m].data = p + off;
		s->items[m].len = KH_SCR_PACKET_LEN - off;
		s->items[m].parity = tsc & 1u;
		if (++m == s->cap) {
			if ((r = run(s, 0, m, 0)) != KH_OK)
				return r;
			m = 0;
		}
	}
	if ((r = run(s, 0, m, 1)) != KH_OK)
		return r;
	if (skipped)
		*skipped = skip;
	return KH_OK;
}

kh_err kh_scr_descramble_once(enum kh_scr_alg alg, unsigned flags, const uint8_t *even, const uint8_t *odd,
			      size_t keylen, uint8_t *pkts, size_t n, size_t *skipped)
{
	struct kh_scr *s = NULL;
	kh_err r;

	if (!even && !odd)
		return KH_ERR_INVAL;
	if ((r = kh_scr_new(alg, flags, &s)) != KH_OK)
		return r;
	if ((even && (r = kh_scr_set_key(s, KH_SCR_EVEN, even, keylen)) != KH_OK) ||
	    (odd && (r = kh_scr_set_key(s, KH_SCR_ODD, odd, keylen)) != KH_OK))
		goto out;
	r = kh_scr_descramble(s, pkts, n, skipped);
out:
	kh_scr_free(s);
	return r;
}
