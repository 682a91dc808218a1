/*
 * What a handler of the HTTP server sees (method, path, {parameters}, query, headers, JSON body,
 * Idempotency-Key) and how it answers (status and JSON body, or an error from the registry, plus
 * headers). The server (http_server.c) turns the answer into bytes.
 */
#include <stdlib.h>
#include <string.h>

#include "keyhole/crypto.h"
#include "http_int.h"

kh_err kh_http_reply(struct kh_http_resp *resp, int status, json_t *body)
{
	if (!resp || status < 200 || status > 599 || resp->set) {
		json_decref(body);
		return KH_ERR_INVAL;
	}
	resp->set = 1;
	resp->status = status;
	resp->body = body;
	return KH_OK;
}

kh_err kh_http_reply_text(struct kh_http_resp *resp, int status, char *text, size_t len)
{
	if (!resp || status < 200 || status > 599 || resp->set || !text) {
		free(text);
		return KH_ERR_INVAL;
	}
	resp->set = 1;
	resp->status = status;
	resp->text = text;
	resp->text_len = len;
	return KH_OK;
}

kh_err kh_http_reply_secret(struct kh_http_resp *resp, int status, char *text, size_t len)
{
	kh_err r;

	if (text && strlen(text) != len) { /* the wiping free relies on the terminator */
		kh_wipe(text, len);
		free(text);
		return KH_ERR_INVAL;
	}
	if ((r = kh_http_reply_text(resp, status, text, len)) == KH_OK)
		resp->secret = 1;
	return r;
}

kh_err kh_http_reply_bytes(struct kh_http_resp *resp, int status, const char *ctype, uint8_t *buf, size_t len)
{
	kh_err r;

	if (!ctype || !*ctype) {
		free(buf);
		return KH_ERR_INVAL;
	}
	if ((r = kh_http_reply_text(resp, status, (char *)buf, len)) == KH_OK)
		resp->ctype = ctype;
	return r;
}

kh_err kh_http_reply_error(struct kh_http_resp *resp, kh_err e, const char *msg)
{
	json_t *b;

	if (e == KH_OK)
		e = KH_ERR_INTERNAL;
	b = kh_json_error(e, msg);
	if (!b)
		return KH_ERR_NOMEM;
	return kh_http_reply(resp, kh_err_http(e), b);
}

static int valid_header_text(const char *s, int name)
{
	if (!s || (name && !*s))
		return 0;
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c < 0x20 || c == 0x7f || (name && (c == ':' || c == ' ')))
			return 0;
	}
	return 1;
}

kh_err kh_http_resp_header(struct kh_http_resp *resp, const char *name, const char *value)
{
	char *n, *v;

	if (!resp || !valid_header_text(name, 1) || !valid_header_text(value, 0))
		return KH_ERR_INVAL;
	if (resp->nhdr == KH__HTTP_MAX_HEADERS)
		return KH_ERR_TOO_LARGE;
	n = strdup(name);
	v = strdup(value);
	if (!n || !v) {
		free(n);
		free(v);
		return KH_ERR_NOMEM;
	}
	resp->hdr[resp->nhdr][0] = n;
	resp->hdr[resp->nhdr][1] = v;
	resp->nhdr++;
	return KH_OK;
}

void kh__http_resp_clear(struct kh_http_resp *resp)
{
	json_decref(resp->body);
	if (resp->text && resp->secret)
		kh_wipe(resp->text, resp->text_len);
	free(resp->text);
	for (size_t i = 0; i < resp->nhdr; i++) {
		free(resp->hdr[i][0]);
		free(resp->hdr[i][1]);
	}
	memset(resp, 0, sizeof *resp);
}

const char *kh_http_method(const struct kh_http_req *r)
{
	return r ? r->method : NULL;
}

const char *kh_http_path(const struct kh_http_req *r)
{
	return r ? r->path : NULL;
}

const char *kh_http_route_pattern(const struct kh_http_req *r)
{
	return r && r->route ? r->route->pattern : NULL;
}

const char *kh_http_param(const struct kh_http_req *r, const char *name)
{
	if (!r || !r->route || !name)
		return NULL;
	for (size_t i = 0; i < r->route->nseg; i++)
		if ((r->route->param_mask >> i & 1) && strcmp(r->route->seg[i], name) == 0)
			return r->param_val[i];
	return NULL;
}

const char *kh_http_query(const struct kh_http_req *r, const char *name)
{
	const char *v;

	if (!r || !name)
		return NULL;
	v = NULL;
	if (MHD_lookup_connection_value_n(r->conn, MHD_GET_ARGUMENT_KIND, name, strlen(name), &v,
					  NULL) != MHD_YES)
		return NULL;
	return v ? v : "";
}

const char *kh_http_header(const struct kh_http_req *r, const char *name)
{
	return r && name ? MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name) : NULL;
}

json_t *kh_http_body(const struct kh_http_req *r)
{
	return r ? r->json : NULL;
}

const uint8_t *kh_http_raw_body(const struct kh_http_req *r, size_t *len)
{
	*len = r && r->route && (r->route->flags & KH_HTTP_ROUTE_RAW) ? r->len : 0;
	return *len ? (const uint8_t *)r->body : NULL;
}

const char *kh_http_idempotency_key(const struct kh_http_req *r)
{
	return r ? r->idem_key : NULL;
}
