/*
 * The card's usage data (seed 001, include/keyhole/usage.h, docs/protocols/usage.md): EXPORT
 * makes a block of what only the card knows — purchases, credit, usage counters, versions —
 * sealed under Ku for the management center and signed with the card's certified key; HELLO
 * signs a center's nonce to open an upload session.
 *
 * EXPORT P1 = 0 makes a block for an upload session: always allowed, since the card is talking
 * to its center. P1 = 1 makes a block for the decoder's memory M1, and only while the center has
 * authorised export (seed 001: a new card starts not authorised, so M1 keeps the old card's data
 * until the center has recovered it). The block's header says which (KH_USAGE_F_M1): the center
 * closes a replaced card as recovered only on a block made for M1, never on a session block the
 * decoder may have kept from long before. Another P1 is refused. EXPORT P1 = 0 with data (an
 * upload session's nonce, 16 to 64 bytes) makes a block bound to that session
 * (KH_USAGE_F_SESSION): signed with the nonce, so it also answers the center's nonce the way
 * HELLO does. Each block has the next block_seq, stored before the block leaves, so the center
 * can tell blocks apart. The block's AEAD nonce is drawn fresh for each block by kh_usage_seal,
 * not taken from the block number: a copy of the card's files put back makes the same numbers
 * again.
 *
 * This applet keeps no state of its own: the purchase log, credit, block_seq and counters it
 * exports are the CAS applet's (m->p.app.cas, m->live.cas), sealed in that applet's section.
 */
#include <string.h>

#include "keyhole/crypto.h"
#include "keyhole/usage.h"
#include "module/module_int.h"

#define CAS_VERSION 1
#define STATE_VERSION 1

static kh_err h_export(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp)
{
	struct kh_cas_state *c = &m->p.app.cas;
	uint8_t v[16];
	struct kh_usage_hdr h;
	struct kh_wr w;
	uint8_t *out;
	size_t len, cap;
	kh_err r;

	if ((r = kh__cas_need_card(m, a, 1)) != KH_OK)
		return r;
	if (a->p1 > 1)
		return KH_ERR_APDU_P1P2;
	/* P1=0 may carry an upload session's nonce: the block is then bound to that session. */
	if (a->lc && (a->p1 != 0 || a->lc < KH_HELLO_NONCE_MIN || a->lc > KH_HELLO_NONCE_MAX))
		return KH_ERR_APDU_LEN;
	if (a->p1 == 1 && !c->export_ok)
		return KH_ERR_EXPORT_DENIED;
	if (c->block_seq == UINT32_MAX)
		return KH_ERR_CARD_FULL;
	c->block_seq++;
	/* The contents are built in the state buffer, free until the store that follows this
	 * command, and wiped before it. The block goes straight into the response. */
	kh_wr_init(&w, m->plain, sizeof m->plain);
	kh_tlv_put_u32(&w, KH_USAGE_T_CREDIT, c->credit);
	for (size_t i = 0; i < c->nlog; i++) {
		kh_put_be32(v, c->log[i].event);
		kh_put_be32(v + 4, c->log[i].price);
		kh_put_be64(v + 8, c->log[i].time);
		kh_tlv_put(&w, KH_USAGE_T_PURCHASE, v, 16);
		if (!c->log[i].exported_in)
			c->log[i].exported_in = c->block_seq;
	}
	kh_put_be32(v, m->live.cas.n_ecm);
	kh_put_be32(v + 4, m->live.cas.n_cw);
	kh_put_be32(v + 8, m->live.cas.n_refused);
	kh_put_be32(v + 12, m->live.cas.n_emm);
	kh_tlv_put(&w, KH_USAGE_T_COUNTERS, v, 16);
	v[0] = CAS_VERSION;
	v[1] = STATE_VERSION;
	kh_tlv_put(&w, KH_USAGE_T_VERSIONS, v, 2);
	kh_tlv_put_u32(&w, KH_USAGE_T_RELOAD, c->last_reload);
	kh_tlv_put_u8(&w, KH_USAGE_T_EXPORT, c->export_ok);
	if ((r = w.err) != KH_OK)
		goto out;
	h.ua = m->p.ua;
	h.block_seq = c->block_seq;
	h.card_time = kh__module_now(m);
	h.flags = a->p1 == 1 ? KH_USAGE_F_M1 : a->lc ? KH_USAGE_F_SESSION : 0;
	cap = resp->cap - resp->len;
	if ((r = kh_wr_reserve(resp, 0, &out)) != KH_OK) /* where the block will go */
		goto out;
	if ((r = kh_usage_seal_bound(m->p.ku, m->p.sign_sk, &h, m->plain, w.len, a->lc ? a->data : NULL, a->lc, out,
				     cap, &len)) != KH_OK)
		goto out;
	resp->len += len;
	c->export_req = 0;
	/* the block_seq is durable before the block leaves (module.c stores, then answers) */
	m->dirty = 1;
out:
	kh_wipe(m->plain, w.len);
	return r;
}

static kh_err h_hello(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp)
{
	uint8_t msg[KH_HELLO_MSG_LEN(KH_HELLO_NONCE_MAX)], sig[64];
	uint64_t now = kh__module_now(m);
	kh_err r;

	if ((r = kh__cas_need_card(m, a, 0)) != KH_OK)
		return r;
	if (a->lc < KH_HELLO_NONCE_MIN || a->lc > KH_HELLO_NONCE_MAX)
		return KH_ERR_APDU_LEN;
	kh_hello_msg(a->data, a->lc, m->p.ua, m->p.app.cas.block_seq, now, msg);
	if ((r = kh_ed25519_sign(m->p.sign_sk, msg, KH_HELLO_MSG_LEN(a->lc), sig)) != KH_OK)
		return r;
	kh_wr_u32(resp, m->p.ua);
	kh_wr_u32(resp, m->p.app.cas.block_seq);
	kh_wr_u64(resp, now);
	return kh_wr_bytes(resp, sig, sizeof sig);
}

static const struct kh_applet_ins usage_ins[] = {
	{KH_INS_EXPORT, KH_INSF_PLAIN | KH_INSF_SEALED, KH_ROLE_BIT(KH_ROLE_CARD), h_export},
	{KH_INS_HELLO, KH_INSF_PLAIN | KH_INSF_SEALED, KH_ROLE_BIT(KH_ROLE_CARD), h_hello},
};

const struct kh_applet kh__applet_usage = {"usage", KH_APPLET_INS(usage_ins), NULL, NULL};
