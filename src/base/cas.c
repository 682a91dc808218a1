/*
 * ECM and EMM codec (include/keyhole/cas.h, the protocol design "Pay-TV: ECM and EMM"). Shared by the
 * headend and EMM maker that seal, the card that opens, and the decoder that reads clear headers.
 * Every length comes from the section itself and is checked against what was given before use;
 * plaintext is wiped on every path.
 */
#include <string.h>

#include "keyhole/cas.h"
#include "keyhole/crypto.h"
#include "keyhole/scramble.h"

#define SEC_HDR 3
#define BODY_HDR (KH_ECM_HDR_LEN - SEC_HDR) /* same for EMM */
#define PLAIN_MAX (KH_EMM_MAX - KH_EMM_HDR_LEN - KH_CAS_TAG_LEN)

static const char label_ecm_sig[] = "keyhole ecm sig v2";
static const char label_emm_sig[] = "keyhole emm sig v2";
static const char label_group[] = "keyhole emm group v1";
static const char label_all[] = "keyhole emm all v1";
static const char label_kp[] = "keyhole card personal v1";
static const char label_ku[] = "keyhole card uplink v1";

/* Control-word length of a scrambling algorithm (scramble.h's enum; kh_ts is not linked here). */
static size_t cw_len_of(uint8_t alg)
{
	switch (alg) {
	case KH_SCR_CSA2: return KH_SCR_CSA_CW_LEN;
	case KH_SCR_CISSA:
	case KH_SCR_IDSA: return KH_SCR_AES_KEY_LEN;
	default: return 0;
	}
}

/* ---- framing shared by both messages ---- */

/* Section header for a body of n bytes: short form, private_indicator set, reserved bits set. */
static void put_sec_hdr(uint8_t *p, uint8_t table_id, size_t body)
{
	p[0] = table_id;
	p[1] = (uint8_t)(0x70 | ((body >> 8) & 0x0F));
	p[2] = (uint8_t)body;
}

/*
 * Framing of a whole section of at most max bytes: the declared length must be exactly what was
 * given, the syntax indicator clear (no CRC: the tag covers everything), the version the one
 * this kind of section must have, and the body long enough for its header, tag and (version 2)
 * the signer's serial and signature.
 */
static kh_err check_frame(const uint8_t *sec, size_t n, size_t max, uint8_t version)
{
	size_t declared;

	if (!sec || n < SEC_HDR)
		return KH_ERR_TRUNCATED;
	declared = SEC_HDR + (((size_t)sec[1] & 0x0F) << 8 | sec[2]);
	if (declared > max)
		return KH_ERR_TOO_LARGE;
	if (n < declared)
		return KH_ERR_TRUNCATED;
	if (n > declared)
		return KH_ERR_TRAILING;
	if (sec[1] & 0x80)
		return KH_ERR_FORMAT;
	if (n < SEC_HDR + 1)
		return KH_ERR_TRUNCATED;
	if (sec[SEC_HDR] != version)
		return KH_ERR_VERSION;
	if (n < KH_ECM_HDR_LEN + KH_CAS_TAG_LEN + (version == KH_CAS_VERSION_SIGNED ? KH_CAS_TRAILER_LEN : 0))
		return KH_ERR_TRUNCATED;
	return KH_OK;
}

/* Bytes after the tag: the signer's serial and signature of a version-2 section. */
static size_t trailer_of(const uint8_t *sec)
{
	return sec[SEC_HDR] == KH_CAS_VERSION_SIGNED ? KH_CAS_TRAILER_LEN : 0;
}

/* What a signer signs: label | the section up to its signature (at most KH_EMM_MAX bytes). */
#define SIG_MSG_MAX (sizeof label_ecm_sig + KH_EMM_MAX)
static size_t sig_msg(const char *label, size_t llen, const uint8_t *sec, size_t n, uint8_t msg[static SIG_MSG_MAX])
{
	memcpy(msg, label, llen);
	memcpy(msg + llen, sec, n - KH_CAS_SIG_LEN);
	return llen + n - KH_CAS_SIG_LEN;
}

/*
 * Seal pt after a 25-byte header already in out; the whole section is hdr | ct | tag, and with a
 * signer (version 2) also | u32 serial | signature over label | everything before it. The
 * section header already holds the final length when the AEAD takes it as associated data.
 */
