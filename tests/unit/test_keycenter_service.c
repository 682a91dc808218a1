/*
 * The key center (src/center/keycenter/) over real HTTP on loopback, on SQLite and again on
 * PostgreSQL (unit/test_keycenter_service_pg). Its cards are played by this test (struct card):
 * each holds what a key card holds (a seed, a serial certified by the authority with role
 * keycard, its signing key, its two chains) and does what the card's commands do, through the
 * same base functions (keyhole/keycard.h, keyhole/keyseq.h), so that every key the center uses is
 * checked against the card's own. The judges: a post is delivered once and opens under the
 * recipient's key only; a replay, a key beyond the window, a flipped or cut message change
 * nothing; a refused recipient spends the index and queues nothing; access codes are limited; a
 * copy of the database opens nothing without the center's key and holds no key a card handed
 * out, nor a document; a replacement card opens the old one's waiting mail and the old cannot;
 * 32 senders at once deliver each message exactly once, in each sender's order.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "keyhole/authority.h"
#include "keyhole/buf.h"
#include "keyhole/crypto.h"
#include "keyhole/file.h"
#include "keyhole/hpke.h"
#include "keyhole/http.h"
#include "keyhole/identity.h"
#include "keyhole/host.h"
#include "keyhole/keycard.h"
#include "keyhole/keycardhost.h"
#include "keyhole/keycentersvc.h"
#include "keyhole/store_keycenter.h"
#include "testutil.h"
#include "world.h"

#define DOC_LEN 1000
#define THREADS 32
#define PER_THREAD 8
#define RECIPIENTS 4

static _Atomic int64_t clock_now;

static int64_t test_clock(void *ctx)
{
	(void)ctx;
	return atomic_load(&clock_now);
}

/* A key card as the test plays it. */
struct card {
	uint64_t serial;
	uint8_t seed[32], sk[32], pk[32];
	uint8_t cert[KH_CERT_MAX];
	size_t certlen;
	struct kh_keyseq send, recv;
	struct kh_keyseq send0; /* the send chain at its start: any key, for a test's forged indexes */
	char addr[KH_KC_ADDR_MAX + 1];
	char code[KH_KEYCENTER_CODE_SHOWN + 1];
	char token[64];
};

struct kx {
	char *dir, *kcdir, *db, *url;
	struct kh_authority *auth;
	struct kh_keycenter *kc;
	struct kh_keycenter_service *svc;
	struct kh_http *h;
	uint8_t center_pk[32];
	uint32_t center;
};

/* ---------------------------------------------------------------- HTTP */

struct buf {
	uint8_t *p;
	size_t n;
};

static size_t on_data(char *d, size_t sz, size_t nm, void *arg)
{
	struct buf *b = arg;
	uint8_t *p = realloc(b->p, b->n + sz * nm + 1);

	assert_non_null(p);
	memcpy(p + b->n, d, sz * nm);
	b->p = p;
	b->n += sz * nm;
	b->p[b->n] = 0;
	return sz * nm;
}

/* One request: body (len bytes, JSON unless raw) and the bearer token, may be NULL. The answer's
 * bytes into *out (may be NULL), its JSON into *json (may be NULL); returns the status. */
static long req(struct kx *x, const char *method, const char *path, const void *body, size_t len, int raw,
		const char *token, struct buf *out, json_t **json)
{
	CURL *c = curl_easy_init();
	struct curl_slist *hd = NULL;
	struct buf b = {NULL, 0};
	char url[256], auth[128];
	long status = 0;

	assert_non_null(c);
	snprintf(url, sizeof url, "%s%s", x->url, path);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 120L);
	if (body) {
		hd = curl_slist_append(hd, raw ? "Content-Type: application/octet-stream" : "Content-Type: application/json");
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)len);
	}
	if (token) {
		snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
		hd = curl_slist_append(hd, auth);
	}
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hd);
	{
		CURLcode cr = curl_easy_perform(c);
		if (cr != CURLE_OK)
			fprintf(stderr, "curl: %s %s: %s\n", method, path, curl_easy_strerror(cr));
		assert_int_equal(cr, CURLE_OK);
	}
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_slist_free_all(hd);
	curl_easy_cleanup(c);
	if (json)
		*json = b.p ? json_loadb((char *)b.p, b.n, 0, NULL) : NULL;
	if (out)
		*out = b;
	else
		free(b.p);
	return status;
}

static long req_json(struct kx *x, const char *method, const char *path, const char *body, const char *token,
		     json_t **json)
{
	return req(x, method, path, body, body ? strlen(body) : 0, 0, token, NULL, json);
}

static void expect_error(json_t *j, const char *code)
{
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "code")), code);
}

static int64_t jget(const json_t *o, const char *k)
{
	json_t *v = json_object_get(o, k);
	assert_true(json_is_integer(v));
	return json_integer_value(v);
}

/* ---------------------------------------------------------------- the cards */

static void card_new(struct kx *x, struct card *c, const char *addr)
{
	uint32_t ua;

	memset(c, 0, sizeof *c);
	assert_int_equal(kh_authority_next_ua(x->auth, &ua), KH_OK);
	c->serial = ua;
	assert_int_equal(kh_ed25519_keygen(c->sk, c->pk), KH_OK);
	assert_int_equal(kh_authority_issue(x->auth, KH_ROLE_KEYCARD, ua, KH_CERT_KEY_ED25519, c->pk, "sign", c->cert,
					    sizeof c->cert, &c->certlen),
			 KH_OK);
	assert_int_equal(kh_random(c->seed, sizeof c->seed), KH_OK);
	assert_int_equal(kh_keyseq_init(c->seed, c->serial, KH_KEYSEQ_SEND, &c->send), KH_OK);
	c->send0 = c->send;
	assert_int_equal(kh_keyseq_init(c->seed, c->serial, KH_KEYSEQ_RECV, &c->recv), KH_OK);
	snprintf(c->addr, sizeof c->addr, "%s", addr);
}

/* KC ENROL as the card does it: the seed sealed to the center's enrolment key. */
static void card_seal_seed(struct kx *x, const struct card *c, uint8_t sealed[static KH_KC_SEALED_SEED_LEN])
{
	uint8_t rec[KH_KC_ENROLKEY_LEN], xpk[32], info[KH_KC_ENROL_INFO_LEN];
	struct kh_hpke_ctx h;
	uint32_t center = 0;

	assert_int_equal(kh_keycenter_enrolkey(x->kc, rec), KH_OK);
	assert_int_equal(kh_kc_enrolkey_verify(x->center_pk, rec, sizeof rec, &center, xpk), KH_OK);
	assert_int_equal(center, x->center);
	kh_kc_enrol_info(center, c->serial, info);
	assert_int_equal(kh_hpke_setup_s(&h, KH_AEAD_AES128_GCM, xpk, info, sizeof info, NULL, sealed), KH_OK);
	assert_int_equal(kh_hpke_seal(&h, NULL, 0, c->seed, sizeof c->seed, sealed + KH_HPKE_ENC_LEN), KH_OK);
	kh_hpke_ctx_wipe(&h);
}

static kh_err enrol(struct kx *x, struct card *c, uint64_t replaces)
{
	uint8_t sealed[KH_KC_SEALED_SEED_LEN];
	struct kh_keycenter_enrolment e = {c->serial, sealed, c->cert, c->certlen, c->addr, replaces};
	struct kh_store *st;
	uint64_t serial = 0;
	kh_err r;

	assert_int_equal(kh_keycenter_card_cert(x->kc, c->cert, c->certlen, atomic_load(&clock_now), &serial), KH_OK);
	assert_int_equal(serial, c->serial);
	card_seal_seed(x, c, sealed);
	assert_int_equal(kh_store_open(x->db, &st), KH_OK);
	r = kh_keycenter_enrol(x->kc, st, &e, atomic_load(&clock_now), c->code);
	kh_store_close(st);
	return r;
}

