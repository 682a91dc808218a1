/*
 * Attacks on the decoder's proof and on the key ladder (decoder module -> CAM -> card): a host
 * program with no decoder certificate, modules of the wrong role or operator, hand-made decoder
 * proofs, and a host that tries to read, alter, move or replay what the key ladder carries. Each
 * attack is refused with its own status word and changes nothing: the card's public CAS status
 * is compared before and after, and every byte the host saw is searched for the control words.
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
#include "keyhole/authority.h"
#include "keyhole/cas.h"
#include "keyhole/crypto.h"
#include "keyhole/host.h"
#include "keyhole/pair.h"
#include "keyhole/scramble.h"
#include "keyhole/softmodule.h"
#include "testutil.h"
#include "world.h"

#define PRODUCT 7
#define EVENT 55
#define NPKT 25 /* two DESCRAMBLE commands */
#define PKT KH_SCR_PACKET_LEN

struct lw {
	struct world *w;
	uint8_t skey[32];
	uint64_t t0;
};

/* ---- a transport that keeps every byte the host sends and receives ---- */

struct rec {
	struct kh_transport *inner;
	uint8_t *buf;
	size_t len, cap;
	unsigned n_pair_open;
};

static void rec_add(struct rec *r, const uint8_t *p, size_t n)
{
	if (r->len + n > r->cap) {
		r->cap = (r->len + n) * 2;
		r->buf = realloc(r->buf, r->cap);
		assert_non_null(r->buf);
	}
	memcpy(r->buf + r->len, p, n);
	r->len += n;
}

static kh_err rec_xfer(void *ctx, const uint8_t *cmd, size_t len, uint8_t *resp, size_t cap, size_t *rlen)
{
	struct rec *r = ctx;
	kh_err e = kh_transport_xfer(r->inner, cmd, len, resp, cap, rlen);

	if (len >= 2 && cmd[1] == KH_INS_PAIR_OPEN)
		r->n_pair_open++;
	rec_add(r, cmd, len);
	if (e == KH_OK)
		rec_add(r, resp, *rlen);
	return e;
}

static void rec_init(struct rec *r, struct kh_transport *inner, struct kh_transport *out)
{
	memset(r, 0, sizeof *r);
	r->inner = inner;
	out->xfer = rec_xfer;
	out->close = NULL;
	out->ctx = r;
}

static int has_bytes(const uint8_t *hay, size_t n, const uint8_t *needle, size_t k)
{
	for (size_t i = 0; i + k <= n; i++)
		if (memcmp(hay + i, needle, k) == 0)
			return 1;
	return 0;
}

/* ---- the world: one card with a service key, a right to PRODUCT and 100 credits ---- */

static struct kh_cas_status status_of(struct kh_transport *card)
{
	struct kh_host_cas c;
	struct kh_cas_status st;
	kh_host_cas_init(&c, NULL, NULL, card, 0);
	assert_int_equal(kh_host_cas_status(&c, &st), KH_OK);
	return st;
}

static void assert_card_same(struct kh_cas_status a, struct kh_cas_status b)
{
	assert_int_equal(a.credit, b.credit);
	assert_int_equal(a.last_reload, b.last_reload);
	assert_int_equal(a.npurchases, b.npurchases);
	assert_int_equal(a.nrights, b.nrights);
	assert_int_equal(a.n_ecm, b.n_ecm);
	assert_int_equal(a.n_cw, b.n_cw);
	assert_int_equal(a.n_refused, b.n_refused);
	assert_memory_equal(a.seq, b.seq, sizeof a.seq);
}

static int setup(void **state)
{
	struct lw *lw = calloc(1, sizeof *lw);
	uint8_t cmds[256], emm[KH_EMM_MAX];
	struct kh_host_cas c;
	struct kh_wr w;
	size_t n;

	assert_non_null(lw);
	assert_int_equal(world_setup((void **)&lw->w), 0);
	assert_int_equal(kh_random(lw->skey, sizeof lw->skey), KH_OK);
	lw->t0 = (uint64_t)time(NULL);
	kh_wr_init(&w, cmds, sizeof cmds);
	assert_int_equal(kh_emm_put_set_key(&w, 1, 1, lw->skey), KH_OK);
	assert_int_equal(kh_emm_put_entitle(&w, PRODUCT, lw->t0 - 100, lw->t0 + 100), KH_OK);
	assert_int_equal(kh_emm_put_add_credit(&w, 100, 1), KH_OK);
	n = world_emm(lw->w->auth, lw->w->c1.ua, 1, cmds, w.len, emm, sizeof emm);
	kh_host_cas_init(&c, NULL, NULL, &lw->w->c1.t, 0);
	assert_int_equal(kh_host_cas_emm(&c, emm, n), KH_OK);
	assert_int_equal(status_of(&lw->w->c1.t).credit, 100);
	*state = lw;
	return 0;
}

static int teardown(void **state)
{
	struct lw *lw = *state;
	world_teardown((void **)&lw->w);
	kh_wipe(lw, sizeof *lw);
	free(lw);
	return 0;
}

/* An ECM for alg with fresh random CWs (into even / odd), cp 4: PRODUCT, or EVENT at price. */
static size_t make_ecm(struct lw *lw, uint8_t alg, uint32_t price, uint8_t even[KH_CAS_CW_MAX],
		       uint8_t odd[KH_CAS_CW_MAX], uint8_t out[KH_ECM_MAX])
{
	struct kh_ecm e;
	size_t len;

	memset(&e, 0, sizeof e);
	e.h.table_id = KH_ECM_TID_EVEN;
	e.h.key_id = 1;
	e.h.key_version = 1;
	e.h.cp = 4;
	e.alg = alg;
	e.cw_len = (uint8_t)kh_scr_keylen((enum kh_scr_alg)alg);
	assert_int_equal(kh_random(e.cw_even, e.cw_len), KH_OK);
	assert_int_equal(kh_random(e.cw_odd, e.cw_len), KH_OK);
	memcpy(even, e.cw_even, e.cw_len);
	memcpy(odd, e.cw_odd, e.cw_len);
	e.access = price ? KH_ECM_EVENT : KH_ECM_PRODUCT;
	e.product = price ? 0 : PRODUCT;
	e.event = price ? EVENT : 0;
	e.price = price;
	e.time = lw->t0;
	assert_int_equal(kh_ecm_seal(lw->skey, world_ecm_signer(lw->w->auth), &e, out, KH_ECM_MAX, &len), KH_OK);
	kh_wipe(&e, sizeof e);
	return len;
}

