/*
 * The module runtime (src/module/) driven only with APDUs, as a reader would: personalisation by
 * a real authority, the dispatch rules, seed 000 between decoder, CAM and cards through the host
 * helpers (src/host/relay.c), an attacker's transport that replays, alters and cuts bytes, the
 * re-key by age, and the sealed state store (softmodule files and the raw kh_module_load API).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "keyhole/apdu.h"
#include "keyhole/authority.h"
#include "keyhole/buf.h"
#include "keyhole/crypto.h"
#include "keyhole/file.h"
#include "keyhole/host.h"
#include "keyhole/module.h"
#include "keyhole/pair.h"
#include "keyhole/softmodule.h"
#include "keyhole/transport.h"
#include "testutil.h"

/* ---- the world: two operators, a CAM, two cards, a foreign card, a blank module ---- */

struct mod {
	struct kh_softmod *sm;
	struct kh_transport t;
	uint32_t ua;
};

struct world {
	char *dir;
	char *auth_dir, *foreign_dir;
	struct kh_authority *auth, *foreign;
	uint8_t root_pk[32];
	struct mod cam, c1, c2, fx, blank;
};

static char *path_in(const char *dir, const char *name)
{
	size_t n = strlen(dir) + strlen(name) + 2;
	char *p = malloc(n);
	assert_non_null(p);
	snprintf(p, n, "%s/%s", dir, name);
	return p;
}

/* A module held in memory, personalised by a (or left blank when a is NULL). */
static void make_mod(struct kh_authority *a, enum kh_role role, struct mod *m)
{
	struct kh_issued *iss = calloc(1, sizeof *iss);
	assert_non_null(iss);
	assert_int_equal(kh_softmod_new_blank(&m->sm), KH_OK);
	kh_transport_inproc(&m->t, kh_softmod_module(m->sm));
	m->ua = 0;
	if (a) {
		assert_int_equal(kh_authority_personalise(a, &m->t, role, 0, iss), KH_OK);
		assert_int_equal(iss->role, role);
		assert_true(iss->ua != 0);
		m->ua = iss->ua;
	}
	free(iss);
}

static int world_setup(void **state)
{
	struct world *w = calloc(1, sizeof *w);
	assert_non_null(w);
	w->dir = kh_test_tmpdir();
	assert_non_null(w->dir);
	w->auth_dir = path_in(w->dir, "authority");
	w->foreign_dir = path_in(w->dir, "foreign");
	assert_int_equal(kh_authority_init(w->auth_dir, "Test operator"), KH_OK);
	assert_int_equal(kh_authority_init(w->foreign_dir, "Other operator"), KH_OK);
	assert_int_equal(kh_authority_open(w->auth_dir, &w->auth), KH_OK);
	assert_int_equal(kh_authority_open(w->foreign_dir, &w->foreign), KH_OK);
	kh_authority_root_pk(w->auth, w->root_pk);
	make_mod(w->auth, KH_ROLE_CAM, &w->cam);
	make_mod(w->auth, KH_ROLE_CARD, &w->c1);
	make_mod(w->auth, KH_ROLE_CARD, &w->c2);
	make_mod(w->foreign, KH_ROLE_CARD, &w->fx);
	make_mod(NULL, KH_ROLE_NONE, &w->blank);
	*state = w;
	return 0;
}

static int world_teardown(void **state)
{
	struct world *w = *state;
	struct mod *all[] = {&w->cam, &w->c1, &w->c2, &w->fx, &w->blank};
	for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
		kh_softmod_free(all[i]->sm);
	kh_authority_free(w->auth);
	kh_authority_free(w->foreign);
	free(w->auth_dir);
	free(w->foreign_dir);
	kh_test_rmdir(w->dir);
	free(w);
	return 0;
}

/* ---- APDU helpers ---- */

/* Send raw command bytes; returns the status word, data length in *dlen. */
static uint16_t xfer_raw(struct kh_transport *t, const uint8_t *cmd, size_t len, uint8_t *resp, size_t cap,
			 size_t *dlen)
{
	size_t rlen = 0;
	assert_int_equal(kh_transport_xfer(t, cmd, len, resp, cap, &rlen), KH_OK);
	assert_true(rlen >= 2);
	if (dlen)
		*dlen = rlen - 2;
	return (uint16_t)(resp[rlen - 2] << 8 | resp[rlen - 1]);
}

/* Build and send CLA ins p1 p2 [data]; returns the status word. */
static uint16_t send_apdu(struct kh_transport *t, uint8_t cla, uint8_t ins, uint8_t p1, uint8_t p2,
			  const uint8_t *data, size_t lc, uint8_t *resp, size_t cap, size_t *dlen)
{
	uint8_t *cmd = malloc(KH_APDU_MAX_CMD);
	struct kh_wr w;
	uint16_t sw;
	assert_non_null(cmd);
	kh_wr_init(&w, cmd, KH_APDU_MAX_CMD);
	assert_int_equal(kh_apdu_build(&w, cla, ins, p1, p2, data, lc, 0), KH_OK);
	sw = xfer_raw(t, cmd, w.len, resp, cap, dlen);
	free(cmd);
	return sw;
}

static struct kh_module_info info_of(struct kh_transport *t)
{
	struct kh_module_info i;
	memset(&i, 0xEE, sizeof i);
	assert_int_equal(kh_host_info(t, &i), KH_OK);
	return i;
}

static void build_echo(const uint8_t *msg, size_t n, uint8_t *inner, size_t cap, size_t *len)
{
	struct kh_wr w;
	kh_wr_init(&w, inner, cap);
	assert_int_equal(kh_apdu_build(&w, KH_CLA, KH_INS_ECHO, 0, 0, msg, n, 0), KH_OK);
	*len = w.len;
}

/* ECHO a fresh random message to the card through the CAM; the answer must be msg || 9000. */
static kh_err card_echo(struct kh_transport *cam, struct kh_transport *card)
{
	uint8_t msg[24], inner[64], out[KH_APDU_MAX_RESP];
	size_t ilen, n = 0;
	kh_err r;
	assert_int_equal(kh_random(msg, sizeof msg), KH_OK);
	build_echo(msg, sizeof msg, inner, sizeof inner, &ilen);
	r = kh_host_card_cmd(cam, card, inner, ilen, out, sizeof out, &n);
	if (r == KH_OK) {
		assert_int_equal(n, sizeof msg + 2);
		assert_memory_equal(out, msg, sizeof msg);
		assert_int_equal(out[n - 2], 0x90);
		assert_int_equal(out[n - 1], 0x00);
	}
	return r;
}

/* The same from the decoder to the CAM over its own link. */
static kh_err link_echo(struct kh_link *l, struct kh_transport *cam, uint64_t now)
{
	uint8_t msg[40], inner[64], out[KH_APDU_MAX_RESP];
	size_t ilen, n = 0;
	kh_err r;
	assert_int_equal(kh_random(msg, sizeof msg), KH_OK);
	build_echo(msg, sizeof msg, inner, sizeof inner, &ilen);
	r = kh_host_link_cmd(l, cam, inner, ilen, now, out, sizeof out, &n);
	if (r == KH_OK) {
		assert_int_equal(n, sizeof msg + 2);
		assert_memory_equal(out, msg, sizeof msg);
		assert_int_equal(out[n - 2], 0x90);
		assert_int_equal(out[n - 1], 0x00);
	}
	return r;
}

static void pair_cam_card(struct world *w, struct mod *card)
{
	uint32_t ua = 0;
	assert_int_equal(kh_host_pair_cam_card(&w->cam.t, &card->t, &ua), KH_OK);
	assert_int_equal(ua, card->ua);
}

/* The CAM has no link to any card. */
static void assert_cam_unpaired(struct world *w)
{
	struct kh_module_info i = info_of(&w->cam.t);
	assert_int_equal(i.link_state, KH_LINK_IDLE);
	assert_int_equal(i.peer_ua, 0);
}

/* ---- a transport an attacker controls, in front of a card ---- */

enum tap_mode {
	TAP_PASS = 0,
	TAP_REPLAY_RESP, /* forward the command, answer with the previous sealed response */
	TAP_FLIP_RESP,   /* forward, flip bit `bit` of byte `pos` of the response data */
	TAP_TRUNC_RESP,  /* forward, keep `pos` bytes of the response (keep_sw: data only, SW kept) */
	TAP_REPLAY_CMD,  /* deliver the first recorded sealed command instead of this one */
};

#define TAP_KEEP 8

struct tap {
	struct kh_transport *card;
	enum tap_mode mode;
	size_t pos;
	int bit;
	int keep_sw;
	unsigned n_get_cert, n_pair_open, n_sealed, n_other;
	uint8_t last_resp[KH_APDU_MAX_RESP];
	size_t last_resp_len;
	uint8_t cmd[TAP_KEEP][KH_APDU_MAX_CMD];
	size_t cmd_len[TAP_KEEP];
	int ncmd;
};

static kh_err tap_xfer(void *ctx, const uint8_t *cmd, size_t len, uint8_t *resp, size_t cap, size_t *rlen)
{
	struct tap *t = ctx;
	int sealed = len >= 2 && cmd[0] == KH_CLA && cmd[1] == KH_INS_SEALED;
	kh_err r;

	if (len >= 2 && cmd[1] == KH_INS_GET_CERT)
		t->n_get_cert++;
	else if (len >= 2 && cmd[1] == KH_INS_PAIR_OPEN)
		t->n_pair_open++;
	else if (sealed)
		t->n_sealed++;
	else
		t->n_other++;
	if (!sealed || t->mode == TAP_PASS) {
		if ((r = kh_transport_xfer(t->card, cmd, len, resp, cap, rlen)) != KH_OK)
			return r;
		if (sealed) {
			if (t->ncmd < TAP_KEEP) {
				memcpy(t->cmd[t->ncmd], cmd, len);
				t->cmd_len[t->ncmd++] = len;
			}
			memcpy(t->last_resp, resp, *rlen);
			t->last_resp_len = *rlen;
		}
		return KH_OK;
	}
	switch (t->mode) {
	case TAP_REPLAY_CMD:
		assert_true(t->ncmd > 0);
		return kh_transport_xfer(t->card, t->cmd[0], t->cmd_len[0], resp, cap, rlen);
	case TAP_REPLAY_RESP:
		assert_true(t->last_resp_len > 0);
		if ((r = kh_transport_xfer(t->card, cmd, len, resp, cap, rlen)) != KH_OK)
			return r;
		memcpy(resp, t->last_resp, t->last_resp_len);
		*rlen = t->last_resp_len;
		return KH_OK;
	case TAP_FLIP_RESP:
		if ((r = kh_transport_xfer(t->card, cmd, len, resp, cap, rlen)) != KH_OK)
			return r;
		assert_true(t->pos + 2 < *rlen);
		resp[t->pos] ^= (uint8_t)(1u << t->bit);
		return KH_OK;
	case TAP_TRUNC_RESP:
		if ((r = kh_transport_xfer(t->card, cmd, len, resp, cap, rlen)) != KH_OK)
			return r;
		if (t->keep_sw) {
			assert_true(t->pos + 2 <= *rlen);
			resp[t->pos] = resp[*rlen - 2];
			resp[t->pos + 1] = resp[*rlen - 1];
			*rlen = t->pos + 2;
		} else {
			assert_true(t->pos <= *rlen);
			*rlen = t->pos;
		}
		return KH_OK;
	case TAP_PASS:
		break;
	}
	return KH_ERR_INTERNAL;
}

