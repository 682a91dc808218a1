/*
 * The key center's HTTP API (include/keyhole/keycentersvc.h, docs/api/keycenter.yaml): a card's
 * activation with its access code, the relay of posts (relay.c), the public count of a card's
 * relayed posts with the center's ack, mailbox sessions a card signs for, and the mailbox.
 *
 * Every answer that can be asked for anything (an unknown serial, a wrong code) does the same
 * work and says the same, so that the API tells nobody which cards exist. Failed access codes are
 * counted durably, in the transaction that checks them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kc_int.h"
#include "keyhole/cert.h"
#include "keyhole/crypto.h"
#include "keyhole/http.h"
#include "keyhole/log.h"

#define TOKEN_LEN 32
#define CODE_TYPED_MAX 64

static kh_err db(struct kh_keycenter_service *s, struct kh_store **st)
{
	return kh__pool_get(&s->pool, st);
}

size_t kh_keycenter_post_max(uint64_t max_document)
{
	return (size_t)kh_kc_msg_size(KH_KC_ADDR_MAX, max_document);
}

/* ---------------------------------------------------------------- request helpers */

/* A body's serial: an integer 1..2^53 (what JSON carries exactly). */
static kh_err body_serial(struct kh_http_req *req, uint64_t *serial)
{
	json_t *b = kh_http_body(req), *x = b ? json_object_get(b, "serial") : NULL;

	if (!x || !json_is_integer(x) || json_integer_value(x) < 1 || json_integer_value(x) > (json_int_t)1 << 53)
		return KH_ERR_FORMAT;
	*serial = (uint64_t)json_integer_value(x);
	return KH_OK;
}

/* A path's decimal number 1..INT64_MAX; anything else names nothing. */
static kh_err path_u64(struct kh_http_req *req, const char *name, uint64_t *v)
{
	const char *p = kh_http_param(req, name);
	uint64_t x = 0;

	if (!p || !*p || strlen(p) > 19 || p[0] == '0')
		return KH_ERR_NOTFOUND;
	for (; *p; p++) {
		if (*p < '0' || *p > '9')
			return KH_ERR_NOTFOUND;
		x = x * 10 + (uint64_t)(*p - '0');
	}
	if (x > KH_STORE_KC_SERIAL_MAX)
		return KH_ERR_NOTFOUND;
	*v = x;
	return KH_OK;
}

static kh_err set_b64(json_t *o, const char *key, const uint8_t *b, size_t n)
{
	return kh_json_set_b64(o, key, b, n);
}

/* ---------------------------------------------------------------- activation */

struct activate_tx {
	const struct kh_keycenter *kc;
	uint64_t serial;
	const uint8_t *mac;
	int64_t now;
	kh_err outcome;
	char address[KH_KC_ADDR_MAX + 1];
	struct kh_store_kc_card *c;
};

static kh_err activate_tx(struct kh_store *st, void *arg)
{
	struct activate_tx *t = arg;
	struct kh_store_kc_card *c = t->c;
	int64_t fails, start;
	kh_err r = kh_store_kc_card_get(st, t->serial, c);

	t->outcome = KH_ERR_ACCESS_CODE;
	if (r == KH_ERR_NOTFOUND) {
		/* the same comparison an enrolled card costs, against nothing */
		uint8_t none[32] = {0};
		(void)kh_ct_eq(t->mac, none, sizeof none);
		return KH_OK;
	}
	if (r != KH_OK)
		return r;
	fails = c->code_fails;
	start = c->code_window_start;
	if (t->now - start >= KH_KEYCENTER_CODE_WINDOW || t->now < start) {
		fails = 0;
		start = t->now;
	}
	if (fails >= KH_KEYCENTER_CODE_TRIES) {
		t->outcome = KH_ERR_LIMIT;
		return KH_OK;
	}
	if (!kh_ct_eq(t->mac, c->code_mac, 32))
		return kh_store_kc_code_fails(st, t->serial, fails + 1, start); /* counted, committed */
	if (c->state == KH_STORE_KC_BLOCKED) {
		t->outcome = KH_ERR_BLOCKED;
		return KH_OK;
	}
	if ((c->code_fails || c->code_window_start != start) &&
	    (r = kh_store_kc_code_fails(st, t->serial, 0, start)) != KH_OK)
		return r;
	if (c->state == KH_STORE_KC_ENROLLED &&
	    (r = kh_store_kc_card_state(st, t->serial, KH_STORE_KC_ACTIVE, t->now)) != KH_OK)
		return r;
	snprintf(t->address, sizeof t->address, "%s", c->address);
	t->outcome = KH_OK;
	return KH_OK;
}

