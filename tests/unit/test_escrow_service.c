/*
 * The escrow service (src/center/escrow/service.c) with its signing process (src/center/escrow/
 * secmod.c, served on a socket by a thread of this test), the ledger on the test's store (SQLite,
 * or PostgreSQL as unit/escrow_service_pg), real HTTP on loopback, the buyer's and seller's
 * clients (src/host/escrow_client.c) and buyer devices driven in APDUs. The seed's sequence runs
 * whole, then what a buyer, a host, a seller or another operator's device can try: a request from
 * a device the authority never certified, or edited, or replayed; c' = 0, 1, n - 1, n and beyond;
 * an answer tampered with on its way (the device reports `failed`, the buyer is refunded); a
 * purchase without the funds; two purchases spending the same funds at once; a purchase retried;
 * `delivered` twice, or after the deadline's sweep; a seller withdrawing money still held. After
 * each, the ledger balances to the unit (kh_store_escrow_audit).
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "center/escrow/vcache.h"
#include "httputil.h"
#include "keyhole/apdu.h"
#include "keyhole/authority.h"
#include "keyhole/device.h"
#include "keyhole/escrow.h"
#include "keyhole/escrowclient.h"
#include "keyhole/escrowsvc.h"
#include "keyhole/file.h"
#include "keyhole/http.h"
#include "keyhole/host.h"
#include "keyhole/identity.h"
#include "keyhole/secmod.h"
#include "keyhole/store_escrow.h"
#include "testutil.h"
#include "world.h"

#define PT_LEN 10000
#define PRICE 1250

static _Atomic int64_t clock_now;

static int64_t test_clock(void *ctx)
{
	(void)ctx;
	return atomic_load(&clock_now);
}

struct ex {
	struct world *w;
	char *db, *edir, *keys, *sock, *url;
	struct kh_secmod *sm;
	pthread_t sm_th;
	volatile sig_atomic_t sm_stop, sm_ready;
	struct kh_escrow_service *svc;
	struct kh_http *h;
	struct mod b1, b2, alien;
	char tok_seller[KH_ESCROW_TOKEN_B64], tok_alice[KH_ESCROW_TOKEN_B64], tok_bob[KH_ESCROW_TOKEN_B64];
	int64_t seller, alice, bob;
	uint8_t pt[PT_LEN];
	char *plain, *khe, *offer, *base;
	uint8_t listing[KH_ESCROW_LISTING_MAX];
	size_t llen;
	struct kh_identity id;
};

static void *secmod_thread(void *arg)
{
	struct ex *x = arg;
	assert_int_equal(kh_secmod_serve(x->sm, x->sock, 8, &x->sm_stop, &x->sm_ready), KH_OK);
	return NULL;
}

static struct kh_escrow_client *client(struct ex *x, const char *tok)
{
	struct kh_escrow_client *c = NULL;
	assert_int_equal(kh_escrow_client_new(x->url, NULL, tok, &c), KH_OK);
	return c;
}

static void audit_ok(struct ex *x)
{
	struct kh_store_escrow_audit *au = calloc(1, sizeof *au);
	struct kh_store *st;

	assert_non_null(au);
	assert_int_equal(kh_store_open(x->db, &st), KH_OK);
	assert_int_equal(kh_store_escrow_audit(st, au), KH_OK);
	kh_store_close(st);
	free(au);
}

static struct kh_store_escrow_account balance_of(struct ex *x, int64_t id)
{
	struct kh_store_escrow_account a;
	struct kh_store *st;

	assert_int_equal(kh_store_open(x->db, &st), KH_OK);
	assert_int_equal(kh_store_escrow_account_get(st, id, &a), KH_OK);
	kh_store_close(st);
	return a;
}

static char *in_dir(struct ex *x, const char *name)
{
	return path_in(x->w->dir, name);
}

static int setup(void **state)
{
	struct ex *x = calloc(1, sizeof *x);
	struct kh_escrow_service_config cfg = {0};
	struct kh_http_config hcfg = {0};
	struct kh_escrow_client *c;
	struct kh_store *st;
	int64_t avail;
	uint32_t serial;

	assert_non_null(x);
	atomic_store(&clock_now, (int64_t)time(NULL));
	world_setup((void **)&x->w);
	make_mod(x->w->auth, KH_ROLE_BUYER, &x->b1);
	make_mod(x->w->auth, KH_ROLE_BUYER, &x->b2);
	make_mod(x->w->foreign, KH_ROLE_BUYER, &x->alien);
	x->edir = in_dir(x, "escrow");
	x->keys = in_dir(x, "keys");
	x->sock = in_dir(x, "secmod.sock");
	assert_int_equal(kh_identity_new(x->w->auth, x->edir, KH_ROLE_ESCROW, &serial), KH_OK);
	assert_int_equal(kh_identity_load(x->edir, KH_ROLE_ESCROW, &x->id), KH_OK);
	/* the signing process */
	assert_int_equal(kh_secmod_open(x->keys, &x->sm, NULL, 0), KH_OK);
	assert_int_equal(pthread_create(&x->sm_th, NULL, secmod_thread, x), 0);
	for (int i = 0; i < 500 && !x->sm_ready; i++) {
		struct timespec ts = {0, 10 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	assert_true(x->sm_ready);
	/* the accounts */
	x->db = kh_test_db(x->w->dir, "escrow.db");
	assert_int_equal(kh_store_open(x->db, &st), KH_OK);
	assert_int_equal(kh_escrow_account_new(st, "seller", "EUR", 0, &x->seller, x->tok_seller), KH_OK);
	assert_int_equal(kh_escrow_account_new(st, "alice", "EUR", 0, &x->alice, x->tok_alice), KH_OK);
	assert_int_equal(kh_escrow_account_new(st, "bob", "EUR", 0, &x->bob, x->tok_bob), KH_OK);
	assert_int_equal(kh_store_escrow_deposit(st, x->alice, 10 * PRICE, NULL, 0, &avail), KH_OK);
	assert_int_equal(kh_store_escrow_deposit(st, x->bob, PRICE, NULL, 0, &avail), KH_OK);
	kh_store_close(st);
	/* the service */
	cfg.db = x->db;
	cfg.dir = x->edir;
	cfg.secmod = x->sock;
	cfg.clock = test_clock;
	cfg.deadline = 3600;
	assert_int_equal(kh_escrow_service_new(&cfg, &x->svc, NULL), KH_OK);
	hcfg.threads = 8;
	assert_int_equal(kh_http_new(&hcfg, &x->h), KH_OK);
	assert_int_equal(kh_escrow_service_add_routes(x->svc, x->h), KH_OK);
	assert_int_equal(kh_http_start(x->h), KH_OK);
	assert_true(asprintf(&x->url, "http://127.0.0.1:%u", (unsigned)kh_http_port(x->h)) > 0);
	/* the seller's listing and content */
	assert_int_equal(kh_random(x->pt, sizeof x->pt), KH_OK);
	x->plain = in_dir(x, "song.bin");
	x->khe = in_dir(x, "song.khe");
	x->offer = in_dir(x, "song.offer");
	x->base = in_dir(x, "alice-song");
	assert_int_equal(kh_file_write_new(x->plain, x->pt, sizeof x->pt, 0600), KH_OK);
	c = client(x, x->tok_seller);
	assert_int_equal(kh_escrow_list(c, "song-1", PRICE, 0, "list-1", x->listing, &x->llen), KH_OK);
	kh_escrow_client_free(c);
	assert_int_equal(kh_escrow_seal_content(x->listing, x->llen, x->plain, 1000, x->khe, x->offer), KH_OK);
	*state = x;
	return 0;
}

static int teardown(void **state)
{
	struct ex *x = *state;

	kh_http_free(x->h);
	kh_escrow_service_free(x->svc);
	x->sm_stop = 1;
	pthread_join(x->sm_th, NULL);
	kh_secmod_free(x->sm);
	kh_softmod_free(x->b1.sm);
	kh_softmod_free(x->b2.sm);
	kh_softmod_free(x->alien.sm);
	kh_test_db_drop(x->db);
	free(x->edir);
	free(x->keys);
	free(x->sock);
	free(x->url);
	free(x->plain);
	free(x->khe);
	free(x->offer);
	free(x->base);
	kh_wipe(&x->id, sizeof x->id);
	world_teardown((void **)&x->w);
	free(x);
	return 0;
}

/* The seed's sequence: listed, encrypted, bought, unblinded, confirmed, the seller paid. */
static void test_sequence(void **state)
{
	struct ex *x = *state;
	struct kh_escrow_client *c = client(x, x->tok_alice), *s = client(x, x->tok_seller);
	struct kh_escrow_account_info ai;
	struct kh_escrow_bought b;
	char *lic = NULL, *out = in_dir(x, "song.out"), msg[256];
	uint8_t *got = NULL;
	size_t n = 0;

	/* the same listing asked again is the same listing */
	{
		uint8_t again[KH_ESCROW_LISTING_MAX];
		size_t al = 0;
		assert_int_equal(kh_escrow_list(s, "song-1", PRICE, 0, "list-1", again, &al), KH_OK);
		assert_int_equal(al, x->llen);
		assert_memory_equal(again, x->listing, al);
		/* the key again for something else: refused */
		assert_int_equal(kh_escrow_list(s, "song-2", PRICE, 0, "list-1", again, &al), KH_ERR_IDEM_MISMATCH);
	}
	assert_int_equal(kh_escrow_buy(c, &x->b1.t, x->offer, x->khe, x->base, &b), KH_OK);
	assert_int_equal(b.outcome, KH_ESCROW_DELIVERED);
	assert_string_equal(b.state, "delivered");
	assert_int_equal(b.resumed, 0);
	assert_int_equal(balance_of(x, x->alice).available, 9 * PRICE);
	assert_int_equal(balance_of(x, x->alice).held, 0);
	assert_int_equal(balance_of(x, x->seller).available, PRICE);
	audit_ok(x);
	/* the buyer opens it through the device, and only there */
	assert_true(asprintf(&lic, "%s.lic", x->base) > 0);
	assert_int_equal(kh_escrow_open(&x->b1.t, lic, x->khe, out, msg, sizeof msg), KH_OK);
	assert_int_equal(kh_file_read(out, PT_LEN + 1, &got, &n), KH_OK);
	assert_int_equal(n, PT_LEN);
	assert_memory_equal(got, x->pt, PT_LEN);
	kh_file_free(got, n);
	assert_int_equal(unlink(out), 0);
	assert_int_equal(kh_escrow_open(&x->b2.t, lic, x->khe, out, msg, sizeof msg), KH_ERR_LICENCE);
	assert_int_not_equal(access(out, F_OK), 0); /* nothing left behind */
	/* the seller takes its money; alice's account says what she paid */
	assert_int_equal(kh_escrow_withdraw(s, PRICE, "w-1", &ai), KH_OK);
	assert_int_equal(ai.available, 0);
	assert_int_equal(ai.withdrawn, PRICE);
	assert_int_equal(kh_escrow_withdraw(s, PRICE, "w-1", &ai), KH_OK); /* a repeat pays nothing */
	assert_int_equal(ai.withdrawn, PRICE);
	assert_int_equal(kh_escrow_account_info(c, &ai), KH_OK);
	assert_int_equal(ai.available, 9 * PRICE);
	/* `delivered` sent again: answered as a repeat, nothing moves */
	{
		char *np = NULL, hex[33], url[160], auth[128], *body;
		uint8_t *nb = NULL, cert[KH_CERT_MAX + 2];
		size_t nl = 0, cl = 0;
		uint16_t sw = 0;
		struct kh_escrow_notice t;
		struct reply rp;
		json_t *o = json_object();
		CURL *cu = curl_easy_init();

		assert_true(asprintf(&np, "%s.notice", x->base) > 0);
		assert_int_equal(kh_file_read(np, 512, &nb, &nl), KH_OK);
		assert_int_equal(kh_escrow_notice_parse(nb, nl, NULL, &t), KH_OK);
		assert_int_equal(kh_host_apdu(&x->b1.t, KH_INS_GET_CERT, 1, NULL, 0, cert, sizeof cert, &cl, &sw), KH_OK);
		assert_int_equal(kh_json_set_b64(o, "notice", nb, nl), KH_OK);
		assert_int_equal(kh_json_set_b64(o, "certificate", cert, cl), KH_OK);
		body = json_dumps(o, JSON_COMPACT);
		kh_hex_encode(t.purchase, sizeof t.purchase, hex);
		snprintf(url, sizeof url, "%s/v1/purchases/%s/notice", x->url, hex);
		snprintf(auth, sizeof auth, "Authorization: Bearer %s", x->tok_alice);
		assert_int_equal(http_perform(cu, url, "POST", body, NULL, auth, 30, &rp), CURLE_OK);
		assert_int_equal(rp.status, 200);
		assert_string_equal(jstr(rp.json, "state"), "delivered");
		assert_true(json_is_true(json_object_get(rp.json, "repeat")));
		reply_free(&rp);
		/* the seller's reading it may not settle it */
		snprintf(auth, sizeof auth, "Authorization: Bearer %s", x->tok_seller);
		assert_int_equal(http_perform(cu, url, "POST", body, NULL, auth, 30, &rp), CURLE_OK);
		assert_int_equal(rp.status, 404);
		reply_free(&rp);
		assert_int_equal(balance_of(x, x->seller).available, 0);
		assert_int_equal(balance_of(x, x->alice).available, 9 * PRICE);
		free(body);
		json_decref(o);
		curl_easy_cleanup(cu);
		kh_file_free(nb, nl);
		free(np);
	}
	audit_ok(x);
	free(lic);
	free(out);
	kh_escrow_client_free(c);
	kh_escrow_client_free(s);
}

/* No funds: refused before the signing process works, nothing held, the device's purchase
 * cancelled. Two purchases against funds for one, at once: one of them. */
struct racer {
	struct ex *x;
	struct mod *dev;
	const char *base;
	kh_err r;
	uint8_t outcome;
};

static void *race(void *arg)
{
	struct racer *r = arg;
	struct kh_escrow_client *c = NULL;
	struct kh_escrow_bought b;

	if (kh_escrow_client_new(r->x->url, NULL, r->x->tok_bob, &c) != KH_OK) {
		r->r = KH_ERR_NOMEM;
		return NULL;
	}
	r->r = kh_escrow_buy(c, &r->dev->t, r->x->offer, r->x->khe, r->base, &b);
	r->outcome = b.outcome;
	kh_escrow_client_free(c);
	return NULL;
}

static void test_funds(void **state)
{
	struct ex *x = *state;
	struct racer a = {x, &x->b1, NULL, 0, 0}, b = {x, &x->b2, NULL, 0, 0};
	char *ba = in_dir(x, "bob-a"), *bb = in_dir(x, "bob-b"), *pa = NULL;
	pthread_t ta, tb;

	a.base = ba;
	b.base = bb;
	assert_int_equal(pthread_create(&ta, NULL, race, &a), 0);
	assert_int_equal(pthread_create(&tb, NULL, race, &b), 0);
	pthread_join(ta, NULL);
	pthread_join(tb, NULL);
	/* exactly one bought it; the other was refused for funds */
	assert_true((a.r == KH_OK) != (b.r == KH_OK));
	assert_int_equal(a.r == KH_OK ? b.r : a.r, KH_ERR_FUNDS);
	assert_int_equal(balance_of(x, x->bob).available, 0);
	assert_int_equal(balance_of(x, x->bob).held, 0);
	/* the refused one left no purchase under way on the host */
	assert_true(asprintf(&pa, "%s.purchase", a.r == KH_OK ? bb : ba) > 0);
	assert_int_not_equal(access(pa, F_OK), 0);
	audit_ok(x);
	free(pa);
	free(ba);
	free(bb);
}

/* ---- requests made by hand: a certified key of the test's own, or another operator's ---- */

struct hand {
	uint8_t sk[32], pk[32];
	uint8_t cert[KH_CERT_MAX];
	size_t certlen;
	uint32_t ua;
};

static void hand_device(struct kh_authority *a, uint32_t ua, struct hand *h)
{
	h->ua = ua;
	assert_int_equal(kh_ed25519_keygen(h->sk, h->pk), KH_OK);
	assert_int_equal(kh_authority_issue(a, KH_ROLE_BUYER, ua, KH_CERT_KEY_ED25519, h->pk, "sign", h->cert,
					    sizeof h->cert, &h->certlen),
			 KH_OK);
}

/* A request for the listing with c' as given, signed by h. */
static size_t hand_request(struct ex *x, const struct hand *h, const uint8_t *cprime, size_t nlen, uint64_t price,
			   uint8_t *out)
{
	struct kh_escrow_listing l;
	struct kh_escrow_request q;
	struct kh_wr w;

	assert_int_equal(kh_escrow_listing_parse(x->listing, x->llen, NULL, &l), KH_OK);
	memset(&q, 0, sizeof q);
	assert_int_equal(kh_random(q.purchase, sizeof q.purchase), KH_OK);
	memcpy(q.listing, l.id, sizeof q.listing);
	q.escrow = l.escrow;
	q.price = price;
	memcpy(q.currency, l.currency, sizeof q.currency);
	q.device = h->ua;
	q.cprime = cprime;
	q.nlen = nlen;
	kh_wr_init(&w, out, KH_ESCROW_REQUEST_MAX);
	assert_int_equal(kh_escrow_request_sign(&q, h->sk, &w), KH_OK);
	return w.len;
}

/* POST /v1/purchases {request, certificate} as alice, idem as the key. */
static void post_purchase(struct ex *x, const uint8_t *req, size_t reqlen, const uint8_t *cert, size_t certlen,
			  const char *idem, struct reply *out)
{
	CURL *cu = curl_easy_init();
	char url[128], auth[128];
	json_t *b = json_object();
	char *body;

	assert_non_null(cu);
	assert_int_equal(kh_json_set_b64(b, "request", req, reqlen), KH_OK);
	assert_int_equal(kh_json_set_b64(b, "certificate", cert, certlen), KH_OK);
	body = json_dumps(b, JSON_COMPACT);
	snprintf(url, sizeof url, "%s/v1/purchases", x->url);
	snprintf(auth, sizeof auth, "Authorization: Bearer %s", x->tok_alice);
	assert_int_equal(http_perform(cu, url, "POST", body, idem, auth, 30, out), CURLE_OK);
	free(body);
	json_decref(b);
	curl_easy_cleanup(cu);
}

static const char *err_code(const struct reply *r)
{
	return jstr(json_object_get(r->json, "error"), "code");
}

static void test_requests_refused(void **state)
{
	struct ex *x = *state;
	struct kh_escrow_listing l;
	struct hand ours, theirs;
	uint8_t n[KH_RSA_MAX_LEN], v[KH_RSA_MAX_LEN], req[KH_ESCROW_REQUEST_MAX];
	size_t nlen = 0, rl;
	struct reply r;
	char *before;

	assert_int_equal(kh_escrow_listing_parse(x->listing, x->llen, NULL, &l), KH_OK);
	assert_int_equal(kh_rsa_spki_modulus(l.key, l.keylen, n, &nlen), KH_OK);
	hand_device(x->w->auth, 0x00ABCDEFu, &ours);
	hand_device(x->w->foreign, 0x00ABCDEFu, &theirs);
	before = kh_test_sql_dump(x->db);

	/* c' = 0, 1, n - 1, n, all ones: blinded_range, from a genuine device */
	memset(v, 0, nlen);
	rl = hand_request(x, &ours, v, nlen, PRICE, req);
	post_purchase(x, req, rl, ours.cert, ours.certlen, "r0", &r);
	assert_int_equal(r.status, 400);
	assert_string_equal(err_code(&r), "blinded_range");
	reply_free(&r);
	v[nlen - 1] = 1;
	rl = hand_request(x, &ours, v, nlen, PRICE, req);
	post_purchase(x, req, rl, ours.cert, ours.certlen, "r1", &r);
	assert_string_equal(err_code(&r), "blinded_range");
	reply_free(&r);
	memcpy(v, n, nlen);
	v[nlen - 1] -= 1;
	rl = hand_request(x, &ours, v, nlen, PRICE, req);
	post_purchase(x, req, rl, ours.cert, ours.certlen, "r2", &r);
	assert_string_equal(err_code(&r), "blinded_range");
	reply_free(&r);
	memcpy(v, n, nlen);
	rl = hand_request(x, &ours, v, nlen, PRICE, req);
	post_purchase(x, req, rl, ours.cert, ours.certlen, "r3", &r);
	assert_string_equal(err_code(&r), "blinded_range");
	reply_free(&r);
	memset(v, 0xFF, nlen);
	rl = hand_request(x, &ours, v, nlen, PRICE, req);
	post_purchase(x, req, rl, ours.cert, ours.certlen, "r4", &r);
	assert_string_equal(err_code(&r), "blinded_range");
	reply_free(&r);

	/* a valid c' from another operator's device: its certificate is not from our authority */
	memset(v, 0x11, nlen);
	rl = hand_request(x, &theirs, v, nlen, PRICE, req);
	post_purchase(x, req, rl, theirs.cert, theirs.certlen, "r5", &r);
	assert_int_equal(r.status, 403);
	assert_string_equal(err_code(&r), "certificate");
	reply_free(&r);
	/* a certificate of ours on another operator's signature, or an edited request */
	post_purchase(x, req, rl, ours.cert, ours.certlen, "r6", &r);
	assert_int_equal(r.status, 403);
	reply_free(&r);
	rl = hand_request(x, &ours, v, nlen, PRICE, req);
	req[40] ^= 1; /* the price */
	post_purchase(x, req, rl, ours.cert, ours.certlen, "r7", &r);
	assert_int_equal(r.status, 403);
	assert_string_equal(err_code(&r), "auth");
	reply_free(&r);
	/* another price than the listing's, signed by the device */
	rl = hand_request(x, &ours, v, nlen, PRICE - 1, req);
	post_purchase(x, req, rl, ours.cert, ours.certlen, "r8", &r);
	assert_int_equal(r.status, 400);
	reply_free(&r);
	/* no Idempotency-Key */
	rl = hand_request(x, &ours, v, nlen, PRICE, req);
	post_purchase(x, req, rl, ours.cert, ours.certlen, NULL, &r);
	assert_int_equal(r.status, 400);
	assert_string_equal(err_code(&r), "idempotency_key_required");
	reply_free(&r);

	/* none of it changed anything */
	{
		char *after = kh_test_sql_dump(x->db);
		assert_string_equal(before, after);
		free(after);
	}
	free(before);

	/* a genuine request replayed (another Idempotency-Key): the same purchase, one hold */
	{
		int64_t held0 = balance_of(x, x->alice).held, avail0 = balance_of(x, x->alice).available;
		json_t *a1;
		rl = hand_request(x, &ours, v, nlen, PRICE, req);
		post_purchase(x, req, rl, ours.cert, ours.certlen, "r9", &r);
		assert_int_equal(r.status, 200);
		a1 = json_incref(json_object_get(r.json, "answer"));
		reply_free(&r);
		post_purchase(x, req, rl, ours.cert, ours.certlen, "r10", &r);
		assert_int_equal(r.status, 200);
		assert_string_equal(json_string_value(a1), jstr(r.json, "answer"));
		json_decref(a1);
		reply_free(&r);
		assert_int_equal(balance_of(x, x->alice).held, held0 + PRICE);
		assert_int_equal(balance_of(x, x->alice).available, avail0 - PRICE);
	}
	audit_ok(x);
}

/* A device whose host dies before BUY FINISH reaches it: every other command goes through. */
struct gate {
	struct kh_transport *dev;
};

static kh_err gate_xfer(void *ctx, const uint8_t *cmd, size_t len, uint8_t *resp, size_t cap, size_t *rlen)
{
	struct gate *g = ctx;

	if (len >= 2 && cmd[1] == KH_INS_BUY_FINISH)
		return KH_ERR_TRANSPORT;
	return kh_transport_xfer(g->dev, cmd, len, resp, cap, rlen);
}

/* A first run that stops after the escrow answered: BASE.purchase keeps the request and answer. */
static void stop_after_answer(struct ex *x, struct mod *dev, const char *base)
{
	struct kh_escrow_client *c = client(x, x->tok_alice);
	struct gate g = {&dev->t};
	struct kh_transport t = {gate_xfer, NULL, &g};
	struct kh_escrow_bought b;
	char *spath = NULL;

	assert_int_equal(kh_escrow_buy(c, &t, x->offer, x->khe, base, &b), KH_ERR_TRANSPORT);
	assert_true(asprintf(&spath, "%s.purchase", base) > 0);
	assert_int_equal(access(spath, F_OK), 0);
	free(spath);
	kh_escrow_client_free(c);
}

/* The answer tampered with on its way: the device reports `failed`, the escrow refunds. */
static void test_tampered_answer(void **state)
{
	struct ex *x = *state;
	struct kh_escrow_client *c = client(x, x->tok_alice);
	char *base = in_dir(x, "alice-t"), *spath = NULL, *lic = NULL;
	uint8_t st[4096], *b = NULL;
	size_t n = 0;
	struct kh_escrow_bought bo;
	int64_t avail0 = balance_of(x, x->alice).available;

	/* an escrow that cannot be reached: the request kept, nothing held */
	{
		struct kh_escrow_client *dead = NULL;
		assert_int_equal(kh_escrow_client_new("http://127.0.0.1:1", NULL, x->tok_alice, &dead), KH_OK);
		assert_int_equal(kh_escrow_buy(dead, &x->b1.t, x->offer, x->khe, base, &bo), KH_ERR_TRANSPORT);
		kh_escrow_client_free(dead);
		assert_int_equal(balance_of(x, x->alice).available, avail0);
	}
	/* the escrow answers (one hold), and the host dies before the device sees it */
	stop_after_answer(x, &x->b1, base);
	assert_int_equal(balance_of(x, x->alice).held, PRICE);
	/* a byte of z flipped in what the host kept (z ends 64 bytes before the file's end) */
	assert_true(asprintf(&spath, "%s.purchase", base) > 0);
	assert_int_equal(kh_file_read(spath, sizeof st, &b, &n), KH_OK);
	assert_true(n > 600 && n <= sizeof st);
	memcpy(st, b, n);
	kh_file_free(b, n);
	st[n - 64 - 100] ^= 0x01;
	assert_int_equal(kh_file_write_atomic(spath, st, n, 0600), KH_OK);
	assert_int_equal(kh_escrow_buy(c, &x->b1.t, x->offer, x->khe, base, &bo), KH_OK);
	assert_int_equal(bo.resumed, 1);
	assert_int_equal(bo.outcome, KH_ESCROW_FAILED);
	assert_int_equal(bo.reason, KH_ESCROW_R_UNBLIND);
	assert_string_equal(bo.state, "failed");
	assert_int_not_equal(access(spath, F_OK), 0);
	assert_true(asprintf(&lic, "%s.lic", base) > 0);
	assert_int_not_equal(access(lic, F_OK), 0); /* no licence for a failed purchase */
	/* refunded to the unit */
	assert_int_equal(balance_of(x, x->alice).available, avail0);
	assert_int_equal(balance_of(x, x->alice).held, 0);
	audit_ok(x);
	free(lic);
	free(spath);
	free(base);
	kh_escrow_client_free(c);
}

/* The deadline: a held purchase no device spoke for goes to the seller, and not before; the
 * device's notice afterwards is refused and moves nothing. A retried purchase holds once. */
static void test_deadline(void **state)
{
	struct ex *x = *state;
	struct kh_escrow_client *c = client(x, x->tok_alice), *s = client(x, x->tok_seller);
	struct kh_escrow_account_info ai;
	char *base = in_dir(x, "alice-d");
	struct kh_escrow_bought bo;
	unsigned swept = 0;
	int64_t seller0 = balance_of(x, x->seller).available, avail0 = balance_of(x, x->alice).available;

	stop_after_answer(x, &x->b2, base);
	stop_after_answer(x, &x->b2, base); /* run again: the answer kept is used, no second hold */
	assert_int_equal(balance_of(x, x->alice).held, PRICE);
	assert_int_equal(balance_of(x, x->alice).available, avail0 - PRICE);
	/* the money is the seller's only once settled: not withdrawable now */
	assert_int_equal(kh_escrow_withdraw(s, seller0 + PRICE, "w-early", &ai), KH_ERR_FUNDS);
	assert_int_equal(kh_escrow_service_sweep(x->svc, &swept), KH_OK);
	assert_int_equal(swept, 0);
	atomic_fetch_add(&clock_now, 3601);
	assert_int_equal(kh_escrow_service_sweep(x->svc, &swept), KH_OK);
	assert_int_equal(swept, 1);
	assert_int_equal(kh_escrow_service_sweep(x->svc, &swept), KH_OK);
	assert_int_equal(swept, 0);
	assert_int_equal(balance_of(x, x->seller).available, seller0 + PRICE);
	assert_int_equal(balance_of(x, x->alice).held, 0);
	/* the device's notice after the sweep: refused, nothing moves */
	assert_int_equal(kh_escrow_buy(c, &x->b2.t, x->offer, x->khe, base, &bo), KH_ERR_PURCHASE_STATE);
	assert_int_equal(balance_of(x, x->seller).available, seller0 + PRICE);
	assert_int_equal(balance_of(x, x->alice).available, avail0 - PRICE);
	audit_ok(x);
	free(base);
	kh_escrow_client_free(c);
	kh_escrow_client_free(s);
}

/* A seller cannot fill the signing process's disk with keys: 1,000 listings an account. */
struct fill {
	int64_t seller;
	int n;
};

static kh_err fill_tx(struct kh_store *st, void *arg)
{
	struct fill *f = arg;
	uint8_t junk[64];
	kh_err r = KH_OK;

	memset(junk, 0x30, sizeof junk);
	for (int i = 0; i < f->n && r == KH_OK; i++) {
		struct kh_store_escrow_listing l;
		memset(&l, 0, sizeof l);
		if ((r = kh_random(l.id, sizeof l.id)) != KH_OK)
			break;
		l.seller = f->seller;
		l.content = "filler";
		l.price = 1;
		memcpy(l.currency, "EUR", 4);
		l.deadline_secs = 60;
		memcpy(l.key_id, l.id, sizeof l.key_id);
		l.pubkey = junk;
		l.pubkey_len = sizeof junk;
		l.signed_bytes = junk;
		l.signed_len = sizeof junk;
		r = kh_store_escrow_listing_add(st, &l, 0);
	}
	return r;
}

static void test_listing_limit(void **state)
{
	struct ex *x = *state;
	struct kh_escrow_client *s = client(x, x->tok_seller);
	struct fill f = {x->seller, KH_ESCROW_LISTINGS_MAX - 2};
	uint8_t buf[KH_ESCROW_LISTING_MAX];
	struct kh_store *st;
	size_t n = 0;

	/* the setup's listing, and all but one more */
	assert_int_equal(kh_store_open(x->db, &st), KH_OK);
	assert_int_equal(kh_store_run_tx(st, fill_tx, &f), KH_OK);
	kh_store_close(st);
	assert_int_equal(kh_escrow_list(s, "last", 5, 0, "list-last", buf, &n), KH_OK);
	assert_int_equal(kh_escrow_list(s, "one-more", 5, 0, "list-more", buf, &n), KH_ERR_LIMIT);
	/* the listing made already is still answered to its key */
	assert_int_equal(kh_escrow_list(s, "last", 5, 0, "list-last", buf, &n), KH_OK);
	kh_escrow_client_free(s);
}

/* A device that answers GET CERT with more than any certificate: refused, nothing written past
 * the host's buffer (ASan would see it), nothing started. */
static kh_err long_cert_xfer(void *ctx, const uint8_t *cmd, size_t len, uint8_t *resp, size_t cap, size_t *rlen)
{
	(void)ctx;
	if (len >= 2 && cmd[1] == KH_INS_GET_CERT) {
		if (cap < 2002)
			return KH_ERR_TRANSPORT; /* as a real transport does with an answer longer than cap */
		memset(resp, 0x30, 2000);
		resp[2000] = 0x90;
		resp[2001] = 0x00;
		*rlen = 2002;
		return KH_OK;
	}
	return KH_ERR_TRANSPORT;
}

static void test_hostile_device(void **state)
{
	struct ex *x = *state;
	struct kh_escrow_client *c = client(x, x->tok_alice);
	struct kh_transport t = {long_cert_xfer, NULL, NULL};
	char *base = in_dir(x, "hostile"), *spath = NULL;
	struct kh_escrow_bought b;

	assert_int_not_equal(kh_escrow_buy(c, &t, x->offer, x->khe, base, &b), KH_OK);
	assert_true(asprintf(&spath, "%s.purchase", base) > 0);
	assert_int_not_equal(access(spath, F_OK), 0);
	assert_int_equal(balance_of(x, x->alice).held, 0);
	free(spath);
	free(base);
	kh_escrow_client_free(c);
}

/* POST the request with h's certificate: the status expected, and the error's code when one. */
static void purchase_answered(struct ex *x, const uint8_t *req, size_t reqlen, const struct hand *h, const char *idem,
			      long status, const char *code)
{
	struct reply r;

	post_purchase(x, req, reqlen, h->cert, h->certlen, idem, &r);
	assert_int_equal(r.status, status);
	if (code)
		assert_string_equal(err_code(&r), code);
	reply_free(&r);
}

/*
 * The certificates the service keeps once checked: a certificate of another authority for the same
 * device is refused after ours passed, and ours too once the clock leaves its validity (before
 * the check that passed, or after its notAfter); ours again when the clock is back. Nothing moved.
 */
static void test_cert_cache(void **state)
{
	struct ex *x = *state;
	struct kh_escrow_listing l;
	struct kh_cert_info ci;
	struct hand ours, theirs;
	uint8_t n[KH_RSA_MAX_LEN], v[KH_RSA_MAX_LEN], req[KH_ESCROW_REQUEST_MAX];
	int64_t now = atomic_load(&clock_now);
	size_t nlen = 0, rl;
	char *before, *after;

	assert_int_equal(kh_escrow_listing_parse(x->listing, x->llen, NULL, &l), KH_OK);
	assert_int_equal(kh_rsa_spki_modulus(l.key, l.keylen, n, &nlen), KH_OK);
	memset(v, 0x11, nlen);
	hand_device(x->w->auth, 0x00C0FFEEu, &ours);
	hand_device(x->w->foreign, 0x00C0FFEEu, &theirs);
	assert_int_equal(kh_cert_check(ours.cert, ours.certlen, x->w->root_pk, KH_ROLE_BUYER, KH_CERT_KEY_ED25519,
				       0, &ci),
			 KH_OK);
	/* ours passes (and is kept) */
	rl = hand_request(x, &ours, v, nlen, PRICE, req);
	purchase_answered(x, req, rl, &ours, "c1", 200, NULL);
	before = kh_test_sql_dump(x->db);
	/* theirs, for the same device, signed with their key: still not from our authority */
	rl = hand_request(x, &theirs, v, nlen, PRICE, req);
	purchase_answered(x, req, rl, &theirs, "c2", 403, "certificate");
	/* ours with a request their key signed: the kept certificate's key is ours */
	purchase_answered(x, req, rl, &ours, "c3", 403, "auth");
	/* ours past its notAfter, and before the check that passed (before its notBefore) */
	rl = hand_request(x, &ours, v, nlen, PRICE, req);
	atomic_store(&clock_now, (int64_t)ci.not_after + 1);
	purchase_answered(x, req, rl, &ours, "c4", 403, "certificate_expired");
	atomic_store(&clock_now, 1000);
	purchase_answered(x, req, rl, &ours, "c5", 403, "certificate_expired");
	after = kh_test_sql_dump(x->db);
	assert_string_equal(before, after);
	free(after);
	free(before);
	/* the clock back: ours passes again */
	atomic_store(&clock_now, now);
	purchase_answered(x, req, rl, &ours, "c6", 200, NULL);
	audit_ok(x);
}

/* The cache's table: never more entries than its slots, however many keys; the newest kept, the
 * least recently used one replaced; a value larger than its room not kept. */
static void test_vcache_bound(void **state)
{
	struct kh__vcache *c = NULL;
	uint8_t key[KH_SHA256_LEN], first[KH_SHA256_LEN], val[16], got[16];
	size_t len = 0;
	unsigned slots;

	(void)state;
	assert_int_equal(kh__vcache_new(0, sizeof val, &c), KH_OK);
	slots = kh__vcache_slots(c);
	assert_int_equal(slots, 4);
	kh__vcache_free(c);
	assert_int_equal(kh__vcache_new(64, sizeof val, &c), KH_OK);
	slots = kh__vcache_slots(c);
	assert_int_equal(slots, 64);
	assert_int_equal(kh__vcache_new(65537, sizeof val, &(struct kh__vcache *){NULL}), KH_ERR_INVAL);
	for (unsigned i = 0; i < 50 * slots; i++) {
		assert_int_equal(kh_sha256((const uint8_t *)&i, sizeof i, key), KH_OK);
		if (i == 0)
			memcpy(first, key, sizeof key);
		memset(val, (int)(i & 0xFF), sizeof val);
		kh__vcache_put(c, key, val, sizeof val);
		assert_true(kh__vcache_count(c) <= slots);
		/* the one just kept is there, with its value */
		assert_int_equal(kh__vcache_get(c, key, got, sizeof got, &len), 1);
		assert_int_equal(len, sizeof val);
		assert_memory_equal(got, val, sizeof val);
	}
	assert_int_equal(kh__vcache_count(c), slots);
	/* the first one, never used since, was replaced long ago */
	assert_int_equal(kh__vcache_get(c, first, got, sizeof got, &len), 0);
	/* too large a value: not kept; too small a buffer: no hit */
	{
		uint8_t big[17] = {0};
		assert_int_equal(kh_sha256(big, sizeof big, key), KH_OK);
		kh__vcache_put(c, key, big, sizeof big);
		assert_int_equal(kh__vcache_get(c, key, got, sizeof got, &len), 0);
		kh__vcache_put(c, key, val, sizeof val);
		assert_int_equal(kh__vcache_get(c, key, got, sizeof got - 1, &len), 0);
	}
	kh__vcache_free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_sequence, setup, teardown),
		cmocka_unit_test_setup_teardown(test_funds, setup, teardown),
		cmocka_unit_test_setup_teardown(test_requests_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tampered_answer, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deadline, setup, teardown),
		cmocka_unit_test_setup_teardown(test_listing_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hostile_device, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cert_cache, setup, teardown),
		cmocka_unit_test(test_vcache_bound),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
