/*
 * The distribution server's HTTP API (keyhole/distsvc.h) over real HTTP on loopback, on the real
 * store (SQLite, or PostgreSQL as unit/test_dist_service_pg), with real processor modules at the
 * other end of the second path: the seed's whole sequence (log in, hello, the server's proof,
 * the processor's answer, the key, the package, the charge, activation, a run), a lost package
 * fetched again on the receipt for nothing, and the attacks on the first path: a self-made
 * processor, a forged answer, a key moved to another processor, receipts replayed by another
 * user, for another processor, edited or presented for a newer version, a retried charge, a
 * charge without the funds, steps out of order, and sessions missing, forged or ended. Each
 * refusal is checked to change nothing: no money moves, no receipt or delivery is written.
 */
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "keyhole/dist.h"
#include "keyhole/distsrv.h"
#include "keyhole/distsvc.h"
#include "keyhole/http.h"
#include "keyhole/runner.h"
#include "keyhole/store_dist.h"
#include "httputil.h"
#include "testutil.h"
#include "world.h"

#define PRICE 100
#define MARKER "KEYHOLE-PROGRAM-PLAINTEXT-MARKER-5d1c9e"

static _Atomic int64_t clock_now;

static int64_t test_clock(void *ctx)
{
	(void)ctx;
	return atomic_load(&clock_now);
}

struct dx {
	struct world *w;
	struct mod p1, p2, alien; /* alien: a "processor" certified by another root */
	char *srvdir, *db;
	struct kh_dist_server srv;
	struct kh_dist_service *svc;
	struct kh_http *h;
	struct http_conn hc;
	int64_t v1, v2; /* program ids: version 1 and 2 of the same program */
	char alice[128], bob[128], carol[128];
};

static uint8_t rbuf[KH_APDU_MAX_RESP];

static uint16_t cmd(struct kh_transport *t, uint8_t ins, const uint8_t *d, size_t n, size_t *dlen)
{
	return send_apdu(t, KH_CLA, ins, 0, 0, d, n, rbuf, sizeof rbuf, dlen);
}

static char *b64(const uint8_t *b, size_t n)
{
	char *s = malloc(kh_b64url_len(n) + 1);
	assert_non_null(s);
	assert_int_equal(kh_b64url_encode(b, n, s, kh_b64url_len(n) + 1), KH_OK);
	return s;
}

static size_t unb64(const char *s, uint8_t *out, size_t cap)
{
	size_t n = 0;
	assert_non_null(s);
	assert_int_equal(kh_b64url_decode(s, strlen(s), out, cap, &n), KH_OK);
	return n;
}

/* The session header of a user, from POST /v1/sessions. */
static void login(struct dx *x, const char *name, const char *pw, char *hdr, size_t cap)
{
	char body[256];
	struct reply r;
	json_t *j;

	snprintf(body, sizeof body, "{\"name\":\"%s\",\"password\":\"%s\"}", name, pw);
	j = http_expect(&x->hc, "POST", "/v1/sessions", body, NULL, 201, &r);
	snprintf(hdr, cap, "Authorization: Bearer %s", jstr(j, "token"));
	assert_true(jint(j, "expires") > atomic_load(&clock_now));
	reply_free(&r);
}

static int64_t balance(struct dx *x, const char *auth)
{
	struct http_conn hc = x->hc;
	struct reply r;
	int64_t b;

	hc.auth = auth;
	b = jint(http_expect(&hc, "GET", "/v1/account", NULL, NULL, 200, &r), "balance");
	reply_free(&r);
	return b;
}

/* What a delivery got so far on the client's side. */
struct buy {
	int64_t id;
	uint8_t tok[512], act[512], receipt[KH_DIST_RECEIPT_BYTES];
	size_t toklen, actlen;
	uint8_t *pkg;
	size_t pkglen;
	int charged;
};

