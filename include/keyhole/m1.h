/*
 * The decoder's memory M1 (seed 001, the protocol design "Seed 001"; rules in docs/internals/m1.md): one
 * file holding the latest usage block (include/keyhole/usage.h) a card made for the decoder,
 * sealed under the decoder's local key and replaced atomically, so that when the card is replaced
 * before the decoder ever reached the center, the old card's purchases can still be carried there
 * by the new card's upload session.
 *
 * A directory DIR holds two files:
 *   DIR/m1.key  the local key: 64 hex digits and a newline, mode 0600, created once
 *   DIR/m1      the sealed block, mode 0600:
 *     "KHM1" | u8 version=1 | u32 UA | u32 block_seq | nonce(12) |
 *     AES-256-GCM(local key, nonce, aad = the 13 bytes before the nonce, block) | tag(16)
 * UA and block_seq are in clear (they are in the block's clear header anyway) and authenticated.
 *
 * What M1 takes (kh_m1_store): a block that parses (kh_usage_peek); for the UA M1 already holds,
 * only a newer block_seq; a block of another UA replaces M1's. Blocks must come from the card's
 * EXPORT P1=1, which the card refuses until the center has authorised export — that is what
 * keeps a new card from overwriting the block of the card it replaced. kh_m1_export is the one
 * path the decoder uses: it asks the card and stores what the card answered. Host zone.
 */
#ifndef KEYHOLE_M1_H
#define KEYHOLE_M1_H

#include <stddef.h>
#include <stdint.h>

#include "keyhole/err.h"
#include "keyhole/transport.h"

#define KH_M1_MAGIC "KHM1"
#define KH_M1_VERSION 1
#define KH_M1_KEY_LEN 32
#define KH_M1_HDR_LEN 13 /* magic, version, UA, block_seq: the AEAD's associated data */
#define KH_M1_OVERHEAD (KH_M1_HDR_LEN + 12 + 16)
#define KH_M1_FILE "m1"
#define KH_M1_KEYFILE "m1.key"

/* What M1 holds, from the verified file. */
struct kh_m1_info {
	uint32_t ua;
	uint32_t block_seq;
	uint64_t card_time;
	size_t len; /* bytes of the block (not of the file) */
};

/*
 * The local key of the M1 in dir. With create, a missing directory is made (mode 0700, its
 * parent must exist) and a missing key file is created (create-only, 0600, from kh_random);
 * without it, KH_ERR_NOTFOUND when there is no key file. KH_ERR_KEYFILE_PERM when the key file
 * is readable by others or not ours, KH_ERR_FORMAT when it is not 64 hex digits. key is written
 * only on success; the caller wipes it.
 */
KH_WARN_UNUSED kh_err kh_m1_key(const char *dir, int create, uint8_t key[static KH_M1_KEY_LEN]);

/*
 * Open M1: the block (len bytes) into block[cap]. KH_ERR_NOTFOUND: M1 is empty (no file).
 * KH_ERR_TRUNCATED / KH_ERR_TOO_LARGE: the file is too short / too long to be M1;
 * KH_ERR_FORMAT: not an M1 file (magic), or a sealed block whose header disagrees with the
 * file's; KH_ERR_VERSION: an M1 format this build does not know; KH_ERR_AUTH: the file was
 * changed, or sealed under another key; KH_ERR_BUF: cap too small (KH_USAGE_MAX suffices).
 * block and *len are written only on success.
 */
KH_WARN_UNUSED kh_err kh_m1_load(const char *dir, const uint8_t key[static KH_M1_KEY_LEN], uint8_t *block,
				 size_t cap, size_t *len);
/* The same, but only what M1 holds (*info on success); the block itself is wiped. */
KH_WARN_UNUSED kh_err kh_m1_stat(const char *dir, const uint8_t key[static KH_M1_KEY_LEN],
				 struct kh_m1_info *info);

/*
 * Put a block the card made FOR M1 (EXPORT P1=1) into M1, under an exclusive lock on dir.
 * KH_OK: stored, or the very same block was there already (nothing written). Refusals, all of
 * which leave M1 exactly as it was:
 *   the block: the errors of kh_usage_peek (TRUNCATED, TOO_LARGE, VERSION), KH_ERR_INVAL;
 *   KH_ERR_ROLLBACK: M1 holds a block of the same UA with a block_seq at least as new;
 *   the current file: any error of kh_m1_load but NOTFOUND (AUTH, FORMAT, VERSION, ...) — a file
 *   M1 cannot open may still be the only copy of a replaced card's data, so it is never
 *   overwritten; remove it by hand after deciding so (docs/internals/m1.md);
 *   KH_ERR_IO, KH_ERR_NOMEM, KH_ERR_CRYPTO. (KH_ERR_IO may also follow a rename whose directory
 *   fsync failed: see kh_file_write_atomic.)
 * The caller vouches for the block's origin: only kh_m1_export and tests call this.
 */
KH_WARN_UNUSED kh_err kh_m1_store(const char *dir, const uint8_t key[static KH_M1_KEY_LEN], const uint8_t *block,
				  size_t len);

/*
 * Ask the card (a plain APDU on card: the block is sealed and signed already) for EXPORT P1=1
 * and store the answer with kh_m1_store. expect_ua, when not 0, is the card the decoder paired
 * with: a block of another UA is refused (KH_ERR_CARD_CHANGED) and not stored.
 * KH_ERR_EXPORT_DENIED: the center has not authorised this card to export; M1 untouched.
 * Otherwise the errors of the APDU and of kh_m1_store. *info (may be NULL) describes the block
 * the card made, on success and on KH_ERR_ROLLBACK.
 */
KH_WARN_UNUSED kh_err kh_m1_export(struct kh_transport *card, const char *dir, const uint8_t key[static KH_M1_KEY_LEN],
				   uint32_t expect_ua, struct kh_m1_info *info);

#endif