static long activate(struct kx *x, uint64_t serial, const char *code, json_t **j)
{
	char body[256];

	snprintf(body, sizeof body, "{\"serial\": %llu, \"code\": \"%s\"}", (unsigned long long)serial, code);
	return req_json(x, "POST", "/v1/activate", body, NULL, j);
}

static void enrol_active(struct kx *x, struct card *c, const char *addr)
{
	json_t *j = NULL;

	card_new(x, c, addr);
	assert_int_equal(enrol(x, c, 0), KH_OK);
	assert_int_equal(activate(x, c->serial, c->code, &j), 200);
	assert_string_equal(json_string_value(json_object_get(j, "address")), addr);
	json_decref(j);
}

/* KC SEND and the host's sealing: a post of doc to `to` under key i (0: the card's next). The
 * message is malloc'd into *msg. */
static size_t post_make(struct card *c, uint64_t i, const char *to, const uint8_t *doc, size_t len, uint8_t **msg)
{
	struct kh_kc_header h = {KH_KC_POST, c->serial, 0};
	uint8_t key[32];
	size_t cap = (size_t)kh_kc_msg_size(strlen(to), len), n = 0;

	if (i == 0) {
		i = c->send.pos;
		assert_int_equal(kh_keyseq_key(&c->send, i, 1, key), KH_OK);
		assert_int_equal(kh_keyseq_advance(&c->send, i + 1, 1), KH_OK);
	} else {
		assert_int_equal(kh_keyseq_key(&c->send0, i, KH_KEYSEQ_WINDOW_MAX, key), KH_OK);
	}
	h.index = i;
	assert_non_null(*msg = malloc(cap));
	assert_int_equal(kh_kc_msg_seal(key, &h, to, doc, len, *msg, cap, &n), KH_OK);
	kh_wipe(key, sizeof key);
	return n;
}

static long post(struct kx *x, const uint8_t *msg, size_t n, json_t **j)
{
	return req(x, "POST", "/v1/messages", msg, n, 1, NULL, NULL, j);
}

/* KC OPEN as the card does it, then the host opens the rest: the document into doc. */
static kh_err card_open(struct card *c, const uint8_t *msg, size_t n, uint8_t *doc, size_t cap, size_t *len,
			char from[static KH_KC_ADDR_MAX + 1])
{
	struct kh_kc_header h;
	struct kh_kc_envelope e;
	uint8_t key[32];
	kh_err r;

	if ((r = kh_kc_header_parse(msg, n, &h)) != KH_OK)
		return r;
	if (h.dir != KH_KC_DELIVERY || h.serial != c->serial)
		return KH_ERR_RECIPIENT;
	if ((r = kh_keyseq_key(&c->recv, h.index, KH_KEYSEQ_WINDOW_MAX, key)) != KH_OK)
		return r;
	if ((r = kh_kc_msg_open(key, msg, n, &h, &e, doc, cap, len)) == KH_OK) {
		assert_int_equal(kh_keyseq_advance(&c->recv, h.index + 1, KH_KEYSEQ_WINDOW_MAX), KH_OK);
		snprintf(from, KH_KC_ADDR_MAX + 1, "%s", e.addr);
	}
	kh_wipe(key, sizeof key);
	return r;
}

/* KC HELLO and the session: c->token. */
static long session(struct kx *x, struct card *c)
{
	char body[512], nb64[64], sb64[128];
	uint8_t nonce[KH_KC_NONCE_LEN], msg[KH_KC_HELLO_MSG_LEN], sig[64];
	json_t *j = NULL;
	size_t n = 0;
	long st;

	snprintf(body, sizeof body, "{\"serial\": %llu}", (unsigned long long)c->serial);
	assert_int_equal(req_json(x, "POST", "/v1/sessions/challenge", body, NULL, &j), 200);
	assert_int_equal(jget(j, "center"), x->center);
	assert_int_equal(kh_json_get_b64(j, "nonce", nonce, sizeof nonce, &n, 1), KH_OK);
	json_decref(j);
	kh_kc_hello_msg(x->center, c->serial, nonce, msg);
	assert_int_equal(kh_ed25519_sign(c->sk, msg, sizeof msg, sig), KH_OK);
	assert_int_equal(kh_b64url_encode(nonce, sizeof nonce, nb64, sizeof nb64), KH_OK);
	assert_int_equal(kh_b64url_encode(sig, sizeof sig, sb64, sizeof sb64), KH_OK);
	snprintf(body, sizeof body, "{\"serial\": %llu, \"nonce\": \"%s\", \"signature\": \"%s\"}",
		 (unsigned long long)c->serial, nb64, sb64);
	st = req_json(x, "POST", "/v1/sessions", body, NULL, &j);
	if (st == 200)
		snprintf(c->token, sizeof c->token, "%s", json_string_value(json_object_get(j, "token")));
	json_decref(j);
	return st;
}

/* The card's mailbox listing (owned by the caller). */
static json_t *mailbox(struct kx *x, struct card *c)
{
	json_t *j = NULL;

	assert_int_equal(req_json(x, "GET", "/v1/mailbox", NULL, c->token, &j), 200);
	assert_int_equal(jget(j, "serial"), (int64_t)c->serial);
	return j;
}

static struct buf fetch(struct kx *x, struct card *c, uint64_t j)
{
	struct buf b = {NULL, 0};
	char path[64];

	snprintf(path, sizeof path, "/v1/mailbox/%llu", (unsigned long long)j);
	assert_int_equal(req(x, "GET", path, NULL, 0, 0, c->token, &b, NULL), 200);
	return b;
}

static struct kh_store_kc_card card_row(struct kx *x, uint64_t serial)
{
	struct kh_store_kc_card c;
	struct kh_store *st;

	assert_int_equal(kh_store_open(x->db, &st), KH_OK);
	assert_int_equal(kh_store_kc_card_get(st, serial, &c), KH_OK);
	kh_store_close(st);
	return c;
}

static int64_t waiting(struct kx *x, uint64_t serial)
{
	struct kh_store *st;
	int64_t n = -1;

	assert_int_equal(kh_store_open(x->db, &st), KH_OK);
	assert_int_equal(kh_store_kc_mail_count(st, serial, &n), KH_OK);
	kh_store_close(st);
	return n;
}

static void block(struct kx *x, uint64_t serial)
{
	struct kh_store *st;

	assert_int_equal(kh_store_open(x->db, &st), KH_OK);
	assert_int_equal(kh_keycenter_block(st, serial), KH_OK);
	kh_store_close(st);
}

/* ---------------------------------------------------------------- setup */