/* A processor's hello, base64url. */
static char *hello_of(struct mod *p)
{
	size_t n;
	assert_int_equal(cmd(&p->t, KH_INS_DIST_HELLO, NULL, 0, &n), KH_SW_OK);
	return b64(rbuf, n);
}

/* POST /v1/deliveries with what (a JSON fragment: "\"program\":N" or "\"receipt\":\"...\"") and
 * p's hello: the answer's status; on 201 the server's proof is given to p and its answer kept. */
static long start(struct dx *x, const char *auth, struct mod *p, const char *what, struct buy *b, char **resp64)
{
	struct http_conn hc = x->hc;
	char *hello = hello_of(p), *body;
	uint8_t auth_msg[2048];
	struct reply r;
	size_t n, dn;
	long status;

	hc.auth = auth;
	assert_true(asprintf(&body, "{%s,\"hello\":\"%s\"}", what, hello) > 0);
	http_req(&hc, "POST", "/v1/deliveries", body, NULL, &r);
	status = r.status;
	if (status == 201) {
		b->id = jint(r.json, "id");
		n = unb64(jstr(r.json, "auth"), auth_msg, sizeof auth_msg);
		assert_int_equal(cmd(&p->t, KH_INS_DIST_AUTH, auth_msg, n, &dn), KH_SW_OK);
		*resp64 = b64(rbuf, dn);
	}
	reply_free(&r);
	free(body);
	free(hello);
	return status;
}

/* resp, key into the processor (pending token), the package. */
static void keyed(struct dx *x, const char *auth, struct mod *p, struct buy *b, const char *resp64)
{
	struct http_conn hc = x->hc;
	char path[128], body[256];
	uint8_t key[1024];
	struct reply r;
	size_t n, dn;
	json_t *j;

	hc.auth = auth;
	snprintf(path, sizeof path, "/v1/deliveries/%lld/resp", (long long)b->id);
	snprintf(body, sizeof body, "{\"resp\":\"%s\"}", resp64);
	j = http_expect(&hc, "POST", path, body, NULL, 200, &r);
	n = unb64(jstr(j, "key"), key, sizeof key);
	assert_int_equal(cmd(&p->t, KH_INS_DIST_KEY, key, n, &dn), KH_SW_OK);
	assert_true(dn > 3 && dn - 3 <= sizeof b->tok);
	memcpy(b->tok, rbuf + 3, dn - 3); /* {1: token} */
	b->toklen = dn - 3;
	b->pkglen = (size_t)jint(j, "package_size");
	reply_free(&r);
	snprintf(path, sizeof path, "/v1/deliveries/%lld/package", (long long)b->id);
	http_req(&hc, "GET", path, NULL, NULL, &r);
	assert_int_equal(r.status, 200);
	assert_int_equal(r.len, b->pkglen);
	b->pkg = malloc(r.len);
	assert_non_null(b->pkg);
	memcpy(b->pkg, r.body, r.len);
	reply_free(&r);
}

/* POST charge: its status; on 200 the receipt kept and the licence activated on p. */
static long charge(struct dx *x, const char *auth, struct mod *p, struct buy *b)
{
	struct http_conn hc = x->hc;
	uint8_t sig[64], c[1024];
	char path[128];
	struct reply r;
	struct kh_wr w;
	size_t dn;
	long status;

	hc.auth = auth;
	snprintf(path, sizeof path, "/v1/deliveries/%lld/charge", (long long)b->id);
	http_req(&hc, "POST", path, NULL, NULL, &r);
	status = r.status;
	if (status == 200) {
		assert_int_equal(unb64(jstr(r.json, "receipt"), b->receipt, sizeof b->receipt), KH_DIST_RECEIPT_BYTES);
		assert_int_equal(unb64(jstr(r.json, "program_sig"), sig, sizeof sig), 64);
		b->charged = json_is_true(json_object_get(r.json, "charged"));
		kh_wr_init(&w, c, sizeof c);
		kh_tlv_put(&w, KH_DIST_T_TOKEN, b->tok, b->toklen);
		kh_tlv_put(&w, KH_DIST_T_PROGRAM_SIG, sig, sizeof sig);
		kh_tlv_put(&w, KH_DIST_T_RECEIPT, b->receipt + 5, KH_DIST_RECEIPT_LEN);
		assert_int_equal(w.err, KH_OK);
		assert_int_equal(cmd(&p->t, KH_INS_DIST_ACTIVATE, c, w.len, &dn), KH_SW_OK);
		memcpy(b->act, rbuf + 3, dn - 3);
		b->actlen = dn - 3;
	}
	reply_free(&r);
	return status;
}

