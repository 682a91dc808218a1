/*
 * The decoder's side of the upload session (seed 001; src/host/upload.c, docs/protocols/upload.md)
 * against a fake center written here through struct kh_upload_http. The fake follows the protocol
 * with the world's real cards (tests/unit/world.c): it checks the session card's answer to its
 * nonce (a hello, or the card's fresh block bound to the nonce) against the session card's
 * certificate (GET CERT P1=1 + kh_cert_check), opens every block the way the center does (the
 * block's card's certificate and Ku), gives verdicts, keeps one answer per Idempotency-Key, and
 * answers with EMMs sealed under the card's Kp (ACK USAGE + credit reload, then AUTHORISE EXPORT).
 * Every card APDU and every POST goes into one event log, so the tests see the order: EMMs reach
 * the card before the EXPORT for M1.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keyhole/apdu.h"
#include "keyhole/cas.h"
#include "keyhole/cert.h"
#include "keyhole/crypto.h"
#include "keyhole/file.h"
#include "keyhole/host.h"
#include "keyhole/http.h"
#include "keyhole/m1.h"
#include "keyhole/scramble.h"
#include "keyhole/upload.h"
#include "keyhole/usage.h"
#include "testutil.h"
#include "world.h"

#define MAX_EV 64
#define MAX_CALLS 8

struct call {
	char url[256];
	char key[80];
	char *body; /* compact JSON as a client would send it */
};

struct fake {
	struct world *w;
	uint64_t t0;
	/* behaviour */
	int fail_5xx;        /* answer the upload with 500 this many times first */
	int fail_429;        /* then with 429 (the address's budget spent) this many times */
	int drop;            /* then lose this many answers (KH_ERR_TRANSPORT) */
	int refuse_hello;    /* check the hello against another card's certificate */
	int short_nonce;     /* give an 8-byte nonce */
	int got_hello;       /* an upload carried a separate hello */
	/* state */
	uint32_t session_ua;
	uint8_t nonce[32];
	uint32_t emm_seq[3];        /* per world card c1, c2, fx */
	uint32_t seen[8][2];        /* (UA, block_seq) processed */
	size_t nseen;
	char idem_key[80];
	json_t *idem_answer;        /* the answer recorded for idem_key */
	/* what happened */
	struct call calls[MAX_CALLS];
	int ncalls, nuploads_processed;
	struct kh_usage opened[4];
	size_t nopened;
	uint8_t export_ok_at_answer;  /* the card's CAS STATUS when the center answered */
	uint32_t m1_ua_at_answer;     /* what M1 held then */
	char *m1_dir;
	uint8_t *m1_key;
	/* the event log: "post open", "post upload", "apdu 52 00", ... */
	char ev[MAX_EV][24];
	int nev;
};

static struct fake *g; /* for the recording transport */

static void log_ev(struct fake *f, const char *e)
{
	assert_true(f->nev < MAX_EV);
	snprintf(f->ev[f->nev++], sizeof f->ev[0], "%s", e);
}

static int ev_index(struct fake *f, const char *e, int from)
{
	for (int i = from; i < f->nev; i++)
		if (strcmp(f->ev[i], e) == 0)
			return i;
	return -1;
}

/* ---- a card transport that logs INS and P1 of every command ---- */

struct rec {
	struct kh_transport *inner;
};

static kh_err rec_xfer(void *ctx, const uint8_t *cmd, size_t len, uint8_t *resp, size_t cap, size_t *rlen)
{
	struct rec *r = ctx;
	char e[24];
	if (len >= 4) {
		snprintf(e, sizeof e, "apdu %02X %02X", cmd[1], cmd[2]);
		log_ev(g, e);
	}
	return kh_transport_xfer(r->inner, cmd, len, resp, cap, rlen);
}

static void rec_wrap(struct rec *r, struct kh_transport *inner, struct kh_transport *out)
{
	r->inner = inner;
	out->xfer = rec_xfer;
	out->close = NULL;
	out->ctx = r;
}

/* ---- the fake center ---- */

static struct mod *mod_of(struct fake *f, uint32_t ua, int *idx)
{
	struct mod *m[3] = {&f->w->c1, &f->w->c2, &f->w->fx};
	for (int i = 0; i < 3; i++)
		if (m[i]->ua == ua) {
			if (idx)
				*idx = i;
			return m[i];
		}
	return NULL;
}