/* ---- TS packets ---- */

/* n clear packets with payload on PID 0x100 (every third with an adaptation field). */
static void make_pkts(uint8_t *p, size_t n)
{
	assert_int_equal(kh_random(p, n * PKT), KH_OK);
	for (size_t i = 0; i < n; i++) {
		uint8_t *q = p + i * PKT;
		q[0] = 0x47;
		q[1] = 0x01;
		q[2] = 0x00;
		q[3] = (uint8_t)((i % 3 == 2 ? 0x30 : 0x10) | (i & 15));
		if (i % 3 == 2) {
			q[4] = 7;
			q[5] = 0x00;
			memset(q + 6, 0xFF, 6);
		}
	}
}

/* Scramble clear into scr: even packets with the even key, odd ones with the odd key. */
static void scramble(uint8_t alg, const uint8_t *even, const uint8_t *odd, const uint8_t *clear, uint8_t *scr,
		     size_t n)
{
	struct kh_scr *s;
	size_t kl = kh_scr_keylen((enum kh_scr_alg)alg);

	assert_int_equal(kh_scr_new((enum kh_scr_alg)alg, 0, &s), KH_OK);
	assert_int_equal(kh_scr_set_key(s, KH_SCR_EVEN, even, kl), KH_OK);
	assert_int_equal(kh_scr_set_key(s, KH_SCR_ODD, odd, kl), KH_OK);
	memcpy(scr, clear, n * PKT);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(kh_scr_scramble(s, scr + i * PKT, 1, i % 2 ? KH_SCR_ODD : KH_SCR_EVEN), KH_OK);
	kh_scr_free(s);
	for (size_t i = 0; i < n; i++)
		assert_memory_not_equal(scr + i * PKT + PKT - 48, clear + i * PKT + PKT - 48, 16);
}

/* Packets scrambled with (even, odd) come back from the decoder module clear, bit for bit. */
static void descramble_ok(struct kh_host_cas *c, uint8_t alg, const uint8_t *even, const uint8_t *odd)
{
	uint8_t clear[NPKT * PKT], pk[NPKT * PKT];

	make_pkts(clear, NPKT);
	scramble(alg, even, odd, clear, pk, NPKT);
	assert_int_equal(kh_host_cas_descramble(c, pk, NPKT), KH_OK);
	assert_memory_equal(pk, clear, sizeof clear);
}

static kh_err descramble_one(struct kh_host_cas *c)
{
	uint8_t pk[PKT];
	make_pkts(pk, 1);
	pk[3] |= 0x80; /* "scrambled with the even key" */
	return kh_host_cas_descramble(c, pk, 1);
}

static void assert_no_clear_cw(const struct kh_cw_answer *cw, size_t keylen)
{
	uint8_t zero[KH_CAS_CW_MAX] = {0};
	assert_int_equal(cw->cw_len, 0);
	assert_memory_equal(cw->even, zero, sizeof zero);
	assert_memory_equal(cw->odd, zero, sizeof zero);
	assert_int_equal(cw->sealed_len, KH_NONCE_LEN + 1 + 2 * keylen + KH_TAG_LEN);
}

/* ---- a host that speaks to the CAM itself, in a channel of its own ---- */

static uint16_t sw_of(const uint8_t *r, size_t n)
{
	assert_true(n >= 2);
	return (uint16_t)(r[n - 2] << 8 | r[n - 1]);
}

/* A host program's own channel to the CAM, and everything it opened there. */
struct hch {
	struct kh_link l;
	struct kh_transport *cam, *card;
	struct rec seen;                /* every inner answer the host opened */
	uint8_t out[KH_APDU_MAX_RESP]; /* the last one: data || SW */
	size_t dlen;                    /* its data length */
};

static struct hch *hch_new(struct world *w, struct kh_transport *cam, struct kh_transport *card)
{
	struct hch *h = calloc(1, sizeof *h);
	assert_non_null(h);
	h->cam = cam;
	h->card = card;
	kh_link_init(&h->l, w->root_pk, KH_ROLE_CAM, (const uint8_t *)"host", 4);
	assert_int_equal(kh_host_link_pair(&h->l, cam, (uint64_t)time(NULL)), KH_OK);
	return h;
}

static void hch_free(struct hch *h)
{
	kh_link_wipe(&h->l);
	free(h->seen.buf);
	free(h);
}

/* Run ins at the CAM inside h, carrying to the card what the CAM asks; the CAM's inner SW. */
static uint16_t hch_cmd(struct hch *h, uint8_t ins, const uint8_t *data, size_t len)
{
	uint8_t *cmd = malloc(KH_APDU_MAX_CMD), *cres = malloc(KH_APDU_MAX_RESP);
	uint64_t now = (uint64_t)time(NULL);
	struct kh_wr w;
	size_t n = 0, cn;
	uint16_t sw;

	assert_non_null(cmd);
	assert_non_null(cres);
	kh_wr_init(&w, cmd, KH_APDU_MAX_CMD);
	assert_int_equal(kh_apdu_build(&w, KH_CLA, ins, 0, 0, data, len, 0), KH_OK);
	assert_int_equal(kh_host_link_cmd(&h->l, h->cam, cmd, w.len, now, h->out, sizeof h->out, &n), KH_OK);
	for (int round = 0; (sw = sw_of(h->out, n)) == KH_SW_RELAY; round++) {
		assert_true(round < 8);
		rec_add(&h->seen, h->out, n);
		assert_int_equal(kh_transport_xfer(h->card, h->out, n - 2, cres, KH_APDU_MAX_RESP, &cn), KH_OK);
		kh_wr_init(&w, cmd, KH_APDU_MAX_CMD);
		assert_int_equal(kh_apdu_build(&w, KH_CLA, KH_INS_CARD_RESP, 0, 0, cres, cn, 0), KH_OK);
		assert_int_equal(kh_host_link_cmd(&h->l, h->cam, cmd, w.len, now, h->out, sizeof h->out, &n), KH_OK);
	}
	rec_add(&h->seen, h->out, n);
	h->dlen = n - 2;
	free(cmd);
	free(cres);
	return sw;
}

