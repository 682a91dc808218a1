/*
 * Identity applet, common to every module role: public facts (GET INFO), certificates
 * (GET CERT), and personalisation in two steps so that private keys are born inside the module
 * and never leave it: PERSO INIT takes the identity the authority assigns (role, UA, operator
 * root key, diversified card keys) and answers with fresh public keys; PERSO CERTS takes the
 * certificates the authority issued for those keys, checks them, and puts the module in service.
 */
#include <string.h>

#include "keyhole/crypto.h"
#include "module/module_int.h"

enum { P_ROLE = 1, P_UA, P_ROOT_PK, P_KP, P_KU };
enum { C_SIGN_CERT = 1, C_PAIR_CERT };
enum { K_SIGN_PK = 1, K_PAIR_PK };

static kh_err h_get_info(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp)
{
	if (a->p1 || a->p2)
		return KH_ERR_APDU_P1P2;
	if (a->lc)
		return KH_ERR_APDU_LEN;
	kh_tlv_put_u8(resp, KH_INFO_T_ROLE, m->p.role);
	kh_tlv_put_u32(resp, KH_INFO_T_UA, m->p.ua);
	kh_tlv_put_u8(resp, KH_INFO_T_LIFECYCLE, m->p.lifecycle);
	kh_tlv_put_u64(resp, KH_INFO_T_COUNTER, m->counter);
	if (m->p.role == KH_ROLE_CAM || m->p.role == KH_ROLE_DECODER) {
		kh_tlv_put_u8(resp, KH_INFO_T_LINK, (uint8_t)m->vol.cam.link.state);
		if (m->vol.cam.link.state == KH_LINK_OPEN || m->vol.cam.link.state == KH_LINK_WANT_RESP)
			kh_tlv_put_u32(resp, KH_INFO_T_PEER_UA, m->vol.cam.link.peer.ua);
	}
	kh_tlv_put_u8(resp, KH_INFO_T_CHAN_OPEN, m->vol.pair.chan.open);
	if (m->vol.pair.chan.open && m->vol.pair.chan.peer_ua)
		kh_tlv_put_u32(resp, KH_INFO_T_CHAN_PEER_UA, m->vol.pair.chan.peer_ua);
	return resp->err;
}

static kh_err h_get_cert(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp)
{
	if (a->p2 || a->p1 > 1)
		return KH_ERR_APDU_P1P2;
	if (a->lc)
		return KH_ERR_APDU_LEN;
	if (m->p.lifecycle != KH_LC_PERSONALISED)
		return KH_ERR_NOT_PERSONALISED;
	if (a->p1 == 0)
		return kh_wr_bytes(resp, m->p.pair_cert, m->p.pair_cert_len);
	return kh_wr_bytes(resp, m->p.sign_cert, m->p.sign_cert_len);
}

static kh_err h_perso_init(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp)
{
	struct kh_rd rd;
	struct kh_tlv t;
	struct kh_persist *p = &m->p;
	unsigned seen = 0;
	int k = 0;
	kh_err r = KH_OK;

	if (a->p1 || a->p2)
		return KH_ERR_APDU_P1P2;
	if (p->lifecycle != KH_LC_BLANK)
		return KH_ERR_PERSONALISED;
	kh_rd_init(&rd, a->data, a->lc);
	while (r == KH_OK && (k = kh_tlv_next(&rd, &t)) == 1) {
		if (t.tag < P_ROLE || t.tag > P_KU || (seen & (1u << t.tag)))
			return t.tag >= P_ROLE && t.tag <= P_KU ? KH_ERR_FORMAT : KH_ERR_TLV_TAG;
		seen |= 1u << t.tag;
		switch (t.tag) {
		case P_ROLE: r = kh_tlv_u8(&t, &p->role); break;
		case P_UA: r = kh_tlv_u32(&t, &p->ua); break;
		case P_ROOT_PK: r = kh_tlv_fixed(&t, p->root_pk, 32); break;
		case P_KP: r = kh_tlv_fixed(&t, p->kp, 32); break;
		case P_KU: r = kh_tlv_fixed(&t, p->ku, 32); break;
		}
	}
	if (r != KH_OK)
		return r;
	if (k < 0)
		return k;
	if (seen != 0x3Eu || !kh_role_name((enum kh_role)p->role) || p->ua == 0)
		return KH_ERR_FORMAT;
	if ((r = kh_ed25519_keygen(p->sign_sk, p->sign_pk)) != KH_OK ||
	    (r = kh_x25519_keygen(p->pair_sk, p->pair_pk)) != KH_OK)
		return r;
	p->lifecycle = KH_LC_KEYED;
	m->dirty = 1;
	kh_tlv_put(resp, K_SIGN_PK, p->sign_pk, 32);
	return kh_tlv_put(resp, K_PAIR_PK, p->pair_pk, 32);
}

