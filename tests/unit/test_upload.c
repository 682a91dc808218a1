/*
 * The center's side of the upload session (seed 001; docs/protocols/upload.md;
 * src/center/sms/sms_upload.c), driven with crafted requests: a real server on an ephemeral port
 * with a temporary authority and store, real card modules that buy pay-per-view with the
 * center's service key, make blocks (EXPORT P1=0) and sign hellos (HELLO), and libcurl sending
 * bodies the real client never would. The judges are the answer, the invoices API and the
 * database itself (read-only, with SQLite on the same file):
 *
 *   - in one session the genuine block counts while a tampered, a truncated, another
 *     subscriber's, an unknown card's and a not-base64url block are refused, each in the answer
 *     and (when it names a card) recorded with its verdict, and nothing is invoiced twice;
 *   - a retried upload (same Idempotency-Key and body) gets the identical answer, marked
 *     Idempotent-Replayed, and changes nothing; the key with another body is 422;
 *   - a hello for another nonce or by another card is 403 and records nothing;
 *   - a later session re-sending a seen block gets "duplicate" and invoices nothing; a refused
 *     copy does not shadow the genuine block, nor another subscriber's block its own session;
 *   - a session whose upload was processed refuses a second upload;
 *   - recovery (a replaced card's block in the new card's session) closes the old card only on
 *     a block made for M1 and not older than one already accepted: a session block (EXPORT
 *     P1=0) is "not_m1", an old copy of M1 "stale"; both are invoiced, neither closes the card;
 *     the real M1 block afterwards does; a card closed as recovered still takes a later M1 block
 *     of itself; a block of the old layout (version 1) is answered "version" and not recorded;
 *   - the open endpoints' limits, with the center's clock injected: a session not used in time
 *     is refused (session_expired) with nothing recorded, while a retry of an answered upload
 *     still gets its answer; a card has at most N sessions open (429 too_many_sessions, no row),
 *     a processed or expired one no longer counts, and a retried opening (same Idempotency-Key)
 *     gets the same session instead of using up another.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "httputil.h"
#include "testutil.h"
#include "world.h"

#include "keyhole/apdu.h"
#include "keyhole/buf.h"
#include "keyhole/cas.h"
#include "keyhole/crypto.h"
#include "keyhole/device.h"
#include "keyhole/http.h"
#include "keyhole/scramble.h"
#include "keyhole/host.h"
#include "keyhole/sms.h"
#include "keyhole/store.h"
#include "keyhole/usage.h"

struct uw {
	struct world *w;
	char *db;
	struct kh_sms *sms;
	struct kh_http *h;
	uint16_t port;
	CURL *curl;
	struct mod c3; /* a card of this operator for another subscriber */
	int64_t now;   /* the center's clock, when the test injects it (setup_clock) */
};

static int64_t test_clock(void *ctx)
{
	return ((struct uw *)ctx)->now;
}

/* One request; body NULL for none; idem NULL for no Idempotency-Key. Parses a JSON answer. */
static void req(struct uw *u, const char *method, const char *path, const char *body, const char *idem,
		struct reply *out)
{
	struct http_conn hc = {u->curl, u->port, NULL};
	http_req(&hc, method, path, body, idem, out);
}

static json_t *expect(struct uw *u, const char *method, const char *path, const char *body, const char *idem,
		      long status, struct reply *r)
{
	struct http_conn hc = {u->curl, u->port, NULL};
	return http_expect(&hc, method, path, body, idem, status, r);
}

/* An error answer {"error": {"code": code, "message": "..."}}. */
static void expect_error(struct uw *u, const char *path, const char *body, const char *idem, long status,
			 const char *code)
{
	struct http_conn hc = {u->curl, u->port, NULL};
	http_expect_error(&hc, "POST", path, body, idem, status, code);
}

static int setup(void **state)
{
	struct uw *u = calloc(1, sizeof *u);

	assert_non_null(u);
	world_setup((void **)&u->w);
	make_mod(u->w->auth, KH_ROLE_CARD, &u->c3);
	u->db = kh_test_db(u->w->dir, "center.db");
	center_start(u->db, u->w->auth_dir, NULL, &u->sms, &u->h, &u->port);
	assert_non_null(u->curl = curl_easy_init());
	*state = u;
	return 0;
}

/*
 * u (allocated by the caller) with its world, a third card, and a center of the caller's
 * configuration: cfg and hc as given, the database (center.db in the world's directory) and the
 * authority filled in here.
 */
static void center_with(struct uw *u, struct kh_sms_config *cfg, struct kh_http_config *hc)
{
	world_setup((void **)&u->w);
	make_mod(u->w->auth, KH_ROLE_CARD, &u->c3);
	u->db = kh_test_db(u->w->dir, "center.db");
	cfg->db = u->db;
	cfg->authority_dir = u->w->auth_dir;
	assert_int_equal(kh_sms_new(cfg, &u->sms, NULL), KH_OK);
	assert_int_equal(kh_http_new(hc, &u->h), KH_OK);
	assert_int_equal(kh_sms_add_routes(u->sms, u->h), KH_OK);
	assert_int_equal(kh_http_start(u->h), KH_OK);
	assert_true((u->port = kh_http_port(u->h)) != 0);
	assert_non_null(u->curl = curl_easy_init());
}

/* The center with its clock injected (u->now). */
static int setup_clock(void **state)
{
	struct uw *u = calloc(1, sizeof *u);
	struct kh_sms_config cfg = {0};
	struct kh_http_config hc = {0}; /* threads 0: KH_HTTP_THREADS */

	assert_non_null(u);
	u->now = (int64_t)time(NULL);
	cfg.clock = test_clock;
	cfg.clock_ctx = u;
	center_with(u, &cfg, &hc);
	*state = u;
	return 0;
}

static int teardown(void **state)
{
	struct uw *u = *state;
	void *w = u->w;

	curl_easy_cleanup(u->curl);
	center_stop(u->sms, u->h);
	kh_softmod_free(u->c3.sm);
	kh_test_db_drop(u->db);
	world_teardown(&w);
	free(u);
	return 0;
}

/* ---- the database, read-only beside the running center ---- */

/* Every row of sql, fields joined by '|', rows by '\n' (malloc'd): for counts and snapshots. */
static char *db_rows(struct uw *u, const char *sql)
{
	return kh_test_sql_rows(u->db, sql);
}

static long db_int(struct uw *u, const char *sql)
{
	char *s = db_rows(u, sql);
	long v = strtol(s, NULL, 10);
	free(s);
	return v;
}

/* The verdict recorded for (ua, block_seq), "" when none. */
static char *db_verdict(struct uw *u, uint32_t ua, uint32_t seq)
{
	char sql[160], *s;
	snprintf(sql, sizeof sql, "SELECT verdict FROM usage_blocks WHERE ua = %u AND block_seq = %u", ua, seq);
	s = db_rows(u, sql);
	if (*s)
		s[strlen(s) - 1] = 0;
	return s;
}

static void assert_verdict(struct uw *u, uint32_t ua, uint32_t seq, const char *want)
{
	char *v = db_verdict(u, ua, seq);
	if (strcmp(v, want) != 0)
		fail_msg("block %08X %u recorded as '%s', expected '%s'", ua, seq, v, want);
	free(v);
}

/* Everything an upload may change, as one text. */
static char *db_state(struct uw *u)
{
	static const char *const q[] = {
		"SELECT ua, block_seq, verdict, session_id FROM usage_blocks ORDER BY ua, block_seq",
		"SELECT ua, event_id, price, time, block_ua, block_seq FROM purchases ORDER BY id",
		"SELECT subscriber_id, ua, event_id, price, time FROM invoices ORDER BY id",
		"SELECT id, closed_at IS NULL FROM upload_sessions ORDER BY id",
		"SELECT id, address, seq FROM emm_queue ORDER BY id",
		"SELECT key FROM idempotency ORDER BY key",
		"SELECT ua, state, export_authorised, last_reload_id FROM cards ORDER BY ua",
	};
	char *all = calloc(1, 1);
	size_t len = 0;

	assert_non_null(all);
	for (size_t i = 0; i < sizeof q / sizeof q[0]; i++) {
		char *s = db_rows(u, q[i]);
		assert_non_null(all = realloc(all, len + strlen(s) + 4)); /* "--\n" and the NUL */
		len += (size_t)sprintf(all + len, "%s--\n", s);
		free(s);
	}
	return all;
}

/* ---- the operator and the cards ---- */

static void register_card(struct uw *u, struct mod *m)
{
	uint8_t resp[KH_APDU_MAX_RESP];
	size_t dlen = 0;
	char *b64, *body;
	struct reply r;

	assert_int_equal(send_apdu(&m->t, KH_CLA, KH_INS_GET_CERT, 1, 0, NULL, 0, resp, sizeof resp, &dlen), 0x9000);
	assert_non_null(b64 = malloc(kh_b64url_len(dlen) + 1));
	assert_int_equal(kh_b64url_encode(resp, dlen, b64, kh_b64url_len(dlen) + 1), KH_OK);
	assert_true(asprintf(&body, "{\"certificate\":\"%s\"}", b64) > 0);
	expect(u, "POST", "/v1/cards", body, NULL, 201, &r);
	reply_free(&r);
	free(body);
	free(b64);
}

static int64_t add_subscriber(struct uw *u, const char *name)
{
	char body[64];
	struct reply r;
	int64_t id;

	snprintf(body, sizeof body, "{\"name\":\"%s\"}", name);
	id = jint(expect(u, "POST", "/v1/subscribers", body, NULL, 201, &r), "id");
	reply_free(&r);
	return id;
}

