/*
 * Responder side of seed 000 (the card toward its CAM, the CAM toward its decoder): answer
 * PAIR OPEN with A under the new session key, then accept commands only inside the channel.
 * A command that does not open — wrong key (another CAM, a swapped card), replayed or reordered
 * counter, cut or altered bytes — is refused with its own status word and changes nothing.
 */
#include <string.h>

#include "keyhole/crypto.h"
#include "module/module_int.h"

static kh_err h_pair_open(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp)
{
	kh_err r;

	if (a->p1 || a->p2)
		return KH_ERR_APDU_P1P2;
	if (m->p.lifecycle != KH_LC_PERSONALISED)
		return KH_ERR_NOT_PERSONALISED;
	if ((r = kh_pair_open_answer(m->p.pair_sk, a->data, a->lc, kh__module_now(m), &m->vol.pair.chan, resp)) != KH_OK)
		return r;
	/* a new channel: whatever its predecessor's initiator proved or gave is gone */
	if (m->p.role == KH_ROLE_CAM)
		kh__ladder_wipe(m);
	else
		m->vol.pair.served_dec = 0;
	return KH_OK;
}

static kh_err h_sealed(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp)
{
	size_t inlen, rlen, room;
	uint32_t accepted;
	uint64_t now;
	kh_err r;

	if (a->p1 || a->p2)
		return KH_ERR_APDU_P1P2;
	if (m->p.lifecycle != KH_LC_PERSONALISED)
		return KH_ERR_NOT_PERSONALISED;
	/* The initiator re-keys every hour; a channel kept well past that is refused here too. */
	now = kh__module_now(m);
	if (now && m->vol.pair.chan.open && now >= m->vol.pair.chan.opened_at + KH_CHAN_MAX_AGE + KH_CHAN_AGE_GRACE)
		return KH_ERR_CHAN_REKEY;
	accepted = m->vol.pair.chan.accepted;
	if ((r = kh_chan_open_cmd(&m->vol.pair.chan, a->data, a->lc, m->inner, sizeof m->inner, &inlen)) != KH_OK)
		return r;
	/* The sealed answer must fit where it goes, or the command must not run at all: give the
	 * counter back, as if it had never arrived. */
	room = resp->cap - resp->len;
	if (room < KH_CHAN_OVERHEAD + 2) {
		m->vol.pair.chan.accepted = accepted;
		kh_wipe(m->inner, inlen);
		return KH_ERR_BUF;
	}
	room -= KH_CHAN_OVERHEAD;
	if (room > sizeof m->inner_resp)
		room = sizeof m->inner_resp;
	/* The inner command runs as its own transaction; its status word travels sealed. */
	m->depth = 1;
	rlen = kh__module_exec(m, m->inner, inlen, m->inner_resp, room);
	m->depth = 0;
	/* A relay request or a refusal's data belongs to the inner answer, sealed inside. */
	m->relay = 0;
	m->keep_data = 0;
	r = kh_chan_seal_resp(&m->vol.pair.chan, m->inner_resp, rlen, resp);
	kh_wipe(m->inner, inlen);
	kh_wipe(m->inner_resp, rlen);
	return r;
}

static kh_err h_echo(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp)
{
	(void)m;
	if (a->p1 || a->p2)
		return KH_ERR_APDU_P1P2;
	return kh_wr_bytes(resp, a->data, a->lc);
}

/*
 * CAM AUTH, inside the channel: TLV {1: the initiator's signing certificate, 2: Ed25519 signature
 * over kh_auth_msg(its role, channel binding, our UA)}. A card expects a CAM, which adds {4: u32 UA
 * of the decoder module it serves} once one proved itself to it; a CAM expects a decoder, which
 * may add {3: a 32-byte key ladder key K_S} (docs/protocols/decoder.md). PAIR OPEN
 * proves nothing about who sent it (anyone may encrypt to our key); this proves that a certified
 * module of the right role holds this very channel. The result lives with the channel: a new
 * PAIR OPEN starts unauthenticated again.
 */
