/*
 * The escrow's clients (include/keyhole/escrowclient.h, docs/protocols/escrow.md, seed 003): the
 * seller asks for a listing; the buyer's host relays between the buyer's device and the escrow.
 *
 * Crash safety: the device's request is written to BASE.purchase before it is sent, and the
 * escrow's answer after it came, so a host that dies anywhere finishes the same purchase on its
 * next run: the escrow answers a repeated request (same purchase id, same Idempotency-Key) with
 * what it recorded, one hold, and the device, asked to finish a purchase it settled already, is
 * asked for its notice again. A purchase the escrow refused outright (no funds, a bad request)
 * holds nothing: the device cancels it and BASE.purchase goes. A purchase with no answer from the
 * escrow (no connection, a 5xx) is kept as it is.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "host/api_int.h"
#include "keyhole/apdu.h"
#include "keyhole/escrowclient.h"
#include "keyhole/file.h"
#include "keyhole/host.h"
#include "keyhole/shamir.h"

/* What the escrow answers: a listing or a purchase record is far below this. */
#define ANSWER_MAX (64u * 1024u)

struct kh_escrow_client {
	struct kh__api api;
};

kh_err kh_escrow_client_new(const char *url, const char *cacert, const char *token, struct kh_escrow_client **out)
{
	struct kh_escrow_client *c;
	kh_err r;

	if (!url || !out)
		return KH_ERR_INVAL;
	if (!(c = calloc(1, sizeof *c)))
		return KH_ERR_NOMEM;
	if ((r = kh__api_init(&c->api, url, cacert, ANSWER_MAX)) != KH_OK ||
	    (token && (r = kh__api_set_token(&c->api, token)) != KH_OK)) {
		kh__api_free(&c->api);
		free(c);
		return r;
	}
	*out = c;
	return KH_OK;
}

void kh_escrow_client_free(struct kh_escrow_client *c)
{
	if (!c)
		return;
	kh__api_free(&c->api);
	free(c);
}

const char *kh_escrow_client_error(const struct kh_escrow_client *c)
{
	return c ? c->api.msg : "";
}

/* A base64url field of the escrow's answer into out (cap bytes). */
static kh_err get_b64(struct kh_escrow_client *c, const char *what, const json_t *o, const char *key, uint8_t *out,
		      size_t cap, size_t *n)
{
	if (kh_json_get_b64(o, key, out, cap, n, 0) != KH_OK) {
		kh__api_say(&c->api, "%s: the escrow's answer has no valid %s", what, key);
		return KH_ERR_FORMAT;
	}
	return KH_OK;
}

static kh_err account_read(struct kh_escrow_client *c, const char *what, const json_t *o,
			   struct kh_escrow_account_info *a)
{
	const char *name = json_string_value(json_object_get(o, "name"));
	const char *cur = json_string_value(json_object_get(o, "currency"));

	memset(a, 0, sizeof *a);
	if (!name || strlen(name) >= sizeof a->name || !cur || !kh_escrow_currency_ok(cur) ||
	    kh__api_get_int(o, "available", 0, INT64_MAX, &a->available) ||
	    kh__api_get_int(o, "held", 0, INT64_MAX, &a->held) ||
	    kh__api_get_int(o, "deposited", 0, INT64_MAX, &a->deposited) ||
	    kh__api_get_int(o, "withdrawn", 0, INT64_MAX, &a->withdrawn)) {
		kh__api_say(&c->api, "%s: the escrow's answer is not an account", what);
		return KH_ERR_FORMAT;
	}
	snprintf(a->name, sizeof a->name, "%s", name);
	memcpy(a->currency, cur, sizeof a->currency);
	return KH_OK;
}

kh_err kh_escrow_account_info(struct kh_escrow_client *c, struct kh_escrow_account_info *out)
{
	json_t *o = NULL;
	kh_err r;

	c->api.msg[0] = 0;
	if ((r = kh__api_call_json(&c->api, "account", "GET", "/v1/account", NULL, 200, &o)) != KH_OK)
		return r;
	r = account_read(c, "account", o, out);
	json_decref(o);
	return r;
}

/* "Idempotency-Key: KEY" for a key of 1 to 128 visible characters. */
static kh_err idem_header(const char *key, char out[static 160])
{
	size_t n = key ? strlen(key) : 0;

	if (n < 1 || n > KH_HTTP_IDEM_KEY_MAX)
		return KH_ERR_INVAL;
	for (size_t i = 0; i < n; i++)
		if (key[i] <= ' ' || key[i] > '~')
			return KH_ERR_INVAL;
	snprintf(out, 160, "Idempotency-Key: %s", key);
	return KH_OK;
}

