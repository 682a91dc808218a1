/*
 * The initiator side of seed 000 toward the module below: a CAM toward its smart card, and a
 * decoder module toward its CAM (the same three commands, CARD START / CARD RESP / CARD SEND, in
 * both). A module does no I/O, so it never talks to the module below itself: each command from
 * the host is answered either with SW 9F00 and the bytes of a command APDU the host must carry
 * down, or with the result. The host relays but learns nothing: it sees the responder's
 * certificate (public), the HPKE-sealed Ci || A, and sealed traffic. If an answer does not open
 * under the session keys — another card was inserted, or bytes were replayed or altered — the
 * initiator wipes the keys at once (seed 000) and must pair again.
 *
 * Pairing alone proves the responder to the initiator, not the initiator to the responder
 * (anyone can encrypt to its key). So once the channel is open the initiator sends CAM AUTH
 * inside it: its signing certificate and a signature over the channel binding (a CAM to its
 * card; a decoder to its CAM, which then releases control words on that channel, and, when the
 * host asked for the key ladder with P1 = 1 of CARD START, a fresh ladder key K_S under which
 * the CAM seals every pair of control words it sends up). The phases:
 *
 *   PAIRING   GET CERT, PAIR OPEN in flight (kh_link)
 *   PROVING   CAM AUTH in flight
 *   READY     channel open and proven; CARD SEND may seal a command
 *   BUSY      a command in flight
 *
 * A channel due for re-keying is paired again from GET CERT, proven again (a decoder draws a new
 * K_S), and only then is the waiting command sent: the responder never sees a command on an
 * unproven channel.
 */
#include <string.h>

#include "keyhole/crypto.h"
#include "module/module_int.h"

enum { CAM_IDLE = 0, CAM_PAIRING, CAM_PROVING, CAM_READY, CAM_BUSY };

static kh_err need_service(struct kh_module *m, const struct kh_apdu *a, uint8_t p1_max)
{
	if (a->p1 > p1_max || a->p2)
		return KH_ERR_APDU_P1P2;
	if (m->p.lifecycle != KH_LC_PERSONALISED)
		return KH_ERR_NOT_PERSONALISED;
	return KH_OK;
}

void kh__cam_drop(struct kh_module *m)
{
	m->vol.cam.secret = 0;
	kh_link_reset(&m->vol.cam.link);
	kh_wipe(m->vol.cam.pending, m->vol.cam.pendlen);
	m->vol.cam.pendlen = 0;
	m->vol.cam.rekey_ua = 0;
	m->vol.cam.phase = CAM_IDLE;
	m->vol.cam.ecm = 0;
	m->vol.pair.served_dec = 0;
	/* a decoder's ladder key belongs to the channel that just ended, and so do the control
	 * words loaded under it: no channel, no descrambling */
	if (m->p.role == KH_ROLE_DECODER)
		kh__ladder_wipe(m);
}

static kh_err h_card_start(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp)
{
	uint8_t id[5];
	kh_err r;

	/* P1 1: a decoder asks for the key ladder */
	if ((r = need_service(m, a, m->p.role == KH_ROLE_DECODER)) != KH_OK)
		return r;
	if (a->lc)
		return KH_ERR_APDU_LEN;
	/* Our identity, bound into the HPKE aad: role and unique address. */
	id[0] = m->p.role;
	kh_put_be32(id + 1, m->p.ua);
	kh__cam_drop(m);
	/* a CAM's ladder_on is its decoder's word, on the other channel: not ours to change */
	if (m->p.role == KH_ROLE_DECODER)
		m->vol.dec.ladder_on = a->p1;
	kh_link_init(&m->vol.cam.link, m->p.root_pk, m->p.role == KH_ROLE_CAM ? KH_ROLE_CARD : KH_ROLE_CAM, id, sizeof id);
	if ((r = kh_link_start(&m->vol.cam.link, resp)) != KH_OK)
		return r;
	m->vol.cam.phase = CAM_PAIRING;
	m->relay = 1;
	return KH_OK;
}

