/*
 * The security module boundary. A module — smart card, CAM, and later the other
 * seeds' devices — is driven only with command APDUs and answers only with response APDUs. This
 * header is what runs a module: the "hardware" side (software module host, module daemon,
 * tests) gives it memory, its root key, a store for its sealed state and a clock, then feeds it
 * bytes. Nothing here lets a host read a module's keys: the struct is opaque and its whole
 * persistent state leaves only sealed under the root key.
 *
 * Sealed state blob (docs/internals/module.md):
 *   "KHMS" | u8 version=2 | u64 counter | nonce(12) | AES-256-GCM(HKDF(root, "keyhole module state v1"),
 *                                                      aad = the 25 header bytes, TLV state)
 * The TLV state is the runtime's own fields, then one versioned section per applet that keeps
 * state. Blobs of version 1 (one flat list, before sections) still load; the next store writes
 * version 2.
 */
#ifndef KEYHOLE_MODULE_H
#define KEYHOLE_MODULE_H

#include <stddef.h>
#include <stdint.h>

#include "keyhole/err.h"

#define KH_ROOT_KEY_LEN 32
#define KH_MODULE_BLOB_MAX 8192

struct kh_module;

struct kh_module_env {
	/*
	 * Persist a new sealed state. Must be durable and atomic (the old blob or the new, never a
	 * mix) before it returns KH_OK; the module answers the command only after that.
	 */
	kh_err (*store)(void *ctx, const uint8_t *blob, size_t len, uint64_t counter);
	/* Unix seconds; NULL means the module has no clock (validity periods are then not checked). */
	uint64_t (*now)(void *ctx);
	void *ctx;
};

/* Bytes of memory a module needs; the caller provides them, 16-byte aligned. */
size_t kh_module_size(void);
/*
 * Start a blank module in mem (kh_module_size() bytes). The root key is copied in (the caller
 * should wipe its copy). A blank module accepts only GET INFO and personalisation.
 */
KH_WARN_UNUSED kh_err kh_module_init(void *mem, size_t memlen, const uint8_t root_key[static KH_ROOT_KEY_LEN],
				     const struct kh_module_env *env, struct kh_module **out);
/*
 * Load a sealed state. Refused with KH_ERR_STATE_AUTH when it does not open under the root key,
 * KH_ERR_VERSION for an unknown blob version, KH_ERR_ROLLBACK when its counter is below
 * min_counter (the highest the environment has recorded) or below one this module already holds,
 * KH_ERR_STATE_SECTION when it holds a mandatory section no applet of this build owns,
 * KH_ERR_STATE_VERSION when an applet's section is of a version newer than this build reads, and
 * the TLV errors (KH_ERR_FORMAT, KH_ERR_TLV_TAG, ...) for malformed contents. On error the module
 * is unchanged.
 */
KH_WARN_UNUSED kh_err kh_module_load(struct kh_module *m, const uint8_t *blob, size_t len, uint64_t min_counter);
/*
 * Process one command APDU and write the response APDU (data || SW1 SW2) to resp. Returns the
 * response length: always 2 or more when cap >= 2. Never fails otherwise: errors are status words.
 */
size_t kh_module_process(struct kh_module *m, const uint8_t *cmd, size_t len, uint8_t *resp, size_t cap);
/*
 * Seal the state the module holds now and hand it to the store, as after a command that changed
 * it. A new module stores nothing until a command changes it; this gives a blank one its first
 * sealed state, so that it can exist as a file before it is personalised. KH_ERR_STORE (or
 * KH_ERR_MODULE_CHANGED, the store's own word) when the store refused it.
 */
KH_WARN_UNUSED kh_err kh_module_seal(struct kh_module *m);
/* The module's role (enum kh_role; 0 while blank). */
uint8_t kh_module_role(const struct kh_module *m);
/* Counter of the state the module holds (0 for a blank module never stored). */
uint64_t kh_module_counter(const struct kh_module *m);
/* Erase every key and all state. */
void kh_module_wipe(struct kh_module *m);

/* Read a blob's counter from its clear header without the key (KH_ERR_FORMAT / KH_ERR_VERSION). */
KH_WARN_UNUSED kh_err kh_module_blob_counter(const uint8_t *blob, size_t len, uint64_t *counter);

#endif
