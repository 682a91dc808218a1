/*
 * The module runtime (src/module/) driven only with APDUs, as a reader would: personalisation by
 * a real authority, the dispatch rules, and the sealed state store (softmodule files and the raw
 * kh_module_load API: tampering, truncation, rollback, store failure). And the applet registry's
 * own rules, read from the registry itself (module/module_int.h).
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
#include "keyhole/device.h"
#include "keyhole/file.h"
#include "keyhole/host.h"
#include "keyhole/module.h"
#include "keyhole/pair.h"
#include "keyhole/softmodule.h"
#include "keyhole/transport.h"
#include "module/module_int.h"
#include "testutil.h"
#include "world.h"

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

/* ---- the personalisation station's refusals leave the authority as it was ---- */

/* What a refused run must not change: next-ua and the names in issued/, as one string. */
static char *authority_state(const char *dir)
{
	char cmd[4200], *out = NULL;
	size_t cap = 0, n = 0;
	FILE *f;
	int c;

	snprintf(cmd, sizeof cmd, "cd '%s' && cat next-ua && ls issued", dir);
	f = popen(cmd, "r");
	assert_non_null(f);
	while ((c = fgetc(f)) != EOF) {
		if (n + 2 > cap) {
			cap = cap ? cap * 2 : 256;
			out = realloc(out, cap);
			assert_non_null(out);
		}
		out[n++] = (char)c;
	}
	assert_int_equal(pclose(f), 0);
	assert_non_null(out);
	out[n] = '\0';
	return out;
}

static void assert_authority_state(const char *dir, const char *want)
{
	char *now = authority_state(dir);
	assert_string_equal(now, want);
	free(now);
}

static kh_err broken_xfer(void *ctx, const uint8_t *cmd, size_t len, uint8_t *resp, size_t cap, size_t *rlen)
{
	(void)ctx, (void)cmd, (void)len, (void)resp, (void)cap, (void)rlen;
	return KH_ERR_TRANSPORT;
}

/* A module that answers everything with 9000 and no data: a GET INFO that names no lifecycle. */
static kh_err mute_xfer(void *ctx, const uint8_t *cmd, size_t len, uint8_t *resp, size_t cap, size_t *rlen)
{
	(void)ctx, (void)cmd, (void)len;
	assert_true(cap >= 2);
	resp[0] = 0x90;
	resp[1] = 0x00;
	*rlen = 2;
	return KH_OK;
}

static void test_perso_refused_unchanged(void **state)
{
	struct world *w = *state;
	struct kh_issued *iss = calloc(1, sizeof *iss);
	struct kh_transport broken = {.xfer = broken_xfer}, mute = {.xfer = mute_xfer};
	struct mod keyed = {0};
	uint8_t sign_pk[32], pair_pk[32];
	uint32_t ua;
	char *before;
	assert_non_null(iss);

	/* a module left with keys made (PERSO INIT done, no certificates) */
	make_mod(NULL, KH_ROLE_NONE, &keyed);
	assert_int_equal(kh_authority_next_ua(w->auth, &ua), KH_OK);
	perso_init(w, &keyed.t, KH_ROLE_CARD, ua, sign_pk, pair_pk);
	assert_keyed(&keyed.t, ua);

	before = authority_state(w->auth_dir);
	/* personalised: refused, with the next UA or one asked for */
	assert_int_equal(kh_authority_personalise(w->auth, &w->c1.t, KH_ROLE_CARD, 0, iss), KH_ERR_PERSONALISED);
	assert_authority_state(w->auth_dir, before);
	assert_int_equal(kh_authority_personalise(w->auth, &w->c1.t, KH_ROLE_CAM, 0x5000, iss), KH_ERR_PERSONALISED);
	assert_authority_state(w->auth_dir, before);
	/* keys made: refused too, and it stays as it was */
	assert_int_equal(kh_authority_personalise(w->auth, &keyed.t, KH_ROLE_CARD, 0, iss), KH_ERR_PERSONALISED);
	assert_authority_state(w->auth_dir, before);
	assert_keyed(&keyed.t, ua);
	/* no module at the end of the transport; one whose GET INFO says nothing */
	assert_int_equal(kh_authority_personalise(w->auth, &broken, KH_ROLE_CARD, 0, iss), KH_ERR_TRANSPORT);
	assert_int_equal(kh_authority_personalise(w->auth, &mute, KH_ROLE_CARD, 0, iss), KH_ERR_FORMAT);
	assert_authority_state(w->auth_dir, before);
	/* and a blank one still takes the next UA */
	assert_int_equal(kh_authority_personalise(w->auth, &w->blank.t, KH_ROLE_CARD, 0, iss), KH_OK);
	assert_int_equal(iss->ua, ua + 1);
	assert_int_equal(info_of(&w->blank.t).lifecycle, 2);
	free(before);
	free(iss);
	kh_softmod_free(keyed.sm);
}

