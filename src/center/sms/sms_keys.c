/*
 * The credit policy and the service keys at the management center. The policy is the
 * credit a new card starts with and the reload amount agreed with subscribers. Service keys seal
 * the ECMs; they are generated here (kh_random), kept in the store (which is why it is 0600),
 * and reach the cards only inside EMMs under each card's Kp: a rotation queues SET KEY for every
 * active card in the transaction that stores the new version. A key is never answered or logged.
 */
#include <stdlib.h>
#include <string.h>

#include "keyhole/buf.h"
#include "keyhole/crypto.h"
#include "keyhole/log.h"
#include "sms_int.h"

/* ---- PUT / GET /v1/credit-policy ---- */

struct policy_tx {
	struct kh_sms *c;
	uint32_t initial, reload;
	struct kh__sms_idem im;
	struct kh__sms_why why;
};

static kh_err policy_tx(struct kh_store *s, void *arg)
{
	struct policy_tx *t = arg;
	int done;
	kh_err r;

	if ((r = kh__sms_idem_begin(s, &t->im, &t->why, &done)) != KH_OK || done)
		return r;
	if ((r = kh_store_credit_policy_set(s, t->initial, t->reload)) != KH_OK)
		return r;
	return kh__sms_idem_answer(s, t->c, &t->im, 200,
				   json_pack("{s:I,s:I}", "initial_credit", (json_int_t)t->initial, "reload_amount",
					     (json_int_t)t->reload));
}

kh_err kh__sms_policy_put(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	struct policy_tx t = {.c = arg};
	json_t *b = kh_http_body(req);
	int64_t initial, reload;

	if (kh__sms_json_int(b, "initial_credit", 0, UINT32_MAX, 1, &initial) != KH_OK ||
	    kh__sms_json_int(b, "reload_amount", 0, UINT32_MAX, 1, &reload) != KH_OK)
		return kh_http_reply_error(resp, KH_ERR_INVAL, "initial_credit and reload_amount: integers, 0 to 4294967295");
	t.initial = (uint32_t)initial;
	t.reload = (uint32_t)reload;
	return kh__sms_idem_run(req, resp, t.c, policy_tx, &t, &t.im, &t.why, NULL);
}

kh_err kh__sms_policy_get(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	struct kh_store *s;
	uint32_t initial, reload;
	kh_err r;

	(void)req;
	if ((r = kh__sms_db(arg, &s)) != KH_OK || (r = kh_store_credit_policy_get(s, &initial, &reload)) != KH_OK)
		return r;
	return kh_http_reply(resp, 200, json_pack("{s:I,s:I}", "initial_credit", (json_int_t)initial, "reload_amount",
						  (json_int_t)reload));
}

/* ---- POST /v1/service-keys/rotate {key_id} ----
 *
 * A new version of the key, then SET KEY to every active card, in chunks of c->lim.bulk_chunk cards
 * (by UA), each chunk one transaction with the job's progress row (store: rotation_jobs). One
 * transaction for every card held the center's writer for seconds at 100,000 cards (and would
 * for minutes at millions): uploads and operator actions now get in between chunks. A rotation
 * that stops half-way (a crash, a failed chunk) is finished by asking to rotate the same id
 * again: the newest version's unfinished job resumes after its last card, and no new version is
 * made. A card assigned meanwhile already gets the new version with its start-up EMMs.
 *
 * The request's Idempotency-Key is looked up in the first transaction (a stored answer is the
 * answer: no new version) and the answer stored in the transaction of the last chunk, so that a
 * retry after a lost answer never makes another version: it gets the first answer, or, when the
 * rotation stopped half-way, resumes it.
 */

struct rotate_tx {
	struct kh_sms *c;
	uint8_t key_id;
	uint32_t version;
	int resumed;  /* the newest version's job was unfinished: carried on */
	unsigned queued; /* this chunk's EMMs */
	struct kh_store_rotation job;
	uint32_t *ua; /* c->lim.bulk_chunk UAs */
	struct kh__sms_idem im;
	struct kh__sms_why why;
};

/* Count distinct ids (the list is ordered by id). */
struct id_count {
	unsigned n;
	int last;
};

static kh_err count_id(void *arg, const struct kh_store_service_key *k)
{
	struct id_count *c = arg;

	if (c->n == 0 || c->last != k->key_id)
		c->n++;
	c->last = k->key_id;
	return KH_OK;
}