kh_err kh_escrow_withdraw(struct kh_escrow_client *c, int64_t amount, const char *idem, struct kh_escrow_account_info *out)
{
	char hdr[160], body[64];
	json_t *o = NULL;
	kh_err r;

	c->api.msg[0] = 0;
	if (amount < 1 || (r = idem_header(idem, hdr)) != KH_OK)
		return KH_ERR_INVAL;
	snprintf(body, sizeof body, "{\"amount\":%lld}", (long long)amount);
	if ((r = kh__api_call_json_h(&c->api, "withdraw", "POST", "/v1/withdrawals", body, hdr, 200, &o)) != KH_OK)
		return r;
	r = account_read(c, "withdraw", o, out);
	json_decref(o);
	return r;
}

/* ---------------------------------------------------------------- the seller */

kh_err kh_escrow_list(struct kh_escrow_client *c, const char *content, uint64_t price, uint32_t deadline,
		      const char *idem, uint8_t *buf, size_t *len)
{
	static const char P[] = "list";
	char hdr[160], *body = NULL;
	struct kh_escrow_listing l;
	json_t *o = NULL, *req;
	size_t n = 0;
	kh_err r;

	c->api.msg[0] = 0;
	if (!content || !kh_escrow_content_ok(content) || price < 1 || price > KH_ESCROW_PRICE_MAX ||
	    (r = idem_header(idem, hdr)) != KH_OK)
		return KH_ERR_INVAL;
	req = json_pack("{s:s, s:I}", "content", content, "price", (json_int_t)price);
	if (!req || (deadline && json_object_set_new(req, "deadline", json_integer(deadline)) != 0) ||
	    !(body = json_dumps(req, JSON_COMPACT))) {
		json_decref(req);
		return KH_ERR_NOMEM;
	}
	json_decref(req);
	{
		json_t *resp = NULL;
		long status = 0;
		/* 201 for a new listing, 200 for the one this key made before */
		r = kh__api_call_h(&c->api, P, "POST", "/v1/listings", body, hdr, &status, &resp, NULL, NULL);
		free(body);
		if (r != KH_OK)
			return r;
		if (status != 200 && status != 201) {
			r = kh__api_refused(&c->api, P, status, resp);
			json_decref(resp);
			return r;
		}
		o = resp;
	}
	if ((r = get_b64(c, P, o, "listing", buf, KH_ESCROW_LISTING_MAX, &n)) != KH_OK)
		goto out;
	/* the record itself says what was listed: it must be what we asked */
	if (kh_escrow_listing_parse(buf, n, NULL, &l) != KH_OK || strcmp(l.content, content) != 0 || l.price != price) {
		kh__api_say(&c->api, "%s: the escrow's listing is not the one asked for", P);
		r = KH_ERR_FORMAT;
		goto out;
	}
	*len = n;
out:
	json_decref(o);
	return r;
}

/* ---------------------------------------------------------------- the buyer: files */

/* BASE.EXT */
static char *base_file(const char *base, const char *ext)
{
	char *p = NULL;
	return asprintf(&p, "%s.%s", base, ext) < 0 ? NULL : p;
}

static const uint8_t state_magic[4] = {'K', 'H', 'P', 'S'};

/* The records a state may hold: a request, and an answer to that request's purchase. */
static kh_err pending_check(const struct kh_escrow_pending *p)
{
	struct kh_escrow_request q;
	struct kh_escrow_answer a;
	kh_err r;

	if (!p->reqlen || p->reqlen > sizeof p->req || p->anslen > sizeof p->ans)
		return KH_ERR_FORMAT;
	if ((r = kh_escrow_request_parse(p->req, p->reqlen, NULL, &q)) != KH_OK)
		return r;
	if (!p->anslen)
		return KH_OK;
	if ((r = kh_escrow_answer_parse(p->ans, p->anslen, NULL, &a)) != KH_OK)
		return r;
	return kh_ct_eq(a.purchase, q.purchase, sizeof q.purchase) && a.nlen == q.nlen ? KH_OK : KH_ERR_FORMAT;
}

kh_err kh_escrow_pending_format(const struct kh_escrow_pending *p, uint8_t *out, size_t cap, size_t *n)
{
	struct kh_wr w;

	if (pending_check(p) != KH_OK)
		return KH_ERR_INVAL;
	kh_wr_init(&w, out, cap);
	kh_wr_bytes(&w, state_magic, sizeof state_magic);
	kh_wr_u8(&w, 1);
	kh_wr_u16(&w, (uint16_t)p->reqlen);
	kh_wr_bytes(&w, p->req, p->reqlen);
	kh_wr_u16(&w, (uint16_t)p->anslen);
	kh_wr_bytes(&w, p->ans, p->anslen);
	if (w.err != KH_OK)
		return w.err;
	*n = w.len;
	return KH_OK;
}

