/*
 * The decoder's side of the upload session (seed 001, the protocol design "Seed 001";
 * docs/protocols/upload.md; the decisions this side made are in docs/internals/decoder.md,
 * "The upload session"). kh_upload_run opens a session at the management center for the current
 * card, has the card sign the center's nonce (HELLO), sends the card's fresh block (EXPORT P1=0)
 * together with the block the decoder's memory M1 holds — which may be a replaced card's — hands
 * the EMMs the center answers with to the card, and only then asks the card for a block for M1
 * (kh_m1_export), which the card gives only once the center has authorised it.
 *
 * HTTP goes through struct kh_upload_http, so the protocol logic can be driven without a
 * server (tests/unit/test_upload_client.c); kh_upload_curl_new gives the real one over libcurl.
 * Host zone.
 */
#ifndef KEYHOLE_UPLOAD_H
#define KEYHOLE_UPLOAD_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "keyhole/err.h"
#include "keyhole/m1.h"
#include "keyhole/transport.h"

#define KH_UPLOAD_ATTEMPTS 3        /* POSTs per request at most (the first and two retries) */
#define KH_UPLOAD_BACKOFF_MS 250    /* before the first retry; doubled before each next one */
#define KH_UPLOAD_MAX_VERDICTS 8    /* block verdicts an answer may carry */
#define KH_UPLOAD_MAX_EMMS 32       /* EMMs an answer may carry */
#define KH_UPLOAD_FETCH_ROUNDS 8    /* GETs of the card's EMMs after a gap or a full answer, at most */
#define KH_UPLOAD_SESSION_MAX 128   /* characters of a session id */
#define KH_UPLOAD_VERDICT_MAX 32    /* characters of a verdict, NUL included */
#define KH_UPLOAD_MSG_MAX 160       /* characters kept of a center's error message, NUL included */
#define KH_UPLOAD_RESP_MAX (1024u * 1024u) /* largest answer body the curl client takes */

/*
 * One JSON POST. url is absolute; body is the request (serialised compactly, keys in insertion
 * order, so the same object gives the same bytes on a retry); idem_key, when not NULL, goes in an
 * Idempotency-Key header. Returns KH_OK when the center answered, whatever the HTTP status:
 * *status is set and *resp is the parsed JSON body (NULL when there was none or it was not JSON;
 * the caller json_decref's it). KH_ERR_TRANSPORT means no answer came (connection, TLS, timeout)
 * and is retried like a 5xx; any other code (KH_ERR_INVAL: a URL the client refuses,
 * KH_ERR_NOMEM) ends the session at once.
 */
typedef kh_err (*kh_upload_post_fn)(void *ctx, const char *url, json_t *body, const char *idem_key, int *status,
				    json_t **resp);

/*
 * One JSON GET (no body, no idempotency key), with the same return rules as kh_upload_post_fn.
 * Used only to fetch the card's EMMs after the last it applied when the card answered EMM_GAP
 * (an EMM missing from the answer) or the answer was full.
 */
typedef kh_err (*kh_upload_get_fn)(void *ctx, const char *url, int *status, json_t **resp);

struct kh_upload_http {
	kh_upload_post_fn post_json;
	void *ctx;
	kh_upload_get_fn get_json; /* NULL: no fetch after a gap (the next session brings them) */
};

struct kh_upload_config {
	const char *center;                 /* base URL, e.g. "https://sms.example:8443" (no query) */
	struct kh_transport *card;          /* the current card, plain APDUs (no CAM channel needed) */
	const char *m1_dir;                 /* the decoder's memory M1; NULL = none */
	const uint8_t *m1_key;              /* its local key (KH_M1_KEY_LEN bytes) when m1_dir is set */
	const struct kh_upload_http *http;
	unsigned backoff_ms;                /* 0 = KH_UPLOAD_BACKOFF_MS */
};

struct kh_upload_verdict {
	uint32_t ua, block_seq;
	char verdict[KH_UPLOAD_VERDICT_MAX]; /* as the center said it: ok, recovered, duplicate, ... */
};

/* What happened, filled in as far as the session got (also on failure). */
struct kh_upload_result {
	uint32_t card_ua;                   /* the current card */
	char session[KH_UPLOAD_SESSION_MAX + 1];
	uint32_t block_seq;                 /* of the current card's fresh block */

	kh_err m1_load;                     /* KH_OK: M1 read; NOTFOUND: empty; else unreadable */
	uint32_t m1_ua, m1_seq;             /* the block M1 held, when m1_load is KH_OK */
	int m1_sent;                        /* 1 when M1's block went up (not the same as the fresh one) */

