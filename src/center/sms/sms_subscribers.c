/*
 * Subscribers at the management center: creating one, reading one with its cards,
 * subscriptions and invoices, and subscribing to or unsubscribing from a product, which sends
 * ENTITLE or REVOKE to the subscriber's active card in the same transaction. A closed subscriber
 * (sms_edit.c) takes no new subscription. Each write keeps its Idempotency-Key in its own
 * transaction (kh__sms_idem_*): a retry gets the first answer and creates nothing more. The lists
 * are in sms_list.c.
 */
#include <stdlib.h>
#include <string.h>

#include "keyhole/buf.h"
#include "sms_int.h"

static kh_err path_id(struct kh_http_req *req, struct kh_http_resp *resp, int64_t *id, int *answered)
{
	*answered = 0;
	if (kh__sms_parse_id(kh_http_param(req, "id"), id) == KH_OK)
		return KH_OK;
	*answered = 1;
	return kh_http_reply_error(resp, KH_ERR_INVAL, "a subscriber id is a positive integer");
}

/* ---- POST /v1/subscribers {name} ---- */

struct subscriber_tx {
	struct kh_sms *c;
	const char *name;
	struct kh__sms_idem im;
	struct kh__sms_why why;
};

static kh_err subscriber_tx(struct kh_store *s, void *arg)
{
	struct subscriber_tx *t = arg;
	int64_t id;
	int done;
	kh_err r;

	if ((r = kh__sms_idem_begin(s, &t->im, &t->why, &done)) != KH_OK || done)
		return r;
	if ((r = kh_store_subscriber_add(s, t->name, &id)) != KH_OK)
		return r;
	return kh__sms_idem_answer(s, t->c, &t->im, 201,
				   json_pack("{s:I,s:s}", "id", (json_int_t)id, "name", t->name));
}

kh_err kh__sms_subscriber_create(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	struct subscriber_tx t = {.c = arg};

	if (kh__sms_json_name(kh_http_body(req), "name", &t.name) != KH_OK)
		return kh_http_reply_error(resp, KH_ERR_INVAL, "name: a string of 1 to 200 bytes");
	return kh__sms_idem_run(req, resp, t.c, subscriber_tx, &t, &t.im, &t.why, NULL);
}

/* ---- GET /v1/subscribers/{id} ---- */

static kh_err add_card(void *arg, const struct kh_store_card *c)
{
	char ua[9], rb[9];
	json_t *o;

	kh__sms_ua_hex(c->ua, ua);
	o = json_pack("{s:s,s:s,s:b}", "ua", ua, "state", kh_card_state_name(c->state), "export_authorised", c->export_authorised);
	if (o == NULL)
		return KH_ERR_NOMEM;
	if (c->replaced_by) {
		kh__sms_ua_hex(c->replaced_by, rb);
		json_object_set_new(o, "replaced_by", json_string(rb));
	}
	if (c->closed_reason)
		json_object_set_new(o, "closed_reason", json_string(kh_card_closed_name(c->closed_reason)));
	return json_array_append_new(arg, o) == 0 ? KH_OK : KH_ERR_NOMEM;
}

json_t *kh__sms_subscription_json(const struct kh_store_subscription *u)
{
	return json_pack("{s:I,s:I,s:I}", "product_id", (json_int_t)u->product_id, "start", (json_int_t)u->start,
			 "end", (json_int_t)u->end);
}

static kh_err add_sub(void *arg, const struct kh_store_subscription *u)
{
	json_t *o = kh__sms_subscription_json(u);
	if (o == NULL || json_array_append_new(arg, o) != 0)
		return KH_ERR_NOMEM;
	return KH_OK;
}

json_t *kh__sms_invoice_json(const struct kh_store_invoice *i, int with_subscriber)
{
	char ua[9];
	json_t *o;

	kh__sms_ua_hex(i->ua, ua);
	o = json_pack("{s:I,s:s,s:I,s:I,s:I,s:I}", "id", (json_int_t)i->id, "ua", ua, "event_id",
		      (json_int_t)i->event_id, "price", (json_int_t)i->price, "time", (json_int_t)i->time,
		      "created_at", (json_int_t)i->created_at);
	if (o == NULL)
		return NULL;
	/* Invoiced otherwise than the card's block said: the flag, and what the block said. */
	if ((i->flag[0] && (json_object_set_new(o, "flag", json_string(i->flag)) != 0 ||
			    json_object_set_new(o, "block_price", json_integer(i->block_price)) != 0)) ||
	    (with_subscriber && i->subscriber_id &&
	     json_object_set_new(o, "subscriber_id", json_integer(i->subscriber_id)) != 0)) {
		json_decref(o);
		return NULL;
	}
	return o;
}

