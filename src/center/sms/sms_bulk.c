/*
 * Subscribing a product to many subscribers in one operator request ("EMM generation
 * for 100 000 cards"): POST /v1/products/{id}/subscriptions with {"start", "end"} and either
 * "subscribers": [ids] or "all": true. Each subscriber gets the subscription (a renewal
 * replaces it, as in POST /v1/subscribers/{id}/subscriptions) and its active card one ENTITLE
 * EMM with the card's next sequence number, in the transaction that records the subscription.
 *
 * One transaction for 100 000 cards would hold SQLite's write lock for seconds, past every other
 * writer's busy timeout (docs/performance.md), so the job walks its subscribers by ascending id
 * and commits every c->lim.bulk_chunk of them. Each chunk's transaction also moves the job's
 * progress row (store: bulk_jobs, under the request's Idempotency-Key) to the last id it did:
 * after a crash or a lost reply, the same request with the same key resumes after the last
 * committed chunk and no subscriber is done twice. The last chunk stores the answer with the
 * idempotency machinery, so a retry of a finished job replays it. Design and choices (the set
 * "all" stands for, the 32-rights cap, unknown ids): docs/internals/sms.md.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyhole/buf.h"
#include "keyhole/crypto.h"
#include "sms_int.h"

/* A list longer than this is refused: the request body and the answer stay small. */
#define BULK_IDS_MAX 10000

struct bulk {
	struct kh_sms *c;
	char key[KH__SMS_IDEM_KEY_LEN]; /* scoped (kh__sms_idem_key); also the job's key */
	uint8_t hash[KH_STORE_IDEM_HASH_LEN];
	uint32_t product;
	int64_t start, end;
	int all;
	int64_t *ids; /* the list form: sorted, without repeats */
	size_t nids;
	unsigned chunk;
	/* one chunk's targets, read before anything is written (chunk + 1: "is there more?") */
	struct kh_store_bulk_target *t;
	size_t nt;
	/* what the transaction that last ran did (reset when it runs again) */
	unsigned queued;
	int done, replayed;
	char *answer; /* the JSON text stored with the idempotency key */
	size_t answer_len;
	struct kh__sms_why why;
};

static kh_err collect(void *arg, const struct kh_store_bulk_target *t)
{
	struct bulk *b = arg;

	if (b->nt > b->chunk)
		return KH_ERR_INTERNAL; /* the store gave more than the limit asked */
	b->t[b->nt++] = *t;
	return KH_OK;
}

/* A new job: the product and the listed subscribers must exist, checked before any write. */
static kh_err job_new(struct kh_store *s, struct bulk *b, struct kh_store_bulk_job *job)
{
	kh_err r;

	if ((r = kh_store_product_exists(s, b->product)) != KH_OK)
		return r == KH_ERR_NOTFOUND ? kh__sms_why(&b->why, r, "unknown_product", "product not found") : r;
	memset(job, 0, sizeof *job);
	job->product_id = b->product;
	job->start = b->start;
	job->end = b->end;
	job->all = b->all;
	if (b->all)
		return kh_store_subscriber_max_id(s, &job->max_subscriber_id);
	for (size_t i = 0; i < b->nids; i++) {
		int64_t closed = 0;
		if ((r = kh_store_subscriber_closed(s, b->ids[i], &closed)) != KH_OK)
			return r == KH_ERR_NOTFOUND ? kh__sms_why(&b->why, r, "unknown_subscriber",
								  "a listed subscriber does not exist; nothing was done")
						    : r;
		if (closed)
			return kh__sms_why(&b->why, KH_ERR_DB_CONSTRAINT, "subscriber_closed",
					   "a listed subscriber is closed; nothing was done");
	}
	job->max_subscriber_id = b->ids[b->nids - 1];
	return KH_OK;
}

