/*
 * The card's conditional-access applet (the protocol design "Pay-TV: ECM and EMM", seeds 000 and 001):
 * service keys, subscription rights, pay-per-view credit, bought events and the purchase log.
 *
 *   ECM        sealed, and only on a channel a CAM has proven (CAM AUTH): open the ECM with the
 *              service key it names, check the operator's ECM signer's signature, and answer the control words only when a right covers its
 *              access criteria at its broadcast time; otherwise a status word naming the reason
 *              (with the pay-per-view offer as data when the event is simply not bought yet).
 *   PURCHASE   sealed, same channel rule: impulse purchase of the event an authenticated ECM
 *              names, at the ECM's price, debited once, never below zero, logged.
 *   EMM        plain or sealed (an EMM authenticates itself): addressed to this card's UA (under
 *              its Kp, strictly in order), its group or all (signed by the operator's EMM
 *              signer, the shared key only hiding it; newer than the last, and only commands
 *              that mean the same for every card), applied all together or not at all.
 *   CAS STATUS public facts: credit, rights, key ids, purchases, counters. Never a key.
 *
 * Every change is made in m->p inside the command transaction of module.c, so a refused command
 * changes nothing, and an accepted one is sealed and stored before its answer leaves.
 *
 * Its state: the slot m->p.app.cas, and the usage counters and card clock in m->live.cas (outside
 * the transaction: a refused ECM still counts). Both are section 1 of the sealed state, whose
 * version 1 is the tail of the flat format the first cards were written in (kh__applet_cas, at
 * the end of this file).
 */
#include <string.h>

#include "keyhole/cas.h"
#include "keyhole/crypto.h"
#include "module/module_int.h"

/* ---- checks shared by the handlers ---- */

kh_err kh__cas_need_card(const struct kh_module *m, const struct kh_apdu *a, uint8_t p1_max)
{
	if (a->p1 > p1_max || a->p2)
		return KH_ERR_APDU_P1P2;
	if (m->p.lifecycle != KH_LC_PERSONALISED)
		return KH_ERR_NOT_PERSONALISED;
	return KH_OK;
}

uint64_t kh__card_clock(const struct kh_module *m)
{
	return m->live.cas.clock;
}

kh_err kh__card_revoked(const struct kh_module *m, uint32_t ua)
{
	for (size_t i = 0; i < m->p.app.cas.nrevoked; i++)
		if (m->p.app.cas.revoked[i] == ua)
			return KH_ERR_REVOKED;
	return KH_OK;
}

/* Control words go only to a channel whose holder proved it is a certified CAM, not revoked,
 * serving a decoder module that is not revoked either. */
static kh_err need_cam_channel(const struct kh_module *m)
{
	kh_err r;

	if (!m->vol.pair.chan.open || !m->vol.pair.chan.peer_ua)
		return KH_ERR_CHAN_UNPROVEN;
	if ((r = kh__card_revoked(m, m->vol.pair.chan.peer_ua)) != KH_OK)
		return r;
	return m->vol.pair.served_dec ? kh__card_revoked(m, m->vol.pair.served_dec) : KH_OK;
}

/*
 * The operator's ECM names the version of the revoked list every card must hold by now: a card
 * whose host withheld the broadcast that carried it gives no control words until it has it. A
 * host can drop a broadcast EMM, but not the ECMs it needs to watch.
 */
static kh_err list_current(const struct kh_module *m, const struct kh_ecm *e)
{
	return e->revoked_version > m->p.app.cas.revoked_version ? KH_ERR_LIST_STALE : KH_OK;
}

static const struct kh_cas_skey *find_key(const struct kh_cas_state *c, uint8_t id, uint32_t version)
{
	for (size_t i = 0; i < c->nkeys; i++)
		if (c->keys[i].id == id && c->keys[i].version == version)
			return &c->keys[i];
	return NULL;
}

static const struct kh_cas_signer_pk *find_signer(const struct kh_cas_state *c, uint8_t role, uint32_t serial)
{
	for (size_t i = 0; i < c->nsigners; i++)
		if (c->signers[i].role == role && c->signers[i].serial == serial)
			return &c->signers[i];
	return NULL;
}

/*
 * A signed section (ECM, group or broadcast EMM) from a signer this card was given, which the
 * operator has not revoked and whose certificate had not run out by the card's clock (a lower
 * bound of the time). *sg gets the signer.
 */
static kh_err check_signed(const struct kh_module *m, uint8_t role, uint32_t serial, const uint8_t *sec,
			   size_t n, const struct kh_cas_signer_pk **sg)
{
	const struct kh_cas_signer_pk *s = find_signer(&m->p.app.cas, role, serial);
	kh_err r;

	if (s == NULL)
		return KH_ERR_UNKNOWN_SIGNER;
	if ((r = kh__card_revoked(m, serial)) != KH_OK)
		return r;
	if (m->live.cas.clock > s->not_after)
		return KH_ERR_CERT_EXPIRED;
	if ((r = role == KH_ROLE_ECM_SIGNER ? kh_ecm_verify(s->pk, sec, n) : kh_emm_verify(s->pk, sec, n)) != KH_OK)
		return r;
	*sg = s;
	return KH_OK;
}

