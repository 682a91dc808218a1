/*
 * The key card applet (seed 004, docs/protocols/keycenter.md): a user's card in the key center
 * relay. It holds two forward-only key chains (include/keyhole/keyseq.h), one for the messages it
 * sends and one for those it receives, from a seed it drew itself and showed only to its key
 * center, sealed to the center's enrolment key:
 *
 *   KC ENROL   the center's certificate (checked against our root, role keycenter) and its signed
 *              enrolment key: we draw the seed, seal it to that key, start both chains and forget
 *              the seed. Asked again by the same center, we answer the same sealed seed (a host
 *              that lost the answer); another center is refused: a card has one center.
 *   KC SEND    (i, key_i) of the send chain, the chain moved past i and stored before we answer:
 *              each key is given once. At most W keys beyond the last post the center
 *              acknowledged (KC ACK), so every key we give is one the center still accepts.
 *   KC ACK     the center's signed ack of a post: what lets KC SEND go on.
 *   KC OPEN    a delivery's header and chunk 0: key_j of the receive chain (j ahead of the chain
 *              within W) must open chunk 0 here, in the card, before we give key_j and move the
 *              chain past j. We move on proof that the center sealed that message, never on the
 *              host's word; a key is therefore never out for a message that did not open, and
 *              nothing at or behind j can be opened after it. The last message opened can be
 *              asked again (the identical header and chunk 0), so a host that lost the key does
 *              not lose the message.
 *   KC HELLO   our signature over the center's nonce: the host holds this card (mailbox sessions).
 *   KC STATUS  serial, center, chain positions (public).
 *
 * The serial is the card's unique address. The state is the runtime's sealed state, section 3.
 */
#include <string.h>

#include "keyhole/hpke.h"
#include "keyhole/keycard.h"
#include "keyhole/keyseq.h"
#include "module/module_int.h"

#define KC_SECTION_ID 3
#define KC_SECTION_VERSION 1
enum { S_CENTER = 1, S_CENTER_PK, S_SEND, S_RECV, S_ACKED, S_LAST, S_SEALED };

#define W KH_KEYSEQ_WINDOW
#define BIT(tag) (1u << (tag))

static uint64_t serial_of(const struct kh_module *m)
{
	return m->p.ua;
}

/* A chain of this card, about to make a key: its serial is the card's, set here and not when the
 * section is read, since a state may hold its sections before the runtime's field that gives it. */
static struct kh_keyseq *chain(const struct kh_module *m, struct kh_keyseq *c)
{
	c->serial = serial_of(m);
	return c;
}

static kh_err need_keycard(const struct kh_module *m, const struct kh_apdu *a)
{
	if (a->p1 || a->p2)
		return KH_ERR_APDU_P1P2;
	return m->p.lifecycle == KH_LC_PERSONALISED ? KH_OK : KH_ERR_NOT_PERSONALISED;
}

static kh_err need_enrolled(const struct kh_module *m, const struct kh_apdu *a)
{
	kh_err r = need_keycard(m, a);

	return r == KH_OK && !m->p.app.kc.enrolled ? KH_ERR_NOT_ENROLLED : r;
}

/* ---- KC ENROL ---- */

