/*
 * A host's side of a key card (include/keyhole/keycardhost.h): one command each, its answer read
 * and checked for shape. The card is the one to trust about keys; the host only relays.
 */
#include <string.h>

#include "keyhole/apdu.h"
#include "keyhole/buf.h"
#include "keyhole/host.h"
#include "keyhole/keycardhost.h"

#define BIT(tag) (1u << (tag))

struct answer {
	uint8_t resp[KH_APDU_MAX_RESP];
	struct kh_tlv t[KH_KC_T_MAX + 1];
};

static kh_err card_cmd(struct kh_transport *tr, uint8_t ins, const uint8_t *d, size_t n, struct answer *a,
		       uint32_t need)
{
	size_t dl = 0;
	uint16_t sw = 0;
	kh_err r;

	if (n > KH_APDU_MAX_DATA)
		return KH_ERR_TOO_LARGE;
	if ((r = kh_host_apdu(tr, ins, 0, d, n, a->resp, sizeof a->resp, &dl, &sw)) != KH_OK)
		return r;
	memset(a->t, 0, sizeof a->t);
	return kh_tlv_take(a->resp, dl, a->t, KH_KC_T_MAX, need);
}

static kh_err fixed(const struct kh_tlv *t, uint8_t *out, size_t len)
{
	if (t->len != len)
		return KH_ERR_FORMAT;
	memcpy(out, t->v, len);
	return KH_OK;
}

static void answer_wipe(struct answer *a)
{
	kh_wipe(a, sizeof *a);
}

kh_err kh_keycard_enrol(struct kh_transport *tr, const uint8_t *cert, size_t certlen,
			const uint8_t enrolkey[static KH_KC_ENROLKEY_LEN], uint64_t *serial,
			uint8_t sealed[static KH_KC_SEALED_SEED_LEN])
{
	uint8_t d[3 + KH_CERT_MAX + 3 + KH_KC_ENROLKEY_LEN];
	struct answer a;
	struct kh_wr w;
	kh_err r;

	if (certlen > KH_CERT_MAX)
		return KH_ERR_TOO_LARGE;
	kh_wr_init(&w, d, sizeof d);
	kh_tlv_put(&w, KH_KC_T_CERT, cert, certlen);
	kh_tlv_put(&w, KH_KC_T_ENROLKEY, enrolkey, KH_KC_ENROLKEY_LEN);
	if ((r = w.err) == KH_OK &&
	    (r = card_cmd(tr, KH_INS_KC_ENROL, d, w.len, &a, BIT(KH_KC_T_SERIAL) | BIT(KH_KC_T_SEALED))) == KH_OK &&
	    (r = kh_tlv_u64(&a.t[KH_KC_T_SERIAL], serial)) == KH_OK)
		r = fixed(&a.t[KH_KC_T_SEALED], sealed, KH_KC_SEALED_SEED_LEN);
	return r;
}

kh_err kh_keycard_send(struct kh_transport *tr, uint64_t *serial, uint64_t *index, uint8_t key[static 32])
{
	struct answer a;
	kh_err r;

	if ((r = card_cmd(tr, KH_INS_KC_SEND, NULL, 0, &a, BIT(KH_KC_T_SERIAL) | BIT(KH_KC_T_INDEX) | BIT(KH_KC_T_KEY))) ==
		    KH_OK &&
	    (r = kh_tlv_u64(&a.t[KH_KC_T_SERIAL], serial)) == KH_OK && (r = kh_tlv_u64(&a.t[KH_KC_T_INDEX], index)) == KH_OK)
		r = fixed(&a.t[KH_KC_T_KEY], key, 32);
	answer_wipe(&a);
	return r;
}