static int setup(void **state)
{
	struct kx *x = calloc(1, sizeof *x);
	struct kh_keycenter_service_config cfg = {0};
	struct kh_http_config hcfg = {0};
	uint32_t serial = 0;
	char *adir;

	assert_non_null(x);
	atomic_store(&clock_now, (int64_t)time(NULL));
	assert_non_null(x->dir = kh_test_tmpdir());
	assert_true(asprintf(&adir, "%s/authority", x->dir) > 0);
	assert_true(asprintf(&x->kcdir, "%s/kc", x->dir) > 0);
	assert_int_equal(kh_authority_init(adir, "Test operator"), KH_OK);
	assert_int_equal(kh_authority_open(adir, &x->auth), KH_OK);
	free(adir);
	assert_int_equal(kh_identity_new(x->auth, x->kcdir, KH_ROLE_KEYCENTER, &serial), KH_OK);
	assert_int_equal(kh_keycenter_open(x->kcdir, &x->kc), KH_OK);
	x->center = serial;
	assert_int_equal(kh_keycenter_serial(x->kc), serial);
	{
		struct kh_identity id;
		assert_int_equal(kh_identity_load(x->kcdir, KH_ROLE_KEYCENTER, &id), KH_OK);
		memcpy(x->center_pk, id.pk, 32);
		kh_wipe(&id, sizeof id);
	}
	x->db = kh_test_db(x->dir, "kc.db");
	cfg.db = x->db;
	cfg.dir = x->kcdir;
	cfg.clock = test_clock;
	cfg.window = 16;
	cfg.max_document = 200000;
	assert_int_equal(kh_keycenter_service_new(&cfg, &x->svc, NULL), KH_OK);
	hcfg.threads = 256; /* a quarter per address: room for the 32 senders */
	hcfg.raw_body_limit = kh_keycenter_post_max(cfg.max_document);
	assert_int_equal(kh_http_new(&hcfg, &x->h), KH_OK);
	assert_int_equal(kh_keycenter_service_add_routes(x->svc, x->h), KH_OK);
	assert_int_equal(kh_http_start(x->h), KH_OK);
	assert_true(asprintf(&x->url, "http://127.0.0.1:%u", (unsigned)kh_http_port(x->h)) > 0);
	*state = x;
	return 0;
}

static int teardown(void **state)
{
	struct kx *x = *state;

	kh_http_free(x->h);
	kh_keycenter_service_free(x->svc);
	kh_keycenter_close(x->kc);
	kh_authority_free(x->auth);
	kh_test_db_drop(x->db);
	free(x->kcdir);
	free(x->url);
	kh_test_rmdir(x->dir);
	free(x);
	return 0;
}

/* ---------------------------------------------------------------- the sequence */

/* A→B: posted, acked, fetched in a session, opened with B's key, deleted. */
static void test_post_and_fetch(void **state)
{
	struct kx *x = *state;
	struct card a, b;
	uint8_t doc[DOC_LEN], got[DOC_LEN + 1], *msg;
	uint8_t ack[KH_KC_ACK_LEN];
	char from[KH_KC_ADDR_MAX + 1];
	uint32_t center;
	uint64_t serial, index;
	size_t n, len = 0;
	json_t *j = NULL, *m;
	struct buf d;

	enrol_active(x, &a, "alice@example.org");
	enrol_active(x, &b, "bob@example.org");
	assert_int_equal(kh_random(doc, sizeof doc), KH_OK);
	n = post_make(&a, 0, "bob@example.org", doc, sizeof doc, &msg);
	assert_int_equal(post(x, msg, n, &j), 200);
	assert_int_equal(jget(j, "serial"), (int64_t)a.serial);
	assert_int_equal(jget(j, "index"), 1);
	assert_string_equal(json_string_value(json_object_get(j, "to")), "bob@example.org");
	assert_true(json_is_false(json_object_get(j, "duplicate")));
	assert_int_equal(kh_json_get_b64(j, "ack", ack, sizeof ack, &len, 1), KH_OK);
	assert_int_equal(kh_kc_ack_verify(x->center_pk, ack, sizeof ack, &center, &serial, &index), KH_OK);
	assert_true(center == x->center && serial == a.serial && index == 1);
	json_decref(j);
	free(msg);
	/* the public ack of A's count */
	{
		char path[64];
		snprintf(path, sizeof path, "/v1/cards/%llu/ack", (unsigned long long)a.serial);
		assert_int_equal(req_json(x, "GET", path, NULL, NULL, &j), 200);
		assert_int_equal(jget(j, "index"), 1);
		json_decref(j);
		snprintf(path, sizeof path, "/v1/cards/%llu/ack", (unsigned long long)b.serial);
		assert_int_equal(req_json(x, "GET", path, NULL, NULL, &j), 200);
		assert_int_equal(jget(j, "index"), 0);
		assert_true(json_is_null(json_object_get(j, "ack")));
		json_decref(j);
	}
	/* B's mailbox: no session, no mail */
	assert_int_equal(req_json(x, "GET", "/v1/mailbox", NULL, "AAAA", &j), 401);
	json_decref(j);
	assert_int_equal(session(x, &b), 200);
	m = mailbox(x, &b);
	assert_int_equal(json_array_size(json_object_get(m, "messages")), 1);
	j = json_array_get(json_object_get(m, "messages"), 0);
	assert_int_equal(jget(j, "index"), 1);
	assert_string_equal(json_string_value(json_object_get(j, "from")), "alice@example.org");
	json_decref(m);
	d = fetch(x, &b, 1);
	/* A cannot open it (its receive chain is not B's), B can */
	assert_int_not_equal(card_open(&a, d.p, d.n, got, sizeof got, &len, from), KH_OK);
	assert_int_equal(card_open(&b, d.p, d.n, got, sizeof got, &len, from), KH_OK);
	assert_int_equal(len, sizeof doc);
	assert_memory_equal(got, doc, sizeof doc);
	assert_string_equal(from, "alice@example.org");
	free(d.p);
	assert_int_equal(req_json(x, "DELETE", "/v1/mailbox/1", NULL, b.token, &j), 200);
	assert_int_equal(jget(j, "deleted"), 1);
	json_decref(j);
	assert_int_equal(req_json(x, "DELETE", "/v1/mailbox/1", NULL, b.token, &j), 404);
	json_decref(j);
	assert_int_equal(waiting(x, b.serial), 0);
	/* A's token is not B's mailbox, and a used nonce makes no second session */
	assert_int_equal(session(x, &a), 200);
	m = mailbox(x, &a);
	assert_int_equal(json_array_size(json_object_get(m, "messages")), 0);
	json_decref(m);
	/* sending to oneself: the same row's two chains */
	n = post_make(&a, 0, "alice@example.org", doc, 10, &msg);
	assert_int_equal(post(x, msg, n, &j), 200);
	json_decref(j);
	free(msg);
	d = fetch(x, &a, 1);
	assert_int_equal(card_open(&a, d.p, d.n, got, sizeof got, &len, from), KH_OK);
	assert_int_equal(len, 10);
	assert_string_equal(from, "alice@example.org");
	free(d.p);
}

/* Access codes: wrong and unknown alike; at most 5 failures per window, the 6th refused even right. */
static void test_activation(void **state)
{
	struct kx *x = *state;
	struct card c;
	char lower[KH_KEYCENTER_CODE_SHOWN + 1];
	json_t *j = NULL;

	card_new(x, &c, "carol@example.org");
	assert_int_equal(enrol(x, &c, 0), KH_OK);
	assert_int_equal(strlen(c.code), 19);
	assert_int_equal(activate(x, c.serial + 1000, c.code, &j), 403);
	expect_error(j, "access_code");
	json_decref(j);
	for (int i = 0; i < KH_KEYCENTER_CODE_TRIES; i++) {
		assert_int_equal(activate(x, c.serial, "AAAA-BBBB-CCCC-DDDD", &j), 403);
		expect_error(j, "access_code");
		json_decref(j);
	}
	assert_int_equal(activate(x, c.serial, c.code, &j), 429);
	expect_error(j, "limit");
	json_decref(j);
	assert_int_equal(card_row(x, c.serial).state, KH_STORE_KC_ENROLLED);
	atomic_fetch_add(&clock_now, KH_KEYCENTER_CODE_WINDOW);
	/* typed in lower case with spaces for dashes: the same code */
	for (size_t i = 0; i <= strlen(c.code); i++)
		lower[i] = c.code[i] == '-' ? ' ' : (char)(c.code[i] >= 'A' && c.code[i] <= 'Z' ? c.code[i] + 32 : c.code[i]);
	assert_int_equal(activate(x, c.serial, lower, &j), 200);
	assert_string_equal(json_string_value(json_object_get(j, "state")), "active");
	json_decref(j);
	assert_int_equal(activate(x, c.serial, c.code, &j), 200);
	json_decref(j);
	assert_int_equal(card_row(x, c.serial).code_fails, 0);
	/* blocked: the right code says so */
	block(x, c.serial);
	assert_int_equal(activate(x, c.serial, c.code, &j), 403);
	expect_error(j, "card_blocked");
	json_decref(j);
}