/* The whole purchase of what (see start) by a user on p, which must succeed. */
static void buy(struct dx *x, const char *auth, struct mod *p, const char *what, struct buy *b)
{
	char *resp64 = NULL;

	memset(b, 0, sizeof *b);
	assert_int_equal(start(x, auth, p, what, b, &resp64), 201);
	keyed(x, auth, p, b, resp64);
	assert_int_equal(charge(x, auth, p, b), 200);
	free(resp64);
}

/* Run b's package with its active licence on p: the program's output (malloc'd). */
static char *run(struct dx *x, struct mod *p, const struct buy *b, kh_err want)
{
	char *pkg = path_in(x->w->dir, "pkg.khpk"), *outp = path_in(x->w->dir, "out.txt"), why[256];
	struct kh_run_opts o = {.workdir_fd = -1, .fd_in = -1, .fd_err = -1};
	int fd, status = -1;
	uint8_t *out;
	size_t n;

	fd = open(pkg, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, b->pkg, b->pkglen), (ssize_t)b->pkglen);
	o.fd_out = open(outp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(o.fd_out >= 0);
	assert_int_equal(kh_run_package(&p->t, fd, b->act, b->actlen, &o, &status, why, sizeof why), want);
	close(fd);
	close(o.fd_out);
	if (want == KH_OK)
		assert_int_equal(status, 0);
	out = kh_test_slurp(outp, &n);
	unlink(pkg);
	free(pkg);
	free(outp);
	return (char *)out;
}

static int64_t count(struct dx *x, const char *table)
{
	char sql[128];
	snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", table);
	return kh_test_sql_int(x->db, sql);
}

static void publish(struct kh_store *st, int version, int64_t *id)
{
	char man[256], code[256];
	int m = snprintf(man, sizeof man, "name: hello\nversion: %d\nkind: script\ninterpreter: /bin/sh\n", version);
	int c = snprintf(code, sizeof code, "echo 'hello v%d %s'\n", version, MARKER);
	assert_int_equal(kh_dist_publish(st, (uint8_t *)man, (size_t)m, (uint8_t *)code, (size_t)c, PRICE, 0, id, NULL),
			 KH_OK);
}