/*
 * Open the ECM in a->data with the service key its clear header names, then check the headend's
 * signature over it: every card holds the service keys, so the tag alone proves only that some
 * card's holder made it; the signature says the access criteria (product, event, price, time)
 * are the operator's.
 */
static kh_err open_ecm(struct kh_module *m, const struct kh_apdu *a, struct kh_ecm *e)
{
	const struct kh_cas_signer_pk *sg;
	const struct kh_cas_skey *k;
	struct kh_ecm_hdr h;
	kh_err r;

	if ((r = kh_ecm_peek(a->data, a->lc, &h)) != KH_OK)
		return r;
	if (!(k = find_key(&m->p.app.cas, h.key_id, h.key_version)))
		return KH_ERR_NO_KEY;
	if ((r = kh_ecm_open(k->key, a->data, a->lc, e)) != KH_OK)
		return r;
	if ((r = check_signed(m, KH_ROLE_ECM_SIGNER, h.signer, a->data, a->lc, &sg)) != KH_OK) {
		kh_wipe(e, sizeof *e);
		return r;
	}
	/* A time after its signer's certificate ran out is one the operator cannot have meant: such
	 * an ECM (a headend with a wrong clock, a stream scrambled far ahead) must not move the
	 * clock, or one recording of it would make every certificate look expired on every card. */
	if (e->time > sg->not_after) {
		kh_wipe(e, sizeof *e);
		return KH_ERR_CERT_EXPIRED;
	}
	/* The operator said this time: the card's clock moves up to it, never back. It is stored
	 * when it first leaves 0 and then whenever it has moved a day, with the answer's store, so a
	 * host cannot keep it at 0 by restarting the card before the counters are stored. */
	if (e->time > m->live.cas.clock) {
		m->live.cas.clock = e->time;
		if (m->live.cas.clock_saved == 0 || m->live.cas.clock - m->live.cas.clock_saved > 86400)
			m->dirty = 1;
	}
	return KH_OK;
}

static int bought(const struct kh_cas_state *c, uint32_t event)
{
	for (size_t i = 0; i < c->nevents; i++)
		if (c->events[i] == event)
			return 1;
	return 0;
}

static kh_err put_offer(struct kh_wr *w, uint32_t event, uint32_t price, uint32_t credit)
{
	kh_tlv_put_u32(w, KH_OFFER_T_EVENT, event);
	kh_tlv_put_u32(w, KH_OFFER_T_PRICE, price);
	return kh_tlv_put_u32(w, KH_OFFER_T_CREDIT, credit);
}

/* Does a subscription cover product at time t? The reason when it does not. */
static kh_err product_right(const struct kh_cas_state *c, uint32_t product, uint64_t t)
{
	int expired = 0, future = 0;

	for (size_t i = 0; i < c->nrights; i++) {
		const struct kh_cas_right *rt = &c->rights[i];
		if (rt->product != product)
			continue;
		if (t >= rt->start && t < rt->end)
			return KH_OK;
		if (t >= rt->end)
			expired = 1;
		else
			future = 1;
	}
	return expired ? KH_ERR_RIGHT_EXPIRED : future ? KH_ERR_RIGHT_NOT_STARTED : KH_ERR_NO_RIGHT;
}

/* ---- ECM ---- */

static kh_err h_ecm(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp)
{
	const struct kh_cas_state *c = &m->p.app.cas;
	struct kh_ecm e;
	kh_err r;

	if ((r = kh__cas_need_card(m, a, 0)) != KH_OK || (r = need_cam_channel(m)) != KH_OK)
		return r;
	m->live.cas.n_ecm++;
	if ((r = open_ecm(m, a, &e)) != KH_OK || (r = list_current(m, &e)) != KH_OK)
		goto out;
	if (e.access == KH_ECM_PRODUCT) {
		r = product_right(c, e.product, e.time);
	} else if (!bought(c, e.event)) {
		/* Not bought: say what it costs, so the decoder can offer it. */
		r = c->credit >= e.price ? KH_ERR_NOT_PURCHASED : KH_ERR_CREDIT_LOW;
		if (put_offer(resp, e.event, e.price, c->credit) == KH_OK)
			m->keep_data = 1;
	}
	if (r != KH_OK)
		goto out;
	kh_tlv_put_u8(resp, KH_CW_T_ALG, e.alg);
	kh_tlv_put(resp, KH_CW_T_EVEN, e.cw_even, e.cw_len);
	kh_tlv_put(resp, KH_CW_T_ODD, e.cw_odd, e.cw_len);
	if (e.flags & KH_ECM_F_LADDER)
		kh_tlv_put_u8(resp, KH_CW_T_LADDER_ONLY, 1); /* for the CAM to enforce */
	r = kh_tlv_put_u32(resp, KH_CW_T_CP, e.h.cp);
	if (r == KH_OK) {
		m->live.cas.n_cw++;
		/* Usage counters ride along with the next store; force one now and then. */
		if (++m->live.cas.unsaved >= KH_CAS_USAGE_FLUSH)
			m->dirty = 1;
	}
out:
	if (r != KH_OK) {
		m->live.cas.n_refused++;
		m->live.cas.unsaved++;
	}
	kh_wipe(&e, sizeof e);
	return r;
}