/* Forwards to a module, but the answer to PERSO INIT is lost: the module took the keys. */
static kh_err lossy_xfer(void *ctx, const uint8_t *cmd, size_t len, uint8_t *resp, size_t cap, size_t *rlen)
{
	kh_err r = kh_transport_xfer(ctx, cmd, len, resp, cap, rlen);
	return r == KH_OK && len > 1 && cmd[1] == KH_INS_PERSO_INIT ? KH_ERR_TRANSPORT : r;
}

/*
 * A personalisation that fails once PERSO INIT has gone out spends its UA for good: the module
 * may hold that UA's keys, so neither --ua nor the next UA hands it out again.
 */
static void test_perso_failed_ua_spent(void **state)
{
	struct world *w = *state;
	struct kh_issued *iss = calloc(1, sizeof *iss);
	struct mod fresh = {0};
	struct kh_transport lossy = {.xfer = lossy_xfer};
	uint32_t n;
	assert_non_null(iss);

	make_mod(NULL, KH_ROLE_NONE, &fresh);
	lossy.ctx = &fresh.t;
	assert_int_equal(kh_authority_personalise(w->auth, &lossy, KH_ROLE_CARD, 0x6000, iss), KH_ERR_TRANSPORT);
	assert_keyed(&fresh.t, 0x6000);
	assert_int_equal(kh_authority_ua_free(w->auth, 0x6000), KH_ERR_EXISTS);
	assert_int_equal(kh_authority_personalise(w->auth, &w->blank.t, KH_ROLE_CAM, 0x6000, iss), KH_ERR_EXISTS);
	assert_int_equal(info_of(&w->blank.t).lifecycle, 0);
	/* the next UA passes over one spent by hand meanwhile */
	assert_int_equal(kh_authority_next_ua(w->auth, &n), KH_OK);
	assert_int_equal(kh_authority_ua_spend(w->auth, n + 1, KH_ROLE_CARD), KH_OK);
	assert_int_equal(kh_authority_ua_spend(w->auth, n + 1, KH_ROLE_CARD), KH_ERR_EXISTS);
	assert_int_equal(kh_authority_personalise(w->auth, &w->blank.t, KH_ROLE_CARD, 0, iss), KH_OK);
	assert_int_equal(iss->ua, n + 2);
	free(iss);
	kh_softmod_free(fresh.sm);
}

