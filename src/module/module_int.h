/*
 * Inside the module (src/module/ only). The module is one caller-allocated struct: persistent
 * state (sealed as a whole), volatile channel state, and work buffers, so that nothing here ever
 * allocates. Applets are handlers in the dispatch table of module.c.
 */
#ifndef KH_MODULE_INT_H
#define KH_MODULE_INT_H

#include <stdint.h>

#include "keyhole/apdu.h"
#include "keyhole/buf.h"
#include "keyhole/cas.h"
#include "keyhole/cert.h"
#include "keyhole/module.h"
#include "keyhole/pair.h"

enum kh_lifecycle {
	KH_LC_BLANK = 0,        /* fresh: only personalisation */
	KH_LC_KEYED = 1,        /* keys generated, waiting for certificates */
	KH_LC_PERSONALISED = 2, /* in service */
};

/* Pay-TV state of a card (applet_cas.c). Fixed capacities: a module never allocates. */
#define KH_CAS_KEYS 8       /* service keys (id, version): two versions per id for rotation */
#define KH_CAS_RIGHTS 32    /* subscription rights, one per product */
#define KH_CAS_EVENTS 64    /* pay-per-view events bought (what the ECM check consults) */
#define KH_CAS_LOG 64       /* purchase log, kept for export (seed 001) */
#define KH_CAS_SIGNERS 4    /* operator signers known: two ECM and two EMM signers (rotation) */
#define KH_CAS_REVOKED 32   /* revoked module UAs (CAMs) the card refuses in CAM AUTH */
/* A reload id more than this far above the last one applied is refused: the center counts them
 * one by one, so only a forged or broken EMM jumps; a jump to the top would block every reload. */
#define KH_CAS_RELOAD_WINDOW 1024u

struct kh_cas_skey {
	uint8_t id;
	uint32_t version;
	uint8_t key[32];
};
struct kh_cas_right {
	uint32_t product;
	uint64_t start, end; /* [start, end), Unix seconds */
};
struct kh_cas_buy {
	uint32_t event, price;
	uint64_t time;
	uint32_t exported_in; /* the first usage block that carried it (0: none yet) */
};

/* A signer whose certificate the card checked against its root (SET SIGNER). */
struct kh_cas_signer_pk {
	uint8_t role; /* KH_ROLE_ECM_SIGNER or KH_ROLE_EMM_SIGNER */
	uint32_t serial;
	uint8_t pk[32];
	uint64_t not_after; /* its certificate's: nothing it signed for a later time is believed */
};

struct kh_cas_state {
	uint32_t credit;
	uint32_t last_reload;   /* highest reload id applied */
	uint32_t block_seq;     /* last usage block made (seed 001) */
	uint32_t seq[3];        /* last EMM seq accepted, by address type */
	uint32_t group;
	uint8_t has_group, has_all, export_ok, export_req;
	uint8_t group_key[32], all_key[32];
	uint8_t nkeys, nrights, nevents, nlog, nsigners, nrevoked;
	struct kh_cas_signer_pk signers[KH_CAS_SIGNERS];
	uint32_t revoked_version;            /* of the operator's list of revoked modules */
	uint32_t revoked[KH_CAS_REVOKED];    /* UAs whose certificates the card no longer accepts */
	struct kh_cas_skey keys[KH_CAS_KEYS];
	struct kh_cas_right rights[KH_CAS_RIGHTS];
	uint32_t events[KH_CAS_EVENTS];
	struct kh_cas_buy log[KH_CAS_LOG];
};

/*
 * Usage counters (seed 001's statistics). Outside the command transaction on purpose: a refused
 * ECM still counts. Sealed with the state whenever it is stored, and at least every
 * KH_CAS_USAGE_FLUSH released CWs, so a power cut loses fewer than that many counts. A store costs
 * a file write with fsync (milliseconds): one ECM in 256 pays it, far outside the 99th
 * percentile of the ECM-to-CW latency; credit and purchases never wait, they are stored at once.
 */
#define KH_CAS_USAGE_FLUSH 256
struct kh_cas_usage {
	uint32_t n_ecm, n_cw, n_refused, n_emm;
	uint32_t unsaved;
	/*
	 * The card's clock: the newest broadcast time of an ECM whose operator signature it checked
	 * (0 before the first). Certificate validity is judged against it, never against a time the
	 * host supplies. Outside the transaction like the counters, so a refused but genuine ECM
	 * still moves it; a power cut may lose what moved since the last store (it then lags, never
	 * leads).
	 */
	uint64_t clock;
	uint64_t clock_saved; /* the clock as last stored (volatile) */
};

/* Everything that survives a power cycle: what the sealed blob holds. */
struct kh_persist {
	uint8_t lifecycle;
	uint8_t role;
	uint32_t ua;
	uint8_t root_pk[32];
	uint8_t sign_sk[32], sign_pk[32];
	uint8_t pair_sk[32], pair_pk[32];
	uint8_t kp[32], ku[32];
	uint16_t sign_cert_len, pair_cert_len;
	uint8_t sign_cert[KH_CERT_MAX];
	uint8_t pair_cert[KH_CERT_MAX];
	struct kh_cas_state cas;
};

#define KH_MODULE_MAGIC 0x4B484D53u /* "KHMS" */

