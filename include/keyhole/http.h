/*
 * The HTTP/JSON service layer every center speaks: an HTTP/1.1 server over GNU
 * libmicrohttpd with keep-alive and optional HTTPS (TLS 1.3 only, GnuTLS inside libmicrohttpd),
 * a route table of {method, "/v1/cards/{ua}", handler}, JSON bodies parsed with jansson, error
 * bodies {"error": {"code", "message"}} generated from the error registry (keyhole/err.h), an
 * Idempotency-Key hook, Prometheus /metrics with a registry services add their own metrics to,
 * one key=value log line per request, and a stop that lets requests in flight finish. It refuses
 * ambiguous framing and control characters in targets, gives open routes a budget per client
 * address, and closes connections that send their request too slowly.
 * Binary fields in JSON are unpadded base64url (RFC 4648 §5). Contracts: docs/internals/http.md.
 * Host and center zones only.
 */
#ifndef KEYHOLE_HTTP_H
#define KEYHOLE_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "keyhole/err.h"

/* ---------------------------------------------------------------- base64url (unpadded) */

/* Characters kh_b64url_encode writes for n bytes (without the terminating NUL). */
size_t kh_b64url_len(size_t n);
/*
 * Encode n bytes as unpadded base64url into out (cap bytes, at least kh_b64url_len(n) + 1; NUL
 * terminated). KH_ERR_BUF when out is too small (nothing written).
 */
KH_WARN_UNUSED kh_err kh_b64url_encode(const uint8_t *in, size_t n, char *out, size_t cap);
/*
 * Decode inlen characters of unpadded base64url into out (cap bytes); *outlen gets the byte
 * count. Strict: KH_ERR_INVAL for any character outside A-Z a-z 0-9 - _ (padding '=',
 * whitespace, '+' and '/' included), a length of 1 mod 4, or non-zero unused bits in the last
 * character (so every byte string has exactly one encoding). KH_ERR_BUF when cap is too small.
 * out is written only on success.
 */
KH_WARN_UNUSED kh_err kh_b64url_decode(const char *in, size_t inlen, uint8_t *out, size_t cap,
				       size_t *outlen);

/* ---------------------------------------------------------------- JSON helpers */

/*
 * Binary field `key` of a JSON object: a base64url string decoded into out (cap bytes).
 * KH_ERR_NOTFOUND when absent, KH_ERR_INVAL when not a string or not base64url, KH_ERR_BUF
 * when longer than cap. exact != 0 also demands *outlen == cap (KH_ERR_INVAL otherwise).
 */
KH_WARN_UNUSED kh_err kh_json_get_b64(const json_t *obj, const char *key, uint8_t *out, size_t cap,
				      size_t *outlen, int exact);
/* Set obj[key] to the base64url string of n bytes. KH_ERR_NOMEM. */
KH_WARN_UNUSED kh_err kh_json_set_b64(json_t *obj, const char *key, const uint8_t *in, size_t n);
/* The error body {"error": {"code": kh_err_json(e), "message": msg or kh_strerror(e)}}. */
json_t *kh_json_error(kh_err e, const char *msg);

/* ---------------------------------------------------------------- metrics */

/*
 * A registry of Prometheus metrics. A metric is one sample: a family name, an optional label
 * set written as Prometheus writes it (`method="GET",code="200"`), a value. Families are
 * created on first use with their help text and type; all calls are thread-safe (a mutex
 * guards the registry, values are atomics), and a handle stays valid until kh_metrics_free.
 */
struct kh_metrics;
struct kh_metric;

enum kh_metric_type { KH_METRIC_COUNTER = 1, KH_METRIC_GAUGE = 2 };

KH_WARN_UNUSED kh_err kh_metrics_new(struct kh_metrics **out);
void kh_metrics_free(struct kh_metrics *m);
/*
 * The metric name{labels}, created when new. name must match [a-zA-Z_:][a-zA-Z0-9_:]*;
 * labels is NULL or `k="v",k2="v2"` with values already escaped (kh_metrics_label_escape).
 * KH_ERR_INVAL for a bad name, or a name already registered with another type.
 */