kh_err kh_escrow_pending_parse(const uint8_t *b, size_t n, struct kh_escrow_pending *out)
{
	struct kh_escrow_pending *p = calloc(1, sizeof *p);
	uint8_t m[4], v;
	uint16_t k;
	struct kh_rd rd;
	kh_err r = KH_ERR_FORMAT;

	if (!p)
		return KH_ERR_NOMEM;
	kh_rd_init(&rd, b, n);
	if (kh_rd_copy(&rd, m, 4) != KH_OK || memcmp(m, state_magic, 4) != 0 || kh_rd_u8(&rd, &v) != KH_OK || v != 1 ||
	    kh_rd_u16(&rd, &k) != KH_OK || k > sizeof p->req || kh_rd_copy(&rd, p->req, k) != KH_OK)
		goto out;
	p->reqlen = k;
	if (kh_rd_u16(&rd, &k) != KH_OK || k > sizeof p->ans || kh_rd_copy(&rd, p->ans, k) != KH_OK ||
	    kh_rd_end(&rd) != KH_OK)
		goto out;
	p->anslen = k;
	if ((r = pending_check(p)) == KH_OK)
		memcpy(out, p, sizeof *p);
out:
	free(p);
	return r;
}

static kh_err state_write(const char *path, const struct kh_escrow_pending *p)
{
	uint8_t b[KH_ESCROW_PENDING_MAX];
	size_t n = 0;
	kh_err r = kh_escrow_pending_format(p, b, sizeof b, &n);

	return r != KH_OK ? r : kh_file_write_atomic(path, b, n, 0600);
}

/* KH_ERR_NOTFOUND when there is no purchase under way. */
static kh_err state_read(const char *path, struct kh_escrow_pending *p)
{
	uint8_t *b = NULL;
	size_t len = 0;
	kh_err r;

	if (access(path, F_OK) != 0)
		return errno == ENOENT ? KH_ERR_NOTFOUND : KH_ERR_IO;
	if ((r = kh_file_read(path, KH_ESCROW_PENDING_MAX, &b, &len)) != KH_OK)
		return r;
	r = kh_escrow_pending_parse(b, len, p);
	kh_file_free(b, len);
	return r;
}

/* The offer's listing and c, and the content's header (its first bytes). */
struct offer {
	uint8_t buf[KH_ESCROW_OFFER_MAX];
	size_t n;
	const uint8_t *listing, *c;
	size_t llen, clen;
	uint8_t hb[KH_ESCROW_HEADER_MAX];
	struct kh_escrow_header h;
};

static kh_err offer_load(struct kh_escrow_client *c, const char *offer, const char *content, struct offer *o)
{
	uint8_t *b = NULL;
	size_t n = 0;
	kh_err r;

	if ((r = kh_file_read(offer, KH_ESCROW_OFFER_MAX, &b, &n)) != KH_OK) {
		kh__api_say(&c->api, "%s: cannot read the offer", offer);
		return r;
	}
	memcpy(o->buf, b, n);
	o->n = n;
	kh_file_free(b, n);
	if ((r = kh_escrow_offer_parse(o->buf, o->n, &o->listing, &o->llen, &o->c, &o->clen)) != KH_OK) {
		kh__api_say(&c->api, "%s: not an escrow offer", offer);
		return r;
	}
	if ((r = kh_escrow_header_read(content, o->hb, &o->h)) != KH_OK)
		kh__api_say(&c->api,
			    r == KH_ERR_IO ? "%s: cannot open the content"
					   : "%s: not escrowed content (its header does not read)",
			    content);
	return r;
}

/* ---------------------------------------------------------------- the buyer: the device */

static size_t tlv_put(uint8_t *d, size_t cap, size_t at, uint8_t tag, const uint8_t *v, size_t n)
{
	struct kh_wr w;

	kh_wr_init(&w, d + at, cap - at);
	return kh_tlv_put(&w, tag, v, n) == KH_OK ? at + w.len : cap + 1;
}

/* One device command with TLV data; its answer's TLVs into t. */
static kh_err dev_cmd(struct kh_transport *dev, uint8_t ins, const uint8_t *d, size_t n, uint8_t *resp,
		      struct kh_tlv t[static KH_ESCROW_T_MAX + 1], uint32_t need)
{
	size_t dl = 0;
	uint16_t sw = 0;
	kh_err r;

	if (n > KH_APDU_MAX_DATA)
		return KH_ERR_TOO_LARGE;
	if ((r = kh_host_apdu(dev, ins, 0, d, n, resp, KH_APDU_MAX_RESP, &dl, &sw)) != KH_OK)
		return r;
	memset(t, 0, sizeof(struct kh_tlv) * (KH_ESCROW_T_MAX + 1));
	return kh_tlv_take(resp, dl, t, KH_ESCROW_T_MAX, need);
}

