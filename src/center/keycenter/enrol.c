/*
 * The key center's enrolment station and the operator's work on its cards
 * (include/keyhole/keycentersvc.h, `keyhole keycenter enrol` and `block`): the card's seed, which
 * it sealed to our enrolment key, is opened, turned into the card's two chains and wiped; the
 * card is stored with its chains sealed and its access code's MAC, all in one transaction. A
 * replacement card takes the old one's address and the deliveries waiting for it, each opened
 * under the key kept for it and sealed again under the new card's next receive key.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kc_int.h"
#include "keyhole/cert.h"
#include "keyhole/crypto.h"
#include "keyhole/hpke.h"

kh_err kh_keycenter_card_cert(const struct kh_keycenter *kc, const uint8_t *der, size_t n, int64_t now,
			      uint64_t *serial)
{
	struct kh_cert_info ci;
	kh_err r;

	if ((r = kh_cert_check(der, n, kc->id.root_pk, KH_ROLE_KEYCARD, KH_CERT_KEY_ED25519, (uint64_t)now, &ci)) != KH_OK)
		return r;
	*serial = ci.ua;
	return KH_OK;
}

kh_err kh_keycenter_enrol_check(struct kh_store *st, const char *address, uint64_t replaces)
{
	struct kh_store_kc_card *c = calloc(1, sizeof *c);
	kh_err r;

	if (!c)
		return KH_ERR_NOMEM;
	if (!address || kh_kc_addr_check(address, strlen(address)) != KH_OK) {
		r = KH_ERR_FORMAT;
		goto out;
	}
	r = kh_store_kc_card_by_address(st, address, c);
	if (r == KH_OK && c->serial != replaces)
		r = KH_ERR_EXISTS;
	else if (r == KH_ERR_NOTFOUND || r == KH_OK)
		r = KH_OK;
	if (r == KH_OK && replaces) {
		if ((r = kh_store_kc_card_get(st, replaces, c)) == KH_OK && c->replaced_by)
			r = KH_ERR_EXISTS;
	}
out:
	free(c);
	return r;
}

/* The card's seed from what it sealed to us (HPKE base mode, AES-128-GCM, info of center and card). */
static kh_err seed_open(const struct kh_keycenter *kc, uint64_t serial, const uint8_t *sealed,
			uint8_t seed[static KH_KEYSEQ_LEN])
{
	uint8_t xsk[32], xpk[32], info[KH_KC_ENROL_INFO_LEN];
	struct kh_hpke_ctx h;
	kh_err r;

	kh_kc_enrol_info(kc->id.serial, serial, info);
	if ((r = kh_kc_enrol_keypair(kc->id.sk, xsk, xpk)) == KH_OK &&
	    (r = kh_hpke_setup_r(&h, KH_AEAD_AES128_GCM, sealed, xsk, info, sizeof info)) == KH_OK) {
		r = kh_hpke_open(&h, NULL, 0, sealed + KH_HPKE_ENC_LEN, KH_KEYSEQ_LEN + KH_TAG_LEN, seed);
		kh_hpke_ctx_wipe(&h);
	}
	kh_wipe(xsk, sizeof xsk);
	return r == KH_OK ? KH_OK : KH_ERR_AUTH;
}

/* The card's row: both chains at position 1, sealed; the code's MAC. */
static kh_err card_make(const struct kh_keycenter *kc, const struct kh_keycenter_enrolment *e, const char *code,
			struct kh_store_kc_card *c)
{
	uint8_t seed[KH_KEYSEQ_LEN];
	struct kh_keyseq send, recv;
	kh_err r;

	memset(c, 0, sizeof *c);
	if (e->cert_len == 0 || e->cert_len > sizeof c->sign_cert)
		return KH_ERR_INVAL;
	c->serial = e->serial;
	snprintf(c->address, sizeof c->address, "%s", e->address);
	c->state = KH_STORE_KC_ENROLLED;
	memcpy(c->sign_cert, e->cert, e->cert_len);
	c->sign_cert_len = e->cert_len;
	c->send_pos = c->recv_pos = 1;
	if ((r = seed_open(kc, e->serial, e->sealed, seed)) == KH_OK &&
	    (r = kh_keyseq_init(seed, e->serial, KH_KEYSEQ_SEND, &send)) == KH_OK &&
	    (r = kh_keyseq_init(seed, e->serial, KH_KEYSEQ_RECV, &recv)) == KH_OK &&
	    (r = kh__kc_chain_seal(kc, &send, c->send_state)) == KH_OK &&
	    (r = kh__kc_chain_seal(kc, &recv, c->recv_state)) == KH_OK)
		r = kh__kc_code_mac(kc, e->serial, code, c->code_mac);
	kh_wipe(seed, sizeof seed);
	kh_wipe(&send, sizeof send);
	kh_wipe(&recv, sizeof recv);
	return r;
}

