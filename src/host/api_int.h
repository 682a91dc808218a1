/*
 * A host's client of a center's JSON API (host zone, src/host/api.c): the server's URL, the
 * bearer token once the host has one, and the last refusal or failure in words a terminal may
 * show. Shared by the distribution client and the escrow's buyer and seller clients.
 */
#ifndef KH_HOST_API_INT_H
#define KH_HOST_API_INT_H

#include <stddef.h>

#include <jansson.h>

#include "keyhole/buf.h"
#include "keyhole/http.h"

#define KH__API_MSG_MAX 256

struct kh__api {
	struct kh_http_client *http;
	char *base; /* the server URL, trailing slashes dropped */
	char *auth; /* "Authorization: Bearer TOKEN" once known (wiped) */
	char msg[KH__API_MSG_MAX];
};

/* A client of url (http or https, checked) with answers up to answer_max bytes. */
kh_err kh__api_init(struct kh__api *a, const char *url, const char *cacert, size_t answer_max);
void kh__api_free(struct kh__api *a);
/* Send "Authorization: Bearer token" from now on. */
kh_err kh__api_set_token(struct kh__api *a, const char *token);
/* a->msg from a format, printable ASCII only: the server's words reach a terminal. */
void kh__api_say(struct kh__api *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The code whose JSON name a server answered; KH_ERR_PEER_ERROR for a name this build lacks. */
kh_err kh__api_code_named(const char *json);
/* A refusal: its code from the error body, its words in a->msg. */
kh_err kh__api_refused(struct kh__api *a, const char *what, long status, const json_t *resp);
/*
 * One request: method to base + target with the JSON text body (NULL: none), the token when
 * known, and the header line extra (NULL: none). KH_OK with the status and the answer (JSON, or
 * its bytes when text is wanted).
 */
kh_err kh__api_call_h(struct kh__api *a, const char *what, const char *method, const char *target, const char *body,
		      const char *extra, long *status, json_t **resp, char **text, size_t *textlen);
kh_err kh__api_call(struct kh__api *a, const char *what, const char *method, const char *target, const char *body,
		    long *status, json_t **resp, char **text, size_t *textlen);
/* A JSON request whose answer must be `want` with a JSON object. */
kh_err kh__api_call_json(struct kh__api *a, const char *what, const char *method, const char *target,
			 const char *body, long want, json_t **out);
kh_err kh__api_call_json_h(struct kh__api *a, const char *what, const char *method, const char *target,
			   const char *body, const char *extra, long want, json_t **out);
/* The JSON integer field key of o into *v when it lies in [lo, hi]: 0, else -1 (*v untouched). */
int kh__api_get_int(const json_t *o, const char *key, int64_t lo, int64_t hi, int64_t *v);
/* A JSON string of s into w: quotes, backslashes and control characters escaped. */
void kh__api_put_json_string(struct kh_wr *w, const char *s);
/* Wipe a string held by a JSON value (jansson frees without wiping), then drop the value. */
void kh__api_drop_secret_json(json_t *v, const char *key);
/* Wipe and free a NUL-terminated secret; NULL does nothing. */
void kh__api_free_secret(char *s);

#endif