/* POST /v1/activate {serial, code} */
static kh_err h_activate(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	struct kh_keycenter_service *s = arg;
	json_t *b = kh_http_body(req), *o;
	struct activate_tx t;
	uint8_t mac[32];
	const char *code;
	kh_err r;

	memset(&t, 0, sizeof t);
	if ((r = body_serial(req, &t.serial)) != KH_OK || !(code = json_string_value(json_object_get(b, "code"))) ||
	    strlen(code) > CODE_TYPED_MAX)
		return KH_ERR_FORMAT;
	if ((r = kh__kc_code_mac(s->kc, t.serial, code, mac)) != KH_OK)
		return r;
	t.kc = s->kc;
	t.mac = mac;
	t.now = kh__kc_now(s);
	if (!(t.c = calloc(1, sizeof *t.c)))
		return KH_ERR_NOMEM;
	r = kh__kc_write(s, activate_tx, &t);
	kh_wipe(t.c, sizeof *t.c);
	free(t.c);
	kh_wipe(mac, sizeof mac);
	if (r != KH_OK)
		return r;
	if (t.outcome != KH_OK) {
		kh_log_info("keycenter.activate_refused", "serial=%llu code=%s", (unsigned long long)t.serial,
			    kh_err_json(t.outcome));
		return t.outcome;
	}
	kh_log_info("keycenter.activate", "serial=%llu", (unsigned long long)t.serial);
	o = json_pack("{s:I, s:s, s:s}", "serial", (json_int_t)t.serial, "address", t.address, "state", "active");
	return o ? kh_http_reply(resp, 200, o) : KH_ERR_NOMEM;
}

/* ---------------------------------------------------------------- posts and acks */

/* {serial, index, ack} (ack null when index is 0) */
static kh_err ack_json(struct kh_keycenter_service *s, uint64_t serial, uint64_t index, json_t **out)
{
	uint8_t ack[KH_KC_ACK_LEN];
	json_t *o = json_pack("{s:I, s:I}", "serial", (json_int_t)serial, "index", (json_int_t)index);
	kh_err r = KH_OK;

	if (!o)
		return KH_ERR_NOMEM;
	if (index == 0)
		r = json_object_set_new(o, "ack", json_null()) == 0 ? KH_OK : KH_ERR_NOMEM;
	else if ((r = kh_kc_ack_sign_kp(s->kc->id.sk, s->kc->id.pk, s->kc->id.serial, serial, index, ack)) == KH_OK)
		r = set_b64(o, "ack", ack, sizeof ack);
	if (r != KH_OK) {
		json_decref(o);
		return r;
	}
	*out = o;
	return KH_OK;
}

/* POST /v1/messages (application/octet-stream: a post) */
static kh_err h_post(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	struct kh_keycenter_service *s = arg;
	struct kh__kc_relayed out;
	size_t n = 0;
	const uint8_t *msg = kh_http_raw_body(req, &n);
	json_t *o, *e;
	kh_err r;

	if ((r = kh__kc_relay(s, msg, n, &out)) != KH_OK || (r = ack_json(s, out.serial, out.index, &o)) != KH_OK)
		return r;
	if (out.refused) {
		/* the error body, with the ack of the index the post spent */
		if (!(e = kh_json_error(KH_ERR_RECIPIENT, NULL)) || json_object_update(o, e) != 0 ||
		    json_object_set_new(o, "duplicate", json_boolean(out.duplicate)) != 0) {
			json_decref(e);
			json_decref(o);
			return KH_ERR_NOMEM;
		}
		json_decref(e);
		return kh_http_reply(resp, kh_err_http(KH_ERR_RECIPIENT), o);
	}
	if (json_object_set_new(o, "to", json_string(out.to)) != 0 ||
	    json_object_set_new(o, "duplicate", json_boolean(out.duplicate)) != 0) {
		json_decref(o);
		return KH_ERR_NOMEM;
	}
	return kh_http_reply(resp, 200, o);
}

/* GET /v1/cards/{serial}/ack: public, an ack tells only how many posts a card made. */
static kh_err h_ack(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	struct kh_keycenter_service *s = arg;
	struct kh_store_kc_card *c = calloc(1, sizeof *c);
	struct kh_store *st;
	uint64_t serial = 0, last = 0;
	json_t *o = NULL;
	kh_err r;

	if (!c)
		return KH_ERR_NOMEM;
	if ((r = path_u64(req, "serial", &serial)) == KH_OK && (r = db(s, &st)) == KH_OK &&
	    (r = kh_store_kc_card_get(st, serial, c)) == KH_OK) {
		last = c->has_post ? c->send_pos - 1 : 0;
		r = ack_json(s, serial, last, &o);
	}
	kh_wipe(c, sizeof *c);
	free(c);
	return r == KH_OK ? kh_http_reply(resp, 200, o) : r;
}

