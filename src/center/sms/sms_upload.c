/*
 * The upload session at the management center (seed 001; docs/protocols/upload.md). A decoder
 * opens a session for its current card and gets a fresh nonce; it then sends the card's hello
 * (the nonce signed by the card) and usage blocks: the current card's, and the one its memory M1
 * kept, which may be an older card's. The center:
 *
 *   - checks the hello against the session card's registered certificate (nothing counts
 *     without it);
 *   - separates the blocks by UA, checks each against its own card's certificate and opens it
 *     with that card's Ku; a tampered, cut or foreign block is recorded and skipped, and the
 *     rest of the session still counts;
 *   - records the purchases of the current card's blocks, and of a block of a card this
 *     subscriber replaced (a recovery: the old card is then closed, but only by a block made for
 *     M1 and not older than one already accepted), and invoices each purchase once, whatever
 *     block or session carries it again;
 *   - answers with EMMs for the current card: ACK USAGE for the blocks it now holds, AUTHORISE
 *     EXPORT once no replaced card of the subscriber still awaits recovery, and a credit reload
 *     when something was invoiced (the amount agreed in the credit policy).
 *
 * The endpoints are open (decoders call them), so they are bounded: a session not used within
 * the configured time is refused (session_expired), and a card has at most a configured number
 * of sessions open (one more evicts the oldest unprocessed ones).
 *
 * All of it, with the idempotency record of the answer, is one transaction: the answer is sent
 * only after it is durable, and a retried upload gets the same answer and changes nothing.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keyhole/buf.h"
#include "keyhole/cert.h"
#include "keyhole/crypto.h"
#include "keyhole/usage.h"
#include "sms_int.h"

#define MAX_BLOCKS 8
#define NONCE_LEN 32

/*
 * Answer with the JSON text stored with the idempotency record (taken over: *text is NULL after),
 * marked Idempotent-Replayed when it is a replay. Sent as it is, not parsed and printed again.
 */
static kh_err reply_stored(struct kh_http_resp *resp, int status, char **text, size_t len, int replayed)
{
	kh_err r;

	if (replayed && (r = kh_http_resp_header(resp, "Idempotent-Replayed", "true")) != KH_OK)
		return r;
	r = kh_http_reply_text(resp, status, *text, len);
	*text = NULL;
	return r;
}

/* ---- POST /v1/upload/sessions {ua} (optional Idempotency-Key) ---- */

/* The clock of the upload limits: the configured one (tests), or the system's. */
static int64_t center_now(const struct kh_sms *c)
{
	return c->clock ? c->clock(c->clock_ctx) : (int64_t)time(NULL);
}

/* A session opened at created_at is past its time (its upload is refused) once now is more than
 * the configured time after it: it lives at least upload_ttl seconds, at most one more. */
static int session_expired(const struct kh_sms *c, int64_t created_at)
{
	return center_now(c) - created_at > (int64_t)c->upload_ttl;
}

struct open_tx {
	struct kh_sms *c;
	uint32_t ua;
	uint8_t nonce[NONCE_LEN];
	int64_t id;
	const char *key; /* NULL: no Idempotency-Key */
	uint8_t hash[KH_STORE_IDEM_HASH_LEN];
	char *answer;
	size_t answer_len;
	int replayed;
	struct kh__sms_why why;
};

static kh_err open_answer(const char *sid, const uint8_t *nonce, char **text, size_t *len)
{
	json_t *o = json_pack("{s:s}", "session", sid);

	if (!o || kh_json_set_b64(o, "nonce", nonce, NONCE_LEN) != KH_OK ||
	    !(*text = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS))) {
		json_decref(o);
		return KH_ERR_NOMEM;
	}
	json_decref(o);
	*len = strlen(*text);
	return KH_OK;
}

/*
 * The card must be registered and active, and may have at most upload_max sessions open (not
 * expired, not processed). Its sessions long past their time are deleted on the way. A retry of
 * an opening already answered (same Idempotency-Key and body) gets that answer: a decoder whose
 * reply was lost does not use up its card's sessions.
 */