static kh_err h_enrol(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp)
{
	struct kh_kc_state *k = &m->p.app.kc;
	struct kh_tlv t[KH_KC_T_MAX + 1];
	struct kh_cert_info ci;
	uint8_t xpk[32], seed[KH_KEYSEQ_LEN], info[KH_KC_ENROL_INFO_LEN];
	uint32_t center;
	kh_err r;

	if ((r = need_keycard(m, a)) != KH_OK)
		return r;
	memset(t, 0, sizeof t);
	if ((r = kh_tlv_take(a->data, a->lc, t, KH_KC_T_MAX, BIT(KH_KC_T_CERT) | BIT(KH_KC_T_ENROLKEY))) != KH_OK)
		return r;
	if ((r = kh_cert_check(t[KH_KC_T_CERT].v, t[KH_KC_T_CERT].len, m->p.root_pk, KH_ROLE_KEYCENTER,
			       KH_CERT_KEY_ED25519, kh__module_now(m), &ci)) != KH_OK)
		return r;
	if ((r = kh_kc_enrolkey_verify(ci.pub, t[KH_KC_T_ENROLKEY].v, t[KH_KC_T_ENROLKEY].len, &center, xpk)) !=
	    KH_OK)
		return r;
	if (center != ci.ua)
		return KH_ERR_SIGNATURE;
	if (k->enrolled) {
		/* the same center asking again gets the same answer; a card has one center */
		if (k->center != center || !kh_ct_eq(k->center_pk, ci.pub, 32))
			return KH_ERR_ENROLLED;
		goto answer;
	}
	kh_kc_enrol_info(center, serial_of(m), info);
	if ((r = kh_random(seed, sizeof seed)) != KH_OK ||
	    (r = kh_hpke_seal_base(xpk, info, sizeof info, NULL, 0, seed, sizeof seed, k->sealed,
				   k->sealed + KH_HPKE_ENC_LEN)) != KH_OK ||
	    (r = kh_keyseq_init(seed, serial_of(m), KH_KEYSEQ_SEND, &k->send)) != KH_OK ||
	    (r = kh_keyseq_init(seed, serial_of(m), KH_KEYSEQ_RECV, &k->recv)) != KH_OK) {
		kh_wipe(seed, sizeof seed);
		return r; /* the runtime restores the state the command found */
	}
	kh_wipe(seed, sizeof seed);
	k->enrolled = 1;
	k->center = center;
	memcpy(k->center_pk, ci.pub, 32);
	k->acked = 0;
	m->dirty = 1; /* stored before the sealed seed goes out */
answer:
	kh_tlv_put_u64(resp, KH_KC_T_SERIAL, serial_of(m));
	kh_tlv_put(resp, KH_KC_T_SEALED, k->sealed, sizeof k->sealed);
	return resp->err;
}

/* ---- KC SEND, KC ACK ---- */

static kh_err h_send(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp)
{
	struct kh_kc_state *k = &m->p.app.kc;
	uint8_t key[KH_KEYSEQ_LEN];
	uint64_t i = k->send.pos;
	kh_err r;

	if ((r = need_enrolled(m, a)) != KH_OK)
		return r;
	if (a->lc)
		return KH_ERR_APDU_LEN;
	/* the center takes i only within W of its last: with acked <= its last, this key is one it takes */
	if (i - k->acked > W)
		return KH_ERR_KEY_AHEAD;
	if ((r = kh_keyseq_key(chain(m, &k->send), i, 1, key)) != KH_OK)
		return r;
	if ((r = kh_keyseq_advance(&k->send, i + 1, 1)) == KH_OK) {
		m->dirty = 1; /* moved past i and stored before key_i goes out: each key is given once */
		kh_tlv_put_u64(resp, KH_KC_T_SERIAL, serial_of(m));
		kh_tlv_put_u64(resp, KH_KC_T_INDEX, i);
		kh_tlv_put(resp, KH_KC_T_KEY, key, sizeof key);
		r = resp->err;
	}
	kh_wipe(key, sizeof key);
	return r;
}

static kh_err h_ack(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp)
{
	struct kh_kc_state *k = &m->p.app.kc;
	struct kh_tlv t[KH_KC_T_MAX + 1];
	uint64_t serial, index;
	uint32_t center;
	kh_err r;

	(void)resp;
	if ((r = need_enrolled(m, a)) != KH_OK)
		return r;
	memset(t, 0, sizeof t);
	if ((r = kh_tlv_take(a->data, a->lc, t, KH_KC_T_MAX, BIT(KH_KC_T_ACK))) != KH_OK)
		return r;
	if ((r = kh_kc_ack_verify(k->center_pk, t[KH_KC_T_ACK].v, t[KH_KC_T_ACK].len, &center, &serial, &index)) !=
	    KH_OK)
		return r;
	if (center != k->center || serial != serial_of(m))
		return KH_ERR_NOT_ADDRESSED;
	if (index >= k->send.pos)
		return KH_ERR_KEY_AHEAD; /* an ack of a key we never gave */
	if (index > k->acked) {
		k->acked = index;
		m->dirty = 1;
	}
	return KH_OK;
}

