/*
 * The headend's link to the management center ("EMM delivery without a return line"),
 * all over the center's HTTP API so that the headend needs no access to the center's database:
 *
 * - the EMM feed: GET {center}/v1/emm?since=ID pages, following last_id until a page comes back
 *   empty, each EMM's sealed section (base64url) appended to one buffer shaped like an EMM file
 *   (concatenated sections), which the scrambler cycles on the EMM PID. The center queues EMMs in
 *   id order with strictly increasing per-card seqs, so carrying them in queue order lets each
 *   card accept every one, and a repeat is refused by the card as a replay
 *   (docs/protocols/cas.md). Nothing secret travels here: the sections are sealed under each
 *   card's personal key at the center.
 * - the continuous feed: a poller thread that repeats the fetch every N seconds from the highest
 *   id seen and leaves what it got in a mailbox for the packet path to take (no network wait
 *   there).
 * - the key material: GET {center}/v1/service-keys/material (an operator endpoint, bearer token)
 *   into the headend key file's table. This answer does hold secrets: our copies of it are wiped.
 * - a pay-per-view event's price: GET {center}/v1/events/{id} (an operator endpoint), so that
 *   the ECMs ask the price the center invoices.
 *
 * Transport rules are the decoder's (keyhole-decoder(1) connect): peer and host name always
 * verified over https (against a private CA file when given), plain http only to the loopback
 * host unless the caller allows it, no redirects, bounded answers — all go through
 * kh_http_client (src/net/http_client.c), which holds those rules. docs/internals/headend.md
 * "Connected to the management center".
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "keyhole/cas.h"
#include "keyhole/crypto.h"
#include "keyhole/headend.h"
#include "keyhole/http.h"
#include "keyhole/log.h"

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

static kh_err fetch(const struct kh_headend_feed_cfg *cfg, int (*abort_fn)(void *), void *abort_ctx, uint8_t **emm,
		    size_t *emm_len, size_t *count, int64_t *last_id, char *why, size_t whycap)
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
	if (abort_fn)
		kh_http_client_set_abort(h, abort_fn, abort_ctx);
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

kh_err kh_headend_feed_fetch(const struct kh_headend_feed_cfg *cfg, uint8_t **emm, size_t *emm_len, size_t *count,
			     int64_t *last_id, char *why, size_t whycap)
{
	return fetch(cfg, NULL, NULL, emm, emm_len, count, last_id, why, whycap);
}

/* ---------------------------------------------------------------------------------------- */
/* Service keys from the center: GET /v1/service-keys/material                               */

#define MATERIAL_MAX (1024u * 1024) /* 256 ids x 2 versions is about 40 KiB of JSON */

/*
 * jansson allocators that wipe what they free, for the time the material answer is parsed: the
 * key strings (and the lexer's buffer) then leave nothing behind in freed memory. A size header
 * of 16 bytes keeps malloc's alignment.
 */
static void *secret_malloc(size_t n)
{
	unsigned char *p = n <= SIZE_MAX - 16 ? malloc(n + 16) : NULL;
	if (!p)
		return NULL;
	memcpy(p, &n, sizeof n);
	return p + 16;
}

static void secret_free(void *q)
{
	unsigned char *p;
	size_t n;

	if (!q)
		return;
	p = (unsigned char *)q - 16;
	memcpy(&n, p, sizeof n);
	kh_wipe(q, n);
	free(p);
}

static void why_clean(char *why)
{
	for (char *p = why; p && *p; p++) /* the center's words reach a terminal */
		if ((unsigned char)*p < 0x20 || (unsigned char)*p == 0x7f)
			*p = '?';
}

/* The answer's keys into k; *n counts them. Everything is checked before k changes. */
static kh_err take_material(const json_t *ans, struct kh_headend_keys *k, size_t *n)
{
	const json_t *arr = json_object_get(ans, "service_keys"), *e;
	uint8_t key[KH_CAS_KEY_LEN];
	size_t i, kl;
	kh_err r = KH_OK;

	if (!json_is_array(arr) || json_array_size(arr) > 256 * KH_HEADEND_KEY_VERSIONS)
		return KH_ERR_FORMAT;
	json_array_foreach(arr, i, e) {
		const json_t *id = json_object_get(e, "key_id"), *v = json_object_get(e, "version");
		if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) > 255 ||
		    !json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > UINT32_MAX ||
		    kh_json_get_b64(e, "key", key, sizeof key, &kl, 1) != KH_OK)
			r = KH_ERR_FORMAT;
		kh_wipe(key, sizeof key);
		if (r != KH_OK)
			return r;
	}
	json_array_foreach(arr, i, e) {
		if (kh_json_get_b64(e, "key", key, sizeof key, &kl, 1) != KH_OK)
			r = KH_ERR_FORMAT; /* checked above */
		else
			r = kh_headend_keys_put(k, (uint8_t)json_integer_value(json_object_get(e, "key_id")),
						(uint32_t)json_integer_value(json_object_get(e, "version")), key);
		kh_wipe(key, sizeof key);
		if (r != KH_OK)
			return r;
		(*n)++;
	}
	return KH_OK;
}