static kh_err h_cam_auth(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp)
{
	struct kh_rd rd;
	struct kh_tlv t, cert = {0}, sig = {0}, lk = {0}, dec = {0};
	struct kh_cert_info ci;
	uint8_t msg[KH_CAM_AUTH_MSG_LEN];
	uint8_t want;
	int k;
	kh_err r;

	(void)resp;
	if (a->p1 || a->p2)
		return KH_ERR_APDU_P1P2;
	want = m->p.role == KH_ROLE_CARD ? KH_ROLE_CAM : KH_ROLE_DECODER;
	kh_rd_init(&rd, a->data, a->lc);
	while ((k = kh_tlv_next(&rd, &t)) == 1) {
		if (t.tag == 1 && !cert.v)
			cert = t;
		else if (t.tag == 2 && !sig.v)
			sig = t;
		else if (t.tag == 3 && want == KH_ROLE_DECODER && !lk.v)
			lk = t;
		else if (t.tag == 4 && want == KH_ROLE_CAM && !dec.v)
			dec = t;
		else
			return t.tag == 1 || t.tag == 2 || (t.tag == 3 && want == KH_ROLE_DECODER) ||
					       (t.tag == 4 && want == KH_ROLE_CAM)
				       ? KH_ERR_FORMAT
				       : KH_ERR_TLV_TAG;
	}
	if (k < 0)
		return k;
	if (!cert.v || !sig.v || sig.len != KH_ED25519_SIG_LEN || (lk.v && lk.len != sizeof m->vol.dec.ladder_key) ||
	    (dec.v && dec.len != 4))
		return KH_ERR_FORMAT;
	/* A card judges validity by its own clock (the newest signed ECM time, a lower bound of the
	 * time), not the host's: it can tell "expired", never "not yet valid". */
	r = m->p.role == KH_ROLE_CARD
		    ? kh_cert_check_by_clock(cert.v, cert.len, m->p.root_pk, want, KH_CERT_KEY_ED25519,
					     kh__card_clock(m), &ci)
		    : kh_cert_check(cert.v, cert.len, m->p.root_pk, want, KH_CERT_KEY_ED25519, kh__module_now(m), &ci);
	if (r != KH_OK)
		return r;
	if ((r = kh__card_revoked(m, ci.ua)) != KH_OK)
		return r;
	if ((r = kh_auth_msg(want, m->vol.pair.chan.binding, m->p.ua, msg)) != KH_OK)
		return r;
	if (kh_ed25519_verify(ci.pub, msg, sizeof msg, sig.v) != KH_OK)
		return KH_ERR_AUTH;
	/* the decoder module the CAM serves is on the operator's list too */
	if (dec.v && (r = kh__card_revoked(m, kh_get_be32(dec.v))) != KH_OK)
		return r;
	m->vol.pair.chan.peer_ua = ci.ua;
	if (want == KH_ROLE_CAM)
		m->vol.pair.served_dec = dec.v ? kh_get_be32(dec.v) : 0;
	if (want == KH_ROLE_DECODER) {
		/* the CAM's card channel was opened for another decoder (or none): it ends */
		if (m->vol.cam.link.state != KH_LINK_IDLE && m->vol.pair.served_dec != ci.ua)
			kh__cam_drop(m);
		kh__ladder_wipe(m);
		if (lk.v) {
			memcpy(m->vol.dec.ladder_key, lk.v, lk.len);
			m->vol.dec.ladder_on = 1;
		}
	}
	return KH_OK;
}

/* A new state loaded: the channel toward the host's side is gone. */
static void pair_forget(struct kh_module *m)
{
	kh_wipe(&m->vol.pair, sizeof m->vol.pair);
}

static const struct kh_applet_ins pair_ins[] = {
	{KH_INS_PAIR_OPEN, KH_INSF_PLAIN, 0, h_pair_open},
	{KH_INS_SEALED, KH_INSF_PLAIN | KH_INSF_NOTX, 0, h_sealed},
	{KH_INS_ECHO, KH_INSF_SEALED, 0, h_echo},
	{KH_INS_CAM_AUTH, KH_INSF_SEALED, KH_ROLE_BIT(KH_ROLE_CARD) | KH_ROLE_BIT(KH_ROLE_CAM), h_cam_auth},
};

const struct kh_applet kh__applet_pair = {"pair", KH_APPLET_INS(pair_ins), NULL, pair_forget};