/* A certificate for this module: from our root, our role, our UA, our key. */
static kh_err check_own(struct kh_module *m, const struct kh_tlv *t, enum kh_cert_key key,
			const uint8_t pub[static 32], uint8_t *dst, uint16_t *dstlen)
{
	struct kh_cert_info ci;
	kh_err r;

	if (t->len > KH_CERT_MAX)
		return KH_ERR_TOO_LARGE;
	if ((r = kh_cert_check(t->v, t->len, m->p.root_pk, (enum kh_role)m->p.role, key,
			       kh__module_now(m), &ci)) != KH_OK)
		return r;
	if (ci.ua != m->p.ua || !kh_ct_eq(ci.pub, pub, 32))
		return KH_ERR_CERT_KEY;
	memcpy(dst, t->v, t->len);
	*dstlen = t->len;
	return KH_OK;
}

static kh_err h_perso_certs(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp)
{
	struct kh_rd rd;
	struct kh_tlv t;
	unsigned seen = 0;
	int k = 0;
	kh_err r = KH_OK;

	(void)resp;
	if (a->p1 || a->p2)
		return KH_ERR_APDU_P1P2;
	if (m->p.lifecycle == KH_LC_BLANK)
		return KH_ERR_NOT_PERSONALISED;
	if (m->p.lifecycle == KH_LC_PERSONALISED)
		return KH_ERR_PERSONALISED;
	kh_rd_init(&rd, a->data, a->lc);
	while (r == KH_OK && (k = kh_tlv_next(&rd, &t)) == 1) {
		if (t.tag != C_SIGN_CERT && t.tag != C_PAIR_CERT)
			return KH_ERR_TLV_TAG;
		if (seen & (1u << t.tag))
			return KH_ERR_FORMAT;
		seen |= 1u << t.tag;
		if (t.tag == C_SIGN_CERT)
			r = check_own(m, &t, KH_CERT_KEY_ED25519, m->p.sign_pk, m->p.sign_cert, &m->p.sign_cert_len);
		else
			r = check_own(m, &t, KH_CERT_KEY_X25519, m->p.pair_pk, m->p.pair_cert, &m->p.pair_cert_len);
	}
	if (r != KH_OK)
		return r;
	if (k < 0)
		return k;
	if (seen != 0x6u)
		return KH_ERR_FORMAT;
	m->p.lifecycle = KH_LC_PERSONALISED;
	m->dirty = 1;
	return KH_OK;
}

static const struct kh_applet_ins id_ins[] = {
	{KH_INS_GET_INFO, KH_INSF_PLAIN | KH_INSF_SEALED, 0, h_get_info},
	{KH_INS_GET_CERT, KH_INSF_PLAIN, 0, h_get_cert},
	{KH_INS_PERSO_INIT, KH_INSF_PLAIN, 0, h_perso_init},
	{KH_INS_PERSO_CERTS, KH_INSF_PLAIN, 0, h_perso_certs},
};

const struct kh_applet kh__applet_id = {"id", KH_APPLET_INS(id_ins), NULL, NULL};