static kh_err open_tx(struct kh_store *s, void *arg)
{
	struct open_tx *a = arg;
	struct kh_store_card card;
	int64_t now = center_now(a->c);
	uint8_t *stored = NULL;
	unsigned nopen = 0;
	char sid[24];
	size_t n = 0;
	kh_err r;

	free(a->answer); /* a busy retry starts again */
	a->answer = NULL;
	a->replayed = 0;
	a->why = (struct kh__sms_why){0};
	if (a->key) {
		r = kh_store_idem_get(s, a->key, a->hash, &stored, &n);
		if (r == KH_OK) {
			a->answer = (char *)stored;
			a->answer_len = n;
			a->replayed = 1;
			return KH_OK;
		}
		if (r == KH_ERR_IDEM_MISMATCH)
			return kh__sms_why(&a->why, r, NULL, "this Idempotency-Key was used for another request");
		if (r != KH_ERR_NOTFOUND)
			return r;
	}
	if ((r = kh_store_card_get(s, a->ua, &card)) != KH_OK)
		return r == KH_ERR_NOTFOUND ? kh__sms_why(&a->why, r, NULL, "card not registered") : r;
	if (strcmp(card.state, "active") != 0)
		return kh__sms_why(&a->why, KH_ERR_DB_CONSTRAINT, "card_state", "only an active card opens a session");
	/* Expired for a whole further period: an upload to it would now get 404, not session_expired. */
	if ((r = kh_store_upload_purge(s, a->ua, now - 2 * (int64_t)a->c->upload_ttl, NULL)) != KH_OK)
		return r;
	if ((r = kh_store_upload_count_open(s, a->ua, now - (int64_t)a->c->upload_ttl, &nopen)) != KH_OK)
		return r;
	/* At the cap, the oldest unprocessed sessions make room. Refusing instead would let anyone
	 * who knows a UA park the cap's worth of sessions and lock the card's decoder out; now he
	 * must outrun a decoder that uses its session within seconds of opening it. */
	if (nopen >= a->c->upload_max &&
	    (r = kh_store_upload_evict(s, a->ua, a->c->upload_max - 1, NULL)) != KH_OK)
		return r;
	if ((r = kh_store_upload_open(s, a->ua, a->nonce, sizeof a->nonce, now, &a->id)) != KH_OK)
		return r;
	snprintf(sid, sizeof sid, "%lld", (long long)a->id);
	if ((r = open_answer(sid, a->nonce, &a->answer, &a->answer_len)) != KH_OK)
		return r;
	/* In the transaction that opened the session: the session and its answer commit together. */
	return a->key ? kh_store_idem_put(s, a->key, a->hash, (const uint8_t *)a->answer, a->answer_len) : KH_OK;
}

kh_err kh__sms_upload_open(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	struct open_tx a = {.c = arg};
	json_t *body = kh_http_body(req);
	const char *ua;
	char *canon = NULL, *fp = NULL;
	kh_err r;

	ua = json_string_value(json_object_get(body, "ua"));
	if (!ua || kh__sms_parse_ua(ua, &a.ua) != KH_OK)
		return kh_http_reply_error(resp, KH_ERR_INVAL, "ua: 8 hexadecimal digits");
	a.key = kh_http_idempotency_key(req);
	if (a.key && (!*a.key || strlen(a.key) > KH_STORE_IDEM_KEY_MAX))
		return kh_http_reply_error(resp, KH_ERR_INVAL, "an Idempotency-Key has 1 to 128 characters");
	if (a.key) {
		/* The request the key stands for: this body. */
		if (!(canon = json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS)) ||
		    asprintf(&fp, "POST\n/v1/upload/sessions\n%s", canon) < 0) {
			fp = NULL;
			r = KH_ERR_NOMEM;
			goto out;
		}
		if ((r = kh_sha256((const uint8_t *)fp, strlen(fp), a.hash)) != KH_OK)
			goto out;
	}
	if ((r = kh_random(a.nonce, sizeof a.nonce)) != KH_OK)
		goto out;
	/* Committed with whatever other openings and uploads are waiting (group commit). */
	if ((r = kh_store_group_run(a.c->writer, open_tx, &a)) != KH_OK) {
		if (a.why.code || a.why.msg)
			r = kh__sms_fail(resp, r, &a.why);
		goto out;
	}
	r = reply_stored(resp, 201, &a.answer, a.answer_len, a.replayed);
out:
	free(canon);
	free(fp);
	free(a.answer);
	return r;
}

/* ---- POST /v1/upload/sessions/{id} {hello, blocks} (Idempotency-Key) ---- */

