/*
 * The real HTTP side of the upload session (include/keyhole/upload.h, struct kh_upload_http):
 * one JSON POST over libcurl. TLS always verifies the center's certificate chain and name
 * (against --cacert's private CA when given); plain http is refused except to the loopback host
 * unless the caller allowed it (kh_upload_url_check). Redirects are not followed — a center
 * that moves is a configuration change, not something a decoder should follow blindly — and an
 * answer larger than KH_UPLOAD_RESP_MAX is cut off as a transport failure.
 */
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "keyhole/upload.h"

struct kh_upload_curl {
	CURL *h;
	char *cacert;
	int insecure_http;
	char err[CURL_ERROR_SIZE];
};

struct sink {
	char *p;
	size_t len;
	int over;
};

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *ud)
{
	struct sink *s = ud;
	size_t n = size * nmemb;
	char *q;

	if (n > KH_UPLOAD_RESP_MAX - s->len) {
		s->over = 1;
		return 0; /* libcurl ends the transfer with CURLE_WRITE_ERROR */
	}
	if (!(q = realloc(s->p, s->len + n + 1)))
		return 0;
	memcpy(q + s->len, ptr, n);
	s->p = q;
	s->len += n;
	s->p[s->len] = 0;
	return n;
}

static kh_err post_json(void *ctx, const char *url, json_t *body, const char *idem_key, int *status, json_t **resp)
{
	struct kh_upload_curl *c = ctx;
	struct curl_slist *hdr = NULL, *t;
	struct sink s = {NULL, 0, 0};
	char *text = NULL, *idem = NULL;
	long code = 0;
	CURLcode cr;
	kh_err r;

	*resp = NULL;
	*status = 0;
	c->err[0] = 0;
	if (kh_upload_url_check(url, c->insecure_http) != KH_OK)
		return KH_ERR_INVAL;
	if (!(text = json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER)))
		return KH_ERR_NOMEM;
	r = KH_ERR_NOMEM;
	if (!(t = curl_slist_append(hdr, "Content-Type: application/json")))
		goto out;
	hdr = t;
	if (!(t = curl_slist_append(hdr, "Accept: application/json")))
		goto out;
	hdr = t;
	if (idem_key) {
		if (asprintf(&idem, "Idempotency-Key: %s", idem_key) < 0) {
			idem = NULL;
			goto out;
		}
		if (!(t = curl_slist_append(hdr, idem)))
			goto out;
		hdr = t;
	}
	curl_easy_reset(c->h);
	curl_easy_setopt(c->h, CURLOPT_URL, url);
	curl_easy_setopt(c->h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c->h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(c->h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c->h, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
	curl_easy_setopt(c->h, CURLOPT_TIMEOUT_MS, 30000L);
	curl_easy_setopt(c->h, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(c->h, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(c->h, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
	if (c->cacert)
		curl_easy_setopt(c->h, CURLOPT_CAINFO, c->cacert);
	curl_easy_setopt(c->h, CURLOPT_HTTPHEADER, hdr);
	curl_easy_setopt(c->h, CURLOPT_POSTFIELDS, text);
	curl_easy_setopt(c->h, CURLOPT_POSTFIELDSIZE, (long)strlen(text));
	curl_easy_setopt(c->h, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(c->h, CURLOPT_WRITEDATA, &s);
	curl_easy_setopt(c->h, CURLOPT_ERRORBUFFER, c->err);
	curl_easy_setopt(c->h, CURLOPT_USERAGENT, "keyhole/" KH_VERSION);
	cr = curl_easy_perform(c->h);
	if (cr != CURLE_OK) {
		if (!c->err[0])
			snprintf(c->err, sizeof c->err, "%s", s.over ? "answer too large" : curl_easy_strerror(cr));
		r = KH_ERR_TRANSPORT;
		goto out;
	}
	curl_easy_getinfo(c->h, CURLINFO_RESPONSE_CODE, &code);
	*status = (int)code;
	if (s.len)
		*resp = json_loadb(s.p, s.len, JSON_REJECT_DUPLICATES, NULL);
	r = KH_OK;
out:
	curl_easy_setopt(c->h, CURLOPT_HTTPHEADER, NULL);
	curl_easy_setopt(c->h, CURLOPT_ERRORBUFFER, NULL);
	curl_slist_free_all(hdr);
	free(idem);
	free(text);
	free(s.p);
	return r;
}

kh_err kh_upload_curl_new(const char *cacert, int insecure_http, struct kh_upload_curl **out,
			  struct kh_upload_http *http)
{
	struct kh_upload_curl *c;

	if (!out || !http)
		return KH_ERR_INVAL;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		return KH_ERR_INTERNAL;
	if (!(c = calloc(1, sizeof *c))) {
		curl_global_cleanup();
		return KH_ERR_NOMEM;
	}
	if (!(c->h = curl_easy_init()) || (cacert && !(c->cacert = strdup(cacert)))) {
		kh_err r = c->h ? KH_ERR_NOMEM : KH_ERR_INTERNAL;
		kh_upload_curl_free(c);
		return r;
	}
	c->insecure_http = insecure_http;
	http->post_json = post_json;
	http->ctx = c;
	*out = c;
	return KH_OK;
}

void kh_upload_curl_free(struct kh_upload_curl *c)
{
	if (!c)
		return;
	if (c->h)
		curl_easy_cleanup(c->h);
	free(c->cacert);
	free(c);
	curl_global_cleanup();
}

const char *kh_upload_curl_error(const struct kh_upload_curl *c)
{
	return c ? c->err : "";
}
