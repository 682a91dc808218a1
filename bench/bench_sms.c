/*
 * bench_sms: the management center (src/center/sms/) through its real HTTP server on
 * loopback, next to the primitives its requests are made of, measured in the same run (report
 * ratios, never a bare time). Two questions from the issue's "Benchmarks":
 *
 * 1. Upload ingestion. M real cards are personalised in memory (as tests/unit/world.c does),
 *    registered and assigned through the API, and given their start-up EMMs (so each may export
 *    to M1). Before each round (untimed) the bench opens one upload session per upload
 *    (POST /v1/upload/sessions; the sequential open rate is printed as session_open_k1), has the
 *    card export a fresh block bound to the session's nonce (EXPORT P1=0 with the nonce: the
 *    card's answer to it, as `decoder connect` sends it, no separate hello) and, for two-block
 *    sessions, first a block for M1 (EXPORT P1=1), and builds the request bodies. Timed: the
 *    uploads, POST /v1/upload/sessions/{id} with an Idempotency-Key, from 1 and from K client
 *    threads (libcurl easy handles kept alive across rounds) against the center's connection
 *    threads: sessions of one block (upload_k1, upload_kK) and sessions of two, the fresh block
 *    and M1's, the shape a decoder sends (upload_b2_kK, blocks/s). Each block is checked in full
 *    by the center (Ed25519 under the card's certified key, kept once checked; AES-256-GCM under
 *    Ku); the blocks carry no purchase, so nothing is invoiced and no ACK USAGE is queued; each
 *    upload is committed with synchronous=FULL (acknowledged means durable) through the group
 *    committer, with whatever other uploads wait at that moment. The reference is the raw
 *    Ed25519 verification rate on the same blocks (EVP_DigestVerify over header | body | nonce,
 *    one EVP_PKEY per card reused, one thread), plus the pieces of a session: kh_cert_check,
 *    kh_hello_verify (not on the upload path any more), Ku + kh_usage_open_bound, an fdatasync
 *    of 4 KiB in the database's directory, a one-row SQLite commit with FULL on the same
 *    database, and an HTTP request answered from the store (GET /v1/credit-policy), one client.
 *    For the two-block sessions the bench also prints the process's CPU time per block (center
 *    and clients; /proc for the center's "MHD-" threads) and how many uploads shared a commit.
 * 2. EMM generation. C cards (default 100 000; -c) get real card certificates from the
 *    authority library (fresh Ed25519 key each, kh_authority_issue; no module personalisation)
 *    and are written straight into the center's store, one subscriber each, active and assigned,
 *    in transactions of 5000 (set-up, untimed: registering 100 000 cards through the API would
 *    take minutes of fsyncs; the rate of that path is what session_open and subscribe show).
 *    One rotation is run untimed first. Timed: POST /v1/service-keys/rotate, one request that
 *    queues SET KEY, sealed under each active card's Kp, for every card in one transaction
 *    (emm_rotate, EMMs/s); and POST /v1/subscribers/{id}/subscriptions for S subscribers per
 *    round (-s) from K clients (subscribe_k, one ENTITLE EMM and one durable commit per request:
 *    what "subscribe a product to all" costs without a bulk endpoint); and the bulk endpoint,
 *    POST /v1/products/{id}/subscriptions {"all": true} for a new product each round (created
 *    untimed): one request that subscribes every card's subscriber and queues one ENTITLE each,
 *    committed in chunks of KH_SMS_BULK_CHUNK (emm_subscribe_all, EMMs/s). Reference: sealing one
 *    SET KEY EMM raw, kh_cas_card_kp (HKDF) + kh_emm_seal (emm_seal_raw).
 *
 * 3. On PostgreSQL (-P: a throwaway cluster this run starts with tests/tools/pgtmp.sh and
 *    restarts once with pg_stat_statements loaded and shared_buffers at PostgreSQL's default;
 *    -D URL: an existing server, a role that may CREATE DATABASE; its databases are dropped at
 *    the end). Parts 1 and 2 then run on `keyhole serve` processes (the binary beside this one,
 *    or -K), for both backends alike: an SQLite center (one process), and a PostgreSQL database
 *    served by two processes on two ports with the same authority. Upload ingestion, two-block
 *    sessions from K clients, timed three ways per round: SQLite (upload_b2_kK_sqlite),
 *    PostgreSQL with every upload sent to the first process (_pg1), and spread over both (_pg2,
 *    upload i to process i % 2, its session opened there); raw Ed25519 verify on one thread.
 *    One untimed round first makes the connections (clients', and each center thread's store
 *    connection: on PostgreSQL a server process), which are kept alive between timed runs. EMMs:
 *    an SQLite and a PostgreSQL center with the same C cards, a rotation, a bulk subscription and
 *    S single subscriptions each per round; raw sealing. For each timed run: the CPU seconds
 *    of the serve processes, of the PostgreSQL server's processes (its postmaster and children,
 *    from /proc) and of this process (the clients); on PostgreSQL, from pg_stat_statements when
 *    loaded, statements, COMMITs, rows written and WAL bytes per request, and from pg_stat_wal
 *    the WAL flushes (fdatasync) per request and per second. The server reports pg_stat_wal only
 *    10 s after a backend goes idle: each timed run is followed by a wait of -W S seconds
 *    (10.5; 0 skips the flush counts). A 503 database_busy (the store's retries of a
 *    serialization failure ran out) is counted and left out of the accepted blocks, not a failure.
 *
 * Rounds of all benchmarks are interleaved (round 1 of each, then round 2, ...), R rounds (-r);
 * every figure is the median over rounds, a ratio the median of the per-round ratios. Options:
 *   -r R  rounds (default 5)        -t S  seconds per reference loop (default 0.3)
 *   -u N  uploads per round (300)   -M M  upload cards (64)       -k K  clients (32)
 *   -T T  center connections (256)  -c C  EMM cards (100000)      -s S  subscribes per round (500)
 *   -b NAME  only the benchmarks whose names contain NAME ("upload", "emm"; references too)
 *   -d DIR   parent of the temporary directories (default /tmp; must be a real disk for fsync)
 *   -A DIR   where the EMM part's authority directory goes (default /dev/shm when writable): each
 *            kh_authority_issue writes and fsyncs one certificate file (~3.5 ms on this disk, so
 *            100 000 would take ~6 minutes); the center only reads root.crt and master.key there
 *   -P / -D URL  the PostgreSQL comparison (3.) instead of 1. and 2. in process
 *   -K KEYHOLE   the keyhole binary it runs (default: beside this one)
 *   -W S         seconds to wait for PostgreSQL's WAL counts after each timed run (10.5; 0: none)
 * -n, -p, -e E and -m M (bench_pair's and bench_cas's, passed on by bench/run.sh) are ignored.
 * Output: `bench=` / `ratio=` lines (docs/performance.md), then '#' summary lines. The exit
 * status is non-zero only when a request or an operation fails.
 */
#include <dirent.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/evp.h>

#include "keyhole/apdu.h"
#include "keyhole/authority.h"
#include "keyhole/buf.h"
#include "keyhole/cas.h"
#include "keyhole/cert.h"
#include "keyhole/crypto.h"
#include "keyhole/device.h"
#include "keyhole/file.h"
#include "keyhole/host.h"
#include "keyhole/http.h"
#include "keyhole/sms.h"
#include "keyhole/softmodule.h"
#include "keyhole/store.h"
#include "keyhole/transport.h"
#include "keyhole/usage.h"

#include "util.h"

#define PRODUCT 7
#define UA_BASE 0x00400000u /* UAs of the EMM cards (the authority's own counter starts low) */
#define MAX_K 64

static int g_fail;

