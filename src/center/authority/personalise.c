/*
 * Personalisation station (the protocol design "Identities and personalisation"): the authority turns
 * a blank module into a card or CAM by talking to it in APDUs, as a card-issuing machine would.
 * Private keys are generated inside the module; the authority sees and certifies only the public
 * halves. The diversified keys Kp and Ku go in once, here, and are never sent again.
 */
#include <string.h>

#include "keyhole/apdu.h"
#include "keyhole/authority.h"
#include "keyhole/buf.h"
#include "keyhole/crypto.h"
#include "keyhole/transport.h"

static kh_err apdu(struct kh_transport *t, uint8_t ins, const uint8_t *data, size_t len, uint8_t *resp,
		   size_t cap, const uint8_t **d, size_t *dlen)
{
	uint8_t cmd[KH_APDU_MAX_CMD];
	struct kh_wr w;
	size_t rlen;
	uint16_t sw;
	kh_err r;

	kh_wr_init(&w, cmd, sizeof cmd);
	if ((r = kh_apdu_build(&w, KH_CLA, ins, 0, 0, data, len, 0)) != KH_OK)
		return r;
	r = kh_transport_xfer(t, cmd, w.len, resp, cap, &rlen);
	kh_wipe(cmd, sizeof cmd);
	if (r != KH_OK)
		return r;
	if ((r = kh_apdu_resp(resp, rlen, d, dlen, &sw)) != KH_OK)
		return r;
	return sw == KH_SW_OK ? KH_OK : kh_err_from_sw(sw);
}

/*
 * The module must be blank before the authority spends anything on it: a UA taken, diversified
 * keys sent, certificates written. KH_ERR_PERSONALISED when it says it is past blank (keys made
 * or personalised); KH_ERR_FORMAT when its answer names no lifecycle.
 */
static kh_err check_blank(struct kh_transport *t)
{
	uint8_t resp[KH_APDU_MAX_RESP];
	struct kh_rd rd;
	struct kh_tlv tv;
	const uint8_t *d;
	size_t dlen;
	uint8_t lc = 0;
	int k, seen = 0;
	kh_err r;

	if ((r = apdu(t, KH_INS_GET_INFO, NULL, 0, resp, sizeof resp, &d, &dlen)) != KH_OK)
		return r;
	kh_rd_init(&rd, d, dlen);
	while ((k = kh_tlv_next(&rd, &tv)) == 1)
		if (tv.tag == KH_INFO_T_LIFECYCLE) {
			if (kh_tlv_u8(&tv, &lc) != KH_OK)
				return KH_ERR_FORMAT;
			seen = 1;
		}
	if (k < 0 || !seen)
		return KH_ERR_FORMAT;
	return lc == 0 ? KH_OK : KH_ERR_PERSONALISED;
}

kh_err kh_authority_personalise(struct kh_authority *a, struct kh_transport *t, enum kh_role role, uint32_t ua,
				struct kh_issued *out)
{
	uint8_t buf[KH_APDU_MAX_DATA], resp[KH_APDU_MAX_RESP];
	uint8_t root[32], kp[32], ku[32], sign_pk[32], pair_pk[32];
	unsigned seen = 0;
	struct kh_wr w;
	struct kh_rd rd;
	struct kh_tlv tv;
	const uint8_t *d;
	size_t dlen;
	int k;
	kh_err r;

	memset(out, 0, sizeof *out);
	if (!kh_role_name(role))
		return KH_ERR_INVAL;
	/* A refusal here leaves the authority exactly as it was. */
	if ((r = check_blank(t)) != KH_OK)
		return r;
	/* The UA is marked spent before its keys leave: never handed out twice, even after a failure. */
	if (ua) {
		if ((r = kh_authority_ua_free(a, ua)) != KH_OK || (r = kh_authority_ua_spend(a, ua, role)) != KH_OK)
			return r;
	} else {
		do {
			if ((r = kh_authority_next_ua(a, &ua)) != KH_OK)
				return r;
			if ((r = kh_authority_ua_free(a, ua)) == KH_OK)
				r = kh_authority_ua_spend(a, ua, role);
		} while (r == KH_ERR_EXISTS);
		if (r != KH_OK)
			return r;
	}
	kh_authority_root_pk(a, root);
	if ((r = kh_authority_card_keys(a, ua, kp, ku)) != KH_OK)
		goto out;

	kh_wr_init(&w, buf, sizeof buf);
	kh_tlv_put_u8(&w, 1, (uint8_t)role);
	kh_tlv_put_u32(&w, 2, ua);
	kh_tlv_put(&w, 3, root, 32);
	kh_tlv_put(&w, 4, kp, 32);
	if ((r = kh_tlv_put(&w, 5, ku, 32)) != KH_OK)
		goto out;
	if ((r = apdu(t, KH_INS_PERSO_INIT, buf, w.len, resp, sizeof resp, &d, &dlen)) != KH_OK)
		goto out;
	kh_rd_init(&rd, d, dlen);
	while ((k = kh_tlv_next(&rd, &tv)) == 1) {
		if (tv.tag == 1 && kh_tlv_fixed(&tv, sign_pk, 32) == KH_OK)
			seen |= 1;
		else if (tv.tag == 2 && kh_tlv_fixed(&tv, pair_pk, 32) == KH_OK)
			seen |= 2;
	}
	if (k < 0 || seen != 3) {
		r = KH_ERR_FORMAT;
		goto out;
	}
	if ((r = kh_authority_issue(a, role, ua, KH_CERT_KEY_ED25519, sign_pk, "sign", out->sign_der,
				    sizeof out->sign_der, &out->sign_len)) != KH_OK ||
	    (r = kh_authority_issue(a, role, ua, KH_CERT_KEY_X25519, pair_pk, "pair", out->pair_der,
				    sizeof out->pair_der, &out->pair_len)) != KH_OK)
		goto out;

	kh_wr_init(&w, buf, sizeof buf);
	kh_tlv_put(&w, 1, out->sign_der, out->sign_len);
	if ((r = kh_tlv_put(&w, 2, out->pair_der, out->pair_len)) != KH_OK)
		goto out;
	if ((r = apdu(t, KH_INS_PERSO_CERTS, buf, w.len, resp, sizeof resp, &d, &dlen)) != KH_OK)
		goto out;
	out->role = role;
	out->ua = ua;
out:
	kh_wipe(kp, sizeof kp);
	kh_wipe(ku, sizeof ku);
	kh_wipe(buf, sizeof buf);
	return r;
}