/* ---- PURCHASE ---- */

static kh_err h_purchase(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp)
{
	struct kh_cas_state *c = &m->p.app.cas;
	struct kh_ecm e;
	uint64_t now;
	kh_err r;

	if ((r = kh__cas_need_card(m, a, 0)) != KH_OK || (r = need_cam_channel(m)) != KH_OK)
		return r;
	if ((r = open_ecm(m, a, &e)) != KH_OK || (r = list_current(m, &e)) != KH_OK)
		goto out;
	/* Event and price come from the authenticated ECM, never from the host. */
	if (e.access != KH_ECM_EVENT) {
		r = KH_ERR_FORMAT;
		goto out;
	}
	if (bought(c, e.event)) {
		/* Bought before: answered again, charged once. */
		r = put_offer(resp, e.event, e.price, c->credit);
		goto out;
	}
	if (c->credit < e.price) {
		r = KH_ERR_CREDIT_LOW;
		if (put_offer(resp, e.event, e.price, c->credit) == KH_OK)
			m->keep_data = 1;
		goto out;
	}
	if (c->nevents == KH_CAS_EVENTS || c->nlog == KH_CAS_LOG) {
		r = KH_ERR_CARD_FULL;
		goto out;
	}
	/* the ECM's broadcast time, which the operator signed, not a time the host supplies */
	now = e.time;
	c->credit -= e.price;
	c->events[c->nevents++] = e.event;
	c->log[c->nlog].event = e.event;
	c->log[c->nlog].price = e.price;
	c->log[c->nlog].time = now;
	c->log[c->nlog].exported_in = 0;
	c->nlog++;
	m->dirty = 1; /* stored before the answer: a purchase acknowledged is a purchase kept */
	r = put_offer(resp, e.event, e.price, c->credit);
out:
	kh_wipe(&e, sizeof e);
	return r;
}

/* ---- EMM ---- */

static kh_err set_key(struct kh_cas_state *c, const struct kh_tlv *t)
{
	struct kh_cas_skey *slot = NULL;
	uint8_t id;
	uint32_t version;
	size_t same = 0, oldest = 0;

	if (t->len != 1 + 4 + 32)
		return KH_ERR_FORMAT;
	id = t->v[0];
	version = kh_get_be32(t->v + 1);
	for (size_t i = 0; i < c->nkeys; i++) {
		if (c->keys[i].id != id)
			continue;
		if (c->keys[i].version == version) {
			slot = &c->keys[i];
			break;
		}
		if (same++ == 0 || c->keys[i].version < c->keys[oldest].version)
			oldest = i;
	}
	/* Two versions per id make rotation gapless; a third replaces the oldest. */
	if (!slot && same >= 2)
		slot = &c->keys[oldest];
	if (!slot) {
		if (c->nkeys == KH_CAS_KEYS)
			return KH_ERR_CARD_FULL;
		slot = &c->keys[c->nkeys++];
	}
	slot->id = id;
	slot->version = version;
	memcpy(slot->key, t->v + 5, 32);
	return KH_OK;
}

static kh_err entitle(struct kh_cas_state *c, const struct kh_tlv *t)
{
	struct kh_cas_right rt;
	size_t i;

	if (t->len != 20)
		return KH_ERR_FORMAT;
	rt.product = kh_get_be32(t->v);
	rt.start = kh_get_be64(t->v + 4);
	rt.end = kh_get_be64(t->v + 12);
	if (rt.end <= rt.start)
		return KH_ERR_FORMAT;
	/* One right per product: a renewal replaces it. */
	for (i = 0; i < c->nrights && c->rights[i].product != rt.product; i++)
		;
	if (i == c->nrights) {
		if (c->nrights == KH_CAS_RIGHTS)
			return KH_ERR_CARD_FULL;
		c->nrights++;
	}
	c->rights[i] = rt;
	return KH_OK;
}

static kh_err revoke(struct kh_cas_state *c, const struct kh_tlv *t)
{
	uint32_t product;
	size_t i = 0;
	kh_err r;

	if ((r = kh_tlv_u32(t, &product)) != KH_OK)
		return r;
	while (i < c->nrights) {
		if (c->rights[i].product == product)
			c->rights[i] = c->rights[--c->nrights];
		else
			i++;
	}
	kh_wipe(&c->rights[c->nrights], sizeof c->rights[0] * (KH_CAS_RIGHTS - c->nrights));
	return KH_OK;
}

static kh_err add_credit(struct kh_cas_state *c, const struct kh_tlv *t)
{
	uint32_t amount, reload;

	if (t->len != 8)
		return KH_ERR_FORMAT;
	amount = kh_get_be32(t->v);
	reload = kh_get_be32(t->v + 4);
	/* Reload ids increase; one already applied (a retried EMM) is skipped, not applied twice. */
	if (reload <= c->last_reload)
		return KH_OK;
	if (reload - c->last_reload > KH_CAS_RELOAD_WINDOW)
		return KH_ERR_RELOAD_JUMP;
	if (amount > UINT32_MAX - c->credit)
		return KH_ERR_TOO_LARGE;
	c->credit += amount;
	c->last_reload = reload;
	return KH_OK;
}