/* The same post again is a duplicate, delivered once; another post under a spent index a replay;
 * an index beyond the window is refused; none of these moves the chain. */
static void test_replay(void **state)
{
	struct kx *x = *state;
	struct card a, b;
	uint8_t doc[100], *m1, *m2, *m3;
	size_t n1, n2, n3;
	json_t *j = NULL;

	enrol_active(x, &a, "a@x");
	enrol_active(x, &b, "b@x");
	memset(doc, 'd', sizeof doc);
	n1 = post_make(&a, 0, "b@x", doc, sizeof doc, &m1);
	assert_int_equal(post(x, m1, n1, &j), 200);
	json_decref(j);
	assert_int_equal(post(x, m1, n1, &j), 200);
	assert_true(json_is_true(json_object_get(j, "duplicate")));
	assert_int_equal(jget(j, "index"), 1);
	assert_string_equal(json_string_value(json_object_get(j, "to")), "b@x");
	json_decref(j);
	assert_int_equal(waiting(x, b.serial), 1);
	/* another document under index 1 */
	doc[0] = 'e';
	n2 = post_make(&a, 1, "b@x", doc, sizeof doc, &m2);
	assert_int_equal(post(x, m2, n2, &j), 409);
	expect_error(j, "replay");
	json_decref(j);
	/* index 2 relayed, then index 1's post again is a replay, not a duplicate */
	n3 = post_make(&a, 0, "b@x", doc, sizeof doc, &m3);
	assert_int_equal(post(x, m3, n3, &j), 200);
	json_decref(j);
	assert_int_equal(post(x, m1, n1, &j), 409);
	expect_error(j, "replay");
	json_decref(j);
	free(m1);
	free(m2);
	free(m3);
	/* the window is 16: index 2 + 16 + 1 is beyond it, 2 + 16 is not */
	n1 = post_make(&a, 19, "b@x", doc, sizeof doc, &m1);
	assert_int_equal(post(x, m1, n1, &j), 409);
	expect_error(j, "key_ahead");
	json_decref(j);
	free(m1);
	assert_int_equal(card_row(x, a.serial).send_pos, 3);
	n1 = post_make(&a, 18, "b@x", doc, sizeof doc, &m1);
	assert_int_equal(post(x, m1, n1, &j), 200);
	json_decref(j);
	free(m1);
	assert_int_equal(card_row(x, a.serial).send_pos, 19);
	assert_int_equal(waiting(x, b.serial), 3);
}

/* A byte flipped anywhere, a message cut, or bytes after it: refused, nothing spent. */
static void test_tampered(void **state)
{
	struct kx *x = *state;
	struct card a, b;
	uint8_t doc[3000], *m, *bad;
	size_t n;
	json_t *j = NULL;
	static const size_t flips[] = {KH_KC_HEADER_LEN + 2, KH_KC_HEADER_LEN + 20, 200, 2990};

	enrol_active(x, &a, "a2@x");
	enrol_active(x, &b, "b2@x");
	assert_int_equal(kh_random(doc, sizeof doc), KH_OK);
	n = post_make(&a, 0, "b2@x", doc, sizeof doc, &m);
	assert_non_null(bad = malloc(n + 1));
	for (size_t f = 0; f < sizeof flips / sizeof flips[0]; f++) {
		memcpy(bad, m, n);
		bad[flips[f]] ^= 0x01;
		assert_true(post(x, bad, n, &j) / 100 == 4);
		json_decref(j);
	}
	memcpy(bad, m, n);
	bad[n - 1] ^= 0x80;
	assert_int_equal(post(x, bad, n, &j), 403);
	expect_error(j, "auth");
	json_decref(j);
	assert_int_equal(post(x, m, n - 1, &j), 400);
	json_decref(j);
	assert_int_equal(post(x, m, KH_KC_HEADER_LEN + 3, &j), 400);
	json_decref(j);
	memcpy(bad, m, n);
	bad[n] = 0;
	assert_int_equal(post(x, bad, n + 1, &j), 400);
	json_decref(j);
	/* the header's index changed: the chunks' aad no longer match */
	memcpy(bad, m, n);
	bad[KH_KC_HEADER_LEN - 1] = 2;
	assert_int_equal(post(x, bad, n, &j), 403);
	json_decref(j);
	assert_int_equal(card_row(x, a.serial).send_pos, 1);
	assert_int_equal(waiting(x, b.serial), 0);
	/* the genuine one still goes through */
	assert_int_equal(post(x, m, n, &j), 200);
	json_decref(j);
	assert_int_equal(card_row(x, a.serial).send_pos, 2);
	free(m);
	free(bad);
	/* a body that is not octet-stream, and one past the limit */
	assert_int_equal(req(x, "POST", "/v1/messages", "{}", 2, 0, NULL, NULL, &j), 415);
	json_decref(j);
	{
		size_t big = kh_keycenter_post_max(200000) + 1;
		uint8_t *z = calloc(1, big);
		assert_non_null(z);
		assert_int_equal(post(x, z, big, &j), 413);
		json_decref(j);
		free(z);
	}
}

/* No active card has the address, or it is blocked: 404 with the ack, the index spent, nothing queued. */
static void test_recipient_refused(void **state)
{
	struct kx *x = *state;
	struct card a, b;
	uint8_t doc[10] = "hello", ack[KH_KC_ACK_LEN], *m;
	uint64_t serial, index;
	uint32_t center;
	size_t n, len;
	json_t *j = NULL;

	enrol_active(x, &a, "a3@x");
	enrol_active(x, &b, "b3@x");
	n = post_make(&a, 0, "nobody@x", doc, sizeof doc, &m);
	assert_int_equal(post(x, m, n, &j), 404);
	expect_error(j, "unknown_recipient");
	assert_int_equal(kh_json_get_b64(j, "ack", ack, sizeof ack, &len, 1), KH_OK);
	assert_int_equal(kh_kc_ack_verify(x->center_pk, ack, sizeof ack, &center, &serial, &index), KH_OK);
	assert_true(serial == a.serial && index == 1);
	json_decref(j);
	/* retried: the same answer */
	assert_int_equal(post(x, m, n, &j), 404);
	expect_error(j, "unknown_recipient");
	json_decref(j);
	free(m);
	assert_int_equal(card_row(x, a.serial).send_pos, 2);
	block(x, b.serial);
	n = post_make(&a, 0, "b3@x", doc, sizeof doc, &m);
	assert_int_equal(post(x, m, n, &j), 404);
	expect_error(j, "unknown_recipient");
	json_decref(j);
	free(m);
	assert_int_equal(card_row(x, a.serial).send_pos, 3);
	assert_int_equal(waiting(x, b.serial), 0);
	/* a blocked card gets no session */
	assert_int_equal(session(x, &b), 403);
}

