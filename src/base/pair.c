/*
 * Seed 000 pairing engine (include/keyhole/pair.h, the protocol design "Seed 000"). The seed's CAM
 * draws a random key Ci and a random number A, sends both under the card's public key, and
 * expects A back under Ci; from then on everything between them is encrypted under Ci, so a
 * substituted card cannot answer. Here the public-key step is HPKE to the responder's certified
 * X25519 key, Ci seeds two direction keys, and every later message is AES-256-GCM with a
 * counter nonce. Nothing here allocates or does I/O: the module zone runs it as is.
 */
#include <string.h>

#include "keyhole/crypto.h"
#include "keyhole/hpke.h"
#include "keyhole/pair.h"

static const char info_pair[] = "keyhole pair v1";
static const char label_keys[] = "keyhole pair v1 keys";
static const char label_binding[] = "keyhole pair v1 binding";
static const char aad_auth[] = "pair-auth";

static void nonce_of(uint32_t ctr, uint8_t nonce[static KH_NONCE_LEN])
{
	memset(nonce, 0, KH_NONCE_LEN);
	kh_put_be32(nonce + 8, ctr);
}

/*
 * k_ir || k_ri = HKDF(ikm = Ci, salt = enc || Nr, "keyhole pair v1 keys", 64). Nr, fresh from the
 * responder, makes every channel new even when a host replays an old PAIR OPEN.
 */
static kh_err derive(const uint8_t ci[static 32], const uint8_t enc[static 32], const uint8_t nr[static 32],
		     uint8_t k[static 64], uint8_t binding[static 32])
{
	uint8_t salt[32 + KH_PAIR_NR_LEN];
	kh_err r;
	memcpy(salt, enc, 32);
	memcpy(salt + 32, nr, KH_PAIR_NR_LEN);
	if ((r = kh_hkdf(ci, KH_PAIR_CI_LEN, salt, sizeof salt, (const uint8_t *)label_keys, sizeof label_keys - 1,
			 k, 64)) != KH_OK)
		return r;
	return kh_hkdf(ci, KH_PAIR_CI_LEN, salt, sizeof salt, (const uint8_t *)label_binding,
		       sizeof label_binding - 1, binding, 32);
}

/* Replace *ch by the channel keyed from k = k_ir || k_ri, seen from the initiator or responder. */
static void chan_install(struct kh_chan *ch, const uint8_t k[static 64], const uint8_t binding[static 32],
			 uint64_t now, int initiator)
{
	kh_chan_wipe(ch);
	memcpy(ch->k_send, initiator ? k : k + 32, 32);
	memcpy(ch->k_recv, initiator ? k + 32 : k, 32);
	memcpy(ch->binding, binding, 32);
	ch->max_msgs = KH_CHAN_MAX_MSGS;
	ch->opened_at = now;
	ch->initiator = (uint8_t)initiator;
	ch->open = 1;
}

kh_err kh_pair_open_make(struct kh_pair_hs *hs, const uint8_t pkR[static 32], const uint8_t *id,
			 size_t idlen, struct kh_wr *out)
{
	uint8_t pt[KH_PAIR_CI_LEN + KH_PAIR_A_LEN];
	uint8_t ct[sizeof pt + KH_TAG_LEN];
	uint8_t enc[32];
	kh_err r;

	if (idlen > KH_PAIR_ID_MAX || (idlen && !id))
		return KH_ERR_INVAL;
	if ((r = kh_random(pt, sizeof pt)) != KH_OK)
		goto out;
	if ((r = kh_hpke_seal_base(pkR, (const uint8_t *)info_pair, sizeof info_pair - 1, id, idlen,
				   pt, sizeof pt, enc, ct)) != KH_OK)
		goto out;
	kh_wr_u8(out, KH_PAIR_VERSION);
	kh_wr_u8(out, (uint8_t)idlen);
	kh_wr_bytes(out, id, idlen);
	kh_wr_bytes(out, enc, sizeof enc);
	if ((r = kh_wr_bytes(out, ct, sizeof ct)) != KH_OK)
		goto out;
	memcpy(hs->ci, pt, KH_PAIR_CI_LEN);
	memcpy(hs->a, pt + KH_PAIR_CI_LEN, KH_PAIR_A_LEN);
	memcpy(hs->enc, enc, sizeof enc);
	hs->pending = 1;
out:
	kh_wipe(pt, sizeof pt);
	return r;
}