struct kh_module {
	uint32_t magic;
	uint8_t state_key[32];
	struct kh_module_env env;
	uint64_t counter;
	struct kh_persist p;
	struct kh_persist saved; /* copy taken before each command, restored when it fails */
	int dirty;               /* the command changed p: seal and store before answering */
	int relay;               /* answer with KH_SW_RELAY instead of 9000 */
	int depth;               /* 1 while processing a command from inside the channel */
	int keep_data;           /* the refusal's answer carries data (a pay-per-view offer) */
	int commit_refusal;      /* the command is refused, but what it left in p is stored all the
				  * same (a card's own EMM that cannot apply still uses up its seq) */
	struct kh_cas_usage usage;

	struct kh_chan chan;  /* responder side: toward the CAM (card) or the decoder (CAM) */
	/* Initiator side (applet_cam.c), in a CAM toward its card and in a decoder toward its CAM. */
	struct kh_link link;
	uint8_t cam_phase;    /* enum in applet_cam.c */
	uint32_t cam_rekey_ua; /* during a re-key, the module it must be again */
	uint8_t cam_secret;   /* CAM: the command in flight came inside the decoder's channel */
	uint8_t cam_ecm;      /* the command in flight carries an ECM: its answer is under the ladder */
	uint16_t cam_pendlen; /* a command waiting for a re-pairing to finish */
	uint8_t cam_pending[KH_APDU_MAX_DATA];
	/*
	 * Key ladder (volatile, one key per channel). Decoder: ladder_on when the host asked for it
	 * at CARD START; ladder_key the fresh K_S it gave its CAM in DECODER AUTH. CAM: ladder_on
	 * when the proven decoder on its responder channel gave one.
	 */
	uint8_t ladder_on;
	uint8_t ladder_set; /* decoder: ladder_key holds the K_S it drew (never the zeroes before it) */
	uint8_t ladder_key[32];
	/*
	 * The decoder module a CAM's card channel serves (volatile). CAM: the proven decoder it named
	 * to the card in its CAM AUTH; a different decoder proving itself ends the card channel. Card:
	 * the decoder its CAM named, checked against the operator's revocation list like the CAM.
	 */
	uint32_t served_dec;
	/* Decoder: the descrambler's key slots, loaded only from ladder-sealed control words. */
	struct kh_cw_answer desc;
	uint8_t desc_loaded;

	uint8_t inner[KH_APDU_MAX_DATA];        /* opened inner command */
	uint8_t inner_resp[KH_APDU_MAX_RESP];   /* its response before sealing */
	uint8_t plain[KH_MODULE_BLOB_MAX];      /* serialised state */
	uint8_t blob[KH_MODULE_BLOB_MAX];       /* sealed state */
};

typedef kh_err (*kh_handler)(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp);

/* Handlers, by applet. */
kh_err kh__h_get_info(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp);
kh_err kh__h_get_cert(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp);
kh_err kh__h_perso_init(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp);
kh_err kh__h_perso_certs(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp);
kh_err kh__h_pair_open(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp);
kh_err kh__h_sealed(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp);
kh_err kh__h_echo(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp);
kh_err kh__h_cam_auth(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp);
kh_err kh__h_card_start(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp);
kh_err kh__h_card_resp(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp);
kh_err kh__h_card_send(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp);
kh_err kh__h_ecm(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp);
kh_err kh__h_purchase(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp);
kh_err kh__h_emm(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp);
kh_err kh__h_cas_status(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp);
kh_err kh__h_cas_flush(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp);
kh_err kh__h_export(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp);
kh_err kh__h_hello(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp);
kh_err kh__h_ladder_load(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp);
kh_err kh__h_descramble(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp);

/* CAM: end the channel to the card (its keys, what was in flight). */
void kh__cam_drop(struct kh_module *m);
/* Forget the key ladder and the descrambler's keys (a channel ended or was replaced). */
void kh__ladder_wipe(struct kh_module *m);

/* The card's clock for certificate validity (struct kh_cas_usage's clock; 0: not known yet). */
uint64_t kh__card_clock(const struct kh_module *m);
/* KH_ERR_REVOKED when the operator's revocation list names ua. */
kh_err kh__card_revoked(const struct kh_module *m, uint32_t ua);

/* A card's pay-TV command: card role (else APDU_INS), P1 <= p1_max and P2 = 0, personalised. */
kh_err kh__cas_need_card(const struct kh_module *m, const struct kh_apdu *a, uint8_t p1_max);

/* The CAS applet's part of the sealed state: TLV tags from KH_CAS_STATE_TAG0 up. */
#define KH_CAS_STATE_TAG0 0x40
kh_err kh__cas_serialise(const struct kh_cas_state *c, const struct kh_cas_usage *u, struct kh_wr *w);
/* One TLV of it into c / u; KH_ERR_TLV_TAG for a tag that is not the applet's. */
kh_err kh__cas_field(const struct kh_tlv *t, struct kh_cas_state *c, struct kh_cas_usage *u);

/* Run one parsed command through the dispatch table (used again for commands inside the channel). */
size_t kh__module_exec(struct kh_module *m, const uint8_t *cmd, size_t len, uint8_t *resp, size_t cap);
uint64_t kh__module_now(const struct kh_module *m);

#endif
