/*
 * The operator's lists and reads at the management center (docs/internals/sms.md "Lists"):
 * subscribers, cards, the catalogue, invoices, a subscriber's subscriptions, a card's EMM queue,
 * the stored upload sessions and the bulk jobs, each page by page, and one product, channel,
 * event or job by id. Every item is the JSON the resource's write or read answers (one builder
 * per resource), so a client parses one shape.
 *
 * Pages are keyset pages (the store's kh_store_page): `limit` (1 to 1000, default 100) rows after
 * the `cursor` a previous page answered as `next_cursor`. A cursor is unpadded base64url of a
 * short text, a letter naming the list and the last row's key ("s:42", "i:1700000000:17",
 * "j:op:..."): opaque to a client, checked here (another list's cursor, or one that does not
 * decode, is 400 invalid), and never an offset, so a page is the same whatever was added
 * before it meanwhile.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sms_int.h"

#define PAGE_DEFAULT 100
/* "j:" and a bulk job's key: the longest cursor text */
#define CURSOR_TEXT_MAX (2 + KH_STORE_IDEM_KEY_MAX)

kh_err kh__sms_invalid(struct kh_http_resp *resp, const char *msg)
{
	struct kh__sms_why w;

	/* the contract's code for a query a list cannot take ("invalid_argument" is the body's) */
	return kh__sms_fail(resp, kh__sms_why(&w, KH_ERR_INVAL, "invalid", msg), &w);
}

/* A decimal int64 that is all of s[0..n) (a '-' first allowed): KH_ERR_INVAL otherwise. */
static kh_err parse_i64(const char *s, size_t n, int64_t *v)
{
	char buf[24], *end;
	long long x;

	if (n == 0 || n >= sizeof buf)
		return KH_ERR_INVAL;
	memcpy(buf, s, n);
	buf[n] = 0;
	if (!((buf[0] >= '0' && buf[0] <= '9') || (buf[0] == '-' && buf[1] >= '0' && buf[1] <= '9')))
		return KH_ERR_INVAL;
	errno = 0;
	x = strtoll(buf, &end, 10);
	if (*end || errno)
		return KH_ERR_INVAL;
	*v = x;
	return KH_OK;
}

/* The cursor c of a list of kind into p->pg. */
static kh_err cursor_decode(const char *c, char kind, struct kh__sms_page *p)
{
	char text[CURSOR_TEXT_MAX + 1];
	const char *sep;
	size_t n = 0, len = strlen(c);

	if (len == 0 || len > kh_b64url_len(CURSOR_TEXT_MAX) ||
	    kh_b64url_decode(c, len, (uint8_t *)text, CURSOR_TEXT_MAX, &n) != KH_OK || n < 3 || text[0] != kind ||
	    text[1] != ':' || memchr(text, 0, n) != NULL)
		return KH_ERR_INVAL;
	text[n] = 0;
	p->pg.after_set = 1;
	if (kind == 'j') {
		memcpy(p->after_key, text + 2, n - 1); /* with its NUL */
		p->pg.after_key = p->after_key;
		return KH_OK;
	}
	if (kind != 'i')
		return parse_i64(text + 2, n - 2, &p->pg.after);
	/* invoices: time ":" id */
	if ((sep = strchr(text + 2, ':')) == NULL || parse_i64(text + 2, (size_t)(sep - text - 2), &p->pg.after) != KH_OK)
		return KH_ERR_INVAL;
	return parse_i64(sep + 1, strlen(sep + 1), &p->pg.after_id);
}

kh_err kh__sms_page_start(struct kh_http_req *req, struct kh_http_resp *resp, char kind, struct kh__sms_page *p,
			  int *answered)
{
	const char *cursor = kh_http_query(req, "cursor");
	int64_t limit;

	memset(p, 0, sizeof *p);
	p->kind = kind;
	*answered = 1;
	if (kh__sms_query_int(req, "limit", PAGE_DEFAULT, KH_STORE_PAGE_MAX, &limit) != KH_OK || limit < 1)
		return kh__sms_invalid(resp, "limit must be an integer from 1 to 1000");
	p->pg.limit = (unsigned)limit;
	if (cursor && cursor_decode(cursor, kind, p) != KH_OK)
		return kh__sms_invalid(resp, "cursor: pass the next_cursor a page of this list answered, as it was");
	if ((p->items = json_array()) == NULL)
		return KH_ERR_NOMEM;
	*answered = 0;
	return KH_OK;
}

