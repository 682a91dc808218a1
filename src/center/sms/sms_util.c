/*
 * The small pieces every management-center endpoint uses: reading ids and UAs from paths and
 * fields from JSON bodies, strictly (an operator's typo is a 400, never a guess), and answering
 * a refusal with a code and message that say exactly what was wrong; and the Idempotency-Key every
 * operator write keeps, bound in the write's own transaction (kh__sms_idem_*).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyhole/crypto.h"
#include "keyhole/file.h"
#include "sms_int.h"

kh_err kh__sms_idem_key(const struct kh_http_req *req, const char *caller, char out[static KH__SMS_IDEM_KEY_LEN])
{
	const char *key = kh_http_idempotency_key(req), *method = kh_http_method(req),
		   *pattern = kh_http_route_pattern(req);
	uint8_t d[32];
	char *in = NULL;
	int n;
	size_t pre;
	kh_err r;

	if (!key || !method || !pattern)
		return KH_ERR_INVAL;
	/* NUL-separated: no two (caller, method, pattern, key) give the same bytes */
	n = asprintf(&in, "%s%c%s%c%s%c%s", caller, 0, method, 0, pattern, 0, key);
	if (n < 0)
		return KH_ERR_NOMEM;
	r = kh_sha256((const uint8_t *)in, (size_t)n, d);
	free(in);
	if (r != KH_OK)
		return r;
	pre = (size_t)snprintf(out, KH__SMS_IDEM_KEY_LEN, "%s:", caller);
	if (pre >= KH__SMS_IDEM_KEY_LEN)
		return KH_ERR_INVAL;
	return kh_b64url_encode(d, sizeof d, out + pre, KH__SMS_IDEM_KEY_LEN - pre);
}

kh_err kh__sms_idem_put(struct kh_store *s, struct kh_sms *c, const char *key,
			const uint8_t hash[static KH_STORE_IDEM_HASH_LEN], const char *text, size_t len)
{
	kh_err r;

	if (kh_store_group_batches(c->writer) &&
	    (r = kh_store_idem_expire(s, kh__sms_now(c) - (int64_t)c->lim.idem_ttl, KH__SMS_IDEM_PURGE, NULL)) != KH_OK)
		return r;
	return kh_store_idem_put(s, key, hash, (const uint8_t *)text, len);
}

kh_err kh__sms_idem_sweep(struct kh_sms *c, unsigned *n)
{
	struct kh_store *s;
	unsigned got = 0, total = 0;
	kh_err r;

	if ((r = kh__sms_db(c, &s)) != KH_OK)
		return r;
	/* Each DELETE a statement of its own, outside any transaction: it conflicts with no request. */
	do {
		if ((r = kh_store_idem_expire(s, kh__sms_now(c) - (int64_t)c->lim.idem_ttl, KH__SMS_IDEM_SWEEP, &got)) !=
		    KH_OK)
			return r;
		total += got;
	} while (got == KH__SMS_IDEM_SWEEP);
	if (n)
		*n = total;
	return KH_OK;
}

kh_err kh__sms_idem_init(struct kh_http_req *req, const char *caller, const char *fp, struct kh__sms_idem *im)
{
	const char *key = kh_http_idempotency_key(req);
	const json_t *body = kh_http_body(req);
	char *canon = NULL, *text = NULL;
	kh_err r;

	memset(im, 0, sizeof *im);
	if (key == NULL)
		return KH_OK;
	if ((r = kh__sms_idem_key(req, caller, im->key)) != KH_OK)
		return r;
	im->on = 1;
	if (fp == NULL) {
		/* {} and no body ask the same: a client may send either for a write without fields */
		if (json_object_size(body) > 0 && (canon = json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS)) == NULL)
			return KH_ERR_NOMEM;
		if (asprintf(&text, "%s\n%s\n%s", kh_http_method(req), kh_http_path(req), canon ? canon : "") < 0)
			text = NULL;
		free(canon);
		if (text == NULL)
			return KH_ERR_NOMEM;
		fp = text;
	}
	r = kh_sha256((const uint8_t *)fp, strlen(fp), im->hash);
	free(text);
	return r;
}

/* A record's status line: three digits and a newline. */
#define STATUS_LEN 4