struct block_in {
	uint8_t b[KH_USAGE_MAX];
	size_t n;
	int decoded; /* 0: not base64url at all */
	/* What the checks before the transaction found (check_block). */
	int named;                   /* a whole clear header names (ua, block_seq) */
	int version;                 /* another layout (version 1): named in the answer, not recorded */
	struct kh_usage_hdr h;
	enum kh_store_verdict crypto; /* OK, TAMPERED, TRUNCATED, or FOREIGN (no card, bad certificate) */
	struct kh_usage *u;          /* the contents, when OK */
};

struct upload_tx {
	struct kh_sms *c;
	int64_t id;
	const char *key;
	uint8_t hash[KH_STORE_IDEM_HASH_LEN];
	uint8_t hello[KH_HELLO_LEN + 1];
	size_t hello_len;
	uint32_t emm_seq; /* the card's last unique EMM sequence number, as the decoder read it */
	size_t nblocks;
	struct block_in *blocks;
	char *answer; /* JSON text sent, or replayed */
	size_t answer_len;
	int replayed;
	int unchecked; /* the session was processed when precheck looked: no block was checked */
	unsigned queued;
	int64_t invoiced;
	struct kh__sms_why why;
};

/*
 * A card's certified signing key, checked against the operator root, and (ku not NULL) its uplink
 * key Ku. A registered certificate never changes, so both are kept once checked (until the
 * certificate's expiry): an upload's checks then cost the signatures they must, not a certificate
 * check and an HKDF more. Ku is a secret derived from the master the center holds anyway; the
 * table is wiped with the master.
 */
static kh_err card_key(struct kh_store *s, struct kh_sms *c, uint32_t ua, uint8_t pk[static 32], uint8_t *ku)
{
	struct kh__sms_cardkey *slot = &c->keys[ua % (sizeof c->keys / sizeof c->keys[0])];
	uint64_t now = (uint64_t)time(NULL);
	uint8_t der[KH_CERT_MAX], k[32];
	struct kh_cert_info ci;
	size_t n;
	int hit;
	kh_err r;

	pthread_mutex_lock(&c->keys_mu);
	hit = slot->used && slot->ua == ua && now < slot->not_after;
	if (hit) {
		memcpy(pk, slot->pub, 32);
		if (ku)
			memcpy(ku, slot->ku, 32);
	}
	pthread_mutex_unlock(&c->keys_mu);
	if (hit)
		return KH_OK;
	if ((r = kh_store_card_cert(s, ua, der, sizeof der, &n)) != KH_OK)
		return r;
	if ((r = kh_cert_check(der, n, c->root_pk, KH_ROLE_CARD, KH_CERT_KEY_ED25519, now, &ci)) != KH_OK)
		return r;
	if (ci.ua != ua)
		return KH_ERR_CERT;
	if ((r = kh_cas_card_ku(c->master, ua, k)) != KH_OK) {
		kh_wipe(k, sizeof k);
		return r;
	}
	memcpy(pk, ci.pub, 32);
	if (ku)
		memcpy(ku, k, 32);
	pthread_mutex_lock(&c->keys_mu);
	slot->ua = ua;
	slot->used = 1;
	memcpy(slot->pub, ci.pub, 32);
	memcpy(slot->ku, k, 32);
	slot->not_after = ci.not_after;
	pthread_mutex_unlock(&c->keys_mu);
	kh_wipe(k, sizeof k);
	return KH_OK;
}

/*
 * The cryptographic verdict on one block, before any write lock is taken: it depends only on the
 * bytes and on the card's registered certificate, which never changes. Whose block it is, and
 * whether it was seen, is decided inside the transaction (record_block).
 */
