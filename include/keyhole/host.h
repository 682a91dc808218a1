/*
 * What a host (the decoder) does with modules, in APDUs only: ask a module for its public facts,
 * pair a CAM with its card by relaying the bytes the CAM asks it to carry, send commands to the
 * card through the CAM's channel, and pair itself with the CAM (seed 000, decoder <-> CAM).
 */
#ifndef KEYHOLE_HOST_H
#define KEYHOLE_HOST_H

#include <stddef.h>
#include <stdint.h>

#include "keyhole/err.h"
#include "keyhole/pair.h"
#include "keyhole/transport.h"

struct kh_module_info {
	uint8_t role;
	uint32_t ua;
	uint8_t lifecycle; /* 0 blank, 1 keys made, 2 personalised */
	uint64_t counter;
	uint8_t link_state; /* CAM: state of its link to the card (enum kh_link_state) */
	uint32_t peer_ua;   /* CAM: the card it is paired with, 0 if none */
	uint8_t chan_open;     /* responder: a channel is open toward its initiator */
	uint32_t chan_peer_ua; /* responder: the CAM that proved itself on that channel, 0 if none */
};

/*
 * One command APDU; data and SW out. A status word other than 9000 / 9F00 is returned as its
 * error (kh_err_from_sw) with *sw set; resp still holds the raw answer.
 */
KH_WARN_UNUSED kh_err kh_host_apdu(struct kh_transport *t, uint8_t ins, uint8_t p1, const uint8_t *data,
				   size_t len, uint8_t *resp, size_t cap, size_t *dlen, uint16_t *sw);
KH_WARN_UNUSED kh_err kh_host_info(struct kh_transport *t, struct kh_module_info *info);

/* Have the CAM pair with the card, relaying every byte; *card_ua names the card paired with. */
KH_WARN_UNUSED kh_err kh_host_pair_cam_card(struct kh_transport *cam, struct kh_transport *card, uint32_t *card_ua);
/*
 * Send an inner command APDU to the card inside the CAM's channel; out receives the card's inner
 * response (data || SW). Errors: the CAM's refusal (e.g. KH_ERR_CHAN_AUTH when the card that
 * answered is not the one it paired with; the CAM has then wiped its keys).
 */
KH_WARN_UNUSED kh_err kh_host_card_cmd(struct kh_transport *cam, struct kh_transport *card, const uint8_t *inner,
				       size_t len, uint8_t *out, size_t cap, size_t *outlen);

/* The decoder as initiator toward its CAM; l is set up with kh_link_init(role CAM). */
KH_WARN_UNUSED kh_err kh_host_link_pair(struct kh_link *l, struct kh_transport *t, uint64_t now);
KH_WARN_UNUSED kh_err kh_host_link_cmd(struct kh_link *l, struct kh_transport *t, const uint8_t *inner, size_t len,
				       uint64_t now, uint8_t *out, size_t cap, size_t *outlen);

/*
 * The decoder's conditional-access session. The decoder module (role decoder: certified keys
 * made inside it) pairs with the CAM (seed 000, decoder <-> CAM) and proves its certificate
 * there; the CAM pairs with the card through that channel; from then on every command for the
 * card goes decoder module -> CAM sealed, CAM -> card sealed, and back the same way. The host
 * process only carries bytes between the three. The CAM refuses to carry an ECM or a PURCHASE
 * that did not come inside a proven decoder's channel (KH_ERR_CW_PLAIN, KH_ERR_DECODER_UNPROVEN).
 * EMMs and CAS STATUS go to the card directly (EMMs authenticate themselves; the status is
 * public).
 *
 * Two modes (docs/protocols/decoder.md):
 *   open    the decoder module hands the host the control words; the host descrambles
 *           (kh_scr). A program without a certified decoder module gets none.
 *   ladder  (KH_HOST_CAS_LADDER) the CAM seals each pair of control words under a key only the
 *           decoder module holds; the host carries the sealed pair to the module
 *           (kh_host_cas_load) and has the module descramble (kh_host_cas_descramble). The host
 *           never holds a control word.
 */
struct kh_cas_status;
struct kh_cw_answer;
struct kh_ppv_offer;

#define KH_HOST_CAS_LADDER 1u

struct kh_host_cas {
	struct kh_transport *dec, *cam, *card;
	unsigned flags;
	uint32_t cam_ua, card_ua; /* 0 until connected */
	int connected;
};

/* Set up (no I/O). flags: 0 or KH_HOST_CAS_LADDER. dec and cam may be NULL for a session that
 * only gives the card EMMs and reads its status. */
void kh_host_cas_init(struct kh_host_cas *c, struct kh_transport *dec, struct kh_transport *cam,
		      struct kh_transport *card, unsigned flags);
/*
 * Pair decoder module <-> CAM (the decoder proves itself), then CAM <-> card through the sealed
 * channel (the CAM proves itself to the card). On success c->card_ua names the card. Any failure
 * leaves c disconnected.
 */
KH_WARN_UNUSED kh_err kh_host_cas_connect(struct kh_host_cas *c);
/*
 * Pass one ECM section to the card. KH_OK: *cw holds the control words (wipe them after use), or
 * in ladder mode the sealed pair (cw->sealed_len != 0, cw->cw_len 0) for kh_host_cas_load.
 * KH_ERR_NOT_PURCHASED / KH_ERR_CREDIT_LOW: *offer (may be NULL) says what the event costs and
 * what credit the card holds. Other refusals as the card or the CAM gives them; a channel
 * failure (KH_ERR_CHAN_AUTH: the card was swapped; transport errors) disconnects c, and the
 * caller must stop descrambling and kh_host_cas_connect() again.
 */
KH_WARN_UNUSED kh_err kh_host_cas_ecm(struct kh_host_cas *c, const uint8_t *ecm, size_t n, struct kh_cw_answer *cw,
				      struct kh_ppv_offer *offer);
/* Impulse purchase of the event the ECM names; *offer receives event, price and the credit left. */
KH_WARN_UNUSED kh_err kh_host_cas_purchase(struct kh_host_cas *c, const uint8_t *ecm, size_t n,
					   struct kh_ppv_offer *offer);
/* Ladder mode: load a sealed pair (from kh_host_cas_ecm) into the decoder module's descrambler. */
KH_WARN_UNUSED kh_err kh_host_cas_load(struct kh_host_cas *c, const struct kh_cw_answer *cw);
/*
 * Ladder mode: have the decoder module descramble n packets in place (any n; sent in commands
 * of up to KH_HOST_CAS_DESC_PKTS packets). Every scrambled packet must have the parity of a
 * loaded pair (both are loaded together). Errors: the module's (KH_ERR_LADDER: nothing loaded,
 * the channel ended) or the transport's; pkts may then be partly descrambled.
 */
#define KH_HOST_CAS_DESC_PKTS 21
KH_WARN_UNUSED kh_err kh_host_cas_descramble(struct kh_host_cas *c, uint8_t *pkts, size_t n);
/* Give the card one EMM section (straight to the card). */
KH_WARN_UNUSED kh_err kh_host_cas_emm(struct kh_host_cas *c, const uint8_t *emm, size_t n);
/* The card's public CAS facts (straight to the card). */
KH_WARN_UNUSED kh_err kh_host_cas_status(struct kh_host_cas *c, struct kh_cas_status *st);
/* Have the card store usage counters it holds only in memory (CAS FLUSH; a no-op when none). */
KH_WARN_UNUSED kh_err kh_host_cas_flush(struct kh_host_cas *c);
/* Forget the channel keys. */
void kh_host_cas_wipe(struct kh_host_cas *c);

#endif