kh_err kh_escrow_device_cert(struct kh_transport *dev, int pairing, uint8_t *der, size_t cap, size_t *n)
{
	uint16_t sw = 0;
	kh_err r = kh_host_apdu(dev, KH_INS_GET_CERT, pairing ? 0 : 1, NULL, 0, der, cap, n, &sw);

	/* the answer holds the certificate and its status word within cap: no certificate is longer */
	return r == KH_OK && (*n < 1 || *n > KH_CERT_MAX) ? KH_ERR_FORMAT : r;
}

/* ---------------------------------------------------------------- the buyer: buy */

/* Settle: the notice (and licence) written, then told to the escrow. */
static kh_err settle(struct kh_escrow_client *c, const char *base, const struct kh_tlv *nt, const struct kh_tlv *lt,
		     const uint8_t *cert, size_t certlen, struct kh_escrow_bought *out)
{
	char *lic = base_file(base, "lic"), *not = base_file(base, "notice"), hex[33], target[80];
	struct kh_escrow_notice t;
	json_t *req = NULL, *o = NULL;
	char *body = NULL;
	const char *st;
	kh_err r;

	if (!lic || !not) {
		r = KH_ERR_NOMEM;
		goto out;
	}
	if ((r = kh_escrow_notice_parse(nt->v, nt->len, NULL, &t)) != KH_OK) {
		kh__api_say(&c->api, "the device's notice does not read");
		goto out;
	}
	out->outcome = t.outcome;
	out->reason = t.reason;
	memcpy(out->purchase, t.purchase, sizeof out->purchase);
	/* the licence first: once the escrow hears `delivered`, the seller is paid */
	if (lt && lt->v && (r = kh_file_write_atomic(lic, lt->v, lt->len, 0600)) != KH_OK) {
		kh__api_say(&c->api, "%s: cannot write the licence", lic);
		goto out;
	}
	if ((r = kh_file_write_atomic(not, nt->v, nt->len, 0644)) != KH_OK) {
		kh__api_say(&c->api, "%s: cannot write the notice", not);
		goto out;
	}
	kh_hex_encode(t.purchase, sizeof t.purchase, hex);
	snprintf(target, sizeof target, "/v1/purchases/%s/notice", hex);
	if (!(req = json_object()) || kh_json_set_b64(req, "notice", nt->v, nt->len) != KH_OK ||
	    kh_json_set_b64(req, "certificate", cert, certlen) != KH_OK || !(body = json_dumps(req, JSON_COMPACT))) {
		r = KH_ERR_NOMEM;
		goto out;
	}
	if ((r = kh__api_call_json(&c->api, "notice", "POST", target, body, 200, &o)) != KH_OK)
		goto out;
	st = json_string_value(json_object_get(o, "state"));
	snprintf(out->state, sizeof out->state, "%s", st ? st : "");
out:
	json_decref(req);
	json_decref(o);
	free(body);
	free(lic);
	free(not);
	return r;
}

/* Ask the escrow for the answer to the request in p (its purchase id as the Idempotency-Key). */
static kh_err ask_escrow(struct kh_escrow_client *c, struct kh_escrow_pending *p, const uint8_t *cert, size_t certlen,
			 int *refused)
{
	struct kh_escrow_request q;
	char hex[33], hdr[160];
	json_t *req = NULL, *resp = NULL;
	char *body = NULL;
	long status = 0;
	kh_err r;

	*refused = 0;
	if ((r = kh_escrow_request_parse(p->req, p->reqlen, NULL, &q)) != KH_OK)
		return r;
	kh_hex_encode(q.purchase, sizeof q.purchase, hex);
	snprintf(hdr, sizeof hdr, "Idempotency-Key: %s", hex);
	if (!(req = json_object()) || kh_json_set_b64(req, "request", p->req, p->reqlen) != KH_OK ||
	    kh_json_set_b64(req, "certificate", cert, certlen) != KH_OK || !(body = json_dumps(req, JSON_COMPACT))) {
		r = KH_ERR_NOMEM;
		goto out;
	}
	if ((r = kh__api_call_h(&c->api, "purchase", "POST", "/v1/purchases", body, hdr, &status, &resp, NULL, NULL)) !=
	    KH_OK)
		goto out;
	if (status != 200) {
		r = kh__api_refused(&c->api, "purchase", status, resp);
		/* a 4xx is a refusal that held nothing; a 5xx may have come after the commit */
		*refused = status >= 400 && status < 500 && status != 408 && status != 429;
		goto out;
	}
	r = get_b64(c, "purchase", resp, "answer", p->ans, sizeof p->ans, &p->anslen);
out:
	json_decref(req);
	json_decref(resp);
	free(body);
	return r;
}

/* The escrow's answer to the request in p, kept in spath once it came (p->anslen set). A refusal
 * by the escrow (*refused: it held nothing) cancels the device's purchase and removes spath. */
