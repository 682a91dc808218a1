/*
 * Decoder applet: the descrambler end of the key ladder (docs/protocols/decoder.md). A decoder
 * module pairs with its CAM and proves its certificate there (applet_cam.c, the same initiator
 * code a CAM runs toward its card). In ladder mode it gave the CAM a fresh key K_S for the
 * channel, and the CAM seals every pair of control words under it; the host carries the sealed
 * pair here (LADDER LOAD) and sends the scrambled packets (DESCRAMBLE). The control words open
 * only here, live only in volatile memory, and are wiped when the channel ends. The packets come
 * back clear: a software decoder shows the host its picture, never its keys.
 *
 * Both commands touch no persistent state, so they run without the transaction snapshot.
 */
#include <string.h>

#include "keyhole/crypto.h"
#include "keyhole/scramble.h"
#include "module/module_int.h"

void kh__ladder_wipe(struct kh_module *m)
{
	kh_wipe(&m->vol.dec, sizeof m->vol.dec);
}

static kh_err need_decoder(const struct kh_module *m, const struct kh_apdu *a)
{
	if (a->p1 || a->p2)
		return KH_ERR_APDU_P1P2;
	if (m->p.lifecycle != KH_LC_PERSONALISED)
		return KH_ERR_NOT_PERSONALISED;
	return KH_OK;
}

/*
 * LADDER LOAD: the CAM's ladder answer (TLV {1: alg, 4: cp, 5: sealed CWs}) in, nothing out.
 * Refused with KH_ERR_LADDER when no ladder key is in force or the pair does not open under it;
 * a refused load leaves the keys loaded before in place.
 */
static kh_err h_ladder_load(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp)
{
	struct kh_cw_answer cw;
	kh_err r;

	(void)resp;
	if ((r = need_decoder(m, a)) != KH_OK)
		return r;
	/* a ladder key drawn and given to the CAM: not the zeroes of a pairing still under way */
	if (!m->vol.dec.ladder_on || !m->vol.dec.ladder_set)
		return KH_ERR_LADDER;
	if ((r = kh_cw_answer_parse(a->data, a->lc, &cw)) != KH_OK)
		return r;
	if (!cw.sealed_len)
		r = KH_ERR_FORMAT;
	else
		r = kh_cw_ladder_open(m->vol.dec.ladder_key, &cw);
	if (r == KH_OK) {
		cw.sealed_len = 0;
		kh_wipe(cw.sealed, sizeof cw.sealed);
		m->vol.dec.desc = cw;
		m->vol.dec.desc_loaded = 1;
	}
	kh_wipe(&cw, sizeof cw);
	return r;
}

/*
 * DESCRAMBLE: whole TS packets in (1 to KH_APDU_MAX_DATA / 188 of them), the same packets out,
 * each scrambled one descrambled with the loaded control word of its parity and its TSC bits
 * cleared (kh_scr_descramble). KH_ERR_LADDER before any control words were loaded.
 */
static kh_err h_descramble(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp)
{
	size_t n, skipped;
	kh_err r;

	if ((r = need_decoder(m, a)) != KH_OK)
		return r;
	if (!a->lc || a->lc % KH_SCR_PACKET_LEN)
		return KH_ERR_APDU_LEN;
	if (!m->vol.dec.desc_loaded)
		return KH_ERR_LADDER;
	n = a->lc / KH_SCR_PACKET_LEN;
	if (resp->cap - resp->len < a->lc)
		return KH_ERR_BUF;
	memcpy(resp->p + resp->len, a->data, a->lc);
	r = kh_scr_descramble_once((enum kh_scr_alg)m->vol.dec.desc.alg, 0, m->vol.dec.desc.even, m->vol.dec.desc.odd, m->vol.dec.desc.cw_len,
				   resp->p + resp->len, n, &skipped);
	if (r != KH_OK) {
		kh_wipe(resp->p + resp->len, a->lc);
		return r == KH_ERR_INVAL ? KH_ERR_FORMAT : r;
	}
	resp->len += a->lc;
	return KH_OK;
}

static const struct kh_applet_ins dec_ins[] = {
	{KH_INS_LADDER_LOAD, KH_INSF_PLAIN | KH_INSF_NOTX, KH_ROLE_BIT(KH_ROLE_DECODER), h_ladder_load},
	{KH_INS_DESCRAMBLE, KH_INSF_PLAIN | KH_INSF_NOTX, KH_ROLE_BIT(KH_ROLE_DECODER), h_descramble},
};

const struct kh_applet kh__applet_dec = {"dec", KH_APPLET_INS(dec_ins), NULL, kh__ladder_wipe};