/*
 * An operator request to the center: the URL of path under cfg->center (checked as the feed's)
 * in *url, and with a token the Authorization header in *auth (its length in *alen, to wipe).
 * Both malloc'd; on failure nothing is left to free.
 */
static kh_err operator_request(const struct kh_headend_feed_cfg *cfg, const char *path, const char *token,
			       char **url, char **auth, size_t *alen, char *why, size_t whycap)
{
	size_t bl;

	*url = *auth = NULL;
	*alen = 0;
	if (kh_headend_feed_url_check(cfg->center, cfg->insecure_http) != KH_OK) {
		why_set(why, whycap, "not an https:// base URL (http:// only to 127.0.0.1, localhost or [::1])");
		return KH_ERR_INVAL;
	}
	bl = strlen(cfg->center);
	while (bl > 0 && cfg->center[bl - 1] == '/')
		bl--;
	if (asprintf(url, "%.*s%s", (int)bl, cfg->center, path) < 0) {
		*url = NULL;
		return KH_ERR_NOMEM;
	}
	if (token) {
		if (asprintf(auth, "Authorization: Bearer %s", token) < 0) {
			*auth = NULL;
			free(*url);
			*url = NULL;
			return KH_ERR_NOMEM;
		}
		*alen = strlen(*auth);
	}
	return KH_OK;
}

kh_err kh_headend_material_fetch(const struct kh_headend_feed_cfg *cfg, const char *token, struct kh_headend_keys *k,
				 size_t *count, char *why, size_t whycap)
{
	json_malloc_t old_malloc;
	json_free_t old_free;
	struct kh_http_client *h = NULL;
	const char *hdrs[2] = {NULL, NULL};
	char *auth = NULL, *url = NULL;
	json_t *ans = NULL;
	size_t n = 0, alen = 0;
	long status = 0;
	kh_err r;

	if (why && whycap)
		why[0] = 0;
	if (!cfg || !k || !count)
		return KH_ERR_INVAL;
	if ((r = operator_request(cfg, "/v1/service-keys/material", token, &url, &auth, &alen, why, whycap)) != KH_OK)
		return r;
	hdrs[0] = auth;
	if ((r = kh_http_client_new(cfg->cacert, "keyhole-headend/" KH_VERSION, MATERIAL_MAX, &h)) != KH_OK)
		goto out;
	kh_http_client_set_secret(h, 1);
	/* Single-threaded here (the CLI): no other jansson user sees the wiping allocators. */
	json_get_alloc_funcs(&old_malloc, &old_free);
	json_set_alloc_funcs(secret_malloc, secret_free);
	r = kh_http_client_request(h, url, hdrs[0] ? hdrs : NULL, NULL, &status, &ans, why, whycap);
	if (r == KH_OK && status != 200) {
		const json_t *m = json_object_get(json_object_get(ans, "error"), "message");
		if (why && whycap) {
			snprintf(why, whycap, "%s (HTTP %ld)", json_is_string(m) ? json_string_value(m) : "refused", status);
			why_clean(why);
		}
		r = status == 401 || status == 403 ? KH_ERR_UNAUTHORISED : KH_ERR_TRANSPORT;
	} else if (r == KH_OK && (!ans || (r = take_material(ans, k, &n)) != KH_OK)) {
		if (!ans || r == KH_ERR_FORMAT) {
			r = KH_ERR_FORMAT;
			why_set(why, whycap, "the answer is not a list of service keys");
		}
	}
	json_decref(ans);
	json_set_alloc_funcs(old_malloc, old_free);
	if (r == KH_OK)
		*count = n;
out:
	kh_http_client_free(h);
	if (auth) {
		kh_wipe(auth, alen);
		free(auth);
	}
	free(url);
	return r;
}