static kh_err seal_body(const uint8_t key[static KH_CAS_KEY_LEN], const struct kh_cas_signer *sg,
			const char *label, size_t llen, uint8_t table_id, const uint8_t *pt, size_t ptlen,
			size_t max, uint8_t *out, size_t cap, size_t *len)
{
	size_t body = KH_ECM_HDR_LEN + ptlen + KH_CAS_TAG_LEN;
	size_t total = body + (sg ? KH_CAS_TRAILER_LEN : 0);
	kh_err r;

	if (total > max)
		return KH_ERR_TOO_LARGE;
	if (total > cap)
		return KH_ERR_BUF;
	put_sec_hdr(out, table_id, total - SEC_HDR);
	out[SEC_HDR] = sg ? KH_CAS_VERSION_SIGNED : KH_CAS_VERSION;
	if ((r = kh_random(out + KH_ECM_HDR_LEN - KH_CAS_NONCE_LEN, KH_CAS_NONCE_LEN)) != KH_OK)
		return r;
	if ((r = kh_aead_seal(key, out + KH_ECM_HDR_LEN - KH_CAS_NONCE_LEN, out, KH_ECM_HDR_LEN, pt, ptlen,
			      out + KH_ECM_HDR_LEN)) != KH_OK)
		return r;
	if (sg) {
		kh_put_be32(out + body, sg->serial);
		uint8_t msg[SIG_MSG_MAX];
		size_t m = sig_msg(label, llen, out, total, msg);
		r = kh_ed25519_sign(sg->sk, msg, m, out + total - KH_CAS_SIG_LEN);
		kh_wipe(msg, m);
		if (r != KH_OK) {
			kh_wipe(out, total);
			return r;
		}
	}
	*len = total;
	return KH_OK;
}

/* The ciphertext and tag lie between the 25-byte header and the trailer (if any). */
static kh_err open_body(const uint8_t key[static KH_CAS_KEY_LEN], const uint8_t *sec, size_t n, uint8_t *pt)
{
	return kh_aead_open(key, sec + KH_ECM_HDR_LEN - KH_CAS_NONCE_LEN, sec, KH_ECM_HDR_LEN, sec + KH_ECM_HDR_LEN,
			    n - KH_ECM_HDR_LEN - trailer_of(sec), pt) == KH_OK
		       ? KH_OK
		       : KH_ERR_AUTH;
}

static kh_err verify(const char *label, size_t llen, const uint8_t pk[static 32], const uint8_t *sec, size_t n)
{
	uint8_t msg[SIG_MSG_MAX];
	size_t m = sig_msg(label, llen, sec, n, msg);

	return kh_ed25519_verify(pk, msg, m, sec + n - KH_CAS_SIG_LEN) == KH_OK ? KH_OK : KH_ERR_SIGNATURE;
}

/* ---- ECM ---- */

kh_err kh_ecm_seal(const uint8_t key[static KH_CAS_KEY_LEN], const struct kh_cas_signer *sg, const struct kh_ecm *e,
		   uint8_t *out, size_t cap, size_t *len)
{
	uint8_t pt[KH_ECM_MAX];
	uint8_t ev[8];
	struct kh_wr w;
	kh_err r;

	if (!e || !sg || !out || !len)
		return KH_ERR_INVAL;
	if ((e->h.table_id != KH_ECM_TID_EVEN && e->h.table_id != KH_ECM_TID_ODD) ||
	    (e->cw_len != 8 && e->cw_len != 16) || e->cw_len != cw_len_of(e->alg) ||
	    (e->access != KH_ECM_PRODUCT && e->access != KH_ECM_EVENT) || (e->flags & ~KH_ECM_F_LADDER))
		return KH_ERR_INVAL;
	kh_wr_init(&w, pt, sizeof pt);
	kh_tlv_put(&w, KH_ECM_T_CW_EVEN, e->cw_even, e->cw_len);
	kh_tlv_put(&w, KH_ECM_T_CW_ODD, e->cw_odd, e->cw_len);
	kh_tlv_put_u8(&w, KH_ECM_T_ALG, e->alg);
	if (e->access == KH_ECM_PRODUCT) {
		kh_tlv_put_u32(&w, KH_ECM_T_PRODUCT, e->product);
	} else {
		kh_put_be32(ev, e->event);
		kh_put_be32(ev + 4, e->price);
		kh_tlv_put(&w, KH_ECM_T_EVENT, ev, sizeof ev);
	}
	kh_tlv_put_u64(&w, KH_ECM_T_TIME, e->time);
	if (e->revoked_version)
		kh_tlv_put_u32(&w, KH_ECM_T_REVOKED, e->revoked_version);
	if (e->flags)
		kh_tlv_put_u8(&w, KH_ECM_T_FLAGS, e->flags);
	if ((r = w.err) != KH_OK)
		goto out;
	if (KH_ECM_HDR_LEN > cap) {
		r = KH_ERR_BUF;
		goto out;
	}
	out[SEC_HDR + 1] = e->h.key_id;
	kh_put_be32(out + SEC_HDR + 2, e->h.key_version);
	kh_put_be32(out + SEC_HDR + 6, e->h.cp);
	r = seal_body(key, sg, label_ecm_sig, sizeof label_ecm_sig - 1, e->h.table_id, pt, w.len, KH_ECM_MAX, out,
		      cap, len);
out:
	kh_wipe(pt, sizeof pt);
	return r;
}

