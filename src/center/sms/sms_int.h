/*
 * Inside the management center (src/center/sms/): the center object, each HTTP thread's store
 * connection, the EMM batcher every action queues through, and the small JSON and path helpers
 * the endpoint files share. See docs/internals/sms.md.
 */
#ifndef KH_SMS_INT_H
#define KH_SMS_INT_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "keyhole/cert.h"
#include "keyhole/cas.h"
#include "keyhole/http.h"
#include "keyhole/sms.h"
#include "keyhole/store.h"
#include "center/pool.h"

/* The center's key material (from the authority; the secret ones wiped by kh_sms_free). */
struct kh__sms_keys {
	uint8_t master[32];      /* secret: every card's Kp and Ku derive from it */
	uint8_t session_key[32]; /* secret: the upload sessions' MAC key, derived from the master */
	uint8_t root_pk[32];
	/* The ECM and EMM signers' certificates (public), for SET SIGNER in a card's first EMMs. */
	uint8_t signer_der[2][KH_CERT_MAX];
	size_t signer_len[2];
};

/* The operator gate: the token's hash and the routes behind it (sms.c). */
struct kh__sms_gate {
	uint8_t token_hash[32]; /* SHA-256 of the operator token */
	int token_set;
	struct kh__sms_op {
		kh_http_handler fn;
		struct kh_sms *c;
	} ops[64];
};

/* Limits and the clock (kh_sms_config, defaults applied). */
struct kh__sms_limits {
	unsigned bulk_chunk; /* subscribers per bulk-subscription transaction (sms_bulk.c) */
	unsigned upload_ttl; /* an upload session unused this long (seconds) is refused */
	unsigned idem_ttl;   /* how long an idempotency record is kept at least (seconds) */
	int64_t rights_ttl;  /* a card's rights reach at most this far ahead (sms_rights.c) */
	int64_t (*clock)(void *ctx);
	void *clock_ctx;
};

/* The rights renewal thread (sms_rights.c). */
struct kh__sms_renewer {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int ok;   /* mu and cv initialised */
	int run;  /* the thread runs */
	int stop; /* asked to stop (mu) */
	unsigned every;
	pthread_t thread;
};

/* The center's counters in /metrics. */
struct kh__sms_counters {
	struct kh_metric *emms_queued;
	struct kh_metric *blocks_ingested;
	struct kh_metric *price_mismatches; /* purchases invoiced at the catalogue's price, not the block's */
	struct kh_metric *unknown_events;   /* purchases of an event the catalogue does not list */
	struct kh_metric *clone_alarms;     /* a second, different block under a known (UA, block_seq) */
};

/*
 * Cards' checked signing keys (sms_upload.c): a certificate is checked against the root once and
 * its key kept until its expiry, under the UA and the certificate's hash (another center on the
 * database may register the UA again with another certificate). Direct-mapped by UA.
 */
struct kh__sms_keycache {
	pthread_mutex_t mu;
	int mu_ok;
	struct kh__sms_cardkey {
		uint32_t ua;
		uint8_t used;
		uint8_t cert_hash[32]; /* SHA-256 of the certificate the key came from */
		uint8_t pub[32];
		uint8_t ku[32]; /* secret: the card's uplink key, derived from the master (wiped by kh_sms_free) */
		uint64_t not_after;
	} slot[1024];
	/* Moved by kh__sms_card_forget (mu): a key checked before it is not kept after it. */
	uint64_t gen;
};

/* The management center: its parts, each with one job. */
struct kh_sms {
	struct kh__pool pool;
	/*
	 * The writer (group commit, include/keyhole/store.h): every write of the center, from every
	 * HTTP thread, shares its transactions and their fsync.
	 */
	struct kh_store_group *writer;
	struct kh__sms_keys k;
	struct kh__sms_gate gate;
	struct kh__sms_limits lim;
	struct kh__sms_renewer renew;
	struct kh__sms_counters n;
	struct kh__sms_keycache cards;
};

/*
 * Run a write transaction and return once it is durable. On SQLite through the center's writer
 * (group commit): fn runs on the writer's connection, with whatever other writes are waiting, so
 * the center's writes never contend for SQLite's write lock (whose busy handler sleeps in steps
 * of milliseconds) but share commits instead. On a backend whose group does not batch
 * (PostgreSQL) with kh_store_run_tx on the calling thread's own pooled connection: the server
 * commits many connections at once, and one connection would serialise every writer.
 */