#define CHECK(expr)                                                                                                    \
	do {                                                                                                           \
		kh_err r_ = (expr);                                                                                    \
		if (r_ != KH_OK) {                                                                                     \
			fprintf(stderr, "bench_sms: %s:%d: %s: %s\n", __FILE__, __LINE__, #expr, kh_strerror(r_));    \
			exit(1);                                                                                       \
		}                                                                                                      \
	} while (0)

static void die(const char *what)
{
	fprintf(stderr, "bench_sms: %s\n", what);
	exit(1);
}

/* ---- HTTP client ---- */

struct buf {
	char *p;
	size_t n;
};

static size_t on_data(char *p, size_t sz, size_t n, void *u)
{
	struct buf *b = u;
	char *q = realloc(b->p, b->n + sz * n + 1);
	if (!q)
		return 0;
	memcpy(q + b->n, p, sz * n);
	b->n += sz * n;
	q[b->n] = 0;
	b->p = q;
	return sz * n;
}

/* One request on c (kept alive); the answer's body into *out (malloc'd, may be NULL); status. */
static long http_do(CURL *c, uint16_t port, const char *method, const char *path, const char *body, const char *idem,
		    char **out)
{
	char url[256], hdr[200];
	struct curl_slist *hl = NULL;
	struct buf b = {0};
	long status = 0;

	snprintf(url, sizeof url, "http://127.0.0.1:%u%s", port, path);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 600L);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
	hl = curl_slist_append(hl, "Content-Type: application/json");
	if (idem) {
		snprintf(hdr, sizeof hdr, "Idempotency-Key: %s", idem);
		hl = curl_slist_append(hl, hdr);
	}
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
	if (body) {
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	} else {
		curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
		curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	}
	if (curl_easy_perform(c) == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_slist_free_all(hl);
	if (out)
		*out = b.p;
	else
		free(b.p);
	return status;
}

/* A request that must answer want; returns the body (free it). */
static char *http_must(CURL *c, uint16_t port, const char *method, const char *path, const char *body, long want)
{
	char *out = NULL;
	long st = http_do(c, port, method, path, body, NULL, &out);
	if (st != want) {
		fprintf(stderr, "bench_sms: %s %s -> %ld %s\n", method, path, st, out ? out : "");
		exit(1);
	}
	return out;
}

/* The integer after "key": in a flat JSON answer (enough for the center's answers). */
static long long json_int(const char *j, const char *key)
{
	char pat[64];
	const char *p;
	snprintf(pat, sizeof pat, "\"%s\":", key);
	if (!j || !(p = strstr(j, pat)))
		die("answer without the expected field");
	p += strlen(pat);
	if (*p == '"')
		p++;
	return strtoll(p, NULL, 10);
}

static char *json_str(const char *j, const char *key, char *out, size_t cap)
{
	char pat[64];
	const char *p, *e;
	snprintf(pat, sizeof pat, "\"%s\":\"", key);
	if (!j || !(p = strstr(j, pat)))
		die("answer without the expected string");
	p += strlen(pat);
	if (!(e = strchr(p, '"')) || (size_t)(e - p) >= cap)
		die("answer string too long");
	memcpy(out, p, (size_t)(e - p));
	out[e - p] = 0;
	return out;
}

static char *b64(const uint8_t *p, size_t n)
{
	size_t cap = kh_b64url_len(n) + 1;
	char *s = malloc(cap);
	if (!s)
		die("out of memory");
	CHECK(kh_b64url_encode(p, n, s, cap));
	return s;
}

/* K client threads running jobs[0..n-1] (method + path + body + key), each answer wanting want. */
struct job {
	char path[64];
	char *body;
	char idem[40];
	uint16_t port; /* the center instance it goes to; 0: the pool's */
};

struct pool {
	CURL *c[MAX_K];
	int k;
	uint16_t port;
	const char *method;
	struct job *jobs;
	size_t n;
	long want;
	const char *must; /* a substring every answer must hold, or NULL */
	int busy_ok;      /* 1: a 503 database_busy is counted in busy, not a failure */
	atomic_size_t next;
	atomic_int bad, busy;
};

static void *pool_run(void *arg)
{
	struct pool *p = ((struct pool **)arg)[0];
	CURL *c = p->c[(size_t)((struct pool **)arg)[1]];
	size_t i;

	while ((i = atomic_fetch_add(&p->next, 1)) < p->n) {
		char *out = NULL;
		struct job *j = &p->jobs[i];
		long st = http_do(c, j->port ? j->port : p->port, p->method, j->path, j->body, j->idem[0] ? j->idem : NULL,
				  &out);
		if (p->busy_ok && st == 503 && out && strstr(out, "\"database_busy\"")) {
			atomic_fetch_add(&p->busy, 1);
		} else if (st != p->want || (p->must && (!out || !strstr(out, p->must)))) {
			if (atomic_fetch_add(&p->bad, 1) == 0)
				fprintf(stderr, "bench_sms: %s %s -> %ld %s\n", p->method, j->path, st, out ? out : "");
		}
		free(out);
	}
	return NULL;
}

/* Run the jobs with k of the pool's clients; returns the wall time in seconds. */
static double pool_go(struct pool *p, int k, const char *method, struct job *jobs, size_t n, long want,
		      const char *must)
{
	pthread_t th[MAX_K];
	void *args[MAX_K][2];
	double t0, t1;

	p->method = method;
	p->jobs = jobs;
	p->n = n;
	p->want = want;
	p->must = must;
	atomic_store(&p->next, 0);
	atomic_store(&p->bad, 0);
	atomic_store(&p->busy, 0);
	t0 = bench_now_s();
	for (int i = 0; i < k; i++) {
		args[i][0] = p;
		args[i][1] = (void *)(intptr_t)i;
		if (pthread_create(&th[i], NULL, pool_run, args[i]) != 0)
			die("pthread_create");
	}
	for (int i = 0; i < k; i++)
		pthread_join(th[i], NULL);
	t1 = bench_now_s();
	if (atomic_load(&p->bad)) {
		fprintf(stderr, "bench_sms: %d of %zu requests failed\n", atomic_load(&p->bad), n);
		g_fail = 1;
	}
	return t1 - t0;
}

/* ---- a center in a directory of its own ---- */

#define MAX_INST 2 /* `keyhole serve` processes on one database */

struct center {
	char dir[256], auth_tmp[256], auth_dir[300], db[300];
	char url[512]; /* the store the center runs on: db (SQLite), or a PostgreSQL URL */
	struct kh_authority *auth;
	uint8_t root_pk[32], master[32];
	struct kh_sms *sms; /* in process; NULL when the center is `keyhole serve` processes */
	struct kh_http *h;
	uint16_t port;
	pid_t pid[MAX_INST]; /* the serve processes (ninst of them), each on its own port */
	uint16_t ports[MAX_INST];
	int ninst;
	CURL *c; /* the set-up client */
};

/*
 * The directory, the authority (auth_parent: where it goes; NULL: next to the database), or
 * share's authority when share is not NULL (share outlives ce: the same cards are good for both).
 */
static void center_dirs(struct center *ce, const char *parent, const char *auth_parent, const char *name,
			const struct center *share)
{
	char tmpl[256], *hex = NULL;
	uint8_t *data = NULL;
	size_t len = 0;

	snprintf(tmpl, sizeof tmpl, "%s/%s-XXXXXX", parent, name);
	CHECK(bench_mkdtemp(ce->dir, sizeof ce->dir, tmpl));
	snprintf(ce->db, sizeof ce->db, "%s/center.db", ce->dir);
	snprintf(ce->url, sizeof ce->url, "%s", ce->db);
	if (!(ce->c = curl_easy_init()))
		die("curl_easy_init");
	if (share) {
		snprintf(ce->auth_dir, sizeof ce->auth_dir, "%s", share->auth_dir);
		memcpy(ce->root_pk, share->root_pk, sizeof ce->root_pk);
		memcpy(ce->master, share->master, sizeof ce->master);
		return;
	}
	if (auth_parent) {
		snprintf(tmpl, sizeof tmpl, "%s/%s-auth-XXXXXX", auth_parent, name);
		CHECK(bench_mkdtemp(ce->auth_tmp, sizeof ce->auth_tmp, tmpl));
		snprintf(ce->auth_dir, sizeof ce->auth_dir, "%s/authority", ce->auth_tmp);
	} else {
		snprintf(ce->auth_dir, sizeof ce->auth_dir, "%s/authority", ce->dir);
	}
	CHECK(kh_authority_init(ce->auth_dir, "Bench operator"));
	CHECK(kh_authority_open(ce->auth_dir, &ce->auth));
	kh_authority_root_pk(ce->auth, ce->root_pk);
	if (asprintf(&hex, "%s/master.key", ce->auth_dir) < 0)
		die("out of memory");
	CHECK(kh_keyfile_read(hex, 4096, &data, &len));
	CHECK(kh_hex_decode((const char *)data, len, ce->master, 32));
	kh_file_free(data, len);
	free(hex);
}

/* The center in this process, on its SQLite file. */
static void center_start(struct center *ce, const char *parent, const char *auth_parent, const char *name,
			 unsigned threads)
{
	struct kh_sms_config cfg = {0};
	struct kh_http_config hc = {0};
	const char *what = NULL;
	kh_err r;

	center_dirs(ce, parent, auth_parent, name, NULL);
	cfg.db = ce->db;
	/* The bench opens a round's sessions for its M cards before it uploads (n/M each, more than
	 * the default cap of sessions open per card, which stands for decoders, one session each). */
	cfg.upload_sessions_max = 100000;
	cfg.authority_dir = ce->auth_dir;
	if ((r = kh_sms_new(&cfg, &ce->sms, &what)) != KH_OK) {
		fprintf(stderr, "bench_sms: kh_sms_new: %s: %s\n", what ? what : "", kh_strerror(r));
		exit(1);
	}
	hc.port = 0;
	hc.threads = threads;
	CHECK(kh_http_new(&hc, &ce->h));
	CHECK(kh_sms_add_routes(ce->sms, ce->h));
	CHECK(kh_http_start(ce->h));
	ce->port = kh_http_port(ce->h);
	ce->ports[0] = ce->port;
	ce->ninst = 1;
}

/*
 * The center as ninst `keyhole serve` processes (the binary keyhole) on the store url (NULL:
 * an SQLite file in its directory), each on a port of its own on loopback, all with the same
 * authority. Each logs at warn (a server logs every request at info) into its directory, has
 * no per-address rate limit (the bench's 32 clients are one address), and keeps an idle client
 * connection 60 s (not 10: the clients' connections, and the store connections of their
 * threads, outlast the waits for PostgreSQL's counts between timed runs). share: as for
 * center_dirs.
 */
static void center_spawn(struct center *ce, const char *parent, const char *auth_parent, const char *name,
			 const struct center *share, unsigned threads, const char *keyhole, const char *url, int ninst)
{
	char thr[16];

	center_dirs(ce, parent, auth_parent, name, share);
	if (url)
		snprintf(ce->url, sizeof ce->url, "%s", url);
	snprintf(thr, sizeof thr, "%u", threads);
	for (int i = 0; i < ninst; i++) {
		char log[320], line[128];
		int fds[2];
		FILE *f;
		pid_t pid, parent_pid = getpid();

		snprintf(log, sizeof log, "%s/serve%d.log", ce->dir, i);
		if (pipe(fds) != 0)
			die("pipe");
		fflush(stdout);
		fflush(stderr);
		if ((pid = fork()) < 0)
			die("fork");
		if (pid == 0) {
			int lfd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
			prctl(PR_SET_PDEATHSIG, SIGTERM);
			if (getppid() != parent_pid || lfd < 0)
				_exit(1);
			dup2(fds[1], 1);
			dup2(lfd, 2);
			close(fds[0]);
			close(fds[1]);
			close(lfd);
			setenv("KEYHOLE_LOG", "warn", 1);
			execl(keyhole, keyhole, "serve", "--db", ce->url, "--authority", ce->auth_dir, "--listen",
			      "127.0.0.1:0", "--threads", thr, "--open-rate", "0", "--header-timeout", "60", (char *)NULL);
			_exit(127);
		}
		close(fds[1]);
		ce->pid[i] = pid;
		ce->ninst = i + 1;
		if (!(f = fdopen(fds[0], "r")))
			die("fdopen");
		if (!fgets(line, sizeof line, f) || sscanf(line, "listening=127.0.0.1:%hu", &ce->ports[i]) != 1) {
			fprintf(stderr, "bench_sms: %s serve --db %s did not start; its log %s says:\n", keyhole,
				strncmp(ce->url, "postgres", 8) == 0 ? "postgresql://..." : ce->url, log);
			if ((f = freopen(log, "r", f)) != NULL)
				while (fgets(line, sizeof line, f))
					fputs(line, stderr);
			exit(1);
		}
		fclose(f);
	}
	ce->port = ce->ports[0];
}

static void center_stop(struct center *ce)
{
	if (ce->c)
		curl_easy_cleanup(ce->c);
	kh_http_free(ce->h);
	kh_sms_free(ce->sms);
	for (int i = 0; i < ce->ninst; i++) {
		int st = 0;
		if (ce->pid[i] <= 0)
			continue;
		kill(ce->pid[i], SIGTERM);
		if (waitpid(ce->pid[i], &st, 0) == ce->pid[i] && !(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
			fprintf(stderr, "bench_sms: a keyhole serve ended with status %d (log in %s)\n", st, ce->dir);
			g_fail = 1;
			ce->dir[0] = 0; /* kept for its log */
		}
	}
	if (ce->auth)
		kh_authority_free(ce->auth);
	kh_wipe(ce->master, sizeof ce->master);
	if (ce->dir[0])
		bench_rmtree(ce->dir);
	if (ce->auth_tmp[0])
		bench_rmtree(ce->auth_tmp);
}

/* ---- part 1: upload ingestion ---- */

struct card {
	struct kh_softmod *sm;
	struct kh_transport t;
	uint32_t ua;
	uint8_t cert[KH_CERT_MAX];
	size_t cert_len;
	uint8_t pk[32];
	EVP_PKEY *pkey;
};

/* What one prepared upload carries, kept for the references. */
struct upl {
	struct card *card;
	uint8_t nonce[KH_HELLO_NONCE_MAX];
	size_t nonce_len;
	uint8_t hello[KH_HELLO_LEN + 2]; /* + the status word kh_host_apdu leaves in resp */
	uint8_t blk[KH_USAGE_MAX + 2];
	size_t blk_len;
	uint8_t m1[KH_USAGE_MAX + 2]; /* the block M1 would hold (EXPORT P1=1), for two-block sessions */
	size_t m1_len;
	uint8_t msg[KH_USAGE_MAX + KH_HELLO_NONCE_MAX]; /* what blk's signature covers: header | body | nonce */
	size_t msg_len;
};

struct up {
	struct center ce;
	struct card *cards;
	int m;
	size_t next_card;
	struct pool pool;
	struct job *jobs;
	struct upl *upl;
	size_t n;
};

/* u->ce is started (center_start or center_spawn); its set-up goes to its first instance. */
static void up_setup(struct up *u, int m, size_t n, int k)
{
	char path[96], body[2048], *ans, *c64;
	struct kh_issued *iss = calloc(1, sizeof *iss);
	double t0 = bench_now_s();

	if (!iss)
		die("out of memory");
	u->m = m;
	u->n = n;
	if (!(u->cards = calloc((size_t)m, sizeof *u->cards)) || !(u->jobs = calloc(n, sizeof *u->jobs)) ||
	    !(u->upl = calloc(n, sizeof *u->upl)))
		die("out of memory");
	free(http_must(u->ce.c, u->ce.port, "PUT", "/v1/credit-policy", "{\"initial_credit\":100,\"reload_amount\":50}", 200));
	for (int i = 0; i < m; i++) {
		struct card *cd = &u->cards[i];
		struct kh_cert_info ci;
		long long sub;

		CHECK(kh_softmod_new_blank(&cd->sm));
		kh_transport_inproc(&cd->t, kh_softmod_module(cd->sm));
		CHECK(kh_authority_personalise(u->ce.auth, &cd->t, KH_ROLE_CARD, 0, iss));
		cd->ua = iss->ua;
		memcpy(cd->cert, iss->sign_der, iss->sign_len);
		cd->cert_len = iss->sign_len;
		CHECK(kh_cert_check(cd->cert, cd->cert_len, u->ce.root_pk, KH_ROLE_CARD, KH_CERT_KEY_ED25519,
				    (uint64_t)time(NULL), &ci));
		memcpy(cd->pk, ci.pub, 32);
		if (!(cd->pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, cd->pk, 32)))
			die("EVP_PKEY_new_raw_public_key");
		c64 = b64(cd->cert, cd->cert_len);
		snprintf(body, sizeof body, "{\"certificate\":\"%s\"}", c64);
		free(c64);
		free(http_must(u->ce.c, u->ce.port, "POST", "/v1/cards", body, 201));
		snprintf(body, sizeof body, "{\"name\":\"Uploader %d\"}", i);
		ans = http_must(u->ce.c, u->ce.port, "POST", "/v1/subscribers", body, 201);
		sub = json_int(ans, "id");
		free(ans);
		snprintf(path, sizeof path, "/v1/cards/%08X/assign", cd->ua);
		snprintf(body, sizeof body, "{\"subscriber_id\":%lld}", sub);
		free(http_must(u->ce.c, u->ce.port, "POST", path, body, 200));
		/* The card takes its start-up EMMs (keys, credit, AUTHORISE EXPORT: a first card may
		 * export to M1), as a decoder with a line would hand them over. */
		snprintf(path, sizeof path, "/v1/cards/%08X/emm?since=0", cd->ua);
		ans = http_must(u->ce.c, u->ce.port, "GET", path, NULL, 200);
		{
			json_error_t jerr;
			json_t *j = json_loads(ans, 0, &jerr), *e;
			size_t x;
			if (!j)
				die("the card's EMM queue is not JSON");
			json_array_foreach(json_object_get(j, "emms"), x, e) {
				uint8_t sec[KH_EMM_MAX], resp[64];
				size_t sn = 0, rn = 0;
				uint16_t sw;
				CHECK(kh_json_get_b64(e, "section", sec, sizeof sec, &sn, 0));
				CHECK(kh_host_apdu(&cd->t, KH_INS_EMM, 0, sec, sn, resp, sizeof resp, &rn, &sw));
			}
			json_decref(j);
		}
		free(ans);
	}
	u->pool.k = k;
	u->pool.port = u->ce.port;
	for (int i = 0; i < k; i++)
		if (!(u->pool.c[i] = curl_easy_init()))
			die("curl_easy_init");
	free(iss);
	printf("# set-up: %d cards personalised, registered and assigned through the API in %.1f s\n", m,
	       bench_now_s() - t0);
}

/*
 * Prepare n uploads: open the sessions (sequentially, one client: timed, the rate is returned),
 * then have each card sign its session's nonce and export a fresh block; build the bodies.
 * Upload i goes to the center's instance i % ninst.
 */
static double up_prepare(struct up *u, size_t n, int nblocks, int ninst)
{
	char *ans, sid[24], nonce64[128], rnd_hex[33];
	uint8_t rnd[16];
	double t0, t;
	uint16_t sw;

	t0 = bench_now_s();
	for (size_t i = 0; i < n; i++) {
		struct upl *p = &u->upl[i];
		char body[64];
		uint16_t port = u->ce.ports[i % (size_t)ninst];
		p->card = &u->cards[u->next_card++ % (size_t)u->m];
		snprintf(body, sizeof body, "{\"ua\":\"%08X\"}", p->card->ua);
		/* the session is opened on the instance its upload goes to (any would do: a session is
		 * a token every instance with the same authority checks) */
		ans = http_must(u->ce.c, port, "POST", "/v1/upload/sessions", body, 201);
		u->jobs[i].port = port;
		json_str(ans, "session", sid, sizeof sid);
		json_str(ans, "nonce", nonce64, sizeof nonce64);
		free(ans);
		CHECK(kh_b64url_decode(nonce64, strlen(nonce64), p->nonce, sizeof p->nonce, &p->nonce_len));
		snprintf(u->jobs[i].path, sizeof u->jobs[i].path, "/v1/upload/sessions/%s", sid);
	}
	t = bench_now_s() - t0;
	for (size_t i = 0; i < n; i++) {
		struct upl *p = &u->upl[i];
		struct job *j = &u->jobs[i];
		size_t hl = 0;
		char *b64s;

		/* a hello, for the hello_verify reference only: the upload does not carry one */
		CHECK(kh_host_apdu(&p->card->t, KH_INS_HELLO, 0, p->nonce, p->nonce_len, p->hello, sizeof p->hello, &hl,
				   &sw));
		if (hl != KH_HELLO_LEN)
			die("hello of an unexpected length");
		/* Two blocks: what the decoder sends in steady state, M1's block (exported for M1 at the
		 * end of the last session, P1=1) and the fresh one the session asks for (P1=0). */
		if (nblocks == 2)
			CHECK(kh_host_apdu(&p->card->t, KH_INS_EXPORT, 1, NULL, 0, p->m1, sizeof p->m1, &p->m1_len, &sw));
		/* the fresh block bound to the session's nonce: the card's answer to it as well, as
		 * `decoder connect` sends it (no separate hello) */
		CHECK(kh_host_apdu(&p->card->t, KH_INS_EXPORT, 0, p->nonce, p->nonce_len, p->blk, sizeof p->blk, &p->blk_len,
				   &sw));
		p->msg_len = p->blk_len - KH_USAGE_SIG_LEN;
		memcpy(p->msg, p->blk, p->msg_len);
		memcpy(p->msg + p->msg_len, p->nonce, p->nonce_len);
		p->msg_len += p->nonce_len;
		b64s = b64(p->blk, p->blk_len);
		if (nblocks == 2) {
			char *m64 = b64(p->m1, p->m1_len), *both;
			if (asprintf(&both, "%s\",\"%s", b64s, m64) < 0)
				die("out of memory");
			free(m64);
			free(b64s);
			b64s = both;
		}
		free(j->body);
		/* emm_seq: as a decoder whose card is up to date (it applied every EMM it was handed)
		 * would report it; bodies are made before the timed rounds, so the next sequence
		 * number is not known here, and a high value stands for "up to date". Without it the
		 * center answers every queued EMM of the card, up to 32, each time. */
		if (asprintf(&j->body, "{\"blocks\":[\"%s\"],\"emm_seq\":4294967294}", b64s) < 0)
			die("out of memory");
		free(b64s);
		CHECK(kh_random(rnd, sizeof rnd));
		kh_hex_encode(rnd, sizeof rnd, rnd_hex);
		snprintf(j->idem, sizeof j->idem, "%s", rnd_hex);
	}
	return (double)n / t;
}

static void up_free(struct up *u)
{
	for (int i = 0; i < u->pool.k; i++)
		if (u->pool.c[i])
			curl_easy_cleanup(u->pool.c[i]);
	center_stop(&u->ce);
	for (int i = 0; u->cards && i < u->m; i++) {
		EVP_PKEY_free(u->cards[i].pkey);
		kh_softmod_free(u->cards[i].sm);
	}
	for (size_t i = 0; u->jobs && i < u->n; i++)
		free(u->jobs[i].body);
	free(u->jobs);
	free(u->upl);
	free(u->cards);
}

/* ---- part 2: EMM generation ---- */

struct em {
	struct center ce;
	size_t c;
	int64_t *sub;      /* subscriber of card i */
	struct pool pool;
	struct job *jobs;
	size_t s;
	size_t next_sub;
};

struct fill_tx {
	struct em *e;
	uint8_t (*der)[KH_CERT_MAX];
	size_t *len;
	size_t from, to;
};

static kh_err fill_tx(struct kh_store *s, void *arg)
{
	struct fill_tx *f = arg;
	char name[32];
	kh_err r;

	for (size_t i = f->from; i < f->to; i++) {
		struct kh_store_card c = {0};
		snprintf(name, sizeof name, "Subscriber %zu", i);
		if ((r = kh_store_subscriber_add(s, name, &f->e->sub[i])) != KH_OK ||
		    (r = kh_store_card_add(s, UA_BASE + (uint32_t)i, KH_CARD_KIND_CARD, f->der[i - f->from], f->len[i - f->from])) !=
			    KH_OK)
			return r;
		c.ua = UA_BASE + (uint32_t)i;
		c.kind = KH_CARD_KIND_CARD;
		c.subscriber_id = f->e->sub[i];
		c.state = KH_CARD_ACTIVE;
		c.export_authorised = 1;
		if ((r = kh_store_card_update(s, &c)) != KH_OK)
			return r;
	}
	return KH_OK;
}

/*
 * The ne EMM centers es[0..ne-1], started by the caller under es[0]'s authority (center_dirs'
 * share), get the same c cards: issued once by that authority, written into each store.
 */
static void em_setup(struct em **es, int ne, size_t c, size_t s, int k)
{
	enum { BATCH = 5000 };
	uint8_t (*der)[KH_CERT_MAX] = malloc(BATCH * sizeof *der);
	size_t *len = malloc(BATCH * sizeof *len);
	struct kh_store *st[MAX_INST + 1] = {NULL};
	double t0 = bench_now_s(), t_issue = 0, t_store[MAX_INST + 1] = {0}, t1, t;
	char *ans;

	if (!der || !len || ne > MAX_INST + 1)
		die("out of memory");
	for (int x = 0; x < ne; x++) {
		struct em *e = es[x];
		e->c = c;
		e->s = s;
		if (!(e->sub = calloc(c, sizeof *e->sub)) || !(e->jobs = calloc(s, sizeof *e->jobs)))
			die("out of memory");
		CHECK(kh_store_open(e->ce.url, &st[x]));
	}
	for (size_t from = 0; from < c; from += BATCH) {
		size_t to = from + BATCH < c ? from + BATCH : c;
		t1 = bench_now_s();
		for (size_t i = from; i < to; i++) {
			uint8_t sk[32], pk[32];
			CHECK(kh_ed25519_keygen(sk, pk));
			kh_wipe(sk, sizeof sk);
			CHECK(kh_authority_issue(es[0]->ce.auth, KH_ROLE_CARD, UA_BASE + (uint32_t)i, KH_CERT_KEY_ED25519,
						 pk, "sign", der[i - from], KH_CERT_MAX, &len[i - from]));
		}
		t_issue += bench_now_s() - t1;
		for (int x = 0; x < ne; x++) {
			struct fill_tx f = {es[x], der, len, from, to};
			t = bench_now_s();
			CHECK(kh_store_run_tx(st[x], fill_tx, &f));
			t_store[x] += bench_now_s() - t;
		}
	}
	free(der);
	free(len);
	printf("# set-up: %zu card certificates issued in %.1f s (kh_authority_issue, one file each, authority in %s)\n",
	       c, t_issue, es[0]->ce.auth_dir);
	for (int x = 0; x < ne; x++) {
		struct em *e = es[x];
		kh_store_close(st[x]);
		ans = http_must(e->ce.c, e->ce.port, "POST", "/v1/products", "{\"id\":7,\"name\":\"Sport\"}", 201);
		free(ans);
		t1 = bench_now_s();
		ans = http_must(e->ce.c, e->ce.port, "POST", "/v1/service-keys/rotate", "{\"key_id\":1}", 201);
		t = bench_now_s() - t1;
		if ((size_t)json_int(ans, "emms_queued") != c)
			die("the first rotation did not queue one EMM per card");
		free(ans);
		printf("# set-up %s: cards stored active and assigned in %.1f s; first rotation (untimed; creates each "
		       "card's EMM sequence row): %.2f s, %.0f EMMs/s\n",
		       strncmp(e->ce.url, "postgres", 8) == 0 ? "PostgreSQL" : "SQLite", t_store[x], t, (double)c / t);
		e->pool.k = k;
		e->pool.port = e->ce.port;
		for (int i = 0; i < k; i++)
			if (!(e->pool.c[i] = curl_easy_init()))
				die("curl_easy_init");
	}
	printf("# set-up: EMM centers ready in %.1f s\n", bench_now_s() - t0);
}

static void em_free(struct em *e)
{
	for (int i = 0; i < e->pool.k; i++)
		if (e->pool.c[i])
			curl_easy_cleanup(e->pool.c[i]);
	center_stop(&e->ce);
	for (size_t i = 0; e->jobs && i < e->s; i++)
		free(e->jobs[i].body);
	free(e->jobs);
	free(e->sub);
}

/*
 * emm_subscribe_all, round r: a new product (untimed), then one timed
 * POST /v1/products/{id}/subscriptions {"all": true}, which must subscribe every card's
 * subscriber and queue one EMM each. EMMs/s; *chunk_ms gets the mean time of one chunk.
 */
static double subscribe_all(struct em *e, int r, double *chunk_ms)
{
	char path[64], body[64], key[48], *ans = NULL;
	uint32_t product = 1000 + (uint32_t)r;
	long long chunks;
	double t;

	snprintf(body, sizeof body, "{\"id\":%u,\"name\":\"Bulk %d\"}", product, r);
	free(http_must(e->ce.c, e->ce.port, "POST", "/v1/products", body, 201));
	snprintf(path, sizeof path, "/v1/products/%u/subscriptions", product);
	snprintf(key, sizeof key, "bench-subscribe-all-%u", product);
	t = bench_now_s();
	if (http_do(e->ce.c, e->ce.port, "POST", path, "{\"all\":true,\"start\":0,\"end\":4000000000}", key, &ans) !=
	    201)
		die(ans ? ans : "POST /v1/products/{id}/subscriptions failed");
	t = bench_now_s() - t;
	if ((size_t)json_int(ans, "subscribers") != e->c || (size_t)json_int(ans, "emms_queued") != e->c ||
	    json_int(ans, "skipped") != 0)
		die("the bulk subscription did not reach every card once");
	chunks = json_int(ans, "chunks");
	free(ans);
	*chunk_ms = chunks > 0 ? t * 1e3 / (double)chunks : 0;
	return (double)e->c / t;
}

/* One timed rotation (POST /v1/service-keys/rotate), which must queue one EMM per card: seconds. */
static double rotate(struct em *e)
{
	double t = bench_now_s();
	char *ans = http_must(e->ce.c, e->ce.port, "POST", "/v1/service-keys/rotate", "{\"key_id\":1}", 201);
	t = bench_now_s() - t;
	if ((size_t)json_int(ans, "emms_queued") != e->c)
		die("a rotation did not queue one EMM per card");
	free(ans);
	return t;
}

/* The next e->s subscribers subscribed one request each from k clients: seconds. */
static double subscribe_k(struct em *e, int k)
{
	for (size_t i = 0; i < e->s; i++) {
		struct job *j = &e->jobs[i];
		snprintf(j->path, sizeof j->path, "/v1/subscribers/%lld/subscriptions", (long long)e->sub[e->next_sub++ % e->c]);
		free(j->body);
		if (asprintf(&j->body, "{\"product_id\":%d,\"start\":0,\"end\":4000000000}", PRODUCT) < 0)
			die("out of memory");
	}
	return pool_go(&e->pool, k, "POST", e->jobs, e->s, 201, "\"emms_queued\":1");
}

/* ---- the benchmarks ---- */

enum {
	B_OPEN,       /* session_open_k1: POST /v1/upload/sessions, one client (opened in the prepare step) */
	B_UP1,        /* upload_k1 */
	B_UPK,        /* upload_k<K> */
	B_UPB2,       /* upload_b2_k<K>: sessions of two blocks, the fresh one and M1's (the decoder's shape) */
	B_VERIFY,     /* ed25519_verify_raw */
	B_CERT,       /* cert_check */
	B_HELLO,      /* hello_verify */
	B_USAGE,      /* usage_open (Ku HKDF + verify + AES-GCM + TLV) */
	B_FSYNC,      /* fdatasync_4k */
	B_COMMIT,     /* store_commit_full */
	B_HTTP,       /* http_get_k1 */
	B_ROTATE,     /* emm_rotate */
	B_SEAL,       /* emm_seal_raw */
	B_SUBSCRIBE,  /* subscribe_k<K> */
	B_SUBALL,     /* emm_subscribe_all */
	NB
};

static int part_of(int b)
{
	return b >= B_ROTATE ? 2 : 1;
}

struct opts {
	int rounds, m, k;
	double t;
	size_t n, c, s;
	unsigned threads;
	const char *only, *parent, *auth_parent;
	int pg_start;        /* -P: the PostgreSQL comparison on a throwaway cluster of this run */
	const char *pg_url;  /* -D URL: ... on that server */
	char keyhole[4096];  /* -K: the keyhole binary the PostgreSQL comparison runs */
	double settle;       /* -W: seconds to wait for PostgreSQL's WAL counts after each piece of work */
};

static int wanted(const struct opts *o, const char *name)
{
	return !o->only || strstr(name, o->only) != NULL;
}

/* Loop fn over the prepared uploads for at least t seconds; returns operations per second. */
typedef void (*op_fn)(void *ctx, size_t i);

static double loop_rate(op_fn fn, void *ctx, size_t n, double t)
{
	double t0 = bench_now_s(), t1;
	size_t ops = 0;

	do {
		for (size_t i = 0; i < n; i++)
			fn(ctx, i);
		ops += n;
		t1 = bench_now_s();
	} while (t1 - t0 < t);
	return (double)ops / (t1 - t0);
}

static EVP_MD_CTX *g_mdctx;

/*
 * The CPU seconds (utime + stime) of the /proc stat file path (a process's or a thread's), and
 * in *ppid (may be NULL) its parent's pid; -1 when it cannot be read (the process is gone).
 */
static double stat_cpu_s(const char *path, long *ppid)
{
	char st[1024];
	const char *p;
	unsigned long ut = 0, stt = 0;
	long pp = 0;
	size_t n;
	FILE *f = fopen(path, "r");

	if (!f)
		return -1;
	n = fread(st, 1, sizeof st - 1, f);
	fclose(f);
	st[n] = 0;
	/* field 4 (ppid), 14 and 15 (utime, stime), counted after the ")" that ends the name */
	if (!(p = strrchr(st, ')')) ||
	    sscanf(p + 2, "%*c %ld %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &pp, &ut, &stt) != 3)
		return -1;
	if (ppid)
		*ppid = pp;
	return (double)(ut + stt) / (double)sysconf(_SC_CLK_TCK);
}

/* CPU seconds (user + system) used so far by this process's threads named "MHD-worker": the
 * center's HTTP threads, whose share of the CPU is the center's (the rest is the clients'). */
static double center_cpu_s(void)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *de;
	double sum = 0, c;

	if (!d)
		return 0;
	while ((de = readdir(d))) {
		char path[300], comm[32] = "";
		FILE *f;
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof path, "/proc/self/task/%s/comm", de->d_name);
		if (!(f = fopen(path, "r")))
			continue;
		if (!fgets(comm, sizeof comm, f))
			comm[0] = 0;
		fclose(f);
		if (strncmp(comm, "MHD-", 4) != 0)
			continue;
		snprintf(path, sizeof path, "/proc/self/task/%s/stat", de->d_name);
		if ((c = stat_cpu_s(path, NULL)) > 0)
			sum += c;
	}
	closedir(d);
	return sum;
}

/* User + system CPU seconds of this process (all threads). */
static double cpu_s(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
	       (double)ru.ru_stime.tv_usec / 1e6;
}

static void op_verify(void *ctx, size_t i)
{
	struct upl *p = &((struct up *)ctx)->upl[i];
	EVP_MD_CTX_reset(g_mdctx);
	if (EVP_DigestVerifyInit(g_mdctx, NULL, NULL, NULL, p->card->pkey) != 1 ||
	    EVP_DigestVerify(g_mdctx, p->blk + p->blk_len - KH_USAGE_SIG_LEN, KH_USAGE_SIG_LEN, p->msg, p->msg_len) != 1)
		die("raw Ed25519 verify failed");
}

static void op_cert(void *ctx, size_t i)
{
	struct up *u = ctx;
	struct card *cd = u->upl[i].card;
	struct kh_cert_info ci;
	CHECK(kh_cert_check(cd->cert, cd->cert_len, u->ce.root_pk, KH_ROLE_CARD, KH_CERT_KEY_ED25519,
			    (uint64_t)time(NULL), &ci));
}

static void op_hello(void *ctx, size_t i)
{
	struct upl *p = &((struct up *)ctx)->upl[i];
	struct kh_usage_hdr h;
	CHECK(kh_hello_verify(p->card->pk, p->nonce, p->nonce_len, p->hello, KH_HELLO_LEN, &h));
}

static struct kh_usage g_usage;

static void op_usage(void *ctx, size_t i)
{
	struct up *u = ctx;
	struct upl *p = &u->upl[i];
	uint8_t ku[32];
	CHECK(kh_cas_card_ku(u->ce.master, p->card->ua, ku));
	CHECK(kh_usage_open_bound(ku, p->card->pk, p->blk, p->blk_len, p->nonce, p->nonce_len, &g_usage));
	kh_wipe(ku, sizeof ku);
}

static double fsync_rate(const char *dir, double t)
{
	char path[320];
	uint8_t page[4096];
	double t0, t1;
	size_t ops = 0;
	int fd;

	memset(page, 0xA5, sizeof page);
	snprintf(path, sizeof path, "%s/fsync.bench", dir);
	if ((fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600)) < 0)
		die("cannot create the fsync file");
	/* 4 MiB written and synced first: overwriting allocated pages, as SQLite does once its WAL
	 * has grown (appending would add a metadata journal commit to every fdatasync) */
	for (size_t i = 0; i < 1024; i++)
		if (pwrite(fd, page, sizeof page, (off_t)(i * sizeof page)) != (ssize_t)sizeof page)
			die("pwrite");
	if (fsync(fd) != 0)
		die("fsync");
	t0 = bench_now_s();
	do {
		/* successive pages, as a WAL does between checkpoints; wrap at 4 MiB */
		if (pwrite(fd, page, sizeof page, (off_t)((ops % 1024) * sizeof page)) != (ssize_t)sizeof page ||
		    fdatasync(fd) != 0)
			die("pwrite/fdatasync");
		ops++;
		t1 = bench_now_s();
	} while (t1 - t0 < t);
	close(fd);
	unlink(path);
	return (double)ops / (t1 - t0);
}

