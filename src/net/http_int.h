/*
 * Shared inside src/net/ (the HTTP server split in three files): the route table entry, what a
 * request and its response hold, and the route helpers. Not part of the public API.
 */
#ifndef KH_NET_HTTP_INT_H
#define KH_NET_HTTP_INT_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <microhttpd.h>

#include "keyhole/http.h"

#define KH__HTTP_MAX_SEGS 32
#define KH__HTTP_MAX_PARAMS 8
#define KH__HTTP_MAX_HEADERS 16

struct kh__http_route {
	const char *method;
	const char *pattern;
	kh_http_handler fn;
	void *arg;
	size_t nseg;
	const char *seg[KH__HTTP_MAX_SEGS]; /* into segbuf; "{name}" segments kept as the name */
	uint32_t param_mask; /* bit i: segment i is a parameter */
	char *segbuf;
};

struct kh_http_resp {
	int set;
	int status;
	json_t *body;
	char *text; /* or the body as JSON text already (kh_http_reply_text); owned */
	size_t text_len;
	int secret; /* text carries a secret: wiped when freed (kh_http_reply_secret) */
	size_t nhdr;
	char *hdr[KH__HTTP_MAX_HEADERS][2];
};

struct kh_http_req {
	struct kh_http *h;
	struct MHD_Connection *conn;
	char method[16];
	char path[512];
	const struct kh__http_route *route;
	char *pathbuf;
	const char *param_val[KH__HTTP_MAX_SEGS];
	char *body;
	size_t len, cap;
	size_t discarded;
	int too_large;
	int queued;
	json_t *json;
	const char *idem_key;
	struct timespec t0;
	int status;
	char errcode[48];
	struct kh_http_resp resp;
};

/* 1 for a method routes may use (GET, POST, PUT, PATCH, DELETE). */
int kh__http_valid_method(const char *m);
/* Split rt->pattern into rt->seg; KH_ERR_INVAL for a malformed pattern. Frees nothing on error. */
KH_WARN_UNUSED kh_err kh__http_route_parse(struct kh__http_route *rt);
/* 1 when a and b match the same paths. */
int kh__http_route_same_shape(const struct kh__http_route *a, const struct kh__http_route *b);
/*
 * The route of method for the path segments seg (nseg of them). *found_path: some method has a
 * route for the path; allow (cap bytes) receives those methods, comma separated.
 */
const struct kh__http_route *kh__http_route_match(const struct kh__http_route *routes, size_t n,
						  const char *method, char *const *seg, size_t nseg,
						  int *found_path, char *allow, size_t cap);
/* Free a response's body and headers, leaving it empty. */
void kh__http_resp_clear(struct kh_http_resp *resp);

#endif