KH_WARN_UNUSED kh_err kh_metrics_get(struct kh_metrics *m, enum kh_metric_type type, const char *name,
				     const char *help, const char *labels, struct kh_metric **out);
/* Shorthands: a counter / gauge without labels. */
KH_WARN_UNUSED kh_err kh_metrics_counter(struct kh_metrics *m, const char *name, const char *help,
					 struct kh_metric **out);
KH_WARN_UNUSED kh_err kh_metrics_gauge(struct kh_metrics *m, const char *name, const char *help,
				       struct kh_metric **out);
/*
 * A counter whose value is not pushed but read when /metrics is rendered: read(arg), called
 * under the registry's lock (it must not call into the registry, and must be safe from any
 * thread), for a count its owner keeps anyway (the store's transaction retries). The name is
 * registered as kh_metrics_counter's; asked again, the reader is replaced. arg must outlive m.
 */
KH_WARN_UNUSED kh_err kh_metrics_counter_fn(struct kh_metrics *m, const char *name, const char *help,
					    int64_t (*read)(void *arg), void *arg);
void kh_metric_add(struct kh_metric *c, int64_t n); /* counters: n >= 0; gauges: any sign */
void kh_metric_set(struct kh_metric *g, int64_t v); /* gauges */
int64_t kh_metric_value(const struct kh_metric *c);
/* Escape a label value into out (cap bytes): backslash, double quote and newline. KH_ERR_BUF. */
KH_WARN_UNUSED kh_err kh_metrics_label_escape(const char *v, char *out, size_t cap);
/* The text exposition format (version 0.0.4) of every metric; *out is malloc'd, NUL terminated. */
KH_WARN_UNUSED kh_err kh_metrics_render(struct kh_metrics *m, char **out, size_t *len);

/* ---------------------------------------------------------------- server */

struct kh_http;
struct kh_http_req;
struct kh_http_resp;

/*
 * A handler answers one request: it sets a response with kh_http_reply*() and returns KH_OK,
 * or returns an error code and sets nothing, and the server answers with that code's HTTP
 * status and error body. A handler that returns KH_OK without replying gets a 500.
 * Handlers run on the server's threads (several at once): they must be thread-safe.
 */
typedef kh_err (*kh_http_handler)(struct kh_http_req *req, struct kh_http_resp *resp, void *arg);

struct kh_http_route {
	const char *method;  /* "GET", "POST", "PUT", "PATCH", "DELETE" */
	const char *pattern; /* "/v1/cards/{ua}/emms": literal segments and {name} segments */
	kh_http_handler fn;
	void *arg;           /* passed to fn */
	unsigned flags;      /* KH_HTTP_ROUTE_* (0: none) */
};

/*
 * An open route: anyone may call it without credentials (a decoder's upload session, the EMM
 * queues). Each request to one counts against its client address's budget (open_rate and
 * open_burst in struct kh_http_config): beyond it the answer is 429 with Retry-After.
 */
#define KH_HTTP_ROUTE_OPEN 1u
/*
 * A raw route: its body is application/octet-stream, handed over as bytes (kh_http_raw_body), not
 * parsed, up to raw_body_limit (struct kh_http_config) rather than body_limit.
 */
#define KH_HTTP_ROUTE_RAW 2u

/*
 * An Idempotency-Key header is 1 to KH_HTTP_IDEM_KEY_MAX visible ASCII characters; anything else
 * is answered 400 before a handler runs. The server only checks and hands it over
 * (kh_http_idempotency_key): what a key means is the handler's, which binds it inside its own
 * transaction with the write it protects (the center: src/center/sms/sms_util.c), so that a
 * retry can never run the write twice, even two retries at once.
 */
#define KH_HTTP_IDEM_KEY_MAX 128

