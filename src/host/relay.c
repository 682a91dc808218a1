/*
 * The decoder's side of seed 000 (include/keyhole/host.h). The host is untrusted: it moves
 * bytes between CAM and card and never holds a key of theirs. When it pairs with the CAM itself
 * it is the initiator and runs the same engine (src/base/pair.c) the CAM runs toward the card.
 */
#include <string.h>

#include "keyhole/apdu.h"
#include "keyhole/buf.h"
#include "keyhole/crypto.h"
#include "keyhole/host.h"
#include "keyhole/log.h"
#include "host/relay_int.h"

/* Enough relay rounds for GET CERT, PAIR OPEN and one sealed command, with room to spare. */
#define MAX_ROUNDS 8

kh_err kh_host_apdu(struct kh_transport *t, uint8_t ins, uint8_t p1, const uint8_t *data, size_t len,
		    uint8_t *resp, size_t cap, size_t *dlen, uint16_t *sw)
{
	uint8_t cmd[KH_APDU_MAX_CMD];
	struct kh_wr w;
	const uint8_t *d;
	size_t rlen;
	kh_err r;

	kh_wr_init(&w, cmd, sizeof cmd);
	if ((r = kh_apdu_build(&w, KH_CLA, ins, p1, 0, data, len, 0)) != KH_OK)
		return r;
	if ((r = kh_transport_xfer(t, cmd, w.len, resp, cap, &rlen)) != KH_OK)
		return r;
	if ((r = kh_apdu_resp(resp, rlen, &d, dlen, sw)) != KH_OK)
		return KH_ERR_TRANSPORT;
	if (*sw != KH_SW_OK && *sw != KH_SW_RELAY)
		return kh_err_from_sw(*sw);
	return KH_OK;
}

kh_err kh_host_info(struct kh_transport *t, struct kh_module_info *info)
{
	uint8_t resp[KH_APDU_MAX_RESP];
	struct kh_module_info i = {0};
	struct kh_rd rd;
	struct kh_tlv tv;
	size_t dlen;
	uint16_t sw;
	int k;
	kh_err r;

	if ((r = kh_host_apdu(t, KH_INS_GET_INFO, 0, NULL, 0, resp, sizeof resp, &dlen, &sw)) != KH_OK)
		return r;
	kh_rd_init(&rd, resp, dlen);
	/* Hosts skip tags they do not know (the protocol design). */
	while ((k = kh_tlv_next(&rd, &tv)) == 1) {
		switch (tv.tag) {
		case KH_INFO_T_ROLE: r = kh_tlv_u8(&tv, &i.role); break;
		case KH_INFO_T_UA: r = kh_tlv_u32(&tv, &i.ua); break;
		case KH_INFO_T_LIFECYCLE: r = kh_tlv_u8(&tv, &i.lifecycle); break;
		case KH_INFO_T_COUNTER: r = kh_tlv_u64(&tv, &i.counter); break;
		case KH_INFO_T_LINK: r = kh_tlv_u8(&tv, &i.link_state); break;
		case KH_INFO_T_PEER_UA: r = kh_tlv_u32(&tv, &i.peer_ua); break;
		case KH_INFO_T_CHAN_OPEN: r = kh_tlv_u8(&tv, &i.chan_open); break;
		case KH_INFO_T_CHAN_PEER_UA: r = kh_tlv_u32(&tv, &i.chan_peer_ua); break;
		default: break;
		}
		if (r != KH_OK)
			return r;
	}
	if (k < 0)
		return k;
	*info = i;
	return KH_OK;
}

/* The CAM spoken to in plain APDUs. */
static kh_err cam_plain(void *ctx, uint8_t ins, const uint8_t *data, size_t len, uint8_t *resp, size_t cap,
			size_t *dlen, uint16_t *sw)
{
	return kh_host_apdu(ctx, ins, 0, data, len, resp, cap, dlen, sw);
}

kh_err kh__host_relay(kh__cam_call call, void *ctx, struct kh_transport *card, uint8_t ins, const uint8_t *data,
		      size_t len, uint8_t *out, size_t cap, size_t *outlen)
{
	uint8_t camresp[KH_APDU_MAX_RESP], cardresp[KH_APDU_MAX_RESP];
	size_t dlen, cardlen;
	uint16_t sw;
	kh_err r;

	if ((r = call(ctx, ins, data, len, camresp, sizeof camresp, &dlen, &sw)) != KH_OK)
		goto out;
	for (int round = 0; sw == KH_SW_RELAY; round++) {
		if (round == MAX_ROUNDS) {
			r = KH_ERR_PAIR_STATE;
			goto out;
		}
		if ((r = kh_transport_xfer(card, camresp, dlen, cardresp, sizeof cardresp, &cardlen)) != KH_OK)
			goto out;
		if ((r = call(ctx, KH_INS_CARD_RESP, cardresp, cardlen, camresp, sizeof camresp, &dlen, &sw)) != KH_OK)
			goto out;
	}
	if (dlen > cap) {
		r = KH_ERR_BUF;
		goto out;
	}
	memcpy(out, camresp, dlen);
	*outlen = dlen;
out:
	/* The CAM's last answer may be the card's inner answer: control words. */
	kh_wipe(camresp, sizeof camresp);
	return r;
}