/* CARD SEND of (ins, data) for the card, inside h. */
static uint16_t hch_card(struct hch *h, uint8_t ins, const uint8_t *data, size_t len)
{
	uint8_t *inner = malloc(KH_APDU_MAX_CMD);
	struct kh_wr w;
	uint16_t sw;

	assert_non_null(inner);
	kh_wr_init(&w, inner, KH_APDU_MAX_CMD);
	assert_int_equal(kh_apdu_build(&w, KH_CLA, ins, 0, 0, data, len, 0), KH_OK);
	sw = hch_cmd(h, KH_INS_CARD_SEND, inner, w.len);
	free(inner);
	return sw;
}

/* CAM AUTH made by hand inside h: {1: cert, 2: sig}; the CAM's SW. */
static uint16_t cam_auth(struct hch *h, const uint8_t *cert, size_t clen, const uint8_t sig[KH_ED25519_SIG_LEN])
{
	uint8_t body[KH_CERT_MAX + 128];
	struct kh_wr b;
	uint16_t sw;

	kh_wr_init(&b, body, sizeof body);
	assert_int_equal(kh_tlv_put(&b, 1, cert, clen), KH_OK);
	assert_int_equal(kh_tlv_put(&b, 2, sig, KH_ED25519_SIG_LEN), KH_OK);
	sw = hch_cmd(h, KH_INS_CAM_AUTH, body, b.len);
	assert_int_equal(h->dlen, 0);
	return sw;
}

/* One plain command to a module; its SW, the answer's data in rbuf (dlen bytes). */
static uint8_t rbuf[KH_APDU_MAX_RESP];
static uint16_t raw(struct kh_transport *t, uint8_t ins, uint8_t p1, const uint8_t *d, size_t n, size_t *dlen)
{
	return send_apdu(t, KH_CLA, ins, p1, 0, d, n, rbuf, sizeof rbuf, dlen);
}

/* A module's signing certificate (GET CERT P1 1). */
static size_t sign_cert_of(struct kh_transport *t, uint8_t der[KH_CERT_MAX])
{
	size_t n = 0;
	assert_int_equal(raw(t, KH_INS_GET_CERT, 1, NULL, 0, &n), KH_SW_OK);
	assert_true(n > 0 && n <= KH_CERT_MAX);
	memcpy(der, rbuf, n);
	return n;
}

/* A certificate of role from authority a for the host's own Ed25519 key pk. */
static size_t host_cert(struct kh_authority *a, enum kh_role role, const uint8_t pk[32], uint32_t *ua,
			uint8_t der[KH_CERT_MAX])
{
	size_t n = 0;
	assert_int_equal(kh_authority_next_ua(a, ua), KH_OK);
	assert_int_equal(kh_authority_issue(a, role, *ua, KH_CERT_KEY_ED25519, pk, "sign", der, KH_CERT_MAX, &n),
			 KH_OK);
	return n;
}

/* A sealed pair the host made itself under key (alg, cp 4, CWs 0x11 / 0x22). */
static void host_sealed(const uint8_t key[32], uint8_t alg, struct kh_cw_answer *out)
{
	struct kh_cw_answer mine = {0};
	uint8_t tlv[128];
	struct kh_wr wr;

	mine.alg = alg;
	mine.cw_len = (uint8_t)kh_scr_keylen((enum kh_scr_alg)alg);
	mine.cp = 4;
	memset(mine.even, 0x11, mine.cw_len);
	memset(mine.odd, 0x22, mine.cw_len);
	kh_wr_init(&wr, tlv, sizeof tlv);
	assert_int_equal(kh_cw_ladder_seal(key, &mine, &wr), KH_OK);
	assert_int_equal(kh_cw_answer_parse(tlv, wr.len, out), KH_OK);
	assert_int_equal(out->cw_len, 0);
}

/* ---- 1. a host program without a decoder certificate ---- */

/*
 * The host pairs with the CAM itself (anyone can: the CAM's pairing key is public) and has the
 * CAM pair with the card inside that channel. The channel works (an ECHO reaches the card), but
 * ECM and PURCHASE are refused at the CAM: no decoder proved itself on it. The card never sees
 * them, and no control word reaches the host.
 */