static kh_err answer_of(struct kh_escrow_client *c, struct kh_transport *dev, struct kh_escrow_pending *p,
			const char *spath, const uint8_t *cert, size_t certlen, int *refused)
{
	struct kh_escrow_request q;
	uint8_t d[3 + KH_ESCROW_ID_LEN], *resp;
	struct kh_tlv t[KH_ESCROW_T_MAX + 1];
	size_t n;
	kh_err r;

	*refused = 0;
	if (p->anslen)
		return KH_OK;
	if ((r = ask_escrow(c, p, cert, certlen, refused)) != KH_OK) {
		/* nothing held: the device forgets r, and the purchase is over */
		if (*refused && kh_escrow_request_parse(p->req, p->reqlen, NULL, &q) == KH_OK &&
		    (resp = malloc(KH_APDU_MAX_RESP)) != NULL) {
			n = tlv_put(d, sizeof d, 0, KH_ESCROW_T_PURCHASE, q.purchase, sizeof q.purchase);
			if (dev_cmd(dev, KH_INS_BUY_CANCEL, d, n, resp, t, 1u << KH_ESCROW_T_NOTICE) == KH_OK)
				(void)unlink(spath);
			free(resp);
		}
		return r;
	}
	if ((r = state_write(spath, p)) != KH_OK)
		kh__api_say(&c->api, "%s: cannot keep the escrow's answer", spath);
	return r;
}

kh_err kh_escrow_buy(struct kh_escrow_client *c, struct kh_transport *dev, const char *offer, const char *content,
		     const char *base, struct kh_escrow_bought *out)
{
	uint8_t *d = NULL, *resp = NULL, cert[KH_CERT_MAX + 2];
	struct kh_tlv t[KH_ESCROW_T_MAX + 1];
	struct offer *o = NULL;
	struct kh_escrow_pending *p = NULL;
	char *spath = base_file(base, "purchase");
	size_t n = 0, certlen = 0;
	int refused = 0;
	kh_err r;

	c->api.msg[0] = 0;
	memset(out, 0, sizeof *out);
	if (!spath || !(o = calloc(1, sizeof *o)) || !(p = calloc(1, sizeof *p)) || !(d = malloc(KH_APDU_MAX_DATA)) ||
	    !(resp = malloc(KH_APDU_MAX_RESP))) {
		r = KH_ERR_NOMEM;
		goto out;
	}
	if ((r = offer_load(c, offer, content, o)) != KH_OK)
		goto out;
	if ((r = kh_escrow_device_cert(dev, 0, cert, sizeof cert, &certlen)) != KH_OK) {
		kh__api_say(&c->api, "the device gives no certificate: %s", kh_strerror(r));
		goto out;
	}
	/* 1. the request: the one under way, or a new one, kept before it is sent */
	r = state_read(spath, p);
	if (r == KH_OK) {
		out->resumed = 1;
	} else if (r == KH_ERR_NOTFOUND) {
		n = tlv_put(d, KH_APDU_MAX_DATA, 0, KH_ESCROW_T_LISTING, o->listing, o->llen);
		n = tlv_put(d, KH_APDU_MAX_DATA, n, KH_ESCROW_T_C, o->c, o->clen);
		n = tlv_put(d, KH_APDU_MAX_DATA, n, KH_ESCROW_T_HEADER_HASH, o->h.hash, sizeof o->h.hash);
		if ((r = dev_cmd(dev, KH_INS_BUY_START, d, n, resp, t, 1u << KH_ESCROW_T_REQUEST)) != KH_OK) {
			kh__api_say(&c->api, "the device refused the purchase: %s", kh_strerror(r));
			goto out;
		}
		if (t[KH_ESCROW_T_REQUEST].len > sizeof p->req) {
			r = KH_ERR_FORMAT;
			goto out;
		}
		memcpy(p->req, t[KH_ESCROW_T_REQUEST].v, t[KH_ESCROW_T_REQUEST].len);
		p->reqlen = t[KH_ESCROW_T_REQUEST].len;
		if ((r = state_write(spath, p)) != KH_OK) {
			kh__api_say(&c->api, "%s: cannot keep the purchase under way", spath);
			goto out;
		}
	} else {
		kh__api_say(&c->api, "%s: not a purchase under way", spath);
		goto out;
	}
	/* 2. the escrow's answer, kept once it came */
	if ((r = answer_of(c, dev, p, spath, cert, certlen, &refused)) != KH_OK)
		goto out;
	/* 3. the device unblinds; a purchase it settled before answers its notice again */
	n = tlv_put(d, KH_APDU_MAX_DATA, 0, KH_ESCROW_T_LISTING, o->listing, o->llen);
	n = tlv_put(d, KH_APDU_MAX_DATA, n, KH_ESCROW_T_C, o->c, o->clen);
	n = tlv_put(d, KH_APDU_MAX_DATA, n, KH_ESCROW_T_HEADER, o->hb, o->h.len);
	n = tlv_put(d, KH_APDU_MAX_DATA, n, KH_ESCROW_T_ANSWER, p->ans, p->anslen);
	r = dev_cmd(dev, KH_INS_BUY_FINISH, d, n, resp, t, 0);
	if (r == KH_OK && !t[KH_ESCROW_T_NOTICE].v) {
		/* a share of a split key: the device keeps it until kh_escrow_combine, and so do we */
		const struct kh_tlv *st = &t[KH_ESCROW_T_SLOT];
		if (!st->v || st->len != KH_ESCROW_SLOT_LEN || st->v[0] != KH_ESCROW_SLOT_SHARE) {
			r = KH_ERR_FORMAT;
		} else {
			out->share = 1;
			memcpy(out->purchase, st->v + 2, sizeof out->purchase);
			goto out;
		}
	}
	if (r == KH_ERR_PURCHASE_STATE) {
		struct kh_escrow_request q;
		if ((r = kh_escrow_request_parse(p->req, p->reqlen, NULL, &q)) != KH_OK)
			goto out;
		n = tlv_put(d, KH_APDU_MAX_DATA, 0, KH_ESCROW_T_PURCHASE, q.purchase, sizeof q.purchase);
		r = dev_cmd(dev, KH_INS_BUY_NOTICE, d, n, resp, t, 1u << KH_ESCROW_T_NOTICE);
		if (r == KH_ERR_PURCHASE_STATE) {
			/* unblinded before, not settled: the share it holds waits to be combined */
			out->share = 1;
			memcpy(out->purchase, q.purchase, sizeof out->purchase);
			r = KH_OK;
			goto out;
		}
	}
	if (r != KH_OK) {
		kh__api_say(&c->api, "the device refused the escrow's answer: %s", kh_strerror(r));
		goto out;
	}
	/* 4. the licence and the notice kept, then the escrow told */
	if ((r = settle(c, base, &t[KH_ESCROW_T_NOTICE], t[KH_ESCROW_T_LICENCE].v ? &t[KH_ESCROW_T_LICENCE] : NULL,
			cert, certlen, out)) != KH_OK)
		goto out;
	(void)unlink(spath);
out:
	if (resp)
		kh_wipe(resp, KH_APDU_MAX_RESP);
	free(resp);
	free(d);
	free(o);
	free(p);
	free(spath);
	return r;
}