/* ---- KC OPEN ---- */

static kh_err h_open(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp)
{
	struct kh_kc_state *k = &m->p.app.kc;
	struct kh_tlv t[KH_KC_T_MAX + 1];
	struct kh_kc_header h;
	struct kh_kc_envelope e;
	uint8_t key[KH_KEYSEQ_LEN], hash[KH_SHA256_LEN], env[KH_KC_ENVELOPE_MAX];
	size_t ctlen, envlen;
	int last;
	kh_err r;

	if ((r = need_enrolled(m, a)) != KH_OK)
		return r;
	memset(t, 0, sizeof t);
	if ((r = kh_tlv_take(a->data, a->lc, t, KH_KC_T_MAX, BIT(KH_KC_T_HEADER) | BIT(KH_KC_T_CHUNK))) != KH_OK)
		return r;
	if (t[KH_KC_T_HEADER].len != KH_KC_HEADER_LEN)
		return KH_ERR_FORMAT;
	if ((r = kh_kc_header_parse(t[KH_KC_T_HEADER].v, KH_KC_HEADER_LEN, &h)) != KH_OK)
		return r;
	if (h.dir != KH_KC_DELIVERY || h.serial != serial_of(m))
		return KH_ERR_NOT_ADDRESSED;
	if ((r = kh_kc_chunk_frame(t[KH_KC_T_CHUNK].v, t[KH_KC_T_CHUNK].len, &ctlen, &last)) != KH_OK)
		return r;
	if (KH_KC_CHUNK_HDR_LEN + ctlen != t[KH_KC_T_CHUNK].len || ctlen > KH_KC_ENVELOPE_MAX + KH_TAG_LEN)
		return KH_ERR_FORMAT;
	/* what was opened: the header and chunk 0, as one hash (their lengths are fixed or framed) */
	memcpy(m->inner, t[KH_KC_T_HEADER].v, KH_KC_HEADER_LEN);
	memcpy(m->inner + KH_KC_HEADER_LEN, t[KH_KC_T_CHUNK].v, t[KH_KC_T_CHUNK].len);
	if ((r = kh_sha256(m->inner, KH_KC_HEADER_LEN + t[KH_KC_T_CHUNK].len, hash)) != KH_OK)
		return r;

	if (k->has_last && h.index == k->last_j) {
		/* the last message opened, asked again: only the very same bytes get its key again */
		if (!kh_ct_eq(hash, k->last_hash, sizeof hash))
			return KH_ERR_KEY_BEHIND;
		memcpy(key, k->last_key, sizeof key);
		goto answer;
	}
	if ((r = kh_keyseq_key(chain(m, &k->recv), h.index, W, key)) != KH_OK)
		return r;
	r = kh_kc_chunk_open(key, t[KH_KC_T_HEADER].v, 0, t[KH_KC_T_CHUNK].v, t[KH_KC_T_CHUNK].len, env, &envlen);
	if (r == KH_OK)
		r = kh_kc_envelope_parse(env, envlen, &e);
	if (r == KH_OK && last != (e.length == 0))
		r = KH_ERR_FORMAT;
	kh_wipe(env, sizeof env);
	if (r == KH_OK)
		r = kh_keyseq_advance(&k->recv, h.index + 1, W);
	if (r != KH_OK) {
		kh_wipe(key, sizeof key);
		return r;
	}
	k->has_last = 1;
	k->last_j = h.index;
	memcpy(k->last_key, key, sizeof key);
	memcpy(k->last_hash, hash, sizeof hash);
	m->dirty = 1; /* past j, stored, before key_j goes out */
answer:
	kh_tlv_put_u64(resp, KH_KC_T_INDEX, h.index);
	kh_tlv_put(resp, KH_KC_T_KEY, key, sizeof key);
	kh_wipe(key, sizeof key);
	return resp->err;
}