/* A blank module written as a file (card blank), opened again, personalised in place. */
static void test_blank_file(void **state)
{
	struct world *w = *state;
	struct kh_issued *iss = calloc(1, sizeof *iss);
	struct kh_softmod *sm = NULL;
	struct kh_transport t;
	struct kh_module_info i;
	char *card = path_in(w->dir, "plastic.card"), *key = path_in(w->dir, "plastic.key");
	uint8_t *d = NULL;
	size_t n = 0;
	assert_non_null(iss);

	assert_int_equal(kh_module_seal(NULL), KH_ERR_INVAL);
	assert_int_equal(kh_softmod_new_blank(&sm), KH_OK);
	assert_int_equal(kh_softmod_save(sm, card, NULL), KH_OK);
	/* saved once only */
	assert_int_equal(kh_softmod_save(sm, card, NULL), KH_ERR_INVAL);
	kh_softmod_free(sm);
	sm = NULL;
	assert_int_equal(kh_file_read(key, 256, &d, &n), KH_OK);
	kh_file_free(d, n);

	assert_int_equal(kh_softmod_open(card, NULL, &sm, NULL), KH_OK);
	kh_transport_inproc(&t, kh_softmod_module(sm));
	i = info_of(&t);
	assert_int_equal(i.lifecycle, 0);
	assert_int_equal(i.role, 0);
	assert_int_equal(i.ua, 0);
	assert_int_equal(i.counter, 1);
	assert_int_equal(kh_authority_personalise(w->auth, &t, KH_ROLE_CAM, 0, iss), KH_OK);
	kh_softmod_free(sm);
	sm = NULL;

	/* the file holds the personalisation */
	assert_int_equal(kh_softmod_open(card, NULL, &sm, NULL), KH_OK);
	kh_transport_inproc(&t, kh_softmod_module(sm));
	i = info_of(&t);
	assert_int_equal(i.lifecycle, 2);
	assert_int_equal(i.role, KH_ROLE_CAM);
	assert_int_equal(i.ua, iss->ua);
	assert_int_equal(i.counter, 3);
	kh_softmod_free(sm);
	free(card);
	free(key);
	free(iss);
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
	assert_int_equal(send_apdu(&w->c1.t, KH_CLA, 0x4E, 0, 0, NULL, 0, resp, sizeof resp, &dlen), 0x6D00);
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
	r = kh_softmod_open(card, key, &s, NULL);
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
	/* (saved blank, it would be the module `card blank` writes: test_blank_file) */
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
	assert_int_equal(kh_softmod_open(card, NULL, &s, NULL), KH_OK);
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

	/* the counter file: higher than the blob -> ROLLBACK; equal or lower -> fine; absent -> refused */
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
			assert_int_equal(kh_softmod_open(card, NULL, &s, NULL), KH_OK);
			kh_softmod_free(s);
			s = NULL;
		}
	}
	/* no counter file: an old copy of the card could not be told from the current one */
	assert_int_equal(unlink(ctr), 0);
	{
		enum kh_softmod_file which = KH_SOFTMOD_CARD;
		assert_int_equal(kh_softmod_open(card, NULL, &s, &which), KH_ERR_COUNTER_MISSING);
		assert_int_equal(which, KH_SOFTMOD_COUNTER);
		assert_null(s);
	}
	/* missing card file */
	assert_int_equal(unlink(card), 0);
	assert_int_equal(kh_softmod_open(card, NULL, &s, NULL), KH_ERR_NOTFOUND);
	assert_null(s);

	kh_file_free(orig, n);
	free(bad);
	free(card);
	free(key);
	free(key2);
	free(ctr);
	free(iss);
}

/*
 * One module file, one process at a time. A second opener (here, the same process) is refused
 * while the first holds it, and told who holds it. And the lost update the lock exists for: a
 * copy of the files that made its own state change and was copied back behind the holder's back
 * (a process that ignored the lock) is never overwritten by the holder's older state.
 */