/* Apply every EMM the center queued for the card (those it has already are skipped). */
static void deliver_emms(struct uw *u, struct mod *m)
{
	char path[96];
	struct reply r;
	json_t *arr, *e;
	size_t i;

	snprintf(path, sizeof path, "/v1/cards/%08X/emm", m->ua);
	arr = json_object_get(expect(u, "GET", path, NULL, NULL, 200, &r), "emms");
	assert_true(json_array_size(arr) >= 1);
	json_array_foreach(arr, i, e) {
		uint8_t sec[KH_EMM_MAX];
		size_t n = 0;
		struct kh_host_cas direct = {0};
		kh_err rr;
		assert_int_equal(kh_json_get_b64(e, "section", sec, sizeof sec, &n, 0), KH_OK);
		direct.card = &m->t;
		rr = kh_host_cas_emm(&direct, sec, n);
		if (rr != KH_ERR_EMM_REPLAY)
			assert_int_equal(rr, KH_OK);
	}
	reply_free(&r);
}

/* Assign the card and apply every EMM the center queued for it (keys, initial credit). */
static void assign(struct uw *u, struct mod *m, int64_t sub)
{
	char body[64], path[96];
	struct reply r;

	snprintf(body, sizeof body, "{\"subscriber_id\":%lld}", (long long)sub);
	snprintf(path, sizeof path, "/v1/cards/%08X/assign", m->ua);
	expect(u, "POST", path, body, NULL, 200, &r);
	reply_free(&r);
	deliver_emms(u, m);
}

/* Buy event ev on the card at the price its ECM states, through decoder -> CAM -> card, with
 * the center's key. */
static void buy_at(struct uw *u, struct mod *card, uint32_t ev, uint32_t price)
{
	struct center_skey sk = {0};
	struct kh_host_cas cas;
	struct kh_ppv_offer o;
	struct kh_ecm e = {0};
	uint8_t ecm[KH_ECM_MAX];
	uint64_t now = (uint64_t)time(NULL);
	size_t len;

	assert_int_equal(center_service_key(u->db, &sk), KH_OK);
	assert_true(sk.version > 0);
	kh_host_cas_init(&cas, &u->w->dec.t, &u->w->cam.t, &card->t, 0);
	assert_int_equal(kh_host_cas_connect(&cas), KH_OK);
	e.h.table_id = KH_ECM_TID_EVEN;
	e.h.key_id = sk.id;
	e.h.key_version = sk.version;
	e.alg = KH_SCR_CSA2;
	e.cw_len = 8;
	e.access = KH_ECM_EVENT;
	e.event = ev;
	e.price = price;
	e.time = now;
	assert_int_equal(kh_ecm_seal(sk.key, world_ecm_signer(u->w->auth), &e, ecm, sizeof ecm, &len), KH_OK);
	assert_int_equal(kh_host_cas_purchase(&cas, ecm, len, &o), KH_OK);
	kh_host_cas_wipe(&cas);
	kh_wipe(&sk, sizeof sk);
}

/* The same at price 30. */
static void buy(struct uw *u, struct mod *card, uint32_t ev)
{
	buy_at(u, card, ev, 30);
}

struct blk {
	uint8_t b[KH_USAGE_MAX];
	size_t n;
	uint32_t ua, seq;
};

/* A fresh block from the card: P1=0 for an upload session (always allowed), 1 for M1. */
static struct blk export_for(struct mod *m, uint8_t p1)
{
	struct blk k = {0};
	uint8_t resp[KH_APDU_MAX_RESP];
	struct kh_usage_hdr h;
	size_t n = 0;

	assert_int_equal(send_apdu(&m->t, KH_CLA, KH_INS_EXPORT, p1, 0, NULL, 0, resp, sizeof resp, &n), 0x9000);
	assert_true(n <= sizeof k.b);
	memcpy(k.b, resp, n);
	k.n = n;
	assert_int_equal(kh_usage_peek(k.b, k.n, &h), KH_OK);
	assert_int_equal(h.ua, m->ua);
	assert_int_equal(h.flags, p1 ? KH_USAGE_F_M1 : 0);
	k.ua = h.ua;
	k.seq = h.block_seq;
	return k;
}

static struct blk export_block(struct mod *m)
{
	return export_for(m, 0);
}

static char *b64(const uint8_t *p, size_t n)
{
	char *s = malloc(kh_b64url_len(n) + 1);
	assert_non_null(s);
	assert_int_equal(kh_b64url_encode(p, n, s, kh_b64url_len(n) + 1), KH_OK);
	return s;
}

struct session {
	char id[24];
	char path[64];
	uint8_t nonce[64];
	size_t nlen;
};

static struct session open_session(struct uw *u, struct mod *m)
{
	struct session s = {0};
	char body[32];
	struct reply r;
	json_t *j;

	snprintf(body, sizeof body, "{\"ua\":\"%08X\"}", m->ua);
	j = expect(u, "POST", "/v1/upload/sessions", body, NULL, 201, &r);
	snprintf(s.id, sizeof s.id, "%s", json_string_value(json_object_get(j, "session")));
	assert_true(s.id[0] != 0);
	assert_int_equal(kh_json_get_b64(j, "nonce", s.nonce, sizeof s.nonce, &s.nlen, 0), KH_OK);
	assert_true(s.nlen >= KH_HELLO_NONCE_MIN);
	snprintf(s.path, sizeof s.path, "/v1/upload/sessions/%s", s.id);
	reply_free(&r);
	return s;
}

/* The card's hello for a nonce, base64url. */
static char *hello(struct mod *m, const uint8_t *nonce, size_t nlen)
{
	uint8_t resp[KH_APDU_MAX_RESP];
	size_t n = 0;

	assert_int_equal(send_apdu(&m->t, KH_CLA, KH_INS_HELLO, 0, 0, nonce, nlen, resp, sizeof resp, &n), 0x9000);
	assert_int_equal(n, KH_HELLO_LEN);
	return b64(resp, n);
}

/* {"hello": ..., "blocks": [...]} with the given base64url strings (malloc'd). */
static char *upload_body(const char *hello_b64, char *const *blocks, size_t n)
{
	json_t *o = json_pack("{s:s,s:[]}", "hello", hello_b64, "blocks");
	char *s;
	assert_non_null(o);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(json_array_append_new(json_object_get(o, "blocks"), json_string(blocks[i])), 0);
	assert_non_null(s = json_dumps(o, JSON_COMPACT));
	json_decref(o);
	return s;
}

/* Line i of an upload answer must be (ua, seq, verdict). */
static void assert_line(const json_t *ans, size_t i, uint32_t ua, uint32_t seq, const char *verdict)
{
	json_t *l = json_array_get(json_object_get(ans, "blocks"), i);
	char hex[9];

	assert_non_null(l);
	snprintf(hex, sizeof hex, "%08X", ua);
	if (strcmp(json_string_value(json_object_get(l, "ua")), hex) != 0 || jint(l, "block_seq") != seq ||
	    strcmp(json_string_value(json_object_get(l, "verdict")), verdict) != 0)
		fail_msg("answer line %zu is %s, expected %s %u %s", i, json_dumps(l, JSON_COMPACT), hex, seq, verdict);
}

static long invoices(struct uw *u, int64_t sub)
{
	char sql[96];
	snprintf(sql, sizeof sql, "SELECT count(*) FROM invoices WHERE subscriber_id = %lld", (long long)sub);
	return db_int(u, sql);
}

/* ---- refusals in one session, idempotent retries, duplicates ---- */