/* The card's certified signing key, as registered at the center: KH_OK or the check's error. */
static kh_err sign_pk_of(struct fake *f, struct mod *m, uint8_t pk[32])
{
	uint8_t resp[KH_APDU_MAX_RESP];
	struct kh_cert_info ci;
	size_t n;
	kh_err r;

	assert_int_equal(send_apdu(&m->t, KH_CLA, KH_INS_GET_CERT, 1, 0, NULL, 0, resp, sizeof resp, &n), KH_SW_OK);
	if ((r = kh_cert_check(resp, n, f->w->root_pk, KH_ROLE_CARD, KH_CERT_KEY_ED25519, f->t0, &ci)) != KH_OK)
		return r;
	memcpy(pk, ci.pub, 32);
	return KH_OK;
}

static json_t *error_body(const char *code, const char *msg)
{
	return json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", msg);
}

static void add_emm(struct fake *f, json_t *emms, uint32_t ua, const uint8_t *cmds, size_t n)
{
	uint8_t sec[KH_EMM_MAX];
	int idx = 0;
	assert_non_null(mod_of(f, ua, &idx));
	size_t len = world_emm(f->w->auth, ua, ++f->emm_seq[idx], cmds, n, sec, sizeof sec);
	char s[2 * KH_EMM_MAX];
	assert_int_equal(kh_b64url_encode(sec, len, s, sizeof s), KH_OK);
	assert_int_equal(json_array_append_new(emms, json_string(s)), 0);
}

/* POST /v1/upload/sessions/{ID}: hello, blocks, verdicts, EMMs (docs/protocols/upload.md 4). */
static json_t *process_upload(struct fake *f, json_t *body, int *status)
{
	uint8_t hello[KH_HELLO_LEN + 8], blk[KH_USAGE_MAX], pk[32], kp[32], ku[32];
	struct mod *sm = mod_of(f, f->session_ua, NULL), *bm;
	struct kh_usage_hdr h;
	struct kh_usage u;
	size_t n, i;
	uint32_t high = 0;
	json_t *v, *verdicts = json_array(), *emms = json_array();

	f->nuploads_processed++;
	assert_non_null(sm);
	assert_int_equal(sign_pk_of(f, f->refuse_hello ? &f->w->c1 : sm, pk), KH_OK);
	if (kh_json_get_b64(body, "hello", hello, sizeof hello, &n, 0) == KH_OK) {
		f->got_hello = 1;
		if (kh_hello_verify(pk, f->nonce, sizeof f->nonce, hello, n, &h) != KH_OK || h.ua != f->session_ua)
			goto refuse;
	} else {
		/* no hello: the session card's first block must be bound to this session's nonce */
		json_t *b0 = json_array_get(json_object_get(body, "blocks"), 0);
		assert_non_null(b0);
		assert_int_equal(kh_b64url_decode(json_string_value(b0), json_string_length(b0), blk, sizeof blk, &n),
				 KH_OK);
		assert_int_equal(kh_usage_peek(blk, n, &h), KH_OK);
		assert_int_equal(kh_authority_card_keys(f->w->auth, f->session_ua, kp, ku), KH_OK);
		if (h.ua != f->session_ua || !(h.flags & KH_USAGE_F_SESSION) ||
		    kh_usage_open_bound(ku, pk, blk, n, f->nonce, sizeof f->nonce, &u) != KH_OK)
			goto refuse;
	}
	json_array_foreach(json_object_get(body, "blocks"), i, v) {
		const char *verdict;
		size_t k;
		assert_int_equal(kh_b64url_decode(json_string_value(v), json_string_length(v), blk, sizeof blk, &n), KH_OK);
		assert_int_equal(kh_usage_peek(blk, n, &h), KH_OK);
		bm = mod_of(f, h.ua, NULL);
		for (k = 0; k < f->nseen; k++)
			if (f->seen[k][0] == h.ua && f->seen[k][1] == h.block_seq)
				break;
		if (!bm || sign_pk_of(f, bm, pk) != KH_OK) {
			verdict = "foreign";
		} else if (k < f->nseen) {
			verdict = "duplicate";
		} else {
			assert_int_equal(kh_authority_card_keys(f->w->auth, h.ua, kp, ku), KH_OK);
			if (kh_usage_open_bound(ku, pk, blk, n, f->nonce, sizeof f->nonce, &u) != KH_OK) {
				verdict = "tampered";
			} else {
				assert_true(f->nopened < 4);
				f->opened[f->nopened++] = u;
				f->seen[f->nseen][0] = h.ua;
				f->seen[f->nseen++][1] = h.block_seq;
				verdict = h.ua == f->session_ua ? "ok" : "recovered";
				if (h.ua == f->session_ua && h.block_seq > high)
					high = h.block_seq;
			}
		}
		char ua[9];
		snprintf(ua, sizeof ua, "%08X", h.ua);
		assert_int_equal(json_array_append_new(verdicts, json_pack("{s:s,s:i,s:s}", "ua", ua, "block_seq",
									  (json_int_t)h.block_seq, "verdict", verdict)),
				 0);
	}
	/* the EMMs: ACK + reload, then (last) authorise export */
	{
		uint8_t cmds[64];
		struct kh_wr w;
		kh_wr_init(&w, cmds, sizeof cmds);
		if (high)
			assert_int_equal(kh_emm_put_ack_usage(&w, high), KH_OK);
		assert_int_equal(kh_emm_put_add_credit(&w, 50, 7), KH_OK);
		add_emm(f, emms, f->session_ua, cmds, w.len);
		kh_wr_init(&w, cmds, sizeof cmds);
		assert_int_equal(kh_emm_put_auth_export(&w, 1), KH_OK);
		add_emm(f, emms, f->session_ua, cmds, w.len);
	}
	/* what the card and M1 looked like when the center answered */
	{
		struct kh_cas_status st;
		struct kh_host_cas cas;
		struct kh_m1_info mi;
		kh_host_cas_init(&cas, NULL, NULL, &sm->t, 0);
		assert_int_equal(kh_host_cas_status(&cas, &st), KH_OK);
		f->export_ok_at_answer = st.export_ok;
		f->m1_ua_at_answer = kh_m1_stat(f->m1_dir, f->m1_key, &mi) == KH_OK ? mi.ua : 0;
	}
	*status = 200;
	return json_pack("{s:o,s:o}", "blocks", verdicts, "emms", emms);
refuse:
	json_decref(verdicts);
	json_decref(emms);
	*status = 403;
	return error_body("auth", "the session card's answer to the nonce does not verify under its certificate");
}

