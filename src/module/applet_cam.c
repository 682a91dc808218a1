/*
 * CAM applet: the initiator side of seed 000 toward the smart card. A module does no I/O, so the
 * CAM never talks to the card itself: each command from the decoder is answered either with
 * SW 9F00 and the bytes of a command APDU the decoder must carry to the card, or with the
 * result. The decoder relays but learns nothing: it sees the card's certificate (public), the
 * HPKE-sealed Ci || A, and sealed traffic. If an answer from the card does not open under the
 * session keys — another card was inserted, or bytes were replayed or altered — the CAM wipes
 * the keys at once (seed 000) and must pair again.
 *
 * Pairing alone proves the card to the CAM, not the CAM to the card (anyone can encrypt to the
 * card's key). So once the channel is open the CAM sends CAM AUTH inside it: its signing
 * certificate and a signature over the channel binding. The phases:
 *
 *   PAIRING   GET CERT, PAIR OPEN in flight (kh_link)
 *   PROVING   CAM AUTH in flight
 *   READY     channel open and proven; CARD SEND may seal a command
 *   BUSY      a command in flight
 *
 * A channel due for re-keying is paired again from GET CERT, proven again, and only then is the
 * waiting command sent: the card never sees a command on an unproven channel.
 */
#include <string.h>

#include "keyhole/crypto.h"
#include "module/module_int.h"

enum { CAM_IDLE = 0, CAM_PAIRING, CAM_PROVING, CAM_READY, CAM_BUSY };

static kh_err need_service(struct kh_module *m, const struct kh_apdu *a)
{
	if (a->p1 || a->p2)
		return KH_ERR_APDU_P1P2;
	if (m->p.lifecycle != KH_LC_PERSONALISED)
		return KH_ERR_NOT_PERSONALISED;
	return KH_OK;
}

static void drop(struct kh_module *m)
{
	m->cam_secret = 0;
	kh_link_reset(&m->link);
	kh_wipe(m->cam_pending, m->cam_pendlen);
	m->cam_pendlen = 0;
	m->cam_rekey_ua = 0;
	m->cam_phase = CAM_IDLE;
}

kh_err kh__h_card_start(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp)
{
	uint8_t id[5];
	kh_err r;

	if ((r = need_service(m, a)) != KH_OK)
		return r;
	if (a->lc)
		return KH_ERR_APDU_LEN;
	/* Our identity, bound into the HPKE aad: role and unique address. */
	id[0] = KH_ROLE_CAM;
	kh_put_be32(id + 1, m->p.ua);
	drop(m);
	kh_link_init(&m->link, m->p.root_pk, KH_ROLE_CARD, id, sizeof id);
	if ((r = kh_link_start(&m->link, resp)) != KH_OK)
		return r;
	m->cam_phase = CAM_PAIRING;
	m->relay = 1;
	return KH_OK;
}

/* CAM AUTH for the channel just opened, sealed and ready to relay. */
static kh_err prove(struct kh_module *m, struct kh_wr *resp)
{
	uint8_t msg[KH_CAM_AUTH_MSG_LEN], sig[KH_ED25519_SIG_LEN];
	struct kh_wr body, cmd;
	kh_err r;

	kh_cam_auth_msg(m->link.ch.binding, m->link.peer.ua, msg);
	if ((r = kh_ed25519_sign(m->p.sign_sk, msg, sizeof msg, sig)) != KH_OK)
		return r;
	/* TLV body after a 7-byte extended APDU header, built in place in m->inner. */
	kh_wr_init(&body, m->inner + 7, sizeof m->inner - 7);
	kh_tlv_put(&body, 1, m->p.sign_cert, m->p.sign_cert_len);
	if ((r = kh_tlv_put(&body, 2, sig, sizeof sig)) != KH_OK)
		return r;
	kh_wr_init(&cmd, m->inner, 7);
	kh_wr_u8(&cmd, KH_CLA);
	kh_wr_u8(&cmd, KH_INS_CAM_AUTH);
	kh_wr_u16(&cmd, 0);
	kh_wr_u8(&cmd, 0);
	if ((r = kh_wr_u16(&cmd, (uint16_t)body.len)) != KH_OK)
		return r;
	r = kh_link_send(&m->link, m->inner, 7 + body.len, kh__module_now(m), resp);
	kh_wipe(m->inner, 7 + body.len);
	if (r != KH_OK)
		return r;
	m->cam_phase = CAM_PROVING;
	m->relay = 1;
	return KH_OK;
}

