/*
 * The HTTP/1.1 + JSON server every center runs behind, over GNU libmicrohttpd: a thread per
 * connection (at most a configured number at once), keep-alive, HTTPS restricted to TLS 1.3
 * through libmicrohttpd's GnuTLS backend. This file holds the route table, the server's life
 * (new, start, stop, free) and each request's: route match (404 / 405 with Allow) and header
 * checks (413 on a declared Content-Length over the limit, 415 when a body is not
 * application/json, 400 on a bad Idempotency-Key, which the handler binds inside its own
 * transaction) as soon as its headers are in, refusing ambiguous framing (request smuggling)
 * and counting a request to an open route against its client address's budget (429); the body
 * gathered up to the limit (413 beyond) and parsed with jansson (400 "malformed" unless one JSON
 * object without duplicate keys); the handler's answer. Answers and their accounting are
 * http_send.c's; connections, control characters in the target and the receive deadlines are
 * http_conn.c's. Contracts and choices: docs/internals/http.md.
 */
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>

#include <microhttpd.h>

#include "keyhole/crypto.h"
#include "keyhole/file.h"
#include "keyhole/http.h"
#include "keyhole/log.h"
#include "http_int.h"

#define MAX_SEGS KH__HTTP_MAX_SEGS
#define PEM_LIMIT (1024 * 1024)
/* A chunked body over the limit is read and dropped to answer 413, up to this many limits. */
#define DISCARD_FACTOR 16



/* ---------------------------------------------------------------- routes */

kh_err kh_http_add_routes(struct kh_http *h, const struct kh_http_route *routes, size_t n)
{
	struct kh__http_route *nr;
	size_t i, j, first;
	kh_err r;

	if (!h || (n && !routes) || h->d)
		return KH_ERR_INVAL;
	if (n > 4096)
		return KH_ERR_TOO_LARGE;
	nr = realloc(h->routes, (h->nroutes + n) * sizeof *nr);
	if (!nr && h->nroutes + n)
		return KH_ERR_NOMEM;
	h->routes = nr;
	first = h->nroutes;
	for (i = 0; i < n; i++) {
		struct kh__http_route *rt = &h->routes[h->nroutes];
		memset(rt, 0, sizeof *rt);
		rt->method = routes[i].method;
		rt->pattern = routes[i].pattern;
		rt->fn = routes[i].fn;
		rt->arg = routes[i].arg;
		rt->flags = routes[i].flags;
		if (!kh__http_valid_method(rt->method) || !rt->fn || (rt->flags & ~(KH_HTTP_ROUTE_OPEN | KH_HTTP_ROUTE_RAW))) {
			r = KH_ERR_INVAL;
			goto bad;
		}
		if ((r = kh__http_route_parse(rt)) != KH_OK)
			goto bad;
		if (rt->nseg == 1 && strcmp(rt->seg[0], "metrics") == 0 && !rt->param_mask) {
			r = KH_ERR_EXISTS;
			goto bad;
		}
		for (j = 0; j < h->nroutes; j++)
			if (strcmp(h->routes[j].method, rt->method) == 0 && kh__http_route_same_shape(&h->routes[j], rt)) {
				r = KH_ERR_EXISTS;
				goto bad;
			}
		h->nroutes++;
		continue;
bad:
		/* All or nothing: drop the routes of this call already added. */
		free(rt->segbuf);
		while (h->nroutes > first)
			free(h->routes[--h->nroutes].segbuf);
		return r;
	}
	return KH_OK;
}










/* ---------------------------------------------------------------- request life */




static void req_free(struct kh_http_req *r)
{
	if (!r)
		return;
	kh__http_resp_clear(&r->resp);
	json_decref(r->json);
	free(r->body);
	free(r->pathbuf);
	free(r);
}



