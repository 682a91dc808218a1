/*
 * Pay-TV entitlement messages (the protocol design "Pay-TV: ECM and EMM"; docs/protocols/cas.md): the
 * ECM that carries a crypto period's control words under a service key, the EMM that carries
 * rights, keys and credit to one card, a group or all cards, and the card's answers. Both sides
 * use this codec: the headend and the EMM maker seal, the card opens (src/module/applet_cas.c),
 * the decoder reads the clear headers to route and filter. Nothing here allocates or does I/O.
 *
 * Both messages are whole private sections (ISO/IEC 13818-1 short form: no CRC, the AEAD tag
 * protects every byte):
 *
 *   section header  table_id | 0x70 | section_length (12 bits)          3 bytes
 *   ECM body        u8 version=2 | u8 key_id | u32 key_version | u32 cp_number | nonce(12)
 *                   | AES-256-GCM(service_key, nonce, aad = the 25 bytes before, TLV) | tag(16)
 *                   | u32 signer | Ed25519(ECM signer, "keyhole ecm sig v2" | all before)
 *   unique EMM      u8 version=1 | u8 address type | u32 address | u32 seq | nonce(12)
 *                   | AES-256-GCM(Kp, nonce, aad = the 25 bytes before, TLV commands) | tag(16)
 *   group/all EMM   u8 version=2 | ... as unique, under the group or broadcast key ... | tag(16)
 *                   | u32 signer | Ed25519(EMM signer, "keyhole emm sig v2" | all before)
 *
 * A key every card holds (service, group, broadcast) only hides: what a card believes in an ECM
 * or a group/broadcast EMM is the operator's signature (docs/protocols/cas.md "Who may say
 * what"). Version 1 of a signed kind is refused with KH_ERR_VERSION.
 *
 * ECM table_id is 0x80 or 0x81, toggled by the headend whenever the content changes (a new
 * crypto period), so a decoder passes each ECM to the card once. EMM table_id is 0x82 (unique
 * address: the card's UA), 0x83 (group: a group number), 0x84 (all: address 0) and must agree
 * with the address type.
 *
 * Keys: Kp is the card's personal key (the protocol design); the group and broadcast keys are
 * diversified from the same master, HKDF(master, "", "keyhole emm group v1" | u32 group, 32) and
 * HKDF(master, "", "keyhole emm all v1", 32), and reach a card in a unique EMM (SET GROUP,
 * SET ALL KEY) — an addition to the protocol design, which names group keys but not how they arrive.
 */
#ifndef KEYHOLE_CAS_H
#define KEYHOLE_CAS_H

#include <stddef.h>
#include <stdint.h>

#include "keyhole/buf.h"
#include "keyhole/crypto.h"
#include "keyhole/err.h"

#define KH_CAS_VERSION 1        /* a card's own EMM: Kp authenticates it */
#define KH_CAS_VERSION_SIGNED 2 /* ECMs, group and broadcast EMMs: the operator signs them */
#define KH_CAS_KEY_LEN 32
#define KH_CAS_CW_MAX 16
#define KH_CAS_NONCE_LEN 12
#define KH_CAS_TAG_LEN 16
#define KH_CAS_SIG_LEN 64
/* What a signed section carries after its tag: u32 signer serial | Ed25519 signature. */
#define KH_CAS_TRAILER_LEN (4 + KH_CAS_SIG_LEN)

#define KH_ECM_TID_EVEN 0x80u
#define KH_ECM_TID_ODD 0x81u
#define KH_EMM_TID_UNIQUE 0x82u
#define KH_EMM_TID_GROUP 0x83u
#define KH_EMM_TID_ALL 0x84u

/* Section header and body header together: what the AEAD authenticates as aad. */
#define KH_ECM_HDR_LEN (3 + 1 + 1 + 4 + 4 + KH_CAS_NONCE_LEN)
#define KH_EMM_HDR_LEN (3 + 1 + 1 + 4 + 4 + KH_CAS_NONCE_LEN)
/* Largest whole sections accepted (both fit in one 4096-byte APDU with room to spare). */
#define KH_ECM_MAX 256u
#define KH_EMM_MAX 1024u
#define KH_EMM_CMDS_MAX (KH_EMM_MAX - KH_EMM_HDR_LEN - KH_CAS_TAG_LEN)
#define KH_EMM_SIGNED_CMDS_MAX (KH_EMM_CMDS_MAX - KH_CAS_TRAILER_LEN)

