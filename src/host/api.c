/*
 * A host's client of a center's JSON API (src/host/api_int.h): requests with the bearer token,
 * refusals read back into the registry's codes, and the helpers that keep secrets out of
 * jansson's unwiped copies.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host/api_int.h"
#include "keyhole/crypto.h"

kh_err kh__api_init(struct kh__api *a, const char *url, const char *cacert, size_t answer_max)
{
	size_t n;
	kh_err r;

	memset(a, 0, sizeof *a);
	if (!url || kh_http_url_check(url, 0) != KH_OK)
		return KH_ERR_INVAL;
	n = strlen(url);
	while (n > 0 && url[n - 1] == '/')
		n--;
	if (!(a->base = strndup(url, n)))
		return KH_ERR_NOMEM;
	if ((r = kh_http_client_new(cacert, "keyhole/" KH_VERSION, answer_max, &a->http)) != KH_OK) {
		free(a->base);
		a->base = NULL;
	}
	return r;
}

void kh__api_free(struct kh__api *a)
{
	kh_http_client_free(a->http);
	kh__api_free_secret(a->auth);
	free(a->base);
	memset(a, 0, sizeof *a);
}

kh_err kh__api_set_token(struct kh__api *a, const char *token)
{
	kh__api_free_secret(a->auth);
	if (asprintf(&a->auth, "Authorization: Bearer %s", token) < 0) {
		a->auth = NULL;
		return KH_ERR_NOMEM;
	}
	return KH_OK;
}

void kh__api_free_secret(char *s)
{
	if (s) {
		kh_wipe(s, strlen(s));
		free(s);
	}
}

void kh__api_say(struct kh__api *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->msg, sizeof c->msg, fmt, ap);
	va_end(ap);
	for (char *p = c->msg; *p; p++)
		if (*p < 0x20 || *p > 0x7E)
			*p = '?';
}

kh_err kh__api_code_named(const char *json)
{
	for (int i = 0; json && i < KH__ERR_COUNT; i++)
		if (strcmp(kh_err_json(-(i + 1)), json) == 0)
			return -(i + 1);
	return KH_ERR_PEER_ERROR;
}

kh_err kh__api_refused(struct kh__api *c, const char *what, long status, const json_t *resp)
{
	const json_t *e = json_object_get(resp, "error");
	const char *code = json_string_value(json_object_get(e, "code"));
	const char *m = json_string_value(json_object_get(e, "message"));

	kh__api_say(c, "%s: the server answered HTTP %ld %s: %s", what, status, code ? code : "(no error code)",
	    m ? m : "(no message)");
	return code ? kh__api_code_named(code) : KH_ERR_PEER_ERROR;
}

kh_err kh__api_call_h(struct kh__api *c, const char *what, const char *method, const char *target, const char *body,
		      const char *extra, long *status, json_t **resp, char **text, size_t *textlen)
{
	const char *hdrs[5];
	char *url = NULL, err[256] = "";
	size_t n = 0;
	kh_err r;

	if (asprintf(&url, "%s%s", c->base, target) < 0)
		return KH_ERR_NOMEM;
	hdrs[n++] = text ? "Accept: application/octet-stream" : "Accept: application/json";
	if (body)
		hdrs[n++] = "Content-Type: application/json";
	if (c->auth)
		hdrs[n++] = c->auth;
	if (extra)
		hdrs[n++] = extra;
	hdrs[n] = NULL;
	/* JSON answers may carry the session token: the client's copy of them is wiped */
	kh_http_client_set_secret(c->http, text == NULL);
	r = kh_http_client_send(c->http, method, url, hdrs, body, status, resp, text, textlen, err, sizeof err);
	if (r == KH_ERR_TRANSPORT)
		kh__api_say(c, "%s: no answer from %s: %s", what, c->base, err);
	free(url);
	return r;
}

kh_err kh__api_call(struct kh__api *a, const char *what, const char *method, const char *target, const char *body,
		    long *status, json_t **resp, char **text, size_t *textlen)
{
	return kh__api_call_h(a, what, method, target, body, NULL, status, resp, text, textlen);
}

kh_err kh__api_call_json(struct kh__api *a, const char *what, const char *method, const char *target,
			 const char *body, long want, json_t **out)
{
	return kh__api_call_json_h(a, what, method, target, body, NULL, want, out);
}

kh_err kh__api_call_json_h(struct kh__api *c, const char *what, const char *method, const char *target,
			   const char *body, const char *extra, long want, json_t **out)
{
	json_t *resp = NULL;
	long status = 0;
	kh_err r;

	if ((r = kh__api_call_h(c, what, method, target, body, extra, &status, &resp, NULL, NULL)) != KH_OK)
		return r;
	if (status != want) {
		r = kh__api_refused(c, what, status, resp);
		json_decref(resp);
		return r;
	}
	if (!json_is_object(resp)) {
		json_decref(resp);
		kh__api_say(c, "%s: the server's answer is not the API's JSON", what);
		return KH_ERR_FORMAT;
	}
	*out = resp;
	return KH_OK;
}

void kh__api_put_json_string(struct kh_wr *w, const char *s)
{
	static const char hex[] = "0123456789abcdef";

	kh_wr_u8(w, '"');
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\') {
			kh_wr_u8(w, '\\');
			kh_wr_u8(w, *p);
		} else if (*p < 0x20 || *p == 0x7F) {
			uint8_t e[6] = {'\\', 'u', '0', '0', (uint8_t)hex[*p >> 4], (uint8_t)hex[*p & 15]};
			kh_wr_bytes(w, e, sizeof e);
		} else {
			kh_wr_u8(w, *p);
		}
	}
	kh_wr_u8(w, '"');
}

void kh__api_drop_secret_json(json_t *v, const char *key)
{
	json_t *s = json_object_get(v, key);

	if (json_is_string(s))
		kh_wipe((char *)json_string_value(s), json_string_length(s));
	json_decref(v);
}

int kh__api_get_int(const json_t *o, const char *key, int64_t lo, int64_t hi, int64_t *v)
{
	const json_t *x = json_object_get(o, key);

	if (!json_is_integer(x) || json_integer_value(x) < lo || json_integer_value(x) > hi)
		return -1;
	*v = json_integer_value(x);
	return 0;
}