static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	struct kh_http *h = cls;
	struct kh_http_req *r = *con_cls;
	struct timespec t1;
	long long us;
	char path[256];

	/* The answer is out (or the request is over): the next request's head has its time. */
	{
		struct kh__http_conn *t = kh__http_track_of(c);
		if (t)
			atomic_store(&t->line_seen, 0);
		kh__http_deadline_set(t, KH__PHASE_HEAD, h->head_ms);
	}
	if (!r)
		return;
	*con_cls = NULL;
	if (!r->counted) {
		/* Only its request line came (kh__http_on_uri): nothing was answered, nothing to log. */
		req_free(r);
		return;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	us = (long long)(t1.tv_sec - r->t0.tv_sec) * 1000000 + (t1.tv_nsec - r->t0.tv_nsec) / 1000;
	if (kh_log_enabled(KH_LOG_INFO)) {
		kh__http_log_path(r->path, path, sizeof path);
		if (toe == MHD_REQUEST_TERMINATED_COMPLETED_OK)
			kh_log_info("http.request", "method=%s path=%s status=%d duration_us=%lld",
				    kh__http_method_label(r->method), path, r->status, us);
		else
			kh_log_info("http.request",
				    "method=%s path=%s status=%d duration_us=%lld aborted=%d",
				    kh__http_method_label(r->method), path, r->status, us, (int)toe);
	}
	req_free(r);
	pthread_mutex_lock(&h->lock);
	h->inflight--;
	kh_metric_set(h->inflight_gauge, (int64_t)h->inflight);
	pthread_cond_broadcast(&h->cond);
	pthread_mutex_unlock(&h->lock);
}

/* A raw route's body (KH_HTTP_ROUTE_RAW) is bytes, not JSON, and has a limit of its own. */
static int is_raw(const struct kh_http_req *r)
{
	return r->route && (r->route->flags & KH_HTTP_ROUTE_RAW);
}

static size_t body_limit_of(const struct kh_http_req *r)
{
	return is_raw(r) && r->h->cfg.raw_body_limit ? r->h->cfg.raw_body_limit : r->h->cfg.body_limit;
}

static int is_type(const char *ct, const char *want)
{
	size_t n = strlen(want);

	if (!ct)
		return 0;
	while (*ct == ' ' || *ct == '\t')
		ct++;
	if (strncasecmp(ct, want, n) != 0)
		return 0;
	ct += n;
	while (*ct == ' ' || *ct == '\t')
		ct++;
	return *ct == '\0' || *ct == ';';
}

_Static_assert(KH_HTTP_IDEM_KEY_MAX == 128, "the refusal's message says 128");

static int valid_idem_key(const char *k)
{
	size_t n = strlen(k);

	if (n == 0 || n > KH_HTTP_IDEM_KEY_MAX)
		return 0;
	for (; *k; k++)
		if ((unsigned char)*k <= 0x20 || (unsigned char)*k >= 0x7f)
			return 0;
	return 1;
}


/* What the framing headers of a request say (count_framing). */
struct framing {
	unsigned ncl, nte;
	const char *cl, *te;
	int cl_differ; /* two Content-Length values that are not the same text */
};

static enum MHD_Result count_framing(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	struct framing *f = cls;

	(void)kind;
	if (!key || !value)
		return MHD_YES;
	if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
		if (f->ncl++ && strcmp(f->cl, value) != 0)
			f->cl_differ = 1;
		else if (!f->cl)
			f->cl = value;
	} else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
		f->nte++;
		f->te = value;
	}
	return MHD_YES;
}

/*
 * How the body is delimited must be beyond doubt (RFC 9112 §6.3): a front end that reads it
 * another way than we do would see a second, smuggled request where we see a body, or the
 * reverse. Refused, and the connection closed after the answer: both Content-Length and
 * Transfer-Encoding, two different Content-Lengths, a Transfer-Encoding other than "chunked"
 * (which libmicrohttpd would read until the connection closes), several Transfer-Encodings, or
 * one in an HTTP/1.0 request. NULL when the framing is sound, else why not.
 */
static const char *bad_framing(struct MHD_Connection *c, const char *version)
{
	struct framing f = {0};

	MHD_get_connection_values(c, MHD_HEADER_KIND, count_framing, &f);
	if (f.nte && f.ncl)
		return "a request has Content-Length or Transfer-Encoding, not both";
	if (f.cl_differ)
		return "two different Content-Length values";
	if (f.nte > 1 || (f.nte && strcasecmp(f.te, "chunked") != 0))
		return "the only Transfer-Encoding understood is chunked";
	if (f.nte && version && strcmp(version, MHD_HTTP_VERSION_1_0) == 0)
		return "Transfer-Encoding is not HTTP/1.0";
	return NULL;
}