/* A sender not activated, or blocked, or unknown: nothing relayed. */
static void test_sender_refused(void **state)
{
	struct kx *x = *state;
	struct card a, b, u;
	uint8_t doc[10] = "hello", *m;
	size_t n;
	json_t *j = NULL;

	card_new(x, &a, "a4@x");
	assert_int_equal(enrol(x, &a, 0), KH_OK);
	enrol_active(x, &b, "b4@x");
	n = post_make(&a, 0, "b4@x", doc, sizeof doc, &m);
	assert_int_equal(post(x, m, n, &j), 403);
	expect_error(j, "not_activated");
	json_decref(j);
	assert_int_equal(session(x, &a), 403);
	free(m);
	n = post_make(&b, 0, "a4@x", doc, sizeof doc, &m);
	block(x, b.serial);
	assert_int_equal(post(x, m, n, &j), 403);
	expect_error(j, "card_blocked");
	json_decref(j);
	free(m);
	card_new(x, &u, "u@x");
	n = post_make(&u, 0, "b4@x", doc, sizeof doc, &m);
	assert_int_equal(post(x, m, n, &j), 404);
	expect_error(j, "not_found");
	json_decref(j);
	free(m);
	/* enrolment refusals: a card twice, an address taken, a bad address */
	assert_int_equal(enrol(x, &a, 0), KH_ERR_EXISTS);
	card_new(x, &u, "b4@x");
	assert_int_equal(enrol(x, &u, 0), KH_ERR_EXISTS);
	card_new(x, &u, "Bad Address");
	assert_int_equal(enrol(x, &u, 0), KH_ERR_FORMAT);
}

/* Does hay (n bytes) hold needle? */
static int holds(const uint8_t *hay, size_t n, const uint8_t *needle, size_t k)
{
	for (size_t i = 0; i + k <= n; i++)
		if (hay[i] == needle[0] && memcmp(hay + i, needle, k) == 0)
			return 1;
	return 0;
}

/* Every file of the SQLite store (the database, its WAL) must hold none of the secrets. */
static void db_holds_none(struct kx *x, const uint8_t secrets[][32], size_t ns, const uint8_t *doc, size_t dl)
{
	static const char *const ext[] = {"", "-wal", "-shm"};
	char path[1024];

	for (size_t e = 0; e < 3; e++) {
		uint8_t *b = NULL;
		size_t n = 0;
		snprintf(path, sizeof path, "%s%s", x->db, ext[e]);
		if (kh_file_read(path, 64u << 20, &b, &n) != KH_OK)
			continue;
		for (size_t i = 0; i < ns; i++)
			assert_false(holds(b, n, secrets[i], 32));
		assert_false(holds(b, n, doc, dl < 64 ? dl : 64));
		kh_file_free(b, n);
	}
}

/* A copy of the database: another center's key opens none of it; it holds no key and no document. */
static void test_stolen_database(void **state)
{
	struct kx *x = *state;
	struct card a, b;
	uint8_t doc[DOC_LEN], keys[4][32], *m;
	struct kh_keycenter *other = NULL;
	struct kh_keyseq s1, r1;
	struct kh_store *st;
	char *dir2;
	uint32_t serial2;
	size_t n;
	json_t *j = NULL;

	enrol_active(x, &a, "a5@x");
	enrol_active(x, &b, "b5@x");
	assert_int_equal(kh_random(doc, sizeof doc), KH_OK);
	/* the keys the cards hand out for these two posts and their deliveries */
	assert_int_equal(kh_keyseq_key(&a.send, 1, 2, keys[0]), KH_OK);
	assert_int_equal(kh_keyseq_key(&a.send, 2, 2, keys[1]), KH_OK);
	assert_int_equal(kh_keyseq_key(&b.recv, 1, 2, keys[2]), KH_OK);
	assert_int_equal(kh_keyseq_key(&b.recv, 2, 2, keys[3]), KH_OK);
	for (int i = 0; i < 2; i++) {
		n = post_make(&a, 0, "b5@x", doc, sizeof doc, &m);
		assert_int_equal(post(x, m, n, &j), 200);
		json_decref(j);
		free(m);
	}
	assert_int_equal(waiting(x, b.serial), 2);
	/* our center opens its rows; another center, certified by the same authority, opens none */
	assert_int_equal(kh_store_open(x->db, &st), KH_OK);
	assert_int_equal(kh_keycenter_chains(x->kc, st, a.serial, &s1, &r1), KH_OK);
	assert_int_equal(s1.pos, 3);
	assert_memory_equal(s1.s, a.send.s, 32);
	assert_true(asprintf(&dir2, "%s/kc2", x->dir) > 0);
	assert_int_equal(kh_identity_new(x->auth, dir2, KH_ROLE_KEYCENTER, &serial2), KH_OK);
	assert_int_equal(kh_keycenter_open(dir2, &other), KH_OK);
	assert_int_equal(kh_keycenter_chains(other, st, a.serial, &s1, &r1), KH_ERR_AUTH);
	assert_int_equal(kh_keycenter_chains(other, st, b.serial, &s1, &r1), KH_ERR_AUTH);
	kh_keycenter_close(other);
	free(dir2);
	kh_store_close(st);
	/* a row rolled back (its position edited) no longer opens */
	{
		char sql[256];
		snprintf(sql, sizeof sql, "UPDATE kc_cards SET send_pos = 2 WHERE serial = %llu", (unsigned long long)a.serial);
		kh_test_sql_exec(x->db, sql);
		assert_int_equal(kh_store_open(x->db, &st), KH_OK);
		assert_int_equal(kh_keycenter_chains(x->kc, st, a.serial, &s1, &r1), KH_ERR_AUTH);
		kh_store_close(st);
		n = post_make(&a, 0, "b5@x", doc, sizeof doc, &m);
		assert_int_equal(post(x, m, n, &j), 500);
		json_decref(j);
		free(m);
	}
	/* A's receive state moved into B's row: B's chains no longer open */
	{
		char sql[256];
		assert_int_equal(kh_store_open(x->db, &st), KH_OK);
		assert_int_equal(kh_keycenter_chains(x->kc, st, b.serial, &s1, &r1), KH_OK);
		kh_store_close(st);
		snprintf(sql, sizeof sql,
			 "UPDATE kc_cards SET recv_state = (SELECT recv_state FROM kc_cards WHERE serial = %llu) "
			 "WHERE serial = %llu",
			 (unsigned long long)a.serial, (unsigned long long)b.serial);
		kh_test_sql_exec(x->db, sql);
		assert_int_equal(kh_store_open(x->db, &st), KH_OK);
		assert_int_equal(kh_keycenter_chains(x->kc, st, b.serial, &s1, &r1), KH_ERR_AUTH);
		kh_store_close(st);
	}
	if (!kh_test_pg())
		db_holds_none(x, (const uint8_t(*)[32])keys, 4, doc, sizeof doc);
	kh_wipe(&s1, sizeof s1);
	kh_wipe(&r1, sizeof r1);
}