static void test_module_lock(void **state)
{
	struct world *w = *state;
	struct kh_softmod *a = NULL, *b = NULL, *c = NULL;
	struct kh_issued *iss = calloc(1, sizeof *iss);
	char *card = path_in(w->dir, "l.card"), *ctr = path_in(w->dir, "l.card.ctr");
	char *card2 = path_in(w->dir, "m.card"), *key2 = path_in(w->dir, "m.key"), *ctr2 = path_in(w->dir, "m.card.ctr");
	uint8_t cmds[64], emm[KH_EMM_MAX], resp[KH_APDU_MAX_RESP], *d, *theirs;
	size_t n, dn, tn, dlen;
	struct kh_transport t;
	struct kh_wr wr;
	uint16_t sw;
	assert_non_null(iss);

	assert_int_equal(kh_softmod_new_blank(&a), KH_OK);
	kh_transport_inproc(&t, kh_softmod_module(a));
	assert_int_equal(kh_authority_personalise(w->auth, &t, KH_ROLE_CARD, 0, iss), KH_OK);
	assert_int_equal(kh_softmod_save(a, card, NULL), KH_OK);
	kh_softmod_free(a);

	/* held: a second open is refused, the holder named; released: it opens */
	assert_int_equal(kh_softmod_open(card, NULL, &a, NULL), KH_OK);
	assert_int_equal(kh_softmod_open(card, NULL, &b, NULL), KH_ERR_MODULE_BUSY);
	assert_null(b);
	assert_int_equal(kh_softmod_holder(card, NULL), (long)getpid());
	kh_softmod_free(a);
	assert_int_equal(kh_softmod_holder(card, NULL), 0);
	assert_int_equal(kh_softmod_open(card, NULL, &a, NULL), KH_OK);

	/* behind a's back: a copy of the files, opened elsewhere, takes an EMM (credit +10) ... */
	read_all(card, &d, &dn);
	write_plain(card2, d, dn, 0600);
	kh_file_free(d, dn);
	{
		char *key = path_in(w->dir, "l.key");
		read_all(key, &d, &dn);
		write_plain(key2, d, dn, 0600);
		kh_file_free(d, dn);
		read_all(ctr, &d, &dn);
		write_plain(ctr2, d, dn, 0600);
		kh_file_free(d, dn);
		free(key);
	}
	assert_int_equal(kh_softmod_open(card2, NULL, &c, NULL), KH_OK);
	kh_transport_inproc(&t, kh_softmod_module(c));
	kh_wr_init(&wr, cmds, sizeof cmds);
	assert_int_equal(kh_emm_put_add_credit(&wr, 10, 1), KH_OK);
	n = world_emm(w->auth, iss->ua, 1, cmds, wr.len, emm, sizeof emm);
	assert_int_equal(kh_host_apdu(&t, KH_INS_EMM, 0, emm, n, resp, sizeof resp, &dlen, &sw), KH_OK);
	kh_softmod_free(c);
	/* ... and is copied back over a's file */
	read_all(card2, &theirs, &tn);
	write_plain(card, theirs, tn, 0600);
	read_all(ctr2, &d, &dn);
	write_plain(ctr, d, dn, 0600);
	kh_file_free(d, dn);
	/* a's own change (credit +20, from its older state) is refused, and their file stays */
	kh_transport_inproc(&t, kh_softmod_module(a));
	kh_wr_init(&wr, cmds, sizeof cmds);
	assert_int_equal(kh_emm_put_add_credit(&wr, 20, 1), KH_OK);
	n = world_emm(w->auth, iss->ua, 1, cmds, wr.len, emm, sizeof emm);
	assert_int_equal(kh_host_apdu(&t, KH_INS_EMM, 0, emm, n, resp, sizeof resp, &dlen, &sw),
			 KH_ERR_MODULE_CHANGED);
	read_all(card, &d, &dn);
	assert_int_equal(dn, tn);
	assert_memory_equal(d, theirs, tn);
	kh_file_free(d, dn);
	kh_softmod_free(a);
	/* opened again, the module is theirs: their EMM applied, so seq 1 is a replay */
	assert_int_equal(kh_softmod_open(card, NULL, &a, NULL), KH_OK);
	kh_transport_inproc(&t, kh_softmod_module(a));
	assert_int_equal(kh_host_apdu(&t, KH_INS_EMM, 0, emm, n, resp, sizeof resp, &dlen, &sw), KH_ERR_EMM_REPLAY);
	kh_softmod_free(a);

	kh_file_free(theirs, tn);
	free(card);
	free(ctr);
	free(card2);
	free(key2);
	free(ctr2);
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
	assert_memory_equal(cap->blob[1], "KHMS\x02", 5);

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
		blob[4] = 3; /* a version this build does not know */
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
	/* a failed store uses its counter up: it may have reached the disk all the same */
	assert_int_equal(i.counter, 1);
	assert_int_equal(kh_module_counter(a.m), 1);
	assert_int_equal(kh_authority_personalise(w->auth, &a.t, KH_ROLE_CARD, 0, iss), KH_ERR_STORE);
	assert_int_equal(info_of(&a.t).lifecycle, 0);
	assert_int_equal(kh_module_counter(a.m), 2);

	/* the store works again: personalisation goes through, counters after the ones used up */
	cap->fail_from = 0;
	assert_int_equal(kh_authority_personalise(w->auth, &a.t, KH_ROLE_CARD, 0, iss), KH_OK);
	assert_int_equal(cap->n, 2);
	assert_int_equal(cap->ctr[0], 3);
	assert_int_equal(cap->ctr[1], 4);
	assert_int_equal(info_of(&a.t).lifecycle, 2);
	raw_free(&a);

	/* only the second store (PERSO CERTS) fails: keyed, not in service, counter 2 used up */
	memset(cap, 0, sizeof *cap);
	raw_new(&a, root, cap);
	cap->fail_only = 2;
	assert_int_equal(kh_authority_personalise(w->auth, &a.t, KH_ROLE_CARD, 0, iss), KH_ERR_STORE);
	i = info_of(&a.t);
	assert_int_equal(i.lifecycle, 1);
	assert_int_equal(i.counter, 2);
	assert_int_equal(kh_module_counter(a.m), 2);
	assert_int_equal(cap->n, 1);
	assert_int_equal(send_apdu(&a.t, KH_CLA, KH_INS_GET_CERT, 0, 0, NULL, 0, resp, sizeof resp, &dlen),
			 kh_err_to_sw(KH_ERR_NOT_PERSONALISED));
	memset(resp, 0, 16);
	assert_int_equal(send_apdu(&a.t, KH_CLA, KH_INS_PAIR_OPEN, 0, 0, resp, 10, resp, sizeof resp, &dlen),
			 kh_err_to_sw(KH_ERR_NOT_PERSONALISED));
	/* the same certificates again, with the store back: in service, counter 3 */
	assert_int_equal(perso_certs(&a.t, iss->sign_der, iss->sign_len, iss->pair_der, iss->pair_len), 0x9000);
	i = info_of(&a.t);
	assert_int_equal(i.lifecycle, 2);
	assert_int_equal(i.counter, 3);
	assert_int_equal(cap->n, 2);
	assert_int_equal(cap->ctr[1], 3);
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

/* ---- the registry: every instruction handled once, every section its own ---- */

static void test_registry(void **state)
{
	static const uint8_t every_ins[] = {
		KH_INS_GET_INFO,   KH_INS_ECHO,       KH_INS_PAIR_OPEN,   KH_INS_GET_CERT,  KH_INS_SEALED,
		KH_INS_CAM_AUTH,   KH_INS_PERSO_INIT, KH_INS_PERSO_CERTS, KH_INS_CARD_START, KH_INS_CARD_RESP,
		KH_INS_CARD_SEND,  KH_INS_LADDER_LOAD, KH_INS_DESCRAMBLE, KH_INS_ECM,       KH_INS_PURCHASE,
		KH_INS_EMM,        KH_INS_CAS_STATUS, KH_INS_CAS_FLUSH,   KH_INS_EXPORT,    KH_INS_HELLO,
		KH_INS_DIST_HELLO, KH_INS_DIST_AUTH,  KH_INS_DIST_KEY,    KH_INS_DIST_ACTIVATE,
		KH_INS_RUN_OPEN,   KH_INS_RUN_CHUNK,  KH_INS_RUN_CLOSE,  KH_INS_BUY_START, KH_INS_BUY_FINISH,
		KH_INS_BUY_NOTICE, KH_INS_BUY_CANCEL, KH_INS_BUY_LIST,   KH_INS_CONTENT_OPEN, KH_INS_CONTENT_CHUNK,
		KH_INS_CONTENT_CLOSE, KH_INS_BUY_COMBINE, KH_INS_KC_ENROL, KH_INS_KC_SEND, KH_INS_KC_ACK,
		KH_INS_KC_OPEN,    KH_INS_KC_HELLO,   KH_INS_KC_STATUS,
	};
	unsigned owners[256] = {0}, ids[256] = {0}, v1 = 0, total = 0;
	size_t role_max[32];

	for (unsigned r = 0; r < 32; r++)
		role_max[r] = KH_RUNTIME_STATE_MAX;

	(void)state;
	assert_true(kh__napplets > 0 && kh__napplets <= 64);
	for (size_t i = 0; i < kh__napplets; i++) {
		const struct kh_applet *ap = kh__applets[i];
		const struct kh_applet_state *st = ap->state;
		assert_non_null(ap->name);
		assert_true(ap->nins > 0);
		for (size_t j = 0; j < ap->nins; j++) {
			assert_non_null(ap->ins[j].fn);
			assert_true(ap->ins[j].flags & (KH_INSF_PLAIN | KH_INSF_SEALED));
			owners[ap->ins[j].ins]++;
			total++;
		}
		if (!st)
			continue;
		assert_true(st->id != 0);
		assert_int_equal(ids[st->id]++, 0);
		assert_true(st->version >= 1);
		assert_true(st->save && st->load && st->reset);
		assert_true(st->max_len + 3 <= 0xFFFF);
		assert_int_equal(st->flags & ~(KH_SECTION_OPTIONAL | KH_SECTION_V1), 0);
		v1 += (st->flags & KH_SECTION_V1) != 0;
		for (unsigned r = 0; r < 32; r++)
			if (st->roles & (1u << r))
				role_max[r] += KH_SECTION_HDR_LEN + st->max_len;
	}
	/* one applet per instruction, and none of the instruction set lost */
	for (size_t i = 0; i < 256; i++)
		assert_true(owners[i] <= 1);
	for (size_t i = 0; i < sizeof every_ins; i++)
		assert_int_equal(owners[every_ins[i]], 1);
	assert_int_equal(total, sizeof every_ins);
	/* the flat format's tail belongs to one applet; every section of a role (a module stores its
	 * own role's only) at its largest fits a blob */
	assert_int_equal(v1, 1);
	for (unsigned r = 0; r < 32; r++)
		assert_true(role_max[r] <= KH_STATE_PLAIN_MAX);
}

/*
 * The applets' volatile state is the applets' own: a module that loads a state forgets every
 * channel, ladder key, descrambler key and command in flight (each applet's drop), and a load that
 * is refused leaves them as they were. Set by hand here, since no command sequence reaches every
 * field at once.
 */
static void test_volatile_dropped(void **state)
{
	struct world *w = *state;
	struct capture *cap = calloc(1, sizeof *cap);
	struct kh_issued *iss = calloc(1, sizeof *iss);
	struct kh_applet_vol *zero = calloc(1, sizeof *zero), *before = calloc(1, sizeof *before);
	uint8_t root[32];
	struct raw a;
	assert_non_null(cap);
	assert_non_null(iss);
	assert_non_null(zero);
	assert_non_null(before);
	memset(root, 0x42, sizeof root);
	raw_new(&a, root, cap);
	assert_int_equal(kh_authority_personalise(w->auth, &a.t, KH_ROLE_DECODER, 0, iss), KH_OK);
	assert_int_equal(cap->n, 2);

	memset(&a.m->vol, 0x5A, sizeof a.m->vol);
	memcpy(before, &a.m->vol, sizeof *before);
	/* refused (an older counter than the module's own): nothing forgotten */
	assert_int_equal(kh_module_load(a.m, cap->blob[0], cap->len[0], 0), KH_ERR_ROLLBACK);
	assert_memory_equal(&a.m->vol, before, sizeof *before);
	/* loaded: every applet's volatile slot is blank, as after a power cycle */
	assert_int_equal(kh_module_load(a.m, cap->blob[1], cap->len[1], 0), KH_OK);
	assert_memory_equal(&a.m->vol.pair, &zero->pair, sizeof zero->pair);
	assert_memory_equal(&a.m->vol.cam, &zero->cam, sizeof zero->cam);
	assert_memory_equal(&a.m->vol.dec, &zero->dec, sizeof zero->dec);
	assert_memory_equal(&a.m->vol.proc, &zero->proc, sizeof zero->proc);
	assert_memory_equal(&a.m->vol.buy, &zero->buy, sizeof zero->buy);
	/* and the applets agree: nothing to descramble with, no channel to send on */
	{
		uint8_t pk[188] = {0x47}, resp[256];
		size_t dl;
		assert_int_equal(send_apdu(&a.t, KH_CLA, KH_INS_CARD_SEND, 0, 0, pk, 8, resp, sizeof resp, &dl),
				 kh_err_to_sw(KH_ERR_NOT_PAIRED));
	}
	raw_free(&a);
	free(before);
	free(zero);
	free(iss);
	free(cap);
}

/* An instruction of an applet a module's role does not run is unknown to it, whatever its
 * arguments: the registry's role mask refuses it before any handler looks at the command. */
static void test_roles_refused(void **state)
{
	struct world *w = *state;
	static const struct {
		uint8_t ins;
		uint32_t roles;
	} want[] = {
		{KH_INS_ECM, 1u << KH_ROLE_CARD},
		{KH_INS_EMM, 1u << KH_ROLE_CARD},
		{KH_INS_CAS_STATUS, 1u << KH_ROLE_CARD},
		{KH_INS_EXPORT, 1u << KH_ROLE_CARD},
		{KH_INS_CAM_AUTH, 1u << KH_ROLE_CARD | 1u << KH_ROLE_CAM},
		{KH_INS_CARD_START, 1u << KH_ROLE_CAM | 1u << KH_ROLE_DECODER},
		{KH_INS_LADDER_LOAD, 1u << KH_ROLE_DECODER},
		{KH_INS_BUY_START, 1u << KH_ROLE_BUYER},
		{KH_INS_CONTENT_CHUNK, 1u << KH_ROLE_BUYER},
		{KH_INS_KC_SEND, 1u << KH_ROLE_KEYCARD},
		{KH_INS_KC_OPEN, 1u << KH_ROLE_KEYCARD},
		{KH_INS_GET_INFO, 0},
	};
	struct mod *mods[] = {&w->c1, &w->cam, &w->dec};
	uint8_t resp[64], junk[4] = {1, 2, 3, 4};
	size_t dl;

	for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
		const struct kh_applet_ins *e = NULL;
		for (size_t k = 0; k < kh__napplets; k++)
			for (size_t j = 0; j < kh__applets[k]->nins; j++)
				if (kh__applets[k]->ins[j].ins == want[i].ins)
					e = &kh__applets[k]->ins[j];
		assert_non_null(e);
		assert_int_equal(e->roles, want[i].roles);
		if (!want[i].roles || !(e->flags & KH_INSF_PLAIN))
			continue;
		/* bad P1 and P2 too: the role is refused first */
		for (size_t m = 0; m < sizeof mods / sizeof mods[0]; m++) {
			uint32_t role = info_of(&mods[m]->t).role;
			if (want[i].roles & (1u << role))
				continue;
			assert_int_equal(send_apdu(&mods[m]->t, KH_CLA, want[i].ins, 7, 7, junk, sizeof junk, resp,
						   sizeof resp, &dl),
					 kh_err_to_sw(KH_ERR_APDU_INS));
			assert_int_equal(dl, 0);
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_perso, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_perso_cert_key, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_perso_refused_unchanged, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_perso_failed_ua_spent, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_blank_file, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_dispatch, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_state_files, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_module_lock, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_rollback, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_store_failure, world_setup, world_teardown),
		cmocka_unit_test(test_registry),
		cmocka_unit_test_setup_teardown(test_volatile_dropped, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_roles_refused, world_setup, world_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