/*
 * An operator signing key: the Ed25519 private key of an ECM signer or an EMM signer (roles
 * `ecm-signer`, `emm-signer`, certified by the root) and the serial its certificate names (the
 * certificate's UA). A card knows a signer only after it was given that certificate (SET SIGNER,
 * under its own Kp), so a key every card holds never authorises anything.
 */
struct kh_cas_signer {
	uint32_t serial;
	uint8_t sk[32];
};

/* ---- ECM ---- */

enum kh_ecm_access {
	KH_ECM_PRODUCT = 1, /* a subscription product covers the programme */
	KH_ECM_EVENT = 2,   /* a pay-per-view event, bought in the card at a price */
};

/* Tags of the ECM's encrypted TLV. Each appears once; PRODUCT and EVENT exclude each other. */
enum {
	KH_ECM_T_CW_EVEN = 1, /* 8 bytes (DVB-CSA2) or 16 (AES) */
	KH_ECM_T_CW_ODD = 2,
	KH_ECM_T_ALG = 3,     /* u8, enum kh_scr_alg */
	KH_ECM_T_PRODUCT = 4, /* u32 product id */
	KH_ECM_T_EVENT = 5,   /* u32 event id | u32 price */
	KH_ECM_T_TIME = 6,    /* u64 broadcast time, Unix seconds */
	KH_ECM_T_REVOKED = 7, /* optional u32: the version of the revoked list a card must hold */
	KH_ECM_T_FLAGS = 8,   /* optional u8, KH_ECM_F_* (never 0 when present) */
};

/* The operator's policy for the programme, signed with the rest of the ECM. */
#define KH_ECM_F_LADDER 0x01u /* control words only under the key ladder (docs/protocols/decoder.md) */

/* The clear header, readable by anyone (the decoder uses it to route and deduplicate). */
struct kh_ecm_hdr {
	uint8_t table_id;
	uint8_t key_id;
	uint32_t key_version;
	uint32_t cp;     /* crypto period number */
	uint32_t signer; /* serial of the ECM signer whose signature the section carries */
};

/* Everything an ECM says once opened. */
struct kh_ecm {
	struct kh_ecm_hdr h;
	uint8_t alg;    /* enum kh_scr_alg */
	uint8_t cw_len; /* 8 or 16, both CWs the same length */
	uint8_t cw_even[KH_CAS_CW_MAX];
	uint8_t cw_odd[KH_CAS_CW_MAX];
	uint8_t access; /* enum kh_ecm_access */
	uint32_t product;
	uint32_t event;
	uint32_t price;
	uint64_t time;
	uint32_t revoked_version; /* 0: the ECM asks for no list */
	uint8_t flags;            /* KH_ECM_F_* */
};

/*
 * Seal an ECM under key (a random nonce is drawn) and sign the whole section with the ECM signer
 * sg (version 2). KH_ERR_INVAL for a table_id other than 0x80/0x81, a cw_len other than 8/16, an
 * unknown access; KH_ERR_BUF when cap is short.
 */
KH_WARN_UNUSED kh_err kh_ecm_seal(const uint8_t key[static KH_CAS_KEY_LEN], const struct kh_cas_signer *sg,
				  const struct kh_ecm *e, uint8_t *out, size_t cap, size_t *len);
/*
 * Check a whole ECM section's framing and read its clear header: KH_ERR_TRUNCATED / TRAILING
 * (section_length against n), KH_ERR_TOO_LARGE (above KH_ECM_MAX), KH_ERR_FORMAT (table_id,
 * a body shorter than header, tag and signature), KH_ERR_VERSION (anything but version 2: an
 * unsigned version-1 ECM is refused, never read as one without a signature).
 */
KH_WARN_UNUSED kh_err kh_ecm_peek(const uint8_t *sec, size_t n, struct kh_ecm_hdr *h);
/*
 * Open an ECM with the service key its header names: the peek errors, KH_ERR_AUTH when the tag
 * fails, then the TLV rules (KH_ERR_TLV_TAG unknown tag, KH_ERR_FORMAT duplicate or missing
 * field, wrong length, both or neither access kind, CW length against alg). *e is written only
 * on success; the plaintext is wiped on every path. The caller wipes e's CWs after use.
 */
KH_WARN_UNUSED kh_err kh_ecm_open(const uint8_t key[static KH_CAS_KEY_LEN], const uint8_t *sec, size_t n,
				  struct kh_ecm *e);
/*
 * Check the signature of an ECM section (framing as kh_ecm_peek) with the public key of the
 * signer its header names: Ed25519 over "keyhole ecm sig v2" | every byte before the signature.
 * KH_ERR_SIGNATURE when it does not verify.
 */
