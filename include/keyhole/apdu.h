/*
 * ISO/IEC 7816-4 command and response APDUs, the only shape in which bytes cross between a
 * host and a module. Commands are CLA INS P1 P2 [Lc data] [Le] in short or
 * extended form; responses are data followed by the status word SW1 SW2. Allocation-free.
 *
 * Keyhole's instruction set (CLA 0x80) is listed here because both sides need it; what each
 * instruction does is in docs/protocols/pairing.md and docs/protocols/cas.md.
 */
#ifndef KEYHOLE_APDU_H
#define KEYHOLE_APDU_H

#include <stddef.h>
#include <stdint.h>

#include "keyhole/buf.h"
#include "keyhole/err.h"

#define KH_APDU_MAX_DATA 4096
#define KH_APDU_MAX_CMD (4 + 3 + KH_APDU_MAX_DATA + 3)
#define KH_APDU_MAX_RESP (KH_APDU_MAX_DATA + 2)

#define KH_CLA 0x80

enum kh_ins {
	KH_INS_GET_INFO = 0x10,    /* public facts: role, UA, lifecycle, state counter */
	KH_INS_ECHO = 0x20,        /* sealed channel only: returns its data (tests, benchmarks) */
	KH_INS_PAIR_OPEN = 0x80,   /* seed 000 step 2/3: HPKE-sealed Ci || A */
	KH_INS_GET_CERT = 0xCA,    /* P1 = 0 pairing certificate, 1 signing certificate */
	KH_INS_SEALED = 0xC2,      /* seed 000 step 4: a command inside the paired channel */
	KH_INS_CAM_AUTH = 0x84,    /* sealed only: the CAM proves its certified key on this channel */
	KH_INS_PERSO_INIT = 0xE0,  /* personalisation: identity in, fresh public keys out */
	KH_INS_PERSO_CERTS = 0xE2, /* personalisation: the authority's certificates in */
	KH_INS_CARD_START = 0x60,  /* CAM: begin pairing with the card (answers with bytes to relay) */
	KH_INS_CARD_RESP = 0x62,   /* CAM: here is the card's answer to what you asked me to relay */
	KH_INS_CARD_SEND = 0x64,   /* CAM: seal this command for the card */
	/* The same three in a decoder module speak to its CAM (P1 of CARD START: 1 = key ladder). */
	KH_INS_LADDER_LOAD = 0x66, /* decoder: ladder-sealed control words in, into the descrambler */
	KH_INS_DESCRAMBLE = 0x68,  /* decoder: TS packets in, descrambled with the loaded CWs out */
	KH_INS_ECM = 0x40,         /* card, sealed on a CAM-proven channel: ECM in, control words out */
	KH_INS_PURCHASE = 0x42,    /* card, same: impulse purchase of the event an ECM names */
	KH_INS_EMM = 0x44,         /* card: apply an EMM addressed to it */
	KH_INS_CAS_STATUS = 0x46,  /* card: credit, rights, purchases, sequence numbers (public) */
	KH_INS_CAS_FLUSH = 0x48,   /* card: store usage counters not yet stored (off the ECM path) */
	KH_INS_EXPORT = 0x50,      /* card: usage-data block (seed 001); P1 1 = for M1 (authorised only) */
	KH_INS_HELLO = 0x52,       /* card: sign a center's upload-session nonce (seed 001) */
	/* A processor and its distribution server (seed 002, docs/protocols/distribution.md). */
	KH_INS_DIST_HELLO = 0x70,    /* processor: a new session: Rc and its certificates */
	KH_INS_DIST_AUTH = 0x72,     /* processor: the server's proof over Rc in, ours over Rs out */
	KH_INS_DIST_KEY = 0x74,      /* processor: a signed wrapped program key in, a pending licence out */
	KH_INS_DIST_ACTIVATE = 0x76, /* processor: the program signature in, the active licence out */
	KH_INS_RUN_OPEN = 0x78,      /* processor, runner only: an active licence and its manifest */
	KH_INS_RUN_CHUNK = 0x7A,     /* processor, runner only: a package chunk in, its plaintext out */
	KH_INS_RUN_CLOSE = 0x7C,     /* processor, runner only: forget the program key */
	/* A buyer's device and an escrow (seed 003, docs/protocols/escrow.md). */
	KH_INS_BUY_START = 0x30,     /* buyer: a listing, c and the content's header hash in, a signed request out */
	KH_INS_BUY_FINISH = 0x32,    /* buyer: the escrow's answer in, the signed notice (and licence) out */
	KH_INS_BUY_NOTICE = 0x34,    /* buyer: a settled purchase's notice (and licence) again */
	KH_INS_BUY_CANCEL = 0x36,    /* buyer: give up a purchase under way: a `failed` notice */
	KH_INS_BUY_LIST = 0x38,      /* buyer: the purchases it holds and their state (public) */
	KH_INS_CONTENT_OPEN = 0x3A,  /* buyer: a licence and the content's header */
	KH_INS_CONTENT_CHUNK = 0x3C, /* buyer: a content chunk in, its plaintext out */
	KH_INS_CONTENT_CLOSE = 0x3E, /* buyer: forget the content key */
	KH_INS_BUY_COMBINE = 0x2E,   /* buyer: escrows' key shares and its own into K: notices (and licence) out */
	/* Key card (seed 004, docs/protocols/keycenter.md). */
	KH_INS_KC_ENROL = 0x90,  /* keycard: the center's certificate and key in, the seed sealed to it out (once) */
	KH_INS_KC_SEND = 0x92,   /* keycard: the next key of the send chain out, the chain moved past it */
	KH_INS_KC_ACK = 0x94,    /* keycard: the center's signed ack of a post in */
	KH_INS_KC_OPEN = 0x96,   /* keycard: a delivery's header and chunk 0 in; checked, its key out */
	KH_INS_KC_HELLO = 0x98,  /* keycard: sign a center's session nonce */
	KH_INS_KC_STATUS = 0x9A, /* keycard: serial, center, chain positions (public) */
};