/* ---------------------------------------------------------------- sessions */

/* POST /v1/sessions/challenge {serial}: stateless, u64 time | MAC. */
static kh_err h_challenge(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	struct kh_keycenter_service *s = arg;
	uint8_t nonce[KH_KC_NONCE_LEN];
	uint64_t serial;
	json_t *o;
	kh_err r;

	if ((r = body_serial(req, &serial)) != KH_OK || (r = kh__kc_nonce(s->kc, serial, kh__kc_now(s), nonce)) != KH_OK)
		return r;
	if (!(o = json_pack("{s:I}", "center", (json_int_t)s->kc->id.serial)) ||
	    set_b64(o, "nonce", nonce, sizeof nonce) != KH_OK) {
		json_decref(o);
		return KH_ERR_NOMEM;
	}
	return kh_http_reply(resp, 200, o);
}

struct session_tx {
	uint64_t serial;
	int64_t t, now;
	const uint8_t *hash;
};

static kh_err session_tx(struct kh_store *st, void *arg)
{
	struct session_tx *x = arg;
	kh_err r = kh_store_kc_hello_use(st, x->serial, x->t);

	return r != KH_OK ? r :
			    kh_store_kc_session_add(st, x->hash, x->serial, x->now + KH_KEYCENTER_SESSION_S, x->now,
						    KH_KEYCENTER_SESSIONS_MAX);
}

/* The card's hello over nonce, by the key of its stored signing certificate. */
static kh_err hello_ok(struct kh_keycenter_service *s, struct kh_http_req *req, uint64_t serial,
		       const uint8_t nonce[static KH_KC_NONCE_LEN])
{
	struct kh_store_kc_card *c = calloc(1, sizeof *c);
	uint8_t sig[KH_ED25519_SIG_LEN], msg[KH_KC_HELLO_MSG_LEN];
	struct kh_cert_info ci;
	struct kh_store *st;
	size_t n = 0;
	kh_err r;

	if (!c)
		return KH_ERR_NOMEM;
	if ((r = kh_json_get_b64(kh_http_body(req), "signature", sig, sizeof sig, &n, 1)) != KH_OK) {
		r = KH_ERR_FORMAT;
		goto out;
	}
	if ((r = db(s, &st)) != KH_OK || (r = kh_store_kc_card_get(st, serial, c)) != KH_OK) {
		r = r == KH_ERR_NOTFOUND ? KH_ERR_AUTH : r;
		goto out;
	}
	if (c->state != KH_STORE_KC_ACTIVE) {
		r = c->state == KH_STORE_KC_BLOCKED ? KH_ERR_BLOCKED : KH_ERR_NOT_ACTIVE;
		goto out;
	}
	kh_kc_hello_msg(s->kc->id.serial, serial, nonce, msg);
	if ((r = kh_cert_read(c->sign_cert, c->sign_cert_len, &ci)) == KH_OK)
		r = kh_ed25519_verify(ci.pub, msg, sizeof msg, sig) == KH_OK ? KH_OK : KH_ERR_AUTH;
out:
	free(c);
	return r;
}

/* A token's answer: the token is a credential, so the text is wiped once sent. */
static kh_err token_reply(struct kh_http_resp *resp, const uint8_t tok[static TOKEN_LEN], int64_t expires)
{
	json_t *o = json_pack("{s:I}", "expires", (json_int_t)expires);
	char *text;
	kh_err r;

	if (!o || set_b64(o, "token", tok, TOKEN_LEN) != KH_OK) {
		json_decref(o);
		return KH_ERR_NOMEM;
	}
	text = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	if (!text)
		return KH_ERR_NOMEM;
	r = kh_http_reply_secret(resp, 200, text, strlen(text));
	return r;
}

