/* The shared test world (world.h). */
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
#include "keyhole/cas.h"
#include "keyhole/crypto.h"
#include "keyhole/device.h"
#include "keyhole/file.h"
#include "keyhole/host.h"
#include "keyhole/module.h"
#include "keyhole/pair.h"
#include "keyhole/softmodule.h"
#include "keyhole/transport.h"
#include "testutil.h"
#include "world.h"

/* ---- the world: two operators, a CAM, two cards, a foreign card, a blank module ---- */

char *path_in(const char *dir, const char *name)
{
	size_t n = strlen(dir) + strlen(name) + 2;
	char *p = malloc(n);
	assert_non_null(p);
	snprintf(p, n, "%s/%s", dir, name);
	return p;
}

/* A module held in memory, personalised by a (or left blank when a is NULL). */
void make_mod(struct kh_authority *a, enum kh_role role, struct mod *m)
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

int world_setup(void **state)
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
	make_mod(w->auth, KH_ROLE_DECODER, &w->dec);
	make_mod(w->auth, KH_ROLE_CARD, &w->c1);
	make_mod(w->auth, KH_ROLE_CARD, &w->c2);
	make_mod(w->foreign, KH_ROLE_CARD, &w->fx);
	make_mod(NULL, KH_ROLE_NONE, &w->blank);
	*state = w;
	return 0;
}

int world_teardown(void **state)
{
	struct world *w = *state;
	struct mod *all[] = {&w->cam, &w->dec, &w->c1, &w->c2, &w->fx, &w->blank};
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
uint16_t xfer_raw(struct kh_transport *t, const uint8_t *cmd, size_t len, uint8_t *resp, size_t cap,
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
uint16_t send_apdu(struct kh_transport *t, uint8_t cla, uint8_t ins, uint8_t p1, uint8_t p2,
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

struct kh_module_info info_of(struct kh_transport *t)
{
	struct kh_module_info i;
	memset(&i, 0xEE, sizeof i);
	assert_int_equal(kh_host_info(t, &i), KH_OK);
	return i;
}

void build_echo(const uint8_t *msg, size_t n, uint8_t *inner, size_t cap, size_t *len)
{
	struct kh_wr w;
	kh_wr_init(&w, inner, cap);
	assert_int_equal(kh_apdu_build(&w, KH_CLA, KH_INS_ECHO, 0, 0, msg, n, 0), KH_OK);
	*len = w.len;
}

/* ECHO a fresh random message to the card through the CAM; the answer must be msg || 9000. */
kh_err card_echo(struct kh_transport *cam, struct kh_transport *card)
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
kh_err link_echo(struct kh_link *l, struct kh_transport *cam, uint64_t now)
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

void pair_cam_card(struct world *w, struct mod *card)
{
	uint32_t ua = 0;
	assert_int_equal(kh_host_pair_cam_card(&w->cam.t, &card->t, &ua), KH_OK);
	assert_int_equal(ua, card->ua);
}

/* The CAM has no link to any card. */
void assert_cam_unpaired(struct world *w)
{
	struct kh_module_info i = info_of(&w->cam.t);
	assert_int_equal(i.link_state, KH_LINK_IDLE);
	assert_int_equal(i.peer_ua, 0);
}

/* ---- a transport an attacker controls, in front of a card ---- */

kh_err tap_xfer(void *ctx, const uint8_t *cmd, size_t len, uint8_t *resp, size_t cap, size_t *rlen)
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

struct tap *tap_new(struct kh_transport *card, struct kh_transport *out)
{
	struct tap *t = calloc(1, sizeof *t);
	assert_non_null(t);
	t->card = card;
	out->xfer = tap_xfer;
	out->close = NULL;
	out->ctx = t;
	return t;
}


/* The operator's signer of a role: its key (sg, may be NULL) and certificate. */
size_t world_signer(struct kh_authority *a, enum kh_role role, struct kh_cas_signer *sg, uint8_t der[KH_CERT_MAX])
{
	size_t len = 0;
	assert_int_equal(kh_authority_signer_load(kh_authority_dir(a), role, sg, der, KH_CERT_MAX, &len), KH_OK);
	return len;
}

static struct kh_cas_signer ecm_signer;

const struct kh_cas_signer *world_ecm_signer(struct kh_authority *a)
{
	world_signer(a, KH_ROLE_ECM_SIGNER, &ecm_signer, NULL);
	return &ecm_signer;
}

size_t world_emm(struct kh_authority *a, uint32_t ua, uint32_t seq, const uint8_t *cmds, size_t n, uint8_t *out,
		 size_t cap)
{
	uint8_t kp[32], ku[32], der[KH_CERT_MAX], all[KH_EMM_CMDS_MAX];
	struct kh_emm_hdr h = {0, KH_EMM_UNIQUE, ua, seq, 0};
	struct kh_wr w;
	size_t len = 0;

	/* A card's first EMM also carries the operator's signers, as the center's first EMM does. */
	kh_wr_init(&w, all, sizeof all);
	if (seq == 1) {
		size_t dl = world_signer(a, KH_ROLE_ECM_SIGNER, NULL, der);
		kh_emm_put_set_signer(&w, der, dl);
		dl = world_signer(a, KH_ROLE_EMM_SIGNER, NULL, der);
		kh_emm_put_set_signer(&w, der, dl);
	}
	kh_wr_bytes(&w, cmds, n);
	assert_int_equal(w.err, KH_OK);
	assert_int_equal(kh_authority_card_keys(a, ua, kp, ku), KH_OK);
	assert_int_equal(kh_emm_seal(kp, &h, all, w.len, out, cap, &len), KH_OK);
	kh_wipe(all, sizeof all);
	kh_wipe(kp, sizeof kp);
	kh_wipe(ku, sizeof ku);
	return len;
}
