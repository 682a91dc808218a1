/*
 * Seed 000 between decoder, CAM and cards through the host helpers (src/host/relay.c): pairing,
 * the swapped card detected on the next answer, a card pulled mid-command, refusals, an
 * attacker's transport that replays, alters and cuts bytes, and the re-key by age.
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
#include "world.h"

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
		assert_int_equal(ctr, 1 + 4u); /* counter 1 was CAM AUTH */
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
	assert_int_equal(tp->n_sealed, 1); /* CAM AUTH */
	assert_int_equal(card_echo(&w->cam.t, &tt), KH_OK);

	/* one second before the limit: the same keys */
	kh_softmod_set_time(w->cam.sm, t0 + KH_CHAN_MAX_AGE - 1);
	assert_int_equal(card_echo(&w->cam.t, &tt), KH_OK);
	assert_int_equal(tp->n_pair_open, 1);
	assert_int_equal(tp->n_sealed, 3);

	/* at the limit: GET CERT, PAIR OPEN, CAM AUTH, then the waiting command, in one kh_host_card_cmd */
	kh_softmod_set_time(w->cam.sm, t0 + KH_CHAN_MAX_AGE);
	assert_int_equal(card_echo(&w->cam.t, &tt), KH_OK);
	assert_int_equal(tp->n_get_cert, 2); /* checked again: it may have expired */
	assert_int_equal(tp->n_pair_open, 2);
	assert_int_equal(tp->n_sealed, 5);
	assert_int_equal(info_of(&w->cam.t).peer_ua, w->c1.ua);
	assert_int_equal(info_of(&w->cam.t).link_state, KH_LINK_OPEN);
	assert_int_equal(info_of(&w->c1.t).chan_peer_ua, w->cam.ua); /* proven on the new channel too */
	/* new keys: a command sealed before the re-key is now a stranger to the card */
	{
		uint8_t resp[16];
		size_t dlen;
		assert_int_equal(xfer_raw(&w->c1.t, tp->cmd[2], tp->cmd_len[2], resp, sizeof resp, &dlen),
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
	/* a re-key that meets another (genuine) card fails and leaves the CAM unpaired */
	kh_softmod_set_time(w->cam.sm, t0 + 10 + KH_CHAN_MAX_AGE);
	assert_int_equal(card_echo(&w->cam.t, &w->c2.t), KH_ERR_CARD_CHANGED);
	assert_cam_unpaired(w);
	/* a re-key after the card's certificate expired goes back to GET CERT and is refused there */
	kh_softmod_set_time(w->cam.sm, t0);
	pair_cam_card(w, &(struct mod){.t = tt, .ua = w->c1.ua});
	kh_softmod_set_time(w->cam.sm, t0 + 21ull * 366 * 24 * 3600);
	assert_int_equal(card_echo(&w->cam.t, &tt), KH_ERR_CERT_EXPIRED);
	assert_cam_unpaired(w);
	assert_int_equal(kh_host_pair_cam_card(&w->cam.t, &tt, &(uint32_t){0}), KH_ERR_CERT_EXPIRED);
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

/* Records what the decoder relays to the card: the last PAIR OPEN and the first sealed command. */
struct rec {
	struct kh_transport *card;
	uint8_t open[KH_APDU_MAX_CMD], sealed[KH_APDU_MAX_CMD];
	size_t openlen, sealedlen;
};

static kh_err rec_xfer(void *ctx, const uint8_t *cmd, size_t len, uint8_t *resp, size_t cap, size_t *rlen)
{
	struct rec *r = ctx;
	if (len >= 2 && cmd[1] == KH_INS_PAIR_OPEN) {
		memcpy(r->open, cmd, len);
		r->openlen = len;
	} else if (len >= 2 && cmd[1] == KH_INS_SEALED && !r->sealedlen) {
		memcpy(r->sealed, cmd, len);
		r->sealedlen = len;
	}
	return kh_transport_xfer(r->card, cmd, len, resp, cap, rlen);
}

/*
 * The host replays a recorded PAIR OPEN to the card, then the recorded sealed command: the card
 * pairs again (anyone may), but under keys from its own fresh Nr, so the old command is refused
 * as not authentic and the card's stored state does not move.
 */
static void test_replayed_pairing(void **state)
{
	struct world *w = *state;
	struct rec *r = calloc(1, sizeof *r);
	struct kh_transport rt = {.xfer = rec_xfer};
	uint8_t resp[KH_APDU_MAX_RESP];
	uint64_t counter;

	assert_non_null(r);
	r->card = &w->c1.t;
	rt.ctx = r;
	pair_cam_card(w, &(struct mod){.t = rt, .ua = w->c1.ua});
	assert_int_equal(card_echo(&w->cam.t, &rt), KH_OK);
	assert_true(r->openlen > 0 && r->sealedlen > 0);
	counter = info_of(&w->c1.t).counter;

	assert_int_equal(xfer_raw(&w->c1.t, r->open, r->openlen, resp, sizeof resp, NULL), 0x9000);
	assert_int_equal(xfer_raw(&w->c1.t, r->sealed, r->sealedlen, resp, sizeof resp, NULL),
			 kh_err_to_sw(KH_ERR_CHAN_AUTH));
	assert_int_equal(info_of(&w->c1.t).counter, counter);
	free(r);
}

/*
 * The card's own limits: a channel kept past the hour plus the grace is refused by the card even
 * if the CAM's clock never asked for a re-key; and a sealed command whose answer would not fit the
 * host's buffer is refused before it runs, without using up its counter.
 */
static void test_responder_limits(void **state)
{
	struct world *w = *state;
	uint8_t msg[8] = {1, 2, 3, 4, 5, 6, 7, 8}, inner[64], relay[KH_APDU_MAX_RESP];
	uint8_t small[KH_CHAN_OVERHEAD], resp[KH_APDU_MAX_RESP], out[KH_APDU_MAX_RESP];
	uint64_t t0 = (uint64_t)time(NULL);
	size_t ilen, rlen, dlen, n;
	uint16_t sw;

	/* the sealed command, as the CAM hands it to the host for the card */
	pair_cam_card(w, &w->c1);
	build_echo(msg, sizeof msg, inner, sizeof inner, &ilen);
	assert_int_equal(kh_host_apdu(&w->cam.t, KH_INS_CARD_SEND, 0, inner, ilen, relay, sizeof relay, &dlen, &sw),
			 KH_OK);
	assert_int_equal(sw, KH_SW_RELAY);
	/* no room for the answer: refused, the counter not taken */
	assert_int_equal(kh_transport_xfer(&w->c1.t, relay, dlen, small, sizeof small, &rlen), KH_OK);
	assert_int_equal(rlen, 2);
	assert_int_equal(small[0] << 8 | small[1], kh_err_to_sw(KH_ERR_BUF));
	/* the same bytes with room: accepted, and the CAM takes the answer */
	assert_int_equal(kh_transport_xfer(&w->c1.t, relay, dlen, resp, sizeof resp, &rlen), KH_OK);
	assert_int_equal(resp[rlen - 2] << 8 | resp[rlen - 1], 0x9000);
	assert_int_equal(kh_host_apdu(&w->cam.t, KH_INS_CARD_RESP, 0, resp, rlen, out, sizeof out, &n, &sw), KH_OK);
	assert_int_equal(n, sizeof msg + 2);
	assert_memory_equal(out, msg, sizeof msg);

	/* the card's clock runs past the hour and the grace; the CAM's does not */
	kh_softmod_set_time(w->cam.sm, t0);
	kh_softmod_set_time(w->c1.sm, t0);
	pair_cam_card(w, &w->c1);
	kh_softmod_set_time(w->c1.sm, t0 + KH_CHAN_MAX_AGE + KH_CHAN_AGE_GRACE - 1);
	assert_int_equal(card_echo(&w->cam.t, &w->c1.t), KH_OK);
	kh_softmod_set_time(w->c1.sm, t0 + KH_CHAN_MAX_AGE + KH_CHAN_AGE_GRACE);
	assert_int_equal(card_echo(&w->cam.t, &w->c1.t), KH_ERR_CHAN_REKEY);
	assert_cam_unpaired(w);
	/* pairing again opens a channel timed from now */
	pair_cam_card(w, &w->c1);
	assert_int_equal(card_echo(&w->cam.t, &w->c1.t), KH_OK);
	kh_softmod_set_time(w->cam.sm, 0);
	kh_softmod_set_time(w->c1.sm, 0);
}

/* Send CAM AUTH {cert, sig} inside the host's own channel l to the card; returns the inner SW. */
static uint16_t host_cam_auth(struct kh_link *l, struct kh_transport *card, const uint8_t *cert, size_t certlen,
			      const uint8_t sig[64])
{
	uint8_t body[KH_CERT_MAX + 80], inner[KH_CERT_MAX + 96], out[KH_APDU_MAX_RESP];
	struct kh_wr b, w;
	size_t n = 0;

	kh_wr_init(&b, body, sizeof body);
	kh_tlv_put(&b, 1, cert, certlen);
	assert_int_equal(kh_tlv_put(&b, 2, sig, 64), KH_OK);
	kh_wr_init(&w, inner, sizeof inner);
	assert_int_equal(kh_apdu_build(&w, KH_CLA, KH_INS_CAM_AUTH, 0, 0, body, b.len, 0), KH_OK);
	assert_int_equal(kh_host_link_cmd(l, card, inner, w.len, (uint64_t)time(NULL), out, sizeof out, &n), KH_OK);
	assert_true(n >= 2);
	return (uint16_t)(out[n - 2] << 8 | out[n - 1]);
}

/*
 * Pairing proves the card to the CAM; CAM AUTH proves the CAM to the card. A host that pairs with
 * the card itself gets a channel, but no certificate and signature it can produce makes the card
 * record a CAM on it: not another role's certificate, not a foreign operator's, not a genuine CAM
 * certificate without the CAM's key.
 */
static void test_cam_auth(void **state)
{
	struct world *w = *state;
	struct kh_link *l = calloc(1, sizeof *l);
	uint8_t cam_cert[KH_CERT_MAX], card_cert[KH_CERT_MAX], fx_cert[KH_CERT_MAX], sig[64];
	size_t cam_len, card_len, fx_len;
	struct kh_module_info i;
	uint16_t sw;

	assert_non_null(l);
	/* the genuine CAM: the card knows who holds its channel */
	pair_cam_card(w, &w->c1);
	i = info_of(&w->c1.t);
	assert_int_equal(i.chan_open, 1);
	assert_int_equal(i.chan_peer_ua, w->cam.ua);

	/* public certificates anyone can read */
	assert_int_equal(send_apdu(&w->cam.t, KH_CLA, KH_INS_GET_CERT, 1, 0, NULL, 0, cam_cert, sizeof cam_cert, &cam_len),
			 0x9000);
	assert_int_equal(send_apdu(&w->c2.t, KH_CLA, KH_INS_GET_CERT, 1, 0, NULL, 0, card_cert, sizeof card_cert,
				   &card_len),
			 0x9000);
	assert_int_equal(send_apdu(&w->fx.t, KH_CLA, KH_INS_GET_CERT, 1, 0, NULL, 0, fx_cert, sizeof fx_cert, &fx_len),
			 0x9000);

	/* a host pairs with the card directly: a channel, but nobody proven on it */
	kh_link_init(l, w->root_pk, KH_ROLE_CARD, (const uint8_t *)"host", 4);
	assert_int_equal(kh_host_link_pair(l, &w->c1.t, (uint64_t)time(NULL)), KH_OK);
	i = info_of(&w->c1.t);
	assert_int_equal(i.chan_open, 1);
	assert_int_equal(i.chan_peer_ua, 0);

	memset(sig, 0x5A, sizeof sig);
	sw = host_cam_auth(l, &w->c1.t, cam_cert, cam_len, sig); /* the CAM's certificate, not its key */
	assert_int_equal(sw, kh_err_to_sw(KH_ERR_AUTH));
	sw = host_cam_auth(l, &w->c1.t, card_cert, card_len, sig); /* a card is not a CAM */
	assert_int_equal(sw, kh_err_to_sw(KH_ERR_CERT_ROLE));
	sw = host_cam_auth(l, &w->c1.t, fx_cert, fx_len, sig); /* another operator's */
	assert_int_equal(sw, kh_err_to_sw(KH_ERR_CERT));
	assert_int_equal(info_of(&w->c1.t).chan_peer_ua, 0);

	/* and the CAM, pairing again, is proven again on its new channel */
	pair_cam_card(w, &w->c1);
	assert_int_equal(info_of(&w->c1.t).chan_peer_ua, w->cam.ua);
	assert_int_equal(card_echo(&w->cam.t, &w->c1.t), KH_OK);
	kh_link_wipe(l);
	free(l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_host_pairing, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_swap, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_card_removed, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_pair_refused, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_tamper, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_tamper_card_side, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_replayed_pairing, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_cam_auth, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_responder_limits, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_rekey_age, world_setup, world_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
