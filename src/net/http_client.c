/*
 * The one way Keyhole's clients (the decoder's upload, src/host/upload_curl.c; the headend's EMM
 * feed, src/center/headend/feed.c) talk to a center over libcurl (include/keyhole/http.h,
 * contracts in docs/internals/http.md "Client"). TLS always verifies the peer's chain and name
 * (against a private CA file when given) and is 1.2 or later; http and https only, and plain
 * http only to the loopback host unless the caller allows it (kh_http_url_check); redirects are
 * not followed — a center that moves is a configuration change, not something to follow
 * blindly; any method (GET, POST, PUT, PATCH, DELETE); 10 s to connect, 30 s per request; an answer over the caller's limit is cut off as a
 * transport failure.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "keyhole/crypto.h"
#include "keyhole/http.h"

struct kh_http_client {
	CURL *h;
	char *cacert;
	const char *user_agent;
	size_t answer_max;
	int secret;                  /* answers hold secrets: our copy of the body is wiped */
	int (*abort_fn)(void *ctx);  /* non-zero: end the request in flight */
	int sent;                    /* the last request went out, at least in part */
	void *abort_ctx;
};

void kh_http_client_set_secret(struct kh_http_client *c, int on)
{
	c->secret = on != 0;
}

int kh_http_client_sent(const struct kh_http_client *c)
{
	return c->sent;
}

void kh_http_client_set_abort(struct kh_http_client *c, int (*fn)(void *ctx), void *ctx)
{
	c->abort_fn = fn;
	c->abort_ctx = ctx;
}

static int on_progress(void *ud, curl_off_t dlt, curl_off_t dln, curl_off_t ult, curl_off_t uln)
{
	const struct kh_http_client *c = ud;
	(void)dlt, (void)dln, (void)ult, (void)uln;
	return c->abort_fn(c->abort_ctx) ? 1 : 0; /* non-zero: CURLE_ABORTED_BY_CALLBACK */
}

kh_err kh_http_url_check(const char *url, int insecure_http)
{
	const char *a, *end, *host, *hend;
	size_t hl;
	int https;

	if (!url)
		return KH_ERR_INVAL;
	if (strncasecmp(url, "https://", 8) == 0)
		https = 1, a = url + 8;
	else if (strncasecmp(url, "http://", 7) == 0)
		https = 0, a = url + 7;
	else
		return KH_ERR_INVAL;
	end = a + strcspn(a, "/?#");
	if (end == a || memchr(a, '@', (size_t)(end - a)))
		return KH_ERR_INVAL; /* no host, or user info (no credentials in URLs) */
	if (strpbrk(url, "?#") || strpbrk(url, " \t\r\n"))
		return KH_ERR_INVAL; /* a base URL: paths are appended to it */
	host = a;
	if (*host == '[') {
		if (!(hend = memchr(host, ']', (size_t)(end - host))))
			return KH_ERR_INVAL;
		host++;
	} else if (!(hend = memchr(host, ':', (size_t)(end - host)))) {
		hend = end;
	}
	if ((hl = (size_t)(hend - host)) == 0)
		return KH_ERR_INVAL;
	if (https || insecure_http)
		return KH_OK;
	if ((hl == 9 && strncmp(host, "127.0.0.1", 9) == 0) || (hl == 9 && strncasecmp(host, "localhost", 9) == 0) ||
	    (hl == 3 && strncmp(host, "::1", 3) == 0))
		return KH_OK;
	return KH_ERR_INVAL;
}

kh_err kh_http_client_new(const char *cacert, const char *user_agent, size_t answer_max,
			  struct kh_http_client **out)
{
	struct kh_http_client *c;

	if (!out || !user_agent)
		return KH_ERR_INVAL;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		return KH_ERR_INTERNAL;
	if (!(c = calloc(1, sizeof *c))) {
		curl_global_cleanup();
		return KH_ERR_NOMEM;
	}
	if (!(c->h = curl_easy_init()) || (cacert && !(c->cacert = strdup(cacert)))) {
		kh_err r = c->h ? KH_ERR_NOMEM : KH_ERR_INTERNAL;
		kh_http_client_free(c);
		return r;
	}
	c->user_agent = user_agent;
	c->answer_max = answer_max;
	*out = c;
	return KH_OK;
}

void kh_http_client_free(struct kh_http_client *c)
{
	if (!c)
		return;
	if (c->h)
		curl_easy_cleanup(c->h);
	free(c->cacert);
	free(c);
	curl_global_cleanup();
}

struct sink {
	char *p;
	size_t len;
	size_t max;
	int over;
	int secret; /* grow by copy and wipe, never realloc: no stale copy left in freed memory */
};

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *ud)
{
	struct sink *s = ud;
	size_t n = size * nmemb;
	char *q;

	if (n > s->max - s->len) {
		s->over = 1;
		return 0; /* libcurl ends the transfer with CURLE_WRITE_ERROR */
	}
	if (s->secret) {
		if (!(q = malloc(s->len + n + 1)))
			return 0;
		if (s->p) {
			memcpy(q, s->p, s->len);
			kh_wipe(s->p, s->len + 1);
			free(s->p);
		}
	} else if (!(q = realloc(s->p, s->len + n + 1))) {
		return 0;
	}
	memcpy(q + s->len, ptr, n);
	s->p = q;
	s->len += n;
	s->p[s->len] = 0;
	return n;
}