/* The job: the newest version's, when unfinished; else a new version and its job. */
static kh_err rotate_start_tx(struct kh_store *s, void *arg)
{
	struct rotate_tx *a = arg;
	uint8_t key[32];
	uint32_t v = 0;
	int done;
	kh_err r;

	a->resumed = 0;
	if ((r = kh__sms_idem_begin(s, &a->im, &a->why, &done)) != KH_OK || done)
		return r;
	r = kh_store_service_key_latest(s, a->key_id, &v);
	if (r == KH_ERR_NOTFOUND) {
		/*
		 * A card holds KH_CAS_STATUS_MAX_KEYS keys, two versions per id, and refuses a whole
		 * EMM that would overflow them (CARD_FULL): more ids than half of that would make
		 * every card refuse the next SET KEY, and a new card its whole first EMM.
		 */
		struct id_count ids = {0, -1};
		if ((r = kh_store_service_key_list(s, count_id, &ids)) != KH_OK)
			return r;
		if (ids.n >= KH_CAS_STATUS_MAX_KEYS / 2)
			return kh__sms_why(&a->why, KH_ERR_DB_CONSTRAINT, "too_many_key_ids",
					   "cards hold two versions of at most 4 service key ids: rotate an existing id");
		v = 0;
	} else if (r != KH_OK) {
		return r;
	} else if ((r = kh_store_rotation_get(s, a->key_id, v, &a->job)) == KH_OK && !a->job.done) {
		a->version = v;
		a->resumed = 1;
		return KH_OK;
	} else if (r != KH_OK && r != KH_ERR_NOTFOUND) {
		return r;
	}
	if (v == UINT32_MAX)
		return KH_ERR_TOO_LARGE;
	a->version = v + 1;
	a->job = (struct kh_store_rotation){.key_id = a->key_id, .version = a->version};
	if ((r = kh_random(key, sizeof key)) == KH_OK && (r = kh_store_service_key_add(s, a->key_id, a->version, key)) == KH_OK)
		r = kh_store_rotation_put(s, &a->job);
	kh_wipe(key, sizeof key);
	return r;
}

/* The rotation is done: its answer (201 for a new version, 200 resumed), stored with the key. */
static kh_err rotate_answer(struct kh_store *s, struct rotate_tx *a)
{
	int done;
	kh_err r;

	/* another request with the key may have finished the job and stored its answer */
	if ((r = kh__sms_idem_begin(s, &a->im, &a->why, &done)) != KH_OK || done)
		return r;
	return kh__sms_idem_answer(s, a->c, &a->im, a->resumed ? 200 : 201,
				   json_pack("{s:i,s:I,s:I,s:b}", "key_id", (int)a->key_id, "version",
					     (json_int_t)a->version, "emms_queued", (json_int_t)a->job.emms, "resumed",
					     a->resumed));
}

/* One chunk: SET KEY to the next active cards after the job's last, and the job moved on. */
static kh_err rotate_chunk_tx(struct kh_store *s, void *arg)
{
	struct rotate_tx *a = arg;
	uint8_t key[32], cmd[48];
	struct kh_wr w;
	size_t n = 0;
	kh_err r;

	a->queued = 0;
	if ((r = kh_store_rotation_get(s, a->key_id, a->version, &a->job)) != KH_OK)
		return r;
	if (a->job.done) /* another request for the same id finished it meanwhile */
		return rotate_answer(s, a);
	if ((r = kh_store_active_cards_after(s, a->job.last_ua, a->c->lim.bulk_chunk, a->ua, &n)) != KH_OK ||
	    (r = kh_store_service_key_get(s, a->key_id, a->version, key)) != KH_OK)
		goto out;
	kh_wr_init(&w, cmd, sizeof cmd);
	if ((r = kh_emm_put_set_key(&w, a->key_id, a->version, key)) != KH_OK)
		goto out;
	for (size_t i = 0; i < n; i++) {
		struct kh__sms_emm e;

		kh__sms_emm_init(&e, a->c, a->ua[i]);
		r = kh__sms_emm_cmd(s, &e, cmd, w.len);
		if (r == KH_OK)
			r = kh__sms_emm_flush(s, &e);
		kh__sms_emm_wipe(&e);
		if (r != KH_OK)
			goto out;
		a->queued += e.queued;
	}
	if (n)
		a->job.last_ua = a->ua[n - 1];
	a->job.emms += a->queued;
	a->job.done = n < a->c->lim.bulk_chunk;
	if ((r = kh_store_rotation_put(s, &a->job)) == KH_OK && a->job.done)
		r = rotate_answer(s, a); /* in the last chunk's transaction */
out:
	kh_wipe(key, sizeof key);
	kh_wipe(cmd, sizeof cmd);
	return r;
}