static double commit_rate(struct kh_store *st, double t)
{
	double t0 = bench_now_s(), t1;
	size_t ops = 0;
	int64_t id;

	do {
		CHECK(kh_store_subscriber_add(st, "commit probe", &id));
		ops++;
		t1 = bench_now_s();
	} while (t1 - t0 < t);
	return (double)ops / (t1 - t0);
}

static double seal_rate(struct em *e, double t)
{
	uint8_t cmd[48], key[32], kp[32], out[KH_EMM_MAX];
	struct kh_wr w;
	double t0 = bench_now_s(), t1;
	size_t ops = 0, len;

	CHECK(kh_random(key, sizeof key));
	kh_wr_init(&w, cmd, sizeof cmd);
	CHECK(kh_emm_put_set_key(&w, 1, 99, key));
	do {
		for (int j = 0; j < 256; j++, ops++) {
			uint32_t ua = UA_BASE + (uint32_t)(ops % e->c);
			struct kh_emm_hdr h = {KH_EMM_TID_UNIQUE, KH_EMM_UNIQUE, ua, (uint32_t)ops + 1, 0};
			CHECK(kh_cas_card_kp(e->ce.master, ua, kp));
			CHECK(kh_emm_seal(kp, &h, cmd, w.len, out, sizeof out, &len));
			kh_wipe(kp, sizeof kp);
		}
		t1 = bench_now_s();
	} while (t1 - t0 < t);
	kh_wipe(key, sizeof key);
	return (double)ops / (t1 - t0);
}