static struct tap *tap_new(struct kh_transport *card, struct kh_transport *out)
{
	struct tap *t = calloc(1, sizeof *t);
	assert_non_null(t);
	t->card = card;
	out->xfer = tap_xfer;
	out->close = NULL;
	out->ctx = t;
	return t;
}

/* ---- personalisation ---- */

static void test_perso(void **state)
{
	struct world *w = *state;
	uint8_t resp[KH_APDU_MAX_RESP];
	struct kh_module_info i;
	struct kh_issued *iss = calloc(1, sizeof *iss);
	struct mod m = {0};
	size_t dlen;
	assert_non_null(iss);

	/* blank: lifecycle 0, nothing to show, nothing to pair with */
	i = info_of(&w->blank.t);
	assert_int_equal(i.lifecycle, 0);
	assert_int_equal(i.role, 0);
	assert_int_equal(i.ua, 0);
	assert_int_equal(i.counter, 0);
	assert_int_equal(send_apdu(&w->blank.t, KH_CLA, KH_INS_GET_CERT, 0, 0, NULL, 0, resp, sizeof resp, &dlen),
			 kh_err_to_sw(KH_ERR_NOT_PERSONALISED));
	assert_int_equal(dlen, 0);
	assert_int_equal(
		kh_host_apdu(&w->blank.t, KH_INS_GET_CERT, 0, NULL, 0, resp, sizeof resp, &dlen, &(uint16_t){0}),
		KH_ERR_NOT_PERSONALISED);
	assert_int_equal(send_apdu(&w->blank.t, KH_CLA, KH_INS_PAIR_OPEN, 0, 0, (const uint8_t *)"x", 1, resp,
				   sizeof resp, &dlen),
			 kh_err_to_sw(KH_ERR_NOT_PERSONALISED));
	/* PERSO CERTS before PERSO INIT */
	assert_int_equal(send_apdu(&w->blank.t, KH_CLA, KH_INS_PERSO_CERTS, 0, 0, (const uint8_t *)"\x01\x00\x00", 3,
				   resp, sizeof resp, &dlen),
			 kh_err_to_sw(KH_ERR_NOT_PERSONALISED));
	assert_int_equal(info_of(&w->blank.t).counter, 0);

	/* personalise a fresh one */
	make_mod(NULL, KH_ROLE_NONE, &m);
	assert_int_equal(kh_authority_personalise(w->auth, &m.t, KH_ROLE_CARD, 0, iss), KH_OK);
	i = info_of(&m.t);
	assert_int_equal(i.lifecycle, 2);
	assert_int_equal(i.role, KH_ROLE_CARD);
	assert_int_equal(i.ua, iss->ua);
	assert_int_equal(i.counter, 2); /* stored after PERSO INIT and after PERSO CERTS */
	assert_int_equal(kh_module_counter(kh_softmod_module(m.sm)), 2);
	/* its certificates are the ones issued, and they check against the root */
	assert_int_equal(send_apdu(&m.t, KH_CLA, KH_INS_GET_CERT, 0, 0, NULL, 0, resp, sizeof resp, &dlen), 0x9000);
	assert_int_equal(dlen, iss->pair_len);
	assert_memory_equal(resp, iss->pair_der, dlen);
	{
		struct kh_cert_info ci;
		assert_int_equal(kh_cert_check(resp, dlen, w->root_pk, KH_ROLE_CARD, KH_CERT_KEY_X25519,
					       (uint64_t)time(NULL), &ci),
				 KH_OK);
		assert_int_equal(ci.ua, iss->ua);
	}
	assert_int_equal(send_apdu(&m.t, KH_CLA, KH_INS_GET_CERT, 1, 0, NULL, 0, resp, sizeof resp, &dlen), 0x9000);
	assert_int_equal(dlen, iss->sign_len);
	assert_memory_equal(resp, iss->sign_der, dlen);
	assert_int_equal(send_apdu(&m.t, KH_CLA, KH_INS_GET_CERT, 2, 0, NULL, 0, resp, sizeof resp, &dlen),
			 kh_err_to_sw(KH_ERR_APDU_P1P2));

	/* personalised once only: PERSO INIT and PERSO CERTS again are refused, nothing stored */
	assert_int_equal(kh_authority_personalise(w->auth, &m.t, KH_ROLE_CARD, 0, iss), KH_ERR_PERSONALISED);
	{
		static const uint8_t certs[] = {1, 0, 1, 0x30, 2, 0, 1, 0x30};
		assert_int_equal(send_apdu(&m.t, KH_CLA, KH_INS_PERSO_CERTS, 0, 0, certs, sizeof certs, resp,
					   sizeof resp, &dlen),
				 kh_err_to_sw(KH_ERR_PERSONALISED));
	}
	i = info_of(&m.t);
	assert_int_equal(i.lifecycle, 2);
	assert_int_equal(i.counter, 2);
	kh_softmod_free(m.sm);

	/* an unknown TLV tag in PERSO INIT: refused, the module stays blank and stores nothing */
	make_mod(NULL, KH_ROLE_NONE, &m);
	{
		uint8_t buf[256], root[32], kp[32], ku[32];
		struct kh_wr pw;
		uint32_t ua;
		assert_int_equal(kh_authority_next_ua(w->auth, &ua), KH_OK);
		assert_int_equal(kh_authority_card_keys(w->auth, ua, kp, ku), KH_OK);
		kh_authority_root_pk(w->auth, root);
		for (int variant = 0; variant < 6; variant++) {
			kh_err want = KH_ERR_TLV_TAG;
			kh_wr_init(&pw, buf, sizeof buf);
			kh_tlv_put_u8(&pw, 1, KH_ROLE_CARD);
			kh_tlv_put_u32(&pw, 2, variant == 4 ? 0 : ua);
			kh_tlv_put(&pw, 3, root, 32);
			kh_tlv_put(&pw, 4, kp, 32);
			if (variant != 3)
				kh_tlv_put(&pw, 5, ku, 32);
			switch (variant) {
			case 0: kh_tlv_put_u8(&pw, 6, 0); break;          /* unknown tag after all known ones */
			case 1: kh_tlv_put(&pw, 0x7F, root, 0); break;    /* unknown, empty */
			case 2: kh_tlv_put(&pw, 0, root, 4); break;       /* tag 0 */
			case 3: want = KH_ERR_FORMAT; break;              /* Ku missing */
			case 4: want = KH_ERR_FORMAT; break;              /* UA 0 */
			case 5: kh_tlv_put_u8(&pw, 1, KH_ROLE_CARD); want = KH_ERR_FORMAT; break; /* twice */
			}
			assert_int_equal(pw.err, KH_OK);
			assert_int_equal(
				send_apdu(&m.t, KH_CLA, KH_INS_PERSO_INIT, 0, 0, buf, pw.len, resp, sizeof resp, &dlen),
				kh_err_to_sw(want));
			assert_int_equal(dlen, 0);
			i = info_of(&m.t);
			assert_int_equal(i.lifecycle, 0);
			assert_int_equal(i.role, 0);
			assert_int_equal(i.ua, 0);
			assert_int_equal(i.counter, 0);
		}
		kh_wipe(kp, sizeof kp);
		kh_wipe(ku, sizeof ku);
	}
	/* ...and can still be personalised afterwards */
	assert_int_equal(kh_authority_personalise(w->auth, &m.t, KH_ROLE_CARD, 0, iss), KH_OK);
	assert_int_equal(info_of(&m.t).lifecycle, 2);
	kh_softmod_free(m.sm);
	free(iss);
}

/* Hand-made PERSO INIT: returns the module's two public keys. */
static void perso_init(struct world *w, struct kh_transport *t, enum kh_role role, uint32_t ua, uint8_t sign_pk[32],
		       uint8_t pair_pk[32])
{
	uint8_t buf[256], root[32], kp[32], ku[32], resp[KH_APDU_MAX_RESP];
	struct kh_wr pw;
	struct kh_rd rd;
	struct kh_tlv tv;
	size_t dlen;
	unsigned seen = 0;

	assert_int_equal(kh_authority_card_keys(w->auth, ua, kp, ku), KH_OK);
	kh_authority_root_pk(w->auth, root);
	kh_wr_init(&pw, buf, sizeof buf);
	kh_tlv_put_u8(&pw, 1, (uint8_t)role);
	kh_tlv_put_u32(&pw, 2, ua);
	kh_tlv_put(&pw, 3, root, 32);
	kh_tlv_put(&pw, 4, kp, 32);
	assert_int_equal(kh_tlv_put(&pw, 5, ku, 32), KH_OK);
	assert_int_equal(send_apdu(t, KH_CLA, KH_INS_PERSO_INIT, 0, 0, buf, pw.len, resp, sizeof resp, &dlen), 0x9000);
	kh_rd_init(&rd, resp, dlen);
	while (kh_tlv_next(&rd, &tv) == 1) {
		if (tv.tag == 1 && kh_tlv_fixed(&tv, sign_pk, 32) == KH_OK)
			seen |= 1;
		if (tv.tag == 2 && kh_tlv_fixed(&tv, pair_pk, 32) == KH_OK)
			seen |= 2;
	}
	assert_int_equal(seen, 3);
	kh_wipe(kp, sizeof kp);
	kh_wipe(ku, sizeof ku);
	kh_wipe(buf, sizeof buf);
}