/*
 * The center confirms it holds the usage blocks up to block_seq: the purchases they carried leave
 * the log (seed 001). A purchase not yet in any block stays, whatever the number says.
 */
static kh_err ack_usage(struct kh_cas_state *c, const struct kh_tlv *t)
{
	uint32_t upto;
	size_t i, j = 0;
	kh_err r;

	if ((r = kh_tlv_u32(t, &upto)) != KH_OK)
		return r;
	if (upto > c->block_seq)
		return KH_ERR_FORMAT; /* a block the card never made */
	for (i = 0; i < c->nlog; i++)
		if (c->log[i].exported_in == 0 || c->log[i].exported_in > upto)
			c->log[j++] = c->log[i];
	kh_wipe(&c->log[j], sizeof c->log[0] * (KH_CAS_LOG - j));
	c->nlog = (uint8_t)j;
	return KH_OK;
}

/*
 * SET SIGNER: the certificate of an ECM or EMM signer, which the card checks against its root
 * itself (so even its own Kp cannot make it trust a key the root did not certify). Two signers
 * per role are kept, for a rotation without a gap; a newer serial replaces the older of the two,
 * and a serial older than both is ignored.
 */
static kh_err set_signer(struct kh_module *m, const struct kh_tlv *t)
{
	struct kh_cas_state *c = &m->p.app.cas;
	struct kh_cas_signer_pk *slot = NULL;
	struct kh_cert_info ci;
	size_t same = 0, oldest = 0;
	kh_err r;

	if ((r = kh_cert_check_by_clock(t->v, t->len, m->p.root_pk, KH_ROLE_NONE, KH_CERT_KEY_ED25519,
					kh__card_clock(m), &ci)) != KH_OK)
		return r;
	if (ci.role != KH_ROLE_ECM_SIGNER && ci.role != KH_ROLE_EMM_SIGNER)
		return KH_ERR_CERT_ROLE;
	for (size_t i = 0; i < c->nsigners; i++) {
		if (c->signers[i].role != ci.role)
			continue;
		if (c->signers[i].serial == ci.ua) {
			slot = &c->signers[i];
			break;
		}
		if (same++ == 0 || c->signers[i].serial < c->signers[oldest].serial)
			oldest = i;
	}
	if (!slot && same >= 2) {
		if (ci.ua < c->signers[oldest].serial)
			return KH_OK;
		slot = &c->signers[oldest];
	}
	if (!slot) {
		if (c->nsigners == KH_CAS_SIGNERS)
			return KH_ERR_CARD_FULL;
		slot = &c->signers[c->nsigners++];
	}
	slot->role = (uint8_t)ci.role;
	slot->serial = ci.ua;
	memcpy(slot->pk, ci.pub, 32);
	slot->not_after = ci.not_after;
	return KH_OK;
}

/*
 * What a group or broadcast EMM may do: the same thing to every card it reaches (service keys,
 * rights to a product). What only makes sense for one card (its credit and reload ids, its export
 * authorisation and requests, its purchase log, its group and keys, its signers) comes only
 * under that card's Kp, so no key shared among cards, and no EMM meant for others, can touch it.
 */
static int shared_ok(uint8_t tag)
{
	return tag == KH_EMM_SET_KEY || tag == KH_EMM_ENTITLE || tag == KH_EMM_REVOKE || tag == KH_EMM_REVOKED;
}

/*
 * REVOKED LIST: u32 version | u32 UA, ... (at most KH_CAS_REVOKED). The operator's whole list of
 * module certificates no longer to be trusted; a newer version replaces the card's list, an older
 * or equal one is skipped (a re-broadcast).
 */
static kh_err revoked_list(struct kh_cas_state *c, const struct kh_tlv *t)
{
	size_t n;

	if (t->len < 4 || (t->len - 4) % 4 || (n = (t->len - 4) / 4) > KH_CAS_REVOKED)
		return t->len >= 4 && (t->len - 4) % 4 == 0 ? KH_ERR_TOO_LARGE : KH_ERR_FORMAT;
	if (kh_get_be32(t->v) <= c->revoked_version)
		return KH_OK;
	c->revoked_version = kh_get_be32(t->v);
	for (size_t i = 0; i < n; i++)
		c->revoked[i] = kh_get_be32(t->v + 4 + 4 * i);
	memset(c->revoked + n, 0, (KH_CAS_REVOKED - n) * sizeof c->revoked[0]);
	c->nrevoked = (uint8_t)n;
	return KH_OK;
}

