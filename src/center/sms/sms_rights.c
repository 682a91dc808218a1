/*
 * Subscription rights that end on their own (docs/protocols/cas.md "How long a withheld EMM can
 * matter", docs/internals/sms.md "Rights and their renewal"). A card learns of a subscription by
 * ENTITLE; a host that cuts the card off from its EMMs (it withholds a REVOKE, which blocks every
 * later EMM of that card) must not keep the card watching until the subscription's end, a year
 * away perhaps. So no ENTITLE reaches further than the center's rights TTL, and the center renews
 * the rights before they lapse.
 *
 * The windows are fixed by the clock, not recorded per card: with half = rights_ttl / 2, window k
 * is [k * half, (k + 1) * half), and a right sent during window k for a subscription [start, end)
 * ends at min(end, (k + 2) * half) — at least half, at most rights_ttl ahead — with k taken at
 * max(now, start) for a subscription that starts later. Every place that sends ENTITLE (a
 * subscription, a bulk subscription, a card's set-up) uses kh__sms_rights_end, so the renewal of
 * window k is simply: each subscription that started before the window and outlasts the previous
 * window's end gets ENTITLE(min(end, (k + 2) * half)). Nothing per card needs storing, so no
 * schema change: the sweep's progress lives in bulk_jobs rows (migration 3), one per (window,
 * product) under a key of its own, moved in each chunk's transaction like a bulk subscription's,
 * so the sweep is resumable and a window swept already queues nothing again. A cancelled
 * subscription has no row, so it is never renewed; its REVOKE went out when it was cancelled.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keyhole/buf.h"
#include "keyhole/crypto.h"
#include "keyhole/log.h"
#include "sms_int.h"

int64_t kh__sms_now(const struct kh_sms *c)
{
	return c->lim.clock ? c->lim.clock(c->lim.clock_ctx) : (int64_t)time(NULL);
}

static int64_t half_of(const struct kh_sms *c)
{
	return c->lim.rights_ttl / 2;
}

int64_t kh__sms_rights_end(const struct kh_sms *c, int64_t now, int64_t start, int64_t end)
{
	int64_t half = half_of(c), base = now > start ? now : start, w;

	if (base < 0)
		base = 0;
	w = (base / half + 2) * half;
	return w < end ? w : end;
}

/* ---- the sweep ---- */

struct renew {
	struct kh_sms *c;
	uint32_t product;
	int64_t window;  /* this window's start */
	char key[80];    /* the progress row's key in bulk_jobs */
	uint8_t hash[KH_STORE_IDEM_HASH_LEN];
	unsigned chunk;
	struct kh_store_renew_target *t; /* chunk + 1 */
	size_t nt;
	/* what the transaction that last ran did (reset when it runs again) */
	unsigned cards, queued;
	int done, wrote;
};

static kh_err collect(void *arg, const struct kh_store_renew_target *t)
{
	struct renew *w = arg;

	if (w->nt > w->chunk)
		return KH_ERR_INTERNAL; /* the store gave more than the limit asked */
	w->t[w->nt++] = *t;
	return KH_OK;
}

/* One subscriber's card: the right for the window. */
static kh_err renew_one(struct kh_store *s, struct renew *w, const struct kh_store_renew_target *t)
{
	struct kh__sms_emm e;
	uint8_t cmd[32];
	struct kh_wr wr;
	kh_err r;

	kh__sms_emm_init(&e, w->c, t->ua);
	kh_wr_init(&wr, cmd, sizeof cmd);
	if ((r = kh_emm_put_entitle(&wr, w->product, (uint64_t)t->start,
				    (uint64_t)kh__sms_rights_end(w->c, w->window, t->start, t->end))) == KH_OK &&
	    (r = kh__sms_emm_cmd(s, &e, cmd, wr.len)) == KH_OK)
		r = kh__sms_emm_flush(s, &e);
	kh__sms_emm_wipe(&e);
	if (r != KH_OK)
		return r;
	w->cards++;
	w->queued += e.queued;
	return KH_OK;
}