static int setup(void **state)
{
	struct dx *x = calloc(1, sizeof *x);
	struct kh_dist_service_config cfg = {0};
	struct kh_http_config hcfg = {0};
	struct kh_store *st;
	uint32_t serial;
	int64_t id, bal;

	assert_non_null(x);
	atomic_store(&clock_now, (int64_t)time(NULL));
	world_setup((void **)&x->w);
	make_mod(x->w->auth, KH_ROLE_PROCESSOR, &x->p1);
	make_mod(x->w->auth, KH_ROLE_PROCESSOR, &x->p2);
	make_mod(x->w->foreign, KH_ROLE_PROCESSOR, &x->alien);
	x->srvdir = path_in(x->w->dir, "srv");
	assert_int_equal(kh_dist_identity_new(x->w->auth, x->srvdir, &serial), KH_OK);
	assert_int_equal(kh_dist_identity_load(x->srvdir, &x->srv), KH_OK);
	x->db = kh_test_db(x->w->dir, "dist.db");
	assert_int_equal(kh_store_open(x->db, &st), KH_OK);
	assert_int_equal(kh_dist_account_new(st, "alice", "pw-alice", 8, 0, &id), KH_OK);
	assert_int_equal(kh_store_dist_deposit(st, id, 1000, 0, &bal), KH_OK);
	assert_int_equal(kh_dist_account_new(st, "bob", "pw-bob", 6, 0, &id), KH_OK);
	assert_int_equal(kh_store_dist_deposit(st, id, 1000, 0, &bal), KH_OK);
	assert_int_equal(kh_dist_account_new(st, "carol", "pw-carol", 8, 0, &id), KH_OK);
	assert_int_equal(kh_store_dist_deposit(st, id, 50, 0, &bal), KH_OK);
	publish(st, 1, &x->v1);
	publish(st, 2, &x->v2);
	kh_store_close(st);
	cfg.db = x->db;
	cfg.dir = x->srvdir;
	cfg.clock = test_clock;
	assert_int_equal(kh_dist_service_new(&cfg, &x->svc, NULL), KH_OK);
	hcfg.threads = 2;
	assert_int_equal(kh_http_new(&hcfg, &x->h), KH_OK);
	assert_int_equal(kh_dist_service_add_routes(x->svc, x->h), KH_OK);
	assert_int_equal(kh_http_start(x->h), KH_OK);
	x->hc.port = kh_http_port(x->h);
	x->hc.curl = curl_easy_init();
	assert_non_null(x->hc.curl);
	login(x, "alice", "pw-alice", x->alice, sizeof x->alice);
	login(x, "bob", "pw-bob", x->bob, sizeof x->bob);
	login(x, "carol", "pw-carol", x->carol, sizeof x->carol);
	*state = x;
	return 0;
}

static int teardown(void **state)
{
	struct dx *x = *state;

	curl_easy_cleanup(x->hc.curl);
	kh_http_free(x->h);
	kh_dist_service_free(x->svc);
	kh_softmod_free(x->p1.sm);
	kh_softmod_free(x->p2.sm);
	kh_softmod_free(x->alien.sm);
	kh_test_db_drop(x->db);
	free(x->srvdir);
	world_teardown((void **)&x->w);
	kh_wipe(x, sizeof *x);
	free(x);
	return 0;
}

/* The seed's sequence, a run, a retried charge, and the package lost and fetched again. */
static void test_buy_and_fetch_again(void **state)
{
	struct dx *x = *state;
	struct buy b, again;
	struct kh_dist_receipt rc;
	char what[64], *out, *rcpt64;
	uint8_t first[KH_DIST_RECEIPT_BYTES];

	snprintf(what, sizeof what, "\"program\":%lld", (long long)x->v1);
	buy(x, x->alice, &x->p1, what, &b);
	assert_true(b.charged);
	assert_int_equal(balance(x, x->alice), 1000 - PRICE);
	/* the receipt: the server's, for alice, this program and version, this processor, the price */
	assert_int_equal(kh_dist_receipt_parse(b.receipt, sizeof b.receipt, x->srv.pk, &rc), KH_OK);
	assert_int_equal(rc.program, (uint32_t)x->v1);
	assert_int_equal(rc.version, 1);
	assert_int_equal(rc.price, PRICE);
	assert_int_equal(rc.server, x->srv.serial);
	assert_int_equal(rc.account, (uint64_t)kh_test_sql_int(x->db, "SELECT id FROM dist_accounts WHERE name = 'alice'"));
	assert_int_equal(count(x, "dist_receipts"), 1);
	/* the package carries no plaintext; the processor runs it */
	assert_null(memmem(b.pkg, b.pkglen, MARKER, strlen(MARKER)));
	out = run(x, &x->p1, &b, KH_OK);
	assert_non_null(strstr(out, "hello v1 " MARKER));
	free(out);
	/* the same licence and package on another processor: refused, nothing runs */
	out = run(x, &x->p2, &b, KH_ERR_LICENCE);
	assert_string_equal(out, "");
	free(out);

	/* the charge retried (the answer lost): the same receipt, no money moves */
	memcpy(first, b.receipt, sizeof first);
	assert_int_equal(charge(x, x->alice, &x->p1, &b), 200);
	assert_false(b.charged);
	assert_memory_equal(b.receipt, first, sizeof first);
	assert_int_equal(balance(x, x->alice), 1000 - PRICE);
	assert_int_equal(count(x, "dist_receipts"), 1);

	/* lost: fetched again on the receipt, for nothing, and it runs */
	rcpt64 = b64(first, sizeof first);
	free(b.pkg);
	{
		char *w2;
		assert_true(asprintf(&w2, "\"receipt\":\"%s\"", rcpt64) > 0);
		buy(x, x->alice, &x->p1, w2, &again);
		free(w2);
	}
	assert_false(again.charged);
	assert_memory_equal(again.receipt, first, sizeof first);
	assert_int_equal(balance(x, x->alice), 1000 - PRICE);
	assert_int_equal(count(x, "dist_receipts"), 1);
	assert_int_equal(count(x, "dist_ledger"), 4); /* three deposits, one purchase */
	out = run(x, &x->p1, &again, KH_OK);
	assert_non_null(strstr(out, "hello v1 " MARKER));
	free(out);
	free(again.pkg);
	free(rcpt64);
}

