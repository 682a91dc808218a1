/*
 * Cards at the management center (seed 001): registering an issued card from its
 * signing certificate, assigning it to a subscriber, replacing it, forfeiting a replaced card's
 * usage data, and reloading credit. Each action changes the cards and queues the EMMs that tell
 * the card(s) about it in one store transaction, committed before the answer; the answer is
 * built in that transaction and stored there under the request's Idempotency-Key (required for a
 * reload, optional for the others): a retry gets the first answer and does nothing more.
 *
 * Seed 001's rule on export: a subscriber's first card is authorised to export its usage data to
 * the decoder's memory M1 at once (AUTHORISE EXPORT 1 with its first EMMs); a replacement card
 * is not, so that M1 keeps the old card's block until the center has recovered it (the upload
 * session) or the operator gives it up (forfeit).
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keyhole/buf.h"
#include "keyhole/cert.h"
#include "keyhole/crypto.h"
#include "sms_int.h"

json_t *kh__sms_card_json(const struct kh_store_card *c)
{
	char ua[9], rb[9];
	json_t *o;

	kh__sms_ua_hex(c->ua, ua);
	o = json_pack("{s:s,s:s,s:s,s:b,s:I}", "ua", ua, "role", kh_card_kind_name(c->kind), "state",
		      kh_card_state_name(c->state), "export_authorised",
		      c->export_authorised, "created_at", (json_int_t)c->created_at);
	if (o == NULL)
		return NULL;
	if (c->subscriber_id && json_object_set_new(o, "subscriber_id", json_integer(c->subscriber_id)) != 0)
		goto fail;
	if (c->replaced_by) {
		kh__sms_ua_hex(c->replaced_by, rb);
		if (json_object_set_new(o, "replaced_by", json_string(rb)) != 0)
			goto fail;
	}
	if (c->closed_reason &&
	    json_object_set_new(o, "closed_reason", json_string(kh_card_closed_name(c->closed_reason))) != 0)
		goto fail;
	/* A second, different block under a number already seen: the card was rolled back or cloned. */
	if (json_object_set_new(o, "clone_alarm", json_boolean(c->clone_alarm_at != 0)) != 0)
		goto fail;
	if (c->clone_alarm_at && (json_object_set_new(o, "clone_alarm_at", json_integer(c->clone_alarm_at)) != 0 ||
				  json_object_set_new(o, "clone_block_seq", json_integer(c->clone_block_seq)) != 0))
		goto fail;
	return o;
fail:
	json_decref(o);
	return NULL;
}

/* ---- POST /v1/cards {certificate} ---- */

struct register_tx {
	struct kh_sms *c;
	uint32_t ua;
	const uint8_t *der;
	size_t len;
	struct kh__sms_idem im;
	struct kh__sms_why why;
};

/* Through the center's writer (kh__sms_write), like every write of the center. */
static kh_err register_tx(struct kh_store *s, void *arg)
{
	struct register_tx *t = arg;
	struct kh_store_card card;
	int done;
	kh_err r;

	if ((r = kh__sms_idem_begin(s, &t->im, &t->why, &done)) != KH_OK || done)
		return r;
	if ((r = kh_store_card_add(s, t->ua, KH_CARD_KIND_CARD, t->der, t->len)) != KH_OK)
		return r == KH_ERR_EXISTS ? kh__sms_why(&t->why, r, NULL, "card already registered") : r;
	if ((r = kh_store_card_get(s, t->ua, &card)) != KH_OK)
		return r;
	return kh__sms_idem_answer(s, t->c, &t->im, 201, kh__sms_card_json(&card));
}

kh_err kh__sms_card_register(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	struct register_tx t = {.c = arg};
	struct kh_cert_info info;
	uint8_t der[KH_CERT_MAX];
	size_t len = 0;
	kh_err r;

	r = kh_json_get_b64(kh_http_body(req), "certificate", der, sizeof der, &len, 0);
	if (r == KH_ERR_BUF)
		return kh_http_reply_error(resp, KH_ERR_TOO_LARGE, "certificate longer than 1024 bytes");
	if (r != KH_OK)
		return kh_http_reply_error(resp, KH_ERR_INVAL,
					   "certificate: the card's signing certificate, DER in base64url");
	if ((r = kh_cert_check(der, len, t.c->k.root_pk, KH_ROLE_CARD, KH_CERT_KEY_ED25519, (uint64_t)time(NULL),
			       &info)) != KH_OK)
		return r; /* 403 certificate / certificate_role / certificate_expired */
	t.ua = info.ua;
	t.der = der;
	t.len = len;
	return kh__sms_idem_run(req, resp, t.c, register_tx, &t, &t.im, &t.why, NULL);
}