/* CAM AUTH for the channel just opened, sealed and ready to relay. */
static kh_err prove(struct kh_module *m, struct kh_wr *resp)
{
	uint8_t msg[KH_CAM_AUTH_MSG_LEN], sig[KH_ED25519_SIG_LEN];
	struct kh_wr body, cmd;
	kh_err r;

	if ((r = kh_auth_msg(m->p.role, m->vol.cam.link.ch.binding, m->vol.cam.link.peer.ua, msg)) != KH_OK ||
	    (r = kh_ed25519_sign(m->p.sign_sk, msg, sizeof msg, sig)) != KH_OK)
		return r;
	/* TLV body after a 7-byte extended APDU header, built in place in m->inner. */
	kh_wr_init(&body, m->inner + 7, sizeof m->inner - 7);
	kh_tlv_put(&body, 1, m->p.sign_cert, m->p.sign_cert_len);
	kh_tlv_put(&body, 2, sig, sizeof sig);
	if (m->p.role == KH_ROLE_CAM && m->vol.pair.chan.peer_ua) {
		/* the decoder this channel will serve, so the card can refuse a revoked one */
		m->vol.pair.served_dec = m->vol.pair.chan.peer_ua;
		kh_tlv_put_u32(&body, 4, m->vol.pair.served_dec);
	}
	if (m->p.role == KH_ROLE_DECODER && m->vol.dec.ladder_on) {
		/* a fresh ladder key for this channel; what was loaded under the last one stays
		 * usable until new control words replace it */
		if ((r = kh_random(m->vol.dec.ladder_key, sizeof m->vol.dec.ladder_key)) != KH_OK)
			return r;
		m->vol.dec.ladder_set = 1;
		kh_tlv_put(&body, 3, m->vol.dec.ladder_key, sizeof m->vol.dec.ladder_key);
	}
	if (body.err != KH_OK) {
		kh_wipe(m->inner, sizeof m->inner);
		return body.err;
	}
	kh_wr_init(&cmd, m->inner, 7);
	kh_wr_u8(&cmd, KH_CLA);
	kh_wr_u8(&cmd, KH_INS_CAM_AUTH);
	kh_wr_u16(&cmd, 0);
	kh_wr_u8(&cmd, 0);
	if ((r = kh_wr_u16(&cmd, (uint16_t)body.len)) != KH_OK)
		return r;
	r = kh_link_send(&m->vol.cam.link, m->inner, 7 + body.len, kh__module_now(m), resp);
	kh_wipe(m->inner, 7 + body.len);
	if (r != KH_OK)
		return r;
	m->vol.cam.phase = CAM_PROVING;
	m->relay = 1;
	return KH_OK;
}

/* Seal the waiting command (after a re-pairing) or the one given now. */
static kh_err send_cmd(struct kh_module *m, const uint8_t *inner, size_t len, struct kh_wr *resp)
{
	kh_err r = kh_link_send(&m->vol.cam.link, inner, len, kh__module_now(m), resp);
	if (r != KH_OK)
		return r;
	m->vol.cam.phase = CAM_BUSY;
	m->relay = 1;
	return KH_OK;
}

/*
 * The ECM answer inside p, `levels` status words deep (1: the card's answer, data || SW; 2: a
 * CAM's answer carrying the card's): 1 when a level is not 9000 (a refusal carries no control
 * word), 0 with *cw parsed, or the error.
 */
static int cw_answer_in(const uint8_t *p, size_t n, int levels, struct kh_cw_answer *cw)
{
	uint16_t sw;
	kh_err r;

	memset(cw, 0, sizeof *cw);
	while (levels--) {
		if ((r = kh_apdu_resp(p, n, &p, &n, &sw)) != KH_OK)
			return r;
		if (sw != KH_SW_OK)
			return 1;
	}
	return kh_cw_answer_parse(p, n, cw);
}

/*
 * The card's answer to an ECM, going up to a decoder that asked for the key ladder: its two
 * control words sealed under the decoder's K_S (kh_cw_ladder_seal), so that not even the
 * decoder module's channel code, nor the host after it, holds them in clear. A refusal (no
 * right, an offer) carries no control word and goes up as it is.
 */
static kh_err ladder(struct kh_module *m, struct kh_wr *resp)
{
	struct kh_cw_answer cw;
	struct kh_wr w;
	int k = cw_answer_in(resp->p, resp->len, 1, &cw);
	kh_err r = k < 0 ? k : k == 1 ? KH_OK : cw.sealed_len ? KH_ERR_FORMAT : KH_OK;

	if (k == 0 && r == KH_OK) {
		/* m->inner is free: the command that brought the card's answer has been opened */
		kh_wr_init(&w, m->inner, sizeof m->inner);
		if ((r = kh_cw_ladder_seal(m->vol.dec.ladder_key, &cw, &w)) == KH_OK && (r = kh_wr_u16(&w, KH_SW_OK)) == KH_OK) {
			kh_wipe(resp->p, resp->len);
			resp->len = 0;
			r = kh_wr_bytes(resp, m->inner, w.len);
		}
		kh_wipe(m->inner, w.len);
	}
	kh_wipe(&cw, sizeof cw);
	return r;
}

