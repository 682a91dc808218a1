/*
 * Renaming, closing and deleting at the management center (docs/internals/sms.md "Renames,
 * closing and deletions"): PATCH and DELETE of subscribers, cards, products, channels and
 * pay-per-view events. Each is one transaction through the center's writer: the rule's checks
 * and the write commit together, so a refusal (409 conflict, saying why) changes nothing, and
 * nothing is half-done. An Idempotency-Key, when the request carries one, is bound in the same
 * transaction as every operator write binds its own (kh__sms_idem_*): a retry gets the first
 * answer and changes nothing more.
 *
 * The rules keep what an invoice or a card still needs:
 *   - a subscriber is never deleted, only closed (closed_at), since invoices name it; it is
 *     closed only once it has no active card and no subscription that has not ended, and a
 *     closed subscriber takes no new card or subscription (sms_cards.c, sms_subscribers.c,
 *     sms_bulk.c);
 *   - a card is deleted only while issued (registered, never assigned): one that was used may
 *     hold purchases the center has not seen yet, so it stays, replaced or closed;
 *   - a product goes only when no subscription, channel or unfinished job refers to it, a
 *     channel only when no event is on it (the schema's reference: the contract names no rule),
 *     and an event only when no card bought it; nor do its price and times change then.
 */
#include <stdlib.h>
#include <string.h>

#include "sms_int.h"

struct edit {
	struct kh_sms *c;
	int64_t id;       /* subscriber id, catalogue id or UA */
	const char *name; /* PATCH: the new name; NULL: unchanged (events) */
	/* PATCH of an event: what the body gives (has_*), else the event's own */
	int has_price, has_start, has_end;
	int64_t price, start, end;
	int forget;       /* a card deleted: its checked keys go once committed */
	struct kh__sms_idem im;
	struct kh__sms_why why;
};

static kh_err conflict(struct edit *e, const char *msg)
{
	return kh__sms_why(&e->why, KH_ERR_DB_CONSTRAINT, "conflict", msg);
}

static kh_err not_found(struct edit *e, kh_err r, const char *msg)
{
	return r == KH_ERR_NOTFOUND ? kh__sms_why(&e->why, r, NULL, msg) : r;
}

/* {"deleted": true}, stored with the key when there is one. */
static kh_err deleted(struct kh_store *s, struct edit *e)
{
	return kh__sms_idem_answer(s, e->c, &e->im, 200, json_pack("{s:b}", "deleted", 1));
}

/* The row's JSON, read back in the transaction, as the answer (stored with the key). */
struct answer {
	struct edit *e;
	struct kh_store *s;
};

static kh_err subscriber_answer(void *arg, const struct kh_store_subscriber *u)
{
	struct answer *a = arg;
	return kh__sms_idem_answer(a->s, a->e->c, &a->e->im, 200, kh__sms_subscriber_json(u));
}

static kh_err product_answer(void *arg, const struct kh_store_product *x)
{
	struct answer *a = arg;
	return kh__sms_idem_answer(a->s, a->e->c, &a->e->im, 200, kh__sms_product_json(x));
}

static kh_err channel_answer(void *arg, const struct kh_store_channel *x)
{
	struct answer *a = arg;
	return kh__sms_idem_answer(a->s, a->e->c, &a->e->im, 200, kh__sms_channel_json(x));
}

static kh_err event_answer(void *arg, const struct kh_store_event *x)
{
	struct answer *a = arg;
	return kh__sms_idem_answer(a->s, a->e->c, &a->e->im, 200, kh__sms_event_json(x));
}

/* ---- subscribers ---- */

static kh_err subscriber_patch_tx(struct kh_store *s, void *arg)
{
	struct edit *e = arg;
	struct answer a = {e, s};
	int done;
	kh_err r;

	if ((r = kh__sms_idem_begin(s, &e->im, &e->why, &done)) != KH_OK || done)
		return r;
	if ((r = kh_store_rename(s, KH_STORE_SUBSCRIBER, e->id, e->name)) != KH_OK)
		return not_found(e, r, "subscriber not found");
	return kh_store_subscriber_read(s, e->id, subscriber_answer, &a);
}