static kh_err check_block(struct kh_store *s, struct kh_sms *c, struct block_in *in, const uint8_t *snonce,
			  size_t snlen)
{
	uint8_t pk[32], ku[32];
	kh_err r, rr;

	in->crypto = KH_STORE_BLOCK_TRUNCATED;
	if (!in->decoded)
		return KH_OK;
	r = kh_usage_peek(in->b, in->n, &in->h);
	if (r == KH_ERR_TRUNCATED && in->n >= KH_USAGE_HDR_LEN && in->b[0] == KH_USAGE_VERSION) {
		/* Cut short, but a whole clear header still names it: recorded as truncated. */
		in->h.ua = kh_get_be32(in->b + 1);
		in->h.block_seq = kh_get_be32(in->b + 5);
		in->h.card_time = kh_get_be64(in->b + 9);
		in->named = 1;
		return KH_OK;
	}
	if (r == KH_ERR_VERSION && in->n >= 9) {
		/* The old layout (usage.md: version 1 kept UA and block_seq at these offsets): the
		 * answer names it as refused for its version; nothing is recorded. */
		in->h.ua = kh_get_be32(in->b + 1);
		in->h.block_seq = kh_get_be32(in->b + 5);
		in->version = 1;
		return KH_OK;
	}
	if (r != KH_OK)
		return KH_OK; /* too large, less than a header, unknown flags: nothing names it */
	in->named = 1;
	if ((r = card_key(s, c, in->h.ua, pk, ku)) != KH_OK) {
		in->crypto = KH_STORE_BLOCK_FOREIGN; /* no such card, or its certificate does not check */
		return r == KH_ERR_NOTFOUND || r == KH_ERR_CERT || r == KH_ERR_CERT_EXPIRED || r == KH_ERR_CERT_ROLE
			       ? KH_OK
			       : r;
	}
	if (!(in->u = calloc(1, sizeof *in->u))) {
		kh_wipe(ku, sizeof ku);
		return KH_ERR_NOMEM;
	}
	/* a block bound to a session verifies only with this session's nonce */
	rr = kh_usage_open_bound(ku, pk, in->b, in->n, snonce, snlen, in->u);
	kh_wipe(ku, sizeof ku);
	in->crypto = rr == KH_OK ? KH_STORE_BLOCK_OK : rr == KH_ERR_AUTH ? KH_STORE_BLOCK_TAMPERED
									 : KH_STORE_BLOCK_TRUNCATED;
	return KH_OK;
}

struct session_view {
	struct kh_store_card cur;   /* the session's card */
	int outstanding;            /* replaced cards of the subscriber still awaiting recovery */
	uint32_t max_acked;         /* highest block of the current card now held */
	int to_ack;                 /* one of them carried purchases: the card's log can shrink */
};

static kh_err count_replaced(void *arg, const struct kh_store_card *k)
{
	struct session_view *v = arg;
	if (strcmp(k->state, "replaced") == 0)
		v->outstanding++;
	return KH_OK;
}

/*
 * One block inside the transaction: whose it is, its verdict ("ok", "recovered", "not_m1",
 * "stale", "duplicate", "tampered", "foreign", "truncated", "version") recorded, and its
 * purchases recorded and invoiced.
 *
 * A replaced card is closed as recovered only by a block of it that was made for M1 (flag
 * KH_USAGE_F_M1) and is not older than a block of it the center already accepted. A genuine
 * block of it that fails either test is still recorded and its purchases invoiced (they are the
 * subscriber's real purchases, and invoicing is idempotent), but the card stays outstanding:
 * "not_m1" for a block made for a session (EXPORT P1=0, which a decoder can obtain at any time
 * and keep), "stale" for an M1 block older than one already accepted (a decoder keeping an old
 * copy of M1 instead of its newest).
 */