/* Seal the waiting command (after a re-pairing) or the one given now. */
static kh_err send_cmd(struct kh_module *m, const uint8_t *inner, size_t len, struct kh_wr *resp)
{
	kh_err r = kh_link_send(&m->link, inner, len, kh__module_now(m), resp);
	if (r != KH_OK)
		return r;
	m->cam_phase = CAM_BUSY;
	m->relay = 1;
	return KH_OK;
}

kh_err kh__h_card_resp(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp)
{
	enum kh_link_result res;
	const uint8_t *d;
	size_t n;
	uint16_t sw;
	kh_err r;

	if ((r = need_service(m, a)) != KH_OK)
		return r;
	if ((r = kh_link_step(&m->link, a->data, a->lc, kh__module_now(m), resp, &res)) != KH_OK) {
		if (m->link.state == KH_LINK_IDLE)
			drop(m);
		return r;
	}
	switch (res) {
	case KH_LINK_SEND:
		m->relay = 1;
		return KH_OK;
	case KH_LINK_PAIRED:
		/* A re-key is transparent to the decoder only if it stays with the same card. */
		if (m->cam_rekey_ua && m->link.peer.ua != m->cam_rekey_ua) {
			drop(m);
			return KH_ERR_CARD_CHANGED;
		}
		m->cam_rekey_ua = 0;
		if ((r = prove(m, resp)) != KH_OK)
			drop(m);
		return r;
	case KH_LINK_REPLY:
		if (m->cam_phase == CAM_BUSY) {
			/* An answer to a command that came inside the decoder's channel (control words,
			 * a purchase) goes back only inside it. */
			if (m->cam_secret && !m->depth) {
				kh_wipe(resp->p, resp->len);
				resp->len = 0;
				drop(m);
				return KH_ERR_CW_PLAIN;
			}
			m->cam_secret = 0;
			m->cam_phase = CAM_READY;
			return KH_OK;
		}
		/* The card's word on CAM AUTH: anything but a bare 9000 ends the channel. */
		r = kh_apdu_resp(resp->p, resp->len, &d, &n, &sw);
		kh_wipe(resp->p, resp->len);
		resp->len = 0;
		if (r != KH_OK || n != 0 || sw != KH_SW_OK) {
			drop(m);
			return r != KH_OK ? r : n != 0 ? KH_ERR_FORMAT : kh_err_from_sw(sw);
		}
		m->cam_phase = CAM_READY;
		if (m->cam_pendlen) {
			r = send_cmd(m, m->cam_pending, m->cam_pendlen, resp);
			kh_wipe(m->cam_pending, m->cam_pendlen);
			m->cam_pendlen = 0;
			if (r != KH_OK)
				drop(m);
			return r;
		}
		/* Paired and proven: tell the decoder which card (public). */
		return kh_wr_u32(resp, m->link.peer.ua);
	}
	return KH_ERR_INTERNAL;
}

kh_err kh__h_card_send(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp)
{
	uint64_t now = kh__module_now(m);
	kh_err r;

	if ((r = need_service(m, a)) != KH_OK)
		return r;
	if (!a->lc)
		return KH_ERR_APDU_LEN;
	if (a->lc > sizeof m->cam_pending)
		return KH_ERR_TOO_LARGE;
	/* Commands whose answers carry control words or spend credit travel only inside the
	 * decoder's channel; a host asking for them in clear is refused. */
	if (!m->depth && a->lc >= 2 && (a->data[1] == KH_INS_ECM || a->data[1] == KH_INS_PURCHASE))
		return KH_ERR_CW_PLAIN;
	if (m->cam_phase == CAM_BUSY) {
		/* The answer to the last command never came: the card went away. */
		drop(m);
		return KH_ERR_NOT_PAIRED;
	}
	if (m->cam_phase == CAM_IDLE)
		return KH_ERR_NOT_PAIRED;
	if (m->cam_phase != CAM_READY)
		return KH_ERR_PAIR_STATE;
	m->cam_secret = (uint8_t)(m->depth != 0);
	if (kh_chan_needs_rekey(&m->link.ch, now)) {
		/* Pair again from GET CERT (the certificate may have expired meanwhile), prove
		 * ourselves on the new channel, then send the waiting command. */
		memcpy(m->cam_pending, a->data, a->lc);
		m->cam_pendlen = (uint16_t)a->lc;
		m->cam_rekey_ua = m->link.peer.ua;
		kh_link_reset(&m->link);
		if ((r = kh_link_start(&m->link, resp)) != KH_OK) {
			drop(m);
			return r;
		}
		m->cam_phase = CAM_PAIRING;
		m->relay = 1;
		return KH_OK;
	}
	return send_cmd(m, a->data, a->lc, resp);
}
