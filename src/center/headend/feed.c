/*
 * The headend's EMM feed from the management center (issue 4, "EMM delivery without a return
 * line"): GET {center}/v1/emm?since=ID pages, following last_id until a page comes back empty,
 * each EMM's sealed section (base64url) appended to one buffer shaped like an EMM file
 * (concatenated sections), which the scrambler cycles on the EMM PID. The center queues EMMs in
 * id order with strictly increasing per-card seqs, so carrying them in queue order lets each
 * card accept every one, and a repeat is refused by the card as a replay (docs/protocols/cas.md).
 *
 * Transport rules are the decoder's (keyhole-decoder(1) connect): peer and host name always
 * verified over https (against a private CA file when given), plain http only to the loopback
 * host unless the caller allows it, no redirects, bounded answers. Nothing secret travels here:
 * the sections are sealed under each card's personal key at the center.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <jansson.h>

#include "keyhole/cas.h"
#include "keyhole/headend.h"
#include "keyhole/http.h"

#define PAGE_LIMIT 1000
#define ANSWER_MAX (4u * 1024 * 1024) /* one page of 1000 EMMs is about 400 KiB */

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

	if (n > ANSWER_MAX - s->len) {
		s->over = 1;
		return 0;
	}
	if (!(q = realloc(s->p, s->len + n + 1)))
		return 0;
	memcpy(q + s->len, ptr, n);
	s->p = q;
	s->len += n;
	s->p[s->len] = 0;
	return n;
}

kh_err kh_headend_feed_url_check(const char *url, int insecure_http)
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
		return KH_ERR_INVAL; /* a base URL: the path is appended to it */
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

static void why_set(char *why, size_t cap, const char *msg)
{
	if (why && cap)
		snprintf(why, cap, "%s", msg);
}

/* One GET; *status and the parsed body (NULL when it is not JSON). */
static kh_err get_json(CURL *h, const struct kh_headend_feed_cfg *cfg, const char *url, long *status, json_t **body,
		       char *why, size_t cap)
{
	struct sink s = {NULL, 0, 0};
	char err[CURL_ERROR_SIZE] = "";
	CURLcode cr;

	*body = NULL;
	curl_easy_reset(h);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 30000L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(h, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
	if (cfg->cacert)
		curl_easy_setopt(h, CURLOPT_CAINFO, cfg->cacert);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &s);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, err);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "keyhole-headend/" KH_VERSION);
	cr = curl_easy_perform(h);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL);
	if (cr != CURLE_OK) {
		why_set(why, cap, err[0] ? err : s.over ? "answer too large" : curl_easy_strerror(cr));
		free(s.p);
		return KH_ERR_TRANSPORT;
	}
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
	if (s.len)
		*body = json_loadb(s.p, s.len, JSON_REJECT_DUPLICATES, NULL);
	free(s.p);
	return KH_OK;
}

/* Append one page's sections to *buf; *n counts the EMMs, *last the page's last_id. */
static kh_err take_page(const json_t *page, int64_t since, uint8_t **buf, size_t *len, size_t *n, int64_t *last)
{
	const json_t *arr = json_object_get(page, "emms"), *lid = json_object_get(page, "last_id"), *e;
	uint8_t sec[KH_EMM_MAX];
	size_t i, sl, off;
	const uint8_t *s;
	size_t sn;
	uint8_t *q;
	kh_err r;

	if (!json_is_array(arr) || !json_is_integer(lid) || json_integer_value(lid) < since)
		return KH_ERR_FORMAT;
	json_array_foreach(arr, i, e) {
		if ((r = kh_json_get_b64(e, "section", sec, sizeof sec, &sl, 0)) != KH_OK)
			return r == KH_ERR_NOMEM ? r : KH_ERR_FORMAT;
		off = 0; /* exactly one whole EMM section */
		if (kh_headend_emm_next(sec, sl, &off, &s, &sn) != 1 || off != sl)
			return KH_ERR_FORMAT;
		if (sl > KH_HEADEND_FEED_MAX - *len)
			return KH_ERR_TOO_LARGE;
		if (!(q = realloc(*buf, *len + sl)))
			return KH_ERR_NOMEM;
		memcpy(q + *len, sec, sl);
		*buf = q;
		*len += sl;
		(*n)++;
	}
	if (json_array_size(arr) > 0 && json_integer_value(lid) <= since)
		return KH_ERR_FORMAT; /* a page that does not move forward would loop forever */
	*last = json_integer_value(lid);
	return KH_OK;
}

kh_err kh_headend_feed_fetch(const struct kh_headend_feed_cfg *cfg, uint8_t **emm, size_t *emm_len, size_t *count,
			     int64_t *last_id, char *why, size_t whycap)
{
	CURL *h = NULL;
	uint8_t *buf = NULL;
	size_t len = 0, n = 0, bl;
	int64_t since;
	char *url = NULL;
	json_t *page = NULL;
	long status = 0;
	kh_err r;

	if (why && whycap)
		why[0] = 0;
	if (!cfg || !emm || !emm_len || cfg->since < 0)
		return KH_ERR_INVAL;
	if (kh_headend_feed_url_check(cfg->center, cfg->insecure_http) != KH_OK) {
		why_set(why, whycap, "not an https:// base URL (http:// only to 127.0.0.1, localhost or [::1])");
		return KH_ERR_INVAL;
	}
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		return KH_ERR_INTERNAL;
	if (!(h = curl_easy_init())) {
		r = KH_ERR_INTERNAL;
		goto out;
	}
	bl = strlen(cfg->center);
	while (bl > 0 && cfg->center[bl - 1] == '/')
		bl--;
	since = cfg->since;
	for (;;) {
		int64_t last = since;
		free(url);
		if (asprintf(&url, "%.*s/v1/emm?since=%lld&limit=%d", (int)bl, cfg->center, (long long)since,
			     PAGE_LIMIT) < 0) {
			url = NULL;
			r = KH_ERR_NOMEM;
			goto out;
		}
		json_decref(page);
		if ((r = get_json(h, cfg, url, &status, &page, why, whycap)) != KH_OK)
			goto out;
		if (status != 200) {
			const json_t *m = json_object_get(json_object_get(page, "error"), "message");
			if (why && whycap) {
				snprintf(why, whycap, "%s (HTTP %ld)", json_is_string(m) ? json_string_value(m) : "refused",
					 status);
				/* the center's words reach a terminal: no control characters */
				for (char *p = why; *p; p++)
					if ((unsigned char)*p < 0x20 || (unsigned char)*p == 0x7f)
						*p = '?';
			}
			r = KH_ERR_TRANSPORT;
			goto out;
		}
		if (!page || (r = take_page(page, since, &buf, &len, &n, &last)) != KH_OK) {
			if (!page)
				r = KH_ERR_FORMAT;
			if (r == KH_ERR_FORMAT)
				why_set(why, whycap, "the answer is not an EMM page");
			else if (r == KH_ERR_TOO_LARGE)
				why_set(why, whycap, "the EMM queue is larger than the feed's limit");
			goto out;
		}
		if (json_array_size(json_object_get(page, "emms")) == 0)
			break;
		since = last;
	}
	*emm = buf;
	buf = NULL;
	*emm_len = len;
	if (count)
		*count = n;
	if (last_id)
		*last_id = since;
	r = KH_OK;
out:
	json_decref(page);
	free(url);
	free(buf);
	if (h)
		curl_easy_cleanup(h);
	curl_global_cleanup();
	return r;
}