static kh_err fake_post(void *ctx, const char *url, json_t *body, const char *key, int *status, json_t **resp)
{
	struct fake *f = ctx;
	struct call *c;
	char *text = json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER);

	assert_non_null(text);
	assert_true(f->ncalls < MAX_CALLS);
	c = &f->calls[f->ncalls++];
	snprintf(c->url, sizeof c->url, "%s", url);
	snprintf(c->key, sizeof c->key, "%s", key ? key : "");
	c->body = text;
	*resp = NULL;

	if (strcmp(url, "http://center.test/v1/upload/sessions") == 0) {
		const char *ua = json_string_value(json_object_get(body, "ua"));
		char nonce[64];
		log_ev(f, "post open");
		assert_non_null(ua);
		assert_int_equal(strlen(ua), 8);
		f->session_ua = (uint32_t)strtoul(ua, NULL, 16);
		assert_int_equal(kh_random(f->nonce, sizeof f->nonce), KH_OK);
		assert_int_equal(kh_b64url_encode(f->nonce, f->short_nonce ? 8 : sizeof f->nonce, nonce, sizeof nonce),
				 KH_OK);
		*status = 201;
		*resp = json_pack("{s:s,s:s}", "session", "s-1", "nonce", nonce);
		return KH_OK;
	}
	assert_string_equal(url, "http://center.test/v1/upload/sessions/s-1");
	log_ev(f, "post upload");
	if (f->fail_5xx > 0) {
		f->fail_5xx--;
		*status = 500;
		*resp = error_body("database_busy", "try again");
		return KH_OK;
	}
	if (f->fail_429 > 0) {
		f->fail_429--;
		*status = 429;
		*resp = error_body("rate_limited", "too many requests from this address");
		return KH_OK;
	}
	if (f->drop > 0) {
		/* the center processed it, but the answer was lost on the way back */
		f->drop--;
		json_t *a = process_upload(f, body, status);
		if (*status == 200) {
			snprintf(f->idem_key, sizeof f->idem_key, "%s", key);
			f->idem_answer = a;
		} else {
			json_decref(a);
		}
		return KH_ERR_TRANSPORT;
	}
	if (f->idem_answer && strcmp(f->idem_key, key) == 0) {
		*status = 200;
		*resp = json_incref(f->idem_answer);
		return KH_OK;
	}
	*resp = process_upload(f, body, status);
	return KH_OK;
}