/* What every request of the client obeys (docs/internals/http.md "Client"), on a handle just reset. */
static void transport_rules(struct kh_http_client *c, const char *url, struct curl_slist *hdr, char *cerr)
{
	curl_easy_reset(c->h);
	curl_easy_setopt(c->h, CURLOPT_URL, url);
	curl_easy_setopt(c->h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c->h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(c->h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c->h, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
	curl_easy_setopt(c->h, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(c->h, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(c->h, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
	if (c->cacert)
		curl_easy_setopt(c->h, CURLOPT_CAINFO, c->cacert);
	if (hdr)
		curl_easy_setopt(c->h, CURLOPT_HTTPHEADER, hdr);
	curl_easy_setopt(c->h, CURLOPT_ERRORBUFFER, cerr);
	curl_easy_setopt(c->h, CURLOPT_USERAGENT, c->user_agent);
	if (c->abort_fn) {
		curl_easy_setopt(c->h, CURLOPT_XFERINFOFUNCTION, on_progress);
		curl_easy_setopt(c->h, CURLOPT_XFERINFODATA, c);
		curl_easy_setopt(c->h, CURLOPT_NOPROGRESS, 0L);
	}
}

kh_err kh_http_client_request(struct kh_http_client *c, const char *url, const char *const *headers,
			      const char *body, long *status, json_t **resp, char *err, size_t errcap)
{
	return kh_http_client_send(c, body ? "POST" : "GET", url, headers, body, status, resp, NULL, NULL, err,
				   errcap);
}

kh_err kh_http_client_send(struct kh_http_client *c, const char *method, const char *url,
			   const char *const *headers, const char *body, long *status, json_t **resp, char **text,
			   size_t *textlen, char *err, size_t errcap)
{
	struct curl_slist *hdr = NULL, *t;
	struct sink s = {NULL, 0, 0, 0, 0};
	char cerr[CURL_ERROR_SIZE] = "";
	long code = 0, reqsize = 0;
	CURLcode cr;
	kh_err r = KH_ERR_NOMEM;

	if (!c || !method || !url || !status || !resp || (text && (!textlen || c->secret)))
		return KH_ERR_INVAL;
	*resp = NULL;
	if (text) {
		*text = NULL;
		*textlen = 0;
	}
	s.max = c->answer_max;
	s.secret = c->secret;
	for (size_t i = 0; headers && headers[i]; i++) {
		if (!(t = curl_slist_append(hdr, headers[i])))
			goto out;
		hdr = t;
	}
	transport_rules(c, url, hdr, cerr);
	curl_easy_setopt(c->h, CURLOPT_TIMEOUT_MS, 30000L);
	if (body) {
		curl_easy_setopt(c->h, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(c->h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	}
	if (strcmp(method, body ? "POST" : "GET") != 0)
		curl_easy_setopt(c->h, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c->h, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(c->h, CURLOPT_WRITEDATA, &s);
	cr = curl_easy_perform(c->h);
	/* bytes of the request written: 0 when the connection (or TLS) failed before it went out */
	c->sent = curl_easy_getinfo(c->h, CURLINFO_REQUEST_SIZE, &reqsize) != CURLE_OK || reqsize > 0;
	if (cr != CURLE_OK) {
		if (err && errcap)
			snprintf(err, errcap, "%s",
				 cr == CURLE_ABORTED_BY_CALLBACK ? "aborted"
				 : cerr[0]			  ? cerr
				 : s.over			  ? "answer too large"
								  : curl_easy_strerror(cr));
		r = KH_ERR_TRANSPORT;
		goto out;
	}
	curl_easy_getinfo(c->h, CURLINFO_RESPONSE_CODE, &code);
	*status = code;
	if (s.len)
		*resp = json_loadb(s.p, s.len, JSON_REJECT_DUPLICATES, NULL);
	if (text && s.p) {
		*text = s.p;
		*textlen = s.len;
		s.p = NULL;
	}
	r = KH_OK;
out:
	/* the handle outlives this call: it must not keep pointers to what is freed here */
	curl_easy_setopt(c->h, CURLOPT_HTTPHEADER, NULL);
	curl_easy_setopt(c->h, CURLOPT_ERRORBUFFER, NULL);
	curl_easy_setopt(c->h, CURLOPT_WRITEDATA, NULL);
	curl_slist_free_all(hdr);
	if (s.p && s.secret)
		kh_wipe(s.p, s.len + 1);
	free(s.p);
	return r;
}

/* ---- streamed requests ---- */

struct stream_io {
	const struct kh_http_stream *s;
	struct kh_http_client *c;
	struct sink answer; /* an answer not streamed (an error's JSON) */
	int to_write;       /* -1 not yet known, 1 the answer goes to write, 0 to answer */
	kh_err failed;      /* a callback's failure */
};

static size_t on_read(char *buf, size_t size, size_t nitems, void *ud)
{
	struct stream_io *io = ud;
	size_t n = 0;

	if ((io->failed = io->s->read(io->s->read_ctx, (uint8_t *)buf, size * nitems, &n)) != KH_OK)
		return CURL_READFUNC_ABORT;
	return n;
}

static int on_seek(void *ud, curl_off_t off, int origin)
{
	struct stream_io *io = ud;

	if (off != 0 || origin != SEEK_SET || !io->s->rewind)
		return CURL_SEEKFUNC_CANTSEEK;
	io->s->rewind(io->s->read_ctx);
	return CURL_SEEKFUNC_OK;
}

static size_t on_stream_data(char *ptr, size_t size, size_t nmemb, void *ud)
{
	struct stream_io *io = ud;
	long code = 0;

	if (io->to_write < 0) {
		curl_easy_getinfo(io->c->h, CURLINFO_RESPONSE_CODE, &code);
		io->to_write = io->s->write && code >= 200 && code < 300;
	}
	if (!io->to_write)
		return on_data(ptr, size, nmemb, &io->answer);
	if ((io->failed = io->s->write(io->s->write_ctx, (const uint8_t *)ptr, size * nmemb)) != KH_OK)
		return 0;
	return size * nmemb;
}

kh_err kh_http_client_stream(struct kh_http_client *c, const char *method, const char *url,
			     const char *const *headers, const struct kh_http_stream *s, long *status, json_t **resp,
			     char *err, size_t errcap)
{
	struct stream_io io = {s, c, {NULL, 0, 0, 0, 0}, -1, KH_OK};
	struct curl_slist *hdr = NULL, *t;
	char cerr[CURL_ERROR_SIZE] = "";
	long code = 0, reqsize = 0;
	CURLcode cr;
	kh_err r = KH_ERR_NOMEM;

	if (!c || !method || !url || !s || !status || !resp)
		return KH_ERR_INVAL;
	*resp = NULL;
	io.answer.max = c->answer_max;
	io.answer.secret = c->secret;
	for (size_t i = 0; headers && headers[i]; i++) {
		if (!(t = curl_slist_append(hdr, headers[i])))
			goto out;
		hdr = t;
	}
	transport_rules(c, url, hdr, cerr);
	/* a stream of any size: no limit on the whole, only on a stall */
	curl_easy_setopt(c->h, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(c->h, CURLOPT_LOW_SPEED_TIME, 30L);
	if (s->read) {
		curl_easy_setopt(c->h, CURLOPT_POST, 1L);
		curl_easy_setopt(c->h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)s->length);
		curl_easy_setopt(c->h, CURLOPT_READFUNCTION, on_read);
		curl_easy_setopt(c->h, CURLOPT_READDATA, &io);
		curl_easy_setopt(c->h, CURLOPT_SEEKFUNCTION, on_seek);
		curl_easy_setopt(c->h, CURLOPT_SEEKDATA, &io);
	}
	if (strcmp(method, s->read ? "POST" : "GET") != 0)
		curl_easy_setopt(c->h, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c->h, CURLOPT_WRITEFUNCTION, on_stream_data);
	curl_easy_setopt(c->h, CURLOPT_WRITEDATA, &io);
	cr = curl_easy_perform(c->h);
	c->sent = curl_easy_getinfo(c->h, CURLINFO_REQUEST_SIZE, &reqsize) != CURLE_OK || reqsize > 0;
	if (cr != CURLE_OK) {
		r = io.failed != KH_OK ? io.failed : KH_ERR_TRANSPORT;
		if (err && errcap)
			snprintf(err, errcap, "%s",
				 io.failed != KH_OK		  ? "the stream failed"
				 : cr == CURLE_ABORTED_BY_CALLBACK ? "aborted"
				 : cerr[0]			  ? cerr
				 : io.answer.over		  ? "answer too large"
								  : curl_easy_strerror(cr));
		goto out;
	}
	curl_easy_getinfo(c->h, CURLINFO_RESPONSE_CODE, &code);
	*status = code;
	if (io.answer.len)
		*resp = json_loadb(io.answer.p, io.answer.len, JSON_REJECT_DUPLICATES, NULL);
	r = KH_OK;
out:
	curl_easy_setopt(c->h, CURLOPT_HTTPHEADER, NULL);
	curl_easy_setopt(c->h, CURLOPT_ERRORBUFFER, NULL);
	curl_easy_setopt(c->h, CURLOPT_WRITEDATA, NULL);
	curl_easy_setopt(c->h, CURLOPT_READDATA, NULL);
	curl_easy_setopt(c->h, CURLOPT_SEEKDATA, NULL);
	curl_slist_free_all(hdr);
	if (io.answer.p && io.answer.secret)
		kh_wipe(io.answer.p, io.answer.len + 1);
	free(io.answer.p);
	return r;
}