/* POST /v1/sessions {serial, nonce, signature} */
static kh_err h_session(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	struct kh_keycenter_service *s = arg;
	uint8_t nonce[KH_KC_NONCE_LEN], tok[TOKEN_LEN], hash[32];
	struct session_tx x;
	int64_t now = kh__kc_now(s);
	size_t n = 0;
	kh_err r;

	memset(&x, 0, sizeof x);
	if ((r = body_serial(req, &x.serial)) != KH_OK ||
	    kh_json_get_b64(kh_http_body(req), "nonce", nonce, sizeof nonce, &n, 1) != KH_OK)
		return KH_ERR_FORMAT;
	if ((r = kh__kc_nonce_check(s->kc, x.serial, nonce, &x.t)) != KH_OK)
		return r;
	if (x.t > now || now - x.t > KH_KEYCENTER_NONCE_AGE)
		return KH_ERR_AUTH; /* stale: ask for another */
	if ((r = hello_ok(s, req, x.serial, nonce)) != KH_OK)
		return r;
	x.now = now;
	x.hash = hash;
	if ((r = kh_random(tok, sizeof tok)) == KH_OK && (r = kh_sha256(tok, sizeof tok, hash)) == KH_OK &&
	    (r = kh__kc_write(s, session_tx, &x)) == KH_OK) {
		kh_log_info("keycenter.session", "serial=%llu", (unsigned long long)x.serial);
		r = token_reply(resp, tok, now + KH_KEYCENTER_SESSION_S);
	}
	kh_wipe(tok, sizeof tok);
	return r;
}

/* ---------------------------------------------------------------- the mailbox */

/* The card of the request's session: "Authorization: Bearer TOKEN", and still active. */
static kh_err session_of(struct kh_keycenter_service *s, struct kh_http_req *req, struct kh_store **st,
			 uint64_t *serial)
{
	const char *h = kh_http_header(req, "Authorization");
	uint8_t tok[TOKEN_LEN], hash[32];
	struct kh_store_kc_card *c;
	size_t n = 0;
	kh_err r;

	if (!h || strncmp(h, "Bearer ", 7) != 0 ||
	    kh_b64url_decode(h + 7, strlen(h + 7), tok, sizeof tok, &n) != KH_OK || n != sizeof tok)
		return KH_ERR_UNAUTHORISED;
	r = kh_sha256(tok, sizeof tok, hash);
	kh_wipe(tok, sizeof tok);
	if (r != KH_OK || (r = db(s, st)) != KH_OK)
		return r;
	if ((r = kh_store_kc_session_find(*st, hash, kh__kc_now(s), serial)) != KH_OK)
		return r == KH_ERR_NOTFOUND ? KH_ERR_UNAUTHORISED : r;
	if (!(c = calloc(1, sizeof *c)))
		return KH_ERR_NOMEM;
	if ((r = kh_store_kc_card_get(*st, *serial, c)) == KH_OK && c->state != KH_STORE_KC_ACTIVE)
		r = c->state == KH_STORE_KC_BLOCKED ? KH_ERR_BLOCKED : KH_ERR_NOT_ACTIVE;
	free(c);
	return r;
}

static kh_err list_one(void *arg, const struct kh_store_kc_mail *m)
{
	json_t *o = json_pack("{s:I, s:s, s:I, s:I}", "index", (json_int_t)m->idx, "from", m->sender_address, "size",
			      (json_int_t)m->size, "received", (json_int_t)m->created);

	return o && json_array_append_new(arg, o) == 0 ? KH_OK : KH_ERR_NOMEM;
}

/* GET /v1/mailbox */
static kh_err h_mailbox(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	struct kh_keycenter_service *s = arg;
	struct kh_store *st;
	uint64_t serial;
	json_t *a, *o;
	kh_err r;

	if ((r = session_of(s, req, &st, &serial)) != KH_OK)
		return r;
	if (!(a = json_array()))
		return KH_ERR_NOMEM;
	if ((r = kh_store_kc_mail_list(st, serial, list_one, a)) != KH_OK) {
		json_decref(a);
		return r;
	}
	o = json_pack("{s:I, s:o}", "serial", (json_int_t)serial, "messages", a);
	return o ? kh_http_reply(resp, 200, o) : KH_ERR_NOMEM;
}

struct bytes {
	uint8_t *p;
	size_t n;
};

static kh_err copy_msg(void *arg, const struct kh_store_kc_mail *m)
{
	struct bytes *b = arg;

	if (!(b->p = malloc(m->msg_len ? m->msg_len : 1)))
		return KH_ERR_NOMEM;
	memcpy(b->p, m->msg, m->msg_len);
	b->n = m->msg_len;
	return KH_OK;
}

/* GET /v1/mailbox/{index}: the delivery's bytes. */
static kh_err h_mail_get(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	struct kh_keycenter_service *s = arg;
	struct bytes b = {NULL, 0};
	struct kh_store *st;
	uint64_t serial, j;
	kh_err r;

	if ((r = session_of(s, req, &st, &serial)) != KH_OK || (r = path_u64(req, "index", &j)) != KH_OK ||
	    (r = kh_store_kc_mail_get(st, serial, j, copy_msg, &b)) != KH_OK) {
		free(b.p);
		return r;
	}
	return kh_http_reply_bytes(resp, 200, "application/octet-stream", b.p, b.n);
}