kh_err kh_ecm_peek(const uint8_t *sec, size_t n, struct kh_ecm_hdr *h)
{
	kh_err r;

	if ((r = check_frame(sec, n, KH_ECM_MAX, KH_CAS_VERSION_SIGNED)) != KH_OK)
		return r;
	if (sec[0] != KH_ECM_TID_EVEN && sec[0] != KH_ECM_TID_ODD)
		return KH_ERR_FORMAT;
	h->table_id = sec[0];
	h->key_id = sec[SEC_HDR + 1];
	h->key_version = kh_get_be32(sec + SEC_HDR + 2);
	h->cp = kh_get_be32(sec + SEC_HDR + 6);
	h->signer = kh_get_be32(sec + n - KH_CAS_TRAILER_LEN);
	return KH_OK;
}

kh_err kh_ecm_verify(const uint8_t pk[static 32], const uint8_t *sec, size_t n)
{
	struct kh_ecm_hdr h;
	kh_err r;

	if ((r = kh_ecm_peek(sec, n, &h)) != KH_OK)
		return r;
	return verify(label_ecm_sig, sizeof label_ecm_sig - 1, pk, sec, n);
}

static kh_err ecm_fields(const uint8_t *pt, size_t n, struct kh_ecm *e)
{
	struct kh_rd rd;
	struct kh_tlv t;
	unsigned seen = 0;
	size_t even_len = 0, odd_len = 0;
	int k;
	kh_err r = KH_OK;

	kh_rd_init(&rd, pt, n);
	while (r == KH_OK && (k = kh_tlv_next(&rd, &t)) == 1) {
		if (t.tag < KH_ECM_T_CW_EVEN || t.tag > KH_ECM_T_FLAGS)
			return KH_ERR_TLV_TAG;
		if (seen & (1u << t.tag))
			return KH_ERR_FORMAT;
		seen |= 1u << t.tag;
		switch (t.tag) {
		case KH_ECM_T_CW_EVEN:
		case KH_ECM_T_CW_ODD:
			if (t.len != 8 && t.len != 16)
				return KH_ERR_FORMAT;
			memcpy(t.tag == KH_ECM_T_CW_EVEN ? e->cw_even : e->cw_odd, t.v, t.len);
			*(t.tag == KH_ECM_T_CW_EVEN ? &even_len : &odd_len) = t.len;
			break;
		case KH_ECM_T_ALG: r = kh_tlv_u8(&t, &e->alg); break;
		case KH_ECM_T_PRODUCT:
			e->access = KH_ECM_PRODUCT;
			r = kh_tlv_u32(&t, &e->product);
			break;
		case KH_ECM_T_EVENT:
			if (t.len != 8)
				return KH_ERR_FORMAT;
			e->access = KH_ECM_EVENT;
			e->event = kh_get_be32(t.v);
			e->price = kh_get_be32(t.v + 4);
			break;
		case KH_ECM_T_TIME: r = kh_tlv_u64(&t, &e->time); break;
		case KH_ECM_T_REVOKED:
			if ((r = kh_tlv_u32(&t, &e->revoked_version)) == KH_OK && e->revoked_version == 0)
				r = KH_ERR_FORMAT;
			break;
		case KH_ECM_T_FLAGS:
			if ((r = kh_tlv_u8(&t, &e->flags)) == KH_OK && (e->flags == 0 || (e->flags & ~KH_ECM_F_LADDER)))
				r = KH_ERR_FORMAT;
			break;
		}
	}
	if (r != KH_OK)
		return r;
	if (k < 0)
		return k;
	/* Everything present, one access kind, both CWs of the algorithm's length. */
	if ((seen & 0x4E) != 0x4E || ((seen >> KH_ECM_T_PRODUCT) & 1) == ((seen >> KH_ECM_T_EVENT) & 1) ||
	    even_len != odd_len || even_len != cw_len_of(e->alg))
		return KH_ERR_FORMAT;
	e->cw_len = (uint8_t)even_len;
	return KH_OK;
}

