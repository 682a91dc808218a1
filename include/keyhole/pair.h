/*
 * Seed 000 (WO 97/38530): the paired channel between an initiator I (a CAM toward its card, a
 * decoder toward its CAM) and a responder R (the card, the CAM). The protocol design fixes the
 * messages; docs/protocols/pairing.md explains them. This is a pure engine: bytes in, bytes out,
 * no I/O and no allocation, so the module zone (card and CAM applets) and the host zone (the
 * decoder) run the very same code.
 *
 *   PAIR OPEN   u8 ver=1 | u8 idlen | id | enc(32) | HPKE.Seal(pkR, "keyhole pair v1", aad=id, Ci(32)|A(16))
 *   answer      u8 ver=1 | Nr(32) | AEAD(k_ri, nonce 0, "pair-auth", A)
 *   sealed      u8 ver=1 | u32 ctr | AEAD(k_dir, nonce = 0^8|ctr, aad = ver|ctr, body)
 *   keys        k_ir | k_ri = HKDF(ikm=Ci, salt=enc|Nr, "keyhole pair v1 keys", 64)
 *
 * Nr is the responder's fresh random contribution, an addition to the protocol design: without it the
 * keys depend on the initiator's bytes alone, so a host replaying a recorded PAIR OPEN would make
 * the responder reinstall an old channel with its counters at zero — old commands accepted again,
 * and answers sealed twice under one nonce (docs/protocols/pairing.md).
 *
 * A command carries the initiator's next counter; the response to it carries the same counter
 * under the other key. A receiver refuses a counter not greater than the last it accepted.
 */
#ifndef KEYHOLE_PAIR_H
#define KEYHOLE_PAIR_H

#include <stddef.h>
#include <stdint.h>

#include "keyhole/apdu.h"
#include "keyhole/buf.h"
#include "keyhole/cert.h"
#include "keyhole/err.h"

#define KH_PAIR_VERSION 1
#define KH_PAIR_ID_MAX 32
#define KH_PAIR_CI_LEN 32
#define KH_PAIR_A_LEN 16
#define KH_PAIR_NR_LEN 32
#define KH_PAIR_OPEN_MAX (2 + KH_PAIR_ID_MAX + 32 + KH_PAIR_CI_LEN + KH_PAIR_A_LEN + 16)
#define KH_PAIR_ANSWER_LEN (1 + KH_PAIR_NR_LEN + KH_PAIR_A_LEN + 16)
#define KH_CHAN_OVERHEAD (1 + 4 + 16)
#define KH_CHAN_MAX_MSGS (1u << 20) /* re-key after this many commands */
#define KH_CHAN_MAX_AGE 3600u       /* ... or this many seconds */
/* The responder refuses a channel older than KH_CHAN_MAX_AGE + this grace (its clock and the
 * initiator's may differ; the initiator is the one that re-keys on time). */
#define KH_CHAN_AGE_GRACE 600u

/* One end of an open channel. Volatile: never persisted. */
struct kh_chan {
	uint8_t k_send[32];
	uint8_t k_recv[32];
	/*
	 * Channel binding, the same at both ends and unique to this channel:
	 * HKDF(Ci, enc | Nr, "keyhole pair v1 binding", 32). An initiator that holds a certified key
	 * signs it to prove who opened the channel (CAM AUTH); it is not secret.
	 */
	uint8_t binding[32];
	uint32_t sent;     /* last counter sent (initiator: commands; responder: unused) */
	uint32_t accepted; /* last counter accepted */
	uint32_t max_msgs; /* KH_CHAN_MAX_MSGS unless a test lowers it */
	uint64_t opened_at;
	uint32_t peer_ua;  /* responder: the CAM that proved itself on this channel, 0 if none */
	uint8_t open;
	uint8_t initiator;
};

/* The initiator's secrets between PAIR OPEN and the answer. */
struct kh_pair_hs {
	uint8_t ci[KH_PAIR_CI_LEN];
	uint8_t a[KH_PAIR_A_LEN];
	uint8_t enc[32];
	uint8_t pending;
};

/* Step 2 (I): draw Ci and A, append PAIR OPEN to out. */
KH_WARN_UNUSED kh_err kh_pair_open_make(struct kh_pair_hs *hs, const uint8_t pkR[static 32],
					const uint8_t *id, size_t idlen, struct kh_wr *out);
/*
 * Step 3 (R): open PAIR OPEN with skR, draw Nr, append the answer to out and key *ch (replacing
 * any previous channel) — only when everything succeeded; on error *ch is untouched.
 */
KH_WARN_UNUSED kh_err kh_pair_open_answer(const uint8_t skR[static 32], const uint8_t *msg, size_t len,
					  uint64_t now, struct kh_chan *ch, struct kh_wr *out);