/* Receipts that must not fetch anything: every refusal 403 receipt, nothing stored or charged. */
static void test_receipt_refused(void **state)
{
	struct dx *x = *state;
	struct buy b, none;
	char what[512], *rcpt64, *resp64 = NULL;
	uint8_t edited[KH_DIST_RECEIPT_BYTES];
	int64_t deliveries, ledger;

	snprintf(what, sizeof what, "\"program\":%lld", (long long)x->v1);
	buy(x, x->alice, &x->p1, what, &b);
	free(b.pkg);
	deliveries = count(x, "dist_deliveries");
	ledger = count(x, "dist_ledger");
	rcpt64 = b64(b.receipt, sizeof b.receipt);

	/* another user presents it */
	snprintf(what, sizeof what, "\"receipt\":\"%s\"", rcpt64);
	assert_int_equal(start(x, x->bob, &x->p1, what, &none, &resp64), 403);
	/* alice, for another processor */
	assert_int_equal(start(x, x->alice, &x->p2, what, &none, &resp64), 403);
	/* alice, for the newer version */
	snprintf(what, sizeof what, "\"receipt\":\"%s\",\"program\":%lld", rcpt64, (long long)x->v2);
	assert_int_equal(start(x, x->alice, &x->p1, what, &none, &resp64), 403);
	/* edited: every byte flipped in turn (a sample), the price and the program among them */
	for (size_t i = 0; i < sizeof edited; i += 7) {
		char *e64;
		memcpy(edited, b.receipt, sizeof edited);
		edited[i] ^= 0x40;
		e64 = b64(edited, sizeof edited);
		snprintf(what, sizeof what, "\"receipt\":\"%s\"", e64);
		assert_int_equal(start(x, x->alice, &x->p1, what, &none, &resp64), 403);
		free(e64);
	}
	/* a receipt signed by the server's key but never recorded (made up by an insider's copy of
	 * the format, say): not on the record */
	{
		struct kh_dist_receipt rc;
		char *f64;
		assert_int_equal(kh_dist_receipt_parse(b.receipt, sizeof b.receipt, NULL, &rc), KH_OK);
		rc.id[0] ^= 1;
		assert_int_equal(kh_dist_receipt_sign(&rc, x->srv.sk, edited), KH_OK);
		f64 = b64(edited, sizeof edited);
		snprintf(what, sizeof what, "\"receipt\":\"%s\"", f64);
		assert_int_equal(start(x, x->alice, &x->p1, what, &none, &resp64), 403);
		free(f64);
	}
	assert_int_equal(count(x, "dist_deliveries"), deliveries);
	assert_int_equal(count(x, "dist_ledger"), ledger);
	assert_int_equal(count(x, "dist_receipts"), 1);
	assert_int_equal(balance(x, x->alice), 1000 - PRICE);
	assert_int_equal(balance(x, x->bob), 1000);
	free(rcpt64);
}

