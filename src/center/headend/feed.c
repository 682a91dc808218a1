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
 * host unless the caller allows it, no redirects, bounded answers — both go through
 * kh_http_client (src/net/http_client.c), which holds those rules. Nothing secret travels here:
 * the sections are sealed under each card's personal key at the center.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "keyhole/cas.h"
#include "keyhole/headend.h"
#include "keyhole/http.h"

#define PAGE_LIMIT 1000
#define ANSWER_MAX (4u * 1024 * 1024) /* one page of 1000 EMMs is about 400 KiB */

kh_err kh_headend_feed_url_check(const char *url, int insecure_http)
{
	return kh_http_url_check(url, insecure_http);
}

static void why_set(char *why, size_t cap, const char *msg)
{
	if (why && cap)
		snprintf(why, cap, "%s", msg);
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
	struct kh_http_client *h = NULL;
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
	if ((r = kh_http_client_new(cfg->cacert, "keyhole-headend/" KH_VERSION, ANSWER_MAX, &h)) != KH_OK)
		return r;
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
		page = NULL;
		if ((r = kh_http_client_request(h, url, NULL, NULL, &status, &page, why, whycap)) != KH_OK)
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
	kh_http_client_free(h);
	return r;
}