kh_err kh__sms_idem_replay(struct kh_store *s, struct kh__sms_idem *im)
{
	uint8_t *stored = NULL;
	size_t n = 0, off = 0;
	kh_err r;

	free(im->answer); /* a busy retry starts again */
	im->answer = NULL;
	im->len = 0;
	im->replayed = 0;
	if (!im->on)
		return KH_ERR_NOTFOUND;
	if ((r = kh_store_idem_get(s, im->key, im->hash, &stored, &n)) != KH_OK)
		return r;
	im->status = 200; /* a record from before statuses were kept: a reload's or an edit's */
	if (n >= STATUS_LEN && stored[0] >= '1' && stored[0] <= '5' && stored[1] >= '0' && stored[1] <= '9' &&
	    stored[2] >= '0' && stored[2] <= '9' && stored[3] == '\n') {
		im->status = (stored[0] - '0') * 100 + (stored[1] - '0') * 10 + (stored[2] - '0');
		off = STATUS_LEN;
	}
	/* a text: NUL-terminated for the reply */
	if ((im->answer = malloc(n - off + 1)) == NULL) {
		free(stored);
		return KH_ERR_NOMEM;
	}
	memcpy(im->answer, stored + off, n - off);
	im->answer[n - off] = 0;
	im->len = n - off;
	im->replayed = 1;
	free(stored);
	return KH_OK;
}

kh_err kh__sms_idem_begin(struct kh_store *s, struct kh__sms_idem *im, struct kh__sms_why *why, int *done)
{
	kh_err r;

	*why = (struct kh__sms_why){0};
	r = kh__sms_idem_replay(s, im);
	*done = r == KH_OK;
	if (r == KH_OK || r == KH_ERR_NOTFOUND)
		return KH_OK;
	if (r == KH_ERR_IDEM_MISMATCH)
		return kh__sms_why(why, r, NULL, "this Idempotency-Key was used for another request");
	return r;
}

kh_err kh__sms_idem_answer(struct kh_store *s, struct kh_sms *c, struct kh__sms_idem *im, int status, json_t *o)
{
	char *rec;
	kh_err r;

	if (o == NULL)
		return KH_ERR_NOMEM;
	free(im->answer);
	im->answer = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(o);
	if (im->answer == NULL)
		return KH_ERR_NOMEM;
	if (status < 100 || status > 599)
		return KH_ERR_INTERNAL;
	im->len = strlen(im->answer);
	im->status = status;
	im->replayed = 0;
	if (!im->on)
		return KH_OK;
	if ((rec = malloc(STATUS_LEN + im->len + 1)) == NULL)
		return KH_ERR_NOMEM;
	snprintf(rec, STATUS_LEN + 1, "%03d\n", status);
	memcpy(rec + STATUS_LEN, im->answer, im->len);
	r = kh__sms_idem_put(s, c, im->key, im->hash, rec, STATUS_LEN + im->len);
	free(rec);
	return r;
}

kh_err kh__sms_idem_reply(struct kh_http_resp *resp, struct kh__sms_idem *im)
{
	char *text = im->answer;
	kh_err r;

	im->answer = NULL;
	if (text == NULL)
		return KH_ERR_INTERNAL;
	if (im->replayed && (r = kh_http_resp_header(resp, "Idempotent-Replayed", "true")) != KH_OK) {
		free(text);
		return r;
	}
	return kh_http_reply_text(resp, im->status, text, im->len);
}

kh_err kh__sms_idem_fail(struct kh_http_resp *resp, struct kh__sms_idem *im, kh_err r, const struct kh__sms_why *why)
{
	free(im->answer);
	im->answer = NULL;
	return why->code || why->msg ? kh__sms_fail(resp, r, why) : r;
}

kh_err kh__sms_idem_run(struct kh_http_req *req, struct kh_http_resp *resp, struct kh_sms *c, kh_store_tx_fn fn,
			void *arg, struct kh__sms_idem *im, const struct kh__sms_why *why, const unsigned *queued)
{
	kh_err r;

	if ((r = kh__sms_idem_init(req, KH__SMS_CALLER_OPERATOR, NULL, im)) != KH_OK)
		return r;
	if ((r = kh__sms_write(c, fn, arg)) != KH_OK)
		return kh__sms_idem_fail(resp, im, r, why);
	if (queued)
		kh__sms_count_emms(c, *queued);
	return kh__sms_idem_reply(resp, im);
}