KH_WARN_UNUSED kh_err kh__sms_write(struct kh_sms *c, kh_store_tx_fn fn, void *arg);

/* This thread's store connection (opened on first use): kh__pool_get of the center's pool. */
KH_WARN_UNUSED kh_err kh__sms_db(struct kh_sms *c, struct kh_store **s);

/* ---- EMMs for one card: commands gathered, sealed and queued in the caller's transaction ---- */

struct kh__sms_emm {
	struct kh_sms *c;
	uint32_t ua;
	uint8_t cmds[KH_EMM_CMDS_MAX]; /* may hold keys: kh__sms_emm_wipe */
	size_t len;
	unsigned queued; /* EMMs queued through this batch */
	int64_t first_id; /* queue id of the first of them (0: none yet) */
};

void kh__sms_emm_init(struct kh__sms_emm *e, struct kh_sms *c, uint32_t ua);
/*
 * Append one command (a whole TLV). When it does not fit in the EMM being gathered, that EMM is
 * queued first and the command starts the next one, so commands that belong together share one
 * EMM as long as KH_EMM_CMDS_MAX allows, in the order given.
 */
KH_WARN_UNUSED kh_err kh__sms_emm_cmd(struct kh_store *s, struct kh__sms_emm *e, const uint8_t *cmd, size_t n);
/* Queue what is gathered (nothing when empty): sealed under the card's Kp, with its next seq. */
KH_WARN_UNUSED kh_err kh__sms_emm_flush(struct kh_store *s, struct kh__sms_emm *e);
void kh__sms_emm_wipe(struct kh__sms_emm *e);

/*
 * Queue everything a card needs when it starts serving subscriber sub, in the caller's
 * transaction: SET ALL KEY, SET KEY for every current service key, ENTITLE for each of the
 * subscriber's subscriptions, ADD CREDIT of the policy's initial credit (when not 0, with the
 * card's next reload id), and AUTHORISE EXPORT 1 when auth_export. *queued gets the EMM count.
 */
KH_WARN_UNUSED kh_err kh__sms_card_setup(struct kh_store *s, struct kh_sms *c, uint32_t ua, int64_t sub,
					 int auth_export, unsigned *queued);

/* ---- subscription rights (sms_rights.c) ---- */

/* The center's clock (kh_sms_config.clock, or time()). */
int64_t kh__sms_now(const struct kh_sms *c);
/*
 * The end of the right a card is sent now for a subscription [start, end): end, or sooner the
 * end of the rights window of max(now, start), at most rights_ttl ahead of it. Always > start.
 */
int64_t kh__sms_rights_end(const struct kh_sms *c, int64_t now, int64_t start, int64_t end);
/* Stop the renewal thread (kh_sms_free). */
void kh__sms_renew_stop(struct kh_sms *c);
/* POST /v1/rights/renew */
KH_WARN_UNUSED kh_err kh__sms_rights_renew(struct kh_http_req *req, struct kh_http_resp *resp, void *arg);

/* ---- a refusal with its own code and message (a 409 with a precise reason, a 404 naming what) ---- */

struct kh__sms_why {
	const char *code; /* NULL: the registry's code for the error */
	const char *msg;  /* NULL: the registry's message */
};
/* Answer e with why (status kh_err_http(e)). Returns KH_OK (the reply is set) or KH_ERR_NOMEM. */
KH_WARN_UNUSED kh_err kh__sms_fail(struct kh_http_resp *resp, kh_err e, const struct kh__sms_why *why);
/* Set why and return e: `return kh__sms_why(&a->why, KH_ERR_NOTFOUND, NULL, "card not registered");` */
kh_err kh__sms_why(struct kh__sms_why *w, kh_err e, const char *code, const char *msg);

/* ---- idempotency keys (sms_util.c) ---- */

/*
 * The store keeps a request's Idempotency-Key scoped by who may call its route and by the route:
 * caller ":" base64url(SHA-256(caller, method, route pattern, key)), so a key sent to an open
 * endpoint by anyone never meets the operator's same key on an operator endpoint, nor a key of
 * one route another's.
 */