struct certs {
	uint8_t sign[KH_CERT_MAX], pair[KH_CERT_MAX];
	size_t sign_len, pair_len;
};

static void issue_certs(struct kh_authority *a, enum kh_role role, uint32_t ua, const uint8_t sign_pk[32],
			const uint8_t pair_pk[32], struct certs *c)
{
	assert_int_equal(kh_authority_issue(a, role, ua, KH_CERT_KEY_ED25519, sign_pk, "sign", c->sign, sizeof c->sign,
					    &c->sign_len),
			 KH_OK);
	assert_int_equal(kh_authority_issue(a, role, ua, KH_CERT_KEY_X25519, pair_pk, "pair", c->pair, sizeof c->pair,
					    &c->pair_len),
			 KH_OK);
}

/*
 * The authority never overwrites a certificate it issued (issued/<role>-<UA>-<use>.crt); to make
 * a second, deliberately wrong one for the same identity the test removes its own record first.
 */
static void forget_issued(const char *auth_dir, enum kh_role role, uint32_t ua)
{
	char p[4096];
	const char *uses[] = {"sign", "pair"};
	for (int k = 0; k < 2; k++) {
		snprintf(p, sizeof p, "%s/issued/%s-%08X-%s.crt", auth_dir, kh_role_name(role), (unsigned)ua, uses[k]);
		assert_int_equal(unlink(p), 0);
	}
}

static uint16_t perso_certs(struct kh_transport *t, const uint8_t *sign, size_t sign_len, const uint8_t *pair,
			    size_t pair_len)
{
	uint8_t *buf = malloc(KH_APDU_MAX_DATA), *resp = malloc(KH_APDU_MAX_RESP);
	struct kh_wr cw;
	size_t dlen;
	uint16_t sw;
	assert_non_null(buf);
	assert_non_null(resp);
	kh_wr_init(&cw, buf, KH_APDU_MAX_DATA);
	kh_tlv_put(&cw, 1, sign, sign_len);
	assert_int_equal(kh_tlv_put(&cw, 2, pair, pair_len), KH_OK);
	sw = send_apdu(t, KH_CLA, KH_INS_PERSO_CERTS, 0, 0, buf, cw.len, resp, KH_APDU_MAX_RESP, &dlen);
	if (sw != 0x9000)
		assert_int_equal(dlen, 0);
	free(buf);
	free(resp);
	return sw;
}

static void assert_keyed(struct kh_transport *t, uint32_t ua)
{
	struct kh_module_info i = info_of(t);
	assert_int_equal(i.lifecycle, 1);
	assert_int_equal(i.ua, ua);
	assert_int_equal(i.counter, 1);
}

static void test_perso_cert_key(void **state)
{
	struct world *w = *state;
	struct mod x = {0}, y = {0};
	uint8_t xs[32], xp[32], ys[32], yp[32];
	uint32_t uax, uay;
	struct certs *cx = calloc(1, sizeof *cx), *cy = calloc(1, sizeof *cy), *bad = calloc(1, sizeof *bad);
	assert_non_null(cx);
	assert_non_null(cy);
	assert_non_null(bad);

	make_mod(NULL, KH_ROLE_NONE, &x);
	make_mod(NULL, KH_ROLE_NONE, &y);
	assert_int_equal(kh_authority_next_ua(w->auth, &uax), KH_OK);
	assert_int_equal(kh_authority_next_ua(w->auth, &uay), KH_OK);
	perso_init(w, &x.t, KH_ROLE_CARD, uax, xs, xp);
	perso_init(w, &y.t, KH_ROLE_CARD, uay, ys, yp);
	assert_memory_not_equal(xp, yp, 32);
	assert_keyed(&x.t, uax);
	issue_certs(w->auth, KH_ROLE_CARD, uax, xs, xp, cx);
	issue_certs(w->auth, KH_ROLE_CARD, uay, ys, yp, cy);

	/* y's certificates offered to x (hand-built swap) */
	assert_int_equal(perso_certs(&x.t, cy->sign, cy->sign_len, cy->pair, cy->pair_len),
			 kh_err_to_sw(KH_ERR_CERT_KEY));
	assert_keyed(&x.t, uax);
	/* x's signing certificate but y's pairing certificate */
	assert_int_equal(perso_certs(&x.t, cx->sign, cx->sign_len, cy->pair, cy->pair_len),
			 kh_err_to_sw(KH_ERR_CERT_KEY));
	assert_keyed(&x.t, uax);
	/* x's UA, but the key is y's: only the key differs */
	forget_issued(w->auth_dir, KH_ROLE_CARD, uax);
	issue_certs(w->auth, KH_ROLE_CARD, uax, ys, yp, bad);
	assert_int_equal(perso_certs(&x.t, cx->sign, cx->sign_len, bad->pair, bad->pair_len),
			 kh_err_to_sw(KH_ERR_CERT_KEY));
	assert_int_equal(perso_certs(&x.t, bad->sign, bad->sign_len, cx->pair, cx->pair_len),
			 kh_err_to_sw(KH_ERR_CERT_KEY));
	assert_keyed(&x.t, uax);
	/* pairing and signing certificates exchanged: wrong key type */
	assert_int_equal(perso_certs(&x.t, cx->pair, cx->pair_len, cx->sign, cx->sign_len),
			 kh_err_to_sw(KH_ERR_CERT_ROLE));
	/* right keys, wrong role */
	issue_certs(w->auth, KH_ROLE_CAM, uax, xs, xp, bad);
	assert_int_equal(perso_certs(&x.t, bad->sign, bad->sign_len, bad->pair, bad->pair_len),
			 kh_err_to_sw(KH_ERR_CERT_ROLE));
	/* right everything, issued by another operator */
	issue_certs(w->foreign, KH_ROLE_CARD, uax, xs, xp, bad); /* foreign dir: no clash */
	assert_int_equal(perso_certs(&x.t, bad->sign, bad->sign_len, bad->pair, bad->pair_len),
			 kh_err_to_sw(KH_ERR_CERT));
	/* an empty certificate, one certificate missing, an unknown tag */
	assert_int_equal(perso_certs(&x.t, cx->sign, cx->sign_len, cx->pair, 0), kh_err_to_sw(KH_ERR_CERT));
	{
		uint8_t *buf = malloc(KH_APDU_MAX_DATA), resp[16];
		struct kh_wr cw;
		size_t dlen;
		assert_non_null(buf);
		kh_wr_init(&cw, buf, KH_APDU_MAX_DATA);
		assert_int_equal(kh_tlv_put(&cw, 1, cx->sign, cx->sign_len), KH_OK);
		assert_int_equal(
			send_apdu(&x.t, KH_CLA, KH_INS_PERSO_CERTS, 0, 0, buf, cw.len, resp, sizeof resp, &dlen),
			kh_err_to_sw(KH_ERR_FORMAT));
		kh_wr_init(&cw, buf, KH_APDU_MAX_DATA);
		kh_tlv_put(&cw, 1, cx->sign, cx->sign_len);
		kh_tlv_put(&cw, 2, cx->pair, cx->pair_len);
		assert_int_equal(kh_tlv_put(&cw, 3, cx->pair, 1), KH_OK);
		assert_int_equal(
			send_apdu(&x.t, KH_CLA, KH_INS_PERSO_CERTS, 0, 0, buf, cw.len, resp, sizeof resp, &dlen),
			kh_err_to_sw(KH_ERR_TLV_TAG));
		kh_wr_init(&cw, buf, KH_APDU_MAX_DATA);
		kh_tlv_put(&cw, 1, cx->sign, cx->sign_len);
		kh_tlv_put(&cw, 1, cx->sign, cx->sign_len);
		assert_int_equal(kh_tlv_put(&cw, 2, cx->pair, cx->pair_len), KH_OK);
		assert_int_equal(
			send_apdu(&x.t, KH_CLA, KH_INS_PERSO_CERTS, 0, 0, buf, cw.len, resp, sizeof resp, &dlen),
			kh_err_to_sw(KH_ERR_FORMAT));
		free(buf);
	}
	assert_keyed(&x.t, uax);
	assert_int_equal(send_apdu(&x.t, KH_CLA, KH_INS_GET_CERT, 0, 0, NULL, 0, (uint8_t[16]){0}, 16, NULL),
			 kh_err_to_sw(KH_ERR_NOT_PERSONALISED));

	/* the right ones are accepted, and x is in service */
	assert_int_equal(perso_certs(&x.t, cx->sign, cx->sign_len, cx->pair, cx->pair_len), 0x9000);
	assert_int_equal(info_of(&x.t).lifecycle, 2);
	assert_int_equal(info_of(&x.t).counter, 2);
	/* and it pairs: the certified key is the key it holds */
	x.ua = uax;
	pair_cam_card(w, &x);
	assert_int_equal(card_echo(&w->cam.t, &x.t), KH_OK);

	kh_softmod_free(x.sm);
	kh_softmod_free(y.sm);
	free(cx);
	free(cy);
	free(bad);
}

/* ---- APDU dispatch ---- */