kh_err kh_pair_open_answer(const uint8_t skR[static 32], const uint8_t *msg, size_t len, uint64_t now,
			   struct kh_chan *ch, struct kh_wr *out)
{
	struct kh_rd rd;
	uint8_t ver, idlen;
	const uint8_t *id, *enc, *ct;
	size_t ctlen;
	uint8_t pt[KH_PAIR_CI_LEN + KH_PAIR_A_LEN];
	uint8_t k[64], tb[32];
	uint8_t nr[KH_PAIR_NR_LEN];
	uint8_t ans[KH_PAIR_A_LEN + KH_TAG_LEN];
	uint8_t nonce[KH_NONCE_LEN];
	kh_err r;

	kh_rd_init(&rd, msg, len);
	if ((r = kh_rd_u8(&rd, &ver)) != KH_OK)
		return r;
	if (ver != KH_PAIR_VERSION)
		return KH_ERR_VERSION;
	if ((r = kh_rd_u8(&rd, &idlen)) != KH_OK)
		return r;
	if (idlen > KH_PAIR_ID_MAX)
		return KH_ERR_FORMAT;
	if ((r = kh_rd_ref(&rd, &id, idlen)) != KH_OK || (r = kh_rd_ref(&rd, &enc, 32)) != KH_OK ||
	    (r = kh_rd_ref(&rd, &ct, sizeof pt + KH_TAG_LEN)) != KH_OK)
		return r;
	if ((r = kh_rd_end(&rd)) != KH_OK)
		return r;
	ctlen = sizeof pt + KH_TAG_LEN;
	if (kh_hpke_open_base(skR, enc, (const uint8_t *)info_pair, sizeof info_pair - 1, id, idlen, ct,
			      ctlen, pt) != KH_OK) {
		r = KH_ERR_PAIR_OPEN;
		goto out;
	}
	if ((r = kh_random(nr, sizeof nr)) != KH_OK || (r = derive(pt, enc, nr, k, tb)) != KH_OK)
		goto out;
	nonce_of(0, nonce);
	if ((r = kh_aead_seal(k + 32, nonce, (const uint8_t *)aad_auth, sizeof aad_auth - 1,
			      pt + KH_PAIR_CI_LEN, KH_PAIR_A_LEN, ans)) != KH_OK)
		goto out;
	kh_wr_u8(out, KH_PAIR_VERSION);
	kh_wr_bytes(out, nr, sizeof nr);
	if ((r = kh_wr_bytes(out, ans, sizeof ans)) != KH_OK)
		goto out;
	/* Only now, with the answer written, does the new channel replace the old one. */
	chan_install(ch, k, tb, now, 0);
out:
	kh_wipe(pt, sizeof pt);
	kh_wipe(k, sizeof k);
	return r;
}

kh_err kh_pair_finish(struct kh_pair_hs *hs, const uint8_t *ans, size_t len, uint64_t now, struct kh_chan *ch)
{
	uint8_t k[64], tb[32];
	uint8_t a[KH_PAIR_A_LEN];
	uint8_t nonce[KH_NONCE_LEN];
	kh_err r;

	if (!hs->pending)
		return KH_ERR_PAIR_STATE;
	if (len < KH_PAIR_ANSWER_LEN) {
		r = KH_ERR_TRUNCATED;
		goto out;
	}
	if (len > KH_PAIR_ANSWER_LEN) {
		r = KH_ERR_TRAILING;
		goto out;
	}
	if (ans[0] != KH_PAIR_VERSION) {
		r = KH_ERR_VERSION;
		goto out;
	}
	/* ans = ver | Nr | AEAD(k_ri, 0, "pair-auth", A) */
	if ((r = derive(hs->ci, hs->enc, ans + 1, k, tb)) != KH_OK)
		goto out;
	nonce_of(0, nonce);
	if (kh_aead_open(k + 32, nonce, (const uint8_t *)aad_auth, sizeof aad_auth - 1, ans + 1 + KH_PAIR_NR_LEN,
			 KH_PAIR_A_LEN + KH_TAG_LEN, a) != KH_OK ||
	    !kh_ct_eq(a, hs->a, KH_PAIR_A_LEN)) {
		r = KH_ERR_PAIR_AUTH;
		goto out;
	}
	chan_install(ch, k, tb, now, 1);
	r = KH_OK;
out:
	kh_wipe(k, sizeof k);
	kh_wipe(a, sizeof a);
	kh_wipe(hs, sizeof *hs);
	return r;
}

