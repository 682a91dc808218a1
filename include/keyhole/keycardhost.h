/*
 * A host's side of a key card (seed 004, docs/protocols/keycenter.md "The key card"): each
 * function sends one command to the card over its transport and reads the answer. Host zone;
 * the key center's enrolment station uses kh_keycard_enrol the same way. Keys handed out are the
 * caller's to wipe.
 */
#ifndef KEYHOLE_KEYCARDHOST_H
#define KEYHOLE_KEYCARDHOST_H

#include <stddef.h>
#include <stdint.h>

#include "keyhole/err.h"
#include "keyhole/keycard.h"
#include "keyhole/transport.h"

struct kh_keycard_status {
	uint64_t serial;
	uint32_t center; /* 0: not enrolled */
	uint64_t send;   /* the index KC SEND gives next */
	uint64_t acked;  /* the highest post the center acknowledged to the card */
	uint64_t recv;   /* the lowest index KC OPEN still opens */
};

/* KC ENROL: the center's signing certificate (DER) and enrolment key record in; the card's serial
 * and its seed sealed to the center out. KH_ERR_ENROLLED when the card is enrolled already. */
KH_WARN_UNUSED kh_err kh_keycard_enrol(struct kh_transport *t, const uint8_t *cert, size_t certlen,
				       const uint8_t enrolkey[static KH_KC_ENROLKEY_LEN], uint64_t *serial,
				       uint8_t sealed[static KH_KC_SEALED_SEED_LEN]);
/* KC SEND: the next key of the send chain; the card has moved past it (stored) before it answers.
 * KH_ERR_KEY_AHEAD when W keys are out that the center has not acknowledged (give it an ack). */
KH_WARN_UNUSED kh_err kh_keycard_send(struct kh_transport *t, uint64_t *serial, uint64_t *index, uint8_t key[static 32]);
/* KC ACK: the center's ack record (KH_KC_ACK_LEN bytes). */
KH_WARN_UNUSED kh_err kh_keycard_ack(struct kh_transport *t, const uint8_t *ack, size_t n);
/* KC OPEN: a delivery's header and its chunk 0 (framing included, as in the message); the card
 * checks chunk 0 under its receive key before it answers with it, moved past it. */
KH_WARN_UNUSED kh_err kh_keycard_open(struct kh_transport *t, const uint8_t hdr[static KH_KC_HEADER_LEN],
				      const uint8_t *chunk0, size_t chunk0len, uint64_t *index, uint8_t key[static 32]);
/* KC HELLO: the card's signature over the center's nonce (kh_kc_hello_msg). */
KH_WARN_UNUSED kh_err kh_keycard_hello(struct kh_transport *t, const uint8_t nonce[static KH_KC_NONCE_LEN],
				       uint64_t *serial, uint8_t sig[static KH_ED25519_SIG_LEN]);
KH_WARN_UNUSED kh_err kh_keycard_status(struct kh_transport *t, struct kh_keycard_status *st);

#endif