static void test_dispatch(void **state)
{
	struct world *w = *state;
	uint8_t resp[KH_APDU_MAX_RESP];
	size_t dlen;
	struct kh_module *cm = kh_softmod_module(w->c1.sm);

	assert_int_equal(send_apdu(&w->c1.t, 0x00, KH_INS_GET_INFO, 0, 0, NULL, 0, resp, sizeof resp, &dlen), 0x6E00);
	assert_int_equal(dlen, 0);
	assert_int_equal(send_apdu(&w->c1.t, 0xFF, KH_INS_GET_INFO, 0, 0, NULL, 0, resp, sizeof resp, &dlen), 0x6E00);
	assert_int_equal(send_apdu(&w->c1.t, KH_CLA, 0x44, 0, 0, NULL, 0, resp, sizeof resp, &dlen), 0x6D00);
	assert_int_equal(dlen, 0);
	/* ECHO only inside the channel */
	assert_int_equal(send_apdu(&w->c1.t, KH_CLA, KH_INS_ECHO, 0, 0, (const uint8_t *)"hi", 2, resp, sizeof resp,
				   &dlen),
			 0x6D00);
	assert_int_equal(dlen, 0);
	/* the CAM's instructions are not a card's */
	assert_int_equal(send_apdu(&w->c1.t, KH_CLA, KH_INS_CARD_START, 0, 0, NULL, 0, resp, sizeof resp, &dlen),
			 0x6D00);
	assert_int_equal(send_apdu(&w->c1.t, KH_CLA, KH_INS_CARD_SEND, 0, 0, (const uint8_t *)"x", 1, resp, sizeof resp,
				   &dlen),
			 0x6D00);
	assert_int_equal(send_apdu(&w->c1.t, KH_CLA, KH_INS_CARD_RESP, 0, 0, (const uint8_t *)"x", 1, resp, sizeof resp,
				   &dlen),
			 0x6D00);
	/* ...nor a blank module's */
	assert_int_equal(send_apdu(&w->blank.t, KH_CLA, KH_INS_CARD_START, 0, 0, NULL, 0, resp, sizeof resp, &dlen),
			 0x6D00);
	/* but the CAM's: it asks the host to relay GET CERT */
	assert_int_equal(send_apdu(&w->cam.t, KH_CLA, KH_INS_CARD_START, 0, 0, NULL, 0, resp, sizeof resp, &dlen),
			 KH_SW_RELAY);
	assert_int_equal(dlen, 5);
	assert_int_equal(resp[1], KH_INS_GET_CERT);
	/* sealed without a channel */
	{
		uint8_t zero[40] = {KH_PAIR_VERSION, 0, 0, 0, 1};
		assert_int_equal(send_apdu(&w->c1.t, KH_CLA, KH_INS_SEALED, 0, 0, zero, sizeof zero, resp, sizeof resp,
					   &dlen),
				 kh_err_to_sw(KH_ERR_NOT_PAIRED));
		assert_int_equal(
			send_apdu(&w->c1.t, KH_CLA, KH_INS_PAIR_OPEN, 0, 1, zero, 10, resp, sizeof resp, &dlen),
			kh_err_to_sw(KH_ERR_APDU_P1P2));
	}
	/* P1/P2 */
	assert_int_equal(send_apdu(&w->c1.t, KH_CLA, KH_INS_GET_INFO, 1, 0, NULL, 0, resp, sizeof resp, &dlen),
			 kh_err_to_sw(KH_ERR_APDU_P1P2));

	/* malformed lengths: 6700 */
	{
		static const uint8_t lc_long[] = {KH_CLA, KH_INS_GET_INFO, 0, 0, 5, 1, 2};       /* Lc 5, 2 bytes */
		static const uint8_t lc_short[] = {KH_CLA, KH_INS_GET_INFO, 0, 0, 1, 1, 2, 3}; /* Lc 1, 3 bytes */
		static const uint8_t ext_zero[] = {KH_CLA, KH_INS_GET_INFO, 0, 0, 0, 0, 0, 1};  /* ext Lc 0 */
		static const uint8_t ext_cut[] = {KH_CLA, KH_INS_GET_INFO, 0, 0, 0, 1, 0, 1, 2}; /* ext Lc 256 */
		static const uint8_t three[] = {KH_CLA, KH_INS_GET_INFO, 0};
		const struct {
			const uint8_t *b;
			size_t n;
		} bad[] = {{lc_long, sizeof lc_long}, {lc_short, sizeof lc_short}, {ext_zero, sizeof ext_zero},
			   {ext_cut, sizeof ext_cut},   {three, sizeof three},       {three, 0},
			   {three, 1}};
		for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
			assert_int_equal(xfer_raw(&w->c1.t, bad[k].b, bad[k].n, resp, sizeof resp, &dlen), 0x6700);
			assert_int_equal(dlen, 0);
		}
	}
	/* GET INFO with Le (case 2S) is fine */
	{
		static const uint8_t gi[] = {KH_CLA, KH_INS_GET_INFO, 0, 0, 0};
		assert_int_equal(xfer_raw(&w->c1.t, gi, sizeof gi, resp, sizeof resp, &dlen), 0x9000);
		assert_true(dlen > 0);
	}

	/* a response is always >= 2 bytes: small buffers and garbage */
	{
		static const uint8_t gi[] = {KH_CLA, KH_INS_GET_INFO, 0, 0};
		uint8_t small[8];
		size_t n = kh_module_process(cm, gi, sizeof gi, small, 2);
		assert_int_equal(n, 2);
		assert_int_equal(small[0] << 8 | small[1], kh_err_to_sw(KH_ERR_BUF));
		n = kh_module_process(cm, gi, sizeof gi, small, sizeof small);
		assert_int_equal(n, 2);
		assert_int_equal(small[0] << 8 | small[1], kh_err_to_sw(KH_ERR_BUF));
		assert_int_equal(kh_module_process(cm, gi, sizeof gi, small, 1), 0);
		assert_int_equal(kh_module_process(cm, NULL, 0, small, sizeof small), 2);
	}
	{
		uint8_t junk[300];
		struct kh_rng_det d;
		kh_rng_det_init(&d, (const uint8_t *)"dispatch", 8);
		for (int k = 0; k < 2000; k++) {
			size_t n = (size_t)k % sizeof junk, rl;
			uint16_t sw;
			assert_int_equal(kh_rng_det_fn(&d, junk, sizeof junk), KH_OK);
			if (k & 1)
				junk[0] = KH_CLA;
			/* never personalisation commands: the world's modules must stay as they are */
			if (n > 1 && (junk[1] == KH_INS_PERSO_INIT || junk[1] == KH_INS_PERSO_CERTS))
				junk[1] = 0x00;
			rl = kh_module_process(cm, junk, n, resp, sizeof resp);
			assert_true(rl >= 2);
			sw = (uint16_t)(resp[rl - 2] << 8 | resp[rl - 1]);
			if (sw != 0x9000)
				assert_int_equal(rl, 2);
		}
	}
	assert_int_equal(info_of(&w->c1.t).counter, 2);
	assert_int_equal(info_of(&w->c1.t).lifecycle, 2);
}

/* ---- pairing through the host helpers ---- */

static void test_host_pairing(void **state)
{
	struct world *w = *state;
	struct kh_link *l = calloc(1, sizeof *l);
	uint64_t now = (uint64_t)time(NULL);
	struct kh_module_info i;
	assert_non_null(l);

	/* before pairing: idle, and commands for the card are refused */
	assert_cam_unpaired(w);
	assert_int_equal(card_echo(&w->cam.t, &w->c1.t), KH_ERR_NOT_PAIRED);

	/* decoder <-> CAM */
	kh_link_init(l, w->root_pk, KH_ROLE_CAM, (const uint8_t *)"decoder", 7);
	assert_int_equal(kh_host_link_pair(l, &w->cam.t, now), KH_OK);
	assert_int_equal(l->state, KH_LINK_OPEN);
	assert_int_equal(l->peer.ua, w->cam.ua);
	assert_int_equal(l->peer.role, KH_ROLE_CAM);
	for (int k = 0; k < 5; k++)
		assert_int_equal(link_echo(l, &w->cam.t, now), KH_OK);
	assert_int_equal(l->ch.sent, 5);
	/* GET INFO inside the channel answers the CAM's facts */
	{
		static const uint8_t gi[] = {KH_CLA, KH_INS_GET_INFO, 0, 0};
		uint8_t out[KH_APDU_MAX_RESP];
		size_t n;
		assert_int_equal(kh_host_link_cmd(l, &w->cam.t, gi, sizeof gi, now, out, sizeof out, &n), KH_OK);
		assert_true(n > 2);
		assert_int_equal(out[n - 2] << 8 | out[n - 1], 0x9000);
		assert_int_equal(out[0], 1); /* tag role */
		assert_int_equal(out[3], KH_ROLE_CAM);
		/* a plain-only instruction inside the channel: the inner answer carries 6D00, sealed */
		static const uint8_t gc[] = {KH_CLA, KH_INS_GET_CERT, 0, 0};
		assert_int_equal(kh_host_link_cmd(l, &w->cam.t, gc, sizeof gc, now, out, sizeof out, &n), KH_OK);
		assert_int_equal(n, 2);
		assert_int_equal(out[0] << 8 | out[1], 0x6D00);
	}

	/* CAM <-> card 1 */
	pair_cam_card(w, &w->c1);
	i = info_of(&w->cam.t);
	assert_int_equal(i.link_state, KH_LINK_OPEN);
	assert_int_equal(i.peer_ua, w->c1.ua);
	assert_int_equal(i.role, KH_ROLE_CAM);
	for (int k = 0; k < 5; k++)
		assert_int_equal(card_echo(&w->cam.t, &w->c1.t), KH_OK);
	/* the card's GET INFO through the channel */
	{
		static const uint8_t gi[] = {KH_CLA, KH_INS_GET_INFO, 0, 0};
		uint8_t out[KH_APDU_MAX_RESP];
		size_t n;
		assert_int_equal(kh_host_card_cmd(&w->cam.t, &w->c1.t, gi, sizeof gi, out, sizeof out, &n), KH_OK);
		assert_true(n > 10);
		assert_int_equal(out[3], KH_ROLE_CARD);
		assert_int_equal(kh_get_be32(out + 7), w->c1.ua);
	}
	/* both links live side by side */
	assert_int_equal(link_echo(l, &w->cam.t, now), KH_OK);
	assert_int_equal(card_echo(&w->cam.t, &w->c1.t), KH_OK);
	/* the CAM pairs again with another card, then back */
	pair_cam_card(w, &w->c2);
	assert_int_equal(info_of(&w->cam.t).peer_ua, w->c2.ua);
	assert_int_equal(card_echo(&w->cam.t, &w->c2.t), KH_OK);
	pair_cam_card(w, &w->c1);
	assert_int_equal(card_echo(&w->cam.t, &w->c1.t), KH_OK);
	/* no state was stored by any of this */
	assert_int_equal(info_of(&w->cam.t).counter, 2);
	assert_int_equal(info_of(&w->c1.t).counter, 2);
	kh_link_wipe(l);
	free(l);
}