#define KH_HTTP_THREADS 256u
/* A connection idle this long (seconds) is closed: it holds a thread while it lasts. */
#define KH_HTTP_IDLE_S 10u
/*
 * Receive deadlines (docs/internals/http.md "Deadlines"): a request's head must be in within
 * head_timeout_s (default KH_HTTP_HEAD_S) of the connection being ready for it (accepted, or its
 * previous answer sent); a body within head_timeout_s more plus one second per
 * KH_HTTP_BODY_RATE bytes declared (the body limit's worth for a chunked body). A connection
 * that misses one is closed, and its address refused new connections for KH_HTTP_BAN_FACTOR
 * times head_timeout_s.
 */
#define KH_HTTP_HEAD_S 10u
#define KH_HTTP_BODY_RATE (32u * 1024u)
#define KH_HTTP_BAN_FACTOR 3u

struct kh_http_config {
	const char *host;        /* numeric address to bind; NULL or "" = 127.0.0.1; "0.0.0.0", "::" */
	uint16_t port;           /* 0 = an ephemeral port (kh_http_port tells which) */
	const char *cert_file;   /* PEM certificate chain: HTTPS (TLS 1.3) when set with key_file */
	const char *key_file;    /* PEM private key, private to the process owner (kh_keyfile_read) */
	size_t body_limit;       /* largest request body; 0 = KH_HTTP_BODY_LIMIT */
	unsigned threads;        /* connections served at once, one thread each; 0 = KH_HTTP_THREADS */
	unsigned stop_timeout_ms;/* how long kh_http_stop waits for requests in flight; 0 = 10 s */
	struct kh_metrics *metrics;     /* registry to use (not owned); NULL: the server makes one */
	/*
	 * The budget of requests to open routes (KH_HTTP_ROUTE_OPEN) per client address: a bucket
	 * of open_burst requests (0: open_rate), refilled at open_rate per second. 0: no budget.
	 */
	unsigned open_rate;
	unsigned open_burst;
	unsigned head_timeout_s; /* receive deadline of a request head, seconds; 0 = KH_HTTP_HEAD_S */
	size_t raw_body_limit;   /* largest body of a raw route (KH_HTTP_ROUTE_RAW); 0 = body_limit */
};

#define KH_HTTP_BODY_LIMIT (1024u * 1024u)

/* A server, not yet listening. KH_ERR_INVAL for a bad config, KH_ERR_NOMEM. */
KH_WARN_UNUSED kh_err kh_http_new(const struct kh_http_config *cfg, struct kh_http **out);
/*
 * Add n routes (copied; strings must outlive the server). Only before kh_http_start.
 * KH_ERR_INVAL for a malformed pattern or method, KH_ERR_EXISTS for a duplicate method+pattern.
 * GET /metrics is built in.
 */
KH_WARN_UNUSED kh_err kh_http_add_routes(struct kh_http *h, const struct kh_http_route *routes,
					 size_t n);
/*
 * Listen and serve. KH_ERR_IO when the address cannot be bound, KH_ERR_KEYFILE_PERM / KH_ERR_IO
 * for an unreadable certificate or key, KH_ERR_CRYPTO when TLS is asked and libmicrohttpd has
 * no TLS support or refuses the certificate/key.
 */
KH_WARN_UNUSED kh_err kh_http_start(struct kh_http *h);
/* The bound TCP port (after kh_http_start), 0 before. */
uint16_t kh_http_port(const struct kh_http *h);
/* 1 once kh_http_stop has begun: long handlers may use it to end early. */
int kh_http_stopping(const struct kh_http *h);
/*
 * Stop accepting connections, let requests in flight finish and their answers be sent (up to
 * stop_timeout_ms; answers sent meanwhile carry `Connection: close`), then close everything.
 * Idempotent; safe to call from another thread than the one that started the server, but not
 * from a handler.
 */
void kh_http_stop(struct kh_http *h);
/* Stop (if running) and free. NULL does nothing. */
void kh_http_free(struct kh_http *h);
/* The server's metrics registry (the configured one or its own). */
struct kh_metrics *kh_http_metrics(struct kh_http *h);
/* 1 when this libmicrohttpd was built with TLS support. */
int kh_http_tls_supported(void);

