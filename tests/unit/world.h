/*
 * The world the module and relay tests run in (world.c): two operators in a temporary
 * directory, a CAM, two cards and a foreign card personalised through APDUs, a blank module;
 * APDU helpers; and "tap", a transport in front of a card that an attacker controls (replays,
 * flips and cuts bytes).
 */
#ifndef KH_TEST_WORLD_H
#define KH_TEST_WORLD_H

#include <stddef.h>
#include <stdint.h>

#include "keyhole/apdu.h"
#include "keyhole/authority.h"
#include "keyhole/cas.h"
#include "keyhole/host.h"
#include "keyhole/pair.h"
#include "keyhole/softmodule.h"
#include "keyhole/transport.h"

struct mod {
	struct kh_softmod *sm;
	struct kh_transport t;
	uint32_t ua;
};

struct world {
	char *dir;
	char *auth_dir, *foreign_dir;
	struct kh_authority *auth, *foreign;
	uint8_t root_pk[32];
	struct mod cam, dec, c1, c2, fx, blank; /* dec: a decoder module */
};

enum tap_mode {
	TAP_PASS = 0,
	TAP_REPLAY_RESP, /* forward the command, answer with the previous sealed response */
	TAP_FLIP_RESP,   /* forward, flip bit `bit` of byte `pos` of the response data */
	TAP_TRUNC_RESP,  /* forward, keep `pos` bytes of the response (keep_sw: data only, SW kept) */
	TAP_REPLAY_CMD,  /* deliver the first recorded sealed command instead of this one */
};

#define TAP_KEEP 8

struct tap {
	struct kh_transport *card;
	enum tap_mode mode;
	size_t pos;
	int bit;
	int keep_sw;
	unsigned n_get_cert, n_pair_open, n_sealed, n_other;
	uint8_t last_resp[KH_APDU_MAX_RESP];
	size_t last_resp_len;
	uint8_t cmd[TAP_KEEP][KH_APDU_MAX_CMD];
	size_t cmd_len[TAP_KEEP];
	int ncmd;
};

char *path_in(const char *dir, const char *name);
void make_mod(struct kh_authority *a, enum kh_role role, struct mod *m);
int world_setup(void **state);
int world_teardown(void **state);
uint16_t xfer_raw(struct kh_transport *t, const uint8_t *cmd, size_t len, uint8_t *resp, size_t cap,
		  size_t *dlen);
uint16_t send_apdu(struct kh_transport *t, uint8_t cla, uint8_t ins, uint8_t p1, uint8_t p2,
		   const uint8_t *data, size_t lc, uint8_t *resp, size_t cap, size_t *dlen);
struct kh_module_info info_of(struct kh_transport *t);
void build_echo(const uint8_t *msg, size_t n, uint8_t *inner, size_t cap, size_t *len);
kh_err card_echo(struct kh_transport *cam, struct kh_transport *card);
kh_err link_echo(struct kh_link *l, struct kh_transport *cam, uint64_t now);
void pair_cam_card(struct world *w, struct mod *card);
void assert_cam_unpaired(struct world *w);
kh_err tap_xfer(void *ctx, const uint8_t *cmd, size_t len, uint8_t *resp, size_t cap, size_t *rlen);
struct tap *tap_new(struct kh_transport *card, struct kh_transport *out);
/* The operator's signer of a role (key into sg, may be NULL; certificate into der): its length. */
size_t world_signer(struct kh_authority *a, enum kh_role role, struct kh_cas_signer *sg, uint8_t der[KH_CERT_MAX]);
/* The ECM signer of authority a (a static copy: valid until the next call). */
const struct kh_cas_signer *world_ecm_signer(struct kh_authority *a);
/* A unique EMM for ua under its Kp from authority a, carrying cmds (a TLV list); its length. The
 * first (seq 1) also carries SET SIGNER for a's ECM and EMM signers. */
size_t world_emm(struct kh_authority *a, uint32_t ua, uint32_t seq, const uint8_t *cmds, size_t n, uint8_t *out,
		 size_t cap);

#endif