/* THE SEED'S DECISIVE PROPERTY: the CAM refuses any answer but its card's, and forgets the card. */
static void test_swap(void **state)
{
	struct world *w = *state;

	/* card 2 never paired: it refuses the sealed command, and the CAM drops the link */
	pair_cam_card(w, &w->c1);
	assert_int_equal(card_echo(&w->cam.t, &w->c1.t), KH_OK);
	assert_int_equal(card_echo(&w->cam.t, &w->c2.t), KH_ERR_NOT_PAIRED);
	assert_cam_unpaired(w);
	/* the right card again: still refused, the keys are gone */
	assert_int_equal(card_echo(&w->cam.t, &w->c1.t), KH_ERR_NOT_PAIRED);
	assert_int_equal(card_echo(&w->cam.t, &w->c1.t), KH_ERR_NOT_PAIRED);
	assert_cam_unpaired(w);
	/* until the CAM pairs again */
	pair_cam_card(w, &w->c1);
	assert_int_equal(card_echo(&w->cam.t, &w->c1.t), KH_OK);

	/* card 2 holding a channel of its own from an earlier pairing: its answer fails the tag */
	pair_cam_card(w, &w->c2);
	assert_int_equal(card_echo(&w->cam.t, &w->c2.t), KH_OK);
	pair_cam_card(w, &w->c1);
	assert_int_equal(card_echo(&w->cam.t, &w->c1.t), KH_OK);
	assert_int_equal(card_echo(&w->cam.t, &w->c1.t), KH_OK);
	assert_int_equal(card_echo(&w->cam.t, &w->c2.t), KH_ERR_CHAN_AUTH);
	assert_cam_unpaired(w);
	assert_int_equal(card_echo(&w->cam.t, &w->c1.t), KH_ERR_NOT_PAIRED);
	assert_cam_unpaired(w);
	pair_cam_card(w, &w->c1);
	assert_int_equal(card_echo(&w->cam.t, &w->c1.t), KH_OK);
	/* a swap to the blank module or to the foreign card is the same */
	assert_int_equal(card_echo(&w->cam.t, &w->blank.t), KH_ERR_NOT_PERSONALISED);
	assert_int_equal(card_echo(&w->cam.t, &w->c1.t), KH_ERR_NOT_PAIRED);
	pair_cam_card(w, &w->c1);
	assert_int_equal(card_echo(&w->cam.t, &w->fx.t), KH_ERR_NOT_PAIRED);
	assert_int_equal(card_echo(&w->cam.t, &w->c1.t), KH_ERR_NOT_PAIRED);
	pair_cam_card(w, &w->c1);
	assert_int_equal(card_echo(&w->cam.t, &w->c1.t), KH_OK);
}

static kh_err dead_xfer(void *ctx, const uint8_t *cmd, size_t len, uint8_t *resp, size_t cap, size_t *rlen)
{
	(void)ctx, (void)cmd, (void)len, (void)resp, (void)cap, (void)rlen;
	return KH_ERR_TRANSPORT;
}

/* The card is pulled while a command is on its way: no answer ever comes, and the CAM, asked to
 * send the next command, ends the channel instead of waiting for it forever. */
static void test_card_removed(void **state)
{
	struct world *w = *state;
	struct kh_transport dead = {.xfer = dead_xfer};

	pair_cam_card(w, &w->c1);
	assert_int_equal(card_echo(&w->cam.t, &w->c1.t), KH_OK);
	assert_int_equal(card_echo(&w->cam.t, &dead), KH_ERR_TRANSPORT);
	assert_int_equal(card_echo(&w->cam.t, &w->c1.t), KH_ERR_NOT_PAIRED);
	assert_cam_unpaired(w);
	pair_cam_card(w, &w->c1);
	assert_int_equal(card_echo(&w->cam.t, &w->c1.t), KH_OK);
}

static void test_pair_refused(void **state)
{
	struct world *w = *state;
	struct kh_link *l = calloc(1, sizeof *l);
	uint64_t now = (uint64_t)time(NULL);
	uint32_t ua = 0xDEADBEEF;
	assert_non_null(l);

	/* another operator's card */
	assert_int_equal(kh_host_pair_cam_card(&w->cam.t, &w->fx.t, &ua), KH_ERR_CERT);
	assert_int_equal(ua, 0xDEADBEEF);
	assert_cam_unpaired(w);
	/* a blank module in the card slot */
	assert_int_equal(kh_host_pair_cam_card(&w->cam.t, &w->blank.t, &ua), KH_ERR_NOT_PERSONALISED);
	assert_cam_unpaired(w);
	/* a CAM in the card slot (the CAM itself) */
	assert_int_equal(kh_host_pair_cam_card(&w->cam.t, &w->cam.t, &ua), KH_ERR_CERT_ROLE);
	assert_cam_unpaired(w);
	assert_int_equal(card_echo(&w->cam.t, &w->c1.t), KH_ERR_NOT_PAIRED);

	/* a card where the decoder expects its CAM */
	kh_link_init(l, w->root_pk, KH_ROLE_CAM, (const uint8_t *)"decoder", 7);
	assert_int_equal(kh_host_link_pair(l, &w->c1.t, now), KH_ERR_CERT_ROLE);
	assert_int_equal(l->state, KH_LINK_IDLE);
	assert_int_equal(link_echo(l, &w->c1.t, now), KH_ERR_NOT_PAIRED);
	/* the blank module, and a CAM of another operator's root */
	assert_int_equal(kh_host_link_pair(l, &w->blank.t, now), KH_ERR_NOT_PERSONALISED);
	assert_int_equal(l->state, KH_LINK_IDLE);
	{
		uint8_t other[32];
		kh_authority_root_pk(w->foreign, other);
		kh_link_init(l, other, KH_ROLE_CAM, (const uint8_t *)"decoder", 7);
		assert_int_equal(kh_host_link_pair(l, &w->cam.t, now), KH_ERR_CERT);
		assert_int_equal(l->state, KH_LINK_IDLE);
	}
	/* after all that, the right pairs still work */
	kh_link_init(l, w->root_pk, KH_ROLE_CAM, (const uint8_t *)"decoder", 7);
	assert_int_equal(kh_host_link_pair(l, &w->cam.t, now), KH_OK);
	assert_int_equal(link_echo(l, &w->cam.t, now), KH_OK);
	pair_cam_card(w, &w->c1);
	assert_int_equal(card_echo(&w->cam.t, &w->c1.t), KH_OK);
	kh_link_wipe(l);
	free(l);
}

/* ---- tampering on the wire ---- */

/* After a refused answer: the CAM is unpaired, the card's stored state did not move, and pairing again works. */
static void after_refusal(struct world *w, struct kh_transport *card_view, struct mod *card)
{
	assert_cam_unpaired(w);
	assert_int_equal(card_echo(&w->cam.t, card_view), KH_ERR_NOT_PAIRED);
	assert_int_equal(info_of(&card->t).counter, 2);
	assert_int_equal(info_of(&card->t).lifecycle, 2);
	pair_cam_card(w, card);
	assert_int_equal(card_echo(&w->cam.t, card_view), KH_OK);
}

static void test_tamper(void **state)
{
	struct world *w = *state;
	struct kh_transport tt;
	struct tap *tp = tap_new(&w->c1.t, &tt);
	size_t sealed_len;

	pair_cam_card(w, &w->c1);
	assert_int_equal(card_echo(&w->cam.t, &tt), KH_OK);
	assert_int_equal(card_echo(&w->cam.t, &tt), KH_OK);
	assert_int_equal(tp->n_sealed, 2);

	/* (a) the previous response replayed */
	tp->mode = TAP_REPLAY_RESP;
	assert_int_equal(card_echo(&w->cam.t, &tt), KH_ERR_CHAN_REPLAY);
	tp->mode = TAP_PASS;
	after_refusal(w, &tt, &w->c1);

	/* (b) one bit flipped in the response: version, counter, ciphertext, tag */
	sealed_len = tp->last_resp_len - 2;
	assert_int_equal(sealed_len, KH_CHAN_OVERHEAD + 24 + 2);
	for (size_t pos = 0; pos < sealed_len; pos++) {
		kh_err want = pos == 0 ? KH_ERR_VERSION : pos < 5 ? KH_ERR_CHAN_REPLAY : KH_ERR_CHAN_AUTH;
		tp->mode = TAP_FLIP_RESP;
		tp->pos = pos;
		tp->bit = (int)(pos % 8);
		assert_int_equal(card_echo(&w->cam.t, &tt), want);
		tp->mode = TAP_PASS;
		after_refusal(w, &tt, &w->c1);
	}

	/* (c) the response cut short: data cut with the status word kept ... */
	for (size_t keep = 0; keep < sealed_len; keep++) {
		tp->mode = TAP_TRUNC_RESP;
		tp->keep_sw = 1;
		tp->pos = keep;
		assert_int_equal(card_echo(&w->cam.t, &tt),
				 keep < KH_CHAN_OVERHEAD ? KH_ERR_TRUNCATED : KH_ERR_CHAN_AUTH);
		tp->mode = TAP_PASS;
		after_refusal(w, &tt, &w->c1);
	}
	/* ... or cut below a status word */
	for (size_t keep = 0; keep < 2; keep++) {
		tp->mode = TAP_TRUNC_RESP;
		tp->keep_sw = 0;
		tp->pos = keep;
		assert_int_equal(card_echo(&w->cam.t, &tt), KH_ERR_APDU_LEN);
		tp->mode = TAP_PASS;
		after_refusal(w, &tt, &w->c1);
	}

	/* (d) an earlier command replayed to the card through the relay: the card says CHAN_REPLAY */
	tp->ncmd = 0;
	assert_int_equal(card_echo(&w->cam.t, &tt), KH_OK); /* recorded as cmd[0] */
	tp->mode = TAP_REPLAY_CMD;
	assert_int_equal(card_echo(&w->cam.t, &tt), KH_ERR_CHAN_REPLAY);
	tp->mode = TAP_PASS;
	after_refusal(w, &tt, &w->c1);
	free(tp);
}

/*
 * Commands altered before they reach the card: each refused with its own status word, and the
 * card's channel is exactly as before, so the CAM's next genuine command goes through.
 */
