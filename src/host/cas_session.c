/*
 * The decoder's conditional-access session (include/keyhole/host.h). The decoder module pairs
 * with its CAM (seed 000, decoder <-> CAM) and proves its certificate there; then every command
 * for the card goes to the CAM inside that channel: CARD START to have the CAM pair with the
 * card and prove itself, CARD SEND with an ECM or a PURCHASE, CARD RESP with each of the card's
 * answers the CAM asked to have carried. So the card's control words travel card -> CAM under
 * the CAM's channel and CAM -> decoder module under the decoder's, and never in clear between
 * modules. The host carries every byte, two relays deep (decoder module -> CAM -> card); it
 * just cannot read the ones that matter, and in ladder mode it never holds a control word.
 */
#include <string.h>

#include "keyhole/apdu.h"
#include "keyhole/cas.h"
#include "keyhole/crypto.h"
#include "keyhole/host.h"
#include "keyhole/log.h"
#include "host/relay_int.h"

/* The decoder module spoken to in plain APDUs; CARD START carries the mode in P1. */
static kh_err dec_plain(void *ctx, uint8_t ins, const uint8_t *data, size_t len, uint8_t *resp, size_t cap,
			size_t *dlen, uint16_t *sw)
{
	struct kh_host_cas *c = ctx;
	uint8_t p1 = ins == KH_INS_CARD_START && (c->flags & KH_HOST_CAS_LADDER) ? 1 : 0;

	return kh_host_apdu(c->dec, ins, p1, data, len, resp, cap, dlen, sw);
}

/*
 * One command to the CAM inside the decoder module's channel, with the contract of a plain APDU:
 * the decoder module seals it, the host carries it (and any re-pairing) to the CAM, the decoder
 * module opens the CAM's answer and hands it over.
 */
static kh_err cam_sealed(void *ctx, uint8_t ins, const uint8_t *data, size_t len, uint8_t *resp, size_t cap,
			 size_t *dlen, uint16_t *sw)
{
	struct kh_host_cas *c = ctx;
	uint8_t cmd[KH_APDU_MAX_CMD], in[KH_APDU_MAX_RESP];
	const uint8_t *d;
	size_t n, inlen = 0;
	struct kh_wr w;
	kh_err r;

	kh_wr_init(&w, cmd, sizeof cmd);
	if ((r = kh_apdu_build(&w, KH_CLA, ins, 0, 0, data, len, 0)) != KH_OK)
		goto out;
	if ((r = kh__host_relay(dec_plain, c, c->cam, KH_INS_CARD_SEND, cmd, w.len, in, sizeof in, &inlen)) != KH_OK)
		goto out;
	if ((r = kh_apdu_resp(in, inlen, &d, &n, sw)) != KH_OK)
		goto out;
	if (n > cap) {
		r = KH_ERR_BUF;
		goto out;
	}
	memcpy(resp, d, n);
	*dlen = n;
	if (*sw != KH_SW_OK && *sw != KH_SW_RELAY)
		r = kh_err_from_sw(*sw);
out:
	kh_wipe(cmd, w.len);
	kh_wipe(in, inlen);
	return r;
}

void kh_host_cas_init(struct kh_host_cas *c, struct kh_transport *dec, struct kh_transport *cam,
		      struct kh_transport *card, unsigned flags)
{
	memset(c, 0, sizeof *c);
	c->dec = dec;
	c->cam = cam;
	c->card = card;
	c->flags = flags & KH_HOST_CAS_LADDER;
}

static void disconnect(struct kh_host_cas *c)
{
	c->connected = 0;
	c->card_ua = 0;
}

void kh_host_cas_wipe(struct kh_host_cas *c)
{
	c->connected = 0;
	c->card_ua = 0;
	c->cam_ua = 0;
}