/* This chunk's subscribers into b->t; *more when some are left for the next chunk. */
static kh_err targets(struct kh_store *s, struct bulk *b, const struct kh_store_bulk_job *job, int *more)
{
	size_t i = 0;
	kh_err r;

	b->nt = 0;
	if (b->all) {
		r = kh_store_bulk_targets_active(s, b->product, job->last_subscriber_id, job->max_subscriber_id,
						 b->chunk + 1, collect, b);
		if (r != KH_OK)
			return r;
		*more = b->nt > b->chunk;
		if (*more)
			b->nt = b->chunk;
		return KH_OK;
	}
	while (i < b->nids && b->ids[i] <= job->last_subscriber_id)
		i++;
	for (; i < b->nids && b->nt < b->chunk; i++)
		if ((r = kh_store_bulk_target(s, b->ids[i], b->product, &b->t[b->nt++])) != KH_OK)
			return r; /* subscribers are never deleted: checked when the job began */
	*more = i < b->nids;
	return KH_OK;
}

json_t *kh__sms_bulk_json(const struct kh_store_bulk_job *job)
{
	return json_pack("{s:I,s:I,s:I,s:I,s:I}", "product", (json_int_t)job->product_id, "subscribers",
			 (json_int_t)job->subscribers, "emms_queued", (json_int_t)job->emms_queued, "skipped",
			 (json_int_t)job->skipped, "chunks", (json_int_t)job->chunks);
}

static kh_err answer_of(struct bulk *b, const struct kh_store_bulk_job *job)
{
	json_t *o = kh__sms_bulk_json(job);
	if (o == NULL)
		return KH_ERR_NOMEM;
	b->answer = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(o);
	if (b->answer == NULL)
		return KH_ERR_NOMEM;
	b->answer_len = strlen(b->answer);
	return KH_OK;
}

/* One subscriber: the right, and the ENTITLE for the active card. */
static kh_err one(struct kh_store *s, struct bulk *b, const struct kh_store_bulk_target *t,
		  struct kh_store_bulk_job *job)
{
	struct kh_store_subscription u = {t->subscriber_id, b->product, b->start, b->end};
	struct kh__sms_emm e;
	uint8_t cmd[32];
	struct kh_wr w;
	kh_err r;

	/* A card holds KH_CAS_STATUS_MAX_RIGHTS rights and refuses a whole EMM beyond them: a
	 * subscriber at the cap is left as it was and counted, the job goes on. So is one closed
	 * since the job began (a closed subscriber takes no subscription). */
	if (t->closed || (!t->has_product && t->subscriptions >= KH_CAS_STATUS_MAX_RIGHTS)) {
		job->skipped++;
		return KH_OK;
	}
	if ((r = kh_store_subscription_put(s, &u)) != KH_OK)
		return r;
	job->subscribers++;
	if (t->ua == 0)
		return KH_OK; /* the list form: the card gets its rights when it is assigned */
	kh__sms_emm_init(&e, b->c, t->ua);
	kh_wr_init(&w, cmd, sizeof cmd);
	if ((r = kh_emm_put_entitle(&w, b->product, (uint64_t)b->start,
				    (uint64_t)kh__sms_rights_end(b->c, kh__sms_now(b->c), b->start, b->end))) == KH_OK &&
	    (r = kh__sms_emm_cmd(s, &e, cmd, w.len)) == KH_OK)
		r = kh__sms_emm_flush(s, &e);
	kh__sms_emm_wipe(&e);
	if (r != KH_OK)
		return r;
	job->emms_queued += e.queued;
	b->queued += e.queued;
	return KH_OK;
}