static kh_err apply(struct kh_module *m, uint8_t type, const uint8_t *cmds, size_t n)
{
	struct kh_cas_state *c = &m->p.app.cas;
	struct kh_rd rd;
	struct kh_tlv t;
	uint8_t on;
	int k;
	kh_err r = KH_OK;

	kh_rd_init(&rd, cmds, n);
	while (r == KH_OK && (k = kh_tlv_next(&rd, &t)) == 1) {
		if (type != KH_EMM_UNIQUE && t.tag >= KH_EMM_SET_KEY && t.tag <= KH_EMM_REVOKED &&
		    !shared_ok(t.tag)) {
			r = KH_ERR_EMM_SCOPE;
			break;
		}
		switch (t.tag) {
		case KH_EMM_SET_KEY: r = set_key(c, &t); break;
		case KH_EMM_ENTITLE: r = entitle(c, &t); break;
		case KH_EMM_REVOKE: r = revoke(c, &t); break;
		case KH_EMM_ADD_CREDIT: r = add_credit(c, &t); break;
		case KH_EMM_AUTH_EXPORT:
			if ((r = kh_tlv_u8(&t, &on)) == KH_OK && on > 1)
				r = KH_ERR_FORMAT;
			if (r == KH_OK)
				c->export_ok = on;
			break;
		case KH_EMM_REQ_EXPORT:
			r = t.len ? KH_ERR_FORMAT : KH_OK;
			c->export_req = 1;
			break;
		case KH_EMM_SET_GROUP:
			/* Group and broadcast keys only ever come under the card's own key. */
			if (t.len != 40) {
				r = KH_ERR_FORMAT; /* the first form had no sequence: refused */
				break;
			}
			/* A new group has its own sequence: the card takes it from the operator, where it
			 * stands now, so a host cannot replay the group's older EMMs (a right since
			 * revoked) to a card that just joined. The old group's EMMs no longer open here,
			 * having been sealed under the old group's key. */
			if (!c->has_group || c->group != kh_get_be32(t.v) ||
			    kh_get_be32(t.v + 36) > c->seq[KH_EMM_GROUP])
				c->seq[KH_EMM_GROUP] = kh_get_be32(t.v + 36);
			c->group = kh_get_be32(t.v);
			memcpy(c->group_key, t.v + 4, 32);
			c->has_group = 1;
			break;
		case KH_EMM_SET_ALL_KEY:
			if (t.len != 32) {
				r = KH_ERR_FORMAT;
				break;
			}
			memcpy(c->all_key, t.v, 32);
			c->has_all = 1;
			break;
		case KH_EMM_ACK_USAGE: r = ack_usage(c, &t); break;
		case KH_EMM_SET_SIGNER: r = set_signer(m, &t); break;
		case KH_EMM_REVOKED: r = revoked_list(c, &t); break;
		default: r = KH_ERR_TLV_TAG; break;
		}
	}
	if (r == KH_OK && k < 0)
		r = k;
	return r;
}

static kh_err h_emm(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp)
{
	struct kh_cas_state *c = &m->p.app.cas;
	const struct kh_cas_signer_pk *sg;
	uint8_t cmds[KH_EMM_CMDS_MAX];
	struct kh_emm_hdr h;
	const uint8_t *key;
	size_t n = 0;
	kh_err r;

	(void)resp;
	if ((r = kh__cas_need_card(m, a, 0)) != KH_OK)
		return r;
	if ((r = kh_emm_peek(a->data, a->lc, &h)) != KH_OK)
		return r;
	switch (h.addr_type) {
	case KH_EMM_UNIQUE:
		if (h.addr != m->p.ua)
			return KH_ERR_NOT_ADDRESSED;
		key = m->p.kp;
		break;
	case KH_EMM_GROUP:
		if (!c->has_group || h.addr != c->group)
			return KH_ERR_NOT_ADDRESSED;
		key = c->group_key;
		break;
	default:
		if (!c->has_all)
			return KH_ERR_NO_KEY;
		key = c->all_key;
		break;
	}
	if (h.seq <= c->seq[h.addr_type])
		return KH_ERR_EMM_REPLAY;
	/*
	 * The group and broadcast keys are in every card of the group, so they only hide the EMM:
	 * what makes the card believe it is the EMM signer's signature, checked before anything is
	 * opened.
	 */
	if (h.addr_type != KH_EMM_UNIQUE && (r = check_signed(m, KH_ROLE_EMM_SIGNER, h.signer, a->data, a->lc, &sg)) != KH_OK)
		return r;
	if ((r = kh_emm_open(key, a->data, a->lc, cmds, sizeof cmds, &n)) != KH_OK)
		goto out;
	/*
	 * A card's own EMMs apply in order: a host that withholds seq n (a REVOKE, say) and delivers
	 * n+1 gets EMM_GAP for n+1 instead of turning n into a replay. The center's per-card sequence
	 * has no holes, so the decoder fetches the missing ones (CAS STATUS says the last applied).
	 * Checked after the tag, so only a genuine EMM can report a gap.
	 */
	if (h.addr_type == KH_EMM_UNIQUE && h.seq != c->seq[KH_EMM_UNIQUE] + 1) {
		r = KH_ERR_EMM_GAP;
		goto out;
	}
	if ((r = apply(m, h.addr_type, cmds, n)) != KH_OK) {
		/*
		 * A genuine EMM of the card's own, in order, whose commands the card cannot take (a full
		 * table, a certificate it refuses, a jump of reload ids, a command this card does not
		 * know): nothing of it applies, but its number is used up, or every EMM after it would
		 * wait for it for ever. The refusal is still answered; only the sequence moves.
		 */
		if (h.addr_type == KH_EMM_UNIQUE) {
			m->p = m->saved;
			c->seq[KH_EMM_UNIQUE] = h.seq;
			m->dirty = 1;
			m->commit_refusal = 1;
		}
		goto out;
	}
	c->seq[h.addr_type] = h.seq;
	m->live.cas.n_emm++;
	m->dirty = 1;
out:
	kh_wipe(cmds, n);
	return r;
}