static kh_err record_block(struct kh_store *s, struct upload_tx *a, struct session_view *v,
			   const struct block_in *in, json_t *out)
{
	struct kh_store_card owner;
	enum kh_store_verdict verdict, prev;
	const char *said;
	int recovery = 0, known = 0, closes = 0;
	uint32_t newest = 0;
	char ua[9];
	json_t *o;
	kh_err r;

	if (in->version) {
		kh__sms_ua_hex(in->h.ua, ua);
		o = json_pack("{s:s,s:I,s:s}", "ua", ua, "block_seq", (json_int_t)in->h.block_seq, "verdict", "version");
		return o && json_array_append_new(out, o) == 0 ? KH_OK : KH_ERR_NOMEM;
	}
	if (!in->named) {
		o = json_pack("{s:s,s:i,s:s}", "ua", "00000000", "block_seq", 0, "verdict", "truncated");
		return o && json_array_append_new(out, o) == 0 ? KH_OK : KH_ERR_NOMEM;
	}
	if (in->h.ua == v->cur.ua) {
		owner = v->cur; /* the session's own card: read once for the whole session */
		known = 1;
	} else if ((r = kh_store_card_get(s, in->h.ua, &owner)) == KH_OK) {
		known = 1;
	} else if (r != KH_ERR_NOTFOUND) {
		return r;
	}
	/* Whose block: the session's card, or one this subscriber's card replaced (a recovery). */
	if (known && in->h.ua == v->cur.ua)
		recovery = 0;
	else if (known && owner.subscriber_id == v->cur.subscriber_id && owner.subscriber_id &&
		 (strcmp(owner.state, "replaced") == 0 ||
		  (strcmp(owner.state, "closed") == 0 && strcmp(owner.closed_reason, "recovered") == 0)))
		recovery = 1;
	else
		known = 0;
	verdict = known ? in->crypto : KH_STORE_BLOCK_FOREIGN;
	/* The newest block of the old card accepted so far, before this one is recorded. */
	if (recovery && verdict == KH_STORE_BLOCK_OK && (r = kh_store_block_max_ok(s, in->h.ua, &newest)) != KH_OK)
		return r;
	r = kh_store_block_seen(s, in->h.ua, in->h.block_seq, verdict, a->id, &prev);
	if (r == KH_ERR_EXISTS) {
		said = "duplicate";
		r = KH_OK;
	} else if (r != KH_OK) {
		return r;
	} else if (verdict != KH_STORE_BLOCK_OK) {
		said = verdict == KH_STORE_BLOCK_TAMPERED ? "tampered" : verdict == KH_STORE_BLOCK_FOREIGN ? "foreign"
													    : "truncated";
	} else {
		said = "ok";
		if (recovery && !(in->h.flags & KH_USAGE_F_M1))
			said = "not_m1";
		else if (recovery && in->h.block_seq < newest)
			said = "stale";
		else if (recovery) {
			said = "recovered";
			closes = 1;
		}
		for (size_t i = 0; i < in->u->npurchases; i++) {
			int inv = 0;
			if ((r = kh_store_purchase_record(s, in->h.ua, in->u->purchases[i].event,
							  in->u->purchases[i].price, (int64_t)in->u->purchases[i].time,
							  in->h.ua, in->h.block_seq, owner.subscriber_id, &inv)) != KH_OK)
				return r;
			a->invoiced += inv;
		}
		if (closes && strcmp(owner.state, "replaced") == 0) {
			strcpy(owner.state, "closed");
			strcpy(owner.closed_reason, "recovered");
			if ((r = kh_store_card_update(s, &owner)) != KH_OK)
				return r;
			v->outstanding--;
		}
	}
	/* The card may let go of what this block carried, and of every block before it. */
	if (verdict == KH_STORE_BLOCK_OK && in->h.ua == v->cur.ua && in->h.block_seq > v->max_acked)
		v->max_acked = in->h.block_seq;
	if (verdict == KH_STORE_BLOCK_OK && in->h.ua == v->cur.ua && in->u && in->u->npurchases)
		v->to_ack = 1;
	kh__sms_ua_hex(in->h.ua, ua);
	o = json_pack("{s:s,s:I,s:s}", "ua", ua, "block_seq", (json_int_t)in->h.block_seq, "verdict", said);
	return o && json_array_append_new(out, o) == 0 ? KH_OK : KH_ERR_NOMEM;
}

/*
 * The card's queued EMMs above the sequence number it reported, oldest first, as base64url
 * sections: every one it has not applied yet, not only this session's. A card applies an EMM
 * only above its last, so handing it a newer one first would make it refuse the older ones.
 */
#define ANSWER_EMMS_MAX 32
struct emm_collect {
	uint32_t above;
	size_t n;
	json_t *arr;
};

static kh_err collect_emm(void *arg, const struct kh_store_emm *e)
{
	struct emm_collect *ec = arg;
	size_t n = kh_b64url_len(e->len) + 1;
	char *b;
	json_t *str;

	if (e->seq <= ec->above)
		return KH_OK;
	ec->n++; /* at most ANSWER_EMMS_MAX: the rest goes next time, or by broadcast */
	if (!(b = malloc(n)))
		return KH_ERR_NOMEM;
	if (kh_b64url_encode(e->section, e->len, b, n) != KH_OK || !(str = json_string(b)) ||
	    json_array_append_new(ec->arr, str) != 0) {
		free(b);
		return KH_ERR_NOMEM;
	}
	free(b);
	return KH_OK;
}

/* The stored answer under the upload's key into a (KH_OK), or why not: KH_ERR_NOTFOUND, or
 * KH_ERR_IDEM_MISMATCH with the reason set. */
static kh_err replay(struct kh_store *s, struct upload_tx *a)
{
	uint8_t *stored = NULL;
	size_t n = 0;
	kh_err r = kh_store_idem_get(s, a->key, a->hash, &stored, &n);

	if (r == KH_OK) {
		free(a->answer);
		a->answer = (char *)stored;
		a->answer_len = n;
		a->replayed = 1;
	} else if (r == KH_ERR_IDEM_MISMATCH) {
		kh__sms_why(&a->why, r, NULL, "this Idempotency-Key was used for another request");
	}
	return r;
}

