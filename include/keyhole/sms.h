/*
 * The management center (subscriber management system): the operator's back office for
 * the pay-TV path. It keeps subscribers, cards, the catalogue, subscriptions, the credit policy
 * and the service keys in the SQL store (keyhole/store.h), and turns each change into the EMMs
 * the cards need (the protocol design "Pay-TV: ECM and EMM", seed 001), sealed under each card's
 * personal key and queued with the card's next sequence number in the same transaction.
 * It answers the operator API under /v1 on an HTTP server (keyhole/http.h); `keyhole serve`
 * hosts it. Center zone only. Data flow, endpoints and threading: docs/internals/sms.md;
 * the API: docs/api/openapi.yaml.
 */
#ifndef KEYHOLE_SMS_H
#define KEYHOLE_SMS_H

#include <stdint.h>

#include "keyhole/err.h"

struct kh_sms;
struct kh_http;

struct kh_sms_config {
	const char *db;            /* store URL (kh_store_open): an SQLite file, created 0600 */
	const char *authority_dir; /* root.crt (the root public key) and master.key */
	/* 1: the store's synchronous=NORMAL (NOT durable; tests and benchmarks only). */
	int store_sync_normal;
	/*
	 * The operator's bearer token (token_len bytes, copied), or NULL: then the operator API
	 * answers anyone who can reach the port. With it, every operator endpoint wants
	 * "Authorization: Bearer <token>" (401 otherwise). The endpoints cards and decoders use
	 * (upload sessions, the EMM queues: everything there is signed or sealed) and /metrics stay
	 * open.
	 */
	const uint8_t *operator_token;
	size_t token_len;
	/*
	 * Subscribers per transaction of a bulk subscription (POST /v1/products/{id}/subscriptions):
	 * 0 means KH_SMS_BULK_CHUNK; at most KH_SMS_BULK_CHUNK_MAX (KH_ERR_INVAL beyond). Each chunk
	 * holds the store's write lock while it runs; tests lower it to see several chunks.
	 */
	unsigned bulk_chunk;
	/*
	 * The open upload endpoints' limits (docs/protocols/upload.md "Limits"). An upload session
	 * not used within upload_session_ttl seconds is refused (0: KH_SMS_UPLOAD_TTL).
	 * upload_sessions_max is no longer used: a session is stored only once its upload is
	 * accepted, so there is nothing to cap. Kept so that callers that set it still build.
	 */
	unsigned upload_session_ttl;
	unsigned upload_sessions_max;
	/*
	 * How long an idempotency record (the answer a retry with the same Idempotency-Key gets) is
	 * kept at least, in seconds (0: KH_SMS_IDEM_TTL; KH_SMS_IDEM_TTL_MIN to KH_SMS_IDEM_TTL_MAX,
	 * KH_ERR_INVAL otherwise). Older records are deleted a few at a time as new ones are
	 * written; a retry after that runs as a new request.
	 */
	unsigned idempotency_ttl;
	/*
	 * How long the subscription rights a card is sent last, in seconds (0: KH_SMS_RIGHTS_TTL; at
	 * least 2, at most KH_SMS_RIGHTS_TTL_MAX, KH_ERR_INVAL otherwise). Every ENTITLE for a
	 * subscription ends at min(subscription end, a boundary at most this far ahead), and the
	 * renewal (kh_sms_rights_renew) sends the next window every rights_ttl / 2: a card cut off
	 * from its EMMs keeps its rights at most rights_ttl after the last renewal it received.
	 */
	unsigned rights_ttl;
	/* The clock those limits and the rights read, Unix seconds (NULL: time()). For tests. */
	int64_t (*clock)(void *ctx);
	void *clock_ctx;
};
#define KH_SMS_BULK_CHUNK 2000u
#define KH_SMS_BULK_CHUNK_MAX 100000u

#define KH_SMS_RIGHTS_TTL (31u * 86400u)
#define KH_SMS_RIGHTS_TTL_MAX (3650u * 86400u)
#define KH_SMS_RENEW_EVERY 3600u /* seconds between two sweeps of kh_sms_renew_start */

#define KH_SMS_UPLOAD_TTL 600u
#define KH_SMS_UPLOAD_SESSIONS_MAX 8u /* no longer used */

#define KH_SMS_IDEM_TTL 86400u
#define KH_SMS_IDEM_TTL_MIN 60u
#define KH_SMS_IDEM_TTL_MAX (30u * 86400u)

/*
 * Open the center: the store (created or migrated; this thread's connection is checked at once),
 * the authority's root public key and master key (kept in memory, wiped by kh_sms_free), and
 * service key 1 version 1 when the store has no service key yet. Errors: those of
 * kh_store_open (KH_ERR_IO for a path that cannot be created, KH_ERR_KEYFILE_PERM, ...), of
 * kh_authority_open and the master key file, KH_ERR_NOMEM. *out is written only on success.
 * On failure, *what (may be NULL) names what failed: the database or the authority directory.
 */
KH_WARN_UNUSED kh_err kh_sms_new(const struct kh_sms_config *cfg, struct kh_sms **out, const char **what);
/*
 * Add the /v1 routes to h (before kh_http_start) and register the center's metrics on h's
 * registry (keyhole_emms_queued_total). The server's handlers then use s: s must outlive h's
 * threads (kh_http_stop or kh_http_free before kh_sms_free).
 */
KH_WARN_UNUSED kh_err kh_sms_add_routes(struct kh_sms *s, struct kh_http *h);
/*
 * The upload path's group commit so far: transactions committed and upload-session requests
 * they carried (jobs / batches = how many requests shared each fsync). Any thread.
 */
void kh_sms_writer_stats(struct kh_sms *s, uint64_t *batches, uint64_t *jobs);
/*
 * What one renewal sweep did. The rights windows are fixed by the clock: window k starts at
 * k * rights_ttl/2, and a right sent during window k ends at (k + 2) * rights_ttl/2 at the latest.
 */
struct kh_sms_renewal {
	int64_t window_start; /* this window's start (Unix seconds) */
	int64_t rights_end;   /* the end this window's ENTITLEs carry (or the subscription's, sooner) */
	unsigned products;    /* products swept */
	unsigned cards;       /* cards sent a renewal by this call */
	unsigned emms_queued; /* by this call */
	unsigned chunks;      /* transactions this call committed */
};
/*
 * Renew the rights for the current window: for each product, each subscriber with an active card
 * whose subscription started before the window and outlasts the previous window's end gets an
 * ENTITLE with the window's end (or the subscription's, sooner). Chunked like a bulk subscription
 * (bulk_chunk subscribers per transaction), with the progress of each (window, product) recorded
 * in the chunk's transaction: a sweep interrupted resumes, and a window swept already queues
 * nothing again. *out (may be NULL) says what this call did. Any thread.
 */
KH_WARN_UNUSED kh_err kh_sms_rights_renew(struct kh_sms *s, struct kh_sms_renewal *out);
/*
 * Run kh_sms_rights_renew at once and then every every_s seconds (0: KH_SMS_RENEW_EVERY) on a
 * thread of the center's own, until kh_sms_free. Failures are logged and retried at the next
 * sweep. KH_ERR_INVAL when already started; KH_ERR_NOMEM.
 */
KH_WARN_UNUSED kh_err kh_sms_renew_start(struct kh_sms *s, unsigned every_s);
/* Close every store connection, wipe the keys, free. Only once the HTTP server has stopped. NULL ok. */
void kh_sms_free(struct kh_sms *s);

#endif