/* ---- GET /v1/cards/{ua} ---- */

kh_err kh__sms_card_get(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	struct kh_store_card card;
	struct kh_store *s;
	uint32_t ua;
	kh_err r;

	if (kh__sms_parse_ua(kh_http_param(req, "ua"), &ua) != KH_OK)
		return kh_http_reply_error(resp, KH_ERR_INVAL, "a UA is 8 hexadecimal digits");
	if ((r = kh__sms_db(arg, &s)) != KH_OK)
		return r;
	if ((r = kh_store_card_get(s, ua, &card)) != KH_OK)
		return r == KH_ERR_NOTFOUND ? kh_http_reply_error(resp, r, "card not registered") : r;
	return kh_http_reply(resp, 200, kh__sms_card_json(&card));
}

/* ---- the actions: one transaction each ---- */

struct card_tx {
	struct kh_sms *c;
	kh_store_tx_fn fn;  /* the action: assign_tx, replace_tx or forfeit_tx */
	uint32_t ua, other; /* the card named in the path; the new card (replace) */
	uint32_t show;      /* the card the answer describes */
	int64_t sub;
	unsigned queued;    /* EMMs queued */
	int authorised;     /* assign: export authorised; forfeit: a card was authorised */
	uint32_t auth_ua;
	struct kh__sms_idem im;
	struct kh__sms_why why;
};

/* What the subscriber's cards look like: how many, the active one, any replaced one pending. */
struct sub_cards {
	unsigned n;
	int has_active, has_replaced;
	struct kh_store_card active;
};

static kh_err scan_card(void *arg, const struct kh_store_card *k)
{
	struct sub_cards *sc = arg;

	sc->n++;
	if (k->state == KH_CARD_ACTIVE) {
		sc->has_active = 1;
		sc->active = *k;
	} else if (k->state == KH_CARD_REPLACED) {
		sc->has_replaced = 1;
	}
	return KH_OK;
}

static kh_err get_card(struct kh_store *s, struct card_tx *a, uint32_t ua, struct kh_store_card *card)
{
	kh_err r = kh_store_card_get(s, ua, card);

	if (r == KH_ERR_NOTFOUND)
		return kh__sms_why(&a->why, r, NULL, "card not registered");
	return r;
}

static kh_err assign_tx(struct kh_store *s, void *arg)
{
	struct card_tx *a = arg;
	struct kh_store_card card;
	struct sub_cards sc = {0};
	int64_t closed = 0;
	kh_err r;

	if ((r = get_card(s, a, a->ua, &card)) != KH_OK)
		return r;
	if (card.state != KH_CARD_ISSUED)
		return kh__sms_why(&a->why, KH_ERR_DB_CONSTRAINT, "card_state",
				   "only a card in state issued can be assigned");
	if ((r = kh_store_subscriber_closed(s, a->sub, &closed)) != KH_OK)
		return r == KH_ERR_NOTFOUND ? kh__sms_why(&a->why, r, NULL, "subscriber not found") : r;
	if (closed)
		return kh__sms_why(&a->why, KH_ERR_DB_CONSTRAINT, "subscriber_closed",
				   "the subscriber is closed: a closed subscriber takes no new card");
	if ((r = kh_store_cards_of(s, a->sub, scan_card, &sc)) != KH_OK)
		return r;
	if (sc.has_active)
		return kh__sms_why(&a->why, KH_ERR_DB_CONSTRAINT, "subscriber_has_card",
				   "the subscriber has an active card: replace it instead");
	card.subscriber_id = a->sub;
	card.state = KH_CARD_ACTIVE;
	/* Seed 001: only a subscriber's first card may export to M1 from the start. */
	card.export_authorised = sc.n == 0;
	a->authorised = card.export_authorised;
	if ((r = kh_store_card_update(s, &card)) != KH_OK)
		return r;
	return kh__sms_card_setup(s, a->c, a->ua, a->sub, card.export_authorised, &a->queued);
}