/* ---------------------------------------------------------------- the buyer: cancel */

kh_err kh_escrow_cancel(struct kh_escrow_client *c, struct kh_transport *dev, const char *base,
			struct kh_escrow_bought *out)
{
	uint8_t *resp = NULL, d[3 + KH_ESCROW_ID_LEN], cert[KH_CERT_MAX + 2];
	struct kh_tlv t[KH_ESCROW_T_MAX + 1];
	struct kh_escrow_pending *p = NULL;
	struct kh_escrow_request q;
	char *spath = base_file(base, "purchase");
	size_t n, certlen = 0;
	int refused = 0;
	kh_err r;

	c->api.msg[0] = 0;
	memset(out, 0, sizeof *out);
	if (!spath || !(p = calloc(1, sizeof *p)) || !(resp = malloc(KH_APDU_MAX_RESP))) {
		r = KH_ERR_NOMEM;
		goto out;
	}
	if ((r = state_read(spath, p)) != KH_OK || (r = kh_escrow_request_parse(p->req, p->reqlen, NULL, &q)) != KH_OK) {
		kh__api_say(&c->api, "%s: no purchase under way there", spath);
		goto out;
	}
	memcpy(out->purchase, q.purchase, sizeof out->purchase);
	if ((r = kh_escrow_device_cert(dev, 0, cert, sizeof cert, &certlen)) != KH_OK) {
		kh__api_say(&c->api, "the device gives no certificate: %s", kh_strerror(r));
		goto out;
	}
	/* the escrow's word first: a request it may hold money for is settled, not forgotten */
	if ((r = answer_of(c, dev, p, spath, cert, certlen, &refused)) != KH_OK) {
		if (refused) {
			/* it held nothing, and the device's purchase is cancelled */
			out->outcome = KH_ESCROW_FAILED;
			out->reason = KH_ESCROW_R_CANCELLED;
			snprintf(out->state, sizeof out->state, "refused");
			r = KH_OK;
		}
		goto out;
	}
	n = tlv_put(d, sizeof d, 0, KH_ESCROW_T_PURCHASE, q.purchase, sizeof q.purchase);
	if ((r = dev_cmd(dev, KH_INS_BUY_CANCEL, d, n, resp, t, 1u << KH_ESCROW_T_NOTICE)) != KH_OK) {
		kh__api_say(&c->api, "%s", r == KH_ERR_PURCHASE_STATE ? "the device delivered this purchase: nothing to cancel"
								       : "the device refused to cancel it");
		goto out;
	}
	if ((r = settle(c, base, &t[KH_ESCROW_T_NOTICE], NULL, cert, certlen, out)) == KH_OK)
		(void)unlink(spath);
out:
	if (resp)
		kh_wipe(resp, KH_APDU_MAX_RESP);
	free(resp);
	free(p);
	free(spath);
	return r;
}

