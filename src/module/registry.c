/*
 * The applet registry: every applet a module runs, as the const struct its own file defines
 * (module_int.h, struct kh_applet). The runtime (module.c) walks this list to dispatch a command
 * to the applet that handles its instruction and to seal and load each applet's section of the
 * state; it names no applet itself. Adding an applet is a line here, its struct in its file, and
 * when it keeps state, a slot in struct kh_applet_slots and its section's size below
 * (docs/internals/module.md has the checklist).
 */
#include "module/module_int.h"

const struct kh_applet *const kh__applets[] = {
	&kh__applet_id,    /* GET INFO, GET CERT, PERSO INIT, PERSO CERTS */
	&kh__applet_pair,  /* PAIR OPEN, SEALED, ECHO, CAM AUTH */
	&kh__applet_cam,   /* CARD START, CARD RESP, CARD SEND */
	&kh__applet_dec,   /* LADDER LOAD, DESCRAMBLE */
	&kh__applet_cas,   /* ECM, PURCHASE, EMM, CAS STATUS, CAS FLUSH; section 1 */
	&kh__applet_usage, /* EXPORT, HELLO */
	&kh__applet_proc,  /* DIST HELLO, AUTH, KEY, ACTIVATE; RUN OPEN, CHUNK, CLOSE */
	&kh__applet_buy,   /* BUY START, FINISH, NOTICE, CANCEL, LIST, COMBINE; CONTENT OPEN, CHUNK, CLOSE; section 2 */
	&kh__applet_kc,    /* KC ENROL, SEND, ACK, OPEN, HELLO, STATUS; section 3 */
};
const size_t kh__napplets = sizeof kh__applets / sizeof kh__applets[0];
_Static_assert(sizeof kh__applets / sizeof kh__applets[0] <= 64, "module.c keeps a 64-bit set of applets");

/* Every section of a role at its largest, with the runtime's own fields, fits one sealed blob: a
 * store never fails for want of room, whatever the applets hold. A module stores the sections of
 * its own role only (module.c), and no role has both the card's section and the buyer's. */
_Static_assert(KH_RUNTIME_STATE_MAX + (KH_SECTION_HDR_LEN + KH_CAS_SECTION_MAX) <= KH_STATE_PLAIN_MAX,
	       "the card's section does not fit a sealed state blob");
_Static_assert(KH_RUNTIME_STATE_MAX + (KH_SECTION_HDR_LEN + KH_BUY_SECTION_MAX) <= KH_STATE_PLAIN_MAX,
	       "the buyer's section does not fit a sealed state blob");
_Static_assert(KH_RUNTIME_STATE_MAX + (KH_SECTION_HDR_LEN + KH_KC_SECTION_MAX) <= KH_STATE_PLAIN_MAX,
	       "the key card's section does not fit a sealed state blob");