static void test_host_without_decoder(void **state)
{
	struct lw *lw = *state;
	struct world *w = lw->w;
	uint8_t ecm[KH_ECM_MAX], pecm[KH_ECM_MAX], out[KH_APDU_MAX_RESP], cws[4][KH_CAS_CW_MAX];
	uint8_t msg[8] = "ping-me", echo[16];
	struct kh_transport cam, card;
	struct kh_host_cas dec;
	struct rec rc, rk;
	struct kh_cas_status before = status_of(&w->c1.t);
	struct hch *h;
	size_t n, pn, dlen;

	rec_init(&rc, &w->cam.t, &cam);
	rec_init(&rk, &w->c1.t, &card);
	n = make_ecm(lw, KH_SCR_CISSA, 0, cws[0], cws[1], ecm);
	pn = make_ecm(lw, KH_SCR_CISSA, 30, cws[2], cws[3], pecm);
	h = hch_new(w, &cam, &card);
	/* the CAM pairs with the card inside the host's channel and proves itself to it */
	assert_int_equal(hch_cmd(h, KH_INS_CARD_START, NULL, 0), KH_SW_OK);
	assert_int_equal(h->dlen, 4);
	assert_int_equal(kh_get_be32(h->out), w->c1.ua);
	/* the channel carries commands to the card */
	build_echo(msg, sizeof msg, echo, sizeof echo, &dlen);
	assert_int_equal(hch_cmd(h, KH_INS_CARD_SEND, echo, dlen), KH_SW_OK);
	assert_int_equal(h->dlen, sizeof msg + 2);
	assert_memory_equal(h->out, msg, sizeof msg);
	/* ECM, PURCHASE, and an event ECM sent as an ECM: refused, nothing comes back */
	assert_int_equal(hch_card(h, KH_INS_ECM, ecm, n), kh_err_to_sw(KH_ERR_DECODER_UNPROVEN));
	assert_int_equal(h->dlen, 0);
	assert_int_equal(hch_card(h, KH_INS_PURCHASE, pecm, pn), kh_err_to_sw(KH_ERR_DECODER_UNPROVEN));
	assert_int_equal(h->dlen, 0);
	assert_int_equal(hch_card(h, KH_INS_ECM, pecm, pn), kh_err_to_sw(KH_ERR_DECODER_UNPROVEN));
	/* the CAM still holds the card: the refusal was about the decoder, not the path */
	assert_int_equal(info_of(&w->cam.t).peer_ua, w->c1.ua);
	assert_int_equal(info_of(&w->cam.t).chan_peer_ua, 0);
	assert_card_same(before, status_of(&w->c1.t));

	/*
	 * A genuine decoder proves itself and leaves the CAM paired with the card; the host then
	 * opens a channel of its own (a new PAIR OPEN replaces the decoder's) and asks the CAM's
	 * ready link for an ECM: the proof belonged to the decoder's channel, not to the CAM.
	 */
	kh_host_cas_init(&dec, &w->dec.t, &w->cam.t, &w->c1.t, 0);
	assert_int_equal(kh_host_cas_connect(&dec), KH_OK);
	assert_int_equal(info_of(&w->cam.t).chan_peer_ua, w->dec.ua);
	before = status_of(&w->c1.t);
	assert_int_equal(kh_host_link_pair(&h->l, &cam, lw->t0), KH_OK);
	assert_int_equal(info_of(&w->cam.t).chan_peer_ua, 0);
	assert_int_equal(info_of(&w->cam.t).peer_ua, w->c1.ua);
	assert_int_equal(hch_card(h, KH_INS_ECM, ecm, n), kh_err_to_sw(KH_ERR_DECODER_UNPROVEN));
	assert_int_equal(hch_card(h, KH_INS_PURCHASE, pecm, pn), kh_err_to_sw(KH_ERR_DECODER_UNPROVEN));
	/* ... and outside any channel, as before: in plain */
	{
		uint8_t inner[KH_APDU_MAX_CMD];
		struct kh_wr wr;
		kh_wr_init(&wr, inner, sizeof inner);
		assert_int_equal(kh_apdu_build(&wr, KH_CLA, KH_INS_ECM, 0, 0, ecm, n, 0), KH_OK);
		assert_int_equal(kh_host_card_cmd(&cam, &card, inner, wr.len, out, sizeof out, &dlen), KH_ERR_CW_PLAIN);
	}
	assert_card_same(before, status_of(&w->c1.t));
	/* not one control word in anything the host sent, received or opened */
	for (int i = 0; i < 4; i++) {
		assert_false(has_bytes(rc.buf, rc.len, cws[i], 16));
		assert_false(has_bytes(rk.buf, rk.len, cws[i], 16));
		assert_false(has_bytes(h->seen.buf, h->seen.len, cws[i], 16));
	}
	hch_free(h);
	free(rc.buf);
	free(rk.buf);
}

/* ---- 2. modules and proofs of the wrong role or operator ---- */

static void test_wrong_roles(void **state)
{
	struct lw *lw = *state;
	struct world *w = lw->w;
	struct kh_host_cas c;
	struct mod cam2, fdec;

	/* a CAM in the decoder's place: it pairs toward a card, and a CAM is not one */
	make_mod(w->auth, KH_ROLE_CAM, &cam2);
	kh_host_cas_init(&c, &w->cam.t, &cam2.t, &w->c1.t, 0);
	assert_int_equal(kh_host_cas_connect(&c), KH_ERR_CERT_ROLE);
	assert_false(c.connected);
	assert_int_equal(info_of(&cam2.t).chan_open, 0);
	/* ... nor may it ask for the key ladder */
	kh_host_cas_init(&c, &w->cam.t, &cam2.t, &w->c1.t, KH_HOST_CAS_LADDER);
	assert_int_equal(kh_host_cas_connect(&c), KH_ERR_APDU_P1P2);
	/* a CAM in the decoder's place with the card as its "CAM": the card relays for no one */
	kh_host_cas_init(&c, &w->cam.t, &w->c1.t, &w->c1.t, 0);
	assert_int_equal(kh_host_cas_connect(&c), KH_ERR_APDU_INS);
	assert_false(c.connected);
	kh_softmod_free(cam2.sm);

	/* another operator's decoder: it does not take our CAM, nor would our CAM take it */
	make_mod(w->foreign, KH_ROLE_DECODER, &fdec);
	kh_host_cas_init(&c, &fdec.t, &w->cam.t, &w->c1.t, 0);
	assert_int_equal(kh_host_cas_connect(&c), KH_ERR_CERT);
	assert_false(c.connected);
	assert_int_equal(info_of(&w->cam.t).chan_peer_ua, 0);
	kh_softmod_free(fdec.sm);

	/* the two roles sign different messages over the same binding and UA */
	{
		uint8_t b[32], m1[KH_CAM_AUTH_MSG_LEN], m2[KH_CAM_AUTH_MSG_LEN];
		size_t lab = sizeof KH_CAM_AUTH_LABEL - 1;
		assert_int_equal(kh_random(b, sizeof b), KH_OK);
		assert_int_equal(kh_auth_msg(KH_ROLE_CAM, b, 0x1234, m1), KH_OK);
		assert_int_equal(kh_auth_msg(KH_ROLE_DECODER, b, 0x1234, m2), KH_OK);
		assert_memory_not_equal(m1, m2, lab);
		assert_memory_equal(m1 + lab, m2 + lab, 36);
		assert_memory_equal(m2, KH_DEC_AUTH_LABEL, lab);
		assert_int_equal(kh_auth_msg(KH_ROLE_CARD, b, 0x1234, m1), KH_ERR_INVAL);
	}
}