#define KH__SMS_CALLER_OPERATOR "op"
#define KH__SMS_CALLER_OPEN "open"
#define KH__SMS_IDEM_KEY_LEN 52 /* "open:" + 43 characters + NUL, rounded up */
/* The scoped key of req's Idempotency-Key into out. KH_ERR_INVAL when it has none. */
KH_WARN_UNUSED kh_err kh__sms_idem_key(const struct kh_http_req *req, const char *caller,
				       char out[static KH__SMS_IDEM_KEY_LEN]);
/* Purged per record written, at most: the table cannot outgrow what came within the horizon. */
#define KH__SMS_IDEM_PURGE 8
/*
 * kh_store_idem_put in the caller's transaction. On SQLite (one writer) it first deletes up to
 * KH__SMS_IDEM_PURGE records older than the center's idempotency horizon (c->idem_ttl), with the
 * finished bulk jobs of that age. On PostgreSQL it does not: that DELETE reads the oldest records
 * in every write's SERIALIZABLE transaction, so any two concurrent writes conflicted over it
 * (measured: 1.8 runs per upload, 0.7 % answered 503); kh__sms_idem_sweep does it instead.
 */
KH_WARN_UNUSED kh_err kh__sms_idem_put(struct kh_store *s, struct kh_sms *c, const char *key,
				       const uint8_t hash[static KH_STORE_IDEM_HASH_LEN], const char *text, size_t len);
/*
 * The expiry on its own, outside any request (the renewal thread, each of its rounds; PostgreSQL
 * only, SQLite's writes do it): deletes what passed the horizon, KH__SMS_IDEM_SWEEP records per
 * statement until none is left; *n how many in all.
 */
#define KH__SMS_IDEM_SWEEP 1000
KH_WARN_UNUSED kh_err kh__sms_idem_sweep(struct kh_sms *c, unsigned *n);

/*
 * An Idempotency-Key on an operator write, bound inside the write's own transaction:
 * kh__sms_idem_begin first (a stored answer is the answer, and nothing else runs),
 * kh__sms_idem_answer last (the answer and its status, stored under the key in the same commit).
 * Without a key the same calls simply build the answer. Every operator write of the center keeps
 * its key this way (docs/internals/sms.md "Idempotency"), except the bulk subscription, whose
 * key also names its job's progress row (sms_bulk.c), and the decoders' uploads (sms_upload.c).
 *
 * A record is the answer's status as three digits and a newline, then its JSON text. A record
 * without the status line (written before statuses were kept, by a reload or an edit) is a 200.
 */
struct kh__sms_idem {
	int on;                                /* the request carries a key */
	char key[KH__SMS_IDEM_KEY_LEN];        /* scoped (kh__sms_idem_key) */
	uint8_t hash[KH_STORE_IDEM_HASH_LEN];  /* of what the request asks */
	char *answer;                          /* the JSON text to send (malloc'd) */
	size_t len;
	int status;                            /* the answer's HTTP status */
	int replayed;
};
/*
 * From req: its key scoped for caller, and the hash of fp when given, else of the method, the
 * path and the body (compact, keys sorted: one request however its JSON is spaced; no body and
 * an empty object are the same). The key's length was checked by the HTTP layer
 * (KH_HTTP_IDEM_KEY_MAX); the store keeps the scoped form.
 */
KH_WARN_UNUSED kh_err kh__sms_idem_init(struct kh_http_req *req, const char *caller, const char *fp,
					struct kh__sms_idem *im);
/* In the transaction, first: KH_OK with im->replayed when the key has an answer (now in
 * im->answer, with its status); KH_ERR_NOTFOUND for a new request (or none without a key);
 * KH_ERR_IDEM_MISMATCH. */
KH_WARN_UNUSED kh_err kh__sms_idem_replay(struct kh_store *s, struct kh__sms_idem *im);
/*
 * kh__sms_idem_replay as a write's transaction begins, why cleared first: KH_OK with *done when
 * the key has an answer (the transaction ends there), KH_OK for a new request, the refusal (422,
 * set in why) for a key used for another request, or the store's error.
 */
KH_WARN_UNUSED kh_err kh__sms_idem_begin(struct kh_store *s, struct kh__sms_idem *im, struct kh__sms_why *why,
					 int *done);