/* The products a subscriber holds rights to (at most a card's 32). */
struct products {
	size_t n;
	uint32_t id[32];
};

static kh_err collect_product(void *arg, const struct kh_store_subscription *u)
{
	struct products *p = arg;
	if (p->n < sizeof p->id / sizeof p->id[0])
		p->id[p->n++] = u->product_id;
	return KH_OK;
}

/*
 * A replaced card must stop working: REVOKE each of the subscriber's products, addressed to the
 * old card, so a subscriber who reports a card lost or faulty does not keep two working cards.
 */
static kh_err revoke_old(struct kh_store *s, struct card_tx *a, const struct kh_store_card *old)
{
	struct products p = {0};
	struct kh__sms_emm e;
	uint8_t cmd[8];
	struct kh_wr w;
	kh_err r;

	if ((r = kh_store_subscriptions_of(s, old->subscriber_id, collect_product, &p)) != KH_OK)
		return r;
	kh__sms_emm_init(&e, a->c, old->ua);
	for (size_t i = 0; i < p.n; i++) {
		kh_wr_init(&w, cmd, sizeof cmd);
		if ((r = kh_emm_put_revoke(&w, p.id[i])) != KH_OK || (r = kh__sms_emm_cmd(s, &e, cmd, w.len)) != KH_OK)
			return r;
	}
	if ((r = kh__sms_emm_flush(s, &e)) != KH_OK)
		return r;
	a->queued += e.queued;
	return KH_OK;
}

static kh_err replace_tx(struct kh_store *s, void *arg)
{
	struct card_tx *a = arg;
	struct kh_store_card old, nw;
	kh_err r;

	if ((r = get_card(s, a, a->ua, &old)) != KH_OK)
		return r;
	if (old.state != KH_CARD_ACTIVE)
		return kh__sms_why(&a->why, KH_ERR_DB_CONSTRAINT, "card_state", "only an active card can be replaced");
	if (a->other == a->ua)
		return kh__sms_why(&a->why, KH_ERR_INVAL, NULL, "a card cannot replace itself");
	if ((r = kh_store_card_get(s, a->other, &nw)) != KH_OK)
		return r == KH_ERR_NOTFOUND ? kh__sms_why(&a->why, r, NULL, "new card not registered") : r;
	if (nw.state != KH_CARD_ISSUED)
		return kh__sms_why(&a->why, KH_ERR_DB_CONSTRAINT, "card_state",
				   "the new card must be in state issued");
	a->sub = old.subscriber_id;
	nw.subscriber_id = old.subscriber_id;
	nw.state = KH_CARD_ACTIVE;
	nw.export_authorised = 0; /* not before the old card's data is recovered or forfeited */
	old.state = KH_CARD_REPLACED;
	old.replaced_by = nw.ua;
	if ((r = kh_store_card_update(s, &nw)) != KH_OK || (r = kh_store_card_update(s, &old)) != KH_OK)
		return r;
	if ((r = revoke_old(s, a, &old)) != KH_OK)
		return r;
	{
		unsigned q = 0;
		r = kh__sms_card_setup(s, a->c, nw.ua, nw.subscriber_id, 0, &q);
		a->queued += q;
		return r;
	}
}