/* ---------------------------------------------------------------- moving waiting mail */

/* The delivery in m, reopened under its key and sealed under the new card's key j into a new row. */
static kh_err reseal(struct kh_store *st, const struct kh_keycenter *kc, const struct kh_store_kc_mail *m,
		     uint64_t to, uint64_t *consumed)
{
	struct kh_store_kc_card *c = calloc(1, sizeof *c);
	struct kh_kc_header h, nh;
	struct kh_kc_envelope env;
	struct kh_store_kc_mail nm;
	struct kh_keyseq recv;
	uint8_t key[32], nkey[32], *doc = NULL, *out = NULL;
	size_t doclen = 0, outlen = 0, cap = 0;
	kh_err r;

	memset(&recv, 0, sizeof recv);
	if (!c || !(doc = malloc(m->msg_len ? m->msg_len : 1))) {
		r = KH_ERR_NOMEM;
		goto out;
	}
	if ((r = kh__kc_mkey_open(kc, m->recipient, m->idx, m->key_sealed, key)) != KH_OK ||
	    (r = kh_kc_msg_open(key, m->msg, m->msg_len, &h, &env, doc, m->msg_len, &doclen)) != KH_OK ||
	    (r = kh_store_kc_card_get(st, to, c)) != KH_OK ||
	    (r = kh__kc_chain_open(kc, to, KH_KEYSEQ_RECV, c->recv_pos, c->recv_state, &recv)) != KH_OK ||
	    (r = kh_keyseq_key(&recv, recv.pos, 1, nkey)) != KH_OK)
		goto out;
	cap = (size_t)kh_kc_msg_size(strlen(env.addr), doclen);
	if (!(out = malloc(cap))) {
		r = KH_ERR_NOMEM;
		goto out;
	}
	nh = (struct kh_kc_header){.dir = KH_KC_DELIVERY, .serial = to, .index = recv.pos};
	memset(&nm, 0, sizeof nm);
	nm.recipient = to;
	nm.idx = recv.pos;
	nm.sender = m->sender;
	nm.sender_address = m->sender_address;
	nm.created = m->created;
	nm.has_key = 1;
	if ((r = kh_kc_msg_seal(nkey, &nh, env.addr, doc, doclen, out, cap, &outlen)) != KH_OK ||
	    (r = kh__kc_mkey_seal(kc, to, recv.pos, nkey, nm.key_sealed)) != KH_OK ||
	    (r = kh_keyseq_advance(&recv, recv.pos + 1, 1)) != KH_OK ||
	    (r = kh__kc_chain_seal(kc, &recv, c->recv_state)) != KH_OK ||
	    (r = kh_store_kc_recv_set(st, to, recv.pos, c->recv_state)) != KH_OK)
		goto out;
	nm.msg = out;
	nm.msg_len = outlen;
	nm.size = (int64_t)outlen;
	if ((r = kh_store_kc_mail_add(st, &nm)) == KH_OK && (r = kh_store_kc_mail_delete(st, m->recipient, m->idx)) == KH_OK)
		*consumed = m->idx;
out:
	kh_wipe(key, sizeof key);
	kh_wipe(nkey, sizeof nkey);
	kh_wipe(&recv, sizeof recv);
	kh_wipe(&nm, sizeof nm);
	if (doc)
		kh_wipe(doc, m->msg_len ? m->msg_len : 1);
	free(doc);
	free(out);
	free(c);
	return r;
}

struct reseal_arg {
	struct kh_store *st;
	const struct kh_keycenter *kc;
	uint64_t to, consumed;
};