/* The time a body of cl bytes (unknown: -1) has to arrive, in milliseconds. */
static int64_t body_ms(const struct kh_http *h, long long cl)
{
	uint64_t n = cl < 0 ? h->cfg.body_limit : (uint64_t)cl;

	return h->head_ms + (int64_t)((n * 1000) / KH_HTTP_BODY_RATE);
}

/* Checks made as soon as the headers are in: framing, target, route, budget, body size, content
 * type, key. */
static enum MHD_Result on_headers(struct kh_http_req *r, const char *version)
{
	struct kh_http *h = r->h;
	char *seg[MAX_SEGS + 1];
	size_t nseg = 0;
	char allow[64];
	int found;
	const char *cl, *te, *ct, *why;
	int has_body = 0;
	long long declared = 0;

	if ((why = bad_framing(r->conn, version)) != NULL)
		return kh__http_send_error_hdr(r, 400, kh_err_json(KH_ERR_INVAL), why, MHD_HTTP_HEADER_CONNECTION, "close");
	if (r->bad_target)
		return kh__http_send_error(r, KH_ERR_INVAL, "control character in the request path or query", NULL);
	if (strcmp(r->path, "/metrics") == 0) {
		if (strcmp(r->method, "GET") != 0)
			return kh__http_send_405(r, "GET");
		return MHD_YES;
	}
	r->pathbuf = strdup(r->path);
	if (!r->pathbuf)
		return kh__http_send_error(r, KH_ERR_NOMEM, NULL, NULL);
	if (r->pathbuf[0] == '/') {
		char *p = r->pathbuf + 1, *s;
		for (; p && nseg <= MAX_SEGS; p = s) {
			s = strchr(p, '/');
			if (s)
				*s++ = '\0';
			seg[nseg++] = p;
		}
		if (p)
			nseg = 0; /* too many segments: no route has that many */
	}
	r->route = nseg && nseg <= MAX_SEGS ?
			   kh__http_route_match(h->routes, h->nroutes, r->method, seg, nseg, &found,
						 allow, sizeof allow) : NULL;
	if (!r->route) {
		if (nseg && nseg <= MAX_SEGS && found)
			return kh__http_send_405(r, allow);
		return kh__http_send_error(r, KH_ERR_NOTFOUND, "no such path", NULL);
	}
	for (size_t i = 0; i < nseg; i++)
		r->param_val[i] = seg[i];
	if ((r->route->flags & KH_HTTP_ROUTE_OPEN) && h->cfg.open_rate) {
		const union MHD_ConnectionInfo *ci = MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
		unsigned wait = kh__guard_take(h->guard, ci ? ci->client_addr : NULL, kh__http_mono_ms());
		if (wait) {
			char after[16];
			snprintf(after, sizeof after, "%u", wait);
			kh_metric_add(h->rate_limited, 1);
			return kh__http_send_error_hdr(r, 429, "rate_limited",
					      "too many requests from this address: retry after Retry-After seconds",
					      "Retry-After", after);
		}
	}

	cl = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
	te = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);
	if (cl) {
		char *end;
		unsigned long long v;
		errno = 0;
		v = strtoull(cl, &end, 10);
		if (errno || end == cl || *end)
			return kh__http_send_error(r, KH_ERR_INVAL, "bad Content-Length", NULL);
		if (v > body_limit_of(r))
			return kh__http_send_error(r, KH_ERR_TOO_LARGE, "request body too large", NULL);
		has_body = v > 0;
		declared = (long long)v;
	} else if (te) {
		has_body = 1;
		declared = -1;
	}
	ct = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
	if (has_body && !is_type(ct, is_raw(r) ? "application/octet-stream" : "application/json")) {
		json_t *b = json_pack("{s:{s:s,s:s}}", "error", "code", "unsupported_media_type", "message",
				      is_raw(r) ? "request body must be application/octet-stream" :
						  "request body must be application/json");
		enum MHD_Result ret;
		if (!b)
			return MHD_NO;
		ret = kh__http_send_json(r, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, b, NULL, NULL);
		json_decref(b);
		return ret;
	}
	r->idem_key = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Idempotency-Key");
	if (r->idem_key && !valid_idem_key(r->idem_key))
		return kh__http_send_error(r, KH_ERR_INVAL, "Idempotency-Key must be 1 to 128 visible ASCII characters", NULL);
	/* The body has its own time to arrive; a request without one is the server's turn now. */
	if (has_body)
		kh__http_deadline_set(r->track, KH__PHASE_BODY, body_ms(h, declared));
	return MHD_YES;
}