/* ---- the world of a test ---- */

struct t {
	struct fake f;
	struct world *w;
	struct kh_host_cas cas1;
	char *dir, *file;
	uint8_t key[KH_M1_KEY_LEN];
	struct rec rec;
	struct kh_transport card2;
	struct kh_upload_http http;
	struct kh_upload_config cfg;
	struct kh_upload_result res;
};

static int setup(void **state)
{
	struct t *t = calloc(1, sizeof *t);

	assert_non_null(t);
	assert_int_equal(world_setup((void **)&t->w), 0);
	t->f.w = t->w;
	t->f.t0 = (uint64_t)time(NULL);
	t->dir = path_in(t->w->dir, "m1dir");
	t->file = path_in(t->dir, KH_M1_FILE);
	assert_int_equal(kh_m1_key(t->dir, 1, t->key), KH_OK);
	t->f.m1_dir = t->dir;
	t->f.m1_key = t->key;
	g = &t->f;
	kh_host_cas_init(&t->cas1, &t->w->dec.t, &t->w->cam.t, &t->w->c1.t, 0);
	rec_wrap(&t->rec, &t->w->c2.t, &t->card2);
	t->http.post_json = fake_post;
	t->http.ctx = &t->f;
	t->cfg.center = "http://center.test/";
	t->cfg.card = &t->card2;
	t->cfg.m1_dir = t->dir;
	t->cfg.m1_key = t->key;
	t->cfg.http = &t->http;
	t->cfg.backoff_ms = 1;
	*state = t;
	return 0;
}

static int teardown(void **state)
{
	struct t *t = *state;
	for (int i = 0; i < t->f.ncalls; i++)
		free(t->f.calls[i].body);
	json_decref(t->f.idem_answer);
	kh_host_cas_wipe(&t->cas1);
	free(t->dir);
	free(t->file);
	world_teardown((void **)&t->w);
	g = NULL;
	kh_wipe(t, sizeof *t);
	free(t);
	return 0;
}

/*
 * Seed 001 before the connection: card 1, authorised to export, gets a service key and 100
 * credits, buys two events offline, and M1 takes its block; then card 1 is replaced by card 2.
 */
static void card1_buys_offline(struct t *t)
{
	uint8_t cmds[128], ecm[KH_ECM_MAX], skey[32], sec[KH_EMM_MAX];
	struct kh_wr w;
	struct kh_ecm e;
	struct kh_ppv_offer o;
	struct kh_m1_info mi;
	size_t n;

	assert_int_equal(kh_random(skey, sizeof skey), KH_OK);
	kh_wr_init(&w, cmds, sizeof cmds);
	assert_int_equal(kh_emm_put_set_key(&w, 1, 1, skey), KH_OK);
	assert_int_equal(kh_emm_put_add_credit(&w, 100, 1), KH_OK);
	assert_int_equal(kh_emm_put_auth_export(&w, 1), KH_OK);
	n = world_emm(t->w->auth, t->w->c1.ua, ++t->f.emm_seq[0], cmds, w.len, sec, sizeof sec);
	assert_int_equal(kh_host_cas_emm(&t->cas1, sec, n), KH_OK);
	assert_int_equal(kh_host_cas_connect(&t->cas1), KH_OK);
	for (uint32_t ev = 55; ev < 57; ev++) {
		memset(&e, 0, sizeof e);
		e.h.table_id = KH_ECM_TID_EVEN;
		e.h.key_id = 1;
		e.h.key_version = 1;
		e.alg = KH_SCR_CSA2;
		e.cw_len = 8;
		e.access = KH_ECM_EVENT;
		e.event = ev;
		e.price = 30;
		e.time = t->f.t0;
		assert_int_equal(kh_ecm_seal(skey, world_ecm_signer(t->w->auth), &e, ecm, sizeof ecm, &n), KH_OK);
		assert_int_equal(kh_host_cas_purchase(&t->cas1, ecm, n, &o), KH_OK);
	}
	assert_int_equal(kh_m1_export(&t->w->c1.t, t->dir, t->key, t->w->c1.ua, &mi), KH_OK);
	assert_int_equal(mi.ua, t->w->c1.ua);
	kh_wipe(skey, sizeof skey);
}

