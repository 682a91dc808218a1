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

#endif