/* ---- KC HELLO, KC STATUS ---- */

static kh_err h_hello(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp)
{
	struct kh_tlv t[KH_KC_T_MAX + 1];
	uint8_t msg[KH_KC_HELLO_MSG_LEN], sig[KH_ED25519_SIG_LEN];
	kh_err r;

	if ((r = need_enrolled(m, a)) != KH_OK)
		return r;
	memset(t, 0, sizeof t);
	if ((r = kh_tlv_take(a->data, a->lc, t, KH_KC_T_MAX, BIT(KH_KC_T_NONCE))) != KH_OK)
		return r;
	if (t[KH_KC_T_NONCE].len != KH_KC_NONCE_LEN)
		return KH_ERR_FORMAT;
	kh_kc_hello_msg(m->p.app.kc.center, serial_of(m), t[KH_KC_T_NONCE].v, msg);
	if ((r = kh_ed25519_sign(m->p.sign_sk, msg, sizeof msg, sig)) != KH_OK)
		return r;
	kh_tlv_put_u64(resp, KH_KC_T_SERIAL, serial_of(m));
	kh_tlv_put(resp, KH_KC_T_SIG, sig, sizeof sig);
	return resp->err;
}

static kh_err h_status(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp)
{
	const struct kh_kc_state *k = &m->p.app.kc;
	kh_err r;

	if ((r = need_keycard(m, a)) != KH_OK)
		return r;
	if (a->lc)
		return KH_ERR_APDU_LEN;
	kh_tlv_put_u64(resp, KH_KC_T_SERIAL, serial_of(m));
	kh_tlv_put_u32(resp, KH_KC_T_CENTER, k->enrolled ? k->center : 0);
	if (k->enrolled) {
		kh_tlv_put_u64(resp, KH_KC_T_SEND, k->send.pos);
		kh_tlv_put_u64(resp, KH_KC_T_ACKED, k->acked);
		kh_tlv_put_u64(resp, KH_KC_T_RECV, k->recv.pos);
	}
	return resp->err;
}

/* ---- the section ---- */

static void put_chain(struct kh_wr *w, uint8_t tag, const struct kh_keyseq *c)
{
	uint8_t v[8 + KH_KEYSEQ_LEN];

	kh_put_be64(v, c->pos);
	memcpy(v + 8, c->s, KH_KEYSEQ_LEN);
	kh_tlv_put(w, tag, v, sizeof v);
	kh_wipe(v, sizeof v);
}

static kh_err kc_save(const struct kh_persist *p, const struct kh_applet_live *l, struct kh_wr *w)
{
	const struct kh_kc_state *k = &p->app.kc;
	uint8_t v[8 + 32 + 32];

	(void)l;
	if (!k->enrolled)
		return KH_OK; /* an empty section: a blank key card */
	kh_tlv_put_u32(w, S_CENTER, k->center);
	kh_tlv_put(w, S_CENTER_PK, k->center_pk, sizeof k->center_pk);
	put_chain(w, S_SEND, &k->send);
	put_chain(w, S_RECV, &k->recv);
	kh_tlv_put_u64(w, S_ACKED, k->acked);
	kh_tlv_put(w, S_SEALED, k->sealed, sizeof k->sealed);
	if (k->has_last) {
		kh_put_be64(v, k->last_j);
		memcpy(v + 8, k->last_key, 32);
		memcpy(v + 40, k->last_hash, 32);
		kh_tlv_put(w, S_LAST, v, sizeof v);
		kh_wipe(v, sizeof v);
	}
	return w->err;
}

static kh_err get_chain(const struct kh_tlv *t, uint8_t dir, struct kh_keyseq *c)
{
	if (t->len != 8 + KH_KEYSEQ_LEN)
		return KH_ERR_FORMAT;
	c->serial = 0; /* chain() gives it the card's at each use */
	c->dir = dir;
	c->pos = kh_get_be64(t->v);
	memcpy(c->s, t->v + 8, KH_KEYSEQ_LEN);
	return c->pos >= 1 && c->pos <= KH_KEYSEQ_POS_MAX ? KH_OK : KH_ERR_FORMAT;
}