static void test_refusals_in_session(void **state)
{
	struct uw *u = *state;
	struct mod *c1 = &u->w->c1, *c2 = &u->w->c2, *c3 = &u->c3;
	struct blk b1, b2, b3, b4, other, unknown, cut;
	struct session s, s2, s3;
	struct reply r, again;
	char *hl, *body, *body2, *blocks[8], *before, *after;
	int64_t ada, bob;
	json_t *ans;

	expect(u, "PUT", "/v1/credit-policy", "{\"initial_credit\":200,\"reload_amount\":0}", NULL, 200, &r);
	reply_free(&r);
	ada = add_subscriber(u, "Ada");
	bob = add_subscriber(u, "Bob");
	register_card(u, c1);
	register_card(u, c3); /* c2 is never registered: an unknown UA */
	assign(u, c1, ada);
	assign(u, c3, bob);

	/* Ada's card buys two films, Bob's one; c1 then makes three blocks, each carrying both */
	buy(u, c1, 101);
	buy(u, c1, 102);
	buy(u, c3, 201);
	b1 = export_block(c1);
	b2 = export_block(c1);
	b3 = export_block(c1);
	assert_true(b1.seq < b2.seq && b2.seq < b3.seq);
	other = export_block(c3);
	unknown = export_block(c2);

	/* (a) a tampered copy of b1: one flipped byte inside the sealed body */
	b1.b[KH_USAGE_HDR_LEN + 3] ^= 0x01;
	/* (b) b2 cut after its clear header: nothing else of it came */
	cut = b2;
	cut.n = KH_USAGE_HDR_LEN + 20;

	s = open_session(u, c1);
	hl = hello(c1, s.nonce, s.nlen);
	blocks[0] = b64(b3.b, b3.n);           /* the current card's genuine block */
	blocks[1] = b64(b1.b, b1.n);           /* (a) tampered */
	blocks[2] = b64(cut.b, cut.n);         /* (b) truncated */
	blocks[3] = b64(other.b, other.n);     /* (c) a card of another subscriber */
	blocks[4] = b64(unknown.b, unknown.n); /* (d) an unknown UA */
	blocks[5] = strdup("*not base64url at all*"); /* (e) */
	body = upload_body(hl, blocks, 6);

	ans = expect(u, "POST", s.path, body, "k-session-1", 200, &r);
	assert_false(r.replayed);
	assert_int_equal(json_array_size(json_object_get(ans, "blocks")), 6);
	assert_line(ans, 0, c1->ua, b3.seq, "ok");
	assert_line(ans, 1, c1->ua, b1.seq, "tampered");
	assert_line(ans, 2, c1->ua, b2.seq, "truncated");
	assert_line(ans, 3, c3->ua, other.seq, "foreign");
	assert_line(ans, 4, c2->ua, unknown.seq, "foreign");
	assert_line(ans, 5, 0, 0, "truncated");
	assert_int_equal(jint(ans, "invoiced"), 2);
	/* recorded as such: every refusal that names a block, under its (ua, block_seq) */
	assert_verdict(u, c1->ua, b3.seq, "ok");
	assert_verdict(u, c1->ua, b1.seq, "tampered");
	assert_verdict(u, c1->ua, b2.seq, "truncated");
	assert_verdict(u, c3->ua, other.seq, "foreign");
	assert_verdict(u, c2->ua, unknown.seq, "foreign");
	assert_int_equal(db_int(u, "SELECT count(*) FROM usage_blocks"), 5);
	/* the genuine block counted: Ada's two films, once; nothing for Bob or the unknown card */
	assert_int_equal(invoices(u, ada), 2);
	assert_int_equal(invoices(u, bob), 0);
	assert_int_equal(db_int(u, "SELECT count(*) FROM invoices"), 2);
	assert_int_equal(db_int(u, "SELECT count(*) FROM purchases"), 2);
	{
		char sql[128];
		snprintf(sql, sizeof sql, "SELECT count(*) FROM purchases WHERE block_ua = %u AND block_seq = %u", c1->ua,
			 b3.seq);
		assert_int_equal(db_int(u, sql), 2);
	}

	/* a retry after a lost reply: the identical answer, marked, and nothing changes */
	before = db_state(u);
	req(u, "POST", s.path, body, "k-session-1", &again);
	assert_int_equal(again.status, 200);
	assert_true(again.replayed);
	assert_int_equal(again.len, r.len);
	assert_memory_equal(again.body, r.body, r.len);
	reply_free(&again);
	after = db_state(u);
	assert_string_equal(before, after);
	free(after);

	/* the same key with another body: refused, nothing changes */
	body2 = upload_body(hl, blocks, 1);
	expect_error(u, s.path, body2, "k-session-1", 422, "idempotency_mismatch");
	free(body2);
	after = db_state(u);
	assert_string_equal(before, after);
	free(after);

	/* the session is closed: a second upload with a new key is refused */
	expect_error(u, s.path, body, "k-session-1-bis", 409, "session_closed");
	after = db_state(u);
	assert_string_equal(before, after);
	free(after);
	free(before);
	reply_free(&r);
	free(body);
	free(hl);

	/* Ada's card buys once more. A second session re-sends b3 (seen: duplicate), the genuine b1
	 * (its tampered copy shadows nothing) and Bob's block again (still not Ada's), and a new
	 * block b4: only the new film is invoiced */
	buy(u, c1, 103);
	b4 = export_block(c1);
	b1.b[KH_USAGE_HDR_LEN + 3] ^= 0x01;
	free(blocks[1]);
	blocks[1] = b64(b1.b, b1.n);
	s2 = open_session(u, c1);
	hl = hello(c1, s2.nonce, s2.nlen);
	{
		char *bl[4] = {blocks[0], blocks[1], blocks[3], NULL};
		bl[3] = b64(b4.b, b4.n);
		body = upload_body(hl, bl, 4);
		ans = expect(u, "POST", s2.path, body, "k-session-2", 200, &r);
		free(bl[3]);
	}
	assert_false(r.replayed);
	assert_line(ans, 0, c1->ua, b3.seq, "duplicate");
	assert_line(ans, 1, c1->ua, b1.seq, "ok");
	assert_line(ans, 2, c3->ua, other.seq, "duplicate"); /* seen, and still refused */
	assert_line(ans, 3, c1->ua, b4.seq, "ok");
	assert_int_equal(jint(ans, "invoiced"), 1);
	assert_verdict(u, c1->ua, b3.seq, "ok");
	assert_verdict(u, c1->ua, b1.seq, "ok");
	assert_verdict(u, c3->ua, other.seq, "foreign");
	assert_int_equal(invoices(u, ada), 3);
	assert_int_equal(invoices(u, bob), 0);
	assert_int_equal(db_int(u, "SELECT count(*) FROM purchases"), 3);
	reply_free(&r);
	free(body);
	free(hl);

	/* Bob's own session: his block, refused in Ada's session, counts now, invoiced to him once */
	s3 = open_session(u, c3);
	hl = hello(c3, s3.nonce, s3.nlen);
	body = upload_body(hl, &blocks[3], 1);
	ans = expect(u, "POST", s3.path, body, "k-session-3", 200, &r);
	assert_line(ans, 0, c3->ua, other.seq, "ok");
	assert_int_equal(jint(ans, "invoiced"), 1);
	assert_verdict(u, c3->ua, other.seq, "ok");
	assert_int_equal(invoices(u, bob), 1);
	assert_int_equal(invoices(u, ada), 3);
	assert_int_equal(db_int(u, "SELECT count(*) FROM invoices"), 4);
	assert_int_equal(db_int(u, "SELECT count(*) FROM (SELECT ua, event_id, time FROM invoices "
				   "GROUP BY ua, event_id, time HAVING count(*) > 1) AS dup"),
			 0);
	reply_free(&r);
	free(body);
	free(hl);
	for (int i = 0; i < 6; i++)
		free(blocks[i]);
}

/* ---- a hello that does not answer the session: 403, and nothing recorded ---- */

/* Credit policy 200/0; Ada with card c1, which buys film 101; Bob with card c3. */
static void ada_and_bob(struct uw *u, int64_t *ada, int64_t *bob)
{
	struct reply r;

	expect(u, "PUT", "/v1/credit-policy", "{\"initial_credit\":200,\"reload_amount\":0}", NULL, 200, &r);
	reply_free(&r);
	*ada = add_subscriber(u, "Ada");
	*bob = add_subscriber(u, "Bob");
	register_card(u, &u->w->c1);
	register_card(u, &u->c3);
	assign(u, &u->w->c1, *ada);
	assign(u, &u->c3, *bob);
	buy(u, &u->w->c1, 101);
}

static void test_hello_refused(void **state)
{
	struct uw *u = *state;
	struct mod *c1 = &u->w->c1, *c3 = &u->c3;
	struct session s, t;
	struct blk b;
	struct reply r;
	char *hl, *body, *blk, *before, *after;
	int64_t ada, bob;
	json_t *ans;

	ada_and_bob(u, &ada, &bob); /* c1 Ada's (one film bought), c3 Bob's */
	b = export_block(c1);
	blk = b64(b.b, b.n);
	s = open_session(u, c1);
	t = open_session(u, c1);
	before = db_state(u);

	/* the session's card, but answering another session's nonce */
	hl = hello(c1, t.nonce, t.nlen);
	body = upload_body(hl, &blk, 1);
	expect_error(u, s.path, body, "k-other-nonce", 403, "hello");
	free(body);
	free(hl);
	/* the right nonce, signed by another card of this operator */
	hl = hello(c3, s.nonce, s.nlen);
	body = upload_body(hl, &blk, 1);
	expect_error(u, s.path, body, "k-other-card", 403, "hello");
	free(body);
	free(hl);
	/* a hello that is not even one */
	{
		uint8_t junk[KH_HELLO_LEN] = {0};
		hl = b64(junk, sizeof junk);
		body = upload_body(hl, &blk, 1);
		expect_error(u, s.path, body, "k-junk", 403, "hello");
		free(body);
		free(hl);
	}
	after = db_state(u);
	assert_string_equal(before, after); /* no block, purchase, invoice, EMM or key recorded */
	free(after);
	free(before);
	assert_int_equal(db_int(u, "SELECT count(*) FROM usage_blocks"), 0);
	assert_int_equal(invoices(u, ada), 0);

	/* the refusals did not use up the session: the card's own hello now counts, once */
	hl = hello(c1, s.nonce, s.nlen);
	body = upload_body(hl, &blk, 1);
	ans = expect(u, "POST", s.path, body, "k-other-card", 200, &r);
	assert_line(ans, 0, c1->ua, b.seq, "ok");
	assert_int_equal(jint(ans, "invoiced"), 1);
	reply_free(&r);
	assert_int_equal(invoices(u, ada), 1);
	/* the other session's nonce, now used with its own hello, finds the block seen */
	free(body);
	free(hl);
	hl = hello(c1, t.nonce, t.nlen);
	body = upload_body(hl, &blk, 1);
	ans = expect(u, "POST", t.path, body, "k-other-nonce", 200, &r);
	assert_line(ans, 0, c1->ua, b.seq, "duplicate");
	assert_int_equal(jint(ans, "invoiced"), 0);
	reply_free(&r);
	assert_int_equal(invoices(u, ada), 1);
	free(body);
	free(hl);
	free(blk);
}