/* ---- PostgreSQL mode (-P / -D URL): one and two `keyhole serve` on one database ---- */

/* The CPU seconds of process pid (all its threads), 0 when it is gone. */
static double proc_cpu_s(pid_t pid)
{
	char path[64];
	double c;
	snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
	return (c = stat_cpu_s(path, NULL)) > 0 ? c : 0;
}

/* The CPU seconds of the center's serve processes. */
static double serve_cpu_s(const struct center *ce)
{
	double sum = 0;
	for (int i = 0; i < ce->ninst; i++)
		sum += proc_cpu_s(ce->pid[i]);
	return sum;
}

/* The CPU seconds of a PostgreSQL server: its postmaster and every process it started (backends,
 * WAL writer, checkpointer...), those alive now. 0 when the postmaster is not known. */
static double pg_cpu_s(pid_t postmaster)
{
	DIR *d;
	struct dirent *de;
	double sum = 0, c;

	if (postmaster <= 0 || !(d = opendir("/proc")))
		return 0;
	while ((de = readdir(d))) {
		char path[300];
		long ppid = 0;
		if (de->d_name[0] < '0' || de->d_name[0] > '9')
			continue;
		snprintf(path, sizeof path, "/proc/%s/stat", de->d_name);
		if ((c = stat_cpu_s(path, &ppid)) >= 0 && (ppid == postmaster || atol(de->d_name) == postmaster))
			sum += c;
	}
	closedir(d);
	return sum;
}

