/*
 * Inside the module (src/module/ only). The module is one caller-allocated struct: persistent
 * state (sealed as a whole), volatile channel state, and work buffers, so that nothing here ever
 * allocates. Applets are const structs in the registry of registry.c: the instructions each
 * handles, and the section of the sealed state each keeps (docs/internals/module.md).
 */
#ifndef KH_MODULE_INT_H
#define KH_MODULE_INT_H

#include <stdint.h>

#include "keyhole/apdu.h"
#include "keyhole/buf.h"
#include "keyhole/cas.h"
#include "keyhole/cert.h"
#include "keyhole/crypto.h"
#include "keyhole/dist.h"
#include "keyhole/escrow.h"
#include "keyhole/keycard.h"
#include "keyhole/keyseq.h"
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

/*
 * The applets' persistent state: one fixed slot each, whatever the module's role (a module never
 * allocates, and no applet can overwrite another's). A slot's size is its type's, known at compile
 * time. These slots are under the command transaction: a command that fails leaves them as they
 * were. An applet with state adds its slot here and its section to the registry.
 */
/* applet_buy.c: a buyer device's purchases (seed 003). A slot is pending from BUY START until its
 * answer is unblinded or it is cancelled; a purchase of one share of a split key then holds that
 * share until BUY COMBINE (or a cancel) settles it; a settled slot is kept (to answer its notice
 * again) until a new purchase needs the room. */
#define KH_BUY_SLOTS 16
struct kh_buy_slot {
	uint8_t state;  /* enum in applet_buy.c: empty, pending, share, delivered, failed */
	uint8_t reason; /* enum kh_escrow_reason, when failed */
	uint8_t purchase[KH_ESCROW_ID_LEN];
	uint8_t listing[KH_ESCROW_ID_LEN];
	uint32_t escrow;
	uint8_t binding[32]; /* SHA-256 of what BUY START was given: listing, c, header hash;
			      * share: the content header's hash */
	uint8_t secret[32];  /* pending: the seed of r; share: its y; delivered: K; failed: zeroes */
	uint64_t seq;        /* when it started: the oldest settled slot is reused first */
	uint8_t x[32];       /* share: its x (public) */
	uint8_t t, n, index; /* share: the split's threshold and size, and which share it is */
};
struct kh_buy_state {
	uint64_t seq;
	struct kh_buy_slot slot[KH_BUY_SLOTS];
};

/* applet_kc.c: a key card's chains (seed 004). */
struct kh_kc_state {
	uint8_t enrolled;
	uint32_t center;       /* the key center's serial */
	uint8_t center_pk[32]; /* its signing key (acks) */
	uint8_t sealed[KH_KC_SEALED_SEED_LEN]; /* the seed as sealed to the center (the seed itself is gone) */
	struct kh_keyseq send, recv;
	uint64_t acked;        /* the highest post the center acknowledged */
	uint8_t has_last;      /* the last delivery opened, for a host that asks again */
	uint64_t last_j;
	uint8_t last_key[32];
	uint8_t last_hash[32]; /* SHA-256 of its header and chunk 0 */
};

struct kh_applet_slots {
	struct kh_cas_state cas; /* applet_cas.c (applet_usage.c works on it too) */
	struct kh_buy_state buy; /* applet_buy.c */
	struct kh_kc_state kc;   /* applet_kc.c */
};

/* The same for what the applets seal but keep outside the transaction: a refused command still
 * changes it (kh_module.live). */
struct kh_applet_live {
	struct kh_cas_usage cas;
};

/*
 * The applets' volatile state: what lives only while the module is powered (channels, keys of a
 * channel, a command in flight), one fixed slot per applet like the persistent ones. Outside the
 * command transaction and never sealed; each applet forgets its own (struct kh_applet's drop)
 * when the module loads a state.
 */

/* applet_pair.c: the responder side of the channel, toward the CAM (card) or the decoder (CAM). */
struct kh_pair_vol {
	struct kh_chan chan;
	/*
	 * The decoder module a CAM's card channel serves. CAM: the proven decoder it named to the
	 * card in its CAM AUTH; a different decoder proving itself ends the card channel. Card: the
	 * decoder its CAM named, checked against the operator's revocation list like the CAM.
	 */
	uint32_t served_dec;
};