/* The second path's attacks as the server sees them, and forged requests that deny nothing. */
static void test_second_path_refused(void **state)
{
	struct dx *x = *state;
	struct http_conn hc = x->hc;
	struct buy b, b2;
	char what[64], path[128], body[512], *resp64 = NULL, *resp2 = NULL, *fake;
	uint8_t junk[64];
	int64_t deliveries = count(x, "dist_deliveries");

	hc.auth = x->alice;
	snprintf(what, sizeof what, "\"program\":%lld", (long long)x->v1);
	/* a self-made "processor" (certified by another root): refused at hello, nothing stored */
	memset(&b, 0, sizeof b);
	assert_int_equal(start(x, x->alice, &x->alien, what, &b, &resp64), 403);
	assert_int_equal(count(x, "dist_deliveries"), deliveries);
	/* a hello that is not one */
	http_expect_error(&hc, "POST", "/v1/deliveries", "{\"program\":1,\"hello\":\"AAAA\"}", NULL, 400, "malformed");

	/* the answer forged by the host (a substituted key cannot sign for a certified processor) */
	assert_int_equal(start(x, x->alice, &x->p1, what, &b, &resp64), 201);
	assert_int_equal(kh_random(junk, sizeof junk), KH_OK);
	{
		uint8_t t[67] = {KH_DIST_T_RESP_SIG, 0, 64};
		memcpy(t + 3, junk, 64);
		fake = b64(t, sizeof t);
	}
	snprintf(path, sizeof path, "/v1/deliveries/%lld/resp", (long long)b.id);
	snprintf(body, sizeof body, "{\"resp\":\"%s\"}", fake);
	http_expect_error(&hc, "POST", path, body, NULL, 403, "dist_signature");
	/* p2's genuine answer to its own session, posted to p1's delivery */
	memset(&b2, 0, sizeof b2);
	assert_int_equal(start(x, x->alice, &x->p2, what, &b2, &resp2), 201);
	snprintf(body, sizeof body, "{\"resp\":\"%s\"}", resp2);
	http_expect_error(&hc, "POST", path, body, NULL, 403, "dist_signature");
	/* the package and the charge before the key: out of order */
	snprintf(path, sizeof path, "/v1/deliveries/%lld/package", (long long)b.id);
	http_expect_error(&hc, "GET", path, NULL, NULL, 409, "dist_session");
	snprintf(path, sizeof path, "/v1/deliveries/%lld/charge", (long long)b.id);
	http_expect_error(&hc, "POST", path, NULL, NULL, 409, "dist_session");
	/* none of it denied the genuine answer: p1 goes on (p2's hello ended nothing of p1's) */
	keyed(x, x->alice, &x->p1, &b, resp64);
	/* a second answer to a keyed delivery: out of order */
	snprintf(path, sizeof path, "/v1/deliveries/%lld/resp", (long long)b.id);
	snprintf(body, sizeof body, "{\"resp\":\"%s\"}", resp64);
	http_expect_error(&hc, "POST", path, body, NULL, 409, "dist_session");
	/* the key of p1's delivery moved to p2 (in a session of its own): p2 refuses it */
	{
		struct reply r;
		uint8_t key[1024];
		size_t n, dn;
		struct buy b3;
		char *resp3 = NULL;
		memset(&b3, 0, sizeof b3);
		assert_int_equal(start(x, x->alice, &x->p1, what, &b3, &resp3), 201);
		snprintf(path, sizeof path, "/v1/deliveries/%lld/resp", (long long)b3.id);
		snprintf(body, sizeof body, "{\"resp\":\"%s\"}", resp3);
		n = unb64(jstr(http_expect(&hc, "POST", path, body, NULL, 200, &r), "key"), key, sizeof key);
		reply_free(&r);
		free(resp3);
		free(resp2);
		resp2 = NULL;
		assert_int_equal(start(x, x->alice, &x->p2, what, &b2, &resp2), 201);
		assert_int_not_equal(cmd(&x->p2.t, KH_INS_DIST_KEY, key, n, &dn), KH_SW_OK);
	}
	/* nobody was charged for any of it; p1's delivery is still whole */
	assert_int_equal(balance(x, x->alice), 1000);
	assert_int_equal(charge(x, x->alice, &x->p1, &b), 200);
	assert_true(b.charged);
	assert_int_equal(balance(x, x->alice), 1000 - PRICE);
	free(b.pkg);
	free(fake);
	free(resp64);
	free(resp2);
}