/* B replaced by B2: B blocked, its address and waiting mail moved; B2 opens it, B cannot. */
static void test_replacement(void **state)
{
	struct kx *x = *state;
	struct card a, b, b2, old;
	uint8_t doc[DOC_LEN], got[DOC_LEN], *m;
	char from[KH_KC_ADDR_MAX + 1];
	size_t n, len;
	json_t *j = NULL, *l;
	struct buf d;

	enrol_active(x, &a, "a6@x");
	enrol_active(x, &b, "b6@x");
	assert_int_equal(kh_random(doc, sizeof doc), KH_OK);
	for (int i = 0; i < 3; i++) {
		doc[0] = (uint8_t)i;
		n = post_make(&a, 0, "b6@x", doc, sizeof doc, &m);
		assert_int_equal(post(x, m, n, &j), 200);
		json_decref(j);
		free(m);
	}
	/* B has a session and fetched index 1 once (without deleting it) */
	assert_int_equal(session(x, &b), 200);
	old = b;
	card_new(x, &b2, "b6@x");
	assert_int_equal(enrol(x, &b2, b.serial), KH_OK);
	assert_int_equal(card_row(x, b.serial).state, KH_STORE_KC_BLOCKED);
	assert_int_equal(card_row(x, b.serial).replaced_by, b2.serial);
	assert_int_equal(waiting(x, b.serial), 0);
	assert_int_equal(waiting(x, b2.serial), 3);
	/* the old card's session is over */
	assert_int_equal(req_json(x, "GET", "/v1/mailbox", NULL, b.token, &j), 403);
	expect_error(j, "card_blocked");
	json_decref(j);
	assert_int_equal(activate(x, b2.serial, b2.code, &j), 200);
	json_decref(j);
	assert_int_equal(session(x, &b2), 200);
	l = mailbox(x, &b2);
	assert_int_equal(json_array_size(json_object_get(l, "messages")), 3);
	for (size_t i = 0; i < 3; i++) {
		json_t *e = json_array_get(json_object_get(l, "messages"), i);
		assert_int_equal(jget(e, "index"), (int64_t)i + 1);
		assert_string_equal(json_string_value(json_object_get(e, "from")), "a6@x");
		d = fetch(x, &b2, i + 1);
		assert_int_not_equal(card_open(&old, d.p, d.n, got, sizeof got, &len, from), KH_OK);
		/* even with its header's serial made the old card's, the old card's keys do not open it */
		kh_put_be64(d.p + 6, old.serial);
		assert_int_not_equal(card_open(&old, d.p, d.n, got, sizeof got, &len, from), KH_OK);
		kh_put_be64(d.p + 6, b2.serial);
		assert_int_equal(card_open(&b2, d.p, d.n, got, sizeof got, &len, from), KH_OK);
		doc[0] = (uint8_t)i;
		assert_int_equal(len, sizeof doc);
		assert_memory_equal(got, doc, sizeof doc);
		free(d.p);
	}
	json_decref(l);
	/* new mail to the address goes to B2 */
	n = post_make(&a, 0, "b6@x", doc, sizeof doc, &m);
	assert_int_equal(post(x, m, n, &j), 200);
	json_decref(j);
	free(m);
	assert_int_equal(waiting(x, b2.serial), 4);
	/* a card replaced once is not replaced again */
	card_new(x, &b, "b6@x");
	assert_int_equal(enrol(x, &b, old.serial), KH_ERR_EXISTS);
}

/* A full mailbox refuses a post before anything changes; sessions are bounded, nonces expire. */
static void test_limits(void **state)
{
	struct kx *x = *state;
	struct card a, b;
	uint8_t doc[10] = "hi", msg[16], *m;
	struct kh_store_kc_mail ml;
	struct kh_store *st;
	size_t n;
	json_t *j = NULL;

	enrol_active(x, &a, "a7@x");
	enrol_active(x, &b, "b7@x");
	/* B's mailbox filled behind the service's back, at indexes it will not reach */
	memset(&ml, 0, sizeof ml);
	memset(msg, 'x', sizeof msg);
	ml.recipient = b.serial;
	ml.sender = a.serial;
	ml.sender_address = "a7@x";
	ml.msg = msg;
	ml.msg_len = sizeof msg;
	ml.size = sizeof msg;
	assert_int_equal(kh_store_open(x->db, &st), KH_OK);
	assert_int_equal(kh_store_begin(st), KH_OK);
	for (uint64_t i = 0; i < KH_KEYCENTER_MAILBOX_MAX; i++) {
		ml.idx = 1000000 + i;
		assert_int_equal(kh_store_kc_mail_add(st, &ml), KH_OK);
	}
	assert_int_equal(kh_store_commit(st), KH_OK);
	n = post_make(&a, 0, "b7@x", doc, sizeof doc, &m);
	assert_int_equal(post(x, m, n, &j), 429);
	expect_error(j, "limit");
	json_decref(j);
	assert_int_equal(card_row(x, a.serial).send_pos, 1);
	assert_int_equal(card_row(x, b.serial).recv_pos, 1);
	/* one fetched and deleted: the same post goes through */
	assert_int_equal(kh_store_kc_mail_delete(st, b.serial, 1000000), KH_OK);
	kh_store_close(st);
	assert_int_equal(post(x, m, n, &j), 200);
	json_decref(j);
	free(m);
	assert_int_equal(waiting(x, b.serial), KH_KEYCENTER_MAILBOX_MAX);
	/* at most 8 live sessions per card; one each second (a nonce's time must be later) */
	for (int i = 0; i < KH_KEYCENTER_SESSIONS_MAX; i++) {
		atomic_fetch_add(&clock_now, 1);
		assert_int_equal(session(x, &a), 200);
	}
	atomic_fetch_add(&clock_now, 1);
	assert_int_equal(session(x, &a), 429);
	/* once they expire, there is room again */
	atomic_fetch_add(&clock_now, KH_KEYCENTER_SESSION_S);
	assert_int_equal(session(x, &a), 200);
	/* a challenge older than two minutes opens nothing */
	{
		char body[512], nb64[64], sb64[128];
		uint8_t nonce[KH_KC_NONCE_LEN], hm[KH_KC_HELLO_MSG_LEN], sig[64];
		snprintf(body, sizeof body, "{\"serial\": %llu}", (unsigned long long)a.serial);
		atomic_fetch_add(&clock_now, 1);
		assert_int_equal(req_json(x, "POST", "/v1/sessions/challenge", body, NULL, &j), 200);
		assert_int_equal(kh_json_get_b64(j, "nonce", nonce, sizeof nonce, &n, 1), KH_OK);
		json_decref(j);
		kh_kc_hello_msg(x->center, a.serial, nonce, hm);
		assert_int_equal(kh_ed25519_sign(a.sk, hm, sizeof hm, sig), KH_OK);
		assert_int_equal(kh_b64url_encode(nonce, sizeof nonce, nb64, sizeof nb64), KH_OK);
		assert_int_equal(kh_b64url_encode(sig, sizeof sig, sb64, sizeof sb64), KH_OK);
		snprintf(body, sizeof body, "{\"serial\": %llu, \"nonce\": \"%s\", \"signature\": \"%s\"}",
			 (unsigned long long)a.serial, nb64, sb64);
		atomic_fetch_add(&clock_now, KH_KEYCENTER_NONCE_AGE + 1);
		assert_int_equal(req_json(x, "POST", "/v1/sessions", body, NULL, &j), 403);
		expect_error(j, "auth");
		json_decref(j);
		/* B's signature over A's nonce, in time: refused */
		atomic_fetch_add(&clock_now, -(int64_t)KH_KEYCENTER_NONCE_AGE);
		assert_int_equal(kh_ed25519_sign(b.sk, hm, sizeof hm, sig), KH_OK);
		assert_int_equal(kh_b64url_encode(sig, sizeof sig, sb64, sizeof sb64), KH_OK);
		snprintf(body, sizeof body, "{\"serial\": %llu, \"nonce\": \"%s\", \"signature\": \"%s\"}",
			 (unsigned long long)a.serial, nb64, sb64);
		assert_int_equal(req_json(x, "POST", "/v1/sessions", body, NULL, &j), 403);
		expect_error(j, "auth");
		json_decref(j);
	}
}

/* ---------------------------------------------------------------- real key cards */