/* applet_cam.c: the initiator side, in a CAM toward its card and in a decoder toward its CAM. */
struct kh_cam_vol {
	struct kh_link link;
	uint8_t phase;      /* enum in applet_cam.c */
	uint32_t rekey_ua;  /* during a re-key, the module it must be again */
	uint8_t secret;     /* CAM: the command in flight came inside the decoder's channel */
	uint8_t ecm;        /* the command in flight carries an ECM: its answer is under the ladder */
	uint16_t pendlen;   /* a command waiting for a re-pairing to finish */
	uint8_t pending[KH_APDU_MAX_DATA];
};

/*
 * applet_dec.c: the key ladder, one key per channel, and the descrambler. Decoder: ladder_on when
 * the host asked for it at CARD START; ladder_key the fresh K_S it gave its CAM in DECODER AUTH;
 * desc the descrambler's key slots, loaded only from ladder-sealed control words. CAM: ladder_on
 * when the proven decoder on its responder channel gave a K_S (applet_pair.c), which applet_cam.c
 * seals the card's control words under.
 */
struct kh_dec_vol {
	uint8_t ladder_on;
	uint8_t ladder_set; /* decoder: ladder_key holds the K_S it drew (never the zeroes before it) */
	uint8_t ladder_key[32];
	struct kh_cw_answer desc;
	uint8_t desc_loaded;
};

/* applet_proc.c: a processor's session with a distribution server, and the program it runs. */
struct kh_proc_vol {
	uint8_t session; /* enum in applet_proc.c */
	uint8_t rc[32], rs[32];
	uint8_t server_pk[32];
	uint32_t server_serial;
	uint8_t run; /* enum in applet_proc.c */
	struct kh_dist_prog prog;
	uint32_t next;     /* the chunk expected next */
	uint8_t chain[32]; /* the tag chain so far */
	uint8_t kx[32];    /* the program key, unwrapped at RUN OPEN */
};

/* applet_buy.c: the content being decrypted for the host. */
struct kh_buy_vol {
	uint8_t open;
	uint8_t ck[32]; /* the chunk key of K */
	struct kh_escrow_header h;
};

struct kh_applet_vol {
	struct kh_buy_vol buy;
	struct kh_pair_vol pair;
	struct kh_cam_vol cam;
	struct kh_dec_vol dec;
	struct kh_proc_vol proc;
};

/* Everything that survives a power cycle under the transaction: what the sealed blob holds, with
 * struct kh_applet_live. The runtime's own fields, then the applets' slots. */
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
	struct kh_applet_slots app;
};

#define KH_MODULE_MAGIC 0x4B484D53u /* "KHMS" */
/* Sealed state blob: "KHMS" | u8 version | u64 counter | nonce, then the sealed TLV state. */
#define KH_MODULE_BLOB_HDR_LEN (4 + 1 + 8 + KH_NONCE_LEN)
#define KH_MODULE_BLOB_V1 1 /* one flat TLV list: the runtime's tags, then the CAS applet's */
#define KH_MODULE_BLOB_V2 2 /* the runtime's tags, then one section per applet */

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
	struct kh_applet_live live;

	struct kh_applet_vol vol; /* the applets' volatile state */

	uint8_t inner[KH_APDU_MAX_DATA];        /* opened inner command */
	uint8_t inner_resp[KH_APDU_MAX_RESP];   /* its response before sealing */
	uint8_t plain[KH_MODULE_BLOB_MAX];      /* serialised state */
	uint8_t blob[KH_MODULE_BLOB_MAX];       /* sealed state */
};

typedef kh_err (*kh_handler)(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp);

/* ---- the applet registry (registry.c) ---- */

/* How an instruction may be reached (struct kh_applet_ins). */
#define KH_INSF_PLAIN 0x01  /* accepted as a plain command */
#define KH_INSF_SEALED 0x02 /* accepted inside the paired channel */
#define KH_INSF_NOTX 0x08   /* no snapshot: its own transaction (SEALED) or no persistent state */

struct kh_applet_ins {
	uint8_t ins;    /* enum kh_ins: one applet per instruction */
	uint8_t flags;  /* KH_INSF_* */
	uint32_t roles; /* the roles whose modules accept it (KH_ROLE_BIT); 0: every role. Any
			 * other module answers it as an unknown instruction, before its handler runs */
	kh_handler fn;
};

#define KH_ROLE_BIT(role) ((role) < 32 ? 1u << (role) : 0u)

/* Section flags. */
#define KH_SECTION_OPTIONAL 0x01 /* a build that does not know it may drop it (else it refuses the state) */
#define KH_SECTION_V1 0x02       /* in a version-1 blob (before sections), the tags the runtime does not
				  * know are this applet's section at version 1: at most one applet */