/* ---- a block bound to the session answers its nonce: no separate hello ---- */

/* A fresh block bound to a session's nonce (EXPORT P1=0 with the nonce). */
static struct blk export_bound(struct mod *m, const uint8_t *nonce, size_t nlen)
{
	struct blk k = {0};
	uint8_t resp[KH_APDU_MAX_RESP];
	struct kh_usage_hdr h;
	size_t n = 0;

	assert_int_equal(send_apdu(&m->t, KH_CLA, KH_INS_EXPORT, 0, 0, nonce, nlen, resp, sizeof resp, &n), 0x9000);
	memcpy(k.b, resp, n);
	k.n = n;
	assert_int_equal(kh_usage_peek(k.b, k.n, &h), KH_OK);
	assert_int_equal(h.flags, KH_USAGE_F_SESSION);
	k.ua = h.ua;
	k.seq = h.block_seq;
	return k;
}

/* {"blocks": [...]}, no hello. */
static char *upload_body_nohello(char *const *blocks, size_t n)
{
	json_t *o = json_pack("{s:[]}", "blocks");
	char *s;
	for (size_t i = 0; i < n; i++)
		assert_int_equal(json_array_append_new(json_object_get(o, "blocks"), json_string(blocks[i])), 0);
	assert_non_null(s = json_dumps(o, JSON_COMPACT));
	json_decref(o);
	return s;
}

static void test_bound_block_is_hello(void **state)
{
	struct uw *u = *state;
	struct mod *c1 = &u->w->c1, *c3 = &u->c3;
	struct session s, t;
	struct blk bt, plain, other;
	struct reply r;
	char *blk[2], *body, *hl, *before, *after;
	int64_t ada, bob;
	json_t *ans;

	ada_and_bob(u, &ada, &bob); /* c1 Ada's (one film bought), c3 Bob's */
	s = open_session(u, c1);
	t = open_session(u, c1);
	bt = export_bound(c1, t.nonce, t.nlen); /* bound to session t */
	plain = export_block(c1);               /* bound to none */
	other = export_bound(c3, s.nonce, s.nlen); /* s's nonce, another card */
	before = db_state(u);

	/* no hello and only a block bound to another session: nothing answers s's nonce */
	blk[0] = b64(bt.b, bt.n);
	body = upload_body_nohello(blk, 1);
	expect_error(u, s.path, body, "k-b1", 403, "hello");
	free(body);
	free(blk[0]);
	/* nor does a block bound to none */
	blk[0] = b64(plain.b, plain.n);
	body = upload_body_nohello(blk, 1);
	expect_error(u, s.path, body, "k-b2", 403, "hello");
	free(body);
	free(blk[0]);
	/* nor another card's block bound to s */
	blk[0] = b64(other.b, other.n);
	body = upload_body_nohello(blk, 1);
	expect_error(u, s.path, body, "k-b3", 403, "hello");
	free(body);
	free(blk[0]);
	after = db_state(u);
	assert_string_equal(before, after); /* nothing recorded by a refused session */
	free(after);
	free(before);

	/* with a hello, a block bound to another session is refused on its own ("tampered": its
	 * signature holds only with that session's nonce) and the rest of the session counts */
	hl = hello(c1, s.nonce, s.nlen);
	blk[0] = b64(bt.b, bt.n);
	blk[1] = b64(plain.b, plain.n);
	{
		json_t *o = json_pack("{s:s,s:[s,s]}", "hello", hl, "blocks", blk[0], blk[1]);
		body = json_dumps(o, JSON_COMPACT);
		json_decref(o);
	}
	ans = expect(u, "POST", s.path, body, "k-b4", 200, &r);
	assert_line(ans, 0, c1->ua, bt.seq, "tampered");
	assert_line(ans, 1, c1->ua, plain.seq, "ok");
	assert_int_equal(jint(ans, "invoiced"), 1);
	reply_free(&r);
	free(body);
	free(blk[0]);
	free(blk[1]);
	free(hl);

	/* in its own session, the bound block is the hello: accepted, no separate hello needed (it
	 * replaces the forged-looking copy recorded above, being genuine here) */
	blk[0] = b64(bt.b, bt.n);
	body = upload_body_nohello(blk, 1);
	ans = expect(u, "POST", t.path, body, "k-b5", 200, &r);
	assert_line(ans, 0, c1->ua, bt.seq, "ok");
	assert_int_equal(jint(ans, "invoiced"), 0); /* its purchase was invoiced once already */
	reply_free(&r);
	free(body);
	free(blk[0]);
	assert_int_equal(invoices(u, ada), 1);
	assert_int_equal(invoices(u, bob), 0);
	assert_verdict(u, c1->ua, bt.seq, "ok");

	/* a card that bought nothing: its block is accepted, and nothing is queued for it (an ACK
	 * USAGE would only let purchases leave its log, and it has none) */
	{
		char sql[96];
		long queued;
		struct session q = open_session(u, c3);
		struct blk b3 = export_bound(c3, q.nonce, q.nlen);
		json_t *o;
		snprintf(sql, sizeof sql, "SELECT count(*) FROM emm_queue WHERE address = %u", c3->ua);
		queued = db_int(u, sql);
		blk[0] = b64(b3.b, b3.n);
		o = json_pack("{s:[s],s:I}", "blocks", blk[0], "emm_seq", (json_int_t)queued);
		body = json_dumps(o, JSON_COMPACT);
		json_decref(o);
		ans = expect(u, "POST", q.path, body, "k-b6", 200, &r);
		assert_line(ans, 0, c3->ua, b3.seq, "ok");
		assert_int_equal(json_array_size(json_object_get(ans, "emms")), 0);
		reply_free(&r);
		assert_int_equal(db_int(u, sql), queued);
		free(body);
		free(blk[0]);
	}
}

/* ---- recovery only from an M1 block, never from a stale one ---- */

/* A session of card m carrying the given blocks; the answer (in r: reply_free it). */
static json_t *upload_blocks(struct uw *u, struct mod *m, const struct blk *const *bl, size_t n, const char *key,
			     struct reply *r)
{
	struct session s = open_session(u, m);
	char *hl = hello(m, s.nonce, s.nlen), *b[8], *body;
	json_t *ans;

	assert_true(n <= 8);
	for (size_t i = 0; i < n; i++)
		b[i] = b64(bl[i]->b, bl[i]->n);
	body = upload_body(hl, b, n);
	ans = expect(u, "POST", s.path, body, key, 200, r);
	for (size_t i = 0; i < n; i++)
		free(b[i]);
	free(body);
	free(hl);
	return ans;
}

static void replace(struct uw *u, struct mod *old, struct mod *repl)
{
	char body[64], path[64];
	struct reply r;

	snprintf(body, sizeof body, "{\"new_ua\":\"%08X\"}", repl->ua);
	snprintf(path, sizeof path, "/v1/cards/%08X/replace", old->ua);
	expect(u, "POST", path, body, NULL, 200, &r);
	reply_free(&r);
}

/* "state|closed_reason" of a card, from the database. */
static void assert_card(struct uw *u, const struct mod *m, const char *want)
{
	char sql[128], *s;
	snprintf(sql, sizeof sql, "SELECT state, coalesce(closed_reason, '') FROM cards WHERE ua = %u", m->ua);
	s = db_rows(u, sql);
	if (*s)
		s[strlen(s) - 1] = 0;
	if (strcmp(s, want) != 0)
		fail_msg("card %08X is '%s', expected '%s'", m->ua, s, want);
	free(s);
}

/* Credit policy 200/0, subscriber Ada, both cards registered, the first assigned to her (her
 * first card: authorised to export at once); Ada's id. */
static int64_t ada_first_card(struct uw *u, struct mod *first, struct mod *spare)
{
	struct reply r;
	int64_t ada;

	expect(u, "PUT", "/v1/credit-policy", "{\"initial_credit\":200,\"reload_amount\":0}", NULL, 200, &r);
	reply_free(&r);
	ada = add_subscriber(u, "Ada");
	register_card(u, first);
	register_card(u, spare);
	assign(u, first, ada);
	return ada;
}

/* One upload by c2 (the replacement) carrying one block of c1 (the replaced card), and what the
 * center must then say and hold: the verdict, what it invoiced, whether c2 may export now,
 * c1's state, the subscriber's invoice count; the block itself is recorded "ok" (genuine). */
struct step {
	const struct blk *b;
	const char *key, *verdict;
	long invoiced;
	int authorised;
	const char *c1_state;
	long invoices;
};

static void recovery_step(struct uw *u, const struct step *st, int64_t ada)
{
	struct mod *c1 = &u->w->c1, *c2 = &u->w->c2;
	const struct blk *bl[1] = {st->b};
	struct reply r;
	json_t *ans = upload_blocks(u, c2, bl, 1, st->key, &r);

	assert_line(ans, 0, c1->ua, st->b->seq, st->verdict);
	assert_int_equal(jint(ans, "invoiced"), st->invoiced);
	assert_int_equal(json_is_true(json_object_get(ans, "export_authorised")), st->authorised);
	reply_free(&r);
	assert_verdict(u, c1->ua, st->b->seq, "ok");
	assert_card(u, c1, st->c1_state);
	assert_int_equal(invoices(u, ada), st->invoices);
}