/* Step 4 (I): check the answer in constant time and open *ch (untouched on error). The handshake secrets are wiped either way. */
KH_WARN_UNUSED kh_err kh_pair_finish(struct kh_pair_hs *hs, const uint8_t *ans, size_t len, uint64_t now,
				     struct kh_chan *ch);

/* 1 when the initiator must pair again before its next command (message or age limit). */
int kh_chan_needs_rekey(const struct kh_chan *ch, uint64_t now);
/* I: seal a command body with the next counter. */
KH_WARN_UNUSED kh_err kh_chan_seal_cmd(struct kh_chan *ch, const uint8_t *body, size_t len, struct kh_wr *out);
/* R: open a command. On success the counter is accepted; on any error nothing changes. */
KH_WARN_UNUSED kh_err kh_chan_open_cmd(struct kh_chan *ch, const uint8_t *msg, size_t len, uint8_t *body,
				       size_t cap, size_t *bodylen);
/* R: seal the response to the command last accepted. */
KH_WARN_UNUSED kh_err kh_chan_seal_resp(struct kh_chan *ch, const uint8_t *body, size_t len, struct kh_wr *out);
/* I: open the response to the command last sent (its counter must match). */
KH_WARN_UNUSED kh_err kh_chan_open_resp(struct kh_chan *ch, const uint8_t *msg, size_t len, uint8_t *body,
					size_t cap, size_t *bodylen);
void kh_chan_wipe(struct kh_chan *ch);

/*
 * The initiator as a state machine that speaks APDUs: GET CERT, check the certificate against
 * the operator root and the expected role, PAIR OPEN, check the answer, then SEALED commands.
 * It never talks to anything itself; each call hands back the next command APDU to deliver.
 * On any failure of the peer's answer the channel keys are wiped and the link falls back to
 * idle (seed 000: a swapped module is detected on the next response).
 */
enum kh_link_state {
	KH_LINK_IDLE = 0,
	KH_LINK_WANT_CERT,
	KH_LINK_WANT_AUTH,
	KH_LINK_OPEN,
	KH_LINK_WANT_RESP,
};

struct kh_link {
	enum kh_link_state state;
	enum kh_role peer_role;
	uint8_t root_pk[32];
	uint8_t id[KH_PAIR_ID_MAX];
	uint8_t idlen;
	struct kh_cert_info peer; /* the certificate of the module we paired with */
	struct kh_pair_hs hs;
	struct kh_chan ch;
	uint16_t pendlen;               /* a command waiting for a re-key to finish */
	uint8_t pending[KH_APDU_MAX_DATA];
};

/* Results of kh_link_step. */
enum kh_link_result {
	KH_LINK_SEND = 1,   /* out holds a command APDU for the peer */
	KH_LINK_PAIRED = 2, /* the channel is open, nothing to send */
	KH_LINK_REPLY = 3,  /* out holds the peer's decrypted inner response APDU (data||SW) */
};

void kh_link_init(struct kh_link *l, const uint8_t root_pk[static 32], enum kh_role peer_role,
		  const uint8_t *id, size_t idlen);
/* Begin (or restart) pairing: out receives GET CERT. */
KH_WARN_UNUSED kh_err kh_link_start(struct kh_link *l, struct kh_wr *out);
/* Seal an inner command APDU for the peer; re-keys first when due (out then holds PAIR OPEN). */
KH_WARN_UNUSED kh_err kh_link_send(struct kh_link *l, const uint8_t *inner, size_t len, uint64_t now,
				   struct kh_wr *out);
/* Feed the peer's response APDU; *res says what out now holds. */
KH_WARN_UNUSED kh_err kh_link_step(struct kh_link *l, const uint8_t *resp, size_t len, uint64_t now,
				   struct kh_wr *out, enum kh_link_result *res);
/* Back to idle: channel keys, handshake and waiting command wiped; root, role and id kept. */
void kh_link_reset(struct kh_link *l);
void kh_link_wipe(struct kh_link *l);

/*
 * What an initiator signs to prove its role on a channel (CAM AUTH): a label naming that role, the
 * channel binding, the responder's UA. A CAM proves itself to its card ("keyhole cam auth v1"), a
 * decoder to its CAM ("keyhole dec auth v1"); a signature of one role never passes for the other.
 */
#define KH_CAM_AUTH_LABEL "keyhole cam auth v1"
#define KH_DEC_AUTH_LABEL "keyhole dec auth v1"
#define KH_CAM_AUTH_MSG_LEN (sizeof KH_CAM_AUTH_LABEL - 1 + 32 + 4)
/* KH_ERR_INVAL for a role other than KH_ROLE_CAM and KH_ROLE_DECODER. */
KH_WARN_UNUSED kh_err kh_auth_msg(uint8_t role, const uint8_t binding[static 32], uint32_t responder_ua,
				  uint8_t msg[static KH_CAM_AUTH_MSG_LEN]);

#endif