kh_err kh_keycard_ack(struct kh_transport *tr, const uint8_t *ack, size_t n)
{
	uint8_t d[3 + KH_KC_ACK_LEN];
	struct answer a;
	struct kh_wr w;
	kh_err r;

	if (n != KH_KC_ACK_LEN)
		return KH_ERR_FORMAT;
	kh_wr_init(&w, d, sizeof d);
	kh_tlv_put(&w, KH_KC_T_ACK, ack, n);
	if ((r = w.err) == KH_OK)
		r = card_cmd(tr, KH_INS_KC_ACK, d, w.len, &a, 0);
	return r;
}

kh_err kh_keycard_open(struct kh_transport *tr, const uint8_t hdr[static KH_KC_HEADER_LEN], const uint8_t *chunk0,
		       size_t chunk0len, uint64_t *index, uint8_t key[static 32])
{
	uint8_t d[3 + KH_KC_HEADER_LEN + 3 + KH_KC_CHUNK0_MAX];
	struct answer a;
	struct kh_wr w;
	kh_err r;

	if (chunk0len > KH_KC_CHUNK0_MAX)
		return KH_ERR_FORMAT;
	kh_wr_init(&w, d, sizeof d);
	kh_tlv_put(&w, KH_KC_T_HEADER, hdr, KH_KC_HEADER_LEN);
	kh_tlv_put(&w, KH_KC_T_CHUNK, chunk0, chunk0len);
	if ((r = w.err) == KH_OK &&
	    (r = card_cmd(tr, KH_INS_KC_OPEN, d, w.len, &a, BIT(KH_KC_T_INDEX) | BIT(KH_KC_T_KEY))) == KH_OK &&
	    (r = kh_tlv_u64(&a.t[KH_KC_T_INDEX], index)) == KH_OK)
		r = fixed(&a.t[KH_KC_T_KEY], key, 32);
	answer_wipe(&a);
	return r;
}

kh_err kh_keycard_hello(struct kh_transport *tr, const uint8_t nonce[static KH_KC_NONCE_LEN], uint64_t *serial,
			uint8_t sig[static KH_ED25519_SIG_LEN])
{
	uint8_t d[3 + KH_KC_NONCE_LEN];
	struct answer a;
	struct kh_wr w;
	kh_err r;

	kh_wr_init(&w, d, sizeof d);
	kh_tlv_put(&w, KH_KC_T_NONCE, nonce, KH_KC_NONCE_LEN);
	if ((r = w.err) == KH_OK &&
	    (r = card_cmd(tr, KH_INS_KC_HELLO, d, w.len, &a, BIT(KH_KC_T_SERIAL) | BIT(KH_KC_T_SIG))) == KH_OK &&
	    (r = kh_tlv_u64(&a.t[KH_KC_T_SERIAL], serial)) == KH_OK)
		r = fixed(&a.t[KH_KC_T_SIG], sig, KH_ED25519_SIG_LEN);
	return r;
}

kh_err kh_keycard_status(struct kh_transport *tr, struct kh_keycard_status *st)
{
	struct answer a;
	kh_err r;

	memset(st, 0, sizeof *st);
	if ((r = card_cmd(tr, KH_INS_KC_STATUS, NULL, 0, &a, BIT(KH_KC_T_SERIAL) | BIT(KH_KC_T_CENTER))) != KH_OK ||
	    (r = kh_tlv_u64(&a.t[KH_KC_T_SERIAL], &st->serial)) != KH_OK ||
	    (r = kh_tlv_u32(&a.t[KH_KC_T_CENTER], &st->center)) != KH_OK)
		return r;
	if (!st->center)
		return KH_OK;
	if (!a.t[KH_KC_T_SEND].v || !a.t[KH_KC_T_ACKED].v || !a.t[KH_KC_T_RECV].v)
		return KH_ERR_FORMAT;
	if ((r = kh_tlv_u64(&a.t[KH_KC_T_SEND], &st->send)) == KH_OK &&
	    (r = kh_tlv_u64(&a.t[KH_KC_T_ACKED], &st->acked)) == KH_OK)
		r = kh_tlv_u64(&a.t[KH_KC_T_RECV], &st->recv);
	return r;
}