/*
 * The operator's policy, for a decoder without the key ladder: an ECM answer the card marked
 * "only under the ladder" is replaced by the refusal LADDER_REQUIRED, as if the card had given
 * it, so the host tells its viewer why and the channels stay up. Any other answer goes up as it
 * is (the decoder module and the host check its format).
 */
static void ladder_policy(struct kh_wr *resp)
{
	struct kh_cw_answer cw;

	if (cw_answer_in(resp->p, resp->len, 1, &cw) == 0 && cw.ladder_only) {
		kh_wipe(resp->p, resp->len);
		resp->len = 0;
		kh_wr_u16(resp, kh_err_to_sw(KH_ERR_LADDER_REQUIRED));
	}
	kh_wipe(&cw, sizeof cw);
}

/*
 * A decoder in ladder mode hands its host nothing but sealed control words, even from a CAM that
 * does not keep the ladder: the CAM's answer (the card's answer || the CAM's SW) to an ECM, when
 * both said 9000, must carry a sealed pair and no clear CW; else it is wiped and refused.
 */
static kh_err ladder_check(const struct kh_wr *resp)
{
	struct kh_cw_answer cw;
	int k = cw_answer_in(resp->p, resp->len, 2, &cw);
	kh_err r = k < 0 ? k : k == 1 || cw.sealed_len ? KH_OK : KH_ERR_LADDER;

	kh_wipe(&cw, sizeof cw);
	return r;
}

/* Is this command for the CAM a CARD SEND of an ECM (whose answer carries control words)? */
static int carries_ecm(const uint8_t *cmd, size_t len)
{
	struct kh_apdu x;

	return kh_apdu_parse(cmd, len, &x) == KH_OK && x.ins == KH_INS_CARD_SEND && x.lc >= 2 &&
	       x.data[1] == KH_INS_ECM;
}

static kh_err h_card_resp(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp)
{
	enum kh_link_result res;
	const uint8_t *d;
	size_t n;
	uint16_t sw;
	kh_err r;

	if ((r = need_service(m, a, 0)) != KH_OK)
		return r;
	if ((r = kh_link_step(&m->vol.cam.link, a->data, a->lc, kh__module_now(m), resp, &res)) != KH_OK) {
		if (m->vol.cam.link.state == KH_LINK_IDLE)
			kh__cam_drop(m);
		return r;
	}
	switch (res) {
	case KH_LINK_SEND:
		m->relay = 1;
		return KH_OK;
	case KH_LINK_PAIRED:
		/* A re-key is transparent to the decoder only if it stays with the same card. */
		if (m->vol.cam.rekey_ua && m->vol.cam.link.peer.ua != m->vol.cam.rekey_ua) {
			kh__cam_drop(m);
			return KH_ERR_CARD_CHANGED;
		}
		m->vol.cam.rekey_ua = 0;
		if ((r = prove(m, resp)) != KH_OK)
			kh__cam_drop(m);
		return r;
	case KH_LINK_REPLY:
		if (m->vol.cam.phase == CAM_BUSY) {
			/* An answer to a command that came inside the decoder's channel (control words,
			 * a purchase) goes back only inside it. */
			if (m->vol.cam.secret && !m->depth) {
				kh_wipe(resp->p, resp->len);
				resp->len = 0;
				kh__cam_drop(m);
				return KH_ERR_CW_PLAIN;
			}
			if (m->vol.cam.ecm && m->p.role == KH_ROLE_CAM && !m->vol.dec.ladder_on)
				ladder_policy(resp);
			if (m->vol.cam.ecm && m->vol.dec.ladder_on &&
			    (r = m->p.role == KH_ROLE_CAM ? ladder(m, resp) : ladder_check(resp)) != KH_OK) {
				kh_wipe(resp->p, resp->len);
				resp->len = 0;
				kh__cam_drop(m);
				return r;
			}
			m->vol.cam.secret = 0;
			m->vol.cam.ecm = 0;
			m->vol.cam.phase = CAM_READY;
			return KH_OK;
		}
		/* The card's word on CAM AUTH: anything but a bare 9000 ends the channel. */
		r = kh_apdu_resp(resp->p, resp->len, &d, &n, &sw);
		kh_wipe(resp->p, resp->len);
		resp->len = 0;
		if (r != KH_OK || n != 0 || sw != KH_SW_OK) {
			kh__cam_drop(m);
			return r != KH_OK ? r : n != 0 ? KH_ERR_FORMAT : kh_err_from_sw(sw);
		}
		m->vol.cam.phase = CAM_READY;
		if (m->vol.cam.pendlen) {
			r = send_cmd(m, m->vol.cam.pending, m->vol.cam.pendlen, resp);
			kh_wipe(m->vol.cam.pending, m->vol.cam.pendlen);
			m->vol.cam.pendlen = 0;
			if (r != KH_OK)
				kh__cam_drop(m);
			return r;
		}
		/* Paired and proven: tell the decoder which card (public). */
		return kh_wr_u32(resp, m->vol.cam.link.peer.ua);
	}
	return KH_ERR_INTERNAL;
}

