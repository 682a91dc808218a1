/*
 * The card's usage-data block and upload hello (include/keyhole/usage.h, seed 001). The card
 * seals and signs; the center verifies the signature first (a block it cannot attribute is worth
 * nothing), then opens and parses. Every length is checked before use; plaintext is wiped.
 */
#include <string.h>

#include "keyhole/crypto.h"
#include "keyhole/usage.h"

kh_err kh_usage_seal_bound(const uint8_t ku[static 32], const uint8_t sign_sk[static 32], const struct kh_usage_hdr *h,
			   const uint8_t *contents, size_t len, const uint8_t *snonce, size_t snlen, uint8_t *out,
			   size_t cap, size_t *outlen)
{
	uint8_t sig[KH_USAGE_SIG_LEN];
	size_t body = KH_USAGE_HDR_LEN + len + KH_TAG_LEN;
	kh_err r;

	if (!h || !out || !outlen || (len && !contents) || (h->flags & ~KH_USAGE_F_ALL))
		return KH_ERR_INVAL;
	/* bound exactly when a nonce is given, and never for M1 as well */
	if (snonce ? h->flags != KH_USAGE_F_SESSION || snlen < KH_HELLO_NONCE_MIN || snlen > KH_HELLO_NONCE_MAX
		   : (h->flags & KH_USAGE_F_SESSION) != 0)
		return KH_ERR_INVAL;
	if (body + KH_USAGE_SIG_LEN > KH_USAGE_MAX)
		return KH_ERR_TOO_LARGE;
	if (body + KH_USAGE_SIG_LEN > cap)
		return KH_ERR_BUF;
	out[0] = KH_USAGE_VERSION;
	kh_put_be32(out + 1, h->ua);
	kh_put_be32(out + 5, h->block_seq);
	kh_put_be64(out + 9, h->card_time);
	out[17] = h->flags;
	/* A fresh nonce per block, never one from block_seq: a card restored from a copy of its
	 * files makes its block numbers again, and would seal other contents under the same nonce. */
	if ((r = kh_random(out + KH_USAGE_NONCE_OFF, KH_NONCE_LEN)) != KH_OK ||
	    (r = kh_aead_seal(ku, out + KH_USAGE_NONCE_OFF, out, KH_USAGE_HDR_LEN, contents, len,
			      out + KH_USAGE_HDR_LEN)) != KH_OK) {
		kh_wipe(out, KH_USAGE_HDR_LEN + len + KH_TAG_LEN);
		return r;
	}
	/* The session's nonce goes where the signature will be (it is at most as long), so the
	 * signed message is contiguous without a second buffer; the signature then replaces it. */
	if (snonce)
		memcpy(out + body, snonce, snlen);
	if ((r = kh_ed25519_sign(sign_sk, out, body + (snonce ? snlen : 0), sig)) != KH_OK) {
		kh_wipe(out, body + KH_USAGE_SIG_LEN);
		return r;
	}
	memcpy(out + body, sig, sizeof sig);
	*outlen = body + KH_USAGE_SIG_LEN;
	return KH_OK;
}

kh_err kh_usage_seal(const uint8_t ku[static 32], const uint8_t sign_sk[static 32], const struct kh_usage_hdr *h,
		     const uint8_t *contents, size_t len, uint8_t *out, size_t cap, size_t *outlen)
{
	return kh_usage_seal_bound(ku, sign_sk, h, contents, len, NULL, 0, out, cap, outlen);
}

kh_err kh_usage_peek(const uint8_t *blk, size_t n, struct kh_usage_hdr *h)
{
	if (!blk || n < KH_USAGE_MIN_LEN)
		return KH_ERR_TRUNCATED;
	if (n > KH_USAGE_MAX)
		return KH_ERR_TOO_LARGE;
	if (blk[0] != KH_USAGE_VERSION)
		return KH_ERR_VERSION;
	if ((blk[17] & ~KH_USAGE_F_ALL) || blk[17] == (KH_USAGE_F_M1 | KH_USAGE_F_SESSION))
		return KH_ERR_FORMAT;
	h->ua = kh_get_be32(blk + 1);
	h->block_seq = kh_get_be32(blk + 5);
	h->card_time = kh_get_be64(blk + 9);
	h->flags = blk[17];
	return KH_OK;
}