/* ---------------------------------------------------------------- inside a handler */

const char *kh_http_method(const struct kh_http_req *r);
const char *kh_http_path(const struct kh_http_req *r);
/* The pattern of the route that matched ("/v1/cards/{ua}/reload"). */
const char *kh_http_route_pattern(const struct kh_http_req *r);
/* The value of path parameter {name}, NULL when the route has none by that name. */
const char *kh_http_param(const struct kh_http_req *r, const char *name);
/* A query argument (percent-decoded), NULL when absent; "" for `?flag`. */
const char *kh_http_query(const struct kh_http_req *r, const char *name);
/* A request header (case-insensitive name), NULL when absent. */
const char *kh_http_header(const struct kh_http_req *r, const char *name);
/* The parsed JSON body (always an object), NULL when the request had no body. Borrowed. */
json_t *kh_http_body(const struct kh_http_req *r);
/* A raw route's body (KH_HTTP_ROUTE_RAW): *len bytes, NULL and 0 when none. Borrowed. */
const uint8_t *kh_http_raw_body(const struct kh_http_req *r, size_t *len);
/* The Idempotency-Key header, NULL when absent. */
const char *kh_http_idempotency_key(const struct kh_http_req *r);

/* Answer status with a JSON body (reference stolen, also on error; NULL = no body). */
KH_WARN_UNUSED kh_err kh_http_reply(struct kh_http_resp *resp, int status, json_t *body);
/* Answer an error from the registry: kh_err_http(e), {"error": {...}}; msg NULL = kh_strerror. */
KH_WARN_UNUSED kh_err kh_http_reply_error(struct kh_http_resp *resp, kh_err e, const char *msg);
/*
 * Answer with a JSON text the handler already has (say, a stored answer replayed, or one it had
 * to serialise anyway): text is a malloc'd JSON value of len bytes, taken over (freed on every
 * path), sent as it is. The handler vouches that it is JSON.
 */
KH_WARN_UNUSED kh_err kh_http_reply_text(struct kh_http_resp *resp, int status, char *text, size_t len);
/*
 * The same for an answer that carries a secret (key material): text must be NUL-terminated at
 * len; the server wipes it when libmicrohttpd is done with it, and on every other path. What
 * TLS and the kernel copy on the way out is theirs.
 */
KH_WARN_UNUSED kh_err kh_http_reply_secret(struct kh_http_resp *resp, int status, char *text, size_t len);
/*
 * Answer with bytes that are not JSON (a file a client downloads): buf is malloc'd, len bytes,
 * taken over (freed on every path); ctype a string that outlives the answer, such as
 * "application/octet-stream".
 */
KH_WARN_UNUSED kh_err kh_http_reply_bytes(struct kh_http_resp *resp, int status, const char *ctype, uint8_t *buf,
					  size_t len);
/* Add a response header (copied), e.g. Location or Retry-After. KH_ERR_NOMEM, KH_ERR_INVAL. */
KH_WARN_UNUSED kh_err kh_http_resp_header(struct kh_http_resp *resp, const char *name,
					  const char *value);

/* ---------------------------------------------------------------- client (src/net/http_client.c) */

/*
 * Whether url is a base URL a client may use: https://, or http:// to 127.0.0.1, localhost or
 * [::1], or any http:// when insecure_http. KH_ERR_INVAL otherwise (other schemes, user info, no
 * host, a query or fragment, whitespace).
 */
KH_WARN_UNUSED kh_err kh_http_url_check(const char *url, int insecure_http);

struct kh_http_client;

/*
 * A client over one libcurl handle (not for concurrent use): peer and host always verified,
 * against cacert (a PEM file of CA certificates, copied) when given, else the system's store;
 * TLS 1.2 or later; no redirects; http and https only; 10 s to connect, 30 s per request;
 * answers over answer_max bytes are a transport error. user_agent is kept, not copied: a
 * string that outlives the client. KH_ERR_NOMEM, KH_ERR_INTERNAL when libcurl cannot be set up.
 * The caller checks URLs with kh_http_url_check: this does not.
 */