/* ---------------------------------------------------------------------------------------- */
/* A pay-per-view event's price from the center's catalogue: GET /v1/events/{id}            */

#define EVENT_MAX (64u * 1024)

kh_err kh_headend_event_price(const struct kh_headend_feed_cfg *cfg, const char *token, uint32_t event,
			      uint32_t *price, char *why, size_t whycap)
{
	struct kh_http_client *h = NULL;
	const char *hdrs[2] = {NULL, NULL};
	char *auth = NULL, *url = NULL, path[32];
	const json_t *id, *pr;
	json_t *ans = NULL;
	size_t alen = 0;
	long status = 0;
	kh_err r;

	if (why && whycap)
		why[0] = 0;
	if (!cfg || !price)
		return KH_ERR_INVAL;
	/* the one event: the list is paged, and an event may be past its first page */
	snprintf(path, sizeof path, "/v1/events/%lu", (unsigned long)event);
	if ((r = operator_request(cfg, path, token, &url, &auth, &alen, why, whycap)) != KH_OK)
		return r;
	hdrs[0] = auth;
	if ((r = kh_http_client_new(cfg->cacert, "keyhole-headend/" KH_VERSION, EVENT_MAX, &h)) != KH_OK)
		goto out;
	if ((r = kh_http_client_request(h, url, hdrs[0] ? hdrs : NULL, NULL, &status, &ans, why, whycap)) != KH_OK)
		goto out;
	if (status == 404) {
		if (why && whycap)
			snprintf(why, whycap, "event %lu is not in the center's catalogue", (unsigned long)event);
		r = KH_ERR_NOTFOUND;
		goto out;
	}
	if (status != 200) {
		const json_t *m = json_object_get(json_object_get(ans, "error"), "message");
		if (why && whycap) {
			snprintf(why, whycap, "%s (HTTP %ld)", json_is_string(m) ? json_string_value(m) : "refused", status);
			why_clean(why);
		}
		r = status == 401 || status == 403 ? KH_ERR_UNAUTHORISED : KH_ERR_TRANSPORT;
		goto out;
	}
	id = json_object_get(ans, "id");
	pr = json_object_get(ans, "price");
	if (!json_is_integer(id) || json_integer_value(id) != (json_int_t)event || !json_is_integer(pr) ||
	    json_integer_value(pr) < 0 || json_integer_value(pr) > UINT32_MAX) {
		why_set(why, whycap, "the answer is not the event asked for");
		r = KH_ERR_FORMAT;
		goto out;
	}
	*price = (uint32_t)json_integer_value(pr);
	r = KH_OK;
out:
	json_decref(ans);
	kh_http_client_free(h);
	if (auth) {
		kh_wipe(auth, alen);
		free(auth);
	}
	free(url);
	return r;
}

/* ---------------------------------------------------------------------------------------- */
/* The continuous feed: a thread that polls the queue while the scrambler runs                */

struct kh_headend_poller {
	struct kh_headend_feed_cfg cfg; /* center and cacert: the caller's strings */
	char *center, *cacert;
	unsigned every_s;
	pthread_t thread;
	int started;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int stop;     /* under mu; also read by the abort callback */
	int64_t since;
	/* the mailbox, under mu: what was fetched and not taken yet */
	uint8_t *emm;
	size_t emm_len, count;
	unsigned failed, polls;
	char why[256];
};

static int poller_stopping(void *arg)
{
	struct kh_headend_poller *p = arg;
	int s;

	pthread_mutex_lock(&p->mu);
	s = p->stop;
	pthread_mutex_unlock(&p->mu);
	return s;
}