/* ---------------------------------------------------------------- the buyer: combine */

/* The purchase id BASE.purchase of part keeps. */
static kh_err part_purchase(struct kh_escrow_client *c, const char *part, struct kh_escrow_pending *p,
			    uint8_t id[static KH_ESCROW_ID_LEN])
{
	struct kh_escrow_request q;
	char *spath = base_file(part, "purchase");
	kh_err r;

	if (!spath)
		return KH_ERR_NOMEM;
	if ((r = state_read(spath, p)) == KH_OK && (r = kh_escrow_request_parse(p->req, p->reqlen, NULL, &q)) == KH_OK)
		memcpy(id, q.purchase, KH_ESCROW_ID_LEN);
	else
		kh__api_say(&c->api, "%s: no purchase under way there", spath);
	free(spath);
	return r;
}

kh_err kh_escrow_combine(struct kh_escrow_client *const *clients, const char *const *parts, size_t n,
			 struct kh_transport *dev, const char *grant, const char *content, const char *base,
			 struct kh_escrow_combined *out)
{
	struct kh_escrow_client *c0 = clients[0];
	uint8_t *d = NULL, *resp = NULL, *g = NULL, cert[KH_CERT_MAX + 2], hb[KH_ESCROW_HEADER_MAX];
	uint8_t ids[(KH_SHAMIR_MAX_N - 1) * KH_ESCROW_ID_LEN];
	struct kh_tlv t[KH_ESCROW_T_MAX + 1];
	struct kh_escrow_pending *p = NULL;
	struct kh_escrow_header h;
	char *lic = base_file(base, "lic");
	size_t gl = 0, certlen = 0, k;
	int have_lic = 0;
	kh_err r, first = KH_OK;

	memset(out, 0, sizeof *out);
	for (size_t i = 0; i < n; i++)
		clients[i]->api.msg[0] = 0;
	if (n < 1 || n > KH_SHAMIR_MAX_N - 1) {
		free(lic);
		return KH_ERR_INVAL;
	}
	if (!lic || !(p = calloc(1, sizeof *p)) || !(d = malloc(KH_APDU_MAX_DATA)) || !(resp = malloc(KH_APDU_MAX_RESP))) {
		r = KH_ERR_NOMEM;
		goto out;
	}
	if ((r = kh_escrow_header_read(content, hb, &h)) != KH_OK) {
		kh__api_say(&c0->api, "%s: not escrowed content", content);
		goto out;
	}
	if ((r = kh_file_read(grant, KH_SHAMIR_SEALED_LEN + 1, &g, &gl)) != KH_OK) {
		kh__api_say(&c0->api, "%s: cannot read the grant", grant);
		goto out;
	}
	if ((r = kh_escrow_device_cert(dev, 0, cert, sizeof cert, &certlen)) != KH_OK) {
		kh__api_say(&c0->api, "the device gives no certificate: %s", kh_strerror(r));
		goto out;
	}
	for (size_t i = 0; i < n; i++)
		if ((r = part_purchase(c0, parts[i], p, ids + i * KH_ESCROW_ID_LEN)) != KH_OK)
			goto out;
	/* 1. the device recovers K from its share and the parts', and settles them all */
	k = tlv_put(d, KH_APDU_MAX_DATA, 0, KH_ESCROW_T_HEADER, hb, h.len);
	k = tlv_put(d, KH_APDU_MAX_DATA, k, KH_ESCROW_T_GRANT, g, gl);
	k = tlv_put(d, KH_APDU_MAX_DATA, k, KH_ESCROW_T_PURCHASES, ids, n * KH_ESCROW_ID_LEN);
	{
		/* its answer (a notice per part, the licence) comes again from each part's BUY NOTICE */
		size_t dl = 0;
		uint16_t sw = 0;
		r = kh_host_apdu(dev, KH_INS_BUY_COMBINE, 0, d, k, resp, KH_APDU_MAX_RESP, &dl, &sw);
	}
	if (r == KH_ERR_PURCHASE_STATE) {
		out->resumed = 1; /* combined before (or not a share): each part's notice says */
	} else if (r != KH_OK) {
		kh__api_say(&c0->api, "the device cannot combine the shares: %s",
			    r == KH_ERR_SHARES ? "too few escrows' shares yet (buy from another escrow)"
			    : r == KH_ERR_AUTH ? "the grant is for another device or other content"
					       : kh_strerror(r));
		goto out;
	}
	/* 2. each part: its notice from the device, the licence kept first, then its escrow told */
	for (size_t i = 0; i < n; i++) {
		struct kh_escrow_bought b;
		char *spath;
		k = tlv_put(d, KH_APDU_MAX_DATA, 0, KH_ESCROW_T_PURCHASE, ids + i * KH_ESCROW_ID_LEN, KH_ESCROW_ID_LEN);
		if ((r = dev_cmd(dev, KH_INS_BUY_NOTICE, d, k, resp, t, 1u << KH_ESCROW_T_NOTICE)) != KH_OK) {
			kh__api_say(&c0->api, "%s: the device has no notice for it: %s", parts[i], kh_strerror(r));
			goto out;
		}
		if (!have_lic && t[KH_ESCROW_T_LICENCE].v) {
			if ((r = kh_file_write_atomic(lic, t[KH_ESCROW_T_LICENCE].v, t[KH_ESCROW_T_LICENCE].len, 0600)) !=
			    KH_OK) {
				kh__api_say(&c0->api, "%s: cannot write the licence", lic);
				goto out;
			}
			have_lic = 1;
		}
		memset(&b, 0, sizeof b);
		if ((r = settle(clients[i], parts[i], &t[KH_ESCROW_T_NOTICE], NULL, cert, certlen, &b)) != KH_OK) {
			if (first == KH_OK)
				first = r; /* the others are told all the same; a rerun tells this one */
			continue;
		}
		out->outcome = b.outcome;
		out->reason = b.reason;
		out->told++;
		if ((spath = base_file(parts[i], "purchase")) != NULL)
			(void)unlink(spath);
		free(spath);
	}
	r = first;
out:
	if (resp)
		kh_wipe(resp, KH_APDU_MAX_RESP);
	free(resp);
	free(d);
	free(p);
	free(lic);
	if (g)
		kh_file_free(g, gl);
	return r;
}