static kh_err h_card_send(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp)
{
	uint64_t now = kh__module_now(m);
	int secret;
	kh_err r;

	if ((r = need_service(m, a, 0)) != KH_OK)
		return r;
	if (!a->lc)
		return KH_ERR_APDU_LEN;
	if (a->lc > sizeof m->vol.cam.pending)
		return KH_ERR_TOO_LARGE;
	/* Commands whose answers carry control words or spend credit travel only inside the
	 * decoder's channel, and only once a certified decoder has proven itself on it; a host
	 * asking for them in clear, or on a channel it opened itself, is refused. */
	secret = m->p.role == KH_ROLE_CAM && a->lc >= 2 && (a->data[1] == KH_INS_ECM || a->data[1] == KH_INS_PURCHASE);
	if (secret && !m->depth)
		return KH_ERR_CW_PLAIN;
	if (secret && !m->vol.pair.chan.peer_ua)
		return KH_ERR_DECODER_UNPROVEN;
	if (m->vol.cam.phase == CAM_BUSY) {
		/* The answer to the last command never came: the card went away. */
		kh__cam_drop(m);
		return KH_ERR_NOT_PAIRED;
	}
	if (m->vol.cam.phase == CAM_IDLE)
		return KH_ERR_NOT_PAIRED;
	if (m->vol.cam.phase != CAM_READY)
		return KH_ERR_PAIR_STATE;
	m->vol.cam.secret = (uint8_t)(m->depth != 0);
	if (m->p.role == KH_ROLE_CAM)
		m->vol.cam.ecm = (uint8_t)(secret && a->data[1] == KH_INS_ECM);
	else
		m->vol.cam.ecm = (uint8_t)carries_ecm(a->data, a->lc);
	if (kh_chan_needs_rekey(&m->vol.cam.link.ch, now)) {
		/* Pair again from GET CERT (the certificate may have expired meanwhile), prove
		 * ourselves on the new channel, then send the waiting command. */
		memcpy(m->vol.cam.pending, a->data, a->lc);
		m->vol.cam.pendlen = (uint16_t)a->lc;
		m->vol.cam.rekey_ua = m->vol.cam.link.peer.ua;
		kh_link_reset(&m->vol.cam.link);
		if ((r = kh_link_start(&m->vol.cam.link, resp)) != KH_OK) {
			kh__cam_drop(m);
			return r;
		}
		m->vol.cam.phase = CAM_PAIRING;
		m->relay = 1;
		return KH_OK;
	}
	return send_cmd(m, a->data, a->lc, resp);
}

/* The modules with a module below them: a CAM (its card) and a decoder (its CAM). */
#define INITIATORS (KH_ROLE_BIT(KH_ROLE_CAM) | KH_ROLE_BIT(KH_ROLE_DECODER))

/* A new state loaded: no channel toward the module below, nothing in flight. */
static void cam_forget(struct kh_module *m)
{
	kh_wipe(&m->vol.cam, sizeof m->vol.cam);
}

static const struct kh_applet_ins cam_ins[] = {
	{KH_INS_CARD_START, KH_INSF_PLAIN | KH_INSF_SEALED, INITIATORS, h_card_start},
	{KH_INS_CARD_RESP, KH_INSF_PLAIN | KH_INSF_SEALED, INITIATORS, h_card_resp},
	{KH_INS_CARD_SEND, KH_INSF_PLAIN | KH_INSF_SEALED, INITIATORS, h_card_send},
};

const struct kh_applet kh__applet_cam = {"cam", KH_APPLET_INS(cam_ins), NULL, cam_forget};