static void test_tamper_card_side(void **state)
{
	struct world *w = *state;
	struct kh_transport tt;
	struct tap *tp = tap_new(&w->c1.t, &tt);
	uint8_t resp[KH_APDU_MAX_RESP], cmd[KH_APDU_MAX_CMD];
	size_t dlen, n;

	pair_cam_card(w, &w->c1);
	for (int k = 0; k < 3; k++)
		assert_int_equal(card_echo(&w->cam.t, &tt), KH_OK);
	assert_int_equal(tp->ncmd, 3);

	/* every earlier command, replayed straight to the card */
	for (int k = 0; k < 3; k++) {
		assert_int_equal(xfer_raw(&w->c1.t, tp->cmd[k], tp->cmd_len[k], resp, sizeof resp, &dlen),
				 kh_err_to_sw(KH_ERR_CHAN_REPLAY));
		assert_int_equal(dlen, 0);
	}
	/* the CAM's channel to the card still works: the card did not move */
	assert_int_equal(card_echo(&w->cam.t, &tt), KH_OK);
	assert_int_equal(tp->ncmd, 4);

	/*
	 * A forged next command (the last one with the counter bumped by one, so it is fresh):
	 * the tag fails; had the card taken its counter, the CAM's genuine next command with that
	 * very counter would now be refused as a replay.
	 */
	n = tp->cmd_len[3];
	memcpy(cmd, tp->cmd[3], n);
	assert_int_equal(cmd[1], KH_INS_SEALED);
	{
		size_t hdr = 5; /* short APDU header: CLA INS P1 P2 Lc */
		uint32_t ctr = kh_get_be32(cmd + hdr + 1);
		assert_int_equal(ctr, 4 + 0u);
		kh_put_be32(cmd + hdr + 1, ctr + 1);
		assert_int_equal(xfer_raw(&w->c1.t, cmd, n, resp, sizeof resp, &dlen), kh_err_to_sw(KH_ERR_CHAN_AUTH));
		/* with a flipped ciphertext bit, a cut body, a wrong version, a bad Lc */
		kh_put_be32(cmd + hdr + 1, ctr + 1);
		memcpy(cmd + hdr + 5, tp->cmd[3] + hdr + 5, n - hdr - 5);
		cmd[n - 1] ^= 1;
		assert_int_equal(xfer_raw(&w->c1.t, cmd, n, resp, sizeof resp, &dlen), kh_err_to_sw(KH_ERR_CHAN_AUTH));
		cmd[hdr] = 2;
		assert_int_equal(xfer_raw(&w->c1.t, cmd, n, resp, sizeof resp, &dlen), kh_err_to_sw(KH_ERR_VERSION));
		cmd[hdr] = KH_PAIR_VERSION;
		{
			uint8_t cut[32];
			memcpy(cut, cmd, hdr + 10);
			cut[4] = 10;
			assert_int_equal(xfer_raw(&w->c1.t, cut, hdr + 10, resp, sizeof resp, &dlen),
					 kh_err_to_sw(KH_ERR_TRUNCATED));
		}
		assert_int_equal(xfer_raw(&w->c1.t, cmd, n - 1, resp, sizeof resp, &dlen),
				 kh_err_to_sw(KH_ERR_APDU_LEN));
	}
	/* a garbage PAIR OPEN does not replace the channel */
	{
		static const uint8_t shortpo[] = {KH_PAIR_VERSION, 0, 1, 2, 3, 4, 5, 6};
		assert_int_equal(send_apdu(&w->c1.t, KH_CLA, KH_INS_PAIR_OPEN, 0, 0, shortpo, sizeof shortpo, resp,
					   sizeof resp, &dlen),
				 kh_err_to_sw(KH_ERR_TRUNCATED));
	}
	{
		uint8_t po[2 + 7 + 32 + 64];
		memset(po, 0x33, sizeof po);
		po[0] = KH_PAIR_VERSION;
		po[1] = 7;
		assert_int_equal(
			send_apdu(&w->c1.t, KH_CLA, KH_INS_PAIR_OPEN, 0, 0, po, sizeof po, resp, sizeof resp, &dlen),
			kh_err_to_sw(KH_ERR_PAIR_OPEN));
	}
	assert_int_equal(card_echo(&w->cam.t, &tt), KH_OK);
	assert_int_equal(card_echo(&w->cam.t, &tt), KH_OK);
	assert_int_equal(info_of(&w->c1.t).counter, 2);
	free(tp);
}

/* ---- re-key by age ---- */

static void test_rekey_age(void **state)
{
	struct world *w = *state;
	struct kh_transport tt;
	struct tap *tp = tap_new(&w->c1.t, &tt);
	struct kh_link *l = calloc(1, sizeof *l);
	uint64_t t0 = (uint64_t)time(NULL);
	assert_non_null(l);

	kh_softmod_set_time(w->cam.sm, t0);
	pair_cam_card(w, &(struct mod){.t = tt, .ua = w->c1.ua});
	assert_int_equal(tp->n_get_cert, 1);
	assert_int_equal(tp->n_pair_open, 1);
	assert_int_equal(card_echo(&w->cam.t, &tt), KH_OK);

	/* one second before the limit: the same keys */
	kh_softmod_set_time(w->cam.sm, t0 + KH_CHAN_MAX_AGE - 1);
	assert_int_equal(card_echo(&w->cam.t, &tt), KH_OK);
	assert_int_equal(tp->n_pair_open, 1);
	assert_int_equal(tp->n_sealed, 2);

	/* at the limit: PAIR OPEN, then the pending command, in one kh_host_card_cmd */
	kh_softmod_set_time(w->cam.sm, t0 + KH_CHAN_MAX_AGE);
	assert_int_equal(card_echo(&w->cam.t, &tt), KH_OK);
	assert_int_equal(tp->n_get_cert, 1); /* the certified key is reused */
	assert_int_equal(tp->n_pair_open, 2);
	assert_int_equal(tp->n_sealed, 3);
	assert_int_equal(info_of(&w->cam.t).peer_ua, w->c1.ua);
	assert_int_equal(info_of(&w->cam.t).link_state, KH_LINK_OPEN);
	/* new keys: the command sealed before the re-key is now a stranger to the card */
	{
		uint8_t resp[16];
		size_t dlen;
		assert_int_equal(xfer_raw(&w->c1.t, tp->cmd[1], tp->cmd_len[1], resp, sizeof resp, &dlen),
				 kh_err_to_sw(KH_ERR_CHAN_AUTH));
	}
	/* the new channel is timed from the re-key */
	kh_softmod_set_time(w->cam.sm, t0 + 2 * KH_CHAN_MAX_AGE - 1);
	assert_int_equal(card_echo(&w->cam.t, &tt), KH_OK);
	assert_int_equal(tp->n_pair_open, 2);
	/* a clock that went backwards also re-keys */
	kh_softmod_set_time(w->cam.sm, t0 + 10);
	assert_int_equal(card_echo(&w->cam.t, &tt), KH_OK);
	assert_int_equal(tp->n_pair_open, 3);
	assert_int_equal(card_echo(&w->cam.t, &tt), KH_OK);
	assert_int_equal(tp->n_pair_open, 3);
	/* a re-key that meets a swapped card fails and leaves the CAM unpaired */
	kh_softmod_set_time(w->cam.sm, t0 + 10 + KH_CHAN_MAX_AGE);
	assert_int_equal(card_echo(&w->cam.t, &w->c2.t), KH_ERR_PAIR_OPEN); /* sealed to card 1's key */
	assert_cam_unpaired(w);
	/* a re-key after the card's certificate expired goes back to GET CERT and is refused there */
	kh_softmod_set_time(w->cam.sm, t0);
	pair_cam_card(w, &(struct mod){.t = tt, .ua = w->c1.ua});
	kh_softmod_set_time(w->cam.sm, t0 + 21ull * 366 * 24 * 3600);
	assert_int_equal(card_echo(&w->cam.t, &tt), KH_ERR_CERT);
	assert_cam_unpaired(w);
	assert_int_equal(kh_host_pair_cam_card(&w->cam.t, &tt, &(uint32_t){0}), KH_ERR_CERT);
	kh_softmod_set_time(w->cam.sm, 0);

	/* the decoder's link to the CAM: by age and by message count */
	kh_link_init(l, w->root_pk, KH_ROLE_CAM, (const uint8_t *)"decoder", 7);
	assert_int_equal(kh_host_link_pair(l, &w->cam.t, t0), KH_OK);
	assert_int_equal(link_echo(l, &w->cam.t, t0 + KH_CHAN_MAX_AGE - 1), KH_OK);
	assert_int_equal(l->ch.opened_at, t0);
	assert_int_equal(link_echo(l, &w->cam.t, t0 + KH_CHAN_MAX_AGE), KH_OK);
	assert_int_equal(l->ch.opened_at, t0 + KH_CHAN_MAX_AGE);
	assert_int_equal(l->ch.sent, 1);
	l->ch.max_msgs = 2;
	assert_int_equal(link_echo(l, &w->cam.t, t0 + KH_CHAN_MAX_AGE), KH_OK);
	assert_int_equal(l->ch.sent, 2);
	assert_int_equal(link_echo(l, &w->cam.t, t0 + KH_CHAN_MAX_AGE), KH_OK); /* re-keyed */
	assert_int_equal(l->ch.sent, 1);
	assert_int_equal(l->ch.max_msgs, KH_CHAN_MAX_MSGS);
	kh_link_wipe(l);
	free(l);
	free(tp);
}

/* ---- sealed state store: softmodule files ---- */

static void read_all(const char *path, uint8_t **d, size_t *n)
{
	assert_int_equal(kh_file_read(path, 1 << 20, d, n), KH_OK);
}

static void write_plain(const char *path, const uint8_t *d, size_t n, mode_t mode)
{
	assert_int_equal(kh_file_write_atomic(path, d, n, mode), KH_OK);
}

/* Overwrite in place without fsync (hundreds of tampered copies). */
static void write_fast(const char *path, const uint8_t *d, size_t n)
{
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	if (n)
		assert_int_equal(fwrite(d, 1, n, f), n);
	assert_int_equal(fclose(f), 0);
}