kh_err kh_host_cas_connect(struct kh_host_cas *c)
{
	uint8_t out[16];
	size_t n;
	kh_err r;

	disconnect(c);
	if (!c->dec || !c->cam) {
		r = KH_ERR_INVAL;
		goto fail;
	}
	/* decoder module <-> CAM: paired and proven; the answer names the CAM */
	if ((r = kh__host_relay(dec_plain, c, c->cam, KH_INS_CARD_START, NULL, 0, out, sizeof out, &n)) != KH_OK)
		goto fail;
	if (n != 4) {
		r = KH_ERR_FORMAT;
		goto fail;
	}
	c->cam_ua = kh_get_be32(out);
	/* CAM <-> card, through that channel */
	if ((r = kh__host_relay(cam_sealed, c, c->card, KH_INS_CARD_START, NULL, 0, out, sizeof out, &n)) != KH_OK)
		goto fail;
	if (n != 4) {
		r = KH_ERR_FORMAT;
		goto fail;
	}
	c->card_ua = kh_get_be32(out);
	c->connected = 1;
	kh_log_info("cas.connected", "cam_ua=%08X card_ua=%08X ladder=%d", c->cam_ua, c->card_ua,
		    (c->flags & KH_HOST_CAS_LADDER) != 0);
	return KH_OK;
fail:
	kh_log_info("cas.connect.refused", "error=%s", kh_err_name(r));
	disconnect(c);
	return r;
}

/*
 * Send an ECM-bearing command to the card through the CAM. The card's own answer (data || SW)
 * lands in ans. Errors of the path (CAM or channel) disconnect; the card's verdict does not.
 */
static kh_err card_call(struct kh_host_cas *c, uint8_t ins, const uint8_t *ecm, size_t n, uint8_t *ans,
			size_t cap, const uint8_t **d, size_t *dlen, uint16_t *sw)
{
	uint8_t cmd[KH_APDU_MAX_CMD];
	struct kh_wr w;
	size_t alen;
	kh_err r;

	if (!c->connected)
		return KH_ERR_NOT_PAIRED;
	kh_wr_init(&w, cmd, sizeof cmd);
	if ((r = kh_apdu_build(&w, KH_CLA, ins, 0, 0, ecm, n, 0)) != KH_OK)
		return r;
	if ((r = kh__host_relay(cam_sealed, c, c->card, KH_INS_CARD_SEND, cmd, w.len, ans, cap, &alen)) != KH_OK) {
		kh_log_info("cas.path.failed", "error=%s", kh_err_name(r));
		disconnect(c);
		return r;
	}
	if ((r = kh_apdu_resp(ans, alen, d, dlen, sw)) != KH_OK) {
		disconnect(c);
		return r;
	}
	return KH_OK;
}

static kh_err offer_of(const uint8_t *d, size_t n, uint16_t sw, struct kh_ppv_offer *offer)
{
	kh_err r = kh_err_from_sw(sw);

	if ((r == KH_ERR_NOT_PURCHASED || r == KH_ERR_CREDIT_LOW) && offer &&
	    kh_ppv_offer_parse(d, n, offer) != KH_OK)
		memset(offer, 0, sizeof *offer);
	return r;
}

kh_err kh_host_cas_ecm(struct kh_host_cas *c, const uint8_t *ecm, size_t n, struct kh_cw_answer *cw,
		       struct kh_ppv_offer *offer)
{
	uint8_t ans[KH_APDU_MAX_RESP];
	const uint8_t *d = NULL;
	size_t dlen = 0;
	uint16_t sw;
	kh_err r;

	if ((r = card_call(c, KH_INS_ECM, ecm, n, ans, sizeof ans, &d, &dlen, &sw)) != KH_OK)
		goto out;
	if (sw != KH_SW_OK)
		r = offer_of(d, dlen, sw, offer);
	else
		r = kh_cw_answer_parse(d, dlen, cw);
out:
	kh_wipe(ans, sizeof ans);
	return r;
}