/* Whether a block of the upload names a card other than the session's (a possible recovery). */
static int other_cards(const struct upload_tx *a, uint32_t sua)
{
	for (size_t i = 0; i < a->nblocks; i++)
		if (a->blocks[i].named && a->blocks[i].h.ua != sua)
			return 1;
	return 0;
}

static kh_err upload_tx(struct kh_store *s, void *arg)
{
	struct upload_tx *a = arg;
	struct session_view v;
	struct kh__sms_emm e;
	struct emm_collect ec = {0};
	uint8_t cmd[16];
	uint32_t sua, amount = 0, reload_id;
	int64_t created, closed_at;
	struct kh_wr w;
	json_t *blocks = NULL, *o = NULL;
	char sid[24];
	kh_err r;

	kh__sms_emm_init(&e, a->c, 0);
	free(a->answer); /* a busy retry starts again */
	a->answer = NULL;
	a->replayed = 0;
	a->queued = 0;
	a->invoiced = 0;
	a->why = (struct kh__sms_why){0};
	/* The idempotency record was looked up before the transaction; it is read again here only
	 * if the session turns out to be processed (a retry that raced its first try). */
	if ((r = kh_store_upload_state(s, a->id, &sua, &created, &closed_at)) != KH_OK)
		return r == KH_ERR_NOTFOUND ? kh__sms_why(&a->why, r, NULL, "no such upload session") : r;
	if (closed_at) {
		if ((r = replay(s, a)) != KH_ERR_NOTFOUND)
			return r;
		return kh__sms_why(&a->why, KH_ERR_DB_CONSTRAINT, "session_closed",
				   "this session's upload was processed; open a new session");
	}
	if (a->unchecked)
		return KH_ERR_INTERNAL; /* a processed session is never open again */
	if (session_expired(a->c, created))
		return kh__sms_why(&a->why, KH_ERR_DB_CONSTRAINT, "session_expired",
				   "this session was not used in time; open a new session");
	memset(&v, 0, sizeof v);
	if ((r = kh_store_card_get(s, sua, &v.cur)) != KH_OK)
		return r;
	/* The hello and the blocks' signatures were checked before this transaction (precheck). The
	 * subscriber's replaced cards matter only to authorise export or to recover a block of one. */
	if (v.cur.subscriber_id && (!v.cur.export_authorised || other_cards(a, sua)) &&
	    (r = kh_store_cards_of(s, v.cur.subscriber_id, count_replaced, &v)) != KH_OK)
		return r;
	if (!(blocks = json_array()))
		return KH_ERR_NOMEM;
	for (size_t i = 0; i < a->nblocks; i++)
		if ((r = record_block(s, a, &v, &a->blocks[i], blocks)) != KH_OK)
			goto out;

	kh__sms_emm_init(&e, a->c, sua);
	kh_wr_init(&w, cmd, sizeof cmd);
	/* ACK USAGE only lets purchases leave the card's log: none carried, nothing to send. */
	if (v.max_acked && v.to_ack)
		kh_emm_put_ack_usage(&w, v.max_acked);
	if (!v.cur.export_authorised && v.outstanding == 0 && strcmp(v.cur.state, "active") == 0) {
		kh_emm_put_auth_export(&w, 1);
		v.cur.export_authorised = 1;
		if ((r = kh_store_card_update(s, &v.cur)) != KH_OK)
			goto out;
	}
	if ((r = w.err) != KH_OK || (w.len && (r = kh__sms_emm_cmd(s, &e, cmd, w.len)) != KH_OK))
		goto out;
	if (a->invoiced && strcmp(v.cur.state, "active") == 0) {
		if ((r = kh_store_credit_policy_get(s, NULL, &amount)) != KH_OK)
			goto out;
		if (amount) {
			if ((r = kh_store_card_next_reload(s, sua, &reload_id)) != KH_OK)
				goto out;
			kh_wr_init(&w, cmd, sizeof cmd);
			if ((r = kh_emm_put_add_credit(&w, amount, reload_id)) != KH_OK ||
			    (r = kh__sms_emm_cmd(s, &e, cmd, w.len)) != KH_OK)
				goto out;
		}
	}
	if ((r = kh__sms_emm_flush(s, &e)) != KH_OK)
		goto out;
	a->queued = e.queued;
	if ((r = kh_store_upload_close(s, a->id)) != KH_OK)
		goto out;
	if (!(ec.arr = json_array())) {
		r = KH_ERR_NOMEM;
		goto out;
	}
	ec.above = a->emm_seq;
	if ((r = kh_store_emm_fetch_addr_seq(s, KH_EMM_UNIQUE, sua, a->emm_seq, ANSWER_EMMS_MAX, collect_emm, &ec)) !=
	    KH_OK)
		goto out;
	snprintf(sid, sizeof sid, "%lld", (long long)a->id);
	o = json_pack("{s:s,s:O,s:O,s:I,s:b}", "session", sid, "blocks", blocks, "emms", ec.arr, "invoiced",
		      (json_int_t)a->invoiced, "export_authorised", v.cur.export_authorised);
	if (!o || !(a->answer = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS))) {
		r = KH_ERR_NOMEM;
		goto out;
	}
	a->answer_len = strlen(a->answer);
	/* In the transaction that made the changes: the answer and what it says commit together. A
	 * key taken meanwhile (by another request) undoes this one: it gets that key's verdict. */
	r = kh_store_idem_put(s, a->key, a->hash, (const uint8_t *)a->answer, a->answer_len);
	if (r == KH_ERR_EXISTS) {
		r = replay(s, a);
		if (r == KH_OK) /* the same request answered meanwhile: its answer, none of this */
			r = KH_ERR_EXISTS;
	}