/* kh_softmod_open must fail with want and leave the card and counter files as they are. */
static void open_refused(const char *card, const char *key, kh_err want)
{
	struct kh_softmod *s = (struct kh_softmod *)0x1;
	uint8_t *b1, *b2, *c1 = NULL, *c2 = NULL;
	size_t n1, n2, m1 = 0, m2 = 0;
	char ctr[4096];
	kh_err r;

	snprintf(ctr, sizeof ctr, "%s.ctr", card);
	read_all(card, &b1, &n1);
	if (kh_file_read(ctr, 64, &c1, &m1) != KH_OK)
		c1 = NULL;
	r = kh_softmod_open(card, key, &s);
	if (r != want)
		fprintf(stderr, "softmod_open: got %s, want %s\n", kh_err_name(r), kh_err_name(want));
	assert_int_equal(r, want);
	assert_ptr_equal(s, (struct kh_softmod *)0x1);
	read_all(card, &b2, &n2);
	assert_int_equal(n1, n2);
	assert_memory_equal(b1, b2, n1);
	if (c1) {
		assert_int_equal(kh_file_read(ctr, 64, &c2, &m2), KH_OK);
		assert_int_equal(m1, m2);
		assert_memory_equal(c1, c2, m1);
	}
	kh_file_free(b1, n1);
	kh_file_free(b2, n2);
	kh_file_free(c1, m1);
	kh_file_free(c2, m2);
}

static void test_state_files(void **state)
{
	struct world *w = *state;
	struct kh_softmod *s = NULL;
	struct kh_issued *iss = calloc(1, sizeof *iss);
	char *card = path_in(w->dir, "c.card"), *key = path_in(w->dir, "c.key"), *ctr = path_in(w->dir, "c.card.ctr");
	char *key2 = path_in(w->dir, "other.key");
	uint8_t *orig, *bad;
	size_t n;
	struct kh_transport t;
	struct stat st;
	assert_non_null(iss);

	/* issue: blank, personalise, save */
	assert_int_equal(kh_softmod_new_blank(&s), KH_OK);
	kh_transport_inproc(&t, kh_softmod_module(s));
	assert_int_equal(kh_softmod_save(s, card, NULL), KH_ERR_INVAL); /* nothing stored yet */
	assert_int_equal(kh_authority_personalise(w->auth, &t, KH_ROLE_CARD, 0, iss), KH_OK);
	assert_int_equal(kh_softmod_save(s, card, NULL), KH_OK);
	kh_softmod_free(s);
	s = NULL;
	assert_int_equal(stat(key, &st), 0);
	assert_int_equal(st.st_mode & 077, 0);
	assert_int_equal(stat(card, &st), 0);
	assert_int_equal(stat(ctr, &st), 0);
	{
		uint8_t *c;
		size_t cn;
		assert_int_equal(kh_file_read(ctr, 64, &c, &cn), KH_OK);
		assert_int_equal(cn, 2);
		assert_memory_equal(c, "2\n", 2);
		kh_file_free(c, cn);
	}

	/* open works and is the card that was issued */
	assert_int_equal(kh_softmod_open(card, NULL, &s), KH_OK);
	kh_transport_inproc(&t, kh_softmod_module(s));
	{
		struct kh_module_info i = info_of(&t);
		assert_int_equal(i.lifecycle, 2);
		assert_int_equal(i.ua, iss->ua);
		assert_int_equal(i.counter, 2);
	}
	/* and it pairs with the world's CAM */
	{
		uint32_t ua;
		assert_int_equal(kh_host_pair_cam_card(&w->cam.t, &t, &ua), KH_OK);
		assert_int_equal(ua, iss->ua);
		assert_int_equal(card_echo(&w->cam.t, &t), KH_OK);
	}
	kh_softmod_free(s);
	s = NULL;

	read_all(card, &orig, &n);
	assert_true(n > 25 + 16);
	bad = malloc(n + 1);
	assert_non_null(bad);

	/* one byte flipped anywhere: magic -> FORMAT, version -> VERSION, the rest -> STATE_AUTH */
	for (size_t i = 0; i < n; i++) {
		memcpy(bad, orig, n);
		bad[i] ^= (uint8_t)(1u << (i % 8));
		write_fast(card, bad, n);
		open_refused(card, NULL, i < 4 ? KH_ERR_FORMAT : i == 4 ? KH_ERR_VERSION : KH_ERR_STATE_AUTH);
	}
	/* truncated: too short for a header and tag -> FORMAT, else the tag fails */
	{
		size_t cuts[] = {0, 1, 4, 5, 13, 24, 25, 40, 41, 42, 100, n - 16, n - 1};
		for (size_t k = 0; k < sizeof cuts / sizeof cuts[0]; k++) {
			write_fast(card, orig, cuts[k]);
			open_refused(card, NULL, cuts[k] < 25 + 16 ? KH_ERR_FORMAT : KH_ERR_STATE_AUTH);
		}
	}
	/* one byte appended */
	memcpy(bad, orig, n);
	bad[n] = 0;
	write_plain(card, bad, n + 1, 0600);
	open_refused(card, NULL, KH_ERR_STATE_AUTH);
	write_plain(card, orig, n, 0600);

	/* the wrong root key */
	{
		uint8_t rk[32];
		char hex[66];
		assert_int_equal(kh_random(rk, sizeof rk), KH_OK);
		kh_hex_encode(rk, sizeof rk, hex);
		strcat(hex, "\n");
		write_plain(key2, (const uint8_t *)hex, strlen(hex), 0600);
		open_refused(card, key2, KH_ERR_STATE_AUTH);
		kh_wipe(hex, sizeof hex);
	}
	/* the key file readable by others */
	assert_int_equal(chmod(key, 0644), 0);
	open_refused(card, NULL, KH_ERR_KEYFILE_PERM);
	assert_int_equal(chmod(key, 0640), 0);
	open_refused(card, NULL, KH_ERR_KEYFILE_PERM);
	assert_int_equal(chmod(key, 0600), 0);
	/* a key file that is not a key */
	write_plain(key2, (const uint8_t *)"zz\n", 3, 0600);
	open_refused(card, key2, KH_ERR_FORMAT);

	/* the counter file: higher than the blob -> ROLLBACK; equal, lower or absent -> fine */
	write_plain(ctr, (const uint8_t *)"3\n", 2, 0600);
	open_refused(card, NULL, KH_ERR_ROLLBACK);
	write_plain(ctr, (const uint8_t *)"18446744073709551615\n", 21, 0600);
	open_refused(card, NULL, KH_ERR_ROLLBACK);
	write_plain(ctr, (const uint8_t *)"two\n", 4, 0600);
	open_refused(card, NULL, KH_ERR_FORMAT);
	{
		const char *fine[] = {"2\n", "1\n", "0\n"};
		for (size_t k = 0; k < 3; k++) {
			write_plain(ctr, (const uint8_t *)fine[k], 2, 0600);
			assert_int_equal(kh_softmod_open(card, NULL, &s), KH_OK);
			kh_softmod_free(s);
			s = NULL;
		}
	}
	assert_int_equal(unlink(ctr), 0);
	assert_int_equal(kh_softmod_open(card, NULL, &s), KH_OK);
	kh_softmod_free(s);
	s = NULL;
	/* missing card file */
	assert_int_equal(unlink(card), 0);
	assert_int_equal(kh_softmod_open(card, NULL, &s), KH_ERR_NOTFOUND);
	assert_null(s);

	kh_file_free(orig, n);
	free(bad);
	free(card);
	free(key);
	free(key2);
	free(ctr);
	free(iss);
}

/* ---- sealed state store: the raw module API ---- */

#define CAP_MAX 8

struct capture {
	int fail_from;  /* calls numbered from 1; fail this call and all later ones (0: never) */
	int fail_only;  /* fail just this call (0: never) */
	int calls;
	int n;
	uint8_t blob[CAP_MAX][KH_MODULE_BLOB_MAX];
	size_t len[CAP_MAX];
	uint64_t ctr[CAP_MAX];
};

static kh_err cap_store(void *ctx, const uint8_t *blob, size_t len, uint64_t counter)
{
	struct capture *c = ctx;
	c->calls++;
	if ((c->fail_from && c->calls >= c->fail_from) || c->calls == c->fail_only)
		return KH_ERR_IO;
	assert_true(c->n < CAP_MAX);
	assert_true(len <= KH_MODULE_BLOB_MAX);
	memcpy(c->blob[c->n], blob, len);
	c->len[c->n] = len;
	c->ctr[c->n] = counter;
	c->n++;
	return KH_OK;
}

struct raw {
	void *mem;
	struct kh_module *m;
	struct kh_transport t;
};

static void raw_new(struct raw *r, const uint8_t root[32], struct capture *cap)
{
	struct kh_module_env env = {.store = cap_store, .now = NULL, .ctx = cap};
	assert_int_equal(posix_memalign(&r->mem, 16, kh_module_size()), 0);
	assert_int_equal(kh_module_init(r->mem, kh_module_size(), root, &env, &r->m), KH_OK);
	kh_transport_inproc(&r->t, r->m);
}

static void raw_free(struct raw *r)
{
	kh_module_wipe(r->m);
	free(r->mem);
	r->mem = NULL;
}