kh_err kh__sms_page_add(struct kh__sms_page *p, json_t *o, int64_t key, int64_t id)
{
	if (o == NULL || json_array_append_new(p->items, o) != 0)
		return KH_ERR_NOMEM;
	p->last = key;
	p->last_id = id;
	p->n++;
	return KH_OK;
}

/* The next page's cursor, or JSON null on the last page. */
static json_t *next_cursor(const struct kh__sms_page *p)
{
	char text[CURSOR_TEXT_MAX + 1], out[KH__SMS_B64_CAP(CURSOR_TEXT_MAX)];
	int n;

	if (!p->more || p->n == 0)
		return json_null();
	if (p->kind == 'j')
		n = snprintf(text, sizeof text, "j:%s", p->last_key);
	else if (p->kind == 'i')
		n = snprintf(text, sizeof text, "i:%lld:%lld", (long long)p->last, (long long)p->last_id);
	else
		n = snprintf(text, sizeof text, "%c:%lld", p->kind, (long long)p->last);
	if (n < 0 || (size_t)n >= sizeof text ||
	    kh_b64url_encode((const uint8_t *)text, (size_t)n, out, sizeof out) != KH_OK)
		return NULL;
	return json_string(out);
}

kh_err kh__sms_page_reply(struct kh_http_resp *resp, struct kh__sms_page *p, const char *items_name, kh_err r)
{
	json_t *items = p->items, *next;

	p->items = NULL;
	if (r != KH_OK) {
		json_decref(items);
		return r;
	}
	if ((next = next_cursor(p)) == NULL) {
		json_decref(items);
		return KH_ERR_NOMEM;
	}
	return kh_http_reply(resp, 200, json_pack("{s:o,s:o}", items_name, items, "next_cursor", next));
}

/* ---- the rows of each list ---- */

static kh_err page_subscriber(void *arg, const struct kh_store_subscriber *u)
{
	return kh__sms_page_add(arg, kh__sms_subscriber_json(u), u->id, 0);
}

static kh_err page_card(void *arg, const struct kh_store_card *c)
{
	return kh__sms_page_add(arg, kh__sms_card_json(c), c->ua, 0);
}

static kh_err page_product(void *arg, const struct kh_store_product *x)
{
	return kh__sms_page_add(arg, kh__sms_product_json(x), x->id, 0);
}

static kh_err page_channel(void *arg, const struct kh_store_channel *x)
{
	return kh__sms_page_add(arg, kh__sms_channel_json(x), x->id, 0);
}

static kh_err page_event(void *arg, const struct kh_store_event *x)
{
	return kh__sms_page_add(arg, kh__sms_event_json(x), x->id, 0);
}

static kh_err page_invoice(void *arg, const struct kh_store_invoice *i)
{
	return kh__sms_page_add(arg, kh__sms_invoice_json(i, 1), i->time, i->id);
}

static kh_err page_subscription(void *arg, const struct kh_store_subscription *u)
{
	return kh__sms_page_add(arg, kh__sms_subscription_json(u), u->product_id, 0);
}

/* ---- the filters ---- */

/* A filter naming a subscriber, product or channel id (a positive integer) or absent (*has 0). */
static kh_err query_id(struct kh_http_req *req, const char *name, int64_t max, int *has, int64_t *v)
{
	const char *q = kh_http_query(req, name);

	*has = q != NULL;
	if (q == NULL)
		return KH_OK;
	if (kh__sms_parse_id(q, v) != KH_OK || *v > max)
		return KH_ERR_INVAL;
	return KH_OK;
}

/* since and until (Unix seconds), the window [since, until). */
static kh_err query_window(struct kh_http_req *req, int64_t *since, int64_t *until)
{
	if (kh__sms_query_time(req, "since", INT64_MIN, since) != KH_OK ||
	    kh__sms_query_time(req, "until", INT64_MAX, until) != KH_OK)
		return KH_ERR_INVAL;
	return KH_OK;
}

/* A list that cannot start: its items array goes, the answer is the refusal. */
static kh_err refuse(struct kh_http_resp *resp, struct kh__sms_page *p, const char *msg)
{
	json_decref(p->items);
	p->items = NULL;
	return kh__sms_invalid(resp, msg);
}