out:
	kh__sms_emm_wipe(&e);
	json_decref(o);
	json_decref(blocks);
	json_decref(ec.arr);
	return r;
}

/*
 * Before the transaction: the session's card answered this session's nonce (its hello), and
 * each block's signature and tag, against the certificates registered for the cards they name.
 * Reads only; the session and the certificates it reads never change once written.
 */
static kh_err precheck(struct kh_store *s, struct upload_tx *a)
{
	uint8_t nonce[64], pk[32];
	struct kh_usage_hdr hh;
	uint32_t sua;
	int64_t closed_at;
	size_t nlen;
	kh_err r;

	if ((r = kh_store_upload_get(s, a->id, &sua, nonce, sizeof nonce, &nlen, &closed_at)) != KH_OK)
		return r == KH_ERR_NOTFOUND ? kh__sms_why(&a->why, r, NULL, "no such upload session") : r;
	if (closed_at) {
		/* Processed already, for good: the transaction answers a retry from its record, or
		 * refuses; it reads no block, so there is nothing to check. */
		a->unchecked = 1;
		return KH_OK;
	}
	if ((r = card_key(s, a->c, sua, pk, NULL)) != KH_OK)
		return kh__sms_why(&a->why, r, NULL, "the session's card certificate does not check");
	if (a->hello_len &&
	    (kh_hello_verify(pk, nonce, nlen, a->hello, a->hello_len, &hh) != KH_OK || hh.ua != sua))
		return kh__sms_why(&a->why, KH_ERR_AUTH, "hello", "the hello is not the session card's answer to its nonce");
	for (size_t i = 0; i < a->nblocks; i++)
		if ((r = check_block(s, a->c, &a->blocks[i], nonce, nlen)) != KH_OK)
			return r;
	if (a->hello_len)
		return KH_OK;
	/* No separate hello: a block of the session's card bound to this session's nonce is the
	 * card's answer to it (usage.h, KH_USAGE_F_SESSION), and one signature fewer to check. */
	for (size_t i = 0; i < a->nblocks; i++) {
		const struct block_in *in = &a->blocks[i];
		if (in->named && in->h.ua == sua && (in->h.flags & KH_USAGE_F_SESSION) && in->crypto == KH_STORE_BLOCK_OK)
			return KH_OK;
	}
	return kh__sms_why(&a->why, KH_ERR_AUTH, "hello",
			   "neither a hello nor a block of the session's card bound to its nonce answers it");
}