static kh_err subscriber_close_tx(struct kh_store *s, void *arg)
{
	struct edit *e = arg;
	struct answer a = {e, s};
	int64_t closed = 0, now = kh__sms_now(e->c);
	int done, yes = 0;
	kh_err r;

	if ((r = kh__sms_idem_begin(s, &e->im, &e->why, &done)) != KH_OK || done)
		return r;
	if ((r = kh_store_subscriber_closed(s, e->id, &closed)) != KH_OK)
		return not_found(e, r, "subscriber not found");
	/* closed already: the same answer, nothing changes (a DELETE may be repeated) */
	if (closed)
		return kh_store_subscriber_read(s, e->id, subscriber_answer, &a);
	if ((r = kh_store_refers(s, KH_STORE_REF_ACTIVE_CARD, e->id, now, &yes)) != KH_OK)
		return r;
	if (yes)
		return conflict(e, "the subscriber has an active card: replace it and let the old one be recovered "
				   "or forfeited, or keep the subscriber");
	if ((r = kh_store_refers(s, KH_STORE_REF_RUNNING_SUB, e->id, now, &yes)) != KH_OK)
		return r;
	if (yes)
		return conflict(e, "the subscriber holds a subscription that has not ended: unsubscribe it first");
	if ((r = kh_store_subscriber_close(s, e->id, now)) != KH_OK)
		return r;
	return kh_store_subscriber_read(s, e->id, subscriber_answer, &a);
}

/* ---- cards ---- */

static kh_err card_delete_tx(struct kh_store *s, void *arg)
{
	struct edit *e = arg;
	struct kh_store_card card;
	int done, yes = 0;
	kh_err r;

	if ((r = kh__sms_idem_begin(s, &e->im, &e->why, &done)) != KH_OK || done)
		return r;
	if ((r = kh_store_card_get(s, (uint32_t)e->id, &card)) != KH_OK)
		return not_found(e, r, "card not registered");
	if (card.state != KH_CARD_ISSUED)
		return conflict(e, "only a card in state issued (never assigned) can be deleted: a card that was "
				   "used may hold purchases not yet seen, so it stays, replaced or closed, for its invoices");
	if ((r = kh_store_refers(s, KH_STORE_REF_CARD_USAGE, e->id, 0, &yes)) != KH_OK)
		return r;
	if (yes)
		return conflict(e, "the card has usage recorded (blocks, purchases or reloads): it stays for its invoices");
	if ((r = kh_store_delete(s, KH_STORE_CARD, e->id)) != KH_OK)
		return r;
	return deleted(s, e);
}

/* ---- the catalogue ---- */

static kh_err product_patch_tx(struct kh_store *s, void *arg)
{
	struct edit *e = arg;
	struct answer a = {e, s};
	int done;
	kh_err r;

	if ((r = kh__sms_idem_begin(s, &e->im, &e->why, &done)) != KH_OK || done)
		return r;
	if ((r = kh_store_rename(s, KH_STORE_PRODUCT, e->id, e->name)) != KH_OK)
		return not_found(e, r, "product not found");
	return kh_store_product_read(s, (uint32_t)e->id, product_answer, &a);
}

static kh_err channel_patch_tx(struct kh_store *s, void *arg)
{
	struct edit *e = arg;
	struct answer a = {e, s};
	int done;
	kh_err r;

	if ((r = kh__sms_idem_begin(s, &e->im, &e->why, &done)) != KH_OK || done)
		return r;
	if ((r = kh_store_rename(s, KH_STORE_CHANNEL, e->id, e->name)) != KH_OK)
		return not_found(e, r, "channel not found");
	return kh_store_channel_read(s, (uint32_t)e->id, channel_answer, &a);
}

/* The event as it is (price and times), for a PATCH that gives only some of them. */
static kh_err event_now(void *arg, const struct kh_store_event *x)
{
	struct kh_store_event *out = arg;

	*out = *x;
	out->name = NULL; /* valid during the call only */
	return KH_OK;
}