kh_err kh_ecm_open(const uint8_t key[static KH_CAS_KEY_LEN], const uint8_t *sec, size_t n, struct kh_ecm *e)
{
	uint8_t pt[KH_ECM_MAX];
	struct kh_ecm tmp;
	kh_err r;

	memset(&tmp, 0, sizeof tmp);
	if ((r = kh_ecm_peek(sec, n, &tmp.h)) != KH_OK)
		return r;
	if ((r = open_body(key, sec, n, pt)) != KH_OK)
		goto out;
	if ((r = ecm_fields(pt, n - KH_ECM_HDR_LEN - KH_CAS_TAG_LEN - KH_CAS_TRAILER_LEN, &tmp)) != KH_OK)
		goto out;
	*e = tmp;
out:
	kh_wipe(pt, sizeof pt);
	kh_wipe(&tmp, sizeof tmp);
	return r;
}

/* ---- EMM ---- */

static const uint8_t emm_tid[3] = {KH_EMM_TID_UNIQUE, KH_EMM_TID_GROUP, KH_EMM_TID_ALL};

static kh_err emm_seal(const uint8_t key[static KH_CAS_KEY_LEN], const struct kh_cas_signer *sg,
		       const struct kh_emm_hdr *h, const uint8_t *cmds, size_t len, uint8_t *out, size_t cap,
		       size_t *outlen)
{
	if (!out || !outlen || !cmds || len == 0 || (h->addr_type == KH_EMM_ALL && h->addr != 0))
		return KH_ERR_INVAL;
	if (len > (sg ? KH_EMM_SIGNED_CMDS_MAX : KH_EMM_CMDS_MAX))
		return KH_ERR_TOO_LARGE;
	if (KH_EMM_HDR_LEN > cap)
		return KH_ERR_BUF;
	out[SEC_HDR + 1] = h->addr_type;
	kh_put_be32(out + SEC_HDR + 2, h->addr);
	kh_put_be32(out + SEC_HDR + 6, h->seq);
	return seal_body(key, sg, label_emm_sig, sizeof label_emm_sig - 1, emm_tid[h->addr_type], cmds, len,
			 KH_EMM_MAX, out, cap, outlen);
}

kh_err kh_emm_seal(const uint8_t key[static KH_CAS_KEY_LEN], const struct kh_emm_hdr *h, const uint8_t *cmds,
		   size_t len, uint8_t *out, size_t cap, size_t *outlen)
{
	if (!h || h->addr_type != KH_EMM_UNIQUE)
		return KH_ERR_INVAL;
	return emm_seal(key, NULL, h, cmds, len, out, cap, outlen);
}

kh_err kh_emm_seal_signed(const uint8_t key[static KH_CAS_KEY_LEN], const struct kh_cas_signer *sg,
			  const struct kh_emm_hdr *h, const uint8_t *cmds, size_t len, uint8_t *out, size_t cap,
			  size_t *outlen)
{
	if (!h || !sg || (h->addr_type != KH_EMM_GROUP && h->addr_type != KH_EMM_ALL))
		return KH_ERR_INVAL;
	return emm_seal(key, sg, h, cmds, len, out, cap, outlen);
}

kh_err kh_emm_peek(const uint8_t *sec, size_t n, struct kh_emm_hdr *h)
{
	kh_err r;
	uint8_t type;

	if (!sec || n < KH_EMM_HDR_LEN)
		return check_frame(sec, n, KH_EMM_MAX, KH_CAS_VERSION);
	type = sec[SEC_HDR + 1];
	/* a card's own EMM is version 1 (Kp vouches for it); group and all are signed, version 2 */
	if ((r = check_frame(sec, n, KH_EMM_MAX, type == KH_EMM_UNIQUE ? KH_CAS_VERSION : KH_CAS_VERSION_SIGNED)) !=
	    KH_OK)
		return r;
	if (type > KH_EMM_ALL || sec[0] != emm_tid[type])
		return KH_ERR_FORMAT;
	if (type == KH_EMM_ALL && kh_get_be32(sec + SEC_HDR + 2) != 0)
		return KH_ERR_FORMAT;
	/* written only once every check has passed */
	h->table_id = sec[0];
	h->addr_type = type;
	h->addr = kh_get_be32(sec + SEC_HDR + 2);
	h->seq = kh_get_be32(sec + SEC_HDR + 6);
	h->signer = type == KH_EMM_UNIQUE ? 0 : kh_get_be32(sec + n - KH_CAS_TRAILER_LEN);
	return KH_OK;
}