/* The enrolment station with a card module: its certificate, KC ENROL, the center's side. */
static kh_err enrol_module(struct kx *x, struct mod *m, const char *addr, uint64_t replaces, uint64_t *serial,
			   char code[static KH_KEYCENTER_CODE_SHOWN + 1])
{
	uint8_t der[KH_CERT_MAX], rec[KH_KC_ENROLKEY_LEN], sealed[KH_KC_SEALED_SEED_LEN];
	const uint8_t *cert;
	size_t n = 0, certlen = 0;
	uint64_t card = 0;
	uint16_t sw = 0;
	struct kh_store *st;
	kh_err r;

	assert_int_equal(kh_host_apdu(&m->t, KH_INS_GET_CERT, 1, NULL, 0, der, sizeof der, &n, &sw), KH_OK);
	assert_int_equal(kh_keycenter_card_cert(x->kc, der, n, atomic_load(&clock_now), serial), KH_OK);
	assert_int_equal(*serial, m->ua);
	assert_int_equal(kh_keycenter_enrolkey(x->kc, rec), KH_OK);
	cert = kh_keycenter_cert(x->kc, &certlen);
	if ((r = kh_keycard_enrol(&m->t, cert, certlen, rec, &card, sealed)) != KH_OK)
		return r;
	assert_int_equal(card, *serial);
	{
		struct kh_keycenter_enrolment e = {card, sealed, der, n, addr, replaces};
		assert_int_equal(kh_store_open(x->db, &st), KH_OK);
		r = kh_keycenter_enrol(x->kc, st, &e, atomic_load(&clock_now), code);
		kh_store_close(st);
	}
	return r;
}

/* KC SEND, the post sealed by the host, the ack given back to the card. */
static void module_post(struct kx *x, struct mod *m, const char *to, const uint8_t *doc, size_t len, long want)
{
	struct kh_kc_header h = {KH_KC_POST, 0, 0};
	uint8_t key[32], ack[KH_KC_ACK_LEN], *msg;
	size_t cap = (size_t)kh_kc_msg_size(strlen(to), len), n = 0, an = 0;
	json_t *j = NULL;

	assert_int_equal(kh_keycard_send(&m->t, &h.serial, &h.index, key), KH_OK);
	assert_non_null(msg = malloc(cap));
	assert_int_equal(kh_kc_msg_seal(key, &h, to, doc, len, msg, cap, &n), KH_OK);
	kh_wipe(key, sizeof key);
	assert_int_equal(post(x, msg, n, &j), want);
	assert_int_equal(kh_json_get_b64(j, "ack", ack, sizeof ack, &an, 1), KH_OK);
	assert_int_equal(kh_keycard_ack(&m->t, ack, an), KH_OK);
	json_decref(j);
	free(msg);
}

/* KC HELLO over the center's nonce: a session token into tok. */
static long module_session(struct kx *x, struct mod *m, uint64_t serial, char tok[static 64])
{
	char body[512], nb64[64], sb64[128];
	uint8_t nonce[KH_KC_NONCE_LEN], sig[64];
	uint64_t who = 0;
	json_t *j = NULL;
	size_t n = 0;
	long st;

	snprintf(body, sizeof body, "{\"serial\": %llu}", (unsigned long long)serial);
	assert_int_equal(req_json(x, "POST", "/v1/sessions/challenge", body, NULL, &j), 200);
	assert_int_equal(kh_json_get_b64(j, "nonce", nonce, sizeof nonce, &n, 1), KH_OK);
	json_decref(j);
	assert_int_equal(kh_keycard_hello(&m->t, nonce, &who, sig), KH_OK);
	assert_int_equal(who, serial);
	assert_int_equal(kh_b64url_encode(nonce, sizeof nonce, nb64, sizeof nb64), KH_OK);
	assert_int_equal(kh_b64url_encode(sig, sizeof sig, sb64, sizeof sb64), KH_OK);
	snprintf(body, sizeof body, "{\"serial\": %llu, \"nonce\": \"%s\", \"signature\": \"%s\"}",
		 (unsigned long long)serial, nb64, sb64);
	st = req_json(x, "POST", "/v1/sessions", body, NULL, &j);
	if (st == 200)
		snprintf(tok, 64, "%s", json_string_value(json_object_get(j, "token")));
	/* the same nonce and signature again: used */
	json_decref(j);
	if (st == 200) {
		assert_int_equal(req_json(x, "POST", "/v1/sessions", body, NULL, &j), 409);
		expect_error(j, "replay");
		json_decref(j);
	}
	return st;
}

/* A delivery fetched, KC OPEN given its header and chunk 0, the rest opened under the key it gives. */
static void module_open(struct kx *x, struct mod *m, const char *tok, uint64_t j, const uint8_t *doc, size_t len,
			const char *from)
{
	struct card c; /* only the token is used */
	struct kh_kc_header h;
	struct kh_kc_envelope e;
	uint8_t key[32], *got;
	size_t ctlen = 0, glen = 0;
	uint64_t idx = 0;
	int last = 0;
	struct buf d;

	memset(&c, 0, sizeof c);
	snprintf(c.token, sizeof c.token, "%s", tok);
	d = fetch(x, &c, j);
	assert_int_equal(kh_kc_chunk_frame(d.p + KH_KC_HEADER_LEN, d.n - KH_KC_HEADER_LEN, &ctlen, &last), KH_OK);
	assert_int_equal(kh_keycard_open(&m->t, d.p, d.p + KH_KC_HEADER_LEN, KH_KC_CHUNK_HDR_LEN + ctlen, &idx, key),
			 KH_OK);
	assert_int_equal(idx, j);
	assert_non_null(got = malloc(len + 1));
	assert_int_equal(kh_kc_msg_open(key, d.p, d.n, &h, &e, got, len + 1, &glen), KH_OK);
	kh_wipe(key, sizeof key);
	assert_int_equal(glen, len);
	assert_memory_equal(got, doc, len);
	assert_string_equal(e.addr, from);
	free(got);
	free(d.p);
}