/*
 * Hand-made CAM AUTH inside a channel the host opened. The host holds Ed25519 keys certified (by
 * the test's authority) as a card, a CAM, another operator's decoder and our decoder: only the
 * last, signing the decoder's message over this channel's binding and this CAM's UA, is believed.
 */
static void test_forged_decoder_proof(void **state)
{
	struct lw *lw = *state;
	struct world *w = lw->w;
	uint8_t sk[32], pk[32], sig[64], msg[KH_CAM_AUTH_MSG_LEN], binding[32];
	uint8_t der[KH_CERT_MAX], ecm[KH_ECM_MAX], ce[16], co[16];
	struct kh_cas_status before = status_of(&w->c1.t);
	struct hch *h = hch_new(w, &w->cam.t, &w->c1.t);
	uint32_t ua, dua;
	size_t dl, n;

	n = make_ecm(lw, KH_SCR_CISSA, 0, ce, co, ecm);
	assert_int_equal(kh_ed25519_keygen(sk, pk), KH_OK);
	assert_int_equal(hch_cmd(h, KH_INS_CARD_START, NULL, 0), KH_SW_OK);
	assert_int_equal(kh_auth_msg(KH_ROLE_DECODER, h->l.ch.binding, w->cam.ua, msg), KH_OK);
	assert_int_equal(kh_ed25519_sign(sk, msg, sizeof msg, sig), KH_OK);

	/* the genuine decoder's certificate, a signature by another key */
	dl = sign_cert_of(&w->dec.t, der);
	assert_int_equal(cam_auth(h, der, dl, sig), kh_err_to_sw(KH_ERR_AUTH));
	/* the CAM's own and the card's certificates, whatever the signature */
	dl = sign_cert_of(&w->cam.t, der);
	assert_int_equal(cam_auth(h, der, dl, sig), kh_err_to_sw(KH_ERR_CERT_ROLE));
	dl = sign_cert_of(&w->c1.t, der);
	assert_int_equal(cam_auth(h, der, dl, sig), kh_err_to_sw(KH_ERR_CERT_ROLE));
	/* certificates of our root for the host's key as card and as CAM, with its valid signature */
	dl = host_cert(w->auth, KH_ROLE_CARD, pk, &ua, der);
	assert_int_equal(cam_auth(h, der, dl, sig), kh_err_to_sw(KH_ERR_CERT_ROLE));
	dl = host_cert(w->auth, KH_ROLE_CAM, pk, &ua, der);
	assert_int_equal(cam_auth(h, der, dl, sig), kh_err_to_sw(KH_ERR_CERT_ROLE));
	/* another operator's decoder certificate */
	dl = host_cert(w->foreign, KH_ROLE_DECODER, pk, &ua, der);
	assert_int_equal(cam_auth(h, der, dl, sig), kh_err_to_sw(KH_ERR_CERT));
	/* our decoder certificate, but the CAM's message signed (a CAM's proof is not a decoder's) */
	dl = host_cert(w->auth, KH_ROLE_DECODER, pk, &dua, der);
	assert_int_equal(kh_auth_msg(KH_ROLE_CAM, h->l.ch.binding, w->cam.ua, msg), KH_OK);
	assert_int_equal(kh_ed25519_sign(sk, msg, sizeof msg, sig), KH_OK);
	assert_int_equal(cam_auth(h, der, dl, sig), kh_err_to_sw(KH_ERR_AUTH));
	/* ... the decoder's message for another CAM */
	assert_int_equal(kh_auth_msg(KH_ROLE_DECODER, h->l.ch.binding, w->cam.ua + 1, msg), KH_OK);
	assert_int_equal(kh_ed25519_sign(sk, msg, sizeof msg, sig), KH_OK);
	assert_int_equal(cam_auth(h, der, dl, sig), kh_err_to_sw(KH_ERR_AUTH));
	/* after every refusal the channel is as unproven as before */
	assert_int_equal(info_of(&w->cam.t).chan_peer_ua, 0);
	assert_int_equal(hch_card(h, KH_INS_ECM, ecm, n), kh_err_to_sw(KH_ERR_DECODER_UNPROVEN));
	assert_card_same(before, status_of(&w->c1.t));

	/* a proof made for the previous channel does not carry over to the next */
	memcpy(binding, h->l.ch.binding, 32);
	assert_int_equal(kh_auth_msg(KH_ROLE_DECODER, binding, w->cam.ua, msg), KH_OK);
	assert_int_equal(kh_ed25519_sign(sk, msg, sizeof msg, sig), KH_OK);
	assert_int_equal(kh_host_link_pair(&h->l, &w->cam.t, lw->t0), KH_OK);
	assert_int_equal(cam_auth(h, der, dl, sig), kh_err_to_sw(KH_ERR_AUTH));
	assert_int_equal(info_of(&w->cam.t).chan_peer_ua, 0);

	/* the control: the right message on this channel is believed, and the ECM then answered
	 * (the proofs above were well made; only what was wrong in each made it fail) */
	assert_int_equal(kh_auth_msg(KH_ROLE_DECODER, h->l.ch.binding, w->cam.ua, msg), KH_OK);
	assert_int_equal(kh_ed25519_sign(sk, msg, sizeof msg, sig), KH_OK);
	assert_int_equal(cam_auth(h, der, dl, sig), KH_SW_OK);
	assert_int_equal(info_of(&w->cam.t).chan_peer_ua, dua);
	/* the CAM's card channel was opened before any decoder proved itself: it ended with the
	 * proof, and one opened now names this decoder to the card */
	assert_int_equal(hch_card(h, KH_INS_ECM, ecm, n), kh_err_to_sw(KH_ERR_NOT_PAIRED));
	assert_int_equal(hch_cmd(h, KH_INS_CARD_START, NULL, 0), KH_SW_OK);
	assert_int_equal(hch_card(h, KH_INS_ECM, ecm, n), KH_SW_OK);
	assert_int_equal(sw_of(h->out, h->dlen), KH_SW_OK);
	assert_true(has_bytes(h->out, h->dlen, ce, 16));
	kh_wipe(sk, sizeof sk);
	hch_free(h);
}

