/*
 * The catalogue at the management center: products (what a subscription entitles to,
 * the ECM's access criterion by product), channels (each covered by a product) and pay-per-view
 * events with their prices (the ECM's access criterion by event). Their ids travel in ECMs and
 * EMMs, so the operator may choose them ("id" in the body); without one the next free id is used.
 * Nothing here queues an EMM: a card learns of a product through ENTITLE, of an event's price
 * through the ECM. Each addition keeps its Idempotency-Key (kh__sms_idem_*): a retry gets the
 * first answer and adds nothing more. The lists are in sms_list.c, renames and deletions in
 * sms_edit.c; each row's JSON is built here, once.
 */
#include <stdlib.h>
#include <string.h>

#include "sms_int.h"

/* The optional "id": 1..u32; *id 0 when absent. */
static kh_err opt_id(const json_t *b, uint32_t *id)
{
	int64_t v;
	kh_err r = kh__sms_json_int(b, "id", 1, UINT32_MAX, 0, &v);

	if (r == KH_ERR_NOTFOUND) {
		*id = 0;
		return KH_OK;
	}
	if (r == KH_OK)
		*id = (uint32_t)v;
	return r;
}

enum list_kind { PRODUCTS, CHANNELS, EVENTS };

/*
 * A catalogue row added through the center's writer (kh__sms_write), like every write, its
 * answer (the row with the id used) stored under the request's Idempotency-Key in the same
 * transaction.
 */
struct add_tx {
	struct kh_sms *c;
	enum list_kind k;
	const void *row;     /* struct kh_store_product / _channel / _event, as asked */
	const char *missing; /* what a 404 names: the product (channel) or channel (event) */
	struct kh__sms_idem im;
	struct kh__sms_why why;
};

static kh_err add_tx(struct kh_store *s, void *arg)
{
	struct add_tx *t = arg;
	uint32_t id = 0; /* the store picks the next id when none is given */
	json_t *o = NULL;
	int done;
	kh_err r;

	if ((r = kh__sms_idem_begin(s, &t->im, &t->why, &done)) != KH_OK || done)
		return r;
	/* the row as asked stays as it is: a busy retry of the transaction starts again */
	if (t->k == PRODUCTS) {
		struct kh_store_product p = *(const struct kh_store_product *)t->row;
		r = kh_store_product_add(s, &p, &id);
		p.id = id;
		o = r == KH_OK ? kh__sms_product_json(&p) : NULL;
	} else if (t->k == CHANNELS) {
		struct kh_store_channel ch = *(const struct kh_store_channel *)t->row;
		r = kh_store_channel_add(s, &ch, &id);
		ch.id = id;
		o = r == KH_OK ? kh__sms_channel_json(&ch) : NULL;
	} else {
		struct kh_store_event e = *(const struct kh_store_event *)t->row;
		r = kh_store_event_add(s, &e, &id);
		e.id = id;
		o = r == KH_OK ? kh__sms_event_json(&e) : NULL;
	}
	if (r == KH_ERR_EXISTS)
		return kh__sms_why(&t->why, r, NULL, "id already in use");
	if (r == KH_ERR_NOTFOUND)
		return kh__sms_why(&t->why, r, NULL, t->missing);
	if (r != KH_OK)
		return r;
	return kh__sms_idem_answer(s, t->c, &t->im, 201, o);
}

/* ---- products ---- */

kh_err kh__sms_product_create(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	json_t *b = kh_http_body(req);
	struct kh_store_product p;
	struct add_tx t = {.c = arg, .k = PRODUCTS, .row = &p};

	if (kh__sms_json_name(b, "name", &p.name) != KH_OK || opt_id(b, &p.id) != KH_OK)
		return kh_http_reply_error(resp, KH_ERR_INVAL, "name (1 to 200 bytes) is required; id, if given, 1 to 4294967295");
	return kh__sms_idem_run(req, resp, t.c, add_tx, &t, &t.im, &t.why, NULL);
}

json_t *kh__sms_product_json(const struct kh_store_product *p)
{
	return json_pack("{s:I,s:s}", "id", (json_int_t)p->id, "name", p->name);
}

json_t *kh__sms_channel_json(const struct kh_store_channel *c)
{
	return json_pack("{s:I,s:s,s:I}", "id", (json_int_t)c->id, "name", c->name, "product_id",
			 (json_int_t)c->product_id);
}

json_t *kh__sms_event_json(const struct kh_store_event *e)
{
	return json_pack("{s:I,s:s,s:I,s:I,s:I,s:I}", "id", (json_int_t)e->id, "name", e->name, "price",
			 (json_int_t)e->price, "channel_id", (json_int_t)e->channel_id, "start", (json_int_t)e->start,
			 "end", (json_int_t)e->end);
}

/* ---- channels ---- */

kh_err kh__sms_channel_create(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	json_t *b = kh_http_body(req);
	struct kh_store_channel c;
	struct add_tx t = {.c = arg, .k = CHANNELS, .row = &c, .missing = "product not found"};
	int64_t product;

	if (kh__sms_json_name(b, "name", &c.name) != KH_OK || opt_id(b, &c.id) != KH_OK ||
	    kh__sms_json_int(b, "product_id", 0, UINT32_MAX, 1, &product) != KH_OK)
		return kh_http_reply_error(resp, KH_ERR_INVAL,
					   "name (1 to 200 bytes) and product_id are required; id, if given, 1 to 4294967295");
	c.product_id = (uint32_t)product;
	return kh__sms_idem_run(req, resp, t.c, add_tx, &t, &t.im, &t.why, NULL);
}

/* ---- pay-per-view events ---- */

kh_err kh__sms_event_create(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	json_t *b = kh_http_body(req);
	struct kh_store_event e;
	struct add_tx t = {.c = arg, .k = EVENTS, .row = &e, .missing = "channel not found"};
	int64_t price, channel;

	if (kh__sms_json_name(b, "name", &e.name) != KH_OK || opt_id(b, &e.id) != KH_OK ||
	    kh__sms_json_int(b, "price", 0, UINT32_MAX, 1, &price) != KH_OK ||
	    kh__sms_json_int(b, "channel_id", 0, UINT32_MAX, 1, &channel) != KH_OK ||
	    kh__sms_json_int(b, "start", 0, INT64_MAX / 2, 1, &e.start) != KH_OK ||
	    kh__sms_json_int(b, "end", 0, INT64_MAX / 2, 1, &e.end) != KH_OK || e.start >= e.end)
		return kh_http_reply_error(resp, KH_ERR_INVAL,
					   "name, price (u32), channel_id, start and end (Unix seconds, start < end) "
					   "are required");
	e.price = (uint32_t)price;
	e.channel_id = (uint32_t)channel;
	return kh__sms_idem_run(req, resp, t.c, add_tx, &t, &t.im, &t.why, NULL);
}
