/*
 * EMMs at the management center (the protocol design "Pay-TV: ECM and EMM", docs/protocols/cas.md):
 * gathering one card's commands into as few EMMs as fit, sealing each under the card's personal
 * key Kp = HKDF(master, "keyhole card personal v1" | UA) with the seq the store hands out in the
 * same transaction as the enqueue, what a card needs when it starts serving a subscriber, and
 * the two read endpoints: the broadcast queue the headend carries, one card's EMMs for a decoder
 * with a line. Kp lives on the stack for one seal and is wiped; command buffers that carried keys
 * are wiped too. No key and no EMM body is ever logged.
 */
#include <stdlib.h>
#include <string.h>

#include "keyhole/buf.h"
#include "keyhole/crypto.h"
#include "sms_int.h"

void kh__sms_emm_init(struct kh__sms_emm *e, struct kh_sms *c, uint32_t ua)
{
	memset(e, 0, sizeof *e);
	e->c = c;
	e->ua = ua;
}

void kh__sms_emm_wipe(struct kh__sms_emm *e)
{
	kh_wipe(e->cmds, sizeof e->cmds);
	e->len = 0;
}

static kh_err seal_cb(void *arg, uint32_t seq, uint8_t *out, size_t cap, size_t *len)
{
	struct kh__sms_emm *e = arg;
	struct kh_emm_hdr h = {KH_EMM_TID_UNIQUE, KH_EMM_UNIQUE, e->ua, seq, 0};
	uint8_t kp[32];
	kh_err r;

	if ((r = kh_cas_card_kp(e->c->k.master, e->ua, kp)) == KH_OK)
		r = kh_emm_seal(kp, &h, e->cmds, e->len, out, cap, len);
	kh_wipe(kp, sizeof kp);
	return r;
}

kh_err kh__sms_emm_flush(struct kh_store *s, struct kh__sms_emm *e)
{
	int64_t id = 0;
	kh_err r;

	if (e->len == 0)
		return KH_OK;
	r = kh_store_emm_enqueue(s, KH_EMM_UNIQUE, e->ua, seal_cb, e, NULL, &id);
	kh__sms_emm_wipe(e);
	if (r == KH_OK) {
		if (!e->queued)
			e->first_id = id;
		e->queued++;
	}
	return r;
}

kh_err kh__sms_emm_cmd(struct kh_store *s, struct kh__sms_emm *e, const uint8_t *cmd, size_t n)
{
	kh_err r;

	if (n == 0 || n > sizeof e->cmds)
		return KH_ERR_TOO_LARGE;
	if (e->len + n > sizeof e->cmds && (r = kh__sms_emm_flush(s, e)) != KH_OK)
		return r;
	memcpy(e->cmds + e->len, cmd, n);
	e->len += n;
	return KH_OK;
}

/* ---- a card starting to serve a subscriber ---- */

struct key_list {
	size_t n, cap;
	struct {
		uint8_t id;
		uint32_t version;
		uint8_t key[32];
	} *k;
};

static kh_err collect_key(void *arg, const struct kh_store_service_key *k)
{
	struct key_list *l = arg;

	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 8;
		void *p = calloc(cap, sizeof *l->k);
		if (p == NULL)
			return KH_ERR_NOMEM;
		if (l->n) {
			memcpy(p, l->k, l->n * sizeof *l->k);
			kh_wipe(l->k, l->n * sizeof *l->k);
		}
		free(l->k);
		l->k = p;
		l->cap = cap;
	}
	l->k[l->n].id = k->key_id;
	l->k[l->n].version = k->version;
	memcpy(l->k[l->n].key, k->key, 32);
	l->n++;
	return KH_OK;
}

struct sub_list {
	size_t n, cap;
	struct kh_store_subscription *u;
};

static kh_err collect_sub(void *arg, const struct kh_store_subscription *u)
{
	struct sub_list *l = arg;

	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 8;
		void *p = realloc(l->u, cap * sizeof *l->u);
		if (p == NULL)
			return KH_ERR_NOMEM;
		l->u = p;
		l->cap = cap;
	}
	l->u[l->n++] = *u;
	return KH_OK;
}