/* ---- CAS STATUS ---- */

static kh_err h_cas_status(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp)
{
	const struct kh_cas_state *c = &m->p.app.cas;
	uint8_t v[20];
	kh_err r;

	if ((r = kh__cas_need_card(m, a, 0)) != KH_OK)
		return r;
	if (a->lc)
		return KH_ERR_APDU_LEN;
	kh_tlv_put_u32(resp, KH_CAS_STATUS_T_CREDIT, c->credit);
	if (c->has_group)
		kh_tlv_put_u32(resp, KH_CAS_STATUS_T_GROUP, c->group);
	for (int i = 0; i < 3; i++)
		kh_tlv_put_u32(resp, (uint8_t)(KH_CAS_STATUS_T_SEQ_UNIQUE + i), c->seq[i]);
	kh_tlv_put_u8(resp, KH_CAS_STATUS_T_EXPORT, c->export_ok);
	v[0] = 0;
	v[1] = c->nlog;
	kh_tlv_put(resp, KH_CAS_STATUS_T_NLOG, v, 2);
	kh_tlv_put_u32(resp, KH_CAS_STATUS_T_N_ECM, m->live.cas.n_ecm);
	kh_tlv_put_u32(resp, KH_CAS_STATUS_T_N_CW, m->live.cas.n_cw);
	kh_tlv_put_u32(resp, KH_CAS_STATUS_T_N_REFUSED, m->live.cas.n_refused);
	kh_tlv_put_u32(resp, KH_CAS_STATUS_T_N_EMM, m->live.cas.n_emm);
	for (size_t i = 0; i < c->nrights; i++) {
		kh_put_be32(v, c->rights[i].product);
		kh_put_be64(v + 4, c->rights[i].start);
		kh_put_be64(v + 12, c->rights[i].end);
		kh_tlv_put(resp, KH_CAS_STATUS_T_RIGHT, v, 20);
	}
	for (size_t i = 0; i < c->nkeys; i++) {
		v[0] = c->keys[i].id;
		kh_put_be32(v + 1, c->keys[i].version);
		kh_tlv_put(resp, KH_CAS_STATUS_T_KEY, v, 5);
	}
	for (size_t i = 0; i < c->nlog; i++) {
		kh_put_be32(v, c->log[i].event);
		kh_put_be32(v + 4, c->log[i].price);
		kh_put_be64(v + 8, c->log[i].time);
		kh_tlv_put(resp, KH_CAS_STATUS_T_PURCHASE, v, 16);
	}
	for (size_t i = 0; i < c->nsigners; i++) {
		v[0] = c->signers[i].role;
		kh_put_be32(v + 1, c->signers[i].serial);
		kh_tlv_put(resp, KH_CAS_STATUS_T_SIGNER, v, 5);
	}
	return kh_tlv_put_u32(resp, KH_CAS_STATUS_T_RELOAD, c->last_reload);
}

/*
 * CAS FLUSH: store the usage counters if some are not stored yet. A host calls it when a store's
 * cost does not matter (after an ECM's control words are in use, at the end of a stream), so the
 * ECM path itself stores only every KH_CAS_USAGE_FLUSH CWs.
 */
static kh_err h_cas_flush(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp)
{
	kh_err r;

	(void)resp;
	if ((r = kh__cas_need_card(m, a, 0)) != KH_OK)
		return r;
	if (a->lc)
		return KH_ERR_APDU_LEN;
	if (m->live.cas.unsaved)
		m->dirty = 1;
	return KH_OK;
}

/* ---- sealed state: section 1 ---- */

/*
 * Version 1 of the section: these TLVs. Their numbers start at 0x40 because the first sealed
 * state had no sections (one flat list with the runtime's tags 1 to 12): a version-1 blob's
 * tail is this section's body, byte for byte.
 */
enum {
	S_CREDIT = 0x40, /* u32 */
	S_RELOAD,                     /* u32 */
	S_SEQ,                        /* 3 x u32 */
	S_GROUP,                      /* u32 group | key(32) */
	S_ALL_KEY,                    /* key(32) */
	S_FLAGS,                      /* u8 export_ok | u8 export_req */
	S_KEY,                        /* repeated: u8 id | u32 version | key(32) */
	S_RIGHT,                      /* repeated: u32 product | u64 start | u64 end */
	S_EVENT,                      /* repeated: u32 event */
	S_LOG,                        /* repeated: u32 event | u32 price | u64 time */
	S_USAGE,                      /* 4 x u32 */
	S_BLOCK_SEQ,                  /* u32 */
	S_SIGNER,                     /* repeated: u8 role | u32 serial | pk(32) | u64 not_after */
	S_CLOCK,                      /* u64: the newest signed ECM time seen */
	S_REVOKED,                    /* u32 version | u32 UA, ... */
};

