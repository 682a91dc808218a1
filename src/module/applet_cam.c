/*
 * CAM applet: the initiator side of seed 000 toward the smart card. A module does no I/O, so the
 * CAM never talks to the card itself: each command from the decoder is answered either with
 * SW 9F00 and the bytes of a command APDU the decoder must carry to the card, or with the
 * result. The decoder relays but learns nothing: it sees the card's certificate (public), the
 * HPKE-sealed Ci || A, and sealed traffic. If an answer from the card does not open under the
 * session keys — another card was inserted, or bytes were replayed or altered — the CAM wipes
 * the keys at once (seed 000) and must pair again.
 */
#include "keyhole/crypto.h"
#include "module/module_int.h"

static kh_err need_service(struct kh_module *m, const struct kh_apdu *a)
{
	if (a->p1 || a->p2)
		return KH_ERR_APDU_P1P2;
	if (m->p.lifecycle != KH_LC_PERSONALISED)
		return KH_ERR_NOT_PERSONALISED;
	return KH_OK;
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
	kh_link_init(&m->link, m->p.root_pk, KH_ROLE_CARD, id, sizeof id);
	if ((r = kh_link_start(&m->link, resp)) != KH_OK)
		return r;
	m->relay = 1;
	return KH_OK;
}

kh_err kh__h_card_resp(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp)
{
	enum kh_link_result res;
	kh_err r;

	if ((r = need_service(m, a)) != KH_OK)
		return r;
	if ((r = kh_link_step(&m->link, a->data, a->lc, kh__module_now(m), resp, &res)) != KH_OK)
		return r;
	switch (res) {
	case KH_LINK_SEND:
		m->relay = 1;
		return KH_OK;
	case KH_LINK_PAIRED:
		/* Paired: tell the decoder which card (public). */
		return kh_wr_u32(resp, m->link.peer.ua);
	case KH_LINK_REPLY:
		return KH_OK;
	}
	return KH_ERR_INTERNAL;
}

kh_err kh__h_card_send(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp)
{
	kh_err r;

	if ((r = need_service(m, a)) != KH_OK)
		return r;
	if (!a->lc)
		return KH_ERR_APDU_LEN;
	if ((r = kh_link_send(&m->link, a->data, a->lc, kh__module_now(m), resp)) != KH_OK)
		return r;
	m->relay = 1;
	return KH_OK;
}