static void *poll_loop(void *arg)
{
	struct kh_headend_poller *p = arg;
	struct timespec due;
	char why[256];

	clock_gettime(CLOCK_MONOTONIC, &due);
	pthread_mutex_lock(&p->mu);
	for (;;) {
		struct kh_headend_feed_cfg c = p->cfg;
		uint8_t *got = NULL;
		size_t len = 0, n = 0;
		int64_t last = 0;
		kh_err r;

		due.tv_sec += (time_t)p->every_s;
		while (!p->stop && pthread_cond_timedwait(&p->cv, &p->mu, &due) != ETIMEDOUT)
			;
		if (p->stop)
			break;
		c.since = p->since;
		pthread_mutex_unlock(&p->mu);
		r = fetch(&c, poller_stopping, p, &got, &len, &n, &last, why, sizeof why);
		pthread_mutex_lock(&p->mu);
		p->polls++;
		if (r == KH_OK && len > KH_HEADEND_FEED_MAX - p->emm_len)
			r = KH_ERR_TOO_LARGE, snprintf(why, sizeof why, "the EMMs not yet carried exceed the feed's limit");
		if (r == KH_OK && len) {
			uint8_t *q = realloc(p->emm, p->emm_len + len);
			if (!q) {
				r = KH_ERR_NOMEM;
				snprintf(why, sizeof why, "%s", kh_strerror(r));
			} else {
				memcpy(q + p->emm_len, got, len);
				p->emm = q;
				p->emm_len += len;
				p->count += n;
			}
		}
		free(got);
		if (r == KH_OK) {
			if (n)
				kh_log_info("headend.emm_poll", "emms=%zu last_id=%lld", n, (long long)last);
			p->since = last; /* only once the EMMs are in the mailbox */
		} else if (!p->stop) {
			p->failed++;
			snprintf(p->why, sizeof p->why, "%s", why[0] ? why : kh_strerror(r));
			kh_log_warn("headend.emm_poll_failed", "err=%s since=%lld", kh_err_name(r), (long long)p->since);
		}
		/* a poll that overran its period: the next one a full period after this one ended */
		{
			struct timespec now;
			clock_gettime(CLOCK_MONOTONIC, &now);
			if (now.tv_sec > due.tv_sec || (now.tv_sec == due.tv_sec && now.tv_nsec > due.tv_nsec))
				due = now;
		}
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

void kh_headend_poller_stop(struct kh_headend_poller *p)
{
	if (!p)
		return;
	if (p->started) {
		pthread_mutex_lock(&p->mu);
		p->stop = 1;
		pthread_cond_signal(&p->cv);
		pthread_mutex_unlock(&p->mu);
		pthread_join(p->thread, NULL);
	}
	pthread_cond_destroy(&p->cv);
	pthread_mutex_destroy(&p->mu);
	free(p->emm);
	free(p->center);
	free(p->cacert);
	free(p);
}

kh_err kh_headend_poller_start(const struct kh_headend_feed_cfg *cfg, unsigned every_s,
			       struct kh_headend_poller **out)
{
	struct kh_headend_poller *p;
	pthread_condattr_t ca;
	int ok;

	if (!cfg || !out || every_s == 0 || cfg->since < 0 ||
	    kh_headend_feed_url_check(cfg->center, cfg->insecure_http) != KH_OK)
		return KH_ERR_INVAL;
	if (!(p = calloc(1, sizeof *p)))
		return KH_ERR_NOMEM;
	if (pthread_mutex_init(&p->mu, NULL) != 0) {
		free(p);
		return KH_ERR_NOMEM;
	}
	ok = pthread_condattr_init(&ca) == 0;
	if (ok) {
		ok = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0 && pthread_cond_init(&p->cv, &ca) == 0;
		pthread_condattr_destroy(&ca);
	}
	if (!ok) {
		pthread_mutex_destroy(&p->mu);
		free(p);
		return KH_ERR_NOMEM;
	}
	p->cfg = *cfg;
	if (!(p->center = strdup(cfg->center)) || (cfg->cacert && !(p->cacert = strdup(cfg->cacert)))) {
		kh_headend_poller_stop(p);
		return KH_ERR_NOMEM;
	}
	p->cfg.center = p->center;
	p->cfg.cacert = p->cacert;
	p->since = cfg->since;
	p->every_s = every_s;
	if (pthread_create(&p->thread, NULL, poll_loop, p) != 0) {
		kh_headend_poller_stop(p);
		return KH_ERR_NOMEM;
	}
	p->started = 1;
	*out = p;
	return KH_OK;
}

int kh_headend_poller_take(struct kh_headend_poller *p, uint8_t **emm, size_t *len, size_t *count, int64_t *last_id,
			   unsigned *failed, char *why, size_t whycap)
{
	int got;

	pthread_mutex_lock(&p->mu);
	got = p->emm_len > 0;
	*emm = p->emm;
	*len = p->emm_len;
	if (count)
		*count = p->count;
	if (last_id)
		*last_id = p->since;
	if (failed)
		*failed = p->failed;
	if (why && whycap)
		snprintf(why, whycap, "%s", p->failed ? p->why : "");
	p->emm = NULL;
	p->emm_len = p->count = 0;
	p->failed = 0;
	pthread_mutex_unlock(&p->mu);
	return got;
}