/* Money and sessions: a charge without the funds changes nothing; another user's delivery is not
 * found; a missing, forged or ended session is refused. */
static void test_money_and_sessions(void **state)
{
	struct dx *x = *state;
	struct http_conn hc = x->hc;
	struct kh_store *st;
	struct buy b;
	char what[64], path[128], hdr[128], *resp64 = NULL, *before, *after;
	int64_t id, bal;

	snprintf(what, sizeof what, "\"program\":%lld", (long long)x->v1);
	memset(&b, 0, sizeof b);
	assert_int_equal(start(x, x->carol, &x->p1, what, &b, &resp64), 201);
	keyed(x, x->carol, &x->p1, &b, resp64);
	before = kh_test_sql_dump(x->db);
	assert_int_equal(charge(x, x->carol, &x->p1, &b), 402);
	after = kh_test_sql_dump(x->db);
	assert_string_equal(before, after); /* nothing changed */
	free(before);
	free(after);
	assert_int_equal(balance(x, x->carol), 50);
	/* bob cannot see or charge carol's delivery */
	hc.auth = x->bob;
	snprintf(path, sizeof path, "/v1/deliveries/%lld/charge", (long long)b.id);
	http_expect_error(&hc, "POST", path, NULL, NULL, 404, "not_found");
	snprintf(path, sizeof path, "/v1/deliveries/%lld/package", (long long)b.id);
	http_expect_error(&hc, "GET", path, NULL, NULL, 404, "not_found");
	/* carol pays in, and the same delivery is charged once */
	assert_int_equal(kh_store_open(x->db, &st), KH_OK);
	id = kh_test_sql_int(x->db, "SELECT id FROM dist_accounts WHERE name = 'carol'");
	assert_int_equal(kh_store_dist_deposit(st, id, 100, 0, &bal), KH_OK);
	kh_store_close(st);
	assert_int_equal(charge(x, x->carol, &x->p1, &b), 200);
	assert_true(b.charged);
	assert_int_equal(balance(x, x->carol), 50);
	free(b.pkg);
	free(resp64);

	/* sessions */
	hc.auth = NULL;
	http_expect_error(&hc, "GET", "/v1/account", NULL, NULL, 401, "unauthorised");
	hc.auth = "Authorization: Bearer AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
	http_expect_error(&hc, "GET", "/v1/account", NULL, NULL, 401, "unauthorised");
	hc.auth = NULL;
	http_expect_error(&hc, "POST", "/v1/sessions", "{\"name\":\"alice\",\"password\":\"wrong\"}", NULL, 401,
			  "unauthorised");
	http_expect_error(&hc, "POST", "/v1/sessions", "{\"name\":\"nobody\",\"password\":\"pw-alice\"}", NULL, 401,
			  "unauthorised");
	login(x, "alice", "pw-alice", hdr, sizeof hdr);
	assert_int_equal(balance(x, hdr), 1000);
	atomic_fetch_add(&clock_now, (int64_t)KH_DIST_SESSION_TTL + 1);
	hc.auth = hdr;
	http_expect_error(&hc, "GET", "/v1/account", NULL, NULL, 401, "unauthorised");
	atomic_fetch_sub(&clock_now, (int64_t)KH_DIST_SESSION_TTL + 1);
}