static uint8_t *file_bytes(struct t *t, size_t *n)
{
	uint8_t *d = NULL;
	assert_int_equal(kh_file_read(t->file, 1 << 16, &d, n), KH_OK);
	return d;
}

static void assert_file_is(struct t *t, const uint8_t *want, size_t wn)
{
	size_t n;
	uint8_t *d = file_bytes(t, &n);
	assert_int_equal(n, wn);
	assert_memory_equal(d, want, n);
	kh_file_free(d, n);
}

static void status_of(struct mod *m, struct kh_cas_status *st)
{
	struct kh_host_cas cas;
	kh_host_cas_init(&cas, NULL, NULL, &m->t, 0);
	assert_int_equal(kh_host_cas_status(&cas, st), KH_OK);
}

/* The events, in order: open, the fresh export bound to the nonce (no HELLO), upload, the EMMs,
 * and only then export for M1. */
static void assert_order(struct t *t, int nemm)
{
	struct fake *f = &t->f;
	int i = ev_index(f, "post open", 0);
	assert_true(i >= 0);
	assert_int_equal(ev_index(f, "apdu 52 00", 0), -1);
	assert_true((i = ev_index(f, "apdu 50 00", i)) >= 0);
	assert_true((i = ev_index(f, "post upload", i)) >= 0);
	for (int k = 0; k < nemm; k++)
		assert_true((i = ev_index(f, "apdu 44 00", i + 1)) >= 0);
	int x = ev_index(f, "apdu 50 01", 0);
	assert_true(x > i);
	assert_int_equal(ev_index(f, "apdu 50 01", x + 1), -1);
}