static kh_err forfeit_tx(struct kh_store *s, void *arg)
{
	struct card_tx *a = arg;
	struct kh_store_card old;
	struct sub_cards sc = {0};
	struct kh__sms_emm e;
	uint8_t cmd[8];
	struct kh_wr w;
	kh_err r;

	if ((r = get_card(s, a, a->ua, &old)) != KH_OK)
		return r;
	if (old.state != KH_CARD_REPLACED)
		return kh__sms_why(&a->why, KH_ERR_DB_CONSTRAINT, "card_state",
				   "only a replaced card awaiting recovery can be forfeited");
	old.state = KH_CARD_CLOSED;
	old.closed_reason = KH_CARD_FORFEITED;
	if ((r = kh_store_card_update(s, &old)) != KH_OK)
		return r;
	a->sub = old.subscriber_id;
	if ((r = kh_store_cards_of(s, old.subscriber_id, scan_card, &sc)) != KH_OK)
		return r;
	/* Another replaced card still awaits recovery: its block may still be in M1. */
	if (!sc.has_active || sc.has_replaced || sc.active.export_authorised)
		return KH_OK;
	sc.active.export_authorised = 1;
	if ((r = kh_store_card_update(s, &sc.active)) != KH_OK)
		return r;
	kh__sms_emm_init(&e, a->c, sc.active.ua);
	kh_wr_init(&w, cmd, sizeof cmd);
	if ((r = kh_emm_put_auth_export(&w, 1)) != KH_OK || (r = kh__sms_emm_cmd(s, &e, cmd, w.len)) != KH_OK ||
	    (r = kh__sms_emm_flush(s, &e)) != KH_OK)
		return r;
	a->queued = e.queued;
	a->authorised = 1;
	a->auth_ua = sc.active.ua;
	return KH_OK;
}

/*
 * One action's transaction: a replayed answer ends it; else the action, then the card the answer
 * describes read back in the same transaction, with what was queued, as the answer (stored with
 * the key).
 */
static kh_err card_action_tx(struct kh_store *s, void *arg)
{
	struct card_tx *a = arg;
	struct kh_store_card card;
	char ua[9];
	json_t *o;
	int done;
	kh_err r;

	a->queued = 0;
	a->authorised = 0;
	if ((r = kh__sms_idem_begin(s, &a->im, &a->why, &done)) != KH_OK || done)
		return r;
	if ((r = a->fn(s, a)) != KH_OK || (r = kh_store_card_get(s, a->show, &card)) != KH_OK)
		return r;
	if ((o = kh__sms_card_json(&card)) == NULL)
		return KH_ERR_NOMEM;
	if (json_object_set_new(o, "emms_queued", json_integer(a->queued)) != 0)
		goto nomem;
	if (a->fn == forfeit_tx && a->authorised) {
		kh__sms_ua_hex(a->auth_ua, ua);
		if (json_object_set_new(o, "export_authorised_card", json_string(ua)) != 0)
			goto nomem;
	}
	return kh__sms_idem_answer(s, a->c, &a->im, 200, o);
nomem:
	json_decref(o);
	return KH_ERR_NOMEM;
}

static kh_err run_card_tx(struct kh_http_req *req, struct kh_http_resp *resp, struct card_tx *a, kh_store_tx_fn fn,
			  uint32_t show)
{
	a->fn = fn;
	a->show = show;
	return kh__sms_idem_run(req, resp, a->c, card_action_tx, a, &a->im, &a->why, &a->queued);
}

static kh_err path_ua(struct kh_http_req *req, struct kh_http_resp *resp, uint32_t *ua, int *answered)
{
	*answered = 0;
	if (kh__sms_parse_ua(kh_http_param(req, "ua"), ua) == KH_OK)
		return KH_OK;
	*answered = 1;
	return kh_http_reply_error(resp, KH_ERR_INVAL, "a UA is 8 hexadecimal digits");
}

/* ---- POST /v1/cards/{ua}/assign {subscriber_id} ---- */

kh_err kh__sms_card_assign(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	struct card_tx a = {.c = arg};
	int answered;
	kh_err r;

	if ((r = path_ua(req, resp, &a.ua, &answered)) != KH_OK || answered)
		return r;
	if (kh__sms_json_int(kh_http_body(req), "subscriber_id", 1, INT64_MAX, 1, &a.sub) != KH_OK)
		return kh_http_reply_error(resp, KH_ERR_INVAL, "subscriber_id: a positive integer");
	return run_card_tx(req, resp, &a, assign_tx, a.ua);
}

/* ---- POST /v1/cards/{ua}/replace {new_ua} ---- */

kh_err kh__sms_card_replace(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	struct card_tx a = {.c = arg};
	json_t *j = kh_http_body(req) ? json_object_get(kh_http_body(req), "new_ua") : NULL;
	int answered;
	kh_err r;

	if ((r = path_ua(req, resp, &a.ua, &answered)) != KH_OK || answered)
		return r;
	if (!json_is_string(j) || kh__sms_parse_ua(json_string_value(j), &a.other) != KH_OK)
		return kh_http_reply_error(resp, KH_ERR_INVAL, "new_ua: the new card's UA, 8 hexadecimal digits");
	return run_card_tx(req, resp, &a, replace_tx, a.other);
}