static kh_err event_patch_tx(struct kh_store *s, void *arg)
{
	struct edit *e = arg;
	struct answer a = {e, s};
	struct kh_store_event cur;
	int64_t price, start, end;
	int done, yes = 0;
	kh_err r;

	if ((r = kh__sms_idem_begin(s, &e->im, &e->why, &done)) != KH_OK || done)
		return r;
	if ((r = kh_store_event_read(s, (uint32_t)e->id, event_now, &cur)) != KH_OK)
		return not_found(e, r, "event not found");
	price = e->has_price ? e->price : cur.price;
	start = e->has_start ? e->start : cur.start;
	end = e->has_end ? e->end : cur.end;
	if (start >= end)
		return kh__sms_why(&e->why, KH_ERR_INVAL, NULL, "start must come before end");
	if (price != cur.price || start != cur.start || end != cur.end) {
		/* what a card bought is what its block says it paid for: that stays as it was sold */
		if ((r = kh_store_refers(s, KH_STORE_REF_EVENT_PURCHASE, e->id, 0, &yes)) != KH_OK)
			return r;
		if (yes)
			return conflict(e, "a card bought this event: its price and times cannot change (its name can)");
		if ((r = kh_store_event_update(s, (uint32_t)e->id, (uint32_t)price, start, end)) != KH_OK)
			return r;
	}
	if (e->name && (r = kh_store_rename(s, KH_STORE_EVENT, e->id, e->name)) != KH_OK)
		return r;
	return kh_store_event_read(s, (uint32_t)e->id, event_answer, &a);
}

/* One reference that refuses a deletion, and what the refusal says. */
struct hold {
	enum kh_store_ref ref;
	const char *msg;
};

/* Delete one catalogue row of kind what once none of holds[0..n) holds it. */
static kh_err delete_row(struct kh_store *s, struct edit *e, enum kh_store_row what, const char *missing,
			 const struct hold *holds, size_t n)
{
	int done, yes = 0;
	kh_err r;

	if ((r = kh__sms_idem_begin(s, &e->im, &e->why, &done)) != KH_OK || done)
		return r;
	for (size_t i = 0; i < n; i++) {
		if ((r = kh_store_refers(s, holds[i].ref, e->id, 0, &yes)) != KH_OK)
			return r;
		if (yes)
			return conflict(e, holds[i].msg);
	}
	if ((r = kh_store_delete(s, what, e->id)) != KH_OK)
		return not_found(e, r, missing);
	return deleted(s, e);
}

static kh_err product_delete_tx(struct kh_store *s, void *arg)
{
	static const struct hold holds[] = {
		{KH_STORE_REF_PRODUCT_SUB, "a subscription refers to this product: unsubscribe first"},
		{KH_STORE_REF_PRODUCT_CHANNEL, "a channel refers to this product: delete or move it first"},
		{KH_STORE_REF_PRODUCT_JOB, "a bulk subscription or rights renewal of this product is unfinished"},
	};
	return delete_row(s, arg, KH_STORE_PRODUCT, "product not found", holds, sizeof holds / sizeof holds[0]);
}

static kh_err channel_delete_tx(struct kh_store *s, void *arg)
{
	static const struct hold holds[] = {
		{KH_STORE_REF_CHANNEL_EVENT, "an event is on this channel: delete it first"},
	};
	return delete_row(s, arg, KH_STORE_CHANNEL, "channel not found", holds, sizeof holds / sizeof holds[0]);
}

static kh_err event_delete_tx(struct kh_store *s, void *arg)
{
	static const struct hold holds[] = {
		{KH_STORE_REF_EVENT_PURCHASE, "a card bought this event: it stays for its invoices"},
	};
	return delete_row(s, arg, KH_STORE_EVENT, "event not found", holds, sizeof holds / sizeof holds[0]);
}

/* ---- the handlers ---- */

/* Run fn through the writer and answer: the first answer (again, when replayed), or the refusal. */
static kh_err run(struct kh_http_resp *resp, struct edit *e, kh_store_tx_fn fn)
{
	kh_err r = kh__sms_write(e->c, fn, e);

	if (r != KH_OK)
		return kh__sms_idem_fail(resp, &e->im, r, &e->why);
	/* committed: an upload never checks a block against a deleted card's certificate again */
	if (e->forget)
		kh__sms_card_forget(e->c, (uint32_t)e->id);
	return kh__sms_idem_reply(resp, &e->im);
}

enum id_kind { SUBSCRIBER_ID, CATALOGUE_ID, CARD_UA };