	unsigned attempts;                  /* POSTs of the upload request (1 to KH_UPLOAD_ATTEMPTS) */
	int http_status;                    /* the last HTTP status received (0: none) */
	char center_msg[KH_UPLOAD_MSG_MAX]; /* the center's error code and message, when it refused */

	size_t nverdicts;
	struct kh_upload_verdict verdicts[KH_UPLOAD_MAX_VERDICTS];

	unsigned emms;                      /* EMMs the center answered with */
	unsigned emms_applied;              /* accepted by the card */
	unsigned emms_replayed;             /* refused as EMM_REPLAY: applied before (a retried session) */
	unsigned emms_gap;                  /* refused as EMM_GAP (an earlier one was missing) */
	unsigned emms_fetched;              /* EMMs fetched after the card's last (GET .../emm?after_seq) */
	unsigned emms_refused;              /* refused for another reason */
	kh_err emm_err;                     /* the first such reason */

	/* kh_m1_export after the EMMs, tried only with an M1 that was readable or empty and an
	 * upload the center answered: KH_OK M1 updated; KH_ERR_EXPORT_DENIED the card is still not
	 * authorised and M1 kept what it held; other codes as kh_m1_export gives them. */
	int m1_tried;
	kh_err m1_export;
	uint32_t m1_new_seq;                /* block_seq M1 took, when m1_export is KH_OK */
};

/*
 * Run one upload session (docs/protocols/upload.md steps 1-5, then the M1 export). KH_OK when the
 * center answered the upload (200), even if it refused some blocks or the card refused some EMMs
 * (see *res). Errors, each leaving M1 as it was:
 *   KH_ERR_INVAL        a bad config or a center URL the client cannot use;
 *   the card's errors   of GET INFO, HELLO, EXPORT P1=0 (KH_ERR_CARD_CHANGED when the hello or
 *                       the block names another UA than the card's);
 *   KH_ERR_TRANSPORT    no answer after KH_UPLOAD_ATTEMPTS tries (res->http_status 0), or 5xx
 *                       every time (res->http_status the last);
 *   the center's code   of a 4xx answer, from its {"error": {"code"}} (e.g. KH_ERR_AUTH: the hello
 *                       did not verify; KH_ERR_PEER_ERROR for a code this build does not know);
 *                       res->center_msg says what the center said;
 *   KH_ERR_FORMAT       an answer that is not what the protocol says (no nonce, bad base64url,
 *                       too many EMMs, ...).
 * The answer's EMMs go to the card in sequence order. When the card answers EMM_GAP (an EMM
 * is missing from the answer) or the answer was full, and http->get_json is set, the client asks
 * the center for the card's EMMs after the last it applied (GET /v1/cards/{UA}/emm?after_seq=N)
 * and applies them in order, again while the card takes some, at most KH_UPLOAD_FETCH_ROUNDS
 * times; a fetch that fails is logged and ends the fetching, not the session.
 * M1 is never written but through kh_m1_export, and only after the EMMs; an M1 that cannot be
 * read (anything but KH_OK and NOTFOUND from kh_m1_load) is not sent and not exported to.
 */
KH_WARN_UNUSED kh_err kh_upload_run(const struct kh_upload_config *cfg, struct kh_upload_result *res);

/*
 * Whether url may carry an upload: https://, or http:// to 127.0.0.1, localhost or [::1], or any
 * http:// when insecure_http. KH_ERR_INVAL otherwise (other schemes, user info, no host).
 */
KH_WARN_UNUSED kh_err kh_upload_url_check(const char *url, int insecure_http);

/* ---- the libcurl client ---- */

struct kh_upload_curl;

/*
 * A client over libcurl: peer and host always verified, against cacert (a PEM file of CA
 * certificates) when given, else the system's store; TLS 1.2 or later; no redirects; http and
 * https only, and http only as kh_upload_url_check allows; 10 s to connect, 30 s per request;
 * answers over KH_UPLOAD_RESP_MAX are a transport error. *http is filled in to use it.
 * KH_ERR_NOMEM, KH_ERR_INTERNAL when libcurl cannot be set up.
 */
KH_WARN_UNUSED kh_err kh_upload_curl_new(const char *cacert, int insecure_http, struct kh_upload_curl **out,
					 struct kh_upload_http *http);
/* Free; NULL does nothing. */
void kh_upload_curl_free(struct kh_upload_curl *c);
/* The libcurl error text of the last failed request ("" when none). */
const char *kh_upload_curl_error(const struct kh_upload_curl *c);

#endif