/* ---- POST /v1/cards/{ua}/forfeit ---- */

kh_err kh__sms_card_forfeit(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	struct card_tx a = {.c = arg};
	int answered;
	kh_err r;

	if ((r = path_ua(req, resp, &a.ua, &answered)) != KH_OK || answered)
		return r;
	return run_card_tx(req, resp, &a, forfeit_tx, a.ua);
}

/* ---- POST /v1/cards/{ua}/reload (Idempotency-Key) ---- */

struct reload_tx_args {
	struct kh_sms *c;
	uint32_t ua;
	struct kh__sms_idem im; /* the key is required */
	unsigned queued;
	struct kh__sms_why why;
};

static kh_err reload_tx(struct kh_store *s, void *arg)
{
	struct reload_tx_args *a = arg;
	struct kh_store_card card;
	struct kh__sms_emm e;
	uint32_t amount = 0, reload_id;
	uint8_t cmd[16];
	struct kh_wr w;
	char ua[9];
	int done;
	kh_err r;

	a->queued = 0;
	if ((r = kh__sms_idem_begin(s, &a->im, &a->why, &done)) != KH_OK || done)
		return r;
	if ((r = kh_store_card_get(s, a->ua, &card)) != KH_OK)
		return r == KH_ERR_NOTFOUND ? kh__sms_why(&a->why, r, NULL, "card not registered") : r;
	if (card.state != KH_CARD_ACTIVE)
		return kh__sms_why(&a->why, KH_ERR_DB_CONSTRAINT, "card_state", "only an active card can be reloaded");
	if ((r = kh_store_credit_policy_get(s, NULL, &amount)) != KH_OK)
		return r;
	if (amount == 0)
		return kh__sms_why(&a->why, KH_ERR_DB_CONSTRAINT, "no_reload_amount",
				   "the credit policy has no reload amount (PUT /v1/credit-policy)");
	if ((r = kh_store_card_reload_add(s, a->ua, amount, &reload_id)) != KH_OK)
		return r;
	kh__sms_emm_init(&e, a->c, a->ua);
	kh_wr_init(&w, cmd, sizeof cmd);
	if ((r = kh_emm_put_add_credit(&w, amount, reload_id)) != KH_OK ||
	    (r = kh__sms_emm_cmd(s, &e, cmd, w.len)) != KH_OK || (r = kh__sms_emm_flush(s, &e)) != KH_OK)
		return r;
	a->queued = e.queued;
	kh__sms_ua_hex(a->ua, ua);
	/* In the transaction that queued the reload: the reload and its answer commit together. */
	return kh__sms_idem_answer(s, a->c, &a->im, 200,
				   json_pack("{s:s,s:I,s:I,s:i}", "ua", ua, "amount", (json_int_t)amount, "reload_id",
					     (json_int_t)reload_id, "emms_queued", (int)e.queued));
}

kh_err kh__sms_card_reload(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	struct reload_tx_args a = {.c = arg};
	char *fp = NULL;
	int answered;
	kh_err r;

	if ((r = path_ua(req, resp, &a.ua, &answered)) != KH_OK || answered)
		return r;
	/* The request the key stands for: this card's reload, whatever the body (it has no fields). */
	if (asprintf(&fp, "POST\n/v1/cards/%08X/reload", a.ua) < 0)
		return KH_ERR_NOMEM;
	r = kh__sms_idem_init(req, KH__SMS_CALLER_OPERATOR, fp, &a.im);
	free(fp);
	if (r == KH_OK && !a.im.on)
		r = KH_ERR_INVAL;
	if (r == KH_ERR_INVAL)
		return kh_http_reply_error(resp, KH_ERR_INVAL,
					   "a reload needs an Idempotency-Key header");
	if (r != KH_OK)
		return r;
	if ((r = kh__sms_write(a.c, reload_tx, &a)) != KH_OK)
		return kh__sms_idem_fail(resp, &a.im, r, &a.why);
	kh__sms_count_emms(a.c, a.queued);
	return kh__sms_idem_reply(resp, &a.im);
}