/* The path's id of its kind, and the key: *answered when the request was refused here. */
static kh_err start(struct kh_http_req *req, struct kh_http_resp *resp, enum id_kind k, struct edit *e,
		    int *answered)
{
	static const char *const bad[] = {"a subscriber id is a positive integer",
					  "an id is an integer from 1 to 4294967295", "a UA is 8 hexadecimal digits"};
	uint32_t ua;
	kh_err r = KH_OK;

	*answered = 1;
	if (k == CARD_UA) {
		if ((r = kh__sms_parse_ua(kh_http_param(req, "ua"), &ua)) == KH_OK)
			e->id = ua;
	} else if ((r = kh__sms_parse_id(kh_http_param(req, "id"), &e->id)) == KH_OK && k == CATALOGUE_ID &&
		   e->id > UINT32_MAX) {
		r = KH_ERR_INVAL;
	}
	if (r != KH_OK)
		return kh_http_reply_error(resp, KH_ERR_INVAL, bad[k]);
	*answered = 0;
	/* the key, if any (its form was checked by the HTTP layer) */
	return kh__sms_idem_init(req, KH__SMS_CALLER_OPERATOR, NULL, &e->im);
}

/* PATCH {name} of a subscriber, product or channel. */
static kh_err patch_name(struct kh_http_req *req, struct kh_http_resp *resp, void *arg, enum id_kind k,
			 kh_store_tx_fn fn)
{
	struct edit e = {.c = arg};
	int answered;
	kh_err r;

	if ((r = start(req, resp, k, &e, &answered)) != KH_OK || answered)
		return r;
	if (kh__sms_json_name(kh_http_body(req), "name", &e.name) != KH_OK)
		return kh_http_reply_error(resp, KH_ERR_INVAL, "name: a string of 1 to 200 bytes");
	return run(resp, &e, fn);
}

/* DELETE of one row. */
static kh_err delete(struct kh_http_req *req, struct kh_http_resp *resp, void *arg, enum id_kind k,
		     kh_store_tx_fn fn)
{
	struct edit e = {.c = arg, .forget = k == CARD_UA};
	int answered;
	kh_err r;

	if ((r = start(req, resp, k, &e, &answered)) != KH_OK || answered)
		return r;
	return run(resp, &e, fn);
}

kh_err kh__sms_subscriber_patch(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	return patch_name(req, resp, arg, SUBSCRIBER_ID, subscriber_patch_tx);
}

kh_err kh__sms_subscriber_delete(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	return delete(req, resp, arg, SUBSCRIBER_ID, subscriber_close_tx);
}

kh_err kh__sms_card_delete(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	return delete(req, resp, arg, CARD_UA, card_delete_tx);
}

kh_err kh__sms_product_patch(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	return patch_name(req, resp, arg, CATALOGUE_ID, product_patch_tx);
}

kh_err kh__sms_product_delete(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	return delete(req, resp, arg, CATALOGUE_ID, product_delete_tx);
}

kh_err kh__sms_channel_patch(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	return patch_name(req, resp, arg, CATALOGUE_ID, channel_patch_tx);
}

kh_err kh__sms_channel_delete(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	return delete(req, resp, arg, CATALOGUE_ID, channel_delete_tx);
}

/* An optional integer field in [0, max]: *has when given. */
static kh_err opt_int(const json_t *b, const char *key, int64_t max, int *has, int64_t *v)
{
	kh_err r = kh__sms_json_int(b, key, 0, max, 0, v);

	*has = r == KH_OK;
	return r == KH_ERR_NOTFOUND ? KH_OK : r;
}

/* PATCH {name?, price?, start?, end?} of an event: at least one. */
kh_err kh__sms_event_patch(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	struct edit e = {.c = arg};
	json_t *b = kh_http_body(req);
	int answered;
	kh_err r;

	if ((r = start(req, resp, CATALOGUE_ID, &e, &answered)) != KH_OK || answered)
		return r;
	if ((json_object_get(b, "name") && kh__sms_json_name(b, "name", &e.name) != KH_OK) ||
	    opt_int(b, "price", UINT32_MAX, &e.has_price, &e.price) != KH_OK ||
	    opt_int(b, "start", KH__SMS_TIME_MAX, &e.has_start, &e.start) != KH_OK ||
	    opt_int(b, "end", KH__SMS_TIME_MAX, &e.has_end, &e.end) != KH_OK ||
	    (!e.name && !e.has_price && !e.has_start && !e.has_end))
		return kh_http_reply_error(resp, KH_ERR_INVAL,
					   "give name (1 to 200 bytes), price (u32), start or end (Unix seconds)");
	return run(resp, &e, event_patch_tx);
}

kh_err kh__sms_event_delete(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	return delete(req, resp, arg, CATALOGUE_ID, event_delete_tx);
}