/* ---- 3. the key ladder: the host never holds a control word ---- */

static void ladder_alg(struct lw *lw, uint8_t alg)
{
	struct world *w = lw->w;
	size_t kl = kh_scr_keylen((enum kh_scr_alg)alg), n;
	uint8_t ecm[KH_ECM_MAX], even[KH_CAS_CW_MAX], odd[KH_CAS_CW_MAX];
	struct kh_transport t[3];
	struct rec r[3]; /* in front of the decoder module, the CAM and the card */
	struct kh_host_cas c;
	struct kh_cw_answer cw;
	struct kh_ppv_offer o;

	rec_init(&r[0], &w->dec.t, &t[0]);
	rec_init(&r[1], &w->cam.t, &t[1]);
	rec_init(&r[2], &w->c1.t, &t[2]);
	n = make_ecm(lw, alg, 0, even, odd, ecm);
	kh_host_cas_init(&c, &t[0], &t[1], &t[2], KH_HOST_CAS_LADDER);
	assert_int_equal(kh_host_cas_connect(&c), KH_OK);
	memset(&cw, 0, sizeof cw);
	assert_int_equal(kh_host_cas_ecm(&c, ecm, n, &cw, &o), KH_OK);
	assert_int_equal(cw.alg, alg);
	assert_int_equal(cw.cp, 4);
	assert_no_clear_cw(&cw, kl);
	assert_int_equal(kh_host_cas_load(&c, &cw), KH_OK);
	descramble_ok(&c, alg, even, odd);
	/* neither control word anywhere in what went to or came from any of the three modules */
	for (int i = 0; i < 3; i++) {
		assert_true(r[i].len > 0);
		assert_false(has_bytes(r[i].buf, r[i].len, even, kl));
		assert_false(has_bytes(r[i].buf, r[i].len, odd, kl));
		r[i].len = 0;
	}
	assert_false(has_bytes((const uint8_t *)&cw, sizeof cw, even, kl));

	/* the contrast: open mode hands the host the CWs, and the same search finds them */
	kh_host_cas_init(&c, &t[0], &t[1], &t[2], 0);
	assert_int_equal(kh_host_cas_connect(&c), KH_OK);
	assert_int_equal(kh_host_cas_ecm(&c, ecm, n, &cw, &o), KH_OK);
	assert_int_equal(cw.cw_len, kl);
	assert_int_equal(cw.sealed_len, 0);
	assert_memory_equal(cw.even, even, kl);
	assert_memory_equal(cw.odd, odd, kl);
	assert_true(has_bytes(r[0].buf, r[0].len, even, kl));
	assert_true(has_bytes(r[0].buf, r[0].len, odd, kl));
	/* ... and a decoder in open mode has nothing to descramble with */
	assert_int_equal(descramble_one(&c), KH_ERR_LADDER);
	kh_wipe(&cw, sizeof cw);
	for (int i = 0; i < 3; i++)
		free(r[i].buf);
}

static void test_ladder_csa2(void **state)
{
	ladder_alg(*state, KH_SCR_CSA2);
}

static void test_ladder_aes(void **state)
{
	ladder_alg(*state, KH_SCR_CISSA);
	ladder_alg(*state, KH_SCR_IDSA);
}

/* ---- 4. sealed pairs altered, moved, or from another channel ---- */