kh_err kh__sms_keys_rotate(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	struct rotate_tx a = {.c = arg};
	unsigned chunks = 0;
	int64_t id;
	kh_err r;

	if (kh__sms_json_int(kh_http_body(req), "key_id", 0, 255, 1, &id) != KH_OK)
		return kh_http_reply_error(resp, KH_ERR_INVAL, "key_id: an integer from 0 to 255");
	a.key_id = (uint8_t)id;
	if ((r = kh__sms_idem_init(req, KH__SMS_CALLER_OPERATOR, NULL, &a.im)) != KH_OK)
		return r;
	if ((a.ua = calloc(a.c->lim.bulk_chunk, sizeof *a.ua)) == NULL)
		return KH_ERR_NOMEM;
	if ((r = kh__sms_write(a.c, rotate_start_tx, &a)) != KH_OK)
		goto fail;
	/* Each chunk commits on its own: what committed stays, and a retry resumes after it. */
	while (!a.im.replayed) {
		if ((r = kh__sms_write(a.c, rotate_chunk_tx, &a)) != KH_OK)
			goto fail;
		kh__sms_count_emms(a.c, a.queued);
		chunks++;
		if (a.job.done)
			break;
	}
	free(a.ua);
	if (!a.im.replayed)
		kh_log_info("sms.service_key", "key_id=%u version=%u emms=%u chunks=%u resumed=%d", (unsigned)a.key_id,
			    (unsigned)a.version, a.job.emms, chunks, a.resumed);
	return kh__sms_idem_reply(resp, &a.im);
fail:
	free(a.ua);
	return kh__sms_idem_fail(resp, &a.im, r, &a.why);
}

/* ---- GET /v1/service-keys: ids and versions, never a key ---- */

static kh_err add_key(void *arg, const struct kh_store_service_key *k)
{
	json_t *o = json_pack("{s:i,s:I,s:I}", "key_id", (int)k->key_id, "version", (json_int_t)k->version,
			      "created_at", (json_int_t)k->created_at);
	return o && json_array_append_new(arg, o) == 0 ? KH_OK : KH_ERR_NOMEM;
}

kh_err kh__sms_keys_list(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	struct kh_store *s;
	json_t *arr;
	kh_err r;

	(void)req;
	if ((r = kh__sms_db(arg, &s)) != KH_OK)
		return r;
	if ((arr = json_array()) == NULL)
		return KH_ERR_NOMEM;
	if ((r = kh_store_service_key_list(s, add_key, arr)) != KH_OK) {
		json_decref(arr);
		return r;
	}
	return kh_http_reply(resp, 200, json_pack("{s:o}", "service_keys", arr));
}

/*
 * ---- GET /v1/service-keys/material: the headend's (ECMG's) feed, keys in it ----
 *
 * The two newest versions of each id with their bytes, the ones the cards are sent: what
 * `keyhole headend keys import --center` needs to seal ECMs the cards can open. Operator only
 * (behind the token, see sms.c), and the one answer of the center that carries a secret: it must
 * travel over TLS (serve refuses a non-loopback listener without --cert/--key; with
 * --no-operator-auth the operator vouches for who asks). The answer's text is built here, not by
 * jansson, and sent with kh_http_reply_secret: every copy of the keys in this process is wiped
 * (what GnuTLS and the kernel copy on the way out is theirs).
 */
struct material {
	char *text; /* the answer, built here so that every copy of the keys is ours to wipe */
	size_t len, cap;
	unsigned n;
	kh_err err;
};

static kh_err add_material(void *arg, const struct kh_store_service_key *k)
{
	struct material *m = arg;
	char b64[64];
	int w;

	if ((m->err = kh_b64url_encode(k->key, KH_CAS_KEY_LEN, b64, sizeof b64)) != KH_OK)
		return m->err;
	w = snprintf(m->text + m->len, m->cap - m->len, "%s{\"key_id\":%u,\"version\":%u,\"key\":\"%s\"}",
		     m->n ? "," : "", (unsigned)k->key_id, (unsigned)k->version, b64);
	kh_wipe(b64, sizeof b64);
	if (w < 0 || (size_t)w >= m->cap - m->len)
		return m->err = KH_ERR_TOO_LARGE;
	m->len += (size_t)w;
	m->n++;
	return KH_OK;
}

kh_err kh__sms_keys_material(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	static const char head[] = "{\"service_keys\":[", tail[] = "]}";
	struct material m = {0};
	struct kh_store *s;
	kh_err r;

	(void)req;
	if ((r = kh__sms_db(arg, &s)) != KH_OK)
		return r;
	/* two versions of at most a few ids, ~100 bytes each: 8 KiB is plenty (TOO_LARGE if not) */
	m.cap = 8192;
	if ((m.text = malloc(m.cap)) == NULL)
		return KH_ERR_NOMEM;
	memcpy(m.text, head, sizeof head - 1);
	m.len = sizeof head - 1;
	r = kh_store_service_keys_current(s, add_material, &m);
	if (r == KH_OK && m.cap - m.len < sizeof tail)
		r = KH_ERR_TOO_LARGE;
	if (r == KH_OK)
		r = kh_http_resp_header(resp, "Cache-Control", "no-store");
	if (r != KH_OK) {
		kh_wipe(m.text, m.cap);
		free(m.text);
		return r;
	}
	memcpy(m.text + m.len, tail, sizeof tail); /* with its terminator */
	m.len += sizeof tail - 1;
	kh_log_info("sms.service_key_material", "keys=%u", m.n); /* who fetched keys, never which bytes */
	/* wiped by the server once sent (and on every other path) */
	return kh_http_reply_secret(resp, 200, m.text, m.len);
}