static kh_err add_invoice(void *arg, const struct kh_store_invoice *i)
{
	json_t *o = kh__sms_invoice_json(i, 0);

	if (o == NULL || json_array_append_new(arg, o) != 0)
		return KH_ERR_NOMEM;
	return KH_OK;
}

json_t *kh__sms_subscriber_json(const struct kh_store_subscriber *u)
{
	json_t *o = json_pack("{s:I,s:s,s:I}", "id", (json_int_t)u->id, "name", u->name, "created_at",
			      (json_int_t)u->created_at);

	/* closed: kept for its invoices, and since when */
	if (o && u->closed_at && json_object_set_new(o, "closed_at", json_integer(u->closed_at)) != 0) {
		json_decref(o);
		return NULL;
	}
	return o;
}

static kh_err subscriber_obj(void *arg, const struct kh_store_subscriber *u)
{
	return (*(json_t **)arg = kh__sms_subscriber_json(u)) ? KH_OK : KH_ERR_NOMEM;
}

kh_err kh__sms_subscriber_get(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	json_t *o = NULL, *cards = NULL, *subs = NULL, *inv = NULL;
	struct kh_store *s;
	int64_t id;
	int answered;
	kh_err r;

	if ((r = path_id(req, resp, &id, &answered)) != KH_OK || answered)
		return r;
	if ((r = kh__sms_db(arg, &s)) != KH_OK)
		return r;
	if ((r = kh_store_subscriber_read(s, id, subscriber_obj, &o)) != KH_OK)
		return r == KH_ERR_NOTFOUND ? kh_http_reply_error(resp, r, "subscriber not found") : r;
	if ((cards = json_array()) == NULL || (subs = json_array()) == NULL || (inv = json_array()) == NULL) {
		r = KH_ERR_NOMEM;
		goto fail;
	}
	if ((r = kh_store_cards_of(s, id, add_card, cards)) != KH_OK ||
	    (r = kh_store_subscriptions_of(s, id, add_sub, subs)) != KH_OK ||
	    (r = kh_store_invoices_of(s, id, add_invoice, inv)) != KH_OK)
		goto fail;
	/* json_object_set_new takes each value, set or not: all three are called */
	r = json_object_set_new(o, "cards", cards) != 0 ? KH_ERR_NOMEM : KH_OK;
	if (json_object_set_new(o, "subscriptions", subs) != 0)
		r = KH_ERR_NOMEM;
	if (json_object_set_new(o, "invoices", inv) != 0)
		r = KH_ERR_NOMEM;
	if (r != KH_OK) {
		json_decref(o);
		return r;
	}
	return kh_http_reply(resp, 200, o);
fail:
	json_decref(o);
	json_decref(cards);
	json_decref(subs);
	json_decref(inv);
	return r;
}

/* ---- subscriptions: one transaction with the EMM to the active card ---- */

struct subs_tx {
	struct kh_sms *c;
	struct kh_store_subscription u;
	int del;
	unsigned queued;
	struct kh__sms_idem im;
	struct kh__sms_why why;
};

struct active {
	int found;
	uint32_t ua;
};

static kh_err find_active(void *arg, const struct kh_store_card *c)
{
	struct active *a = arg;

	if (c->state == KH_CARD_ACTIVE) {
		a->found = 1;
		a->ua = c->ua;
	}
	return KH_OK;
}

struct sub_count {
	uint32_t product;
	unsigned n;
	int renewal;
};

static kh_err count_sub(void *arg, const struct kh_store_subscription *u)
{
	struct sub_count *c = arg;

	c->n++;
	if (u->product_id == c->product)
		c->renewal = 1;
	return KH_OK;
}