/*
 * Carry bytes between CAM and card until the CAM stops asking (SW 9F00 means "take these bytes
 * to the card"). The CAM's last answer goes to out.
 */
static kh_err relay(struct kh_transport *cam, struct kh_transport *card, uint8_t ins, const uint8_t *data,
		    size_t len, uint8_t *out, size_t cap, size_t *outlen)
{
	return kh__host_relay(cam_plain, cam, card, ins, data, len, out, cap, outlen);
}

kh_err kh_host_pair_cam_card(struct kh_transport *cam, struct kh_transport *card, uint32_t *card_ua)
{
	uint8_t out[16];
	size_t n;
	kh_err r;

	if ((r = relay(cam, card, KH_INS_CARD_START, NULL, 0, out, sizeof out, &n)) != KH_OK) {
		kh_log_info("pair.cam_card.refused", "error=%s", kh_err_name(r));
		return r;
	}
	if (n != 4)
		return KH_ERR_FORMAT;
	*card_ua = kh_get_be32(out);
	kh_log_info("pair.cam_card.open", "card_ua=%08X", *card_ua);
	return KH_OK;
}

kh_err kh_host_card_cmd(struct kh_transport *cam, struct kh_transport *card, const uint8_t *inner, size_t len,
			uint8_t *out, size_t cap, size_t *outlen)
{
	kh_err r = relay(cam, card, KH_INS_CARD_SEND, inner, len, out, cap, outlen);
	if (r != KH_OK)
		kh_log_info("chan.cam_card.refused", "error=%s", kh_err_name(r));
	return r;
}

/* ---- the decoder paired with its CAM ---- */

static kh_err link_run(struct kh_link *l, struct kh_transport *t, uint8_t *cmd, size_t cmdlen, uint64_t now,
		       uint8_t *out, size_t cap, size_t *outlen)
{
	uint8_t resp[KH_APDU_MAX_RESP], next[KH_APDU_MAX_CMD];
	enum kh_link_result res;
	struct kh_wr w;
	size_t rlen;
	kh_err r;

	for (int round = 0; round < MAX_ROUNDS; round++) {
		if ((r = kh_transport_xfer(t, cmd, cmdlen, resp, sizeof resp, &rlen)) != KH_OK)
			return r;
		kh_wr_init(&w, next, sizeof next);
		if ((r = kh_link_step(l, resp, rlen, now, &w, &res)) != KH_OK)
			return r;
		if (res == KH_LINK_PAIRED) {
			*outlen = 0;
			return KH_OK;
		}
		if (res == KH_LINK_REPLY) {
			if (w.len > cap) {
				kh_wipe(next, w.len);
				return KH_ERR_BUF;
			}
			memcpy(out, next, w.len);
			*outlen = w.len;
			kh_wipe(next, w.len);
			return KH_OK;
		}
		memcpy(cmd, next, w.len);
		cmdlen = w.len;
	}
	return KH_ERR_PAIR_STATE;
}

kh_err kh_host_link_pair(struct kh_link *l, struct kh_transport *t, uint64_t now)
{
	uint8_t cmd[KH_APDU_MAX_CMD];
	struct kh_wr w;
	size_t n;
	kh_err r;

	kh_wr_init(&w, cmd, sizeof cmd);
	if ((r = kh_link_start(l, &w)) != KH_OK)
		return r;
	if ((r = link_run(l, t, cmd, w.len, now, NULL, 0, &n)) != KH_OK) {
		kh_log_info("pair.decoder_cam.refused", "error=%s", kh_err_name(r));
		return r;
	}
	kh_log_info("pair.decoder_cam.open", "cam_ua=%08X", l->peer.ua);
	return KH_OK;
}

kh_err kh_host_link_cmd(struct kh_link *l, struct kh_transport *t, const uint8_t *inner, size_t len, uint64_t now,
			uint8_t *out, size_t cap, size_t *outlen)
{
	uint8_t cmd[KH_APDU_MAX_CMD];
	struct kh_wr w;
	kh_err r;

	kh_wr_init(&w, cmd, sizeof cmd);
	if ((r = kh_link_send(l, inner, len, now, &w)) != KH_OK || (r = link_run(l, t, cmd, w.len, now, out, cap, outlen)) != KH_OK)
		kh_log_info("chan.decoder_cam.refused", "error=%s", kh_err_name(r));
	return r;
}
