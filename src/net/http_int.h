/*
 * Shared inside src/net/ by the HTTP server's files (http_server.c: the server's life and each
 * request's; http_send.c: answers and their accounting; http_conn.c: connections, targets and
 * receive deadlines; http_route.c, http_resp.c, http_guard.c): the server, the route table
 * entry, what a request and its response hold. Not part of the public API.
 */
#ifndef KH_NET_HTTP_INT_H
#define KH_NET_HTTP_INT_H

#include <pthread.h>
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
	const char *ctype; /* text's content type when it is not JSON (kh_http_reply_bytes) */
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

/* ---- the server (http_server.c) ---- */

struct kh_http {
	struct kh_http_config cfg;
	char *host;
	struct kh__http_route *routes;
	size_t nroutes;
	struct MHD_Daemon *d;
	MHD_socket listen_fd;
	uint16_t port;
	struct kh_metrics *metrics;
	int own_metrics;
	struct kh_metric *inflight_gauge;
	atomic_int stopping;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned inflight;
	char *cert, *key;
	size_t certlen, keylen;
	/* client addresses: the open routes' budget and the bans of slow clients (http_guard.c) */
	struct kh__guard *guard;
	/* connections with a receive deadline running, and the thread that enforces them */
	pthread_mutex_t conns_mu;
	struct kh__http_conn *conns;
	pthread_cond_t watch_cv;
	int watch_run, watch_stop;
	pthread_t watch;
	int64_t head_ms;
	struct kh_metric *deadline_closed, *rate_limited;
};

/* ---- answers and their accounting (http_send.c) ---- */

/* Remember the error code of an answer for keyhole_http_errors_total. */
void kh__http_note_errcode(struct kh_http_req *r, const json_t *body);
/*
 * Queue text (malloc'd, taken over) with status and the response's headers. Counted in the
 * metrics here, before a byte is sent, so a client that has its answer sees it counted.
 */
enum MHD_Result kh__http_send_text(struct kh_http_req *r, int status, char *text, size_t len,
				 const char *ctype, const struct kh_http_resp *resp,
				 const char *allow, int replayed);
char *kh__http_dump(const json_t *body, size_t *len);
enum MHD_Result kh__http_send_json(struct kh_http_req *r, int status, const json_t *body,
				 const struct kh_http_resp *resp, const char *allow);
enum MHD_Result kh__http_send_error(struct kh_http_req *r, kh_err e, const char *msg, const char *allow);
/* 405 has no code of its own in the registry: the body says method_not_allowed. */
enum MHD_Result kh__http_send_405(struct kh_http_req *r, const char *allow);
/* The path for the log line: printable ASCII only (no spaces or quotes), at most 200 chars. */
void kh__http_log_path(const char *in, char *out, size_t cap);
const char *kh__http_method_label(const char *m);
/* An error answer with one more header (Connection: close, Retry-After). */
enum MHD_Result kh__http_send_error_hdr(struct kh_http_req *r, int status, const char *code, const char *msg,
				      const char *name, const char *value);

/* ---- connections, targets and receive deadlines (http_conn.c) ---- */

int64_t kh__http_mono_ms(void);
/* The deadline record libmicrohttpd keeps for a connection (kh__http_on_connection), NULL when none. */
struct kh__http_conn *kh__http_track_of(struct MHD_Connection *c);
/* Start a receive deadline of ms milliseconds for a connection (0: none, the server has the turn). */
void kh__http_deadline_set(struct kh__http_conn *t, int phase, int64_t ms);
/*
 * libmicrohttpd's first word on a request: its target, raw, before any decoding. The request's
 * record starts here, so that the check of the raw target reaches the handler of its headers.
 */
void *kh__http_on_uri(void *cls, const char *uri, struct MHD_Connection *c);
/*
 * A connection begins and ends. While it lives, its record is in h->conns for the deadline
 * watcher: its head has head_timeout_s from now. libmicrohttpd closes the socket only after the
 * close notice, so the watcher never touches a descriptor that was closed and reused.
 */
void kh__http_on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
			  enum MHD_ConnectionNotificationCode code);
/* An address that missed a deadline waits out its ban before it connects again. */
enum MHD_Result kh__http_on_accept(void *cls, const struct sockaddr *addr, socklen_t addrlen);
/*
 * The deadline watcher: a connection whose request head or body is not in by its deadline is
 * shut down (its thread then sees the end of the stream and libmicrohttpd closes it), and its
 * address is refused new connections for a while. libmicrohttpd has an idle timeout only, which
 * a client sending a byte every few seconds never reaches.
 */
void *kh__http_watch_main(void *arg);

#endif