#define CAS_SECTION_ID 1
#define CAS_SECTION_VERSION 1

static kh_err cas_save(const struct kh_persist *p, const struct kh_applet_live *l, struct kh_wr *w)
{
	const struct kh_cas_state *c = &p->app.cas;
	const struct kh_cas_usage *u = &l->cas;
	uint8_t v[48];
	size_t i;

	kh_tlv_put_u32(w, S_CREDIT, c->credit);
	kh_tlv_put_u32(w, S_RELOAD, c->last_reload);
	for (i = 0; i < 3; i++)
		kh_put_be32(v + 4 * i, c->seq[i]);
	kh_tlv_put(w, S_SEQ, v, 12);
	if (c->has_group) {
		kh_put_be32(v, c->group);
		memcpy(v + 4, c->group_key, 32);
		kh_tlv_put(w, S_GROUP, v, 36);
	}
	if (c->has_all)
		kh_tlv_put(w, S_ALL_KEY, c->all_key, 32);
	v[0] = c->export_ok;
	v[1] = c->export_req;
	kh_tlv_put(w, S_FLAGS, v, 2);
	for (i = 0; i < c->nkeys; i++) {
		v[0] = c->keys[i].id;
		kh_put_be32(v + 1, c->keys[i].version);
		memcpy(v + 5, c->keys[i].key, 32);
		kh_tlv_put(w, S_KEY, v, 37);
	}
	for (i = 0; i < c->nrights; i++) {
		kh_put_be32(v, c->rights[i].product);
		kh_put_be64(v + 4, c->rights[i].start);
		kh_put_be64(v + 12, c->rights[i].end);
		kh_tlv_put(w, S_RIGHT, v, 20);
	}
	for (i = 0; i < c->nevents; i++)
		kh_tlv_put_u32(w, S_EVENT, c->events[i]);
	for (i = 0; i < c->nlog; i++) {
		kh_put_be32(v, c->log[i].event);
		kh_put_be32(v + 4, c->log[i].price);
		kh_put_be64(v + 8, c->log[i].time);
		kh_put_be32(v + 16, c->log[i].exported_in);
		kh_tlv_put(w, S_LOG, v, 20);
	}
	kh_tlv_put_u32(w, S_BLOCK_SEQ, c->block_seq);
	for (i = 0; i < c->nsigners; i++) {
		v[0] = c->signers[i].role;
		kh_put_be32(v + 1, c->signers[i].serial);
		memcpy(v + 5, c->signers[i].pk, 32);
		kh_put_be64(v + 37, c->signers[i].not_after);
		kh_tlv_put(w, S_SIGNER, v, 45);
	}
	kh_put_be32(v, u->n_ecm);
	kh_put_be32(v + 4, u->n_cw);
	kh_put_be32(v + 8, u->n_refused);
	kh_put_be32(v + 12, u->n_emm);
	kh_tlv_put(w, S_USAGE, v, 16);
	if (u->clock)
		kh_tlv_put_u64(w, S_CLOCK, u->clock);
	if (c->revoked_version) {
		uint8_t rv[4 + 4 * KH_CAS_REVOKED];
		kh_put_be32(rv, c->revoked_version);
		for (i = 0; i < c->nrevoked; i++)
			kh_put_be32(rv + 4 + 4 * i, c->revoked[i]);
		kh_tlv_put(w, S_REVOKED, rv, 4 + 4 * (size_t)c->nrevoked);
	}
	kh_wipe(v, sizeof v);
	return w->err;
}