/* In the transaction, last: o (stolen; NULL is out of memory) becomes im->answer with status,
 * stored under the key when there is one. */
KH_WARN_UNUSED kh_err kh__sms_idem_answer(struct kh_store *s, struct kh_sms *c, struct kh__sms_idem *im, int status,
					  json_t *o);
/* Send im->answer (taken over) with its status, marked Idempotent-Replayed when it was replayed. */
KH_WARN_UNUSED kh_err kh__sms_idem_reply(struct kh_http_resp *resp, struct kh__sms_idem *im);
/* The write failed with r (kh__sms_write): im->answer dropped, and the refusal in why answered
 * (kh__sms_fail) when there is one, else r returned. */
KH_WARN_UNUSED kh_err kh__sms_idem_fail(struct kh_http_resp *resp, struct kh__sms_idem *im, kh_err r,
					const struct kh__sms_why *why);
/*
 * An operator write, whole: im from req (kh__sms_idem_init, no fp), fn run through the writer
 * with arg (fn begins with kh__sms_idem_begin and ends with kh__sms_idem_answer on im, and sets
 * why for a refusal), then the answer sent, or the refusal (kh__sms_idem_fail). queued, when not
 * NULL, is what fn says it queued (0 on a replay), counted once committed.
 */
KH_WARN_UNUSED kh_err kh__sms_idem_run(struct kh_http_req *req, struct kh_http_resp *resp, struct kh_sms *c,
				       kh_store_tx_fn fn, void *arg, struct kh__sms_idem *im,
				       const struct kh__sms_why *why, const unsigned *queued);

/* ---- parsing ---- */

/* A UA in a path: exactly 8 hex digits. KH_ERR_INVAL. */
KH_WARN_UNUSED kh_err kh__sms_parse_ua(const char *s, uint32_t *ua);
/* A positive decimal id in a path. KH_ERR_INVAL. */
KH_WARN_UNUSED kh_err kh__sms_parse_id(const char *s, int64_t *id);
/* "%08X" */
void kh__sms_ua_hex(uint32_t ua, char out[static 9]);
/* Body field as an integer in [min, max]; KH_ERR_INVAL when absent (and required), not an integer, out of range. */
KH_WARN_UNUSED kh_err kh__sms_json_int(const json_t *body, const char *key, int64_t min, int64_t max, int required,
				       int64_t *v);
/* Body field as a name: a string of 1..KH_STORE_NAME_MAX bytes. KH_ERR_INVAL. */
KH_WARN_UNUSED kh_err kh__sms_json_name(const json_t *body, const char *key, const char **name);
/* Query argument as a non-negative integer (default when absent) at most max. KH_ERR_INVAL. */
KH_WARN_UNUSED kh_err kh__sms_query_int(struct kh_http_req *req, const char *name, int64_t def, int64_t max,
					int64_t *v);
/* Query argument as a time (Unix seconds, may be negative, |t| <= KH__SMS_TIME_MAX), def when
 * absent. KH_ERR_INVAL. */
#define KH__SMS_TIME_MAX (INT64_MAX / 2)
KH_WARN_UNUSED kh_err kh__sms_query_time(struct kh_http_req *req, const char *name, int64_t def, int64_t *v);
/* One queued EMM as JSON {id, address_type, address, seq, section}; NULL: out of memory. */
json_t *kh__sms_emm_json(const struct kh_store_emm *e);
/* Count the EMMs queued by a committed transaction in the center's metric. */
void kh__sms_count_emms(struct kh_sms *c, unsigned n);
/* Count the usage blocks a committed upload carried. */
void kh__sms_count_blocks(struct kh_sms *c, unsigned n);

/* ---- the JSON of each resource: one builder each, for its write, its read and its lists ---- */

/* NULL: out of memory. */
json_t *kh__sms_card_json(const struct kh_store_card *c);
json_t *kh__sms_subscriber_json(const struct kh_store_subscriber *u);
json_t *kh__sms_subscription_json(const struct kh_store_subscription *u);
/* with_subscriber: add "subscriber_id" (the list of every subscriber's invoices). */
json_t *kh__sms_invoice_json(const struct kh_store_invoice *i, int with_subscriber);
json_t *kh__sms_product_json(const struct kh_store_product *p);
json_t *kh__sms_channel_json(const struct kh_store_channel *c);
json_t *kh__sms_event_json(const struct kh_store_event *e);
/* What a bulk subscription answers: product, subscribers, emms_queued, skipped, chunks. */
json_t *kh__sms_bulk_json(const struct kh_store_bulk_job *job);