void kh_chan_wipe(struct kh_chan *ch)
{
	kh_wipe(ch, sizeof *ch);
}

int kh_chan_needs_rekey(const struct kh_chan *ch, uint64_t now)
{
	if (!ch->open)
		return 1;
	if (ch->sent >= ch->max_msgs)
		return 1;
	return now >= ch->opened_at + KH_CHAN_MAX_AGE || now < ch->opened_at;
}

static kh_err seal(const uint8_t key[static 32], uint32_t ctr, const uint8_t *body, size_t len,
		   struct kh_wr *out)
{
	uint8_t hdr[5];
	uint8_t nonce[KH_NONCE_LEN];
	uint8_t *ct;
	kh_err r;

	hdr[0] = KH_PAIR_VERSION;
	kh_put_be32(hdr + 1, ctr);
	nonce_of(ctr, nonce);
	kh_wr_bytes(out, hdr, sizeof hdr);
	if ((r = kh_wr_reserve(out, len + KH_TAG_LEN, &ct)) != KH_OK)
		return r;
	return kh_aead_seal(key, nonce, hdr, sizeof hdr, body, len, ct);
}

/* Parse a sealed message header; the body is left for the AEAD. */
static kh_err parse_sealed(const uint8_t *msg, size_t len, uint32_t *ctr, const uint8_t **ct, size_t *ctlen)
{
	if (len < 5)
		return KH_ERR_TRUNCATED;
	if (msg[0] != KH_PAIR_VERSION)
		return KH_ERR_VERSION;
	if (len < KH_CHAN_OVERHEAD)
		return KH_ERR_TRUNCATED;
	*ctr = kh_get_be32(msg + 1);
	*ct = msg + 5;
	*ctlen = len - 5;
	return KH_OK;
}

static kh_err open_body(const uint8_t key[static 32], const uint8_t *msg, uint32_t ctr, const uint8_t *ct,
			size_t ctlen, uint8_t *body, size_t cap, size_t *bodylen)
{
	uint8_t nonce[KH_NONCE_LEN];

	if (ctlen - KH_TAG_LEN > cap)
		return KH_ERR_TOO_LARGE;
	nonce_of(ctr, nonce);
	if (kh_aead_open(key, nonce, msg, 5, ct, ctlen, body) != KH_OK)
		return KH_ERR_CHAN_AUTH;
	*bodylen = ctlen - KH_TAG_LEN;
	return KH_OK;
}

kh_err kh_chan_seal_cmd(struct kh_chan *ch, const uint8_t *body, size_t len, struct kh_wr *out)
{
	kh_err r;
	if (!ch->open || !ch->initiator)
		return KH_ERR_NOT_PAIRED;
	if (ch->sent >= ch->max_msgs)
		return KH_ERR_CHAN_REKEY;
	if ((r = seal(ch->k_send, ch->sent + 1, body, len, out)) != KH_OK)
		return r;
	ch->sent++;
	return KH_OK;
}

kh_err kh_chan_open_cmd(struct kh_chan *ch, const uint8_t *msg, size_t len, uint8_t *body, size_t cap,
			size_t *bodylen)
{
	const uint8_t *ct;
	size_t ctlen, n;
	uint32_t ctr;
	kh_err r;

	if (!ch->open || ch->initiator)
		return KH_ERR_NOT_PAIRED;
	if ((r = parse_sealed(msg, len, &ctr, &ct, &ctlen)) != KH_OK)
		return r;
	if (ctr <= ch->accepted)
		return KH_ERR_CHAN_REPLAY;
	if ((r = open_body(ch->k_recv, msg, ctr, ct, ctlen, body, cap, &n)) != KH_OK)
		return r;
	/* Only an authentic counter can be over the limit: a forged one is CHAN_AUTH above. */
	if (ctr > ch->max_msgs) {
		kh_wipe(body, n);
		return KH_ERR_CHAN_REKEY;
	}
	*bodylen = n;
	ch->accepted = ctr;
	return KH_OK;
}

kh_err kh_chan_seal_resp(struct kh_chan *ch, const uint8_t *body, size_t len, struct kh_wr *out)
{
	if (!ch->open || ch->initiator)
		return KH_ERR_NOT_PAIRED;
	if (ch->accepted == 0)
		return KH_ERR_PAIR_STATE;
	return seal(ch->k_send, ch->accepted, body, len, out);
}