kh_err kh_emm_verify(const uint8_t pk[static 32], const uint8_t *sec, size_t n)
{
	struct kh_emm_hdr h;
	kh_err r;

	if ((r = kh_emm_peek(sec, n, &h)) != KH_OK)
		return r;
	if (h.addr_type == KH_EMM_UNIQUE)
		return KH_ERR_SIGNATURE;
	return verify(label_emm_sig, sizeof label_emm_sig - 1, pk, sec, n);
}

kh_err kh_emm_open(const uint8_t key[static KH_CAS_KEY_LEN], const uint8_t *sec, size_t n, uint8_t *cmds,
		   size_t cap, size_t *cmdlen)
{
	uint8_t pt[PLAIN_MAX];
	struct kh_emm_hdr h;
	size_t len;
	kh_err r;

	if ((r = kh_emm_peek(sec, n, &h)) != KH_OK)
		return r;
	len = n - KH_EMM_HDR_LEN - KH_CAS_TAG_LEN - trailer_of(sec);
	if (len > cap)
		return KH_ERR_BUF;
	if ((r = open_body(key, sec, n, pt)) != KH_OK)
		goto out;
	memcpy(cmds, pt, len);
	*cmdlen = len;
out:
	kh_wipe(pt, sizeof pt);
	return r;
}

kh_err kh_emm_put_set_key(struct kh_wr *w, uint8_t key_id, uint32_t key_version,
			  const uint8_t key[static KH_CAS_KEY_LEN])
{
	uint8_t v[1 + 4 + KH_CAS_KEY_LEN];
	kh_err r;

	v[0] = key_id;
	kh_put_be32(v + 1, key_version);
	memcpy(v + 5, key, KH_CAS_KEY_LEN);
	r = kh_tlv_put(w, KH_EMM_SET_KEY, v, sizeof v);
	kh_wipe(v, sizeof v);
	return r;
}

kh_err kh_emm_put_entitle(struct kh_wr *w, uint32_t product, uint64_t start, uint64_t end)
{
	uint8_t v[20];

	kh_put_be32(v, product);
	kh_put_be64(v + 4, start);
	kh_put_be64(v + 12, end);
	return kh_tlv_put(w, KH_EMM_ENTITLE, v, sizeof v);
}

kh_err kh_emm_put_revoke(struct kh_wr *w, uint32_t product)
{
	return kh_tlv_put_u32(w, KH_EMM_REVOKE, product);
}

kh_err kh_emm_put_add_credit(struct kh_wr *w, uint32_t amount, uint32_t reload_id)
{
	uint8_t v[8];

	kh_put_be32(v, amount);
	kh_put_be32(v + 4, reload_id);
	return kh_tlv_put(w, KH_EMM_ADD_CREDIT, v, sizeof v);
}

kh_err kh_emm_put_auth_export(struct kh_wr *w, int on)
{
	return kh_tlv_put_u8(w, KH_EMM_AUTH_EXPORT, on ? 1 : 0);
}

kh_err kh_emm_put_req_export(struct kh_wr *w)
{
	return kh_tlv_put(w, KH_EMM_REQ_EXPORT, NULL, 0);
}

kh_err kh_emm_put_set_group(struct kh_wr *w, uint32_t group, const uint8_t key[static KH_CAS_KEY_LEN], uint32_t seq)
{
	uint8_t v[4 + KH_CAS_KEY_LEN + 4];
	kh_err r;

	kh_put_be32(v, group);
	memcpy(v + 4, key, KH_CAS_KEY_LEN);
	kh_put_be32(v + 4 + KH_CAS_KEY_LEN, seq);
	r = kh_tlv_put(w, KH_EMM_SET_GROUP, v, sizeof v);
	kh_wipe(v, sizeof v);
	return r;
}

kh_err kh_emm_put_set_all_key(struct kh_wr *w, const uint8_t key[static KH_CAS_KEY_LEN])
{
	return kh_tlv_put(w, KH_EMM_SET_ALL_KEY, key, KH_CAS_KEY_LEN);
}