KH_WARN_UNUSED kh_err kh_ecm_verify(const uint8_t pk[static 32], const uint8_t *sec, size_t n);

/* ---- EMM ---- */

enum kh_emm_addr {
	KH_EMM_UNIQUE = 0, /* address = the card's UA, key Kp */
	KH_EMM_GROUP = 1,  /* address = group number, key the group key */
	KH_EMM_ALL = 2,    /* address = 0, key the broadcast key */
};

struct kh_emm_hdr {
	uint8_t table_id; /* follows from addr_type */
	uint8_t addr_type;
	uint32_t addr;
	uint32_t seq;    /* unique: last + 1 exactly; group and all: strictly increasing */
	uint32_t signer; /* group and all: the EMM signer's serial; 0 for unique */
};

/* EMM commands: a TLV list, applied all together or not at all. */
enum kh_emm_cmd {
	KH_EMM_SET_KEY = 1,     /* u8 key_id | u32 key_version | key(32): add a service key */
	KH_EMM_ENTITLE = 2,     /* u32 product | u64 start | u64 end (Unix seconds, end excluded) */
	KH_EMM_REVOKE = 3,      /* u32 product: remove every right to it */
	KH_EMM_ADD_CREDIT = 4,  /* u32 amount | u32 reload_id: applied once, reload ids increase */
	KH_EMM_AUTH_EXPORT = 5, /* u8 0|1: may the card export its usage data (seed 001) */
	KH_EMM_REQ_EXPORT = 6,  /* empty: export now (seed 001) */
	KH_EMM_SET_GROUP = 7,   /* u32 group | key(32) | u32 seq: the card's group, its key, and the
				 * group's sequence now (the card takes group EMMs above it only) */
	KH_EMM_SET_ALL_KEY = 8, /* key(32): the broadcast key */
	KH_EMM_ACK_USAGE = 9,   /* u32 block_seq: the center holds the purchases of blocks up to it */
	KH_EMM_SET_SIGNER = 10, /* DER certificate of an ECM or EMM signer, checked against the root */
	KH_EMM_REVOKED = 11,    /* u32 version | u32 UA...: the operator's revoked modules (at most 32) */
};

/*
 * Seal a card's own EMM (UNIQUE, version 1) under its Kp. table_id is set from addr_type.
 * KH_ERR_INVAL for another address type (group and all EMMs are signed: kh_emm_seal_signed) or
 * an empty command list; KH_ERR_TOO_LARGE above KH_EMM_CMDS_MAX; KH_ERR_BUF when cap is short.
 */
KH_WARN_UNUSED kh_err kh_emm_seal(const uint8_t key[static KH_CAS_KEY_LEN], const struct kh_emm_hdr *h,
				  const uint8_t *cmds, size_t len, uint8_t *out, size_t cap, size_t *outlen);
/*
 * Seal a GROUP or ALL EMM (version 2) under the group or broadcast key, which only hides it, and
 * sign the section with the EMM signer sg, which is what makes a card believe it. KH_ERR_INVAL
 * for a UNIQUE header, an address other than 0 for ALL, or no commands; KH_ERR_TOO_LARGE above
 * KH_EMM_SIGNED_CMDS_MAX.
 */
KH_WARN_UNUSED kh_err kh_emm_seal_signed(const uint8_t key[static KH_CAS_KEY_LEN], const struct kh_cas_signer *sg,
					 const struct kh_emm_hdr *h, const uint8_t *cmds, size_t len, uint8_t *out,
					 size_t cap, size_t *outlen);
/* Framing and clear header, as kh_ecm_peek; KH_ERR_FORMAT also when table_id and type disagree;
 * KH_ERR_VERSION for a unique EMM that is not version 1 or a group or all EMM that is not
 * version 2 (signed): an unsigned group or broadcast EMM is refused, never downgraded. */
KH_WARN_UNUSED kh_err kh_emm_peek(const uint8_t *sec, size_t n, struct kh_emm_hdr *h);
/* Open an EMM's command list into cmds (cap >= KH_EMM_CMDS_MAX is always enough). KH_ERR_AUTH
 * when the tag fails; cmds is written only on success. Commands are checked by the card. */
KH_WARN_UNUSED kh_err kh_emm_open(const uint8_t key[static KH_CAS_KEY_LEN], const uint8_t *sec, size_t n,
				  uint8_t *cmds, size_t cap, size_t *cmdlen);
/* A signed (group or all) EMM's signature, as kh_ecm_verify with "keyhole emm sig v2".
 * KH_ERR_SIGNATURE also for a unique EMM, which carries none. */