static kh_err kc_load(struct kh_persist *p, struct kh_applet_live *l, uint8_t version, struct kh_rd *rd)
{
	struct kh_kc_state *k = &p->app.kc;
	struct kh_tlv t;
	uint32_t seen = 0;
	int n;
	kh_err r = KH_OK;

	(void)l;
	(void)version; /* 1, as the registry checked */
	while (r == KH_OK && (n = kh_tlv_next(rd, &t)) == 1) {
		if (t.tag < S_CENTER || t.tag > S_SEALED)
			return KH_ERR_TLV_TAG;
		if (seen & BIT(t.tag))
			return KH_ERR_FORMAT;
		seen |= BIT(t.tag);
		switch (t.tag) {
		case S_CENTER: r = kh_tlv_u32(&t, &k->center); break;
		case S_CENTER_PK:
		case S_SEALED:
			if (t.len != (t.tag == S_SEALED ? sizeof k->sealed : sizeof k->center_pk))
				return KH_ERR_FORMAT;
			memcpy(t.tag == S_SEALED ? k->sealed : k->center_pk, t.v, t.len);
			break;
		case S_SEND: r = get_chain(&t, KH_KEYSEQ_SEND, &k->send); break;
		case S_RECV: r = get_chain(&t, KH_KEYSEQ_RECV, &k->recv); break;
		case S_ACKED: r = kh_tlv_u64(&t, &k->acked); break;
		case S_LAST:
			if (t.len != 8 + 32 + 32)
				return KH_ERR_FORMAT;
			k->has_last = 1;
			k->last_j = kh_get_be64(t.v);
			memcpy(k->last_key, t.v + 8, 32);
			memcpy(k->last_hash, t.v + 40, 32);
			break;
		}
	}
	if (r != KH_OK || n < 0)
		return r != KH_OK ? r : n;
	if (!seen)
		return KH_OK;
	/* enrolled: everything but the last opened message is there */
	if ((seen | BIT(S_LAST)) != (BIT(S_CENTER) | BIT(S_CENTER_PK) | BIT(S_SEND) | BIT(S_RECV) | BIT(S_ACKED) |
				     BIT(S_LAST) | BIT(S_SEALED)))
		return KH_ERR_FORMAT;
	k->enrolled = 1;
	return KH_OK;
}

static void kc_reset(struct kh_persist *p, struct kh_applet_live *l)
{
	(void)l;
	kh_wipe(&p->app.kc, sizeof p->app.kc);
}

#define KEYCARD KH_ROLE_BIT(KH_ROLE_KEYCARD)

static const struct kh_applet_ins kc_ins[] = {
	{KH_INS_KC_ENROL, KH_INSF_PLAIN, KEYCARD, h_enrol},
	{KH_INS_KC_SEND, KH_INSF_PLAIN, KEYCARD, h_send},
	{KH_INS_KC_ACK, KH_INSF_PLAIN, KEYCARD, h_ack},
	{KH_INS_KC_OPEN, KH_INSF_PLAIN, KEYCARD, h_open},
	{KH_INS_KC_HELLO, KH_INSF_PLAIN | KH_INSF_NOTX, KEYCARD, h_hello},
	{KH_INS_KC_STATUS, KH_INSF_PLAIN | KH_INSF_NOTX, KEYCARD, h_status},
};

static const struct kh_applet_state kc_state = {
	.id = KC_SECTION_ID,
	.version = KC_SECTION_VERSION,
	.flags = 0, /* mandatory: a card that forgot its chains could never talk to its center again */
	.roles = KEYCARD,
	.max_len = KH_KC_SECTION_MAX,
	.save = kc_save,
	.load = kc_load,
	.reset = kc_reset,
	.stored = NULL,
};

const struct kh_applet kh__applet_kc = {"keycard", KH_APPLET_INS(kc_ins), &kc_state, NULL};