/* This thread's store, or the failure (the page is dropped). */
static kh_err page_db(struct kh_sms *c, struct kh__sms_page *p, struct kh_store **s)
{
	kh_err r = kh__sms_db(c, s);

	if (r != KH_OK) {
		json_decref(p->items);
		p->items = NULL;
	}
	return r;
}

/* ---- GET /v1/subscribers?name_prefix ---- */

kh_err kh__sms_subscriber_list(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	const char *prefix = kh_http_query(req, "name_prefix");
	struct kh__sms_page p;
	struct kh_store *s;
	int answered;
	kh_err r;

	if ((r = kh__sms_page_start(req, resp, 's', &p, &answered)) != KH_OK || answered)
		return r;
	if (prefix && (prefix[0] == 0 || strlen(prefix) > KH_STORE_NAME_MAX))
		return refuse(resp, &p, "name_prefix: 1 to 200 bytes");
	if ((r = page_db(arg, &p, &s)) != KH_OK)
		return r;
	r = kh_store_subscribers_page(s, prefix, &p.pg, page_subscriber, &p, &p.more);
	return kh__sms_page_reply(resp, &p, "subscribers", r);
}

/* ---- GET /v1/cards?state&subscriber&role ---- */

kh_err kh__sms_card_list(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	struct kh_store_card_filter f = {0};
	struct kh__sms_page p;
	struct kh_store *s;
	const char *q;
	int answered, has = 0;
	kh_err r;

	if ((r = kh__sms_page_start(req, resp, 'c', &p, &answered)) != KH_OK || answered)
		return r;
	if ((q = kh_http_query(req, "state")) != NULL && kh_card_state_parse(q, &f.state) != KH_OK)
		return refuse(resp, &p, "state: issued, active, replaced or closed");
	if ((q = kh_http_query(req, "role")) != NULL && kh_card_kind_parse(q, &f.kind) != KH_OK)
		return refuse(resp, &p, "role: card or cam");
	if (query_id(req, "subscriber", INT64_MAX, &has, &f.subscriber_id) != KH_OK)
		return refuse(resp, &p, "subscriber: a subscriber id (a positive integer)");
	if ((r = page_db(arg, &p, &s)) != KH_OK)
		return r;
	r = kh_store_cards_page(s, &f, &p.pg, page_card, &p, &p.more);
	return kh__sms_page_reply(resp, &p, "cards", r);
}

/* ---- GET /v1/products, /v1/channels?product, /v1/events?since&until ---- */

kh_err kh__sms_product_list(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	struct kh__sms_page p;
	struct kh_store *s;
	int answered;
	kh_err r;

	if ((r = kh__sms_page_start(req, resp, 'p', &p, &answered)) != KH_OK || answered)
		return r;
	if ((r = page_db(arg, &p, &s)) != KH_OK)
		return r;
	r = kh_store_products_page(s, &p.pg, page_product, &p, &p.more);
	return kh__sms_page_reply(resp, &p, "products", r);
}

kh_err kh__sms_channel_list(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	struct kh__sms_page p;
	struct kh_store *s;
	int64_t product = 0;
	int answered, has = 0;
	kh_err r;

	if ((r = kh__sms_page_start(req, resp, 'h', &p, &answered)) != KH_OK || answered)
		return r;
	if (query_id(req, "product", UINT32_MAX, &has, &product) != KH_OK)
		return refuse(resp, &p, "product: a product id, 1 to 4294967295");
	if ((r = page_db(arg, &p, &s)) != KH_OK)
		return r;
	r = kh_store_channels_page(s, has, (uint32_t)product, &p.pg, page_channel, &p, &p.more);
	return kh__sms_page_reply(resp, &p, "channels", r);
}

kh_err kh__sms_event_list(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	struct kh__sms_page p;
	struct kh_store *s;
	int64_t since, until;
	int answered;
	kh_err r;

	if ((r = kh__sms_page_start(req, resp, 'e', &p, &answered)) != KH_OK || answered)
		return r;
	if (query_window(req, &since, &until) != KH_OK)
		return refuse(resp, &p, "since and until: Unix seconds (the event's start)");
	if ((r = page_db(arg, &p, &s)) != KH_OK)
		return r;
	r = kh_store_events_page(s, since, until, &p.pg, page_event, &p, &p.more);
	return kh__sms_page_reply(resp, &p, "events", r);
}

/* ---- GET /v1/invoices?subscriber&since&until ---- */

