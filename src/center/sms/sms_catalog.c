/*
 * The catalogue at the management center: products (what a subscription entitles to,
 * the ECM's access criterion by product), channels (each covered by a product) and pay-per-view
 * events with their prices (the ECM's access criterion by event). Their ids travel in ECMs and
 * EMMs, so the operator may choose them ("id" in the body); without one the next free id is used.
 * Nothing here queues an EMM: a card learns of a product through ENTITLE, of an event's price
 * through the ECM. The lists are in sms_list.c, renames and deletions in sms_edit.c; each row's
 * JSON is built here, once.
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

/* A catalogue row added through the center's writer (kh__sms_write), like every write. */
struct add_tx {
	enum list_kind k;
	const void *row; /* struct kh_store_product / _channel / _event */
	uint32_t *id;
};

static kh_err add_tx(struct kh_store *s, void *arg)
{
	const struct add_tx *t = arg;
	*t->id = 0; /* the store picks the next id when none is given; a retry starts again */
	return t->k == PRODUCTS ? kh_store_product_add(s, t->row, t->id)
	       : t->k == CHANNELS ? kh_store_channel_add(s, t->row, t->id)
				  : kh_store_event_add(s, t->row, t->id);
}

/* The answer to an add: the row's JSON with the id used, or the refusal. */
static kh_err add_reply(struct kh_http_resp *resp, kh_err r, const char *what_missing, json_t *o)
{
	if (r != KH_OK) {
		if (r == KH_ERR_EXISTS)
			return kh_http_reply_error(resp, r, "id already in use");
		if (r == KH_ERR_NOTFOUND)
			return kh_http_reply_error(resp, r, what_missing);
		return r;
	}
	if (o == NULL)
		return KH_ERR_NOMEM;
	return kh_http_reply(resp, 201, o);
}

/* ---- products ---- */

kh_err kh__sms_product_create(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	json_t *b = kh_http_body(req);
	struct kh_store_product p;
	uint32_t id = 0;
	kh_err r;

	if (kh__sms_json_name(b, "name", &p.name) != KH_OK || opt_id(b, &p.id) != KH_OK)
		return kh_http_reply_error(resp, KH_ERR_INVAL, "name (1 to 200 bytes) is required; id, if given, 1 to 4294967295");
	{
		struct add_tx t = {PRODUCTS, &p, &id};
		r = kh__sms_write(arg, add_tx, &t);
	}
	p.id = id;
	return add_reply(resp, r, NULL, r == KH_OK ? kh__sms_product_json(&p) : NULL);
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
	int64_t product;
	uint32_t id = 0;
	kh_err r;

	if (kh__sms_json_name(b, "name", &c.name) != KH_OK || opt_id(b, &c.id) != KH_OK ||
	    kh__sms_json_int(b, "product_id", 0, UINT32_MAX, 1, &product) != KH_OK)
		return kh_http_reply_error(resp, KH_ERR_INVAL,
					   "name (1 to 200 bytes) and product_id are required; id, if given, 1 to 4294967295");
	c.product_id = (uint32_t)product;
	{
		struct add_tx t = {CHANNELS, &c, &id};
		r = kh__sms_write(arg, add_tx, &t);
	}
	c.id = id;
	return add_reply(resp, r, "product not found", r == KH_OK ? kh__sms_channel_json(&c) : NULL);
}

/* ---- pay-per-view events ---- */

kh_err kh__sms_event_create(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	json_t *b = kh_http_body(req);
	struct kh_store_event e;
	int64_t price, channel;
	uint32_t id = 0;
	kh_err r;

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
	{
		struct add_tx t = {EVENTS, &e, &id};
		r = kh__sms_write(arg, add_tx, &t);
	}
	e.id = id;
	return add_reply(resp, r, "channel not found", r == KH_OK ? kh__sms_event_json(&e) : NULL);
}