/* The seed's scenario: card 2 replaces card 1 before the decoder ever connected. */
static void test_seed_replacement(void **state)
{
	struct t *t = *state;
	struct kh_cas_status st;
	struct kh_m1_info mi;
	const uint32_t u1 = t->w->c1.ua, u2 = t->w->c2.ua;

	card1_buys_offline(t);
	status_of(&t->w->c2, &st);
	assert_int_equal(st.export_ok, 0); /* the new card is not authorised */

	assert_int_equal(kh_upload_run(&t->cfg, &t->res), KH_OK);

	/* the center got card 2's fresh block AND card 1's block from M1, in one session */
	assert_int_equal(t->f.nopened, 2);
	assert_int_equal(t->f.opened[0].h.ua, u2);
	assert_int_equal(t->f.opened[0].export_ok, 0);
	assert_int_equal(t->f.opened[1].h.ua, u1);
	assert_int_equal(t->f.opened[1].npurchases, 2);
	assert_int_equal(t->f.opened[1].purchases[0].event, 55);
	assert_int_equal(t->f.opened[1].purchases[1].event, 56);
	assert_int_equal(t->f.opened[1].credit, 40);
	/* when it answered, card 2 was not yet authorised and M1 still held card 1's block */
	assert_int_equal(t->f.export_ok_at_answer, 0);
	assert_int_equal(t->f.m1_ua_at_answer, u1);

	/* what the decoder reports */
	assert_int_equal(t->res.card_ua, u2);
	assert_string_equal(t->res.session, "s-1");
	assert_int_equal(t->res.m1_load, KH_OK);
	assert_int_equal(t->res.m1_ua, u1);
	assert_int_equal(t->res.m1_sent, 1);
	assert_int_equal(t->res.attempts, 1);
	assert_int_equal(t->res.nverdicts, 2);
	assert_int_equal(t->res.verdicts[0].ua, u2);
	assert_string_equal(t->res.verdicts[0].verdict, "ok");
	assert_int_equal(t->res.verdicts[1].ua, u1);
	assert_int_equal(t->res.verdicts[1].block_seq, t->res.m1_seq);
	assert_string_equal(t->res.verdicts[1].verdict, "recovered");
	assert_int_equal(t->res.emms, 2);
	assert_int_equal(t->res.emms_applied, 2);
	assert_int_equal(t->res.emms_refused, 0);
	assert_int_equal(t->res.m1_tried, 1);
	assert_int_equal(t->res.m1_export, KH_OK);
	assert_true(t->res.m1_new_seq > t->res.block_seq);

	/* the card took the EMMs (reload, authorisation) before M1 took its block */
	status_of(&t->w->c2, &st);
	assert_int_equal(st.export_ok, 1);
	assert_int_equal(st.credit, 50);
	assert_int_equal(st.seq[KH_EMM_UNIQUE], 2);
	assert_int_equal(st.last_reload, 7);
	assert_order(t, 2);

	/* and only now does M1 hold card 2's block */
	assert_int_equal(kh_m1_stat(t->dir, t->key, &mi), KH_OK);
	assert_int_equal(mi.ua, u2);
	assert_int_equal(mi.block_seq, t->res.m1_new_seq);

	/* the wire: one open, one upload with a 128-bit key, two blocks, the first bound to the
	 * session's nonce, and no separate hello */
	assert_int_equal(t->f.ncalls, 2);
	assert_int_equal(strlen(t->f.calls[1].key), 32);
	assert_int_not_equal(strcmp(t->f.calls[0].key, t->f.calls[1].key), 0);
	json_t *b = json_loads(t->f.calls[1].body, 0, NULL);
	assert_non_null(b);
	assert_int_equal(json_array_size(json_object_get(b, "blocks")), 2);
	assert_null(json_object_get(b, "hello"));
	assert_int_equal(t->f.got_hello, 0);
	{
		uint8_t blk[KH_USAGE_MAX];
		size_t n = 0;
		struct kh_usage_hdr h;
		json_t *b0 = json_array_get(json_object_get(b, "blocks"), 0);
		assert_int_equal(kh_b64url_decode(json_string_value(b0), json_string_length(b0), blk, sizeof blk, &n), KH_OK);
		assert_int_equal(kh_usage_peek(blk, n, &h), KH_OK);
		assert_int_equal(h.flags, KH_USAGE_F_SESSION);
	}
	json_decref(b);

	/* a second session later: card 2 authorised, M1 holds its block; the center sees it again
	 * (duplicate), nothing is recovered twice, and M1 moves on */
	uint32_t before = t->res.m1_new_seq;
	t->f.ncalls = 0;
	for (int i = 0; i < 2; i++)
		free(t->f.calls[i].body);
	assert_int_equal(kh_upload_run(&t->cfg, &t->res), KH_OK);
	assert_int_equal(t->res.nverdicts, 2);
	assert_string_equal(t->res.verdicts[0].verdict, "ok");
	assert_int_equal(t->res.verdicts[1].ua, u2);
	assert_int_equal(t->res.verdicts[1].block_seq, before);
	assert_string_equal(t->res.verdicts[1].verdict, "ok");
	assert_int_equal(t->res.m1_export, KH_OK);
	assert_int_equal(kh_m1_stat(t->dir, t->key, &mi), KH_OK);
	assert_true(mi.block_seq > before);
}

/* 500, then a lost answer, then success: three POSTs, one Idempotency-Key, one body. */
static void test_retry_same_key(void **state)
{
	struct t *t = *state;
	struct kh_cas_status st;

	card1_buys_offline(t);
	t->f.fail_5xx = 1;
	t->f.drop = 1;
	assert_int_equal(kh_upload_run(&t->cfg, &t->res), KH_OK);
	assert_int_equal(t->res.attempts, 3);
	assert_int_equal(t->f.ncalls, 4);
	for (int i = 2; i < 4; i++) {
		assert_string_equal(t->f.calls[i].url, t->f.calls[1].url);
		assert_string_equal(t->f.calls[i].key, t->f.calls[1].key);
		assert_string_equal(t->f.calls[i].body, t->f.calls[1].body);
	}
	/* the center processed the upload once; the lost answer came back from its idempotency record */
	assert_int_equal(t->f.nuploads_processed, 1);
	assert_int_equal(t->res.emms_applied, 2);
	assert_int_equal(t->res.m1_export, KH_OK);
	status_of(&t->w->c2, &st);
	assert_int_equal(st.credit, 50);
	assert_order(t, 2);

	/* 5xx every time: the session fails after three tries and M1 keeps card 1's block */
	size_t fn;
	uint8_t *f1;
	struct t *u = t;
	for (int i = 0; i < u->f.ncalls; i++)
		free(u->f.calls[i].body);
	u->f.ncalls = 0;
	json_decref(u->f.idem_answer);
	u->f.idem_answer = NULL;
	f1 = file_bytes(t, &fn);
	u->f.fail_5xx = 3;
	assert_int_equal(kh_upload_run(&t->cfg, &t->res), KH_ERR_TRANSPORT);
	assert_int_equal(t->res.http_status, 500);
	assert_int_equal(t->res.attempts, 3);
	assert_int_equal(t->res.m1_tried, 0);
	assert_file_is(t, f1, fn);
	kh_file_free(f1, fn);
}