static void test_recovery_needs_m1(void **state)
{
	struct uw *u = *state;
	struct mod *c1 = &u->w->c1, *c2 = &u->w->c2;
	struct blk old_session, m1, later;
	const struct blk *bl[1];
	struct reply r;
	int64_t ada;
	json_t *ans;

	expect(u, "PUT", "/v1/credit-policy", "{\"initial_credit\":200,\"reload_amount\":0}", NULL, 200, &r);
	reply_free(&r);
	ada = add_subscriber(u, "Ada");
	register_card(u, c1);
	register_card(u, c2);
	assign(u, c1, ada); /* Ada's first card: authorised to export at once */

	/* c1 buys a film; the decoder asks for a session block and keeps it, never uploading it */
	buy(u, c1, 101);
	old_session = export_for(c1, 0);
	/* c1 buys another; M1 gets c1's newest block, made for M1 */
	buy(u, c1, 102);
	m1 = export_for(c1, 1);
	assert_true(old_session.seq < m1.seq);
	replace(u, c1, c2);
	assert_card(u, c1, "replaced|");

	/* the decoder presents the old session block as "the M1 block": not_m1. Its film is
	 * invoiced (a genuine purchase), but c1 stays outstanding and c2 is not authorised */
	recovery_step(u, &(struct step){&old_session, "k-not-m1", "not_m1", 1, 0, "replaced|", 1}, ada);

	/* the real M1 block: recovered, the second film invoiced, c1 closed, c2 authorised */
	recovery_step(u, &(struct step){&m1, "k-m1", "recovered", 1, 1, "closed|recovered", 2}, ada);

	/* c1, closed as recovered (its REVOKEs never carried to it), buys once more and makes a
	 * later M1 block: still accepted, its new film invoiced to Ada; c1 stays closed */
	buy(u, c1, 103);
	later = export_for(c1, 1);
	assert_true(later.seq > m1.seq);
	bl[0] = &later;
	ans = upload_blocks(u, c2, bl, 1, "k-later", &r);
	assert_line(ans, 0, c1->ua, later.seq, "recovered");
	assert_int_equal(jint(ans, "invoiced"), 1);
	reply_free(&r);
	assert_card(u, c1, "closed|recovered");
	assert_int_equal(invoices(u, ada), 3);
	assert_int_equal(db_int(u, "SELECT count(*) FROM (SELECT ua, event_id, time FROM invoices "
				   "GROUP BY ua, event_id, time HAVING count(*) > 1) AS dup"),
			 0);
}

static void test_recovery_old_layout_and_duplicate(void **state)
{
	struct uw *u = *state;
	struct mod *c1 = &u->w->c1, *c2 = &u->w->c2;
	struct blk m1_old, sess, m1_new, v1;
	const struct blk *bl[2];
	struct reply r;
	int64_t ada;
	json_t *ans;
	char *before, *after;

	ada = ada_first_card(u, c1, c2);

	/* M1 gets block m1_old; a copy of it is kept aside. c1 buys, then connects: its session
	 * block (newer) and M1's block go up, and M1 then takes a newer block m1_new */
	m1_old = export_for(c1, 1);
	buy(u, c1, 101);
	sess = export_for(c1, 0);
	bl[0] = &sess;
	bl[1] = &m1_old;
	ans = upload_blocks(u, c1, bl, 2, "k-c1", &r);
	assert_line(ans, 0, c1->ua, sess.seq, "ok");
	assert_line(ans, 1, c1->ua, m1_old.seq, "ok");
	reply_free(&r);
	buy(u, c1, 102);
	m1_new = export_for(c1, 1);
	assert_true(m1_old.seq < sess.seq && sess.seq < m1_new.seq);
	replace(u, c1, c2);

	/* a block of the old layout (version 1) is named, refused, and not recorded */
	v1 = m1_new;
	v1.b[0] = 1;
	bl[0] = &v1;
	before = db_rows(u, "SELECT ua, block_seq, verdict FROM usage_blocks ORDER BY ua, block_seq");
	ans = upload_blocks(u, c2, bl, 1, "k-v1", &r);
	assert_line(ans, 0, c1->ua, m1_new.seq, "version");
	assert_int_equal(jint(ans, "invoiced"), 0);
	reply_free(&r);
	/* version 2, whose nonce came from block_seq, likewise */
	v1.b[0] = 2;
	ans = upload_blocks(u, c2, bl, 1, "k-v2", &r);
	assert_line(ans, 0, c1->ua, m1_new.seq, "version");
	assert_int_equal(jint(ans, "invoiced"), 0);
	reply_free(&r);
	after = db_rows(u, "SELECT ua, block_seq, verdict FROM usage_blocks ORDER BY ua, block_seq");
	assert_string_equal(before, after);
	free(before);
	free(after);

	/* the old copy of M1 went up in c1's own session: a duplicate now, which closes nothing
	 * (test_recovery_stale has an old copy the center never saw) */
	bl[0] = &m1_old;
	ans = upload_blocks(u, c2, bl, 1, "k-dup", &r);
	assert_line(ans, 0, c1->ua, m1_old.seq, "duplicate");
	reply_free(&r);
	assert_card(u, c1, "replaced|");
	(void)ada;
}

/* An M1 block older than one accepted, never seen before itself: stale, invoiced, not closing. */
static void test_recovery_stale(void **state)
{
	struct uw *u = *state;
	struct mod *c1 = &u->w->c1, *c2 = &u->w->c2;
	struct blk m1_old, sess, m1_new;
	const struct blk *bl[1];
	struct reply r;
	int64_t ada;
	json_t *ans;

	ada = ada_first_card(u, c1, c2);

	/* M1 holds m1_old (film 101), of which the decoder keeps a copy; c1 buys film 102 and
	 * uploads a session block (the center now holds block sess); M1 later takes m1_new */
	buy(u, c1, 101);
	m1_old = export_for(c1, 1);
	buy(u, c1, 102);
	sess = export_for(c1, 0);
	bl[0] = &sess;
	ans = upload_blocks(u, c1, bl, 1, "k-c1", &r);
	assert_line(ans, 0, c1->ua, sess.seq, "ok");
	assert_int_equal(jint(ans, "invoiced"), 2);
	reply_free(&r);
	buy(u, c1, 103);
	m1_new = export_for(c1, 1);
	replace(u, c1, c2);

	/* the decoder withholds m1_new and presents its old copy: stale, c1 not closed */
	recovery_step(u, &(struct step){&m1_old, "k-stale", "stale", 0, 0, "replaced|", 2}, ada); /* film 101 was invoiced from sess already */

	/* the newest M1 block closes it, and film 103 is invoiced */
	recovery_step(u, &(struct step){&m1_new, "k-new", "recovered", 1, 1, "closed|recovered", 3}, ada);
}

/* ---- the open endpoints' limits ---- */

static void test_session_expiry(void **state)
{
	struct uw *u = *state;
	struct mod *c1 = &u->w->c1;
	struct session s, t;
	struct blk b;
	struct reply r, again;
	char *hl, *blk, *body, *before, *after;
	int64_t ada;
	json_t *ans;

	expect(u, "PUT", "/v1/credit-policy", "{\"initial_credit\":200,\"reload_amount\":0}", NULL, 200, &r);
	reply_free(&r);
	ada = add_subscriber(u, "Ada");
	register_card(u, c1);
	assign(u, c1, ada);
	buy(u, c1, 101);
	b = export_block(c1);
	blk = b64(b.b, b.n);

	/* a session used one second after its time: refused, and nothing recorded */
	s = open_session(u, c1);
	t = open_session(u, c1);
	u->now += KH_SMS_UPLOAD_TTL + 1;
	hl = hello(c1, s.nonce, s.nlen);
	body = upload_body(hl, &blk, 1);
	before = db_state(u);
	expect_error(u, s.path, body, "k-late", 409, "session_expired");
	after = db_state(u);
	assert_string_equal(before, after);
	free(after);
	free(before);
	free(body);
	free(hl);
	assert_int_equal(invoices(u, ada), 0);

	/* a session used at the very end of its time still counts */
	u->now -= 1;
	hl = hello(c1, t.nonce, t.nlen);
	body = upload_body(hl, &blk, 1);
	ans = expect(u, "POST", t.path, body, "k-in-time", 200, &r);
	assert_line(ans, 0, c1->ua, b.seq, "ok");
	assert_int_equal(invoices(u, ada), 1);

	/* a decoder retrying that upload after a lost reply, long after: the same answer */
	u->now += 10 * KH_SMS_UPLOAD_TTL;
	req(u, "POST", t.path, body, "k-in-time", &again);
	assert_int_equal(again.status, 200);
	assert_true(again.replayed);
	assert_int_equal(again.len, r.len);
	assert_memory_equal(again.body, r.body, r.len);
	reply_free(&again);
	reply_free(&r);
	free(body);
	free(hl);
	free(blk);
}

/* Rows the open endpoints could make: sessions and idempotency records. */
static long rows_open(struct uw *u)
{
	return db_int(u, "SELECT (SELECT count(*) FROM upload_sessions) + (SELECT count(*) FROM idempotency)");
}

/*
 * Opening a session costs the center nothing. Anyone who knows a card's UA may open sessions
 * for it: the center used to store each one and, at the per-card cap, evict the oldest, so 400
 * openings by an attacker evicted the decoder's session and its upload got 404 (at 40 opens a
 * second, no genuine upload got through). Now a session is a token the center MACs, stored only
 * when its upload is accepted: the openings store nothing (not even their Idempotency-Keys), the
 * decoder's session still works, a used one is refused, and a token changed by one character
 * is not the center's (its nonce is another, so the card's answer does not check).
 */