/* One chunk: resume the job where its last commit left it, do up to b->chunk subscribers. */
static kh_err chunk_tx(struct kh_store *s, void *arg)
{
	struct bulk *b = arg;
	struct kh_store_bulk_job job;
	uint8_t *stored = NULL;
	size_t n = 0;
	int more = 0;
	kh_err r;

	free(b->answer); /* a busy retry starts again */
	b->answer = NULL;
	b->queued = 0;
	b->done = b->replayed = 0;
	b->why = (struct kh__sms_why){0};
	r = kh_store_idem_get(s, b->key, b->hash, &stored, &n);
	if (r == KH_OK) {
		b->answer = (char *)stored;
		b->answer_len = n;
		b->done = b->replayed = 1;
		return KH_OK;
	}
	if (r == KH_ERR_IDEM_MISMATCH)
		return kh__sms_why(&b->why, r, NULL, "this Idempotency-Key was used for another request");
	if (r != KH_ERR_NOTFOUND)
		return r;
	r = kh_store_bulk_job_get(s, b->key, b->hash, &job);
	if (r == KH_ERR_IDEM_MISMATCH)
		return kh__sms_why(&b->why, r, NULL, "this Idempotency-Key was used for another request");
	if (r == KH_ERR_NOTFOUND)
		r = job_new(s, b, &job);
	if (r != KH_OK)
		return r;
	if (job.done) {
		/* Finished, and its answer's record purged (older than the idempotency horizon) while the
		 * job's row was not yet: the job's own counts give that answer again. */
		b->done = b->replayed = 1;
		return answer_of(b, &job);
	}
	if ((r = targets(s, b, &job, &more)) != KH_OK)
		return r;
	for (size_t i = 0; i < b->nt; i++)
		if ((r = one(s, b, &b->t[i], &job)) != KH_OK)
			return r;
	if (b->nt)
		job.last_subscriber_id = b->t[b->nt - 1].subscriber_id;
	if (!more)
		job.last_subscriber_id = job.max_subscriber_id;
	job.chunks++;
	job.done = !more;
	if ((r = kh_store_bulk_job_put(s, b->key, b->hash, &job)) != KH_OK)
		return r;
	if (!job.done)
		return KH_OK;
	b->done = 1;
	/* In the last chunk's transaction: the job's end and its answer commit together. */
	if ((r = answer_of(b, &job)) != KH_OK)
		return r;
	return kh__sms_idem_put(s, b->c, b->key, b->hash, b->answer, b->answer_len);
}

static int cmp_id(const void *x, const void *y)
{
	int64_t a = *(const int64_t *)x, c = *(const int64_t *)y;
	return (a > c) - (a < c);
}

/* The body's subscriber set: "all": true, or a list of 1..BULK_IDS_MAX positive ids. */
static kh_err parse_set(const json_t *body, struct bulk *b, const char **msg)
{
	const json_t *all = json_object_get(body, "all"), *arr = json_object_get(body, "subscribers"), *v;
	size_t i, k;

	*msg = "give either \"all\": true or \"subscribers\": [ids], not both";
	if ((all == NULL) == (arr == NULL))
		return KH_ERR_INVAL;
	if (all) {
		if (!json_is_true(all)) {
			*msg = "all: only true is meaningful (or list the subscribers)";
			return KH_ERR_INVAL;
		}
		b->all = 1;
		return KH_OK;
	}
	*msg = "subscribers: an array of 1 to 10000 positive subscriber ids";
	if (!json_is_array(arr) || json_array_size(arr) == 0 || json_array_size(arr) > BULK_IDS_MAX)
		return KH_ERR_INVAL;
	if ((b->ids = calloc(json_array_size(arr), sizeof *b->ids)) == NULL)
		return KH_ERR_NOMEM;
	json_array_foreach(arr, i, v) {
		if (!json_is_integer(v) || json_integer_value(v) < 1)
			return KH_ERR_INVAL;
		b->ids[i] = json_integer_value(v);
	}
	qsort(b->ids, json_array_size(arr), sizeof *b->ids, cmp_id);
	for (i = 0, k = 0; i < json_array_size(arr); i++)
		if (k == 0 || b->ids[i] != b->ids[k - 1])
			b->ids[k++] = b->ids[i];
	b->nids = k;
	return KH_OK;
}

/*
 * The body as the request's fingerprint sees it: compact, keys sorted, and "subscribers" replaced
 * by the set parse_set made of it (ascending, each id once). *out is malloc'd.
 */