/*
 * GET INFO answer (every role, plain or sealed): a TLV list, every value big-endian. Here beside
 * the instruction because both sides need it: the module writes it, hosts read it (and skip tags
 * they do not know).
 */
enum kh_info_tag {
	KH_INFO_T_ROLE = 1,         /* u8 enum kh_role (0 while blank) */
	KH_INFO_T_UA = 2,           /* u32 unique address (0 while blank) */
	KH_INFO_T_LIFECYCLE = 3,    /* u8: 0 blank, 1 keys made, 2 personalised */
	KH_INFO_T_COUNTER = 4,      /* u64: the last state counter used */
	KH_INFO_T_LINK = 5,         /* CAM, decoder: u8 state of its link to the module below */
	KH_INFO_T_PEER_UA = 6,      /* CAM, decoder: u32 the module that link is paired with */
	KH_INFO_T_CHAN_OPEN = 7,    /* u8: a channel is open toward its initiator */
	KH_INFO_T_CHAN_PEER_UA = 8, /* u32: the initiator that proved itself on that channel */
};

struct kh_apdu {
	uint8_t cla, ins, p1, p2;
	const uint8_t *data; /* points into the parsed buffer */
	size_t lc;
	size_t le;  /* 0 when absent; 256 / 65536 encode as 0 on the wire */
	int has_le;
};

/* Parse a command APDU (cases 1, 2S, 3S, 4S, 2E, 3E, 4E). Any length inconsistency is KH_ERR_APDU_LEN. */
KH_WARN_UNUSED kh_err kh_apdu_parse(const uint8_t *buf, size_t len, struct kh_apdu *a);
/* Append a command APDU; short form when lc <= 255 and le <= 256, extended otherwise. le 0 = no Le. */
kh_err kh_apdu_build(struct kh_wr *w, uint8_t cla, uint8_t ins, uint8_t p1, uint8_t p2,
		     const uint8_t *data, size_t lc, size_t le);
/* Split a response into data and status word (KH_ERR_APDU_LEN when shorter than 2 bytes). */
KH_WARN_UNUSED kh_err kh_apdu_resp(const uint8_t *buf, size_t len, const uint8_t **data, size_t *dlen,
				   uint16_t *sw);

#endif