/* ---------------------------------------------------------------- the buyer: status */

kh_err kh_escrow_status(struct kh_escrow_client *c, struct kh_transport *dev,
			kh_err (*fn)(void *arg, const struct kh_escrow_status *s), void *arg)
{
	uint8_t *resp = malloc(KH_APDU_MAX_RESP);
	size_t dl = 0;
	uint16_t sw = 0;
	struct kh_rd rd;
	struct kh_tlv t;
	int k;
	kh_err r;

	if (!resp)
		return KH_ERR_NOMEM;
	if (c)
		c->api.msg[0] = 0;
	if ((r = kh_host_apdu(dev, KH_INS_BUY_LIST, 0, NULL, 0, resp, KH_APDU_MAX_RESP, &dl, &sw)) != KH_OK)
		goto out;
	kh_rd_init(&rd, resp, dl);
	while (r == KH_OK && (k = kh_tlv_next(&rd, &t)) == 1) {
		struct kh_escrow_status s;
		if (t.tag != KH_ESCROW_T_SLOT || t.len != KH_ESCROW_SLOT_LEN) {
			r = KH_ERR_FORMAT;
			break;
		}
		memset(&s, 0, sizeof s);
		s.device_state = t.v[0];
		s.reason = t.v[1];
		memcpy(s.purchase, t.v + 2, KH_ESCROW_ID_LEN);
		memcpy(s.listing, t.v + 2 + KH_ESCROW_ID_LEN, KH_ESCROW_ID_LEN);
		if (c) {
			char hex[33], target[64];
			json_t *o = NULL;
			long status = 0;
			kh_hex_encode(s.purchase, sizeof s.purchase, hex);
			snprintf(target, sizeof target, "/v1/purchases/%s", hex);
			if ((r = kh__api_call(&c->api, "status", "GET", target, NULL, &status, &o, NULL, NULL)) != KH_OK)
				break;
			if (status == 200) {
				const char *st = json_string_value(json_object_get(o, "state"));
				snprintf(s.escrow_state, sizeof s.escrow_state, "%s", st ? st : "?");
				(void)kh__api_get_int(o, "price", 0, INT64_MAX, &s.price);
				(void)kh__api_get_int(o, "deadline", 0, INT64_MAX, &s.deadline);
			} else if (status == 404) {
				snprintf(s.escrow_state, sizeof s.escrow_state, "unknown");
			} else {
				r = kh__api_refused(&c->api, "status", status, o);
			}
			json_decref(o);
			if (r != KH_OK)
				break;
		}
		r = fn(arg, &s);
	}
	if (r == KH_OK && k < 0)
		r = k;
out:
	free(resp);
	return r;
}