/* ---- pages (sms_list.c) ---- */

/* Room for the base64url of n bytes and its NUL. */
#define KH__SMS_B64_CAP(n) (((n) * 4 + 2) / 3 + 1)

/* A list's page as the request asks it (limit, cursor) and as it went (where the next starts). */
struct kh__sms_page {
	struct kh_store_page pg;
	char kind;                                /* the cursor's letter: one list's cursor is not another's */
	char after_key[KH_STORE_IDEM_KEY_MAX + 1]; /* bulk jobs: the position's key */
	json_t *items;                            /* the rows so far */
	int more;                                 /* another page follows */
	int64_t last, last_id;                    /* the last row's key (invoices: time, id) */
	char last_key[KH_STORE_IDEM_KEY_MAX + 1];
	unsigned n;
};
/*
 * Query limit (1..1000, default 100) and cursor (a next_cursor this kind of list gave) into p,
 * with p->items a new array. A bad one is answered (400 invalid) and *answered set.
 */
KH_WARN_UNUSED kh_err kh__sms_page_start(struct kh_http_req *req, struct kh_http_resp *resp, char kind,
					 struct kh__sms_page *p, int *answered);
/* Add one row's JSON o (stolen) to the page, its key being key (and id, for invoices). */
KH_WARN_UNUSED kh_err kh__sms_page_add(struct kh__sms_page *p, json_t *o, int64_t key, int64_t id);
/* Answer 200 {"<items_name>": [...], "next_cursor": C or null} (p->items is taken over), or,
 * when r (the store's walk) failed, r. */
KH_WARN_UNUSED kh_err kh__sms_page_reply(struct kh_http_resp *resp, struct kh__sms_page *p, const char *items_name,
					 kh_err r);
/* A query filter that is wrong: 400 invalid with msg. */
KH_WARN_UNUSED kh_err kh__sms_invalid(struct kh_http_resp *resp, const char *msg);

/* ---- endpoints (one file per resource) ---- */

kh_err kh__sms_subscriber_create(struct kh_http_req *req, struct kh_http_resp *resp, void *arg);
kh_err kh__sms_subscriber_get(struct kh_http_req *req, struct kh_http_resp *resp, void *arg);
kh_err kh__sms_subscriber_invoices(struct kh_http_req *req, struct kh_http_resp *resp, void *arg);
kh_err kh__sms_subscribe(struct kh_http_req *req, struct kh_http_resp *resp, void *arg);
kh_err kh__sms_unsubscribe(struct kh_http_req *req, struct kh_http_resp *resp, void *arg);

kh_err kh__sms_card_register(struct kh_http_req *req, struct kh_http_resp *resp, void *arg);
kh_err kh__sms_card_get(struct kh_http_req *req, struct kh_http_resp *resp, void *arg);
kh_err kh__sms_card_assign(struct kh_http_req *req, struct kh_http_resp *resp, void *arg);
kh_err kh__sms_card_replace(struct kh_http_req *req, struct kh_http_resp *resp, void *arg);
kh_err kh__sms_card_forfeit(struct kh_http_req *req, struct kh_http_resp *resp, void *arg);
kh_err kh__sms_card_reload(struct kh_http_req *req, struct kh_http_resp *resp, void *arg);
kh_err kh__sms_card_emm(struct kh_http_req *req, struct kh_http_resp *resp, void *arg);

kh_err kh__sms_upload_open(struct kh_http_req *req, struct kh_http_resp *resp, void *arg);
kh_err kh__sms_upload(struct kh_http_req *req, struct kh_http_resp *resp, void *arg);