static void test_open_costs_nothing(void **state)
{
	struct uw *u = *state;
	struct mod *c1 = &u->w->c1;
	struct session s, forged;
	struct reply r;
	char body[32], key[32], *hl, *up;
	long rows;

	register_card(u, c1);
	assign(u, c1, add_subscriber(u, "Ada"));
	rows = rows_open(u);
	s = open_session(u, c1);
	snprintf(body, sizeof body, "{\"ua\":\"%08X\"}", c1->ua);
	for (int i = 0; i < 400; i++) {
		snprintf(key, sizeof key, "attacker-%d", i);
		expect(u, "POST", "/v1/upload/sessions", body, key, 201, &r);
		reply_free(&r);
	}
	assert_int_equal(rows_open(u), rows);

	/* the decoder's session, opened before all of them, is good */
	hl = hello(c1, s.nonce, s.nlen);
	up = upload_body(hl, NULL, 0);
	expect(u, "POST", s.path, up, "k-genuine", 200, &r);
	reply_free(&r);
	/* and good once: a second upload of it is refused */
	expect_error(u, s.path, up, "k-genuine-again", 409, "session_closed");

	/* a token changed in its last character (the salt): not a session the center opened. The
	 * card's answer to the real nonce does not answer the one the center computes for it. */
	forged = s;
	forged.id[strlen(forged.id) - 1] = forged.id[strlen(forged.id) - 1] == 'A' ? 'Q' : 'A';
	snprintf(forged.path, sizeof forged.path, "/v1/upload/sessions/%s", forged.id);
	expect_error(u, forged.path, up, "k-forged", 403, "hello");
	/* not a token at all */
	expect_error(u, "/v1/upload/sessions/12", up, "k-12", 404, "not_found");
	free(up);
	free(hl);
	/* one session row, for the upload accepted; no idempotency record from the openings */
	assert_int_equal(db_int(u, "SELECT count(*) FROM upload_sessions"), 1);
	assert_int_equal(db_int(u, "SELECT count(*) FROM upload_sessions WHERE closed_at IS NULL"), 0);
}

/* The attacker of test_open_attack: opens sessions for one UA as fast as it can, bounded. */
struct opener {
	uint16_t port;
	uint32_t ua;
	atomic_int stop;
	atomic_int opened;
	pthread_t th;
};

static void *opener_main(void *arg)
{
	struct opener *o = arg;
	CURL *c = curl_easy_init();
	char url[96], body[32], key[32];

	snprintf(url, sizeof url, "http://127.0.0.1:%u/v1/upload/sessions", o->port);
	snprintf(body, sizeof body, "{\"ua\":\"%08X\"}", o->ua);
	for (int i = 0; i < 20000 && !atomic_load(&o->stop); i++) {
		struct reply r;
		snprintf(key, sizeof key, "attacker-%d", i);
		if (http_perform(c, url, "POST", body, key, NULL, 30, &r) == CURLE_OK && r.status == 201)
			atomic_fetch_add(&o->opened, 1);
		reply_free(&r);
	}
	curl_easy_cleanup(c);
	return NULL;
}

/*
 * The attack as it was seen: an attacker opening sessions for a card without pause while its
 * decoder runs five sessions (open, the card's fresh block bound to the nonce, upload), each
 * taking as long as the attacker needs for 20 openings (a real decoder talks to its card for
 * half a second while the attacker opens 40 a second). Every one of the decoder's uploads
 * succeeds; before, each one's session was evicted first.
 */
static void test_open_attack(void **state)
{
	struct uw *u = *state;
	struct mod *c1 = &u->w->c1;
	struct opener o = {0};
	int ok = 0;

	register_card(u, c1);
	assign(u, c1, add_subscriber(u, "Ada"));
	o.port = u->port;
	o.ua = c1->ua;
	assert_int_equal(pthread_create(&o.th, NULL, opener_main, &o), 0);
	/* a head start: the attacker is opening before the decoder begins */
	for (int n = 0; n < 500 && atomic_load(&o.opened) < 40; n++)
		usleep(10000);
	for (int i = 0; i < 5; i++) {
		struct session s = open_session(u, c1);
		int seen = atomic_load(&o.opened);
		struct blk b;
		for (int n = 0; n < 1000 && atomic_load(&o.opened) < seen + 20; n++)
			usleep(10000);
		b = export_bound(c1, s.nonce, s.nlen);
		char *blk = b64(b.b, b.n), *up = upload_body_nohello(&blk, 1), key[32];
		struct reply r;
		snprintf(key, sizeof key, "k-decoder-%d", i);
		req(u, "POST", s.path, up, key, &r);
		ok += r.status == 200;
		reply_free(&r);
		free(up);
		free(blk);
	}
	atomic_store(&o.stop, 1);
	pthread_join(o.th, NULL);
	assert_true(atomic_load(&o.opened) >= 40);
	assert_int_equal(ok, 5);
}

/* A POST from source address src (a loopback address), answer in out (reply_free it). */
static void post_from(struct uw *u, const char *src, const char *path, const char *body, const char *idem,
		      struct reply *out)
{
	CURL *c = curl_easy_init();
	struct curl_slist *hl = NULL;
	char url[160], line[300];
	FILE *f;
	size_t cap = 0;

	assert_non_null(c);
	memset(out, 0, sizeof *out);
	snprintf(url, sizeof url, "http://127.0.0.1:%u%s", u->port, path);
	hl = curl_slist_append(hl, "Content-Type: application/json");
	if (idem) {
		snprintf(line, sizeof line, "Idempotency-Key: %s", idem);
		hl = curl_slist_append(hl, line);
	}
	assert_non_null(f = open_memstream(&out->body, &cap));
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_INTERFACE, src);
	curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, f);
	assert_int_equal(curl_easy_perform(c), CURLE_OK);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
	fclose(f);
	out->len = cap;
	out->json = json_loadb(out->body, out->len, 0, NULL);
	curl_slist_free_all(hl);
	curl_easy_cleanup(c);
}

/* The center with a budget of 10 requests per address on the open endpoints, refilled at 1 a
 * second. */
static int setup_budget(void **state)
{
	struct uw *u = calloc(1, sizeof *u);
	struct kh_sms_config cfg = {0};
	struct kh_http_config hc = {.open_rate = 1, .open_burst = 10};

	assert_non_null(u);
	center_with(u, &cfg, &hc);
	*state = u;
	return 0;
}

/*
 * Anyone can fill the disk: each opening with a new Idempotency-Key used to store a row, never
 * purged (105,606 rows in 20 s from one client). Now an address past its budget gets 429 with
 * Retry-After, what it was granted stored nothing, and a decoder at another address (127.0.0.2)
 * still opens and uploads. The operator's endpoints are not counted.
 */
static void test_open_flood(void **state)
{
	struct uw *u = *state;
	struct mod *c1 = &u->w->c1;
	struct reply r;
	char body[32], key[32], *hl, *up;
	uint8_t nonce[64];
	size_t nlen = 0;
	long rows;
	int granted = 0, limited = 0;
	char path[96];

	register_card(u, c1);
	assign(u, c1, add_subscriber(u, "Ada")); /* two requests of the budget: the EMM fetch, and ... */
	rows = rows_open(u);
	snprintf(body, sizeof body, "{\"ua\":\"%08X\"}", c1->ua);
	for (int i = 0; i < 200 && !limited; i++) {
		snprintf(key, sizeof key, "flood-%d", i);
		req(u, "POST", "/v1/upload/sessions", body, key, &r);
		if (r.status == 201) {
			granted++;
		} else {
			assert_int_equal(r.status, 429);
			assert_string_equal(jstr(json_object_get(r.json, "error"), "code"), "rate_limited");
			limited = 1;
		}
		reply_free(&r);
	}
	assert_true(limited);
	assert_true(granted >= 5);
	assert_int_equal(rows_open(u), rows);
	/* the operator is not counted */
	expect(u, "GET", "/v1/products", NULL, NULL, 200, &r);
	reply_free(&r);

	/* a decoder at another address */
	post_from(u, "127.0.0.2", "/v1/upload/sessions", body, "k-open", &r);
	assert_int_equal(r.status, 201);
	assert_int_equal(kh_json_get_b64(r.json, "nonce", nonce, sizeof nonce, &nlen, 0), KH_OK);
	snprintf(path, sizeof path, "/v1/upload/sessions/%s", jstr(r.json, "session"));
	reply_free(&r);
	hl = hello(c1, nonce, nlen);
	up = upload_body(hl, NULL, 0);
	post_from(u, "127.0.0.2", path, up, "k-up", &r);
	assert_int_equal(r.status, 200);
	reply_free(&r);
	free(up);
	free(hl);
}

/*
 * Idempotency records expire: a record older than the horizon (KH_SMS_IDEM_TTL, the center's
 * clock moved past it) is deleted when the next one is written, so the table holds what the
 * horizon holds; a retry after the horizon runs as a new request.
 */