/*
 * 429 (the budget of the decoder's address spent, say behind a NAT it shares) is retried like a
 * 5xx, with the same key and body, and the session succeeds.
 */
static void test_retry_429(void **state)
{
	struct t *t = *state;

	card1_buys_offline(t);
	t->f.fail_429 = 2;
	assert_int_equal(kh_upload_run(&t->cfg, &t->res), KH_OK);
	assert_int_equal(t->res.attempts, 3);
	assert_int_equal(t->f.nuploads_processed, 1);
	for (int i = 2; i < 4; i++) {
		assert_string_equal(t->f.calls[i].key, t->f.calls[1].key);
		assert_string_equal(t->f.calls[i].body, t->f.calls[1].body);
	}
	assert_int_equal(t->res.m1_export, KH_OK);
}

/* The center refuses the hello: an error, no EMM, no export for M1, M1 byte for byte as it was. */
static void test_hello_refused(void **state)
{
	struct t *t = *state;
	struct kh_cas_status st;
	uint8_t *f1;
	size_t fn;

	card1_buys_offline(t);
	f1 = file_bytes(t, &fn);
	t->f.refuse_hello = 1;
	assert_int_equal(kh_upload_run(&t->cfg, &t->res), KH_ERR_AUTH);
	assert_int_equal(t->res.http_status, 403);
	assert_non_null(strstr(t->res.center_msg, "HTTP 403 auth"));
	assert_int_equal(t->res.attempts, 1);
	assert_int_equal(t->res.m1_tried, 0);
	assert_int_equal(t->f.nopened, 0);
	assert_int_equal(ev_index(&t->f, "apdu 44 00", 0), -1);
	assert_int_equal(ev_index(&t->f, "apdu 50 01", 0), -1);
	assert_file_is(t, f1, fn);
	status_of(&t->w->c2, &st);
	assert_int_equal(st.export_ok, 0);

	/* an answer that is not the protocol's (a nonce too short) ends the session the same way */
	t->f.refuse_hello = 0;
	t->f.short_nonce = 1;
	t->f.nev = 0;
	assert_int_equal(kh_upload_run(&t->cfg, &t->res), KH_ERR_FORMAT);
	assert_int_equal(ev_index(&t->f, "apdu 52 00", 0), -1);
	assert_file_is(t, f1, fn);
	kh_file_free(f1, fn);
}

/* M1 changed on disk: the session goes on with the card's block alone; the file is not touched. */
static void test_m1_unreadable(void **state)
{
	struct t *t = *state;
	struct kh_cas_status st;
	uint8_t *f1;
	size_t fn;

	card1_buys_offline(t);
	f1 = file_bytes(t, &fn);
	f1[fn - 20] ^= 0x01; /* in the ciphertext */
	assert_int_equal(kh_file_write_atomic(t->file, f1, fn, 0600), KH_OK);
	assert_int_equal(kh_upload_run(&t->cfg, &t->res), KH_OK);
	assert_int_equal(t->res.m1_load, KH_ERR_AUTH);
	assert_int_equal(t->res.m1_sent, 0);
	assert_int_equal(t->f.nopened, 1);
	assert_int_equal(t->f.opened[0].h.ua, t->w->c2.ua);
	assert_int_equal(t->res.nverdicts, 1);
	/* the card still took the EMMs, but nothing was exported toward the unreadable M1 */
	assert_int_equal(t->res.emms_applied, 2);
	assert_int_equal(t->res.m1_tried, 0);
	assert_int_equal(ev_index(&t->f, "apdu 50 01", 0), -1);
	status_of(&t->w->c2, &st);
	assert_int_equal(st.export_ok, 1);
	assert_file_is(t, f1, fn);
	kh_file_free(f1, fn);
}