static enum MHD_Result on_body(struct kh_http_req *r, const char *data, size_t n)
{
	size_t limit = body_limit_of(r);

	if (r->too_large || n > limit - r->len) {
		if (!r->too_large) {
			r->too_large = 1;
			free(r->body);
			r->body = NULL;
			r->discarded = r->len;
			r->len = r->cap = 0;
		}
		r->discarded += n;
		/* Answering 413 is worth reading a little more; a flood is not. */
		return r->discarded / DISCARD_FACTOR > limit ? MHD_NO : MHD_YES;
	}
	if (r->len + n > r->cap) {
		size_t cap = r->cap ? r->cap : 4096;
		char *b;
		while (cap < r->len + n)
			cap *= 2;
		if (cap > limit)
			cap = limit;
		b = realloc(r->body, cap);
		if (!b)
			return MHD_NO;
		r->body = b;
		r->cap = cap;
	}
	memcpy(r->body + r->len, data, n);
	r->len += n;
	return MHD_YES;
}

static enum MHD_Result send_metrics(struct kh_http_req *r)
{
	char *text;
	size_t len;

	if (kh_metrics_render(r->h->metrics, &text, &len) != KH_OK)
		return kh__http_send_error(r, KH_ERR_NOMEM, NULL, NULL);
	return kh__http_send_text(r, 200, text, len, "text/plain; version=0.0.4; charset=utf-8", NULL, NULL, 0);
}

/* The whole request is in: parse, run the handler, answer. */
static enum MHD_Result on_complete(struct kh_http_req *r)
{
	size_t len;
	char *text;
	kh_err e;
	enum MHD_Result ret;

	if (r->too_large)
		return kh__http_send_error(r, KH_ERR_TOO_LARGE, "request body too large", NULL);
	if (!r->route)
		return send_metrics(r);
	if (r->len && !is_raw(r)) {
		json_error_t jerr;
		r->json = json_loadb(r->body, r->len, JSON_REJECT_DUPLICATES, &jerr);
		if (!r->json || !json_is_object(r->json))
			return kh__http_send_error(r, KH_ERR_FORMAT, "request body is not one JSON object", NULL);
	}
	e = r->route->fn(r, &r->resp, r->route->arg);
	if (e != KH_OK) {
		json_decref(r->resp.body);
		free(r->resp.text);
		r->resp.text = NULL;
		r->resp.ctype = NULL;
		r->resp.body = kh_json_error(e, NULL);
		r->resp.status = kh_err_http(e);
		r->resp.set = 1;
		if (!r->resp.body)
			return MHD_NO;
	} else if (!r->resp.set) {
		kh_log_error("http.handler", "path=%s error=no_reply", r->route->pattern);
		return kh__http_send_error(r, KH_ERR_INTERNAL, NULL, NULL);
	}
	if (r->resp.text) {
		text = r->resp.text; /* sent as it is: kh__http_send_text takes it over */
		len = r->resp.text_len;
		r->resp.text = NULL;
	} else if (!(text = kh__http_dump(r->resp.body, &len))) {
		return MHD_NO;
	}
	if (r->resp.status >= 400) {
		json_t *j = r->resp.body ? NULL : json_loadb(text, len, 0, NULL);
		kh__http_note_errcode(r, r->resp.body ? r->resp.body : j);
		json_decref(j);
	}
	ret = kh__http_send_text(r, r->resp.status, text, len,
				 r->resp.ctype ? r->resp.ctype : r->resp.body || len ? "application/json" : NULL,
			&r->resp, NULL, 0);
	return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
				  const char *method, const char *version, const char *upload_data,
				  size_t *upload_data_size, void **con_cls)
{
	struct kh_http *h = cls;
	struct kh_http_req *r = *con_cls;

	if (!r || !r->started) {
		if (!r) {
			r = calloc(1, sizeof *r);
			if (!r)
				return MHD_NO;
			r->h = h;
			*con_cls = r;
		}
		r->started = 1;
		clock_gettime(CLOCK_MONOTONIC, &r->t0);
		r->conn = c;
		r->track = kh__http_track_of(c);
		/* the head is in: the server's turn, until on_headers gives a body its time */
		kh__http_deadline_set(r->track, KH__PHASE_HEAD, 0);
		/* Copied: libmicrohttpd may reuse its memory before the completion callback. */
		snprintf(r->method, sizeof r->method, "%s", strlen(method) < sizeof r->method ? method : "?");
		snprintf(r->path, sizeof r->path, "%s", url);
		pthread_mutex_lock(&h->lock);
		h->inflight++;
		r->counted = 1;
		kh_metric_set(h->inflight_gauge, (int64_t)h->inflight);
		pthread_mutex_unlock(&h->lock);
		if (strlen(url) >= sizeof r->path)
			return kh__http_send_error(r, KH_ERR_NOTFOUND, "no such path", NULL);
		return on_headers(r, version);
	}
	if (r->queued) {
		/* Answered from the headers: what body follows is dropped. */
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (*upload_data_size) {
		enum MHD_Result ret = on_body(r, upload_data, *upload_data_size);
		*upload_data_size = 0;
		return ret;
	}
	kh__http_deadline_set(r->track, KH__PHASE_BODY, 0); /* the whole body is in */
	return on_complete(r);
}








/* ---------------------------------------------------------------- server life */

/*
 * libmicrohttpd's own messages: mostly about one client (a broken TLS handshake, a reset), so
 * info, not warn; the failures that matter to the operator are logged by kh_http_start.
 */
__attribute__((format(printf, 2, 0))) static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	char msg[256];

	(void)cls;
	vsnprintf(msg, sizeof msg, fmt, ap);
	for (char *p = msg; *p; p++)
		if (*p == '\n' || *p == '\r' || *p == '"')
			*p = (p[1] ? '\'' : '\0');
	kh_log_info("http.mhd", "msg=\"%s\"", msg);
}