kh_err kh__sms_product_create(struct kh_http_req *req, struct kh_http_resp *resp, void *arg);
kh_err kh__sms_product_list(struct kh_http_req *req, struct kh_http_resp *resp, void *arg);
kh_err kh__sms_bulk_subscribe(struct kh_http_req *req, struct kh_http_resp *resp, void *arg);
kh_err kh__sms_channel_create(struct kh_http_req *req, struct kh_http_resp *resp, void *arg);
kh_err kh__sms_channel_list(struct kh_http_req *req, struct kh_http_resp *resp, void *arg);
kh_err kh__sms_event_create(struct kh_http_req *req, struct kh_http_resp *resp, void *arg);
kh_err kh__sms_event_list(struct kh_http_req *req, struct kh_http_resp *resp, void *arg);

kh_err kh__sms_policy_put(struct kh_http_req *req, struct kh_http_resp *resp, void *arg);
kh_err kh__sms_policy_get(struct kh_http_req *req, struct kh_http_resp *resp, void *arg);
kh_err kh__sms_keys_rotate(struct kh_http_req *req, struct kh_http_resp *resp, void *arg);
kh_err kh__sms_keys_list(struct kh_http_req *req, struct kh_http_resp *resp, void *arg);
kh_err kh__sms_keys_material(struct kh_http_req *req, struct kh_http_resp *resp, void *arg);
kh_err kh__sms_emm_queue(struct kh_http_req *req, struct kh_http_resp *resp, void *arg);

/* The operator's lists and reads (sms_list.c). */
kh_err kh__sms_subscriber_list(struct kh_http_req *req, struct kh_http_resp *resp, void *arg);
kh_err kh__sms_subscriber_subscriptions(struct kh_http_req *req, struct kh_http_resp *resp, void *arg);
kh_err kh__sms_card_list(struct kh_http_req *req, struct kh_http_resp *resp, void *arg);
kh_err kh__sms_card_emm_queue(struct kh_http_req *req, struct kh_http_resp *resp, void *arg);
kh_err kh__sms_invoice_list(struct kh_http_req *req, struct kh_http_resp *resp, void *arg);
kh_err kh__sms_product_get(struct kh_http_req *req, struct kh_http_resp *resp, void *arg);
kh_err kh__sms_channel_get(struct kh_http_req *req, struct kh_http_resp *resp, void *arg);
kh_err kh__sms_event_get(struct kh_http_req *req, struct kh_http_resp *resp, void *arg);
kh_err kh__sms_session_list(struct kh_http_req *req, struct kh_http_resp *resp, void *arg);
kh_err kh__sms_job_list(struct kh_http_req *req, struct kh_http_resp *resp, void *arg);
kh_err kh__sms_job_get(struct kh_http_req *req, struct kh_http_resp *resp, void *arg);

/* Renames, closing and deletions (sms_edit.c). */
kh_err kh__sms_subscriber_patch(struct kh_http_req *req, struct kh_http_resp *resp, void *arg);
kh_err kh__sms_subscriber_delete(struct kh_http_req *req, struct kh_http_resp *resp, void *arg);
kh_err kh__sms_card_delete(struct kh_http_req *req, struct kh_http_resp *resp, void *arg);
kh_err kh__sms_product_patch(struct kh_http_req *req, struct kh_http_resp *resp, void *arg);
kh_err kh__sms_product_delete(struct kh_http_req *req, struct kh_http_resp *resp, void *arg);
kh_err kh__sms_channel_patch(struct kh_http_req *req, struct kh_http_resp *resp, void *arg);
kh_err kh__sms_channel_delete(struct kh_http_req *req, struct kh_http_resp *resp, void *arg);
kh_err kh__sms_event_patch(struct kh_http_req *req, struct kh_http_resp *resp, void *arg);
kh_err kh__sms_event_delete(struct kh_http_req *req, struct kh_http_resp *resp, void *arg);
/* Forget card ua's checked keys (sms_upload.c): after the card is deleted, an upload never meets
 * them again, even if the UA is registered anew with another certificate. */
void kh__sms_card_forget(struct kh_sms *c, uint32_t ua);

/* Health (sms_health.c): open, never rate limited, outside /v1. */
/* How long /readyz waits for the database's write lock (ms): a probe must answer within ~1 s. */
#define KH__SMS_READY_WAIT_MS 500u
kh_err kh__sms_healthz(struct kh_http_req *req, struct kh_http_resp *resp, void *arg);
kh_err kh__sms_readyz(struct kh_http_req *req, struct kh_http_resp *resp, void *arg);

#endif