kh_err kh__sms_invoice_list(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	struct kh__sms_page p;
	struct kh_store *s;
	int64_t sub = 0, since, until;
	int answered, has = 0;
	kh_err r;

	if ((r = kh__sms_page_start(req, resp, 'i', &p, &answered)) != KH_OK || answered)
		return r;
	if (query_id(req, "subscriber", INT64_MAX, &has, &sub) != KH_OK)
		return refuse(resp, &p, "subscriber: a subscriber id (a positive integer)");
	if (query_window(req, &since, &until) != KH_OK)
		return refuse(resp, &p, "since and until: Unix seconds (the invoice's time)");
	if ((r = page_db(arg, &p, &s)) != KH_OK)
		return r;
	r = kh_store_invoices_page(s, sub, since, until, &p.pg, page_invoice, &p, &p.more);
	return kh__sms_page_reply(resp, &p, "invoices", r);
}

/* ---- GET /v1/subscribers/{id}/subscriptions, /v1/subscribers/{id}/invoices?since&until ---- */

/*
 * One subscriber's list: the path's id, the page (kind), the window when with_window, the
 * subscriber found. *answered when the request was answered (refused) here.
 */
static kh_err of_subscriber(struct kh_http_req *req, struct kh_http_resp *resp, struct kh_sms *c, char kind,
			    int with_window, struct kh__sms_page *p, struct kh_store **s, int64_t *id, int64_t *since,
			    int64_t *until, int *answered)
{
	kh_err r;

	*answered = 1;
	if (kh__sms_parse_id(kh_http_param(req, "id"), id) != KH_OK)
		return kh_http_reply_error(resp, KH_ERR_INVAL, "a subscriber id is a positive integer");
	if ((r = kh__sms_page_start(req, resp, kind, p, answered)) != KH_OK || *answered)
		return r;
	*answered = 1;
	if (with_window && query_window(req, since, until) != KH_OK)
		return refuse(resp, p, "since and until: Unix seconds (the invoice's time)");
	if ((r = page_db(c, p, s)) != KH_OK)
		return r;
	if ((r = kh_store_subscriber_get(*s, *id, NULL, 0, NULL)) != KH_OK) {
		json_decref(p->items);
		p->items = NULL;
		return r == KH_ERR_NOTFOUND ? kh_http_reply_error(resp, r, "subscriber not found") : r;
	}
	*answered = 0;
	return KH_OK;
}

kh_err kh__sms_subscriber_subscriptions(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	struct kh__sms_page p;
	struct kh_store *s = NULL;
	int64_t id, since, until;
	int answered;
	kh_err r;

	if ((r = of_subscriber(req, resp, arg, 'u', 0, &p, &s, &id, &since, &until, &answered)) != KH_OK || answered)
		return r;
	r = kh_store_subscriptions_page(s, id, &p.pg, page_subscription, &p, &p.more);
	return kh__sms_page_reply(resp, &p, "subscriptions", r);
}

/* Its invoices as the subscriber's read shows them (without subscriber_id: it is in the path). */
static kh_err page_own_invoice(void *arg, const struct kh_store_invoice *i)
{
	return kh__sms_page_add(arg, kh__sms_invoice_json(i, 0), i->time, i->id);
}

kh_err kh__sms_subscriber_invoices(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	struct kh__sms_page p;
	struct kh_store *s = NULL;
	int64_t id, since, until;
	int answered;
	kh_err r;

	if ((r = of_subscriber(req, resp, arg, 'i', 1, &p, &s, &id, &since, &until, &answered)) != KH_OK || answered)
		return r;
	r = kh_store_invoices_page(s, id, since, until, &p.pg, page_own_invoice, &p, &p.more);
	return kh__sms_page_reply(resp, &p, "invoices", r);
}

/* ---- GET /v1/cards/{ua}/emm-queue: the operator's view of one card's queue ---- */

static kh_err page_emm(void *arg, const struct kh_store_emm *e)
{
	struct kh__sms_page *p = arg;

	/* the store was asked one EMM more than the page: it says another page follows */
	if (p->n == p->pg.limit) {
		p->more = 1;
		return KH_OK;
	}
	return kh__sms_page_add(p, kh__sms_emm_json(e), e->id, 0);
}