KH_WARN_UNUSED kh_err kh_emm_verify(const uint8_t pk[static 32], const uint8_t *sec, size_t n);

/* Command builders (append one TLV to w; the writer's sticky error). */
kh_err kh_emm_put_set_key(struct kh_wr *w, uint8_t key_id, uint32_t key_version,
			  const uint8_t key[static KH_CAS_KEY_LEN]);
kh_err kh_emm_put_entitle(struct kh_wr *w, uint32_t product, uint64_t start, uint64_t end);
kh_err kh_emm_put_revoke(struct kh_wr *w, uint32_t product);
kh_err kh_emm_put_add_credit(struct kh_wr *w, uint32_t amount, uint32_t reload_id);
kh_err kh_emm_put_auth_export(struct kh_wr *w, int on);
kh_err kh_emm_put_req_export(struct kh_wr *w);
kh_err kh_emm_put_set_group(struct kh_wr *w, uint32_t group, const uint8_t key[static KH_CAS_KEY_LEN], uint32_t seq);
kh_err kh_emm_put_set_all_key(struct kh_wr *w, const uint8_t key[static KH_CAS_KEY_LEN]);
kh_err kh_emm_put_ack_usage(struct kh_wr *w, uint32_t block_seq);
kh_err kh_emm_put_set_signer(struct kh_wr *w, const uint8_t *cert, size_t len);
kh_err kh_emm_put_revoked(struct kh_wr *w, uint32_t version, const uint32_t *uas, size_t n);

/* ---- keys diversified from the management master (the protocol design, and above) ---- */

KH_WARN_UNUSED kh_err kh_cas_card_kp(const uint8_t master[static 32], uint32_t ua, uint8_t kp[static 32]);
KH_WARN_UNUSED kh_err kh_cas_card_ku(const uint8_t master[static 32], uint32_t ua, uint8_t ku[static 32]);
KH_WARN_UNUSED kh_err kh_cas_group_key(const uint8_t master[static 32], uint32_t group, uint8_t key[static 32]);
KH_WARN_UNUSED kh_err kh_cas_all_key(const uint8_t master[static 32], uint8_t key[static 32]);

/* ---- the card's answers (inside the sealed channel) ---- */

/*
 * ECM answer (SW 9000): TLV {1: u8 alg, 2: even CW, 3: odd CW, 4: u32 cp}. A refusal is a status
 * word naming the reason (KH_ERR_NO_RIGHT, RIGHT_EXPIRED, RIGHT_NOT_STARTED, NOT_PURCHASED,
 * CREDIT_LOW, NO_KEY, ...); for NOT_PURCHASED and CREDIT_LOW the answer also carries data, the
 * pay-per-view offer TLV {1: u32 event, 2: u32 price, 3: u32 credit}, so the decoder can tell the
 * viewer what the event costs. The same offer TLV answers a PURCHASE (SW 9000: bought, or bought
 * before; the credit after it).
 */
enum { KH_CW_T_ALG = 1, KH_CW_T_EVEN = 2, KH_CW_T_ODD = 3, KH_CW_T_CP = 4, KH_CW_T_LADDER = 5,
       KH_CW_T_LADDER_ONLY = 6 /* u8 1: the ECM allows these CWs only under the key ladder */ };
enum { KH_OFFER_T_EVENT = 1, KH_OFFER_T_PRICE = 2, KH_OFFER_T_CREDIT = 3 };

/*
 * Key ladder. A decoder module that asked for it (docs/protocols/decoder.md) gives its CAM a
 * fresh 32-byte ladder key K_S inside their channel; the CAM then answers an ECM with TLV {1: alg,
 * 4: cp, 5: sealed CWs} instead of the two clear CWs, where sealed CWs =
 * nonce(12) || AES-256-GCM(K_S, nonce, aad = "keyhole ladder v1" || u8 alg || u32 cp,
 * u8 cw_len || even || odd) — the host carries it to the decoder module's descrambler (LADDER
 * LOAD), the only place it opens.
 */
#define KH_LADDER_LABEL "keyhole ladder v1"
#define KH_LADDER_SEALED_MAX (KH_NONCE_LEN + 1 + 2 * KH_CAS_CW_MAX + KH_TAG_LEN)