/* One chunk of one product: resume where the last commit left it. */
static kh_err chunk_tx(struct kh_store *s, void *arg)
{
	struct renew *w = arg;
	struct kh_store_bulk_job job;
	int64_t half = half_of(w->c);
	int more;
	kh_err r;

	w->cards = w->queued = 0;
	w->done = w->wrote = 0;
	w->nt = 0;
	r = kh_store_bulk_job_get(s, w->key, w->hash, &job);
	if (r == KH_ERR_NOTFOUND) {
		memset(&job, 0, sizeof job);
		job.product_id = w->product;
		job.start = w->window;
		job.end = w->window + 2 * half;
		job.all = 1;
		r = kh_store_subscriber_max_id(s, &job.max_subscriber_id);
	}
	if (r != KH_OK)
		return r;
	if (job.done) {
		w->done = 1;
		return KH_OK;
	}
	/* Started before the window, and outlasting what the previous window sent. */
	if ((r = kh_store_renew_targets(s, w->product, job.last_subscriber_id, job.max_subscriber_id, w->window,
					w->window + half, w->chunk + 1, collect, w)) != KH_OK)
		return r;
	more = w->nt > w->chunk;
	if (more)
		w->nt = w->chunk;
	for (size_t i = 0; i < w->nt; i++)
		if ((r = renew_one(s, w, &w->t[i])) != KH_OK)
			return r;
	job.last_subscriber_id = more ? w->t[w->nt - 1].subscriber_id : job.max_subscriber_id;
	job.subscribers += w->cards;
	job.emms_queued += w->queued;
	job.chunks++;
	job.done = !more;
	if ((r = kh_store_bulk_job_put(s, w->key, w->hash, &job)) != KH_OK)
		return r;
	w->done = job.done;
	w->wrote = 1;
	return KH_OK;
}

/* The periodic sweep was asked to stop (kh_sms_free): it ends between two chunks. */
static int stopping(struct kh_sms *c)
{
	int stop;

	if (!c->renew.run)
		return 0;
	pthread_mutex_lock(&c->renew.mu);
	stop = c->renew.stop;
	pthread_mutex_unlock(&c->renew.mu);
	return stop;
}

struct ids {
	uint32_t *v;
	size_t n, cap;
};

static kh_err collect_product(void *arg, const struct kh_store_product *p)
{
	struct ids *l = arg;

	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 16;
		uint32_t *v = realloc(l->v, cap * sizeof *v);
		if (v == NULL)
			return KH_ERR_NOMEM;
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n++] = p->id;
	return KH_OK;
}

kh_err kh_sms_rights_renew(struct kh_sms *c, struct kh_sms_renewal *out)
{
	struct kh_sms_renewal got = {0};
	struct renew w = {.c = c};
	struct ids products = {0};
	struct kh_store *s;
	int64_t half, now;
	kh_err r;

	if (c == NULL)
		return KH_ERR_INVAL;
	half = half_of(c);
	now = kh__sms_now(c);
	got.window_start = (now < 0 ? 0 : now) / half * half;
	got.rights_end = got.window_start + 2 * half;
	w.window = got.window_start;
	w.chunk = c->lim.bulk_chunk;
	if ((w.t = calloc(w.chunk + 1, sizeof *w.t)) == NULL)
		return KH_ERR_NOMEM;
	if ((r = kh__sms_db(c, &s)) != KH_OK || (r = kh_store_products(s, collect_product, &products)) != KH_OK)
		goto out;
	for (size_t i = 0; i < products.n; i++) {
		w.product = products.v[i];
		snprintf(w.key, sizeof w.key, "keyhole-rights-renewal/%lld/%u", (long long)w.window, w.product);
		if ((r = kh_sha256((const uint8_t *)w.key, strlen(w.key), w.hash)) != KH_OK)
			goto out;
		do {
			if (stopping(c)) {
				r = KH_OK; /* the next sweep resumes from the last chunk committed */
				goto out;
			}
			if ((r = kh__sms_write(c, chunk_tx, &w)) != KH_OK)
				goto out;
			got.cards += w.cards;
			got.emms_queued += w.queued;
			got.chunks += (unsigned)w.wrote;
			kh__sms_count_emms(c, w.queued);
		} while (!w.done);
		got.products++;
	}
	kh_log_info("sms.rights_renew", "window_start=%lld rights_end=%lld products=%u cards=%u emms=%u chunks=%u",
		    (long long)got.window_start, (long long)got.rights_end, got.products, got.cards, got.emms_queued,
		    got.chunks);
	if (out)
		*out = got;
	r = KH_OK;
out:
	free(products.v);
	free(w.t);
	return r;
}

