/*
 * The HTTP server's answers (http_int.h): JSON and text bodies, errors in the one envelope
 * {"error": {"code", "message"}}, 405 with Allow; and their accounting, done before a byte is
 * sent: the request counted in /metrics by method, status and error code.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <microhttpd.h>

#include "keyhole/crypto.h"
#include "keyhole/http.h"
#include "keyhole/log.h"
#include "http_int.h"

static void count(struct kh_http *h, const struct kh_http_req *r);

/* Remember the error code of an answer for keyhole_http_errors_total. */
void kh__http_note_errcode(struct kh_http_req *r, const json_t *body)
{
	const char *code = json_string_value(json_object_get(json_object_get(body, "error"), "code"));
	snprintf(r->errcode, sizeof r->errcode, "%s", code ? code : "other");
}

/* libmicrohttpd's free for a secret answer (kh_http_reply_secret: NUL-terminated). */
static void free_wiped(void *p)
{
	if (p)
		kh_wipe(p, strlen(p));
	free(p);
}

/*
 * Queue text (malloc'd, taken over) with status and the response's headers. Counted in the
 * metrics here, before a byte is sent, so a client that has its answer sees it counted.
 */
enum MHD_Result kh__http_send_text(struct kh_http_req *r, int status, char *text, size_t len,
				 const char *ctype, const struct kh_http_resp *resp,
				 const char *allow, int replayed)
{
	struct MHD_Response *m;
	enum MHD_Result ret;

	if (resp && resp->secret)
		m = MHD_create_response_from_buffer_with_free_callback(len, text, free_wiped);
	else
		m = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
	if (!m) {
		if (resp && resp->secret)
			kh_wipe(text, len);
		free(text);
		return MHD_NO;
	}
	if (ctype)
		MHD_add_response_header(m, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
	if (allow)
		MHD_add_response_header(m, MHD_HTTP_HEADER_ALLOW, allow);
	if (replayed)
		MHD_add_response_header(m, "Idempotent-Replayed", "true");
	for (size_t i = 0; resp && i < resp->nhdr; i++)
		MHD_add_response_header(m, resp->hdr[i][0], resp->hdr[i][1]);
	if (atomic_load(&r->h->stopping))
		MHD_add_response_header(m, MHD_HTTP_HEADER_CONNECTION, "close");
	ret = MHD_queue_response(r->conn, (unsigned)status, m);
	MHD_destroy_response(m);
	r->queued = 1;
	r->status = status;
	if (status >= 400 && !r->errcode[0])
		snprintf(r->errcode, sizeof r->errcode, "other");
	count(r->h, r);
	return ret;
}

char *kh__http_dump(const json_t *body, size_t *len)
{
	char *s;

	if (!body) {
		s = strdup("");
		*len = 0;
		return s;
	}
	s = json_dumps(body, JSON_COMPACT);
	*len = s ? strlen(s) : 0;
	return s;
}

enum MHD_Result kh__http_send_json(struct kh_http_req *r, int status, const json_t *body,
				 const struct kh_http_resp *resp, const char *allow)
{
	size_t len;
	char *text = kh__http_dump(body, &len);

	if (!text)
		return MHD_NO;
	if (status >= 400)
		kh__http_note_errcode(r, body);
	return kh__http_send_text(r, status, text, len, body ? "application/json" : NULL, resp, allow, 0);
}

enum MHD_Result kh__http_send_error(struct kh_http_req *r, kh_err e, const char *msg, const char *allow)
{
	json_t *b = kh_json_error(e, msg);
	enum MHD_Result ret;

	if (!b)
		return MHD_NO;
	ret = kh__http_send_json(r, kh_err_http(e), b, NULL, allow);
	json_decref(b);
	return ret;
}

/* 405 has no code of its own in the registry: the body says method_not_allowed. */
enum MHD_Result kh__http_send_405(struct kh_http_req *r, const char *allow)
{
	json_t *b = json_pack("{s:{s:s,s:s}}", "error", "code", "method_not_allowed", "message",
			      "method not allowed for this path");
	enum MHD_Result ret;

	if (!b)
		return MHD_NO;
	ret = kh__http_send_json(r, MHD_HTTP_METHOD_NOT_ALLOWED, b, NULL, allow);
	json_decref(b);
	return ret;
}

/* The path for the log line: printable ASCII only (no spaces or quotes), at most 200 chars. */
void kh__http_log_path(const char *in, char *out, size_t cap)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;

	for (; *in && o + 4 < cap && o < 200; in++) {
		unsigned char c = (unsigned char)*in;
		if (c > 0x20 && c < 0x7f && c != '"' && c != '\\' && c != '%') {
			out[o++] = (char)c;
		} else {
			out[o++] = '%';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		}
	}
	if (*in && o + 4 < cap) {
		memcpy(out + o, "...", 3);
		o += 3;
	}
	out[o] = '\0';
}

const char *kh__http_method_label(const char *m)
{
	static const char *const known[] = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"};
	for (size_t i = 0; m && i < sizeof known / sizeof known[0]; i++)
		if (strcmp(m, known[i]) == 0)
			return known[i];
	return "other";
}

static void count(struct kh_http *h, const struct kh_http_req *r)
{
	struct kh_metric *c;
	char labels[128], esc[96];

	snprintf(labels, sizeof labels, "method=\"%s\",code=\"%d\"", kh__http_method_label(r->method),
		 r->status);
	if (kh_metrics_get(h->metrics, KH_METRIC_COUNTER, "keyhole_http_requests_total",
			   "HTTP requests answered, by method and status", labels, &c) == KH_OK)
		kh_metric_add(c, 1);
	if (r->status >= 400 && r->errcode[0] &&
	    kh_metrics_label_escape(r->errcode, esc, sizeof esc) == KH_OK) {
		snprintf(labels, sizeof labels, "code=\"%s\"", esc);
		if (kh_metrics_get(h->metrics, KH_METRIC_COUNTER, "keyhole_http_errors_total",
				   "HTTP error answers, by error code", labels, &c) == KH_OK)
			kh_metric_add(c, 1);
	}
}

/* An error answer with one more header (Connection: close, Retry-After). */
enum MHD_Result kh__http_send_error_hdr(struct kh_http_req *r, int status, const char *code, const char *msg,
				      const char *name, const char *value)
{
	struct kh_http_resp extra = {0};
	json_t *b = json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", msg);
	enum MHD_Result ret = MHD_NO;

	if (b && kh_http_resp_header(&extra, name, value) == KH_OK)
		ret = kh__http_send_json(r, status, b, &extra, NULL);
	json_decref(b);
	kh__http_resp_clear(&extra);
	return ret;
}