kh_err kh__sms_card_setup(struct kh_store *s, struct kh_sms *c, uint32_t ua, int64_t sub, int auth_export,
			  unsigned *queued)
{
	struct kh__sms_emm e;
	struct key_list keys = {0};
	struct sub_list subs = {0};
	uint8_t cmd[64], all[32];
	struct kh_wr w;
	uint32_t initial = 0, reload_id;
	kh_err r;

	kh__sms_emm_init(&e, c, ua);
	/* Everything is read before the first enqueue: a listing must not run under a write. */
	if ((r = kh_store_service_keys_current(s, collect_key, &keys)) != KH_OK ||
	    (r = kh_store_subscriptions_of(s, sub, collect_sub, &subs)) != KH_OK ||
	    (r = kh_store_credit_policy_get(s, &initial, NULL)) != KH_OK)
		goto out;

	for (size_t i = 0; i < 2; i++) {
		uint8_t sc[KH_CERT_MAX + 3];
		kh_wr_init(&w, sc, sizeof sc);
		if ((r = kh_emm_put_set_signer(&w, c->k.signer_der[i], c->k.signer_len[i])) != KH_OK ||
		    (r = kh__sms_emm_cmd(s, &e, sc, w.len)) != KH_OK)
			goto out;
	}
	kh_wr_init(&w, cmd, sizeof cmd);
	if ((r = kh_cas_all_key(c->k.master, all)) != KH_OK)
		goto out;
	r = kh_emm_put_set_all_key(&w, all);
	kh_wipe(all, sizeof all);
	if (r != KH_OK || (r = kh__sms_emm_cmd(s, &e, cmd, w.len)) != KH_OK)
		goto out;
	for (size_t i = 0; i < keys.n; i++) {
		kh_wr_init(&w, cmd, sizeof cmd);
		if ((r = kh_emm_put_set_key(&w, keys.k[i].id, keys.k[i].version, keys.k[i].key)) != KH_OK ||
		    (r = kh__sms_emm_cmd(s, &e, cmd, w.len)) != KH_OK)
			goto out;
	}
	for (size_t i = 0; i < subs.n; i++) {
		kh_wr_init(&w, cmd, sizeof cmd);
		if ((r = kh_emm_put_entitle(&w, subs.u[i].product_id, (uint64_t)subs.u[i].start,
					    (uint64_t)kh__sms_rights_end(c, kh__sms_now(c), subs.u[i].start,
									 subs.u[i].end))) != KH_OK ||
		    (r = kh__sms_emm_cmd(s, &e, cmd, w.len)) != KH_OK)
			goto out;
	}
	if (initial > 0) {
		kh_wr_init(&w, cmd, sizeof cmd);
		if ((r = kh_store_card_reload_add(s, ua, initial, &reload_id)) != KH_OK ||
		    (r = kh_emm_put_add_credit(&w, initial, reload_id)) != KH_OK ||
		    (r = kh__sms_emm_cmd(s, &e, cmd, w.len)) != KH_OK)
			goto out;
	}
	if (auth_export) {
		kh_wr_init(&w, cmd, sizeof cmd);
		if ((r = kh_emm_put_auth_export(&w, 1)) != KH_OK || (r = kh__sms_emm_cmd(s, &e, cmd, w.len)) != KH_OK)
			goto out;
	}
	r = kh__sms_emm_flush(s, &e);
out:
	kh_wipe(cmd, sizeof cmd);
	if (keys.k) {
		kh_wipe(keys.k, keys.cap * sizeof *keys.k);
		free(keys.k);
	}
	free(subs.u);
	if (r == KH_OK && queued)
		*queued = e.queued;
	kh__sms_emm_wipe(&e);
	return r;
}

/* ---- GET /v1/emm and GET /v1/cards/{ua}/emm ---- */

#define EMM_LIMIT_DEFAULT 100
#define EMM_LIMIT_MAX 1000

struct emm_page {
	json_t *arr;
	int64_t last; /* the highest queue id listed (after_seq: ids do not follow seq across cards) */
};

static kh_err add_emm(void *arg, const struct kh_store_emm *e)
{
	struct emm_page *pg = arg;
	json_t *o = kh__sms_emm_json(e);

	if (o == NULL || json_array_append_new(pg->arr, o) != 0)
		return KH_ERR_NOMEM;
	if (e->id > pg->last)
		pg->last = e->id;
	return KH_OK;
}

/*
 * The queue (one 0) or one card's EMMs: by queue id after since; for one card, by seq above
 * after_seq instead when it is given (a decoder whose card answered EMM_GAP asks for what
 * follows the card's last applied EMM).
 */
static kh_err emm_list(struct kh_http_req *req, struct kh_http_resp *resp, struct kh_sms *c, int one,
		       uint32_t ua)
{
	struct kh_store *s;
	struct emm_page pg = {0};
	int64_t since, limit, after = -1;
	kh_err r;

	if ((r = kh__sms_query_int(req, "since", 0, INT64_MAX, &since)) != KH_OK)
		return kh_http_reply_error(resp, r, "since must be a non-negative integer");
	if ((r = kh__sms_query_int(req, "limit", EMM_LIMIT_DEFAULT, EMM_LIMIT_MAX, &limit)) != KH_OK || limit == 0)
		return kh_http_reply_error(resp, KH_ERR_INVAL, "limit must be an integer from 1 to 1000");
	if (one && (r = kh__sms_query_int(req, "after_seq", -1, UINT32_MAX, &after)) != KH_OK)
		return kh_http_reply_error(resp, r, "after_seq: the card's last applied EMM sequence number");
	if (after >= 0 && since != 0)
		return kh_http_reply_error(resp, KH_ERR_INVAL, "since and after_seq do not go together");
	if ((r = kh__sms_db(c, &s)) != KH_OK)
		return r;
	if (one) {
		struct kh_store_card card;
		if ((r = kh_store_card_get(s, ua, &card)) != KH_OK)
			return r == KH_ERR_NOTFOUND ? kh_http_reply_error(resp, r, "card not registered") : r;
	}
	if ((pg.arr = json_array()) == NULL)
		return KH_ERR_NOMEM;
	if (after >= 0)
		r = kh_store_emm_fetch_addr_seq(s, KH_EMM_UNIQUE, ua, (uint32_t)after, (unsigned)limit, add_emm, &pg);
	else if (one)
		r = kh_store_emm_fetch_addr(s, KH_EMM_UNIQUE, ua, since, (unsigned)limit, add_emm, &pg, &pg.last);
	else
		r = kh_store_emm_fetch(s, since, (unsigned)limit, add_emm, &pg, &pg.last);
	if (r != KH_OK) {
		json_decref(pg.arr);
		return r;
	}
	return kh_http_reply(resp, 200, json_pack("{s:o,s:I}", "emms", pg.arr, "last_id", (json_int_t)pg.last));
}

kh_err kh__sms_emm_queue(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	return emm_list(req, resp, arg, 0, 0);
}

kh_err kh__sms_card_emm(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	uint32_t ua;

	if (kh__sms_parse_ua(kh_http_param(req, "ua"), &ua) != KH_OK)
		return kh_http_reply_error(resp, KH_ERR_INVAL, "a UA is 8 hexadecimal digits");
	return emm_list(req, resp, arg, 1, ua);
}