kh_err kh_emm_put_ack_usage(struct kh_wr *w, uint32_t block_seq)
{
	return kh_tlv_put_u32(w, KH_EMM_ACK_USAGE, block_seq);
}

kh_err kh_emm_put_set_signer(struct kh_wr *w, const uint8_t *cert, size_t len)
{
	return kh_tlv_put(w, KH_EMM_SET_SIGNER, cert, len);
}

kh_err kh_emm_put_revoked(struct kh_wr *w, uint32_t version, const uint32_t *uas, size_t n)
{
	uint8_t v[4 + 4 * 32];

	if (n > 32)
		return KH_ERR_TOO_LARGE;
	kh_put_be32(v, version);
	for (size_t i = 0; i < n; i++)
		kh_put_be32(v + 4 + 4 * i, uas[i]);
	return kh_tlv_put(w, KH_EMM_REVOKED, v, 4 + 4 * n);
}

/* ---- diversified keys ---- */

static kh_err diversify(const uint8_t master[static 32], const char *label, size_t llen, const uint32_t *id,
			uint8_t out[static 32])
{
	uint8_t info[64];

	memcpy(info, label, llen);
	if (id)
		kh_put_be32(info + llen, *id);
	return kh_hkdf(master, 32, NULL, 0, info, llen + (id ? 4 : 0), out, 32);
}

kh_err kh_cas_card_kp(const uint8_t master[static 32], uint32_t ua, uint8_t kp[static 32])
{
	return diversify(master, label_kp, sizeof label_kp - 1, &ua, kp);
}

kh_err kh_cas_card_ku(const uint8_t master[static 32], uint32_t ua, uint8_t ku[static 32])
{
	return diversify(master, label_ku, sizeof label_ku - 1, &ua, ku);
}

kh_err kh_cas_group_key(const uint8_t master[static 32], uint32_t group, uint8_t key[static 32])
{
	return diversify(master, label_group, sizeof label_group - 1, &group, key);
}

kh_err kh_cas_all_key(const uint8_t master[static 32], uint8_t key[static 32])
{
	return diversify(master, label_all, sizeof label_all - 1, NULL, key);
}

/* ---- the card's answers, read by hosts (unknown tags skipped) ---- */

kh_err kh_cw_answer_parse(const uint8_t *d, size_t n, struct kh_cw_answer *out)
{
	struct kh_cw_answer a;
	struct kh_rd rd;
	struct kh_tlv t;
	unsigned seen = 0;
	size_t elen = 0, olen = 0;
	int k;
	kh_err r = KH_OK;

	memset(&a, 0, sizeof a);
	kh_rd_init(&rd, d, n);
	while (r == KH_OK && (k = kh_tlv_next(&rd, &t)) == 1) {
		if (t.tag >= KH_CW_T_ALG && t.tag <= KH_CW_T_LADDER_ONLY) {
			if (seen & (1u << t.tag)) {
				r = KH_ERR_FORMAT; /* each field once */
				break;
			}
			seen |= 1u << t.tag;
		}
		switch (t.tag) {
		case KH_CW_T_ALG: r = kh_tlv_u8(&t, &a.alg); break;
		case KH_CW_T_EVEN:
		case KH_CW_T_ODD:
			if (t.len != 8 && t.len != 16) {
				r = KH_ERR_FORMAT;
				break;
			}
			memcpy(t.tag == KH_CW_T_EVEN ? a.even : a.odd, t.v, t.len);
			*(t.tag == KH_CW_T_EVEN ? &elen : &olen) = t.len;
			break;
		case KH_CW_T_CP: r = kh_tlv_u32(&t, &a.cp); break;
		case KH_CW_T_LADDER_ONLY:
			if ((r = kh_tlv_u8(&t, &a.ladder_only)) == KH_OK && a.ladder_only != 1)
				r = KH_ERR_FORMAT;
			break;
		case KH_CW_T_LADDER:
			if (a.sealed_len || t.len < KH_NONCE_LEN + 1 + KH_TAG_LEN || t.len > sizeof a.sealed) {
				r = KH_ERR_FORMAT;
				break;
			}
			memcpy(a.sealed, t.v, t.len);
			a.sealed_len = (uint8_t)t.len;
			break;
		default: break;
		}
	}
	if (r == KH_OK && k < 0)
		r = k;
	if (r == KH_OK && a.sealed_len) {
		/* sealed: alg, cp and the sealed pair, and no clear CW beside it */
		if ((seen & 0x1E) != 0x12 || !cw_len_of(a.alg))
			r = KH_ERR_FORMAT;
	} else if (r == KH_OK && ((seen & 0x1E) != 0x1E || elen != olen || elen != cw_len_of(a.alg))) {
		r = KH_ERR_FORMAT;
	}
	if (r == KH_OK) {
		a.cw_len = (uint8_t)elen;
		*out = a;
	}
	kh_wipe(&a, sizeof a);
	return r;
}