int kh_http_tls_supported(void)
{
	return MHD_is_feature_supported(MHD_FEATURE_TLS) == MHD_YES;
}

kh_err kh_http_new(const struct kh_http_config *cfg, struct kh_http **out)
{
	struct kh_http *h;
	kh_err r;

	if (!cfg || !out || (!cfg->cert_file != !cfg->key_file))
		return KH_ERR_INVAL;
	h = calloc(1, sizeof *h);
	if (!h)
		return KH_ERR_NOMEM;
	h->cfg = *cfg;
	h->listen_fd = MHD_INVALID_SOCKET;
	if (!h->cfg.body_limit)
		h->cfg.body_limit = KH_HTTP_BODY_LIMIT;
	if (!h->cfg.threads)
		h->cfg.threads = KH_HTTP_THREADS;
	if (!h->cfg.stop_timeout_ms)
		h->cfg.stop_timeout_ms = 10000;
	h->host = strdup(cfg->host && *cfg->host ? cfg->host : "127.0.0.1");
	if (!h->host) {
		free(h);
		return KH_ERR_NOMEM;
	}
	pthread_mutex_init(&h->lock, NULL);
	pthread_cond_init(&h->cond, NULL);
	pthread_mutex_init(&h->conns_mu, NULL);
	{
		pthread_condattr_t ca;
		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&h->watch_cv, &ca);
		pthread_condattr_destroy(&ca);
	}
	h->head_ms = 1000 * (int64_t)(cfg->head_timeout_s ? cfg->head_timeout_s : KH_HTTP_HEAD_S);
	if ((r = kh__guard_new(cfg->open_rate, cfg->open_burst, &h->guard)) != KH_OK)
		goto fail;
	if (cfg->metrics) {
		h->metrics = cfg->metrics;
	} else {
		if ((r = kh_metrics_new(&h->metrics)) != KH_OK)
			goto fail;
		h->own_metrics = 1;
	}
	if ((r = kh_metrics_gauge(h->metrics, "keyhole_http_requests_in_flight",
				  "HTTP requests being read, handled or answered",
				  &h->inflight_gauge)) != KH_OK ||
	    (r = kh_metrics_counter(h->metrics, "keyhole_http_deadline_closed_total",
				    "connections closed for not sending a request head or body in time",
				    &h->deadline_closed)) != KH_OK ||
	    (r = kh_metrics_counter(h->metrics, "keyhole_http_rate_limited_total",
				    "requests to open routes refused (429) over their address's budget",
				    &h->rate_limited)) != KH_OK)
		goto fail;
	*out = h;
	return KH_OK;