/*
 * An applet's part of the sealed state: one section, {id, version, flags, body}, where the body is
 * the applet's own TLV list. Loading reads every version from 1 to `version`; a newer one is
 * refused (KH_ERR_STATE_VERSION) before load is called. save and load see the slots of the state
 * being written or read, which load fills only: the runtime commits them when every section
 * loaded.
 */
struct kh_applet_state {
	uint8_t id;      /* unique among applets, never reused for another meaning */
	uint8_t version; /* of the section this build writes */
	uint8_t flags;   /* KH_SECTION_* (written with the section) */
	uint32_t roles;  /* the roles whose modules write it (KH_ROLE_BIT); any module reads it */
	size_t max_len;  /* the most bytes its body takes (registry.c checks the sum fits a blob) */
	kh_err (*save)(const struct kh_persist *p, const struct kh_applet_live *l, struct kh_wr *w);
	kh_err (*load)(struct kh_persist *p, struct kh_applet_live *l, uint8_t version, struct kh_rd *rd);
	/* A module with no such section: a blank state (called before load, and when it is absent). */
	void (*reset)(struct kh_persist *p, struct kh_applet_live *l);
	/* The sealed state was stored (NULL: nothing to do). */
	void (*stored)(struct kh_applet_live *l);
};

struct kh_applet {
	const char *name;
	const struct kh_applet_ins *ins;
	size_t nins;
	const struct kh_applet_state *state; /* NULL: nothing kept across a power cycle */
	/* Forget its volatile state (struct kh_applet_vol): the module loaded a state, as after a
	 * power cycle. NULL: it keeps none. */
	void (*drop)(struct kh_module *m);
};

#define KH_APPLET_INS(table) (table), (sizeof(table) / sizeof((table)[0]))

extern const struct kh_applet kh__applet_id, kh__applet_pair, kh__applet_cam, kh__applet_dec, kh__applet_cas,
	kh__applet_usage, kh__applet_proc, kh__applet_buy, kh__applet_kc;
/* Every applet, in the order dispatch searches them. */
extern const struct kh_applet *const kh__applets[];
extern const size_t kh__napplets;

/* Bytes a state section's header takes: TLV header, id, version, flags. */
#define KH_SECTION_HDR_LEN (3 + 3)
/* The most bytes the runtime's own TLVs take in the sealed state (module.c). */
#define KH_RUNTIME_STATE_MAX (2 * (3 + 1) + (3 + 4) + 7 * (3 + 32) + 2 * (3 + KH_CERT_MAX))
/* The most bytes of TLV state a blob can seal. */
#define KH_STATE_PLAIN_MAX (KH_MODULE_BLOB_MAX - KH_MODULE_BLOB_HDR_LEN - KH_TAG_LEN)

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

/* The most bytes of the CAS applet's section body (applet_cas.c's TLVs at their capacities). */
#define KH_CAS_SECTION_MAX                                                                                   \
	(2 * (3 + 4) + (3 + 12) + (3 + 36) + (3 + 32) + (3 + 2) + KH_CAS_KEYS * (3 + 37) +                   \
	 KH_CAS_RIGHTS * (3 + 20) + KH_CAS_EVENTS * (3 + 4) + KH_CAS_LOG * (3 + 20) + (3 + 4) +              \
	 KH_CAS_SIGNERS * (3 + 45) + (3 + 16) + (3 + 8) + (3 + 4 + 4 * KH_CAS_REVOKED))

/* The most bytes of the buyer applet's section body: its counter, then one TLV per slot. */
#define KH_BUY_SLOT_LEN_V1 (2 + 2 * KH_ESCROW_ID_LEN + 4 + 32 + 32 + 8)
#define KH_BUY_SLOT_LEN (KH_BUY_SLOT_LEN_V1 + 32 + 3)
#define KH_BUY_SECTION_MAX ((3 + 8) + KH_BUY_SLOTS * (3 + KH_BUY_SLOT_LEN))

/* The most bytes of the key card's section body. */
#define KH_KC_SECTION_MAX                                                                                    \
	((3 + 4) + (3 + 32) + (3 + KH_KC_SEALED_SEED_LEN) + 2 * (3 + 8 + KH_KEYSEQ_LEN) + (3 + 8) + (3 + 72))

/* Run one parsed command through the registry (used again for commands inside the channel). */
size_t kh__module_exec(struct kh_module *m, const uint8_t *cmd, size_t len, uint8_t *resp, size_t cap);
uint64_t kh__module_now(const struct kh_module *m);

#endif