/* An empty M1 (a decoder's first card): one block goes up, and M1 takes the card's block. */
static void test_m1_empty(void **state)
{
	struct t *t = *state;
	struct kh_m1_info mi;

	assert_int_equal(kh_upload_run(&t->cfg, &t->res), KH_OK);
	assert_int_equal(t->res.m1_load, KH_ERR_NOTFOUND);
	assert_int_equal(t->res.nverdicts, 1);
	assert_int_equal(t->res.m1_export, KH_OK);
	assert_int_equal(kh_m1_stat(t->dir, t->key, &mi), KH_OK);
	assert_int_equal(mi.ua, t->w->c2.ua);
}

/* The center withholds AUTHORISE EXPORT (no EMMs): M1 keeps card 1's block and says why. */
static kh_err no_emm_post(void *ctx, const char *url, json_t *body, const char *key, int *status, json_t **resp)
{
	kh_err r = fake_post(ctx, url, body, key, status, resp);
	if (r == KH_OK && *status == 200)
		assert_int_equal(json_object_set_new(*resp, "emms", json_array()), 0);
	return r;
}

static void test_not_authorised(void **state)
{
	struct t *t = *state;
	struct kh_m1_info mi;
	uint8_t *f1;
	size_t fn;

	card1_buys_offline(t);
	f1 = file_bytes(t, &fn);
	t->http.post_json = no_emm_post;
	assert_int_equal(kh_upload_run(&t->cfg, &t->res), KH_OK);
	assert_int_equal(t->res.emms, 0);
	assert_int_equal(t->res.m1_tried, 1);
	assert_int_equal(t->res.m1_export, KH_ERR_EXPORT_DENIED);
	assert_int_equal(kh_m1_stat(t->dir, t->key, &mi), KH_OK);
	assert_int_equal(mi.ua, t->w->c1.ua);
	assert_file_is(t, f1, fn);
	kh_file_free(f1, fn);
}

static void test_url_check(void **state)
{
	(void)state;
	assert_int_equal(kh_upload_url_check("https://sms.example", 0), KH_OK);
	assert_int_equal(kh_upload_url_check("HTTPS://sms.example:8443/base/", 0), KH_OK);
	assert_int_equal(kh_upload_url_check("http://127.0.0.1:8080", 0), KH_OK);
	assert_int_equal(kh_upload_url_check("http://localhost", 0), KH_OK);
	assert_int_equal(kh_upload_url_check("http://[::1]:80", 0), KH_OK);
	assert_int_equal(kh_upload_url_check("http://sms.example", 0), KH_ERR_INVAL);
	assert_int_equal(kh_upload_url_check("http://localhost.evil.example", 0), KH_ERR_INVAL);
	assert_int_equal(kh_upload_url_check("http://127.0.0.1.evil.example", 0), KH_ERR_INVAL);
	assert_int_equal(kh_upload_url_check("http://sms.example", 1), KH_OK);
	assert_int_equal(kh_upload_url_check("ftp://sms.example", 1), KH_ERR_INVAL);
	assert_int_equal(kh_upload_url_check("https://user:pw@sms.example", 0), KH_ERR_INVAL);
	assert_int_equal(kh_upload_url_check("https://sms.example/?x=1", 0), KH_ERR_INVAL);
	assert_int_equal(kh_upload_url_check("https://", 0), KH_ERR_INVAL);
	assert_int_equal(kh_upload_url_check("https://:443", 0), KH_ERR_INVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_seed_replacement, setup, teardown),
		cmocka_unit_test_setup_teardown(test_retry_same_key, setup, teardown),
		cmocka_unit_test_setup_teardown(test_retry_429, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hello_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_m1_unreadable, setup, teardown),
		cmocka_unit_test_setup_teardown(test_m1_empty, setup, teardown),
		cmocka_unit_test_setup_teardown(test_not_authorised, setup, teardown),
		cmocka_unit_test(test_url_check),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