static kh_err reseal_cb(void *arg, const struct kh_store_kc_mail *m)
{
	struct reseal_arg *a = arg;

	return reseal(a->st, a->kc, m, a->to, &a->consumed);
}

/* Every delivery waiting for old, in index order, moved to the new card. */
static kh_err move_mail(struct kh_store *st, const struct kh_keycenter *kc, uint64_t old, uint64_t to)
{
	struct reseal_arg a = {st, kc, to, 0};
	kh_err r;

	while ((r = kh_store_kc_mail_next(st, old, a.consumed, reseal_cb, &a)) == KH_OK)
		;
	return r == KH_ERR_NOTFOUND ? KH_OK : r;
}

/* ---------------------------------------------------------------- enrolment */

struct enrol_tx {
	const struct kh_keycenter *kc;
	const struct kh_keycenter_enrolment *e;
	const struct kh_store_kc_card *card;
	int64_t now;
};

static kh_err enrol_tx(struct kh_store *st, void *arg)
{
	struct enrol_tx *t = arg;
	kh_err r;

	if ((r = kh_keycenter_enrol_check(st, t->e->address, t->e->replaces)) != KH_OK)
		return r;
	/* the old card gives up its address before the new one takes it (UNIQUE) */
	if (t->e->replaces && (r = kh_store_kc_card_replaced(st, t->e->replaces, t->e->serial)) != KH_OK)
		return r;
	if ((r = kh_store_kc_card_add(st, t->card, t->now)) != KH_OK)
		return r;
	return t->e->replaces ? move_mail(st, t->kc, t->e->replaces, t->e->serial) : KH_OK;
}

/* XXXX-XXXX-XXXX-XXXX */
static void code_show(const char *code, char out[static KH_KEYCENTER_CODE_SHOWN + 1])
{
	size_t n = 0;

	for (size_t i = 0; i < KH_KEYCENTER_CODE_LEN; i++) {
		if (i && i % 4 == 0)
			out[n++] = '-';
		out[n++] = code[i];
	}
	out[n] = '\0';
}

kh_err kh_keycenter_enrol(const struct kh_keycenter *kc, struct kh_store *st, const struct kh_keycenter_enrolment *e,
			  int64_t now, char code[static KH_KEYCENTER_CODE_SHOWN + 1])
{
	struct kh_store_kc_card *c = calloc(1, sizeof *c);
	char raw[KH_KEYCENTER_CODE_LEN + 1];
	struct enrol_tx t = {kc, e, c, now};
	kh_err r;

	if (!c)
		return KH_ERR_NOMEM;
	if (!kc || !st || !e || !e->sealed || !e->cert || !e->address || e->serial < 1 ||
	    e->serial > KH_STORE_KC_SERIAL_MAX || e->replaces == e->serial) {
		r = KH_ERR_INVAL;
		goto out;
	}
	if ((r = kh__kc_code_new(raw)) != KH_OK || (r = card_make(kc, e, raw, c)) != KH_OK ||
	    (r = kh_store_run_tx(st, enrol_tx, &t)) != KH_OK)
		goto out;
	code_show(raw, code);
out:
	kh_wipe(raw, sizeof raw);
	kh_wipe(c, sizeof *c);
	free(c);
	return r;
}

kh_err kh_keycenter_block(struct kh_store *st, uint64_t serial)
{
	return kh_store_kc_card_state(st, serial, KH_STORE_KC_BLOCKED, 0);
}

kh_err kh_keycenter_chains(const struct kh_keycenter *kc, struct kh_store *st, uint64_t serial, struct kh_keyseq *send,
			   struct kh_keyseq *recv)
{
	struct kh_store_kc_card *c = calloc(1, sizeof *c);
	kh_err r;

	if (!c)
		return KH_ERR_NOMEM;
	if ((r = kh_store_kc_card_get(st, serial, c)) == KH_OK &&
	    (r = kh__kc_chain_open(kc, serial, KH_KEYSEQ_SEND, c->send_pos, c->send_state, send)) == KH_OK &&
	    (r = kh__kc_chain_open(kc, serial, KH_KEYSEQ_RECV, c->recv_pos, c->recv_state, recv)) != KH_OK)
		kh_wipe(send, sizeof *send);
	free(c);
	return r;
}