#ifdef KH_HAVE_PG
#include <libpq-fe.h>

struct pgsrv {
	char dir[128];   /* the throwaway cluster (-P), or "" (a server given with -D) */
	char admin[512]; /* its admin URL */
	PGconn *adm;
	pid_t postmaster; /* 0 when not known (not readable from here) */
	int pss;          /* pg_stat_statements can be read */
	char dbs[4][64];  /* the databases this run made */
	int ndb;
};

static void pg_connect(struct pgsrv *g)
{
	if (g->adm)
		PQfinish(g->adm);
	g->adm = PQconnectdb(g->admin);
	if (PQstatus(g->adm) != CONNECTION_OK) {
		fprintf(stderr, "bench_sms: PostgreSQL: %s", PQerrorMessage(g->adm));
		exit(1);
	}
}

/* One statement on the admin connection; its first row's first value into out (may be NULL).
 * 0, or -1 when it fails (and must_ok makes that fatal). */
static int pg_q(struct pgsrv *g, const char *sql, char *out, size_t cap, int must_ok)
{
	PGresult *res = PQexec(g->adm, sql);
	ExecStatusType st = PQresultStatus(res);
	int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;

	if (!ok && must_ok) {
		fprintf(stderr, "bench_sms: PostgreSQL: %s: %s", sql, PQresultErrorMessage(res));
		exit(1);
	}
	if (ok && out) {
		snprintf(out, cap, "%s", st == PGRES_TUPLES_OK && PQntuples(res) > 0 ? PQgetvalue(res, 0, 0) : "");
	}
	PQclear(res);
	return ok ? 0 : -1;
}

/* The postmaster's pid from DATADIR/postmaster.pid (first line), when this process may read it. */
static void pg_find_postmaster(struct pgsrv *g)
{
	char dd[400], path[450], line[32];
	FILE *f;

	if (pg_q(g, "SELECT current_setting('data_directory')", dd, sizeof dd, 0) != 0)
		return;
	snprintf(path, sizeof path, "%s/postmaster.pid", dd);
	if ((f = fopen(path, "r")) != NULL) {
		if (fgets(line, sizeof line, f))
			g->postmaster = (pid_t)atol(line);
		fclose(f);
	}
}

/* The shell command cmd, which must succeed; its first output line into out (may be NULL). */
static void run_cmd(const char *cmd, char *out, size_t cap)
{
	char line[600] = "";
	FILE *p;
	fflush(stdout);
	if (!(p = popen(cmd, "r")))
		die("popen");
	if (!fgets(line, sizeof line, p))
		line[0] = 0;
	while (fgetc(p) != EOF)
		;
	if (pclose(p) != 0) {
		fprintf(stderr, "bench_sms: failed: %s\n", cmd);
		exit(1);
	}
	line[strcspn(line, "\n")] = 0;
	if (out)
		snprintf(out, cap, "%s", line);
}

/*
 * A throwaway cluster in a short directory under /tmp (tests/tools/pgtmp.sh of the source tree
 * src: a UNIX socket only, fsync on), then restarted once with two settings: pg_stat_statements
 * loaded (so statements can be counted) and shared_buffers back at PostgreSQL's default of
 * 128MB (pgtmp.sh lowers it for the test suite's clusters).
 */