/* Two key card modules: enrolled at the station, activated, A posts to B, B opens with its card. */
static void test_real_cards(void **state)
{
	struct kx *x = *state;
	struct mod a, b, c;
	uint64_t sa = 0, sb = 0, sc = 0;
	char code_a[KH_KEYCENTER_CODE_SHOWN + 1], code_b[KH_KEYCENTER_CODE_SHOWN + 1], tok[64];
	uint8_t doc[5000];
	json_t *j = NULL;

	make_mod(x->auth, KH_ROLE_KEYCARD, &a);
	make_mod(x->auth, KH_ROLE_KEYCARD, &b);
	make_mod(x->auth, KH_ROLE_KEYCARD, &c);
	assert_int_equal(enrol_module(x, &a, "ann@x", 0, &sa, code_a), KH_OK);
	assert_int_equal(enrol_module(x, &b, "ben@x", 0, &sb, code_b), KH_OK);
	/* a card enrolled already: the center refuses to register it twice */
	assert_int_equal(enrol_module(x, &a, "ann2@x", 0, &sa, code_a), KH_ERR_EXISTS);
	/* an address in use: refused before the card is touched by the CLI; here the center refuses */
	assert_int_equal(enrol_module(x, &c, "ben@x", 0, &sc, code_b), KH_ERR_EXISTS);
	assert_int_equal(activate(x, sa, code_a, &j), 200);
	json_decref(j);
	assert_int_equal(activate(x, sb, code_b, &j), 200);
	json_decref(j);
	assert_int_equal(kh_random(doc, sizeof doc), KH_OK);
	module_post(x, &a, "ben@x", doc, sizeof doc, 200);
	module_post(x, &a, "ben@x", doc, 100, 200);
	module_post(x, &a, "nobody@x", doc, 100, 404);
	module_post(x, &a, "ben@x", doc, 7, 200);
	assert_int_equal(card_row(x, sa).send_pos, 5);
	assert_int_equal(module_session(x, &b, sb, tok), 200);
	module_open(x, &b, tok, 1, doc, sizeof doc, "ann@x");
	module_open(x, &b, tok, 2, doc, 100, "ann@x");
	module_open(x, &b, tok, 3, doc, 7, "ann@x");
	/* B replies; A opens */
	module_post(x, &b, "ann@x", doc, 1, 200);
	assert_int_equal(module_session(x, &a, sa, tok), 200);
	module_open(x, &a, tok, 1, doc, 1, "ben@x");
	/* B is replaced by D while posts wait for it: D opens them with its card, B cannot */
	module_post(x, &a, "ben@x", doc, 50, 200);
	module_post(x, &a, "ben@x", doc, 60, 200);
	{
		struct mod d;
		uint64_t sd = 0;
		char code_d[KH_KEYCENTER_CODE_SHOWN + 1], tok_d[64];
		struct card t;
		struct buf dl;
		uint8_t key[32];
		uint64_t idx = 0;
		size_t ctlen = 0;
		int last = 0;

		make_mod(x->auth, KH_ROLE_KEYCARD, &d);
		assert_int_equal(enrol_module(x, &d, "ben@x", sb, &sd, code_d), KH_OK);
		assert_int_equal(activate(x, sd, code_d, &j), 200);
		json_decref(j);
		assert_int_equal(module_session(x, &d, sd, tok_d), 200);
		memset(&t, 0, sizeof t);
		snprintf(t.token, sizeof t.token, "%s", tok_d);
		dl = fetch(x, &t, 1);
		assert_int_equal(kh_kc_chunk_frame(dl.p + KH_KC_HEADER_LEN, dl.n - KH_KC_HEADER_LEN, &ctlen, &last), KH_OK);
		assert_int_not_equal(
			kh_keycard_open(&b.t, dl.p, dl.p + KH_KC_HEADER_LEN, KH_KC_CHUNK_HDR_LEN + ctlen, &idx, key), KH_OK);
		free(dl.p);
		/* B fetched its first three without removing them: all five moved, in their order */
		module_open(x, &d, tok_d, 1, doc, sizeof doc, "ann@x");
		module_open(x, &d, tok_d, 2, doc, 100, "ann@x");
		module_open(x, &d, tok_d, 3, doc, 7, "ann@x");
		module_open(x, &d, tok_d, 4, doc, 50, "ann@x");
		module_open(x, &d, tok_d, 5, doc, 60, "ann@x");
		/* B's hello no longer opens a session */
		assert_int_equal(module_session(x, &b, sb, tok), 403);
		kh_softmod_free(d.sm);
	}
	/* a card not activated gets no session */
	assert_int_equal(enrol_module(x, &c, "cy@x", 0, &sc, code_b), KH_OK);
	{
		char body[64];
		snprintf(body, sizeof body, "{\"serial\": %llu}", (unsigned long long)sc);
		assert_int_equal(req_json(x, "POST", "/v1/sessions/challenge", body, NULL, &j), 200);
		json_decref(j);
	}
	kh_softmod_free(a.sm);
	kh_softmod_free(b.sm);
	kh_softmod_free(c.sm);
}

/* ---------------------------------------------------------------- 32 senders at once */

struct sender {
	struct kx *x;
	struct card c;
	const struct card *to[RECIPIENTS];
	int fails;
};

static void *send_all(void *arg)
{
	struct sender *s = arg;
	uint8_t doc[16], *m;
	size_t n;

	for (int k = 0; k < PER_THREAD; k++) {
		const struct card *to = s->to[(s->c.serial + (uint64_t)k) % RECIPIENTS];
		long st;
		kh_put_be64(doc, s->c.serial);
		kh_put_be64(doc + 8, (uint64_t)k);
		n = post_make(&s->c, 0, to->addr, doc, sizeof doc, &m);
		/* a busy store is retried with the same bytes: delivered once all the same */
		for (int t = 0; t < 20 && (st = post(s->x, m, n, NULL)) == 503; t++)
			;
		if (st != 200)
			s->fails++;
		free(m);
	}
	return NULL;
}

static void test_concurrent(void **state)
{
	struct kx *x = *state;
	struct card *rc = calloc(RECIPIENTS, sizeof *rc);
	struct sender *s = calloc(THREADS, sizeof *s);
	pthread_t th[THREADS];
	int seen[THREADS][PER_THREAD];
	char addr[32];

	assert_non_null(rc);
	assert_non_null(s);
	memset(seen, 0, sizeof seen);
	for (int r = 0; r < RECIPIENTS; r++) {
		snprintf(addr, sizeof addr, "r%d@x", r);
		enrol_active(x, &rc[r], addr);
	}
	for (int i = 0; i < THREADS; i++) {
		snprintf(addr, sizeof addr, "s%d@x", i);
		enrol_active(x, &s[i].c, addr);
		s[i].x = x;
		for (int r = 0; r < RECIPIENTS; r++)
			s[i].to[r] = &rc[r];
	}
	for (int i = 0; i < THREADS; i++)
		assert_int_equal(pthread_create(&th[i], NULL, send_all, &s[i]), 0);
	for (int i = 0; i < THREADS; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(s[i].fails, 0);
	}
	/* every recipient's mail, in index order: each message once, each sender's in its order */
	for (int r = 0; r < RECIPIENTS; r++) {
		int64_t last_k[THREADS];
		json_t *l, *ms;
		for (int i = 0; i < THREADS; i++)
			last_k[i] = -1;
		assert_int_equal(session(x, &rc[r]), 200);
		l = mailbox(x, &rc[r]);
		ms = json_object_get(l, "messages");
		for (size_t e = 0; e < json_array_size(ms); e++) {
			uint8_t got[16];
			char from[KH_KC_ADDR_MAX + 1];
			size_t len = 0;
			uint64_t j = (uint64_t)jget(json_array_get(ms, e), "index"), serial, k;
			struct buf d = fetch(x, &rc[r], j);
			int who = -1;
			assert_int_equal(j, e + 1);
			assert_int_equal(card_open(&rc[r], d.p, d.n, got, sizeof got, &len, from), KH_OK);
			free(d.p);
			assert_int_equal(len, 16);
			serial = kh_get_be64(got);
			k = kh_get_be64(got + 8);
			for (int i = 0; i < THREADS; i++)
				if (s[i].c.serial == serial)
					who = i;
			assert_true(who >= 0 && k < PER_THREAD);
			assert_string_equal(from, s[who].c.addr);
			assert_int_equal((serial + k) % RECIPIENTS, (uint64_t)r);
			assert_int_equal(seen[who][k], 0);
			seen[who][k] = 1;
			assert_true((int64_t)k > last_k[who]);
			last_k[who] = (int64_t)k;
		}
		json_decref(l);
	}
	for (int i = 0; i < THREADS; i++)
		for (int k = 0; k < PER_THREAD; k++)
			assert_int_equal(seen[i][k], 1);
	free(rc);
	free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_post_and_fetch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_activation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_replay, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tampered, setup, teardown),
		cmocka_unit_test_setup_teardown(test_recipient_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sender_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stolen_database, setup, teardown),
		cmocka_unit_test_setup_teardown(test_replacement, setup, teardown),
		cmocka_unit_test_setup_teardown(test_limits, setup, teardown),
		cmocka_unit_test_setup_teardown(test_real_cards, setup, teardown),
		cmocka_unit_test_setup_teardown(test_concurrent, setup, teardown),
	};
	curl_global_init(CURL_GLOBAL_DEFAULT);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