kh_err kh__sms_upload(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	struct upload_tx a = {.c = arg};
	json_t *body = kh_http_body(req), *arr, *v;
	struct kh_store *s;
	char *canon = NULL, *fp = NULL;
	size_t i;
	kh_err r;

	if (kh__sms_parse_id(kh_http_param(req, "id"), &a.id) != KH_OK)
		return kh_http_reply_error(resp, KH_ERR_INVAL, "a session id is a positive integer");
	a.key = kh_http_idempotency_key(req);
	if (!a.key || strlen(a.key) > KH_STORE_IDEM_KEY_MAX)
		return kh_http_reply_error(resp, KH_ERR_INVAL, "an upload needs an Idempotency-Key of 1 to 128 characters");
	arr = json_object_get(body, "blocks");
	if (!json_is_array(arr) || json_array_size(arr) > MAX_BLOCKS)
		return kh_http_reply_error(resp, KH_ERR_INVAL, "blocks: an array of at most 8 base64url blocks");
	/* Optional: a block bound to the session (usage.h) answers the nonce as well. */
	r = kh_json_get_b64(body, "hello", a.hello, sizeof a.hello, &a.hello_len, 0);
	if (r == KH_ERR_NOTFOUND || (r == KH_OK && a.hello_len == 0))
		a.hello_len = 0;
	else if (r != KH_OK)
		return kh_http_reply_error(resp, KH_ERR_INVAL, "hello: the card's hello, base64url");
	{
		/* Optional; without it every queued EMM of the card comes back (the card skips those it
		 * has, as replays). The decoder's word is enough: it can only cost itself EMMs. */
		int64_t seq = 0;
		kh_err e = kh__sms_json_int(body, "emm_seq", 0, UINT32_MAX, 0, &seq);
		if (e != KH_OK && e != KH_ERR_NOTFOUND)
			return kh_http_reply_error(resp, KH_ERR_INVAL, "emm_seq: the card's last EMM sequence number");
		a.emm_seq = (uint32_t)seq;
	}
	if (json_array_size(arr) && !(a.blocks = calloc(json_array_size(arr), sizeof *a.blocks)))
		return KH_ERR_NOMEM;
	json_array_foreach(arr, i, v) {
		const char *str = json_string_value(v);
		/* Not OK until checked (OK is 0, calloc's value): a block never looked at is refused. */
		a.blocks[i].crypto = KH_STORE_BLOCK_TRUNCATED;
		/* A block that is not base64url is still an answer line ("truncated"), not a 400. */
		a.blocks[i].decoded = str && kh_b64url_decode(str, strlen(str), a.blocks[i].b, sizeof a.blocks[i].b,
							       &a.blocks[i].n) == KH_OK;
	}
	a.nblocks = json_array_size(arr);
	/* The request the key stands for: this session and this body. */
	if (!(canon = json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS)) ||
	    asprintf(&fp, "POST\n/v1/upload/sessions/%lld\n%s", (long long)a.id, canon) < 0) {
		fp = NULL;
		r = KH_ERR_NOMEM;
		goto out;
	}
	if ((r = kh_sha256((const uint8_t *)fp, strlen(fp), a.hash)) != KH_OK || (r = kh__sms_db(a.c, &s)) != KH_OK)
		goto out;
	/* The signature checks first, with no write lock held: uploads then queue on the lock only
	 * for their SQL, not for their cryptography. A retry of an upload already answered finds its
	 * session processed: it skips the checks, and the transaction answers it from the
	 * idempotency record, whatever has changed since (an expired certificate, say). */
	if ((r = precheck(s, &a)) != KH_OK) {
		if (a.why.code || a.why.msg)
			r = kh__sms_fail(resp, r, &a.why);
		goto out;
	}
	/* Committed with whatever other uploads are waiting, in one transaction and one fsync. */
	r = kh_store_group_run(a.c->writer, upload_tx, &a);
	if (r == KH_ERR_EXISTS && a.replayed)
		goto answer; /* answered meanwhile under the same key: that answer, this one undone */
	if (r != KH_OK) {
		if (a.why.code || a.why.msg)
			r = kh__sms_fail(resp, r, &a.why);
		goto out;
	}
answer:
	if (!a.replayed) {
		kh__sms_count_emms(a.c, a.queued);
		kh__sms_count_blocks(a.c, (unsigned)a.nblocks);
	}
	r = reply_stored(resp, 200, &a.answer, a.answer_len, a.replayed);
out:
	free(canon);
	free(fp);
	free(a.answer);
	for (i = 0; a.blocks && i < a.nblocks; i++) {
		if (a.blocks[i].u)
			kh_wipe(a.blocks[i].u, sizeof *a.blocks[i].u);
		free(a.blocks[i].u);
	}
	if (a.blocks)
		kh_wipe(a.blocks, a.nblocks * sizeof *a.blocks);
	free(a.blocks);
	return r;
}