kh_err kh_chan_open_resp(struct kh_chan *ch, const uint8_t *msg, size_t len, uint8_t *body, size_t cap,
			 size_t *bodylen)
{
	const uint8_t *ct;
	size_t ctlen;
	uint32_t ctr;
	kh_err r;

	if (!ch->open || !ch->initiator)
		return KH_ERR_NOT_PAIRED;
	if ((r = parse_sealed(msg, len, &ctr, &ct, &ctlen)) != KH_OK)
		return r;
	/* The answer must be to the command outstanding, and never one already taken. */
	if (ctr != ch->sent || ctr <= ch->accepted)
		return KH_ERR_CHAN_REPLAY;
	if ((r = open_body(ch->k_recv, msg, ctr, ct, ctlen, body, cap, bodylen)) != KH_OK)
		return r;
	ch->accepted = ctr;
	return KH_OK;
}

/* ---- the initiator's state machine ---- */

void kh_link_init(struct kh_link *l, const uint8_t root_pk[static 32], enum kh_role peer_role,
		  const uint8_t *id, size_t idlen)
{
	kh_wipe(l, sizeof *l);
	memcpy(l->root_pk, root_pk, 32);
	l->peer_role = peer_role;
	if (idlen > KH_PAIR_ID_MAX)
		idlen = KH_PAIR_ID_MAX;
	if (idlen)
		memcpy(l->id, id, idlen);
	l->idlen = (uint8_t)idlen;
}

kh_err kh_auth_msg(uint8_t role, const uint8_t binding[static 32], uint32_t responder_ua,
		   uint8_t msg[static KH_CAM_AUTH_MSG_LEN])
{
	size_t n = sizeof KH_CAM_AUTH_LABEL - 1;

	_Static_assert(sizeof KH_CAM_AUTH_LABEL == sizeof KH_DEC_AUTH_LABEL, "one message length");
	if (role != KH_ROLE_CAM && role != KH_ROLE_DECODER)
		return KH_ERR_INVAL;
	memcpy(msg, role == KH_ROLE_CAM ? KH_CAM_AUTH_LABEL : KH_DEC_AUTH_LABEL, n);
	memcpy(msg + n, binding, 32);
	kh_put_be32(msg + n + 32, responder_ua);
	return KH_OK;
}

static void link_reset(struct kh_link *l)
{
	kh_chan_wipe(&l->ch);
	kh_wipe(&l->hs, sizeof l->hs);
	kh_wipe(l->pending, l->pendlen);
	l->pendlen = 0;
	l->state = KH_LINK_IDLE;
}

void kh_link_reset(struct kh_link *l)
{
	link_reset(l);
}

void kh_link_wipe(struct kh_link *l)
{
	kh_wipe(l, sizeof *l);
}

/* Write the header of a command APDU whose data (lc bytes) the caller appends (case 3, extended when needed). */
static kh_err apdu_head(struct kh_wr *out, uint8_t ins, size_t lc)
{
	kh_wr_u8(out, KH_CLA);
	kh_wr_u8(out, ins);
	kh_wr_u16(out, 0);
	if (lc > 255) {
		kh_wr_u8(out, 0);
		kh_wr_u16(out, (uint16_t)lc);
	} else if (lc) {
		kh_wr_u8(out, (uint8_t)lc);
	}
	return out->err;
}

kh_err kh_link_start(struct kh_link *l, struct kh_wr *out)
{
	link_reset(l);
	if (kh_apdu_build(out, KH_CLA, KH_INS_GET_CERT, 0, 0, NULL, 0, 256) != KH_OK)
		return out->err;
	l->state = KH_LINK_WANT_CERT;
	return KH_OK;
}

static kh_err make_open(struct kh_link *l, struct kh_wr *out)
{
	size_t lc = 2 + l->idlen + 32 + KH_PAIR_CI_LEN + KH_PAIR_A_LEN + KH_TAG_LEN;
	kh_err r;
	if ((r = apdu_head(out, KH_INS_PAIR_OPEN, lc)) != KH_OK)
		return r;
	if ((r = kh_pair_open_make(&l->hs, l->peer.pub, l->id, l->idlen, out)) != KH_OK)
		return r;
	l->state = KH_LINK_WANT_AUTH;
	return KH_OK;
}