static void ladder_aad(const struct kh_cw_answer *a, uint8_t aad[static sizeof KH_LADDER_LABEL - 1 + 5])
{
	size_t n = sizeof KH_LADDER_LABEL - 1;

	memcpy(aad, KH_LADDER_LABEL, n);
	aad[n] = a->alg;
	kh_put_be32(aad + n + 1, a->cp);
}

kh_err kh_cw_ladder_seal(const uint8_t key[static 32], const struct kh_cw_answer *a, struct kh_wr *out)
{
	uint8_t aad[sizeof KH_LADDER_LABEL - 1 + 5], pt[1 + 2 * KH_CAS_CW_MAX], sealed[KH_LADDER_SEALED_MAX];
	size_t n = 1 + 2u * a->cw_len;
	kh_err r;

	if (!a->cw_len || a->cw_len != cw_len_of(a->alg))
		return KH_ERR_INVAL;
	ladder_aad(a, aad);
	pt[0] = a->cw_len;
	memcpy(pt + 1, a->even, a->cw_len);
	memcpy(pt + 1 + a->cw_len, a->odd, a->cw_len);
	if ((r = kh_random(sealed, KH_NONCE_LEN)) != KH_OK ||
	    (r = kh_aead_seal(key, sealed, aad, sizeof aad, pt, n, sealed + KH_NONCE_LEN)) != KH_OK)
		goto out;
	kh_tlv_put_u8(out, KH_CW_T_ALG, a->alg);
	kh_tlv_put_u32(out, KH_CW_T_CP, a->cp);
	r = kh_tlv_put(out, KH_CW_T_LADDER, sealed, KH_NONCE_LEN + n + KH_TAG_LEN);
out:
	kh_wipe(pt, sizeof pt);
	return r;
}

kh_err kh_cw_ladder_open(const uint8_t key[static 32], struct kh_cw_answer *a)
{
	uint8_t aad[sizeof KH_LADDER_LABEL - 1 + 5], pt[sizeof a->sealed];
	size_t n;
	kh_err r = KH_OK;

	if (a->sealed_len < KH_NONCE_LEN + 1 + KH_TAG_LEN || a->sealed_len > sizeof a->sealed)
		return KH_ERR_FORMAT;
	n = a->sealed_len - KH_NONCE_LEN - KH_TAG_LEN;
	ladder_aad(a, aad);
	if (kh_aead_open(key, a->sealed, aad, sizeof aad, a->sealed + KH_NONCE_LEN, a->sealed_len - KH_NONCE_LEN,
			 pt) != KH_OK) {
		r = KH_ERR_LADDER;
		goto out;
	}
	if (pt[0] != cw_len_of(a->alg) || n != 1u + 2u * pt[0]) {
		r = KH_ERR_FORMAT;
		goto out;
	}
	a->cw_len = pt[0];
	memcpy(a->even, pt + 1, a->cw_len);
	memcpy(a->odd, pt + 1 + a->cw_len, a->cw_len);
out:
	kh_wipe(pt, sizeof pt);
	return r;
}

kh_err kh_ppv_offer_parse(const uint8_t *d, size_t n, struct kh_ppv_offer *out)
{
	struct kh_ppv_offer o = {0};
	struct kh_rd rd;
	struct kh_tlv t;
	unsigned seen = 0;
	int k;
	kh_err r = KH_OK;

	kh_rd_init(&rd, d, n);
	while (r == KH_OK && (k = kh_tlv_next(&rd, &t)) == 1) {
		switch (t.tag) {
		case KH_OFFER_T_EVENT: r = kh_tlv_u32(&t, &o.event); break;
		case KH_OFFER_T_PRICE: r = kh_tlv_u32(&t, &o.price); break;
		case KH_OFFER_T_CREDIT: r = kh_tlv_u32(&t, &o.credit); break;
		default: continue;
		}
		seen |= 1u << t.tag;
	}
	if (r != KH_OK)
		return r;
	if (k < 0)
		return k;
	if (seen != 0x0E)
		return KH_ERR_FORMAT;
	*out = o;
	return KH_OK;
}