static void test_rollback(void **state)
{
	struct world *w = *state;
	struct capture *cap = calloc(1, sizeof *cap), *cap2 = calloc(1, sizeof *cap2);
	struct kh_issued *iss = calloc(1, sizeof *iss);
	uint8_t root[32], other[32];
	struct raw a, b, c;
	uint64_t ctr;
	assert_non_null(cap);
	assert_non_null(cap2);
	assert_non_null(iss);
	memset(root, 0x42, sizeof root);
	memset(other, 0x43, sizeof other);

	/* bad arguments to init: misaligned, too small, no store */
	{
		struct kh_module_env env = {.store = cap_store, .ctx = cap}, nostore = {0};
		struct kh_module *m = NULL;
		void *mem = NULL;
		assert_int_equal(posix_memalign(&mem, 16, kh_module_size() + 16), 0);
		assert_int_equal(kh_module_init((uint8_t *)mem + 8, kh_module_size(), root, &env, &m), KH_ERR_INVAL);
		assert_int_equal(kh_module_init(mem, kh_module_size() - 1, root, &env, &m), KH_ERR_INVAL);
		assert_int_equal(kh_module_init(mem, kh_module_size(), root, &nostore, &m), KH_ERR_INVAL);
		assert_null(m);
		free(mem);
	}

	/* personalise: two stores, counters 1 (PERSO INIT) and 2 (PERSO CERTS) */
	raw_new(&a, root, cap);
	assert_int_equal(kh_module_counter(a.m), 0);
	assert_int_equal(kh_authority_personalise(w->auth, &a.t, KH_ROLE_CARD, 0, iss), KH_OK);
	assert_int_equal(cap->n, 2);
	assert_int_equal(cap->ctr[0], 1);
	assert_int_equal(cap->ctr[1], 2);
	assert_int_equal(kh_module_counter(a.m), 2);
	assert_int_equal(kh_module_blob_counter(cap->blob[0], cap->len[0], &ctr), KH_OK);
	assert_int_equal(ctr, 1);
	assert_int_equal(kh_module_blob_counter(cap->blob[1], cap->len[1], &ctr), KH_OK);
	assert_int_equal(ctr, 2);
	assert_memory_equal(cap->blob[1], "KHMS\x01", 5);

	/* a fresh module: blob #1 with min 2 is a rollback, and changes nothing */
	raw_new(&b, root, cap2);
	assert_int_equal(kh_module_load(b.m, cap->blob[0], cap->len[0], 2), KH_ERR_ROLLBACK);
	assert_int_equal(kh_module_counter(b.m), 0);
	assert_int_equal(info_of(&b.t).lifecycle, 0);
	/* blob #2 with min 2 loads */
	assert_int_equal(kh_module_load(b.m, cap->blob[1], cap->len[1], 2), KH_OK);
	assert_int_equal(kh_module_counter(b.m), 2);
	{
		struct kh_module_info i = info_of(&b.t);
		assert_int_equal(i.lifecycle, 2);
		assert_int_equal(i.ua, iss->ua);
		assert_int_equal(i.counter, 2);
	}
	/* the same module, blob #1 afterwards: older than what it holds, even with min 0 */
	assert_int_equal(kh_module_load(b.m, cap->blob[0], cap->len[0], 0), KH_ERR_ROLLBACK);
	assert_int_equal(kh_module_counter(b.m), 2);
	assert_int_equal(info_of(&b.t).lifecycle, 2);
	/* blob #2 with a higher floor */
	assert_int_equal(kh_module_load(b.m, cap->blob[1], cap->len[1], 3), KH_ERR_ROLLBACK);
	assert_int_equal(info_of(&b.t).lifecycle, 2);
	/* reloading the same state is fine */
	assert_int_equal(kh_module_load(b.m, cap->blob[1], cap->len[1], 2), KH_OK);
	/* the restored card is the card: same certificate, and it pairs */
	{
		uint8_t resp[KH_APDU_MAX_RESP];
		size_t dlen;
		uint32_t ua;
		assert_int_equal(send_apdu(&b.t, KH_CLA, KH_INS_GET_CERT, 0, 0, NULL, 0, resp, sizeof resp, &dlen),
				 0x9000);
		assert_int_equal(dlen, iss->pair_len);
		assert_memory_equal(resp, iss->pair_der, dlen);
		assert_int_equal(kh_host_pair_cam_card(&w->cam.t, &b.t, &ua), KH_OK);
		assert_int_equal(ua, iss->ua);
		assert_int_equal(card_echo(&w->cam.t, &b.t), KH_OK);
	}
	/* a fresh module takes blob #1 when nothing newer is known: keyed, not personalised */
	raw_new(&c, root, cap2);
	assert_int_equal(kh_module_load(c.m, cap->blob[0], cap->len[0], 1), KH_OK);
	assert_int_equal(info_of(&c.t).lifecycle, 1);
	assert_int_equal(kh_module_counter(c.m), 1);
	raw_free(&c);

	/* another root key: STATE_AUTH, nothing loaded */
	raw_new(&c, other, cap2);
	assert_int_equal(kh_module_load(c.m, cap->blob[1], cap->len[1], 0), KH_ERR_STATE_AUTH);
	assert_int_equal(kh_module_counter(c.m), 0);
	assert_int_equal(info_of(&c.t).lifecycle, 0);
	/* a counter edited in the clear header: authenticated, so STATE_AUTH */
	{
		uint8_t *blob = malloc(KH_MODULE_BLOB_MAX);
		assert_non_null(blob);
		memcpy(blob, cap->blob[0], cap->len[0]);
		kh_put_be64(blob + 5, 9);
		assert_int_equal(kh_module_blob_counter(blob, cap->len[0], &ctr), KH_OK);
		assert_int_equal(ctr, 9);
		assert_int_equal(kh_module_load(b.m, blob, cap->len[0], 0), KH_ERR_STATE_AUTH);
		blob[4] = 2;
		assert_int_equal(kh_module_load(b.m, blob, cap->len[0], 0), KH_ERR_VERSION);
		assert_int_equal(kh_module_blob_counter(blob, cap->len[0], &ctr), KH_ERR_VERSION);
		blob[0] = 'X';
		assert_int_equal(kh_module_load(b.m, blob, cap->len[0], 0), KH_ERR_FORMAT);
		free(blob);
	}
	assert_int_equal(info_of(&b.t).lifecycle, 2);
	assert_int_equal(kh_module_counter(b.m), 2);
	raw_free(&c);
	raw_free(&a);
	raw_free(&b);
	free(cap);
	free(cap2);
	free(iss);
}

/* ---- store failure: the command is refused and the module is as before ---- */

static void test_store_failure(void **state)
{
	struct world *w = *state;
	struct capture *cap = calloc(1, sizeof *cap);
	struct kh_issued *iss = calloc(1, sizeof *iss);
	uint8_t root[32], resp[KH_APDU_MAX_RESP];
	struct kh_module_info i;
	struct raw a;
	size_t dlen;
	assert_non_null(cap);
	assert_non_null(iss);
	memset(root, 0x24, sizeof root);

	/* every store fails: PERSO INIT answers 6581 and the module is still blank */
	raw_new(&a, root, cap);
	cap->fail_from = 1;
	{
		uint8_t buf[256], kp[32], ku[32], rpk[32];
		struct kh_wr pw;
		uint32_t ua;
		assert_int_equal(kh_authority_next_ua(w->auth, &ua), KH_OK);
		assert_int_equal(kh_authority_card_keys(w->auth, ua, kp, ku), KH_OK);
		kh_authority_root_pk(w->auth, rpk);
		kh_wr_init(&pw, buf, sizeof buf);
		kh_tlv_put_u8(&pw, 1, KH_ROLE_CARD);
		kh_tlv_put_u32(&pw, 2, ua);
		kh_tlv_put(&pw, 3, rpk, 32);
		kh_tlv_put(&pw, 4, kp, 32);
		assert_int_equal(kh_tlv_put(&pw, 5, ku, 32), KH_OK);
		assert_int_equal(
			send_apdu(&a.t, KH_CLA, KH_INS_PERSO_INIT, 0, 0, buf, pw.len, resp, sizeof resp, &dlen),
			kh_err_to_sw(KH_ERR_STORE));
		assert_int_equal(kh_err_to_sw(KH_ERR_STORE), 0x6581);
		assert_int_equal(dlen, 0); /* no public key leaks out of a refused command */
		kh_wipe(kp, sizeof kp);
		kh_wipe(ku, sizeof ku);
	}
	assert_int_equal(cap->calls, 1);
	assert_int_equal(cap->n, 0);
	i = info_of(&a.t);
	assert_int_equal(i.lifecycle, 0);
	assert_int_equal(i.role, 0);
	assert_int_equal(i.ua, 0);
	assert_int_equal(i.counter, 0);
	assert_int_equal(kh_module_counter(a.m), 0);
	assert_int_equal(kh_authority_personalise(w->auth, &a.t, KH_ROLE_CARD, 0, iss), KH_ERR_STORE);
	assert_int_equal(info_of(&a.t).lifecycle, 0);

	/* the store works again: personalisation goes through, counters start at 1 */
	cap->fail_from = 0;
	assert_int_equal(kh_authority_personalise(w->auth, &a.t, KH_ROLE_CARD, 0, iss), KH_OK);
	assert_int_equal(cap->n, 2);
	assert_int_equal(cap->ctr[0], 1);
	assert_int_equal(cap->ctr[1], 2);
	assert_int_equal(info_of(&a.t).lifecycle, 2);
	raw_free(&a);

	/* only the second store (PERSO CERTS) fails: keyed, not in service, counter 1 */
	memset(cap, 0, sizeof *cap);
	raw_new(&a, root, cap);
	cap->fail_only = 2;
	assert_int_equal(kh_authority_personalise(w->auth, &a.t, KH_ROLE_CARD, 0, iss), KH_ERR_STORE);
	i = info_of(&a.t);
	assert_int_equal(i.lifecycle, 1);
	assert_int_equal(i.counter, 1);
	assert_int_equal(kh_module_counter(a.m), 1);
	assert_int_equal(cap->n, 1);
	assert_int_equal(send_apdu(&a.t, KH_CLA, KH_INS_GET_CERT, 0, 0, NULL, 0, resp, sizeof resp, &dlen),
			 kh_err_to_sw(KH_ERR_NOT_PERSONALISED));
	memset(resp, 0, 16);
	assert_int_equal(send_apdu(&a.t, KH_CLA, KH_INS_PAIR_OPEN, 0, 0, resp, 10, resp, sizeof resp, &dlen),
			 kh_err_to_sw(KH_ERR_NOT_PERSONALISED));
	/* the same certificates again, with the store back: in service, counter 2 */
	assert_int_equal(perso_certs(&a.t, iss->sign_der, iss->sign_len, iss->pair_der, iss->pair_len), 0x9000);
	i = info_of(&a.t);
	assert_int_equal(i.lifecycle, 2);
	assert_int_equal(i.counter, 2);
	assert_int_equal(cap->n, 2);
	assert_int_equal(cap->ctr[1], 2);
	/* and the state stored last loads into a fresh module */
	{
		struct raw b;
		struct capture *cap2 = calloc(1, sizeof *cap2);
		assert_non_null(cap2);
		raw_new(&b, root, cap2);
		assert_int_equal(kh_module_load(b.m, cap->blob[1], cap->len[1], 2), KH_OK);
		assert_int_equal(info_of(&b.t).lifecycle, 2);
		raw_free(&b);
		free(cap2);
	}
	raw_free(&a);
	free(cap);
	free(iss);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_perso, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_perso_cert_key, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_dispatch, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_host_pairing, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_swap, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_card_removed, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_pair_refused, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_tamper, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_tamper_card_side, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_rekey_age, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_state_files, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_rollback, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_store_failure, world_setup, world_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