fail:
	kh_http_free(h);
	return r;
}

static kh_err load_tls(struct kh_http *h)
{
	uint8_t *d = NULL;
	size_t n = 0;
	kh_err r;

	/* A start that failed earlier may have loaded them already. */
	free(h->cert);
	h->cert = NULL;
	if (h->key)
		kh_wipe(h->key, h->keylen);
	free(h->key);
	h->key = NULL;
	if ((r = kh_file_read(h->cfg.cert_file, PEM_LIMIT, &d, &n)) != KH_OK)
		return r;
	h->cert = calloc(1, n + 1);
	if (!h->cert) {
		kh_file_free(d, n);
		return KH_ERR_NOMEM;
	}
	memcpy(h->cert, d, n);
	h->certlen = n + 1;
	kh_file_free(d, n);
	if ((r = kh_keyfile_read(h->cfg.key_file, PEM_LIMIT, &d, &n)) != KH_OK)
		return r;
	h->key = calloc(1, n + 1);
	if (!h->key) {
		kh_file_free(d, n);
		return KH_ERR_NOMEM;
	}
	memcpy(h->key, d, n);
	h->keylen = n + 1;
	kh_file_free(d, n);
	return KH_OK;
}

/*
 * After libmicrohttpd could not start: whether the cause is the address being taken. It does not
 * say, so bind the same address once ourselves, as it does (SO_REUSEADDR), and look at errno.
 */
static int addr_in_use(const struct addrinfo *ai)
{
	int one = 1, fd, in_use = 0;

	fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
	if (fd < 0)
		return 0;
	(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (ai->ai_family == AF_INET6)
		(void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
	if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno == EADDRINUSE)
		in_use = 1;
	close(fd);
	return in_use;
}

kh_err kh_http_start(struct kh_http *h)
{
	struct addrinfo hints, *ai = NULL;
	char portstr[8];
	/*
	 * One thread per connection: a handler may wait (the center's uploads wait for a commit they
	 * share with others), and in a thread pool that wait would hold up every other connection of
	 * its thread. At most `threads` connections are served at once; libmicrohttpd closes a
	 * connection beyond that at once (clients retry), so the default is generous: an idle
	 * thread costs little.
	 */
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ITC |
			 MHD_USE_ERROR_LOG | MHD_USE_AUTO;
	const union MHD_DaemonInfo *info;
	int tls = h && h->cfg.cert_file;
	kh_err r;

	if (!h || h->d || atomic_load(&h->stopping))
		return KH_ERR_INVAL;
	if (tls) {
		if (!kh_http_tls_supported())
			return KH_ERR_CRYPTO;
		if ((r = load_tls(h)) != KH_OK)
			return r;
		flags |= MHD_USE_TLS;
	}
	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE;
	snprintf(portstr, sizeof portstr, "%u", (unsigned)h->cfg.port);
	if (getaddrinfo(h->host, portstr, &hints, &ai) != 0 || !ai)
		return KH_ERR_INVAL;
	if (ai->ai_family == AF_INET6)
		flags |= MHD_USE_IPv6;

	/* GnuTLS priority string: TLS 1.3 only. */
	/* The deadline watcher first: connections are watched from their first moment. */
	if (!h->watch_run) {
		if (pthread_create(&h->watch, NULL, kh__http_watch_main, h) != 0) {
			freeaddrinfo(ai);
			return KH_ERR_NOMEM;
		}
		h->watch_run = 1;
	}
	h->d = MHD_start_daemon(
		flags, h->cfg.port, kh__http_on_accept, h, on_request, h,
		MHD_OPTION_EXTERNAL_LOGGER, mhd_log, h,
		MHD_OPTION_SOCK_ADDR, ai->ai_addr,
		MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
		MHD_OPTION_NOTIFY_CONNECTION, kh__http_on_connection, h,
		MHD_OPTION_URI_LOG_CALLBACK, kh__http_on_uri, h,
		MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)KH_HTTP_IDLE_S,
		MHD_OPTION_CONNECTION_LIMIT, h->cfg.threads,
		/* one address may hold a quarter of the connections at most (all of them when there
		 * are few): idle sockets from one client cannot lock everyone else out */
		MHD_OPTION_PER_IP_CONNECTION_LIMIT, h->cfg.threads >= 16 ? h->cfg.threads / 4 : h->cfg.threads,
		tls ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, h->cert,
		MHD_OPTION_HTTPS_MEM_KEY, h->key,
		MHD_OPTION_HTTPS_PRIORITIES, "NORMAL:-VERS-ALL:+VERS-TLS1.3",
		MHD_OPTION_END);
	if (!h->d) {
		int in_use = addr_in_use(ai);

		freeaddrinfo(ai);
		kh_log_error("http.start", "host=%s port=%u tls=%d error=%s", h->host, (unsigned)h->cfg.port, tls,
			     in_use ? "address_in_use" : "bind_or_tls");
		return in_use ? KH_ERR_ADDR_IN_USE : tls ? KH_ERR_CRYPTO : KH_ERR_IO;
	}
	freeaddrinfo(ai);
	info = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
	h->port = info ? info->port : h->cfg.port;
	kh_log_info("http.start", "host=%s port=%u tls=%d threads=%u head_timeout_s=%lld open_rate=%u", h->host,
		    (unsigned)h->port, tls, h->cfg.threads, (long long)(h->head_ms / 1000), h->cfg.open_rate);
	return KH_OK;
}