kh_err kh__sms_card_emm_queue(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	struct kh_store_card card;
	struct kh__sms_page p;
	struct kh_store *s;
	uint32_t ua;
	int answered;
	kh_err r;

	if (kh__sms_parse_ua(kh_http_param(req, "ua"), &ua) != KH_OK)
		return kh_http_reply_error(resp, KH_ERR_INVAL, "a UA is 8 hexadecimal digits");
	if ((r = kh__sms_page_start(req, resp, 'q', &p, &answered)) != KH_OK || answered)
		return r;
	if ((r = page_db(arg, &p, &s)) != KH_OK)
		return r;
	if ((r = kh_store_card_get(s, ua, &card)) != KH_OK) {
		json_decref(p.items);
		return r == KH_ERR_NOTFOUND ? kh_http_reply_error(resp, r, "card not registered") : r;
	}
	r = kh_store_emm_fetch_addr(s, KH_EMM_UNIQUE, ua, p.pg.after_set ? p.pg.after : 0, p.pg.limit + 1, page_emm,
				    &p, NULL);
	return kh__sms_page_reply(resp, &p, "emms", r);
}

/* ---- GET /v1/upload/sessions?card ---- */

static kh_err page_session(void *arg, const struct kh_store_upload_session *u)
{
	char ua[9];
	json_t *o;

	/* never the nonce: it is not even read */
	kh__sms_ua_hex(u->ua, ua);
	o = json_pack("{s:I,s:s,s:s,s:I}", "id", (json_int_t)u->id, "card", ua, "state",
		      u->closed_at ? "closed" : "open", "created_at", (json_int_t)u->created_at);
	if (o && u->closed_at && json_object_set_new(o, "last_used_at", json_integer(u->closed_at)) != 0) {
		json_decref(o);
		o = NULL;
	}
	return kh__sms_page_add(arg, o, u->id, 0);
}

kh_err kh__sms_session_list(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	const char *card = kh_http_query(req, "card");
	struct kh__sms_page p;
	struct kh_store *s;
	uint32_t ua = 0;
	int answered;
	kh_err r;

	if ((r = kh__sms_page_start(req, resp, 'n', &p, &answered)) != KH_OK || answered)
		return r;
	if (card && kh__sms_parse_ua(card, &ua) != KH_OK)
		return refuse(resp, &p, "card: a UA, 8 hexadecimal digits");
	if ((r = page_db(arg, &p, &s)) != KH_OK)
		return r;
	r = kh_store_upload_sessions_page(s, card != NULL, ua, &p.pg, page_session, &p, &p.more);
	return kh__sms_page_reply(resp, &p, "sessions", r);
}

/* ---- GET /v1/jobs, GET /v1/jobs/{id} ---- */

/*
 * A job's id is its key in base64url: keys are the scoped idempotency keys of bulk subscriptions
 * ("op:" and a hash) and the rights renewal's ("keyhole-rights-renewal/WINDOW/PRODUCT"), and a
 * path segment cannot carry the latter's '/'.
 */
static json_t *job_json(const struct kh_store_bulk_job_info *j)
{
	char id[KH__SMS_B64_CAP(KH_STORE_IDEM_KEY_MAX)];
	size_t n = strlen(j->key);
	json_t *o;

	if (n > KH_STORE_IDEM_KEY_MAX || kh_b64url_encode((const uint8_t *)j->key, n, id, sizeof id) != KH_OK ||
	    (o = kh__sms_bulk_json(&j->job)) == NULL)
		return NULL;
	/* json_object_set_new takes each value, set or not: every one is called */
	if ((json_object_set_new(o, "id", json_string(id)) | json_object_set_new(o, "done", json_boolean(j->job.done)) |
	     json_object_set_new(o, "kind", json_string(strncmp(j->key, "keyhole-rights-renewal/", 23) == 0
								 ? "rights_renewal"
								 : "bulk_subscription")) |
	     json_object_set_new(o, "start", json_integer(j->job.start)) |
	     json_object_set_new(o, "end", json_integer(j->job.end)) |
	     json_object_set_new(o, "all", json_boolean(j->job.all)) |
	     json_object_set_new(o, "last_subscriber_id", json_integer(j->job.last_subscriber_id)) |
	     json_object_set_new(o, "max_subscriber_id", json_integer(j->job.max_subscriber_id)) |
	     json_object_set_new(o, "created_at", json_integer(j->created_at)) |
	     json_object_set_new(o, "updated_at", json_integer(j->updated_at))) != 0) {
		json_decref(o);
		return NULL;
	}
	return o;
}

static kh_err page_job(void *arg, const struct kh_store_bulk_job_info *j)
{
	struct kh__sms_page *p = arg;
	kh_err r = kh__sms_page_add(p, job_json(j), 0, 0);

	if (r == KH_OK)
		snprintf(p->last_key, sizeof p->last_key, "%s", j->key);
	return r;
}