static void pg_start(struct pgsrv *g, const char *src)
{
	char cmd[1200], bindir[400];

	CHECK(bench_mkdtemp(g->dir, sizeof g->dir, "/tmp/khb-pg-XXXXXX"));
	snprintf(cmd, sizeof cmd, "sh '%s/tests/tools/pgtmp.sh' start '%s'", src, g->dir);
	run_cmd(cmd, g->admin, sizeof g->admin);
	pg_connect(g);
	pg_q(g, "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'", NULL, 0, 1);
	pg_q(g, "ALTER SYSTEM SET shared_buffers = '128MB'", NULL, 0, 1);
	pg_q(g, "SELECT setting FROM pg_config WHERE name = 'BINDIR'", bindir, sizeof bindir, 1);
	PQfinish(g->adm);
	g->adm = NULL;
	snprintf(cmd, sizeof cmd, "%s '%s/pg_ctl' -D '%s/data' -l '%s/data/server.log' -m fast -w -t 60 restart >/dev/null",
		 geteuid() == 0 ? "runuser -u postgres --" : "", bindir, g->dir, g->dir);
	run_cmd(cmd, NULL, 0);
	pg_connect(g);
	pg_q(g, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements", NULL, 0, 1);
}

/* A server given with -D: statements are counted only if pg_stat_statements is there already. */
static void pg_attach(struct pgsrv *g, const char *url)
{
	snprintf(g->admin, sizeof g->admin, "%s", url);
	pg_connect(g);
}

/* A new database NAME on the server (dropped at the end); its URL into url. */
static void pg_newdb(struct pgsrv *g, const char *name, char *url, size_t cap)
{
	char sql[128];
	const char *p = strstr(g->admin, "://"), *path, *q;
	char *db = g->dbs[g->ndb++];

	snprintf(db, sizeof g->dbs[0], "khbench_%ld_%s", (long)getpid(), name);
	snprintf(sql, sizeof sql, "CREATE DATABASE %s", db);
	pg_q(g, sql, NULL, 0, 1);
	/* the admin URL with its database (the path) replaced */
	if (!p)
		die("-D wants a postgresql:// URL");
	p += 3;
	path = strchr(p, '/');
	q = strchr(p, '?');
	if (!path || (q && path > q))
		path = q ? q : p + strlen(p);
	snprintf(url, cap, "%.*s/%s%s", (int)(path - g->admin), g->admin, db, q ? q : "");
}

static void pg_stop(struct pgsrv *g)
{
	char cmd[400];
	for (int i = 0; g->adm && !g->dir[0] && i < g->ndb; i++) {
		snprintf(cmd, sizeof cmd, "DROP DATABASE IF EXISTS %s WITH (FORCE)", g->dbs[i]);
		pg_q(g, cmd, NULL, 0, 0);
	}
	if (g->adm)
		PQfinish(g->adm);
	if (g->dir[0]) {
		snprintf(cmd, sizeof cmd, "sh '%s/tests/tools/pgtmp.sh' stop '%s'", KH_SOURCE_DIR, g->dir);
		run_cmd(cmd, NULL, 0);
	}
}

/*
 * What the server counted. For database db, from pg_stat_statements (counted as each statement
 * ends; -1 without it): statements run, explicit COMMITs, rows written (INSERT, UPDATE, DELETE)
 * and the WAL bytes they made. For the whole server, from pg_stat_wal: WAL flushes to disk
 * (fdatasync: what a durable commit waits for, shared by the commits that wait at once). A
 * backend sends those only when it goes idle, and at most every 10 s (PGSTAT_IDLE_INTERVAL):
 * read them that long after the work (-W), or not at all (-W 0: -1).
 */
struct pgcount {
	double statements, commits, rows, wal_bytes, wal_syncs;
};

static void pg_count(struct pgsrv *g, const char *db, int syncs, struct pgcount *c)
{
	char sql[600], v[128];

	c->statements = c->commits = c->rows = c->wal_bytes = c->wal_syncs = -1;
	snprintf(sql, sizeof sql,
		 "SELECT coalesce(sum(calls), 0) || ' ' || "
		 "coalesce(sum(calls) FILTER (WHERE query ~* '^\\s*(commit|end)'), 0) || ' ' || "
		 "coalesce(sum(rows) FILTER (WHERE query ~* '^\\s*(insert|update|delete)'), 0) || ' ' || "
		 "coalesce(sum(wal_bytes), 0) FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
		 "WHERE d.datname = '%s'",
		 db);
	if (g->pss && pg_q(g, sql, v, sizeof v, 0) == 0 &&
	    sscanf(v, "%lf %lf %lf %lf", &c->statements, &c->commits, &c->rows, &c->wal_bytes) != 4)
		c->statements = c->commits = c->rows = c->wal_bytes = -1;
	if (syncs) {
		pg_q(g, "SELECT wal_sync FROM pg_stat_wal", v, sizeof v, 1);
		c->wal_syncs = atof(v);
	}
}

/* The statements run most often on database db since the counts were reset, per unit of work
 * (units of it done since), with the server's mean execution time of each. */
static void pg_top(struct pgsrv *g, const char *db, double units, const char *unit)
{
	char sql[600];
	PGresult *res;

	snprintf(sql, sizeof sql,
		 "SELECT calls, mean_exec_time * 1000, left(regexp_replace(query, '\\s+', ' ', 'g'), 90) "
		 "FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = '%s' "
		 "ORDER BY calls DESC LIMIT 14",
		 db);
	res = PQexec(g->adm, sql);
	if (PQresultStatus(res) == PGRES_TUPLES_OK) {
		printf("# statements per %s on PostgreSQL (pg_stat_statements, the most frequent; server time in us):\n",
		       unit);
		for (int i = 0; i < PQntuples(res); i++)
			printf("#   %6.2f  %6.0f us  %s\n", atof(PQgetvalue(res, i, 0)) / units, atof(PQgetvalue(res, i, 1)),
			       PQgetvalue(res, i, 2));
	}
	PQclear(res);
}
#endif /* KH_HAVE_PG */

/*
 * One timed piece of work on a center, with what it cost: wall time, CPU of the center's
 * processes, of the PostgreSQL server and of this process (the clients), and, on PostgreSQL,
 * statements, commits, rows and WAL written, WAL flushes (per unit of work or per request).
 */
enum { F_RATE, F_CPU_CENTER, F_CPU_PG, F_CPU_BENCH, F_STMT, F_COMMIT, F_SYNC, F_SYNC_S, F_ROWS, F_WALB, NF };

struct probe {
	double t, center, pg, bench;
#ifdef KH_HAVE_PG
	struct pgcount c;
#endif
};

struct pgctx {
#ifdef KH_HAVE_PG
	struct pgsrv *g;
#endif
	const char *db; /* the center's database on the server; NULL for an SQLite center */
	pid_t postmaster;
	double settle;  /* -W: seconds to wait before reading pg_stat_wal (0: not read) */
};

static void probe_read(const struct center *ce, const struct pgctx *x, struct probe *p)
{
	p->center = serve_cpu_s(ce);
	p->pg = x->db ? pg_cpu_s(x->postmaster) : 0;
	p->bench = cpu_s();
	p->t = bench_now_s();
}

#ifdef KH_HAVE_PG
/* The clients whose connections settle() keeps alive: a pool and its center. */
static struct {
	struct pool *pool;
	struct center *ce;
} g_keep[8];
static int g_nkeep;

static void keep_alive(struct pool *p, struct center *ce)
{
	if (g_nkeep < (int)(sizeof g_keep / sizeof g_keep[0])) {
		g_keep[g_nkeep].pool = p;
		g_keep[g_nkeep++].ce = ce;
	}
}

/*
 * Wait s seconds, every few seconds sending GET /healthz (answered without the store) on each
 * kept client's connection to each instance of its center: a center closes a connection idle
 * for 10 s (KH_HTTP_IDLE_S), and with it ends the connection's thread, whose store connection
 * (on PostgreSQL a server process) the pool may close. So the timed runs go on with the
 * connections they had.
 */
static void settle(double s)
{
	double end = bench_now_s() + s, left;

	while ((left = end - bench_now_s()) > 0) {
		double step = left < 4 ? left : 4;
		struct timespec ts = {(time_t)step, (long)((step - (double)(time_t)step) * 1e9)};
		nanosleep(&ts, NULL);
		for (int i = 0; i < g_nkeep; i++) {
			struct center *ce = g_keep[i].ce;
			for (int j = 0; j < ce->ninst; j++) {
				free(http_must(ce->c, ce->ports[j], "GET", "/healthz", NULL, 200));
				for (int k = 0; k < g_keep[i].pool->k; k++)
					free(http_must(g_keep[i].pool->c[k], ce->ports[j], "GET", "/healthz", NULL, 200));
			}
		}
	}
}
#endif

/* Before the work. The counts of the server must have settled since the last work on it (the
 * previous probe_end waited, or the caller did once before the first). */
static void probe_begin(const struct center *ce, const struct pgctx *x, struct probe *p)
{
#ifdef KH_HAVE_PG
	if (x->db)
		pg_count(x->g, x->db, x->settle > 0, &p->c);
#endif
	probe_read(ce, x, p);
}

/* f[0..NF-1] for units of work done since b (units_req: requests, for the per-request counts);
 * -1 for what was not counted. */
static void probe_end(const struct center *ce, const struct pgctx *x, const struct probe *b, double units,
		      double units_req, double *f)
{
	struct probe e;
	probe_read(ce, x, &e);
	f[F_RATE] = units / (e.t - b->t);
	f[F_CPU_CENTER] = (e.center - b->center) * 1e6 / units;
	f[F_CPU_PG] = (e.pg - b->pg) * 1e6 / units;
	f[F_CPU_BENCH] = (e.bench - b->bench) * 1e6 / units;
	f[F_STMT] = f[F_COMMIT] = f[F_SYNC] = f[F_SYNC_S] = f[F_ROWS] = f[F_WALB] = -1;
#ifdef KH_HAVE_PG
	if (x->db) {
		pg_count(x->g, x->db, 0, &e.c);
		if (x->settle > 0) {
			struct pgcount w;
			settle(x->settle);
			pg_count(x->g, x->db, 1, &w);
			f[F_SYNC] = (w.wal_syncs - b->c.wal_syncs) / units_req;
			f[F_SYNC_S] = (w.wal_syncs - b->c.wal_syncs) / (e.t - b->t);
		}
		if (b->c.statements >= 0 && e.c.statements >= 0) {
			f[F_STMT] = (e.c.statements - b->c.statements) / units_req;
			f[F_COMMIT] = (e.c.commits - b->c.commits) / units_req;
			f[F_ROWS] = (e.c.rows - b->c.rows) / units_req;
			f[F_WALB] = (e.c.wal_bytes - b->c.wal_bytes) / units_req;
		}
	}
#else
	(void)units_req;
#endif
}

/* "median [min-max]" of v over rounds, into out; "n/a" when the first round has none (-1). */
static const char *med_s(const double *v, int rounds, int prec, char *out, size_t cap)
{
	struct bench_stats st = bench_stats_of(v, rounds);
	if (v[0] < 0)
		snprintf(out, cap, "n/a");
	else
		snprintf(out, cap, "%.*f [%.*f-%.*f]", prec, st.med, prec, st.min, prec, st.max);
	return out;
}

/* One '#' line: where the time of one benchmark went (f[F_*][round]), per unit and per request. */
static void print_cost(const char *name, const char *unit, const char *req, double f[NF][BENCH_MAX_ROUNDS], int rounds)
{
	char x[10][64];
	static double busy[BENCH_MAX_ROUNDS];
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

	for (int r = 0; r < rounds; r++)
		busy[r] = (f[F_CPU_CENTER][r] + f[F_CPU_PG][r] + f[F_CPU_BENCH][r]) * f[F_RATE][r] / 1e6;
	printf("# cost %s: CPU us per %s: center %s, postgres %s, clients %s; %s of %ld CPUs busy; per %s: "
	       "statements %s, commits %s, WAL fsyncs %s, rows written %s, WAL bytes %s; WAL fsyncs/s %s\n",
	       name, unit, med_s(f[F_CPU_CENTER], rounds, 0, x[0], 64), med_s(f[F_CPU_PG], rounds, 0, x[1], 64),
	       med_s(f[F_CPU_BENCH], rounds, 0, x[2], 64), med_s(busy, rounds, 2, x[3], 64), ncpu, req,
	       med_s(f[F_STMT], rounds, 1, x[4], 64), med_s(f[F_COMMIT], rounds, 2, x[5], 64),
	       med_s(f[F_SYNC], rounds, 2, x[6], 64), med_s(f[F_ROWS], rounds, 1, x[7], 64),
	       med_s(f[F_WALB], rounds, 0, x[8], 64), med_s(f[F_SYNC_S], rounds, 0, x[9], 64));
}

/* How many of the requests of the timed runs answered 503 database_busy, if any. */
static void print_busy(const char *name, const double *busy, int rounds, size_t per_round, const char *what)
{
	double all = 0;
	for (int r = 0; r < rounds; r++)
		all += busy[r];
	if (all > 0)
		printf("# %s: %.0f of %zu %s answered 503 database_busy (the store's retries of a serialization failure "
		       "ran out); not counted as done\n",
		       name, all, per_round * (size_t)rounds, what);
}

static void copy_round(double dst[NF][BENCH_MAX_ROUNDS], const double *f, int r)
{
	for (int i = 0; i < NF; i++)
		dst[i][r] = f[i];
}

/* The ratio line of two per-round figures, a[r] / b[r] in each round. */
static void print_ratio_of(const char *name, const double *a, const double *b, int rounds, const char *note)
{
	double v[BENCH_MAX_ROUNDS];
	for (int r = 0; r < rounds; r++)
		v[r] = a[r] / b[r];
	bench_print_ratio(name, v, rounds, note);
}

/*
 * The PostgreSQL comparison (-P or -D): every center is `keyhole serve` processes (the same
 * binary for both backends). Uploads: an SQLite center (one process), and one PostgreSQL database
 * served by two processes, timed with every upload sent to the first (pg1) and spread over both
 * (pg2); raw Ed25519 verify on one thread. EMMs: an SQLite and a PostgreSQL center with the same
 * C cards, a rotation, a bulk subscription and single subscriptions each; raw sealing.
 */
static int pg_run(const struct opts *o, int part1, int part2)
{
	enum { U_LITE, U_PG1, U_PG2, NU };
	static const char *uname[NU] = {"sqlite", "pg1", "pg2"}, *ename[2] = {"sqlite", "pg"};
	static double fu[NU][NF][BENCH_MAX_ROUNDS], frot[2][NF][BENCH_MAX_ROUNDS], fall[2][NF][BENCH_MAX_ROUNDS],
		fsub[2][NF][BENCH_MAX_ROUNDS], verify[BENCH_MAX_ROUNDS], seal[BENCH_MAX_ROUNDS], busy[NU][BENCH_MAX_ROUNDS],
		sbusy[2][BENCH_MAX_ROUNDS];
	static struct up up[2];
	static struct em em[2];
	struct pgctx px[2] = {{0}}, pe[2] = {{0}}; /* the upload centers', the EMM centers' */
	char url[600], nm[96];
	double f[NF];
#ifdef KH_HAVE_PG
	struct pgsrv g = {0};
	char v[32];

	if (o->pg_start)
		pg_start(&g, KH_SOURCE_DIR);
	else
		pg_attach(&g, o->pg_url);
	pg_find_postmaster(&g);
	g.pss = pg_q(&g, "SELECT count(*) FROM pg_stat_statements WHERE false", NULL, 0, 0) == 0;
	pg_q(&g, "SHOW server_version", v, sizeof v, 1);
	printf("# PostgreSQL %s, %s; fsync=on, synchronous_commit=on; statements counted: %s; CPU of its processes: %s\n",
	       v, o->pg_start ? "a throwaway cluster of this run (tests/tools/pgtmp.sh, shared_buffers 128MB)" : "-D URL",
	       g.pss ? "pg_stat_statements" : "no (pg_stat_statements not loaded)",
	       g.postmaster > 0 ? "/proc" : "not known (the server's directory is not readable here)");
	px[1].g = pe[1].g = &g;
	px[1].postmaster = pe[1].postmaster = g.postmaster;
	px[1].settle = pe[1].settle = o->settle;
#else
	(void)url;
	die("-P/-D: this build has no PostgreSQL (libpq)");
#endif
	printf("# centers: `%s serve` processes (KEYHOLE_LOG=warn, --open-rate 0, --threads %u)\n", o->keyhole, o->threads);
	fflush(stdout);
	if (part1) {
		center_spawn(&up[0].ce, o->parent, NULL, "bench-sms-up-sqlite", NULL, o->threads, o->keyhole, NULL, 1);
		up_setup(&up[0], o->m, o->n, o->k);
#ifdef KH_HAVE_PG
		pg_newdb(&g, "up", url, sizeof url);
		px[1].db = g.dbs[g.ndb - 1];
		center_spawn(&up[1].ce, o->parent, NULL, "bench-sms-up-pg", NULL, o->threads, o->keyhole, url, 2);
		up_setup(&up[1], o->m, o->n, o->k);
#endif
	}
	if (part2) {
		struct em *es[2] = {&em[0], &em[1]};
		center_spawn(&em[0].ce, o->parent, o->auth_parent, "bench-sms-emm-sqlite", NULL, o->threads, o->keyhole,
			     NULL, 1);
#ifdef KH_HAVE_PG
		pg_newdb(&g, "emm", url, sizeof url);
		pe[1].db = g.dbs[g.ndb - 1];
		center_spawn(&em[1].ce, o->parent, NULL, "bench-sms-emm-pg", &em[0].ce, o->threads, o->keyhole, url, 1);
#endif
		em_setup(es, 2, o->c, o->s, o->k);
	}
#ifdef KH_HAVE_PG
	for (int c = 0; c < 2; c++) {
		if (part1)
			keep_alive(&up[c].pool, &up[c].ce);
		if (part2)
			keep_alive(&em[c].pool, &em[c].ce);
	}
#endif
	/*
	 * One untimed round of uploads first: the clients' connections and, on each center, a
	 * thread and a store connection per client connection are made there (on PostgreSQL a new
	 * store connection is a new server process that prepares its statements: ms of CPU each).
	 * The timed rounds then measure the steady state on kept-alive connections.
	 */
	for (int c = 0; part1 && c < NU; c++) {
		struct up *u = &up[c == U_LITE ? 0 : 1];
		double t;
		(void)up_prepare(u, o->n, 2, c == U_PG2 ? 2 : 1);
		u->pool.busy_ok = 1;
		t = pool_go(&u->pool, o->k, "POST", u->jobs, o->n, 200, "\"verdict\":\"ok\"}]");
		printf("# warm-up upload_b2_k%d_%s (new connections): %.0f blocks/s\n", o->k, uname[c],
		       2.0 * (double)(o->n - (size_t)atomic_load(&u->pool.busy)) / t);
	}
	for (int c = 0; part2 && c < 2; c++) /* the single subscriptions' client connections, likewise */
	{
		em[c].pool.busy_ok = 1;
		(void)subscribe_k(&em[c], o->k);
	}
#ifdef KH_HAVE_PG
	/* the statement counts of the timed rounds only (a server of its own: nobody else's counts) */
	if (g.pss && o->pg_start)
		pg_q(&g, "SELECT pg_stat_statements_reset()", NULL, 0, 1);
	settle(o->settle); /* the set-up's counts sent (probe_begin) */
#endif
	fflush(stdout);

	for (int r = 0; r < o->rounds; r++) {
		if (part1) {
			for (int c = 0; c < NU; c++) {
				struct up *u = &up[c == U_LITE ? 0 : 1];
				struct pgctx *x = &px[c == U_LITE ? 0 : 1];
				struct probe b;
				(void)up_prepare(u, o->n, 2, c == U_PG2 ? 2 : 1);
				probe_begin(&u->ce, x, &b);
				(void)pool_go(&u->pool, o->k, "POST", u->jobs, o->n, 200, "\"verdict\":\"ok\"}]");
				/* blocks accepted: a 503 (the store gave up retrying) accepted nothing */
				busy[c][r] = atomic_load(&u->pool.busy);
				probe_end(&u->ce, x, &b, 2.0 * (double)(o->n - (size_t)busy[c][r]), (double)o->n, f);
				copy_round(fu[c], f, r);
			}
			verify[r] = loop_rate(op_verify, &up[0], o->n, o->t);
		}
		if (part2) {
			for (int c = 0; c < 2; c++) {
				struct em *e = &em[c];
				struct probe b;
				double chunk_ms;
				probe_begin(&e->ce, &pe[c], &b);
				(void)rotate(e);
				probe_end(&e->ce, &pe[c], &b, (double)e->c, 1, f);
				copy_round(frot[c], f, r);
				probe_begin(&e->ce, &pe[c], &b);
				(void)subscribe_all(e, r, &chunk_ms);
				probe_end(&e->ce, &pe[c], &b, (double)e->c, 1, f);
				copy_round(fall[c], f, r);
				probe_begin(&e->ce, &pe[c], &b);
				(void)subscribe_k(e, o->k);
				sbusy[c][r] = atomic_load(&e->pool.busy);
				probe_end(&e->ce, &pe[c], &b, (double)e->s - sbusy[c][r], (double)e->s, f);
				copy_round(fsub[c], f, r);
			}
			seal[r] = seal_rate(&em[0], o->t);
		}
		fprintf(stderr, "bench_sms: round %d of %d done\n", r + 1, o->rounds);
	}

	if (part1) {
		for (int c = 0; c < NU; c++) {
			snprintf(nm, sizeof nm, "upload_b2_k%d_%s", o->k, uname[c]);
			bench_print(nm, "ops/s", 0, fu[c][F_RATE], o->rounds);
		}
		bench_print("upload_ref_ed25519_verify_raw", "ops/s", 0, verify, o->rounds);
	}
	if (part2) {
		for (int c = 0; c < 2; c++) {
			snprintf(nm, sizeof nm, "emm_rotate_%s", ename[c]);
			bench_print(nm, "ops/s", 0, frot[c][F_RATE], o->rounds);
			snprintf(nm, sizeof nm, "emm_subscribe_all_%s", ename[c]);
			bench_print(nm, "ops/s", 0, fall[c][F_RATE], o->rounds);
			snprintf(nm, sizeof nm, "emm_subscribe_k%d_%s", o->k, ename[c]);
			bench_print(nm, "ops/s", 0, fsub[c][F_RATE], o->rounds);
		}
		bench_print("emm_ref_seal_raw", "ops/s", 0, seal, o->rounds);
	}
	if (part1) {
		const struct {
			const char *name;
			const double *a, *b;
			const char *note;
		} ur[] = {
			{"pg1_vs_ed25519_verify_raw", fu[U_PG1][F_RATE], verify,
			 "blocks/s accepted (durable), two-block sessions, one serve on PostgreSQL / raw Ed25519 verifies/s "
			 "on one thread; aim >= 0.7"},
			{"pg2_vs_pg1", fu[U_PG2][F_RATE], fu[U_PG1][F_RATE],
			 "two serve processes on one database / one; aim >= 1.6 (not on 2 CPUs)"},
			{"pg2_vs_ed25519_verify_raw", fu[U_PG2][F_RATE], verify, "the same, two serve processes"},
			{"pg1_vs_sqlite", fu[U_PG1][F_RATE], fu[U_LITE][F_RATE], "one serve: PostgreSQL / SQLite (group commit)"},
			{"sqlite_vs_ed25519_verify_raw", fu[U_LITE][F_RATE], verify, "the SQLite center as a serve process"},
		};
		for (size_t i = 0; i < sizeof ur / sizeof ur[0]; i++) {
			snprintf(nm, sizeof nm, "upload_b2_k%d_%s", o->k, ur[i].name);
			print_ratio_of(nm, ur[i].a, ur[i].b, o->rounds, ur[i].note);
		}
	}
	if (part2) {
		print_ratio_of("emm_rotate_pg_vs_sqlite", frot[1][F_RATE], frot[0][F_RATE], o->rounds,
			       "EMMs/s of one rotation, PostgreSQL / SQLite");
		print_ratio_of("emm_subscribe_all_pg_vs_sqlite", fall[1][F_RATE], fall[0][F_RATE], o->rounds,
			       "EMMs/s of one bulk subscription, PostgreSQL / SQLite");
		print_ratio_of("emm_rotate_pg_vs_seal_raw", frot[1][F_RATE], seal, o->rounds,
			       "EMMs/s of one rotation on PostgreSQL / raw sealing");
	}
	if (part1) {
		printf("# one raw Ed25519 verify: %.0f us\n", 1e6 / bench_stats_of(verify, o->rounds).med);
		for (int c = 0; c < NU; c++) {
			snprintf(nm, sizeof nm, "upload_b2_k%d_%s", o->k, uname[c]);
			print_cost(nm, "block", "upload (2 blocks)", fu[c], o->rounds);
			print_busy(nm, busy[c], o->rounds, o->n, "uploads");
		}
#ifdef KH_HAVE_PG
		if (g.pss && o->pg_start)
			pg_top(&g, px[1].db, 2.0 * (double)o->rounds * (double)o->n, "upload (its session open included)");
#endif
	}
	if (part2) {
		for (int c = 0; c < 2; c++) {
			snprintf(nm, sizeof nm, "emm_rotate_%s", ename[c]);
			print_cost(nm, "EMM", "rotation", frot[c], o->rounds);
			snprintf(nm, sizeof nm, "emm_subscribe_all_%s", ename[c]);
			print_cost(nm, "EMM", "bulk request", fall[c], o->rounds);
			snprintf(nm, sizeof nm, "emm_subscribe_k%d_%s", o->k, ename[c]);
			print_cost(nm, "EMM", "request", fsub[c], o->rounds);
			print_busy(nm, sbusy[c], o->rounds, o->s, "subscriptions");
		}
#ifdef KH_HAVE_PG
		if (g.pss && o->pg_start)
			pg_top(&g, pe[1].db, (double)o->rounds * (2.0 * (double)o->c + (double)o->s),
			       "EMM (rotations, bulk and single subscriptions together)");
#endif
	}
	if (part1)
		for (int c = 0; c < 2; c++)
			up_free(&up[c]);
	if (part2)
		for (int c = 1; c >= 0; c--) /* em[1] uses em[0]'s authority */
			em_free(&em[c]);
#ifdef KH_HAVE_PG
	pg_stop(&g);
#endif
	return g_fail;
}

static void usage(void)
{
	fprintf(stderr, "usage: bench_sms [-r R] [-t S] [-u N] [-M M] [-k K] [-T T] [-c C] [-s S] [-b NAME] [-d DIR] [-A DIR]\n"
			"                 [-P | -D URL] [-K KEYHOLE] [-W S]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	struct opts o = {5, 64, 32, 0.3, 300, 100000, 500, KH_HTTP_THREADS, NULL, "/tmp", NULL, 0, NULL, "", 10.5};
	static double v[NB][BENCH_MAX_ROUNDS], ratio[9][BENCH_MAX_ROUNDS], cpu_b2[BENCH_MAX_ROUNDS],
		batch_b2[BENCH_MAX_ROUNDS], srv_b2[BENCH_MAX_ROUNDS], chunk_ms[BENCH_MAX_ROUNDS];
	char names[NB][40];
	int on[NB] = {0}, part1 = 0, part2 = 0, ch;
	struct up u = {0};
	struct em e = {0};
	struct kh_store *probe = NULL;
	struct statfs sf;

	while ((ch = getopt(argc, argv, "r:t:u:M:k:T:c:s:b:d:A:PD:K:W:npe:m:")) != -1) {
		switch (ch) {
		case 'r': o.rounds = atoi(optarg); break;
		case 't': o.t = atof(optarg); break;
		case 'u': o.n = (size_t)atol(optarg); break;
		case 'M': o.m = atoi(optarg); break;
		case 'k': o.k = atoi(optarg); break;
		case 'T': o.threads = (unsigned)atoi(optarg); break;
		case 'c': o.c = (size_t)atol(optarg); break;
		case 's': o.s = (size_t)atol(optarg); break;
		case 'b': o.only = optarg; break;
		case 'd': o.parent = optarg; break;
		case 'A': o.auth_parent = optarg; break;
		case 'P': o.pg_start = 1; break;
		case 'D': o.pg_url = optarg; break;
		case 'K': snprintf(o.keyhole, sizeof o.keyhole, "%s", optarg); break;
		case 'W': o.settle = atof(optarg); break;
		/* run.sh passes bench_pair's and bench_cas's options on: -n (no sockets here anyway), -p
		 * (not applied: the center's threads and the clients need both CPUs), -e E, -m M */
		case 'n': case 'p': case 'e': case 'm': break;
		default: usage();
		}
	}
	if (o.rounds < 1 || o.rounds > BENCH_MAX_ROUNDS || o.k < 1 || o.k > MAX_K || o.m < 1 || o.n < 1 || o.c < 1 ||
	    o.s < 1 || o.threads < 1 || o.t <= 0 || (o.pg_start && o.pg_url) || o.settle < 0 || o.settle > 60)
		usage();
	if (!o.keyhole[0]) {
		/* the keyhole binary beside this one (both are built into the build directory) */
		ssize_t n = readlink("/proc/self/exe", o.keyhole, sizeof o.keyhole - 16);
		char *slash;
		if (n <= 0 || !(slash = memrchr(o.keyhole, '/', (size_t)n)))
			die("cannot find this program's directory: give -K KEYHOLE");
		strcpy(slash + 1, "keyhole");
	}
	if (!o.auth_parent && access("/dev/shm", W_OK) == 0)
		o.auth_parent = "/dev/shm";
	if (o.s * (size_t)o.rounds > o.c)
		o.s = o.c / (size_t)o.rounds;

	snprintf(names[B_OPEN], 40, "session_open_k1");
	snprintf(names[B_UP1], 40, "upload_k1");
	snprintf(names[B_UPK], 40, "upload_k%d", o.k);
	snprintf(names[B_UPB2], 40, "upload_b2_k%d", o.k);
	snprintf(names[B_VERIFY], 40, "upload_ref_ed25519_verify_raw");
	snprintf(names[B_CERT], 40, "upload_ref_cert_check");
	snprintf(names[B_HELLO], 40, "upload_ref_hello_verify");
	snprintf(names[B_USAGE], 40, "upload_ref_usage_open");
	snprintf(names[B_FSYNC], 40, "upload_ref_fdatasync_4k");
	snprintf(names[B_COMMIT], 40, "upload_ref_store_commit_full");
	snprintf(names[B_HTTP], 40, "upload_ref_http_get_k1");
	snprintf(names[B_ROTATE], 40, "emm_rotate");
	snprintf(names[B_SEAL], 40, "emm_ref_seal_raw");
	snprintf(names[B_SUBSCRIBE], 40, "emm_subscribe_k%d", o.k);
	snprintf(names[B_SUBALL], 40, "emm_subscribe_all");
	for (int b = 0; b < NB; b++) {
		/* the upload benchmarks need their references: -b upload runs the whole part */
		on[b] = wanted(&o, names[b]);
		if (on[b])
			part1 |= part_of(b) == 1, part2 |= part_of(b) == 2;
	}
	for (int b = 0; b < NB; b++)
		on[b] = (part_of(b) == 1 && part1) || (part_of(b) == 2 && part2);
	on[B_OPEN] = on[B_UP1];

	curl_global_init(CURL_GLOBAL_DEFAULT);
	if (!(g_mdctx = EVP_MD_CTX_new()))
		die("EVP_MD_CTX_new");
	if (statfs(o.parent, &sf) == 0 && sf.f_type == 0x01021994)
		printf("# WARNING: %s is a tmpfs: fsync costs nothing there, use -d on a real disk\n", o.parent);
	printf("# bench_sms: rounds=%d uploads/round=%zu upload cards=%d clients K=%d center threads=%u emm cards=%zu "
	       "subscribes/round=%zu dir=%s\n",
	       o.rounds, o.n, o.m, o.k, o.threads, o.c, o.s, o.parent);
	fflush(stdout);
	if (o.pg_start || o.pg_url) {
		int rc = pg_run(&o, part1, part2);
		EVP_MD_CTX_free(g_mdctx);
		curl_global_cleanup();
		return rc;
	}
	if (part1) {
		center_start(&u.ce, o.parent, NULL, "bench-sms-up", o.threads);
		up_setup(&u, o.m, o.n, o.k);
		CHECK(kh_store_open(u.ce.db, &probe));
	}
	if (part2) {
		struct em *es[1] = {&e};
		center_start(&e.ce, o.parent, o.auth_parent, "bench-sms-emm", o.threads);
		em_setup(es, 1, o.c, o.s, o.k);
	}
	fflush(stdout);

	for (int r = 0; r < o.rounds; r++) {
		if (part1) {
			double t, open1, openk;
			open1 = up_prepare(&u, o.n, 1, 1);
			t = pool_go(&u.pool, 1, "POST", u.jobs, o.n, 200, "\"verdict\":\"ok\"");
			v[B_UP1][r] = (double)o.n / t;
			openk = up_prepare(&u, o.n, 1, 1);
			t = pool_go(&u.pool, o.k, "POST", u.jobs, o.n, 200, "\"verdict\":\"ok\"");
			v[B_UPK][r] = (double)o.n / t;
			(void)up_prepare(&u, o.n, 2, 1);
			{
				double c0 = cpu_s(), s0 = center_cpu_s();
				uint64_t b0, j0, b1, j1;
				kh_sms_writer_stats(u.ce.sms, &b0, &j0);
				/* both blocks "ok": the M1 block (older) is accepted like the fresh one */
				t = pool_go(&u.pool, o.k, "POST", u.jobs, o.n, 200, "\"verdict\":\"ok\"}]");
				kh_sms_writer_stats(u.ce.sms, &b1, &j1);
				v[B_UPB2][r] = 2.0 * (double)o.n / t;
				/* the process's CPU (center and clients together, both vCPUs) per block */
				cpu_b2[r] = (cpu_s() - c0) * 1e6 / (2.0 * (double)o.n);
				srv_b2[r] = (center_cpu_s() - s0) * 1e6 / (2.0 * (double)o.n);
				batch_b2[r] = b1 > b0 ? (double)(j1 - j0) / (double)(b1 - b0) : 0;
			}
			v[B_OPEN][r] = (open1 + openk) / 2;
			/* the references, on the last prepared batch */
			v[B_VERIFY][r] = loop_rate(op_verify, &u, o.n, o.t);
			v[B_CERT][r] = 1e6 / loop_rate(op_cert, &u, o.n, o.t);
			v[B_HELLO][r] = 1e6 / loop_rate(op_hello, &u, o.n, o.t);
			v[B_USAGE][r] = 1e6 / loop_rate(op_usage, &u, o.n, o.t);
			v[B_FSYNC][r] = fsync_rate(u.ce.dir, o.t);
			v[B_COMMIT][r] = commit_rate(probe, o.t);
			{
				static struct job get[2000];
				for (size_t i = 0; i < 2000; i++)
					snprintf(get[i].path, sizeof get[i].path, "/v1/credit-policy");
				t = pool_go(&u.pool, 1, "GET", get, 2000, 200, NULL);
				v[B_HTTP][r] = 2000 / t;
			}
			ratio[0][r] = v[B_UPK][r] / v[B_VERIFY][r];
			ratio[1][r] = v[B_UP1][r] / v[B_VERIFY][r];
			ratio[2][r] = v[B_UPK][r] / v[B_FSYNC][r];
			/* the session's own crypto, serial: 2 cert checks + hello + usage open */
			ratio[3][r] = v[B_UP1][r] * v[B_USAGE][r] / 1e6;
			ratio[7][r] = v[B_UPB2][r] / v[B_VERIFY][r];
		}
		if (part2) {
			v[B_ROTATE][r] = (double)e.c / rotate(&e);
			v[B_SEAL][r] = seal_rate(&e, o.t);
			v[B_SUBSCRIBE][r] = (double)e.s / subscribe_k(&e, o.k);
			ratio[4][r] = v[B_ROTATE][r] / v[B_SEAL][r];
			ratio[5][r] = v[B_SUBSCRIBE][r] / v[B_ROTATE][r];
			ratio[6][r] = part1 ? v[B_SUBSCRIBE][r] / v[B_FSYNC][r] : 0;
			v[B_SUBALL][r] = subscribe_all(&e, r, &chunk_ms[r]);
			ratio[8][r] = v[B_SUBALL][r] / v[B_SEAL][r];
		}
		fprintf(stderr, "bench_sms: round %d of %d done\n", r + 1, o.rounds);
	}

	for (int b = 0; b < NB; b++) {
		if (!on[b])
			continue;
		if (b == B_CERT || b == B_HELLO || b == B_USAGE)
			bench_print(names[b], "us", 1, v[b], o.rounds);
		else
			bench_print(names[b], "ops/s", 0, v[b], o.rounds);
	}
	if (part1) {
		char nm[64];
		snprintf(nm, sizeof nm, "upload_b2_k%d_vs_ed25519_verify_raw", o.k);
		bench_print_ratio(nm, ratio[7], o.rounds,
				  "blocks/s accepted (durable), sessions of 2 blocks as a decoder sends / raw Ed25519 "
				  "verifies/s on one thread; aim >= 0.7");
		snprintf(nm, sizeof nm, "upload_k%d_vs_ed25519_verify_raw", o.k);
		bench_print_ratio(nm, ratio[0], o.rounds,
				  "the same, sessions of 1 block (the bound fresh block alone)");
		bench_print_ratio("upload_k1_vs_ed25519_verify_raw", ratio[1], o.rounds,
				  "the same with one client");
		snprintf(nm, sizeof nm, "upload_k%d_vs_fdatasync", o.k);
		bench_print_ratio(nm, ratio[2], o.rounds, "blocks/s / fdatasync/s: commits per fsync (> 1 only if grouped)");
		bench_print_ratio("upload_k1_crypto_share", ratio[3], o.rounds,
				  "fraction of one upload's time (k1) that its block's check and open take");
	}
	if (part2) {
		bench_print_ratio("emm_rotate_vs_seal_raw", ratio[4], o.rounds,
				  "EMMs/s queued by one rotation / raw HKDF(Kp) + kh_emm_seal per s");
		bench_print_ratio("emm_subscribe_vs_rotate", ratio[5], o.rounds,
				  "EMMs/s one request per subscriber / EMMs/s of one bulk transaction");
		if (part1)
			bench_print_ratio("emm_subscribe_vs_fdatasync", ratio[6], o.rounds,
					  "subscriptions/s / fdatasync/s");
		bench_print_ratio("emm_subscribe_all_vs_seal_raw", ratio[8], o.rounds,
				  "EMMs/s queued by one bulk subscription (chunked) / raw HKDF(Kp) + kh_emm_seal per s");
		{
			struct bench_stats cm = bench_stats_of(chunk_ms, o.rounds);
			printf("# emm_subscribe_all: %zu subscribers in chunks of %u, %.0f ms per chunk [%.0f, %.0f] "
			       "(the write lock is held that long per chunk)\n",
			       e.c, KH_SMS_BULK_CHUNK, cm.med, cm.min, cm.max);
		}
	}
	if (part1) {
		struct bench_stats up1 = bench_stats_of(v[B_UP1], o.rounds), cert = bench_stats_of(v[B_CERT], o.rounds),
				   hel = bench_stats_of(v[B_HELLO], o.rounds), use = bench_stats_of(v[B_USAGE], o.rounds),
				   fs = bench_stats_of(v[B_FSYNC], o.rounds), cm = bench_stats_of(v[B_COMMIT], o.rounds),
				   ht = bench_stats_of(v[B_HTTP], o.rounds);
		struct bench_stats cpu = bench_stats_of(cpu_b2, o.rounds), bat = bench_stats_of(batch_b2, o.rounds),
				   ver = bench_stats_of(v[B_VERIFY], o.rounds), srv = bench_stats_of(srv_b2, o.rounds);
		double per = 1e6 / up1.med, crypto = use.med;
		printf("# two-block sessions at k%d: %.0f us of CPU per block (center and clients, both vCPUs), of which the "
		       "center's HTTP threads %.0f (one Ed25519 verify = %.0f); %.1f uploads per group commit [%.1f-%.1f]\n",
		       o.k, cpu.med, srv.med, 1e6 / ver.med, bat.med, bat.min, bat.max);
		(void)cert; /* checked once per card and kept: not in an upload's path */
		printf("# one upload at k1: %.0f us = the bound block's Ku/verify/AES-GCM open %.0f (a separate hello, not sent, "
		       "would add %.0f) (crypto %.0f) + one FULL commit ~%.0f (fdatasync alone %.0f) + HTTP ~%.0f (a GET answered from the store, "
		       "k1) + the rest %.0f (SQL statements, JSON, EMM seal)\n",
		       per, use.med, hel.med, crypto, 1e6 / cm.med, 1e6 / fs.med, 1e6 / ht.med,
		       per - crypto - 1e6 / cm.med - 1e6 / ht.med);
	}
	if (part1) {
		kh_store_close(probe);
		up_free(&u);
	}
	if (part2)
		em_free(&e);
	EVP_MD_CTX_free(g_mdctx);
	curl_global_cleanup();
	return g_fail;
}