/* The three sequence tags follow enum kh_emm_addr. */
_Static_assert(KH_CAS_STATUS_T_SEQ_GROUP - KH_CAS_STATUS_T_SEQ_UNIQUE == KH_EMM_GROUP &&
		       KH_CAS_STATUS_T_SEQ_ALL - KH_CAS_STATUS_T_SEQ_UNIQUE == KH_EMM_ALL,
	       "CAS STATUS sequence tags out of step with enum kh_emm_addr");

kh_err kh_cas_status_parse(const uint8_t *d, size_t n, struct kh_cas_status *out)
{
	struct kh_cas_status s;
	struct kh_rd rd;
	struct kh_tlv t;
	size_t npl = 0;
	int k;
	kh_err r = KH_OK;

	memset(&s, 0, sizeof s);
	kh_rd_init(&rd, d, n);
	while (r == KH_OK && (k = kh_tlv_next(&rd, &t)) == 1) {
		switch (t.tag) {
		case KH_CAS_STATUS_T_CREDIT: r = kh_tlv_u32(&t, &s.credit); break;
		case KH_CAS_STATUS_T_GROUP:
			s.has_group = 1;
			r = kh_tlv_u32(&t, &s.group);
			break;
		case KH_CAS_STATUS_T_SEQ_UNIQUE:
		case KH_CAS_STATUS_T_SEQ_GROUP:
		case KH_CAS_STATUS_T_SEQ_ALL: r = kh_tlv_u32(&t, &s.seq[t.tag - KH_CAS_STATUS_T_SEQ_UNIQUE]); break;
		case KH_CAS_STATUS_T_EXPORT: r = kh_tlv_u8(&t, &s.export_ok); break;
		case KH_CAS_STATUS_T_NLOG:
			if (t.len != 2) {
				r = KH_ERR_FORMAT;
				break;
			}
			s.npurchases = (uint16_t)(t.v[0] << 8 | t.v[1]);
			break;
		case KH_CAS_STATUS_T_N_ECM: r = kh_tlv_u32(&t, &s.n_ecm); break;
		case KH_CAS_STATUS_T_N_CW: r = kh_tlv_u32(&t, &s.n_cw); break;
		case KH_CAS_STATUS_T_N_REFUSED: r = kh_tlv_u32(&t, &s.n_refused); break;
		case KH_CAS_STATUS_T_N_EMM: r = kh_tlv_u32(&t, &s.n_emm); break;
		case KH_CAS_STATUS_T_RIGHT:
			if (t.len != 20 || s.nrights == KH_CAS_STATUS_MAX_RIGHTS) {
				r = KH_ERR_FORMAT;
				break;
			}
			s.rights[s.nrights].product = kh_get_be32(t.v);
			s.rights[s.nrights].start = kh_get_be64(t.v + 4);
			s.rights[s.nrights].end = kh_get_be64(t.v + 12);
			s.nrights++;
			break;
		case KH_CAS_STATUS_T_KEY:
			if (t.len != 5 || s.nkeys == KH_CAS_STATUS_MAX_KEYS) {
				r = KH_ERR_FORMAT;
				break;
			}
			s.keys[s.nkeys].id = t.v[0];
			s.keys[s.nkeys].version = kh_get_be32(t.v + 1);
			s.nkeys++;
			break;
		case KH_CAS_STATUS_T_PURCHASE:
			if (t.len != 16 || npl == KH_CAS_STATUS_MAX_PURCHASES) {
				r = KH_ERR_FORMAT;
				break;
			}
			s.purchases[npl].event = kh_get_be32(t.v);
			s.purchases[npl].price = kh_get_be32(t.v + 4);
			s.purchases[npl].time = kh_get_be64(t.v + 8);
			npl++;
			break;
		case KH_CAS_STATUS_T_RELOAD: r = kh_tlv_u32(&t, &s.last_reload); break;
		case KH_CAS_STATUS_T_SIGNER:
			if (t.len != 5 || s.nsigners == sizeof s.signers / sizeof s.signers[0]) {
				r = KH_ERR_FORMAT;
				break;
			}
			s.signers[s.nsigners].role = t.v[0];
			s.signers[s.nsigners].serial = kh_get_be32(t.v + 1);
			s.nsigners++;
			break;
		default: break;
		}
	}
	if (r != KH_OK)
		return r;
	if (k < 0)
		return k;
	*out = s;
	return KH_OK;
}