static void test_idempotency_horizon(void **state)
{
	struct uw *u = *state;
	struct mod *c1 = &u->w->c1;
	char path[96];
	struct reply r, again;
	int64_t first;

	expect(u, "PUT", "/v1/credit-policy", "{\"initial_credit\":100,\"reload_amount\":10}", NULL, 200, &r);
	reply_free(&r);
	register_card(u, c1);
	assign(u, c1, add_subscriber(u, "Ada"));
	snprintf(path, sizeof path, "/v1/cards/%08X/reload", c1->ua);
	first = jint(expect(u, "POST", path, NULL, "reload-1", 200, &r), "reload_id");
	reply_free(&r);
	assert_int_equal(db_int(u, "SELECT count(*) FROM idempotency"), 1);
	/* within the horizon: the same answer */
	req(u, "POST", path, NULL, "reload-1", &again);
	assert_int_equal(again.status, 200);
	assert_true(again.replayed);
	assert_int_equal(jint(again.json, "reload_id"), first);
	reply_free(&again);

	/* past it: on SQLite the next record written takes the old one away; on PostgreSQL the
	 * renewal thread's round does (a write's own transaction does not: that made concurrent
	 * writes conflict). (Records are stamped with the real clock, and the test's may have been
	 * read some seconds before: an hour past the horizon is past it for any record this test
	 * wrote.) */
	u->now += KH_SMS_IDEM_TTL + 3600;
	expect(u, "POST", path, NULL, "reload-2", 200, &r);
	reply_free(&r);
	if (kh_test_pg()) {
		/* The round runs after reload-2's record was stamped with the real clock, which is
		 * behind this test's by the horizon: both records are past it then. */
		assert_int_equal(db_int(u, "SELECT count(*) FROM idempotency"), 2);
		assert_int_equal(kh_sms_renew_start(u->sms, 3600), KH_OK); /* its first round runs at once */
		for (int i = 0; i < 100 && db_int(u, "SELECT count(*) FROM idempotency") != 0; i++)
			usleep(50000);
		assert_int_equal(db_int(u, "SELECT count(*) FROM idempotency"), 0);
	} else {
		assert_int_equal(db_int(u, "SELECT count(*) FROM idempotency"), 1);
	}
	/* and the old key is a new request */
	req(u, "POST", path, NULL, "reload-1", &again);
	assert_int_equal(again.status, 200);
	assert_false(again.replayed);
	assert_true(jint(again.json, "reload_id") > first + 1);
	reply_free(&again);
}

/* ---- the review of the usage path: credit pumping, catalogue price, rolled-back cards ---- */

/* Event ev in the catalogue at price (a product 1 and channel 1 made on first use). */
static void catalogue(struct uw *u, uint32_t ev, uint32_t price)
{
	char body[160];
	struct reply r;

	if (db_int(u, "SELECT count(*) FROM channels WHERE id = 1") == 0) {
		expect(u, "POST", "/v1/products", "{\"id\":1,\"name\":\"PPV\"}", NULL, 201, &r);
		reply_free(&r);
		expect(u, "POST", "/v1/channels", "{\"id\":1,\"name\":\"Films\",\"product_id\":1}", NULL, 201, &r);
		reply_free(&r);
	}
	snprintf(body, sizeof body,
		 "{\"id\":%u,\"name\":\"E%u\",\"price\":%u,\"channel_id\":1,\"start\":0,\"end\":4102444800}", ev, ev,
		 price);
	expect(u, "POST", "/v1/events", body, NULL, 201, &r);
	reply_free(&r);
}

/* Hand the card every EMM of an upload answer, as the decoder does. */
static void apply_answer(struct mod *m, const json_t *ans)
{
	struct kh_host_cas direct = {0};
	json_t *e;
	size_t i;
	kh_err r;

	direct.card = &m->t;
	json_array_foreach(json_object_get(ans, "emms"), i, e) {
		uint8_t sec[KH_EMM_MAX];
		size_t n = 0;
		assert_int_equal(kh_b64url_decode(json_string_value(e), strlen(json_string_value(e)), sec, sizeof sec, &n),
				 KH_OK);
		r = kh_host_cas_emm(&direct, sec, n);
		if (r != KH_ERR_EMM_REPLAY) /* the answer has every EMM queued: the card skips those it has */
			assert_int_equal(r, KH_OK);
	}
}

static uint32_t credit_of(struct mod *m)
{
	struct kh_host_cas c = {0};
	struct kh_cas_status st;

	c.card = &m->t;
	assert_int_equal(kh_host_cas_status(&c, &st), KH_OK);
	return st.credit;
}

/* One session of card m with its fresh block; the answer in r (reply_free it). */
static json_t *upload_fresh(struct uw *u, struct mod *m, const char *key, struct reply *r)
{
	struct blk b = export_block(m);
	const struct blk *bl[1] = {&b};
	return upload_blocks(u, m, bl, 1, key, r);
}

/* The credit reloads the center queued for a card: how many, and their sum. */
static long reloads(struct uw *u, const struct mod *m, long *sum)
{
	char sql[128];
	snprintf(sql, sizeof sql, "SELECT coalesce(sum(amount), 0) FROM credit_reloads WHERE ua = %u", m->ua);
	*sum = db_int(u, sql);
	snprintf(sql, sizeof sql, "SELECT count(*) FROM credit_reloads WHERE ua = %u", m->ua);
	return db_int(u, sql);
}

/*
 * Credit pumping. The center used to queue its fixed reload amount after every upload that
 * invoiced anything, however little was spent: a free event bought and uploaded, again and
 * again, grew the card's credit without end. Now an upload reloads what the card newly spent,
 * and never lifts credit + reloads in flight above the policy's ceiling (initial_credit).
 */
static void test_credit_pumping(void **state)
{
	struct uw *u = *state;
	struct mod *c1 = &u->w->c1;
	struct reply r;
	json_t *ans;
	char key[32];
	long n, sum;
	int64_t ada;

	expect(u, "PUT", "/v1/credit-policy", "{\"initial_credit\":200,\"reload_amount\":100}", NULL, 200, &r);
	reply_free(&r);
	for (uint32_t ev = 300; ev < 305; ev++)
		catalogue(u, ev, 0); /* five free events */
	for (uint32_t ev = 310; ev < 316; ev++)
		catalogue(u, ev, 30);
	ada = add_subscriber(u, "Ada");
	register_card(u, c1);
	assign(u, c1, ada);
	assert_int_equal(credit_of(c1), 200);
	assert_int_equal(reloads(u, c1, &sum), 1); /* the initial credit */

	/* (1) a free event bought and uploaded, five times: invoiced each time, reloaded never */
	for (uint32_t ev = 300; ev < 305; ev++) {
		buy_at(u, c1, ev, 0);
		snprintf(key, sizeof key, "free-%u", ev);
		ans = upload_fresh(u, c1, key, &r);
		assert_int_equal(jint(ans, "invoiced"), 1);
		apply_answer(c1, ans);
		reply_free(&r);
		assert_int_equal(credit_of(c1), 200);
	}
	assert_int_equal(reloads(u, c1, &sum), 1);
	assert_int_equal(invoices(u, ada), 5);

	/* (2) an event priced 30: exactly 30 comes back */
	buy_at(u, c1, 310, 30);
	assert_int_equal(credit_of(c1), 170);
	ans = upload_fresh(u, c1, "paid-310", &r);
	apply_answer(c1, ans);
	reply_free(&r);
	assert_int_equal(reloads(u, c1, &sum), 2);
	assert_int_equal(sum, 200 + 30);
	assert_int_equal(credit_of(c1), 200);

	/* (3) reloads in flight: three uploads whose EMMs the card never applies. Each gives back
	 * what was spent, no more: the card, credit and reloads queued together, stays at 200 */
	for (uint32_t ev = 311; ev < 314; ev++) {
		buy_at(u, c1, ev, 30);
		snprintf(key, sizeof key, "withheld-%u", ev);
		ans = upload_fresh(u, c1, key, &r);
		reply_free(&r); /* never delivered */
	}
	assert_int_equal(credit_of(c1), 110);
	n = reloads(u, c1, &sum);
	assert_int_equal(n, 5);
	assert_int_equal(sum, 200 + 30 + 90);
	/* the operator reloads by hand meanwhile (100 more in flight): the card is now above the
	 * ceiling counting what is on its way, so a purchase brings nothing back */
	{
		char path[64];
		snprintf(path, sizeof path, "/v1/cards/%08X/reload", c1->ua);
		expect(u, "POST", path, NULL, "manual-1", 200, &r);
		reply_free(&r);
	}
	buy_at(u, c1, 314, 30);
	ans = upload_fresh(u, c1, "over-ceiling", &r);
	assert_int_equal(jint(ans, "invoiced"), 1);
	apply_answer(c1, ans); /* every EMM queued so far, oldest first */
	reply_free(&r);
	assert_int_equal(reloads(u, c1, &n), 6);
	assert_int_equal(n, 200 + 30 + 90 + 100);
	/* 200 - 4 x 30 spent + 90 + 100 reloaded: the operator's own reload on top, no more */
	assert_int_equal(credit_of(c1), 270);
	/* and from there, spending brings nothing back until the card is under the ceiling */
	buy_at(u, c1, 315, 30);
	ans = upload_fresh(u, c1, "still-over", &r);
	apply_answer(c1, ans);
	reply_free(&r);
	assert_int_equal(reloads(u, c1, &n), 6);
	assert_int_equal(credit_of(c1), 240);
}

/*
 * The catalogue price. A card's purchase record carries the price it paid, taken from the ECM:
 * the center invoices at its own catalogue price, never the block's, and flags the difference
 * (on the invoice, in the upload's answer, a log line and /metrics). An event the catalogue does
 * not list is invoiced at 0 and flagged unknown_event. Neither reloads more than was paid.
 */