struct kh_cw_answer {
	uint8_t alg;
	uint8_t cw_len;    /* 0 while the CWs are sealed */
	uint8_t even[KH_CAS_CW_MAX];
	uint8_t odd[KH_CAS_CW_MAX];
	uint32_t cp;
	uint8_t ladder_only; /* the card's answer said KH_CW_T_LADDER_ONLY (the CAM enforces it) */
	uint8_t sealed_len; /* key ladder: the sealed CWs (0: the CWs are in clear above) */
	uint8_t sealed[KH_LADDER_SEALED_MAX];
};

struct kh_ppv_offer {
	uint32_t event;
	uint32_t price;
	uint32_t credit;
};

/*
 * Parse the two answers (hosts skip unknown tags). KH_ERR_FORMAT when a field is missing. An ECM
 * answer has either both clear CWs or sealed ones (tag 5), never both.
 */
KH_WARN_UNUSED kh_err kh_cw_answer_parse(const uint8_t *d, size_t n, struct kh_cw_answer *out);
/* The CAM's side: seal a's clear CWs under the ladder key and write the sealed answer TLV. */
KH_WARN_UNUSED kh_err kh_cw_ladder_seal(const uint8_t key[static 32], const struct kh_cw_answer *a,
					struct kh_wr *out);
/*
 * The descrambler's side: open a->sealed under the ladder key into a->even, a->odd and
 * a->cw_len. KH_ERR_LADDER when it does not open (another key, altered bytes, alg or cp changed);
 * KH_ERR_FORMAT when the plaintext is malformed.
 */
KH_WARN_UNUSED kh_err kh_cw_ladder_open(const uint8_t key[static 32], struct kh_cw_answer *a);
KH_WARN_UNUSED kh_err kh_ppv_offer_parse(const uint8_t *d, size_t n, struct kh_ppv_offer *out);

/* CAS STATUS answer: a TLV list, every value big-endian (hosts skip tags they do not know). */
enum kh_cas_status_tag {
	KH_CAS_STATUS_T_CREDIT = 1,     /* u32 credit */
	KH_CAS_STATUS_T_GROUP = 2,      /* u32 group (only when the card has one) */
	KH_CAS_STATUS_T_SEQ_UNIQUE = 3, /* u32 last EMM seq applied, for each address type: */
	KH_CAS_STATUS_T_SEQ_GROUP = 4,  /*   SEQ_UNIQUE + enum kh_emm_addr */
	KH_CAS_STATUS_T_SEQ_ALL = 5,
	KH_CAS_STATUS_T_EXPORT = 6,     /* u8 export authorised (0 or 1) */
	KH_CAS_STATUS_T_NLOG = 7,       /* u16 purchases logged */
	KH_CAS_STATUS_T_N_ECM = 8,      /* u32 ECMs seen */
	KH_CAS_STATUS_T_N_CW = 9,       /* u32 control words released */
	KH_CAS_STATUS_T_N_REFUSED = 10, /* u32 ECMs refused */
	KH_CAS_STATUS_T_N_EMM = 11,     /* u32 EMMs applied */
	KH_CAS_STATUS_T_RIGHT = 12,     /* repeated: u32 product | u64 start | u64 end */
	KH_CAS_STATUS_T_KEY = 13,       /* repeated: u8 service key id | u32 version (never the key) */
	KH_CAS_STATUS_T_PURCHASE = 14,  /* repeated: u32 event | u32 price | u64 time */
	KH_CAS_STATUS_T_RELOAD = 15,    /* u32 last credit reload id applied */
	KH_CAS_STATUS_T_SIGNER = 16,    /* repeated: signer known, u8 role | u32 serial */
};
#define KH_CAS_STATUS_MAX_RIGHTS 32
#define KH_CAS_STATUS_MAX_KEYS 8
#define KH_CAS_STATUS_MAX_PURCHASES 64
struct kh_cas_status {
	uint32_t credit;
	uint32_t group;
	uint8_t has_group;
	uint32_t seq[3];
	uint8_t export_ok;
	uint16_t npurchases;
	uint32_t n_ecm, n_cw, n_refused, n_emm;
	uint32_t last_reload;
	size_t nrights;
	struct { uint32_t product; uint64_t start, end; } rights[KH_CAS_STATUS_MAX_RIGHTS];
	size_t nkeys;
	struct { uint8_t id; uint32_t version; } keys[KH_CAS_STATUS_MAX_KEYS];
	struct { uint32_t event, price; uint64_t time; } purchases[KH_CAS_STATUS_MAX_PURCHASES];
	size_t nsigners;
	struct { uint8_t role; uint32_t serial; } signers[4];
};
KH_WARN_UNUSED kh_err kh_cas_status_parse(const uint8_t *d, size_t n, struct kh_cas_status *out);

#endif