kh_err kh__sms_why(struct kh__sms_why *w, kh_err e, const char *code, const char *msg)
{
	w->code = code;
	w->msg = msg;
	return e;
}

kh_err kh__sms_fail(struct kh_http_resp *resp, kh_err e, const struct kh__sms_why *why)
{
	json_t *body;

	if (why == NULL || why->code == NULL)
		return kh_http_reply_error(resp, e, why ? why->msg : NULL);
	body = json_pack("{s:{s:s,s:s}}", "error", "code", why->code, "message", why->msg ? why->msg : kh_strerror(e));
	if (body == NULL)
		return KH_ERR_NOMEM;
	return kh_http_reply(resp, kh_err_http(e), body);
}

kh_err kh__sms_parse_ua(const char *s, uint32_t *ua)
{
	uint8_t b[4];

	if (s == NULL || strlen(s) != 8 || kh_hex_decode(s, 8, b, sizeof b) != KH_OK)
		return KH_ERR_INVAL;
	*ua = kh_get_be32(b);
	return KH_OK;
}

kh_err kh__sms_parse_id(const char *s, int64_t *id)
{
	char *end;
	long long v;

	if (s == NULL || *s < '1' || *s > '9')
		return KH_ERR_INVAL;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (*end || errno || v <= 0)
		return KH_ERR_INVAL;
	*id = v;
	return KH_OK;
}

void kh__sms_ua_hex(uint32_t ua, char out[static 9])
{
	snprintf(out, 9, "%08X", ua);
}

kh_err kh__sms_json_int(const json_t *body, const char *key, int64_t min, int64_t max, int required, int64_t *v)
{
	json_t *j = body ? json_object_get(body, key) : NULL;
	json_int_t x;

	if (j == NULL)
		return required ? KH_ERR_INVAL : KH_ERR_NOTFOUND;
	if (!json_is_integer(j))
		return KH_ERR_INVAL;
	x = json_integer_value(j);
	if (x < min || x > max)
		return KH_ERR_INVAL;
	*v = x;
	return KH_OK;
}

kh_err kh__sms_json_name(const json_t *body, const char *key, const char **name)
{
	json_t *j = body ? json_object_get(body, key) : NULL;
	size_t n;

	if (!json_is_string(j))
		return KH_ERR_INVAL;
	n = json_string_length(j);
	/* A NUL inside the string would cut the name the store keeps. */
	if (n < 1 || n > KH_STORE_NAME_MAX || strlen(json_string_value(j)) != n)
		return KH_ERR_INVAL;
	*name = json_string_value(j);
	return KH_OK;
}

kh_err kh__sms_query_int(struct kh_http_req *req, const char *name, int64_t def, int64_t max, int64_t *v)
{
	const char *q = kh_http_query(req, name);
	char *end;
	long long x;

	if (q == NULL) {
		*v = def;
		return KH_OK;
	}
	if (*q < '0' || *q > '9')
		return KH_ERR_INVAL;
	errno = 0;
	x = strtoll(q, &end, 10);
	if (*end || errno || x < 0 || x > max)
		return KH_ERR_INVAL;
	*v = x;
	return KH_OK;
}

kh_err kh__sms_query_time(struct kh_http_req *req, const char *name, int64_t def, int64_t *v)
{
	const char *q = kh_http_query(req, name);
	char *end;
	long long x;

	if (q == NULL) {
		*v = def;
		return KH_OK;
	}
	if (!((*q >= '0' && *q <= '9') || (*q == '-' && q[1] >= '0' && q[1] <= '9')))
		return KH_ERR_INVAL;
	errno = 0;
	x = strtoll(q, &end, 10);
	if (*end || errno || x < -KH__SMS_TIME_MAX || x > KH__SMS_TIME_MAX)
		return KH_ERR_INVAL;
	*v = x;
	return KH_OK;
}

json_t *kh__sms_emm_json(const struct kh_store_emm *e)
{
	char addr[9];
	json_t *o;

	kh__sms_ua_hex(e->addr, addr);
	o = json_pack("{s:I,s:i,s:s,s:I}", "id", (json_int_t)e->id, "address_type", (int)e->addr_type, "address",
		      addr, "seq", (json_int_t)e->seq);
	if (o && kh_json_set_b64(o, "section", e->section, e->len) != KH_OK) {
		json_decref(o);
		o = NULL;
	}
	return o;
}