static void test_catalogue_price(void **state)
{
	struct uw *u = *state;
	struct mod *c1 = &u->w->c1;
	struct http_conn hc = {u->curl, u->port, NULL};
	struct reply r;
	json_t *ans, *inv, *e;
	char path[64];
	long sum;
	int64_t ada;
	size_t i;
	int seen = 0;

	expect(u, "PUT", "/v1/credit-policy", "{\"initial_credit\":200,\"reload_amount\":100}", NULL, 200, &r);
	reply_free(&r);
	catalogue(u, 401, 40);
	ada = add_subscriber(u, "Ada");
	register_card(u, c1);
	assign(u, c1, ada);
	assert_int_equal(http_metric(&hc, "keyhole_price_mismatch_total"), 0);

	/* the block claims 0 for event 401, which the catalogue prices 40; and an unlisted event */
	buy_at(u, c1, 401, 0);
	buy_at(u, c1, 499, 25);
	ans = upload_fresh(u, c1, "k-price", &r);
	assert_int_equal(jint(ans, "invoiced"), 2);
	assert_int_equal(jint(json_array_get(json_object_get(ans, "blocks"), 0), "price_flags"), 2);
	reply_free(&r);
	assert_int_equal(db_int(u, "SELECT price FROM invoices WHERE event_id = 401"), 40);
	assert_int_equal(db_int(u, "SELECT price FROM invoices WHERE event_id = 499"), 0);
	assert_int_equal(db_int(u, "SELECT count(*) FROM invoices WHERE event_id = 401 AND flag = 'price_mismatch' "
				   "AND block_price = 0"),
			 1);
	assert_int_equal(db_int(u, "SELECT count(*) FROM invoices WHERE event_id = 499 AND flag = 'unknown_event' "
				   "AND block_price = 25"),
			 1);
	/* the operator sees it on the invoice */
	snprintf(path, sizeof path, "/v1/subscribers/%lld/invoices", (long long)ada);
	inv = expect(u, "GET", path, NULL, NULL, 200, &r);
	json_array_foreach(json_is_array(inv) ? inv : json_object_get(inv, "invoices"), i, e) {
		if (jint(e, "event_id") == 401) {
			assert_int_equal(jint(e, "price"), 40);
			assert_int_equal(jint(e, "block_price"), 0);
			assert_string_equal(jstr(e, "flag"), "price_mismatch");
			seen = 1;
		}
	}
	assert_true(seen);
	reply_free(&r);
	assert_int_equal(http_metric(&hc, "keyhole_price_mismatch_total"), 1);
	assert_int_equal(http_metric(&hc, "keyhole_unknown_event_total"), 1);
	/* the card paid 0 for 401 and 25 for 499, invoiced 40 and 0: it gets back the lower, 0 */
	assert_int_equal(reloads(u, c1, &sum), 1);
}

/*
 * A rolled-back card. A software card's files can be copied back; the restored card makes its
 * block numbers again. The center keeps each block's hash: a second, different block under a
 * known (UA, block_seq) is answered "clone", the card is flagged (API, /metrics), the block's
 * purchases are invoiced (the new one once, the old one not twice), and no ACK USAGE is queued,
 * so the card keeps its log.
 */
static void test_rolled_back_card(void **state)
{
	struct uw *u = *state;
	struct mod *c1 = &u->w->c1, rb = {0};
	struct http_conn hc = {u->curl, u->port, NULL};
	char *card = path_in(u->w->dir, "c1.card"), *snap = path_in(u->w->dir, "snap.card"), cmd[1024], path[64];
	struct blk n1, n2, n3;
	const struct blk *bl[1];
	struct reply r;
	json_t *ans, *j;
	long queued;
	int64_t ada;

	expect(u, "PUT", "/v1/credit-policy", "{\"initial_credit\":200,\"reload_amount\":100}", NULL, 200, &r);
	reply_free(&r);
	catalogue(u, 501, 30);
	catalogue(u, 502, 30);
	ada = add_subscriber(u, "Ada");
	register_card(u, c1);
	assign(u, c1, ada);
	buy(u, c1, 501);

	/* every file of the card copied aside: the card file, its key, its counter */
	assert_int_equal(kh_softmod_save(c1->sm, card, NULL), KH_OK);
	snprintf(cmd, sizeof cmd, "cp '%s' '%s' && cp '%s.ctr' '%s.ctr' && cp '%s/c1.key' '%s/snap.key'", card, snap,
		 card, snap, u->w->dir, u->w->dir);
	assert_int_equal(system(cmd), 0);

	/* the card gets a reload by hand (its last reload id moves on), then block n goes up: 501
	 * invoiced, the log acknowledged */
	snprintf(path, sizeof path, "/v1/cards/%08X/reload", c1->ua);
	expect(u, "POST", path, NULL, "manual-1", 200, &r);
	reply_free(&r);
	deliver_emms(u, c1);
	n1 = export_block(c1);
	bl[0] = &n1;
	ans = upload_blocks(u, c1, bl, 1, "k-n1", &r);
	assert_line(ans, 0, c1->ua, n1.seq, "ok");
	assert_int_equal(jint(ans, "invoiced"), 1);
	reply_free(&r);
	assert_int_equal(invoices(u, ada), 1);

	/* the card's files put back: the same card, as it was before block n */
	assert_int_equal(kh_softmod_open(snap, NULL, &rb.sm, NULL), KH_OK);
	kh_transport_inproc(&rb.t, kh_softmod_module(rb.sm));
	rb.ua = c1->ua;
	buy(u, &rb, 502);
	n2 = export_block(&rb);
	assert_int_equal(n2.seq, n1.seq); /* the same number, other contents */
	assert_true(n2.n != n1.n || memcmp(n2.b, n1.b, n1.n) != 0);

	snprintf(path, sizeof path, "SELECT count(*) FROM emm_queue WHERE address = %u", c1->ua);
	queued = db_int(u, path);
	bl[0] = &n2;
	ans = upload_blocks(u, &rb, bl, 1, "k-n2", &r);
	assert_line(ans, 0, c1->ua, n1.seq, "clone");
	assert_int_equal(jint(ans, "invoiced"), 1); /* 502 once; 501 not again */
	reply_free(&r);
	assert_int_equal(invoices(u, ada), 2);
	assert_int_equal(db_int(u, "SELECT count(*) FROM invoices WHERE event_id = 501"), 1);
	assert_int_equal(db_int(u, "SELECT count(*) FROM invoices WHERE event_id = 502"), 1);
	/* no ACK USAGE (nor a reload to a card whose word is in doubt): nothing queued */
	assert_int_equal(db_int(u, path), queued);
	/* the first block stays what was recorded */
	assert_verdict(u, c1->ua, n1.seq, "ok");
	/* flagged, where the operator looks */
	snprintf(path, sizeof path, "/v1/cards/%08X", c1->ua);
	j = expect(u, "GET", path, NULL, NULL, 200, &r);
	assert_true(json_is_true(json_object_get(j, "clone_alarm")));
	assert_int_equal(jint(j, "clone_block_seq"), n1.seq);
	reply_free(&r);
	assert_int_equal(http_metric(&hc, "keyhole_clone_alarms_total"), 1);

	/* the very same block again is a duplicate, as ever: nothing more */
	ans = upload_blocks(u, &rb, bl, 1, "k-n2-again", &r);
	assert_line(ans, 0, c1->ua, n1.seq, "duplicate");
	assert_int_equal(jint(ans, "invoiced"), 0);
	reply_free(&r);
	assert_int_equal(http_metric(&hc, "keyhole_clone_alarms_total"), 1);

	/* the restored card's next block has a number the center has not seen, but reports an older
	 * last reload id than the card already did (it lost the reload with its files): a clone
	 * too, and its log is not acknowledged either */
	n3 = export_block(&rb);
	assert_int_equal(n3.seq, n1.seq + 1);
	snprintf(path, sizeof path, "SELECT count(*) FROM emm_queue WHERE address = %u", c1->ua);
	queued = db_int(u, path);
	bl[0] = &n3;
	ans = upload_blocks(u, &rb, bl, 1, "k-n3", &r);
	assert_line(ans, 0, c1->ua, n3.seq, "clone");
	assert_int_equal(jint(ans, "invoiced"), 0);
	reply_free(&r);
	assert_int_equal(db_int(u, path), queued);
	assert_int_equal(http_metric(&hc, "keyhole_clone_alarms_total"), 2);
	assert_int_equal(invoices(u, ada), 2);
	kh_softmod_free(rb.sm);
	free(card);
	free(snap);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_refusals_in_session, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hello_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bound_block_is_hello, setup, teardown),
		cmocka_unit_test_setup_teardown(test_recovery_needs_m1, setup, teardown),
		cmocka_unit_test_setup_teardown(test_recovery_old_layout_and_duplicate, setup, teardown),
		cmocka_unit_test_setup_teardown(test_recovery_stale, setup, teardown),
		cmocka_unit_test_setup_teardown(test_session_expiry, setup_clock, teardown),
		cmocka_unit_test_setup_teardown(test_open_costs_nothing, setup_clock, teardown),
		cmocka_unit_test_setup_teardown(test_open_attack, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_flood, setup_budget, teardown),
		cmocka_unit_test_setup_teardown(test_idempotency_horizon, setup_clock, teardown),
		cmocka_unit_test_setup_teardown(test_credit_pumping, setup, teardown),
		cmocka_unit_test_setup_teardown(test_catalogue_price, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rolled_back_card, setup, teardown),
	};
	int rc;

	curl_global_init(CURL_GLOBAL_DEFAULT);
	rc = cmocka_run_group_tests(tests, NULL, NULL);
	curl_global_cleanup();
	return rc;
}