/* One account cannot fill the disk with deliveries it never finishes: at most
 * KH_STORE_DIST_UNDER_WAY_MAX started within the window; those left at hello go after it. */
static void test_limits(void **state)
{
	struct dx *x = *state;
	char what[64], *resp64 = NULL;
	struct buy b;
	int64_t bob = kh_test_sql_int(x->db, "SELECT id FROM dist_accounts WHERE name = 'bob'");
	char sql[128];

	snprintf(what, sizeof what, "\"program\":%lld", (long long)x->v1);
	for (int i = 0; i < KH_STORE_DIST_UNDER_WAY_MAX; i++) {
		memset(&b, 0, sizeof b);
		assert_int_equal(start(x, x->bob, &x->p1, what, &b, &resp64), 201);
		free(resp64);
		resp64 = NULL;
	}
	memset(&b, 0, sizeof b);
	assert_int_equal(start(x, x->bob, &x->p1, what, &b, &resp64), 429);
	/* another account is not held up by it */
	assert_int_equal(start(x, x->alice, &x->p1, what, &b, &resp64), 201);
	free(resp64);
	resp64 = NULL;
	/* after the window, the abandoned ones are gone and bob may start again */
	atomic_fetch_add(&clock_now, (int64_t)KH_STORE_DIST_WINDOW + 1);
	login(x, "bob", "pw-bob", x->bob, sizeof x->bob); /* the session ended too */
	assert_int_equal(start(x, x->bob, &x->p1, what, &b, &resp64), 201);
	free(resp64);
	snprintf(sql, sizeof sql, "SELECT count(*) FROM dist_deliveries WHERE account_id = %lld", (long long)bob);
	assert_int_equal(kh_test_sql_int(x->db, sql), 1);
	atomic_fetch_sub(&clock_now, (int64_t)KH_STORE_DIST_WINDOW + 1);
}

/* The catalogue: every program, a page at a time, open to anyone. */
static void test_catalogue(void **state)
{
	struct dx *x = *state;
	struct http_conn hc = x->hc;
	struct reply r;
	json_t *j, *p;

	j = http_expect(&hc, "GET", "/v1/programs?limit=1", NULL, NULL, 200, &r);
	p = json_array_get(json_object_get(j, "programs"), 0);
	assert_int_equal(jint(p, "id"), x->v1);
	assert_int_equal(jint(p, "version"), 1);
	assert_int_equal(jint(p, "price"), PRICE);
	assert_string_equal(jstr(p, "name"), "hello");
	assert_non_null(strstr(jstr(p, "manifest"), "kind: script\n"));
	assert_int_equal(jint(j, "next"), x->v1);
	reply_free(&r);
	j = http_expect(&hc, "GET", "/v1/programs?after=1&limit=5", NULL, NULL, 200, &r);
	assert_int_equal(json_array_size(json_object_get(j, "programs")), 1);
	assert_null(json_object_get(j, "next"));
	reply_free(&r);
	http_expect_error(&hc, "GET", "/v1/programs?limit=0", NULL, NULL, 400, "invalid_argument");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_buy_and_fetch_again, setup, teardown),
		cmocka_unit_test_setup_teardown(test_receipt_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_second_path_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_money_and_sessions, setup, teardown),
		cmocka_unit_test_setup_teardown(test_catalogue, setup, teardown),
		cmocka_unit_test_setup_teardown(test_limits, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