kh_err kh_host_cas_purchase(struct kh_host_cas *c, const uint8_t *ecm, size_t n, struct kh_ppv_offer *offer)
{
	uint8_t ans[KH_APDU_MAX_RESP];
	const uint8_t *d = NULL;
	size_t dlen = 0;
	uint16_t sw;
	kh_err r;

	if ((r = card_call(c, KH_INS_PURCHASE, ecm, n, ans, sizeof ans, &d, &dlen, &sw)) != KH_OK)
		return r;
	if (sw != KH_SW_OK)
		return offer_of(d, dlen, sw, offer);
	return kh_ppv_offer_parse(d, dlen, offer);
}

kh_err kh_host_cas_load(struct kh_host_cas *c, const struct kh_cw_answer *cw)
{
	uint8_t tlv[(3 + 1) + (3 + 4) + (3 + KH_LADDER_SEALED_MAX)], resp[16];
	struct kh_wr w;
	size_t dlen;
	uint16_t sw;

	if (!c->dec || !cw->sealed_len)
		return KH_ERR_INVAL;
	/* the sealed answer as the CAM sent it: alg, cp and the sealed pair (all public) */
	kh_wr_init(&w, tlv, sizeof tlv);
	kh_tlv_put_u8(&w, KH_CW_T_ALG, cw->alg);
	kh_tlv_put_u32(&w, KH_CW_T_CP, cw->cp);
	if (kh_tlv_put(&w, KH_CW_T_LADDER, cw->sealed, cw->sealed_len) != KH_OK)
		return KH_ERR_BUF;
	return kh_host_apdu(c->dec, KH_INS_LADDER_LOAD, 0, tlv, w.len, resp, sizeof resp, &dlen, &sw);
}

_Static_assert(KH_HOST_CAS_DESC_PKTS * 188 <= KH_APDU_MAX_DATA, "one DESCRAMBLE command");

kh_err kh_host_cas_descramble(struct kh_host_cas *c, uint8_t *pkts, size_t n)
{
	uint8_t resp[KH_APDU_MAX_RESP];
	size_t k, len, dlen;
	uint16_t sw;
	kh_err r;

	if (!c->dec)
		return KH_ERR_INVAL;
	for (; n; n -= k, pkts += len) {
		k = n < KH_HOST_CAS_DESC_PKTS ? n : KH_HOST_CAS_DESC_PKTS;
		len = k * 188;
		if ((r = kh_host_apdu(c->dec, KH_INS_DESCRAMBLE, 0, pkts, len, resp, sizeof resp, &dlen, &sw)) != KH_OK)
			return r;
		if (dlen != len)
			return KH_ERR_FORMAT;
		memcpy(pkts, resp, len);
	}
	return KH_OK;
}

kh_err kh_host_cas_emm(struct kh_host_cas *c, const uint8_t *emm, size_t n)
{
	uint8_t resp[KH_APDU_MAX_RESP];
	size_t dlen;
	uint16_t sw;

	return kh_host_apdu(c->card, KH_INS_EMM, 0, emm, n, resp, sizeof resp, &dlen, &sw);
}

kh_err kh_host_cas_flush(struct kh_host_cas *c)
{
	uint8_t resp[16];
	size_t dlen;
	uint16_t sw;

	return kh_host_apdu(c->card, KH_INS_CAS_FLUSH, 0, NULL, 0, resp, sizeof resp, &dlen, &sw);
}

kh_err kh_host_cas_status(struct kh_host_cas *c, struct kh_cas_status *st)
{
	uint8_t resp[KH_APDU_MAX_RESP];
	size_t dlen;
	uint16_t sw;
	kh_err r;

	if ((r = kh_host_apdu(c->card, KH_INS_CAS_STATUS, 0, NULL, 0, resp, sizeof resp, &dlen, &sw)) != KH_OK)
		return r;
	return kh_cas_status_parse(resp, dlen, st);
}