static kh_err make_sealed(struct kh_link *l, const uint8_t *inner, size_t len, struct kh_wr *out)
{
	kh_err r;
	if (len + KH_CHAN_OVERHEAD > KH_APDU_MAX_DATA)
		return KH_ERR_TOO_LARGE;
	if ((r = apdu_head(out, KH_INS_SEALED, len + KH_CHAN_OVERHEAD)) != KH_OK)
		return r;
	if ((r = kh_chan_seal_cmd(&l->ch, inner, len, out)) != KH_OK)
		return r;
	l->state = KH_LINK_WANT_RESP;
	return KH_OK;
}

kh_err kh_link_send(struct kh_link *l, const uint8_t *inner, size_t len, uint64_t now, struct kh_wr *out)
{
	if (l->state == KH_LINK_IDLE)
		return KH_ERR_NOT_PAIRED;
	if (l->state == KH_LINK_WANT_RESP) {
		/* The answer to the last command never came: the module went away. End the channel. */
		link_reset(l);
		return KH_ERR_NOT_PAIRED;
	}
	if (l->state != KH_LINK_OPEN)
		return KH_ERR_PAIR_STATE;
	if (len > sizeof l->pending || len + KH_CHAN_OVERHEAD > KH_APDU_MAX_DATA)
		return KH_ERR_TOO_LARGE;
	if (kh_chan_needs_rekey(&l->ch, now)) {
		/* Steps 2-4 again with the key already certified; the command waits for the new keys. */
		kh_err r;
		if (now && now > l->peer.not_after) {
			/* The certificate checked at step 1 has expired since: start over from GET CERT. */
			link_reset(l);
			return KH_ERR_CERT_EXPIRED;
		}
		kh_chan_wipe(&l->ch);
		if ((r = make_open(l, out)) != KH_OK) {
			link_reset(l);
			return r;
		}
		memcpy(l->pending, inner, len);
		l->pendlen = (uint16_t)len;
		return KH_OK;
	}
	return make_sealed(l, inner, len, out);
}

kh_err kh_link_step(struct kh_link *l, const uint8_t *resp, size_t len, uint64_t now, struct kh_wr *out,
		    enum kh_link_result *res)
{
	const uint8_t *data;
	size_t dlen, blen;
	uint16_t sw;
	uint8_t *body;
	kh_err r;

	if (l->state != KH_LINK_WANT_CERT && l->state != KH_LINK_WANT_AUTH && l->state != KH_LINK_WANT_RESP)
		return KH_ERR_PAIR_STATE;
	if ((r = kh_apdu_resp(resp, len, &data, &dlen, &sw)) != KH_OK)
		goto fail;
	if (sw != KH_SW_OK) {
		r = kh_err_from_sw(sw);
		goto fail;
	}
	switch (l->state) {
	case KH_LINK_WANT_CERT: {
		struct kh_cert_info ci;
		if ((r = kh_cert_check(data, dlen, l->root_pk, l->peer_role, KH_CERT_KEY_X25519, now, &ci)) != KH_OK)
			goto fail;
		l->peer = ci;
		if ((r = make_open(l, out)) != KH_OK)
			goto fail;
		*res = KH_LINK_SEND;
		return KH_OK;
	}
	case KH_LINK_WANT_AUTH:
		if ((r = kh_pair_finish(&l->hs, data, dlen, now, &l->ch)) != KH_OK)
			goto fail;
		if (l->pendlen) {
			r = make_sealed(l, l->pending, l->pendlen, out);
			kh_wipe(l->pending, l->pendlen);
			l->pendlen = 0;
			if (r != KH_OK)
				goto fail;
			*res = KH_LINK_SEND;
			return KH_OK;
		}
		l->state = KH_LINK_OPEN;
		*res = KH_LINK_PAIRED;
		return KH_OK;
	case KH_LINK_WANT_RESP:
		if (dlen < KH_CHAN_OVERHEAD) {
			r = KH_ERR_TRUNCATED;
			goto fail;
		}
		if ((r = kh_wr_reserve(out, dlen - KH_CHAN_OVERHEAD, &body)) != KH_OK)
			goto fail;
		if ((r = kh_chan_open_resp(&l->ch, data, dlen, body, dlen - KH_CHAN_OVERHEAD, &blen)) != KH_OK) {
			out->len -= dlen - KH_CHAN_OVERHEAD;
			goto fail;
		}
		l->state = KH_LINK_OPEN;
		*res = KH_LINK_REPLY;
		return KH_OK;
	default:
		break;
	}
	r = KH_ERR_PAIR_STATE;
fail:
	/* Seed 000: an answer that does not come from the paired module ends the channel. */
	link_reset(l);
	return r;
}