KH_WARN_UNUSED kh_err kh_http_client_new(const char *cacert, const char *user_agent, size_t answer_max,
					 struct kh_http_client **out);
/* Free; NULL does nothing. */
void kh_http_client_free(struct kh_http_client *c);
/*
 * Answers that carry secrets (the service keys a headend imports): the client's own copy of the
 * body is grown by copy-and-wipe rather than realloc and wiped before it is freed. What libcurl
 * and OpenSSL buffer inside, and the JSON the caller gets, are not covered: the caller wipes its
 * own (e.g. with wiping jansson allocators, json_set_alloc_funcs).
 */
void kh_http_client_set_secret(struct kh_http_client *c, int on);
/*
 * fn(ctx) is asked while a request runs (about once a second, and as data moves); non-zero ends
 * it as KH_ERR_TRANSPORT with err "aborted". For a poller thread that must stop promptly. fn
 * NULL: none. fn runs on the thread that called kh_http_client_request.
 */
void kh_http_client_set_abort(struct kh_http_client *c, int (*fn)(void *ctx), void *ctx);
/*
 * One request to url: a GET, or a POST of body (NUL-terminated) when body is not NULL; headers a
 * NULL-terminated list of whole header lines, or NULL. On KH_OK *status is the HTTP status and
 * *resp the answer parsed as JSON (duplicate keys refused), NULL when it is empty or not JSON;
 * the caller owns it. KH_ERR_TRANSPORT when no answer came: err (errcap bytes, may be NULL) then
 * gets libcurl's words, or "answer too large". KH_ERR_NOMEM, KH_ERR_INVAL. err is written only
 * on KH_ERR_TRANSPORT.
 */
KH_WARN_UNUSED kh_err kh_http_client_request(struct kh_http_client *c, const char *url, const char *const *headers,
					     const char *body, long *status, json_t **resp, char *err, size_t errcap);
/*
 * The same with any method ("GET", "POST", "PUT", "PATCH", "DELETE"; body NULL sends none) and,
 * when text is not NULL, the answer's bytes as they came beside *resp: *text malloc'd and
 * NUL-terminated (the caller frees it), *textlen bytes; NULL and 0 for an empty answer. text is
 * refused (KH_ERR_INVAL) on a client set to secret answers: their copy is wiped here.
 */
KH_WARN_UNUSED kh_err kh_http_client_send(struct kh_http_client *c, const char *method, const char *url,
					  const char *const *headers, const char *body, long *status, json_t **resp,
					  char **text, size_t *textlen, char *err, size_t errcap);
/*
 * A request with a streamed body or answer (a key card's messages, of any size): the body, when
 * read is not NULL, is exactly length bytes taken from read (KH_OK with *n 0 only at its end;
 * rewind, when not NULL, starts it again for libcurl to resend, else a resend fails), sent with
 * Content-Length; a 2xx answer goes to write (NULL: kept like any other), any other answer is
 * kept and parsed as JSON into *resp (answer_max applies to it, not to write's). No limit on
 * the whole request's time: it fails when under 1 byte a second moves for 30 s. A callback's
 * failure ends the request with its code (*err "the stream failed"); KH_ERR_TRANSPORT as for
 * kh_http_client_send.
 */
struct kh_http_stream {
	kh_err (*read)(void *ctx, uint8_t *buf, size_t cap, size_t *n);
	void (*rewind)(void *ctx);
	void *read_ctx;
	uint64_t length;
	kh_err (*write)(void *ctx, const uint8_t *buf, size_t n);
	void *write_ctx;
};
KH_WARN_UNUSED kh_err kh_http_client_stream(struct kh_http_client *c, const char *method, const char *url,
					    const char *const *headers, const struct kh_http_stream *s, long *status,
					    json_t **resp, char *err, size_t errcap);
/*
 * Whether the last request went out, at least in part (1), or failed before a byte of it was
 * sent (0: the connection was refused or could not be set up, so the center cannot have seen it).
 */
int kh_http_client_sent(const struct kh_http_client *c);

#endif