kh_err kh__sms_job_list(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	struct kh__sms_page p;
	struct kh_store *s;
	int answered;
	kh_err r;

	if ((r = kh__sms_page_start(req, resp, 'j', &p, &answered)) != KH_OK || answered)
		return r;
	if ((r = page_db(arg, &p, &s)) != KH_OK)
		return r;
	r = kh_store_bulk_jobs_page(s, &p.pg, page_job, &p, &p.more);
	return kh__sms_page_reply(resp, &p, "jobs", r);
}

/* ---- one item by id: the job, a product, a channel, an event ---- */

/* The one row a read gives, as its JSON (into *(json_t **)arg). */
static kh_err one_job(void *arg, const struct kh_store_bulk_job_info *j)
{
	return (*(json_t **)arg = job_json(j)) ? KH_OK : KH_ERR_NOMEM;
}

static kh_err one_product(void *arg, const struct kh_store_product *x)
{
	return (*(json_t **)arg = kh__sms_product_json(x)) ? KH_OK : KH_ERR_NOMEM;
}

static kh_err one_channel(void *arg, const struct kh_store_channel *x)
{
	return (*(json_t **)arg = kh__sms_channel_json(x)) ? KH_OK : KH_ERR_NOMEM;
}

static kh_err one_event(void *arg, const struct kh_store_event *x)
{
	return (*(json_t **)arg = kh__sms_event_json(x)) ? KH_OK : KH_ERR_NOMEM;
}

/* Answer the read's result: 200 with the item, 404 naming what, or the store's error. */
static kh_err reply_one(struct kh_http_resp *resp, kh_err r, json_t *o, const char *what)
{
	if (r == KH_OK)
		return kh_http_reply(resp, 200, o);
	json_decref(o);
	return r == KH_ERR_NOTFOUND ? kh_http_reply_error(resp, r, what) : r;
}

kh_err kh__sms_job_get(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	const char *id = kh_http_param(req, "id");
	char key[KH_STORE_IDEM_KEY_MAX + 1];
	struct kh_store *s;
	json_t *o = NULL;
	size_t n = 0;
	kh_err r;

	if (id == NULL || kh_b64url_decode(id, strlen(id), (uint8_t *)key, KH_STORE_IDEM_KEY_MAX, &n) != KH_OK ||
	    n == 0 || memchr(key, 0, n) != NULL)
		return kh_http_reply_error(resp, KH_ERR_NOTFOUND, "job not found");
	key[n] = 0;
	if ((r = kh__sms_db(arg, &s)) != KH_OK)
		return r;
	r = kh_store_bulk_job_read(s, key, one_job, &o);
	return reply_one(resp, r, o, "job not found");
}

/* A catalogue id in the path: 1..u32. */
static kh_err path_cat_id(struct kh_http_req *req, uint32_t *id)
{
	int64_t v;

	if (kh__sms_parse_id(kh_http_param(req, "id"), &v) != KH_OK || v > UINT32_MAX)
		return KH_ERR_INVAL;
	*id = (uint32_t)v;
	return KH_OK;
}

/* GET of one catalogue row by the path's id, read with read and answered with what when absent. */
static kh_err get_cat(struct kh_http_req *req, struct kh_http_resp *resp, struct kh_sms *c, int kind)
{
	static const char *const missing[] = {"product not found", "channel not found", "event not found"};
	struct kh_store *s;
	json_t *o = NULL;
	uint32_t id;
	kh_err r;

	if (path_cat_id(req, &id) != KH_OK)
		return kh_http_reply_error(resp, KH_ERR_INVAL, "an id is an integer from 1 to 4294967295");
	if ((r = kh__sms_db(c, &s)) != KH_OK)
		return r;
	r = kind == 0 ? kh_store_product_read(s, id, one_product, &o)
	    : kind == 1 ? kh_store_channel_read(s, id, one_channel, &o)
			: kh_store_event_read(s, id, one_event, &o);
	return reply_one(resp, r, o, missing[kind]);
}

kh_err kh__sms_product_get(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	return get_cat(req, resp, arg, 0);
}

kh_err kh__sms_channel_get(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	return get_cat(req, resp, arg, 1);
}

kh_err kh__sms_event_get(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	return get_cat(req, resp, arg, 2);
}
