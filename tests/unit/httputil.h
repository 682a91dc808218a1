/*
 * Shared libcurl helpers for the tests that drive a real HTTP server (test_sms, test_upload) and
 * for the kh_upload_load tool (tests/tools/upload_load.c): one request with its answer body,
 * JSON and Idempotent-Replayed flag collected, and, for the cmocka tests, the asserting
 * wrappers that expect a status or an error answer.
 *
 * The cmocka half is left out when KH_HTTPUTIL_NO_CMOCKA is defined (kh_upload_load is built
 * without cmocka).
 */
#ifndef KH_HTTPUTIL_H
#define KH_HTTPUTIL_H

#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>
#include <jansson.h>

#include "keyhole/cas.h"

/* What one request got back. body is NUL-terminated and malloc'd (NULL when the answer had no
 * body); json is body parsed, or NULL; replayed is 1 when the answer carried
 * "Idempotent-Replayed: true". Released with reply_free. */
struct reply {
	long status;
	char *body;
	size_t len;
	json_t *json;
	int replayed;
};

/* One request on c (reset first, so a handle may be reused). url is whole; method NULL lets
 * libcurl choose (GET, or POST with a body); body NULL for none, else sent as
 * application/json; idem NULL for no Idempotency-Key; auth a whole header line
 * ("Authorization: Bearer ...") or NULL; timeout in seconds. No proxy, no signals. out is
 * zeroed first and gets the status (0 when no answer came), the body and its JSON. Returns
 * libcurl's result; the caller reply_frees out whatever it returns. */
CURLcode http_perform(CURL *c, const char *url, const char *method, const char *body, const char *idem,
		      const char *auth, long timeout, struct reply *out);
/* Frees what r holds and zeroes it. */
void reply_free(struct reply *r);

/* The center's current service key 1 (newest version), read from its store file, so a test can
 * seal ECMs the cards it provisioned will open. KH_ERR_NOTFOUND when the store has none. */
struct center_skey {
	uint8_t key[32];
	uint8_t id;
	uint32_t version;
};
int center_service_key(const char *db, struct center_skey *sk); /* a kh_err */

#ifndef KH_HTTPUTIL_NO_CMOCKA
/* A server on 127.0.0.1:port reached through curl; auth an Authorization header line every
 * request carries, or NULL. */
struct http_conn {
	CURL *curl;
	uint16_t port;
	const char *auth;
};

/* One request to path (timeout 60 s) that must get an answer; body NULL for none, idem NULL
 * for no Idempotency-Key. */
void http_req(const struct http_conn *hc, const char *method, const char *path, const char *body,
	      const char *idem, struct reply *out);
/* The request must answer status with a JSON body; returns it (owned by r). */
json_t *http_expect(const struct http_conn *hc, const char *method, const char *path, const char *body,
		    const char *idem, long status, struct reply *r);
/* The request must answer status with exactly {"error": {"code": code, "message": "..."}}
 * (a non-empty message), not marked Idempotent-Replayed. */
void http_expect_error(const struct http_conn *hc, const char *method, const char *path, const char *body,
		       const char *idem, long status, const char *code);
/* Member k of o, which must be an integer / a string (owned by o). */
int64_t jint(const json_t *o, const char *k);
const char *jstr(const json_t *o, const char *k);
/* The value of the metric name (a sample without labels) in the server's /metrics. */
int64_t http_metric(const struct http_conn *hc, const char *name);
/* A management center for a test: kh_sms on db with the authority in authdir (token NULL: an
 * open operator API), served on 127.0.0.1 by two HTTP threads; *port is the port bound. */
struct kh_sms;
struct kh_http;
void center_start(const char *db, const char *authdir, const char *token, struct kh_sms **sms,
		  struct kh_http **h, uint16_t *port);
/*
 * What a test of the center's API stands on: a world (world.h: a temporary directory with an
 * authority and modules), a center on the store file DIR/center.db served on 127.0.0.1 without
 * an operator token, and a curl handle to reach it. center_rig_up fills r (assertions fail the
 * test); center_rig_down stops and frees all of it.
 */
struct world;
struct center_rig {
	struct world *w;
	char *db;
	struct kh_sms *sms;
	struct kh_http *h;
	struct http_conn hc;
};
void center_rig_up(struct center_rig *r);
void center_rig_down(struct center_rig *r);
/* The body of POST /v1/cards, {"certificate": ...}, for a card signing certificate auth issues
 * for a fresh key and the next UA (into body, cap bytes: KH_CERT_MAX * 2 is enough): the UA. */
struct kh_authority;
uint32_t center_card_body(struct kh_authority *auth, char *body, size_t cap);
/* Stop the server, then free the center. */
void center_stop(struct kh_sms *sms, struct kh_http *h);
/*
 * An ECM for product at time t under the center's service key (db), through a decoder -> cam ->
 * card session (dec: the decoder module): the card's answer (KH_OK, KH_ERR_NO_RIGHT,
 * KH_ERR_RIGHT_EXPIRED, ...). The CW is wiped.
 */
struct kh_transport;
int center_watch(const char *db, struct kh_transport *dec, const struct kh_cas_signer *sg, struct kh_transport *cam,
		 struct kh_transport *card, uint32_t product, int64_t t); /* a kh_err */
#endif

#endif
