/*
 * Shared inside src/net/ (the HTTP server split in three files): the route table entry, what a
 * request and its response hold, and the route helpers. Not part of the public API.
 */
#ifndef KH_NET_HTTP_INT_H
#define KH_NET_HTTP_INT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
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
	unsigned flags; /* KH_HTTP_ROUTE_OPEN */
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

/*
 * One connection the server watches for its receive deadlines (http_server.c): from
 * libmicrohttpd's connection-start notice to its close notice. deadline_ms is the monotonic time
 * by which what is being received (a request head, a body) must be in; 0 while the server itself
 * has the turn (a handler runs, an answer is sent).
 */
struct kh__http_conn {
	struct kh__http_conn *prev, *next;
	int fd;
	struct sockaddr_storage addr;
	socklen_t addrlen;
	atomic_llong deadline_ms;
	atomic_int line_seen; /* the current request's line is in: a client that began a request */
	atomic_int phase; /* KH__PHASE_HEAD or KH__PHASE_BODY while a deadline runs: what the log names */
	int reaped; /* closed by the deadline watcher (shutdown sent) */
};
#define KH__PHASE_HEAD 0
#define KH__PHASE_BODY 1

struct kh_http_req {
	struct kh_http *h;
	struct MHD_Connection *conn;
	struct kh__http_conn *track; /* NULL when libmicrohttpd gave none */
	int started;                 /* the headers are in (on_request ran once) */
	int counted;                 /* counted in flight: uncounted when completed */
	int bad_target;              /* the request target holds a control character */
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

/*
 * The table of client addresses (http_guard.c): a token bucket per address for the open routes'
 * budget (rate tokens per second, burst at most; rate 0: no budget), and a ban on new
 * connections for an address that missed a receive deadline. Fixed size: KH__GUARD_SETS sets of
 * KH__GUARD_WAYS entries. IPv4 addresses count one by one, IPv6 by /64. Thread-safe.
 */
#define KH__GUARD_SETS 1024
#define KH__GUARD_WAYS 4
struct kh__guard;
KH_WARN_UNUSED kh_err kh__guard_new(unsigned rate, unsigned burst, struct kh__guard **out);
void kh__guard_free(struct kh__guard *g);
/* Take one token for sa: 0 when granted, else the whole seconds until one is (Retry-After, >= 1). */
unsigned kh__guard_take(struct kh__guard *g, const struct sockaddr *sa, int64_t now_ms);
/* Refuse new connections from sa until until_ms (monotonic milliseconds). */
void kh__guard_ban(struct kh__guard *g, const struct sockaddr *sa, int64_t until_ms, int64_t now_ms);
/* 1 while sa is banned. */
int kh__guard_banned(struct kh__guard *g, const struct sockaddr *sa, int64_t now_ms);

#endif