static void test_ladder_tamper(void **state)
{
	struct lw *lw = *state;
	struct world *w = lw->w;
	uint8_t ecm[KH_ECM_MAX], ea[16], oa[16], eb[16], ob[16];
	struct kh_cw_answer a, b, x, d2cw;
	struct kh_ppv_offer o;
	struct kh_host_cas c, c2;
	struct mod dec2;
	size_t n;

	kh_host_cas_init(&c, &w->dec.t, &w->cam.t, &w->c1.t, KH_HOST_CAS_LADDER);
	assert_int_equal(kh_host_cas_connect(&c), KH_OK);
	n = make_ecm(lw, KH_SCR_CISSA, 0, ea, oa, ecm);
	assert_int_equal(kh_host_cas_ecm(&c, ecm, n, &a, &o), KH_OK);
	assert_int_equal(kh_host_cas_load(&c, &a), KH_OK);
	descramble_ok(&c, KH_SCR_CISSA, ea, oa);

	/* one bit anywhere: nonce, ciphertext, tag */
	for (size_t i = 0; i < a.sealed_len; i += 5) {
		x = a;
		x.sealed[i] ^= (uint8_t)(1u << (i % 8));
		assert_int_equal(kh_host_cas_load(&c, &x), KH_ERR_LADDER);
	}
	x = a;
	x.sealed[a.sealed_len - 1] ^= 0x80;
	assert_int_equal(kh_host_cas_load(&c, &x), KH_ERR_LADDER);
	/* the same sealed pair under another cp or another algorithm, or cut short by a byte */
	for (int i = 0; i < 4; i++) {
		x = a;
		if (i == 0)
			x.cp ^= 1;
		else if (i == 3)
			x.sealed_len--;
		else
			x.alg = i == 1 ? KH_SCR_IDSA : KH_SCR_CSA2;
		assert_int_equal(kh_host_cas_load(&c, &x), KH_ERR_LADDER);
	}
	/* a pair the host sealed itself, under a key of its choosing */
	{
		uint8_t k[32];
		assert_int_equal(kh_random(k, sizeof k), KH_OK);
		host_sealed(k, KH_SCR_CISSA, &x);
		assert_int_equal(kh_host_cas_load(&c, &x), KH_ERR_LADDER);
	}
	/* every refusal left the keys loaded before in place */
	descramble_ok(&c, KH_SCR_CISSA, ea, oa);

	/* a second decoder takes the CAM over: its pair does not open in the first decoder, nor the
	 * first's in it */
	make_mod(w->auth, KH_ROLE_DECODER, &dec2);
	kh_host_cas_init(&c2, &dec2.t, &w->cam.t, &w->c1.t, KH_HOST_CAS_LADDER);
	assert_int_equal(kh_host_cas_connect(&c2), KH_OK);
	n = make_ecm(lw, KH_SCR_CISSA, 0, eb, ob, ecm);
	assert_int_equal(kh_host_cas_ecm(&c2, ecm, n, &d2cw, &o), KH_OK);
	assert_int_equal(kh_host_cas_load(&c, &d2cw), KH_ERR_LADDER);
	assert_int_equal(kh_host_cas_load(&c2, &a), KH_ERR_LADDER);
	assert_int_equal(kh_host_cas_load(&c2, &d2cw), KH_OK);
	descramble_ok(&c2, KH_SCR_CISSA, eb, ob);
	descramble_ok(&c, KH_SCR_CISSA, ea, oa);
	kh_softmod_free(dec2.sm);

	/* a new channel (a new K_S): the pair sealed for the last one no longer opens, and what
	 * was loaded under it is gone */
	assert_int_equal(kh_host_cas_connect(&c), KH_OK);
	assert_int_equal(descramble_one(&c), KH_ERR_LADDER);
	assert_int_equal(kh_host_cas_load(&c, &a), KH_ERR_LADDER);
	assert_int_equal(descramble_one(&c), KH_ERR_LADDER);
	n = make_ecm(lw, KH_SCR_CISSA, 0, eb, ob, ecm);
	assert_int_equal(kh_host_cas_ecm(&c, ecm, n, &b, &o), KH_OK);
	assert_int_equal(kh_host_cas_load(&c, &b), KH_OK);
	descramble_ok(&c, KH_SCR_CISSA, eb, ob);
	kh_wipe(&a, sizeof a);
	kh_wipe(&b, sizeof b);
}

/* ---- 5. descrambler refusals ---- */

static void test_descramble_refusals(void **state)
{
	struct lw *lw = *state;
	struct world *w = lw->w;
	uint8_t ecm[KH_ECM_MAX], pk[3 * PKT], e[16], od[16];
	struct kh_cw_answer a, cw;
	struct kh_ppv_offer o;
	struct kh_host_cas c;
	size_t n, dl;
	struct mod *others[] = {&w->cam, &w->c1};

	/* a decoder that never loaded anything */
	kh_host_cas_init(&c, &w->dec.t, &w->cam.t, &w->c1.t, KH_HOST_CAS_LADDER);
	assert_int_equal(descramble_one(&c), KH_ERR_LADDER);
	assert_int_equal(kh_host_cas_connect(&c), KH_OK);
	assert_int_equal(descramble_one(&c), KH_ERR_LADDER);
	n = make_ecm(lw, KH_SCR_CSA2, 0, e, od, ecm);
	assert_int_equal(kh_host_cas_ecm(&c, ecm, n, &a, &o), KH_OK);
	assert_int_equal(kh_host_cas_load(&c, &a), KH_OK);
	descramble_ok(&c, KH_SCR_CSA2, e, od);

	/* whole packets only */
	make_pkts(pk, 3);
	assert_int_equal(raw(&w->dec.t, KH_INS_DESCRAMBLE, 0, pk, PKT - 1, &dl), kh_err_to_sw(KH_ERR_APDU_LEN));
	assert_int_equal(raw(&w->dec.t, KH_INS_DESCRAMBLE, 0, pk, PKT + 1, &dl), kh_err_to_sw(KH_ERR_APDU_LEN));
	assert_int_equal(raw(&w->dec.t, KH_INS_DESCRAMBLE, 0, pk, 3 * PKT - 5, &dl), kh_err_to_sw(KH_ERR_APDU_LEN));
	assert_int_equal(raw(&w->dec.t, KH_INS_DESCRAMBLE, 0, NULL, 0, &dl), kh_err_to_sw(KH_ERR_APDU_LEN));
	assert_int_equal(dl, 0);
	assert_int_equal(raw(&w->dec.t, KH_INS_DESCRAMBLE, 1, pk, PKT, &dl), kh_err_to_sw(KH_ERR_APDU_P1P2));
	assert_int_equal(raw(&w->dec.t, KH_INS_DESCRAMBLE, 0, pk, 3 * PKT, &dl), KH_SW_OK);
	assert_int_equal(dl, 3 * PKT);
	assert_memory_equal(rbuf, pk, 3 * PKT); /* clear packets pass as they are */
	/* a CAM and a card have no descrambler */
	for (size_t i = 0; i < 2; i++) {
		assert_int_equal(raw(&others[i]->t, KH_INS_DESCRAMBLE, 0, pk, PKT, &dl), kh_err_to_sw(KH_ERR_APDU_INS));
		assert_int_equal(dl, 0);
		assert_int_equal(raw(&others[i]->t, KH_INS_LADDER_LOAD, 0, pk, 40, &dl), kh_err_to_sw(KH_ERR_APDU_INS));
	}
	descramble_ok(&c, KH_SCR_CSA2, e, od);

	/* the channel ends (a new CARD START): the keys go with it */
	assert_int_equal(kh_host_cas_connect(&c), KH_OK);
	assert_int_equal(descramble_one(&c), KH_ERR_LADDER);

	/* a decoder in open mode holds no ladder key: no sealed pair loads, the genuine one of a
	 * past channel nor one the host sealed under the all-zero key it may hope is left there */
	kh_host_cas_init(&c, &w->dec.t, &w->cam.t, &w->c1.t, 0);
	assert_int_equal(kh_host_cas_connect(&c), KH_OK);
	assert_int_equal(kh_host_cas_load(&c, &a), KH_ERR_LADDER);
	{
		uint8_t k0[32] = {0};
		host_sealed(k0, KH_SCR_CSA2, &cw);
		assert_int_equal(kh_host_cas_load(&c, &cw), KH_ERR_LADDER);
	}
	assert_int_equal(descramble_one(&c), KH_ERR_LADDER);

	/* a decoder that asked for the ladder but whose pairing is still under way (CARD START
	 * sent, the CAM not yet answered) has drawn no key yet: the zeroes do not load either */
	{
		uint8_t k0[32] = {0}, tlv[96];
		struct kh_wr tw;
		assert_int_equal(raw(&w->dec.t, KH_INS_CARD_START, 1, NULL, 0, &dl), KH_SW_RELAY);
		host_sealed(k0, KH_SCR_CSA2, &cw);
		kh_wr_init(&tw, tlv, sizeof tlv);
		kh_tlv_put_u8(&tw, KH_CW_T_ALG, cw.alg);
		kh_tlv_put_u32(&tw, KH_CW_T_CP, cw.cp);
		assert_int_equal(kh_tlv_put(&tw, KH_CW_T_LADDER, cw.sealed, cw.sealed_len), KH_OK);
		assert_int_equal(raw(&w->dec.t, KH_INS_LADDER_LOAD, 0, tlv, tw.len, &dl), kh_err_to_sw(KH_ERR_LADDER));
	}
	kh_wipe(&a, sizeof a);
}