static kh_err subs_tx_fn(struct kh_store *s, void *arg)
{
	struct subs_tx *a = arg;
	struct active act = {0};
	struct kh__sms_emm e;
	uint8_t cmd[32];
	struct kh_wr w;
	int64_t closed = 0;
	int done;
	kh_err r;

	a->queued = 0;
	if ((r = kh__sms_idem_begin(s, &a->im, &a->why, &done)) != KH_OK || done)
		return r;
	if ((r = kh_store_subscriber_closed(s, a->u.subscriber_id, &closed)) != KH_OK)
		return r == KH_ERR_NOTFOUND ? kh__sms_why(&a->why, r, NULL, "subscriber not found") : r;
	if (a->del) {
		if ((r = kh_store_subscription_del(s, a->u.subscriber_id, a->u.product_id)) != KH_OK)
			return r == KH_ERR_NOTFOUND ? kh__sms_why(&a->why, r, NULL, "no such subscription") : r;
	} else {
		struct sub_count cnt = {a->u.product_id, 0, 0};
		if (closed)
			return kh__sms_why(&a->why, KH_ERR_DB_CONSTRAINT, "subscriber_closed",
					   "the subscriber is closed: a closed subscriber takes no new subscription");
		if ((r = kh_store_product_exists(s, a->u.product_id)) != KH_OK)
			return r == KH_ERR_NOTFOUND ? kh__sms_why(&a->why, r, NULL, "product not found") : r;
		/* A card holds KH_CAS_STATUS_MAX_RIGHTS rights and refuses a whole EMM beyond them. */
		if ((r = kh_store_subscriptions_of(s, a->u.subscriber_id, count_sub, &cnt)) != KH_OK)
			return r;
		if (!cnt.renewal && cnt.n >= KH_CAS_STATUS_MAX_RIGHTS)
			return kh__sms_why(&a->why, KH_ERR_DB_CONSTRAINT, "too_many_subscriptions",
					   "a card holds at most 32 rights: unsubscribe a product first");
		if ((r = kh_store_subscription_put(s, &a->u)) != KH_OK)
			return r;
	}
	if ((r = kh_store_cards_of(s, a->u.subscriber_id, find_active, &act)) != KH_OK)
		return r;
	/* no active card: it gets its rights when it is assigned */
	if (act.found) {
		kh__sms_emm_init(&e, a->c, act.ua);
		kh_wr_init(&w, cmd, sizeof cmd);
		r = a->del ? kh_emm_put_revoke(&w, a->u.product_id)
			   : kh_emm_put_entitle(&w, a->u.product_id, (uint64_t)a->u.start,
						(uint64_t)kh__sms_rights_end(a->c, kh__sms_now(a->c), a->u.start, a->u.end));
		if (r != KH_OK || (r = kh__sms_emm_cmd(s, &e, cmd, w.len)) != KH_OK ||
		    (r = kh__sms_emm_flush(s, &e)) != KH_OK)
			return r;
		a->queued = e.queued;
	}
	if (a->del)
		return kh__sms_idem_answer(s, a->c, &a->im, 200,
					   json_pack("{s:I,s:I,s:i}", "subscriber_id", (json_int_t)a->u.subscriber_id,
						     "product_id", (json_int_t)a->u.product_id, "emms_queued", (int)a->queued));
	return kh__sms_idem_answer(s, a->c, &a->im, 201,
				   json_pack("{s:I,s:I,s:I,s:I,s:i}", "subscriber_id", (json_int_t)a->u.subscriber_id,
					     "product_id", (json_int_t)a->u.product_id, "start", (json_int_t)a->u.start,
					     "end", (json_int_t)a->u.end, "emms_queued", (int)a->queued));
}

/* POST /v1/subscribers/{id}/subscriptions {product_id, start, end} */
kh_err kh__sms_subscribe(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	struct subs_tx a = {.c = arg};
	json_t *b = kh_http_body(req);
	int64_t product;
	int answered;
	kh_err r;

	if ((r = path_id(req, resp, &a.u.subscriber_id, &answered)) != KH_OK || answered)
		return r;
	if (kh__sms_json_int(b, "product_id", 0, UINT32_MAX, 1, &product) != KH_OK ||
	    kh__sms_json_int(b, "start", 0, INT64_MAX / 2, 1, &a.u.start) != KH_OK ||
	    kh__sms_json_int(b, "end", 0, INT64_MAX / 2, 1, &a.u.end) != KH_OK || a.u.start >= a.u.end)
		return kh_http_reply_error(resp, KH_ERR_INVAL,
					   "product_id (u32), start and end (Unix seconds, start < end) are required");
	a.u.product_id = (uint32_t)product;
	return kh__sms_idem_run(req, resp, a.c, subs_tx_fn, &a, &a.im, &a.why, &a.queued);
}

/* DELETE /v1/subscribers/{id}/subscriptions/{product_id} */
kh_err kh__sms_unsubscribe(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	struct subs_tx a = {.c = arg, .del = 1};
	const char *p = kh_http_param(req, "product_id");
	char *end;
	unsigned long long v;
	int answered;
	kh_err r;

	if ((r = path_id(req, resp, &a.u.subscriber_id, &answered)) != KH_OK || answered)
		return r;
	if (p == NULL || *p < '0' || *p > '9' || (v = strtoull(p, &end, 10), *end) || v > UINT32_MAX)
		return kh_http_reply_error(resp, KH_ERR_INVAL, "a product id is an integer from 0 to 4294967295");
	a.u.product_id = (uint32_t)v;
	return kh__sms_idem_run(req, resp, a.c, subs_tx_fn, &a, &a.im, &a.why, &a.queued);
}