/* One TLV of the section into c / u. */
static kh_err cas_field(const struct kh_tlv *t, struct kh_cas_state *c, struct kh_cas_usage *u)
{
	const uint8_t *v = t->v;

	switch (t->tag) {
	case S_CREDIT: return kh_tlv_u32(t, &c->credit);
	case S_RELOAD: return kh_tlv_u32(t, &c->last_reload);
	case S_SEQ:
		if (t->len != 12)
			return KH_ERR_FORMAT;
		for (int i = 0; i < 3; i++)
			c->seq[i] = kh_get_be32(v + 4 * i);
		return KH_OK;
	case S_GROUP:
		if (t->len != 36)
			return KH_ERR_FORMAT;
		c->group = kh_get_be32(v);
		memcpy(c->group_key, v + 4, 32);
		c->has_group = 1;
		return KH_OK;
	case S_ALL_KEY:
		c->has_all = 1;
		return kh_tlv_fixed(t, c->all_key, 32);
	case S_FLAGS:
		if (t->len != 2 || v[0] > 1 || v[1] > 1)
			return KH_ERR_FORMAT;
		c->export_ok = v[0];
		c->export_req = v[1];
		return KH_OK;
	case S_KEY:
		if (t->len != 37 || c->nkeys == KH_CAS_KEYS)
			return KH_ERR_FORMAT;
		c->keys[c->nkeys].id = v[0];
		c->keys[c->nkeys].version = kh_get_be32(v + 1);
		memcpy(c->keys[c->nkeys].key, v + 5, 32);
		c->nkeys++;
		return KH_OK;
	case S_RIGHT:
		if (t->len != 20 || c->nrights == KH_CAS_RIGHTS)
			return KH_ERR_FORMAT;
		c->rights[c->nrights].product = kh_get_be32(v);
		c->rights[c->nrights].start = kh_get_be64(v + 4);
		c->rights[c->nrights].end = kh_get_be64(v + 12);
		c->nrights++;
		return KH_OK;
	case S_EVENT:
		if (c->nevents == KH_CAS_EVENTS)
			return KH_ERR_FORMAT;
		return kh_tlv_u32(t, &c->events[c->nevents++]);
	case S_LOG:
		/* 16 bytes: written before usage export existed, so in no block yet */
		if ((t->len != 16 && t->len != 20) || c->nlog == KH_CAS_LOG)
			return KH_ERR_FORMAT;
		c->log[c->nlog].event = kh_get_be32(v);
		c->log[c->nlog].price = kh_get_be32(v + 4);
		c->log[c->nlog].time = kh_get_be64(v + 8);
		c->log[c->nlog].exported_in = t->len == 20 ? kh_get_be32(v + 16) : 0;
		c->nlog++;
		return KH_OK;
	case S_BLOCK_SEQ: return kh_tlv_u32(t, &c->block_seq);
	case S_CLOCK: return kh_tlv_u64(t, &u->clock);
	case S_REVOKED:
		/* version 0 is no list an EMM gives (and cas_save would drop it): refused, as a repeat */
		if (t->len < 4 || (t->len - 4) % 4 || (t->len - 4) / 4 > KH_CAS_REVOKED || c->revoked_version ||
		    kh_get_be32(v) == 0)
			return KH_ERR_FORMAT;
		c->revoked_version = kh_get_be32(v);
		c->nrevoked = (uint8_t)((t->len - 4) / 4);
		for (size_t i = 0; i < c->nrevoked; i++)
			c->revoked[i] = kh_get_be32(v + 4 + 4 * i);
		return KH_OK;
	case S_SIGNER:
		if (t->len != 45 || c->nsigners == KH_CAS_SIGNERS ||
		    (v[0] != KH_ROLE_ECM_SIGNER && v[0] != KH_ROLE_EMM_SIGNER))
			return KH_ERR_FORMAT;
		c->signers[c->nsigners].role = v[0];
		c->signers[c->nsigners].serial = kh_get_be32(v + 1);
		memcpy(c->signers[c->nsigners].pk, v + 5, 32);
		c->signers[c->nsigners].not_after = kh_get_be64(v + 37);
		c->nsigners++;
		return KH_OK;
	case S_USAGE:
		if (t->len != 16)
			return KH_ERR_FORMAT;
		u->n_ecm = kh_get_be32(v);
		u->n_cw = kh_get_be32(v + 4);
		u->n_refused = kh_get_be32(v + 8);
		u->n_emm = kh_get_be32(v + 12);
		return KH_OK;
	default: return KH_ERR_TLV_TAG;
	}
}

static kh_err cas_load(struct kh_persist *p, struct kh_applet_live *l, uint8_t version, struct kh_rd *rd)
{
	struct kh_tlv t;
	int k;
	kh_err r = KH_OK;

	(void)version; /* 1, the only one so far */
	while (r == KH_OK && (k = kh_tlv_next(rd, &t)) == 1)
		r = cas_field(&t, &p->app.cas, &l->cas);
	if (r == KH_OK && k < 0)
		r = k;
	/* the clock as stored: ECMs store it again once it moves on */
	l->cas.clock_saved = l->cas.clock;
	return r;
}

static void cas_reset(struct kh_persist *p, struct kh_applet_live *l)
{
	kh_wipe(&p->app.cas, sizeof p->app.cas);
	kh_wipe(&l->cas, sizeof l->cas);
}

static void cas_stored(struct kh_applet_live *l)
{
	l->cas.unsaved = 0;
	l->cas.clock_saved = l->cas.clock;
}

#define CARD KH_ROLE_BIT(KH_ROLE_CARD)

static const struct kh_applet_ins cas_ins[] = {
	{KH_INS_ECM, KH_INSF_SEALED, CARD, h_ecm},
	{KH_INS_PURCHASE, KH_INSF_SEALED, CARD, h_purchase},
	{KH_INS_EMM, KH_INSF_PLAIN | KH_INSF_SEALED, CARD, h_emm},
	{KH_INS_CAS_STATUS, KH_INSF_PLAIN | KH_INSF_SEALED, CARD, h_cas_status},
	{KH_INS_CAS_FLUSH, KH_INSF_PLAIN | KH_INSF_SEALED, CARD, h_cas_flush},
};

static const struct kh_applet_state cas_state = {
	.id = CAS_SECTION_ID,
	.version = CAS_SECTION_VERSION,
	.flags = KH_SECTION_V1, /* mandatory: a card that forgot its credit must not load */
	.roles = KH_ROLE_BIT(KH_ROLE_CARD),
	.max_len = KH_CAS_SECTION_MAX,
	.save = cas_save,
	.load = cas_load,
	.reset = cas_reset,
	.stored = cas_stored,
};

const struct kh_applet kh__applet_cas = {"cas", KH_APPLET_INS(cas_ins), &cas_state, NULL};