/*
 * POST /v1/rights/renew, with an optional Idempotency-Key: a key that has its answer gets it
 * again and sweeps nothing. The sweep is many transactions (a product's chunks) and idempotent by
 * itself (a window swept already queues nothing), so the answer is stored in a transaction of
 * its own once the sweep is done, before it is sent: an answer never sent may be lost with a
 * crash, and the retry then sweeps again (finding nothing left to do) and answers that.
 */
struct renew_answer {
	struct kh_sms *c;
	const struct kh_sms_renewal *n;
	struct kh__sms_idem im;
	struct kh__sms_why why;
};

static kh_err renew_answer_tx(struct kh_store *s, void *arg)
{
	struct renew_answer *a = arg;
	const struct kh_sms_renewal *n = a->n;
	int done;
	kh_err r;

	if ((r = kh__sms_idem_begin(s, &a->im, &a->why, &done)) != KH_OK || done)
		return r;
	return kh__sms_idem_answer(s, a->c, &a->im, 200,
				   json_pack("{s:I,s:I,s:i,s:i,s:i,s:i}", "window_start", (json_int_t)n->window_start,
					     "rights_end", (json_int_t)n->rights_end, "products", (int)n->products,
					     "cards", (int)n->cards, "emms_queued", (int)n->emms_queued, "chunks",
					     (int)n->chunks));
}

kh_err kh__sms_rights_renew(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	struct kh_sms_renewal n;
	struct renew_answer a = {.c = arg, .n = &n};
	struct kh_store *s;
	int done;
	kh_err r;

	if ((r = kh__sms_idem_init(req, KH__SMS_CALLER_OPERATOR, NULL, &a.im)) != KH_OK)
		return r;
	/* a read on this thread's connection: the sweep's own transactions come after */
	if (a.im.on) {
		if ((r = kh__sms_db(a.c, &s)) != KH_OK)
			return r;
		if ((r = kh__sms_idem_begin(s, &a.im, &a.why, &done)) != KH_OK)
			return kh__sms_idem_fail(resp, &a.im, r, &a.why);
		if (done)
			return kh__sms_idem_reply(resp, &a.im);
	}
	if ((r = kh_sms_rights_renew(a.c, &n)) != KH_OK)
		return r;
	return kh__sms_idem_run(req, resp, a.c, renew_answer_tx, &a, &a.im, &a.why, NULL);
}

/* ---- the periodic sweep ---- */

static void *renew_main(void *arg)
{
	struct kh_sms *c = arg;
	struct timespec until;
	kh_err r;

	pthread_mutex_lock(&c->renew.mu);
	while (!c->renew.stop) {
		pthread_mutex_unlock(&c->renew.mu);
		if ((r = kh_sms_rights_renew(c, NULL)) != KH_OK)
			kh_log_warn("sms.rights_renew_failed", "error=%s", kh_err_name(r));
		/* On PostgreSQL the writes leave expired idempotency records to this round. */
		if (!kh_store_group_batches(c->writer) && (r = kh__sms_idem_sweep(c, NULL)) != KH_OK)
			kh_log_warn("sms.idem_sweep_failed", "error=%s", kh_err_name(r));
		pthread_mutex_lock(&c->renew.mu);
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += c->renew.every;
		while (!c->renew.stop && pthread_cond_timedwait(&c->renew.cv, &c->renew.mu, &until) == 0)
			;
	}
	pthread_mutex_unlock(&c->renew.mu);
	return NULL;
}

kh_err kh_sms_renew_start(struct kh_sms *c, unsigned every_s)
{
	if (c == NULL || !c->renew.ok || c->renew.run)
		return KH_ERR_INVAL;
	c->renew.every = every_s ? every_s : KH_SMS_RENEW_EVERY;
	c->renew.stop = 0;
	if (pthread_create(&c->renew.thread, NULL, renew_main, c) != 0)
		return KH_ERR_NOMEM;
	c->renew.run = 1;
	return KH_OK;
}

void kh__sms_renew_stop(struct kh_sms *c)
{
	if (!c->renew.run)
		return;
	pthread_mutex_lock(&c->renew.mu);
	c->renew.stop = 1;
	pthread_cond_signal(&c->renew.cv);
	pthread_mutex_unlock(&c->renew.mu);
	pthread_join(c->renew.thread, NULL);
	c->renew.run = 0;
}
