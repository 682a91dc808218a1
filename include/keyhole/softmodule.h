/*
 * Software module: runs a kh_module in this process as a stand-in for the hardware of a smart
 * card or CAM. It plays the chip's role for the module: memory, the root key (from a key file,
 * mode 0600, given at start), non-volatile storage for the sealed state (the card file, replaced
 * atomically), and a monotonic counter (the counter file beside it, <card>.ctr) so that an older
 * copy of the card file is refused. The root key is kept only as long as needed: an opened module
 * has derived its state key from it, a new one until it is saved. On real hardware the root key and the counter live in the
 * chip; here they are files, and docs/internals/module.md says what that does and does not buy.
 */
#ifndef KEYHOLE_SOFTMODULE_H
#define KEYHOLE_SOFTMODULE_H

#include <stddef.h>
#include <stdint.h>

#include "keyhole/err.h"

struct kh_module;
struct kh_softmod;

/* Key file path for a card file: "x.card" -> "x.key", anything else -> "<path>.key" (malloc'd). */
char *kh_softmod_key_path(const char *card_path);

/* Which of a module's files an error is about. */
enum kh_softmod_file {
	KH_SOFTMOD_CARD = 0,
	KH_SOFTMOD_KEY = 1,
	KH_SOFTMOD_COUNTER = 2,
};

/*
 * Open a card file with its root key file (key_path NULL: kh_softmod_key_path). The counter file
 * <card>.ctr is the lowest state counter accepted; it must exist (KH_ERR_COUNTER_MISSING), as
 * without it an old copy of the card file could not be told from the current one. Errors:
 * KH_ERR_NOTFOUND, KH_ERR_KEYFILE_PERM, KH_ERR_STATE_AUTH, KH_ERR_ROLLBACK, KH_ERR_FORMAT,
 * KH_ERR_COUNTER_MISSING, KH_ERR_MODULE_BUSY, and from the sealed state's sections
 * (docs/internals/module.md) KH_ERR_VERSION, KH_ERR_STATE_VERSION (an applet's section in a
 * version this build does not know), KH_ERR_STATE_SECTION (a mandatory section of an applet this
 * build does not have); *which (may be NULL) names the file. No file is changed.
 *
 * One process at a time: the module is held under an exclusive flock(2) on its key file (never
 * replaced, unlike the card and counter files) until kh_softmod_free(); a second opener, in this
 * process or another, gets KH_ERR_MODULE_BUSY (kh_softmod_holder names the holder). And before
 * each store the card file on disk must still carry the counter this process last loaded or
 * stored: a copy saved behind the lock's back (a process that ignores it, files copied over) is
 * never overwritten — the command fails with KH_ERR_MODULE_CHANGED and the module must be opened
 * again.
 */
KH_WARN_UNUSED kh_err kh_softmod_open(const char *card_path, const char *key_path, struct kh_softmod **out,
				      enum kh_softmod_file *which);
/*
 * A blank module with a fresh root key, held in memory until kh_softmod_save() writes the card
 * file, the key file and the counter file (used by `keyhole card issue` and `card blank`).
 */
KH_WARN_UNUSED kh_err kh_softmod_new_blank(struct kh_softmod **out);
/*
 * KH_OK when a module could be saved at card_path: its directory exists and none of the card,
 * key and counter files does (KH_ERR_EXISTS / KH_ERR_NOTFOUND otherwise).
 */
KH_WARN_UNUSED kh_err kh_softmod_check_free(const char *card_path, const char *key_path);
/*
 * Write a memory-held module to card_path (and its key file, 0600); refuses existing files. A
 * blank module (kh_softmod_new_blank, nothing done to it yet) is written as it is: the module
 * `keyhole card blank` makes, which kh_softmod_open reads back and a personalisation station
 * then personalises in place.
 */
KH_WARN_UNUSED kh_err kh_softmod_save(struct kh_softmod *s, const char *card_path, const char *key_path);
struct kh_module *kh_softmod_module(struct kh_softmod *s);
/* Fix the module's clock for tests (0: the system clock). */
void kh_softmod_set_time(struct kh_softmod *s, uint64_t now);
void kh_softmod_free(struct kh_softmod *s);
/* The pid of the process holding the module whose key file is key_path (card_path's default when
 * NULL), from /proc/locks; 0 when not known. */
long kh_softmod_holder(const char *card_path, const char *key_path);

#endif