static kh_err canonical(const json_t *body, const struct bulk *b, char **out)
{
	json_t *copy = json_deep_copy(body), *ids;
	kh_err r = KH_ERR_NOMEM;

	*out = NULL;
	if (copy == NULL)
		return KH_ERR_NOMEM;
	if (!b->all) {
		if ((ids = json_array()) == NULL)
			goto out;
		for (size_t i = 0; i < b->nids; i++)
			if (json_array_append_new(ids, json_integer(b->ids[i])) != 0) {
				json_decref(ids);
				goto out;
			}
		if (json_object_set_new(copy, "subscribers", ids) != 0)
			goto out;
	}
	if ((*out = json_dumps(copy, JSON_COMPACT | JSON_SORT_KEYS)) != NULL)
		r = KH_OK;
out:
	json_decref(copy);
	return r;
}

/* POST /v1/products/{id}/subscriptions {start, end, all | subscribers} (Idempotency-Key) */
kh_err kh__sms_bulk_subscribe(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	struct bulk b = {.c = arg};
	json_t *body = kh_http_body(req), *ans;
	const char *p = kh_http_param(req, "id"), *msg = NULL, *key;
	char *canon = NULL, *fp = NULL, *end;
	unsigned long long v;
	json_error_t jerr;
	kh_err r;

	if (p == NULL || *p < '0' || *p > '9' || (v = strtoull(p, &end, 10), *end) || v > UINT32_MAX)
		return kh_http_reply_error(resp, KH_ERR_INVAL, "a product id is an integer from 0 to 4294967295");
	b.product = (uint32_t)v;
	b.chunk = b.c->lim.bulk_chunk;
	key = kh_http_idempotency_key(req);
	if (key == NULL)
		return kh_http_reply_error(resp, KH_ERR_INVAL, "a bulk subscription needs an Idempotency-Key header");
	if ((r = kh__sms_idem_key(req, KH__SMS_CALLER_OPERATOR, b.key)) != KH_OK)
		return r;
	if (!json_is_object(body) || kh__sms_json_int(body, "start", 0, INT64_MAX / 2, 1, &b.start) != KH_OK ||
	    kh__sms_json_int(body, "end", 0, INT64_MAX / 2, 1, &b.end) != KH_OK || b.start >= b.end)
		return kh_http_reply_error(resp, KH_ERR_INVAL, "start and end (Unix seconds, start < end) are required");
	if ((r = parse_set(body, &b, &msg)) != KH_OK) {
		if (r == KH_ERR_INVAL)
			r = kh_http_reply_error(resp, r, msg);
		goto out;
	}
	/* The request the key stands for: this product and what the body asks, canonically: the
	 * subscriber list as the set the job walks (sorted, without repeats), so [2,1] and [1,2] are
	 * one request. */
	if ((r = canonical(body, &b, &canon)) != KH_OK ||
	    asprintf(&fp, "POST\n/v1/products/%u/subscriptions\n%s", b.product, canon) < 0) {
		fp = NULL;
		if (r == KH_OK)
			r = KH_ERR_NOMEM;
		goto out;
	}
	if ((r = kh_sha256((const uint8_t *)fp, strlen(fp), b.hash)) != KH_OK)
		goto out;
	if ((b.t = calloc((size_t)b.chunk + 1, sizeof *b.t)) == NULL) {
		r = KH_ERR_NOMEM;
		goto out;
	}
	/* One transaction per chunk; the answer comes once the last one has committed. A failed
	 * chunk leaves the committed ones in place: the same request resumes after them. */
	do {
		if ((r = kh__sms_write(b.c, chunk_tx, &b)) != KH_OK) {
			if (b.why.code || b.why.msg)
				r = kh__sms_fail(resp, r, &b.why);
			goto out;
		}
		kh__sms_count_emms(b.c, b.queued);
	} while (!b.done);
	if (!(ans = json_loadb(b.answer, b.answer_len, 0, &jerr))) {
		r = KH_ERR_INTERNAL;
		goto out;
	}
	if (b.replayed && (r = kh_http_resp_header(resp, "Idempotent-Replayed", "true")) != KH_OK) {
		json_decref(ans);
		goto out;
	}
	r = kh_http_reply(resp, b.replayed ? 200 : 201, ans);
out:
	free(canon);
	free(fp);
	free(b.answer);
	free(b.ids);
	free(b.t);
	return r;
}
