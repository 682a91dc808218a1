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
#include "keyhole/cert.h"
#include "keyhole/module.h"
#include "keyhole/pair.h"

enum kh_lifecycle {
	KH_LC_BLANK = 0,        /* fresh: only personalisation */
	KH_LC_KEYED = 1,        /* keys generated, waiting for certificates */
	KH_LC_PERSONALISED = 2, /* in service */
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

	struct kh_chan chan;  /* responder side: toward the CAM (card) or the decoder (CAM) */
	struct kh_link link;  /* CAM only: initiator side toward the card */
	uint8_t cam_phase;    /* CAM only: enum in applet_cam.c */
	uint32_t cam_rekey_ua; /* CAM only: during a re-key, the card it must be again */
	uint16_t cam_pendlen; /* CAM only: a command waiting for a re-pairing to finish */
	uint8_t cam_pending[KH_APDU_MAX_DATA];

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

/* Run one parsed command through the dispatch table (used again for commands inside the channel). */
size_t kh__module_exec(struct kh_module *m, const uint8_t *cmd, size_t len, uint8_t *resp, size_t cap);
uint64_t kh__module_now(const struct kh_module *m);

#endif