/* End the deadline watcher (once libmicrohttpd's connections are gone). */
static void watch_stop(struct kh_http *h)
{
	if (!h->watch_run)
		return;
	pthread_mutex_lock(&h->conns_mu);
	h->watch_stop = 1;
	pthread_cond_broadcast(&h->watch_cv);
	pthread_mutex_unlock(&h->conns_mu);
	pthread_join(h->watch, NULL);
	h->watch_run = 0;
}

uint16_t kh_http_port(const struct kh_http *h)
{
	return h && h->d ? h->port : 0;
}

int kh_http_stopping(const struct kh_http *h)
{
	return h ? atomic_load(&((struct kh_http *)h)->stopping) : 0;
}

void kh_http_stop(struct kh_http *h)
{
	struct timespec deadline;
	unsigned left;

	if (!h || !h->d)
		return;
	atomic_store(&h->stopping, 1);
	h->listen_fd = MHD_quiesce_daemon(h->d);
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += h->cfg.stop_timeout_ms / 1000;
	deadline.tv_nsec += (long)(h->cfg.stop_timeout_ms % 1000) * 1000000L;
	if (deadline.tv_nsec >= 1000000000L) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&h->lock);
	while (h->inflight > 0)
		if (pthread_cond_timedwait(&h->cond, &h->lock, &deadline) == ETIMEDOUT)
			break;
	left = h->inflight;
	pthread_mutex_unlock(&h->lock);
	if (left)
		kh_log_warn("http.stop", "in_flight=%u timeout_ms=%u", left, h->cfg.stop_timeout_ms);
	MHD_stop_daemon(h->d);
	h->d = NULL;
	watch_stop(h);
	/* libmicrohttpd hands the listening socket back on quiesce; closed once its threads are gone. */
	if (h->listen_fd != MHD_INVALID_SOCKET)
		close(h->listen_fd);
	h->listen_fd = MHD_INVALID_SOCKET;
	kh_log_info("http.stop", "port=%u", (unsigned)h->port);
}

void kh_http_free(struct kh_http *h)
{
	if (!h)
		return;
	kh_http_stop(h);
	watch_stop(h); /* started by a kh_http_start that then failed */
	kh__guard_free(h->guard);
	for (size_t i = 0; i < h->nroutes; i++)
		free(h->routes[i].segbuf);
	free(h->routes);
	if (h->own_metrics)
		kh_metrics_free(h->metrics);
	if (h->key) {
		kh_wipe(h->key, h->keylen);
		free(h->key);
	}
	free(h->cert);
	free(h->host);
	pthread_cond_destroy(&h->cond);
	pthread_mutex_destroy(&h->lock);
	pthread_cond_destroy(&h->watch_cv);
	pthread_mutex_destroy(&h->conns_mu);
	free(h);
}

struct kh_metrics *kh_http_metrics(struct kh_http *h)
{
	return h ? h->metrics : NULL;
}