struct delete_tx {
	uint64_t serial, j;
};

static kh_err delete_tx(struct kh_store *st, void *arg)
{
	struct delete_tx *d = arg;

	return kh_store_kc_mail_delete(st, d->serial, d->j);
}

/* DELETE /v1/mailbox/{index}: the delivery gone, and the key kept for it. */
static kh_err h_mail_delete(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	struct kh_keycenter_service *s = arg;
	struct delete_tx d;
	struct kh_store *st;
	json_t *o;
	kh_err r;

	if ((r = session_of(s, req, &st, &d.serial)) != KH_OK || (r = path_u64(req, "index", &d.j)) != KH_OK ||
	    (r = kh__kc_write(s, delete_tx, &d)) != KH_OK)
		return r;
	o = json_pack("{s:I}", "deleted", (json_int_t)d.j);
	return o ? kh_http_reply(resp, 200, o) : KH_ERR_NOMEM;
}

/* ---------------------------------------------------------------- the service */

kh_err kh_keycenter_service_new(const struct kh_keycenter_service_config *cfg, struct kh_keycenter_service **out,
				const char **what)
{
	static const char dbw[] = "database";
	struct kh_keycenter_service *s;
	struct kh_store *st;
	kh_err r;

	if (what)
		*what = NULL;
	if (!cfg || !cfg->db || !cfg->dir || !out || cfg->window > KH_KEYSEQ_WINDOW_MAX ||
	    cfg->max_document > KH_KEYCENTER_DOC_MAX)
		return KH_ERR_INVAL;
	if (!(s = calloc(1, sizeof *s)))
		return KH_ERR_NOMEM;
	s->window = cfg->window ? cfg->window : KH_KEYSEQ_WINDOW;
	s->max_document = cfg->max_document ? cfg->max_document : KH_KEYCENTER_DOC_DEFAULT;
	s->clock = cfg->clock;
	s->clock_ctx = cfg->clock_ctx;
	if ((r = kh_keycenter_open(cfg->dir, &s->kc)) != KH_OK) {
		if (what)
			*what = cfg->dir;
		goto fail;
	}
	/* the first connection now: a database that cannot open (or migrate) fails the start */
	if ((r = kh__pool_init(&s->pool, cfg->db, cfg->store_sync_normal)) != KH_OK || (r = db(s, &st)) != KH_OK) {
		if (what)
			*what = dbw;
		goto fail;
	}
	{
		struct kh_store_opts opts = {.sync_normal = cfg->store_sync_normal};
		if ((r = kh_store_group_new(cfg->db, &opts, 0, &s->writer)) != KH_OK) {
			if (what)
				*what = dbw;
			goto fail;
		}
	}
	*out = s;
	return KH_OK;
fail:
	kh_keycenter_service_free(s);
	return r;
}

kh_err kh_keycenter_service_add_routes(struct kh_keycenter_service *s, struct kh_http *h)
{
	const struct kh_http_route routes[] = {
		{"POST", "/v1/activate", h_activate, s, KH_HTTP_ROUTE_OPEN},
		{"POST", "/v1/messages", h_post, s, KH_HTTP_ROUTE_OPEN | KH_HTTP_ROUTE_RAW},
		{"GET", "/v1/cards/{serial}/ack", h_ack, s, KH_HTTP_ROUTE_OPEN},
		{"POST", "/v1/sessions/challenge", h_challenge, s, KH_HTTP_ROUTE_OPEN},
		{"POST", "/v1/sessions", h_session, s, KH_HTTP_ROUTE_OPEN},
		{"GET", "/v1/mailbox", h_mailbox, s, 0},
		{"GET", "/v1/mailbox/{index}", h_mail_get, s, 0},
		{"DELETE", "/v1/mailbox/{index}", h_mail_delete, s, 0},
	};

	if (!s || !h)
		return KH_ERR_INVAL;
	return kh_http_add_routes(h, routes, sizeof routes / sizeof routes[0]);
}

void kh_keycenter_service_free(struct kh_keycenter_service *s)
{
	if (!s)
		return;
	kh_store_group_free(s->writer);
	kh__pool_free(&s->pool);
	kh_keycenter_close(s->kc);
	kh_wipe(s, sizeof *s);
	free(s);
}