/* ---- 6. re-keying: a new K_S, old pairs refused, loaded keys kept ---- */

static void test_ladder_rekey(void **state)
{
	struct lw *lw = *state;
	struct world *w = lw->w;
	uint64_t t = lw->t0;
	uint8_t ecm[KH_ECM_MAX], ea[16], oa[16], eb[16], ob[16];
	struct kh_transport dt, ct, kt;
	struct rec rd, rc, rk; /* rd: where clear CWs would show; rc, rk: who re-pairs */
	struct kh_cw_answer a, b;
	struct kh_ppv_offer o;
	struct kh_host_cas c;
	size_t n;

	kh_softmod_set_time(w->dec.sm, t);
	kh_softmod_set_time(w->cam.sm, t);
	kh_softmod_set_time(w->c1.sm, t);
	rec_init(&rd, &w->dec.t, &dt);
	rec_init(&rc, &w->cam.t, &ct);
	rec_init(&rk, &w->c1.t, &kt);
	kh_host_cas_init(&c, &dt, &ct, &kt, KH_HOST_CAS_LADDER);
	assert_int_equal(kh_host_cas_connect(&c), KH_OK);
	assert_int_equal(rc.n_pair_open, 1);
	assert_int_equal(rk.n_pair_open, 1);
	n = make_ecm(lw, KH_SCR_CISSA, 0, ea, oa, ecm);
	assert_int_equal(kh_host_cas_ecm(&c, ecm, n, &a, &o), KH_OK);
	assert_int_equal(kh_host_cas_load(&c, &a), KH_OK);

	/* an hour on, the decoder's next command re-pairs with the CAM and draws a new K_S */
	kh_softmod_set_time(w->dec.sm, t + KH_CHAN_MAX_AGE);
	n = make_ecm(lw, KH_SCR_CISSA, 0, eb, ob, ecm);
	assert_int_equal(kh_host_cas_ecm(&c, ecm, n, &b, &o), KH_OK);
	assert_int_equal(rc.n_pair_open, 2);
	assert_int_equal(rk.n_pair_open, 1);
	assert_int_equal(b.cw_len, 0);
	/* what was loaded before still descrambles; the old channel's pair no longer loads */
	descramble_ok(&c, KH_SCR_CISSA, ea, oa);
	assert_int_equal(kh_host_cas_load(&c, &a), KH_ERR_LADDER);
	assert_int_equal(kh_host_cas_load(&c, &b), KH_OK);
	descramble_ok(&c, KH_SCR_CISSA, eb, ob);

	/* the CAM's own channel to the card comes due as well: it re-pairs with the card under
	 * the decoder's channel, and the answer still comes sealed under the decoder's K_S */
	kh_softmod_set_time(w->cam.sm, t + KH_CHAN_MAX_AGE);
	n = make_ecm(lw, KH_SCR_CISSA, 0, ea, oa, ecm);
	assert_int_equal(kh_host_cas_ecm(&c, ecm, n, &a, &o), KH_OK);
	assert_int_equal(rc.n_pair_open, 2);
	assert_int_equal(rk.n_pair_open, 2);
	assert_int_equal(a.cw_len, 0);
	assert_int_equal(kh_host_cas_load(&c, &a), KH_OK);
	descramble_ok(&c, KH_SCR_CISSA, ea, oa);
	assert_false(has_bytes(rd.buf, rd.len, ea, 16));
	assert_false(has_bytes(rd.buf, rd.len, eb, 16));
	kh_wipe(&a, sizeof a);
	kh_wipe(&b, sizeof b);
	free(rd.buf);
	free(rc.buf);
	free(rk.buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_host_without_decoder, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wrong_roles, setup, teardown),
		cmocka_unit_test_setup_teardown(test_forged_decoder_proof, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ladder_csa2, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ladder_aes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ladder_tamper, setup, teardown),
		cmocka_unit_test_setup_teardown(test_descramble_refusals, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ladder_rekey, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