static kh_err contents(const uint8_t *p, size_t n, struct kh_usage *u)
{
	struct kh_rd rd;
	struct kh_tlv t;
	unsigned seen = 0;
	int k;
	kh_err r = KH_OK;

	kh_rd_init(&rd, p, n);
	while (r == KH_OK && (k = kh_tlv_next(&rd, &t)) == 1) {
		if (t.tag < KH_USAGE_T_CREDIT || t.tag > KH_USAGE_T_EXPORT)
			return KH_ERR_TLV_TAG;
		if (t.tag != KH_USAGE_T_PURCHASE && (seen & (1u << t.tag)))
			return KH_ERR_FORMAT;
		seen |= 1u << t.tag;
		switch (t.tag) {
		case KH_USAGE_T_CREDIT: r = kh_tlv_u32(&t, &u->credit); break;
		case KH_USAGE_T_PURCHASE:
			if (t.len != 16 || u->npurchases == KH_USAGE_MAX_PURCHASES)
				return KH_ERR_FORMAT;
			u->purchases[u->npurchases].event = kh_get_be32(t.v);
			u->purchases[u->npurchases].price = kh_get_be32(t.v + 4);
			u->purchases[u->npurchases].time = kh_get_be64(t.v + 8);
			u->npurchases++;
			break;
		case KH_USAGE_T_COUNTERS:
			if (t.len != 16)
				return KH_ERR_FORMAT;
			u->n_ecm = kh_get_be32(t.v);
			u->n_cw = kh_get_be32(t.v + 4);
			u->n_refused = kh_get_be32(t.v + 8);
			u->n_emm = kh_get_be32(t.v + 12);
			break;
		case KH_USAGE_T_VERSIONS:
			if (t.len != 2)
				return KH_ERR_FORMAT;
			u->cas_version = t.v[0];
			u->state_version = t.v[1];
			break;
		case KH_USAGE_T_RELOAD: r = kh_tlv_u32(&t, &u->last_reload); break;
		case KH_USAGE_T_EXPORT:
			if ((r = kh_tlv_u8(&t, &u->export_ok)) == KH_OK && u->export_ok > 1)
				r = KH_ERR_FORMAT;
			break;
		}
	}
	if (r != KH_OK)
		return r;
	if (k < 0)
		return k;
	/* everything but purchases is always there */
	if ((seen | (1u << KH_USAGE_T_PURCHASE)) != 0x7E)
		return KH_ERR_FORMAT;
	return KH_OK;
}

kh_err kh_usage_open_bound(const uint8_t ku[static 32], const uint8_t sign_pk[static 32], const uint8_t *blk,
			   size_t n, const uint8_t *snonce, size_t snlen, struct kh_usage *u)
{
	uint8_t pt[KH_USAGE_MAX], msg[KH_USAGE_MAX + KH_HELLO_NONCE_MAX];
	struct kh_usage tmp;
	size_t body;
	kh_err r;

	memset(&tmp, 0, sizeof tmp);
	if ((r = kh_usage_peek(blk, n, &tmp.h)) != KH_OK)
		return r;
	body = n - KH_USAGE_SIG_LEN;
	if (tmp.h.flags & KH_USAGE_F_SESSION) {
		/* made for one session: it verifies only with that session's nonce */
		if (!snonce || snlen < KH_HELLO_NONCE_MIN || snlen > KH_HELLO_NONCE_MAX)
			return KH_ERR_AUTH;
		memcpy(msg, blk, body);
		memcpy(msg + body, snonce, snlen);
		if (kh_ed25519_verify(sign_pk, msg, body + snlen, blk + body) != KH_OK)
			return KH_ERR_AUTH;
	} else if (kh_ed25519_verify(sign_pk, blk, body, blk + body) != KH_OK) {
		return KH_ERR_AUTH;
	}
	if (kh_aead_open(ku, blk + KH_USAGE_NONCE_OFF, blk, KH_USAGE_HDR_LEN, blk + KH_USAGE_HDR_LEN, body - KH_USAGE_HDR_LEN, pt) !=
	    KH_OK) {
		r = KH_ERR_AUTH;
		goto out;
	}
	if ((r = contents(pt, body - KH_USAGE_HDR_LEN - KH_TAG_LEN, &tmp)) != KH_OK)
		goto out;
	*u = tmp;
out:
	kh_wipe(pt, sizeof pt);
	kh_wipe(&tmp, sizeof tmp);
	return r;
}

kh_err kh_usage_open(const uint8_t ku[static 32], const uint8_t sign_pk[static 32], const uint8_t *blk, size_t n,
		     struct kh_usage *u)
{
	return kh_usage_open_bound(ku, sign_pk, blk, n, NULL, 0, u);
}

void kh_hello_msg(const uint8_t *nonce, size_t noncelen, uint32_t ua, uint32_t block_seq, uint64_t card_time,
		  uint8_t *msg)
{
	size_t l = sizeof KH_HELLO_LABEL - 1;

	memcpy(msg, KH_HELLO_LABEL, l);
	memcpy(msg + l, nonce, noncelen);
	kh_put_be32(msg + l + noncelen, ua);
	kh_put_be32(msg + l + noncelen + 4, block_seq);
	kh_put_be64(msg + l + noncelen + 8, card_time);
}

kh_err kh_hello_verify(const uint8_t sign_pk[static 32], const uint8_t *nonce, size_t noncelen, const uint8_t *hello,
		       size_t n, struct kh_usage_hdr *h)
{
	uint8_t msg[KH_HELLO_MSG_LEN(KH_HELLO_NONCE_MAX)];
	struct kh_usage_hdr t;

	if (noncelen < KH_HELLO_NONCE_MIN || noncelen > KH_HELLO_NONCE_MAX || !hello)
		return KH_ERR_INVAL;
	if (n != KH_HELLO_LEN)
		return n < KH_HELLO_LEN ? KH_ERR_TRUNCATED : KH_ERR_TRAILING;
	t.ua = kh_get_be32(hello);
	t.block_seq = kh_get_be32(hello + 4);
	t.card_time = kh_get_be64(hello + 8);
	kh_hello_msg(nonce, noncelen, t.ua, t.block_seq, t.card_time, msg);
	if (kh_ed25519_verify(sign_pk, msg, KH_HELLO_MSG_LEN(noncelen), hello + 16) != KH_OK)
		return KH_ERR_AUTH;
	*h = t;
	return KH_OK;
}
